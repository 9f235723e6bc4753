//! `rpoolctl pool ...`: the pool noun (Kubernetes clusters built from hosts,
//! sized in worker cores and memory). Its verbs live in `pool_*.rs`; this
//! file holds what they share: flag parsers (names, sizes, control-plane
//! counts), timeouts of `--wait`, and the small renderers of hosts and totals.

use std::time::Duration;

use clap::Subcommand;
use rpool_proto::units::{format_size, parse_size};

use super::{
    pool_autoscale, pool_backup, pool_backups, pool_create, pool_destroy, pool_kubeconfig, pool_list,
    pool_renew_certs, pool_resize, pool_set_backup, pool_show, pool_upgrade,
};
use crate::settings::{DEFAULT_TIMEOUT, Settings};
use crate::table::Table;
use crate::view::MemberView;

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool: place hosts for the cores and memory asked, then build the cluster
    Create(pool_create::CreateArgs),
    /// List pools with their phase and capacity against the request
    List(pool_list::ListArgs),
    /// Show one pool: spec, phase, endpoint, members, totals, recent events
    Show(pool_show::ShowArgs),
    /// Grow or shrink a pool's worker capacity (shows the plan, then asks)
    Resize(pool_resize::ResizeArgs),
    /// Destroy a pool: reset every host and return it to the fleet
    Destroy(pool_destroy::DestroyArgs),
    /// Print a pool's admin kubeconfig to stdout
    Kubeconfig(pool_kubeconfig::KubeconfigArgs),
    /// Add and remove workers with load, within min/max cores (or --off)
    Autoscale(pool_autoscale::AutoscaleArgs),
    /// Upgrade a pool's Kubernetes one minor at a time, node by node (shows the plan, then asks)
    Upgrade(pool_upgrade::UpgradeArgs),
    /// Take an etcd snapshot of a pool now (kept on a control plane's agent)
    Backup(pool_backup::BackupArgs),
    /// List a pool's etcd snapshots and its backup schedule
    Backups(pool_backups::BackupsArgs),
    /// Set a pool's scheduled etcd snapshots and how many are kept (or --off)
    SetBackup(pool_set_backup::SetBackupArgs),
    /// Renew a pool's kubeadm certificates, one control plane at a time (shows the plan, then asks)
    RenewCerts(pool_renew_certs::RenewCertsArgs),
}

pub async fn exec(cmd: PoolCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        PoolCommand::Create(args) => pool_create::exec(args, settings).await,
        PoolCommand::List(args) => pool_list::exec(args, settings).await,
        PoolCommand::Show(args) => pool_show::exec(args, settings).await,
        PoolCommand::Resize(args) => pool_resize::exec(args, settings).await,
        PoolCommand::Destroy(args) => pool_destroy::exec(args, settings).await,
        PoolCommand::Kubeconfig(args) => pool_kubeconfig::exec(args, settings).await,
        PoolCommand::Autoscale(args) => pool_autoscale::exec(args, settings).await,
        PoolCommand::Upgrade(args) => pool_upgrade::exec(args, settings).await,
        PoolCommand::Backup(args) => pool_backup::exec(args, settings).await,
        PoolCommand::Backups(args) => pool_backups::exec(args, settings).await,
        PoolCommand::SetBackup(args) => pool_set_backup::exec(args, settings).await,
        PoolCommand::RenewCerts(args) => pool_renew_certs::exec(args, settings).await,
    }
}

/// Longest pool name (it prefixes Kubernetes node names).
pub const NAME_MAX_CHARS: usize = 40;
/// Worker cores a pool may ask for.
pub const CORES_MAX: u64 = 1_000_000;
/// Worker memory a pool may ask for: 1 GiB..=64 PiB.
pub const MEMORY_MIN: u64 = 1 << 30;
pub const MEMORY_MAX: u64 = 64 << 50;
/// How long `--wait` waits when `--timeout` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// clap value parser for a pool name: a DNS-1123 label of at most 40
/// characters (checked here so a typo exits 64 before any request).
pub fn parse_pool_name(text: &str) -> Result<String, String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !text.is_empty()
        && text.len() <= NAME_MAX_CHARS
        && text.chars().all(|c| alnum(c) || c == '-')
        && text.starts_with(alnum)
        && text.ends_with(alnum);
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a pool name (accepted a DNS label of 1..={NAME_MAX_CHARS} characters [a-z0-9-], \
             starting and ending with a letter or digit, e.g. web, ci-2)"
        ))
    }
}

/// clap value parser for `--memory`: a size (`64GiB`, `512MiB`, `1.5TiB`,
/// `64Gi`, `100GB`) of 1 GiB..=64 PiB.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text).map_err(|e| e.to_string())?;
    if !(MEMORY_MIN..=MEMORY_MAX).contains(&bytes) {
        return Err(format!(
            "{} is out of range (accepted 1GiB..=64PiB, written like 64GiB, 1536MiB, 1.5TiB)",
            text.trim()
        ));
    }
    Ok(bytes)
}

