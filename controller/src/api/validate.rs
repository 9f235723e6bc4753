//! Validation of everything agents and admins send.
//!
//! Each function checks one message and returns the first rule broken as an
//! [`Invalid`] naming the field by its path and what is accepted, e.g.
//!
//! ```text
//! hello.facts.inventory.logical_cores: 1000000000 is out of range (accepted 1..=4096)
//! ```
//!
//! which converts into `tonic::Status::invalid_argument` with that message.
//! Validation is pure and runs before anything from the message is applied,
//! so a rejected message changes nothing. Echoed values are shortened so an
//! error never carries a huge input back.

use std::fmt;
use std::net::IpAddr;

use rpool_proto::v1;

use crate::state::command::HostState;

/// A field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Path of the field, e.g. `heartbeat.health[2].name`.
    pub field: String,
    /// What is wrong and what is accepted.
    pub problem: String,
}

impl Invalid {
    /// `{field}: {problem}`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn range(field: impl Into<String>, value: impl fmt::Display, accepted: impl fmt::Display) -> Self {
        Invalid::new(field, format!("{value} is out of range (accepted {accepted})"))
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for Invalid {}

impl From<Invalid> for tonic::Status {
    fn from(e: Invalid) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// Limits, named, units last.
pub mod limits {
    /// Host id text length (lowercase UUID).
    pub const HOST_ID_LEN: usize = 36;
    /// Hostname length.
    pub const HOSTNAME_MAX_CHARS: usize = 253;
    /// Addresses per host.
    pub const ADDRESSES_MAX: usize = 32;
    /// DNS-1123 label length.
    pub const LABEL_MAX_CHARS: usize = 63;
    /// Labels per host.
    pub const LABELS_MAX: usize = 64;
    /// Label key length.
    pub const LABEL_KEY_MAX_CHARS: usize = 63;
    /// Label value length.
    pub const LABEL_VALUE_MAX_CHARS: usize = 253;
    /// Logical cores.
    pub const LOGICAL_CORES_MAX: u32 = 4096;
    /// Smallest accepted memory.
    pub const MEMORY_MIN_BYTES: u64 = 64 << 20;
    /// Largest accepted memory.
    pub const MEMORY_MAX_BYTES: u64 = 64 << 40;
    /// Load average ceiling.
    pub const LOAD_AVERAGE_MAX: f64 = 1e6;
    /// Health checks per heartbeat.
    pub const HEALTH_CHECKS_MAX: usize = 32;
    /// Health check name length.
    pub const HEALTH_NAME_MAX_CHARS: usize = 64;
    /// Health check message length.
    pub const HEALTH_MESSAGE_MAX_CHARS: usize = 1024;
    /// Agent version length.
    pub const AGENT_VERSION_MAX_CHARS: usize = 64;
    /// Shortest host id prefix for lookups.
    pub const HOST_ID_PREFIX_MIN_CHARS: usize = 4;
}
use limits::*;

/// Shows a user-supplied string, quoted and cut to 64 characters.
pub fn show(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}... ({} characters)", s.chars().count())
    }
}

fn length(path: &str, s: &str, min: usize, max: usize) -> Result<(), Invalid> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(Invalid::new(
            path,
            format!(
                "{} has {n} characters, which is out of range (accepted {min}..={max})",
                show(s)
            ),
        ));
    }
    Ok(())
}

fn charset(path: &str, s: &str, ok: impl Fn(char) -> bool, accepted: &str) -> Result<(), Invalid> {
    match s.chars().find(|c| !ok(*c)) {
        None => Ok(()),
        Some(c) => Err(Invalid::new(
            path,
            format!("{} contains {c:?} (accepted characters {accepted})", show(s)),
        )),
    }
}

/// A lowercase UUID in text form: 36 characters, hex digits and dashes at
/// positions 8, 13, 18 and 23.
pub fn host_id(path: &str, id: &str) -> Result<(), Invalid> {
    let well_formed = id.len() == HOST_ID_LEN
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    if !well_formed {
        return Err(Invalid::new(
            path,
            format!(
                "{} is not a lowercase UUID (accepted 36 characters: 8-4-4-4-12 digits 0-9a-f)",
                show(id)
            ),
        ));
    }
    Ok(())
}

/// A DNS-1123 label: 1..=63 of `[a-z0-9-]`, starting and ending with a letter
/// or digit.
pub fn dns_label(path: &str, s: &str) -> Result<(), Invalid> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !s.is_empty()
        && s.len() <= LABEL_MAX_CHARS
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum);
    if !ok {
        return Err(Invalid::new(
            path,
            format!(
                "{} is not a DNS label (accepted 1..=63 characters [a-z0-9-], starting and ending with a letter or digit)",
                show(s)
            ),
        ));
    }
    Ok(())
}

