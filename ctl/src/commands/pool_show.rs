//! `rpoolctl pool show NAME`.

use anyhow::Context;
use clap::Args;
use rpool_proto::units::format_size;
use std::collections::BTreeMap;

use rpool_proto::v1::{GetPoolRequest, ListEventsRequest, ListHostsRequest, Pool};

use super::pool::{indent, parse_pool_name, totals_against_request};
use crate::client::{self, Controller};
use crate::clock;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::{Table, key_values};
use crate::view::{AutoscaleView, EventView, PoolView};

/// Show one pool: spec, phase and why, API endpoint, members (role, state,
/// node, zone, size, last error), worker totals against the request, and
/// its recent events.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool show web
  rpoolctl pool show web -o json | jq '.members[] | select(.last_error != \"\")'")]
pub struct ShowArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub name: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn exec(args: ShowArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let mut view = PoolView::from(&get(&ctl, &args.name).await?);
    // The members' liveness and the storm guard, best effort: without them
    // the pool is still shown, with liveness unknown.
    let hosts = crate::rpc!(ctl, list_hosts, ListHostsRequest::default())
        .map(|r| r.hosts)
        .unwrap_or_default();
    let events = crate::rpc!(
        ctl,
        list_events,
        ListEventsRequest {
            limit: STORM_LOOKBACK,
            ..Default::default()
        }
    )
    .map(|r| r.events)
    .unwrap_or_default();
    let liveness: BTreeMap<String, String> = hosts
        .iter()
        .map(|h| (h.host_id.clone(), crate::view::state_name(h.state).to_string()))
        .collect();
    let storm = events
        .iter()
        .rev()
        .find(|e| e.kind == "storm" || e.kind == "storm_over")
        .is_some_and(|e| e.kind == "storm");
    judge_liveness(&mut view, &liveness, storm);
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render(&view, rpool_proto::clock::unix_ms_now())),
    }
}

/// How many of the latest events `pool show` looks through for a storm alert.
const STORM_LOOKBACK: u32 = 200;

/// Fills each member's liveness from the hosts' states and, when some are
/// not alive, says what rpool is doing about it: replacing them, holding
/// back (a storm: many hosts silent at once), waiting for the control
/// planes' etcd quorum, finding no free host, or waiting for suspect hosts
/// to be declared down.
pub fn judge_liveness(view: &mut PoolView, liveness: &BTreeMap<String, String>, storm: bool) {
    for m in &mut view.members {
        m.liveness = liveness.get(&m.host_id).cloned().unwrap_or_default();
    }
    let named = |state: &str| -> Vec<String> {
        view.members
            .iter()
            .filter(|m| m.liveness == state && m.state != "replaced")
            .map(|m| m.hostname.clone())
            .collect()
    };
    let (down, suspect) = (named("down"), named("suspect"));
    if down.is_empty() && suspect.is_empty() {
        view.attention = None;
        return;
    }
    let mut what = Vec::new();
    if !down.is_empty() {
        what.push(format!("{} down ({})", down.len(), down.join(", ")));
    }
    if !suspect.is_empty() {
        what.push(format!("{} suspect ({})", suspect.len(), suspect.join(", ")));
    }
    let planes: Vec<&crate::view::MemberView> = view
        .members
        .iter()
        .filter(|m| m.role == "control-plane" && m.state != "replaced")
        .collect();
    let planes_down = planes.iter().filter(|m| m.liveness == "down").count();
    let last_kind = view.events.last().map(|e| e.kind.as_str()).unwrap_or_default();
    let doing = if storm {
        "holding back: a storm alert is out (many hosts went silent at once, more like a network \
         problem than failed hosts), so nothing is replaced until it is over (`rpoolctl events`)"
            .to_string()
    } else if !planes.is_empty() && planes_down * 2 >= planes.len() {
        format!(
            "waiting for quorum: {planes_down} of {} control planes down, etcd has no majority",
            planes.len()
        )
    } else if last_kind == "no_replacement" {
        "no free host can replace it (see the events below)".to_string()
    } else if down.is_empty() {
        "waiting: a suspect host is replaced only once it is declared down".to_string()
    } else if view.phase == "healing" || view.members.iter().any(|m| m.state == "joining") {
        "replacing: a fleet host is joining in its place".to_string()
    } else {
        "a replacement is due".to_string()
    };
    view.attention = Some(format!("members {}; {doing}", what.join(", ")));
}

