//! Kubeconfig names per pool: kubeadm names every cluster's admin
//! kubeconfig the same way (cluster `kubernetes` or the cluster name, user
//! `kubernetes-admin`, context `kubernetes-admin@...`), so two pools'
//! files collide when merged (`KUBECONFIG=a:b kubectl config view
//! --flatten`). [`rename_kubeconfig`] gives the cluster, the user and the
//! context one name (`rpool-<pool>`), so several merge cleanly.

use super::yaml::{Node, Y, emit, parse};

/// Renames the one cluster, user and context of `text` (and
/// `current-context`) to `name`. The error never quotes the file (it holds
/// credentials).
pub fn rename_kubeconfig(text: &str, name: &str) -> Result<String, String> {
    let docs = parse(text).map_err(|_| "the kubeconfig is not valid YAML".to_owned())?;
    let [doc] = docs.as_slice() else {
        return Err(format!("the kubeconfig holds {} documents, not one", docs.len()));
    };
    for list in ["clusters", "users", "contexts"] {
        let n = doc.get(list).map(|l| l.items().len()).unwrap_or(0);
        if n != 1 {
            return Err(format!("the kubeconfig has {n} {list}, not one"));
        }
    }
    let mut out = to_y(doc)?;
    let Y::Map(pairs) = &mut out else {
        return Err("the kubeconfig is not a mapping".to_owned());
    };
    for (key, value) in pairs.iter_mut() {
        match (key.as_str(), value) {
            ("current-context", v) => *v = Y::from(name),
            ("clusters" | "users" | "contexts", Y::Seq(items)) => {
                for item in items {
                    set(item, &["name"], name);
                    set(item, &["context", "cluster"], name);
                    set(item, &["context", "user"], name);
                }
            }
            _ => {}
        }
    }
    Ok(emit(&out))
}

/// Replaces the string at `path` when it exists.
fn set(node: &mut Y, path: &[&str], value: &str) {
    let Some((first, rest)) = path.split_first() else {
        if matches!(node, Y::Str(_)) {
            *node = Y::from(value);
        }
        return;
    };
    if let Y::Map(pairs) = node
        && let Some((_, child)) = pairs.iter_mut().find(|(k, _)| k == first)
    {
        set(child, rest, value);
    }
}

fn to_y(node: &Node) -> Result<Y, String> {
    Ok(match node {
        Node::Str(s) => Y::Str(s.clone()),
        Node::Int(i) => Y::Int(*i),
        Node::Bool(b) => Y::Bool(*b),
        Node::Seq(items) => Y::Seq(items.iter().map(to_y).collect::<Result<_, _>>()?),
        Node::Map(pairs) => Y::Map(
            pairs
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_y(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Node::Null | Node::Float(_) => {
            return Err(format!(
                "the kubeconfig holds a {} value, which rpool does not rewrite",
                node.type_name()
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://10.0.0.1:6443
  name: web
contexts:
- context:
    cluster: web
    user: kubernetes-admin
  name: kubernetes-admin@web
current-context: kubernetes-admin@web
kind: Config
preferences: {}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

    #[test]
    fn the_cluster_user_and_context_take_the_pools_name_and_nothing_else_changes() {
        let out = rename_kubeconfig(ADMIN, "rpool-web").unwrap();
        let doc = &parse(&out).unwrap()[0];
        let s = |n: &Node, p: &[&str]| n.at(p).and_then(Node::as_str).unwrap().to_owned();
        assert_eq!(s(doc, &["current-context"]), "rpool-web");
        assert_eq!(
            s(&doc.get("clusters").unwrap().items()[0], &["name"]),
            "rpool-web"
        );
        assert_eq!(
            s(&doc.get("clusters").unwrap().items()[0], &["cluster", "server"]),
            "https://10.0.0.1:6443"
        );
        let ctx = &doc.get("contexts").unwrap().items()[0];
        assert_eq!(
            [
                s(ctx, &["name"]),
                s(ctx, &["context", "cluster"]),
                s(ctx, &["context", "user"])
            ],
            ["rpool-web", "rpool-web", "rpool-web"]
        );
        let user = &doc.get("users").unwrap().items()[0];
        assert_eq!(s(user, &["name"]), "rpool-web");
        assert_eq!(s(user, &["user", "client-key-data"]), "S0VZ");
        assert_eq!(doc.get("preferences"), Some(&Node::Map(vec![])));
        // Renaming twice changes nothing more.
        assert_eq!(rename_kubeconfig(&out, "rpool-web").unwrap(), out);
    }

    #[test]
    fn files_that_are_not_one_cluster_kubeconfigs_are_refused_without_quoting_them() {
        let err = rename_kubeconfig("a: [", "rpool-web").unwrap_err();
        assert!(!err.contains("a: ["), "{err}");
        let two = ADMIN.replace("users:\n", "users:\n- name: other\n  user: {}\n");
        let err = rename_kubeconfig(&two, "rpool-web").unwrap_err();
        assert_eq!(err, "the kubeconfig has 2 users, not one");
        assert!(!err.contains("S0VZ"));
    }
}
