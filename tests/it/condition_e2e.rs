//! Conditions and per-device thresholds end to end: loadgen → a real mosquitto (ephemeral
//! port) → edgefilter → mosquitto → loadgen, which computes the exact alerts with its own
//! model of the condition and the map and counts lost, duplicated and unexpected ones. From
//! the flags, with edge mode and clears, with the rate limit and summaries, and changed live
//! through the twin (applied between two runs, reported, a bad patch refused with the old map
//! and condition still in force).

use crate::common;

use common::*;
use loadgen::report::Summary;
use serde_json::Value;

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

const CONDITION: &str = "machine.temperature > threshold and machine.pressure >= 3";

/// One loadgen run with these arguments: nothing lost, duplicated or unexpected.
async fn exact_run(broker: &Mosquitto, args: &[&str]) -> Summary {
    let s = loadgen_run(broker, args).await;
    assert_eq!(s.duplicates, 0, "{}", s.table());
    s
}

/// The same rules for the filter and for loadgen's model.
const FLAGS: [&str; 8] = [
    "--condition",
    CONDITION,
    "--device-threshold",
    "telemetry/dev-1=60",
    "--device-threshold",
    "telemetry/+=30",
    "--device-threshold",
    "telemetry/dev-2=20",
];

const RUN: [&str; 10] = [
    "--rate",
    "3000",
    "--duration",
    "3s",
    "--devices",
    "10",
    "--connections",
    "2",
    "--alert-ratio",
    "0.6",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_and_a_map_from_the_flags_are_exact() {
    let broker = Mosquitto::start();
    let f = InProcess::start(
        &["--broker", &broker.url(), "--client-id", "ef-cond"]
            .into_iter()
            .chain(FLAGS)
            .collect::<Vec<_>>(),
    )
    .await;
    let mut args = RUN.to_vec();
    args.extend_from_slice(&FLAGS);
    let s = exact_run(&broker, &args).await;
    // The pressure clause holds back part of the readings above each device's threshold.
    assert!(s.expected_alerts > 500, "{}", s.table());
    assert!(s.expected_alerts < s.sent * 6 / 10, "{}", s.table());
    // An alert counts as published on its PUBACK, which can trail loadgen's copy of it.
    let metrics = &f.shared.metrics;
    wait_for("every alert acknowledged", WAIT, || {
        metrics.snapshot().alerts >= s.received_alerts
    })
    .await;
    let m = metrics.snapshot();
    f.stop().await;
    // The filter also alerted on loadgen's readiness probes.
    assert!(m.alerts >= s.received_alerts && m.alerts - s.received_alerts < 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mode_with_a_condition_and_a_map() {
    let broker = Mosquitto::start();
    let flags = [
        "--condition",
        CONDITION,
        "--device-threshold",
        "telemetry/dev-3=40",
        "--alert-mode",
        "edge",
        "--hysteresis",
        "2",
        "--clear-messages",
    ];
    let url = broker.url();
    let mut filter_args = vec!["--broker", &url, "--client-id", "ef-cond-edge"];
    filter_args.extend_from_slice(&flags);
    let f = InProcess::start(&filter_args).await;
    let mut args = RUN.to_vec();
    args.extend_from_slice(&["--mqtt-version", "5"]);
    args.extend_from_slice(&flags);
    let s = exact_run(&broker, &args).await;
    assert!(
        s.expected_alerts > 100 && s.clears.expected > 100,
        "{}",
        s.table()
    );
    f.stop().await;
}

/// The rate limit and the summaries on event time, with the condition and the map: at most
/// one alert per device per 200 ms among the readings the condition passes at each device's
/// threshold, and every window's summary with the alerts it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_summaries_with_a_condition_and_a_map() {
    let broker = Mosquitto::start();
    let rules = ["--alert-min-interval", "200ms", "--summary-window", "1s"];
    let url = broker.url();
    let mut filter_args = vec![
        "--broker",
        &url,
        "--client-id",
        "ef-cond-rules",
        "--event-time-field",
        "timeCreated",
        // See rules_e2e: loadgen's model cannot know what a loaded machine delays.
        "--allowed-lateness",
        "1s",
    ];
    filter_args.extend_from_slice(&FLAGS);
    filter_args.extend_from_slice(&rules);
    let f = InProcess::start(&filter_args).await;
    let mut args = RUN.to_vec();
    args.extend_from_slice(&FLAGS);
    args.extend_from_slice(&rules);
    args.push("--event-time");
    let s = exact_run(&broker, &args).await;
    // 10 devices for 3 s: 3 or 4 windows each; at most 16 alerts each (one per 200 ms).
    assert!(
        s.summaries.expected >= 30 && s.summaries.received == s.summaries.expected,
        "{}",
        s.table()
    );
    assert!(
        s.expected_alerts > 30 && s.expected_alerts <= 160,
        "{}",
        s.table()
    );
    f.stop().await;
}

/// Publishes a desired document and returns the report that answers it.
async fn desired(publisher: &Client5, sub: &Client5, doc: &str) -> Value {
    let before = sub.inbox.on("edgefilter/twin/reported").len();
    publisher
        .publish_retained("edgefilter/twin/desired", doc.to_string())
        .await;
    sub.inbox
        .wait_count("edgefilter/twin/reported", before + 1, WAIT)
        .await;
    let last = sub.inbox.on("edgefilter/twin/reported").pop().unwrap();
    serde_json::from_slice(&last.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twin_changes_the_condition_and_the_map_live() {
    let broker = Mosquitto::start();
    let f = InProcess::start(&["--broker", &broker.url(), "--client-id", "ef-cond-twin"]).await;
    let sub = Client5::connect(broker.port, "sub").await;
    sub.subscribe("edgefilter/twin/reported").await;
    sub.inbox
        .wait_count("edgefilter/twin/reported", 1, WAIT)
        .await;
    let publisher = Client5::connect(broker.port, "pub").await;

    // A per-device threshold and a two-field condition, from the twin.
    let r = desired(
        &publisher,
        &sub,
        &serde_json::json!({
            "Thresholds": {"telemetry/dev-1": 60, "telemetry/+": 30},
            "Condition": CONDITION,
            "$version": 2
        })
        .to_string(),
    )
    .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(
        r["Thresholds"],
        serde_json::json!({"telemetry/dev-1": 60.0, "telemetry/+": 30.0})
    );
    assert_eq!(r["Condition"], CONDITION);
    let mut args = RUN.to_vec();
    // The condition, dev-1's entry and `telemetry/+`'s: what the twin set.
    args.extend_from_slice(&FLAGS[..6]);
    let first = exact_run(&broker, &args).await;

    // A bad patch is refused whole: the map and the condition stay.
    let r = desired(
        &publisher,
        &sub,
        r#"{"Thresholds":{"telemetry/dev-1":10},"Condition":"machine.pressure >","$version":3}"#,
    )
    .await;
    assert_eq!(
        r["status"],
        "Condition at column 19: expected a field, a number or `threshold`, found the end"
    );
    assert_eq!(r["$version"], 2);
    let again = exact_run(&broker, &args).await;
    assert_eq!(
        again.expected_alerts, first.expected_alerts,
        "same seed, same rules"
    );

    // A patch names what it changes: dev-1's entry goes, dev-2 gets one; a new condition.
    let cond = "machine.pressure >= 2.5 or ambient.humidity > 1000";
    let r = desired(
        &publisher,
        &sub,
        &serde_json::json!({
            "Thresholds": {"telemetry/dev-1": null, "telemetry/dev-2": 45},
            "Condition": cond,
            "$version": 4
        })
        .to_string(),
    )
    .await;
    assert_eq!(
        r["Thresholds"],
        serde_json::json!({"telemetry/dev-2": 45.0, "telemetry/+": 30.0})
    );
    let mut args = RUN.to_vec();
    args.extend_from_slice(&[
        "--condition",
        cond,
        "--device-threshold",
        "telemetry/dev-2=45",
        "--device-threshold",
        "telemetry/+=30",
    ]);
    let third = exact_run(&broker, &args).await;
    assert_ne!(third.expected_alerts, first.expected_alerts);
    f.stop().await;
}