/// `Hello`: host id, agent version, facts (required) and the optional first
/// heartbeat (its sequence number is not checked: the stream's sequence
/// starts with the first `Heartbeat` message).
pub fn hello(h: &v1::Hello) -> Result<(), Invalid> {
    host_id("hello.host_id", &h.host_id)?;
    agent_version("hello.agent_version", &h.agent_version)?;
    let facts = h
        .facts
        .as_ref()
        .ok_or_else(|| Invalid::new("hello.facts", "missing (accepted a HostFacts message)"))?;
    host_facts("hello.facts", facts)?;
    if let Some(hb) = &h.first_heartbeat {
        let total = facts.inventory.as_ref().map(|i| i.memory_total_bytes);
        heartbeat("hello.first_heartbeat", hb, None, total)?;
    }
    Ok(())
}

/// Agent version: 1..=64 characters.
pub fn agent_version(path: &str, v: &str) -> Result<(), Invalid> {
    length(path, v, 1, AGENT_VERSION_MAX_CHARS)
}

/// `HostFacts` at `path`.
pub fn host_facts(path: &str, f: &v1::HostFacts) -> Result<(), Invalid> {
    let hostname_path = format!("{path}.hostname");
    length(&hostname_path, &f.hostname, 1, HOSTNAME_MAX_CHARS)?;
    charset(
        &hostname_path,
        &f.hostname,
        |c| c.is_ascii_alphanumeric() || c == '.' || c == '-',
        "[A-Za-z0-9.-]",
    )?;

    if f.addresses.len() > ADDRESSES_MAX {
        return Err(Invalid::range(
            format!("{path}.addresses"),
            format!("{} entries", f.addresses.len()),
            format!("at most {ADDRESSES_MAX}"),
        ));
    }
    for (i, addr) in f.addresses.iter().enumerate() {
        if addr.parse::<IpAddr>().is_err() {
            return Err(Invalid::new(
                format!("{path}.addresses[{i}]"),
                format!("{} is not an IP address (accepted IPv4 or IPv6 text)", show(addr)),
            ));
        }
    }

    dns_label(&format!("{path}.zone"), &f.zone)?;

    labels(&format!("{path}.labels"), &f.labels)?;

    advertise(path, f)?;
    if !f.cri_socket.is_empty()
        && (!rpool_proto::kube::kubeadm_check::is_cri_socket(&f.cri_socket)
            || f.cri_socket.chars().count() > CRI_SOCKET_MAX_CHARS)
    {
        return Err(Invalid::new(
            format!("{path}.cri_socket"),
            format!(
                "{} is not accepted (accepted \"\" or unix:///absolute/path, at most {CRI_SOCKET_MAX_CHARS} characters)",
                show(&f.cri_socket)
            ),
        ));
    }

    let inv = f.inventory.as_ref().ok_or_else(|| {
        Invalid::new(
            format!("{path}.inventory"),
            "missing (accepted an Inventory message)",
        )
    })?;
    inventory(&format!("{path}.inventory"), inv)
}

/// Longest `HostFacts.cri_socket`.
pub const CRI_SOCKET_MAX_CHARS: usize = 255;

/// `advertise_address` and `advertise_source` of the `HostFacts` at `path`:
/// both empty, or an address a node can advertise with where it came from.
fn advertise(path: &str, f: &v1::HostFacts) -> Result<(), Invalid> {
    let field = format!("{path}.advertise_address");
    let source = v1::AdvertiseSource::try_from(f.advertise_source).map_err(|_| {
        Invalid::new(
            format!("{path}.advertise_source"),
            format!(
                "{} is not an AdvertiseSource (accepted 0..=3)",
                f.advertise_source
            ),
        )
    })?;
    if f.advertise_address.is_empty() {
        if source != v1::AdvertiseSource::Unspecified {
            return Err(Invalid::new(
                format!("{path}.advertise_source"),
                format!(
                    "{} without an address (accepted UNSPECIFIED when advertise_address is \"\")",
                    source.as_str_name()
                ),
            ));
        }
        return Ok(());
    }
    let ip: IpAddr = f.advertise_address.parse().map_err(|_| {
        Invalid::new(
            &field,
            format!(
                "{} is not an IP address (accepted \"\" or IPv4 or IPv6 text)",
                show(&f.advertise_address)
            ),
        )
    })?;
    let problem = if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(Invalid::new(
            &field,
            format!("{ip} is {problem} (accepted an address other machines reach this host at)"),
        ));
    }
    if source == v1::AdvertiseSource::Unspecified {
        return Err(Invalid::new(
            format!("{path}.advertise_source"),
            "UNSPECIFIED with an address (accepted CONFIG, CONNECTION or INTERFACE)",
        ));
    }
    Ok(())
}

