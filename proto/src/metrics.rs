//! Prometheus metrics shared by the controller and the agent: counters,
//! gauges and fixed-bucket histograms from `prometheus-client`, their
//! exposition in the Prometheus text format 0.0.4, and an HTTP/1.1 server
//! (hyper, routed by axum) that answers `GET /metrics`.
//!
//! Limits ([`MAX_CONNECTIONS`], [`MAX_REQUEST_BYTES`], [`REQUEST_TIMEOUT`],
//! [`MAX_SERIES`]): a scraper that opens too many connections, sends a huge
//! request or dribbles bytes is cut off; it can never make the daemon buffer
//! without bound or hold tasks open forever, and a label set chosen by
//! callers cannot grow a family without bound.
//!
//! Use: keep [`Counter`]/[`Gauge`]/[`Histogram`]/[`HistogramVec`] values in
//! a struct, and give [`serve`] a function that renders them with an
//! [`Exposition`] on each scrape (values read at scrape time are added to
//! the same exposition as gauges).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapes served at once; more connections are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request head accepted (request line and headers), bytes; hyper
/// answers 431 beyond it (8 KiB is also hyper's smallest buffer).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head, and (again) we have to
/// write the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Distinct label sets one [`HistogramVec`] keeps; further ones are folded
/// into a series whose label values are all `"other"`.
pub const MAX_SERIES: usize = 256;
/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets in seconds, 0.5 ms to 10 s.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Task duration buckets in seconds, 0.1 s to 30 min.
pub const TASK_BUCKETS_S: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0,
];

/// A monotonically increasing count (`inc`, `inc_by`, `get`).
pub type Counter = prometheus_client::metrics::counter::Counter<u64>;
/// A value that goes up and down (`set`, `inc_by`, `get`).
pub type Gauge = prometheus_client::metrics::gauge::Gauge<i64>;
/// A histogram with fixed upper bounds (`le`); see [`histogram`].
pub type Histogram = prometheus_client::metrics::histogram::Histogram;

/// An empty histogram over `bounds` (strictly increasing, finite).
pub fn histogram(bounds: &'static [f64]) -> Histogram {
    debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must increase");
    Histogram::new(bounds.iter().copied())
}

/// Records a duration in seconds in `h`.
pub fn observe_duration(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}

/// Label pairs of one series, in the order the family names them.
type LabelSet = Vec<(&'static str, String)>;

/// Makes the histograms of a [`HistogramVec`] (all with the same bounds).
#[derive(Debug, Clone, Copy)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        histogram(self.0)
    }
}

/// Histograms by label values (e.g. task kind and outcome), at most
/// [`MAX_SERIES`] of them plus one `"other"` series.
#[derive(Debug)]
pub struct HistogramVec {
    label_names: &'static [&'static str],
    family: Family<LabelSet, Histogram, Buckets>,
    /// Series created so far; held while deciding whether a new one fits.
    admitted: Mutex<usize>,
}

