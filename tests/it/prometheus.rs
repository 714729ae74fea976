//! Observability against the real tools (tooling): the `/metrics` of a running edgefilter is
//! checked by Prometheus' own linter (`promtool check metrics`), and a real Prometheus server
//! scrapes edgefilter during a loadgen run; its HTTP API must then give loadgen's exact counts
//! for the received, alert and rejected counters, through plain queries and through `rate()`.
//!
//! The Grafana dashboard (`deployment/grafana/edgefilter.json`) is checked against both: every
//! metric its PromQL names (read with a PromQL parser) is one the live `/metrics` exposes, and
//! every panel query returns data from the Prometheus that scraped the loadgen run.
//!
//! Everything is real: mosquitto and Prometheus (Debian package `prometheus`, which ships
//! promtool; `scripts/test.sh` installs it) on ephemeral ports, the built edgefilter binary,
//! and the workspace's loadgen (as a library, in this process). Without `prometheus` and
//! `promtool` on PATH these tests fail; they never skip.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// A Prometheus server owned by one test: generated configuration scraping `targets` every
/// 250 ms, a temp storage dir, an ephemeral port. Killed on drop.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: edgefilter\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        for _attempt in 0..5 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", conf.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect(
                    "prometheus must be installed (scripts/test.sh installs the Debian package)",
                );
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if matches!(http_get(addr, "/-/ready"), Ok((200, _))) {
                    return Prometheus { addr, child, dir };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "prometheus did not become ready:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
    }

    /// `GET /api/v1/<endpoint>?<params>`; the `data` of a successful answer.
    fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> Value {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect();
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/{endpoint}?{}", query.join("&")),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{endpoint} {params:?}: {e}: {body}"));
        assert!(
            status == 200 && v["status"] == "success",
            "{endpoint} {params:?}: {status} {body}"
        );
        v["data"].clone()
    }

    /// An instant query at `time` (now when `None`): `(labels, value)` per series.
    fn query(&self, expr: &str, time: Option<f64>) -> Vec<(Value, f64)> {
        let t = time.map(|t| format!("{t:.3}"));
        let mut params = vec![("query", expr)];
        if let Some(t) = &t {
            params.push(("time", t));
        }
        let data = self.api("query", &params);
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["metric"].clone(), sample_value(&s["value"])))
                .collect(),
            Some("scalar") => vec![(Value::Null, sample_value(&data["result"]))],
            other => panic!("{expr}: unexpected result type {other:?}"),
        }
    }

    /// The single value of an instant query.
    fn value(&self, expr: &str, time: Option<f64>) -> f64 {
        let r = self.query(expr, time);
        assert_eq!(r.len(), 1, "{expr}: expected one series, got {r:?}");
        r[0].1
    }

    /// The raw samples `(timestamp s, value)` of a range selector evaluated at `time`.
    fn samples(&self, selector: &str, time: f64) -> Vec<(f64, f64)> {
        let data = self.api(
            "query",
            &[("query", selector), ("time", &format!("{time:.3}"))],
        );
        assert_eq!(data["resultType"], "matrix", "{selector}");
        let series = data["result"].as_array().unwrap();
        assert_eq!(series.len(), 1, "{selector}: {series:?}");
        series[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), sample_value(p)))
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[timestamp, "value"]` → value.
fn sample_value(pair: &Value) -> f64 {
    pair[1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// edgefilter (the built binary) on `broker`, its metrics on an ephemeral port; returns once
/// `/healthz` says it is connected.
fn start_filter(broker: &Mosquitto, extra: &[&str]) -> (FilterProcess, SocketAddr) {
    for _attempt in 0..5 {
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let maddr = metrics.to_string();
        let url = broker.url();
        let mut args = vec![
            "--broker",
            &url,
            "--metrics-addr",
            &maddr,
            "--stats-interval",
            "0",
            "--client-id",
            "ef-prometheus",
        ];
        args.extend_from_slice(extra);
        let mut f = FilterProcess::spawn(&args);
        if wait_healthy(metrics, Duration::from_secs(20)) {
            return (f, metrics);
        }
        let exited = f.child.try_wait().unwrap().is_some();
        assert!(exited, "edgefilter did not connect:\n{}", f.log());
    }
    panic!("edgefilter did not start on a free metrics port in 5 attempts");
}

/// Publishes one alert-worthy message and waits for its alert: the filter's subscription is
/// in place, so nothing published after this can miss it.
async fn round_trip(broker: &Mosquitto) {
    let c = Client4::connect(broker.port, "prom-warmup").await;
    c.subscribe("alerts/#").await;
    c.publish("telemetry/warmup", body(0, 99.0)).await;
    c.inbox
        .wait_count("alerts/telemetry/warmup", 1, Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_live_metrics() {
    let broker = Mosquitto::start();
    let (filter, metrics) = start_filter(&broker, &[]);
    // Some of everything first, so every labelled series and the histogram have samples.
    round_trip(&broker).await;
    let c = Client4::connect(broker.port, "prom-lint").await;
    c.publish("telemetry/x", "not json").await;
    c.publish("telemetry/x", body(1, 10.0)).await;
    c.publish_retained("edgefilter/twin/desired", r#"{"TemperatureThreshold":30}"#)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (status, text) = http_get(metrics, "/metrics").unwrap();
        assert_eq!(status, 200);
        if text.contains("edgefilter_messages_unmatched_total 1")
            && text.contains("edgefilter_twin_updates_total{result=\"applied\"} 1")
        {
            break text;
        }
        assert!(Instant::now() < deadline, "counters did not move:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for name in [
        "edgefilter_messages_received_total",
        "edgefilter_alerts_published_total",
        "edgefilter_messages_unmatched_total",
        "edgefilter_messages_rejected_total",
        "edgefilter_twin_updates_total",
        "edgefilter_threshold",
        "edgefilter_processing_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    let lint = |input: &str| {
        use std::io::Write;
        let mut p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool must be installed (Debian package prometheus)");
        p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        p.wait_with_output().unwrap()
    };
    let out = lint(&text);
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The linter does bite: a counter in milliseconds without `_total` fails.
    let bad = lint("# HELP x_ms Time.\n# TYPE x_ms counter\nx_ms 1\n");
    assert!(!bad.status.success());
    drop(filter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_loadgen_exact_counts() {
    let broker = Mosquitto::start();
    let (filter, metrics) = start_filter(&broker, &[]);
    let prom = Prometheus::start(&[metrics]);

    // Prometheus has scraped the filter before any traffic: its first samples are zeros.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prom.query("up{job=\"edgefilter\"} == 1", None).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no successful scrape:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    round_trip(&broker).await; // 1 received, 1 alert

    // loadgen: 3 s at 2000 msg/s, 30 % alerts, 5 % malformed (rejected as not_json).
    let url = broker.url();
    let s = loadgen(&[
        "--broker",
        &url,
        "--rate",
        "2000",
        "--duration",
        "3s",
        "--alert-ratio",
        "0.3",
        "--malformed",
        "0.05",
        "--connections",
        "2",
        "--no-progress",
        "--drain-timeout",
        "20s",
    ])
    .await;
    assert!(s.passed() && s.duplicates == 0, "{}", s.table());
    assert!(s.malformed > 0 && s.expected_alerts > 0 && s.probes > 0);

    // What edgefilter must have counted: the round trip, every probe (alert-worthy), and
    // every message loadgen sent.
    let received = 1 + s.probes + s.sent;
    let alerts = 1 + s.probes + s.expected_alerts;
    let rejected = s.malformed;
    let unmatched = s.sent - s.malformed - s.expected_alerts;

    // Wait until Prometheus holds the final values (the filter counts an alert when the
    // broker acknowledges it, which can come after loadgen saw it, and a verdict's latency
    // when its stage is done, after its input counted as received: one failed run scraped
    // 6,002 received and 5,998 verdicts).
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = |expr: &str, v: u64| (expr.to_string(), v as f64);
    let checks = [
        want("edgefilter_messages_received_total", received),
        want("edgefilter_alerts_published_total", alerts),
        want("edgefilter_messages_unmatched_total", unmatched),
        want(
            "edgefilter_messages_rejected_total{reason=\"not_json\"}",
            rejected,
        ),
        want("sum(edgefilter_messages_rejected_total)", rejected),
        want("edgefilter_processing_seconds_count", received),
    ];
    loop {
        let got: Vec<f64> = checks.iter().map(|(e, _)| prom.value(e, None)).collect();
        if got.iter().zip(&checks).all(|(g, (_, w))| g == w) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus' values {got:?} never reached {checks:?}\n{}",
            s.table()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // rate() over a window holding every sample, evaluated at the last sample: the first
    // sample is 0 and the window ends on the last one, so Prometheus extrapolates nothing and
    // rate × window is the exact count.
    const WINDOW: f64 = 600.0;
    let t_end = prom.value("timestamp(edgefilter_messages_received_total)", None);
    for (name, total, baseline) in [
        ("edgefilter_messages_received_total", received, 1),
        ("edgefilter_alerts_published_total", alerts, 1),
        (
            "edgefilter_messages_rejected_total{reason=\"not_json\"}",
            rejected,
            0,
        ),
    ] {
        let samples = prom.samples(&format!("{name}[10m]"), t_end);
        assert_eq!(samples.first().unwrap().1, 0.0, "{name}: {samples:?}");
        assert_eq!(samples.last().unwrap().1, total as f64, "{name}");
        // Scraped while loadgen ran, not only before and after.
        let during = samples
            .iter()
            .filter(|(_, v)| *v > baseline as f64 && *v < total as f64)
            .count();
        assert!(during >= 2, "{name}: no sample during the run: {samples:?}");
        let rate = prom.value(&format!("rate({name}[10m])"), Some(t_end));
        assert!(
            (rate * WINDOW - total as f64).abs() < 1e-6 * total as f64,
            "{name}: rate {rate}/s × {WINDOW} s ≠ {total}"
        );
        let increase = prom.value(&format!("increase({name}[10m])"), Some(t_end));
        assert!((increase - total as f64).abs() < 1e-6 * total as f64);
    }
    // The alert ratio as a dashboard computes it.
    let ratio = prom.value(
        "rate(edgefilter_alerts_published_total[10m]) / rate(edgefilter_messages_received_total[10m])",
        Some(t_end),
    );
    assert!((ratio - alerts as f64 / received as f64).abs() < 1e-9);
    // The latency histogram saw every verdict: alerts, unmatched and rejected.
    let verdicts = prom.value("edgefilter_processing_seconds_count", Some(t_end));
    assert_eq!(verdicts, received as f64);
    assert!(now_s() >= t_end);

    // Every query of the Grafana dashboard returns data from this Prometheus.
    for q in dashboard_queries() {
        let result = prom.query(&q.expr, Some(t_end));
        assert!(
            !result.is_empty() || !q.needs_data,
            "dashboard {}: {} returned nothing",
            q.place,
            q.expr
        );
    }
    drop(filter);
}

/// One PromQL expression of the dashboard, with Grafana's variables replaced as Grafana does
/// for "All" (`$__rate_interval` as one minute).
#[derive(Debug)]
struct DashboardQuery {
    place: String,
    expr: String,
    /// Panels and variables must show something; an annotation may find no event.
    needs_data: bool,
}

fn dashboard_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deployment/grafana/edgefilter.json")
}

fn grafana_vars(expr: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [
        ("$__rate_interval", "1m"),
        ("${__rate_interval}", "1m"),
        ("$__interval", "15s"),
        ("$__range", "10m"),
        ("${job}", ".*"),
        ("$job", ".*"),
        ("${instance}", ".*"),
        ("$instance", ".*"),
    ] {
        e = e.replace(var, value);
    }
    assert!(!e.contains('$'), "an unknown Grafana variable in {expr}");
    e
}

fn dashboard_queries() -> Vec<DashboardQuery> {
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_path()).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(DashboardQuery {
                place: format!("panel {:?} {}", panel["title"], t["refId"]),
                expr: grafana_vars(t["expr"].as_str().expect("every target has an expr")),
                needs_data: true,
            });
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push(DashboardQuery {
                place: format!("annotation {:?}", a["name"]),
                expr: grafana_vars(e),
                needs_data: false,
            });
        }
    }
    // Query variables: `label_values(<selector>, <label>)` runs the selector.
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        if v["type"] != "query" {
            continue;
        }
        let q = q.expect("a query variable has a query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(sel, _label)| sel)
            .unwrap_or_else(|| panic!("variable {}: expected label_values(...): {q}", v["name"]));
        out.push(DashboardQuery {
            place: format!("variable {}", v["name"]),
            expr: grafana_vars(inner),
            needs_data: true,
        });
    }
    assert!(out.len() >= 20, "the dashboard lost its queries: {out:?}");
    out
}

/// The metric names a PromQL expression selects (`name{...}` or `{__name__="name"}`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    use promql_parser::label::MatchOp;
    use promql_parser::parser::{Expr, VectorSelector};
    fn selector(v: &VectorSelector, out: &mut BTreeSet<String>) {
        let by_matcher = v
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone());
        let name = v
            .name
            .clone()
            .or(by_matcher)
            .unwrap_or_else(|| panic!("a selector without a metric name: {v}"));
        out.insert(name);
    }
    fn walk(e: &Expr, out: &mut BTreeSet<String>) {
        match e {
            Expr::Aggregate(a) => {
                walk(&a.expr, out);
                if let Some(p) = &a.param {
                    walk(p, out);
                }
            }
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Subquery(s) => walk(&s.expr, out),
            Expr::VectorSelector(v) => selector(v, out),
            Expr::MatrixSelector(m) => selector(&m.vs, out),
            Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, out)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let parsed =
        promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("not PromQL: {expr}: {e}"));
    let mut out = BTreeSet::new();
    walk(&parsed, &mut out);
    out
}

#[test]
fn metric_names_are_read_from_every_part_of_an_expression() {
    let names = metric_names(
        "histogram_quantile(0.9, sum by (le) (rate(a_bucket{x=~\".*\"}[1m]))) \
         / on() group_left max_over_time(({__name__=\"c\"} - b offset 1m)[5m:1m]) > -d",
    );
    let want: BTreeSet<String> = ["a_bucket", "b", "c", "d"].map(String::from).into();
    assert_eq!(names, want);
}

#[test]
fn dashboard_queries_name_only_exposed_metrics() {
    // The embedded broker: this test needs the live /metrics, not traffic.
    let mut filter = None;
    let mut metrics = None;
    for _attempt in 0..5 {
        let m: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let listen = format!("127.0.0.1:{}", free_port());
        let f = FilterProcess::spawn(&[
            "--listen",
            &listen,
            "--metrics-addr",
            &m.to_string(),
            "--stats-interval",
            "0",
        ]);
        if wait_healthy(m, Duration::from_secs(20)) {
            (filter, metrics) = (Some(f), Some(m));
            break;
        }
    }
    let (_filter, metrics) = (filter.expect("edgefilter starts"), metrics.unwrap());
    let (status, text) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    // Sample names, so a histogram counts as its _bucket, _sum and _count series.
    let exposed: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let mut used = BTreeSet::new();
    for q in dashboard_queries() {
        let names = metric_names(&q.expr);
        for n in &names {
            assert!(
                exposed.contains(n),
                "dashboard {}: {n} is not exposed by /metrics ({})",
                q.place,
                q.expr
            );
        }
        used.extend(names);
    }
    // What the dashboard is for: throughput in/out, alert ratio, rejections,
    // latency percentiles, pending/in-flight, reconnects, twin changes, RSS/CPU.
    for needed in [
        "edgefilter_messages_received_total",
        "edgefilter_alerts_published_total",
        "edgefilter_messages_rejected_total",
        "edgefilter_processing_seconds_bucket",
        "edgefilter_pending_messages",
        "edgefilter_inflight_publishes",
        "edgefilter_reconnects_total",
        "edgefilter_twin_updates_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    let text = std::fs::read_to_string(dashboard_path()).unwrap();
    assert!(text.contains("histogram_quantile(0.99"));

    // Panel ids are unique and every query goes to the provisioned data source variable.
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{p}");
        }
    }
    // The provisioning files beside it.
    let prov =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deployment/grafana/provisioning");
    let ds = std::fs::read_to_string(prov.join("datasources/edgefilter.yaml")).unwrap();
    assert!(ds.contains("type: prometheus") && ds.contains("timeInterval"));
    let dp = std::fs::read_to_string(prov.join("dashboards/edgefilter.yaml")).unwrap();
    assert!(
        dp.contains("type: file") && dp.contains("path: /var/lib/grafana/dashboards/edgefilter")
    );
}
