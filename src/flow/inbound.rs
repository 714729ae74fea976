//! `Flow`'s inbound side (MQTT in → stages): SUBACKs, inbound publishes routed through the
//! dialect (inputs into their shard, twin documents applied at their arrival point), and the
//! forming of batches for the stages.

use std::time::Instant;

use super::dialect::Route;
use super::outbound::{Covers, SentKind};
use super::{Flow, FlowError, Meta};
use crate::logging::chain;
use crate::metrics::TwinResult;
use crate::mqtt::azure::twin_doc;
use crate::mqtt::codec::InPublish;
use crate::pipeline::pool::shard_of;
use crate::pipeline::stage::Job;
use crate::pipeline::verdict::{RejectReason, Rejection};
use crate::twin::Outcome;

impl Flow {
    pub(super) fn on_suback(
        &mut self,
        pkid: u16,
        granted: &[Option<u8>],
        now: Instant,
    ) -> Result<(), FlowError> {
        let Some(link) = &mut self.input else {
            return Ok(());
        };
        let Some(i) = link.subscribing.iter().position(|(id, _)| *id == pkid) else {
            return Ok(());
        };
        let (_, filters) = link.subscribing.swap_remove(i);
        self.egress.out.unreserve(pkid);
        if let Some(refused) = granted.iter().position(Option::is_none) {
            return Err(FlowError::SubscribeRefused(
                filters.get(refused).cloned().unwrap_or_default(),
            ));
        }
        if link.subscribing.is_empty() {
            self.metrics.connected(true, self.subscribed_once);
            self.subscribed_once = true;
            self.twin_subscribed(now);
        }
        Ok(())
    }

    pub(super) fn on_publish(&mut self, mut p: InPublish, now: Instant) {
        let pkid = (p.qos > 0).then_some(p.pkid);
        if pkid.is_some() && self.input.as_ref().is_some_and(|l| l.leaving) {
            // An earlier PUBLISH was left with the broker: so is this one, whatever it is.
            return;
        }
        match self.dialect.route(&mut p) {
            Route::Input(props) => {
                if self.draining.is_some() {
                    // Not ours any more: unacknowledged, the broker redelivers it next session.
                    self.leave(p.qos);
                    return;
                }
                if p.retain && self.session_present() {
                    // A retained message sent again because we subscribed again on a resumed
                    // session: it was judged when it first arrived.
                    let seq = self.acks.push_untimed(pkid);
                    self.metrics.ignored(1);
                    self.acks.done(seq);
                    return;
                }
                if !self.admit(p.qos) {
                    return;
                }
                let seq = self.acks.push(pkid, now);
                self.metrics.received(1);
                let device = self.dialect.device_key(&p.topic, &props);
                let shard = shard_of(&device, self.intake.shards());
                let meta = Meta {
                    seq,
                    qos: p.qos,
                    topic: p.topic,
                    props,
                };
                let job = Job::new(p.payload, device, now, meta);
                self.intake.push(shard, job);
            }
            Route::TwinDesired => {
                // What arrived before the patch is judged with the rules before it.
                self.intake.dispatch(true, &self.rules);
                let seq = self.acks.push_untimed(pkid);
                self.apply_twin(&p.payload, now);
                self.acks.done(seq);
            }
            Route::TwinFull => {
                self.twin_answered();
                self.intake.dispatch(true, &self.rules);
                let seq = self.acks.push_untimed(pkid);
                match twin_doc::parse_full_twin(&p.payload) {
                    Ok(full) => {
                        self.apply_twin(&full.desired_json(), now);
                        // Hub keeps the reported properties: what an earlier run applied stays
                        // in force when the desired section is invalid or not newer.
                        self.restore_twin(&full.reported, twin_doc::REPORTED_VERSION_KEY, now);
                    }
                    Err(e) => tracing::warn!("twin: unreadable full twin: {}", chain(&e)),
                }
                self.acks.done(seq);
            }
            Route::TwinReported => {
                self.intake.dispatch(true, &self.rules);
                let seq = self.acks.push_untimed(pkid);
                match serde_json::from_slice::<serde_json::Value>(&p.payload) {
                    Ok(serde_json::Value::Object(reported)) => {
                        self.restore_twin(&reported, "$version", now)
                    }
                    _ => tracing::debug!("twin: the retained reported document is not an object"),
                }
                self.acks.done(seq);
            }
            Route::TwinAnswer { status, rid } => {
                let seq = self.acks.push_untimed(pkid);
                if status >= 300 {
                    tracing::warn!("twin: request {rid} was answered with status {status}");
                }
                self.acks.done(seq);
            }
            Route::Ignore => {
                let seq = self.acks.push_untimed(pkid);
                self.metrics.ignored(1);
                self.acks.done(seq);
            }
        }
    }

