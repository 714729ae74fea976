//! `Flow` with the stateful rules on: clearing messages hold their input like alerts,
//! summaries hold none, the rules' timer hands every shard a tick after the jobs before it, a
//! shutdown flushes the windows and waits for their acknowledgements, and the verdicts of a
//! lost connection still publish when the stage's state has moved on. Scripted packets and
//! explicit time, as in the parent module.

use super::*;
use crate::pipeline::rules::AlertMode;
use crate::pipeline::stage::Work;

const HOT: &[u8] = br#"{"machine":{"temperature":30}}"#;

fn edge(c: &mut FlowConfig) {
    c.rules.mode = AlertMode::Edge;
    c.rules.clear = true;
}

fn windows(c: &mut FlowConfig) {
    c.rules.window = Duration::from_secs(10);
}

fn topics(wire: &[Wire]) -> Vec<(String, u16)> {
    wire.iter()
        .filter_map(|w| match w {
            Wire::Publish { topic, pkid, .. } => Some((topic.clone(), *pkid)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_clearing_message_holds_its_input_until_acknowledged() {
    let mut h = connected(Version::V5, edge);
    h.input("telemetry/a", HOT, 1);
    h.input("telemetry/a", HOT, 2);
    h.input("telemetry/a", COOL, 3);
    h.decide_all();
    let wire = h.out();
    let published = topics(&wire);
    // One alert (the rising edge), one clear on the same topic (MQTT 5: the property tells).
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.iter().all(|(t, _)| t == "alerts/telemetry/a"));
    assert_eq!(pubacks(&wire), Vec::<u16>::new(), "1 waits for its alert");
    h.puback(published[0].1);
    assert_eq!(pubacks(&h.out()), vec![1, 2], "2 caused nothing");
    h.puback(published[1].1);
    assert_eq!(pubacks(&h.out()), vec![3]);
    let s = h.metrics.snapshot();
    assert_eq!((s.alerts, s.clears, s.suppressed), (1, 1, 1));
}

#[test]
fn clears_go_to_their_own_topic_when_configured() {
    let mut h = Harness::new(Version::V4, edge);
    if let Dialect::Generic(g) = &mut h.flow.dialect {
        let clear = Template::parse("cleared/{topic}").unwrap();
        g.rule_topics.clear = Some(crate::mqtt::topic::TopicCache::new(clear, 10));
    }
    h.connect(connack(false));
    h.input("telemetry/a", HOT, 1);
    h.input("telemetry/a", COOL, 2);
    h.decide_all();
    let published: Vec<String> = topics(&h.out()).into_iter().map(|(t, _)| t).collect();
    assert!(published.contains(&"alerts/telemetry/a".to_string()));
    assert!(published.contains(&"cleared/telemetry/a".to_string()));
}

#[test]
fn summaries_come_on_the_timer_and_hold_no_input() {
    let mut h = connected(Version::V4, windows);
    h.input("telemetry/a", COOL, 1);
    h.input("telemetry/b", HOT, 2);
    h.decide_all();
    let wire = h.out();
    assert_eq!(pubacks(&wire), vec![1]);
    h.puback(alert_ids(&wire)[0]);
    assert_eq!(
        pubacks(&h.out()),
        vec![2],
        "acknowledged before any summary"
    );
    // The timer is due at the window's end (aligned on the wall clock).
    let at = {
        h.flow.poll(h.now);
        h.flow.poll_timeout()
    }
    .unwrap();
    assert!(at > h.now && at <= h.now + Duration::from_secs(10));
    h.flow
        .handle_timeout(at - Duration::from_micros(1))
        .unwrap();
    assert!(h.dispatched().is_empty(), "not yet");
    h.now = at;
    h.flow.handle_timeout(h.now).unwrap();
    let ticks = h.dispatched();
    assert_eq!(ticks.len(), 2, "one tick per shard");
    for b in ticks {
        h.decide(b);
    }
    let wire = h.out();
    let mut published = topics(&wire);
    published.sort();
    assert_eq!(
        published
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        vec!["summaries/telemetry/a", "summaries/telemetry/b"]
    );
    let body = wire
        .iter()
        .find_map(|w| match w {
            Wire::Publish { topic, payload, .. } if topic == "summaries/telemetry/b" => {
                Some(payload.clone())
            }
            _ => None,
        })
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["count"].as_u64(), v["alerts"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(!h.flow.drained(), "the summaries are not acknowledged yet");
    for (_, id) in published {
        h.puback(id);
    }
    assert!(h.flow.drained());
    assert_eq!(h.metrics.snapshot().summaries, 2);
    // The next tick is the next window's end.
    assert_eq!(
        {
            h.flow.poll(h.now);
            h.flow.poll_timeout()
        },
        Some(h.now + Duration::from_secs(10))
    );
}

#[test]
fn a_tick_goes_after_the_jobs_that_arrived_before_it() {
    let mut h = connected(Version::V4, |c| {
        windows(c);
        c.shards = 1;
    });
    h.input("telemetry/a", COOL, 1);
    let at = {
        h.flow.poll(h.now);
        h.flow.poll_timeout()
    }
    .unwrap();
    h.now = at;
    // A reading arrives just before the timer fires, while the worker still holds nothing.
    h.flow.handle_timeout(h.now).unwrap();
    let batches = h.dispatched();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].jobs.len(), 1, "the job first");
    assert!(matches!(batches[1].work, Work::Tick(_)));
    for b in batches {
        h.decide(b);
    }
    let published = topics(&h.out());
    assert_eq!(
        published.len(),
        1,
        "its window closed with it: {published:?}"
    );
}

#[test]
fn a_shutdown_flushes_open_windows_and_waits_for_them() {
    let mut h = connected(Version::V4, windows);
    h.input("telemetry/a", COOL, 1);
    h.decide_all();
    assert_eq!(pubacks(&h.out()), vec![1]);
    h.flow.handle_drain(Drain::Shutdown, h.now);
    let flushes = h.dispatched();
    assert_eq!(flushes.len(), 2);
    assert!(flushes.iter().all(|b| b.work == Work::Flush));
    assert_eq!(h.flow.poll(h.now).exit, None, "the flushes are out");
    for b in flushes {
        h.decide(b);
    }
    let wire = h.out();
    let published = topics(&wire);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0, "summaries/telemetry/a");
    let Wire::Publish { payload, .. } = &wire[0] else {
        panic!("{wire:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(v["partial"], true);
    assert_eq!(
        h.flow.poll(h.now).exit,
        None,
        "the summary is not acknowledged"
    );
    h.puback(published[0].1);
    assert_eq!(h.flow.poll(h.now).exit, Some(Drain::Shutdown));
}

#[test]
fn the_seeds_rules_neither_tick_nor_flush() {
    let mut h = connected(Version::V4, |_| {});
    assert_eq!(
        {
            h.flow.poll(h.now);
            h.flow.poll_timeout()
        },
        {
            h.flow.poll(h.now);
            h.flow.poll_timeout()
        }
    );
    h.now += Duration::from_secs(3600);
    h.flow.handle_timeout(h.now).unwrap();
    assert!(h.dispatched().is_empty());
    h.flow.handle_drain(Drain::Shutdown, h.now);
    assert!(h.dispatched().is_empty());
}

#[test]
fn a_twin_patch_turns_edge_mode_on_at_its_arrival_point() {
    let mut h = connected(Version::V4, |c| c.shards = 1);
    h.input("telemetry/a", HOT, 1);
    h.packet(Inbound::Publish(InPublish {
        topic: Bytes::from_static(b"edgefilter/twin/desired"),
        payload: Bytes::from_static(br#"{"AlertMode":"edge","$version":2}"#),
        qos: 1,
        pkid: 2,
        retain: true,
        dup: false,
        properties: None,
    }));
    h.input("telemetry/a", HOT, 3);
    h.input("telemetry/a", HOT, 4);
    loop {
        let batches = h.dispatched();
        if batches.is_empty() {
            break;
        }
        for b in batches {
            h.decide(b);
        }
    }
    // 1 alerts (every mode); 3 is the first reading in edge mode (armed): alerts; 4 does not.
    let wire = h.out();
    assert_eq!(alert_ids(&wire).len(), 2);
    let reported = wire
        .iter()
        .find_map(|w| match w {
            Wire::Publish { topic, payload, .. } if topic == "edgefilter/twin/reported" => {
                Some(payload.clone())
            }
            _ => None,
        })
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reported).unwrap();
    assert_eq!(
        (v["AlertMode"].as_str(), v["$version"].as_u64()),
        (Some("edge"), Some(2))
    );
}

#[test]
fn a_refused_rule_patch_is_reported_with_its_reason() {
    let mut h = connected(Version::V4, |_| {});
    h.packet(Inbound::Publish(InPublish {
        topic: Bytes::from_static(b"edgefilter/twin/desired"),
        payload: Bytes::from_static(br#"{"SummaryWindow":10,"AllowedLateness":20}"#),
        qos: 1,
        pkid: 2,
        retain: true,
        dup: false,
        properties: None,
    }));
    let wire = h.out();
    let Some(Wire::Publish { payload, .. }) =
        wire.iter().find(|w| matches!(w, Wire::Publish { .. }))
    else {
        panic!("{wire:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(
        v["status"],
        "AllowedLateness must not exceed the summary window (10 s), got 20 s"
    );
    assert_eq!(v["SummaryWindow"], 0.0, "nothing of the patch applied");
}

#[test]
fn with_state_the_verdicts_of_a_lost_connection_still_publish() {
    // Edge mode: the stage disarmed the device when it decided input 3. Its redelivery will
    // be judged disarmed (no alert), so the alert decided now must go out, or it is lost.
    let mut h = connected(Version::V4, edge);
    h.input("telemetry/a", HOT, 3);
    let batches = h.dispatched();
    h.flow.handle_connection_lost(Role::Input);
    h.connect(connack(true));
    for b in batches {
        h.decide(b);
    }
    assert_eq!(alert_ids(&h.out()).len(), 1);
    // The redelivery: no second alert.
    h.input("telemetry/a", HOT, 3);
    h.decide_all();
    let wire = h.out();
    assert!(alert_ids(&wire).is_empty());
    assert_eq!(pubacks(&wire), vec![3]);
}

/// Under IoT Edge a device is the source edgeHub stamped on the message (`$.cdid/$.cmid`),
/// not the input topic (which carries each message's properties): per-device thresholds are
/// matched against `device/module`.
#[test]
fn under_iot_edge_a_devices_threshold_is_keyed_by_its_source_device_and_module() {
    use crate::flow::dialect::Azure;
    use crate::pipeline::rules::DeviceThresholds;

    let mut cfg = config(Version::V4);
    let map = [("furnace/+".to_string(), 300.0)].into_iter().collect();
    cfg.rules.thresholds = Arc::new(DeviceThresholds::new(map).unwrap());
    let dialect = Dialect::Azure(Box::new(Azure::new(
        "gw", "filter", "input1", "output1", None,
    )));
    let mut h = Harness::with_dialect(Version::V4, cfg, dialect);
    for w in h.connect(connack(false)) {
        if let Wire::Publish { pkid, .. } = w {
            h.puback(pkid);
        }
    }
    let _ = h.out();
    let from = |device: &str, seq: u16| {
        format!(
            "devices/gw/modules/filter/inputs/input1/sequenceNumber={seq}\
             &%24.cdid={device}&%24.cmid=SimulatedTemperatureSensor"
        )
    };
    const FURNACE: &[u8] = br#"{"machine":{"temperature":30.5}}"#;
    h.input(&from("furnace", 1), FURNACE, 1);
    h.input(&from("bearing", 2), HOT, 2);
    h.decide_all();
    let alerts: Vec<Bytes> = h
        .out()
        .into_iter()
        .filter_map(|w| match w {
            Wire::Publish { topic, payload, .. } if topic.contains("/messages/events/") => {
                Some(payload)
            }
            _ => None,
        })
        .collect();
    // furnace/SimulatedTemperatureSensor has 300; bearing/… the threshold in force, 25.
    assert_eq!(alerts, vec![Bytes::from_static(HOT)]);
}
