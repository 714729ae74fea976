//! `Flow`'s egress (stages → MQTT out): alerts waiting in the batcher, the outgoing QoS 1
//! window, and the bytes to write to each connection. Pure: time is an argument.
//!
//! Invariants (tested below):
//! - our publishes are encoded only into the buffer of the connection that carries them (the
//!   publisher connection, or the only one), and only while it is up; acknowledgements and
//!   subscriptions into the input connection's;
//! - what was encoded for a connection and not written is dropped when that connection is lost
//!   (its PUBACKs name packet ids of a dead connection); the publishes themselves stay in the
//!   window and are resent (DUP) or requeued after the next CONNACK.

use bytes::BytesMut;

use super::outbound::{write_publish, PendingAlert, Sent};
use super::Role;
use crate::mqtt::codec::OutPublish;
use crate::mqtt::outgoing::Outgoing;
use crate::pipeline::alert_batch::Batcher;

/// The egress of the filter's publishes (see the module documentation).
#[derive(Debug)]
pub(super) struct Egress {
    /// Our QoS 1 publishes: in flight (by packet id) and queued for room in the window.
    pub(super) out: Outgoing<Sent>,
    /// Alerts (and clears, summaries) collected into flushes.
    pub(super) batcher: Batcher<PendingAlert>,
    /// What to write to the input connection (everything, on one connection) and to the
    /// publisher connection.
    bufs: [BytesMut; 2],
    /// The connection our publishes take.
    publish_role: Role,
    /// The broker's Maximum Packet Size (MQTT 5) on that connection, kept across its
    /// reconnects.
    pub(super) max_packet: Option<u32>,
}

fn slot(role: Role) -> usize {
    match role {
        Role::Input => 0,
        Role::Publish => 1,
    }
}

impl Egress {
    pub(super) fn new(
        out: Outgoing<Sent>,
        batcher: Batcher<PendingAlert>,
        publish_role: Role,
    ) -> Self {
        Egress {
            out,
            batcher,
            bufs: [BytesMut::with_capacity(64 * 1024), BytesMut::new()],
            publish_role,
            max_packet: None,
        }
    }

    /// The connection our publishes take.
    pub(super) fn publish_role(&self) -> Role {
        self.publish_role
    }

    /// The output buffer of connection `role`.
    pub(super) fn buf(&mut self, role: Role) -> &mut BytesMut {
        &mut self.bufs[slot(role)]
    }

    /// The bytes to write to connection `role`.
    pub(super) fn transmit(&self, role: Role) -> &[u8] {
        &self.bufs[slot(role)]
    }

    /// The bytes of connection `role` were written, or are moot (the connection is lost).
    pub(super) fn clear(&mut self, role: Role) {
        self.bufs[slot(role)].clear();
    }

    /// The publishing connection resumed its session: every unacknowledged publish again,
    /// DUP, oldest first. Returns how many.
    pub(super) fn resend(&mut self) -> usize {
        let buf = &mut self.bufs[slot(self.publish_role)];
        self.out.resend(|p| write_publish(p, buf))
    }

    /// Queued publishes into the window while there is room (the publishing connection is up).
    pub(super) fn send_ready(&mut self) {
        let buf = &mut self.bufs[slot(self.publish_role)];
        self.out.send_ready(|p| write_publish(p, buf));
    }

    /// A QoS 0 publish, straight into the publishing connection's output.
    pub(super) fn write_now(&mut self, packet: &OutPublish) {
        write_publish(packet, &mut self.bufs[slot(self.publish_role)]);
    }

    /// No publish waiting, in flight or batched.
    pub(super) fn is_idle(&self) -> bool {
        self.out.is_idle() && self.batcher.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::outbound::{Covers, SentKind};
    use crate::mqtt::codec::Version;
    use bytes::Bytes;
    use std::time::Duration;

    fn egress(publish_role: Role) -> Egress {
        Egress::new(
            Outgoing::new(10),
            Batcher::new(16, Duration::ZERO),
            publish_role,
        )
    }

    fn alert() -> OutPublish {
        at_qos(1)
    }

    fn at_qos(qos: u8) -> OutPublish {
        OutPublish::new(
            Version::V4,
            &Bytes::from_static(b"alerts/a"),
            Bytes::from_static(b"{}"),
            qos,
            false,
            None,
        )
    }

    fn sent() -> Sent {
        Sent {
            covers: Covers::Nothing,
            kind: SentKind::Alert(1),
            outbox: None,
        }
    }

    #[test]
    fn publishes_go_into_the_publishing_connections_buffer_only() {
        let mut e = egress(Role::Publish);
        e.out.enqueue(alert(), sent());
        e.send_ready();
        assert!(e.transmit(Role::Input).is_empty());
        assert!(!e.transmit(Role::Publish).is_empty());
        let mut one = egress(Role::Input);
        one.write_now(&at_qos(0));
        assert!(!one.transmit(Role::Input).is_empty());
        assert!(one.transmit(Role::Publish).is_empty());
    }

    #[test]
    fn a_lost_connections_output_is_dropped_and_its_publishes_resent() {
        let mut e = egress(Role::Publish);
        e.out.enqueue(alert(), sent());
        e.send_ready();
        e.clear(Role::Publish); // the connection is lost before the write
        assert!(e.transmit(Role::Publish).is_empty());
        assert!(!e.is_idle(), "the publish is still in flight");
        assert_eq!(e.resend(), 1);
        assert!(!e.transmit(Role::Publish).is_empty());
    }
}
