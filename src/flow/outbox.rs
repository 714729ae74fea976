//! `Flow`'s side of the outbox acknowledgement policy (stages → alerts → MQTT out, with a
//! durable copy on the way): an alerting input is acknowledged once its alert is committed to
//! the local outbox instead of once the broker acknowledged the alert (edgeHub
//! delivers one input at a time, so every wait before an input's PUBACK is paid per input).
//!
//! Pure bookkeeping; the I/O loop does the file work (`io::outbox` around `crate::outbox`):
//!
//! ```text
//!  publish(alert) ─▶ record: seq, covers ─▶ appends() ──▶ loop: append, commit (one per turn)
//!                                                           │
//!  inputs' holds done ◀──────────────── committed() ◀──────┘  (or failed(): wait for PUBACKs)
//!  alert PUBACK ─▶ acked(seq) ─▶ done(): the acknowledged prefix ─▶ loop: mark done in the file
//!  start ─▶ replayed(seq): alerts of an earlier run, sent first, marked done on their PUBACK
//! ```
//!
//! Sequence numbers are the outbox file's own (the flow starts from the file's next one, and
//! appends are made in order). The done mark in the file covers every earlier alert, so only
//! the prefix of alerts that are all acknowledged is reported, whatever order PUBACKs come in.

use std::collections::VecDeque;

use std::time::Instant;

use bytes::Bytes;

use super::outbound::{Covers, Sent, SentKind};
use super::Flow;

/// What an input's PUBACK waits for when its verdict caused an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPolicy {
    /// The alert's PUBACK (at-least-once through the broker alone).
    Alert,
    /// The alert committed to the local outbox.
    Outbox,
}

/// An alert for the loop to append to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxAppend {
    pub seq: u64,
    pub topic: Bytes,
    pub payload: Bytes,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// The inputs held until the alert is committed (taken when it is).
    covers: Option<Covers>,
    committed: bool,
    acked: bool,
}

/// The outbox policy's state inside `Flow`.
#[derive(Debug)]
pub(super) struct OutboxSide {
    policy: AckPolicy,
    next_seq: u64,
    /// Appends not yet taken by the loop.
    appends: Vec<OutboxAppend>,
    /// Highest sequence number the loop has taken (appended, not yet known to be committed).
    taken: Option<u64>,
    /// Alerts recorded and not yet done, in sequence order.
    entries: VecDeque<Entry>,
    /// The highest sequence number whose alert and every earlier one were acknowledged, not
    /// yet handed to the loop.
    done: Option<u64>,
    /// The outbox failed: later alerts go by the alert policy, done marks stop.
    failed: bool,
}

impl OutboxSide {
    pub(super) fn new(policy: AckPolicy) -> OutboxSide {
        OutboxSide {
            policy,
            next_seq: 0,
            appends: Vec::new(),
            taken: None,
            entries: VecDeque::new(),
            done: None,
            failed: false,
        }
    }

    /// Whether alerts go to the outbox now.
    pub(super) fn active(&self) -> bool {
        self.policy == AckPolicy::Outbox && !self.failed
    }

    /// The outbox file's next sequence number, at start.
    pub(super) fn start_at(&mut self, next_seq: u64) {
        self.next_seq = next_seq;
    }

    /// An alert of an earlier run, already in the file: done on its PUBACK.
    pub(super) fn replayed(&mut self, seq: u64) {
        self.entries.push_back(Entry {
            seq,
            covers: None,
            committed: true,
            acked: false,
        });
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// Records an alert whose inputs (`covers`) wait for its commit; returns its sequence
    /// number.
    pub(super) fn record(&mut self, topic: &[u8], payload: &Bytes, covers: Covers) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.appends.push(OutboxAppend {
            seq,
            topic: Bytes::copy_from_slice(topic),
            payload: payload.clone(),
        });
        self.entries.push_back(Entry {
            seq,
            covers: Some(covers),
            committed: false,
            acked: false,
        });
        seq
    }

    /// The appends to make now (effect).
    pub(super) fn take_appends(&mut self) -> Vec<OutboxAppend> {
        if let Some(last) = self.appends.last() {
            self.taken = Some(last.seq);
        }
        std::mem::take(&mut self.appends)
    }

    /// Everything taken so far is committed: the inputs it held are released (`finish`).
    pub(super) fn committed(&mut self, mut finish: impl FnMut(Covers)) {
        let Some(taken) = self.taken.take() else {
            return;
        };
        for e in self.entries.iter_mut() {
            if e.seq > taken {
                break;
            }
            if !e.committed {
                e.committed = true;
                if let Some(c) = e.covers.take() {
                    finish(c);
                }
            }
        }
        self.advance();
    }

