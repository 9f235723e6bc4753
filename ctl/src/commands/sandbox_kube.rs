//! `rpoolctl sandbox install-kube VERSION [HOST...]`: what `apt-get install
//! kubeadm=V kubelet=V` does on a real host, for trying `pool upgrade` in
//! the sandbox. rpool installs no packages on real hosts (the admin's
//! configuration management does); kubesim reads a node's installed
//! kubeadm/kubelet version from `<node_root>/kubesim-version`, which this
//! writes for every sandbox host, or the ones named.

use clap::Args;

use super::sandbox::DirArgs;
use super::sandbox_load::{find_agent, hardware_value};
use crate::exit::{self, Failure};
use crate::output;
use crate::sandbox::layout::{agent_hardware, agent_node_root};
use crate::settings::Env;

/// The file kubesim reads a node's installed Kubernetes version from.
pub const VERSION_FILE: &str = "kubesim-version";

/// Install a Kubernetes version's kubeadm and kubelet on sandbox hosts (as
/// `apt-get install kubeadm=V kubelet=V` would on real ones).
///
/// The new kubelet binary only runs once its kubelet is restarted, which
/// `rpoolctl pool upgrade` does node by node; until then the node keeps
/// its version. Hosts installed later (or replaced) join at whatever they
/// have installed.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox install-kube v1.33.1            # every sandbox host
  rpoolctl sandbox install-kube v1.33.1 sim-a-1 sim-b-2")]
pub struct InstallKubeArgs {
    /// Kubernetes version: vMAJOR.MINOR.PATCH, e.g. v1.33.1
    #[arg(value_name = "VERSION", value_parser = parse_version)]
    pub kube_version: String,
    /// Hosts (hostname, agent name, or host id prefix); none = every sandbox host
    #[arg(value_name = "HOST", add = crate::complete::hosts())]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// clap value parser: `vX.Y.Z` (the `v` may be left out), digits only.
pub fn parse_version(text: &str) -> Result<String, String> {
    let bare = text.trim().strip_prefix('v').unwrap_or(text.trim());
    let parts: Vec<&str> = bare.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(numeric) {
        Ok(format!("v{bare}"))
    } else {
        Err(format!(
            "{text:?} is not a Kubernetes version (accepted: vMAJOR.MINOR.PATCH, e.g. v1.33.1)"
        ))
    }
}

pub fn exec(args: InstallKubeArgs, env: &Env) -> anyhow::Result<()> {
    let (_layout, record) = args.dir.load(env)?;
    // Every name resolves before anything is written.
    let dirs = if args.hosts.is_empty() {
        record.agents.iter().map(|a| a.dir.clone()).collect()
    } else {
        args.hosts
            .iter()
            .map(|h| find_agent(&record, h))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut names = Vec::new();
    for dir in &dirs {
        let root = agent_node_root(dir);
        std::fs::create_dir_all(&root)
            .and_then(|()| std::fs::write(root.join(VERSION_FILE), format!("{}\n", args.kube_version)))
            .map_err(|e| Failure::new(exit::UNEXPECTED, format!("{}: {e}", root.display())))?;
        names.push(
            hardware_value(&agent_hardware(dir), "hostname").unwrap_or_else(|| dir.display().to_string()),
        );
    }
    output::print(&format!(
        "kubeadm and kubelet {} installed on {} host(s): {} (kubelets run it once `pool upgrade` restarts them).\n",
        args.kube_version,
        names.len(),
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_v_major_minor_patch() {
        assert_eq!(parse_version("v1.33.1").unwrap(), "v1.33.1");
        assert_eq!(parse_version("1.33.1").unwrap(), "v1.33.1");
        for bad in ["", "v1.33", "v1.33.x", "1.33.1-1.1", "latest", "v1..1"] {
            let e = parse_version(bad).unwrap_err();
            assert!(e.contains("vMAJOR.MINOR.PATCH"), "{bad}: {e}");
        }
    }
}
