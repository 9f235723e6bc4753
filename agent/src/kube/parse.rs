//! Parsers of what the tools print: the `kubeadm join` command lines of
//! `kubeadm init` and `kubeadm token create --print-join-command`, the
//! certificate key of `upload-certs`, a kubeconfig's server, `etcdctl
//! member list`, kubectl's pod list and its "not found" errors. Parsed
//! secrets show redacted in `Debug`.

use std::fmt;

use super::checks::{check_join_fields, is_hex64};
use super::redact::{REDACTED, redact};

/// Counts the unschedulable pods in a `kubectl get pods -o json` list: a
/// `PodScheduled` condition with status `False` and reason `Unschedulable`.
pub fn count_unschedulable(json: &str) -> Result<u32, String> {
    let list: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not a JSON pod list: {e}"))?;
    let items = list
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| "no \"items\" array in the pod list".to_owned())?;
    let unschedulable = items
        .iter()
        .filter(|pod| {
            pod.pointer("/status/conditions")
                .and_then(|c| c.as_array())
                .is_some_and(|conditions| {
                    conditions.iter().any(|c| {
                        c.get("type").and_then(|v| v.as_str()) == Some("PodScheduled")
                            && c.get("status").and_then(|v| v.as_str()) == Some("False")
                            && c.get("reason").and_then(|v| v.as_str()) == Some("Unschedulable")
                    })
                })
        })
        .count();
    u32::try_from(unschedulable).map_err(|_| format!("{unschedulable} pods is more than a u32"))
}

/// One `kubeadm join` command line from a tool's output.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinCommand {
    pub endpoint: String,
    pub token: String,
    pub ca_cert_hash: String,
    pub control_plane: bool,
    pub certificate_key: Option<String>,
}

impl fmt::Debug for JoinCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinCommand")
            .field("endpoint", &self.endpoint)
            .field("token", &redact(&self.token))
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field("control_plane", &self.control_plane)
            .field(
                "certificate_key",
                &self.certificate_key.as_ref().map(|_| REDACTED),
            )
            .finish()
    }
}

/// Every `kubeadm join ...` command in `text`, with backslash continuation
/// lines joined (as `kubeadm init` prints them).
pub fn parse_join_commands(text: &str) -> Vec<JoinCommand> {
    // Logical lines: a trailing backslash continues on the next line.
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        logical.push(current);
    }
    let mut commands = Vec::new();
    for line in logical {
        let Some(pos) = line.find("kubeadm join ") else {
            continue;
        };
        let words: Vec<&str> = line[pos + "kubeadm join ".len()..].split_whitespace().collect();
        let mut cmd = JoinCommand {
            endpoint: String::new(),
            token: String::new(),
            ca_cert_hash: String::new(),
            control_plane: false,
            certificate_key: None,
        };
        let mut i = 0;
        while i < words.len() {
            let w = words[i];
            let (flag, inline) = match w.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v)),
                _ => (w, None),
            };
            let mut value = || {
                inline.map(str::to_owned).or_else(|| {
                    i += 1;
                    words.get(i).map(|s| s.to_string())
                })
            };
            match flag {
                "--token" | "--discovery-token" => cmd.token = value().unwrap_or_default(),
                "--discovery-token-ca-cert-hash" => {
                    let v = value().unwrap_or_default();
                    if cmd.ca_cert_hash.is_empty() {
                        cmd.ca_cert_hash = v;
                    }
                }
                "--certificate-key" => cmd.certificate_key = value(),
                "--control-plane" => cmd.control_plane = true,
                f if f.starts_with('-') => {}
                endpoint if cmd.endpoint.is_empty() => cmd.endpoint = endpoint.to_owned(),
                _ => {}
            }
            i += 1;
        }
        if !cmd.endpoint.is_empty() {
            commands.push(cmd);
        }
    }
    commands
}

