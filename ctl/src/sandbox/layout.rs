//! Paths under the sandbox dir, and `sandbox.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exit::Failure;
use crate::settings::Env;

/// The sandbox directory: `--dir` > `RPOOL_SANDBOX_DIR` >
/// `$XDG_STATE_HOME/rpool/sandbox` > `$HOME/.local/state/rpool/sandbox`.
/// Made absolute so recorded paths match process command lines.
pub fn resolve_dir(flag: Option<&Path>, env: &Env) -> Result<PathBuf, Failure> {
    let dir = if let Some(dir) = flag {
        dir.to_path_buf()
    } else if let Some(dir) = &env.sandbox_dir {
        PathBuf::from(dir)
    } else if let Some(state) = &env.xdg_state_home {
        Path::new(state).join("rpool/sandbox")
    } else if let Some(home) = &env.home {
        Path::new(home).join(".local/state/rpool/sandbox")
    } else {
        return Err(Failure::usage(
            "cannot locate the sandbox dir: neither XDG_STATE_HOME nor HOME is set (pass --dir or set RPOOL_SANDBOX_DIR)",
        ));
    };
    std::path::absolute(&dir).map_err(|e| Failure::usage(format!("--dir: {}: {e}", dir.display())))
}

/// Where everything lives under one sandbox dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("sandbox.json")
    }
    /// Where the single controller of an older rpoolctl's sandbox lived.
    pub fn legacy_controller_dir(&self) -> PathBuf {
        self.dir.join("controller")
    }
    pub fn controllers_dir(&self) -> PathBuf {
        self.dir.join("controllers")
    }
    /// `controller-ID`: a controller's name and directory name.
    pub fn controller_name(id: u64) -> String {
        format!("controller-{id}")
    }
    pub fn controller_dir(&self, id: u64) -> PathBuf {
        self.controllers_dir().join(Self::controller_name(id))
    }
    /// kubesim's shared cluster state (the sandbox's "data centre").
    pub fn kubesim_state(&self) -> PathBuf {
        self.dir.join("kubesim").join("state")
    }

    /// Where the `kubeadm` and `kubectl` symlinks to kubesim live.
    pub fn kubesim_bin(&self) -> PathBuf {
        self.dir.join("kubesim").join("bin")
    }

    pub fn agents_dir(&self) -> PathBuf {
        self.dir.join("agents")
    }
    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.agents_dir().join(name)
    }
}

/// Files inside one controller's directory.
pub fn controller_config(controller_dir: &Path) -> PathBuf {
    controller_dir.join("controller.toml")
}
pub fn controller_data(controller_dir: &Path) -> PathBuf {
    controller_dir.join("data")
}

/// Files inside one agent's directory.
/// The agent's stand-in for `/` as kubesim sees it (`etc/kubernetes`, ...).
pub fn agent_node_root(agent_dir: &Path) -> PathBuf {
    agent_dir.join("node")
}

pub fn agent_config(agent_dir: &Path) -> PathBuf {
    agent_dir.join("agent.toml")
}
pub fn agent_hardware(agent_dir: &Path) -> PathBuf {
    agent_dir.join("hardware.toml")
}
pub fn agent_state(agent_dir: &Path) -> PathBuf {
    agent_dir.join("state")
}
pub fn log_file(process_dir: &Path) -> PathBuf {
    process_dir.join("log")
}

/// `sandbox.json`: what `sandbox up` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Port of the first controller (the others follow it).
    pub port: u16,
    /// Every controller, in id order.
    #[serde(default)]
    pub controllers: Vec<ControllerRecord>,
    /// Written by rpoolctl before controller groups (one controller in
    /// `{dir}/controller`); read so `down` and `status` still handle it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_pid: Option<u32>,
    pub agents: Vec<AgentRecord>,
    pub started_at_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    /// `controller-ID`.
    pub name: String,
    pub id: u64,
    pub pid: u32,
    /// `127.0.0.1:PORT` (listen and advertise).
    pub address: String,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    pub pid: u32,
    pub dir: PathBuf,
}