impl HistogramVec {
    /// An empty family; every series uses `bounds` and `label_names`.
    pub fn new(bounds: &'static [f64], label_names: &'static [&'static str]) -> Self {
        HistogramVec {
            label_names,
            family: Family::new_with_constructor(Buckets(bounds)),
            admitted: Mutex::new(0),
        }
    }

    /// Records `v` in the series for `values` (one per label name; missing
    /// ones are empty), created on first use.
    pub fn observe(&self, values: &[&str], v: f64) {
        let mut key: LabelSet = self
            .label_names
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, values.get(i).copied().unwrap_or_default().to_owned()))
            .collect();
        if self.family.get(&key).is_none() {
            let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
            if self.family.get(&key).is_none() {
                if *admitted >= MAX_SERIES {
                    key.iter_mut().for_each(|(_, value)| *value = "other".to_owned());
                }
                if self.family.get(&key).is_none() {
                    *admitted += 1;
                    drop(self.family.get_or_create(&key));
                }
            }
        }
        self.family.get_or_create(&key).observe(v);
    }

    /// Series kept, the `"other"` one included.
    pub fn series(&self) -> usize {
        *self.admitted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One scrape's exposition: metrics are registered under their full series
/// name (counters end in `_total`), then [`Exposition::finish`] writes the
/// Prometheus text format 0.0.4 (no `# EOF`, counters' `# TYPE` under the
/// `_total` name, `le` as Go's client writes it).
#[derive(Debug, Default)]
pub struct Exposition {
    registry: Registry,
}

/// prometheus-client appends a full stop to every help text: drop ours.
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Exposition::default()
    }

    fn add(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help_text(help), metric);
    }

    /// A counter; `name` is the series name and ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.add(counter_family(name), help, ConstCounter::new(value));
    }

    /// A counter with a fractional value (`name` ends in `_total`).
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) {
        self.add(counter_family(name), help, ConstCounter::new(value));
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        self.add(name, help, ConstGauge::new(value));
    }

    /// A gauge family with one label: one series per `(label value, value)`.
    pub fn gauge_by(&mut self, name: &str, help: &str, label: &'static str, series: &[(&str, u64)]) {
        let family = Family::<LabelSet, Gauge>::default();
        for (value, n) in series {
            let n = i64::try_from(*n).unwrap_or(i64::MAX);
            family.get_or_create(&vec![(label, (*value).to_owned())]).set(n);
        }
        self.add(name, help, family);
    }

    /// A histogram without labels.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.add(name, help, h.clone());
    }

    /// Every series of a [`HistogramVec`].
    pub fn histogram_vec(&mut self, name: &str, help: &str, v: &HistogramVec) {
        self.add(name, help, v.family.clone());
    }

    /// `process_resident_memory_bytes` and `process_cpu_seconds_total`.
    pub fn process(&mut self) {
        let rss = i64::try_from(process_rss_bytes()).unwrap_or(i64::MAX);
        self.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss,
        );
        self.counter_f64(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            process_cpu_seconds(),
        );
    }

    /// The text, format 0.0.4.
    pub fn finish(self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// prometheus-client adds `_total` to a counter's name itself.
fn counter_family(name: &str) -> &str {
    debug_assert!(name.ends_with("_total"), "counter {name} must end in _total");
    name.strip_suffix("_total").unwrap_or(name)
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

/// The `/metrics` routes: `GET` renders, other methods get 405 (with
/// `Allow`), other paths 404.
fn router(render: Arc<dyn Fn() -> String + Send + Sync>) -> axum::Router {
    use axum::http::{StatusCode, header};
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = render();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], text) }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found; try /metrics\n") })
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. `render`
/// builds the exposition for each scrape. Connections beyond
/// [`MAX_CONNECTIONS`] are closed at once; each connection carries one
/// request (no keep-alive).
pub async fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) {
    serve_router(listener, router(render), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` resolves, with the same
/// limits as `/metrics`: at most [`MAX_CONNECTIONS`] at once (more are
/// closed at once), request heads of at most [`MAX_REQUEST_BYTES`] read
/// within [`REQUEST_TIMEOUT`], one request per connection. rpoolctl's local
/// dashboard uses it too.
pub async fn serve_router(listener: TcpListener, router: axum::Router, shutdown: impl Future<Output = ()>) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .keep_alive(false)
        .title_case_headers(true);
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
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        tokio::spawn(async move {
            // Reading the head is bounded by `header_read_timeout`; the
            // whole exchange by twice that.
            let _ = tokio::time::timeout(2 * REQUEST_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn the_exposition_is_prometheus_text_with_escaped_labels_and_cumulative_buckets() {
        static B: &[f64] = &[0.01, 0.1, 10.0];
        let h = histogram(B);
        for v in [0.005, 0.05, 0.05, 30.0] {
            h.observe(v);
        }
        let v = HistogramVec::new(B, &["kind"]);
        v.observe(&["join"], 3.0);
        let mut e = Exposition::new();
        e.gauge_by(
            "rpool_hosts",
            "Hosts by state.\nSecond line \\ here.",
            "state",
            &[("re\"a\\dy\n", 3)],
        );
        e.histogram("rpool_lat_seconds", "Latency.", &h);
        e.histogram_vec("rpool_task_seconds", "Tasks.", &v);
        e.counter("rpool_up_total", "Up.", 7);
        e.counter_f64("rpool_cpu_seconds_total", "CPU.", 0.25);
        e.gauge("rpool_term", "Term.", -1);
        let text = e.finish();
        let want = "# HELP rpool_hosts Hosts by state.\\nSecond line \\\\ here.\n\
                    # TYPE rpool_hosts gauge\n\
                    rpool_hosts{state=\"re\\\"a\\\\dy\\n\"} 3\n\
                    # HELP rpool_lat_seconds Latency.\n\
                    # TYPE rpool_lat_seconds histogram\n\
                    rpool_lat_seconds_bucket{le=\"0.01\"} 1\n\
                    rpool_lat_seconds_bucket{le=\"0.1\"} 3\n\
                    rpool_lat_seconds_bucket{le=\"10\"} 3\n\
                    rpool_lat_seconds_bucket{le=\"+Inf\"} 4\n\
                    rpool_lat_seconds_sum 30.105\n\
                    rpool_lat_seconds_count 4\n\
                    # HELP rpool_task_seconds Tasks.\n\
                    # TYPE rpool_task_seconds histogram\n\
                    rpool_task_seconds_bucket{kind=\"join\",le=\"0.01\"} 0\n\
                    rpool_task_seconds_bucket{kind=\"join\",le=\"0.1\"} 0\n\
                    rpool_task_seconds_bucket{kind=\"join\",le=\"10\"} 1\n\
                    rpool_task_seconds_bucket{kind=\"join\",le=\"+Inf\"} 1\n\
                    rpool_task_seconds_sum{kind=\"join\"} 3.0\n\
                    rpool_task_seconds_count{kind=\"join\"} 1\n\
                    # HELP rpool_up_total Up.\n\
                    # TYPE rpool_up_total counter\n\
                    rpool_up_total 7\n\
                    # HELP rpool_cpu_seconds_total CPU.\n\
                    # TYPE rpool_cpu_seconds_total counter\n\
                    rpool_cpu_seconds_total 0.25\n\
                    # HELP rpool_term Term.\n\
                    # TYPE rpool_term gauge\n\
                    rpool_term -1\n";
        assert_eq!(text, want);
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn a_histogram_vec_keeps_a_bounded_number_of_series() {
        let v = HistogramVec::new(LATENCY_BUCKETS_S, &["kind", "outcome"]);
        for i in 0..MAX_SERIES + 10 {
            v.observe(&[&format!("k{i}"), "ok"], 0.001);
        }
        assert_eq!(v.series(), MAX_SERIES + 1, "256 real series and one 'other'");
        let mut e = Exposition::new();
        e.histogram_vec("rpool_t_seconds", "T.", &v);
        let text = e.finish();
        assert!(
            text.lines()
                .any(|l| l == "rpool_t_seconds_count{kind=\"other\",outcome=\"other\"} 10"),
            "{text}"
        );
        // An existing series still takes observations once the family is full.
        v.observe(&["k0", "ok"], 0.001);
        assert_eq!(v.series(), MAX_SERIES + 1);
    }

    #[test]
    fn process_metrics_are_read_from_proc() {
        let mut e = Exposition::new();
        e.process();
        let text = e.finish();
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap();
        assert!(rss > 0, "{text}");
        assert!(
            text.contains("\n# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
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
            let mut e = Exposition::new();
            e.counter("rpool_scrapes_total", "Scrapes.", seen.get());
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
