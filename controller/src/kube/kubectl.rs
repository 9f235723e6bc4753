//! Test helper: the real `kubectl` client (v1.32) reads our manifests, with
//! no API server.
//!
//! 1. `kubectl kustomize DIR` over the whole stream: every document parses
//!    and has an apiVersion, a kind and a name.
//! 2. Each workload (Pod, DaemonSet, Deployment) and binding goes through
//!    `kubectl set env --local` / `kubectl set subject --local`, which
//!    decode it into the typed Go object: a wrong type fails. The typed
//!    object is printed back; a field of ours missing from it (other than a
//!    zero value the printer omits) is a field Kubernetes does not know.
//!
//! When kubectl is not on PATH the check is skipped with a printed reason.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::yaml::{self, Node};

/// `None` (skipped, reason printed) when kubectl is missing; otherwise
/// whether kubectl accepts every document of `manifest`.
pub(crate) fn check(manifest: &str) -> Option<Result<(), String>> {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        println!("SKIPPED kubectl checks: kubectl is not on PATH");
        return None;
    }
    Some(run(manifest))
}

fn run(manifest: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    write(&dir.path().join("manifest.yaml"), manifest)?;
    write(
        &dir.path().join("kustomization.yaml"),
        "resources:\n- manifest.yaml\n",
    )?;
    kubectl(&["kustomize", &dir.path().display().to_string()])?;
    let docs = yaml::parse(manifest)?;
    for (i, doc) in docs.iter().enumerate() {
        let kind = doc.get("kind").and_then(Node::as_str).unwrap_or_default();
        let args: &[&str] = match kind {
            "Pod" | "DaemonSet" | "Deployment" => {
                &["set", "env", "--local", "-o", "yaml", "RPOOL_KUBECTL_CHECK=1"]
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                &["set", "subject", "--local", "-o", "yaml", "--user=rpool-check"]
            }
            _ => continue,
        };
        let file = dir.path().join(format!("doc-{i}.yaml"));
        write(&file, &yaml::emit(&to_y(doc)))?;
        let mut full: Vec<&str> = args.to_vec();
        let file_text = file.display().to_string();
        full.extend(["-f", &file_text]);
        let typed = kubectl(&full).map_err(|e| format!("{kind} (document {i}): {e}"))?;
        let typed = yaml::parse(&typed)?;
        let known = leaves(typed.first().ok_or("kubectl printed nothing")?);
        let unknown: Vec<String> = leaves(doc).difference(&known).cloned().collect();
        if !unknown.is_empty() {
            return Err(format!(
                "{kind} (document {i}): fields Kubernetes does not know: {unknown:?}"
            ));
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn kubectl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("kubectl")
        .args(args)
        // No server is needed; make sure none is dialled.
        .env("KUBECONFIG", "/dev/null")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "kubectl {}: {}",
            args[..2].join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Paths of every non-zero leaf.
fn leaves(node: &Node) -> BTreeSet<String> {
    fn walk(node: &Node, path: String, out: &mut BTreeSet<String>) {
        match node {
            Node::Map(pairs) => pairs
                .iter()
                .for_each(|(k, v)| walk(v, format!("{path}.{k}"), out)),
            Node::Seq(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, format!("{path}[{i}]"), out)),
            Node::Null | Node::Bool(false) | Node::Int(0) => {}
            Node::Str(s) if s.is_empty() => {}
            _ => {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(node, String::new(), &mut out);
    out
}

/// A parsed document back as an emittable value.
fn to_y(node: &Node) -> yaml::Y {
    use yaml::Y;
    match node {
        Node::Null => Y::Str(String::new()),
        Node::Bool(b) => Y::Bool(*b),
        Node::Int(n) => Y::Int(*n),
        Node::Float(f) => Y::Str(f.to_string()),
        Node::Str(s) => Y::Str(s.clone()),
        Node::Seq(items) => Y::Seq(items.iter().map(to_y).collect()),
        Node::Map(pairs) => Y::Map(pairs.iter().map(|(k, v)| (k.clone(), to_y(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_refuses_unknown_fields_and_wrong_types() {
        let good = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\nspec:\n  selector:\n    matchLabels:\n      app: x\n  template:\n    metadata:\n      labels:\n        app: x\n    spec:\n      containers:\n      - name: c\n        image: busybox\n";
        let Some(result) = check(good) else { return };
        result.unwrap();
        let unknown = good.replace("      containers:", "      bogus: 1\n      containers:");
        let err = check(&unknown).unwrap().unwrap_err();
        assert!(err.contains("spec.template.spec.bogus"), "{err}");
        let wrong_type = good.replace("image: busybox", "image: busybox\n        ports: notalist");
        assert!(
            check(&wrong_type)
                .unwrap()
                .unwrap_err()
                .contains("cannot unmarshal")
        );
        let no_name = good.replace("  name: x\n", "  labels: {}\n");
        assert!(check(&no_name).unwrap().is_err());
    }
}
