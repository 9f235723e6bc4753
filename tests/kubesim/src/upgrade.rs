//! `kubeadm upgrade plan|apply|node` and the `systemctl` that restarts the
//! kubelet, with the checks real kubeadm and the version-skew policy make:
//! - `apply V`: only on a control plane (admin.conf); V at most one minor
//!   above the cluster, not below it, not above the installed kubeadm;
//!   every control-plane node Ready; asks unless `-y/--yes/-f`.
//! - `plan [V]`: the same checks, nothing changed.
//! - `node`: a control plane's static pods move to the cluster's version;
//!   refused when this host's kubeadm is a newer minor than the cluster's
//!   control plane (`upgrade apply` has not run yet) or an older one.
//! - `systemctl restart kubelet`: the node's kubelet runs the installed
//!   version; refused (the unit fails) when that is a newer minor than the
//!   API server it talks to (a kubelet must never be newer than
//!   kube-apiserver): a control plane's own, a worker's the oldest.

use std::io::BufRead;

use crate::flags::{self, Parsed, flag, flag_s, val};
use crate::kubeadm::{fail, parse, parse_version};
use crate::state::{self, Cluster, Env, Fail, Res, Role, Store};

const UPGRADE_FLAGS: [flags::Spec; 7] = [
    val("kubeconfig"),
    flag_s("yes", 'y'),
    flag_s("force", 'f'),
    flag("dry-run"),
    val("config"),
    val("ignore-preflight-errors"),
    flag("etcd-upgrade"),
];

pub fn kubeadm_upgrade(argv: &[String]) -> Res {
    let p = parse(argv, &UPGRADE_FLAGS)?;
    let Some(sub) = p.args.first().cloned() else {
        println!(
            "Upgrade your cluster smoothly to a newer version with this command\n\nAvailable Commands (kubesim subset):\n  apply       Upgrade your Kubernetes cluster to the specified version\n  node        Upgrade commands for a node in the cluster\n  plan        Check which versions are available to upgrade to and validate whether your current cluster is upgradeable."
        );
        return Ok(());
    };
    let rest: Vec<String> = p.args[1..].to_vec();
    match sub.as_str() {
        "plan" => plan_or_apply(&p, &rest, false),
        "apply" => plan_or_apply(&p, &rest, true),
        "node" => node(&rest),
        other => Err(fail(format!(
            "unknown command \"{other}\" for \"kubeadm upgrade\""
        ))),
    }
}

/// The cluster this host belongs to (index in the store) and its node name.
fn this_node(env: &Env, store: &Store) -> Res<(usize, String, Role)> {
    let root = env.root()?;
    let local = state::read_local(root).ok_or_else(|| {
        fail("couldn't create a Kubernetes client from file \"/etc/kubernetes/kubelet.conf\": failed to load admin kubeconfig: open /etc/kubernetes/kubelet.conf: no such file or directory")
    })?;
    let i = store
        .by_id(&local.cluster_id)
        .ok_or_else(|| fail("kubesim: this node's cluster no longer exists"))?;
    Ok((i, local.node_name, local.role))
}

fn minor(v: &str) -> u32 {
    parse_version(v).map_or(0, |(_, m, _)| m)
}

/// kubeadm's EnforceVersionPolicies for an upgrade of `c` to `to` with the
/// installed kubeadm `kubeadm`.
fn policy_errors(c: &Cluster, to: &str, kubeadm: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let (Some(new), Some(cluster), Some(tool)) = (
        parse_version(to),
        parse_version(&c.kubernetes_version),
        parse_version(kubeadm),
    ) else {
        return vec![format!("Unable to parse version \"{to}\"")];
    };
    if new < cluster {
        errors.push(format!(
            "Specified version to upgrade to \"{to}\" is equal to or lower than the cluster version \"{}\". Downgrades are not supported yet",
            c.kubernetes_version
        ));
    }
    if new.1 > cluster.1 + 1 {
        errors.push(format!(
            "Specified version to upgrade to \"{to}\" is too high; kubeadm can upgrade only 1 minor version at a time"
        ));
    }
    if new > tool {
        errors.push(format!(
            "Specified version to upgrade to \"{to}\" is higher than the kubeadm version \"{kubeadm}\". Upgrade kubeadm first using the tool you used to install kubeadm"
        ));
    }
    if tool.1 > new.1 + 1 {
        errors.push(format!(
            "Kubeadm version \"{kubeadm}\" can only be used to upgrade to Kubernetes version \"v1.{}\"",
            tool.1
        ));
    }
    errors
}

