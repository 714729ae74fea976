//! The IoT Edge twin GET in `Flow` (`flow/twin_get.rs`), scripted with explicit time: QoS 1,
//! asked again when no answer comes (the wait doubling), the report saying `pending` until
//! the twin answers.

use super::*;
use crate::flow::dialect::Azure;

fn azure() -> Harness {
    let mut cfg = config(Version::V4);
    cfg.twin_timeout = Duration::from_secs(10);
    let dialect = Dialect::Azure(Box::new(Azure::new(
        "gw:01@plant",
        "filter",
        "input1",
        "output1",
        None,
    )));
    Harness::with_dialect(Version::V4, cfg, dialect)
}

/// The twin publishes in `wire` (not the resent ones): (topic, packet id, body).
fn twin_publishes(wire: &[Wire]) -> Vec<(String, u16, Bytes)> {
    wire.iter()
        .filter_map(|w| match w {
            Wire::Publish {
                topic,
                pkid,
                payload,
                dup: false,
                ..
            } if topic.starts_with("$iothub/twin/") => {
                Some((topic.clone(), *pkid, payload.clone()))
            }
            _ => None,
        })
        .collect()
}

fn gets(wire: &[Wire]) -> Vec<String> {
    twin_publishes(wire)
        .into_iter()
        .filter(|(t, _, _)| t.starts_with("$iothub/twin/GET/"))
        .map(|(t, _, _)| t)
        .collect()
}

#[test]
fn an_unanswered_twin_get_is_asked_again_until_the_twin_answers() {
    let mut h = azure();
    let wire = h.connect(connack(false));
    let twin = twin_publishes(&wire);
    assert_eq!(twin.len(), 2, "{wire:?}");
    let (report_topic, report_pkid, report) = &twin[0];
    assert!(report_topic.starts_with("$iothub/twin/PATCH/properties/reported/"));
    assert_ne!(*report_pkid, 0, "reported patches at QoS 1");
    let report: serde_json::Value = serde_json::from_slice(report).unwrap();
    assert_eq!(report["source"], "pending");
    assert_eq!(report["TemperatureThreshold"], 25.0);
    assert_eq!(twin[1].0, "$iothub/twin/GET/?$rid=2");
    assert_ne!(twin[1].1, 0, "the GET at QoS 1");
    // edgeHub acknowledges both but never answers the GET.
    h.puback(twin[0].1);
    h.puback(twin[1].1);
    let start = h.now;
    assert_eq!(
        {
            h.flow.poll(h.now);
            h.flow.poll_timeout()
        },
        Some(start + Duration::from_secs(10)),
        "the timer is the earliest wake-up"
    );
    h.now = start + Duration::from_millis(9_999);
    h.flow.handle_timeout(h.now).unwrap();
    assert!(gets(&h.out()).is_empty(), "not before --twin-timeout");
    h.now = start + Duration::from_secs(10);
    h.flow.handle_timeout(h.now).unwrap();
    assert_eq!(gets(&h.out()), vec!["$iothub/twin/GET/?$rid=3"]);
    assert_eq!(h.metrics.delivery.twin_unanswered_count(), 1);
    // The wait doubles: 20 s now.
    h.now = start + Duration::from_secs(29);
    h.flow.handle_timeout(h.now).unwrap();
    assert!(gets(&h.out()).is_empty());
    h.now = start + Duration::from_secs(30);
    h.flow.handle_timeout(h.now).unwrap();
    assert_eq!(gets(&h.out()), vec!["$iothub/twin/GET/?$rid=4"]);
    // A late answer to an earlier GET does not count; the last one's does.
    h.input(
        "$iothub/twin/res/200/?$rid=3",
        br#"{"desired":{"TemperatureThreshold":99,"$version":1},"reported":{}}"#,
        1,
    );
    assert_eq!(h.flow.threshold.get(), 25.0);
    h.input(
        "$iothub/twin/res/200/?$rid=4",
        br#"{"desired":{"TemperatureThreshold":30,"$version":2},"reported":{}}"#,
        2,
    );
    assert_eq!(h.flow.threshold.get(), 30.0);
    let wire = h.out();
    let report = twin_publishes(&wire)
        .into_iter()
        .find(|(t, _, _)| t.starts_with("$iothub/twin/PATCH/properties/reported/"))
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.2).unwrap();
    assert_eq!(
        (
            &report["source"],
            &report["status"],
            &report["TemperatureThreshold"]
        ),
        (
            &serde_json::json!("desired"),
            &serde_json::json!("ok"),
            &serde_json::json!(30.0)
        )
    );
    assert_eq!(pubacks(&wire), vec![1, 2], "answers are acknowledged");
    assert_eq!(h.flow.twin_deadline(), None, "answered: no timer");
    h.now += Duration::from_secs(600);
    h.flow.handle_timeout(h.now).unwrap();
    assert!(gets(&h.out()).is_empty(), "answered: no more GETs");
    assert_eq!(h.metrics.delivery.twin_unanswered_count(), 2);
}

