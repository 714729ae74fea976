//! Arrival-ordered acknowledgements: the last step before MQTT out for an input message.
//!
//! MQTT requires PUBACKs in the order the PUBLISH packets arrived; rumqttc does not enforce it,
//! and the filter's work finishes out of order (several workers, alerts waiting for their own
//! PUBACK). [`AckOrder`] gives every input a sequence number on arrival and counts the parts
//! of its work still outstanding: one for its verdict, plus one for every publish the verdict
//! caused (an alert, a clearing message, a dead letter, …), added with [`AckOrder::hold`]. An
//! input is done when the count reaches zero — every publish it caused acknowledged, not just
//! the first — and the acknowledgements of the longest done prefix are released. Pure state:
//! no sockets, `now` passed in.
//!
//! Sequence numbers keep increasing across reconnects; [`AckOrder::reset`] forgets the
//! entries of a lost connection (their packet ids died with it, the broker redelivers them),
//! so late completions for them are recognised and ignored.

use std::collections::VecDeque;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Packet id to acknowledge (QoS 1), or `None` (QoS 0 — nothing to send).
    pkid: Option<u16>,
    /// Parts of the work not finished yet (0 = done).
    outstanding: u32,
    /// When the input arrived (None for packets that are not inputs: twin documents, other
    /// topics — they are acknowledged in order but not timed).
    received: Option<Instant>,
}

/// One input whose acknowledgement may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub seq: u64,
    pub pkid: Option<u16>,
    pub received: Option<Instant>,
}

/// Inputs of the current connection, in arrival order.
#[derive(Debug)]
pub struct AckOrder {
    /// Sequence number of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    /// Entries whose count reached zero (to answer `pending()` without a scan).
    done: usize,
}

impl Default for AckOrder {
    fn default() -> Self {
        Self::new()
    }
}

impl AckOrder {
    pub fn new() -> Self {
        AckOrder {
            base: 0,
            slots: VecDeque::with_capacity(1024),
            done: 0,
        }
    }

    /// Registers an arriving input with one outstanding part (its verdict); returns its
    /// sequence number.
    pub fn push(&mut self, pkid: Option<u16>, received: Instant) -> u64 {
        self.push_slot(pkid, Some(received))
    }

    /// Registers an arriving packet that is not an input (a twin document, another topic):
    /// acknowledged in its turn, not timed.
    pub fn push_untimed(&mut self, pkid: Option<u16>) -> u64 {
        self.push_slot(pkid, None)
    }

