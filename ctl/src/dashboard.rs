//! The local web dashboard behind `rpoolctl dashboard`: one embedded page
//! (`dashboard.html`, HTML + CSS + JS, no external assets) and
//! `GET /api/state`, a JSON snapshot of the fleet that rpoolctl assembles
//! from the controllers over gRPC with the admin's own mTLS identity. The
//! browser never sees a certificate or key: it only talks to this server.
//!
//! Read-only: the server answers GET on `/` and `/api/state`, 405 for
//! other methods. Against DNS rebinding, a request whose `Host` is neither
//! `localhost[:PORT]` nor an IP literal is refused (403), so a page on
//! some other site that re-points its own name at 127.0.0.1 cannot read
//! the snapshot. Connections, request size and time are bounded by
//! [`rpool_proto::metrics::serve_router`].
//!
//! The snapshot is cached for [`CACHE_MS`] so several open tabs cost the
//! controllers one round of RPCs per interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rpool_proto::v1::{ListControllersRequest, ListEventsRequest, ListHostsRequest, ListPoolsRequest};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::client::{self, Controller};
use crate::view::{ControllerView, EventView, HostView, PoolView};

/// The page, served as is.
pub const PAGE: &str = include_str!("dashboard.html");

/// How long one snapshot is reused, in ms (the page polls every second).
pub const CACHE_MS: u64 = 700;

/// How many of the latest events the snapshot carries.
pub const EVENTS_SHOWN: u32 = 100;

/// Longest time one snapshot may spend asking the controllers: below the
/// server's whole-exchange bound, so a slow controller gives an error in
/// the page, not a dropped connection.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(4);

/// What the page shows, as `GET /api/state` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub at_unix_ms: u64,
    /// The controller that answered ("" when none did).
    pub answered_by: String,
    /// What could not be fetched, for a banner ("" when all was).
    pub error: String,
    /// Leader id as the answering leader reports it (0 = unknown).
    pub leader_id: u64,
    pub controllers: Vec<ControllerView>,
    /// Hosts grouped by zone, zones in name order.
    pub zones: Vec<ZoneView>,
    /// Pools with each member's liveness and what rpool does about the
    /// ones not alive (`attention`), as `pool show` judges them.
    pub pools: Vec<PoolView>,
    /// The latest events, oldest first.
    pub events: Vec<EventView>,
}

/// One zone of the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneView {
    pub zone: String,
    pub hosts: Vec<HostView>,
    /// Hosts by state in this zone.
    pub by_state: BTreeMap<String, u32>,
    pub cores: u64,
    pub memory_bytes: u64,
}

/// Builds the snapshot from what the controllers answered (pure).
pub fn snapshot_of(
    now_unix_ms: u64,
    controllers: Option<(u64, Vec<ControllerView>)>,
    hosts: Vec<HostView>,
    pools: Vec<PoolView>,
    events: Vec<EventView>,
) -> Snapshot {
    let (leader_id, controllers) = controllers.unwrap_or_default();
    // A host's pool and role, from the pools' members when the host list lacks them.
    let membership: BTreeMap<&str, (&str, &str)> = pools
        .iter()
        .flat_map(|p| {
            p.members
                .iter()
                .filter(|m| m.state != "replaced")
                .map(move |m| (m.host_id.as_str(), (p.name.as_str(), m.role.as_str())))
        })
        .collect();
    let hosts: Vec<HostView> = hosts
        .into_iter()
        .map(|mut h| {
            if let Some((pool, role)) = membership.get(h.host_id.as_str())
                && h.pool_role.is_empty()
            {
                h.pool = (*pool).to_string();
                h.pool_role = (*role).to_string();
            }
            h
        })
        .collect();
    let mut zones: BTreeMap<String, ZoneView> = BTreeMap::new();
    for h in hosts {
        let zone = zones.entry(h.zone.clone()).or_insert_with(|| ZoneView {
            zone: h.zone.clone(),
            hosts: Vec::new(),
            by_state: BTreeMap::new(),
            cores: 0,
            memory_bytes: 0,
        });
        *zone.by_state.entry(h.state.clone()).or_default() += 1;
        zone.cores += u64::from(h.cores);
        zone.memory_bytes += h.memory_bytes;
        zone.hosts.push(h);
    }
    let liveness: BTreeMap<String, String> = zones
        .values()
        .flat_map(|z| z.hosts.iter().map(|h| (h.host_id.clone(), h.state.clone())))
        .collect();
    let storm = events
        .iter()
        .rev()
        .find(|e| e.kind == "storm" || e.kind == "storm_over")
        .is_some_and(|e| e.kind == "storm");
    let pools = pools
        .into_iter()
        .map(|mut p| {
            // The pool's own latest events tell the judge what rpool last did.
            p.events = events.iter().filter(|e| e.pool == p.name).cloned().collect();
            crate::commands::pool_show::judge_liveness(&mut p, &liveness, storm);
            p.events.clear();
            p
        })
        .collect();
    Snapshot {
        at_unix_ms: now_unix_ms,
        answered_by: String::new(),
        error: String::new(),
        leader_id,
        controllers,
        zones: zones.into_values().collect(),
        pools,
        events,
    }
}

