//! `--wait`: polling a pool until it is ready (create, resize) or gone
//! (destroy), with a progress line each time something changes.
//!
//! The progress line says the phase, how many members joined, and the
//! pool's last event: `[12s] pool web: provisioning, 2/4 members joined;
//! last event: ...`. Outcomes: ready (Ok), degraded (exit 1 with the
//! reason), the budget spent (exit 75), the pool gone while waiting for it
//! to be ready (exit 3). Controllers that fail over or stop answering for a
//! while are waited out until the budget ends.

use std::time::Duration;

use anyhow::Context;
use rpool_proto::units::format_duration;
use rpool_proto::v1::GetPoolRequest;
use tokio::time::Instant;

use super::pool::plural;
use crate::client::Controller;
use crate::exit::{self, Failure};
use crate::view::PoolView;

/// How often the pool is polled.
pub const POLL: Duration = Duration::from_secs(1);

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Phase `ready` (create, resize).
    Ready,
    /// `GetPool` answers NOT_FOUND (destroy).
    Gone,
}

impl Until {
    fn describe(self) -> &'static str {
        match self {
            Until::Ready => "to be ready",
            Until::Gone => "to be gone",
        }
    }
}

/// Bounds of one wait.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// The whole wait.
    pub budget: Duration,
    /// Between polls.
    pub poll: Duration,
}

/// The progress text of a pool, without the elapsed time:
/// `pool web: provisioning, 2/4 members joined; last event: ...`.
pub fn progress_text(pool: &PoolView, until: Until) -> String {
    let c = pool.counts();
    let members = match until {
        Until::Ready if pool.upgrade.is_some() => {
            let u = pool.upgrade.as_ref().expect("checked");
            format!("{}/{} members at {}", u.members_done, u.members_total, u.to)
        }
        Until::Gone => format!("{} left", plural(c.staying + c.leaving, "member", "members")),
        Until::Ready if c.leaving > 0 => {
            format!("{}/{} members joined, {} leaving", c.joined, c.staying, c.leaving)
        }
        Until::Ready => format!("{}/{} members joined", c.joined, c.staying),
    };
    let mut text = format!("pool {}: {}, {members}", pool.name, pool.phase);
    if let Some(event) = pool.events.last() {
        text.push_str("; last event: ");
        text.push_str(&event.message);
    }
    text
}

/// `[12s] ` + the progress text.
pub fn progress_line(elapsed: Duration, text: &str) -> String {
    format!(
        "[{}] {text}",
        format_duration(Duration::from_secs(elapsed.as_secs()))
    )
}

/// [`wait`] within the `--timeout` budget of `settings`, progress lines on
/// stderr (stdout keeps only the command's output): what `--wait` does.
pub async fn wait_on_stderr(
    ctl: &Controller,
    name: &str,
    until: Until,
    settings: &crate::settings::Settings,
) -> anyhow::Result<Option<PoolView>> {
    let bounds = Wait {
        budget: super::pool::wait_budget(settings),
        poll: POLL,
    };
    wait(ctl, name, until, bounds, &mut |line| eprintln!("{line}")).await
}

/// Polls pool `name` until `until`, calling `progress` with a line each
/// time the progress text changes (and when polls fail). Returns the pool
/// once ready, or `None` once gone.
pub async fn wait(
    ctl: &Controller,
    name: &str,
    until: Until,
    bounds: Wait,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Option<PoolView>> {
    let start = Instant::now();
    let deadline = start + bounds.budget;
    let mut last_text = String::new();
    let mut last_seen: Option<PoolView> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = tokio::time::timeout(left, async {
            crate::rpc!(
                ctl,
                get_pool,
                GetPoolRequest {
                    name: name.to_string()
                }
            )
        })
        .await;
        match answer {
            Err(_) => return Err(timed_out(name, until, bounds.budget, last_seen.as_ref()).into()),
            Ok(Ok(pool)) => {
                let view = PoolView::from(&pool);
                let text = progress_text(&view, until);
                if text != last_text {
                    progress(&progress_line(start.elapsed(), &text));
                    last_text = text;
                }
                if until == Until::Ready {
                    match view.phase.as_str() {
                        "ready" => return Ok(Some(view)),
                        "degraded" => {
                            return Err(Failure::new(
                                exit::UNEXPECTED,
                                format!("pool {name} is degraded: {}", view.phase_reason),
                            )
                            .into());
                        }
                        _ => {}
                    }
                }
                last_seen = Some(view);
            }
            Ok(Err(f)) if f.code == exit::NOT_FOUND => {
                if until == Until::Gone {
                    progress(&progress_line(start.elapsed(), &format!("pool {name}: gone")));
                    return Ok(None);
                }
                return Err(Failure::new(
                    exit::NOT_FOUND,
                    format!(
                        "pool {name} disappeared while waiting for it {} ({})",
                        until.describe(),
                        f.message
                    ),
                )
                .into());
            }
            Ok(Err(f)) if f.code == exit::UNAVAILABLE || f.code == exit::TIMED_OUT => {
                // A failover or a slow controller: keep waiting, say so once.
                let text = format!("pool {name}: no answer ({}); still waiting", f.message);
                if text != last_text {
                    progress(&progress_line(start.elapsed(), &text));
                    last_text = text;
                }
            }
            Ok(Err(f)) => {
                return Err(f).with_context(|| format!("waiting for pool {name} {}", until.describe()));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(name, until, bounds.budget, last_seen.as_ref()).into());
        }
        tokio::time::sleep(bounds.poll.min(left)).await;
    }
}

