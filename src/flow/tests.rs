//! `Flow` with scripted packets and explicit time: no sockets, no threads, no sleeps. The test
//! plays the broker (CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP) and the verdict workers
//! (batches come out of `poll_dispatch`, are decided by a real `Stage` or by hand, and go back
//! through `handle_verdicts` in whatever order the test chooses), and reads what the flow writes
//! with rumqttc's own decoder.

use super::*;
use crate::mqtt::codec::{InPublish, PublishProperties};
use crate::mqtt::topic::Template;
use crate::pipeline::pool::shard_of;
use crate::pipeline::stage::{Out, OutKind, Stage};
use crate::pipeline::verdict::FieldPath;
use bytes::BytesMut;
use dialect::Generic;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

mod edgehub_limits;
mod outbox;
mod publisher;
mod stateful_rules;
mod twin_get;

/// What the flow wrote, decoded (both versions mapped to one shape).
#[derive(Debug, Clone, PartialEq)]
enum Wire {
    Publish {
        topic: String,
        payload: Bytes,
        pkid: u16,
        dup: bool,
        retain: bool,
    },
    PubAck(u16),
    Subscribe(u16, Vec<String>),
    PingReq,
    Disconnect,
}

struct Harness {
    flow: Flow,
    now: Instant,
    metrics: Arc<Metrics>,
    stage: Stage,
    version: Version,
}

const ALERT: &[u8] = br#"{"machine":{"temperature":30}}"#;
const COOL: &[u8] = br#"{"machine":{"temperature":20}}"#;

fn config(version: Version) -> FlowConfig {
    FlowConfig {
        version,
        shards: 2,
        pooled: true,
        // Every batch is handed to the "workers" (the test), never decided inline.
        inline_batch: 0,
        max_pending: 100,
        max_held: 100,
        separate_publisher: false,
        max_inflight: 100,
        batch_max: 256,
        batch_linger: Duration::ZERO,
        batch_format: Format::Single,
        drain_timeout: Duration::from_secs(10),
        keep_alive_secs: 30,
        rules: RuleSettings::default(),
        event_time: None,
        ack_policy: AckPolicy::Alert,
        twin_timeout: Duration::from_secs(10),
    }
}

fn connack(session_present: bool) -> ConnAckInfo {
    ConnAckInfo {
        session_present,
        code: 0,
        reason: String::new(),
        receive_maximum: None,
        maximum_packet_size: None,
        server_keep_alive: None,
    }
}

impl Harness {
    fn new(version: Version, tweak: impl FnOnce(&mut FlowConfig)) -> Harness {
        let mut cfg = config(version);
        tweak(&mut cfg);
        let dialect = Dialect::Generic(Generic::new(
            version,
            vec!["telemetry/#".into()],
            1,
            "edgefilter/twin",
            Template::parse("alerts/{topic}").unwrap(),
            Some("edgefilter/deadletter".into()),
        ));
        Harness::with_dialect(version, cfg, dialect)
    }

