//! Config files: the shipped examples are valid, and a bad file stops the
//! daemon with exit code 64 and a message naming the file and the field.

use std::path::Path;
use std::process::{Command, Output};

use rpool_tests::bin;

fn packaging(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(path)
}

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(bin(binary)).args(args).output().expect("spawn")
}

fn assert_usage_error(output: &Output, must_name: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "want exit 64; stderr:\n{stderr}");
    for needle in must_name {
        assert!(
            stderr.contains(needle),
            "stderr does not name {needle:?}:\n{stderr}"
        );
    }
}

/// The shipped controller.toml with its `[tls]` paths moved to `pki`,
/// where a CA, controller 1's certificate and key and the CA key are
/// written (the example's id is 1).
fn shipped_controller_config_with_pki(dir: &Path) -> std::path::PathBuf {
    let pki = dir.join("pki");
    rpool_tests::write_tls(
        &pki,
        "controller",
        &rpool_proto::pki::Identity::Controller(1),
        &[],
    )
    .unwrap();
    rpool_proto::pki::write_private(&pki.join("ca.key"), rpool_tests::test_ca().key_pem().as_bytes())
        .unwrap();
    let text = std::fs::read_to_string(packaging("etc/rpool/controller.toml"))
        .unwrap()
        .replace("/etc/rpool/pki/", &format!("{}/", pki.display()))
        .replace(
            "/run/credentials/rpool-controller.service/",
            &format!("{}/", pki.display()),
        );
    let path = dir.join("controller.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn shipped_example_configs_are_valid() {
    let tls_dir = tempfile::tempdir().unwrap();
    let controller = shipped_controller_config_with_pki(tls_dir.path());
    let out = run(
        "rpool-controller",
        &["--check-config", "--config", controller.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent = packaging("etc/rpool/agent.toml");
    let out = run(
        "rpool-agent",
        &["--check-config", "--config", agent.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The simulated-hardware example, through an agent config that uses it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "controllers = [\"127.0.0.1:7443\"]\nstate_dir = \"{}\"\n[simulate]\nfile = \"{}\"\n",
            dir.path().join("state").display(),
            packaging("etc/rpool/simulated-host.toml").display()
        ),
    )
    .unwrap();
    let out = run(
        "rpool-agent",
        &["--check-config", "--config", cfg.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The controller runs on jemalloc with the options baked into it
/// (`controller/src/main.rs`): jemalloc reports them at exit when asked
/// through its environment variable, and warns on stderr about any it does
/// not understand.
#[test]
fn the_controller_runs_on_jemalloc_with_its_options_understood() {
    let tls_dir = tempfile::tempdir().unwrap();
    let controller = shipped_controller_config_with_pki(tls_dir.path());
    let out = Command::new(bin("rpool-controller"))
        .args(["--check-config", "--config", controller.to_str().unwrap()])
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{stderr}");
    assert!(!all.contains("<jemalloc>"), "jemalloc refused an option:\n{all}");
    for option in [
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
    ] {
        assert!(
            all.contains(option),
            "jemalloc's statistics lack {option:?}:\n{all}"
        );
    }
}

#[test]
fn controller_with_an_out_of_range_setting_exits_64_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[liveness]\ndown_after_ms = 100\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = run("rpool-controller", &["--config", cfg.to_str().unwrap()]);
    assert_usage_error(&out, &["controller.toml", "liveness.down_after_ms", "100"]);
    assert!(
        !dir.path().join("data").exists(),
        "a rejected config created the data dir"
    );
}

#[test]
fn controller_check_config_names_a_missing_or_foreign_tls_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = shipped_controller_config_with_pki(dir.path());
    let key = dir.path().join("pki/controller.key");
    std::fs::remove_file(&key).unwrap();
    let out = run(
        "rpool-controller",
        &["--check-config", "--config", cfg.to_str().unwrap()],
    );
    assert_usage_error(&out, &["controller.toml", "[tls]", key.to_str().unwrap()]);
    // A certificate for another controller id is refused too.
    rpool_tests::write_tls(
        &dir.path().join("pki"),
        "controller",
        &rpool_proto::pki::Identity::Controller(2),
        &[],
    )
    .unwrap();
    let out = run(
        "rpool-controller",
        &["--check-config", "--config", cfg.to_str().unwrap()],
    );
    assert_usage_error(&out, &["controller.crt", "controller 2", "expected controller 1"]);
}

#[test]
fn controller_config_with_an_unknown_key_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("controller.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nlisten_adress = \"oops\"\n").unwrap();
    let out = run("rpool-controller", &["--config", cfg.to_str().unwrap()]);
    assert_usage_error(&out, &["controller.toml", "listen_adress"]);
}

#[test]
fn agent_with_a_bad_zone_or_missing_controllers_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "controllers = [\"127.0.0.1:7443\"]\nzone = \"Not A Label\"\n",
    )
    .unwrap();
    let out = run("rpool-agent", &["--config", cfg.to_str().unwrap()]);
    assert_usage_error(&out, &["agent.toml", "zone"]);

    std::fs::write(&cfg, "controllers = []\n").unwrap();
    let out = run("rpool-agent", &["--config", cfg.to_str().unwrap()]);
    assert_usage_error(&out, &["agent.toml", "controllers"]);
}

#[test]
fn agent_with_a_bad_simulated_hardware_file_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let hw = dir.path().join("hardware.toml");
    std::fs::write(&hw, "logical_cores = 1000000000\nmemory = \"64GiB\"\n").unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "controllers = [\"127.0.0.1:7443\"]\nstate_dir = \"{}\"\n[simulate]\nfile = \"{}\"\n",
            dir.path().join("state").display(),
            hw.display()
        ),
    )
    .unwrap();
    let out = run("rpool-agent", &["--config", cfg.to_str().unwrap()]);
    assert_usage_error(&out, &["hardware.toml", "logical_cores"]);
}