#[test]
fn a_reconnect_asks_again_at_once_and_keeps_what_the_twin_said() {
    let mut h = azure();
    let wire = h.connect(connack(false));
    assert_eq!(gets(&wire).len(), 1);
    h.flow.handle_connection_lost(Role::Input);
    assert!(
        {
            h.flow.poll(h.now);
            h.flow.poll_timeout()
        }
        .is_none(),
        "no timer without a connection"
    );
    let wire = h.connect(connack(true));
    assert_eq!(gets(&wire).len(), 1, "a new GET at every connect");
    let get = gets(&wire).remove(0);
    let rid = get.rsplit('=').next().unwrap().to_string();
    let topic = format!("$iothub/twin/res/200/?$rid={rid}");
    h.input(
        &topic,
        br#"{"desired":{"TemperatureThreshold":31,"$version":3},"reported":{}}"#,
        5,
    );
    assert_eq!(h.flow.threshold.get(), 31.0);
    let _ = h.out();
    h.flow.handle_connection_lost(Role::Input);
    // A reconnect (the hourly token renewal) with nothing changed: the GET, no report.
    let wire = h.connect(connack(true));
    let twin = twin_publishes(&wire);
    assert_eq!(twin.len(), 1, "{twin:?}");
    assert!(twin[0].0.starts_with("$iothub/twin/GET/"), "{twin:?}");
    // Its answer, the same desired version: applied again, nothing to report either.
    let rid = twin[0].0.rsplit('=').next().unwrap().to_string();
    h.input(
        &format!("$iothub/twin/res/200/?$rid={rid}"),
        br#"{"desired":{"TemperatureThreshold":31,"$version":3},"reported":{}}"#,
        6,
    );
    assert!(twin_publishes(&h.out()).is_empty());
    // A change is reported.
    h.input(
        "$iothub/twin/PATCH/properties/desired/?$version=4",
        br#"{"TemperatureThreshold":32,"$version":4}"#,
        7,
    );
    let twin = twin_publishes(&h.out());
    assert_eq!(twin.len(), 1, "{twin:?}");
    let report: serde_json::Value = serde_json::from_slice(&twin[0].2).unwrap();
    assert_eq!(
        (&report["TemperatureThreshold"], &report["source"]),
        (&serde_json::json!(32.0), &serde_json::json!("desired"))
    );
}

#[test]
fn the_get_and_the_report_wait_for_every_suback() {
    let mut h = azure();
    h.flow
        .handle_connack(Role::Input, &connack(false), None, h.now)
        .unwrap();
    let wire = h.out();
    let subscribes: Vec<u16> = wire
        .iter()
        .filter_map(|w| match w {
            Wire::Subscribe(pkid, _) => Some(*pkid),
            _ => None,
        })
        .collect();
    assert_eq!(subscribes.len(), 1, "{wire:?}");
    assert!(
        twin_publishes(&wire).is_empty(),
        "not with the SUBSCRIBE: {wire:?}"
    );
    assert_eq!(h.flow.twin_deadline(), None, "no GET, no timer");
    h.now += Duration::from_millis(300);
    h.packet(Inbound::SubAck {
        pkid: subscribes[0],
        granted: vec![Some(1); 3],
    });
    let twin = twin_publishes(&h.out());
    let topics: Vec<&str> = twin.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        topics,
        [
            "$iothub/twin/PATCH/properties/reported/?$rid=1",
            "$iothub/twin/GET/?$rid=2"
        ]
    );
    assert_eq!(
        h.flow.twin_deadline(),
        Some(h.now + Duration::from_secs(10)),
        "the timer from the SUBACK"
    );
}
