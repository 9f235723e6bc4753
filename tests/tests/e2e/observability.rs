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
    webhook_receiver_over(listener, None)
}

/// [`webhook_receiver`], over TLS with `tls` when given.
fn webhook_receiver_over(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> mpsc::UnboundedReceiver<(String, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let post = match tls {
                    None => answer_post(s).await,
                    Some(tls) => match tls.accept(s).await {
                        Ok(s) => answer_post(s).await,
                        Err(_) => None,
                    },
                };
                if let Some(post) = post {
                    let _ = tx.send(post);
                }
            });
        }
    });
    rx
}

/// Reads one request (head, and body to its Content-Length) from `s` and
/// answers `204`.
async fn answer_post<S>(mut s: S) -> Option<(String, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let Ok(n) = s.read(&mut chunk).await else {
            return None;
        };
        if n == 0 {
            return None;
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
    let _ = s.shutdown().await;
    Some((head, body))
}

/// `GET path` over plain TCP: (status line, body).
pub(crate) async fn http_get(addr: &str, path: &str) -> anyhow::Result<(String, String)> {
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
pub(crate) fn samples(text: &str) -> BTreeMap<String, f64> {
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
        "\n[webhook]\nurl = \"http://{hook_addr}/rpool/events\"\ntimeout_ms = 2000\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n# audit records are sent by default; these tests follow host events.\naudit = false\n"
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

/// A TLS acceptor presenting a certificate for 127.0.0.1 issued by `ca`.
fn tls_acceptor(ca: &rpool_proto::pki::Ca) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let issued = ca.issue(
        &rpool_proto::pki::Identity::Controller(99),
        &["127.0.0.1".to_owned()],
        Duration::from_secs(3_600),
    )?;
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

#[tokio::test]
async fn the_webhook_posts_over_https_trusting_only_the_configured_ca() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ours = rpool_proto::pki::Ca::generate("webhook test CA")?;
    let ca_file = root.path().join("webhook-ca.crt");
    std::fs::write(&ca_file, ours.cert_pem())?;
    // One receiver with a certificate from our CA, one from a stranger's.
    let good = TcpListener::bind("127.0.0.1:0").await?;
    let good_addr = good.local_addr()?;
    let mut posts = webhook_receiver_over(good, Some(tls_acceptor(&ours)?));
    let stranger = rpool_proto::pki::Ca::generate("webhook test CA")?;
    let bad = TcpListener::bind("127.0.0.1:0").await?;
    let bad_addr = bad.local_addr()?;
    let mut refused = webhook_receiver_over(bad, Some(tls_acceptor(&stranger)?));

    let second_metrics = format!("127.0.0.1:{}", free_port());
    let mut controllers = Vec::new();
    for (id, addr) in [(1, good_addr), (2, bad_addr)] {
        let extra = format!(
            "\n[metrics]\nlisten = \"{}\"\n[webhook]\nurl = \"https://{addr}/rpool/events\"\nca = \"{}\"\ntimeout_ms = 2000\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\nmax_attempts = 2\naudit = false\n",
            if id == 2 { second_metrics.as_str() } else { "" },
            ca_file.display()
        );
        let mut controller = Controller::configure(
            &root.path().join(format!("c{id}")),
            1,
            free_port(),
            &[],
            Liveness::FAST,
            &extra,
        )?;
        controller.restart().await?;
        controllers.push(controller);
    }
    let _agents = start_agents(
        root.path(),
        &controllers[0],
        vec![Profile::new("tls-a", "a", 4, "8GiB")],
    )
    .await?;
    let _other = start_agents(
        &root.path().join("other"),
        &controllers[1],
        vec![Profile::new("tls-b", "a", 4, "8GiB")],
    )
    .await?;

    let (head, body) = tokio::time::timeout(Duration::from_secs(20), posts.recv())
        .await?
        .expect("receiver running");
    assert!(head.starts_with("POST /rpool/events HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let event: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(event["kind"], "host_enrolled", "{event}");

    // The controller whose endpoint shows a certificate from another CA
    // never completes a POST; it counts the failures.
    eventually(
        Duration::from_secs(20),
        "webhook failures on the second controller",
        || async {
            let scraped = http_get(&second_metrics, "/metrics").await.ok();
            let failures = scraped
                .as_ref()
                .and_then(|(_, body)| samples(body).get("rpool_webhook_failures_total").copied());
            (failures.filter(|n| *n >= 1.0), scraped)
        },
    )
    .await?;
    assert!(
        refused.try_recv().is_err(),
        "a POST got through to the stranger's endpoint"
    );
    Ok(())
}