/// The server's state: where the controllers are and the last snapshot.
pub struct Source {
    addresses: Vec<String>,
    timeout: Duration,
    controller: Mutex<Option<Arc<Controller>>>,
    cache: Mutex<Option<(Instant, Arc<String>)>>,
}

impl Source {
    pub fn new(addresses: Vec<String>, timeout: Duration) -> Self {
        Self {
            addresses,
            timeout,
            controller: Mutex::new(None),
            cache: Mutex::new(None),
        }
    }

    /// The current snapshot as JSON, from the cache when fresh.
    pub async fn state_json(&self) -> Arc<String> {
        let mut cache = self.cache.lock().await;
        if let Some((at, json)) = cache.as_ref()
            && at.elapsed() < Duration::from_millis(CACHE_MS)
        {
            return json.clone();
        }
        let snapshot = match tokio::time::timeout(SNAPSHOT_TIMEOUT, self.fetch()).await {
            Ok(s) => s,
            Err(_) => Snapshot {
                error: format!(
                    "the controllers did not answer within {}",
                    rpool_proto::units::format_duration(SNAPSHOT_TIMEOUT)
                ),
                ..snapshot_of(rpool_proto::clock::unix_ms_now(), None, vec![], vec![], vec![])
            },
        };
        let json = Arc::new(serde_json::to_string(&snapshot).unwrap_or_else(|_| "{}".to_string()));
        *cache = Some((Instant::now(), json.clone()));
        json
    }

    async fn connected(&self) -> Result<Arc<Controller>, String> {
        let mut slot = self.controller.lock().await;
        if let Some(ctl) = slot.as_ref() {
            return Ok(ctl.clone());
        }
        let ctl = Arc::new(
            client::connect(&self.addresses, self.timeout)
                .await
                .map_err(|e| format!("{e:#}"))?,
        );
        *slot = Some(ctl.clone());
        Ok(ctl)
    }

    async fn fetch(&self) -> Snapshot {
        let now = rpool_proto::clock::unix_ms_now();
        let ctl = match self.connected().await {
            Ok(ctl) => ctl,
            Err(e) => {
                return Snapshot {
                    error: e,
                    ..snapshot_of(now, None, vec![], vec![], vec![])
                };
            }
        };
        let mut errors = Vec::new();
        let controllers = crate::rpc!(ctl, list_controllers, ListControllersRequest {})
            .map(|r| {
                (
                    r.leader_id,
                    r.controllers.iter().map(ControllerView::from).collect(),
                )
            })
            .map_err(|e| errors.push(format!("controllers: {e:#}")))
            .ok();
        let hosts = crate::rpc!(ctl, list_hosts, ListHostsRequest::default())
            .map(|r| r.hosts.iter().map(HostView::from).collect())
            .map_err(|e| errors.push(format!("hosts: {e:#}")))
            .unwrap_or_default();
        let pools = crate::rpc!(ctl, list_pools, ListPoolsRequest {})
            .map(|r| r.pools.iter().map(PoolView::from).collect())
            .map_err(|e| errors.push(format!("pools: {e:#}")))
            .unwrap_or_default();
        let events = crate::rpc!(
            ctl,
            list_events,
            ListEventsRequest {
                limit: EVENTS_SHOWN,
                ..Default::default()
            }
        )
        .map(|r| r.events.iter().map(EventView::from).collect())
        .map_err(|e| errors.push(format!("events: {e:#}")))
        .unwrap_or_default();
        let mut snapshot = snapshot_of(now, controllers, hosts, pools, events);
        snapshot.answered_by = ctl.address();
        snapshot.error = errors.join("; ");
        snapshot
    }
}

