//! `Flow`'s outbound side (stages → MQTT out): what each publish covers, rejections and dead
//! letters, alert batches, the checks before anything is encoded, the outgoing window and the
//! acknowledgements released in arrival order.

use bytes::{Bytes, BytesMut};
use std::time::Instant;

use super::dead_letter::dead_letter_envelope;
use super::dialect::{InputProps, RuleOutput};
use super::{Flow, Role};
use crate::logging::chain;
use crate::mqtt::codec::{Encoder, OutPublish, Unpublishable};
use crate::pipeline::alert_batch::{group_by_key, json_array, Format};
use crate::pipeline::verdict::Rejection;

/// The inputs a publish finishes one part of when it is acknowledged (or written, at QoS 0).
#[derive(Debug)]
pub(super) enum Covers {
    Nothing,
    One(u64),
    Many(Vec<u64>),
}

impl Covers {
    pub(super) fn of(seq: Option<u64>) -> Covers {
        seq.map_or(Covers::Nothing, Covers::One)
    }

    pub(super) fn for_each(&self, mut f: impl FnMut(u64)) {
        match self {
            Covers::Nothing => {}
            Covers::One(seq) => f(*seq),
            Covers::Many(seqs) => seqs.iter().copied().for_each(f),
        }
    }
}

/// What a publish is, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SentKind {
    /// This many alerts (more than one in an array batch).
    Alert(u64),
    /// This many clearing messages.
    Clear(u64),
    /// This many window summaries.
    Summary(u64),
    DeadLetter,
    /// Twin reports and requests.
    Control,
}

impl SentKind {
    /// The counter kind of `n` publishes of `kind`.
    pub(super) fn of(kind: RuleOutput, n: u64) -> SentKind {
        match kind {
            RuleOutput::Alert => SentKind::Alert(n),
            RuleOutput::Clear => SentKind::Clear(n),
            RuleOutput::Summary => SentKind::Summary(n),
        }
    }
}

/// A QoS 1 publish's tag in the outgoing window.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) covers: Covers,
    pub(super) kind: SentKind,
    /// The alert's outbox sequence number (outbox policy).
    pub(super) outbox: Option<u64>,
}

/// An alert (or a clearing message, or a summary) waiting in the batcher.
#[derive(Debug)]
pub(super) struct PendingAlert {
    pub(super) kind: RuleOutput,
    /// None when the input belongs to a lost connection (nothing to acknowledge), and for
    /// summaries (they hold no input).
    pub(super) seq: Option<u64>,
    /// The input topic (a summary: its device).
    pub(super) topic: Bytes,
    pub(super) payload: Bytes,
    pub(super) props: InputProps,
}

