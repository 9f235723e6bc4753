//! `rpoolctl pool create NAME --cores N --memory SIZE`.

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use rpool_proto::v1::{CreatePoolRequest, Pool, PoolSpec};

use super::pool::{
    self, CORES_MAX, capacity, hosts_table, parse_cidr, parse_image_repository, parse_kubernetes_version,
    parse_lb_range, parse_memory, parse_pool_name, parse_vip, plural, totals_against_request,
};
use super::pool_wait::{self, Until};
use super::pool_zones::{ZONE_POLICIES, parse_zone, policy_text, zone_block};
use crate::client::{self, Controller};
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::view::PoolView;

/// Create a pool of worker capacity CORES and MEMORY plus 1, 3 or 5 control
/// planes (which do not count toward the capacity).
///
/// The controller places hosts (control planes spread over zones, workers
/// covering the request with the least overshoot, balanced over the zones
/// by default when the free hosts are in two or more zones: --zone-policy
/// pack keeps them in as few zones as possible, any ignores zones, --zones
/// limits the zones), reserves them, then
/// builds the cluster in the background: `kubeadm init` on the first control
/// plane, joins, addons. `--dry-run` shows the hosts it would choose and
/// changes nothing. `--wait` shows progress on stderr until the pool is
/// ready (exit 0), degraded (exit 1) or --timeout runs out (exit 75, default
/// 10m; the controller carries on). When the fleet cannot cover the request
/// the controller says what it can offer (exit 65).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool create web --cores 32 --memory 128GiB --dry-run
  rpoolctl pool create web --cores 32 --memory 128GiB --wait
  rpoolctl pool create ci --cores 8 --memory 1.5TiB --control-planes 3 --kubernetes-version v1.32.0
  rpoolctl pool create ha --cores 16 --memory 64GiB --control-planes 3 --vip 192.0.2.10 --lb-range 192.0.2.200-192.0.2.220
  rpoolctl pool create web --cores 48 --memory 192GiB --zones a,b --zone-policy spread --dry-run
  rpoolctl pool create web --cores 32 --memory 128GiB --dry-run -o json | jq '.members[].hostname'
  rpoolctl pool create edge --cores 8 --memory 32GiB --image-repository mirror.example:5000/k8s

