//! `rpoolctl what-if host-down ID… | zone-down ZONE | controller-down ID…`:
//! what rpool would do if these went down now. Changes nothing: the leader
//! runs its own planner on a copy of its state (see the `WhatIf` RPC).
//!
//! `-o json` prints [`WhatIfView`]; its field names are a contract.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use rpool_proto::units::{format_duration, format_size};
use rpool_proto::v1::{WhatIfRequest, WhatIfResponse};
use serde::Serialize;

use crate::client;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::Table;

const EXAMPLES: &str = "\
Examples:
  rpoolctl what-if host-down sim-b-1                 # by hostname, id or unique id prefix
  rpoolctl what-if host-down 3f2a 9c1d               # several hosts at once
  rpoolctl what-if zone-down b                       # every host of zone b
  rpoolctl what-if controller-down 1                 # does the Raft group keep its quorum?
  rpoolctl what-if zone-down b -o json | jq '.replacements[] | {down: .hostname, by: [.replacements[].hostname]}'

Nothing is changed. The leader runs the planner it heals with on a copy of
its state: the hosts marked down for [healing] settle_ms, then planner round
after planner round, the tasks it issues to live hosts assumed to succeed.
The answer is what it would decide now; the fleet may change before a real
failure (hosts join, pools are resized).

Exit codes: 0 answered, 3 unknown host, zone or controller, 64 bad
arguments, 65 rejected, 69 no controller reachable.";

/// Ask what rpool would do if hosts, a zone or controllers went down now:
/// which pools fall below their request, which lose etcd quorum, which
/// members are replaced by which fleet hosts, what the storm guard holds
/// back, and whether the controller group keeps its quorum.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct WhatIfArgs {
    #[command(subcommand)]
    pub question: Question,
}

#[derive(Debug, Subcommand)]
pub enum Question {
    /// These hosts go down (hostnames, host ids or unique id prefixes)
    #[command(name = "host-down", after_help = EXAMPLES)]
    HostDown(HostDownArgs),
    /// Every host of a zone goes down
    #[command(name = "zone-down", after_help = EXAMPLES)]
    ZoneDown(ZoneDownArgs),
    /// These controllers go down (ids from `rpoolctl controller list`)
    #[command(name = "controller-down", after_help = EXAMPLES)]
    ControllerDown(ControllerDownArgs),
}

#[derive(Debug, Args)]
pub struct HostDownArgs {
    /// Hostname, host id or unique id prefix (at least 4 characters); several allowed
    #[arg(value_name = "ID|HOSTNAME", required = true, num_args = 1..)]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ZoneDownArgs {
    /// Zone name, as `rpoolctl host list` shows it
    #[arg(value_name = "ZONE")]
    pub zone: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ControllerDownArgs {
    /// Controller id (1..=2^63); several allowed
    #[arg(
        value_name = "ID",
        required = true,
        num_args = 1..,
        value_parser = crate::cli::whole_number::<u64>(1, super::controller::MAX_CONTROLLER_ID)
    )]
    pub ids: Vec<u64>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn exec(args: WhatIfArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let (request, question, format) = match args.question {
        Question::HostDown(a) => {
            let mut host_ids = Vec::with_capacity(a.hosts.len());
            for wanted in &a.hosts {
                host_ids.push(super::host::resolve_id(&ctl, wanted).await?);
            }
            (
                WhatIfRequest {
                    host_ids,
                    ..WhatIfRequest::default()
                },
                QuestionView {
                    kind: "host-down",
                    hosts: a.hosts.clone(),
                    ..QuestionView::default()
                },
                a.output.output,
            )
        }
        Question::ZoneDown(a) => (
            WhatIfRequest {
                zone: a.zone.clone(),
                ..WhatIfRequest::default()
            },
            QuestionView {
                kind: "zone-down",
                zone: a.zone.clone(),
                ..QuestionView::default()
            },
            a.output.output,
        ),
        Question::ControllerDown(a) => (
            WhatIfRequest {
                controller_ids: a.ids.clone(),
                ..WhatIfRequest::default()
            },
            QuestionView {
                kind: "controller-down",
                controllers: a.ids.clone(),
                ..QuestionView::default()
            },
            a.output.output,
        ),
    };
    let answer = crate::rpc!(ctl, what_if, request).context("asking what-if")?;
    let view = WhatIfView::new(question, &answer);
    match format {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render(&view)),
    }
}