    /// A harness around `dialect` (threshold 25).
    fn with_dialect(version: Version, cfg: FlowConfig, dialect: Dialect) -> Harness {
        let metrics = Arc::new(Metrics::new());
        let flow = Flow::new(
            cfg,
            dialect,
            metrics.clone(),
            Arc::new(Threshold::new(25.0)),
            Anchor::now(),
        );
        Harness {
            flow,
            now: Instant::now(),
            metrics,
            stage: Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1 << 20),
            version,
        }
    }

    /// CONNACK, then the SUBACKs for what the flow subscribed; what the flow wrote after
    /// each.
    fn connect(&mut self, info: ConnAckInfo) -> Vec<Wire> {
        self.flow
            .handle_connack(Role::Input, &info, None, self.now)
            .unwrap();
        let mut wire = self.out();
        let subscribes: Vec<(u16, usize)> = wire
            .iter()
            .filter_map(|w| match w {
                Wire::Subscribe(pkid, filters) => Some((*pkid, filters.len())),
                _ => None,
            })
            .collect();
        for (pkid, n) in subscribes {
            self.packet(Inbound::SubAck {
                pkid,
                granted: vec![Some(1); n],
            });
        }
        wire.extend(self.out());
        wire
    }

    fn packet(&mut self, p: Inbound) {
        self.packet_on(Role::Input, p);
    }

    fn packet_on(&mut self, role: Role, p: Inbound) {
        self.flow.handle_packet(role, p, self.now).unwrap();
    }

    fn input(&mut self, topic: &str, body: &'static [u8], pkid: u16) {
        self.publish(topic, body, 1, pkid, false);
    }

    fn publish(&mut self, topic: &str, body: &'static [u8], qos: u8, pkid: u16, retain: bool) {
        self.packet(Inbound::Publish(InPublish {
            topic: Bytes::from(topic.to_string()),
            payload: Bytes::from_static(body),
            qos,
            pkid,
            retain,
            dup: false,
            properties: None,
        }));
    }

    fn puback(&mut self, pkid: u16) {
        self.packet(Inbound::PubAck {
            pkid,
            ok: true,
            reason: String::new(),
        });
    }

    /// The batches the flow hands out now (undecided).
    fn dispatched(&mut self) -> Vec<Batch<Meta>> {
        std::iter::from_fn(|| self.flow.poll_dispatch()).collect()
    }

    /// Decides a batch with the real stage and hands it back.
    fn decide(&mut self, mut batch: Batch<Meta>) {
        self.stage.run(&mut batch);
        self.flow.handle_verdicts(batch, self.now);
    }

    /// Every batch handed out now, decided in order.
    fn decide_all(&mut self) {
        for b in self.dispatched() {
            self.decide(b);
        }
    }

    /// Polls, then decodes and clears what the flow wrote (to the input connection, or the
    /// only one).
    fn out(&mut self) -> Vec<Wire> {
        self.out_on(Role::Input)
    }

    /// Polls, then decodes and clears what the flow wrote to connection `role`.
    fn out_on(&mut self, role: Role) -> Vec<Wire> {
        self.flow.poll(self.now);
        let mut buf = BytesMut::from(self.flow.poll_transmit(role));
        self.flow.handle_transmitted(role, self.now);
        let mut wire = Vec::new();
        while !buf.is_empty() {
            wire.push(match self.version {
                Version::V4 => from_v4(v4::Packet::read(&mut buf, 1 << 20).unwrap()),
                // rumqttc's v5 reader wants a reason code in a DISCONNECT; ours has none (0x00,
                // normal disconnection, may be omitted).
                Version::V5 if buf.starts_with(&[0xE0, 0x00]) => {
                    let _ = buf.split_to(2);
                    Wire::Disconnect
                }
                Version::V5 => from_v5(v5::Packet::read(&mut buf, None).unwrap()),
            });
        }
        wire
    }
}

fn from_v4(p: v4::Packet) -> Wire {
    match p {
        v4::Packet::Publish(p) => Wire::Publish {
            topic: p.topic,
            payload: p.payload,
            pkid: p.pkid,
            dup: p.dup,
            retain: p.retain,
        },
        v4::Packet::PubAck(a) => Wire::PubAck(a.pkid),
        v4::Packet::Subscribe(s) => {
            Wire::Subscribe(s.pkid, s.filters.into_iter().map(|f| f.path).collect())
        }
        v4::Packet::PingReq => Wire::PingReq,
        v4::Packet::Disconnect => Wire::Disconnect,
        other => panic!("a client does not send {other:?}"),
    }
}

fn from_v5(p: v5::Packet) -> Wire {
    match p {
        v5::Packet::Publish(p) => Wire::Publish {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            pkid: p.pkid,
            dup: p.dup,
            retain: p.retain,
        },
        v5::Packet::PubAck(a) => Wire::PubAck(a.pkid),
        v5::Packet::Subscribe(s) => {
            Wire::Subscribe(s.pkid, s.filters.into_iter().map(|f| f.path).collect())
        }
        v5::Packet::PingReq(_) => Wire::PingReq,
        v5::Packet::Disconnect(_) => Wire::Disconnect,
        other => panic!("a client does not send {other:?}"),
    }
}

/// The packet ids of the alerts (publishes on `alerts/…`) in `wire`, in order.
fn alert_ids(wire: &[Wire]) -> Vec<u16> {
    wire.iter()
        .filter_map(|w| match w {
            Wire::Publish { topic, pkid, .. } if topic.starts_with("alerts/") => Some(*pkid),
            _ => None,
        })
        .collect()
}

fn pubacks(wire: &[Wire]) -> Vec<u16> {
    wire.iter()
        .filter_map(|w| match w {
            Wire::PubAck(id) => Some(*id),
            _ => None,
        })
        .collect()
}