/// What `kubeadm init --upload-certs` printed.
#[derive(Clone, PartialEq, Eq)]
pub struct InitSecrets {
    pub endpoint: String,
    pub token: String,
    pub ca_cert_hash: String,
    pub certificate_key: Option<String>,
}

impl fmt::Debug for InitSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitSecrets")
            .field("endpoint", &self.endpoint)
            .field("ca_cert_hash", &self.ca_cert_hash)
            .finish_non_exhaustive()
    }
}

/// Join command, token, CA cert hash and certificate key from `kubeadm
/// init` output. The error text is safe to show.
pub fn parse_init_output(text: &str) -> Result<InitSecrets, String> {
    let commands = parse_join_commands(text);
    let Some(first) = commands.iter().find(|c| !c.control_plane).or(commands.first()) else {
        return Err("no `kubeadm join` command line in the kubeadm init output".to_owned());
    };
    if first.token == "<value withheld>" || text.contains("<value withheld>") {
        return Err("kubeadm withheld the token or certificate key (--skip-token-print)".to_owned());
    }
    check_join_fields(first)?;
    if commands.iter().any(|c| {
        c.token != first.token || c.ca_cert_hash != first.ca_cert_hash || c.endpoint != first.endpoint
    }) {
        return Err("the join commands in the kubeadm init output disagree".to_owned());
    }
    let certificate_key = commands
        .iter()
        .find_map(|c| c.certificate_key.clone())
        .or_else(|| parse_upload_certs(text));
    if let Some(k) = &certificate_key
        && !is_hex64(k)
    {
        return Err("the certificate key is not 64 hex digits".to_owned());
    }
    Ok(InitSecrets {
        endpoint: first.endpoint.clone(),
        token: first.token.clone(),
        ca_cert_hash: first.ca_cert_hash.clone(),
        certificate_key,
    })
}

/// The key after `[upload-certs] Using certificate key:` (same or next line).
pub fn parse_upload_certs(text: &str) -> Option<String> {
    const MARK: &str = "[upload-certs] Using certificate key:";
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(pos) = line.find(MARK) {
            let rest = line[pos + MARK.len()..].trim();
            let key = if rest.is_empty() {
                lines.by_ref().map(str::trim).find(|l| !l.is_empty())?
            } else {
                rest
            };
            return is_hex64(key).then(|| key.to_owned());
        }
    }
    None
}

/// The `server:` of a kubeconfig as host:port.
pub fn kubeconfig_server(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("server:")?;
        let value = value.trim().trim_matches('"').trim_matches('\'');
        let value = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"))
            .unwrap_or(value);
        Some(value.trim_end_matches('/').to_owned())
    })
}

/// host:port equality, ignoring case and a default `:443`-less form.
pub(super) fn same_endpoint(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// `etcdctl member list -w simple`: `(hex id, name)` per member.
pub fn parse_member_list(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let id = fields.next()?;
            let _status = fields.next()?;
            let name = fields.next()?;
            (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (id.to_owned(), name.to_owned()))
        })
        .collect()
}

/// `Error from server (NotFound): nodes "N" not found`.
pub(super) fn is_not_found(text: &str, node: &str) -> bool {
    text.contains(&format!("nodes \"{node}\" not found"))
}

/// A pod that kept `kubectl drain` from finishing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainBlocker {
    /// `namespace/name`.
    pub pod: String,
    pub why: &'static str,
}