/// Exit 75, with where the pool was and that the controller carries on.
fn timed_out(name: &str, until: Until, budget: Duration, last: Option<&PoolView>) -> Failure {
    let state = last.map_or(String::new(), |p| {
        format!(
            " (last seen: {})",
            progress_text(p, until).trim_start_matches(&format!("pool {name}: "))
        )
    });
    Failure::new(
        exit::TIMED_OUT,
        format!(
            "timed out after {} waiting for pool {name} {}{state}; the controller carries on: \
             see rpoolctl pool show {name} (raise --timeout to wait longer)",
            format_duration(budget),
            until.describe()
        ),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{Fake, Seen};
    use crate::view::{EventView, MemberView};
    use rpool_proto::v1::{Event, Pool, PoolMember, PoolSpec};
    use tonic::Status;

    pub(crate) fn member(role: &str, host: &str, state: &str) -> PoolMember {
        PoolMember {
            host_id: format!("id-{host}"),
            hostname: host.into(),
            zone: host.split('-').nth(1).unwrap_or("a").into(),
            role: role.into(),
            node_name: format!("web-{host}"),
            state: state.into(),
            cores: 16,
            memory_bytes: 64 << 30,
            last_error: String::new(),
            ..Default::default()
        }
    }

    pub(crate) fn pool(phase: &str, states: &[&str], last_event: Option<&str>) -> Pool {
        Pool {
            spec: Some(PoolSpec {
                name: "web".into(),
                cores: 30,
                memory_bytes: 120 << 30,
                control_planes: 1,
                kubernetes_version: "v1.32.0".into(),
                pod_network_cidr: "10.244.0.0/16".into(),
                service_cidr: "10.96.0.0/12".into(),
                vip: String::new(),
                lb_range: String::new(),
                ..Default::default()
            }),
            phase: phase.into(),
            phase_reason: String::new(),
            members: states
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let role = if i == 0 { "control-plane" } else { "worker" };
                    member(role, &format!("sim-a-{}", i + 1), s)
                })
                .collect(),
            worker_cores: 32,
            worker_memory_bytes: 128 << 30,
            control_plane_endpoint: "sim-a-1:6443".into(),
            created_at_unix_ms: 1_700_000_000_000,
            recent_events: last_event
                .map(|m| Event {
                    index: 7,
                    at_unix_ms: 1_700_000_001_000,
                    pool: "web".into(),
                    host_id: String::new(),
                    kind: "task_done".into(),
                    message: m.into(),
                    severity: String::new(),
                    audit: None,
                })
                .into_iter()
                .collect(),
            autoscale: None,
            autoscale_status: None,
            ..Default::default()
        }
    }

    const FAST: Wait = Wait {
        budget: Duration::from_secs(5),
        poll: Duration::from_millis(10),
    };

    #[test]
    fn progress_says_phase_members_joined_and_the_last_event() {
        let view = PoolView::from(&pool(
            "provisioning",
            &["joined", "joining", "joined"],
            Some("joined sim-a-3"),
        ));
        assert_eq!(
            progress_text(&view, Until::Ready),
            "pool web: provisioning, 2/3 members joined; last event: joined sim-a-3"
        );
        let view = PoolView::from(&pool("resizing", &["joined", "joined", "leaving"], None));
        assert_eq!(
            progress_text(&view, Until::Ready),
            "pool web: resizing, 2/2 members joined, 1 leaving"
        );
        assert_eq!(
            progress_text(&view, Until::Gone),
            "pool web: resizing, 3 members left"
        );
        assert_eq!(progress_line(Duration::from_millis(12_700), "x"), "[12s] x");
        assert_eq!(progress_line(Duration::from_millis(300), "x"), "[0ms] x");
        let mut one = PoolView::from(&pool("deleting", &["leaving"], None));
        one.events.push(EventView {
            index: 1,
            at_unix_ms: 0,
            pool: "web".into(),
            host_id: String::new(),
            kind: "k".into(),
            message: "m".into(),
            severity: "info".into(),
            audit: None,
        });
        one.members
            .push(MemberView::from(&member("worker", "sim-b-1", "leaving")));
        assert_eq!(
            progress_text(&one, Until::Gone),
            "pool web: deleting, 2 members left; last event: m"
        );
    }

    #[tokio::test]
    async fn waiting_for_ready_reports_each_change_once_and_returns_the_pool() {
        let fake = Fake::default();
        fake.script_get_pool([
            Ok(pool("provisioning", &["joining", "joining"], None)),
            Ok(pool("provisioning", &["joining", "joining"], None)),
            Err(Status::unavailable("leader election")),
            Ok(pool(
                "provisioning",
                &["joined", "joining"],
                Some("control plane up"),
            )),
            Ok(pool("ready", &["joined", "joined"], Some("pool web is ready"))),
        ]);
        let ctl = fake.clone().serve().await;
        let mut lines = Vec::new();
        let got = wait(&ctl, "web", Until::Ready, FAST, &mut |l| {
            lines.push(l.to_string())
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got.phase, "ready");
        let texts: Vec<&str> = lines.iter().map(|l| l.split_once("] ").unwrap().1).collect();
        assert_eq!(
            texts,
            [
                "pool web: provisioning, 0/2 members joined",
                "pool web: provisioning, 1/2 members joined; last event: control plane up",
                "pool web: ready, 2/2 members joined; last event: pool web is ready",
            ]
        );
        assert!(fake.seen().iter().all(|s| *s == Seen::GetPool("web".into())));
    }

    #[tokio::test]
    async fn degraded_exits_1_with_the_reason() {
        let fake = Fake::default();
        let mut degraded = pool("degraded", &["joined", "joining"], None);
        degraded.phase_reason = "join_worker on sim-a-2 failed 5 times: bad token".into();
        fake.script_get_pool([Ok(degraded)]);
        let ctl = fake.serve().await;
        let err = wait(&ctl, "web", Until::Ready, FAST, &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(exit::code_of(&err), 1);
        assert_eq!(
            format!("{err:#}"),
            "pool web is degraded: join_worker on sim-a-2 failed 5 times: bad token"
        );
    }

    #[tokio::test]
    async fn running_out_of_time_exits_75_saying_where_the_pool_was() {
        let fake = Fake::default();
        fake.script_get_pool([Ok(pool("provisioning", &["joined", "joining"], None))]);
        let ctl = fake.serve().await;
        let bounds = Wait {
            budget: Duration::from_millis(200),
            poll: Duration::from_millis(20),
        };
        let err = wait(&ctl, "web", Until::Ready, bounds, &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(exit::code_of(&err), exit::TIMED_OUT);
        let text = format!("{err:#}");
        assert!(
            text.starts_with(
                "timed out after 200ms waiting for pool web to be ready (last seen: provisioning, 1/2 members joined)"
            ),
            "{text}"
        );
        assert!(text.contains("raise --timeout"), "{text}");
    }

    #[tokio::test]
    async fn waiting_for_gone_ends_on_not_found_and_not_found_while_creating_is_an_error() {
        let fake = Fake::default();
        fake.script_get_pool([
            Ok(pool("deleting", &["leaving", "leaving"], None)),
            Err(Status::not_found("no pool named web")),
        ]);
        let ctl = fake.serve().await;
        let mut lines = Vec::new();
        let got = wait(&ctl, "web", Until::Gone, FAST, &mut |l| lines.push(l.to_string()))
            .await
            .unwrap();
        assert!(got.is_none());
        assert!(
            lines[0].ends_with("pool web: deleting, 2 members left"),
            "{lines:?}"
        );
        assert!(lines[1].ends_with("pool web: gone"), "{lines:?}");

        let fake = Fake::default();
        fake.script_get_pool([Err(Status::not_found("no pool named web"))]);
        let ctl = fake.serve().await;
        let err = wait(&ctl, "web", Until::Ready, FAST, &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(exit::code_of(&err), exit::NOT_FOUND);
        assert_eq!(
            format!("{err:#}"),
            "pool web disappeared while waiting for it to be ready (no pool named web)"
        );
    }
}
