//! The event webhook: the leader POSTs every new event (at or above
//! `[webhook] min_severity`) as JSON to `[webhook] url`.
//!
//! 1. Every controller tails the replicated event log ([`TAIL_EVERY`]),
//!    remembering in memory the highest event `index` it has seen. At start,
//!    and whenever it becomes leader, it starts from the newest event, so
//!    history is never re-sent.
//! 2. While leading, new events go into a bounded queue (`queue`; when full
//!    the oldest is dropped, counted and logged).
//! 3. One sender POSTs them in order: each with a `timeout_ms`, retried with
//!    jittered exponential backoff up to `max_attempts`, then dropped.
//!
//! Delivery is **at most once across a leader change** (events committed
//! after the old leader's last POST and before the new leader took over are
//! not sent: the new leader starts from the newest event) and **at least
//! once within a term** (a POST whose answer was lost is retried, so a
//! receiver may see an event twice; `seq` + `kind` + `message` identify it).
//! `seq` is the Raft index of the entry that recorded the event; several
//! events of one entry share it.
//!
//! Bodies carry only event fields, which never hold secrets. Audit
//! records (kind `audit`: who changed what through the admin API) go out
//! like any other info event, with an `audit` object, unless `[webhook]
//! audit = false`: an admin who points a webhook at a chat room or a SIEM
//! expects to hear about every change, including who made it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::config::FieldError;
use crate::state::pool::{Event, Severity};

/// How often the event log is checked for new events.
pub const TAIL_EVERY: Duration = Duration::from_millis(200);
/// Largest webhook answer read: the head (hyper's read buffer) and,
/// separately, the body (read and discarded).
const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// The system roots used for `https` when `ca` is not set.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `[webhook]`: where events are POSTed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// `http://host[:port]/path` or `https://…`; empty (the default) turns
    /// the webhook off.
    pub url: String,
    /// PEM file of the CA(s) that sign an `https` endpoint's certificate;
    /// default: the system roots ([`SYSTEM_ROOTS`]).
    pub ca: Option<PathBuf>,
    /// `info` (every event) or `alert` (only what needs a human).
    pub min_severity: Severity,
    /// Send audit records (kind `audit`, severity info) too; default true.
    pub audit: bool,
    /// Events waiting to be sent, `1..=100000`; when full the oldest is dropped.
    pub queue: usize,
    /// Time for one POST (connect, TLS, request, answer), `100..=60000` ms.
    pub timeout_ms: u64,
    /// Attempts per event before it is dropped, `1..=20`.
    pub max_attempts: u32,
    /// First retry delay, `10..=60000` ms; doubles per attempt (jittered).
    pub initial_backoff_ms: u64,
    /// Longest retry delay, `initial_backoff_ms..=600000` ms.
    pub max_backoff_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            ca: None,
            min_severity: Severity::Info,
            audit: true,
            queue: 1_000,
            timeout_ms: 5_000,
            max_attempts: 5,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
        }
    }
}

impl WebhookConfig {
    /// Checks the section; errors name `webhook.<key>` and the accepted range.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !self.url.is_empty() {
            Target::parse(&self.url).map_err(|problem| FieldError::new("webhook.url", problem))?;
        }
        if let Some(ca) = &self.ca {
            FieldError::first_empty_path([("webhook.ca", ca.as_path())], "a PEM file path")?;
        }
        if !(1..=100_000).contains(&self.queue) {
            return Err(FieldError::out_of_range(
                "webhook.queue",
                self.queue,
                "1..=100000",
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(FieldError::out_of_range(
                "webhook.timeout_ms",
                self.timeout_ms,
                "100..=60000",
            ));
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err(FieldError::out_of_range(
                "webhook.max_attempts",
                self.max_attempts,
                "1..=20",
            ));
        }
        if !(10..=60_000).contains(&self.initial_backoff_ms) {
            return Err(FieldError::out_of_range(
                "webhook.initial_backoff_ms",
                self.initial_backoff_ms,
                "10..=60000",
            ));
        }
        if !(self.initial_backoff_ms..=600_000).contains(&self.max_backoff_ms) {
            return Err(FieldError::out_of_range(
                "webhook.max_backoff_ms",
                self.max_backoff_ms,
                &format!(
                    "{}..=600000, at least initial_backoff_ms",
                    self.initial_backoff_ms
                ),
            ));
        }
        Ok(())
    }
}

