//! `cni_check` against the flannel manifest we ship: it passes, and
//! removing each piece fails it with a reason (the check itself lives in
//! `rpool_proto::kube::cni_check`).

use super::cidr::Cidr;
use super::cni_check::*;
use super::flannel::{Backend, FlannelInput, manifest};
use super::yaml::{Node, parse};

fn flannel_docs() -> Vec<Node> {
    let pod = [Cidr::parse("10.244.0.0/16", true).unwrap()];
    let text = manifest(&FlannelInput {
        pod_cidrs: &pod,
        backend: Backend::Vxlan,
        image_repository: None,
    });
    parse(&text).unwrap()
}

/// Removes the entries matching `pred` from the list at `path` of the
/// document of `kind` (or the whole document when `path` is empty).
fn remove(docs: &mut Vec<Node>, kind: &str, path: &[&str], pred: &dyn Fn(&Node) -> bool) {
    if path.is_empty() {
        docs.retain(|d| str_at(d, &["kind"]) != kind);
        return;
    }
    let doc = docs.iter_mut().find(|d| str_at(d, &["kind"]) == kind).unwrap();
    let mut node = doc;
    for key in path {
        node = match node {
            Node::Map(pairs) => &mut pairs.iter_mut().find(|(k, _)| k == key).unwrap().1,
            Node::Seq(items) => &mut items[key.parse::<usize>().unwrap()],
            _ => panic!("no {key}"),
        };
    }
    match node {
        Node::Seq(items) => items.retain(|i| !pred(i)),
        Node::Map(pairs) => pairs.retain(|(k, v)| !pred(&Node::Map(vec![(k.clone(), v.clone())]))),
        _ => panic!("not a collection"),
    }
}

fn named(name: &'static str) -> impl Fn(&Node) -> bool {
    move |n: &Node| str_at(n, &["name"]) == name
}

const POD: [&str; 4] = ["spec", "template", "spec", "containers"];

#[test]
fn our_flannel_manifest_passes() {
    check_documents(&flannel_docs()).unwrap();
}

#[test]
fn removing_each_piece_fails_and_says_what_is_missing() {
    type Cut = Box<dyn Fn(&mut Vec<Node>)>;
    let cases: Vec<(&str, Cut)> = vec![
        (
            "no DaemonSet",
            Box::new(|d| remove(d, "DaemonSet", &[], &|_| true)),
        ),
        (
            "ServiceAccount kube-flannel/flannel is not in the manifest",
            Box::new(|d| remove(d, "ServiceAccount", &[], &|_| true)),
        ),
        (
            "no ClusterRoleBinding gives",
            Box::new(|d| remove(d, "ClusterRoleBinding", &[], &|_| true)),
        ),
        (
            "no ClusterRoleBinding gives",
            Box::new(|d| remove(d, "ClusterRole", &["rules"], &|r| has(r, "resources", "nodes"))),
        ),
        (
            "no serviceAccountName",
            Box::new(|d| {
                remove(d, "DaemonSet", &POD[..3], &|kv| {
                    kv.get("serviceAccountName").is_some()
                })
            }),
        ),
        (
            "no ConfigMap of the manifest",
            Box::new(|d| remove(d, "ConfigMap", &[], &|_| true)),
        ),
        (
            "no ConfigMap of the manifest",
            Box::new(|d| {
                remove(
                    d,
                    "DaemonSet",
                    &[&POD[..], &["0", "volumeMounts"]].concat(),
                    &named("flannel-cfg"),
                );
                remove(
                    d,
                    "DaemonSet",
                    &["spec", "template", "spec", "initContainers", "1", "volumeMounts"],
                    &named("flannel-cfg"),
                );
            }),
        ),
        (
            "lacks env POD_NAME",
            Box::new(|d| {
                remove(
                    d,
                    "DaemonSet",
                    &[&POD[..], &["0", "env"]].concat(),
                    &named("POD_NAME"),
                )
            }),
        ),
        (
            "lacks env POD_NAMESPACE",
            Box::new(|d| {
                remove(
                    d,
                    "DaemonSet",
                    &[&POD[..], &["0", "env"]].concat(),
                    &named("POD_NAMESPACE"),
                )
            }),
        ),
        (
            "host directory /etc/cni/net.d is not mounted",
            Box::new(|d| {
                remove(
                    d,
                    "DaemonSet",
                    &["spec", "template", "spec", "initContainers", "1", "volumeMounts"],
                    &named("cni"),
                );
            }),
        ),
        (
            "host directory /opt/cni/bin is not mounted",
            Box::new(|d| {
                remove(
                    d,
                    "DaemonSet",
                    &["spec", "template", "spec", "initContainers", "0", "volumeMounts"],
                    &named("cni-plugin"),
                );
            }),
        ),
        (
            "hostNetwork is not true",
            Box::new(|d| remove(d, "DaemonSet", &POD[..3], &|kv| kv.get("hostNetwork").is_some())),
        ),
        (
            "the taint node-role.kubernetes.io/control-plane:NoSchedule is not tolerated",
            Box::new(|d| remove(d, "DaemonSet", &POD[..3], &|kv| kv.get("tolerations").is_some())),
        ),
        (
            "the taint node.kubernetes.io/not-ready:NoSchedule is not tolerated",
            Box::new(|d| {
                let only_control_plane = parse(
                    "- key: node-role.kubernetes.io/control-plane\n  operator: Exists\n  effect: NoSchedule\n",
                )
                .unwrap()
                .remove(0);
                let ds = d
                    .iter_mut()
                    .find(|doc| str_at(doc, &["kind"]) == "DaemonSet")
                    .unwrap();
                let mut node = ds;
                for key in &POD[..3] {
                    let Node::Map(pairs) = node else {
                        panic!("no {key}")
                    };
                    node = &mut pairs.iter_mut().find(|(k, _)| k == key).unwrap().1;
                }
                let Node::Map(pairs) = node else {
                    panic!("no pod spec")
                };
                pairs.iter_mut().find(|(k, _)| k == "tolerations").unwrap().1 = only_control_plane;
            }),
        ),
    ];
    for (expected, cut) in cases {
        let mut docs = flannel_docs();
        cut(&mut docs);
        let missing = check_documents(&docs).expect_err(expected);
        assert!(
            missing.iter().any(|m| m.contains(expected)),
            "{expected}: {missing:?}"
        );
    }
}

#[test]
fn the_old_flannel_daemonset_alone_is_refused_with_every_gap() {
    let old = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: rpool-cni\n  namespace: kube-system\nspec:\n  selector:\n    matchLabels:\n      app: rpool-cni\n  template:\n    metadata:\n      labels:\n        app: rpool-cni\n    spec:\n      hostNetwork: true\n      tolerations:\n      - operator: Exists\n      containers:\n      - name: flannel\n        image: docker.io/flannel/flannel:v0.26.1\n        args: [\"--ip-masq\", \"--kube-subnet-mgr\"]\n";
    let missing = check_cni_manifest(old).unwrap_err();
    assert_eq!(missing.len(), 5, "{missing:#?}");
    assert!(check_cni_manifest("a: [").unwrap_err()[0].starts_with("invalid YAML"));
}
