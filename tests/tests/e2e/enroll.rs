//! Agents enroll with bootstrap tokens: a token and a CA pin are all a new
//! host needs; tokens are counted, revoked and expire through Raft; a wrong
//! pin never sends the token; certificates renew before they expire; no
//! secret ever reaches a log or a listing.
//!
//! The agents here are started by hand (not with `Agent::start`, which
//! gives them certificates up front) with an `[enroll]` section and an
//! empty TLS directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use rpool_proto::v1::{HostState, ListEventsRequest};
use rpool_tests::{
    Cluster, Controller, Liveness, TEST_RAFT, admin_client, bin, ctl, eventually, free_port, json_of,
};

/// An agent process that starts with no certificate and an `[enroll]`
/// section; killed when dropped.
pub(crate) struct Enrolling {
    dir: PathBuf,
    child: Option<Child>,
}

impl Enrolling {
    pub(crate) fn start(
        dir: &Path,
        controllers: &[String],
        hostname: &str,
        enroll: &str,
    ) -> Result<Enrolling> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("hardware.toml"),
            format!(
                "hostname = \"{hostname}\"\nzone = \"a\"\nlogical_cores = 8\nphysical_cores = 4\n\
                 memory = \"32GiB\"\ncpu_percent = 10.0\nmemory_used = \"1GiB\"\nload_average = 0.5\n"
            ),
        )?;
        let list = controllers
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            dir.join("agent.toml"),
            format!(
                "controllers = [{list}]\nstate_dir = \"{state}\"\n\n\
                 [reconnect]\ninitial_backoff_ms = 50\nmax_backoff_ms = 500\n\n\
                 [simulate]\nfile = \"{hw}\"\n\n{enroll}",
                state = dir.join("state").display(),
                hw = dir.join("hardware.toml").display(),
            ),
        )?;
        let log = std::fs::File::create(dir.join("log"))?;
        let child = Command::new(bin("rpool-agent"))
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rpool-agent")?;
        Ok(Enrolling {
            dir: dir.to_path_buf(),
            child: Some(child),
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn host_id(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("state/host_id"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn tls(&self, file: &str) -> PathBuf {
        self.dir.join("state/tls").join(file)
    }
}

impl Drop for Enrolling {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `[enroll]` with an inline token.
pub(crate) fn enroll_section(token: &str, pin: &str) -> String {
    format!("[enroll]\ntoken = \"{token}\"\nca_pin = \"{pin}\"\n")
}

/// `rpoolctl token create ... -o json` against `controllers`: (token, pin, id).
pub(crate) fn create_token(
    home: &Path,
    controllers: &str,
    extra: &[&str],
) -> Result<(String, String, String)> {
    let mut args = vec!["--controller", controllers, "token", "create", "-o", "json"];
    args.extend_from_slice(extra);
    let created = json_of(&ctl(home, &args))?;
    let field = |k: &str| {
        created[k]
            .as_str()
            .map(str::to_owned)
            .context(format!("{k} in {created}"))
    };
    Ok((field("token")?, field("ca_pin")?, field("id")?))
}

/// `rpoolctl token list -o json`: the raw stdout and the parsed array.
fn list_tokens(home: &Path, controllers: &str) -> Result<(String, serde_json::Value)> {
    let out = ctl(
        home,
        &["--controller", controllers, "token", "list", "-o", "json"],
    );
    let parsed = json_of(&out)?;
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), parsed))
}

fn token_entry(list: &serde_json::Value, id: &str) -> serde_json::Value {
    list.as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == id).cloned())
        .unwrap_or_default()
}

/// The host with `host_id` as `controller` lists it: (state, connected).
async fn host_state(controller: &str, host_id: &str) -> Option<(i32, bool)> {
    let mut admin = admin_client(controller).await.ok()?;
    let hosts = admin
        .list_hosts(rpool_proto::v1::ListHostsRequest::default())
        .await
        .ok()?
        .into_inner()
        .hosts;
    hosts
        .iter()
        .find(|h| h.host_id == host_id)
        .map(|h| (h.state, h.connected))
}