/// The question, as asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuestionView {
    /// "host-down", "zone-down" or "controller-down".
    pub kind: &'static str,
    /// host-down: the hosts as given (hostnames, ids or prefixes).
    pub hosts: Vec<String>,
    /// zone-down: the zone ("" otherwise).
    pub zone: String,
    /// controller-down: the controller ids.
    pub controllers: Vec<u64>,
}

/// A host by id and hostname.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRef {
    pub host_id: String,
    pub hostname: String,
}

/// A host assumed down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DownHostView {
    pub host_id: String,
    pub hostname: String,
    pub zone: String,
    /// Its pool ("" = in the fleet) and role there ("" none).
    pub pool: String,
    pub role: String,
}

/// An affected pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolImpactView {
    pub name: String,
    /// Its members assumed down.
    pub members_down: Vec<HostRef>,
    pub control_planes: u32,
    pub control_planes_down: u32,
    /// No majority of control planes joined and ready: etcd has no quorum.
    pub etcd_quorum_lost: bool,
    pub cores_requested: u64,
    pub memory_requested_bytes: u64,
    /// Workers left right after the failure.
    pub worker_cores_left: u64,
    pub worker_memory_left_bytes: u64,
    pub below_request: bool,
    /// Workers once the replacements joined.
    pub worker_cores_after: u64,
    pub worker_memory_after_bytes: u64,
    pub below_request_after: bool,
    /// Phase and reason once rpool has done what it would do.
    pub phase_after: String,
    pub phase_reason_after: String,
}

/// A down member and its replacements (empty: only its node is removed,
/// the other workers still cover the request).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplacementView {
    pub pool: String,
    pub host_id: String,
    pub hostname: String,
    pub role: String,
    pub replacements: Vec<HostRef>,
    pub why: String,
}

/// A down member left in its pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldBackView {
    pub pool: String,
    pub host_id: String,
    pub hostname: String,
    pub role: String,
    /// "storm", "quorum_lost", "no_replacement", "healing_disabled", "waiting".
    pub reason: String,
    pub message: String,
}

/// The controller group afterwards.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ControllersView {
    pub voters: u32,
    pub down: Vec<u64>,
    pub reachable_after: u32,
    pub quorum: u32,
    pub keeps_quorum: bool,
    pub leader_down: bool,
    pub message: String,
}

/// `rpoolctl what-if … -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatIfView {
    pub question: QuestionView,
    /// How long after the hosts go silent healing would act (ms).
    pub acts_after_ms: u64,
    pub hosts_down: Vec<DownHostView>,
    /// Why the storm guard would hold every replacement back (null: it would not).
    pub storm: Option<String>,
    pub pools: Vec<PoolImpactView>,
    pub replacements: Vec<ReplacementView>,
    pub held_back: Vec<HeldBackView>,
    pub controllers: ControllersView,
}

