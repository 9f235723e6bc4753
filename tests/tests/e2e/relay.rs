//! Relayed agent sessions against a real trio: a leader hands a direct
//! session to a follower, the follower relays it to the leader (Welcome,
//! heartbeats and acks pass through), an agent that cannot reach the
//! follower is served by the leader, and when the leader dies the relay
//! sends its agent back to itself, to be relayed to the new leader.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rpool_proto::pki::Identity;
use rpool_proto::v1::agent_message::Msg;
use rpool_proto::v1::agent_service_client::AgentServiceClient;
use rpool_proto::v1::controller_message::Msg as ControllerMsg;
use rpool_proto::v1::{self, AgentMessage, ControllerMessage};
use rpool_tests::{Cluster, Liveness, TEST_RAFT, eventually, tls_material};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn heartbeat(seq: u64) -> v1::Heartbeat {
    v1::Heartbeat {
        seq,
        sent_at_unix_ms: now_ms(),
        utilization: Some(v1::Utilization {
            cpu_percent: 3.0,
            memory_used_bytes: 1 << 30,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn hello(host_id: &str, serve_here: bool) -> v1::Hello {
    v1::Hello {
        host_id: host_id.to_owned(),
        agent_version: rpool_proto::VERSION.to_owned(),
        facts: Some(v1::HostFacts {
            hostname: format!("relay-{}", &host_id[..4]),
            addresses: vec!["10.0.0.7".to_owned()],
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
        first_heartbeat: Some(heartbeat(1)),
        serve_here,
    }
}

/// An agent's session stream, as the agent `host_id` (its own certificate).
struct Session {
    tx: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<ControllerMessage>,
}

impl Session {
    async fn open(addr: &str, hello: v1::Hello) -> Result<Session, tonic::Status> {
        let tls = tls_material(&Identity::Agent(hello.host_id.clone()));
        let channel = tls
            .endpoint(addr)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(8);
        tx.send(AgentMessage {
            msg: Some(Msg::Hello(hello)),
        })
        .await
        .unwrap();
        let inbound = AgentServiceClient::new(channel)
            .session(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Session { tx, inbound })
    }

    /// The next message, bounded in time.
    async fn next(&mut self) -> Result<Option<ControllerMsg>, tonic::Status> {
        match tokio::time::timeout(WAIT, self.inbound.message()).await {
            Ok(Ok(m)) => Ok(m.and_then(|m| m.msg)),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no message within {WAIT:?}"
            ))),
        }
    }

    /// Sends heartbeat `seq` and waits for its acknowledgement.
    async fn heartbeat_acked(&mut self, seq: u64) -> Result<(), tonic::Status> {
        self.tx
            .send(AgentMessage {
                msg: Some(Msg::Heartbeat(heartbeat(seq))),
            })
            .await
            .map_err(|_| tonic::Status::unavailable("stream closed"))?;
        loop {
            match self.next().await? {
                Some(ControllerMsg::HeartbeatAck(ack)) if ack.seq == seq => return Ok(()),
                Some(_) => continue,
                None => return Err(tonic::Status::unavailable("stream ended")),
            }
        }
    }
}

fn welcome_id(message: Option<ControllerMsg>) -> u64 {
    match message {
        Some(ControllerMsg::Welcome(w)) => w.controller_id.parse().unwrap(),
        other => panic!("expected a Welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn followers_relay_agent_sessions_to_the_leader_and_bring_them_back_after_its_death()
-> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    // Keys before TEST_RAFT's table land in [liveness].
    let extra = format!("relay_sessions = true\n{TEST_RAFT}");
    let mut cluster = Cluster::start(root.path(), 3, Liveness::FAST, &extra).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.get(leader).addr();
    let host = "7e1a0c2b-5d4e-4f3a-8b2c-1d0e9f8a7b6c";

    // 1. A direct Hello to the leader is handed to a follower (once the
    //    leader has heard from its followers).
    let follower_addr = eventually(WAIT, "the leader hands the session to a follower", || {
        let leader_addr = leader_addr.clone();
        async move {
            let mut direct = match Session::open(&leader_addr, hello(host, false)).await {
                Ok(s) => s,
                Err(e) => return (None, format!("open: {e}")),
            };
            match direct.next().await {
                Ok(Some(ControllerMsg::Redirect(r))) if r.relay => (Some(r.leader_address), String::new()),
                other => (None, format!("{other:?}")),
            }
        }
    })
    .await?;
    assert_ne!(follower_addr, leader_addr);
    let follower = cluster
        .controllers
        .iter()
        .find(|c| c.addr() == follower_addr)
        .map(|c| c.id)
        .expect("the redirect names a member");

    // 2. There, the Welcome is the leader's; heartbeats are acknowledged
    //    through the relay and the leader sees the host connected.
    let mut relayed = Session::open(&follower_addr, hello(host, false)).await?;
    assert_eq!(
        welcome_id(relayed.next().await?),
        leader,
        "the Welcome comes from the leader"
    );
    // The leader counts the host connected (heartbeating as an agent would:
    // the liveness table a new leader starts may come after the Welcome).
    let mut seq = 1;
    let mut seen = Vec::new();
    let connected = loop {
        seq += 1;
        relayed.heartbeat_acked(seq).await?;
        let hosts = cluster.hosts().await.unwrap_or_default();
        if hosts.iter().any(|h| h.host_id == host && h.connected) {
            break true;
        }
        seen = hosts;
        if seq > 50 {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(connected, "the host is not connected on the leader: {seen:?}");

    // 3. The leader's verdicts pass through unchanged: a heartbeat that
    //    goes backwards ends the relayed stream with INVALID_ARGUMENT.
    let other = "0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d";
    let mut bad = Session::open(&follower_addr, hello(other, false)).await?;
    assert_eq!(welcome_id(bad.next().await?), leader);
    bad.heartbeat_acked(3).await?;
    bad.tx
        .send(AgentMessage {
            msg: Some(Msg::Heartbeat(heartbeat(2))),
        })
        .await?;
    let verdict = loop {
        match bad.next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without the leader's verdict"),
            Err(status) => break status,
        }
    };
    assert_eq!(verdict.code(), tonic::Code::InvalidArgument, "{verdict:?}");
    assert!(verdict.message().contains("seq"), "{}", verdict.message());
    // Both agents' sessions went over the follower's one relay stream.
    let leader_log = cluster.get(leader).log();
    let streams = leader_log
        .lines()
        .filter(|l| l.contains("relay stream from a follower opened"))
        .collect::<Vec<_>>();
    assert_eq!(
        streams.len(),
        1,
        "one relay stream from follower {follower} for two agents: {streams:#?}"
    );
    assert!(
        streams[0].contains(&format!("follower={follower}")),
        "{}",
        streams[0]
    );

    // 4. An agent that could not reach the follower asks the leader to
    //    serve it: it does.
    let mut served = Session::open(&leader_addr, hello(other, true)).await?;
    assert_eq!(welcome_id(served.next().await?), leader);
    served.heartbeat_acked(2).await?;

    // 5. The leader dies: the relay ends its agent's stream with
    //    UNAVAILABLE and a retry hint; back at the same follower, the agent
    //    is welcomed by the new leader (relayed by that follower, or, if it
    //    leads now, served there or handed to the other follower).
    cluster.get(leader).kill();
    let ended = loop {
        match relayed.next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the relayed stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(
        ended.metadata().contains_key(rpool_proto::RETRY_AFTER_MS),
        "no retry hint: {ended:?}"
    );
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, leader);
    let back = eventually(WAIT, "welcomed again through the same follower", || {
        let follower_addr = follower_addr.clone();
        async move {
            let mut at = follower_addr;
            for _ in 0..2 {
                let mut s = match Session::open(&at, hello(host, false)).await {
                    Ok(s) => s,
                    Err(e) => return (None, format!("open at {at}: {e}")),
                };
                match s.next().await {
                    Ok(Some(ControllerMsg::Welcome(w))) => {
                        return (Some((s, w.controller_id)), String::new());
                    }
                    Ok(Some(ControllerMsg::Redirect(r))) if r.relay => at = r.leader_address,
                    other => return (None, format!("at {at}: {other:?}")),
                }
            }
            (None, "handed on twice".to_owned())
        }
    })
    .await?;
    let (mut session, by) = back;
    assert_eq!(
        by,
        new_leader.to_string(),
        "welcomed by the new leader (follower {follower})"
    );
    session.heartbeat_acked(2).await?;
    Ok(())
}
