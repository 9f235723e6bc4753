//! Simulated hosts for the sandbox and the config files written for them.
//!
//! Hosts cycle through six profiles (cores / memory / zone):
//! 8c/32GiB a, 16c/64GiB b, 32c/128GiB c, 16c/64GiB a, 64c/256GiB b,
//! 8c/16GiB c; physical cores are half the logical ones. Hostnames are
//! `sim-{zone}-{n}`, `n` counting from 1 within each zone.

use std::path::Path;

use serde::Serialize;

/// One row of the profile cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Profile {
    logical_cores: u32,
    memory_gib: u64,
    zone: &'static str,
    cpu_percent: f64,
    memory_used_gib: u64,
}

const PROFILES: [Profile; 6] = [
    Profile {
        logical_cores: 8,
        memory_gib: 32,
        zone: "a",
        cpu_percent: 12.5,
        memory_used_gib: 6,
    },
    Profile {
        logical_cores: 16,
        memory_gib: 64,
        zone: "b",
        cpu_percent: 35.0,
        memory_used_gib: 20,
    },
    Profile {
        logical_cores: 32,
        memory_gib: 128,
        zone: "c",
        cpu_percent: 62.5,
        memory_used_gib: 90,
    },
    Profile {
        logical_cores: 16,
        memory_gib: 64,
        zone: "a",
        cpu_percent: 5.0,
        memory_used_gib: 4,
    },
    Profile {
        logical_cores: 64,
        memory_gib: 256,
        zone: "b",
        cpu_percent: 81.0,
        memory_used_gib: 200,
    },
    Profile {
        logical_cores: 8,
        memory_gib: 16,
        zone: "c",
        cpu_percent: 22.5,
        memory_used_gib: 10,
    },
];

/// Everything about one sandbox agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPlan {
    /// `agent-N`, N from 1: the agent's directory name.
    pub name: String,
    /// `sim-{zone}-{n}`.
    pub hostname: String,
    pub zone: String,
    pub logical_cores: u32,
    pub physical_cores: u32,
    pub memory_gib: u64,
    pub cpu_percent: f64,
    pub memory_used_gib: u64,
    pub load_average: f64,
}

/// The first `agents` hosts of the profile cycle. Repeats of the cycle get a
/// little more CPU load so the hosts are not identical.
pub fn plan(agents: u32) -> Vec<AgentPlan> {
    let mut per_zone: std::collections::BTreeMap<&str, u32> = Default::default();
    (0..agents as usize)
        .map(|i| {
            let p = PROFILES[i % PROFILES.len()];
            let round = (i / PROFILES.len()) as f64;
            let n = per_zone.entry(p.zone).or_insert(0);
            *n += 1;
            let cpu_percent = (p.cpu_percent + 7.5 * round) % 100.0;
            AgentPlan {
                name: format!("agent-{}", i + 1),
                hostname: format!("sim-{}-{}", p.zone, n),
                zone: p.zone.to_string(),
                logical_cores: p.logical_cores,
                physical_cores: p.logical_cores / 2,
                memory_gib: p.memory_gib,
                cpu_percent,
                memory_used_gib: p.memory_used_gib,
                load_average: (cpu_percent * p.logical_cores as f64).round() / 100.0,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct HardwareFile<'a> {
    logical_cores: u32,
    physical_cores: u32,
    memory: String,
    zone: &'a str,
    hostname: &'a str,
    cpu_percent: f64,
    memory_used: String,
    load_average: f64,
}

/// `hardware.toml`: the agent's simulated-hardware file.
pub fn hardware_toml(agent: &AgentPlan) -> String {
    let file = HardwareFile {
        logical_cores: agent.logical_cores,
        physical_cores: agent.physical_cores,
        memory: format!("{}GiB", agent.memory_gib),
        zone: &agent.zone,
        hostname: &agent.hostname,
        cpu_percent: agent.cpu_percent,
        memory_used: format!("{}GiB", agent.memory_used_gib),
        load_average: agent.load_average,
    };
    let body = toml::to_string(&file).expect("hardware file serializes");
    format!(
        "# Simulated hardware for {} (written by `rpoolctl sandbox up`; edit to change what the agent reports).\n{body}",
        agent.hostname
    )
}

#[derive(Serialize)]
struct AgentFile<'a> {
    controllers: Vec<String>,
    state_dir: &'a str,
    zone: &'a str,
    kube: KubeSection,
    simulate: SimulateSection<'a>,
}

#[derive(Serialize)]
struct KubeSection {
    kubeadm_path: String,
    kubectl_path: String,
    systemctl_path: String,
    etcdctl_path: String,
    host_root: String,
    /// kubesim has no kubelet polling its manifest directory: the
    /// static-pod restart after a certificate renewal needs no 20 s wait
    /// (real hosts keep the agent's default).
    static_pod_restart_wait_s: u64,
}

#[derive(Serialize)]
struct SimulateSection<'a> {
    file: &'a str,
}

/// `agent.toml` for one sandbox agent; `controllers` is every controller's
/// address (a follower redirects the agent to the leader).
/// Pool tasks run `kubeadm`/`kubectl` from `kube_bin` (symlinks to kubesim);
/// the driver finds the host's kubeadm files under `node_root` (the
/// directory kubesim is given as this host's node root).
pub fn agent_toml(
    controllers: &[String],
    agent: &AgentPlan,
    state_dir: &Path,
    hardware_file: &Path,
    kube_bin: &Path,
    node_root: &Path,
) -> String {
    let file = AgentFile {
        controllers: controllers.to_vec(),
        state_dir: &state_dir.to_string_lossy(),
        zone: &agent.zone,
        kube: KubeSection {
            kubeadm_path: kube_bin.join("kubeadm").to_string_lossy().into_owned(),
            kubectl_path: kube_bin.join("kubectl").to_string_lossy().into_owned(),
            systemctl_path: kube_bin.join("systemctl").to_string_lossy().into_owned(),
            etcdctl_path: kube_bin.join("etcdctl").to_string_lossy().into_owned(),
            host_root: node_root.to_string_lossy().into_owned(),
            static_pod_restart_wait_s: 1,
        },
        simulate: SimulateSection {
            file: &hardware_file.to_string_lossy(),
        },
    };
    let body = toml::to_string(&file).expect("agent config serializes");
    format!("# {} of the rpoolctl sandbox.\n{body}", agent.name)
}

#[derive(Serialize)]
struct ControllerFile<'a> {
    id: u64,
    listen: &'a str,
    advertise: &'a str,
    data_dir: &'a str,
    peers: Vec<PeerSection<'a>>,
    liveness: LivenessSection,
    kube: ControllerKubeSection<'a>,
}

