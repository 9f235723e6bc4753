//! rpoolctl's contract with scripts: exit codes and one-line errors.

use rpool_tests::{Controller, Liveness, ctl, ctl_env, free_port};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unreachable_controller_is_one_line_naming_the_address_with_exit_69() {
    let home = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let out = ctl(home.path(), &["--controller", &addr, "host", "list"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line:\n{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(
        err.contains("RPOOL_CONTROLLER") || err.contains("--controller"),
        "no hint what to check: {err}"
    );

    // The same address through the environment and through ctl.toml.
    let out = ctl_env(home.path(), &["status"], &[("RPOOL_CONTROLLER", &addr)]);
    assert_eq!(out.status.code(), Some(69));
    assert!(stderr(&out).contains(&addr), "{}", stderr(&out));
    let cfg_dir = home.path().join(".config/rpool");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(cfg_dir.join("ctl.toml"), format!("controllers = [\"{addr}\"]\n")).unwrap();
    let out = ctl(home.path(), &["status"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(stderr(&out).contains(&addr), "{}", stderr(&out));
}

#[test]
fn bad_flags_exit_64_and_name_what_is_accepted() {
    let home = tempfile::tempdir().unwrap();
    let out = ctl(home.path(), &["host", "list", "--state", "sleepy"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ready"),
        "accepted values not listed: {}",
        stderr(&out)
    );
    let out = ctl(home.path(), &["host", "frobnicate"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let out = ctl(home.path(), &["host", "list", "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}

#[tokio::test]
async fn unknown_host_exits_3_and_status_reports_the_leader() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let out = ctl(
        root.path(),
        &["--controller", &controller.addr(), "host", "show", "deadbeef"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("deadbeef"), "{}", stderr(&out));

    let status = rpool_tests::json_of(&ctl(
        root.path(),
        &["--controller", &controller.addr(), "status", "-o", "json"],
    ))?;
    assert_eq!(status["controller_id"], 1);
    assert_eq!(status["leader_id"], 1);
    assert_eq!(status["hosts_total"], 0);
    assert_eq!(status["down_after_ms"], Liveness::FAST.down_after_ms);
    Ok(())
}

#[test]
fn shell_completions_are_generated() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = ctl(home.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        // The script calls back into rpoolctl, which knows the subcommands.
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("RPOOL_COMPLETE"),
            "{shell} completions do not call back into rpoolctl"
        );
    }
}