fn plan_or_apply(p: &Parsed, args: &[String], apply: bool) -> Res {
    let env = Env::from_process()?;
    let root = env.root()?.to_path_buf();
    let admin = env.host_path(p.get("kubeconfig").unwrap_or("/etc/kubernetes/admin.conf"));
    if !admin.exists() {
        return Err(fail(format!(
            "couldn't create a Kubernetes client from file \"{}\": failed to load admin kubeconfig: open {}: no such file or directory",
            p.get("kubeconfig").unwrap_or("/etc/kubernetes/admin.conf"),
            p.get("kubeconfig").unwrap_or("/etc/kubernetes/admin.conf"),
        )));
    }
    let kubeadm = state::installed_version(Some(&root));
    let to = match args.first() {
        Some(v) => v.clone(),
        None if apply => {
            return Err(fail(
                "missing one or more required arguments. Required arguments: [version]",
            ));
        }
        None => kubeadm.clone(),
    };
    if args.len() > 1 {
        return Err(fail(format!(
            "unknown command \"{}\" for \"kubeadm upgrade\"",
            args[1]
        )));
    }
    let mut store = Store::open(&env)?;
    let (i, name, _) = this_node(&env, &store)?;
    if !store.clusters[i].alive() {
        return Err(fail(format!(
            "Get \"https://{}/api/v1/namespaces/kube-system/configmaps/kubeadm-config?timeout=10s\": dial tcp {}: connect: connection refused",
            store.clusters[i].endpoint, store.clusters[i].endpoint
        )));
    }
    let c = &store.clusters[i];
    println!("[preflight] Running pre-flight checks.");
    let not_ready: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane && n.node_root.is_some() && !c.kubelet_up(n))
        .map(|n| n.name.clone())
        .collect();
    if !not_ready.is_empty() {
        return Err(fail(format!(
            "[preflight] Some fatal errors occurred:\n\t[ERROR ControlPlaneNodesReady]: there are NotReady control-planes in the cluster: [{}]\n[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`",
            not_ready.join(" ")
        )));
    }
    println!("[upgrade] Running cluster health checks");
    println!("[upgrade/version] You have chosen to change the cluster version to \"{to}\"");
    println!(
        "[upgrade/versions] Cluster version: {}\n[upgrade/versions] kubeadm version: {kubeadm}",
        c.kubernetes_version
    );
    let errors = policy_errors(c, &to, &kubeadm);
    if !errors.is_empty() && !p.on("force") {
        return Err(fail(format!(
            "[upgrade/version] FATAL: the --version argument is invalid due to these errors:\n\n\t- {}\n\nCan be bypassed if you pass the --force flag",
            errors.join("\n\t- ")
        )));
    }
    if !apply {
        println!(
            "\nComponents that must be upgraded manually after you have upgraded the control plane with 'kubeadm upgrade apply':"
        );
        let mut rows = vec![vec![
            "COMPONENT".to_string(),
            "NODE".into(),
            "CURRENT".into(),
            "TARGET".into(),
        ]];
        for n in &c.nodes {
            rows.push(vec![
                "kubelet".into(),
                n.name.clone(),
                c.kubelet_version(n).to_string(),
                to.clone(),
            ]);
        }
        print!("{}", state::table(&rows));
        println!(
            "\nYou can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply {to}\n"
        );
        return Ok(());
    }
    if !p.on("yes") && !p.on("force") {
        print!("[upgrade] Are you sure you want to proceed? [y/N]: ");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y") {
            return Err(fail(
                "won't proceed; the user didn't answer (Y|y) in order to continue",
            ));
        }
    }
    if p.on("dry-run") {
        println!("[dryrun] Finished dryrunning successfully!");
        return Ok(());
    }
    let c = &mut store.clusters[i];
    c.kubernetes_version = to.clone();
    if let Some(n) = c.node_mut(&name) {
        n.control_plane_version = Some(to.clone());
    }
    let c = c.clone();
    store.save(&c)?;
    println!(
        "[upgrade/staticpods] Writing new Static Pod manifests to \"/etc/kubernetes/tmp/kubeadm-upgraded-manifests\""
    );
    println!(
        "[upgrade/addon] Applied essential addon: CoreDNS\n[upgrade/addon] Applied essential addon: kube-proxy\n"
    );
    println!(
        "[upgrade] SUCCESS! A control plane node of your cluster was upgraded to \"{to}\".\n\n[upgrade] Now please proceed with upgrading the rest of the nodes by following the right order."
    );
    Ok(())
}

