//! packaging/monitoring: the Prometheus alert rules and the Grafana
//! dashboard parse, and every metric they name is one a real controller or
//! agent exports (scraped here). `promtool check rules` checks the PromQL
//! itself in .ci/packaging.sh.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use rpool_proto::kube::yaml::{self, Node};
use rpool_tests::{Controller, Liveness, Profile, eventually, free_port, start_agents};

use crate::observability::http_get;

fn monitoring_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/monitoring")
}

/// Every `rpool_*` and `process_*` name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("rpool_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Names an exposition lets a query use: each sample's name, and each
/// family's (`# TYPE name kind`) with the suffixes its kind produces, so a
/// histogram with no series yet still counts.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "counter" => &["_total"],
                _ => &[],
            };
            for s in suffixes {
                names.insert(format!("{}{s}", name.trim_end_matches("_total")));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            names.insert(name.to_owned());
        }
    }
    names
}

/// The alert rules: (alert name, expr), checked for the fields every
/// rule must have.
fn alert_rules() -> anyhow::Result<Vec<(String, String)>> {
    let path = monitoring_dir().join("rpool-alerts.yml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let docs = yaml::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    ensure!(docs.len() == 1, "one YAML document");
    let mut rules = Vec::new();
    let groups = docs[0].get("groups").context("groups")?.items();
    ensure!(!groups.is_empty(), "no groups");
    for group in groups {
        for rule in group.get("rules").context("rules")?.items() {
            let name = rule.get("alert").and_then(Node::as_str).context("alert")?;
            let expr = rule.get("expr").and_then(Node::as_str).context("expr")?;
            let severity = rule.at(&["labels", "severity"]).and_then(Node::as_str);
            ensure!(
                matches!(severity, Some("info" | "warning" | "critical")),
                "{name}: labels.severity {severity:?}"
            );
            ensure!(
                rule.at(&["annotations", "summary"])
                    .and_then(Node::as_str)
                    .is_some(),
                "{name}: annotations.summary"
            );
            rules.push((name.to_owned(), expr.to_owned()));
        }
    }
    Ok(rules)
}

/// The dashboard's panels: (title, exprs), checked for unique ids and a
/// layout inside Grafana's 24 columns.
fn dashboard_panels() -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let path = monitoring_dir().join("rpool-dashboard.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    ensure!(
        dashboard["uid"].is_string() && dashboard["title"].is_string(),
        "uid and title"
    );
    let mut ids = BTreeSet::new();
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        let title = panel["title"].as_str().context("panel title")?.to_owned();
        ensure!(
            ids.insert(panel["id"].as_u64().context("panel id")?),
            "{title}: duplicate id"
        );
        let (x, w) = (panel["gridPos"]["x"].as_u64(), panel["gridPos"]["w"].as_u64());
        ensure!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24),
            "{title}: gridPos {}",
            panel["gridPos"]
        );
        let exprs: Vec<String> = panel["targets"]
            .as_array()
            .context("targets")?
            .iter()
            .map(|t| t["expr"].as_str().map(str::to_owned).context("expr"))
            .collect::<anyhow::Result<_>>()?;
        ensure!(!exprs.is_empty(), "{title}: no query");
        panels.push((title, exprs));
    }
    Ok(panels)
}