/// A connected harness whose reported-properties publish is already acknowledged.
fn connected(version: Version, tweak: impl FnOnce(&mut FlowConfig)) -> Harness {
    let mut h = Harness::new(version, tweak);
    let wire = h.connect(connack(false));
    for w in &wire {
        if let Wire::Publish { pkid, .. } = w {
            h.puback(*pkid);
        }
    }
    assert!(h.metrics.is_connected(), "every subscription was granted");
    h
}

#[test]
fn a_connection_subscribes_and_reports_the_twin() {
    let mut h = Harness::new(Version::V4, |_| {});
    let wire = h.connect(connack(false));
    let subs: Vec<&Vec<String>> = wire
        .iter()
        .filter_map(|w| match w {
            Wire::Subscribe(_, f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(
        subs,
        vec![
            &vec!["telemetry/#".to_string()],
            &vec![
                "edgefilter/twin/reported".to_string(),
                "edgefilter/twin/desired".to_string()
            ]
        ]
    );
    assert!(wire.iter().any(|w| matches!(w,
        Wire::Publish { topic, retain: true, .. } if topic == "edgefilter/twin/reported")));
}

#[test]
fn input_acks_leave_in_arrival_order_when_alert_pubacks_come_back_out_of_order() {
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 11);
    h.input("telemetry/b", ALERT, 12);
    h.input("telemetry/c", COOL, 13);
    h.decide_all();
    let wire = h.out();
    let alerts = alert_ids(&wire);
    assert_eq!(alerts.len(), 2);
    assert!(
        pubacks(&wire).is_empty(),
        "nothing is acknowledged before its alert is"
    );
    // The broker acknowledges the second alert first: input 12 is done, but 11 is not.
    h.puback(alerts[1]);
    assert!(pubacks(&h.out()).is_empty(), "12 waits for 11");
    h.puback(alerts[0]);
    assert_eq!(pubacks(&h.out()), vec![11, 12, 13]);
    assert_eq!(h.metrics.snapshot().alerts, 2);
}

#[test]
fn verdicts_coming_back_out_of_order_do_not_reorder_acks() {
    let mut h = connected(Version::V4, |_| {});
    // Two devices on two shards, decided by the workers in reverse order.
    let mut topics = (0..50).map(|i| format!("telemetry/dev-{i}"));
    let (a, b) = loop {
        let (a, b) = (topics.next().unwrap(), topics.next().unwrap());
        if shard_of(a.as_bytes(), 2) != shard_of(b.as_bytes(), 2) {
            break (a, b);
        }
    };
    h.input(&a, COOL, 1);
    h.input(&b, COOL, 2);
    let batches = h.dispatched();
    assert_eq!(batches.len(), 2);
    for batch in batches.into_iter().rev() {
        h.decide(batch);
    }
    assert_eq!(pubacks(&h.out()), vec![1, 2]);
}

#[test]
fn an_input_is_released_only_when_every_publish_it_caused_is_acknowledged() {
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 7);
    let mut batch = h.dispatched().pop().unwrap();
    h.stage.run(&mut batch);
    // A rule that sends the input to two outputs: two publishes for one input.
    batch.outs.push(Out {
        job: 0,
        kind: OutKind::Alert,
    });
    h.flow.handle_verdicts(batch, h.now);
    let alerts = alert_ids(&h.out());
    assert_eq!(alerts.len(), 2);
    h.puback(alerts[0]);
    assert!(
        pubacks(&h.out()).is_empty(),
        "the first PUBACK does not release it"
    );
    h.puback(alerts[1]);
    assert_eq!(pubacks(&h.out()), vec![7]);
}

#[test]
fn a_resumed_session_resends_unacknowledged_alerts_with_dup() {
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 3);
    h.decide_all();
    let first = h.out();
    let id = alert_ids(&first)[0];
    assert_eq!(
        h.flow.handle_connection_lost(Role::Input),
        1,
        "input 3 is forgotten"
    );
    let wire = h.connect(connack(true));
    let resent: Vec<&Wire> = wire
        .iter()
        .filter(|w| matches!(w, Wire::Publish { topic, .. } if topic.starts_with("alerts/")))
        .collect();
    assert_eq!(resent.len(), 1);
    assert!(matches!(resent[0], Wire::Publish { pkid, dup: true, .. } if *pkid == id));
    // Its PUBACK finishes the alert; the input itself belonged to the lost connection.
    h.puback(id);
    for w in &wire {
        if let Wire::Publish { topic, pkid, .. } = w {
            if topic == "edgefilter/twin/reported" {
                h.puback(*pkid);
            }
        }
    }
    assert!(pubacks(&h.out()).is_empty());
    assert!(h.flow.drained());
}