fn node(args: &[String]) -> Res {
    if let Some(a) = args.first() {
        return Err(fail(format!(
            "unknown command \"{a}\" for \"kubeadm upgrade node\""
        )));
    }
    let env = Env::from_process()?;
    let root = env.root()?.to_path_buf();
    let mut store = Store::open(&env)?;
    let (i, name, role) = this_node(&env, &store)?;
    if !store.clusters[i].alive() {
        return Err(fail(format!(
            "unable to fetch the kubeadm-config ConfigMap: Get \"https://{}/api/v1/namespaces/kube-system/configmaps/kubeadm-config?timeout=10s\": dial tcp {}: connect: connection refused",
            store.clusters[i].endpoint, store.clusters[i].endpoint
        )));
    }
    let kubeadm = state::installed_version(Some(&root));
    let cluster_version = store.clusters[i].kubernetes_version.clone();
    if minor(&kubeadm) > minor(&cluster_version) {
        return Err(fail(format!(
            "kubesim: this node's kubeadm ({kubeadm}) is newer than the cluster's control plane ({cluster_version}): run `kubeadm upgrade apply {kubeadm}` on a control plane first (a kubelet must not be newer than the API server)"
        )));
    }
    if minor(&kubeadm) < minor(&cluster_version) {
        return Err(fail(format!(
            "the cluster runs {cluster_version} but this kubeadm is {kubeadm}: upgrade kubeadm first using the tool you used to install kubeadm"
        )));
    }
    println!(
        "[upgrade] Reading configuration from the \"kubeadm-config\" ConfigMap in namespace \"kube-system\"..."
    );
    if role == Role::ControlPlane {
        println!(
            "[upgrade/staticpods] Writing new Static Pod manifests to \"/etc/kubernetes/tmp/kubeadm-upgraded-manifests\""
        );
        let c = &mut store.clusters[i];
        if let Some(n) = c.node_mut(&name) {
            n.control_plane_version = Some(cluster_version.clone());
        }
        let c = c.clone();
        store.save(&c)?;
    } else {
        println!("[upgrade] Skipping phase. Not a control plane node.");
    }
    println!("[upgrade/kubelet-config] The kubelet configuration for this node was successfully upgraded!");
    println!(
        "[upgrade] The configuration for this node was successfully upgraded!\n[upgrade] Now you should go ahead and upgrade the kubelet package using your package manager."
    );
    Ok(())
}

/// `systemctl daemon-reload` and `systemctl restart kubelet` (argv[0]
/// `systemctl`): the kubelet comes back on the installed version.
pub fn systemctl(argv: &[String]) -> Res {
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["daemon-reload"] => Ok(()),
        ["restart", "kubelet"] | ["restart", "kubelet.service"] => restart_kubelet(),
        _ => Err(Fail::new(format!(
            "kubesim systemctl: only `daemon-reload` and `restart kubelet` are simulated, not {words:?}"
        ))),
    }
}

fn restart_kubelet() -> Res {
    let env = Env::from_process()?;
    let root = env.root()?.to_path_buf();
    let installed = state::installed_version(Some(&root));
    let mut store = Store::open(&env)?;
    let Some(local) = state::read_local(&root) else {
        return Ok(()); // not joined: the kubelet crash-loops waiting for a config, as a real one does
    };
    let Some(i) = store.by_id(&local.cluster_id) else {
        return Ok(());
    };
    let c = &store.clusters[i];
    // The API server the kubelet talks to: a control plane's own (kubeadm's
    // ControlPlaneKubeletLocalMode: a control plane's kubelet uses its local
    // kube-apiserver), a worker's the oldest of them (it may reach any).
    let cp_version = |n: &state::Node| {
        n.control_plane_version
            .clone()
            .unwrap_or_else(|| c.kubernetes_version.clone())
    };
    let own = c
        .node(&local.node_name)
        .filter(|n| n.role == Role::ControlPlane)
        .map(cp_version);
    let oldest = own.unwrap_or_else(|| {
        c.nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane && n.node_root.is_some())
            .map(cp_version)
            .min_by_key(|v| parse_version(v))
            .unwrap_or_else(|| c.kubernetes_version.clone())
    });
    if minor(&installed) > minor(&oldest) {
        return Err(Fail::new(format!(
            "Job for kubelet.service failed because the control process exited with error code.\nSee \"systemctl status kubelet.service\" and \"journalctl -xeu kubelet.service\" for details.\n(kubesim: kubelet {installed} is newer than the API server {oldest}; a kubelet must not be newer than kube-apiserver)"
        )));
    }
    let c = &mut store.clusters[i];
    if let Some(n) = c.node_mut(&local.node_name) {
        n.kubelet_version = Some(installed);
    }
    let c = c.clone();
    store.save(&c)
}
