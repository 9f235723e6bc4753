//! Agents register their simulated machines and the controller keeps them.

use std::time::Duration;

use rpool_proto::v1::HostState;
use rpool_tests::{Controller, Liveness, Profile, by_hostname, ctl, eventually, json_of, start_agents};

#[tokio::test]
async fn three_agents_with_different_profiles_appear_with_exact_inventory() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let profiles = vec![
        Profile::new("sim-a-1", "a", 8, "32GiB"),
        Profile::new("sim-b-1", "b", 16, "64GiB"),
        Profile::new("sim-c-1", "c", 64, "1.5TiB"),
    ];
    let _agents = start_agents(root.path(), &controller, profiles).await?;

    let listed = json_of(&ctl(
        root.path(),
        &["--controller", &controller.addr(), "host", "list", "-o", "json"],
    ))?;
    let hosts = listed.as_array().expect("host list -o json is an array");
    assert_eq!(hosts.len(), 3, "{listed:#}");
    let expect = [
        ("sim-a-1", "a", 8, 32u64 << 30),
        ("sim-b-1", "b", 16, 64 << 30),
        ("sim-c-1", "c", 64, 3 << 39),
    ];
    for (hostname, zone, cores, memory) in expect {
        let host = hosts
            .iter()
            .find(|h| h["hostname"] == hostname)
            .unwrap_or_else(|| panic!("{hostname} missing from {listed:#}"));
        assert_eq!(host["zone"], zone, "{host:#}");
        assert_eq!(host["cores"], cores, "{host:#}");
        assert_eq!(host["physical_cores"], cores / 2, "{host:#}");
        assert_eq!(host["memory_bytes"], memory, "{host:#}");
        assert_eq!(host["state"], "ready", "{host:#}");
        assert_eq!(host["simulated"], true, "{host:#}");
        assert_eq!(host["connected"], true, "{host:#}");
        assert_eq!(host["labels"]["rack"], "r1", "{host:#}");
        assert_eq!(host["host_id"].as_str().map(str::len), Some(36), "{host:#}");
        assert!(
            host["health"].as_array().is_some_and(|h| !h.is_empty()),
            "no health checks: {host:#}"
        );
    }

    // Filters narrow the list; the table names every host.
    let zone_b = json_of(&ctl(
        root.path(),
        &[
            "--controller",
            &controller.addr(),
            "host",
            "list",
            "--zone",
            "b",
            "-o",
            "json",
        ],
    ))?;
    assert_eq!(zone_b.as_array().map(Vec::len), Some(1), "{zone_b:#}");
    assert_eq!(zone_b[0]["hostname"], "sim-b-1");
    let down = json_of(&ctl(
        root.path(),
        &[
            "--controller",
            &controller.addr(),
            "host",
            "list",
            "--state",
            "down",
            "-o",
            "json",
        ],
    ))?;
    assert_eq!(down, serde_json::json!([]));
    let table = ctl(root.path(), &["--controller", &controller.addr(), "host", "list"]);
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout)?;
    for name in ["HOSTNAME", "sim-a-1", "sim-b-1", "sim-c-1", "1.5TiB"] {
        assert!(table.contains(name), "{name} not in table:\n{table}");
    }

    // host show accepts an id prefix.
    let id = hosts[0]["host_id"].as_str().unwrap();
    let shown = json_of(&ctl(
        root.path(),
        &[
            "--controller",
            &controller.addr(),
            "host",
            "show",
            &id[..8],
            "-o",
            "json",
        ],
    ))?;
    assert_eq!(shown["host_id"], id);
    Ok(())
}

