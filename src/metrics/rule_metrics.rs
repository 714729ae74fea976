//! The counters of the stateful rules (`pipeline::rules`: edge mode, rate limit, windowed
//! summaries): clears and summaries published, alerts suppressed, late readings, devices
//! tracked; and the condition's fields found missing. Emitted per batch by the connection task. Part of [`Metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::pipeline::rules::device::RuleStats;

use super::Metrics;

impl Metrics {
    pub fn clears_published(&self, n: u64) {
        self.rules.clears.inc_by(n);
    }

    pub fn summaries_published(&self, n: u64) {
        self.rules.summaries.inc_by(n);
    }

    /// What the rules held back in one batch.
    pub fn rule_stats(&self, s: &RuleStats) {
        let r = &self.rules;
        if s.suppressed_edge > 0 {
            r.suppressed("edge").inc_by(u64::from(s.suppressed_edge));
        }
        if s.suppressed_rate > 0 {
            r.suppressed("rate_limit")
                .inc_by(u64::from(s.suppressed_rate));
        }
        r.late.inc_by(u64::from(s.late));
        r.no_event_time.inc_by(u64::from(s.no_event_time));
        r.condition_missing.inc_by(u64::from(s.condition_missing));
    }

    /// Devices with rule state, all shards.
    pub fn devices(&self, n: usize) {
        self.rules.devices.set(n as i64);
    }
}

/// The counters of the stateful rules.
#[derive(Default)]
pub(super) struct RuleMetrics {
    pub(super) clears: Counter,
    pub(super) summaries: Counter,
    suppressed: Family<RuleLabels, Counter>,
    late: Counter,
    no_event_time: Counter,
    condition_missing: Counter,
    devices: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

impl RuleMetrics {
    pub(super) const SUPPRESSED: [&'static str; 2] = ["edge", "rate_limit"];

    pub(super) fn register(registry: &mut Registry) -> RuleMetrics {
        let m = RuleMetrics::default();
        registry.register(
            "edgefilter_clears_published",
            "Clearing messages published (edge mode: a device re-armed), acknowledged at QoS 1",
            m.clears.clone(),
        );
        registry.register(
            "edgefilter_summaries_published",
            "Window summaries published (one per device and window), acknowledged at QoS 1",
            m.summaries.clone(),
        );
        registry.register(
            "edgefilter_alerts_suppressed",
            "Readings above the threshold that published no alert, by rule (edge: the device had alerted already; rate_limit: within --alert-min-interval)",
            m.suppressed.clone(),
        );
        registry.register(
            "edgefilter_readings_late",
            "Readings older than every open window of their device (event time): in no summary",
            m.late.clone(),
        );
        registry.register(
            "edgefilter_readings_without_event_time",
            "Readings without a readable --event-time-field, placed by their arrival time",
            m.no_event_time.clone(),
        );
        registry.register(
            "edgefilter_condition_fields_missing",
            "Messages in which a field of --condition was absent (its comparisons were false)",
            m.condition_missing.clone(),
        );
        registry.register(
            "edgefilter_devices_tracked",
            "Devices with rule state (edge, rate limit, windows); idle ones are evicted",
            m.devices.clone(),
        );
        for rule in Self::SUPPRESSED {
            let _ = m.suppressed(rule);
        }
        m
    }

    pub(super) fn suppressed(&self, rule: &'static str) -> Counter {
        self.suppressed.get_or_create(&RuleLabels { rule }).clone()
    }
}