/// A parsed webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https`?
    pub tls: bool,
    /// Host name or IP (brackets removed for IPv6).
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `http(s)://host[:port][/path]`. The error says what is accepted.
    pub fn parse(url: &str) -> Result<Target, String> {
        let accepted = "(accepted http://host[:port]/path or https://host[:port]/path)";
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("{url:?} has no http:// or https:// scheme {accepted}"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "{url:?} carries credentials; put them nowhere in the URL {accepted}"
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?} has an unclosed IPv6 bracket {accepted}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("{url:?} has a bad port {accepted}"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{url:?} is malformed {accepted}")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse()
                        .map_err(|_| format!("{url:?} has a bad port {accepted}"))?,
                ),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() || port == 0 || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{url:?} is malformed {accepted}"));
        }
        Ok(Target {
            tls,
            host,
            port,
            path: path.to_owned(),
        })
    }
}

/// The JSON body for `event` (with an `audit` object for audit records).
pub fn body(event: &Event) -> String {
    let mut body = serde_json::json!({
        "pool": event.pool,
        "host": event.host_id,
        "severity": event.severity.as_str(),
        "kind": event.kind,
        "message": event.message,
        "at_unix_ms": event.at_unix_ms,
        "seq": event.index,
    });
    if let Some(audit) = &event.audit {
        body["audit"] = serde_json::json!({
            "actor": audit.actor,
            "via_controller": audit.via,
            "operation": audit.operation,
            "arguments": audit.args,
            "outcome": audit.outcome,
        });
    }
    body.to_string()
}

/// Whether `[webhook] audit` lets `event` out (only audit records can be
/// held back by it).
pub fn passes_audit_switch(event: &Event, audit: bool) -> bool {
    audit || event.kind != crate::state::audit::AUDIT
}

/// Events after `after` (by index) at or above `min`, oldest first, and
/// the newest index seen. Pure.
pub fn select_new<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    after: u64,
    min: Severity,
) -> (Vec<Event>, u64) {
    let mut newest = after;
    let mut out = Vec::new();
    for e in events {
        if e.index <= after {
            continue;
        }
        newest = newest.max(e.index);
        if min == Severity::Info || e.severity == Severity::Alert {
            out.push(e.clone());
        }
    }
    (out, newest)
}

/// A bounded FIFO that drops its oldest item when full.
#[derive(Debug)]
pub struct Queue<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Queue<T> {
    /// An empty queue holding at most `capacity` (at least 1) items.
    pub fn new(capacity: usize) -> Self {
        Queue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }
    /// Appends `item`; returns the dropped oldest item when full.
    pub fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }
    /// Takes the oldest item.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }
    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Delay before retry number `retry` (1 = first retry): `initial * 2^(retry-1)`
