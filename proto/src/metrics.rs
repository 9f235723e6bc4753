//! Prometheus metrics shared by the controller and the agent: lock-free
//! counters, gauges and fixed-bucket histograms, the text exposition format
//! 0.0.4, and a tiny HTTP/1.1 server that answers `GET /metrics`.
//!
//! Why hand-rolled: the endpoint is GET-only, and a full HTTP stack (or a
//! metrics crate) would add dependencies to every binary for ~200 lines.
//!
//! Limits ([`MAX_CONNECTIONS`], [`MAX_REQUEST_BYTES`], [`REQUEST_TIMEOUT`]):
//! a scraper that opens too many connections, sends a huge request or
//! dribbles bytes is cut off; it can never make the daemon buffer without
//! bound or hold tasks open forever.
//!
//! Use: keep [`Counter`]/[`Gauge`]/[`Histogram`]/[`HistogramVec`] values in
//! a struct, and give [`serve`] a function that renders them with an
//! [`Encoder`] on each scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Scrapes served at once; more connections are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request head accepted (request line and headers), bytes.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head, and we have to write the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Distinct label sets one [`HistogramVec`] keeps; further ones are folded
/// into a series whose label values are all `"other"`.
pub const MAX_SERIES: usize = 256;
/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds, 0.5 ms to 10 s.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Task duration buckets in seconds, 0.1 s to 30 min.
pub const TASK_BUCKETS_S: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed upper bounds (`le`), cumulative on output.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, plus the `+Inf` bucket; not cumulative.
    counts: Vec<AtomicU64>,
    /// Sum of observations, as `f64` bits.
    sum_bits: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for output.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)`, the last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations (equals the `+Inf` bucket).
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (strictly increasing, finite).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must increase");
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation. NaN is ignored.
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut current = self.sum_bits.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + v).to_bits();
            match self
                .sum_bits
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Cumulative buckets, sum and count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0u64;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, total));
        }
        HistogramSnapshot {
            buckets,
            sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
            count: total,
        }
    }
}

/// Histograms by label values (e.g. task kind and outcome), at most
/// [`MAX_SERIES`] of them.
#[derive(Debug)]
pub struct HistogramVec {
    bounds: &'static [f64],
    label_names: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, Arc<Histogram>>>,
}

impl HistogramVec {
    /// An empty family; every series uses `bounds` and `label_names`.
    pub fn new(bounds: &'static [f64], label_names: &'static [&'static str]) -> Self {
        HistogramVec {
            bounds,
            label_names,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// The series for `values` (one per label name), created on first use.
    pub fn with(&self, values: &[&str]) -> Arc<Histogram> {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        key.resize(self.label_names.len(), String::new());
        if !series.contains_key(&key) && series.len() >= MAX_SERIES {
            key = vec!["other".to_owned(); self.label_names.len()];
        }
        series
            .entry(key)
            .or_insert_with(|| Arc::new(Histogram::new(self.bounds)))
            .clone()
    }

    /// Records `v` in the series for `values`.
    pub fn observe(&self, values: &[&str], v: f64) {
        self.with(values).observe(v);
    }

    /// Writes every series under `name` (the header must already be written).
    pub fn encode(&self, e: &mut Encoder, name: &str) {
        let series: Vec<(Vec<String>, Arc<Histogram>)> = self
            .series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (values, h) in series {
            let labels: Vec<(&str, &str)> = self
                .label_names
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            e.histogram(name, &labels, &h.snapshot());
        }
    }
}

/// Metric type, as the `# TYPE` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds a text exposition (format 0.0.4).
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    /// An empty exposition.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// `# HELP` and `# TYPE` lines for the family `name`.
    pub fn header(&mut self, name: &str, help: &str, kind: Kind) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample line: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
    }

    /// Header plus one unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) {
        self.header(name, help, kind);
        self.sample(name, &[], value);
    }

    /// `name_bucket{..., le="…"}` lines, `name_sum` and `name_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        for (le, count) in &h.buckets {
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&format_value(*le)));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", format_value(h.sum));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", h.count);
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out.push('}');
}

