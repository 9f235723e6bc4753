//! The admin's local tools against a controller trio with agents and a
//! pool: `rpoolctl dashboard` loaded in a real headless browser (Debian's
//! chromium), and dynamic shell completion (the script `rpoolctl
//! completions bash` prints, run by a real bash, and the zsh/fish protocol).
//!
//! Without chromium the browser test skips with a loud message, unless
//! `RPOOL_REQUIRE_CHROMIUM` is set (CI sets it), when it fails.
//! `RPOOL_DASHBOARD_SCREENSHOT=PATH` copies the test's screenshot there
//! (how `ctl/assets/dashboard.png` is made).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rpool_tests::{Agent, Cluster, Liveness, Profile, TEST_RAFT, bin, ctl, eventually, json_of};

struct Fleet {
    root: tempfile::TempDir,
    cluster: Cluster,
    agents: Vec<Agent>,
    /// `pool create web -o json` after `--wait`.
    pool: serde_json::Value,
}

/// A trio, hosts in three zones, and pool `web` (one control plane, one worker).
async fn fleet_with_pool() -> anyhow::Result<Fleet> {
    let root = tempfile::tempdir()?;
    let cluster = Cluster::start(root.path(), 3, Liveness::FAST, TEST_RAFT).await?;
    let agents = cluster
        .start_agents(
            root.path(),
            vec![
                Profile::new("cp-a", "a", 4, "8GiB"),
                Profile::new("w-a1", "a", 8, "32GiB"),
                Profile::new("w-b1", "b", 8, "32GiB"),
                Profile::new("w-c1", "c", 8, "32GiB"),
            ],
        )
        .await?;
    let pool = json_of(&ctl(
        root.path(),
        &[
            "--controller",
            &cluster.addr_list(),
            "--timeout",
            "60s",
            "pool",
            "create",
            "web",
            "--cores",
            "8",
            "--memory",
            "32GiB",
            "--wait",
            "-o",
            "json",
        ],
    ))?;
    Ok(Fleet {
        root,
        cluster,
        agents,
        pool,
    })
}

/// A running `rpoolctl dashboard`, stopped on drop.
struct Dashboard {
    child: Child,
    url: String,
}

impl Dashboard {
    fn start(home: &Path, controllers: &str) -> anyhow::Result<Dashboard> {
        rpool_tests::write_ctl_tls(home)?;
        let mut child = Command::new(bin("rpoolctl"))
            .args([
                "--controller",
                controllers,
                "dashboard",
                "--listen",
                "127.0.0.1:0",
            ])
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("RPOOL_CONTROLLER")
            .env_remove("RPOOL_CTL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        // The first line names the bound address; read it off-thread, bounded.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut dashboard = Dashboard {
            child,
            url: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow::anyhow!("rpoolctl dashboard printed no address within 10 s"))?;
        dashboard.url = line
            .trim()
            .strip_prefix("Dashboard: ")
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?
            .to_string();
        Ok(dashboard)
    }

    fn port(&self) -> u16 {
        let rest = self
            .url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap_or_default();
        rest.parse().expect("port in url")
    }

