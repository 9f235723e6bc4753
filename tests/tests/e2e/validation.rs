//! Bad agent reports are rejected with a status that names the field, and
//! change nothing.

use std::time::Duration;

use rpool_proto::v1::agent_message::Msg;
use rpool_proto::v1::agent_service_client::AgentServiceClient;
use rpool_proto::v1::controller_message::Msg as Reply;
use rpool_proto::v1::{
    AgentMessage, ControllerMessage, HealthCheck, HealthStatus, Heartbeat, Hello, HostFacts, Inventory,
    Utilization,
};
use rpool_tests::{Controller, Liveness};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const HOST_ID: &str = "5f0c6f0e-1d2b-4c3a-8e9f-00000000c0de";

fn facts(logical_cores: u32, memory_total_bytes: u64) -> HostFacts {
    HostFacts {
        hostname: "handmade".into(),
        addresses: vec!["127.0.0.1".into()],
        zone: "a".into(),
        labels: Default::default(),
        inventory: Some(Inventory {
            logical_cores,
            physical_cores: 1,
            memory_total_bytes,
            memory_available_bytes: 1 << 30,
            cpu_quota_millicores: 0,
            memory_capped_by_cgroup: false,
        }),
        simulated: true,
        ..Default::default()
    }
}

fn heartbeat(seq: u64, cpu_percent: f64) -> Heartbeat {
    Heartbeat {
        seq,
        sent_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        utilization: Some(Utilization {
            cpu_percent,
            memory_used_bytes: 1 << 30,
            load_average_1m: 0.1,
            load_average_5m: 0.1,
            load_average_15m: 0.1,
        }),
        health: vec![HealthCheck {
            name: "disk_free".into(),
            status: HealthStatus::Ok as i32,
            message: "ok".into(),
        }],
        facts: None,
        pending_pods: None,
        ..Default::default()
    }
}

fn hello(facts: HostFacts) -> AgentMessage {
    AgentMessage {
        msg: Some(Msg::Hello(Hello {
            host_id: HOST_ID.into(),
            agent_version: "0.1.0".into(),
            facts: Some(facts),
            first_heartbeat: Some(heartbeat(1, 5.0)),
            serve_here: false,
        })),
    }
}

/// Opens a session, sends `first`, and returns the sender plus the reply
/// stream, or the status the controller answered with straight away.
async fn open(
    controller: &Controller,
    first: AgentMessage,
) -> Result<(mpsc::Sender<AgentMessage>, Streaming<ControllerMessage>), tonic::Status> {
    // Mutual TLS as the agent whose host id the Hello carries.
    let tls = rpool_tests::tls_material(&rpool_proto::pki::Identity::Agent(HOST_ID.into()));
    let channel = tls
        .endpoint(&controller.addr())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(8);
    tx.send(first).await.unwrap();
    let replies = client.session(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, replies))
}

/// The next message or the status that ended the stream (bounded wait).
async fn next(
    replies: &mut Streaming<ControllerMessage>,
) -> Result<Option<ControllerMessage>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .expect("no answer from the controller within 10s")
        .transpose()
}

