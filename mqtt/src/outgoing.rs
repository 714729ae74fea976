//! Outgoing QoS 1 publishes (alerts, dead letters, reported properties) between the publisher
//! and MQTT out: packet-id allocation, the in-flight window (our `--max-inflight` and the
//! broker's Receive Maximum), a queue when the window is full, and what each PUBACK completes.
//! Pure state; the caller writes what it returns and resends ([`Outgoing::resend`]) with DUP
//! after a reconnect that resumed the session.

use std::collections::VecDeque;

use crate::codec::OutPublish;

/// A publish waiting for its PUBACK, or for room in the window.
#[derive(Debug)]
struct Entry<T> {
    packet: OutPublish,
    tag: T,
}

/// The outgoing half of a session. `T` says what a PUBACK completes.
#[derive(Debug)]
pub struct Outgoing<T> {
    /// In flight, indexed by packet id (1..=65535; slot 0 unused). Boxed so the empty table
    /// costs 512 KiB, not 65536 packets.
    slots: Vec<Option<Box<Entry<T>>>>,
    /// Packet ids in the order they were sent (acked ones are skipped lazily).
    order: VecDeque<u16>,
    inflight: usize,
    window: usize,
    next_pkid: u16,
    /// Publishes waiting for room in the window.
    queue: VecDeque<Entry<T>>,
    /// Packet ids lent to other packets (SUBSCRIBE) until their acknowledgement: MQTT packet
    /// ids are shared by every packet type in flight.
    reserved: Vec<u16>,
}

/// A publish that may go on the wire now (its packet id set).
pub type Ready<'a> = &'a OutPublish;

impl<T> Outgoing<T> {
    pub fn new(window: u16) -> Self {
        let mut slots = Vec::with_capacity(65536);
        slots.resize_with(65536, || None);
        Outgoing {
            slots,
            order: VecDeque::new(),
            inflight: 0,
            window: usize::from(window.max(1)),
            next_pkid: 1,
            queue: VecDeque::new(),
            reserved: Vec::new(),
        }
    }

    /// A free packet id for another packet type (SUBSCRIBE), not used by publishes until
    /// [`Outgoing::unreserve`].
    pub fn reserve_id(&mut self) -> Option<u16> {
        let id = self.free_pkid()?;
        self.reserved.push(id);
        Some(id)
    }

    pub fn unreserve(&mut self, pkid: u16) {
        self.reserved.retain(|&id| id != pkid);
    }

    /// The connection is gone: every lent id is free again.
    pub fn release_reserved(&mut self) {
        self.reserved.clear();
    }

    /// The window for this connection: `--max-inflight` capped by the broker's Receive
    /// Maximum.
    pub fn set_window(&mut self, window: u16) {
        self.window = usize::from(window.max(1));
    }

