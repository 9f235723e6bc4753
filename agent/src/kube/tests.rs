//! Unit tests of the driver's parsers, redaction, request checks, join-file
//! staging and process runner (the tools stand in as shell scripts; the
//! kubesim crate tests the driver against the simulator).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::checks::{check_cidr, check_endpoint, check_join_fields, check_node_name, check_version};
use super::process::strings;
use super::*;

const TOKEN: &str = "9vr73a.a8uxyaju799qwdjv";
const HASH: &str = "sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866";
const KEY: &str = "f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07";

/// The tail of `kubeadm init --upload-certs` output as shown in the
/// kubeadm HA documentation (one line per join command).
const DOCS_INIT: &str = "...
[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace
[upload-certs] Using certificate key:
f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07
[mark-control-plane] Marking the node cp-1 as control-plane
[bootstrap-token] Using token: 9vr73a.a8uxyaju799qwdjv

Your Kubernetes control-plane has initialized successfully!

You can now join any number of the control-plane node running the following command on each as root:

  kubeadm join 192.168.0.200:6443 --token 9vr73a.a8uxyaju799qwdjv --discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866 --control-plane --certificate-key f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07

Please note that the certificate-key gives access to cluster sensitive data, keep it secret!
As a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use kubeadm init phase upload-certs to reload certs afterward.

Then you can join any number of worker nodes by running the following on each as root:

  kubeadm join 192.168.0.200:6443 --token 9vr73a.a8uxyaju799qwdjv --discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866
";

/// The v1.32 format (kubeadm and kubesim): backslash continuations,
/// tab indents, a trailing space on the last line.
const V132_INIT: &str =
    "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace
[upload-certs] Using certificate key:
f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07
[bootstrap-token] Using token: 9vr73a.a8uxyaju799qwdjv

Your Kubernetes control-plane has initialized successfully!

You can now join any number of control-plane nodes running the following command on each as root:

  kubeadm join cp.example:6443 --token 9vr73a.a8uxyaju799qwdjv \\
\t--discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866 \\
\t--control-plane --certificate-key f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07

Please note that the certificate-key gives access to cluster sensitive data, keep it secret!

Then you can join any number of worker nodes by running the following on each as root:

kubeadm join cp.example:6443 --token 9vr73a.a8uxyaju799qwdjv \\
\t--discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866 
";

/// Join secrets for `endpoint` with the test token, hash and key.
fn join_info(endpoint: &str) -> JoinInfo {
    JoinInfo {
        endpoint: endpoint.into(),
        token: TOKEN.into(),
        ca_cert_hash: HASH.into(),
        certificate_key: Some(KEY.into()),
        token_expires_unix_ms: 1,
        certificate_key_expires_unix_ms: 2,
    }
}

#[test]
fn init_output_from_the_docs_gives_endpoint_token_hash_and_key() {
    let s = parse_init_output(DOCS_INIT).unwrap();
    assert_eq!(s.endpoint, "192.168.0.200:6443");
    assert_eq!(s.token, TOKEN);
    assert_eq!(s.ca_cert_hash, HASH);
    assert_eq!(s.certificate_key.as_deref(), Some(KEY));
}

#[test]
fn init_output_with_continuation_lines_parses_the_same() {
    let s = parse_init_output(V132_INIT).unwrap();
    assert_eq!(s.endpoint, "cp.example:6443");
    assert_eq!((s.token.as_str(), s.ca_cert_hash.as_str()), (TOKEN, HASH));
    assert_eq!(s.certificate_key.as_deref(), Some(KEY));
    let cmds = parse_join_commands(V132_INIT);
    assert_eq!(cmds.len(), 2);
    assert!(cmds[0].control_plane && !cmds[1].control_plane);
    assert_eq!(cmds[1].certificate_key, None);
}

#[test]
fn init_without_upload_certs_has_no_certificate_key() {
    let text = "kubeadm join 10.0.0.1:6443 --token 9vr73a.a8uxyaju799qwdjv \\\n\t--discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866 \n";
    let s = parse_init_output(text).unwrap();
    assert_eq!(s.certificate_key, None);
    assert_eq!(s.endpoint, "10.0.0.1:6443");
}

#[test]
fn withheld_or_missing_secrets_are_errors_without_secrets() {
    let withheld = V132_INIT.replace(TOKEN, "<value withheld>");
    assert!(parse_init_output(&withheld).unwrap_err().contains("withheld"));
    let err = parse_init_output("[init] Using Kubernetes version: v1.32.0\n").unwrap_err();
    assert!(err.contains("no `kubeadm join`"), "{err}");
    let bad = DOCS_INIT.replace("sha256:7c2e", "sha256:zz2e");
    let err = parse_init_output(&bad).unwrap_err();
    assert!(err.contains("CA cert hash"), "{err}");
    let bad = DOCS_INIT.replace("a8uxyaju799qwdjv", "a8uxyaju799qwdj");
    let err = parse_init_output(&bad).unwrap_err();
    assert!(err.contains("not a bootstrap token"), "{err}");
}

#[test]
fn token_create_print_join_command_parses() {
    // `kubeadm token create --print-join-command`: one line, trailing space.
    let text =
        format!("kubeadm join 192.168.0.200:6443 --token {TOKEN} --discovery-token-ca-cert-hash {HASH} \n");
    let cmds = parse_join_commands(&text);
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].endpoint, "192.168.0.200:6443");
    assert_eq!(cmds[0].token, TOKEN);
    assert_eq!(cmds[0].ca_cert_hash, HASH);
    check_join_fields(&cmds[0]).unwrap();
    // The --flag=value form too.
    let text = format!("kubeadm join [fd00::1]:6443 --token={TOKEN} --discovery-token-ca-cert-hash={HASH}");
    let cmds = parse_join_commands(&text);
    assert_eq!(cmds[0].endpoint, "[fd00::1]:6443");
    assert_eq!(cmds[0].token, TOKEN);
}