#[tokio::test]
async fn the_alert_rules_and_dashboard_use_only_metrics_the_binaries_export() -> anyhow::Result<()> {
    let rules = alert_rules()?;
    let panels = dashboard_panels()?;
    for alert in [
        "RpoolLeaderChanges",
        "RpoolHostsDown",
        "RpoolPoolDegraded",
        "RpoolStorm",
        "RpoolControllerCertificateExpiresSoon",
        "RpoolWebhookDropping",
    ] {
        ensure!(rules.iter().any(|(n, _)| n == alert), "no alert {alert}");
    }

    let root = tempfile::tempdir()?;
    let controller_metrics = format!("127.0.0.1:{}", free_port());
    let extra = format!("\n[metrics]\nlisten = \"{controller_metrics}\"\n");
    let mut controller = Controller::configure(
        &root.path().join("c1"),
        1,
        free_port(),
        &[],
        Liveness::FAST,
        &extra,
    )?;
    controller.restart().await?;
    let mut agents = start_agents(
        root.path(),
        &controller,
        vec![Profile::new("w-a", "a", 8, "16GiB")],
    )
    .await?;
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let agent = &mut agents[0];
    agent.kill();
    let config = agent.dir.join("agent.toml");
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!("\n[metrics]\nlisten = \"{agent_metrics}\"\n"));
    std::fs::write(&config, text)?;
    agent.restart()?;

    // Both endpoints, once the agent's session is up (its certificate
    // expiry is known then).
    let exported = eventually(Duration::from_secs(20), "both expositions", || async {
        let c = http_get(&controller_metrics, "/metrics").await.ok();
        let a = http_get(&agent_metrics, "/metrics").await.ok();
        let ready = a
            .as_ref()
            .is_some_and(|(_, body)| body.contains("\nrpool_agent_session_connected 1"));
        let names = match (&c, &a, ready) {
            (Some((_, c)), Some((_, a)), true) => Some(
                exported_names(c)
                    .union(&exported_names(a))
                    .cloned()
                    .collect::<BTreeSet<_>>(),
            ),
            _ => None,
        };
        (names, (c.is_some(), a.map(|(_, b)| b.len())))
    })
    .await?;
    for needed in [
        "rpool_cert_expiry_timestamp_seconds",
        "rpool_agent_cert_expiry_timestamp_seconds",
    ] {
        ensure!(exported.contains(needed), "{needed} not exported: {exported:?}");
    }

    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    let queries = rules
        .iter()
        .map(|(n, e)| (format!("alert {n}"), e.clone()))
        .chain(
            panels
                .iter()
                .flat_map(|(t, es)| es.iter().map(move |e| (format!("panel {t:?}"), e.clone()))),
        );
    // Histograms with labels (task durations) have no series, and so no
    // lines at all, until a task ran: those count when the binaries'
    // metrics code registers the family.
    let sources = ["../controller/src/metrics.rs", "../agent/src/metrics.rs"]
        .iter()
        .map(|p| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)))
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    // Likewise gauges with a label per pool: no pool, no series.
    let registered = |name: &str| {
        sources.contains(&format!("e.gauge_by(\n        \"{name}\""))
            || ["_bucket", "_count", "_sum"].iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|family| {
                    sources.contains(&format!("e.histogram_vec(\n        \"{family}\""))
                })
            })
    };
    for (what, expr) in queries {
        let names = metric_names(&expr);
        // `up` is Prometheus' own, per scrape job.
        let scrape_health =
            expr.starts_with("up{job=\"rpool-controller\"}") || expr.starts_with("up{job=\"rpool-agent\"}");
        ensure!(
            !names.is_empty() || scrape_health,
            "{what}: names no rpool metric: {expr}"
        );
        for name in names {
            if !exported.contains(&name) && !registered(&name) {
                unknown.push(format!("{what}: {name}"));
            }
            used.insert(name);
        }
    }
    ensure!(
        unknown.is_empty(),
        "metrics nobody exports: {unknown:#?}\nexported: {exported:?}"
    );
    eprintln!(
        "{} alert rules and {} panels use {} metric names, all exported",
        rules.len(),
        panels.len(),
        used.len()
    );
    Ok(())
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        "max(sum without (state) (rpool_hosts{state=~\"suspect|down\"})) / rate(process_cpu_seconds_total[5m]) > 0.34",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["process_cpu_seconds_total", "rpool_hosts"]
    );
}

#[test]
fn exported_names_include_family_suffixes() {
    let text = "# HELP rpool_t_seconds T.\n# TYPE rpool_t_seconds histogram\n# TYPE rpool_up counter\nrpool_up_total 1\nrpool_g{a=\"b\"} 2\n";
    let names = exported_names(text);
    for n in [
        "rpool_t_seconds_bucket",
        "rpool_t_seconds_count",
        "rpool_up_total",
        "rpool_g",
    ] {
        assert!(names.contains(n), "{n}: {names:?}");
    }
    assert!(!names.contains("rpool_other"));
}