/// clap value parser for `--kubernetes-version`: `vMAJOR.MINOR.PATCH`.
pub fn parse_kubernetes_version(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.strip_prefix('v').unwrap_or("").split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
    {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a version (accepted vMAJOR.MINOR.PATCH with 1..=5 digits each, e.g. v1.32.0)"
        ))
    }
}

/// clap value parser for `--pod-network-cidr` / `--service-cidr`.
pub fn parse_cidr(text: &str) -> Result<String, String> {
    let ok = rpool_proto::kube::cidr::is_cidr(text);
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a CIDR (accepted IPv4/0..=32 or IPv6/0..=128, e.g. 10.244.0.0/16)"
        ))
    }
}

/// clap value parser for `--vip`: an IP address.
pub fn parse_vip(text: &str) -> Result<String, String> {
    text.parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| format!("{text:?} is not an IP address (accepted e.g. 192.0.2.10 or fd00::10)"))
}

/// clap value parser for `--lb-range`: `FIRST-LAST` or `ADDRESS/PREFIX`.
pub fn parse_lb_range(text: &str) -> Result<String, String> {
    rpool_proto::kube::cidr::IpRange::parse(text)
        .map(|r| r.to_string())
        .map_err(|why| {
            format!("{text:?} {why} (accepted FIRST-LAST or ADDRESS/PREFIX, e.g. 192.0.2.200-192.0.2.220)")
        })
}

/// `--image-repository`: a registry reference as kubeadm's
/// `imageRepository` takes it, lower case.
pub fn parse_image_repository(text: &str) -> Result<String, String> {
    if rpool_proto::kube::kubeadm_check::is_image_repository(text)
        && !text.bytes().any(|b| b.is_ascii_uppercase())
    {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an image repository (accepted HOST[:PORT][/PATH] in lower case, no scheme, \
             no tag or digest, at most {} characters, e.g. mirror.example:5000/k8s)",
            rpool_proto::kube::kubeadm_check::IMAGE_REPOSITORY_MAX_CHARS
        ))
    }
}

/// Per-request timeout: `--timeout` (default 10s); while waiting, where
/// `--timeout` bounds the whole wait, each request gets at most 10s.
pub fn request_timeout(settings: &Settings, waiting: bool) -> Duration {
    if waiting {
        settings.timeout().min(DEFAULT_TIMEOUT)
    } else {
        settings.timeout()
    }
}

/// How long `--wait` waits: `--timeout`, default 10m.
pub fn wait_budget(settings: &Settings) -> Duration {
    settings.timeout_flag.unwrap_or(DEFAULT_WAIT)
}

/// `40 cores / 160GiB`.
pub fn capacity(cores: u64, memory_bytes: u64) -> String {
    format!("{cores} cores / {}", format_size(memory_bytes))
}