#[test]
fn upload_certs_key_is_read_from_the_next_line() {
    let text = format!(
        "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace\n[upload-certs] Using certificate key:\n{KEY}\n"
    );
    assert_eq!(parse_upload_certs(&text).as_deref(), Some(KEY));
    assert_eq!(
        parse_upload_certs("[upload-certs] Skipping phase. Please see --upload-certs\n"),
        None
    );
    assert_eq!(
        parse_upload_certs("[upload-certs] Using certificate key:\nnot-a-key\n"),
        None
    );
}

#[test]
fn kubeconfig_server_is_host_and_port() {
    let text = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://cp.example:6443\n  name: kubernetes\n";
    assert_eq!(kubeconfig_server(text).as_deref(), Some("cp.example:6443"));
    assert_eq!(kubeconfig_server("kind: Config\n"), None);
}

#[test]
fn member_list_simple_output_parses() {
    let text = "8e9e05c52164694d, started, cp-1, https://10.0.0.1:2380, https://10.0.0.1:2379, false\n\
                91bc3c398fb3c146, started, cp-2, https://10.0.0.2:2380, https://10.0.0.2:2379, false\n";
    assert_eq!(
        parse_member_list(text),
        vec![
            ("8e9e05c52164694d".to_owned(), "cp-1".to_owned()),
            ("91bc3c398fb3c146".to_owned(), "cp-2".to_owned())
        ]
    );
}

#[test]
fn redaction_hides_tokens_keys_and_kubeconfig_credentials_but_not_the_ca_hash() {
    let r = redact(DOCS_INIT);
    assert!(!r.contains("a8uxyaju799qwdjv"), "{r}");
    assert!(!r.contains(KEY), "{r}");
    assert!(r.contains("9vr73a.<redacted>"), "token id kept: {r}");
    assert!(r.contains(HASH), "the CA hash is public: {r}");

    let kubeconfig = "users:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n    token: abc\n";
    let r = redact(kubeconfig);
    for secret in ["Q0VSVA==", "S0VZ", "abc"] {
        assert!(!r.contains(secret), "{r}");
    }
    assert!(r.contains("    client-key-data: <redacted>"), "{r}");

    let pem = "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----\nb";
    assert_eq!(redact(pem), "a\n<redacted>\nb");

    // Inside quotes and at the end of sentences.
    let r = redact(&format!("bootstrap token \"{TOKEN}\" expired. key {KEY}."));
    assert!(!r.contains("a8uxyaju799qwdjv") && !r.contains(KEY), "{r}");
    // Non-ASCII text survives.
    assert_eq!(redact("héllo wörld"), "héllo wörld");
}

#[test]
fn command_lines_hide_secret_flag_values() {
    let args = strings(&[
        "join",
        "cp:6443",
        "--token",
        TOKEN,
        "--discovery-token-ca-cert-hash",
        HASH,
        "--control-plane",
        "--certificate-key",
        KEY,
    ]);
    let line = display_command(Path::new("/usr/bin/kubeadm"), &args);
    assert_eq!(
        line,
        format!(
            "/usr/bin/kubeadm join cp:6443 --token <redacted> --discovery-token-ca-cert-hash {HASH} --control-plane --certificate-key <redacted>"
        )
    );
    let line = display_command(Path::new("kubeadm"), &strings(&["--token=notatoken"]));
    assert_eq!(line, "kubeadm --token=<redacted>");
}

