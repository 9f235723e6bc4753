//! Telling the admin: the event webhook and the Prometheus endpoints,
//! against real controller and agent processes, with a real HTTP listener
//! in the test as the webhook receiver and plain TCP as the scraper.

use std::collections::BTreeMap;
use std::time::Duration;

use rpool_proto::v1::{CreatePoolRequest, PoolSpec};
use rpool_tests::{Controller, Liveness, Profile, eventually, free_port, start_agents};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Accepts connections on `listener`, answers `200`, and sends each
/// request's body (read to its Content-Length) to the returned channel.
fn webhook_receiver(listener: TcpListener) -> mpsc::UnboundedReceiver<(String, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>())
                            })
                            .and_then(Result::ok)
                            .unwrap_or(0);
                        if body.len() >= len {
                            break (head.to_owned(), body[..len].to_owned());
                        }
                    }
                };
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = tx.send((head, body));
            });
        }
    });
    rx
}

/// `GET path` over plain TCP: (status line, body).
async fn http_get(addr: &str, path: &str) -> anyhow::Result<(String, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    ))
}

/// Sample lines of an exposition: `name{labels}` -> value. Panics on a line
/// that does not parse, so a malformed exposition fails the test.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (key.to_owned(), value)
        })
        .collect()
}

#[tokio::test]
async fn the_leader_posts_a_committed_event_to_the_webhook_as_json() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let hook = TcpListener::bind("127.0.0.1:0").await?;
    let hook_addr = hook.local_addr()?;
    let mut posts = webhook_receiver(hook);
    let extra = format!(
        "\n[webhook]\nurl = \"http://{hook_addr}/rpool/events\"\ntimeout_ms = 2000\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n"
    );
    let mut controller = Controller::configure(
        &root.path().join("c1"),
        1,
        free_port(),
        &[],
        Liveness::FAST,
        &extra,
    )?;
    controller.restart().await?;
    let _agents = start_agents(
        root.path(),
        &controller,
        vec![
            Profile::new("cp-a", "a", 4, "8GiB"),
            Profile::new("w-a", "a", 8, "16GiB"),
        ],
    )
    .await?;
    // Before any pool change, the only events are the agents' enrollments.
    while let Ok((_, body)) = posts.try_recv() {
        let event: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(
            event["kind"], "host_enrolled",
            "unexpected event before any pool change: {event}"
        );
    }

    controller
        .admin()
        .await?
        .create_pool(CreatePoolRequest {
            spec: Some(PoolSpec {
                name: "hooked".into(),
                cores: 4,
                memory_bytes: 8 << 30,
                control_planes: 1,
                ..PoolSpec::default()
            }),
            dry_run: false,
        })
        .await?;

    // The first post about the pool (enrollment events may still trickle in
    // before it, and nothing else).
    let (head, body) = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (head, body) = posts.recv().await.expect("receiver running");
            let event: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if event["pool"] == "hooked" {
                return (head, body);
            }
            assert_eq!(event["kind"], "host_enrolled", "unexpected event: {event}");
        }
    })
    .await?;
    assert!(head.starts_with("POST /rpool/events HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let event: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(event["pool"], "hooked", "{event}");
    assert!(event["seq"].as_u64().is_some_and(|s| s > 0), "{event}");
    assert!(
        event["at_unix_ms"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "{event}"
    );
    assert!(
        matches!(event["severity"].as_str(), Some("info" | "alert")),
        "{event}"
    );
    assert!(
        event["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{event}"
    );
    assert!(event.get("host").is_some(), "{event}");
    Ok(())
}

#[tokio::test]
async fn controller_and_agent_metrics_are_scraped_over_http() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let extra = format!("\n[metrics]\nlisten = \"{metrics_addr}\"\n");
    let mut controller = Controller::configure(
        &root.path().join("c1"),
        1,
        free_port(),
        &[],
        Liveness::FAST,
        &extra,
    )?;
    controller.restart().await?;
    let mut agents = start_agents(
        root.path(),
        &controller,
        vec![Profile::new("w-a", "a", 8, "16GiB")],
    )
    .await?;

    // Hosts by state and Raft lines, once the heartbeat has been acknowledged.
    let seen = eventually(Duration::from_secs(20), "controller metrics", || async {
        let scraped = http_get(&metrics_addr, "/metrics").await.ok();
        let parsed = scraped.as_ref().map(|(_, body)| samples(body));
        let ok = parsed.as_ref().is_some_and(|m| {
            m.get("rpool_hosts{state=\"ready\"}") == Some(&1.0)
                && m.get("rpool_heartbeats_total").is_some_and(|n| *n >= 1.0)
        });
        (ok.then(|| parsed.clone().unwrap_or_default()), scraped)
    })
    .await?;
    assert_eq!(seen.get("rpool_hosts{state=\"down\"}"), Some(&0.0));
    assert!(seen.get("rpool_raft_term").is_some_and(|t| *t >= 1.0), "{seen:?}");
    assert!(
        seen.get("rpool_raft_commit_index").is_some_and(|i| *i >= 1.0),
        "{seen:?}"
    );
    assert_eq!(seen.get("rpool_raft_is_leader"), Some(&1.0));
    assert_eq!(seen.get("rpool_raft_leader_id"), Some(&1.0));
    assert_eq!(seen.get("rpool_agent_sessions"), Some(&1.0));
    assert!(
        seen.contains_key("rpool_heartbeat_processing_seconds_bucket{le=\"+Inf\"}"),
        "{seen:?}"
    );
    assert!(
        seen.get("process_resident_memory_bytes")
            .is_some_and(|b| *b > 0.0)
    );
    let (status, _) = http_get(&metrics_addr, "/").await?;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    // The agent's endpoint, turned on in its config.
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let agent = &mut agents[0];
    agent.kill();
    let config = agent.dir.join("agent.toml");
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!("\n[metrics]\nlisten = \"{agent_metrics}\"\n"));
    std::fs::write(&config, text)?;
    agent.restart()?;
    let seen = eventually(Duration::from_secs(20), "agent metrics", || async {
        let scraped = http_get(&agent_metrics, "/metrics").await.ok();
        let parsed = scraped.as_ref().map(|(_, body)| samples(body));
        let ok = parsed.as_ref().is_some_and(|m| {
            m.get("rpool_agent_session_connected") == Some(&1.0)
                && m.get("rpool_agent_heartbeat_rtt_seconds_count")
                    .is_some_and(|n| *n >= 1.0)
        });
        (ok.then(|| parsed.clone().unwrap_or_default()), scraped)
    })
    .await?;
    assert!(
        seen.get("rpool_agent_heartbeats_sent_total")
            .is_some_and(|n| *n >= 1.0)
    );
    assert!(
        seen.get("process_resident_memory_bytes")
            .is_some_and(|b| *b > 0.0)
    );
    Ok(())
}