impl Flow {
    /// Counts, explains and dead-letters a rejected input.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reject(
        &mut self,
        seq: Option<u64>,
        topic: &Bytes,
        payload: &Bytes,
        size: usize,
        r: &Rejection,
        props: InputProps,
        now: Instant,
    ) {
        let topic_str = String::from_utf8_lossy(topic);
        self.metrics.rejected(r.reason, &r.detail, &topic_str, now);
        self.dead_letter(
            seq,
            r.reason.as_str(),
            &r.detail,
            topic,
            payload,
            size,
            props,
            now,
        );
    }

    /// Publishes the dead letter of an input (when dead-lettering is on); `payload` is what
    /// was read of its `size` bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dead_letter(
        &mut self,
        seq: Option<u64>,
        reason: &str,
        detail: &str,
        topic: &Bytes,
        payload: &Bytes,
        size: usize,
        props: InputProps,
        now: Instant,
    ) {
        let topic_str = String::from_utf8_lossy(topic);
        let envelope = dead_letter_envelope(reason, detail, &topic_str, payload, size);
        if let Some(mut packet) = self.dialect.dead_letter(envelope, reason, topic, props) {
            if !payload.is_empty() && self.check(&packet).is_err() {
                // Too large with the payload's head (a long input topic in the envelope too):
                // without it. If even that is too large, `publish` counts it.
                packet.set_payload(dead_letter_envelope(reason, detail, &topic_str, &[], size));
            }
            if let Some(seq) = seq {
                self.acks.hold(seq, 1);
            }
            self.publish(packet, Covers::of(seq), SentKind::DeadLetter, now);
        }
    }

    /// Moves work towards the socket: due alert batches, queued publishes into the window,
    /// acknowledgements in arrival order.
    pub(super) fn pump(&mut self, now: Instant) {
        while self.egress.batcher.due(now) {
            let alerts: Vec<PendingAlert> = self.egress.batcher.take(now).collect();
            self.publish_alerts(alerts, now);
        }
        let role = self.publish_role();
        if self.link(role).is_some_and(|l| l.closing.is_none()) {
            self.egress.send_ready();
        }
        let version = self.cfg.version;
        let metrics = &self.metrics;
        let wbuf = self.egress.buf(Role::Input);
        self.acks.release(|r| {
            if let Some(received) = r.received {
                metrics.processed(now.saturating_duration_since(received));
            }
            if let Some(pkid) = r.pkid {
                let _ = Encoder::puback(version, wbuf, pkid);
            }
        });
    }

    pub(super) fn publish_alerts(&mut self, alerts: Vec<PendingAlert>, now: Instant) {
        match self.cfg.batch_format {
            Format::Single => {
                for a in alerts {
                    let packet = match a.kind {
                        RuleOutput::Alert => {
                            self.dialect.alert(&a.topic, a.payload.clone(), a.props)
                        }
                        RuleOutput::Clear => {
                            self.dialect.clear(&a.topic, a.payload.clone(), a.props)
                        }
                        RuleOutput::Summary => {
                            let packet = self.dialect.summary(&a.topic, a.payload);
                            self.publish(packet, Covers::Nothing, SentKind::Summary(1), now);
                            continue;
                        }
                    };
                    match self.check(&packet) {
                        Ok(()) => {
                            self.publish(packet, Covers::of(a.seq), SentKind::of(a.kind, 1), now)
                        }
                        Err(why) => {
                            self.unpublishable_alert(a.seq, &a.topic, &a.payload, &why, now)
                        }
                    }
                }
            }
            Format::Array => {
                let dialect = &mut self.dialect;
                let groups =
                    group_by_key(alerts, |a| (a.kind, dialect.array_key(a.kind, &a.topic)));
                for ((kind, out_topic), group) in groups {
                    self.publish_array(kind, &out_topic, group, now);
                }
            }
        }
    }

    /// One array publish of `group` (publishes of one kind and key, in arrival order). An
    /// array too large for the broker is split in halves until each part fits; a single one
    /// that does not fit alone is published on its own (a summary) or dead-lettered (an
    /// alert or a clearing message).
    fn publish_array(
        &mut self,
        kind: RuleOutput,
        key: &Bytes,
        mut group: Vec<PendingAlert>,
        now: Instant,
    ) {
        let payload = json_array(group.iter().map(|a| &a.payload[..]));
        let packet = self.dialect.array(kind, key, payload);
        match self.check(&packet) {
            Ok(()) => {
                let seqs: Vec<u64> = group.iter().filter_map(|a| a.seq).collect();
                let n = group.len() as u64;
                self.publish(packet, Covers::Many(seqs), SentKind::of(kind, n), now);
            }
            Err(_) if group.len() > 1 => {
                let second = group.split_off(group.len() / 2);
                self.publish_array(kind, key, group, now);
                self.publish_array(kind, key, second, now);
            }
            Err(why) => {
                for a in group {
                    if kind == RuleOutput::Summary {
                        let packet = self.dialect.summary(&a.topic, a.payload);
                        self.publish(packet, Covers::Nothing, SentKind::Summary(1), now);
                    } else {
                        self.unpublishable_alert(a.seq, &a.topic, &a.payload, &why, now);
                    }
                }
            }
        }
    }

    /// Whether a publish can go on the wire: what the dialect's broker takes (a valid topic
    /// name; edgeHub's size limits), encodable, within the broker's Maximum Packet Size.
    pub(super) fn check(&self, packet: &OutPublish) -> Result<(), Unpublishable> {
        self.dialect.check(packet)?;
        packet.check(self.egress.max_packet)
    }

    /// An alert that cannot go on the wire (its topic too long to encode, larger than the
    /// broker accepts, or over one of edgeHub's limits): counted, explained, dead-lettered in
    /// its place (reason `too_large_for_edgehub` or `unpublishable`), and its input finished
    /// — one bad message never blocks the stream, and it is never resent.
    pub(super) fn unpublishable_alert(
        &mut self,
        seq: Option<u64>,
        topic: &Bytes,
        payload: &Bytes,
        why: &Unpublishable,
        now: Instant,
    ) {
        let reason = match why {
            Unpublishable::EdgeHub(_) => "too_large_for_edgehub",
            _ => "unpublishable",
        };
        let detail = format!("the alert cannot be published: {why}");
        self.metrics
            .unpublishable("alert", &detail, &String::from_utf8_lossy(topic), now);
        self.dead_letter(
            seq,
            reason,
            &detail,
            topic,
            payload,
            payload.len(),
            InputProps::None,
            now,
        );
        if let Some(seq) = seq {
            self.acks.done(seq);
        }
    }

    /// Sends a publish whose covered inputs were already held for it: QoS 1 through the
    /// window (finished on its PUBACK), QoS 0 straight into the output (finished now). What
    /// cannot go on the wire is counted and finished unsent.
    pub(super) fn publish(
        &mut self,
        packet: OutPublish,
        covers: Covers,
        kind: SentKind,
        now: Instant,
    ) {
        if let Err(why) = self.check(&packet) {
            let what = match kind {
                SentKind::Alert(_) => "alert",
                SentKind::Clear(_) => "clear",
                SentKind::Summary(_) => "summary",
                SentKind::DeadLetter => "dead_letter",
                SentKind::Control => "twin",
            };
            let topic = String::from_utf8_lossy(packet.topic());
            self.metrics
                .unpublishable(what, &format!("cannot be published: {why}"), &topic, now);
            let acks = &mut self.acks;
            covers.for_each(|seq| {
                acks.done(seq);
            });
            return;
        }
        if packet.qos() > 0 {
            let mut sent = Sent {
                covers,
                kind,
                outbox: None,
            };
            if matches!(kind, SentKind::Alert(_)) && self.outbox.active() {
                // The outbox policy: the inputs wait for the commit, not for this PUBACK.
                let covers = std::mem::replace(&mut sent.covers, Covers::Nothing);
                sent.outbox = Some(self.outbox.record(packet.topic(), packet.payload(), covers));
            }
            self.egress.out.enqueue(packet, sent);
        } else {
            self.egress.write_now(&packet);
            self.finished(Sent {
                covers,
                kind,
                outbox: None,
            });
        }
    }

    /// A publish was acknowledged (or written, at QoS 0): count it, finish its inputs' part.
    pub(super) fn finished(&mut self, sent: Sent) {
        match sent.kind {
            SentKind::Alert(n) => self.metrics.alerts_published(n.max(1)),
            SentKind::Clear(n) => self.metrics.clears_published(n.max(1)),
            SentKind::Summary(n) => self.metrics.summaries_published(n.max(1)),
            SentKind::DeadLetter => self.metrics.dead_lettered(1),
            SentKind::Control => {}
        }
        let acks = &mut self.acks;
        sent.covers.for_each(|seq| {
            acks.done(seq);
        });
        if let Some(seq) = sent.outbox {
            if let Some(held) = self.outbox.acked(seq) {
                held.for_each(|seq| {
                    acks.done(seq);
                });
            }
        }
    }
}

pub(super) fn write_publish(p: &OutPublish, wbuf: &mut BytesMut) {
    if let Err(e) = p.write(wbuf) {
        tracing::error!("cannot encode a publish: {}", chain(&e));
    }
}