#[test]
fn a_new_session_publishes_unacknowledged_alerts_again_as_new() {
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 3);
    h.decide_all();
    let _ = h.out();
    h.flow.handle_connection_lost(Role::Input);
    let wire = h.connect(connack(false));
    let alerts: Vec<&Wire> = wire
        .iter()
        .filter(|w| matches!(w, Wire::Publish { topic, .. } if topic.starts_with("alerts/")))
        .collect();
    assert_eq!(alerts.len(), 1);
    assert!(matches!(alerts[0], Wire::Publish { dup: false, .. }));
}

#[test]
fn verdicts_of_a_lost_connection_publish_nothing_when_the_session_resumed() {
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 3);
    let batches = h.dispatched();
    h.flow.handle_connection_lost(Role::Input);
    // Back with the session: the broker redelivers input 3, so its old verdict is moot.
    h.connect(connack(true));
    for b in batches {
        h.decide(b);
    }
    assert!(alert_ids(&h.out()).is_empty());
    // Without the session the broker forgot input 3: its alert must still go out.
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 3);
    let batches = h.dispatched();
    h.flow.handle_connection_lost(Role::Input);
    h.connect(connack(false));
    for b in batches {
        h.decide(b);
    }
    assert_eq!(alert_ids(&h.out()).len(), 1);
}

#[test]
fn a_twin_patch_changes_the_rules_exactly_between_two_batches() {
    let mut h = connected(Version::V4, |c| c.shards = 1);
    h.input("telemetry/a", ALERT, 1);
    h.packet(Inbound::Publish(InPublish {
        topic: Bytes::from_static(b"edgefilter/twin/desired"),
        payload: Bytes::from_static(br#"{"TemperatureThreshold":35,"$version":2}"#),
        qos: 1,
        pkid: 2,
        retain: true,
        dup: false,
        properties: None,
    }));
    h.input("telemetry/a", ALERT, 3);
    // The patch sealed the first batch with the old rules; the worker gets the next batch
    // when it hands the first back.
    let first = h.dispatched();
    assert_eq!(first.len(), 1, "the patch is a barrier");
    assert_eq!(first[0].rules.threshold, 25.0);
    assert_eq!(first[0].jobs.len(), 1);
    for b in first {
        h.decide(b);
    }
    let second = h.dispatched();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].rules.threshold, 35.0);
    for b in second {
        h.decide(b);
    }
    let wire = h.out();
    assert_eq!(
        alert_ids(&wire).len(),
        1,
        "30 > 25 alerts, 30 > 35 does not"
    );
    assert_eq!(h.flow.threshold.get(), 35.0);
}

#[test]
fn a_drain_waits_for_outstanding_acks_then_disconnects() {
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 1);
    h.decide_all();
    let alert = alert_ids(&h.out())[0];
    h.flow.handle_drain(Drain::Shutdown, h.now);
    // Input after the drain started is left to the broker.
    h.input("telemetry/b", ALERT, 2);
    assert!(h.dispatched().is_empty());
    let poll = h.flow.poll(h.now);
    assert_eq!(poll.exit, None, "the alert is not acknowledged yet");
    h.puback(alert);
    let poll = h.flow.poll(h.now);
    assert_eq!(poll.exit, Some(Drain::Shutdown));
    let wire = h.out();
    assert_eq!(wire.last(), Some(&Wire::Disconnect));
    assert_eq!(pubacks(&wire), vec![1], "input 2 stays unacknowledged");
}

#[test]
fn a_drain_gives_up_at_its_deadline() {
    let mut h = connected(Version::V4, |c| c.drain_timeout = Duration::from_secs(2));
    h.input("telemetry/a", ALERT, 1);
    h.decide_all();
    let _ = h.out();
    h.flow.handle_drain(Drain::Shutdown, h.now);
    assert_eq!(
        {
            h.flow.poll(h.now);
            h.flow.poll_timeout()
        },
        Some(h.now + Duration::from_secs(2))
    );
    h.now += Duration::from_secs(2);
    assert_eq!(h.flow.poll(h.now).exit, Some(Drain::Shutdown));
}