/// capped at `max`, times a jitter factor in `[0.5, 1.0)` (`jitter` in `[0, 1)`).
pub fn backoff(retry: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
    let capped = exp.min(max);
    capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The webhook client for `[webhook]`, `None` when off. Fails on a bad URL
/// or an unreadable `ca` file (checked before anything else starts).
pub(crate) fn prepare(config: &WebhookConfig) -> anyhow::Result<Option<Client>> {
    if config.url.is_empty() {
        return Ok(None);
    }
    let target = Target::parse(&config.url).map_err(|p| anyhow::anyhow!("webhook.url: {p}"))?;
    let tls = if target.tls {
        Some(tls_connector(config.ca.as_deref())?)
    } else {
        None
    };
    Ok(Some(Client { target, tls }))
}

/// Starts the event tailer (counts events; queues them while leading) and,
/// with a client, the sender. Both stop with the controller.
pub(crate) fn start(client: Option<Client>, shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let queue = Arc::new((Mutex::new(Queue::new(shared.config.webhook.queue)), Notify::new()));
    if let Some(c) = &client {
        info!(host = %c.target.host, port = c.target.port, min_severity = shared.config.webhook.min_severity.as_str(), "webhook on");
    }
    let tail = tokio::spawn(tail(shared.clone(), queue.clone(), client.is_some()));
    let sender = client.map(|client| tokio::spawn(send_loop(shared, queue, client)));
    tokio::spawn(async move {
        let _ = tail.await;
        if let Some(sender) = sender {
            let _ = sender.await;
        }
    })
}

type Shared2 = Arc<(Mutex<Queue<Event>>, Notify)>;

/// Counts new events (every controller) and, while leading with a webhook
/// configured, queues them.
async fn tail(shared: Arc<Shared>, queue: Shared2, enabled: bool) {
    let min = shared.config.webhook.min_severity;
    let metrics = crate::metrics::global();
    let newest = |shared: &Shared| shared.node.read(|sm| sm.events().back().map_or(0, |e| e.index));
    let mut seen = newest(&shared);
    let mut was_leader = false;
    let mut stop = shared.shutdown.clone();
    let mut ticker = tokio::time::interval(TAIL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::stopped(&mut stop) => { queue.1.notify_one(); return }
        }
        let leader = shared.node.is_leader();
        // Only the events after `seen` (the window is ordered by index):
        // walking all of it every tick held the state lock long enough to
        // show in a profile of committed writes.
        // Copies are made only for a webhook that sends them.
        let sends = leader && was_leader && enabled;
        let (new, count, newest_index) = shared.node.read(|sm| {
            let events = sm.events();
            let start = events.partition_point(|e| e.index <= seen);
            let newest = events.back().map_or(seen, |e| e.index.max(seen));
            let new = if sends {
                select_new(events.range(start..), seen, min).0
            } else {
                Vec::new()
            };
            (new, events.len() - start, newest)
        });
        metrics.events.inc_by(count as u64);
        if leader && !was_leader {
            // Start from the newest event: history is not re-sent.
            debug!(
                from_index = newest_index,
                "leading: webhook starts after the newest event"
            );
        } else if sends {
            let mut wanted = new;
            wanted.retain(|e| passes_audit_switch(e, shared.config.webhook.audit));
            let mut q = queue.0.lock().unwrap_or_else(|e| e.into_inner());
            for event in wanted {
                if let Some(old) = q.push(event) {
                    metrics.webhook_dropped.inc();
                    warn!(
                        seq = old.index,
                        queue = shared.config.webhook.queue,
                        "webhook queue full; dropped the oldest event"
                    );
                }
            }
            drop(q);
            queue.1.notify_one();
        }
        was_leader = leader;
        seen = newest_index;
    }
}

