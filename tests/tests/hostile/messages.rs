//! Agent reports and admin requests: validation never panics, a rejection
//! names a field and stays short, and whatever is accepted really is within
//! every documented limit (checked here independently of the validator).

use std::net::IpAddr;

use prost::Message;
use rpool_controller::api::admin::pools;
use rpool_controller::api::validate::{self, limits::*};
use rpool_proto::v1;

use crate::values::{Gen, run};

/// A rejection names a field path that starts with `prefix` and stays short
/// however large the input was (values are echoed cut to 64 characters,
/// each escaped to at most 10 bytes, and a field path may echo a key too).
fn check_rejection(prefix: &str, e: &validate::Invalid) {
    assert!(
        e.field.starts_with(prefix),
        "rejection names {:?}, expected a field under {prefix:?}",
        e.field
    );
    let text = e.to_string();
    assert!(
        text.len() <= 1536,
        "rejection message is {} bytes: {text:.200}",
        text.len()
    );
    assert!(!e.problem.is_empty());
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_host_id(s: &str) -> bool {
    s.len() == HOST_ID_LEN
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

fn inventory(g: &mut Gen) -> v1::Inventory {
    v1::Inventory {
        logical_cores: g.u32(),
        physical_cores: g.u32(),
        memory_total_bytes: g.u64(),
        memory_available_bytes: g.u64(),
        cpu_quota_millicores: g.u32(),
        memory_capped_by_cgroup: g.bool(),
    }
}

fn facts(g: &mut Gen) -> v1::HostFacts {
    let addresses = (0..g.rng.usize(..40))
        .map(|_| {
            if g.bool() {
                g.pick(&["10.0.0.1", "::1", "fe80::1%eth0", "256.1.1.1", "1.2.3.4"])
                    .to_string()
            } else {
                g.string()
            }
        })
        .collect();
    let labels = (0..g.rng.usize(..70)).map(|_| (g.string(), g.string())).collect();
    v1::HostFacts {
        hostname: if g.bool() {
            "node-1.example".into()
        } else {
            g.string()
        },
        addresses,
        zone: if g.bool() { "zone-a".into() } else { g.string() },
        labels,
        inventory: g.bool().then(|| inventory(g)),
        simulated: g.bool(),
        advertise_address: if g.bool() {
            g.pick(&["10.0.0.1", "127.0.0.1", "224.0.0.1", "::", ""])
                .to_string()
        } else {
            g.string()
        },
        advertise_source: g.rng.i32(-1..5),
        cri_socket: if g.bool() {
            g.pick(&[
                "unix:///run/containerd/containerd.sock",
                "unix://",
                "/run/x.sock",
                "",
            ])
            .to_string()
        } else {
            g.string()
        },
    }
}

fn heartbeat(g: &mut Gen) -> v1::Heartbeat {
    v1::Heartbeat {
        seq: g.u64(),
        sent_at_unix_ms: g.u64(),
        facts: (g.rng.u8(..4) == 0).then(|| facts(g)),
        health: (0..g.rng.usize(..40))
            .map(|_| v1::HealthCheck {
                name: g.string(),
                status: g.rng.i32(-2..6),
                message: g.string(),
            })
            .collect(),
        utilization: g.bool().then(|| v1::Utilization {
            cpu_percent: g.f64(),
            memory_used_bytes: g.u64(),
            load_average_1m: g.f64(),
            load_average_5m: g.f64(),
            load_average_15m: g.f64(),
        }),
        ..Default::default()
    }
}

fn hello(g: &mut Gen) -> v1::Hello {
    v1::Hello {
        host_id: g.string(),
        agent_version: if g.bool() { "0.1.0".into() } else { g.string() },
        facts: (g.rng.u8(..8) != 0).then(|| facts(g)),
        first_heartbeat: g.bool().then(|| heartbeat(g)),
        serve_here: g.bool(),
    }
}

/// Every limit an accepted `HostFacts` must respect.
fn assert_facts_within_limits(f: &v1::HostFacts) {
    assert!((1..=HOSTNAME_MAX_CHARS).contains(&f.hostname.chars().count()));
    assert!(
        f.hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    );
    assert!(f.addresses.len() <= ADDRESSES_MAX);
    assert!(f.addresses.iter().all(|a| a.parse::<IpAddr>().is_ok()));
    assert!(is_dns_label(&f.zone, LABEL_MAX_CHARS), "zone {:?}", f.zone);
    assert!(f.labels.len() <= LABELS_MAX);
    for (k, v) in &f.labels {
        assert!((1..=LABEL_KEY_MAX_CHARS).contains(&k.chars().count()));
        assert!(v.chars().count() <= LABEL_VALUE_MAX_CHARS);
    }
    let inv = f.inventory.as_ref().expect("accepted facts carry an inventory");
    assert!((1..=LOGICAL_CORES_MAX).contains(&inv.logical_cores));
    assert!((MEMORY_MIN_BYTES..=MEMORY_MAX_BYTES).contains(&inv.memory_total_bytes));
}

fn assert_heartbeat_within_limits(hb: &v1::Heartbeat) {
    if let Some(f) = &hb.facts {
        assert_facts_within_limits(f);
    }
    assert!(hb.health.len() <= HEALTH_CHECKS_MAX);
    for c in &hb.health {
        assert!((1..=HEALTH_NAME_MAX_CHARS).contains(&c.name.chars().count()));
        assert!(c.message.chars().count() <= HEALTH_MESSAGE_MAX_CHARS);
    }
    if let Some(u) = &hb.utilization {
        assert!(u.cpu_percent.is_finite() && (0.0..=100.0).contains(&u.cpu_percent));
        for l in [u.load_average_1m, u.load_average_5m, u.load_average_15m] {
            assert!(
                l.is_finite() && (0.0..=LOAD_AVERAGE_MAX).contains(&l),
                "load average {l}"
            );
        }
    }
}

#[test]
fn hello_validation_holds_on_hostile_input() {
    run("hello", |g| {
        let h = hello(g);
        match validate::hello(&h) {
            Ok(()) => {
                assert!(is_host_id(&h.host_id), "accepted host id {:?}", h.host_id);
                assert!((1..=AGENT_VERSION_MAX_CHARS).contains(&h.agent_version.chars().count()));
                let facts = h.facts.as_ref().expect("accepted hello carries facts");
                assert_facts_within_limits(facts);
                if let Some(hb) = &h.first_heartbeat {
                    assert_heartbeat_within_limits(hb);
                }
            }
            Err(e) => check_rejection("hello.", &e),
        }
    });
}

#[test]
fn heartbeat_validation_holds_on_hostile_input() {
    run("heartbeat", |g| {
        let hb = heartbeat(g);
        let previous = g.bool().then(|| g.u64());
        let total = g.bool().then(|| g.u64());
        match validate::heartbeat("heartbeat", &hb, previous, total) {
            Ok(()) => {
                assert_heartbeat_within_limits(&hb);
                if let Some(prev) = previous {
                    assert!(hb.seq > prev, "accepted seq {} after {prev}", hb.seq);
                }
                if let (Some(u), Some(t)) = (&hb.utilization, total)
                    && hb.facts.is_none()
                {
                    assert!(u.memory_used_bytes <= t);
                }
            }
            Err(e) => check_rejection("heartbeat", &e),
        }
    });
}

/// Raw bytes off the wire: decoding never panics, and a decoded message goes
/// through the same validation (mutations of a valid Hello exercise the
/// decoder's edge cases far better than random bytes).
#[test]
fn agent_stream_decoding_survives_garbage() {
    let valid = v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            host_id: "0b5e8a3c-1f2d-4c6b-9a7e-3d2c1b0a9f8e".into(),
            agent_version: "0.1.0".into(),
            facts: Some(v1::HostFacts {
                hostname: "node-1".into(),
                addresses: vec!["10.0.0.1".into()],
                zone: "a".into(),
                labels: [("rack".to_string(), "a1".to_string())].into(),
                inventory: Some(v1::Inventory {
                    logical_cores: 16,
                    physical_cores: 8,
                    memory_total_bytes: 64 << 30,
                    memory_available_bytes: 60 << 30,
                    cpu_quota_millicores: 0,
                    memory_capped_by_cgroup: false,
                }),
                simulated: true,
                ..Default::default()
            }),
            first_heartbeat: None,
            serve_here: false,
        })),
    }
    .encode_to_vec();
    run("agent-stream-bytes", |g| {
        let data = if g.bool() {
            let mut d = valid.clone();
            g.mutate_bytes(&mut d);
            d
        } else {
            g.bytes()
        };
        if let Ok(msg) = v1::AgentMessage::decode(data.as_slice())
            && let Some(v1::agent_message::Msg::Hello(h)) = &msg.msg
            && let Err(e) = validate::hello(h)
        {
            check_rejection("hello.", &e);
        }
    });
}

