//! `Flow` with a publisher connection of its own (generic MQTT): our publishes and their
//! PUBACKs on one socket, inputs and their PUBACKs on the other, so that the input connection
//! can stop reading at `--max-pending` held inputs whatever the broker sends.

use super::*;

fn separate(max_pending: usize) -> Harness {
    let mut h = Harness::new(Version::V5, |c| {
        c.separate_publisher = true;
        c.max_pending = max_pending;
    });
    h.flow
        .handle_connack(Role::Publish, &connack(false), None, h.now)
        .unwrap();
    let wire = h.connect(connack(false));
    assert!(
        wire.iter().all(|w| matches!(w, Wire::Subscribe(..))),
        "only subscriptions on the input connection: {wire:?}"
    );
    for w in h.out_on(Role::Publish) {
        if let Wire::Publish { pkid, .. } = w {
            h.packet_on(Role::Publish, puback_of(pkid));
        }
    }
    h
}

fn puback_of(pkid: u16) -> Inbound {
    Inbound::PubAck {
        pkid,
        ok: true,
        reason: String::new(),
    }
}

#[test]
fn publishes_take_the_publisher_connection_and_acks_the_input_one() {
    let mut h = separate(100);
    h.input("telemetry/a", ALERT, 7);
    h.input("telemetry/b", COOL, 8);
    h.decide_all();
    assert!(pubacks(&h.out()).is_empty(), "7 waits for its alert");
    let alerts = alert_ids(&h.out_on(Role::Publish));
    assert_eq!(alerts.len(), 1);
    // A PUBACK on the input connection acknowledges nothing of ours.
    h.packet_on(Role::Input, puback_of(alerts[0]));
    assert!(pubacks(&h.out()).is_empty());
    h.packet_on(Role::Publish, puback_of(alerts[0]));
    assert_eq!(pubacks(&h.out()), vec![7, 8]);
    assert!(h.out_on(Role::Publish).is_empty());
}

#[test]
fn reading_stops_at_max_pending_even_while_alerts_are_in_flight() {
    // On one connection reading must go on for the alerts' PUBACKs; here they come on the
    // other socket, so the input connection stops and TCP pushes back on the broker.
    let mut h = separate(2);
    h.input("telemetry/a", ALERT, 1);
    h.input("telemetry/a", ALERT, 2);
    h.decide_all();
    let alerts = alert_ids(&h.out_on(Role::Publish));
    assert_eq!(alerts.len(), 2);
    assert!(!h.flow.poll(h.now).read, "two inputs held: stop reading");
    h.packet_on(Role::Publish, puback_of(alerts[0]));
    let poll = h.flow.poll(h.now);
    assert_eq!(pubacks(&h.out()), vec![1]);
    assert!(poll.read, "room for one more");
    // The same on one connection: reading goes on while a PUBACK is due.
    let mut one = connected(Version::V5, |c| c.max_pending = 2);
    one.input("telemetry/a", ALERT, 1);
    one.input("telemetry/a", ALERT, 2);
    one.decide_all();
    let _ = one.out();
    assert!(one.flow.poll(one.now).read);
}

#[test]
fn a_paused_input_connection_pings_but_does_not_time_out_until_it_reads_again() {
    let mut h = separate(1);
    h.input("telemetry/a", ALERT, 1);
    h.decide_all();
    let alert = alert_ids(&h.out_on(Role::Publish))[0];
    assert!(!h.flow.poll(h.now).read);
    let _ = h.out();
    // Keep the publisher connection busy so that only the input one goes silent.
    for s in [30, 60, 90] {
        h.now += Duration::from_secs(30);
        h.flow.handle_timeout(h.now).unwrap();
        assert_eq!(h.out(), vec![Wire::PingReq], "after {s} s");
        let _ = h.out_on(Role::Publish);
        h.packet_on(Role::Publish, Inbound::PingResp);
    }
    // Reading resumes: the PINGRESPs waiting behind the inputs get a whole interval.
    h.packet_on(Role::Publish, puback_of(alert));
    assert!(h.flow.poll(h.now).read);
    assert_eq!(pubacks(&h.out()), vec![1]);
    h.now += Duration::from_secs(29);
    assert!(h.flow.handle_timeout(h.now).is_ok());
    h.now += Duration::from_secs(1);
    assert!(matches!(
        h.flow.handle_timeout(h.now),
        Err(FlowError::PingTimeout)
    ));
}

#[test]
fn the_publisher_connection_resumes_its_session_alone() {
    let mut h = separate(100);
    h.input("telemetry/a", ALERT, 4);
    h.decide_all();
    let id = alert_ids(&h.out_on(Role::Publish))[0];
    assert_eq!(
        h.flow.handle_connection_lost(Role::Publish),
        0,
        "no input is forgotten"
    );
    h.flow
        .handle_connack(Role::Publish, &connack(true), None, h.now)
        .unwrap();
    let wire = h.out_on(Role::Publish);
    assert!(
        matches!(wire.as_slice(), [Wire::Publish { pkid, dup: true, .. }] if *pkid == id),
        "{wire:?}"
    );
    h.packet_on(Role::Publish, puback_of(id));
    assert_eq!(pubacks(&h.out()), vec![4]);
}

#[test]
fn a_stray_publish_on_the_publisher_connection_is_acknowledged_and_ignored() {
    let mut h = separate(100);
    h.packet_on(
        Role::Publish,
        Inbound::Publish(InPublish {
            topic: Bytes::from_static(b"telemetry/old-subscription"),
            payload: Bytes::from_static(ALERT),
            qos: 1,
            pkid: 9,
            retain: false,
            dup: false,
            properties: None,
        }),
    );
    assert_eq!(h.out_on(Role::Publish), vec![Wire::PubAck(9)]);
    assert!(h.dispatched().is_empty(), "not an input");
}

#[test]
fn a_drain_says_goodbye_on_both_connections() {
    let mut h = separate(100);
    h.flow.handle_drain(Drain::Shutdown, h.now);
    let poll = h.flow.poll(h.now);
    assert_eq!(poll.exit, Some(Drain::Shutdown));
    assert_eq!(h.out(), vec![Wire::Disconnect]);
    assert_eq!(h.out_on(Role::Publish), vec![Wire::Disconnect]);
}
