//! The audit trail end to end: admin changes made through a FOLLOWER are
//! recorded with the admin's certificate identity (carried by the follower
//! to the leader), listed by `rpoolctl events --kind audit`, never with a
//! secret; and an admin cannot make the leader record someone else.

use std::time::Duration;

use rpool_proto::v1::{CreatePoolRequest, CreateTokenRequest, ListEventsRequest, PoolSpec};
use rpool_tests::{Cluster, Liveness, Profile, TEST_RAFT, admin_client, ctl, eventually, json_of};

const GIB: u64 = 1 << 30;

fn spec(name: &str) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        cores: 8,
        memory_bytes: 16 * GIB,
        control_planes: 1,
        kubernetes_version: String::new(),
        pod_network_cidr: String::new(),
        service_cidr: String::new(),
        ..PoolSpec::default()
    }
}

/// A follower's address (and the leader's id).
async fn follower(cluster: &Cluster) -> anyhow::Result<(String, u64)> {
    let leader = cluster.leader().await?;
    let follower = cluster
        .controllers
        .iter()
        .find(|c| c.id != leader)
        .expect("a trio has followers");
    Ok((follower.addr(), leader))
}

#[tokio::test]
async fn a_pool_created_through_a_follower_is_audited_with_the_admins_identity() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let home = tempfile::tempdir()?;
    let cluster = Cluster::start(root.path(), 3, Liveness::FAST, TEST_RAFT).await?;
    let _agents = cluster
        .start_agents(
            root.path(),
            vec![
                Profile::new("cp-a", "a", 4, "8GiB"),
                Profile::new("w-a1", "a", 8, "32GiB"),
            ],
        )
        .await?;
    let (follower, leader) = follower(&cluster).await?;
    // The harness' own admin calls (hosts enrolling need tokens) are
    // audited too: only what follows is this test's.
    let before = admin_client(&follower)
        .await?
        .list_events(ListEventsRequest {
            kind: "audit".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .events
        .last()
        .map_or(0, |e| e.index);

    // Through the real rpoolctl, against the follower only.
    let out = ctl(
        home.path(),
        &[
            "--controller",
            &follower,
            "pool",
            "create",
            "web",
            "--cores",
            "8",
            "--memory",
            "16GiB",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A token: its id is recorded, its secret never.
    let token = admin_client(&follower)
        .await?
        .create_token(CreateTokenRequest {
            ttl_seconds: 600,
            uses: 1,
            description: "audit test".into(),
            ..Default::default()
        })
        .await?
        .into_inner();

    let out = ctl(
        home.path(),
        &[
            "--controller",
            &follower,
            "events",
            "--kind",
            "audit",
            "-o",
            "json",
        ],
    );
    let events = json_of(&out)?;
    let events: Vec<&serde_json::Value> = events
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter(|e| e["index"].as_u64() > Some(before))
        .collect();
    assert!(events.iter().all(|e| e["kind"] == "audit"), "{events:#?}");
    assert_eq!(events.len(), 2, "{events:#?}");
    let create = &events[0];
    assert_eq!(create["kind"], "audit");
    assert_eq!(create["pool"], "web");
    assert_eq!(create["audit"]["actor"], "urn:rpool:admin:test-admin");
    let via = create["audit"]["via_controller"].as_u64().expect("forwarded");
    assert_ne!(via, leader, "the follower forwarded it");
    assert_eq!(create["audit"]["operation"], "pool create");
    assert_eq!(create["audit"]["arguments"]["pool"], "web");
    assert_eq!(create["audit"]["arguments"]["cores"], "8");
    assert_eq!(create["audit"]["outcome"], "applied");
    let issued = &events[1];
    assert_eq!(issued["audit"]["operation"], "token create");
    assert_eq!(issued["audit"]["arguments"]["id"], token.id.as_str());
    let secret = token.token.split_once('.').expect("id.secret").1;
    let all = serde_json::to_string(&events)?;
    assert!(
        !all.contains(secret),
        "the token secret leaked into the audit trail"
    );

    // The table names the admin too.
    let out = ctl(
        home.path(),
        &["--controller", &follower, "events", "--kind", "audit"],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("admin test-admin via controller"), "{table}");
    // A bad kind is refused by rpoolctl, naming the flag.
    let out = ctl(
        home.path(),
        &["--controller", &follower, "events", "--kind", "Audit!"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kind"));
    Ok(())
}

#[tokio::test]
async fn an_admin_cannot_spoof_the_forwarded_caller() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cluster = Cluster::start(root.path(), 3, Liveness::FAST, TEST_RAFT).await?;
    let _agents = cluster
        .start_agents(
            root.path(),
            vec![
                Profile::new("cp-a", "a", 4, "8GiB"),
                Profile::new("w-a1", "a", 8, "32GiB"),
            ],
        )
        .await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster
        .controllers
        .iter()
        .find(|c| c.id == leader)
        .unwrap()
        .addr();
    let (follower, _) = follower(&cluster).await?;
    let audited = || async {
        let got = match admin_client(&follower).await {
            Ok(mut c) => c
                .list_events(ListEventsRequest {
                    kind: "audit".into(),
                    ..Default::default()
                })
                .await
                .ok()
                .map(|r| r.into_inner().events),
            Err(_) => None,
        };
        (got, "no answer")
    };
    let before = eventually(Duration::from_secs(10), "events answered", audited).await?;
    for (addr, forwarded_by) in [
        (&leader_addr, None),
        (&leader_addr, Some(leader)),
        (&follower, None),
    ] {
        let mut request = tonic::Request::new(CreatePoolRequest {
            spec: Some(spec("spoofed")),
            dry_run: false,
        });
        request
            .metadata_mut()
            .insert("x-rpool-forwarded-for", "urn:rpool:admin:mallory".parse()?);
        if let Some(id) = forwarded_by {
            request
                .metadata_mut()
                .insert("x-rpool-forwarded-by", id.to_string().parse()?);
        }
        let err = admin_client(addr)
            .await?
            .create_pool(request)
            .await
            .expect_err("a spoofed caller is refused");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(
            err.message().contains("x-rpool-forwarded-for"),
            "{}",
            err.message()
        );
    }
    // Nothing changed, nothing was recorded.
    let after = eventually(Duration::from_secs(10), "events answered", audited).await?;
    assert_eq!(after, before, "a refused call leaves no audit record");
    assert!(after.iter().all(|e| !e.message.contains("mallory")), "{after:?}");
    let hosts = cluster.hosts().await?;
    assert!(hosts.iter().all(|h| h.pool.is_empty()), "{hosts:?}");
    Ok(())
}

#[tokio::test]
async fn a_leadership_transfer_is_audited_before_the_leader_hands_over() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let home = tempfile::tempdir()?;
    let cluster = Cluster::start(root.path(), 3, Liveness::FAST, TEST_RAFT).await?;
    let (follower, leader) = follower(&cluster).await?;
    let target = cluster
        .controllers
        .iter()
        .map(|c| c.id)
        .find(|id| *id != leader)
        .expect("a trio has followers");
    let out = ctl(
        home.path(),
        &[
            "--controller",
            &follower,
            "controller",
            "transfer-leader",
            &target.to_string(),
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster.leader().await?, target, "the named controller leads");

    let out = ctl(
        home.path(),
        &[
            "--controller",
            &follower,
            "events",
            "--kind",
            "audit",
            "-o",
            "json",
        ],
    );
    let events = json_of(&out)?;
    let transfer: Vec<&serde_json::Value> = events
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter(|e| e["audit"]["operation"] == "controller transfer-leader")
        .collect();
    assert_eq!(transfer.len(), 1, "{events:#?}");
    let record = &transfer[0]["audit"];
    assert_eq!(record["actor"], "urn:rpool:admin:test-admin");
    assert_eq!(record["arguments"]["from"], leader.to_string().as_str());
    assert_eq!(record["arguments"]["to"], target.to_string().as_str());
    assert_eq!(record["outcome"], "applied");
    Ok(())
}