#[test]
fn explicitly_named_config_that_does_not_exist_exits_64() {
    let out = run(
        "rpool-controller",
        &["--config", "/nonexistent/rpool/controller.toml"],
    );
    assert_usage_error(&out, &["/nonexistent/rpool/controller.toml"]);
    let out = run("rpool-agent", &["--config", "/nonexistent/rpool/agent.toml"]);
    assert_usage_error(&out, &["/nonexistent/rpool/agent.toml"]);
}

#[test]
fn every_binary_has_version_and_help() {
    for binary in ["rpool-controller", "rpool-agent", "rpoolctl"] {
        let out = run(binary, &["--version"]);
        assert!(out.status.success(), "{binary} --version");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(rpool_proto::VERSION),
            "{binary} --version"
        );
        let out = run(binary, &["--help"]);
        assert!(out.status.success(), "{binary} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--config"),
            "{binary} --help lacks --config"
        );
    }
}

/// Replaces the key at `key` with the key of another certificate from the
/// test CA (mode 0600): it no longer matches the certificate next to it.
fn write_foreign_key(key: &Path) {
    let other = rpool_tests::test_ca()
        .issue(
            &rpool_proto::pki::Identity::Admin("someone-else".into()),
            &[],
            rpool_tests::TEST_CERT_TTL,
        )
        .unwrap();
    rpool_proto::pki::write_private(key, other.key_pem.as_bytes()).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn controller_with_a_key_that_does_not_match_its_certificate_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = shipped_controller_config_with_pki(dir.path());
    let key = dir.path().join("pki/controller.key");
    write_foreign_key(&key);
    let must_name = [
        "controller.toml",
        "[tls]",
        key.to_str().unwrap(),
        "private key does not match the certificate",
    ];
    let out = run(
        "rpool-controller",
        &["--check-config", "--config", cfg.to_str().unwrap()],
    );
    assert_usage_error(&out, &must_name);
    // Starting for real stops at the same check, before binding or writing.
    let out = run("rpool-controller", &["--config", cfg.to_str().unwrap()]);
    assert_usage_error(&out, &must_name);
}