/// `GetPool` (NOT_FOUND exits 3).
pub async fn get(ctl: &Controller, name: &str) -> anyhow::Result<Pool> {
    crate::rpc!(
        ctl,
        get_pool,
        GetPoolRequest {
            name: name.to_string()
        }
    )
    .with_context(|| format!("showing pool {name}"))
}

/// The human view of one pool; `now_ms` makes ages deterministic in tests.
pub fn render(p: &PoolView, now_ms: u64) -> String {
    let phase = if p.phase_reason.is_empty() {
        p.phase.clone()
    } else {
        format!("{} ({})", p.phase, p.phase_reason)
    };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let c = p.counts();
    let created = if p.created_at_unix_ms == 0 {
        "-".to_string()
    } else {
        format!(
            "{} ({} ago)",
            clock::format_utc(p.created_at_unix_ms),
            clock::age(now_ms, p.created_at_unix_ms)
        )
    };
    let mut pairs = vec![("Name", p.name.clone()), ("Phase", phase)];
    if let Some(attention) = &p.attention {
        pairs.push(("Attention", attention.clone()));
    }
    pairs.extend([
        ("Endpoint", or_dash(&p.control_plane_endpoint)),
        ("Kubernetes", or_dash(&p.kubernetes_version)),
        (
            "Networks",
            format!(
                "pods {}, services {}",
                or_dash(&p.pod_network_cidr),
                or_dash(&p.service_cidr)
            ),
        ),
        (
            "Control planes",
            format!(
                "{} wanted, {}/{} joined",
                p.control_planes, c.control_planes_joined, c.control_planes
            ),
        ),
        (
            "Workers",
            format!(
                "{}/{} joined{}",
                c.workers_joined,
                c.workers,
                if c.leaving > 0 {
                    format!(", {} leaving", c.leaving)
                } else {
                    String::new()
                }
            ),
        ),
        (
            "Capacity",
            totals_against_request(p.worker_cores, p.worker_memory_bytes, p.cores, p.memory_bytes),
        ),
        ("Created", created),
    ]);
    // Shown when set (a pool without them reads as before).
    if !p.vip.is_empty() {
        let at = pairs
            .iter()
            .position(|(k, _)| *k == "Endpoint")
            .map_or(pairs.len(), |i| i + 1);
        pairs.insert(at, ("VIP", format!("{} (kube-vip on the control planes)", p.vip)));
    }
    if !p.lb_range.is_empty() {
        pairs.push(("Load balancers", format!("{} (MetalLB)", p.lb_range)));
    }
    if let Some(u) = &p.upgrade {
        pairs.push((
            "Upgrade",
            format!(
                "{} -> {}: {}/{} members done (workers {} at a time)",
                u.from, u.to, u.members_done, u.members_total, u.max_unavailable
            ),
        ));
    }
    if let Some(c) = &p.certificates {
        pairs.push(("Certificates", certificates_line(c)));
    }
    if !p.image_repository.is_empty() {
        pairs.push(("Images", format!("from {}", p.image_repository)));
    }
    if let Some(a) = &p.autoscale {
        pairs.push(("Autoscale", super::pool_autoscale::describe(a)));
        pairs.push(("Autoscaler", autoscaler_line(a, now_ms)));
    }
    let mut text = key_values(&pairs);
    text.push_str("Members:\n");
    if p.members.is_empty() {
        text.push_str("  (none)\n");
    } else {
        let mut table = Table::new([
            "ROLE",
            "HOSTNAME",
            "ID",
            "LIVENESS",
            "STATE",
            "NODE",
            "ZONE",
            "CORES",
            "MEMORY",
            "VERSION",
            "LAST ERROR",
        ]);
        for m in &p.members {
            table.row([
                m.role.clone(),
                m.hostname.clone(),
                m.host_id.chars().take(8).collect(),
                if m.liveness.is_empty() {
                    "-".to_string()
                } else {
                    m.liveness.clone()
                },
                m.state.clone(),
                m.node_name.clone(),
                m.zone.clone(),
                m.cores.to_string(),
                format_size(m.memory_bytes),
                match (m.kubernetes_version.as_str(), m.upgrade_step.as_str()) {
                    ("", _) => "-".to_string(),
                    (v, "") => v.to_string(),
                    (v, step) => format!("{v} ({step})"),
                },
                m.last_error.clone(),
            ]);
        }
        text.push_str(&indent(&table.render()));
    }
    text.push_str(&super::pool_zones::zone_block(
        &format!(
            "Workers per zone ({})",
            super::pool_zones::policy_text(&p.zone_policy, &p.zones)
        ),
        &p.zone_totals,
    ));
    text.push_str("Recent events:\n");
    if p.events.is_empty() {
        text.push_str("  (none)\n");
    } else {
        text.push_str(&indent(&events_table(&p.events, false)));
    }
    text
}