/// `Inventory` at `path`.
pub fn inventory(path: &str, inv: &v1::Inventory) -> Result<(), Invalid> {
    if !(1..=LOGICAL_CORES_MAX).contains(&inv.logical_cores) {
        return Err(Invalid::range(
            format!("{path}.logical_cores"),
            inv.logical_cores,
            format!("1..={LOGICAL_CORES_MAX}"),
        ));
    }
    if !(1..=inv.logical_cores).contains(&inv.physical_cores) {
        return Err(Invalid::range(
            format!("{path}.physical_cores"),
            inv.physical_cores,
            format!("1..={}, at most logical_cores", inv.logical_cores),
        ));
    }
    if !(MEMORY_MIN_BYTES..=MEMORY_MAX_BYTES).contains(&inv.memory_total_bytes) {
        return Err(Invalid::range(
            format!("{path}.memory_total_bytes"),
            inv.memory_total_bytes,
            format!("{MEMORY_MIN_BYTES}..={MEMORY_MAX_BYTES}, 64MiB..=64TiB"),
        ));
    }
    if inv.memory_available_bytes > inv.memory_total_bytes {
        return Err(Invalid::range(
            format!("{path}.memory_available_bytes"),
            inv.memory_available_bytes,
            format!("0..={}, at most memory_total_bytes", inv.memory_total_bytes),
        ));
    }
    let max_quota = u64::from(inv.logical_cores) * 1000;
    if u64::from(inv.cpu_quota_millicores) > max_quota {
        return Err(Invalid::range(
            format!("{path}.cpu_quota_millicores"),
            inv.cpu_quota_millicores,
            format!("0..={max_quota}, at most logical_cores*1000"),
        ));
    }
    Ok(())
}

/// Sequence rule: strictly greater than the previous heartbeat's in this
/// stream (the first must be at least 1).
pub fn heartbeat_seq(path: &str, seq: u64, previous: u64) -> Result<(), Invalid> {
    if seq <= previous {
        return Err(Invalid::range(
            format!("{path}.seq"),
            seq,
            format!(
                "{}..: strictly increasing within the stream",
                previous.saturating_add(1)
            ),
        ));
    }
    Ok(())
}

/// `Heartbeat` at `path`. `previous_seq`: the last sequence number seen on
/// this stream (`None` skips the sequence rule). `memory_total_bytes`: the
/// host's total memory (from facts in the same message, else the stored
/// facts) that `memory_used_bytes` may not exceed; `None` skips that rule.
pub fn heartbeat(
    path: &str,
    hb: &v1::Heartbeat,
    previous_seq: Option<u64>,
    memory_total_bytes: Option<u64>,
) -> Result<(), Invalid> {
    if let Some(previous) = previous_seq {
        heartbeat_seq(path, hb.seq, previous)?;
    }
    if let Some(facts) = &hb.facts {
        host_facts(&format!("{path}.facts"), facts)?;
    }
    let total = hb
        .facts
        .as_ref()
        .and_then(|f| f.inventory.as_ref())
        .map(|i| i.memory_total_bytes)
        .or(memory_total_bytes);
    if let Some(u) = &hb.utilization {
        utilization(&format!("{path}.utilization"), u, total)?;
    }
    if hb.health.len() > HEALTH_CHECKS_MAX {
        return Err(Invalid::range(
            format!("{path}.health"),
            format!("{} entries", hb.health.len()),
            format!("at most {HEALTH_CHECKS_MAX}"),
        ));
    }
    for (i, check) in hb.health.iter().enumerate() {
        health_check(&format!("{path}.health[{i}]"), check)?;
    }
    if let Some(n) = hb.pending_pods
        && n > PENDING_PODS_MAX
    {
        return Err(Invalid::range(
            format!("{path}.pending_pods"),
            n,
            format!("0..={PENDING_PODS_MAX}"),
        ));
    }
    if let Some(report) = &hb.certs {
        if report.certs.len() > CERTS_MAX {
            return Err(Invalid::new(
                format!("{path}.certs.certs"),
                format!("{} entries (accepted at most {CERTS_MAX})", report.certs.len()),
            ));
        }
        for (i, c) in report.certs.iter().enumerate() {
            let ok = !c.name.is_empty()
                && c.name.len() <= 64
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
            if !ok {
                return Err(Invalid::new(
                    format!("{path}.certs.certs[{i}].name"),
                    format!("{:?} is not 1..=64 characters [a-z0-9.-]", c.name),
                ));
            }
            if c.expires_unix_ms == 0 {
                return Err(Invalid::new(
                    format!("{path}.certs.certs[{i}].expires_unix_ms"),
                    "missing (accepted a Unix time in ms, > 0)",
                ));
            }
        }
    }
    Ok(())
}

