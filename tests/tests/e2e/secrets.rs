//! Secrets stay secret (issue 5, item 4): after a full pool create with a
//! control-plane join (bootstrap token, CA hash, certificate key) and a
//! kubeconfig fetch, none of the secrets kubesim handed out appears in any
//! controller or agent log (debug level), in the events, or in the pool
//! views; `pool kubeconfig` is the one place the kubeconfig comes out.

use std::time::Duration;

use rpool_proto::v1::{CreatePoolRequest, GetKubeconfigRequest, GetPoolRequest, ListEventsRequest, PoolSpec};
use rpool_tests::{Cluster, Kubesim, Liveness, Profile, TEST_RAFT, ctl, eventually, json_of};

/// Every secret value kubesim's cluster state holds: bootstrap tokens (and
/// their secret halves) and the uploaded-certs key.
fn kubesim_secrets(kubesim: &Kubesim) -> anyhow::Result<Vec<String>> {
    let mut secrets = Vec::new();
    for entry in std::fs::read_dir(kubesim.state_dir.join("clusters"))? {
        let text = std::fs::read_to_string(entry?.path().join("cluster.json"))?;
        let cluster: serde_json::Value = serde_json::from_str(&text)?;
        for token in cluster["tokens"].as_array().into_iter().flatten() {
            let token = token["token"].as_str().unwrap_or_default().to_string();
            if let Some((_, secret)) = token.split_once('.') {
                secrets.push(secret.to_string());
            }
            secrets.push(token);
        }
        if let Some(key) = cluster["certificate_key"]["key"].as_str() {
            secrets.push(key.to_string());
        }
    }
    secrets.retain(|s| s.len() >= 16);
    Ok(secrets)
}

/// The lines of a kubeconfig that carry key material or credentials.
fn kubeconfig_secrets(kubeconfig: &str) -> Vec<String> {
    kubeconfig
        .lines()
        .filter_map(|l| {
            let (key, value) = l.trim().split_once(':')?;
            let value = value.trim();
            (["client-key-data", "client-certificate-data", "token"].contains(&key) && value.len() >= 16)
                .then(|| value.to_string())
        })
        .collect()
}

#[tokio::test]
async fn no_secret_reaches_logs_events_or_views_during_a_pool_create() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cluster = Cluster::start(root.path(), 3, Liveness::FAST, TEST_RAFT).await?;
    let profiles = vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("cp-b", "b", 4, "8GiB"),
        Profile::new("cp-c", "c", 4, "8GiB"),
        Profile::new("w-a", "a", 8, "32GiB"),
    ];
    let agents = cluster.start_agents(root.path(), profiles).await?;
    let kubesim = Kubesim::new(root.path())?;
    let leader = cluster.leader().await?;
    let mut admin = cluster
        .controllers
        .iter()
        .find(|c| c.id == leader)
        .expect("leader")
        .admin()
        .await?;

    admin
        .create_pool(CreatePoolRequest {
            spec: Some(PoolSpec {
                name: "vault".into(),
                cores: 8,
                memory_bytes: 16 << 30,
                control_planes: 3,
                ..PoolSpec::default()
            }),
            dry_run: false,
        })
        .await?;
    eventually(Duration::from_secs(60), "pool vault ready", || async {
        let pool = match rpool_tests::admin_client(&cluster.addrs()[0]).await {
            Ok(mut admin) => admin
                .get_pool(GetPoolRequest { name: "vault".into() })
                .await
                .ok()
                .map(|r| r.into_inner()),
            Err(_) => None,
        };
        let phase = pool.as_ref().map(|p| p.phase.clone());
        (pool.filter(|p| p.phase == "ready"), phase)
    })
    .await?;

    let kubeconfig = admin
        .get_kubeconfig(GetKubeconfigRequest { name: "vault".into() })
        .await?
        .into_inner()
        .content;
    let mut secrets = kubesim_secrets(&kubesim)?;
    let token_count = secrets.len();
    assert!(
        token_count >= 2,
        "kubesim holds no join token or certificate key: the check would prove nothing"
    );
    let kube_secrets = kubeconfig_secrets(&kubeconfig);
    assert!(
        !kube_secrets.is_empty(),
        "the kubeconfig carries no credential:\n{kubeconfig}"
    );
    secrets.extend(kube_secrets);

    // Everything an admin or an operator can read, other than `pool kubeconfig`.
    let mut exposed = Vec::new();
    for c in &cluster.controllers {
        exposed.push((format!("controller-{} log", c.id), c.log()));
    }
    for a in &agents {
        exposed.push((format!("agent {} log", a.profile.hostname), a.log()));
    }
    let events = admin
        .list_events(ListEventsRequest {
            pool: String::new(),
            after_index: 0,
            limit: 1000,
            kind: String::new(),
        })
        .await?
        .into_inner();
    exposed.push(("events".into(), format!("{events:?}")));
    let home = root.path().join("ctl-home");
    let show = ctl(
        &home,
        &[
            "--controller",
            &cluster.addr_list(),
            "pool",
            "show",
            "vault",
            "-o",
            "json",
        ],
    );
    let shown = json_of(&show)?;
    exposed.push(("pool show -o json".into(), shown.to_string()));
    let events_out = ctl(
        &home,
        &["--controller", &cluster.addr_list(), "events", "-o", "json"],
    );
    exposed.push((
        "rpoolctl events -o json".into(),
        String::from_utf8_lossy(&events_out.stdout).into_owned(),
    ));

    assert!(
        exposed
            .iter()
            .any(|(what, text)| what.starts_with("agent") && text.contains("kubeadm")),
        "agent logs show no kubeadm step: the logs were not captured"
    );
    for (what, text) in &exposed {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} contains a secret ({}...)",
                &secret[..4]
            );
        }
    }
    Ok(())
}