/// Why the autoscaler did or did not scale, with the signals it saw:
/// `holding: cpu 55% within target 70%, ... (cpu 55%, memory 40%, 0 pods
/// pending; 1.2s ago)`.
/// "apiserver on cp1 expires 2027-12-06 23:12 UTC (364 days left)", with
/// the alert raised and a renewal in progress.
fn certificates_line(c: &crate::view::CertsView) -> String {
    let mut line = if c.name.is_empty() {
        "not reported yet".to_owned()
    } else {
        format!(
            "{} on {} expires {} ({} days left{})",
            c.name,
            c.hostname,
            rpool_proto::clock::format_utc(c.expires_unix_ms),
            c.days_left,
            match c.alerted_days {
                0 => String::new(),
                d => format!("; under {d} days: renew with `rpoolctl pool renew-certs`"),
            }
        )
    };
    if let Some(r) = &c.renewal {
        line.push_str(&format!(
            "; renewing: {}/{} control planes done",
            r.control_planes_done, r.control_planes_total
        ));
    }
    line
}

fn autoscaler_line(a: &AutoscaleView, now_ms: u64) -> String {
    match &a.status {
        None => "not judged yet (the leader judges every pool each 200ms)".to_string(),
        Some(s) => format!(
            "{} (cpu {:.0}%, memory {:.0}%, {} pending; {} ago)",
            s.explanation,
            s.cpu_percent,
            s.memory_percent,
            super::pool::plural(s.pending_pods as usize, "pod", "pods"),
            clock::age(now_ms, s.at_unix_ms)
        ),
    }
}

