//! Operations on other nodes through this control plane's admin
//! kubeconfig: `kubectl drain`, `kubectl delete node`, and removing a
//! node's etcd member with `etcdctl` inside this control plane's etcd pod.
//! Each first checks whether its effect already holds.

use std::time::Duration;

use tracing::info;

use super::checks::check_node_name;
use super::parse::{drain_blockers, is_not_found, parse_member_list};
use super::{Driver, KubeError};

impl Driver {
    /// Whether the cluster (seen through the admin kubeconfig) has `node`.
    async fn node_exists(&self, node: &str) -> Result<bool, KubeError> {
        let out = self
            .kubectl(&self.kubectl_args(&["get", "nodes", node, "-o", "name", "--ignore-not-found"]))
            .await?;
        Ok(!out.stdout.trim().is_empty())
    }

    /// `kubectl drain`; `timeout_s` 0 means the per-call timeout. Returns
    /// `true` when the node is already gone.
    pub async fn drain(&self, node: &str, timeout_s: u32) -> Result<bool, KubeError> {
        check_node_name(node)?;
        if !self.node_exists(node).await? {
            info!(node, "node not in the cluster; nothing to drain");
            return Ok(true);
        }
        let drain_s = if timeout_s == 0 {
            self.timeout.as_secs().saturating_sub(10).max(1)
        } else {
            timeout_s as u64
        };
        let args = self.kubectl_args(&[
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            &format!("--timeout={drain_s}s"),
        ]);
        // kubectl gives up at its own --timeout; leave it room to say so.
        let limit = self.timeout.max(Duration::from_secs(drain_s + 30));
        match self.run(&self.kubectl, &args, limit).await {
            Ok(_) => Ok(false),
            Err(KubeError::Failed { tail, .. }) if is_not_found(&tail, node) => Ok(true),
            Err(KubeError::Failed { cmd, tail, .. }) if !drain_blockers(&tail).is_empty() => {
                let pods = drain_blockers(&tail)
                    .iter()
                    .map(|b| format!("{} ({})", b.pod, b.why))
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(KubeError::DrainBlocked {
                    cmd,
                    node: node.to_owned(),
                    pods,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `kubectl delete node`. Returns `true` when the node was already gone.
    pub async fn delete_node(&self, node: &str) -> Result<bool, KubeError> {
        check_node_name(node)?;
        if !self.node_exists(node).await? {
            info!(node, "node not in the cluster; nothing to delete");
            return Ok(true);
        }
        match self.kubectl(&self.kubectl_args(&["delete", "node", node])).await {
            Ok(_) => Ok(false),
            Err(KubeError::Failed { tail, .. }) if is_not_found(&tail, node) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Removes `target`'s etcd member through this control plane's etcd
    /// pod (`etcd-<self_node>`). Returns `true` when there is no such member.
    pub async fn remove_etcd_member(&self, self_node: &str, target: &str) -> Result<bool, KubeError> {
        check_node_name(self_node)?;
        check_node_name(target)?;
        let pod = format!("etcd-{self_node}");
        let etcdctl = |words: &[&str]| {
            let mut v = vec![
                "-n",
                "kube-system",
                "exec",
                pod.as_str(),
                "--",
                "etcdctl",
                "--endpoints",
                "https://127.0.0.1:2379",
                "--cacert",
                "/etc/kubernetes/pki/etcd/ca.crt",
                "--cert",
                "/etc/kubernetes/pki/etcd/server.crt",
                "--key",
                "/etc/kubernetes/pki/etcd/server.key",
                "-w",
                "simple",
            ];
            v.extend_from_slice(words);
            self.kubectl_args(&v)
        };
        let out = self.kubectl(&etcdctl(&["member", "list"])).await?;
        let Some(id) = parse_member_list(&out.stdout)
            .into_iter()
            .find(|(_, name)| name == target)
            .map(|(id, _)| id)
        else {
            info!(target, "no etcd member of that name; nothing to remove");
            return Ok(true);
        };
        self.kubectl(&etcdctl(&["member", "remove", &id])).await?;
        info!(target, member = %id, "etcd member removed");
        Ok(false)
    }
}