/// `[kube]`: where pools of 3 or 5 control planes get their VIP.
#[derive(Serialize)]
struct ControllerKubeSection<'a> {
    vip_range: &'a str,
}

/// The sandbox's `[kube] vip_range` (TEST-NET-2, RFC 5737: no real host
/// has these addresses; kubesim answers there).
pub const SANDBOX_VIP_RANGE: &str = "198.51.100.0/28";

#[derive(Serialize)]
struct PeerSection<'a> {
    id: u64,
    address: &'a str,
}

#[derive(Serialize)]
struct LivenessSection {
    heartbeat_interval_ms: u32,
    suspect_after_ms: u32,
    down_after_ms: u32,
}

/// A sandbox host that stops heartbeating is `suspect` after this long...
pub const SUSPECT_AFTER_MS: u32 = 3000;
/// ...and `down` (replaced, if in a pool) after this long.
pub const DOWN_AFTER_MS: u32 = 5000;

/// Addresses of a sandbox group of `count` controllers: 127.0.0.1, ports
/// `port..port+count`, controller `i` (id `i`, from 1) on `port + i - 1`.
/// The caller checks that the ports fit in u16.
pub fn controller_addresses(port: u16, count: u16) -> Vec<String> {
    (0..count).map(|i| format!("127.0.0.1:{}", port + i)).collect()
}

