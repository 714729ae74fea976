//! The outbox acknowledgement policy in `Flow` (`flow/outbox.rs`), scripted: the test plays
//! the broker and the loop's outbox (takes the appends, says when they are committed or that
//! the write failed), with explicit time.

use super::*;

fn outbox_flow() -> Harness {
    connected(Version::V4, |c| c.ack_policy = AckPolicy::Outbox)
}

#[test]
fn an_alerting_input_is_acknowledged_once_its_alert_is_committed() {
    let mut h = outbox_flow();
    h.flow.handle_outbox_replay(7, Vec::new(), h.now);
    h.input("telemetry/a", ALERT, 1);
    h.input("telemetry/b", COOL, 2);
    h.decide_all();
    let wire = h.out();
    let alerts = alert_ids(&wire);
    assert_eq!(alerts.len(), 1, "the alert goes out at once");
    assert!(pubacks(&wire).is_empty(), "not before the commit");
    let appends = h.flow.poll_outbox();
    assert_eq!(
        appends,
        vec![OutboxAppend {
            seq: 7,
            topic: Bytes::from_static(b"alerts/telemetry/a"),
            payload: Bytes::from_static(ALERT),
        }],
        "numbered after the file's last"
    );
    assert!(h.flow.poll_outbox().is_empty(), "taken once");
    assert!(pubacks(&h.out()).is_empty(), "appended is not committed");
    h.flow.handle_outbox_committed();
    assert_eq!(pubacks(&h.out()), vec![1, 2], "before the alert's PUBACK");
    assert_eq!(h.flow.poll_outbox_done(), None);
    assert_eq!(h.flow.outbox_pending(), 1);
    h.puback(alerts[0]);
    assert_eq!(
        h.flow.poll_outbox_done(),
        Some(7),
        "done in the file on its PUBACK"
    );
    assert_eq!(h.flow.poll_outbox_done(), None, "once");
    assert_eq!(h.flow.outbox_pending(), 0);
    assert_eq!(h.metrics.snapshot().alerts, 1);
    assert!(h.flow.drained());
}

#[test]
fn only_the_acknowledged_prefix_is_marked_done() {
    let mut h = outbox_flow();
    for pkid in 1..=3 {
        h.input("telemetry/a", ALERT, pkid);
    }
    h.decide_all();
    let alerts = alert_ids(&h.out());
    let seqs: Vec<u64> = h.flow.poll_outbox().iter().map(|a| a.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2], "one commit for the whole turn");
    h.flow.handle_outbox_committed();
    assert_eq!(pubacks(&h.out()), vec![1, 2, 3]);
    // A done mark covers every earlier alert: 2 and 3 acknowledged first mark nothing.
    h.puback(alerts[2]);
    h.puback(alerts[1]);
    assert_eq!(h.flow.poll_outbox_done(), None);
    h.puback(alerts[0]);
    assert_eq!(h.flow.poll_outbox_done(), Some(2));
}

#[test]
fn an_earlier_runs_alerts_go_out_first_and_are_done_on_their_puback() {
    let mut h = Harness::new(Version::V4, |c| c.ack_policy = AckPolicy::Outbox);
    let replay = |seq: u64, body: &'static [u8]| OutboxAppend {
        seq,
        topic: Bytes::from_static(b"alerts/telemetry/old"),
        payload: Bytes::from_static(body),
    };
    h.flow.handle_outbox_replay(
        5,
        vec![replay(3, b"{\"old\":3}"), replay(4, b"{\"old\":4}")],
        h.now,
    );
    assert_eq!(h.flow.outbox_pending(), 2);
    let wire = h.connect(connack(false));
    let replayed: Vec<(u16, Bytes)> = wire
        .iter()
        .filter_map(|w| match w {
            Wire::Publish {
                topic,
                payload,
                pkid,
                ..
            } if topic == "alerts/telemetry/old" => Some((*pkid, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        replayed.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        vec![
            Bytes::from_static(b"{\"old\":3}"),
            Bytes::from_static(b"{\"old\":4}")
        ]
    );
    let first = wire
        .iter()
        .position(|w| matches!(w, Wire::Publish { .. }))
        .unwrap();
    assert!(
        matches!(&wire[first], Wire::Publish { topic, .. } if topic == "alerts/telemetry/old"),
        "before the twin report: {wire:?}"
    );
    // A new alert continues the file's numbering.
    h.input("telemetry/a", ALERT, 1);
    h.decide_all();
    let _ = h.out();
    assert_eq!(h.flow.poll_outbox()[0].seq, 5);
    h.flow.handle_outbox_committed();
    assert_eq!(pubacks(&h.out()), vec![1]);
    h.puback(replayed[0].0);
    assert_eq!(h.flow.poll_outbox_done(), Some(3));
    h.puback(replayed[1].0);
    assert_eq!(h.flow.poll_outbox_done(), Some(4));
}

#[test]
fn a_failed_outbox_falls_back_to_waiting_for_the_alerts_puback() {
    let mut h = outbox_flow();
    h.input("telemetry/a", ALERT, 1);
    h.input("telemetry/a", ALERT, 2);
    h.decide_all();
    let alerts = alert_ids(&h.out());
    assert_eq!(h.flow.poll_outbox().len(), 2);
    // The first alert's PUBACK comes before the (failing) commit.
    h.puback(alerts[0]);
    h.flow.handle_outbox_failed();
    assert_eq!(pubacks(&h.out()), vec![1], "its alert was acknowledged");
    assert_eq!(h.flow.poll_outbox_done(), None, "no done marks any more");
    h.puback(alerts[1]);
    assert_eq!(pubacks(&h.out()), vec![2]);
    // Later inputs: the alert policy.
    h.input("telemetry/a", ALERT, 3);
    h.decide_all();
    let alerts = alert_ids(&h.out());
    assert!(h.flow.poll_outbox().is_empty());
    assert!(pubacks(&h.out()).is_empty());
    h.puback(alerts[0]);
    assert_eq!(pubacks(&h.out()), vec![3]);
    assert!(h.flow.drained());
}

#[test]
fn a_drain_waits_for_the_commit() {
    let mut h = outbox_flow();
    h.input("telemetry/a", ALERT, 1);
    h.decide_all();
    let alerts = alert_ids(&h.out());
    h.puback(alerts[0]);
    h.flow.handle_drain(Drain::Shutdown, h.now);
    assert_eq!(
        h.flow.poll(h.now).exit,
        None,
        "the alert is not committed yet"
    );
    let _ = h.flow.poll_outbox();
    h.flow.handle_outbox_committed();
    assert_eq!(h.flow.poll(h.now).exit, Some(Drain::Shutdown));
    assert_eq!(h.flow.poll_outbox_done(), Some(0));
}

#[test]
fn the_alert_policy_never_touches_the_outbox() {
    let mut h = connected(Version::V4, |_| {});
    h.input("telemetry/a", ALERT, 1);
    h.decide_all();
    let alerts = alert_ids(&h.out());
    assert!(h.flow.poll_outbox().is_empty());
    h.puback(alerts[0]);
    assert_eq!(pubacks(&h.out()), vec![1]);
    assert_eq!(h.flow.poll_outbox_done(), None);
}
