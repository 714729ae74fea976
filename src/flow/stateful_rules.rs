//! The flow's side of the stateful rules (`pipeline::rules`): what the stages report back
//! with each batch (suppressed alerts, late readings, devices with state), the summaries they
//! produce, the rules' timer — a tick batch per shard when windows of silent devices end or
//! idle devices are due — and the flush at shutdown. Part of [`Flow`]; pure like it.
//!
//! Summaries hold no input: they are QoS 1 publishes of the outgoing window like alerts
//! (resent after a reconnect, waited for by the drain), but an input is acknowledged when its
//! own alert or clearing message is, never later because of a window it falls into. The
//! window's state lives in memory only, so acknowledging later would not save it from a crash.

use std::time::Instant;

use super::outbound::PendingAlert;
use super::timer::Timer;
use super::{Flow, RuleOutput};
use crate::flow::dialect::InputProps;
use crate::pipeline::rules::device::RuleStats;
use crate::pipeline::stage::{Batch, Out, OutKind, Work};

impl Flow {
    /// What a stage reported with a batch: counters, devices with state, a control batch back.
    pub(super) fn rule_results<M>(&mut self, batch: &Batch<M>) {
        if batch.stats != RuleStats::default() {
            self.metrics.rule_stats(&batch.stats);
        }
        if let Some(d) = self.devices.get_mut(batch.shard) {
            if *d != batch.devices as usize {
                *d = batch.devices as usize;
                self.metrics.devices(self.devices.iter().sum());
            }
        }
    }

    /// A summary the stage produced: into the batcher, holding no input.
    pub(super) fn summary(&mut self, out: &Out, now: Instant) {
        if let OutKind::Summary { device, payload } = &out.kind {
            let summary = PendingAlert {
                kind: RuleOutput::Summary,
                seq: None,
                topic: device.clone(),
                payload: payload.clone(),
                props: InputProps::None,
            };
            self.egress.batcher.push(summary, now);
        }
    }

    /// The rules' timer: at its time, every shard gets a tick batch (after the jobs that
    /// arrived before it), so windows of silent devices close and idle devices go.
    pub(super) fn rule_timer(&mut self, now: Instant) {
        if self.timers.get(Timer::Rules).is_some_and(|t| now >= t) {
            self.intake.control(Work::Tick(now), &self.rules);
            self.timers.set(Timer::Rules, self.rules.next_tick(now));
        }
    }

    /// Shutdown: every stage closes its open windows, so their (partial) summaries go out
    /// before the connection ends.
    pub(super) fn flush_rules(&mut self) {
        if !self.rules.stateless() || self.devices.iter().any(|&d| d > 0) {
            self.intake.control(Work::Flush, &self.rules);
        }
    }

    /// A twin patch applied: the new rules in force from this arrival point. The stages see
    /// them at once (a tick batch), so turning summaries off closes windows now; the timer
    /// also covers windows opened under the old rules.
    pub(super) fn set_rules(&mut self, threshold: f64, now: Instant) {
        let old = self.rules.clone();
        self.rules = old.changed(threshold, self.twin.rules().clone());
        if old.settings != self.rules.settings {
            self.intake.control(Work::Tick(now), &self.rules);
            let next = match (self.rules.next_tick(now), old.next_tick(now)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.timers.set(Timer::Rules, next);
        }
    }
}
