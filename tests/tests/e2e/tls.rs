//! Mutual TLS and authorization against a real controller process: who may
//! connect at all, and which identity may call which service.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rpool_proto::pki::{Ca, Identity};
use rpool_proto::tls::TlsMaterial;
use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::agent_message::Msg;
use rpool_proto::v1::agent_service_client::AgentServiceClient;
use rpool_proto::v1::raft_service_client::RaftServiceClient;
use rpool_proto::v1::{self, AgentMessage, RaftBatch, StatusRequest};
use rpool_tests::{Controller, Liveness, ctl, material_from, test_ca, tls_material};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

async fn channel(tls: &TlsMaterial, addr: &str) -> Channel {
    tls.endpoint(addr)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("TLS connection")
}

/// A client that trusts the rpool CA but presents no certificate.
async fn anonymous(addr: &str) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(test_ca().cert_pem()))
        .domain_name("127.0.0.1");
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("TLS 1.3 lets a client without a certificate connect")
}

fn hello(host_id: &str) -> v1::Hello {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    v1::Hello {
        host_id: host_id.to_owned(),
        agent_version: rpool_proto::VERSION.to_owned(),
        facts: Some(v1::HostFacts {
            hostname: "tls-1".to_owned(),
            addresses: vec!["10.0.0.5".to_owned()],
            zone: "a".to_owned(),
            inventory: Some(v1::Inventory {
                logical_cores: 4,
                physical_cores: 2,
                memory_total_bytes: 8 << 30,
                memory_available_bytes: 4 << 30,
                ..Default::default()
            }),
            simulated: true,
            ..Default::default()
        }),
        first_heartbeat: Some(v1::Heartbeat {
            seq: 1,
            sent_at_unix_ms: now_ms,
            utilization: Some(v1::Utilization {
                cpu_percent: 1.0,
                memory_used_bytes: 1 << 30,
                ..Default::default()
            }),
            ..Default::default()
        }),
        serve_here: false,
    }
}

/// Opens a session as `tls` saying `hello`; returns the answer (the
/// Welcome or the status that ended the stream) and the sender (keeping
/// the stream open).
async fn session(
    tls: &TlsMaterial,
    addr: &str,
    hello: Option<v1::Hello>,
) -> Result<
    (
        tonic::Streaming<v1::ControllerMessage>,
        mpsc::Sender<AgentMessage>,
    ),
    tonic::Status,
> {
    let mut client = AgentServiceClient::new(channel(tls, addr).await);
    let (tx, rx) = mpsc::channel(4);
    if let Some(hello) = hello {
        tx.send(AgentMessage {
            msg: Some(Msg::Hello(hello)),
        })
        .await
        .unwrap();
    }
    let inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    Ok((inbound, tx))
}

async fn start() -> (tempfile::TempDir, Controller) {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path(), Liveness::FAST).await.unwrap();
    (dir, controller)
}