#[tokio::test]
async fn hello_claiming_a_billion_cores_is_rejected_and_changes_nothing() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let before = controller.settled_status().await?;

    let err = match open(&controller, hello(facts(1_000_000_000, 64 << 30))).await {
        Err(status) => status,
        Ok((_tx, mut replies)) => next(&mut replies)
            .await
            .expect_err("a billion cores was accepted"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("logical_cores"),
        "message does not name the field: {}",
        err.message()
    );
    assert!(
        err.message().contains("4096"),
        "message does not give the range: {}",
        err.message()
    );

    // "Negative" memory: -1 as the unsigned wire type is 2^64 - 1.
    let err = match open(&controller, hello(facts(8, u64::MAX))).await {
        Err(status) => status,
        Ok((_tx, mut replies)) => next(&mut replies).await.expect_err("absurd memory was accepted"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("memory_total_bytes"), "{}", err.message());

    assert!(controller.hosts().await?.is_empty(), "a rejected host was stored");
    assert_eq!(
        controller.status().await?.applied_index,
        before.applied_index,
        "a rejected hello changed state"
    );
    Ok(())
}

#[tokio::test]
async fn bad_heartbeat_from_a_registered_host_ends_its_session_and_changes_nothing() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let (tx, mut replies) = open(&controller, hello(facts(8, 32 << 30))).await?;
    let welcome = next(&mut replies).await?.expect("welcome");
    assert!(matches!(welcome.msg, Some(Reply::Welcome(_))), "{welcome:?}");
    tx.send(AgentMessage {
        msg: Some(Msg::Heartbeat(heartbeat(2, 42.0))),
    })
    .await?;
    // Wait until the good heartbeat is visible.
    rpool_tests::eventually(Duration::from_secs(5), "good heartbeat seen", || async {
        let hosts = controller.hosts().await.unwrap_or_default();
        let cpu = hosts
            .first()
            .and_then(|h| h.utilization.as_ref())
            .map(|u| u.cpu_percent);
        ((cpu == Some(42.0)).then_some(()), cpu)
    })
    .await?;
    let before = controller.settled_status().await?.applied_index;

    // 250 % CPU, and facts claiming 10^9 cores in the same report.
    let mut bad = heartbeat(3, 250.0);
    bad.facts = Some(facts(1_000_000_000, 32 << 30));
    tx.send(AgentMessage {
        msg: Some(Msg::Heartbeat(bad)),
    })
    .await?;
    let err = loop {
        match next(&mut replies).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error status"),
            Err(status) => break status,
        }
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("heartbeat"), "{}", err.message());

    let hosts = controller.hosts().await?;
    assert_eq!(hosts.len(), 1);
    let host = &hosts[0];
    assert_eq!(
        host.facts
            .as_ref()
            .unwrap()
            .inventory
            .as_ref()
            .unwrap()
            .logical_cores,
        8
    );
    assert_eq!(host.utilization.as_ref().map(|u| u.cpu_percent), Some(42.0));
    assert_eq!(
        controller.status().await?.applied_index,
        before,
        "a rejected heartbeat changed state"
    );

    // Out-of-order sequence numbers are bad input too.
    let (tx, mut replies) = open(&controller, hello(facts(8, 32 << 30))).await?;
    next(&mut replies).await?.expect("welcome");
    tx.send(AgentMessage {
        msg: Some(Msg::Heartbeat(heartbeat(7, 1.0))),
    })
    .await?;
    tx.send(AgentMessage {
        msg: Some(Msg::Heartbeat(heartbeat(7, 1.0))),
    })
    .await?;
    let err = loop {
        match next(&mut replies).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error status"),
            Err(status) => break status,
        }
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("seq"), "{}", err.message());
    Ok(())
}

#[tokio::test]
async fn heartbeat_before_hello_is_rejected() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let first = AgentMessage {
        msg: Some(Msg::Heartbeat(heartbeat(1, 1.0))),
    };
    let err = match open(&controller, first).await {
        Err(status) => status,
        Ok((_tx, mut replies)) => next(&mut replies)
            .await
            .expect_err("heartbeat before hello accepted"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().to_lowercase().contains("hello"),
        "{}",
        err.message()
    );
    assert!(controller.hosts().await?.is_empty());
    Ok(())
}

/// A codec that sends raw bytes as the request message (what a broken or
/// hostile agent could put on the wire) and decodes replies as usual.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ControllerMessage;
    type Encoder = RawEncoder;
    type Decoder = <tonic_prost::ProstCodec<AgentMessage, ControllerMessage> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic::codec::Codec::decoder(
            &mut tonic_prost::ProstCodec::<AgentMessage, ControllerMessage>::default(),
        )
    }
}

/// Opens a session and sends `bytes` as its first message.
async fn open_raw(
    controller: &Controller,
    bytes: Vec<u8>,
) -> Result<Streaming<ControllerMessage>, tonic::Status> {
    let tls = rpool_tests::tls_material(&rpool_proto::pki::Identity::Agent(HOST_ID.into()));
    let channel = tls
        .endpoint(&controller.addr())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/rpool.v1.AgentService/Session");
    let request = tonic::Request::new(tokio_stream::iter(vec![bytes]));
    Ok(grpc.streaming(request, path, RawCodec).await?.into_inner())
}

#[tokio::test]
async fn garbage_or_oversized_agent_message_ends_the_stream_with_invalid_argument() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let controller = Controller::start(&root.path().join("controller"), Liveness::FAST).await?;
    let before = controller.settled_status().await?;

    // Bytes that are no AgentMessage (field 1 with wire type 7 does not exist).
    let err = match open_raw(&controller, vec![0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f]).await {
        Err(status) => status,
        Ok(mut replies) => next(&mut replies).await.expect_err("garbage was accepted"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("agent_message: "), "{}", err.message());
    assert!(err.message().contains("4194304 bytes"), "{}", err.message());

    // A Hello over the 4 MiB limit.
    let mut big = facts(8, 64 << 30);
    big.labels.insert("padding".into(), "x".repeat(5 << 20));
    let err = match open(&controller, hello(big)).await {
        Err(status) => status,
        Ok((_tx, mut replies)) => next(&mut replies)
            .await
            .expect_err("an oversized hello was accepted"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());

    assert!(controller.hosts().await?.is_empty(), "a rejected host was stored");
    assert_eq!(controller.status().await?.applied_index, before.applied_index);
    Ok(())
}