/// Most certificates a heartbeat may report.
pub const CERTS_MAX: usize = 64;

/// Most pending pods a heartbeat may report.
pub const PENDING_PODS_MAX: u32 = 1_000_000;

/// `Utilization` at `path`.
pub fn utilization(path: &str, u: &v1::Utilization, memory_total_bytes: Option<u64>) -> Result<(), Invalid> {
    if !(u.cpu_percent.is_finite() && (0.0..=100.0).contains(&u.cpu_percent)) {
        return Err(Invalid::range(
            format!("{path}.cpu_percent"),
            u.cpu_percent,
            "finite 0..=100",
        ));
    }
    if let Some(total) = memory_total_bytes
        && u.memory_used_bytes > total
    {
        return Err(Invalid::range(
            format!("{path}.memory_used_bytes"),
            u.memory_used_bytes,
            format!("0..={total}, at most the host's memory_total_bytes"),
        ));
    }
    for (name, value) in [
        ("load_average_1m", u.load_average_1m),
        ("load_average_5m", u.load_average_5m),
        ("load_average_15m", u.load_average_15m),
    ] {
        if !(value.is_finite() && (0.0..=LOAD_AVERAGE_MAX).contains(&value)) {
            return Err(Invalid::range(
                format!("{path}.{name}"),
                value,
                "finite 0..=1000000",
            ));
        }
    }
    Ok(())
}

/// `HealthCheck` at `path`.
pub fn health_check(path: &str, c: &v1::HealthCheck) -> Result<(), Invalid> {
    let name_path = format!("{path}.name");
    length(&name_path, &c.name, 1, HEALTH_NAME_MAX_CHARS)?;
    charset(
        &name_path,
        &c.name,
        |ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-',
        "[a-z0-9_-]",
    )?;
    match v1::HealthStatus::try_from(c.status) {
        Ok(v1::HealthStatus::Ok | v1::HealthStatus::Warn | v1::HealthStatus::Fail) => {}
        Ok(v1::HealthStatus::Unspecified) => {
            return Err(Invalid::new(
                format!("{path}.status"),
                "HEALTH_STATUS_UNSPECIFIED is not allowed (accepted OK, WARN or FAIL)",
            ));
        }
        Err(_) => {
            return Err(Invalid::range(
                format!("{path}.status"),
                c.status,
                "1..=3: OK, WARN or FAIL",
            ));
        }
    }
    let n = c.message.chars().count();
    if n > HEALTH_MESSAGE_MAX_CHARS {
        return Err(Invalid::new(
            format!("{path}.message"),
            format!("{n} characters is out of range (accepted 0..={HEALTH_MESSAGE_MAX_CHARS})"),
        ));
    }
    Ok(())
}

/// `ListHostsRequest`: state "" or a state name, zone "" or a DNS label.
pub fn list_hosts(r: &v1::ListHostsRequest) -> Result<Option<HostState>, Invalid> {
    let state = if r.state.is_empty() {
        None
    } else {
        Some(r.state.parse::<HostState>().map_err(|_| {
            Invalid::new(
                "list_hosts.state",
                format!(
                    "{} is not a host state (accepted \"\" or {})",
                    show(&r.state),
                    HostState::accepted()
                ),
            )
        })?)
    };
    if !r.zone.is_empty() {
        dns_label("list_hosts.zone", &r.zone)?;
    }
    Ok(state)
}

/// A label map at `path` (e.g. `hello.facts.labels`): at most
/// `LABELS_MAX` entries, keys 1..=63 of `[A-Za-z0-9._/-]`, values at most
/// 253 characters.
pub fn labels(path: &str, labels: &std::collections::HashMap<String, String>) -> Result<(), Invalid> {
    if labels.len() > LABELS_MAX {
        return Err(Invalid::range(
            path,
            format!("{} entries", labels.len()),
            format!("at most {LABELS_MAX}"),
        ));
    }
    // Sorted, so the reported label does not depend on map order.
    let mut sorted: Vec<_> = labels.iter().collect();
    sorted.sort();
    for (key, value) in sorted {
        label_key(&format!("{path}[{}]", show(key)), key)?;
        let value_len = value.chars().count();
        if value_len > LABEL_VALUE_MAX_CHARS {
            return Err(Invalid::new(
                format!("{path}[{}]", show(key)),
                format!(
                    "value has {value_len} characters, which is out of range (accepted 0..={LABEL_VALUE_MAX_CHARS})"
                ),
            ));
        }
    }
    Ok(())
}