#[test]
fn keep_alive_pings_when_idle_and_times_out_without_an_answer() {
    let mut h = connected(Version::V4, |c| c.keep_alive_secs = 10);
    let t0 = h.now;
    assert_eq!(
        {
            h.flow.poll(h.now);
            h.flow.poll_timeout()
        },
        Some(t0 + Duration::from_secs(10))
    );
    h.now += Duration::from_secs(10);
    h.flow.handle_timeout(h.now).unwrap();
    assert_eq!(h.out(), vec![Wire::PingReq]);
    h.packet(Inbound::PingResp);
    h.now += Duration::from_secs(10);
    h.flow.handle_timeout(h.now).unwrap();
    assert_eq!(h.out(), vec![Wire::PingReq]);
    h.now += Duration::from_secs(10);
    assert!(matches!(
        h.flow.handle_timeout(h.now),
        Err(FlowError::PingTimeout)
    ));
}

#[test]
fn the_server_keep_alive_overrides_ours() {
    let mut h = Harness::new(Version::V5, |c| c.keep_alive_secs = 30);
    let mut info = connack(false);
    info.server_keep_alive = Some(5);
    h.connect(info);
    assert_eq!(
        {
            h.flow.poll(h.now);
            h.flow.poll_timeout()
        },
        Some(h.now + Duration::from_secs(5))
    );
}

#[test]
fn the_window_is_the_smaller_of_receive_maximum_and_max_inflight() {
    for (receive_maximum, max_inflight, expected) in [(Some(2), 100, 2), (None, 3, 3)] {
        let mut h = Harness::new(Version::V5, |c| c.max_inflight = max_inflight);
        let mut info = connack(false);
        info.receive_maximum = receive_maximum;
        let wire = h.connect(info);
        // The reported-properties publish took one slot.
        let reported = wire
            .iter()
            .find_map(|w| match w {
                Wire::Publish { pkid, .. } => Some(*pkid),
                _ => None,
            })
            .unwrap();
        h.puback(reported);
        for i in 0..5 {
            h.input("telemetry/a", ALERT, 10 + i);
        }
        h.decide_all();
        let sent = alert_ids(&h.out());
        assert_eq!(sent.len(), expected, "receive max {receive_maximum:?}");
        h.puback(sent[0]);
        assert_eq!(
            alert_ids(&h.out()).len(),
            1,
            "one acknowledged, one more sent"
        );
    }
}

#[test]
fn the_broker_maximum_packet_size_is_honoured() {
    let mut h = Harness::new(Version::V5, |_| {});
    let mut info = connack(false);
    info.maximum_packet_size = Some(2000);
    let wire = h.connect(info);
    for w in &wire {
        if let Wire::Publish { pkid, .. } = w {
            h.puback(*pkid);
        }
    }
    // An alert whose packet would exceed 2000 bytes is dead-lettered (cut to 1 KiB) instead.
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let big = BIG.get_or_init(|| {
        let mut b = br#"{"machine":{"temperature":30},"pad":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', 3000));
        b.extend_from_slice(b"\"}");
        b
    });
    h.packet(Inbound::Publish(InPublish {
        topic: Bytes::from_static(b"telemetry/a"),
        payload: Bytes::from(big.clone()),
        qos: 1,
        pkid: 9,
        retain: false,
        dup: false,
        properties: None,
    }));
    h.input("telemetry/b", ALERT, 10);
    h.decide_all();
    let wire = h.out();
    let publishes: Vec<(String, u16, usize)> = wire
        .iter()
        .filter_map(|w| match w {
            Wire::Publish {
                topic,
                pkid,
                payload,
                ..
            } => Some((topic.clone(), *pkid, payload.len())),
            _ => None,
        })
        .collect();
    assert_eq!(publishes.len(), 2, "{publishes:?}");
    assert_eq!(publishes[0].0, "edgefilter/deadletter");
    assert_eq!(publishes[1].0, "alerts/telemetry/b");
    assert_eq!(h.metrics.unpublishable_count("alert"), 1);
    h.puback(publishes[0].1);
    h.puback(publishes[1].1);
    assert_eq!(pubacks(&h.out()), vec![9, 10], "the stream goes on");
}