Sizes: 64GiB, 512MiB, 1.5TiB (also 64Gi, 100GB); memory 1GiB..=64PiB.
Names: 1..=40 characters [a-z0-9-], starting and ending with a letter or digit.")]
pub struct CreateArgs {
    /// Pool name (a DNS label of at most 40 characters; it prefixes node names)
    #[arg(value_name = "NAME", value_parser = parse_pool_name)]
    pub name: String,
    /// Worker cores wanted (1..=1000000)
    #[arg(long, value_name = "N", value_parser = crate::cli::whole_number::<u64>(1, CORES_MAX))]
    pub cores: u64,
    /// Worker memory wanted, e.g. 64GiB, 512MiB, 1.5TiB (1GiB..=64PiB)
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: u64,
    /// Control-plane hosts
    #[arg(
        long,
        value_name = "N",
        default_value = "1",
        value_parser = PossibleValuesParser::new(["1", "3", "5"]).map(|s| s.parse::<u32>().unwrap_or(1))
    )]
    pub control_planes: u32,
    /// Kubernetes version, e.g. v1.32.0 [default: the controller's]
    #[arg(long, value_name = "V", value_parser = parse_kubernetes_version)]
    pub kubernetes_version: Option<String>,
    /// Pod network [default: 10.244.0.0/16]
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub pod_network_cidr: Option<String>,
    /// Service network [default: 10.96.0.0/12]
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub service_cidr: Option<String>,
    /// Control-plane virtual IP: the API endpoint becomes VIP:6443, held by
    /// kube-vip on the control planes [default: with 3 or 5 control planes,
    /// the controller picks one from its [kube] vip_range; none with 1]
    #[arg(long, value_name = "ADDR", value_parser = parse_vip)]
    pub vip: Option<String>,
    /// Addresses MetalLB gives Services of type LoadBalancer, FIRST-LAST or
    /// ADDRESS/PREFIX [default: none]
    #[arg(long, value_name = "RANGE", value_parser = parse_lb_range)]
    pub lb_range: Option<String>,
    /// How workers are placed over zones: any (zones ignored: the
    /// least-overshoot cover of the fleet), spread (balanced, so losing one
    /// zone loses about 1/zones of the capacity) or pack (fewest zones);
    /// fixed at creation [default: spread when the free hosts the pool may
    /// take are in two or more zones, else any]
    #[arg(long, value_name = "POLICY", value_parser = PossibleValuesParser::new(ZONE_POLICIES))]
    pub zone_policy: Option<String>,
    /// Zones the pool's hosts may come from, comma-separated [default: all]
    #[arg(long, value_name = "ZONE,..", value_delimiter = ',', value_parser = parse_zone)]
    pub zones: Vec<String>,
    /// Registry this pool's images come from, HOST[:PORT][/PATH] (kubeadm's
    /// imageRepository, the images pulled before init and control-plane
    /// joins, and the flannel, kube-vip and MetalLB images); set at creation,
    /// `pool resize` does not change it [default: the controller's
    /// [kube] image_repository, else the upstream registries]
    #[arg(long, value_name = "REPO", value_parser = parse_image_repository)]
    pub image_repository: Option<String>,
    /// Take a scheduled etcd snapshot this often (1s..=30d, e.g. 6h; see `pool set-backup`) [default: none]
    #[arg(long, value_name = "DURATION", value_parser = super::pool_set_backup::parse_every)]
    pub backup_every: Option<std::time::Duration>,
    /// Scheduled etcd snapshots kept (1..=1000) [default: 7]
    #[arg(long, value_name = "N", requires = "backup_every",
          value_parser = crate::cli::whole_number::<u32>(1, super::pool_set_backup::KEEP_MAX as u64))]
    pub backup_keep: Option<u32>,
    /// Only show the hosts that would be chosen; change nothing
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    /// Wait until the pool is ready, showing progress on stderr (bounded by --timeout, default 10m)
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl CreateArgs {
    /// The spec to send (empty strings let the controller pick defaults).
    pub fn spec(&self) -> PoolSpec {
        PoolSpec {
            name: self.name.clone(),
            cores: self.cores,
            memory_bytes: self.memory,
            control_planes: self.control_planes,
            kubernetes_version: self.kubernetes_version.clone().unwrap_or_default(),
            pod_network_cidr: self.pod_network_cidr.clone().unwrap_or_default(),
            service_cidr: self.service_cidr.clone().unwrap_or_default(),
            vip: self.vip.clone().unwrap_or_default(),
            lb_range: self.lb_range.clone().unwrap_or_default(),
            zone_policy: self.zone_policy.clone().unwrap_or_default(),
            zones: self.zones.clone(),
            image_repository: self.image_repository.clone().unwrap_or_default(),
            backup_interval_ms: self.backup_every.map_or(0, |d| d.as_millis() as u64),
            backup_keep: self.backup_every.map_or(0, |_| {
                self.backup_keep.unwrap_or(super::pool_set_backup::KEEP_DEFAULT)
            }),
        }
    }
}

pub async fn exec(args: CreateArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, pool::request_timeout(settings, args.wait)).await?;
    let pool = create(&ctl, args.spec(), args.dry_run).await?;
    let view = PoolView::from(&pool);
    if args.dry_run {
        return match args.output.output {
            Format::Json => output::print_json(&view),
            Format::Table => output::print(&render_dry_run(&view, args.zone_policy.is_none())),
        };
    }
    if !args.wait {
        return match args.output.output {
            Format::Json => output::print_json(&view),
            Format::Table => output::print(&render_created(&view)),
        };
    }
    if args.output.output == Format::Table {
        output::print(&render_created(&view))?;
    }
    let ready = pool_wait::wait_on_stderr(&ctl, &args.name, Until::Ready, settings)
        .await?
        .context("the pool is ready but was not returned")?;
    match args.output.output {
        Format::Json => output::print_json(&ready),
        Format::Table => output::print(&render_ready(&ready)),
    }
}

/// `CreatePool` (a dry run when `dry_run`).
pub async fn create(ctl: &Controller, spec: PoolSpec, dry_run: bool) -> anyhow::Result<Pool> {
    let name = spec.name.clone();
    let request = CreatePoolRequest {
        spec: Some(spec),
        dry_run,
    };
    let what = if dry_run { "planning pool" } else { "creating pool" };
    let response = crate::rpc!(ctl, create_pool, request).with_context(|| format!("{what} {name}"))?;
    response
        .pool
        .with_context(|| format!("{what} {name}: the controller answered without a pool"))
}

/// The dry-run answer: the hosts that would be chosen and the totals, and
/// which zone policy the controller chose when `zone_default` (none given).
pub fn render_dry_run(view: &PoolView, zone_default: bool) -> String {
    let mut text = render_plan(view, "Dry run: nothing was changed. Pool");
    if zone_default {
        text.push_str(&default_policy_note(&view.zone_policy));
    }
    text
}