async fn send_loop(shared: Arc<Shared>, queue: Shared2, client: Client) {
    let config = shared.config.webhook.clone();
    let metrics = crate::metrics::global();
    let mut stop = shared.shutdown.clone();
    let mut rng = fastrand::Rng::new();
    loop {
        let next = queue.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let Some(event) = next else {
            tokio::select! {
                _ = queue.1.notified() => continue,
                _ = crate::stopped(&mut stop) => return,
            }
        };
        let payload = body(&event);
        let mut delivered = false;
        for attempt in 1..=config.max_attempts {
            if attempt > 1 {
                let delay = backoff(
                    attempt - 1,
                    Duration::from_millis(config.initial_backoff_ms),
                    Duration::from_millis(config.max_backoff_ms),
                    rng.f64(),
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::stopped(&mut stop) => return,
                }
            }
            let post = tokio::time::timeout(Duration::from_millis(config.timeout_ms), client.post(&payload));
            let result = tokio::select! {
                r = post => r.unwrap_or_else(|_| Err(format!("no answer within {} ms", config.timeout_ms))),
                // Shutdown does not wait for a slow endpoint.
                _ = crate::stopped(&mut stop) => return,
            };
            match result {
                Ok(()) => {
                    metrics.webhook_deliveries.inc();
                    debug!(seq = event.index, attempt, "webhook delivered");
                    delivered = true;
                    break;
                }
                Err(e) => {
                    metrics.webhook_failures.inc();
                    warn!(seq = event.index, attempt, max_attempts = config.max_attempts, error = %e, "webhook POST failed");
                }
            }
        }
        if !delivered {
            metrics.webhook_dropped.inc();
            warn!(
                seq = event.index,
                "webhook gave up on an event after every attempt"
            );
        }
    }
}

/// Sends one POST to the configured endpoint: hyper's HTTP/1.1 client on
/// one connection per POST (plain TCP or tokio-rustls). Redirects are never
/// followed (a 3xx is a failure), the answer is read up to
/// [`MAX_RESPONSE_BYTES`], and the caller bounds the time.
pub(crate) struct Client {
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    async fn post(&self, payload: &str) -> Result<(), String> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", t.host, t.port))?;
        let _ = tcp.set_nodelay(true);
        let request = self.request(payload)?;
        match &self.tls {
            None => exchange(hyper_util::rt::TokioIo::new(tcp), request).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| format!("webhook host {:?}: {e}", t.host))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", t.host))?;
                exchange(hyper_util::rt::TokioIo::new(stream), request).await
            }
        }
    }

    /// `POST {path}` with the JSON body, `Host`, `User-Agent` and
    /// `Connection: close`.
    fn request(
        &self,
        payload: &str,
    ) -> Result<hyper::Request<http_body_util::Full<hyper::body::Bytes>>, String> {
        use hyper::header;
        let t = &self.target;
        let host = if t.host.contains(':') {
            format!("[{}]:{}", t.host, t.port)
        } else {
            format!("{}:{}", t.host, t.port)
        };
        hyper::Request::post(t.path.as_str())
            .header(header::HOST, host)
            .header(
                header::USER_AGENT,
                format!("rpool-controller/{}", rpool_proto::VERSION),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONNECTION, "close")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                payload.to_owned(),
            )))
            .map_err(|e| format!("building the request: {e}"))
    }
}

/// Sends `request` on a fresh HTTP/1.1 connection over `io` and judges the
/// answer by its status; the body is read (at most [`MAX_RESPONSE_BYTES`])
/// and dropped.
async fn exchange<I>(
    io: I,
    request: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> Result<(), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_buf_size(MAX_RESPONSE_BYTES)
        .handshake(io)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    // Drives the connection; ends with the exchange (dropped with `_driver`).
    let driver = tokio::spawn(connection);
    let _driver = AbortOnDrop(driver);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let status = response.status();
    let _ = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await;
    judge(status)
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `Ok` for a 2xx status; a redirect or any other status is an error.
fn judge(status: hyper::StatusCode) -> Result<(), String> {
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(format!("answered {status}; redirects are not followed"))
    } else {
        Err(format!("answered {status}"))
    }
}