#[test]
fn debug_output_of_secrets_is_redacted() {
    let info = join_info("cp:6443");
    let text = format!("{info:?}");
    assert!(
        !text.contains("a8uxyaju799qwdjv") && !text.contains(KEY),
        "{text}"
    );
    let text = format!("{:?}", parse_join_commands(DOCS_INIT));
    assert!(
        !text.contains("a8uxyaju799qwdjv") && !text.contains(KEY),
        "{text}"
    );
}

#[test]
fn join_secrets_go_to_the_config_file_never_to_argv() {
    use rpool_proto::kube::kubeadm_check::{KubeadmCommand, check_kubeadm_config_for};
    let info = join_info("cp.example:6443");
    let path = Path::new("/var/lib/rpool/agent/tmp/kubeadm/join-1-0.yaml");
    let args = config_args("join", path, &[]);
    assert_eq!(
        args,
        [
            "join",
            "--config",
            "/var/lib/rpool/agent/tmp/kubeadm/join-1-0.yaml"
        ]
    );
    assert_eq!(
        config_args("init", path, &["--upload-certs"])[3..],
        ["--upload-certs"]
    );
    for key in [None, Some(KEY)] {
        let config = join_config(&info, "web-1", key);
        let argv = args.join(" ");
        for secret in [TOKEN, "a8uxyaju799qwdjv", KEY] {
            assert!(!argv.contains(secret), "{argv}");
        }
        // What kubeadm (and kubesim) accept as a join file.
        check_kubeadm_config_for(KubeadmCommand::Join, &config).unwrap();
        let v: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(v["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(v["kind"], "JoinConfiguration");
        let bt = &v["discovery"]["bootstrapToken"];
        assert_eq!(bt["apiServerEndpoint"], "cp.example:6443");
        assert_eq!(bt["token"], TOKEN);
        assert_eq!(bt["caCertHashes"], serde_json::json!([HASH]));
        assert_eq!(v["nodeRegistration"]["name"], "web-1");
        match key {
            // A worker join has no controlPlane section (its presence
            // makes kubeadm join as a control plane).
            None => assert!(v.get("controlPlane").is_none(), "{config}"),
            Some(k) => assert_eq!(v["controlPlane"]["certificateKey"], k),
        }
    }
}

#[test]
fn init_requests_never_show_their_config_file() {
    let req = InitRequest {
        control_plane_endpoint: "cp.example:6443".into(),
        pod_network_cidr: "10.244.0.0/16".into(),
        service_cidr: "10.96.0.0/12".into(),
        kubernetes_version: "v1.32.0".into(),
        node_name: "web-1".into(),
        kubeadm_config: format!("token: {TOKEN}\ncertificateKey: {KEY}\n"),
        kube_vip_manifest: String::new(),
        kube_vip_manifest_after_init: String::new(),
    };
    let text = format!("{req:?}");
    assert!(!text.contains(TOKEN) && !text.contains(KEY), "{text}");
    assert!(text.contains("web-1"), "{text}");
}

#[test]
fn requests_with_flag_like_or_invalid_values_are_refused() {
    assert!(check_node_name("--all").is_err());
    assert!(check_node_name("Node1").is_err());
    check_node_name("web-1.rack-a").unwrap();
    assert!(check_cidr("c", "--x").is_err());
    check_cidr("c", "10.244.0.0/16,fd00::/48").unwrap();
    assert!(check_version("latest").is_err());
    check_version("v1.32.0").unwrap();
    assert!(check_endpoint("e", "-x:1").is_err());
    check_endpoint("e", "cp.example:6443").unwrap();
}

#[test]
fn node_paths_map_under_the_host_root_only_when_set() {
    let config = KubeConfig {
        host_root: PathBuf::from("/sim/h1"),
        ..KubeConfig::default()
    };
    let d = Driver::new(&config, PathBuf::from("/tmp/x"));
    assert_eq!(
        d.host_path(Path::new("/etc/kubernetes/admin.conf")),
        PathBuf::from("/sim/h1/etc/kubernetes/admin.conf")
    );
    assert_eq!(
        d.host_path(Path::new("/etc/cni/net.d")),
        PathBuf::from("/sim/h1/etc/cni/net.d")
    );
    assert_eq!(
        d.host_path(Path::new("/etc/passwd")),
        PathBuf::from("/etc/passwd")
    );
    for root in ["", "/"] {
        let config = KubeConfig {
            host_root: PathBuf::from(root),
            ..KubeConfig::default()
        };
        let d = Driver::new(&config, PathBuf::from("/tmp/x"));
        assert_eq!(
            d.host_path(Path::new("/etc/kubernetes/admin.conf")),
            PathBuf::from("/etc/kubernetes/admin.conf")
        );
    }
}

#[tokio::test]
async fn the_join_config_is_removed_after_a_timeout_or_a_cancelled_call() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let script = dir.path().join("kubeadm");
    // Records "ARGS MODE CONTENT-HAS-TOKEN" of the config, then hangs.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$* $(stat -c %a \"$3\") $(grep -c {TOKEN} \"$3\")\" >> {}\nsleep 30\n",
            seen.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = KubeConfig {
        kubeadm_path: script.clone(),
        ..KubeConfig::default()
    };
    let info = join_info("cp.example:6443");
    let staged = dir.path().join("tmp").join("kubeadm");
    // A file left by a crashed agent (another pid) is swept.
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join("join-1-deadbeef.json"), "{}").unwrap();
    let d = Driver::new(&config, dir.path().join("tmp")).with_timeout(Duration::from_millis(500));
    let err = d.join(&info, "web-1", true, None, None).await.unwrap_err();
    assert!(matches!(err, KubeError::Timeout { .. }), "{err}");
    assert!(!err.to_string().contains(KEY), "{err}");
    assert_eq!(std::fs::read_dir(&staged).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The caller gives up first (task deadline): the future is dropped.
    let d = d.with_timeout(Duration::from_secs(60));
    let cancelled = tokio::time::timeout(
        Duration::from_millis(500),
        d.join(&info, "web-1", false, None, None),
    )
    .await;
    assert!(cancelled.is_err());
    assert_eq!(std::fs::read_dir(&staged).unwrap().count(), 0);
    let seen = std::fs::read_to_string(&seen).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 2, "{seen}");
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words[..2], ["join", "--config"], "{line}");
        assert!(words[2].starts_with(&staged.display().to_string()), "{line}");
        assert_eq!(words[3..], ["600", "1"], "{line}");
    }
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_failures_carry_the_redacted_tail() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kubeadm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = sleep ]; then sleep 30; fi\necho \"token {TOKEN} bad\" >&2\nexit 3\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = KubeConfig {
        kubeadm_path: script.clone(),
        ..KubeConfig::default()
    };
    let d = Driver::new(&config, dir.path().join("tmp")).with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = d.kubeadm(&strings(&["sleep"])).await.unwrap_err();
    assert!(matches!(err, KubeError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = d.kubeadm(&strings(&["x", "--token", TOKEN])).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("exit code 3"), "{text}");
    assert!(!text.contains("a8uxyaju799qwdjv"), "{text}");
    assert!(text.contains("--token <redacted>"), "{text}");
}

