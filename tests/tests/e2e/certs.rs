//! Certificate expiry of pools against the trio and kubesim: the control
//! planes' certificates reported (`pool show -o json`, the controller's
//! metrics), aged certificates raising the 30-day and the 7-day alert once
//! each, and `rpoolctl pool renew-certs` bringing them back to a year with
//! every control plane's kube-apiserver serving the new certificate (which
//! kubesim only does once its static pod was restarted).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, ensure};
use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1::{Event, Pool, PoolSpec};
use rpool_tests::{Profile, eventually, free_port};

use crate::observability::http_get;
use crate::world::World;

const DAY_MS: u64 = 86_400_000;
const CPS: [&str; 3] = ["cp-a", "cp-b", "cp-c"];

impl World {
    /// The agent of `hostname` reads expiry every second and restarts
    /// static pods after a one-second wait (agent.toml `[kube]`).
    fn fast_cert_checks(&mut self, hostname: &str) -> anyhow::Result<()> {
        let agent = self.agent(hostname);
        let config = agent.dir.join("agent.toml");
        let text = std::fs::read_to_string(&config)?;
        ensure!(text.contains("\n[kube]\n"), "agent.toml has no [kube]: {text}");
        let text = text.replacen(
            "\n[kube]\n",
            "\n[kube]\ncert_check_interval_s = 1\nstatic_pod_restart_wait_s = 1\n",
            1,
        );
        std::fs::write(&config, text)?;
        agent.kill();
        agent.restart()
    }

    /// `kubesim served-cert ROOT`: the apiserver certificate's expiry the
    /// node's kube-apiserver serves (Unix s).
    fn served_cert(&self, hostname: &str) -> anyhow::Result<u64> {
        let out = Command::new(self.kubesim.bin_dir.join("kubeadm").canonicalize()?)
            .args(["served-cert", &self.node_root(hostname).display().to_string()])
            .output()?;
        ensure!(out.status.success(), "served-cert {hostname}: {}", text(&out));
        let date = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        rpool_agent::kube::certs::parse_rfc3339(&date)
            .with_context(|| format!("served-cert printed {date:?}"))
    }

