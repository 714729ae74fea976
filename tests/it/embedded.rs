//! edgefilter with its embedded broker (rmqtt in-process): sensors and consumers connect to
//! `--listen` or `--listen-v5` (MQTT 3.1.1 and 5 on each) like to any broker; alerts are exact and
//! byte-identical, MQTT 5 consumers see `MessageType=Alert`; the twin and dead letters work
//! through the embedded broker too.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(20);

fn local() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mqtt311_filters_exactly() {
    let listen = local();
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let filter = InProcess::start(&["--listen", &listen, "--client-id", "ef-emb"]).await;
    let sub = Client4::connect(port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client4::connect(port, "pub").await;
    let mut expected = BTreeSet::new();
    for i in 0..300u64 {
        let t = 20.0 + (i % 10) as f64; // 20..29: 25 exactly is no alert
        if t > 25.0 {
            expected.insert(i);
        }
        publisher
            .publish(&format!("telemetry/dev-{}", i % 4), body(i, t))
            .await;
    }
    sub.inbox.wait_count("alerts/", expected.len(), WAIT).await;
    let s = filter.shared.metrics.snapshot();
    filter.stop().await;
    let alerts = sub.inbox.on("alerts/");
    assert_eq!(alerts.len(), expected.len());
    let got: BTreeSet<u64> = alerts.iter().filter_map(|a| seq_of(&a.payload)).collect();
    assert_eq!(got, expected);
    for a in &alerts {
        let seq = seq_of(&a.payload).unwrap();
        assert_eq!(a.topic, format!("alerts/telemetry/dev-{}", seq % 4));
        assert_eq!(a.payload, body(seq, 20.0 + (seq % 10) as f64).as_bytes());
    }
    assert_eq!(
        (s.received, s.unmatched),
        (300, 300 - expected.len() as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mqtt5_alerts_carry_the_type() {
    let (v4, v5) = (local(), local());
    let v5_port: u16 = v5.rsplit(':').next().unwrap().parse().unwrap();
    let filter = InProcess::start(&[
        "--listen",
        &v4,
        "--listen-v5",
        &v5,
        "--client-id",
        "ef-emb5",
    ])
    .await;
    let sub = Client5::connect(v5_port, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(v5_port, "pub").await;
    publisher
        .publish("telemetry/x", body(1, 30.0), &[("sequenceNumber", "1")])
        .await;
    sub.inbox.wait_count("alerts/", 1, WAIT).await;
    filter.stop().await;
    let a = &sub.inbox.on("alerts/")[0];
    assert_eq!(a.payload, body(1, 30.0).as_bytes());
    assert!(
        a.user_properties
            .contains(&("MessageType".into(), "Alert".into())),
        "{:?}",
        a.user_properties
    );
    assert!(a
        .user_properties
        .contains(&("sequenceNumber".into(), "1".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_twin_and_dead_letters() {
    let listen = local();
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let filter = InProcess::start(&["--listen", &listen, "--client-id", "ef-emb-twin"]).await;
    let sub = Client4::connect(port, "sub").await;
    sub.subscribe("alerts/#").await;
    sub.subscribe("edgefilter/deadletter").await;
    sub.subscribe("edgefilter/twin/reported").await;
    let publisher = Client4::connect(port, "pub").await;
    publisher
        .publish_retained(
            "edgefilter/twin/desired",
            r#"{"TemperatureThreshold": 50, "$version": 2}"#,
        )
        .await;
    sub.inbox
        .wait_until(WAIT, "threshold 50 reported", |m| {
            m.iter().any(|r| {
                r.topic == "edgefilter/twin/reported"
                    && serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()
                        ["TemperatureThreshold"]
                        == 50.0
            })
        })
        .await;
    publisher.publish("telemetry/t", body(1, 40.0)).await;
    publisher
        .publish(
            "telemetry/t",
            b"{\"machine\":{\"temperature\":null}}".to_vec(),
        )
        .await;
    publisher.publish("telemetry/t", body(3, 60.0)).await;
    sub.inbox.wait_count("edgefilter/deadletter", 1, WAIT).await;
    sub.inbox.wait_count("alerts/", 1, WAIT).await;
    filter.stop().await;
    let alerts = sub.inbox.on("alerts/");
    assert_eq!(
        alerts
            .iter()
            .filter_map(|a| seq_of(&a.payload))
            .collect::<Vec<_>>(),
        vec![3]
    );
    let dl: serde_json::Value =
        serde_json::from_slice(&sub.inbox.on("edgefilter/deadletter")[0].payload).unwrap();
    assert_eq!(dl["reason"], "not_a_number");
}

/// A broker may accept a newline in a topic; the rejection log line names the topic
/// and must not let it start a forged line (edge and text formats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_topic_cannot_forge_a_log_line() {
    for format in ["edge", "text"] {
        let listen = local();
        let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
        let mut filter = FilterProcess::spawn(&[
            "--listen",
            &listen,
            "--metrics-addr",
            "off",
            "--log-format",
            format,
        ]);
        assert!(wait_listening(listen.parse().unwrap(), WAIT));
        filter.wait_log("connected", WAIT).await;
        // No `+` in it (`+00:00`): a wildcard character in a topic name is refused by the
        // embedded broker (tests/it/embedded_broker.rs), as by mosquitto.
        let forged = "<6> 2026-11-26 07:00:00.000 -00:00 [INF] - forged \u{1b}[2K";
        // rumqttc's client refuses such a topic; a hand-made client does not. "connected" is
        // logged at the CONNACK, before the filter's subscription is in place: a QoS 0 publish
        // then may reach no one, so publish again until the rejection shows.
        let deadline = Instant::now() + WAIT;
        let mut again = Instant::now();
        while !filter.log().contains("rejected a message on") {
            assert!(Instant::now() < deadline, "{format}: {}", filter.log());
            if Instant::now() >= again {
                publish_raw_v4(port, &format!("telemetry/x\n{forged}\r"), b"not json");
                again = Instant::now() + Duration::from_millis(500);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = filter.log();
        assert!(
            log.lines().all(|l| !l.starts_with("<6> 2026-11-26")),
            "{format}: {log}"
        );
        assert!(
            !log.contains('\u{1b}') && !log.contains('\r'),
            "{format}: {log}"
        );
        assert!(
            log.contains(r"telemetry/x\n<6> 2026-11-26"),
            "{format}: {log}"
        );
    }
}

/// CONNECT, one QoS 0 PUBLISH and DISCONNECT (MQTT 3.1.1), written by hand.
fn publish_raw_v4(port: u16, topic: &str, payload: &[u8]) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05rawpb")
        .unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let len = 2 + topic.len() + payload.len();
    assert!(len < 128);
    let mut p = vec![0x30, len as u8, 0, topic.len() as u8];
    p.extend_from_slice(topic.as_bytes());
    p.extend_from_slice(payload);
    p.extend_from_slice(&[0xe0, 0]);
    s.write_all(&p).unwrap();
}