/// `controller.toml` for controller `id` (1-based) of a sandbox group whose
/// members are `addresses` (controller `i` at `addresses[i - 1]`): listens on
/// and advertises its own address, lists every member as a peer, liveness
/// and Raft defaults.
pub fn controller_toml(id: u64, addresses: &[String], data_dir: &Path) -> String {
    let own = &addresses[(id - 1) as usize];
    let file = ControllerFile {
        id,
        listen: own,
        advertise: own,
        data_dir: &data_dir.to_string_lossy(),
        peers: addresses
            .iter()
            .enumerate()
            .map(|(i, address)| PeerSection {
                id: i as u64 + 1,
                address,
            })
            .collect(),
        liveness: LivenessSection {
            heartbeat_interval_ms: 1000,
            suspect_after_ms: SUSPECT_AFTER_MS,
            down_after_ms: DOWN_AFTER_MS,
        },
        kube: ControllerKubeSection {
            vip_range: SANDBOX_VIP_RANGE,
        },
    };
    let body = toml::to_string(&file).expect("controller config serializes");
    format!(
        "# Controller {id} of {} of the rpoolctl sandbox.\n{body}",
        addresses.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p: &AgentPlan) -> (String, String, u32, u32, u64) {
        (
            p.name.clone(),
            p.hostname.clone(),
            p.logical_cores,
            p.physical_cores,
            p.memory_gib,
        )
    }

    #[test]
    fn six_agents_follow_the_profile_cycle() {
        let got: Vec<_> = plan(6).iter().map(summary).collect();
        let want = [
            ("agent-1", "sim-a-1", 8, 4, 32),
            ("agent-2", "sim-b-1", 16, 8, 64),
            ("agent-3", "sim-c-1", 32, 16, 128),
            ("agent-4", "sim-a-2", 16, 8, 64),
            ("agent-5", "sim-b-2", 64, 32, 256),
            ("agent-6", "sim-c-2", 8, 4, 16),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(a, h, l, p, m)| (a.to_string(), h.to_string(), *l, *p, *m))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_cycle_repeats_with_per_zone_numbering_and_unique_names() {
        let hosts = plan(64);
        assert_eq!(hosts.len(), 64);
        assert_eq!(hosts[6].hostname, "sim-a-3");
        assert_eq!(hosts[6].logical_cores, 8);
        assert_eq!(hosts[63].name, "agent-64");
        let mut names: Vec<_> = hosts.iter().map(|h| h.hostname.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 64);
    }

    #[test]
    fn simulated_values_stay_in_the_agents_accepted_ranges() {
        for h in plan(64) {
            assert!((0.0..=100.0).contains(&h.cpu_percent), "{h:?}");
            assert!(h.memory_used_gib <= h.memory_gib, "{h:?}");
            assert!(
                h.physical_cores >= 1 && h.physical_cores <= h.logical_cores,
                "{h:?}"
            );
            assert!(h.load_average >= 0.0 && h.load_average.is_finite(), "{h:?}");
        }
        assert_ne!(plan(7)[6].cpu_percent, plan(1)[0].cpu_percent);
    }

    #[test]
    fn the_hardware_file_has_the_simulate_keys() {
        let text = hardware_toml(&plan(2)[1]);
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["logical_cores"].as_integer(), Some(16));
        assert_eq!(v["physical_cores"].as_integer(), Some(8));
        assert_eq!(v["memory"].as_str(), Some("64GiB"));
        assert_eq!(v["zone"].as_str(), Some("b"));
        assert_eq!(v["hostname"].as_str(), Some("sim-b-1"));
        assert_eq!(v["cpu_percent"].as_float(), Some(35.0));
        assert_eq!(v["memory_used"].as_str(), Some("20GiB"));
        assert_eq!(v["load_average"].as_float(), Some(5.6));
        assert_eq!(v.len(), 8);
        assert_eq!(rpool_proto::units::parse_size("64GiB"), Ok(64 << 30));
    }

    #[test]
    fn the_agent_config_points_at_the_controller_state_and_hardware_file() {
        let agent = &plan(1)[0];
        let text = agent_toml(
            &controller_addresses(7440, 3),
            agent,
            Path::new("/sb/agents/agent-1/state"),
            Path::new("/sb/agents/agent-1/hardware.toml"),
            Path::new("/sb/kubesim/bin"),
            Path::new("/sb/agents/agent-1/node"),
        );
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            v["kube"]["kubeadm_path"].as_str(),
            Some("/sb/kubesim/bin/kubeadm")
        );
        assert_eq!(
            v["kube"]["kubectl_path"].as_str(),
            Some("/sb/kubesim/bin/kubectl")
        );
        assert_eq!(v["kube"]["host_root"].as_str(), Some("/sb/agents/agent-1/node"));
        let controllers: Vec<&str> = v["controllers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            controllers,
            ["127.0.0.1:7440", "127.0.0.1:7441", "127.0.0.1:7442"]
        );
        assert_eq!(v["state_dir"].as_str(), Some("/sb/agents/agent-1/state"));
        assert_eq!(v["zone"].as_str(), Some("a"));
        assert_eq!(
            v["simulate"]["file"].as_str(),
            Some("/sb/agents/agent-1/hardware.toml")
        );
        assert_eq!(v.len(), 5, "controllers, state_dir, zone, kube, simulate");
    }

    #[test]
    fn each_controller_config_has_its_id_address_and_every_peer() {
        let addresses = controller_addresses(7440, 3);
        let text = controller_toml(2, &addresses, Path::new("/sb/controllers/controller-2/data"));
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["id"].as_integer(), Some(2));
        assert_eq!(v["listen"].as_str(), Some("127.0.0.1:7441"));
        assert_eq!(v["advertise"].as_str(), Some("127.0.0.1:7441"));
        assert_eq!(v["data_dir"].as_str(), Some("/sb/controllers/controller-2/data"));
        let peers: Vec<(i64, &str)> = v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["id"].as_integer().unwrap(), p["address"].as_str().unwrap()))
            .collect();
        assert_eq!(
            peers,
            [
                (1, "127.0.0.1:7440"),
                (2, "127.0.0.1:7441"),
                (3, "127.0.0.1:7442")
            ]
        );
        assert!(v.get("raft").is_none(), "raft defaults apply");
        assert_eq!(v["liveness"]["heartbeat_interval_ms"].as_integer(), Some(1000));
        assert_eq!(v["liveness"]["suspect_after_ms"].as_integer(), Some(3000));
        assert_eq!(v["liveness"]["down_after_ms"].as_integer(), Some(5000));
        assert_eq!(v["kube"]["vip_range"].as_str(), Some(SANDBOX_VIP_RANGE));
    }

    #[test]
    fn a_group_of_one_lists_itself_as_the_only_peer() {
        let text = controller_toml(1, &controller_addresses(7440, 1), Path::new("/d"));
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["peers"].as_array().unwrap().len(), 1);
        assert_eq!(v["peers"][0]["address"].as_str(), Some("127.0.0.1:7440"));
    }

    #[test]
    fn paths_with_quotes_are_escaped() {
        let text = controller_toml(1, &controller_addresses(1, 1), Path::new("/tmp/we\"ird dir"));
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["data_dir"].as_str(), Some("/tmp/we\"ird dir"));
    }
}