pub(crate) async fn wait_ready(controller: &str, agent: &Enrolling) -> Result<String> {
    eventually(Duration::from_secs(30), "the enrolled agent ready", || async {
        let Some(id) = agent.host_id() else {
            return (None, "no host id yet".to_owned());
        };
        match host_state(controller, &id).await {
            Some((state, true)) if state == HostState::Ready as i32 => (Some(id), String::new()),
            other => (None, format!("{other:?}; agent log:\n{}", agent.log())),
        }
    })
    .await
}

async fn wait_log(agent: &Enrolling, what: &str) -> Result<()> {
    eventually(Duration::from_secs(20), what, || async {
        let log = agent.log();
        (log.contains(what).then_some(()), log)
    })
    .await
}

#[tokio::test]
async fn an_agent_enrolls_with_a_one_use_token_through_a_follower_and_becomes_ready() -> Result<()> {
    let root = tempfile::tempdir()?;
    let home = root.path();
    let cluster = Cluster::start(&root.path().join("controllers"), 3, Liveness::FAST, TEST_RAFT).await?;
    let leader = cluster.leader().await?;
    // A follower first: Enroll is forwarded to the leader.
    let mut controllers = cluster.addrs();
    controllers.sort_by_key(|a| *a == cluster.controllers[leader as usize - 1].addr());
    let list = cluster.addr_list();
    let (token, pin, id) = create_token(home, &list, &["--uses", "1", "--description", "rack 12"])?;
    assert_eq!(token.split('.').next(), Some(id.as_str()));
    assert_eq!(
        pin,
        rpool_tests::test_ca().pin(),
        "the pin printed is the cluster CA's"
    );

    let agent = Enrolling::start(
        &root.path().join("agent-1"),
        &controllers,
        "enr-1",
        &enroll_section(&token, &pin),
    )?;
    let host_id = wait_ready(&cluster.addrs()[0], &agent).await?;

    // The files: the CA with the pin, a certificate for this host, a private key.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).ok();
    assert_eq!(mode(agent.tls("agent.key")), Some(0o600));
    assert_eq!(mode(agent.tls("agent.crt")), Some(0o644));
    let ca = std::fs::read_to_string(agent.tls("ca.crt"))?;
    assert_eq!(rpool_proto::pki::pin_of_cert_pem(&ca)?, pin);
    let cert = std::fs::read_to_string(agent.tls("agent.crt"))?;
    assert_eq!(
        rpool_proto::pki::identity_of_pem(&cert)?,
        rpool_proto::pki::Identity::Agent(host_id.clone())
    );

    // The token is used up, and says so; the event names host and token id.
    let (_, listed) = list_tokens(home, &list)?;
    let entry = token_entry(&listed, &id);
    assert_eq!(
        (entry["state"].as_str(), entry["uses_left"].as_u64()),
        (Some("used-up"), Some(0)),
        "{listed:#}"
    );
    assert_eq!(entry["description"], "rack 12");
    let mut admin = admin_client(list.split(',').next().unwrap_or_default()).await?;
    let events = admin
        .list_events(ListEventsRequest::default())
        .await?
        .into_inner()
        .events;
    let want = format!("host {host_id} enrolled with token {id}");
    assert!(
        events.iter().any(|e| e.message == want),
        "no {want:?} in {events:#?}"
    );

    // A second host with the same token is refused, and never registers.
    let second = Enrolling::start(
        &root.path().join("agent-2"),
        &controllers,
        "enr-2",
        &enroll_section(&token, &pin),
    )?;
    wait_log(&second, &format!("token {id} has no uses left")).await?;
    assert!(!second.tls("agent.crt").exists());
    let hosts = cluster.hosts().await?;
    assert_eq!(hosts.len(), 1, "only the first host registered: {hosts:#?}");

    // Secrets: never in a listing, a log, or an event.
    let secret = token.split('.').nth(1).unwrap_or_default().to_owned();
    let (raw, _) = list_tokens(home, &list)?;
    assert!(!raw.contains(&secret), "token list shows the secret: {raw}");
    for (name, log) in cluster
        .controllers
        .iter()
        .map(|c| (format!("controller {}", c.id), c.log()))
        .chain([
            ("agent 1".to_owned(), agent.log()),
            ("agent 2".to_owned(), second.log()),
        ])
    {
        assert!(
            !log.contains(&secret),
            "{name}'s log has the token secret:\n{log}"
        );
    }
    assert!(events.iter().all(|e| !e.message.contains(&secret)));
    Ok(())
}