/// Why a pool created without `--zone-policy` gets the one it gets.
fn default_policy_note(policy: &str) -> String {
    if policy == "spread" {
        "Zone policy: spread, the default: the free hosts it may take are in 2 or more zones \
         (--zone-policy any ignores zones).\n"
            .to_owned()
    } else {
        format!("Zone policy: {policy}, the default: the free hosts it may take are in fewer than 2 zones.\n")
    }
}

/// The hosts a pool would be built on and the totals, after `lead` (e.g.
/// "Plan: pool", for a walk-through that goes on to create it).
pub fn render_plan(view: &PoolView, lead: &str) -> String {
    let mut text = format!(
        "{lead} {} would be built on {}:\n",
        view.name,
        plural(view.members.len(), "host", "hosts")
    );
    text.push_str(&hosts_table(&view.members));
    text.push_str(&totals_block(view));
    text.push_str(&zone_block(
        &format!(
            "Workers per zone ({})",
            policy_text(&view.zone_policy, &view.zones)
        ),
        &view.zone_totals,
    ));
    text
}

/// After `CreatePool`: what was reserved, and how to follow it.
pub fn render_created(view: &PoolView) -> String {
    let mut text = format!(
        "Pool {} is {} on {}:\n",
        view.name,
        view.phase,
        plural(view.members.len(), "host", "hosts")
    );
    text.push_str(&hosts_table(&view.members));
    text.push_str(&totals_block(view));
    text.push_str(&format!(
        "Follow it with: rpoolctl pool show {0}, or rpoolctl events --pool {0} --follow\n",
        view.name
    ));
    text
}

/// After `--wait`: the pool is ready.
pub fn render_ready(view: &PoolView) -> String {
    format!(
        "Pool {0} is ready: API server at {1}; workers {2}.\nKubeconfig: rpoolctl pool kubeconfig {0} > {0}.kubeconfig\n",
        view.name,
        view.control_plane_endpoint,
        totals_against_request(
            view.worker_cores,
            view.worker_memory_bytes,
            view.cores,
            view.memory_bytes
        )
    )
}

