//! `rpoolctl sandbox up` is the README's "run it" command: it must work from
//! nothing and `down` must leave nothing running.

use std::time::Duration;

use rpool_tests::{binaries, ctl, eventually, free_port_range, json_of};

fn alive(pid: i64) -> bool {
    // A zombie still has /proc/PID; count it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn sandbox_up_lists_its_hosts_and_down_stops_every_process() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let dir = home.path().join("sandbox");
    // Three controllers on port, port+1, port+2.
    let port = free_port_range(3).to_string();
    let bin_dir = binaries().to_str().unwrap().to_string();
    let dir_s = dir.to_str().unwrap();
    // The sandbox detaches its processes (setsid), so they outlive a panic
    // here unless `down` runs: make sure it does.
    struct Down<'a>(&'a std::path::Path, &'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = ctl(self.0, &["sandbox", "down", "--dir", self.1]);
        }
    }
    let _down = Down(home.path(), dir_s);
    let up = ctl(
        home.path(),
        &[
            "sandbox",
            "up",
            "--agents",
            "6",
            "--dir",
            dir_s,
            "--port",
            &port,
            "--bin-dir",
            &bin_dir,
        ],
    );
    assert!(
        up.status.success(),
        "sandbox up failed: {}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let said = String::from_utf8_lossy(&up.stdout);
    assert!(
        said.contains("rpoolctl host list"),
        "no hint what to try next:\n{said}"
    );

    // Plain `rpoolctl host list` works next: sandbox wrote the ctl config.
    let hosts = json_of(&ctl(home.path(), &["host", "list", "-o", "json"]))?;
    let hosts = hosts.as_array().unwrap().clone();
    assert_eq!(hosts.len(), 6, "{hosts:#?}");
    let zones: std::collections::BTreeSet<_> = hosts
        .iter()
        .map(|h| h["zone"].as_str().unwrap().to_string())
        .collect();
    assert!(
        zones.len() >= 3,
        "profiles not spread over zones a/b/c: {zones:?}"
    );
    assert!(
        hosts
            .iter()
            .all(|h| h["state"] == "ready" && h["simulated"] == true)
    );
    let cores: std::collections::BTreeSet<_> = hosts.iter().map(|h| h["cores"].as_u64().unwrap()).collect();
    assert!(cores.len() >= 2, "profiles are not mixed: {cores:?}");

    let status = json_of(&ctl(
        home.path(),
        &["sandbox", "status", "--dir", dir_s, "-o", "json"],
    ))?;
    assert_eq!(status["running"], true, "{status:#}");
    let processes = status["processes"].as_array().expect("processes").clone();
    let pids: Vec<i64> = processes
        .iter()
        .map(|p| p["pid"].as_i64().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 9, "three controllers and six agents: {status:#}");
    assert!(processes.iter().all(|p| p["alive"] == true), "{status:#}");
    assert!(pids.iter().all(|p| alive(*p)), "{status:#}");

    // The demo runs create → show → grow → heal → autoscale → shrink →
    // destroy on kubesim; --dir lets it kill, revive and load hosts.
    let demo = ctl(home.path(), &["demo", "--yes", "--dir", dir_s]);
    assert!(
        demo.status.success(),
        "demo failed:\n{}\n{}",
        String::from_utf8_lossy(&demo.stdout),
        String::from_utf8_lossy(&demo.stderr)
    );
    let said = String::from_utf8_lossy(&demo.stdout);
    for step in [
        "[1/7]",
        "[3/7]",
        "[4/7]",
        "replaced by",
        "is back in the fleet",
        "[5/7]",
        "grew in",
        "[7/7]",
        "pool_destroyed",
    ] {
        assert!(said.contains(step), "demo output lacks {step}:\n{said}");
    }
    let hosts = json_of(&ctl(home.path(), &["host", "list", "-o", "json"]))?;
    assert!(
        hosts.as_array().unwrap().iter().all(|h| h["pool"] == ""),
        "{hosts:#}"
    );

    // A second `up` refuses rather than starting a second fleet.
    let again = ctl(
        home.path(),
        &[
            "sandbox",
            "up",
            "--dir",
            dir_s,
            "--port",
            &port,
            "--bin-dir",
            &bin_dir,
        ],
    );
    assert!(!again.status.success(), "second sandbox up succeeded");

    let down = ctl(home.path(), &["sandbox", "down", "--dir", dir_s]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    eventually(Duration::from_secs(10), "every sandbox process gone", || async {
        let left: Vec<i64> = pids.iter().copied().filter(|p| alive(*p)).collect();
        (left.is_empty().then_some(()), left)
    })
    .await?;
    let after = ctl(
        home.path(),
        &["--controller", &format!("127.0.0.1:{port}"), "host", "list"],
    );
    assert_eq!(
        after.status.code(),
        Some(69),
        "controller still answering after down"
    );
    Ok(())
}