impl Record {
    /// Reads the record; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> anyhow::Result<Option<Record>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e} (not a sandbox record; delete it if no sandbox processes are running)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Writes the record atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(&tmp, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(())
    }
}

/// Test fixture: the records of a group of three controllers in `layout`
/// (ids 1..=3, pids 101..=103, ports 7440..=7442).
#[cfg(test)]
pub fn three_controllers(layout: &Layout) -> Vec<ControllerRecord> {
    (1..=3)
        .map(|id| ControllerRecord {
            name: Layout::controller_name(id),
            id,
            pid: 100 + id as u32,
            address: format!("127.0.0.1:{}", 7439 + id),
            dir: layout.controller_dir(id),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_dir_follows_flag_env_xdg_home() {
        let mut env = Env {
            sandbox_dir: Some("/env/sb".into()),
            xdg_state_home: Some("/xdg".into()),
            home: Some("/home/u".into()),
            ..Env::default()
        };
        assert_eq!(
            resolve_dir(Some(Path::new("/flag")), &env).unwrap(),
            PathBuf::from("/flag")
        );
        assert_eq!(resolve_dir(None, &env).unwrap(), PathBuf::from("/env/sb"));
        env.sandbox_dir = None;
        assert_eq!(
            resolve_dir(None, &env).unwrap(),
            PathBuf::from("/xdg/rpool/sandbox")
        );
        env.xdg_state_home = None;
        assert_eq!(
            resolve_dir(None, &env).unwrap(),
            PathBuf::from("/home/u/.local/state/rpool/sandbox")
        );
        assert!(resolve_dir(Some(Path::new("rel")), &env).unwrap().is_absolute());
    }

    #[test]
    fn the_record_round_trips_with_the_documented_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandbox.json");
        assert_eq!(Record::load(&path).unwrap(), None);
        let record = Record {
            port: 7440,
            controllers: vec![ControllerRecord {
                name: "controller-1".into(),
                id: 1,
                pid: 10,
                address: "127.0.0.1:7440".into(),
                dir: "/sb/controllers/controller-1".into(),
            }],
            controller_pid: None,
            agents: vec![AgentRecord {
                name: "agent-1".into(),
                pid: 11,
                dir: "/sb/agents/agent-1".into(),
            }],
            started_at_unix_ms: 5,
        };
        record.save(&path).unwrap();
        assert_eq!(Record::load(&path).unwrap(), Some(record));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["agents"][0]["name"], "agent-1");
        assert_eq!(v["controllers"][0]["name"], "controller-1");
        assert_eq!(v["controllers"][0]["pid"], 10);
        assert_eq!(v["controllers"][0]["address"], "127.0.0.1:7440");
        assert!(v.get("controller_pid").is_none());
    }

    #[test]
    fn a_record_from_before_controller_groups_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandbox.json");
        std::fs::write(
            &path,
            r#"{"port":7440,"controller_pid":10,"agents":[],"started_at_unix_ms":5}"#,
        )
        .unwrap();
        let record = Record::load(&path).unwrap().unwrap();
        assert_eq!(record.controller_pid, Some(10));
        assert!(record.controllers.is_empty());
    }

    #[test]
    fn controllers_live_under_controllers_controller_n() {
        let layout = Layout::new("/sb".into());
        let dir = layout.controller_dir(2);
        assert_eq!(dir, PathBuf::from("/sb/controllers/controller-2"));
        assert_eq!(
            controller_config(&dir),
            PathBuf::from("/sb/controllers/controller-2/controller.toml")
        );
        assert_eq!(
            controller_data(&dir),
            PathBuf::from("/sb/controllers/controller-2/data")
        );
        assert_eq!(log_file(&dir), PathBuf::from("/sb/controllers/controller-2/log"));
    }
}