fn cidr(g: &mut Gen) -> String {
    match g.rng.u8(..4) {
        0 => String::new(),
        1 => format!(
            "{}/{}",
            g.pick(&["10.0.0.0", "fd00::", "::", "300.0.0.0"]),
            g.u32() % 200
        ),
        2 => format!("10.0.0.0/{}", g.string()),
        _ => g.string(),
    }
}

#[test]
fn pool_spec_validation_holds_on_hostile_input() {
    run("pool-spec", |g| {
        let spec = v1::PoolSpec {
            name: if g.bool() { "web".into() } else { g.string() },
            cores: if g.bool() { 8 } else { g.u64() },
            memory_bytes: if g.bool() { 32 << 30 } else { g.u64() },
            control_planes: if g.bool() { 1 } else { g.u32() },
            kubernetes_version: match g.rng.u8(..4) {
                0 => String::new(),
                1 => format!("v1.{}.{}", g.u64(), g.string()),
                2 => format!("v{}.{}.{}", g.u64(), g.u64(), "9".repeat(g.len())),
                _ => g.string(),
            },
            pod_network_cidr: cidr(g),
            service_cidr: cidr(g),
            vip: if g.bool() { String::new() } else { g.string() },
            lb_range: if g.bool() { String::new() } else { cidr(g) },
            zone_policy: match g.rng.u8(..4) {
                0 => String::new(),
                1 => "spread".into(),
                2 => "pack".into(),
                _ => g.string(),
            },
            zones: (0..g.rng.usize(..4)).map(|_| g.string()).collect(),
            image_repository: if g.bool() { String::new() } else { g.string() },
            ..Default::default()
        };
        match pools::spec("spec", Some(&spec)) {
            Ok(s) => {
                assert!(is_dns_label(&s.name, 40), "accepted pool name {:?}", s.name);
                assert!((1..=1_000_000).contains(&s.cores));
                assert!(((1u64 << 30)..=(64u64 << 50)).contains(&s.memory_bytes));
                assert!([1, 3, 5].contains(&s.control_planes));
                assert!(
                    s.image_repository.is_empty()
                        || (rpool_proto::kube::kubeadm_check::is_image_repository(&s.image_repository)
                            && !s.image_repository.bytes().any(|b| b.is_ascii_uppercase())),
                    "accepted image repository {:?}",
                    s.image_repository
                );
                assert!(
                    s.kubernetes_version.len() <= 32,
                    "accepted version {:?}",
                    s.kubernetes_version
                );
                for cidr in [&s.pod_network_cidr, &s.service_cidr] {
                    assert!(cidr.len() <= 43, "accepted CIDR {cidr:?}");
                    let (ip, bits) = cidr.split_once('/').expect("accepted CIDR has a prefix length");
                    let max = if ip.contains(':') { 128 } else { 32 };
                    assert!(
                        bits.parse::<u8>().is_ok_and(|b| b <= max),
                        "accepted CIDR {cidr:?}"
                    );
                }
            }
            Err(e) => check_rejection("spec.", &e),
        }
    });
}

#[test]
fn label_requests_hold_on_hostile_input() {
    run("set-host-labels", |g| {
        let r = v1::SetHostLabelsRequest {
            host_id: g.string(),
            set: (0..g.rng.usize(..70)).map(|_| (g.string(), g.string())).collect(),
            remove: (0..g.rng.usize(..70)).map(|_| g.string()).collect(),
        };
        match validate::set_host_labels(&r) {
            Ok(()) => {
                assert!(r.set.len() <= LABELS_MAX);
                for (k, v) in &r.set {
                    assert!((1..=LABEL_KEY_MAX_CHARS).contains(&k.chars().count()));
                    assert!(v.chars().count() <= LABEL_VALUE_MAX_CHARS);
                }
            }
            Err(e) => check_rejection("", &e),
        }
    });
}
