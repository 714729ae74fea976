//! edgeHub's size limits in `Flow` (IoT Edge dialect), scripted: an alert over the packet
//! limit or the message size is dead-lettered as `too_large_for_edgehub` instead of being
//! written or committed to the outbox, array batches are split to fit, and an outbox alert
//! an earlier run could not deliver is not sent again.

use super::*;
use crate::flow::dialect::Azure;
use crate::mqtt::azure::limits::{self, MAX_MESSAGE_SIZE, MAX_PACKET_BYTES};

const INPUT: &str = "devices/dev1/modules/filter/inputs/input1/sequenceNumber=1\
                     &%24.ct=application%2Fjson&%24.ce=utf-8";

/// Module `filter` of device `dev1`, dead letters to the output `deadletter`; not connected.
fn azure_module(tweak: impl FnOnce(&mut FlowConfig)) -> Harness {
    let mut cfg = config(Version::V4);
    tweak(&mut cfg);
    let dialect = Dialect::Azure(Box::new(Azure::new(
        "dev1",
        "filter",
        "input1",
        "output1",
        Some("edgefilter/deadletter"),
    )));
    Harness::with_dialect(Version::V4, cfg, dialect)
}

/// [`azure_module`], connected, its twin publishes acknowledged.
fn azure(tweak: impl FnOnce(&mut FlowConfig)) -> Harness {
    let mut h = azure_module(tweak);
    let wire = h.connect(connack(false));
    for w in &wire {
        if let Wire::Publish { pkid, .. } = w {
            h.puback(*pkid);
        }
    }
    let _ = h.out();
    h
}

/// An alerting body of exactly `len` bytes.
fn alert_body(len: usize) -> Bytes {
    let head = br#"{"machine":{"temperature":30},"pad":""#;
    let mut b = head.to_vec();
    b.resize(len - 2, b'x');
    b.extend_from_slice(b"\"}");
    Bytes::from(b)
}

fn input(h: &mut Harness, body: Bytes, pkid: u16) {
    h.packet(Inbound::Publish(InPublish {
        topic: Bytes::from_static(INPUT.as_bytes()),
        payload: body,
        qos: 1,
        pkid,
        retain: false,
        dup: false,
        properties: None,
    }));
}

/// The publishes in `wire`: (topic, packet id, body).
fn publishes(wire: &[Wire]) -> Vec<(String, u16, Bytes)> {
    wire.iter()
        .filter_map(|w| match w {
            Wire::Publish {
                topic,
                pkid,
                payload,
                ..
            } => Some((topic.clone(), *pkid, payload.clone())),
            _ => None,
        })
        .collect()
}

/// The alert topic of `INPUT` (what the dialect makes of it).
fn alert_topic() -> String {
    "devices/dev1/modules/filter/messages/events/%24.on=output1&%24.ct=application%2Fjson\
     &%24.ce=utf-8&MessageType=Alert&sequenceNumber=1"
        .to_string()
}

/// The whole size of a QoS 1 publish to `topic` with `body` bytes (3 bytes of remaining
/// length at these sizes).
fn packet_size(topic: &str, body: usize) -> usize {
    1 + 3 + 2 + topic.len() + 2 + body
}

fn assert_dead_letter(p: &(String, u16, Bytes), size: usize) {
    assert!(
        p.0.starts_with("devices/dev1/modules/filter/messages/events/%24.on=deadletter&"),
        "{}",
        p.0
    );
    assert!(
        p.0.contains("edgefilter-reason=too_large_for_edgehub"),
        "{}",
        p.0
    );
    let doc: serde_json::Value = serde_json::from_slice(&p.2).unwrap();
    assert_eq!(doc["reason"], "too_large_for_edgehub");
    assert_eq!(doc["size"], size);
    assert_eq!(doc["truncated"], true);
    assert_eq!(
        doc["payload"].as_str().map(str::len),
        Some(DEAD_LETTER_KEEP)
    );
    assert!(
        limits::check(p.0.as_bytes(), p.2.len(), packet_size(&p.0, p.2.len())).is_ok(),
        "the dead letter itself fits"
    );
}

