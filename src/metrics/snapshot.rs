//! [`Snapshot`]: a plain copy of the counters and pipeline gauges, read by the periodic
//! stats line and the shutdown/demo summaries (the end of the data flow, for humans).

use crate::pipeline::verdict::RejectReason;

use super::rule_metrics::RuleMetrics;
use super::{BrokerDrop, BrokerDropLabels, Metrics, ReasonLabels, ResultLabels, TwinResult};

/// A copy of the counters, for the stats line and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub received: u64,
    pub alerts: u64,
    pub unmatched: u64,
    pub rejected: u64,
    pub dead_letters: u64,
    pub ignored: u64,
    pub twin_applied: u64,
    pub twin_refused: u64,
    pub reconnects: u64,
    /// Messages the embedded broker dropped, all reasons.
    pub broker_dropped: u64,
    /// Clearing messages and window summaries published (acknowledged at QoS 1).
    pub clears: u64,
    pub summaries: u64,
    /// Alert candidates the rules held back (edge mode, rate limit).
    pub suppressed: u64,
    /// The pipeline gauges: inputs not yet acknowledged, outgoing publishes not yet
    /// acknowledged (in flight or queued). Both 0: everything received is fully done.
    pub pending: u64,
    pub outgoing: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> Snapshot {
        let twin = |result| self.twin.get_or_create(&ResultLabels { result }).get();
        Snapshot {
            received: self.received.get(),
            alerts: self.alerts.get(),
            unmatched: self.unmatched.get(),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| {
                    self.rejected
                        .get_or_create(&ReasonLabels {
                            reason: (*r).into(),
                        })
                        .get()
                })
                .sum(),
            dead_letters: self.dead_letters.get(),
            ignored: self.ignored.get(),
            twin_applied: twin(TwinResult::applied),
            twin_refused: twin(TwinResult::refused),
            reconnects: self.reconnects.get(),
            broker_dropped: BrokerDrop::ALL
                .iter()
                .map(|r| {
                    self.broker_dropped
                        .get_or_create(&BrokerDropLabels { reason: *r })
                        .get()
                })
                .sum(),
            clears: self.rules.clears.get(),
            summaries: self.rules.summaries.get(),
            suppressed: RuleMetrics::SUPPRESSED
                .iter()
                .map(|&rule| self.rules.suppressed(rule).get())
                .sum(),
            pending: self.pipeline.pending.get().max(0) as u64,
            outgoing: (self.pipeline.inflight.get() + self.pipeline.queued.get()).max(0) as u64,
        }
    }
}