    fn push_slot(&mut self, pkid: Option<u16>, received: Option<Instant>) -> u64 {
        let seq = self.next_seq();
        self.slots.push_back(Slot {
            pkid,
            outstanding: 1,
            received,
        });
        seq
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = seq.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(i).ok()?)
    }

    /// `n` more parts (publishes) must finish before `seq` is done. Returns false when `seq`
    /// is not a live input of this connection, or is already done (nothing is held then).
    pub fn hold(&mut self, seq: u64, n: u32) -> bool {
        match self.slot(seq) {
            Some(slot) if slot.outstanding > 0 => {
                slot.outstanding += n;
                true
            }
            _ => false,
        }
    }

    /// One part of `seq`'s work finished. Returns false when `seq` belongs to an earlier
    /// connection (reset) or is unknown; finishing more parts than were held is harmless.
    pub fn done(&mut self, seq: u64) -> bool {
        let Some(slot) = self.slot(seq) else {
            return false;
        };
        if slot.outstanding > 0 {
            slot.outstanding -= 1;
            if slot.outstanding == 0 {
                self.done += 1;
            }
        }
        true
    }

    /// True when `seq` is an input of the current connection that is not yet released.
    pub fn is_current(&self, seq: u64) -> bool {
        seq >= self.base && ((seq - self.base) as usize) < self.slots.len()
    }

    /// Releases the done prefix, oldest first.
    pub fn release(&mut self, mut f: impl FnMut(Released)) -> usize {
        let mut n = 0;
        while let Some(slot) = self.slots.front() {
            if slot.outstanding > 0 {
                break;
            }
            f(Released {
                seq: self.base,
                pkid: slot.pkid,
                received: slot.received,
            });
            self.slots.pop_front();
            self.base += 1;
            self.done -= 1;
            n += 1;
        }
        n
    }

    /// Inputs received and not yet released.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Inputs whose work (verdict, publishes) is still outstanding.
    pub fn pending(&self) -> usize {
        self.slots.len() - self.done
    }

    /// The connection is gone: forget its entries (their packet ids are void). Returns how
    /// many were dropped. Later sequence numbers continue after the dropped ones.
    pub fn reset(&mut self) -> usize {
        let n = self.slots.len();
        self.base += n as u64;
        self.slots.clear();
        self.done = 0;
        n
    }

    /// The next sequence number `push` will return.
    pub fn next_seq(&self) -> u64 {
        self.base + self.slots.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(t: &mut AckOrder) -> Vec<Option<u16>> {
        let mut out = Vec::new();
        t.release(|r| out.push(r.pkid));
        out
    }

    #[test]
    fn acks_leave_in_arrival_order() {
        let now = Instant::now();
        let mut t = AckOrder::new();
        let a = t.push(Some(10), now);
        let b = t.push(Some(11), now);
        let c = t.push(Some(12), now);
        assert!(t.done(c));
        assert!(t.done(b));
        assert_eq!(
            released(&mut t),
            Vec::<Option<u16>>::new(),
            "a is not done yet"
        );
        assert_eq!(t.pending(), 1);
        assert!(t.done(a));
        assert_eq!(released(&mut t), vec![Some(10), Some(11), Some(12)]);
        assert!(t.is_empty());
    }

    #[test]
    fn qos0_entries_release_without_packet_ids() {
        let now = Instant::now();
        let mut t = AckOrder::new();
        let a = t.push(None, now);
        let b = t.push(Some(1), now);
        t.done(b);
        t.done(a);
        assert_eq!(released(&mut t), vec![None, Some(1)]);
    }

    #[test]
    fn reset_voids_the_old_connection() {
        let now = Instant::now();
        let mut t = AckOrder::new();
        let old = t.push(Some(5), now);
        let _ = t.push(Some(6), now);
        assert_eq!(t.reset(), 2);
        assert!(!t.done(old), "completion from a dead connection is ignored");
        assert!(!t.hold(old, 1));
        assert!(!t.is_current(old));
        let new = t.push(Some(5), now);
        assert!(new > old);
        assert!(t.is_current(new));
        t.done(new);
        assert_eq!(released(&mut t), vec![Some(5)]);
    }

    #[test]
    fn finishing_more_parts_than_held_counts_once() {
        let now = Instant::now();
        let mut t = AckOrder::new();
        let a = t.push(Some(1), now);
        let _b = t.push(Some(2), now);
        t.done(a);
        t.done(a);
        assert_eq!(t.pending(), 1);
        assert!(!t.hold(a, 1), "a finished input cannot be held again");
        assert_eq!(released(&mut t), vec![Some(1)]);
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn an_input_waits_for_every_publish_it_caused() {
        let now = Instant::now();
        let mut t = AckOrder::new();
        let a = t.push(Some(1), now);
        assert!(t.hold(a, 2), "two publishes, e.g. an alert and a summary");
        t.done(a); // the verdict
        t.done(a); // the first PUBACK
        assert_eq!(released(&mut t), Vec::<Option<u16>>::new());
        assert_eq!(t.pending(), 1);
        t.done(a); // the second PUBACK
        assert_eq!(released(&mut t), vec![Some(1)]);
    }

    #[test]
    fn unknown_sequence_numbers_are_refused() {
        let mut t = AckOrder::new();
        assert!(!t.done(0));
        assert!(!t.hold(0, 1));
        assert_eq!(t.next_seq(), 0);
    }
}
