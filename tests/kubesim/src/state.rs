//! Shared simulated-cluster state (`$KUBESIM_STATE_DIR`), the per-host node
//! root (`$KUBESIM_NODE_ROOT`), locking, atomic writes, and small helpers
//! (randomness, base64, Go-style durations, kubeconfig files).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A failed command: the exact text for stderr and the exit code.
#[derive(Debug)]
pub struct Fail {
    pub msg: String,
    pub code: i32,
}

impl Fail {
    pub fn new(msg: impl Into<String>) -> Fail {
        Fail {
            msg: msg.into(),
            code: 1,
        }
    }
}

pub type Res<T = ()> = Result<T, Fail>;

/// The process environment that stands in for "which machine am I on".
#[derive(Clone, Debug)]
pub struct Env {
    pub state_dir: PathBuf,
    pub node_root: Option<PathBuf>,
    pub hostname: String,
    pub node_ip: Option<String>,
    pub now: u64,
}

impl Env {
    pub fn from_process() -> Res<Env> {
        let state_dir = std::env::var_os("KUBESIM_STATE_DIR")
            .map(PathBuf::from)
            .ok_or_else(|| Fail::new("kubesim: KUBESIM_STATE_DIR is not set"))?;
        let node_root = std::env::var_os("KUBESIM_NODE_ROOT").map(PathBuf::from);
        let hostname = std::env::var("KUBESIM_HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(system_hostname)
            .unwrap_or_else(|| "localhost".to_string())
            .to_lowercase();
        let node_ip = std::env::var("KUBESIM_NODE_IP").ok().filter(|s| !s.is_empty());
        let now = match std::env::var("KUBESIM_NOW") {
            Ok(s) if !s.is_empty() => s
                .parse()
                .map_err(|_| Fail::new(format!("kubesim: bad KUBESIM_NOW {s:?}")))?,
            _ => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        Ok(Env {
            state_dir,
            node_root,
            hostname,
            node_ip,
            now,
        })
    }

    /// Maps a real host path (`/etc/kubernetes/admin.conf`) into the node
    /// root. Relative paths and paths outside `/etc/kubernetes`,
    /// `/var/lib/kubelet`, `/var/lib/etcd` are left alone.
    pub fn host_path(&self, p: &str) -> PathBuf {
        if let Some(root) = &self.node_root {
            for prefix in ["/etc/kubernetes", "/var/lib/kubelet", "/var/lib/etcd"] {
                if p == prefix || p.starts_with(&format!("{prefix}/")) {
                    return root.join(&p[1..]);
                }
            }
        }
        PathBuf::from(p)
    }

    /// The node root, required by node-local commands (kubeadm).
    pub fn root(&self) -> Res<&Path> {
        self.node_root
            .as_deref()
            .ok_or_else(|| Fail::new("kubesim: KUBESIM_NODE_ROOT is not set"))
    }
}

fn system_hostname() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------- cluster

/// The kube-vip static pod under the node root `root`: `None` when there
/// is none, `Some(None)` when it can hold `vip` (it passes
/// `check_kube_vip_manifest` and the host kubeconfig it mounts exists),
/// `Some(Some(why))` otherwise.
pub fn kube_vip_problem(root: &Path, vip: std::net::IpAddr) -> Option<Option<String>> {
    use rpool_proto::kube::kube_vip_check::{KUBE_VIP_MANIFEST, check_kube_vip_manifest};
    let text = fs::read_to_string(root.join(&KUBE_VIP_MANIFEST[1..])).ok()?;
    Some(match check_kube_vip_manifest(&text, vip) {
        Err(problems) => Some(format!(
            "kubesim: the kube-vip static pod {KUBE_VIP_MANIFEST} cannot hold the VIP {vip}: {}",
            problems.join("; ")
        )),
        Ok(pod) if !root.join(&pod.kubeconfig[1..]).exists() => Some(format!(
            "kubesim: the kube-vip static pod {KUBE_VIP_MANIFEST} mounts {}, which does not exist on this host (a joined control plane has only admin.conf)",
            pod.kubeconfig
        )),
        Ok(_) => None,
    })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Token {
    pub token: String,
    /// Unix seconds; `None` never expires (`--ttl 0`).
    pub expires: Option<u64>,
    pub description: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertKey {
    pub key: String,
    pub expires: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub role: Role,
    pub internal_ip: String,
    pub created: u64,
    pub unschedulable: bool,
    /// The host's node root; `None` once `kubeadm reset` ran there (the
    /// kubelet is gone, the Node object stays and turns NotReady).
    pub node_root: Option<String>,
    /// The version its kubelet runs (`kubectl get nodes` VERSION): the
    /// host's installed version when it joined or its kubelet last
    /// restarted (`None` in older state files: the cluster's version).
    #[serde(default)]
    pub kubelet_version: Option<String>,
    /// The version of its control-plane static pods (control planes; moved
    /// by `kubeadm upgrade apply` / `upgrade node`; `None`: the cluster's
    /// version at init or join).
    #[serde(default)]
    pub control_plane_version: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EtcdMember {
    pub id: u64,
    pub name: String,
    pub ip: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Applied {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub source: String,
    pub digest: u64,
    pub applied: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    /// `host:port` the cluster answers on (the control-plane endpoint).
    pub endpoint: String,
    /// Whether `--control-plane-endpoint` was given (control-plane joins
    /// need it).
    pub stable_endpoint: bool,
    pub kubernetes_version: String,
    pub pod_network_cidr: Option<String>,
    pub service_cidr: String,
    /// `sha256:<64 hex>`, the discovery-token CA cert hash.
    pub ca_cert_hash: String,
    /// PEM of the simulated CA (base64 of it goes into kubeconfigs).
    pub ca_pem: String,
    pub etcd_cluster_id: u64,
    /// etcd's revision: every write of the cluster's state moves it on
    /// (see [`Store::save`]; `etcdctl snapshot status` reports it).
    #[serde(default)]
    pub etcd_revision: u64,
    pub created: u64,
    pub tokens: Vec<Token>,
    pub certificate_key: Option<CertKey>,
    pub nodes: Vec<Node>,
    pub etcd_members: Vec<EtcdMember>,
    pub applied: Vec<Applied>,
    /// What the applied CNI DaemonSet lacks to start
    /// (`rpool_proto::kube::cni_check` on every applied object, refreshed
    /// by each apply): `None` before any DaemonSet is applied; empty: the
    /// pod network runs.
    #[serde(default)]
    pub cni_missing: Option<Vec<String>>,
    /// The control-plane VIP, when the endpoint is an address no node has:
    /// the cluster answers there only while a control plane whose kube-vip
    /// static pod holds it runs (see [`Cluster::alive`]).
    #[serde(default)]
    pub vip: Option<String>,
    /// The `imageRepository` the cluster was made with (`None`:
    /// registry.k8s.io); control-plane joins pull from it.
    #[serde(default)]
    pub image_repository: Option<String>,
    /// LoadBalancer addresses MetalLB assigned: `namespace/name` -> IP
    /// (see `lb.rs`).
    #[serde(default)]
    pub lb_ips: std::collections::BTreeMap<String, String>,
}

/// The kubeadm and kubelet packages "installed" on the host at `root`:
/// `<root>/kubesim-version` (e.g. `v1.33.1`, written by tests and the
/// sandbox to simulate `apt-get install kubeadm=... kubelet=...`), else
/// kubesim's own version.
pub fn installed_version(root: Option<&Path>) -> String {
    root.and_then(|r| fs::read_to_string(r.join(VERSION_FILE)).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| crate::kubeadm::VERSION.to_string())
}

/// The file under a node root naming its installed version.
pub const VERSION_FILE: &str = "kubesim-version";

impl Cluster {
    /// The version `n`'s kubelet runs.
    pub fn kubelet_version<'a>(&'a self, n: &'a Node) -> &'a str {
        n.kubelet_version.as_deref().unwrap_or(&self.kubernetes_version)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }

    /// A node's kubelet runs: not reset, and the host is not marked down
    /// (`<node_root>/kubesim-down` exists).
    pub fn kubelet_up(&self, n: &Node) -> bool {
        match &n.node_root {
            Some(root) => !Path::new(root).join("kubesim-down").exists(),
            None => false,
        }
    }

    /// The API server answers when at least one control-plane node is up;
    /// at a VIP, one whose kube-vip static pod holds it.
    pub fn alive(&self) -> bool {
        self.nodes.iter().any(|n| {
            n.role == Role::ControlPlane
                && self.kubelet_up(n)
                && self.vip.as_deref().is_none_or(|vip| self.holds_vip(n, vip))
        })
    }

    /// `n`'s kube-vip static pod passes [`kube_vip_problem`] for `vip`.
    pub fn holds_vip(&self, n: &Node, vip: &str) -> bool {
        let (Some(root), Ok(vip)) = (&n.node_root, vip.parse()) else {
            return false;
        };
        kube_vip_problem(Path::new(root), vip) == Some(None)
    }

    /// Nodes turn Ready once a pod network runs: an applied CNI DaemonSet
    /// with everything its agent needs to start (see `cni_missing`).
    pub fn network_ready(&self) -> bool {
        self.cni_missing.as_ref().is_some_and(Vec::is_empty)
    }

    pub fn node_ready(&self, n: &Node) -> bool {
        self.kubelet_up(n) && self.network_ready()
    }

    /// An etcd member is healthy when its node's kubelet (static pod) runs.
    pub fn member_healthy(&self, m: &EtcdMember) -> bool {
        self.nodes
            .iter()
            .any(|n| n.name == m.name && n.role == Role::ControlPlane && self.kubelet_up(n))
    }

    pub fn valid_token(&self, token: &str, now: u64) -> bool {
        self.tokens
            .iter()
            .any(|t| t.token == token && t.expires.is_none_or(|e| e > now))
    }

    pub fn token_id_known(&self, id: &str, now: u64) -> bool {
        self.tokens
            .iter()
            .any(|t| t.token.split('.').next() == Some(id) && t.expires.is_none_or(|e| e > now))
    }

    pub fn dir(&self, env: &Env) -> PathBuf {
        env.state_dir.join("clusters").join(&self.id)
    }

    pub fn pending_pods(&self, env: &Env) -> PendingSpec {
        let path = self.dir(env).join("pending-pods");
        let Ok(text) = fs::read_to_string(&path) else {
            return PendingSpec::default();
        };
        let since = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(env.now);
        let t = text.trim();
        let spec = match t.parse::<u32>() {
            Ok(n) => PendingSpec {
                count: n,
                ..PendingSpec::default()
            },
            Err(_) => serde_json::from_str(t).unwrap_or_default(),
        };
        PendingSpec { since, ..spec }
    }
}

/// `clusters/<id>/pending-pods`: a plain count (`3`) or
/// `{"count":3,"cpu":"500m","memory":"512Mi"}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct PendingSpec {
    pub count: u32,
    pub cpu: String,
    pub memory: String,
    /// When the pods appeared (the file's mtime).
    #[serde(skip)]
    pub since: u64,
}

impl Default for PendingSpec {
    fn default() -> Self {
        PendingSpec {
            count: 0,
            cpu: "500m".into(),
            memory: "512Mi".into(),
            since: 0,
        }
    }
}

// ---------------------------------------------------------------- store

/// All clusters, loaded under an exclusive lock on `<state>/lock` held
/// until the store is dropped.
pub struct Store {
    pub clusters: Vec<Cluster>,
    dir: PathBuf,
    _lock: fs::File,
}

impl Store {
    pub fn open(env: &Env) -> Res<Store> {
        let dir = env.state_dir.clone();
        fs::create_dir_all(dir.join("clusters"))
            .map_err(|e| Fail::new(format!("kubesim: state dir {}: {e}", dir.display())))?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|e| Fail::new(format!("kubesim: lock: {e}")))?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Fail::new(format!(
                "kubesim: flock: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut clusters = Vec::new();
        let entries =
            fs::read_dir(dir.join("clusters")).map_err(|e| Fail::new(format!("kubesim: read state: {e}")))?;
        for e in entries.flatten() {
            let p = e.path().join("cluster.json");
            if let Ok(text) = fs::read_to_string(&p) {
                let c: Cluster = serde_json::from_str(&text)
                    .map_err(|e| Fail::new(format!("kubesim: corrupt {}: {e}", p.display())))?;
                clusters.push(c);
            }
        }
        clusters.sort_by_key(|c| c.created);
        Ok(Store {
            clusters,
            dir,
            _lock: lock,
        })
    }

    pub fn save(&self, c: &Cluster) -> Res {
        let d = self.dir.join("clusters").join(&c.id);
        fs::create_dir_all(&d).map_err(|e| Fail::new(format!("kubesim: {e}")))?;
        // Every write is an etcd transaction: the revision moves on.
        let previous = fs::read_to_string(d.join("cluster.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Cluster>(&t).ok())
            .map_or(0, |old| old.etcd_revision);
        let mut c = c.clone();
        c.etcd_revision = c.etcd_revision.max(previous) + 1;
        let text = serde_json::to_string_pretty(&c).expect("cluster serializes");
        write_atomic(&d.join("cluster.json"), text.as_bytes())
    }

    /// The live cluster answering on `endpoint` (newest first).
    pub fn by_endpoint(&self, endpoint: &str) -> Option<usize> {
        self.clusters
            .iter()
            .rposition(|c| c.endpoint == endpoint && c.alive())
    }

    pub fn by_id(&self, id: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c.id == id)
    }
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Res {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Fail::new(format!("kubesim: {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    res.map_err(|e| Fail::new(format!("kubesim: write {}: {e}", path.display())))
}

// ---------------------------------------------------------------- node root

/// What `kubeadm init/join` left on this host:
/// `<root>/var/lib/kubelet/kubesim-node.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalNode {
    pub cluster_id: String,
    pub node_name: String,
    pub role: Role,
}

pub const LOCAL_MARKER: &str = "var/lib/kubelet/kubesim-node.json";

pub fn read_local(root: &Path) -> Option<LocalNode> {
    let text = fs::read_to_string(root.join(LOCAL_MARKER)).ok()?;
    serde_json::from_str(&text).ok()
}

// ---------------------------------------------------------------- kubeconfig

pub fn kubeconfig(c: &Cluster, user: &str) -> String {
    let ca = b64(c.ca_pem.as_bytes());
    let cert = b64(format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        b64(format!("kubesim client {user} {}", c.id).as_bytes())
    )
    .as_bytes());
    let key = b64(format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        hex(&random_bytes(32))
    )
    .as_bytes());
    format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: https://{ep}
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: {user}
  name: {user}@kubernetes
current-context: {user}@kubernetes
kind: Config
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ep = c.endpoint
    )
}

/// (server without scheme, CA PEM) from a kubeconfig we (or anyone) wrote.
pub fn parse_kubeconfig(text: &str) -> Option<(String, Option<String>)> {
    let mut server = None;
    let mut ca = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix("server:") {
            let s = s.trim().trim_matches('"').trim_matches('\'');
            let s = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"))
                .unwrap_or(s);
            server.get_or_insert(s.trim_end_matches('/').to_string());
        } else if let Some(s) = l.strip_prefix("certificate-authority-data:") {
            ca.get_or_insert(unb64(s.trim()).and_then(|b| String::from_utf8(b).ok()));
        }
    }
    server.map(|s| (s, ca.flatten()))
}

// ---------------------------------------------------------------- helpers

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let ok = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        buf.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    buf
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn random_u64() -> u64 {
    let b = random_bytes(8);
    u64::from_le_bytes(b.try_into().expect("8 bytes")) | 1
}

/// `[a-z0-9]{n}`.
pub fn random_token_part(n: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes(n)
        .into_iter()
        .map(|b| A[(b as usize) % A.len()] as char)
        .collect()
}

pub fn new_token() -> String {
    format!("{}.{}", random_token_part(6), random_token_part(16))
}

pub fn is_token(s: &str) -> bool {
    let ok =
        |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(s.split_once('.'), Some((a, b)) if ok(a, 6) && ok(b, 16))
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// FNV-1a, for "did this manifest change" and stable pod-name suffixes.
pub fn digest(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A 5-character pod-name suffix like the ReplicaSet/DaemonSet controllers'.
pub fn pod_suffix(seed: &str) -> String {
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = digest(seed.as_bytes());
    (0..5)
        .map(|_| {
            let c = A[(h % A.len() as u64) as usize] as char;
            h /= A.len() as u64;
            c
        })
        .collect()
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Kubernetes' `duration.HumanDuration` (AGE columns): `45s`, `3m20s`,
/// `12m`, `5h10m`, `3d4h`, `20d`, `2y100d`.
pub fn human_duration(secs: u64) -> String {
    let s = secs;
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rs = s % 60;
        return if rs == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rs}s")
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = s / 3600;
    if h < 8 {
        let rm = m % 60;
        return if rm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rm}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let rh = h % 24;
        let d = h / 24;
        return if rh == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rh}h")
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let dy = (h / 24) % 365;
        return if dy == 0 {
            format!("{}y", h / 24 / 365)
        } else {
            format!("{}y{}d", h / 24 / 365, dy)
        };
    }
    format!("{}y", h / 24 / 365)
}

/// RFC 3339 UTC (`2026-11-27T04:56:39Z`) for unix seconds.
pub fn rfc3339(secs: u64) -> String {
    rpool_proto::clock::rfc3339(secs)
}

/// Left-aligned columns separated by 3 spaces, like kubectl's tabwriter.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count() + 3;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip() {
        for s in ["", "a", "ab", "abc", "abcd", "hello world"] {
            assert_eq!(unb64(&b64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(b64(b"abcd"), "YWJjZA==");
    }

    #[test]
    fn ages_and_dates() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600 * 5 + 600), "5h10m");
        assert_eq!(human_duration(86400 * 3 + 3600 * 4), "3d4h");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_755_399), "2026-11-27T04:56:39Z");
    }

    #[test]
    fn tokens() {
        let t = new_token();
        assert!(is_token(&t), "{t}");
        assert!(!is_token("abcdef.0123456789abcdeF"));
        assert!(!is_token("abc.def"));
    }
}