    /// The outbox cannot be written: what was not committed waits for its PUBACK (the alert
    /// policy), and so does everything after; no done marks any more. `finish` gets the
    /// inputs of alerts already acknowledged.
    pub(super) fn failed(&mut self, mut finish: impl FnMut(Covers)) {
        self.failed = true;
        self.taken = None;
        self.done = None;
        self.appends.clear();
        for e in self.entries.iter_mut().filter(|e| e.acked) {
            if let Some(c) = e.covers.take() {
                finish(c);
            }
        }
        self.advance();
    }

    /// The alert `seq` was acknowledged. Returns the inputs it still held (its commit had not
    /// come: the outbox failed), to finish now.
    pub(super) fn acked(&mut self, seq: u64) -> Option<Covers> {
        let i = self.entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        let e = &mut self.entries[i];
        e.acked = true;
        let covers = if self.failed { e.covers.take() } else { None };
        self.advance();
        covers
    }

    /// Drops the acknowledged prefix; notes the highest committed one as done.
    fn advance(&mut self) {
        while let Some(e) = self.entries.front() {
            let finished = e.acked && (e.committed || self.failed);
            if !finished {
                break;
            }
            if e.committed && !self.failed {
                self.done = Some(e.seq);
            }
            self.entries.pop_front();
        }
    }

    /// The sequence number to mark done in the file now, if any (effect).
    pub(super) fn take_done(&mut self) -> Option<u64> {
        self.done.take()
    }

    /// Alerts recorded and not committed, or appends not taken (a drain waits for them).
    pub(super) fn idle(&self) -> bool {
        self.appends.is_empty() && self.entries.iter().all(|e| e.committed || self.failed)
    }

    /// Alerts in the outbox not yet acknowledged.
    pub(super) fn pending(&self) -> usize {
        self.entries.len()
    }
}

impl Flow {
    /// Before the first connection: the outbox file's next sequence number and the alerts an
    /// earlier run left in it (oldest first), which go out before anything else and are
    /// marked done on their PUBACK. One the broker would not take (an earlier version
    /// committed an alert over edgeHub's limits) is dead-lettered and marked done instead:
    /// sent again at every start, it would stop the module every time.
    pub fn handle_outbox_replay(
        &mut self,
        next_seq: u64,
        pending: Vec<OutboxAppend>,
        now: Instant,
    ) {
        self.outbox.start_at(next_seq);
        for a in pending {
            self.outbox.replayed(a.seq);
            let packet = self.dialect.replayed_alert(&a.topic, a.payload.clone());
            if let Err(why) = self.check(&packet) {
                self.unpublishable_alert(None, &a.topic, &a.payload, &why, now);
                let _ = self.outbox.acked(a.seq);
                continue;
            }
            let sent = Sent {
                covers: Covers::Nothing,
                kind: SentKind::Alert(1),
                outbox: Some(a.seq),
            };
            self.egress.out.enqueue(packet, sent);
        }
    }

    /// Effect: the alerts to append to the outbox and commit, in order (one commit per loop
    /// turn for all of them), then call [`Flow::handle_outbox_committed`].
    pub fn poll_outbox(&mut self) -> Vec<OutboxAppend> {
        self.outbox.take_appends()
    }

    /// Event: every alert taken with [`Flow::poll_outbox`] is committed; the inputs that
    /// waited for them are acknowledged at the next [`Flow::poll`].
    pub fn handle_outbox_committed(&mut self) {
        let acks = &mut self.acks;
        self.outbox.committed(|c| {
            c.for_each(|seq| {
                acks.done(seq);
            })
        });
    }

    /// Event: the outbox could not be written. From here on inputs wait for their alerts'
    /// PUBACKs (the `alert` policy), those not committed included.
    pub fn handle_outbox_failed(&mut self) {
        let acks = &mut self.acks;
        self.outbox.failed(|c| {
            c.for_each(|seq| {
                acks.done(seq);
            })
        });
    }

    /// Effect: the outbox sequence number up to which every alert was acknowledged (to mark
    /// done in the file), if it moved.
    pub fn poll_outbox_done(&mut self) -> Option<u64> {
        self.outbox.take_done()
    }

    /// Alerts in the outbox not yet acknowledged (recorded by this run or replayed).
    pub fn outbox_pending(&self) -> usize {
        self.outbox.pending()
    }
}