impl WhatIfView {
    pub fn new(question: QuestionView, a: &WhatIfResponse) -> WhatIfView {
        let name_of = |id: &str| {
            a.hosts_down
                .iter()
                .find(|h| h.host_id == id)
                .map_or_else(|| id.to_owned(), |h| h.hostname.clone())
        };
        let c = a.controllers.clone().unwrap_or_default();
        WhatIfView {
            question,
            acts_after_ms: a.acts_after_ms,
            hosts_down: a
                .hosts_down
                .iter()
                .map(|h| DownHostView {
                    host_id: h.host_id.clone(),
                    hostname: h.hostname.clone(),
                    zone: h.zone.clone(),
                    pool: h.pool.clone(),
                    role: h.role.clone(),
                })
                .collect(),
            storm: (!a.storm.is_empty()).then(|| a.storm.clone()),
            pools: a
                .pools
                .iter()
                .map(|p| PoolImpactView {
                    name: p.name.clone(),
                    members_down: p
                        .members_down
                        .iter()
                        .map(|id| HostRef {
                            host_id: id.clone(),
                            hostname: name_of(id),
                        })
                        .collect(),
                    control_planes: p.control_planes,
                    control_planes_down: p.control_planes_down,
                    etcd_quorum_lost: p.etcd_quorum_lost,
                    cores_requested: p.cores_requested,
                    memory_requested_bytes: p.memory_requested_bytes,
                    worker_cores_left: p.worker_cores_left,
                    worker_memory_left_bytes: p.worker_memory_left_bytes,
                    below_request: p.below_request,
                    worker_cores_after: p.worker_cores_after,
                    worker_memory_after_bytes: p.worker_memory_after_bytes,
                    below_request_after: p.below_request_after,
                    phase_after: p.phase_after.clone(),
                    phase_reason_after: p.phase_reason_after.clone(),
                })
                .collect(),
            replacements: a
                .replacements
                .iter()
                .map(|r| ReplacementView {
                    pool: r.pool.clone(),
                    host_id: r.host_id.clone(),
                    hostname: r.hostname.clone(),
                    role: r.role.clone(),
                    replacements: r
                        .replacement_ids
                        .iter()
                        .zip(&r.replacement_hostnames)
                        .map(|(id, name)| HostRef {
                            host_id: id.clone(),
                            hostname: name.clone(),
                        })
                        .collect(),
                    why: r.why.clone(),
                })
                .collect(),
            held_back: a
                .held_back
                .iter()
                .map(|h| HeldBackView {
                    pool: h.pool.clone(),
                    host_id: h.host_id.clone(),
                    hostname: h.hostname.clone(),
                    role: h.role.clone(),
                    reason: h.reason.clone(),
                    message: h.message.clone(),
                })
                .collect(),
            controllers: ControllersView {
                voters: c.voters,
                down: c.down,
                reachable_after: c.reachable_after,
                quorum: c.quorum,
                keeps_quorum: c.keeps_quorum,
                leader_down: c.leader_down,
                message: c.message,
            },
        }
    }
}

