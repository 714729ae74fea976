//! edgefilter against a real mosquitto started by each test on an ephemeral port: alerts are
//! exactly the expected ones, byte-identical, with `MessageType=Alert` and the input's
//! properties (MQTT 5); the twin changes later verdicts and reports; invalid patches are
//! refused; rejected input is dead-lettered with its reason; at QoS 1 a SIGKILL mid-stream
//! loses no alert; SIGTERM drains and exits 0; share groups split the input; sustained
//! overload is absorbed by flow control, without a reconnect, a loss or a duplicate.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

fn temps() -> Vec<f64> {
    // Integers, exponents, exactly-equal, below and above 25.
    vec![
        30.5, 20.0, 25.0, 25.000001, 1e2, 2.5e1, 26.0, -40.0, 99.9, 24.99,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_alerts_are_byte_identical_with_properties() {
    let broker = Mosquitto::start();
    let filter = InProcess::start(&["--broker", &broker.url(), "--client-id", "ef-props"]).await;
    let sub = Client5::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(broker.port, "pub").await;
    let mut expected = BTreeMap::new();
    for (i, t) in temps().into_iter().enumerate() {
        // Odd formatting on purpose: the alert must keep these exact bytes.
        let payload = format!("{{ \"machine\" : {{\"temperature\": {t} }}, \"seq\": {i} }}");
        let seq = i.to_string();
        publisher
            .publish(
                &format!("telemetry/dev-{}", i % 3),
                payload.clone(),
                &[("sequenceNumber", &seq), ("batchId", "b-1")],
            )
            .await;
        if t > 25.0 {
            expected.insert(
                i as u64,
                (format!("alerts/telemetry/dev-{}", i % 3), payload),
            );
        }
    }
    sub.inbox.wait_count("alerts/", expected.len(), WAIT).await;
    filter.stop().await;
    let alerts = sub.inbox.on("alerts/");
    assert_eq!(
        alerts.len(),
        expected.len(),
        "no unexpected or duplicate alerts"
    );
    for a in alerts {
        let seq = seq_of(&a.payload).unwrap();
        let (topic, payload) = &expected[&seq];
        assert_eq!(&a.topic, topic);
        assert_eq!(
            a.payload,
            payload.as_bytes(),
            "the alert is the original body, byte for byte"
        );
        assert!(
            a.user_properties
                .contains(&("MessageType".into(), "Alert".into())),
            "{:?}",
            a.user_properties
        );
        assert!(a
            .user_properties
            .contains(&("sequenceNumber".into(), seq.to_string())));
        assert!(a
            .user_properties
            .contains(&("batchId".into(), "b-1".into())));
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_alerts_on_the_alert_topic() {
    let broker = Mosquitto::start();
    // --inline-batch 0: every batch goes through the worker pool (two workers).
    let filter = InProcess::start(&[
        "--broker",
        &broker.url(),
        "--mqtt-version",
        "3",
        "--client-id",
        "ef-311",
        "--workers",
        "2",
        "--inline-batch",
        "0",
    ])
    .await;
    let sub = Client4::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client4::connect(broker.port, "pub").await;
    let mut expected = BTreeSet::new();
    for (i, t) in temps().into_iter().enumerate() {
        publisher
            .publish("telemetry/plant/line-1", body(i as u64, t))
            .await;
        if t > 25.0 {
            expected.insert(i as u64);
        }
    }
    sub.inbox.wait_count("alerts/", expected.len(), WAIT).await;
    filter.stop().await;
    let alerts = sub.inbox.on("alerts/");
    let got: BTreeSet<u64> = alerts.iter().map(|a| seq_of(&a.payload).unwrap()).collect();
    assert_eq!(got, expected);
    assert_eq!(alerts.len(), expected.len());
    for a in &alerts {
        assert_eq!(a.topic, "alerts/telemetry/plant/line-1");
        let seq = seq_of(&a.payload).unwrap();
        assert_eq!(a.payload, body(seq, temps()[seq as usize]).as_bytes());
    }
}

/// `--workers 0` decides on the connection's thread: same verdicts, same order per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_verdicts_filter_exactly_and_in_order() {
    let broker = Mosquitto::start();
    let filter = InProcess::start(&[
        "--broker",
        &broker.url(),
        "--client-id",
        "ef-inline",
        "--workers",
        "0",
    ])
    .await;
    let sub = Client5::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(broker.port, "pub").await;
    let mut expected = Vec::new();
    for i in 0..200u64 {
        let t = if i % 4 == 0 { 10.0 } else { 30.0 + i as f64 };
        if t > 25.0 {
            expected.push(i);
        }
        publisher
            .publish("telemetry/one-device", body(i, t), &[])
            .await;
    }
    sub.inbox.wait_count("alerts/", expected.len(), WAIT).await;
    filter.stop().await;
    let got: Vec<u64> = sub
        .inbox
        .on("alerts/")
        .iter()
        .filter_map(|a| seq_of(&a.payload))
        .collect();
    assert_eq!(got, expected, "exactly the alerts, in the device's order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_patches_change_later_verdicts_and_are_reported() {
    let broker = Mosquitto::start();
    let filter = InProcess::start(&["--broker", &broker.url(), "--client-id", "ef-twin"]).await;
    let sub = Client5::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    sub.subscribe("edgefilter/twin/reported").await;
    sub.inbox
        .wait_count("edgefilter/twin/reported", 1, WAIT)
        .await;
    let publisher = Client5::connect(broker.port, "pub").await;

    // 30 alerts at the default threshold 25.
    publisher.publish("telemetry/d", body(1, 30.0), &[]).await;
    sub.inbox.wait_count("alerts/", 1, WAIT).await;

    // Raise to 35: the reported document shows it, then 30 no longer alerts, 40 does.
    publisher
        .publish_retained(
            "edgefilter/twin/desired",
            r#"{"TemperatureThreshold": 35, "$version": 3}"#,
        )
        .await;
    sub.inbox
        .wait_until(WAIT, "reported threshold 35", |m| {
            m.iter().any(|r| {
                r.topic.ends_with("reported") && {
                    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                    v["TemperatureThreshold"] == 35.0 && v["$version"] == 3 && v["status"] == "ok"
                }
            })
        })
        .await;
    assert_eq!(filter.shared.threshold.get(), 35.0);
    publisher.publish("telemetry/d", body(2, 30.0), &[]).await;
    publisher.publish("telemetry/d", body(3, 40.0), &[]).await;
    sub.inbox.wait_count("alerts/", 2, WAIT).await;

    // An invalid patch is refused and reported; the threshold stays 35.
    publisher
        .publish_retained(
            "edgefilter/twin/desired",
            r#"{"TemperatureThreshold": "hot", "$version": 4}"#,
        )
        .await;
    sub.inbox
        .wait_until(WAIT, "reported refusal", |m| {
            m.iter().any(|r| {
                r.topic.ends_with("reported") && {
                    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                    v["status"]
                        .as_str()
                        .is_some_and(|s| s.contains("TemperatureThreshold"))
                        && v["TemperatureThreshold"] == 35.0
                }
            })
        })
        .await;
    // A stale version is ignored.
    publisher
        .publish_retained(
            "edgefilter/twin/desired",
            r#"{"TemperatureThreshold": 10, "$version": 1}"#,
        )
        .await;
    publisher.publish("telemetry/d", body(4, 30.0), &[]).await;
    publisher.publish("telemetry/d", body(5, 36.0), &[]).await;
    sub.inbox.wait_count("alerts/", 3, WAIT).await;
    let s = filter.shared.metrics.snapshot();
    filter.stop().await;
    let seqs: Vec<u64> = sub
        .inbox
        .on("alerts/")
        .iter()
        .map(|a| seq_of(&a.payload).unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 3, 5]);
    assert_eq!(s.twin_refused, 1);
}

/// The published counters (alerts, clears, summaries) count a QoS 1 publish on the broker's
/// PUBACK, which reaches the filter after the broker has already passed the message on: a
/// subscriber can hold an alert the counter does not show yet. With the broker's replies
/// held for 500 ms on the way back (a relay standing in for a slow link), the alert is seen, the
/// counter still says 0, and it catches up when the PUBACK lands. An e2e test that compared
/// the counter with what loadgen received as soon as loadgen finished failed once on CI
/// (`edge_mode_with_hysteresis_and_clears_over_mqtt5`: 1436 counted of 1440 received); the
/// tests now wait for the counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_counts_as_published_when_the_broker_acknowledges_it() {
    let broker = Mosquitto::start();
    let proxy = DelayProxy::start(broker.port, Duration::from_millis(500)).await;
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let filter = InProcess::start(&["--broker", &url, "--client-id", "ef-acked"]).await;
    let sub = Client5::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(broker.port, "pub").await;
    publisher.publish("telemetry/d", body(1, 30.0), &[]).await;
    sub.inbox.wait_count("alerts/", 1, WAIT).await;
    assert_eq!(
        filter.shared.metrics.snapshot().alerts,
        0,
        "the alert is out, its PUBACK is still on the way"
    );
    wait_for("the PUBACK", WAIT, || {
        filter.shared.metrics.snapshot().alerts == 1
    })
    .await;
    filter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_input_reaches_the_dead_letter_topic_with_its_reason() {
    let broker = Mosquitto::start();
    let filter = InProcess::start(&[
        "--broker",
        &broker.url(),
        "--client-id",
        "ef-dlq",
        "--max-payload",
        "1000",
    ])
    .await;
    let sub = Client5::connect(broker.port, "sub").await;
    sub.subscribe("edgefilter/deadletter").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(broker.port, "pub").await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not_json"),
        (b"[1,2]".to_vec(), "not_object"),
        (
            br#"{"machine":{"temperature":"hot"}}"#.to_vec(),
            "not_a_number",
        ),
        (b"{\"machine\":{\"temperature\":\xff}}".to_vec(), "not_utf8"),
        (vec![b' '; 2000], "too_large"),
    ];
    for (payload, _) in &cases {
        publisher
            .publish("telemetry/bad", payload.clone(), &[("sequenceNumber", "9")])
            .await;
    }
    sub.inbox
        .wait_count("edgefilter/deadletter", cases.len(), WAIT)
        .await;
    let s = filter.shared.metrics.snapshot();
    filter.stop().await;
    let letters = sub.inbox.on("edgefilter/deadletter");
    let mut reasons: Vec<String> = Vec::new();
    for l in &letters {
        let v: serde_json::Value = serde_json::from_slice(&l.payload).unwrap();
        assert_eq!(v["topic"], "telemetry/bad");
        assert!(
            !v["detail"].as_str().unwrap().is_empty(),
            "the reason is explained"
        );
        let reason = v["reason"].as_str().unwrap().to_string();
        assert!(l
            .user_properties
            .contains(&("edgefilter-reason".into(), reason.clone())));
        assert!(l
            .user_properties
            .contains(&("sequenceNumber".into(), "9".into())));
        reasons.push(reason);
    }
    let mut want: Vec<String> = cases.iter().map(|(_, r)| r.to_string()).collect();
    reasons.sort();
    want.sort();
    assert_eq!(reasons, want);
    assert_eq!(s.rejected, cases.len() as u64);
    assert!(sub.inbox.on("alerts/").is_empty());
    // The non-UTF-8 body survives intact (base64), the oversize one is cut and marked.
    let raw = letters
        .iter()
        .find(|l| l.payload.windows(14).any(|w| w == b"payload_base64"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw.payload).unwrap();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v["payload_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, cases[3].0);
    let big = letters
        .iter()
        .find(|l| {
            serde_json::from_slice::<serde_json::Value>(&l.payload).unwrap()["reason"]
                == "too_large"
        })
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&big.payload).unwrap();
    assert_eq!(
        (v["truncated"].as_bool(), v["size"].as_u64()),
        (Some(true), Some(2000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_batches_hold_the_original_bodies() {
    let broker = Mosquitto::start();
    let filter = InProcess::start(&[
        "--broker",
        &broker.url(),
        "--client-id",
        "ef-array",
        "--batch-format",
        "array",
        "--batch-linger",
        "50ms",
        "--batch-max",
        "1000",
    ])
    .await;
    let sub = Client5::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(broker.port, "pub").await;
    for i in 0..20u64 {
        publisher
            .publish(
                "telemetry/a",
                body(i, if i % 2 == 0 { 30.0 } else { 20.0 }),
                &[],
            )
            .await;
    }
    sub.inbox
        .wait_until(WAIT, "10 alerts in arrays", |m| {
            m.iter()
                .map(|r| {
                    serde_json::from_slice::<Vec<serde_json::Value>>(&r.payload)
                        .map_or(0, |v| v.len())
                })
                .sum::<usize>()
                >= 10
        })
        .await;
    filter.stop().await;
    let mut seqs = Vec::new();
    for a in sub.inbox.on("alerts/") {
        assert_eq!(a.topic, "alerts/telemetry/a");
        assert!(a.payload.starts_with(b"[") && a.payload.ends_with(b"]"));
        for item in serde_json::from_slice::<Vec<serde_json::Value>>(&a.payload).unwrap() {
            let seq = item["seq"].as_u64().unwrap();
            assert!(a
                .payload
                .windows(body(seq, 30.0).len())
                .any(|w| w == body(seq, 30.0).as_bytes()));
            seqs.push(seq);
        }
    }
    assert_eq!(seqs, (0..20).step_by(2).collect::<Vec<u64>>());
}

/// At QoS 1, killing the module mid-stream loses nothing: the persistent session keeps the
/// unacknowledged input at the broker, and the restarted module forwards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_module_loses_no_alert_at_qos1() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let args = [
        "--broker",
        url.as_str(),
        "--client-id",
        "ef-kill",
        "--metrics-addr",
        "off",
        "--qos",
        "1",
    ];
    let mut filter = FilterProcess::spawn(&args);
    filter.wait_log("connected to", WAIT).await;
    let sub = Client4::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client4::connect(broker.port, "pub").await;
    let total = 4000u64;
    let mut expected = BTreeSet::new();
    for i in 0..total {
        let t = if i % 3 == 0 {
            20.0
        } else {
            30.0 + (i % 50) as f64
        };
        if t > 25.0 {
            expected.insert(i);
        }
        publisher
            .publish(&format!("telemetry/dev-{}", i % 7), body(i, t))
            .await;
        if i == total / 2 {
            // Mid-stream: some alerts are out, more are in flight; kill without warning.
            sub.inbox.wait_count("alerts/", 100, WAIT).await;
            filter.signal("KILL");
            filter.wait_exit(WAIT).await;
            filter = FilterProcess::spawn(&args);
            filter.wait_log("session resumed", WAIT).await;
        }
    }
    let want = expected.len();
    sub.inbox
        .wait_until(WAIT, "every expected alert", |m| {
            let got: BTreeSet<u64> = m.iter().filter_map(|r| seq_of(&r.payload)).collect();
            got.len() >= want
        })
        .await;
    let got: BTreeSet<u64> = sub
        .inbox
        .on("alerts/")
        .iter()
        .filter_map(|r| seq_of(&r.payload))
        .collect();
    let missing: Vec<_> = expected.difference(&got).take(10).collect();
    assert!(missing.is_empty(), "missing alerts {missing:?}");
    let unexpected: Vec<_> = got.difference(&expected).take(10).collect();
    assert!(unexpected.is_empty(), "unexpected alerts {unexpected:?}");
    filter.signal("TERM");
    assert!(filter.wait_exit(WAIT).await.success());
}

/// Broker loss: the filter reconnects with backoff; counters and the threshold survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_is_reconnected_and_state_survives() {
    let mut broker = Mosquitto::start();
    let filter = InProcess::start(&["--broker", &broker.url(), "--client-id", "ef-restart"]).await;
    {
        let sub = Client5::connect(broker.port, "sub").await;
        sub.subscribe("alerts/#").await;
        sub.subscribe("edgefilter/twin/reported").await;
        let publisher = Client5::connect(broker.port, "pub").await;
        publisher
            .publish_retained(
                "edgefilter/twin/desired",
                r#"{"TemperatureThreshold": 30, "$version": 2}"#,
            )
            .await;
        sub.inbox
            .wait_until(WAIT, "threshold 30 reported", |m| {
                m.iter().any(|r| {
                    r.topic.ends_with("reported")
                        && serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()
                            ["$version"]
                            == 2
                })
            })
            .await;
        publisher.publish("telemetry/r", body(1, 35.0), &[]).await;
        sub.inbox.wait_count("alerts/", 1, WAIT).await;
    }
    broker.restart();
    let deadline = std::time::Instant::now() + WAIT;
    while filter.shared.metrics.snapshot().reconnects < 1 || !filter.shared.metrics.is_connected() {
        assert!(
            std::time::Instant::now() < deadline,
            "the filter did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sub = Client5::connect(broker.port, "sub2").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(broker.port, "pub2").await;
    publisher.publish("telemetry/r", body(2, 28.0), &[]).await; // below the twin's 30
    publisher.publish("telemetry/r", body(3, 31.0), &[]).await;
    sub.inbox.wait_count("alerts/", 1, WAIT).await;
    let s = filter.shared.metrics.snapshot();
    filter.stop().await;
    assert_eq!(
        filter_seqs(&sub.inbox.on("alerts/")),
        vec![3],
        "the threshold 30 survived the broker"
    );
    assert_eq!(s.received, 3, "counters survive reconnects");
    assert_eq!(s.reconnects, 1);
}

fn filter_seqs(alerts: &[Received]) -> Vec<u64> {
    alerts.iter().filter_map(|a| seq_of(&a.payload)).collect()
}

/// SIGTERM: stop taking input, flush, wait for acknowledgements, disconnect, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let mut filter = FilterProcess::spawn(&[
        "--broker",
        url.as_str(),
        "--client-id",
        "ef-term",
        "--metrics-addr",
        "off",
    ]);
    filter.wait_log("connected to", WAIT).await;
    let sub = Client4::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client4::connect(broker.port, "pub").await;
    for i in 0..500u64 {
        publisher.publish("telemetry/x", body(i, 50.0)).await;
    }
    sub.inbox.wait_count("alerts/", 500, WAIT).await;
    filter.signal("TERM");
    let status = filter.wait_exit(WAIT).await;
    assert!(status.success(), "exit status {status}:\n{}", filter.log());
    let log = filter.log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("stopped: 500 received, 500 alerts"), "{log}");
}

/// Several instances with one --share-group split the input and together forward all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_group_splits_the_input() {
    let broker = Mosquitto::start();
    let a = InProcess::start(&[
        "--broker",
        &broker.url(),
        "--client-id",
        "ef-a",
        "--share-group",
        "filters",
    ])
    .await;
    let b = InProcess::start(&[
        "--broker",
        &broker.url(),
        "--client-id",
        "ef-b",
        "--share-group",
        "filters",
    ])
    .await;
    let sub = Client5::connect(broker.port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(broker.port, "pub").await;
    for i in 0..200u64 {
        publisher
            .publish(&format!("telemetry/dev-{}", i % 10), body(i, 30.0), &[])
            .await;
    }
    sub.inbox.wait_count("alerts/", 200, WAIT).await;
    let (ra, rb) = (
        a.shared.metrics.snapshot().received,
        b.shared.metrics.snapshot().received,
    );
    a.stop().await;
    b.stop().await;
    assert_eq!(ra + rb, 200);
    assert!(ra > 0 && rb > 0, "both instances took a share: {ra} / {rb}");
    let seqs: BTreeSet<u64> = sub
        .inbox
        .on("alerts/")
        .iter()
        .filter_map(|r| seq_of(&r.payload))
        .collect();
    assert_eq!(seqs.len(), 200);
}

/// Overload through mosquitto 2.0.11, which overshoots our Receive Maximum: loadgen bursts far
/// faster than a debug build filters, with a small `--max-pending`, three times. The input
/// connection stops reading at `--max-pending` held inputs while the publisher connection
/// carries the alerts and their PUBACKs: every alert once, no reconnect (before: inputs past
/// 8 × `--max-pending` were left with the broker and the filter reconnected to get them back,
/// with duplicates, session takeovers and, rarely, loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_absorbed_without_a_reconnect_a_loss_or_a_duplicate() {
    for round in 0..3 {
        for sink_qos in ["0", "1"] {
            let broker = Mosquitto::start();
            let url = broker.url();
            let id = format!("ovl-{round}-{sink_qos}");
            let mut filter = FilterProcess::spawn(&[
                "--broker",
                url.as_str(),
                "--client-id",
                &id,
                "--metrics-addr",
                "off",
                "--max-pending",
                "32",
            ]);
            filter.wait_log("connected to", WAIT).await;
            let s = loadgen(&[
                "--broker",
                &url,
                "--count",
                "20000",
                "--connections",
                "2",
                "--qos",
                "1",
                "--sink-qos",
                sink_qos,
                "--alert-ratio",
                "0.5",
                "--no-progress",
                "--drain-timeout",
                "20s",
            ])
            .await;
            let log = filter.log();
            assert!(
                s.passed() && s.lost == 0 && s.duplicates == 0,
                "round {round}, sink QoS {sink_qos}:\n{}\n{log}",
                s.table()
            );
            assert!(
                !log.contains("reconnecting"),
                "flow control, not reconnects:\n{log}"
            );
            assert_eq!(
                log.matches("connected to").count(),
                2,
                "one input and one publisher connection, never again:\n{log}"
            );
            assert!(
                !broker.log().contains("already connected"),
                "no session takeover:\n{}",
                broker.log()
            );
            filter.signal("TERM");
            assert!(filter.wait_exit(WAIT).await.success());
        }
    }
}