/// Whether a request's `Host` header may reach the dashboard: `localhost`
/// or an IP literal, with or without a port. A DNS name other than
/// localhost means the page was reached through some other site's name
/// (DNS rebinding) and is refused.
pub fn host_allowed(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port or [v6]
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || tail.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(tail.strip_prefix(':'));
            }
            _ => return false,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => {
                if !port_ok(Some(port)) {
                    return false;
                }
                name
            }
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn port_ok(port: Option<&str>) -> bool {
    port.is_none_or(|p| p.parse::<u16>().is_ok())
}

async fn guard(headers: HeaderMap, request: Request, next: Next) -> Response {
    if !host_allowed(headers.get(header::HOST)) {
        return (
            StatusCode::FORBIDDEN,
            "forbidden: the dashboard answers only to localhost or an IP address in Host\n",
        )
            .into_response();
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "the dashboard is read-only\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    // Nothing but this server: no frames, no external scripts, styles or fetches.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The dashboard's routes.
pub fn router(source: Arc<Source>) -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/api/state",
            axum::routing::get(|State(source): State<Arc<Source>>| async move {
                let json = source.state_json().await;
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    json.as_str().to_owned(),
                )
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found; the dashboard is at /\n") })
        .layer(axum::middleware::from_fn(guard))
        .with_state(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn only_localhost_and_ip_literals_pass_the_host_check() {
        for ok in [
            "127.0.0.1:7480",
            "localhost:7480",
            "LOCALHOST",
            "[::1]:7480",
            "[::1]",
            "10.0.0.5:80",
        ] {
            assert!(host_allowed(Some(&hv(ok))), "{ok}");
        }
        for bad in [
            "evil.example:7480",
            "localhost.evil.example:7480",
            "127.0.0.1.nip.io:7480",
            "127.0.0.1:port",
            "[::1]x",
            "[not-v6]:1",
            "",
        ] {
            assert!(!host_allowed(Some(&hv(bad))), "{bad}");
        }
        assert!(!host_allowed(None));
    }

    fn host(id: &str, name: &str, zone: &str, state: &str) -> HostView {
        let mut h = HostView::from(&rpool_proto::v1::Host::default());
        h.host_id = id.into();
        h.hostname = name.into();
        h.zone = zone.into();
        h.state = state.into();
        h.cores = 8;
        h
    }

    #[test]
    fn hosts_are_grouped_by_zone_and_pool_members_get_their_hosts_liveness() {
        let hosts = vec![
            host("1", "a-1", "a", "ready"),
            host("2", "b-1", "b", "down"),
            host("3", "a-2", "a", "ready"),
        ];
        let mut pool = PoolView::from(&rpool_proto::v1::Pool::default());
        pool.name = "web".into();
        let mut member = crate::view::MemberView {
            host_id: "2".into(),
            hostname: "b-1".into(),
            zone: "b".into(),
            role: "worker".into(),
            node_name: "web-b-1".into(),
            state: "joined".into(),
            cores: 8,
            memory_bytes: 0,
            last_error: String::new(),
            liveness: String::new(),
            kubernetes_version: String::new(),
            upgrade_step: String::new(),
            cert_expires_unix_ms: 0,
        };
        pool.members.push(member.clone());
        member.host_id = "1".into();
        member.hostname = "a-1".into();
        pool.members.push(member);
        let s = snapshot_of(5, None, hosts, vec![pool], vec![]);
        let zones: Vec<(&str, usize)> = s.zones.iter().map(|z| (z.zone.as_str(), z.hosts.len())).collect();
        assert_eq!(zones, [("a", 2), ("b", 1)]);
        assert_eq!(s.zones[0].cores, 16);
        assert_eq!(s.zones[1].by_state.get("down"), Some(&1));
        let live: Vec<&str> = s.pools[0].members.iter().map(|m| m.liveness.as_str()).collect();
        assert_eq!(live, ["down", "ready"]);
        let b1 = &s.zones[1].hosts[0];
        assert_eq!((b1.pool.as_str(), b1.pool_role.as_str()), ("web", "worker"));
        let attention = s.pools[0].attention.as_deref().unwrap_or_default();
        assert!(attention.contains("1 down (b-1)"), "{attention}");
    }
}
