//! `etcdctl` on a control plane's host (argv[0] `etcdctl`), the subset
//! rpool drives for a pool's backups, as strict as etcdctl v3.5:
//!
//! - `snapshot save FILE` needs `--endpoints` naming this host's own etcd
//!   (`https://127.0.0.1:2379`, the member's own address, or `localhost`),
//!   and `--cacert`, `--cert`, `--key` naming existing files of this
//!   control plane (production paths are mapped into the node root). The
//!   local etcd member must be alive: the host is up, it is a member of
//!   its cluster's etcd, and its static pod manifest
//!   (`/etc/kubernetes/manifests/etcd.yaml`) is in place. Otherwise it
//!   fails as etcdctl does (`context deadline exceeded` after the dial
//!   errors). Like etcdctl it writes `FILE.part` and renames it to `FILE`.
//!   The file holds the cluster's state (a header line, then its JSON), so
//!   a restore could be checked against it.
//! - `snapshot status FILE [-w simple|json|table]`: no connection, reads
//!   the file: hash (FNV-1a 32 of the content), revision, totalKey,
//!   totalSize; a file that is not a snapshot is `Error: invalid database`.
//!   Prints etcdctl's deprecation notice on stderr.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::flags::{self, flag, val, val_s};
use crate::state::{self, Cluster, Env, Fail, Res, Role, Store};

/// First line of a kubesim snapshot file.
pub const MAGIC: &str = "kubesim-etcd-snapshot v1";

const GLOBAL_FLAGS: [flags::Spec; 10] = [
    val("endpoints"),
    val("cacert"),
    val("cert"),
    val("key"),
    val_s("write-out", 'w'),
    val("command-timeout"),
    val("dial-timeout"),
    flag("insecure-skip-tls-verify"),
    flag("debug"),
    val("user"),
];

fn fail(msg: impl Into<String>) -> Fail {
    Fail::new(msg)
}

pub fn run(argv: &[String]) -> Res {
    let p = flags::parse(argv, &GLOBAL_FLAGS).map_err(|e| fail(format!("Error: {e}")))?;
    let words: Vec<&str> = p.args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["snapshot", "save", file] => save(&p, file),
        ["snapshot", "save"] => Err(fail("Error: snapshot save expects one argument")),
        ["snapshot", "status", file] => {
            eprintln!("Deprecated: Use `etcdutl snapshot status` instead.\n");
            let out = status(Path::new(file), p.get("write-out").unwrap_or("simple"))?;
            print!("{out}");
            Ok(())
        }
        ["snapshot", "status"] => Err(fail("Error: snapshot status requires exactly one argument")),
        ["version"] => {
            println!("etcdctl version: 3.5.16\nAPI version: 3.5");
            Ok(())
        }
        _ => Err(fail(format!(
            "Error: unknown command {:?} for \"etcdctl\" (kubesim: snapshot save FILE, snapshot status FILE, version)",
            words.join(" ")
        ))),
    }
}

/// etcdctl's failure when it cannot reach the endpoint.
fn unreachable(env: &Env, endpoint: &str, why: &str) -> Fail {
    fail(format!(
        "{{\"level\":\"warn\",\"ts\":\"{}\",\"logger\":\"etcd-client\",\"caller\":\"v3@v3.5.16/retry_interceptor.go:63\",\"msg\":\"retrying of unary invoker failed\",\"target\":\"etcd-endpoints://0xc0000f0000/{endpoint}\",\"attempt\":0,\"error\":\"rpc error: code = DeadlineExceeded desc = latest balancer error: last connection error: connection error: desc = \\\"{why}\\\"\"}}\nError: context deadline exceeded",
        state::rfc3339(env.now)
    ))
}