fn resources(cores: u64, memory: u64) -> String {
    format!("{cores} cores / {}", format_size(memory))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The human answer: the question, then the four sections.
pub fn render(v: &WhatIfView) -> String {
    let mut out = String::new();
    let q = &v.question;
    let subject = match q.kind {
        "zone-down" => format!("zone {} went down", q.zone),
        "controller-down" => format!(
            "controller{} {} went down",
            if q.controllers.len() > 1 { "s" } else { "" },
            q.controllers
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!("{} went down", q.hosts.join(", ")),
    };
    out.push_str(&format!("What if {subject}? (nothing was changed)\n"));
    if !v.hosts_down.is_empty() {
        let names: Vec<String> = v
            .hosts_down
            .iter()
            .map(|h| format!("{} (zone {})", h.hostname, h.zone))
            .collect();
        out.push_str(&format!(
            "Hosts down: {}; healing acts {} after they go silent.\n",
            names.join(", "),
            format_duration(Duration::from_millis(v.acts_after_ms))
        ));
    }

    out.push_str("\nPools affected:\n");
    if v.pools.is_empty() {
        out.push_str("  none (no pool member is among the hosts down)\n");
    } else {
        let mut t = Table::new([
            "POOL",
            "MEMBERS DOWN",
            "CONTROL PLANES DOWN",
            "ETCD",
            "WORKERS LEFT",
            "REQUEST",
            "AFTER HEALING",
        ]);
        for p in &v.pools {
            let left = resources(p.worker_cores_left, p.worker_memory_left_bytes);
            let after = format!(
                "{}, {}{}",
                p.phase_after,
                resources(p.worker_cores_after, p.worker_memory_after_bytes),
                if p.below_request_after {
                    " (below request)"
                } else {
                    ""
                }
            );
            t.row([
                p.name.clone(),
                p.members_down
                    .iter()
                    .map(|h| h.hostname.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                format!("{} of {}", p.control_planes_down, p.control_planes),
                if p.etcd_quorum_lost {
                    "QUORUM LOST"
                } else {
                    "quorum kept"
                }
                .to_owned(),
                if p.below_request {
                    format!("{left} (BELOW REQUEST)")
                } else {
                    left
                },
                resources(p.cores_requested, p.memory_requested_bytes),
                after,
            ]);
        }
        out.push_str(&indent(&t.render()));
    }

    out.push_str("\nReplacements:\n");
    if v.replacements.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut t = Table::new(["POOL", "DOWN", "ROLE", "REPLACED BY"]);
        for r in &v.replacements {
            let by = if r.replacements.is_empty() {
                "nothing: the other workers still cover the request (node removed)".to_owned()
            } else {
                r.replacements
                    .iter()
                    .map(|h| h.hostname.clone())
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            t.row([
                r.pool.clone(),
                r.hostname.clone(),
                r.role.clone(),
                format!("→ {by}"),
            ]);
        }
        out.push_str(&indent(&t.render()));
    }

    out.push_str("\nHeld back by the storm guard:\n");
    match &v.storm {
        None => out.push_str("  nothing: no storm\n"),
        Some(why) => {
            out.push_str(&format!("  {why}\n"));
            let held: Vec<String> = v
                .held_back
                .iter()
                .filter(|h| h.reason == "storm")
                .map(|h| format!("{} ({}, {})", h.hostname, h.pool, h.role))
                .collect();
            if !held.is_empty() {
                out.push_str(&format!("  not replaced: {}\n", held.join(", ")));
            }
        }
    }
    let other: Vec<&HeldBackView> = v.held_back.iter().filter(|h| h.reason != "storm").collect();
    if !other.is_empty() {
        out.push_str("\nNot replaced for other reasons:\n");
        let mut t = Table::new(["POOL", "DOWN", "ROLE", "REASON", "ALERT"]);
        for h in other {
            t.row([
                h.pool.clone(),
                h.hostname.clone(),
                h.role.clone(),
                h.reason.clone(),
                h.message.clone(),
            ]);
        }
        out.push_str(&indent(&t.render()));
    }

    out.push_str("\nController quorum:\n");
    out.push_str(&format!("  {}\n", v.controllers.message));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpool_proto::v1;

    fn sample() -> WhatIfResponse {
        WhatIfResponse {
            hosts_down: vec![
                v1::WhatIfHost {
                    host_id: "b1".into(),
                    hostname: "w-b1".into(),
                    zone: "b".into(),
                    pool: "web".into(),
                    role: "worker".into(),
                },
                v1::WhatIfHost {
                    host_id: "b2".into(),
                    hostname: "w-b2".into(),
                    zone: "b".into(),
                    pool: "web".into(),
                    role: "worker".into(),
                },
            ],
            storm: "storm: 2 of 3 members of pool web silent at once (>= 50% of the pool); not replacing; \
                    check the network"
                .into(),
            pools: vec![v1::WhatIfPool {
                name: "web".into(),
                members_down: vec!["b1".into(), "b2".into()],
                control_planes: 1,
                control_planes_down: 0,
                etcd_quorum_lost: false,
                cores_requested: 16,
                memory_requested_bytes: 64 << 30,
                worker_cores_left: 0,
                worker_memory_left_bytes: 0,
                below_request: true,
                worker_cores_after: 0,
                worker_memory_after_bytes: 0,
                below_request_after: true,
                phase_after: "ready".into(),
                phase_reason_after: String::new(),
            }],
            replacements: vec![],
            held_back: vec![
                v1::WhatIfHeldBack {
                    pool: "web".into(),
                    host_id: "b1".into(),
                    hostname: "w-b1".into(),
                    role: "worker".into(),
                    reason: "storm".into(),
                    message: "storm: …".into(),
                },
                v1::WhatIfHeldBack {
                    pool: "web".into(),
                    host_id: "b2".into(),
                    hostname: "w-b2".into(),
                    role: "worker".into(),
                    reason: "storm".into(),
                    message: "storm: …".into(),
                },
            ],
            controllers: Some(v1::WhatIfControllers {
                voters: 3,
                down: vec![],
                reachable_after: 3,
                quorum: 2,
                keeps_quorum: true,
                leader_down: false,
                message:
                    "3 of 3 voters would answer (a quorum needs 2, asked within 1000 ms): the group keeps \
                          its quorum"
                        .into(),
            }),
            acts_after_ms: 5_000,
        }
    }

    fn zone_b() -> QuestionView {
        QuestionView {
            kind: "zone-down",
            zone: "b".into(),
            ..QuestionView::default()
        }
    }

    #[test]
    fn the_table_has_the_four_sections() {
        let text = render(&WhatIfView::new(zone_b(), &sample()));
        assert_eq!(
            text,
            "What if zone b went down? (nothing was changed)\n\
             Hosts down: w-b1 (zone b), w-b2 (zone b); healing acts 5s after they go silent.\n\
             \n\
             Pools affected:\n\
             \x20 POOL  MEMBERS DOWN  CONTROL PLANES DOWN  ETCD         WORKERS LEFT                  REQUEST           AFTER HEALING\n\
             \x20 web   w-b1, w-b2    0 of 1               quorum kept  0 cores / 0B (BELOW REQUEST)  16 cores / 64GiB  ready, 0 cores / 0B (below request)\n\
             \n\
             Replacements:\n\
             \x20 none\n\
             \n\
             Held back by the storm guard:\n\
             \x20 storm: 2 of 3 members of pool web silent at once (>= 50% of the pool); not replacing; check the network\n\
             \x20 not replaced: w-b1 (web, worker), w-b2 (web, worker)\n\
             \n\
             Controller quorum:\n\
             \x20 3 of 3 voters would answer (a quorum needs 2, asked within 1000 ms): the group keeps its quorum\n"
        );
    }

    #[test]
    fn the_json_shape_is_stable() {
        let mut answer = sample();
        answer.storm.clear();
        answer.held_back.clear();
        answer.replacements = vec![v1::WhatIfReplacement {
            pool: "web".into(),
            host_id: "b1".into(),
            hostname: "w-b1".into(),
            role: "worker".into(),
            replacement_ids: vec!["c2".into()],
            replacement_hostnames: vec!["w-c2".into()],
            why: "pool web: host w-b1 down (…), replacing with w-c2".into(),
        }];
        let json = serde_json::to_value(WhatIfView::new(zone_b(), &answer)).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "acts_after_ms",
                "controllers",
                "held_back",
                "hosts_down",
                "pools",
                "question",
                "replacements",
                "storm"
            ]
        );
        assert_eq!(json["storm"], serde_json::Value::Null);
        assert_eq!(json["question"]["kind"], "zone-down");
        assert_eq!(json["replacements"][0]["replacements"][0]["hostname"], "w-c2");
        assert_eq!(json["pools"][0]["members_down"][1]["hostname"], "w-b2");
        assert_eq!(json["pools"][0]["below_request"], true);
        assert_eq!(json["controllers"]["keeps_quorum"], true);
        let text = render(&WhatIfView::new(zone_b(), &answer));
        assert!(text.contains("web   w-b1  worker  → w-c2"), "{text}");
        assert!(
            text.contains("Held back by the storm guard:\n  nothing: no storm\n"),
            "{text}"
        );
    }

    #[test]
    fn the_subcommands_parse_and_bad_ids_are_usage_errors() {
        let parse = |args: &[&str]| {
            crate::cli::try_parse_from(std::iter::once("rpoolctl").chain(args.iter().copied()))
        };
        assert!(parse(&["what-if", "host-down", "sim-a-1", "3f2a"]).is_ok());
        assert!(parse(&["what-if", "zone-down", "b", "-o", "json"]).is_ok());
        assert!(parse(&["what-if", "controller-down", "1", "2"]).is_ok());
        assert!(parse(&["what-if", "host-down"]).is_err(), "an id is required");
        let err = parse(&["what-if", "controller-down", "-1"]).unwrap_err();
        assert!(
            err.to_string().contains("out of range (accepted an integer 1..="),
            "{err}"
        );
    }
}