/// One label key at `key_path`: 1..=63 characters of `[A-Za-z0-9._/-]`.
pub fn label_key(key_path: &str, key: &str) -> Result<(), Invalid> {
    let key_len = key.chars().count();
    if !(1..=LABEL_KEY_MAX_CHARS).contains(&key_len) {
        return Err(Invalid::new(
            key_path,
            format!(
                "key has {key_len} characters, which is out of range (accepted 1..={LABEL_KEY_MAX_CHARS})"
            ),
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(Invalid::new(
            key_path,
            format!("key contains {c:?} (accepted characters [A-Za-z0-9._/-])"),
        ));
    }
    Ok(())
}

/// A host id or a prefix of one at `path`, 4..=36 of `[0-9a-f-]`.
pub fn host_id_prefix(path: &str, id: &str) -> Result<(), Invalid> {
    length(path, id, HOST_ID_PREFIX_MIN_CHARS, HOST_ID_LEN)?;
    charset(
        path,
        id,
        |c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-',
        "[0-9a-f-]",
    )
}

/// `GetHostRequest`: a host id or a prefix of one, 4..=36 of `[0-9a-f-]`.
pub fn get_host(r: &v1::GetHostRequest) -> Result<(), Invalid> {
    host_id_prefix("get_host.host_id", &r.host_id)
}

/// `SetHostLabelsRequest`: host id prefix, labels to set, keys to remove,
/// and at least one of the two.
pub fn set_host_labels(r: &v1::SetHostLabelsRequest) -> Result<(), Invalid> {
    host_id_prefix("set_host_labels.host_id", &r.host_id)?;
    labels("set_host_labels.set", &r.set)?;
    if r.remove.len() > LABELS_MAX {
        return Err(Invalid::range(
            "set_host_labels.remove",
            format!("{} entries", r.remove.len()),
            format!("at most {LABELS_MAX}"),
        ));
    }
    for (i, key) in r.remove.iter().enumerate() {
        label_key(&format!("set_host_labels.remove[{i}]"), key)?;
    }
    if r.set.is_empty() && r.remove.is_empty() {
        return Err(Invalid::new(
            "set_host_labels",
            "nothing to change (accepted at least one label to set or remove)",
        ));
    }
    Ok(())
}

/// A controller id at `path`: `1..=2^63`.
pub fn controller_id(path: &str, id: u64) -> Result<(), Invalid> {
    const MAX: u64 = 1 << 63;
    if !(1..=MAX).contains(&id) {
        return Err(Invalid::range(path, id, format!("1..={MAX}")));
    }
    Ok(())
}

/// A controller address at `path`: `host:port`, port 1..=65535.
pub fn controller_address(path: &str, address: &str) -> Result<(), Invalid> {
    length(path, address, 3, 261)?;
    let bad = || {
        Invalid::new(
            path,
            format!(
                "{} is not host:port (accepted e.g. 10.0.0.14:7443)",
                show(address)
            ),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty()
        || host.chars().any(char::is_whitespace)
        || port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const ID: &str = "0b5e8a3c-1f2d-4c6b-9a7e-3d2c1b0a9f8e";

    pub(crate) fn good_facts() -> v1::HostFacts {
        v1::HostFacts {
            hostname: "sim-a-1".to_owned(),
            addresses: vec!["10.0.0.5".to_owned(), "::1".to_owned()],
            zone: "a".to_owned(),
            labels: [("rack".to_owned(), "r12".to_owned())].into(),
            inventory: Some(v1::Inventory {
                logical_cores: 16,
                physical_cores: 8,
                memory_total_bytes: 64 << 30,
                memory_available_bytes: 32 << 30,
                cpu_quota_millicores: 0,
                memory_capped_by_cgroup: false,
            }),
            simulated: true,
            advertise_address: "10.0.0.5".to_owned(),
            advertise_source: v1::AdvertiseSource::Connection as i32,
            cri_socket: "unix:///run/containerd/containerd.sock".to_owned(),
        }
    }

    pub(crate) fn good_heartbeat(seq: u64) -> v1::Heartbeat {
        v1::Heartbeat {
            seq,
            sent_at_unix_ms: 1_700_000_000_000,
            utilization: Some(v1::Utilization {
                cpu_percent: 20.0,
                memory_used_bytes: 8 << 30,
                load_average_1m: 1.5,
                load_average_5m: 1.0,
                load_average_15m: 0.5,
            }),
            health: vec![v1::HealthCheck {
                name: "disk_free".to_owned(),
                status: v1::HealthStatus::Ok as i32,
                message: "120GiB free".to_owned(),
            }],
            facts: None,
            pending_pods: None,
            certs: None,
        }
    }

    pub(crate) fn good_hello() -> v1::Hello {
        v1::Hello {
            host_id: ID.to_owned(),
            agent_version: "0.1.0".to_owned(),
            facts: Some(good_facts()),
            first_heartbeat: Some(good_heartbeat(0)),
            serve_here: false,
        }
    }

    fn inv(h: &mut v1::Hello) -> &mut v1::Inventory {
        h.facts.as_mut().unwrap().inventory.as_mut().unwrap()
    }
    fn facts(h: &mut v1::Hello) -> &mut v1::HostFacts {
        h.facts.as_mut().unwrap()
    }
    fn util(h: &mut v1::Hello) -> &mut v1::Utilization {
        h.first_heartbeat.as_mut().unwrap().utilization.as_mut().unwrap()
    }
    fn health(h: &mut v1::Hello) -> &mut v1::HealthCheck {
        &mut h.first_heartbeat.as_mut().unwrap().health[0]
    }

    #[test]
    fn a_good_hello_passes() {
        hello(&good_hello()).unwrap();
    }

    /// One case per Hello rule: (mutation, expected message prefix).
    #[test]
    fn every_hello_rule_names_its_field_and_accepted_range() {
        type Mutate = fn(&mut v1::Hello);
        let cases: Vec<(Mutate, &str)> = vec![
            (
                |h| h.host_id = "0B5E8A3C-1F2D-4C6B-9A7E-3D2C1B0A9F8E".into(),
                "hello.host_id: \"0B5E8A3C-1F2D-4C6B-9A7E-3D2C1B0A9F8E\" is not a lowercase UUID (accepted 36 characters: 8-4-4-4-12 digits 0-9a-f)",
            ),
            (
                |h| h.host_id = "abc".into(),
                "hello.host_id: \"abc\" is not a lowercase UUID",
            ),
            (
                |h| h.agent_version = String::new(),
                "hello.agent_version: \"\" has 0 characters, which is out of range (accepted 1..=64)",
            ),
            (|h| h.agent_version = "v".repeat(65), "hello.agent_version: "),
            (
                |h| h.facts = None,
                "hello.facts: missing (accepted a HostFacts message)",
            ),
            (
                |h| facts(h).hostname = String::new(),
                "hello.facts.hostname: \"\" has 0 characters, which is out of range (accepted 1..=253)",
            ),
            (|h| facts(h).hostname = "a".repeat(254), "hello.facts.hostname: "),
            (
                |h| facts(h).hostname = "bad_name".into(),
                "hello.facts.hostname: \"bad_name\" contains '_' (accepted characters [A-Za-z0-9.-])",
            ),
            (
                |h| facts(h).addresses = vec!["10.0.0.1".into(); 33],
                "hello.facts.addresses: 33 entries is out of range (accepted at most 32)",
            ),
            (
                |h| facts(h).addresses[1] = "10.0.0.300".into(),
                "hello.facts.addresses[1]: \"10.0.0.300\" is not an IP address (accepted IPv4 or IPv6 text)",
            ),
            (
                |h| facts(h).advertise_address = "node-1".into(),
                "hello.facts.advertise_address: \"node-1\" is not an IP address (accepted \"\" or IPv4 or IPv6 text)",
            ),
            (
                |h| facts(h).advertise_address = "127.0.0.1".into(),
                "hello.facts.advertise_address: 127.0.0.1 is a loopback address",
            ),
            (
                |h| facts(h).advertise_address = "::".into(),
                "hello.facts.advertise_address: :: is the unspecified address",
            ),
            (
                |h| facts(h).advertise_address = "224.0.0.5".into(),
                "hello.facts.advertise_address: 224.0.0.5 is a multicast address",
            ),
            (
                |h| facts(h).advertise_source = v1::AdvertiseSource::Unspecified as i32,
                "hello.facts.advertise_source: UNSPECIFIED with an address",
            ),
            (
                |h| facts(h).advertise_source = 9,
                "hello.facts.advertise_source: 9 is not an AdvertiseSource (accepted 0..=3)",
            ),
            (
                |h| facts(h).advertise_address = String::new(),
                "hello.facts.advertise_source: ADVERTISE_SOURCE_CONNECTION without an address",
            ),
            (
                |h| facts(h).cri_socket = "/run/containerd/containerd.sock".into(),
                "hello.facts.cri_socket: \"/run/containerd/containerd.sock\" is not accepted (accepted \"\" or unix:///absolute/path, at most 255 characters)",
            ),
            (
                |h| facts(h).cri_socket = format!("unix:///{}", "s".repeat(255)),
                "hello.facts.cri_socket: ",
            ),
            (
                |h| facts(h).zone = "Zone_A".into(),
                "hello.facts.zone: \"Zone_A\" is not a DNS label (accepted 1..=63 characters [a-z0-9-], starting and ending with a letter or digit)",
            ),
            (
                |h| facts(h).zone = String::new(),
                "hello.facts.zone: \"\" is not a DNS label",
            ),
            (|h| facts(h).zone = "a".repeat(64), "hello.facts.zone: "),
            (
                |h| facts(h).zone = "-a".into(),
                "hello.facts.zone: \"-a\" is not a DNS label",
            ),
            (
                |h| facts(h).labels = (0..65).map(|i| (format!("k{i}"), String::new())).collect(),
                "hello.facts.labels: 65 entries is out of range (accepted at most 64)",
            ),
            (
                |h| {
                    facts(h).labels.insert(String::new(), "v".into());
                },
                "hello.facts.labels[\"\"]: key has 0 characters, which is out of range (accepted 1..=63)",
            ),
            (
                |h| {
                    facts(h).labels.insert("k".repeat(64), "v".into());
                },
                "hello.facts.labels[\"kkkk",
            ),
            (
                |h| {
                    facts(h).labels.insert("bad key".into(), "v".into());
                },
                "hello.facts.labels[\"bad key\"]: key contains ' ' (accepted characters [A-Za-z0-9._/-])",
            ),
            (
                |h| {
                    facts(h).labels.insert("k".into(), "v".repeat(254));
                },
                "hello.facts.labels[\"k\"]: value has 254 characters, which is out of range (accepted 0..=253)",
            ),
            (
                |h| facts(h).inventory = None,
                "hello.facts.inventory: missing (accepted an Inventory message)",
            ),
            (
                |h| inv(h).logical_cores = 1_000_000_000,
                "hello.facts.inventory.logical_cores: 1000000000 is out of range (accepted 1..=4096)",
            ),
            (
                |h| inv(h).logical_cores = 0,
                "hello.facts.inventory.logical_cores: 0 is out of range (accepted 1..=4096)",
            ),
            (
                |h| inv(h).physical_cores = 17,
                "hello.facts.inventory.physical_cores: 17 is out of range (accepted 1..=16, at most logical_cores)",
            ),
            (
                |h| inv(h).physical_cores = 0,
                "hello.facts.inventory.physical_cores: 0 is out of range",
            ),
            (
                |h| inv(h).memory_total_bytes = (64 << 20) - 1,
                "hello.facts.inventory.memory_total_bytes: 67108863 is out of range (accepted 67108864..=70368744177664, 64MiB..=64TiB)",
            ),
            (
                |h| inv(h).memory_total_bytes = (64 << 40) + 1,
                "hello.facts.inventory.memory_total_bytes: 70368744177665 is out of range",
            ),
            (
                |h| inv(h).memory_available_bytes = (64 << 30) + 1,
                "hello.facts.inventory.memory_available_bytes: 68719476737 is out of range (accepted 0..=68719476736, at most memory_total_bytes)",
            ),
            (
                |h| inv(h).cpu_quota_millicores = 16_001,
                "hello.facts.inventory.cpu_quota_millicores: 16001 is out of range (accepted 0..=16000, at most logical_cores*1000)",
            ),
            (
                |h| util(h).cpu_percent = 100.5,
                "hello.first_heartbeat.utilization.cpu_percent: 100.5 is out of range (accepted finite 0..=100)",
            ),
            (
                |h| util(h).cpu_percent = f64::NAN,
                "hello.first_heartbeat.utilization.cpu_percent: NaN is out of range (accepted finite 0..=100)",
            ),
            (
                |h| util(h).memory_used_bytes = (64 << 30) + 1,
                "hello.first_heartbeat.utilization.memory_used_bytes: 68719476737 is out of range (accepted 0..=68719476736, at most the host's memory_total_bytes)",
            ),
            (
                |h| util(h).load_average_1m = -1.0,
                "hello.first_heartbeat.utilization.load_average_1m: -1 is out of range (accepted finite 0..=1000000)",
            ),
            (
                |h| util(h).load_average_5m = f64::INFINITY,
                "hello.first_heartbeat.utilization.load_average_5m: inf is out of range",
            ),
            (
                |h| util(h).load_average_15m = 2e6,
                "hello.first_heartbeat.utilization.load_average_15m: 2000000 is out of range",
            ),
            (
                |h| {
                    h.first_heartbeat.as_mut().unwrap().health = vec![good_heartbeat(1).health[0].clone(); 33]
                },
                "hello.first_heartbeat.health: 33 entries is out of range (accepted at most 32)",
            ),
            (
                |h| health(h).name = String::new(),
                "hello.first_heartbeat.health[0].name: \"\" has 0 characters, which is out of range (accepted 1..=64)",
            ),
            (
                |h| health(h).name = "Disk".into(),
                "hello.first_heartbeat.health[0].name: \"Disk\" contains 'D' (accepted characters [a-z0-9_-])",
            ),
            (
                |h| health(h).status = 0,
                "hello.first_heartbeat.health[0].status: HEALTH_STATUS_UNSPECIFIED is not allowed (accepted OK, WARN or FAIL)",
            ),
            (
                |h| health(h).status = 9,
                "hello.first_heartbeat.health[0].status: 9 is out of range (accepted 1..=3: OK, WARN or FAIL)",
            ),
            (
                |h| h.first_heartbeat.as_mut().unwrap().pending_pods = Some(1_000_001),
                "hello.first_heartbeat.pending_pods: 1000001 is out of range (accepted 0..=1000000)",
            ),
            (
                |h| health(h).message = "m".repeat(1025),
                "hello.first_heartbeat.health[0].message: 1025 characters is out of range (accepted 0..=1024)",
            ),
        ];
        for (mutate, want) in cases {
            let mut h = good_hello();
            mutate(&mut h);
            let err = hello(&h).expect_err(want).to_string();
            assert!(err.starts_with(want), "got {err:?}\nwant prefix {want:?}");
        }
    }

    #[test]
    fn heartbeats_need_strictly_increasing_sequence_numbers() {
        heartbeat("heartbeat", &good_heartbeat(1), Some(0), Some(64 << 30)).unwrap();
        heartbeat("heartbeat", &good_heartbeat(5), Some(4), None).unwrap();
        let err = heartbeat("heartbeat", &good_heartbeat(4), Some(4), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "heartbeat.seq: 4 is out of range (accepted 5..: strictly increasing within the stream)"
        );
        let err = heartbeat("heartbeat", &good_heartbeat(0), Some(0), None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("heartbeat.seq: 0 is out of range (accepted 1..")
        );
    }

    #[test]
    fn heartbeat_facts_are_validated_and_set_the_memory_bound() {
        let mut hb = good_heartbeat(1);
        let mut f = good_facts();
        f.inventory.as_mut().unwrap().memory_total_bytes = 4 << 30;
        f.inventory.as_mut().unwrap().memory_available_bytes = 1 << 30;
        hb.facts = Some(f);
        // 8GiB used > 4GiB total from the facts in the same message.
        let err = heartbeat("heartbeat", &hb, Some(0), Some(64 << 30)).unwrap_err();
        assert_eq!(err.field, "heartbeat.utilization.memory_used_bytes");
        hb.facts.as_mut().unwrap().zone = "UPPER".into();
        let err = heartbeat("heartbeat", &hb, Some(0), None).unwrap_err();
        assert_eq!(err.field, "heartbeat.facts.zone");
    }

    #[test]
    fn admin_requests_are_validated() {
        let ok = |state: &str, zone: &str| {
            list_hosts(&v1::ListHostsRequest {
                state: state.into(),
                zone: zone.into(),
            })
        };
        assert_eq!(ok("", ""), Ok(None));
        assert_eq!(ok("down", "b"), Ok(Some(HostState::Down)));
        assert_eq!(
            ok("dead", "").unwrap_err().to_string(),
            "list_hosts.state: \"dead\" is not a host state (accepted \"\" or ready|suspect|down|cordoned|joining|leaving)"
        );
        assert_eq!(ok("", "B!").unwrap_err().field, "list_hosts.zone");

        let get = |id: &str| get_host(&v1::GetHostRequest { host_id: id.into() });
        get("0b5e").unwrap();
        get(ID).unwrap();
        assert_eq!(
            get("0b5").unwrap_err().to_string(),
            "get_host.host_id: \"0b5\" has 3 characters, which is out of range (accepted 4..=36)"
        );
        assert!(get(&format!("{ID}0")).is_err());
        assert_eq!(
            get("0B5E").unwrap_err().to_string(),
            "get_host.host_id: \"0B5E\" contains 'B' (accepted characters [0-9a-f-])"
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let err = agent_version("v", &"x".repeat(10_000)).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
        assert!(err.contains("10000 characters"), "{err}");
    }

    #[test]
    fn invalid_converts_to_an_invalid_argument_status() {
        let status: tonic::Status = Invalid::new("a.b", "bad (accepted good)").into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "a.b: bad (accepted good)");
    }
}