/// A rustls (ring) client verifying the endpoint against `ca` or the system roots.
fn tls_connector(ca: Option<&std::path::Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = ca.unwrap_or(std::path::Path::new(SYSTEM_ROOTS));
    let field = if ca.is_some() {
        "webhook.ca"
    } else {
        "system roots"
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("{field} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{field} {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        anyhow::bail!("{field} {}: no usable CA certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn event(index: u64, severity: Severity) -> Event {
        Event {
            index,
            at_unix_ms: 1_700_000_000_000,
            pool: "web".into(),
            host_id: "h1".into(),
            kind: "task_done".into(),
            message: "joined \"h1\"".into(),
            severity,
            audit: None,
        }
    }

    #[test]
    fn the_queue_drops_its_oldest_item_when_full() {
        let mut q = Queue::new(2);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), Some(1));
        assert_eq!(q.len(), 2);
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(2), Some(3), None));
        assert!(q.is_empty());
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_between_half_and_full() {
        let (i, m) = (Duration::from_millis(100), Duration::from_millis(1_000));
        assert_eq!(backoff(1, i, m, 0.999_999).as_millis(), 99);
        assert_eq!(backoff(1, i, m, 0.0).as_millis(), 50);
        assert_eq!(backoff(3, i, m, 0.0).as_millis(), 200);
        assert_eq!(backoff(10, i, m, 0.0).as_millis(), 500);
        assert_eq!(backoff(u32::MAX, i, m, 0.0).as_millis(), 500);
        for j in [0.0, 0.3, 0.9] {
            let d = backoff(2, i, m, j);
            assert!(
                d >= Duration::from_millis(100) && d < Duration::from_millis(200),
                "{d:?}"
            );
        }
    }

    #[test]
    fn only_events_after_the_last_index_and_at_the_severity_are_selected() {
        let events = [
            event(3, Severity::Info),
            event(5, Severity::Alert),
            event(5, Severity::Info),
            event(6, Severity::Info),
        ];
        let (all, newest) = select_new(&events, 3, Severity::Info);
        assert_eq!(all.iter().map(|e| e.index).collect::<Vec<_>>(), [5, 5, 6]);
        assert_eq!(newest, 6);
        let (alerts, newest) = select_new(&events, 0, Severity::Alert);
        assert_eq!(alerts.len(), 1);
        assert_eq!(newest, 6);
        let (none, newest) = select_new(&events, 6, Severity::Info);
        assert!(none.is_empty());
        assert_eq!(newest, 6);
    }

    #[test]
    fn audit_records_go_out_with_their_audit_object_unless_switched_off() {
        let record =
            crate::state::audit::AuditRecord::new("urn:rpool:admin:alice".into(), Some(2), "pool destroy", 1)
                .arg("pool", "web");
        let audited = record.event(9, "web", "");
        let plain = event(9, Severity::Info);
        assert!(passes_audit_switch(&audited, true));
        assert!(!passes_audit_switch(&audited, false));
        assert!(passes_audit_switch(&plain, false));
        assert!(
            WebhookConfig::default().audit,
            "audit records are sent by default"
        );
        let v: serde_json::Value = serde_json::from_str(&body(&audited)).unwrap();
        assert_eq!(v["kind"], "audit");
        assert_eq!(v["audit"]["actor"], "urn:rpool:admin:alice");
        assert_eq!(v["audit"]["via_controller"], 2);
        assert_eq!(v["audit"]["arguments"]["pool"], "web");
        let v: serde_json::Value = serde_json::from_str(&body(&plain)).unwrap();
        assert!(v.get("audit").is_none());
    }

    #[test]
    fn the_body_is_json_with_the_documented_fields() {
        let v: serde_json::Value = serde_json::from_str(&body(&event(9, Severity::Alert))).unwrap();
        assert_eq!(v["pool"], "web");
        assert_eq!(v["host"], "h1");
        assert_eq!(v["severity"], "alert");
        assert_eq!(v["message"], "joined \"h1\"");
        assert_eq!(v["at_unix_ms"], 1_700_000_000_000u64);
        assert_eq!(v["seq"], 9);
    }

    #[test]
    fn urls_parse_or_say_what_is_accepted() {
        let t = Target::parse("http://127.0.0.1:8080/hook?x=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (false, "127.0.0.1", 8080, "/hook?x=1")
        );
        let t = Target::parse("https://alerts.example.com").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (true, 443, "/"));
        let t = Target::parse("http://[::1]:9/p").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        for bad in [
            "ftp://x",
            "http://",
            "http://x:notaport/",
            "http://u:p@x/",
            "http://x/a b",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.contains("accepted http://host"), "{bad}: {err}");
        }
    }

    #[test]
    fn config_errors_name_the_key_and_range() {
        let ok = WebhookConfig {
            url: "http://127.0.0.1:1/h".into(),
            ..WebhookConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let cases: Vec<(WebhookConfig, &str)> = vec![
            (
                WebhookConfig {
                    url: "mailto:x".into(),
                    ..ok.clone()
                },
                "webhook.url",
            ),
            (
                WebhookConfig {
                    queue: 0,
                    ..ok.clone()
                },
                "webhook.queue",
            ),
            (
                WebhookConfig {
                    timeout_ms: 10,
                    ..ok.clone()
                },
                "webhook.timeout_ms",
            ),
            (
                WebhookConfig {
                    max_attempts: 0,
                    ..ok.clone()
                },
                "webhook.max_attempts",
            ),
            (
                WebhookConfig {
                    max_backoff_ms: 1,
                    ..ok.clone()
                },
                "webhook.max_backoff_ms",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn statuses_are_judged_by_their_code_and_redirects_refused() {
        use hyper::StatusCode;
        assert_eq!(judge(StatusCode::NO_CONTENT), Ok(()));
        assert!(
            judge(StatusCode::INTERNAL_SERVER_ERROR)
                .unwrap_err()
                .contains("500")
        );
        let redirect = judge(StatusCode::FOUND).unwrap_err();
        assert!(
            redirect.contains("302") && redirect.contains("not followed"),
            "{redirect}"
        );
    }

    #[tokio::test]
    async fn a_post_reaches_a_real_listener_and_a_500_is_a_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            for status in ["200 OK", "500 Oops"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !String::from_utf8_lossy(&buf[..n]).contains("}") {
                    n += s.read(&mut buf[n..]).await.unwrap();
                }
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
            got
        });
        let client = Client {
            target: Target::parse(&format!("http://{addr}/hook")).unwrap(),
            tls: None,
        };
        let payload = body(&event(4, Severity::Info));
        assert_eq!(client.post(&payload).await, Ok(()));
        assert!(client.post(&payload).await.unwrap_err().contains("500"));
        let got = server.await.unwrap();
        assert!(got[0].starts_with("POST /hook HTTP/1.1\r\n"), "{}", got[0]);
        assert!(got[0].contains("Content-Type: application/json\r\n"));
        assert!(got[0].ends_with(&payload));
    }

    #[tokio::test]
    async fn a_redirect_fails_and_an_oversized_answer_is_cut_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let answers = [
                "HTTP/1.1 302 Found\r\nLocation: http://example.invalid/\r\nContent-Length: 0\r\n\r\n"
                    .to_owned(),
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 1 << 20),
            ];
            for answer in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !String::from_utf8_lossy(&buf[..n]).contains('}') {
                    n += s.read(&mut buf[n..]).await.unwrap();
                }
                s.write_all(answer.as_bytes()).await.unwrap();
                // A body far over the cap, sent until the client hangs up.
                let chunk = vec![b'x'; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            }
        });
        let client = Client {
            target: Target::parse(&format!("http://{addr}/hook")).unwrap(),
            tls: None,
        };
        let payload = body(&event(4, Severity::Info));
        let redirect = client.post(&payload).await.unwrap_err();
        assert!(
            redirect.contains("302") && redirect.contains("not followed"),
            "{redirect}"
        );
        let big = tokio::time::timeout(Duration::from_secs(10), client.post(&payload))
            .await
            .expect("an oversized answer does not hold the client");
        assert_eq!(big, Ok(()));
        server.abort();
    }
}