#[test]
fn an_alert_topic_too_long_to_encode_is_dead_lettered_and_acknowledged() {
    let mut h = connected(Version::V4, |_| {});
    // A legal input topic whose alert topic (`alerts/` + it) exceeds 65,535 bytes.
    let topic = format!("telemetry/{}", "M".repeat(65_520));
    h.input(&topic, ALERT, 1);
    h.input("telemetry/ok", ALERT, 2);
    h.decide_all();
    let wire = h.out();
    let topics: Vec<String> = wire
        .iter()
        .filter_map(|w| match w {
            Wire::Publish { topic, .. } => Some(topic.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, vec!["edgefilter/deadletter", "alerts/telemetry/ok"]);
    for w in &wire {
        if let Wire::Publish { pkid, .. } = w {
            h.puback(*pkid);
        }
    }
    assert_eq!(pubacks(&h.out()), vec![1, 2]);
}

#[test]
fn rejected_input_is_dead_lettered_and_acknowledged_after_its_dead_letter() {
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", b"not json", 4);
    h.decide_all();
    let wire = h.out();
    let dl = wire
        .iter()
        .find_map(|w| match w {
            Wire::Publish { topic, pkid, .. } if topic == "edgefilter/deadletter" => Some(*pkid),
            _ => None,
        })
        .unwrap();
    assert!(pubacks(&wire).is_empty());
    h.puback(dl);
    assert_eq!(pubacks(&h.out()), vec![4]);
    assert_eq!(h.metrics.snapshot().dead_letters, 1);
}

#[test]
fn a_refused_subscription_ends_the_connection() {
    let mut h = Harness::new(Version::V4, |_| {});
    h.flow
        .handle_connack(Role::Input, &connack(false), None, h.now)
        .unwrap();
    let wire = h.out();
    let Some(Wire::Subscribe(pkid, _)) = wire.first().cloned() else {
        panic!("{wire:?}")
    };
    let e = h
        .flow
        .handle_packet(
            Role::Input,
            Inbound::SubAck {
                pkid,
                granted: vec![None],
            },
            h.now,
        )
        .unwrap_err();
    assert!(matches!(&e, FlowError::SubscribeRefused(f) if f == "telemetry/#"));
    assert!(e.is_fatal_at_startup());
}

#[test]
fn subscribe_packet_ids_never_collide_with_resent_publishes() {
    let mut h = connected(Version::V4, |_| {});
    for i in 0..3 {
        h.input("telemetry/a", ALERT, 20 + i);
    }
    h.decide_all();
    let in_flight = alert_ids(&h.out());
    h.flow.handle_connection_lost(Role::Input);
    let wire = h.connect(connack(true));
    for w in &wire {
        if let Wire::Subscribe(pkid, _) = w {
            assert!(!in_flight.contains(pkid), "{pkid} is still in flight");
        }
    }
}

#[test]
fn input_credit_pauses_reading_at_max_pending() {
    let mut h = connected(Version::V4, |c| c.max_pending = 2);
    h.input("telemetry/a", COOL, 1);
    assert!(h.flow.poll(h.now).read);
    h.input("telemetry/a", COOL, 2);
    assert!(!h.flow.poll(h.now).read, "two inputs pending");
    h.decide_all();
    assert!(h.flow.poll(h.now).read, "acknowledged, room again");
}

#[test]
fn v5_alerts_carry_the_input_properties_and_the_type() {
    let mut h = connected(Version::V5, |_| {});
    h.packet(Inbound::Publish(InPublish {
        topic: Bytes::from_static(b"telemetry/a"),
        payload: Bytes::from_static(ALERT),
        qos: 1,
        pkid: 5,
        retain: false,
        dup: false,
        properties: Some(PublishProperties {
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        }),
    }));
    h.decide_all();
    h.flow.poll(h.now);
    let mut buf = BytesMut::from(h.flow.poll_transmit(Role::Input));
    let v5::Packet::Publish(p) = v5::Packet::read(&mut buf, None).unwrap() else {
        panic!("not a publish")
    };
    assert_eq!(&p.payload[..], ALERT, "the original body, byte for byte");
    assert_eq!(
        p.properties.unwrap().user_properties,
        vec![
            ("k".to_string(), "v".to_string()),
            ("MessageType".to_string(), "Alert".to_string())
        ]
    );
}

#[test]
fn an_input_published_to_a_wildcard_topic_gets_no_alert_on_a_wildcard_topic() {
    // Some brokers (rumqttd) accept a PUBLISH to `telemetry/#`.
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/#", ALERT, 1);
    h.decide_all();
    let wire = h.out();
    let topics: Vec<String> = wire
        .iter()
        .filter_map(|w| match w {
            Wire::Publish { topic, .. } => Some(topic.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, vec!["edgefilter/deadletter"]);
    assert_eq!(h.metrics.unpublishable_count("alert"), 1);
}

#[test]
fn retained_telemetry_is_not_judged_again_on_a_resumed_session() {
    // Issue 8 item 7: every reconnect resubscribes, and the broker sends the retained
    // telemetry again (retain flag set); it was alerted when it first arrived.
    let mut h = connected(Version::V4, |_| {});
    h.publish("telemetry/a", ALERT, 1, 1, true);
    h.decide_all();
    let wire = h.out();
    assert_eq!(alert_ids(&wire).len(), 1, "first time: judged");
    h.puback(alert_ids(&wire)[0]);
    let _ = h.out();
    h.flow.handle_connection_lost(Role::Input);
    h.connect(connack(true));
    h.publish("telemetry/a", ALERT, 1, 2, true);
    h.decide_all();
    let wire = h.out();
    assert!(alert_ids(&wire).is_empty(), "{wire:?}");
    assert_eq!(pubacks(&wire), vec![2], "acknowledged all the same");
    // A live message (retain flag clear) on the resumed session is judged as usual.
    h.input("telemetry/a", ALERT, 3);
    h.decide_all();
    assert_eq!(alert_ids(&h.out()).len(), 1);
}

#[test]
fn the_last_applied_threshold_survives_a_restart_with_an_invalid_desired_document() {
    // Issue 8 item 6: the retained reported document of the earlier run is read first; the
    // retained desired document is invalid.
    let mut h = connected(Version::V4, |_| {});
    h.publish(
        "edgefilter/twin/reported",
        br#"{"TemperatureThreshold":40.0,"$version":3,"status":"ok","source":"desired"}"#,
        1,
        1,
        true,
    );
    h.publish(
        "edgefilter/twin/desired",
        br#"{"TemperatureThreshold":"hot","$version":4}"#,
        1,
        2,
        true,
    );
    h.input("telemetry/a", ALERT, 3); // 30: an alert at 25, not at 40
    h.decide_all();
    let wire = h.out();
    assert!(alert_ids(&wire).is_empty(), "{wire:?}");
    assert_eq!(h.flow.threshold.get(), 40.0);
    let reported: Vec<serde_json::Value> = wire
        .iter()
        .filter_map(|w| match w {
            Wire::Publish { topic, payload, .. } if topic == "edgefilter/twin/reported" => {
                Some(serde_json::from_slice(payload).unwrap())
            }
            _ => None,
        })
        .collect();
    let last = reported.last().unwrap();
    assert_eq!(last["TemperatureThreshold"], 40.0);
    assert_eq!(last["$version"], 3);
    assert_eq!(last["source"], "restored");
    assert!(last["status"]
        .as_str()
        .unwrap()
        .contains("TemperatureThreshold"));
    // Our own live report coming back (retain clear) is not a restore.
    h.publish(
        "edgefilter/twin/reported",
        br#"{"TemperatureThreshold":1.0,"$version":9}"#,
        0,
        0,
        false,
    );
    assert_eq!(h.flow.threshold.get(), 40.0);
}

#[test]
fn qos0_inputs_past_max_pending_are_dropped_and_counted() {
    let mut h = connected(Version::V4, |c| c.max_held = 1);
    h.input("telemetry/a", ALERT, 1);
    h.decide_all();
    let _ = h.out();
    h.publish("telemetry/b", ALERT, 0, 0, false);
    assert_eq!(h.metrics.overload_count("dropped_qos0"), 1);
    assert_eq!(h.flow.unacknowledged(), 1);
}

#[test]
fn an_input_too_large_to_read_is_dead_lettered_from_its_first_bytes_and_acknowledged() {
    // Issue 8 item 9: what the reader did not take whole arrives as its head and size.
    let mut h = connected(Version::V5, |_| {});
    h.input("telemetry/a", ALERT, 1);
    h.packet(Inbound::OversizePublish {
        publish: InPublish {
            topic: Bytes::from_static(b"telemetry/a"),
            payload: Bytes::from_static(br#"{"machine":{"temperature":99},"pad":"xxxx"#),
            qos: 1,
            pkid: 2,
            retain: false,
            dup: false,
            properties: None,
        },
        size: 2_000_000,
    });
    h.input("telemetry/a", COOL, 3);
    h.decide_all();
    let wire = h.out();
    let mut ids = Vec::new();
    let mut dead = None;
    for w in &wire {
        if let Wire::Publish {
            topic,
            pkid,
            payload,
            ..
        } = w
        {
            ids.push(*pkid);
            if topic == "edgefilter/deadletter" {
                dead = Some(serde_json::from_slice::<serde_json::Value>(payload).unwrap());
            }
        }
    }
    let dead = dead.expect("a dead letter");
    assert_eq!(dead["reason"], "too_large");
    assert_eq!(
        (dead["size"].as_u64(), dead["truncated"].as_bool()),
        (Some(2_000_000), Some(true))
    );
    assert!(pubacks(&wire).is_empty());
    for id in ids {
        h.puback(id);
    }
    assert_eq!(pubacks(&h.out()), vec![1, 2, 3], "in arrival order");
    let s = h.metrics.snapshot();
    assert_eq!((s.received, s.rejected, s.dead_letters), (3, 1, 1));
}

#[test]
fn once_a_publish_is_left_with_the_broker_no_later_one_is_acknowledged() {
    // A PUBACK after one left out breaks arrival order, and mosquitto 2.0.11, which reuses
    // packet ids in flight, applies it to the first message with that id: the one left out,
    // which is then gone from the session (RELIABILITY.md, "Overload: root causes").
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", COOL, 1);
    h.decide_all();
    assert_eq!(pubacks(&h.out()), vec![1]);
    h.flow.handle_drain(Drain::Shutdown, h.now);
    h.input("telemetry/a", COOL, 2); // left: the broker redelivers it next session
    h.publish(
        "edgefilter/twin/desired",
        br#"{"TemperatureThreshold":30}"#,
        1,
        3,
        false,
    );
    h.publish("elsewhere/x", b"{}", 1, 4, false);
    h.decide_all();
    let wire = h.out();
    assert!(pubacks(&wire).is_empty(), "{wire:?}");
    assert_eq!(
        h.flow.threshold.get(),
        25.0,
        "the patch comes again, unapplied"
    );
    assert_eq!(wire.last(), Some(&Wire::Disconnect));
}

#[test]
fn what_was_not_written_before_a_connection_was_lost_never_reaches_the_next_one() {
    // PUBACKs name packet ids of the dead connection: written on the next one they would
    // acknowledge other messages of the resumed session.
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 5);
    h.input("telemetry/b", COOL, 6);
    h.decide_all();
    let alerts = alert_ids(&h.out());
    h.puback(alerts[0]);
    h.flow.poll(h.now); // PUBACKs 5 and 6 are encoded, then the write fails
    assert!(!h.flow.poll_transmit(Role::Input).is_empty());
    h.flow.handle_connection_lost(Role::Input);
    assert!(h.flow.poll_transmit(Role::Input).is_empty());
    let wire = h.connect(connack(true));
    assert!(pubacks(&wire).is_empty(), "{wire:?}");
}

#[test]
fn on_one_connection_reading_goes_on_while_a_puback_is_due_whatever_is_held() {
    // The PUBACKs the held inputs wait for come through this socket, behind whatever input the
    // broker sent first: to stop reading is to stall until the keep-alive gives up (a broker
    // past its Receive Maximum — mosquitto 2.0.11 — did that at a hard bound of held inputs).
    let mut h = connected(Version::V5, |c| {
        c.max_pending = 1;
        c.max_held = 2;
    });
    for pkid in 1..=3 {
        h.input("telemetry/a", ALERT, pkid);
    }
    h.decide_all();
    let alerts = alert_ids(&h.out());
    assert_eq!(alerts.len(), 3);
    assert!(h.flow.poll(h.now).read, "three held, PUBACKs due: read on");
    for id in alerts {
        h.puback(id);
    }
    assert_eq!(pubacks(&h.out()), vec![1, 2, 3]);
    assert!(h.flow.poll(h.now).read);
}