    /// `kubeadm certs check-expiration -o json` on `hostname`: name ->
    /// expiry (Unix s).
    fn check_expiration(&self, hostname: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let out = Command::new(self.kubesim.bin_dir.join("kubeadm"))
            .args(["certs", "check-expiration", "-o", "json"])
            .env("KUBESIM_STATE_DIR", &self.kubesim.state_dir)
            .env("KUBESIM_NODE_ROOT", self.node_root(hostname))
            .output()?;
        ensure!(
            out.status.success(),
            "check-expiration on {hostname}: {}",
            text(&out)
        );
        let certs = rpool_agent::kube::certs::parse_expiration(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(certs
            .into_iter()
            .map(|c| (c.name, c.expires_unix_ms / 1000))
            .collect())
    }

    async fn cert_events(&self, kind: &str) -> Vec<Event> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn days_left(p: &Pool) -> Option<i64> {
    p.certificates
        .as_ref()
        .filter(|c| !c.name.is_empty())
        .map(|c| c.days_left)
}

fn age(world: &World, hostname: &str, days: u32) -> anyhow::Result<()> {
    let root = world.node_root(hostname);
    std::fs::write(
        Path::new(&root).join("kubesim-cert-age-days"),
        format!("{days}\n"),
    )?;
    Ok(())
}

#[tokio::test]
async fn pool_certificates_are_reported_alerted_at_30_and_7_days_once_and_renewed_one_control_plane_at_a_time()
-> anyhow::Result<()> {
    let mut world = World::start(vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("cp-b", "b", 4, "8GiB"),
        Profile::new("cp-c", "c", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
    ])
    .await?;
    for host in CPS {
        world.fast_cert_checks(host)?;
    }
    eventually(
        Duration::from_secs(30),
        "hosts back after the restart",
        || async {
            let hosts = world.cluster.hosts().await.unwrap_or_default();
            let ready = hosts.iter().filter(|h| h.state == 1).count();
            ((ready >= 4).then_some(()), ready)
        },
    )
    .await?;
    world
        .create(PoolSpec {
            name: "web".into(),
            cores: 8,
            memory_bytes: 16 << 30,
            control_planes: 3,
            ..PoolSpec::default()
        })
        .await?;

    // Reported: a year left, on a control plane; every control plane has its own.
    let pool = world
        .wait_pool("web", "certificates reported by the 3 control planes", |p| {
            days_left(p).is_some()
                && p.members
                    .iter()
                    .filter(|m| m.role == "control-plane")
                    .all(|m| m.nearest_cert.is_some())
        })
        .await?;
    let certs = pool.certificates.clone().expect("certificates");
    ensure!((364..=365).contains(&certs.days_left), "{certs:?}");
    ensure!(CPS.contains(&certs.hostname.as_str()), "{certs:?}");
    ensure!(certs.alerted_days == 0, "{certs:?}");
    let out = world.ctl(&["pool", "show", "web", "-o", "json"]);
    ensure!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let days = json["certificates"]["days_left"].as_i64().unwrap_or(-1);
    ensure!((364..=365).contains(&days), "pool show -o json: {json}");
    let out = world.ctl(&["pool", "show", "web"]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        shown.contains("Certificates:") && shown.contains("days left"),
        "pool show: {shown}"
    );

    // Metrics: a follower restarted with a metrics listener exports it
    // (replicated state: any controller can).
    let leader = world.cluster.leader().await?;
    let follower = world
        .cluster
        .controllers
        .iter()
        .map(|c| c.id)
        .find(|id| *id != leader)
        .expect("a follower");
    let metrics = format!("127.0.0.1:{}", free_port());
    {
        let c = world.cluster.get(follower);
        let mut config = std::fs::read_to_string(&c.config)?;
        config.push_str(&format!("\n[metrics]\nlisten = \"{metrics}\"\n"));
        std::fs::write(&c.config, config)?;
        c.kill();
        c.restart().await?;
    }
    let expected_s = certs.expires_unix_ms / 1000;
    let line = format!("rpool_pool_cert_expiry_timestamp_seconds{{pool=\"web\"}} {expected_s}");
    eventually(Duration::from_secs(30), "the pool's expiry gauge", || async {
        let body = http_get(&metrics, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        let found = body.lines().any(|l| l == line);
        let seen: Vec<String> = body
            .lines()
            .filter(|l| l.contains("rpool_pool_cert"))
            .map(str::to_owned)
            .collect();
        (found.then_some(()), seen)
    })
    .await?;

    // Aged to 25 days left on cp-b: one alert at 30 days, naming it.
    age(&world, "cp-b", 340)?;
    let alert = world.wait_event("cert_expiry", "under 30").await?;
    ensure!(alert.severity == "alert", "{alert:?}");
    ensure!(alert.message.contains("on cp-b"), "{alert:?}");
    ensure!(alert.message.contains("renew-certs web"), "{alert:?}");
    let pool = world
        .wait_pool("web", "about 25 days left", |p| {
            days_left(p).is_some_and(|d| (24..=25).contains(&d))
        })
        .await?;
    ensure!(pool.certificates.as_ref().unwrap().alerted_days == 30, "{pool:?}");
    // Aged to 5 days left: the 7-day alert.
    age(&world, "cp-b", 20)?;
    world.wait_event("cert_expiry", "under 7").await?;
    world
        .wait_pool("web", "about 5 days left", |p| {
            days_left(p).is_some_and(|d| (4..=5).contains(&d))
        })
        .await?;
    // A leader change re-judges from the replicated record: no repeat.
    let leader = world.cluster.leader().await?;
    world.cluster.get(leader).kill();
    world.cluster.get(leader).restart().await?;
    let new_leader = world.cluster.leader().await?;
    world
        .wait_pool("web", "the pool readable after the leader change", |p| {
            days_left(p).is_some_and(|d| (4..=5).contains(&d))
        })
        .await?;
    // Let the agents reattach and report to the new leader.
    eventually(
        Duration::from_secs(30),
        "agents attached to the new leader",
        || async {
            let hosts = world.cluster.hosts().await.unwrap_or_default();
            let ready = hosts.iter().filter(|h| h.state == 1).count();
            ((ready >= 4).then_some(()), (new_leader, ready))
        },
    )
    .await?;
    let alerts = world.cert_events("cert_expiry").await;
    ensure!(alerts.len() == 2, "one alert per threshold: {alerts:#?}");
    let thirty = alerts.iter().filter(|e| e.message.contains("under 30")).count();
    let seven = alerts.iter().filter(|e| e.message.contains("under 7")).count();
    ensure!((thirty, seven) == (1, 1), "{alerts:#?}");

    // The dry run changes nothing.
    let out = world.ctl(&["pool", "renew-certs", "web", "--dry-run"]);
    ensure!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        plan.contains("3 control plane(s), one at a time") && plan.contains("kubeadm certs renew all"),
        "{plan}"
    );
    ensure!(
        world
            .pool("web")
            .await
            .and_then(|p| p.certificates)
            .and_then(|c| c.renewal)
            .is_none()
    );
    // Without --yes and no terminal: refused, nothing done.
    let out = world.ctl(&["pool", "renew-certs", "web"]);
    ensure!(!out.status.success(), "{}", text(&out));

    let out = world.ctl(&["pool", "renew-certs", "web", "--yes", "--wait"]);
    ensure!(out.status.success(), "{}", text(&out));
    let pool = world
        .wait_pool("web", "a year left again, alerts reset", |p| {
            days_left(p).is_some_and(|d| d >= 364)
                && p.certificates.as_ref().is_some_and(|c| c.alerted_days == 0)
        })
        .await?;
    ensure!(pool.phase == "ready", "{pool:?}");
    let steps = world.cert_events("cert_renewal_step").await;
    ensure!(steps.len() == 3, "one step per control plane: {steps:#?}");
    ensure!(!world.cert_events("cert_renewal_done").await.is_empty());
    ensure!(
        world
            .cert_events("cert_renewed")
            .await
            .iter()
            .any(|e| e.message.contains("cp-b")),
        "an info event for cp-b's renewal"
    );
    // Every control plane's apiserver serves the renewed certificate.
    let year_from_now = unix_ms_now() / 1000 + 360 * DAY_MS / 1000;
    for host in CPS {
        let on_disk = world
            .check_expiration(host)?
            .into_iter()
            .find(|(n, _)| n == "apiserver")
            .map(|(_, t)| t)
            .context("apiserver certificate")?;
        let served = world.served_cert(host)?;
        ensure!(served == on_disk, "{host}: serves {served}, on disk {on_disk}");
        ensure!(served > year_from_now, "{host}: serves {served}");
    }
    let audit = world.events().await;
    ensure!(
        audit.iter().any(|e| e.kind == "audit"
            && e.audit
                .as_ref()
                .is_some_and(|a| a.operation == "pool renew-certs")),
        "an audit record of the renewal"
    );
    Ok(())
}