/// Worker totals against the request:
/// `48 cores / 192GiB for a request of 40 cores / 160GiB (over by 8 cores, 32GiB)`.
pub fn totals_against_request(
    have_cores: u64,
    have_memory: u64,
    want_cores: u64,
    want_memory: u64,
) -> String {
    // ("over by", "8 cores"), ...; a direction is said once for a run.
    let diff = |have: u64, want: u64, amount: String| match have.cmp(&want) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(("over by", amount)),
        std::cmp::Ordering::Less => Some(("short by", amount)),
    };
    let notes: Vec<(&str, String)> = [
        diff(
            have_cores,
            want_cores,
            format!("{} cores", have_cores.abs_diff(want_cores)),
        ),
        diff(
            have_memory,
            want_memory,
            format_size(have_memory.abs_diff(want_memory)),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut note = String::new();
    let mut previous = "";
    for (direction, amount) in notes {
        if !note.is_empty() {
            note.push_str(", ");
        }
        if direction != previous {
            note.push_str(direction);
            note.push(' ');
            previous = direction;
        }
        note.push_str(&amount);
    }
    if note.is_empty() {
        note.push_str("exactly");
    }
    format!(
        "{} for a request of {} ({note})",
        capacity(have_cores, have_memory),
        capacity(want_cores, want_memory)
    )
}

/// Hosts as a ROLE/HOSTNAME/ZONE/CORES/MEMORY table (a placement).
pub fn hosts_table(members: &[MemberView]) -> String {
    let mut table = Table::new(["ROLE", "HOSTNAME", "ZONE", "CORES", "MEMORY"]);
    for m in members {
        table.row([
            m.role.clone(),
            m.hostname.clone(),
            m.zone.clone(),
            m.cores.to_string(),
            format_size(m.memory_bytes),
        ]);
    }
    table.render()
}

/// `text` with every line indented by two spaces.
pub fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `1 worker`, `3 workers`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn pool_names_are_dns_labels_of_at_most_40_characters() {
        for ok in ["web", "a", "ci-2", "0abc", &"a".repeat(40)] {
            assert_eq!(parse_pool_name(ok).unwrap(), ok);
        }
        for bad in ["", "Web", "-web", "web-", "we_b", "wéb", "web.1", &"a".repeat(41)] {
            let err = parse_pool_name(bad).unwrap_err();
            assert!(
                err.contains("is not a pool name (accepted a DNS label of 1..=40"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn memory_accepts_binary_decimal_and_fractional_sizes_in_range() {
        assert_eq!(parse_memory("64GiB").unwrap(), 64 << 30);
        assert_eq!(parse_memory("1.5TiB").unwrap(), 3 << 39);
        assert_eq!(parse_memory("1536MiB").unwrap(), 1536 << 20);
        assert_eq!(parse_memory("64Gi").unwrap(), 64 << 30);
        assert_eq!(parse_memory("100GB").unwrap(), 100_000_000_000);
        assert_eq!(parse_memory("64PiB").unwrap(), 64 << 50);
        let err = parse_memory("64G").unwrap_err();
        assert!(err.contains("e.g. 64GiB, 512MiB, 1.5TiB"), "{err}");
        let err = parse_memory("512MiB").unwrap_err();
        assert!(
            err.contains("512MiB is out of range (accepted 1GiB..=64PiB"),
            "{err}"
        );
        assert!(parse_memory("65PiB").is_err());
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn versions_and_cidrs_are_checked() {
        assert!(parse_kubernetes_version("v1.32.0").is_ok());
        for bad in ["1.32.0", "v1.32", "v1.x.0", "latest"] {
            assert!(parse_kubernetes_version(bad).is_err(), "{bad}");
        }
        assert!(parse_cidr("10.244.0.0/16").is_ok());
        assert!(parse_cidr("fd00::/64").is_ok());
        for bad in ["10.244.0.0", "10.244.0.0/x", "nope/16"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn totals_say_how_far_from_the_request_they_are() {
        assert_eq!(
            totals_against_request(48, 192 << 30, 40, 160 << 30),
            "48 cores / 192GiB for a request of 40 cores / 160GiB (over by 8 cores, 32GiB)"
        );
        assert_eq!(
            totals_against_request(40, 160 << 30, 40, 160 << 30),
            "40 cores / 160GiB for a request of 40 cores / 160GiB (exactly)"
        );
        assert_eq!(
            totals_against_request(16, 160 << 30, 40, 128 << 30),
            "16 cores / 160GiB for a request of 40 cores / 128GiB (short by 24 cores, over by 32GiB)"
        );
    }

    #[test]
    fn a_bad_flag_value_is_a_usage_error_naming_the_flag() {
        for (args, flag) in [
            (
                &["pool", "create", "Web", "--cores", "4", "--memory", "8GiB"][..],
                "<NAME>",
            ),
            (
                &["pool", "create", "web", "--cores", "4", "--memory", "8G"],
                "--memory",
            ),
            (
                &["pool", "create", "web", "--cores", "0", "--memory", "8GiB"],
                "--cores",
            ),
            (
                &[
                    "pool",
                    "create",
                    "web",
                    "--cores",
                    "4",
                    "--memory",
                    "8GiB",
                    "--control-planes",
                    "2",
                ],
                "--control-planes",
            ),
            (&["pool", "resize", "web", "--memory", "1.5XB"], "--memory"),
            (&["pool", "show", "web_1"], "<NAME>"),
            (&["events", "--pool", "Web"], "--pool"),
        ] {
            let argv: Vec<&str> = std::iter::once("rpoolctl").chain(args.iter().copied()).collect();
            let err = Cli::try_parse_from(&argv).unwrap_err();
            assert_eq!(crate::clap_exit_code(err.kind()), crate::exit::USAGE, "{args:?}");
            let text = err.to_string();
            assert!(text.contains(flag), "{args:?}: {text}");
        }
    }

    #[test]
    fn hosts_render_as_a_placement_table() {
        let m = |role: &str, host: &str, zone: &str, cores: u32, gib: u64| MemberView {
            host_id: format!("id-{host}"),
            hostname: host.into(),
            zone: zone.into(),
            role: role.into(),
            node_name: format!("web-{host}"),
            state: "joining".into(),
            cores,
            memory_bytes: gib << 30,
            last_error: String::new(),
            liveness: String::new(),
            kubernetes_version: String::new(),
            upgrade_step: String::new(),
            cert_expires_unix_ms: 0,
        };
        assert_eq!(
            hosts_table(&[
                m("control-plane", "sim-a-1", "a", 8, 32),
                m("worker", "sim-c-1", "c", 32, 128)
            ]),
            "ROLE           HOSTNAME  ZONE  CORES  MEMORY\n\
             control-plane  sim-a-1   a     8      32GiB\n\
             worker         sim-c-1   c     32     128GiB\n"
        );
        assert_eq!(indent("a\nb\n"), "  a\n  b\n");
        assert_eq!(plural(1, "worker", "workers"), "1 worker");
        assert_eq!(plural(0, "worker", "workers"), "0 workers");
    }
}