#[tokio::test]
async fn init_runs_with_the_controllers_file_staged_0600_and_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let script = dir.path().join("kubeadm");
    // Records "ARGS MODE CONTENT-HAS-TOKEN" of the config, then fails (a
    // refused init: nothing of kubeadm's is left to clean up).
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$* $(stat -c %a \"$3\") $(grep -c {TOKEN} \"$3\")\" >> {}\necho \"bad token {TOKEN}\" >&2\nexit 1\n",
            seen.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = KubeConfig {
        kubeadm_path: script,
        host_root: dir.path().join("host"),
        ..KubeConfig::default()
    };
    let d = Driver::new(&config, dir.path().join("tmp"));
    let req = InitRequest {
        control_plane_endpoint: "cp.example:6443".into(),
        pod_network_cidr: "10.244.0.0/16".into(),
        service_cidr: "10.96.0.0/12".into(),
        kubernetes_version: "v1.32.0".into(),
        node_name: "web-1".into(),
        kubeadm_config: format!("bootstrapTokens:\n- token: {TOKEN}\n"),
        kube_vip_manifest: String::new(),
        kube_vip_manifest_after_init: String::new(),
    };
    let err = d.init(&req).await.unwrap_err();
    assert!(!err.to_string().contains(TOKEN), "{err}");
    let staged = dir.path().join("tmp").join("kubeadm");
    assert_eq!(std::fs::read_dir(&staged).unwrap().count(), 0, "file removed");
    let seen = std::fs::read_to_string(&seen).unwrap();
    let words: Vec<&str> = seen.trim().split(' ').collect();
    // Only --upload-certs beside --config (kubeadm refuses other flags).
    assert_eq!(words[..2], ["init", "--config"], "{seen}");
    let name = Path::new(words[2])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("init-") && name.ends_with(".yaml"), "{seen}");
    assert!(words[2].starts_with(&staged.display().to_string()), "{seen}");
    assert_eq!(words[3..], ["--upload-certs", "600", "1"], "{seen}");
}