/// `Workers: ... for a request of ...` and the control planes apart.
fn totals_block(view: &PoolView) -> String {
    let cps: Vec<_> = view
        .members
        .iter()
        .filter(|m| m.role == "control-plane")
        .collect();
    let cp_cores: u64 = cps.iter().map(|m| u64::from(m.cores)).sum();
    let cp_memory: u64 = cps.iter().map(|m| m.memory_bytes).sum();
    let mut text = format!(
        "Workers: {}\nControl planes: {}, {} (not counted in the capacity)\n",
        totals_against_request(
            view.worker_cores,
            view.worker_memory_bytes,
            view.cores,
            view.memory_bytes
        ),
        plural(cps.len(), "host", "hosts"),
        capacity(cp_cores, cp_memory)
    );
    if !view.vip.is_empty() {
        text.push_str(&format!(
            "API endpoint: {} (VIP {}, held by kube-vip on the control planes)\n",
            view.control_plane_endpoint, view.vip
        ));
    }
    if !view.lb_range.is_empty() {
        text.push_str(&format!("Load balancers: {} (MetalLB)\n", view.lb_range));
    }
    if !view.image_repository.is_empty() {
        text.push_str(&format!("Images: from {}\n", view.image_repository));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::commands::Command;
    use crate::commands::pool::PoolCommand;
    use crate::commands::pool_wait::tests::pool;
    use crate::exit;
    use crate::testing::{Fake, Seen};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        let argv: Vec<&str> = ["rpoolctl", "pool", "create"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        match Cli::try_parse_from(argv)?.command {
            Command::Pool(PoolCommand::Create(a)) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_parse_into_the_spec() {
        let a = parse(&[
            "web",
            "--cores",
            "32",
            "--memory",
            "1.5TiB",
            "--control-planes",
            "3",
            "--kubernetes-version",
            "v1.31.2",
            "--pod-network-cidr",
            "10.10.0.0/16",
            "--service-cidr",
            "10.20.0.0/16",
            "--image-repository",
            "mirror.example:5000/k8s",
            "--dry-run",
            "-o",
            "json",
        ])
        .unwrap();
        assert!(a.dry_run && !a.wait);
        assert_eq!(a.output.output, Format::Json);
        assert_eq!(
            a.spec(),
            PoolSpec {
                name: "web".into(),
                cores: 32,
                memory_bytes: 3 << 39,
                control_planes: 3,
                kubernetes_version: "v1.31.2".into(),
                pod_network_cidr: "10.10.0.0/16".into(),
                service_cidr: "10.20.0.0/16".into(),
                vip: String::new(),
                lb_range: String::new(),
                zone_policy: String::new(),
                zones: Vec::new(),
                image_repository: "mirror.example:5000/k8s".into(),
                ..Default::default()
            }
        );
        let a = parse(&["web", "--cores", "1", "--memory", "512Gi", "--backup-every", "6h"]).unwrap();
        assert_eq!(
            (a.spec().backup_interval_ms, a.spec().backup_keep),
            (6 * 3_600_000, 7)
        );
        let a = parse(&[
            "web",
            "--cores",
            "1",
            "--memory",
            "512Gi",
            "--backup-every",
            "1d",
            "--backup-keep",
            "30",
        ])
        .unwrap();
        assert_eq!(
            (a.spec().backup_interval_ms, a.spec().backup_keep),
            (86_400_000, 30)
        );
        assert!(parse(&["web", "--cores", "1", "--memory", "512Gi", "--backup-keep", "3"]).is_err());
        assert!(parse(&["web", "--cores", "1", "--memory", "512Gi", "--backup-every", "0s"]).is_err());
        let a = parse(&["web", "--cores", "1", "--memory", "512Gi", "--wait"]).unwrap();
        assert_eq!(a.spec().control_planes, 1);
        assert_eq!(a.spec().kubernetes_version, "");
        assert!(a.wait);
    }

    #[test]
    fn zone_flags_parse_into_the_spec_and_bad_ones_are_refused() {
        let a = parse(&[
            "web",
            "--cores",
            "8",
            "--memory",
            "32GiB",
            "--zones",
            "a,rack-2",
            "--zone-policy",
            "pack",
        ])
        .unwrap();
        assert_eq!(a.spec().zone_policy, "pack");
        assert_eq!(a.spec().zones, vec!["a".to_string(), "rack-2".to_string()]);
        // None given: "" asks for the controller's default.
        let a = parse(&["web", "--cores", "8", "--memory", "32GiB"]).unwrap();
        assert_eq!(a.spec().zone_policy, "");
        let a = parse(&["web", "--cores", "8", "--memory", "32GiB", "--zone-policy", "any"]).unwrap();
        assert_eq!(a.spec().zone_policy, "any");
        assert!(a.spec().zones.is_empty());
        let err = parse(&["web", "--cores", "8", "--memory", "32GiB", "--zones", "a,b c"]).unwrap_err();
        assert!(err.to_string().contains("\"b c\" is not a zone name"), "{err}");
        assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE);
        let err = parse(&[
            "web",
            "--cores",
            "8",
            "--memory",
            "32GiB",
            "--zone-policy",
            "even",
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("[possible values: any, spread, pack]"),
            "{err}"
        );
    }

    #[test]
    fn a_dry_run_shows_the_workers_per_zone() {
        let mut view = placed();
        view.zone_totals = vec![
            crate::view::ZoneTotalView {
                zone: "a".into(),
                workers: 1,
                cores: 16,
                memory_bytes: 64 << 30,
            },
            crate::view::ZoneTotalView {
                zone: "c".into(),
                workers: 1,
                cores: 32,
                memory_bytes: 128 << 30,
            },
        ];
        view.zones = vec!["a".into(), "c".into()];
        let text = render_dry_run(&view, false);
        assert!(
            text.ends_with(
                "Workers per zone (any of a, c):\n  \
                 ZONE  WORKERS  CORES  MEMORY\n  \
                 a     1        16     64GiB\n  \
                 c     1        32     128GiB\n"
            ),
            "{text}"
        );
        // No --zone-policy: the dry run says which one the controller chose.
        view.zones = Vec::new();
        view.zone_policy = "spread".into();
        let text = render_dry_run(&view, true);
        assert!(
            text.ends_with(
                "Workers per zone (spread (all zones)):\n  \
                 ZONE  WORKERS  CORES  MEMORY\n  \
                 a     1        16     64GiB\n  \
                 c     1        32     128GiB\n\
                 Zone policy: spread, the default: the free hosts it may take are in 2 or more zones \
                 (--zone-policy any ignores zones).\n"
            ),
            "{text}"
        );
        view.zone_policy = "any".into();
        assert!(render_dry_run(&view, true).ends_with(
            "Zone policy: any, the default: the free hosts it may take are in fewer than 2 zones.\n"
        ));
    }

    #[test]
    fn control_planes_are_1_3_or_5_and_sizes_and_names_are_checked() {
        for n in ["1", "3", "5"] {
            let a = parse(&["web", "--cores", "4", "--memory", "8GiB", "--control-planes", n]).unwrap();
            assert_eq!(a.control_planes.to_string(), n);
        }
        for (args, needle) in [
            (
                &["web", "--cores", "4", "--memory", "8GiB", "--control-planes", "2"][..],
                "[possible values: 1, 3, 5]",
            ),
            (
                &["web", "--cores", "4", "--memory", "8GB!"],
                "e.g. 64GiB, 512MiB, 1.5TiB",
            ),
            (
                &["web", "--cores", "4", "--memory", "0.5GiB"],
                "accepted 1GiB..=64PiB",
            ),
            (&["web", "--cores", "1000001", "--memory", "8GiB"], "--cores"),
            (&["web", "--memory", "8GiB"], "--cores"),
            (&["WEB", "--cores", "4", "--memory", "8GiB"], "is not a pool name"),
            (
                &["web", "--cores", "4", "--memory", "8GiB", "--dry-run", "--wait"],
                "--wait",
            ),
            (
                &[
                    "web",
                    "--cores",
                    "4",
                    "--memory",
                    "8GiB",
                    "--kubernetes-version",
                    "1.32",
                ],
                "vMAJOR.MINOR.PATCH",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE, "{args:?}");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    fn placed() -> PoolView {
        let mut p = pool("provisioning", &["joining", "joining", "joining"], None);
        p.members[2].hostname = "sim-c-1".into();
        p.members[2].zone = "c".into();
        p.members[2].cores = 32;
        p.members[2].memory_bytes = 128 << 30;
        p.worker_cores = 48;
        p.worker_memory_bytes = 192 << 30;
        PoolView::from(&p)
    }

    #[test]
    fn a_dry_run_shows_the_hosts_and_totals_against_the_request_and_says_nothing_changed() {
        assert_eq!(
            render_dry_run(&placed(), false),
            "Dry run: nothing was changed. Pool web would be built on 3 hosts:\n\
             ROLE           HOSTNAME  ZONE  CORES  MEMORY\n\
             control-plane  sim-a-1   a     16     64GiB\n\
             worker         sim-a-2   a     16     64GiB\n\
             worker         sim-c-1   c     32     128GiB\n\
             Workers: 48 cores / 192GiB for a request of 30 cores / 120GiB (over by 18 cores, 72GiB)\n\
             Control planes: 1 host, 16 cores / 64GiB (not counted in the capacity)\n"
        );
    }

    #[test]
    fn created_and_ready_say_what_to_do_next() {
        let text = render_created(&placed());
        assert!(
            text.starts_with("Pool web is provisioning on 3 hosts:\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Follow it with: rpoolctl pool show web, or rpoolctl events --pool web --follow\n"
            )
        );
        let text = render_ready(&placed());
        assert_eq!(
            text,
            "Pool web is ready: API server at sim-a-1:6443; workers 48 cores / 192GiB for a request of \
             30 cores / 120GiB (over by 18 cores, 72GiB).\nKubeconfig: rpoolctl pool kubeconfig web > web.kubeconfig\n"
        );
    }

    #[tokio::test]
    async fn the_spec_and_dry_run_flag_are_sent_and_a_refusal_is_shown_as_is() {
        let fake = Fake::default();
        let ctl = fake.clone().serve().await;
        let a = parse(&["web", "--cores", "4", "--memory", "8GiB", "--dry-run"]).unwrap();
        let got = create(&ctl, a.spec(), true).await.unwrap();
        assert_eq!(got.spec.unwrap().cores, 4);
        let Seen::CreatePool(request) = fake.seen()[0].clone() else {
            panic!("not CreatePool")
        };
        assert!(request.dry_run);
        assert_eq!(request.spec.unwrap().memory_bytes, 8 << 30);

        let fake = Fake {
            create_error: Some(tonic::Status::failed_precondition(
                "requested 64 cores / 256 GiB; free: 40 cores / 512 GiB on 5 hosts",
            )),
            ..Fake::default()
        };
        let ctl = fake.serve().await;
        let err = create(&ctl, a.spec(), false).await.unwrap_err();
        assert_eq!(exit::code_of(&err), exit::REJECTED);
        assert_eq!(
            format!("{err:#}"),
            "creating pool web: requested 64 cores / 256 GiB; free: 40 cores / 512 GiB on 5 hosts"
        );
    }

    #[test]
    fn the_dry_run_json_is_the_pool_shape() {
        let json = serde_json::to_value(placed()).unwrap();
        assert_eq!(json["name"], "web");
        assert_eq!(json["members"].as_array().unwrap().len(), 3);
        assert_eq!(json["events"], serde_json::json!([]));
    }
}