/// Events as a TIME/[POOL/]KIND/MESSAGE table.
pub fn events_table(events: &[EventView], with_pool: bool) -> String {
    let header: &[&str] = if with_pool {
        &["TIME", "POOL", "KIND", "MESSAGE"]
    } else {
        &["TIME", "KIND", "MESSAGE"]
    };
    let mut table = Table::new(header.iter().copied());
    for e in events {
        let mut row = vec![clock::format_utc(e.at_unix_ms)];
        if with_pool {
            row.push(if e.pool.is_empty() {
                "-".into()
            } else {
                e.pool.clone()
            });
        }
        row.push(if e.severity == "alert" {
            format!("{} (ALERT)", e.kind)
        } else {
            e.kind.clone()
        });
        row.push(e.message.clone());
        table.row(row);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::pool_wait::tests::pool;

    #[test]
    fn show_has_spec_phase_members_totals_and_events() {
        let mut p = pool(
            "degraded",
            &["joined", "joined", "joining"],
            Some("join_worker on sim-a-3 failed"),
        );
        p.phase_reason = "join_worker on sim-a-3 failed 5 times: bad token".into();
        p.members[2].last_error = "bad token".into();
        let text = render(&PoolView::from(&p), 1_700_000_310_000);
        assert_eq!(
            text,
            "Name:            web\n\
             Phase:           degraded (join_worker on sim-a-3 failed 5 times: bad token)\n\
             Endpoint:        sim-a-1:6443\n\
             Kubernetes:      v1.32.0\n\
             Networks:        pods 10.244.0.0/16, services 10.96.0.0/12\n\
             Control planes:  1 wanted, 1/1 joined\n\
             Workers:         1/2 joined\n\
             Capacity:        32 cores / 128GiB for a request of 30 cores / 120GiB (over by 2 cores, 8GiB)\n\
             Created:         2023-11-14T22:13:20Z (5m10s ago)\n\
             Members:\n\
             \x20 ROLE           HOSTNAME  ID        LIVENESS  STATE    NODE         ZONE  CORES  MEMORY  VERSION  LAST ERROR\n\
             \x20 control-plane  sim-a-1   id-sim-a  -         joined   web-sim-a-1  a     16     64GiB   -\n\
             \x20 worker         sim-a-2   id-sim-a  -         joined   web-sim-a-2  a     16     64GiB   -\n\
             \x20 worker         sim-a-3   id-sim-a  -         joining  web-sim-a-3  a     16     64GiB   -        bad token\n\
             Recent events:\n\
             \x20 TIME                  KIND       MESSAGE\n\
             \x20 2023-11-14T22:13:21Z  task_done  join_worker on sim-a-3 failed\n"
        );
    }

    #[test]
    fn dead_members_show_in_the_liveness_column_and_the_attention_line_says_what_rpool_does() {
        let p = pool("ready", &["joined", "joined", "joined"], None);
        let mut view = PoolView::from(&p);
        let ids: Vec<String> = view.members.iter().map(|m| m.host_id.clone()).collect();
        let states = |s: [&str; 3]| -> BTreeMap<String, String> {
            ids.iter().cloned().zip(s.iter().map(|x| x.to_string())).collect()
        };
        judge_liveness(&mut view, &states(["ready", "ready", "ready"]), false);
        assert_eq!(view.attention, None);
        assert_eq!(view.members[1].liveness, "ready");

        judge_liveness(&mut view, &states(["ready", "down", "suspect"]), false);
        let said = view.attention.clone().unwrap();
        assert!(
            said.starts_with("members 1 down (sim-a-2), 1 suspect (sim-a-3); "),
            "{said}"
        );
        assert!(said.contains("a replacement is due"), "{said}");
        let text = render(&view, 1_700_000_310_000);
        assert!(text.contains("Attention:"), "{text}");
        assert!(text.contains("down "), "{text}");

        view.phase = "healing".into();
        judge_liveness(&mut view, &states(["ready", "down", "ready"]), false);
        assert!(
            view.attention.clone().unwrap().contains("replacing"),
            "{:?}",
            view.attention
        );

        judge_liveness(&mut view, &states(["ready", "down", "down"]), true);
        assert!(
            view.attention
                .clone()
                .unwrap()
                .contains("holding back: a storm alert"),
            "{:?}",
            view.attention
        );

        judge_liveness(&mut view, &states(["down", "ready", "ready"]), false);
        assert!(
            view.attention
                .clone()
                .unwrap()
                .contains("waiting for quorum: 1 of 1 control planes down"),
            "{:?}",
            view.attention
        );

        judge_liveness(&mut view, &states(["ready", "suspect", "ready"]), false);
        assert!(
            view.attention
                .clone()
                .unwrap()
                .contains("waiting: a suspect host"),
            "{:?}",
            view.attention
        );
    }

    #[test]
    fn show_explains_the_autoscaler() {
        let mut p = pool("ready", &["joined", "joined"], None);
        p.autoscale = Some(rpool_proto::v1::AutoscalePolicy {
            min_cores: 16,
            max_cores: 64,
            cpu_target_percent: 70,
            memory_target_percent: 80,
            up_window_ms: 60_000,
            down_window_ms: 600_000,
            cooldown_ms: 300_000,
            last_scaled_at_unix_ms: 0,
        });
        let text = render(&PoolView::from(&p), 1_700_000_310_000);
        assert!(
            text.contains("\nAutoscale:       16..=64 worker cores, cpu target 70%, memory target 80%, up-window 1m, down-window 10m, cooldown 5m\n"),
            "{text}"
        );
        assert!(text.contains("\nAutoscaler:      not judged yet"), "{text}");
        p.autoscale_status = Some(rpool_proto::v1::AutoscaleStatus {
            decision: "hold".into(),
            explanation: "holding: cooldown 3m12s left".into(),
            at_unix_ms: 1_700_000_309_000,
            cpu_percent: 91.2,
            memory_percent: 40.0,
            pending_pods: 1,
        });
        let text = render(&PoolView::from(&p), 1_700_000_310_000);
        assert!(
            text.contains("\nAutoscaler:      holding: cooldown 3m12s left (cpu 91%, memory 40%, 1 pod pending; 1s ago)\n"),
            "{text}"
        );
        let json = serde_json::to_value(PoolView::from(&p)).unwrap();
        assert_eq!(json["autoscale"]["min_cores"], 16);
        assert_eq!(json["autoscale"]["status"]["decision"], "hold");
    }

    #[test]
    fn a_pool_without_members_or_events_says_none() {
        let p = pool("deleting", &[], None);
        let text = render(&PoolView::from(&p), 1_700_000_000_000);
        assert!(
            text.contains("Members:\n  (none)\nRecent events:\n  (none)\n"),
            "{text}"
        );
    }

    #[test]
    fn a_proto_pool_maps_to_the_documented_json_schema() {
        let p = pool("ready", &["joined"], Some("pool web is ready"));
        let json = serde_json::to_value(PoolView::from(&p)).unwrap();
        let want = serde_json::json!({
            "name": "web",
            "phase": "ready",
            "phase_reason": "",
            "cores": 30,
            "memory_bytes": 128_849_018_880u64,
            "control_planes": 1,
            "kubernetes_version": "v1.32.0",
            "control_plane_endpoint": "sim-a-1:6443",
            "vip": "",
            "lb_range": "",
            "image_repository": "",
            "worker_cores": 32,
            "worker_memory_bytes": 137_438_953_472u64,
            "created_at_unix_ms": 1_700_000_000_000u64,
            "members": [{
                "host_id": "id-sim-a-1", "hostname": "sim-a-1", "zone": "a",
                "role": "control-plane", "node_name": "web-sim-a-1", "state": "joined",
                "cores": 16, "memory_bytes": 68_719_476_736u64, "last_error": "", "liveness": "",
                "kubernetes_version": "", "upgrade_step": "", "cert_expires_unix_ms": 0
            }],
            "events": [{
                "index": 7, "at_unix_ms": 1_700_000_001_000u64, "pool": "web", "host_id": "",
                "kind": "task_done", "message": "pool web is ready", "severity": "info"
            }],
            "zone_policy": "any",
            "zones": [],
            "zone_totals": []
        });
        assert_eq!(json, want);
        // Keys in schema order.
        let text = serde_json::to_string(&PoolView::from(&p)).unwrap();
        let order = [
            "\"name\"",
            "\"phase\"",
            "\"phase_reason\"",
            "\"cores\"",
            "\"memory_bytes\"",
            "\"control_planes\"",
            "\"kubernetes_version\"",
            "\"control_plane_endpoint\"",
            "\"vip\"",
            "\"lb_range\"",
            "\"image_repository\"",
            "\"worker_cores\"",
            "\"worker_memory_bytes\"",
            "\"created_at_unix_ms\"",
            "\"members\"",
            "\"events\"",
        ];
        let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn a_pool_with_a_vip_and_an_lb_range_shows_both() {
        let mut p = pool("ready", &["joined"], None);
        if let Some(spec) = p.spec.as_mut() {
            spec.vip = "198.51.100.1".into();
            spec.lb_range = "198.51.100.32/28".into();
            spec.image_repository = "mirror.example:5000/k8s".into();
        }
        p.control_plane_endpoint = "198.51.100.1:6443".into();
        let view = PoolView::from(&p);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            (json["vip"].as_str(), json["lb_range"].as_str()),
            (Some("198.51.100.1"), Some("198.51.100.32/28"))
        );
        assert_eq!(json["image_repository"], "mirror.example:5000/k8s");
        let text = render(&view, 1_700_000_100_000);
        assert!(
            text.contains("198.51.100.1 (kube-vip on the control planes)"),
            "{text}"
        );
        assert!(text.contains("198.51.100.32/28 (MetalLB)"), "{text}");
        assert!(text.contains("from mirror.example:5000/k8s"), "{text}");
    }

    #[test]
    fn a_pool_without_a_spec_maps_to_empty_fields() {
        let json = serde_json::to_value(PoolView::from(&Pool::default())).unwrap();
        assert_eq!(json["name"], "");
        assert_eq!(json["members"], serde_json::json!([]));
    }
}