#[tokio::test]
async fn a_client_without_a_certificate_is_unauthenticated_on_every_service() {
    let (_dir, controller) = start().await;
    let channel = anonymous(&controller.addr()).await;
    let err = AdminServiceClient::new(channel.clone())
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("client certificate"), "{}", err.message());

    let (_tx, rx) = mpsc::channel::<AgentMessage>(1);
    let err = AgentServiceClient::new(channel.clone())
        .session(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let batch = RaftBatch {
        from: 1,
        messages: vec![b"never decoded".to_vec()],
        ..Default::default()
    };
    let err = RaftServiceClient::new(channel)
        .send(tokio_stream::iter(vec![batch]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // The controller is unharmed and logged the denials.
    controller.status().await.unwrap();
    assert!(
        controller.log().contains("request denied"),
        "{}",
        controller.log()
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let (_dir, controller) = start().await;
    let other = Ca::generate("someone else's CA").unwrap();
    let issued = other
        .issue(&Identity::Admin("mallory".into()), &[], Duration::from_secs(3600))
        .unwrap();
    // Trusts the real CA (so the server's certificate is fine) but presents
    // the foreign certificate.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(test_ca().cert_pem()))
        .identity(tonic::transport::Identity::from_pem(
            &issued.cert_pem,
            &issued.key_pem,
        ))
        .domain_name("127.0.0.1");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", controller.addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5));
    let outcome = match endpoint.connect().await {
        Err(e) => Err(format!("connect: {e}")),
        Ok(channel) => AdminServiceClient::new(channel)
            .status(StatusRequest {})
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
    };
    assert!(outcome.is_err(), "a foreign certificate was accepted");
    // And a client that trusts only the other CA does not trust the controller.
    let foreign = material_from(&other, &Identity::Admin("mallory".into()));
    let err = foreign
        .endpoint(&controller.addr())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    let refused = match err {
        Err(_) => true,
        Ok(channel) => AdminServiceClient::new(channel)
            .status(StatusRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client trusting another CA reached the controller");
    controller.status().await.unwrap();
}

#[tokio::test]
async fn an_agent_certificate_cannot_call_the_admin_api() {
    let (_dir, controller) = start().await;
    let agent = tls_material(&Identity::Agent(uuid_like(1)));
    let err = AdminServiceClient::new(channel(&agent, &controller.addr()).await)
        .list_hosts(v1::ListHostsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("admin API"), "{}", err.message());
    // Nor may an admin certificate open an agent session.
    let admin = rpool_tests::admin_tls();
    let err = session(admin, &controller.addr(), Some(hello(&uuid_like(1))))
        .await
        .expect_err("an admin may not speak for a host");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

fn uuid_like(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
}

#[tokio::test]
async fn an_agent_whose_hello_claims_another_host_is_denied_and_nothing_is_registered() {
    let (_dir, controller) = start().await;
    let (mine, other) = (uuid_like(1), uuid_like(2));
    let agent = tls_material(&Identity::Agent(mine.clone()));
    let (mut inbound, _tx) = session(&agent, &controller.addr(), Some(hello(&other)))
        .await
        .expect("the stream opens; the Hello is judged on it");
    let err = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("answered in time")
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        format!("agent certificate is for host {mine}, hello says {other}")
    );
    assert!(controller.hosts().await.unwrap().is_empty());

    // The same certificate with its own host id is welcomed.
    let (mut inbound, _tx) = session(&agent, &controller.addr(), Some(hello(&mine)))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(first.msg, Some(v1::controller_message::Msg::Welcome(_))),
        "{first:?}"
    );
    assert_eq!(controller.hosts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_third_concurrent_session_of_one_agent_is_refused() {
    let (_dir, controller) = start().await;
    let agent = tls_material(&Identity::Agent(uuid_like(3)));
    // Two streams that have not said Hello yet hold both slots.
    let one = session(&agent, &controller.addr(), None).await.unwrap();
    let two = session(&agent, &controller.addr(), None).await.unwrap();
    let err = session(&agent, &controller.addr(), None)
        .await
        .expect_err("third refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("2 open sessions"), "{}", err.message());
    // Another agent is not affected.
    let other = tls_material(&Identity::Agent(uuid_like(4)));
    let _three = session(&other, &controller.addr(), None).await.unwrap();
    drop((one, two));
}

#[tokio::test]
async fn a_plaintext_client_cannot_talk_to_a_controller() {
    let (_dir, controller) = start().await;
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", controller.addr()))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let answered = match plain.connect().await {
        Err(_) => false,
        Ok(channel) => AdminServiceClient::new(channel)
            .status(StatusRequest {})
            .await
            .is_ok(),
    };
    assert!(!answered, "a plaintext client got an answer");
    controller.status().await.unwrap();
}

#[tokio::test]
async fn a_controller_accepts_raft_traffic_only_from_controller_certificates() {
    let (_dir, controller) = start().await;
    let garbage = || {
        vec![RaftBatch {
            from: 7,
            // Not a raft message: it must never reach the protobuf decoder.
            messages: vec![vec![0xff; 64]],
            ..Default::default()
        }]
    };
    let admin = rpool_tests::admin_tls();
    let err = RaftServiceClient::new(channel(admin, &controller.addr()).await)
        .send(tokio_stream::iter(garbage()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("raft"), "{}", err.message());

    // A controller certificate must also be the sender it claims to be.
    let peer = tls_material(&Identity::Controller(2));
    let err = RaftServiceClient::new(channel(&peer, &controller.addr()).await)
        .send(tokio_stream::iter(garbage()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        "raft batch claims to be from controller 7, certificate is controller 2"
    );
    let status = controller.status().await.unwrap();
    assert_eq!(status.role, "leader");
}

#[test]
fn rpoolctl_without_its_certificate_exits_64_naming_the_file() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("nowhere/admin.crt");
    let out = ctl(
        home.path(),
        &[
            "--controller",
            "127.0.0.1:1",
            "--tls-cert",
            missing.to_str().unwrap(),
            "status",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
}
