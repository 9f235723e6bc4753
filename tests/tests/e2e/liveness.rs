//! Silent hosts go suspect, then down, on the configured clock; a host that
//! speaks again is ready again.

use std::time::{Duration, Instant};

use rpool_proto::v1::HostState;
use rpool_tests::{Controller, Liveness, Profile, by_hostname, eventually, start_agents};

#[tokio::test]
async fn killed_agent_goes_suspect_then_down_within_the_configured_times() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let mut agents = start_agents(
        root.path(),
        &controller,
        vec![
            Profile::new("victim", "a", 8, "32GiB"),
            Profile::new("bystander", "b", 8, "32GiB"),
        ],
    )
    .await?;

    agents[0].kill();
    let killed_at = Instant::now();
    // Observe the transitions as they happen; record when each was first seen.
    let suspect_seen = std::cell::Cell::new(None);
    let down_at = eventually(Duration::from_secs(10), "victim down", || {
        let controller = &controller;
        let suspect_seen = &suspect_seen;
        async move {
            let hosts = controller.hosts().await.unwrap_or_default();
            let state = by_hostname(&hosts, "victim").map(|h| h.state);
            if state == Some(HostState::Suspect as i32) && suspect_seen.get().is_none() {
                suspect_seen.set(Some(killed_at.elapsed()));
            }
            let down = (state == Some(HostState::Down as i32)).then(|| killed_at.elapsed());
            (down, state)
        }
    })
    .await?;
    let suspect_at = suspect_seen
        .get()
        .expect("the host went down without passing through suspect");
    let limits = Liveness::FAST;
    // The last heartbeat was at most one interval before the kill, and the
    // controller checks every 100 ms; allow 500 ms of scheduling slack.
    let slack = Duration::from_millis(500);
    assert!(
        suspect_at >= Duration::from_millis((limits.suspect_after_ms - limits.heartbeat_interval_ms) as u64),
        "suspect too early: {suspect_at:?}"
    );
    assert!(
        suspect_at <= Duration::from_millis(limits.suspect_after_ms as u64) + slack,
        "suspect too late: {suspect_at:?}"
    );
    assert!(
        down_at >= Duration::from_millis((limits.down_after_ms - limits.heartbeat_interval_ms) as u64),
        "down too early: {down_at:?}"
    );
    assert!(
        down_at <= Duration::from_millis(limits.down_after_ms as u64) + slack,
        "down too late: {down_at:?}"
    );

    let hosts = controller.hosts().await?;
    let victim = by_hostname(&hosts, "victim").unwrap();
    assert!(
        victim.state_reason.contains("heartbeat"),
        "reason: {}",
        victim.state_reason
    );
    assert_eq!(
        by_hostname(&hosts, "bystander").unwrap().state,
        HostState::Ready as i32,
        "a live host was marked"
    );

    // Back from the dead: the same host id is ready again.
    agents[0].restart()?;
    eventually(Duration::from_secs(10), "victim ready again", || async {
        let hosts = controller.hosts().await.unwrap_or_default();
        let state = by_hostname(&hosts, "victim").map(|h| h.state);
        ((state == Some(HostState::Ready as i32)).then_some(()), state)
    })
    .await?;
    assert_eq!(controller.hosts().await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn hung_agent_with_an_open_connection_is_still_declared_down() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let agents = start_agents(
        root.path(),
        &controller,
        vec![Profile::new("hung", "a", 8, "32GiB")],
    )
    .await?;
    agents[0].freeze();
    eventually(Duration::from_secs(10), "hung host down", || async {
        let hosts = controller.hosts().await.unwrap_or_default();
        let state = by_hostname(&hosts, "hung").map(|h| h.state);
        ((state == Some(HostState::Down as i32)).then_some(()), state)
    })
    .await?;
    Ok(())
}