fn save(p: &flags::Parsed, file: &str) -> Res {
    let env = Env::from_process()?;
    let endpoint = p.get("endpoints").unwrap_or("127.0.0.1:2379").to_string();
    let host_port = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(&endpoint)
        .to_string();
    if endpoint.contains(',') {
        return Err(fail(format!(
            "Error: snapshot must be requested to one selected node, not multiple [{}]",
            endpoint.replace(',', " ")
        )));
    }
    // TLS: without the client certificate the server closes the handshake.
    let mut tls = Vec::new();
    for name in ["cacert", "cert", "key"] {
        let Some(path) = p.get(name) else {
            return Err(unreachable(&env, &host_port, "error reading server preface: EOF"));
        };
        let real = env.host_path(path);
        if !real.is_file() {
            return Err(fail(format!("Error: open {path}: no such file or directory")));
        }
        tls.push(real);
    }
    if !endpoint.starts_with("https://") {
        return Err(unreachable(&env, &host_port, "error reading server preface: EOF"));
    }
    let root = env.root()?.to_path_buf();
    let store = Store::open(&env)?;
    let local = state::read_local(&root).filter(|l| l.role == Role::ControlPlane);
    let refused =
        format!("transport: Error while dialing: dial tcp {host_port}: connect: connection refused");
    let Some(local) = local else {
        return Err(unreachable(&env, &host_port, &refused));
    };
    let Some(i) = store.by_id(&local.cluster_id) else {
        return Err(unreachable(&env, &host_port, &refused));
    };
    let c = &store.clusters[i];
    let Some(node) = c.node(&local.node_name).cloned() else {
        return Err(unreachable(&env, &host_port, &refused));
    };
    let (host, port) = host_port.rsplit_once(':').unwrap_or((&host_port, "2379"));
    let local_address = matches!(host, "127.0.0.1" | "localhost" | "[::1]") || host == node.internal_ip;
    if !local_address || port != "2379" {
        return Err(unreachable(
            &env,
            &host_port,
            &format!(
                "transport: Error while dialing: dial tcp {host_port}: connect: no route to host (kubesim: rpool snapshots this host's own member)"
            ),
        ));
    }
    let member = c.etcd_members.iter().any(|m| m.name == node.name);
    let manifest = root.join("etc/kubernetes/manifests/etcd.yaml").is_file();
    if !member || !manifest || !c.kubelet_up(&node) {
        return Err(unreachable(&env, &host_port, &refused));
    }
    // The certificates must be this cluster's (kubeadm made them here).
    if !tls.iter().all(|t| t.starts_with(&root)) {
        return Err(unreachable(
            &env,
            &host_port,
            "authentication handshake failed: x509: certificate signed by unknown authority",
        ));
    }
    let body = snapshot_body(c);
    let target = PathBuf::from(file);
    let part = PathBuf::from(format!("{file}.part"));
    let ts = state::rfc3339(env.now);
    println!(
        "{{\"level\":\"info\",\"ts\":\"{ts}\",\"caller\":\"snapshot/v3_snapshot.go:65\",\"msg\":\"created temporary db file\",\"path\":\"{}\"}}",
        part.display()
    );
    state::write_atomic(&part, body.as_bytes())?;
    {
        // etcdctl creates the file with fileutil.PrivateFileMode.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(format!("Error: {}: {e}", part.display())))?;
    }
    std::fs::rename(&part, &target).map_err(|e| fail(format!("Error: rename {}: {e}", target.display())))?;
    println!(
        "{{\"level\":\"info\",\"ts\":\"{ts}\",\"caller\":\"snapshot/v3_snapshot.go:88\",\"msg\":\"fetched snapshot\",\"endpoint\":\"{endpoint}\",\"size\":\"{} B\"}}",
        body.len()
    );
    println!("Snapshot saved at {file}");
    Ok(())
}

/// The bytes of a snapshot of `c`: the magic line, then the cluster's
/// state as JSON (revision, keys and the whole record).
pub fn snapshot_body(c: &Cluster) -> String {
    let cluster = serde_json::to_value(c).expect("cluster serializes");
    format!(
        "{MAGIC}\n{}\n",
        json!({
            "cluster_id": c.id,
            "etcd_cluster_id": c.etcd_cluster_id,
            "revision": c.etcd_revision,
            "total_keys": total_keys(c),
            "cluster": cluster,
        })
    )
}