#[test]
fn an_alert_over_either_limit_is_dead_lettered_never_written_nor_committed() {
    let mut h = azure(|c| c.ack_policy = AckPolicy::Outbox);
    let topic = alert_topic();
    // One byte over the packet limit.
    let over_packet = MAX_PACKET_BYTES - packet_size(&topic, 0) + 1;
    // At the packet limit exactly, but over the message size (its properties count more than
    // its topic's bytes).
    let at_packet = MAX_PACKET_BYTES - packet_size(&topic, 0);
    assert!(limits::message_size(&topic, at_packet).unwrap() > MAX_MESSAGE_SIZE);
    // At the message size exactly.
    let props = limits::message_size(&topic, 0).unwrap();
    let at_message = MAX_MESSAGE_SIZE - props;
    input(&mut h, alert_body(over_packet), 1);
    input(&mut h, alert_body(at_packet), 2);
    input(&mut h, alert_body(at_message), 3);
    h.decide_all();
    let wire = h.out();
    let out = publishes(&wire);
    assert_eq!(
        out.len(),
        3,
        "{:?}",
        out.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    assert_dead_letter(&out[0], over_packet);
    assert_dead_letter(&out[1], at_packet);
    assert_eq!((&out[2].0, out[2].2.len()), (&topic, at_message));
    assert_eq!(h.metrics.unpublishable_count("alert"), 2);
    // Only the alert that fits is committed to the outbox.
    let appends = h.flow.poll_outbox();
    assert_eq!(appends.len(), 1);
    assert_eq!(appends[0].payload.len(), at_message);
    h.flow.handle_outbox_committed();
    assert!(
        pubacks(&h.out()).is_empty(),
        "dead letters wait for their PUBACK"
    );
    h.puback(out[0].1);
    h.puback(out[1].1);
    assert_eq!(pubacks(&h.out()), vec![1, 2, 3], "the stream goes on");
    h.puback(out[2].1);
    assert!(h.flow.drained());
    assert_eq!(h.metrics.snapshot().alerts, 1);
}

#[test]
fn array_batches_are_split_to_fit_edgehub() {
    let mut h = azure(|c| {
        c.batch_format = Format::Array;
        c.batch_max = 10;
        c.batch_linger = Duration::from_secs(1);
    });
    // Ten alerts of 60,000 bytes: 600 KB as one array; four fit in one.
    for pkid in 1..=10 {
        input(&mut h, alert_body(60_000), pkid);
    }
    h.decide_all();
    let wire = h.out();
    let out = publishes(&wire);
    let sizes: Vec<usize> = out
        .iter()
        .map(|p| {
            serde_json::from_slice::<Vec<serde_json::Value>>(&p.2)
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, vec![2, 3, 2, 3], "halved until each part fits");
    for p in &out {
        assert!(p.0.contains("Batch=array"), "{}", p.0);
        assert!(
            limits::check(p.0.as_bytes(), p.2.len(), packet_size(&p.0, p.2.len())).is_ok(),
            "{} bytes",
            p.2.len()
        );
    }
    assert_eq!(h.metrics.unpublishable_count("alert"), 0);
    for p in &out {
        h.puback(p.1);
    }
    assert_eq!(pubacks(&h.out()), (1..=10).collect::<Vec<u16>>());
    assert_eq!(h.metrics.snapshot().alerts, 10);
}

#[test]
fn an_outbox_alert_edgehub_would_refuse_is_not_sent_again() {
    let mut h = azure_module(|c| c.ack_policy = AckPolicy::Outbox);
    let topic = Bytes::from(alert_topic());
    // An earlier version committed an alert over the packet limit, and one that fits.
    let big = alert_body(MAX_PACKET_BYTES);
    h.flow.handle_outbox_replay(
        9,
        vec![
            OutboxAppend {
                seq: 7,
                topic: topic.clone(),
                payload: big,
            },
            OutboxAppend {
                seq: 8,
                topic: topic.clone(),
                payload: Bytes::from_static(ALERT),
            },
        ],
        h.now,
    );
    let wire = h.connect(connack(false));
    let out = publishes(&wire);
    let events: Vec<&(String, u16, Bytes)> = out
        .iter()
        .filter(|p| p.0.contains("/messages/events/"))
        .collect();
    assert_eq!(
        events.len(),
        2,
        "{:?}",
        events.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    assert_dead_letter(events[0], MAX_PACKET_BYTES);
    assert_eq!(
        (events[1].0.as_bytes(), &events[1].2[..]),
        (&topic[..], ALERT)
    );
    assert_eq!(
        h.flow.poll_outbox_done(),
        Some(7),
        "done in the file without being sent"
    );
    h.puback(events[1].1);
    assert_eq!(h.flow.poll_outbox_done(), Some(8));
}