    pub fn inflight(&self) -> usize {
        self.inflight
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn is_idle(&self) -> bool {
        self.inflight == 0 && self.queue.is_empty()
    }

    /// Queues a QoS 1 publish. Call [`Outgoing::send_ready`] to move queued publishes into the
    /// window and write them.
    pub fn enqueue(&mut self, packet: OutPublish, tag: T) {
        self.queue.push_back(Entry { packet, tag });
    }

    /// Moves queued publishes into the window while there is room, giving each a free packet
    /// id, and hands each to `write` (which encodes it).
    pub fn send_ready(&mut self, mut write: impl FnMut(&OutPublish)) -> usize {
        let mut n = 0;
        while self.inflight < self.window && !self.queue.is_empty() {
            let Some(pkid) = self.free_pkid() else { break };
            let Some(mut entry) = self.queue.pop_front() else {
                break;
            };
            entry.packet.set_pkid(pkid);
            write(&entry.packet);
            self.slots[usize::from(pkid)] = Some(Box::new(entry));
            self.order.push_back(pkid);
            self.inflight += 1;
            n += 1;
        }
        n
    }

    fn free_pkid(&mut self) -> Option<u16> {
        for _ in 0..65535 {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if self.slots[usize::from(id)].is_none() && !self.reserved.contains(&id) {
                return Some(id);
            }
        }
        None
    }

    /// A PUBACK arrived: returns the tag of the publish it completes (None for an unknown id).
    pub fn acked(&mut self, pkid: u16) -> Option<T> {
        let entry = self.slots.get_mut(usize::from(pkid))?.take()?;
        self.inflight -= 1;
        while let Some(front) = self.order.front() {
            if self.slots[usize::from(*front)].is_some() {
                break;
            }
            self.order.pop_front();
        }
        Some(entry.tag)
    }

    /// After a reconnect that resumed the session: every unacknowledged publish, oldest first,
    /// marked DUP, for the caller to write again.
    pub fn resend(&mut self, mut write: impl FnMut(&OutPublish)) -> usize {
        let mut n = 0;
        for &pkid in &self.order {
            if let Some(entry) = self.slots[usize::from(pkid)].as_mut() {
                entry.packet.set_dup();
                write(&entry.packet);
                n += 1;
            }
        }
        n
    }

    /// After a reconnect to a NEW session: the broker forgot our packet ids, so in-flight
    /// publishes go back to the front of the queue (to be sent again as new publishes).
    pub fn requeue_all(&mut self) {
        let mut back: Vec<Entry<T>> = Vec::with_capacity(self.inflight);
        while let Some(pkid) = self.order.pop_front() {
            if let Some(entry) = self.slots[usize::from(pkid)].take() {
                back.push(*entry);
            }
        }
        self.inflight = 0;
        for entry in back.into_iter().rev() {
            self.queue.push_front(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Version;
    use bytes::Bytes;

    fn publish(n: u8) -> OutPublish {
        OutPublish::new(
            Version::V4,
            &Bytes::from_static(b"t"),
            Bytes::from(vec![n]),
            1,
            false,
            None,
        )
    }

    fn payloads(o: &mut Outgoing<u8>, resend: bool) -> Vec<u8> {
        let mut v = Vec::new();
        let f = |p: &OutPublish| v.push(p.payload()[0]);
        if resend {
            o.resend(f);
        } else {
            o.send_ready(f);
        }
        v
    }

    #[test]
    fn the_window_holds_back_the_queue() {
        let mut o = Outgoing::new(2);
        for n in 0..4 {
            o.enqueue(publish(n), n);
        }
        assert_eq!(payloads(&mut o, false), vec![0, 1]);
        assert_eq!((o.inflight(), o.queued()), (2, 2));
        assert_eq!(o.acked(1), Some(0));
        assert_eq!(o.acked(1), None, "an id is completed once");
        assert_eq!(payloads(&mut o, false), vec![2]);
        assert_eq!(o.acked(2), Some(1));
        assert_eq!(o.acked(3), Some(2));
        assert_eq!(payloads(&mut o, false), vec![3]);
        assert_eq!(o.acked(4), Some(3));
        assert!(o.is_idle());
    }

    #[test]
    fn packet_ids_skip_those_in_flight_when_wrapping() {
        let mut o: Outgoing<u8> = Outgoing::new(u16::MAX);
        o.next_pkid = u16::MAX;
        o.enqueue(publish(0), 0);
        o.enqueue(publish(1), 1);
        let mut ids = Vec::new();
        o.send_ready(|p| {
            if let OutPublish::V4(p) = p {
                ids.push(p.pkid)
            }
        });
        assert_eq!(ids, vec![u16::MAX, 1]);
    }

    #[test]
    fn resend_is_oldest_first_with_dup() {
        let mut o = Outgoing::new(10);
        for n in 0..3 {
            o.enqueue(publish(n), n);
        }
        payloads(&mut o, false);
        o.acked(2);
        let mut dups = Vec::new();
        o.resend(|p| {
            if let OutPublish::V4(p) = p {
                dups.push((p.payload[0], p.dup))
            }
        });
        assert_eq!(dups, vec![(0, true), (2, true)]);
    }

    #[test]
    fn a_new_session_requeues_in_order() {
        let mut o = Outgoing::new(2);
        for n in 0..3 {
            o.enqueue(publish(n), n);
        }
        payloads(&mut o, false);
        o.requeue_all();
        assert_eq!((o.inflight(), o.queued()), (0, 3));
        assert_eq!(payloads(&mut o, false), vec![0, 1]);
    }

    #[test]
    fn reserved_ids_are_not_given_to_publishes() {
        let mut o: Outgoing<u8> = Outgoing::new(10);
        let sub = o.reserve_id().unwrap();
        o.enqueue(publish(0), 0);
        let mut ids = Vec::new();
        o.send_ready(|p| {
            if let OutPublish::V4(p) = p {
                ids.push(p.pkid)
            }
        });
        assert_ne!(ids, vec![sub]);
        o.unreserve(sub);
        assert!(o.reserved.is_empty());
    }

    #[test]
    fn the_broker_can_narrow_the_window() {
        let mut o = Outgoing::new(100);
        o.set_window(1);
        o.enqueue(publish(0), 0);
        o.enqueue(publish(1), 1);
        assert_eq!(payloads(&mut o, false), vec![0]);
    }
}