/// Label values escape `\`, `"` and newline.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text escapes `\` and newline.
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `+Inf`, `-Inf`, `NaN`, integers without a fraction, else Rust's
/// shortest round-trip form.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`),
/// 0 where unavailable.
pub fn process_rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    // Pages; 4 KiB on every platform rpool targets.
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// CPU time (user + system) this process used, in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s); 0 where unavailable.
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command (which may contain spaces) start after ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest` starts at field 3.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Writes the process metrics every exporter has (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`).
pub fn encode_process(e: &mut Encoder) {
    e.single(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        Kind::Gauge,
        process_rss_bytes() as f64,
    );
    e.single(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        Kind::Counter,
        process_cpu_seconds(),
    );
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a request head (pure).
fn route(head: &str) -> Route {
    let Some(line) = head.lines().next() else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

fn response(status: &str, content_type: &str, body: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// Reads the request head (up to the blank line) within the limits.
async fn read_head(stream: &mut TcpStream) -> Option<Result<String, ()>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(Ok(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Some(Err(()));
        }
    }
}

async fn handle(mut stream: TcpStream, render: &(dyn Fn() -> String + Send + Sync)) {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(h)) => h,
        Ok(None) | Err(_) => return,
    };
    let text = "text/plain; charset=utf-8";
    let answer = match head.map(|h| route(&h)) {
        Ok(Route::Metrics) => response("200 OK", CONTENT_TYPE, &render(), ""),
        Ok(Route::NotFound) => response("404 Not Found", text, "not found; try /metrics\n", ""),
        Ok(Route::MethodNotAllowed) => {
            response("405 Method Not Allowed", text, "only GET\n", "Allow: GET\r\n")
        }
        Ok(Route::BadRequest) => response("400 Bad Request", text, "bad request\n", ""),
        Err(()) => response(
            "431 Request Header Fields Too Large",
            text,
            "request head too large\n",
            "",
        ),
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. `render`
/// builds the exposition for each scrape. Connections beyond
/// [`MAX_CONNECTIONS`] are closed at once.
pub async fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                // Out of file descriptors and the like: do not spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            handle(stream, &*render).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_help_type_escaped_labels_and_cumulative_buckets() {
        static B: &[f64] = &[0.01, 0.1];
        let h = Histogram::new(B);
        h.observe(0.005);
        h.observe(0.05);
        h.observe(0.05);
        h.observe(3.0);
        h.observe(f64::NAN);
        let mut e = Encoder::new();
        e.header(
            "rpool_hosts",
            "Hosts by state.\nSecond line \\ here.",
            Kind::Gauge,
        );
        e.sample("rpool_hosts", &[("state", "re\"a\\dy\n")], 3.0);
        e.header("rpool_lat_seconds", "Latency.", Kind::Histogram);
        e.histogram("rpool_lat_seconds", &[("kind", "join")], &h.snapshot());
        e.single("rpool_up", "Up.", Kind::Counter, 0.25);
        let text = e.finish();
        let want = "# HELP rpool_hosts Hosts by state.\\nSecond line \\\\ here.\n\
                    # TYPE rpool_hosts gauge\n\
                    rpool_hosts{state=\"re\\\"a\\\\dy\\n\"} 3\n\
                    # HELP rpool_lat_seconds Latency.\n\
                    # TYPE rpool_lat_seconds histogram\n\
                    rpool_lat_seconds_bucket{kind=\"join\",le=\"0.01\"} 1\n\
                    rpool_lat_seconds_bucket{kind=\"join\",le=\"0.1\"} 3\n\
                    rpool_lat_seconds_bucket{kind=\"join\",le=\"+Inf\"} 4\n\
                    rpool_lat_seconds_sum{kind=\"join\"} 3.105\n\
                    rpool_lat_seconds_count{kind=\"join\"} 4\n\
                    # HELP rpool_up Up.\n\
                    # TYPE rpool_up counter\n\
                    rpool_up 0.25\n";
        assert_eq!(text, want);
    }

    #[test]
    fn values_format_as_prometheus_expects() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(42.0), "42");
        assert_eq!(format_value(-1.0), "-1");
        assert_eq!(format_value(0.5), "0.5");
    }

    #[test]
    fn a_histogram_vec_keeps_a_bounded_number_of_series() {
        let v = HistogramVec::new(LATENCY_BUCKETS_S, &["kind", "outcome"]);
        for i in 0..MAX_SERIES + 10 {
            v.observe(&[&format!("k{i}"), "ok"], 0.001);
        }
        let series = v.series.lock().unwrap();
        assert_eq!(series.len(), MAX_SERIES + 1, "256 real series and one 'other'");
        let other = &series[&vec!["other".to_owned(), "other".to_owned()]];
        assert_eq!(other.snapshot().count, 10);
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
        assert_eq!(route("GET /metrics?name[]=x HTTP/1.0"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route("GET /metrics"), Route::BadRequest);
        assert_eq!(route("GET /metrics SPDY/3"), Route::BadRequest);
        assert_eq!(route(""), Route::BadRequest);
    }

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // A refused connection may reset: that reads as an empty answer.
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("server answers in time");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn the_server_answers_metrics_404_and_oversized_requests_over_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scrapes = Arc::new(Counter::default());
        let seen = scrapes.clone();
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
            seen.inc();
            let mut e = Encoder::new();
            e.single(
                "rpool_scrapes_total",
                "Scrapes.",
                Kind::Counter,
                seen.get() as f64,
            );
            e.finish()
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, render, async {
            let _ = stopped.await;
        }));

        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nContent-Type: text/plain; version=0.0.4"), "{ok}");
        assert!(ok.ends_with("\r\n\r\n# HELP rpool_scrapes_total Scrapes.\n# TYPE rpool_scrapes_total counter\nrpool_scrapes_total 1\n"), "{ok}");
        let body_len = ok.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(ok.contains(&format!("Content-Length: {body_len}\r\n")), "{ok}");

        let missing = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"), "{missing}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");

        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST_BYTES + 10));
        let too_big = exchange(addr, &huge).await;
        assert!(too_big.starts_with("HTTP/1.1 431 "), "{too_big}");
        assert_eq!(scrapes.get(), 1, "only the good request rendered");

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_the_server_keeps_answering() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(String::new);
        let server = tokio::spawn(serve(listener, render, std::future::pending()));
        // Idle clients hold every permit.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // One more is closed without an answer.
        let extra = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(extra, "");
        drop(idle);
        // Once they are gone (their reads end), scrapes work again.
        let mut answered = false;
        for _ in 0..100 {
            let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            if ok.starts_with("HTTP/1.1 200 OK") {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered, "the server recovers once idle clients leave");
        server.abort();
    }
}