#[tokio::test]
async fn changed_simulated_hardware_is_reported_without_a_restart() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let mut agents = start_agents(
        root.path(),
        &controller,
        vec![Profile::new("sim-a-1", "a", 8, "32GiB")],
    )
    .await?;

    agents[0].profile.logical_cores = 24;
    agents[0].profile.physical_cores = 12;
    agents[0].profile.memory = "96GiB".into();
    agents[0].profile.zone = "b".into();
    agents[0].profile.cpu_percent = 73.0;
    agents[0].write_hardware()?;

    let host = eventually(Duration::from_secs(10), "new inventory reported", || async {
        let hosts = controller.hosts().await.unwrap_or_default();
        let host = by_hostname(&hosts, "sim-a-1").cloned();
        let done = host.as_ref().is_some_and(|h| {
            let facts = h.facts.as_ref().unwrap();
            let inv = facts.inventory.as_ref().unwrap();
            inv.logical_cores == 24
                && facts.zone == "b"
                && h.utilization.as_ref().is_some_and(|u| u.cpu_percent == 73.0)
        });
        (done.then(|| host.clone().unwrap()), host)
    })
    .await?;
    let inv = host.facts.unwrap().inventory.unwrap();
    assert_eq!(inv.physical_cores, 12);
    assert_eq!(inv.memory_total_bytes, 96 << 30);
    assert_eq!(controller.hosts().await?.len(), 1, "the host was duplicated");
    Ok(())
}

#[tokio::test]
async fn restarted_controller_keeps_every_host_and_agents_reconnect() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let profiles = vec![
        Profile::new("sim-a-1", "a", 8, "32GiB"),
        Profile::new("sim-b-1", "b", 16, "64GiB"),
        Profile::new("sim-c-1", "c", 32, "128GiB"),
    ];
    let mut agents = start_agents(root.path(), &controller, profiles).await?;
    let mut before = controller.hosts().await?;
    before.sort_by(|a, b| a.host_id.cmp(&b.host_id));

    // Stop one agent for good so its record must come back from disk alone.
    agents[2].stop()?;
    let status = controller.stop()?;
    assert!(status.success(), "controller exited with {status} on SIGTERM");
    controller.restart().await?;

    let mut after = controller.hosts().await?;
    after.sort_by(|a, b| a.host_id.cmp(&b.host_id));
    assert_eq!(after.len(), 3);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.host_id, b.host_id);
        assert_eq!(a.facts, b.facts, "facts changed across restart");
        assert_eq!(a.registered_at_unix_ms, b.registered_at_unix_ms);
    }
    // The two live agents find the controller again on their own.
    eventually(Duration::from_secs(15), "live agents reconnected", || async {
        let hosts = controller.hosts().await.unwrap_or_default();
        let ok = ["sim-a-1", "sim-b-1"].iter().all(|n| {
            by_hostname(&hosts, n).is_some_and(|h| h.connected && h.state == HostState::Ready as i32)
        });
        (
            ok.then_some(()),
            hosts.iter().map(|h| (h.connected, h.state)).collect::<Vec<_>>(),
        )
    })
    .await?;
    // The stopped one gets a fresh grace period, then goes down.
    eventually(Duration::from_secs(15), "stopped agent's host down", || async {
        let hosts = controller.hosts().await.unwrap_or_default();
        let host = by_hostname(&hosts, "sim-c-1").cloned();
        (
            host.as_ref()
                .filter(|h| h.state == HostState::Down as i32)
                .map(|_| ()),
            host.map(|h| h.state),
        )
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn restarted_agent_keeps_its_host_id() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let mut agents = start_agents(
        root.path(),
        &controller,
        vec![Profile::new("sim-a-1", "a", 8, "32GiB")],
    )
    .await?;
    let id = agents[0].host_id().expect("host_id file written");
    let status = agents[0].stop()?;
    assert!(status.success(), "agent exited with {status} on SIGTERM");
    agents[0].restart()?;
    eventually(Duration::from_secs(10), "agent reconnected", || async {
        let hosts = controller.hosts().await.unwrap_or_default();
        let ok = hosts.len() == 1 && hosts[0].connected && hosts[0].host_id == id;
        (ok.then_some(()), hosts)
    })
    .await?;
    assert_eq!(agents[0].host_id().as_deref(), Some(id.as_str()));
    Ok(())
}