    /// One raw HTTP/1.1 exchange with the dashboard: (status line, whole answer).
    fn raw(&self, request: &str) -> anyhow::Result<(String, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        let status = answer.lines().next().unwrap_or_default().to_string();
        Ok((status, answer))
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chromium binary, or `None` (after a loud message) when it is
/// missing and not required.
fn chromium() -> Option<PathBuf> {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(PathBuf::from("chromium"));
    }
    if std::env::var_os("RPOOL_REQUIRE_CHROMIUM").is_some() {
        panic!("RPOOL_REQUIRE_CHROMIUM is set but `chromium` is not installed (apt-get install chromium)");
    }
    eprintln!(
        "\n!!!!!!!!\n!!! SKIPPED: the dashboard browser test needs Debian's `chromium` \
         (apt-get install -y chromium); set RPOOL_REQUIRE_CHROMIUM=1 to make this a failure\n!!!!!!!!\n"
    );
    None
}

/// Runs headless chromium on `url` with `args`, bounded; returns stdout.
async fn chromium_run(profile: &Path, url: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new("chromium");
    command
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--window-size=1400,1100"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .map_err(|_| anyhow::anyhow!("chromium did not finish within 60 s"))??;
    anyhow::ensure!(out.status.success(), "chromium failed: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn the_dashboard_shows_the_fleet_in_a_real_browser_and_a_killed_host_appears_as_an_event()
-> anyhow::Result<()> {
    if chromium().is_none() {
        return Ok(());
    }
    let mut fleet = fleet_with_pool().await?;
    let dashboard = Dashboard::start(fleet.root.path(), &fleet.cluster.addr_list())?;
    let profile = fleet.root.path().join("chromium-profile");

    // Guards: a foreign Host (DNS rebinding) and anything but GET are refused.
    let (status, _) =
        dashboard.raw("GET /api/state HTTP/1.1\r\nHost: rebind.example:80\r\nConnection: close\r\n\r\n")?;
    assert!(status.contains(" 403 "), "{status}");
    let (status, _) = dashboard.raw(&format!(
        "POST /api/state HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        dashboard.port()
    ))?;
    assert!(status.contains(" 405 "), "{status}");
    let (status, page) = dashboard.raw(&format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        dashboard.port()
    ))?;
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "the page loads something from elsewhere"
    );

    // The page as the browser renders it: hosts by zone, the pool, the trio.
    let started = Instant::now();
    let dom = eventually(
        Duration::from_secs(60),
        "the page shows hosts, pool and controllers",
        || async {
            let dom = chromium_run(&profile, &dashboard.url, &["--dump-dom"])
                .await
                .unwrap_or_else(|e| e.to_string());
            let complete = ["cp-a", "w-a1", "w-b1", "w-c1"]
                .iter()
                .all(|h| dom.contains(&format!("data-host=\"{h}\"")))
                && dom.contains("data-pool=\"web\"")
                && (1..=3).all(|id| dom.contains(&format!("data-controller=\"{id}\"")))
                && dom.contains("data-loaded=\"yes\"");
            (complete.then(|| dom.clone()), dom)
        },
    )
    .await?;
    eprintln!(
        "dashboard rendered in chromium {:?} after start",
        started.elapsed()
    );
    for zone in ["a", "b", "c"] {
        assert!(
            dom.contains(&format!("data-zone=\"{zone}\"")),
            "zone {zone} missing"
        );
    }
    assert!(dom.contains(">leader<"), "no leader shown");
    assert!(
        dom.contains(">pool_created<"),
        "the pool's creation event is not listed"
    );
    for member in fleet.pool["members"].as_array().expect("members") {
        let name = member["hostname"].as_str().unwrap_or_default();
        assert!(
            dom.contains(&format!("data-member=\"{name}\"")),
            "member {name} missing"
        );
    }

    // Kill the worker's host: the replacement shows up as an event.
    let dead = fleet.pool["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["role"] == "worker")
        .and_then(|m| m["hostname"].as_str())
        .expect("a worker")
        .to_string();
    let agent = fleet
        .agents
        .iter_mut()
        .find(|a| a.profile.hostname == dead)
        .expect("the worker's agent");
    std::fs::write(agent.dir.join("node").join("kubesim-down"), b"")?;
    agent.kill();
    let killed = Instant::now();
    let dom = eventually(
        Duration::from_secs(60),
        "the host_replacing event in the page",
        || async {
            let dom = chromium_run(&profile, &dashboard.url, &["--dump-dom"])
                .await
                .unwrap_or_else(|e| e.to_string());
            let seen = dom.contains(">host_replacing<") && dom.contains(&format!("host {dead} down"));
            (seen.then(|| dom.clone()), dom.len())
        },
    )
    .await?;
    eprintln!(
        "host_replacing event in the page {:?} after the kill",
        killed.elapsed()
    );
    assert!(dom.contains(">down<"), "the dead host is not shown down");

    // A screenshot of that state (for the README when asked).
    let png = fleet.root.path().join("dashboard.png");
    let shot = format!("--screenshot={}", png.display());
    chromium_run(&profile, &dashboard.url, &[&shot]).await?;
    let bytes = std::fs::read(&png)?;
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "screenshot {} bytes",
        bytes.len()
    );
    if let Some(dest) = std::env::var_os("RPOOL_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&png, &dest)?;
    }
    Ok(())
}

#[test]
fn the_dashboard_refuses_a_non_loopback_listen_address_naming_the_flag() {
    let home = tempfile::tempdir().unwrap();
    let out = ctl(home.path(), &["dashboard", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-non-loopback"), "{err}");
}

/// Runs `words` (the last one being completed) through the bash script
/// `rpoolctl completions bash` prints, in a real bash; returns COMPREPLY.
fn bash_complete(home: &Path, env: &[(&str, &str)], words: &[&str]) -> (Vec<String>, Duration) {
    let script = ctl(home, &["completions", "bash"]);
    assert!(script.status.success());
    let script_path = home.join("rpoolctl.bash");
    std::fs::write(&script_path, &script.stdout).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source {script}\nCOMP_WORDS=({words})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\nCOMP_TYPE=9\n\
         _clap_complete_rpoolctl rpoolctl \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" 2>/dev/null\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = script_path.display(),
        words = quoted.join(" ")
    );
    let path = format!(
        "{}:{}",
        bin("rpoolctl").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let mut command = Command::new("bash");
    command
        .args(["--norc", "--noprofile", "-c", &program])
        .env("HOME", home)
        .env("PATH", path)
        .env_remove("RPOOL_CONTROLLER")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RPOOL_CTL_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An empty word is also offered the flags; the values are what we check.
    let reply = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('-'))
        .map(|l| l.trim_end().to_string())
        .collect();
    (reply, took)
}

/// `RPOOL_COMPLETE=SHELL rpoolctl -- WORDS…` (what the zsh and fish scripts run).
fn protocol_complete(home: &Path, shell: &str, env: &[(&str, &str)], words: &[&str]) -> String {
    rpool_tests::write_ctl_tls(home).unwrap();
    let index = (words.len() - 1).to_string();
    let out = Command::new(bin("rpoolctl"))
        .arg("--")
        .args(words)
        .env("RPOOL_COMPLETE", shell)
        .env("_CLAP_COMPLETE_INDEX", &index)
        .env("HOME", home)
        .env_remove("RPOOL_CONTROLLER")
        .env_remove("XDG_CONFIG_HOME")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn completion_offers_pool_host_and_controller_names_and_nothing_quickly_without_controllers()
-> anyhow::Result<()> {
    let fleet = fleet_with_pool().await?;
    let home = fleet.root.path();
    let addrs = fleet.cluster.addr_list();
    let env = [("RPOOL_CONTROLLER", addrs.as_str())];

    // Subcommands come from rpoolctl itself.
    let (reply, _) = bash_complete(home, &env, &["rpoolctl", "pool", "sh"]);
    assert_eq!(reply, ["show"]);
    // Pool names, hostnames and ids, controller ids from the trio.
    let (reply, took) = bash_complete(home, &env, &["rpoolctl", "pool", "show", ""]);
    assert_eq!(reply, ["web"], "took {took:?}");
    eprintln!("bash: pool names completed in {took:?}");
    let (reply, _) = bash_complete(home, &env, &["rpoolctl", "events", "--pool", "w"]);
    assert_eq!(reply, ["web"]);
    let (reply, _) = bash_complete(home, &env, &["rpoolctl", "host", "show", "w-"]);
    assert_eq!(reply, ["w-a1", "w-b1", "w-c1"]);
    let hosts = fleet.cluster.hosts().await?;
    let id = &hosts[0].host_id;
    let (reply, _) = bash_complete(home, &env, &["rpoolctl", "host", "cordon", &id[..6]]);
    assert!(reply.contains(id), "{reply:?} lacks {id}");
    let (reply, _) = bash_complete(home, &env, &["rpoolctl", "controller", "transfer-leader", ""]);
    assert_eq!(reply, ["1", "2", "3"]);
    // --controller typed on the line is used (no RPOOL_CONTROLLER).
    let (reply, _) = bash_complete(
        home,
        &[],
        &["rpoolctl", "--controller", &addrs, "pool", "destroy", ""],
    );
    assert_eq!(reply, ["web"]);

    // zsh and fish speak the same protocol; fish gets the help after a tab.
    let zsh = protocol_complete(home, "zsh", &env, &["rpoolctl", "pool", "resize", "w"]);
    assert!(zsh.contains("web"), "{zsh:?}");
    let fish = protocol_complete(home, "fish", &env, &["rpoolctl", "host", "show", "cp"]);
    assert_eq!(
        fish.lines().next().unwrap_or_default().split('\t').next(),
        Some("cp-a"),
        "{fish:?}"
    );

    // No controller answering: nothing offered, nothing printed, quickly.
    let nobody = format!("127.0.0.1:{}", rpool_tests::free_port());
    let env = [("RPOOL_CONTROLLER", nobody.as_str())];
    let (reply, took) = bash_complete(home, &env, &["rpoolctl", "pool", "show", ""]);
    assert!(reply.is_empty(), "{reply:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let fish = protocol_complete(home, "fish", &env, &["rpoolctl", "host", "show", "w"]);
    assert!(fish.is_empty(), "{fish:?}");
    // A dropped packet instead of a refusal is bounded by the budget too.
    let env = [("RPOOL_CONTROLLER", "192.0.2.1:7443")];
    let started = Instant::now();
    let fish = protocol_complete(home, "fish", &env, &["rpoolctl", "pool", "show", "w"]);
    assert!(fish.is_empty(), "{fish:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(rpoolctl::complete::BUDGET_MS + 1500),
        "took {took:?}"
    );
    Ok(())
}