#[tokio::test]
async fn revoked_expired_and_wrong_secret_tokens_are_refused_without_showing_them() -> Result<()> {
    let root = tempfile::tempdir()?;
    let home = root.path();
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let addr = controller.addr();
    let controllers = [addr.clone()];

    // Revoked: refused, named by id.
    let (revoked, pin, revoked_id) = create_token(home, &addr, &[])?;
    let out = ctl(
        home,
        &["--controller", &addr, "token", "revoke", &revoked_id, "--yes"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = Enrolling::start(
        &root.path().join("a"),
        &controllers,
        "enr-a",
        &enroll_section(&revoked, &pin),
    )?;
    wait_log(&a, &format!("token {revoked_id} was revoked")).await?;

    // Expired: a one-second token, used once it lists as expired.
    let (expired, _, expired_id) = create_token(home, &addr, &["--ttl", "1s"])?;
    eventually(Duration::from_secs(10), "the token to expire", || async {
        let list = list_tokens(home, &addr).map(|(_, l)| l).unwrap_or_default();
        let state = token_entry(&list, &expired_id)["state"].clone();
        ((state == "expired").then_some(()), state)
    })
    .await?;
    let b = Enrolling::start(
        &root.path().join("b"),
        &controllers,
        "enr-b",
        &enroll_section(&expired, &pin),
    )?;
    wait_log(&b, &format!("token {expired_id} has expired")).await?;

    // A real id with a wrong secret reads like an unknown id.
    let (good, _, good_id) = create_token(home, &addr, &["--uses", "1"])?;
    let wrong = format!("{good_id}.{}", "0".repeat(16));
    assert_ne!(wrong, good);
    let c = Enrolling::start(
        &root.path().join("c"),
        &controllers,
        "enr-c",
        &enroll_section(&wrong, &pin),
    )?;
    wait_log(
        &c,
        &format!("token {good_id} is not valid (unknown id or wrong secret)"),
    )
    .await?;

    // Nothing registered, nothing signed; the good token kept its use.
    assert!(controller.hosts().await?.is_empty());
    for agent in [&a, &b, &c] {
        assert!(!agent.tls("agent.crt").exists());
    }
    let (raw, list) = list_tokens(home, &addr)?;
    assert_eq!(token_entry(&list, &good_id)["uses_left"], 1, "{list:#}");
    assert_eq!(token_entry(&list, &revoked_id)["state"], "revoked", "{list:#}");
    // Denials are logged and counted by the controller.
    let log = controller.log();
    assert!(log.contains("enrollment denied"), "{log}");
    for token in [&revoked, &expired, &good, &wrong] {
        let secret = &token[7..];
        assert!(!raw.contains(secret), "token list shows a secret: {raw}");
        assert!(!log.contains(secret), "the controller log has a secret:\n{log}");
        for agent in [&a, &b, &c] {
            assert!(
                !agent.log().contains(secret),
                "an agent log has a secret:\n{}",
                agent.log()
            );
        }
    }
    // Bad input to the admin API names the field and range.
    let out = ctl(home, &["--controller", &addr, "token", "create", "--ttl", "31d"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1s..=30d"));
    let out = ctl(
        home,
        &["--controller", &addr, "token", "revoke", "nosuch", "--yes"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn with_a_wrong_pin_the_agent_never_sends_its_token_and_backs_off() -> Result<()> {
    let root = tempfile::tempdir()?;
    let home = root.path();
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let addr = controller.addr();
    let (token, _, id) = create_token(home, &addr, &["--uses", "1"])?;
    let other = rpool_proto::pki::Ca::generate("someone else")?.pin();
    let agent = Enrolling::start(
        &root.path().join("a"),
        std::slice::from_ref(&addr),
        "enr-a",
        &enroll_section(&token, &other),
    )?;
    wait_log(&agent, "pin mismatch").await?;
    let started = Instant::now();
    let attempts = |log: &str| log.matches("enrollment failed").count();
    let before = attempts(&agent.log());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = attempts(&agent.log()) - before;
    // max_backoff_ms = 500: at most ~7 tries in 3 s; a spinning agent makes hundreds.
    assert!(
        during <= 10,
        "{during} attempts in {:?}:\n{}",
        started.elapsed(),
        agent.log()
    );
    assert!(controller.hosts().await?.is_empty());
    assert!(!agent.tls("agent.crt").exists());
    let (_, list) = list_tokens(home, &addr)?;
    assert_eq!(
        token_entry(&list, &id)["uses_left"],
        1,
        "the token was never presented: {list:#}"
    );
    assert!(!agent.log().contains(&token[7..]));
    Ok(())
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_and_the_host_stays_ready_past_its_expiry() -> Result<()> {
    let root = tempfile::tempdir()?;
    let home = root.path();
    let dir = root.path().join("controller");
    let mut controller = Controller::configure(&dir, 1, free_port(), &[], Liveness::FAST, "")?;
    // Six-second agent certificates: renewed at four.
    let text = std::fs::read_to_string(&controller.config)?;
    let text = text.replacen("[tls]\n", "[tls]\nagent_cert_ttl = \"6s\"\n", 1);
    std::fs::write(&controller.config, text)?;
    controller.restart().await?;
    let addr = controller.addr();
    let (token, pin, _) = create_token(home, &addr, &["--uses", "1"])?;
    let agent = Enrolling::start(
        &root.path().join("a"),
        std::slice::from_ref(&addr),
        "enr-a",
        &enroll_section(&token, &pin),
    )?;
    let host_id = wait_ready(&addr, &agent).await?;
    let first = std::fs::read_to_string(agent.tls("agent.crt"))?;
    let first_expiry = rpool_proto::pki::not_after(&first)?;

    // Until two seconds past the first certificate's expiry (and at least
    // two renewals), the host never leaves ready.
    let mut seen = vec![first.clone()];
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while SystemTime::now() < first_expiry + Duration::from_secs(2) || seen.len() < 3 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} certificates in 30 s:\n{}",
            seen.len(),
            agent.log()
        );
        let state = host_state(&addr, &host_id).await;
        if let Some((s, _)) = state {
            states.push(s);
            assert_eq!(
                s,
                HostState::Ready as i32,
                "host left ready; agent log:\n{}",
                agent.log()
            );
        }
        let now = std::fs::read_to_string(agent.tls("agent.crt")).unwrap_or_default();
        if !now.is_empty() && seen.last() != Some(&now) {
            seen.push(now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(states.len() > 10, "too few observations: {states:?}");
    // The newest certificate is valid now and for this host.
    let newest = seen.last().cloned().unwrap_or_default();
    assert!(rpool_proto::pki::not_after(&newest)? > SystemTime::now());
    assert_eq!(
        rpool_proto::pki::identity_of_pem(&newest)?,
        rpool_proto::pki::Identity::Agent(host_id.clone())
    );
    assert!(agent.log().contains("certificate renewed"), "{}", agent.log());
    assert!(controller.log().contains("agent certificate renewed"));
    // Still connected with it.
    let (state, connected) = host_state(&addr, &host_id).await.context("host listed")?;
    assert_eq!((state, connected), (HostState::Ready as i32, true));
    Ok(())
}

/// A token does not let its holder take over a running host: enrolling the
/// host id of a connected agent is refused; once that agent is gone (a
/// reinstalled host), the same host id enrolls.
#[tokio::test]
async fn a_connected_host_cannot_be_enrolled_again_until_its_agent_is_gone() -> Result<()> {
    let root = tempfile::tempdir()?;
    let home = root.path();
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let addr = controller.addr();
    let controllers = [addr.clone()];
    let (token, pin, _) = create_token(home, &addr, &["--uses", "3"])?;

    let original = Enrolling::start(
        &root.path().join("original"),
        &controllers,
        "enr-orig",
        &enroll_section(&token, &pin),
    )?;
    let host_id = wait_ready(&addr, &original).await?;

    // An impostor with the same host id and a valid token.
    let impostor_dir = root.path().join("impostor");
    std::fs::create_dir_all(impostor_dir.join("state"))?;
    std::fs::write(impostor_dir.join("state/host_id"), format!("{host_id}\n"))?;
    let impostor = Enrolling::start(
        &impostor_dir,
        &controllers,
        "enr-imp",
        &enroll_section(&token, &pin),
    )?;
    wait_log(&impostor, "is connected with a valid certificate").await?;
    assert!(
        !impostor.tls("agent.crt").exists(),
        "the impostor got a certificate"
    );
    assert_eq!(
        host_state(&addr, &host_id).await,
        Some((HostState::Ready as i32, true)),
        "the original host was disturbed"
    );

    // The original agent goes away: the host id may enroll again.
    drop(original);
    eventually(
        Duration::from_secs(20),
        "the re-enrolled host's certificate",
        || async { (impostor.tls("agent.crt").exists().then_some(()), impostor.log()) },
    )
    .await?;
    wait_ready(&addr, &impostor).await?;
    Ok(())
}

#[tokio::test]
async fn a_retried_token_create_through_a_follower_makes_one_token() -> Result<()> {
    let root = tempfile::tempdir()?;
    let cluster = Cluster::start(root.path(), 3, Liveness::FAST, TEST_RAFT).await?;
    let leader = cluster.leader().await?;
    let follower = cluster
        .controllers
        .iter()
        .find(|c| c.id != leader)
        .expect("a follower")
        .addr();
    let mut admin = admin_client(&follower).await?;
    let request = rpool_proto::v1::CreateTokenRequest {
        ttl_seconds: 600,
        uses: 3,
        description: "retried".to_owned(),
        token: "retry1.0123456789abcdef".to_owned(),
    };
    let first = admin.create_token(request.clone()).await?.into_inner();
    // The same call again, as rpoolctl sends it after a leader change.
    let again = admin.create_token(request.clone()).await?.into_inner();
    assert_eq!(first.token, "retry1.0123456789abcdef");
    assert_eq!(
        (again.id.as_str(), again.expires_at_unix_ms),
        ("retry1", first.expires_at_unix_ms)
    );
    let listed = admin
        .list_tokens(rpool_proto::v1::ListTokensRequest {})
        .await?
        .into_inner()
        .tokens;
    assert_eq!(
        listed.iter().filter(|t| t.id == "retry1").count(),
        1,
        "{listed:?}"
    );
    // Another secret under the same id is refused and does not show it.
    let other = rpool_proto::v1::CreateTokenRequest {
        token: "retry1.zzzzzzzzzzzzzzzz".to_owned(),
        ..request
    };
    let refused = admin.create_token(other).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(!refused.message().contains("zzzz"), "{}", refused.message());
    Ok(())
}