#[test]
fn controller_check_config_refuses_a_world_readable_key_and_an_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = shipped_controller_config_with_pki(dir.path());
    let pki = dir.path().join("pki");
    let check = || {
        run(
            "rpool-controller",
            &["--check-config", "--config", cfg.to_str().unwrap()],
        )
    };
    for key in ["controller.key", "ca.key"] {
        let key = pki.join(key);
        chmod(&key, 0o644);
        assert_usage_error(
            &check(),
            &[key.to_str().unwrap(), "readable by every user", "mode 0644"],
        );
        chmod(&key, 0o600);
    }
    assert!(check().status.success());

    // A certificate whose lifetime ends now: refused once it has passed
    // (second resolution), naming the file and the date.
    let issued = rpool_tests::test_ca()
        .issue(
            &rpool_proto::pki::Identity::Controller(1),
            &[],
            std::time::Duration::ZERO,
        )
        .unwrap();
    let cert = pki.join("controller.crt");
    rpool_proto::pki::write_public(&cert, issued.cert_pem.as_bytes()).unwrap();
    rpool_proto::pki::write_private(&pki.join("controller.key"), issued.key_pem.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let out = check();
        if !out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
    };
    assert_usage_error(&out, &[cert.to_str().unwrap(), "certificate expired on"]);
}

#[test]
fn agent_check_config_names_a_mismatched_key() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let files = rpool_tests::write_tls(
        &tls,
        "agent",
        &rpool_proto::pki::Identity::Agent("h1".into()),
        &[],
    )
    .unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "controllers = [\"127.0.0.1:7443\"]\nstate_dir = \"{}\"\n[tls]\ndir = \"{}\"\n",
            dir.path().join("state").display(),
            tls.display()
        ),
    )
    .unwrap();
    let check = || {
        run(
            "rpool-agent",
            &["--check-config", "--config", cfg.to_str().unwrap()],
        )
    };
    assert!(
        check().status.success(),
        "{}",
        String::from_utf8_lossy(&check().stderr)
    );
    write_foreign_key(&files.key);
    assert_usage_error(
        &check(),
        &[
            "agent.toml",
            files.key.to_str().unwrap(),
            "private key does not match the certificate",
        ],
    );
}

#[test]
fn rpoolctl_with_a_mismatched_key_says_so_naming_the_file_not_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let files = rpool_tests::write_tls(
        &dir.path().join("pki"),
        "admin",
        &rpool_proto::pki::Identity::Admin("root".into()),
        &[],
    )
    .unwrap();
    let tls_flags = |args: &[&str]| {
        let mut all = vec![
            "--tls-ca",
            files.ca.to_str().unwrap(),
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Command::new(bin("rpoolctl"))
            .args(&all)
            .env_remove("RPOOL_CTL_CONFIG")
            .env("HOME", dir.path())
            .output()
            .expect("spawn")
    };
    let ok = tls_flags(&["--check-config"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("config ok"));

    write_foreign_key(&files.key);
    let must_name = [
        files.key.to_str().unwrap(),
        "private key does not match the certificate",
    ];
    assert_usage_error(&tls_flags(&["--check-config"]), &must_name);
    // A real command against an address where nothing listens: the key is
    // the problem (64), not the controller (69).
    let port = rpool_tests::free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    assert_usage_error(&tls_flags(&["--controller", &addr, "status"]), &must_name);

    // A matching key readable by every user is refused by --check-config.
    let files2 = rpool_tests::write_tls(
        &dir.path().join("pki"),
        "admin",
        &rpool_proto::pki::Identity::Admin("root".into()),
        &[],
    )
    .unwrap();
    chmod(&files2.key, 0o644);
    assert_usage_error(
        &tls_flags(&["--check-config"]),
        &[files2.key.to_str().unwrap(), "readable by every user"],
    );
}