    /// A PUBLISH too large to read whole (its first bytes only; `codec::Reader`): an input is
    /// counted, rejected as too large, dead-lettered from its first KiB and acknowledged in
    /// its turn; anything else is acknowledged and logged.
    pub(super) fn on_oversize(&mut self, mut p: InPublish, size: usize, now: Instant) {
        let pkid = (p.qos > 0).then_some(p.pkid);
        match self.dialect.route(&mut p) {
            Route::Input(props) => {
                if self.draining.is_some() {
                    self.leave(p.qos);
                    return;
                }
                if !self.admit(p.qos) {
                    return;
                }
                let seq = self.acks.push(pkid, now);
                self.metrics.received(1);
                let rejection = Rejection {
                    reason: RejectReason::TooLarge,
                    detail: format!(
                        "{size} bytes, more than --max-payload; only the first {} were read",
                        p.payload.len()
                    ),
                };
                self.reject(
                    Some(seq),
                    &p.topic,
                    &p.payload,
                    size,
                    &rejection,
                    props,
                    now,
                );
                self.acks.done(seq);
            }
            _ => {
                let seq = self.acks.push_untimed(pkid);
                tracing::warn!(
                    "ignored a {size}-byte message on {} (not an input)",
                    crate::logging::shorten(&String::from_utf8_lossy(&p.topic))
                );
                self.metrics.ignored(1);
                self.acks.done(seq);
            }
        }
    }

    /// Leaves an input with the broker (unacknowledged: it comes again on the next session);
    /// at QoS 1 every later PUBLISH of this connection is left too, so acknowledgements keep
    /// arrival order.
    fn leave(&mut self, qos: u8) {
        if qos > 0 {
            if let Some(link) = self.input.as_mut() {
                link.leaving = true;
            }
        }
    }

    /// Admits an input into the pipeline. Reading stops at `--max-pending` held inputs (see
    /// `poll`), so what is read is held, whatever the broker sends: a QoS 1 input is never
    /// left unacknowledged while later ones are acknowledged. Only on one connection, where
    /// reading may go on past `--max-pending` for the PUBACKs of our publishes, a QoS 0 input
    /// past the hard bound is dropped and counted (at-most-once).
    fn admit(&mut self, qos: u8) -> bool {
        if self.input.is_none() {
            return false;
        }
        if qos == 0 && !self.cfg.separate_publisher && self.acks.len() >= self.cfg.max_held {
            self.metrics.overload("dropped_qos0");
            return false;
        }
        true
    }

    /// Restores an earlier run's reported state when it is newer than what is in force.
    fn restore_twin(
        &mut self,
        reported: &serde_json::Map<String, serde_json::Value>,
        key: &str,
        now: Instant,
    ) {
        if let Some(outcome) = self.twin.restore(reported, key) {
            tracing::info!(
                "twin: restored the state an earlier run reported ($version {})",
                self.twin.version().map_or("none".into(), |v| v.to_string())
            );
            self.twin_outcome(outcome, self.twin.threshold(), now);
        }
    }

    /// Validates and applies a desired document, then reports.
    pub(super) fn apply_twin(&mut self, doc: &[u8], now: Instant) {
        let before = self.twin.threshold();
        let outcome = self.twin.handle(doc);
        self.twin_outcome(outcome, before, now);
    }

    /// Puts a twin outcome into force (new rules snapshot, the shared threshold), counts it
    /// and reports the state.
    fn twin_outcome(&mut self, outcome: Outcome, before: f64, now: Instant) {
        let result = match &outcome {
            Outcome::Applied { threshold, changed } => {
                self.set_rules(*threshold, now);
                self.threshold.set(*threshold);
                self.metrics.threshold(*threshold);
                if *changed {
                    tracing::info!(
                        "twin: threshold {before} -> {threshold} ($version {})",
                        self.twin.version().map_or("none".into(), |v| v.to_string())
                    );
                }
                TwinResult::applied
            }
            Outcome::Refused(why) => {
                tracing::warn!(
                    "twin: refused a desired patch: {why}; the threshold stays {before}"
                );
                TwinResult::refused
            }
            Outcome::Stale { version, current } => {
                tracing::info!("twin: ignored desired $version {version} (older than {current})");
                TwinResult::stale
            }
        };
        self.metrics.twin_update(result);
        if result != TwinResult::stale {
            self.report(false, now);
        }
    }

    /// Publishes the reported properties of the twin's state, unless they are what was last
    /// reported (and not `force`d).
    pub(super) fn report(&mut self, force: bool, now: Instant) {
        let reported = self.dialect.reported(&self.twin);
        if !force && self.reported_last.as_ref() == Some(reported.payload()) {
            return;
        }
        self.reported_last = Some(reported.payload().clone());
        self.publish(reported, Covers::Nothing, SentKind::Control, now);
    }
}