/// The pods a failed `kubectl drain` names in its error: the ones its
/// filters refused (`cannot delete <kind>: ns/a, ns/b`) and the ones whose
/// eviction did not finish before `--timeout` (`error when evicting
/// pods/"a" -n "ns": global timeout reached: 5m0s`), the latter blocked by
/// a PodDisruptionBudget when kubectl said so while retrying.
pub fn drain_blockers(text: &str) -> Vec<DrainBlocker> {
    let mut out: Vec<DrainBlocker> = Vec::new();
    let mut push = |pod: String, why: &'static str| {
        if !out.iter().any(|b| b.pod == pod) {
            out.push(DrainBlocker { pod, why });
        }
    };
    const FILTERS: [(&str, &str); 3] = [
        (
            "cannot delete Pods declare no controller (use --force to override): ",
            "declares no controller (bare pod; rpool does not --force it away)",
        ),
        (
            "cannot delete Pods with local storage (use --delete-emptydir-data to override): ",
            "uses local storage",
        ),
        (
            "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): ",
            "is DaemonSet-managed",
        ),
    ];
    let budget = text.contains("Cannot evict pod as it would violate the pod's disruption budget");
    // The last line repeats the whole error; kubectl joins several with ", ".
    let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Vec::new();
    };
    let last = last.trim().trim_start_matches('[').trim_end_matches(']');
    for part in split_errors(last) {
        if let Some((prefix, why)) = FILTERS.iter().find(|(p, _)| part.starts_with(p)) {
            for pod in part[prefix.len()..].split(", ") {
                push(pod.trim().to_owned(), why);
            }
        } else if let Some(rest) = part.strip_prefix("error when evicting pods/\"")
            && rest.contains("global timeout reached")
            && let Some((name, rest)) = rest.split_once("\" -n \"")
            && let Some((ns, _)) = rest.split_once('"')
        {
            let why = if budget {
                "eviction refused by its PodDisruptionBudget until the drain timed out"
            } else {
                "eviction did not finish before the drain timed out"
            };
            push(format!("{ns}/{name}"), why);
        }
    }
    out
}

/// The errors of kubectl's aggregate (`a, b`), where each error starts with
/// `cannot delete ` or `error when evicting ` (pod lists also hold ", ").
fn split_errors(line: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = ["cannot delete ", "error when evicting "]
        .iter()
        .flat_map(|m| line.match_indices(m).map(|(i, _)| i))
        .collect();
    starts.sort_unstable();
    starts
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let end = starts.get(k + 1).copied().unwrap_or(line.len());
            line[i..end].trim_end().trim_end_matches(',')
        })
        .collect()
}

#[cfg(test)]
mod drain_tests {
    use super::*;

    #[test]
    fn refused_and_timed_out_pods_are_named_with_their_reason() {
        let refused = "node/w1 cordoned\nerror: unable to drain node \"w1\" due to error: [cannot delete Pods with local storage (use --delete-emptydir-data to override): default/cache-0, cannot delete Pods declare no controller (use --force to override): default/bare-1, kube-system/debug], continuing command...\nThere are pending nodes to be drained:\n w1\n[cannot delete Pods with local storage (use --delete-emptydir-data to override): default/cache-0, cannot delete Pods declare no controller (use --force to override): default/bare-1, kube-system/debug]\n";
        let b = drain_blockers(refused);
        let pods: Vec<(&str, &str)> = b.iter().map(|b| (b.pod.as_str(), b.why)).collect();
        assert_eq!(
            pods,
            [
                ("default/cache-0", "uses local storage"),
                (
                    "default/bare-1",
                    "declares no controller (bare pod; rpool does not --force it away)"
                ),
                (
                    "kube-system/debug",
                    "declares no controller (bare pod; rpool does not --force it away)"
                ),
            ]
        );
        let timed_out = "evicting pod default/web-0\nerror when evicting pods/\"web-0\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.\nerror: unable to drain node \"w1\" due to error: error when evicting pods/\"web-0\" -n \"default\": global timeout reached: 5m0s, continuing command...\nThere are pending nodes to be drained:\n w1\nerror when evicting pods/\"web-0\" -n \"default\": global timeout reached: 5m0s\n";
        assert_eq!(
            drain_blockers(timed_out),
            [DrainBlocker {
                pod: "default/web-0".into(),
                why: "eviction refused by its PodDisruptionBudget until the drain timed out"
            }]
        );
        assert!(drain_blockers("error: the server doesn't have a resource type \"nodes\"\n").is_empty());
        assert!(drain_blockers("").is_empty());
    }
}