/// Keys a kubeadm cluster of this shape holds in etcd (a stand-in: a
/// base set, plus per node, object, token and member).
pub fn total_keys(c: &Cluster) -> u64 {
    (64 + 6 * c.nodes.len() + c.applied.len() + c.tokens.len() + c.etcd_members.len()) as u64
}

/// FNV-1a, 32 bits (etcd reports a 32-bit hash of the database).
pub fn hash32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// `snapshot status FILE -w FORMAT`.
pub fn status(file: &Path, format: &str) -> Res<String> {
    let bytes = std::fs::read(file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            fail(format!(
                "Error: stat {}: no such file or directory",
                file.display()
            ))
        } else {
            fail(format!("Error: {}: {e}", file.display()))
        }
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("Error: invalid database"))?;
    let (magic, rest) = text
        .split_once('\n')
        .ok_or_else(|| fail("Error: invalid database"))?;
    if magic != MAGIC {
        return Err(fail("Error: invalid database"));
    }
    let v: Value = serde_json::from_str(rest.trim()).map_err(|_| fail("Error: invalid database"))?;
    let revision = v["revision"]
        .as_u64()
        .ok_or_else(|| fail("Error: invalid database"))?;
    let keys = v["total_keys"]
        .as_u64()
        .ok_or_else(|| fail("Error: invalid database"))?;
    let hash = hash32(&bytes);
    let size = bytes.len() as u64;
    Ok(match format {
        "json" => format!(
            "{}\n",
            json!({"hash": hash, "revision": revision, "totalKey": keys, "totalSize": size})
        ),
        "simple" => format!("{hash:x}, {revision}, {keys}, {}\n", human_bytes(size)),
        "table" => format!(
            "+----------+----------+------------+------------+\n|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n+----------+----------+------------+------------+\n| {:>8x} | {:>8} | {:>10} | {:>10} |\n+----------+----------+------------+------------+\n",
            hash,
            revision,
            keys,
            human_bytes(size)
        ),
        other => return Err(fail(format!("Error: unknown printer type \"{other}\""))),
    })
}

/// go-humanize's `Bytes` (SI units), as etcdctl prints sizes.
fn human_bytes(n: u64) -> String {
    if n < 1000 {
        return format!("{n} B");
    }
    let units = ["kB", "MB", "GB", "TB"];
    let mut v = n as f64 / 1000.0;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", units[i])
    } else {
        format!("{v:.0} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_back_what_a_snapshot_holds_and_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("s.db");
        let body = format!(
            "{MAGIC}\n{}\n",
            json!({"cluster_id": "c1", "revision": 42, "total_keys": 70, "cluster": {}})
        );
        std::fs::write(&good, &body).unwrap();
        let v: Value = serde_json::from_str(&status(&good, "json").unwrap()).unwrap();
        assert_eq!(v["revision"], 42);
        assert_eq!(v["totalKey"], 70);
        assert_eq!(v["totalSize"], body.len() as u64);
        assert_eq!(v["hash"], hash32(body.as_bytes()));
        assert!(status(&good, "simple").unwrap().contains(", 42, 70, "));
        assert!(
            status(&good, "yaml")
                .unwrap_err()
                .msg
                .contains("unknown printer type")
        );
        let bad = dir.path().join("b.db");
        std::fs::write(&bad, "not a snapshot\n{}").unwrap();
        assert_eq!(status(&bad, "json").unwrap_err().msg, "Error: invalid database");
        let missing = dir.path().join("none.db");
        assert!(status(&missing, "json").unwrap_err().msg.contains("no such file"));
    }

    #[test]
    fn sizes_print_like_go_humanize() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(24_576), "25 kB");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(2_000_000), "2.0 MB");
    }
}
