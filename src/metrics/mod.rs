//! Observability for the whole data flow: each thing that can happen to a message is a named
//! event here ([`Metrics::received`], [`Metrics::alerts_published`], [`Metrics::rejected`], …)
//! that counts (Prometheus, rendered by `io::http` at `/metrics`) and, where a human should
//! know, logs — rate-limited, never one line per message. Events are emitted per batch by the
//! connection task. The standard `process_*` metrics come from [`process`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::pipeline::verdict::RejectReason;

mod delivery;
mod labels;
mod pipeline;
pub mod process;
mod rule_metrics;
mod snapshot;

pub use delivery::DeliveryMetrics;
use labels::BuildLabels;
pub use labels::{
    ActionLabels, BrokerDrop, BrokerDropLabels, KindLabels, Reason, ReasonLabels, ResultLabels,
    TwinResult,
};
use pipeline::PipelineGauges;
pub use pipeline::PipelineState;
use rule_metrics::RuleMetrics;
pub use snapshot::Snapshot;

/// All counters, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    received: Counter,
    alerts: Counter,
    unmatched: Counter,
    rejected: Family<ReasonLabels, Counter>,
    twin: Family<ResultLabels, Counter>,
    threshold: Gauge<f64, AtomicU64>,
    processing: Histogram,
    dead_letters: Counter,
    ignored: Counter,
    reconnects: Counter,
    connected_gauge: Gauge,
    connected: AtomicBool,
    pipeline: PipelineGauges,
    unpublishable: Family<KindLabels, Counter>,
    overload: Family<ActionLabels, Counter>,
    /// When an unpublishable message was last logged, and how many since.
    unpublishable_log: Mutex<(Option<Instant>, u64)>,
    /// Per reject reason: when it was last logged, and how many since.
    reject_log: Mutex<[(Option<Instant>, u64); 5]>,
    broker_dropped: Family<BrokerDropLabels, Counter>,
    broker_paused: Counter,
    broker_stalls: Counter,
    /// Per broker drop reason: when it was last logged, and how many since.
    broker_drop_log: Mutex<[(Option<Instant>, u64); 6]>,
    rules: RuleMetrics,
    /// The outbox and the twin requests.
    pub delivery: DeliveryMetrics,
}

const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let received = Counter::default();
        let alerts = Counter::default();
        let unmatched = Counter::default();
        let rejected = Family::<ReasonLabels, Counter>::default();
        let twin = Family::<ResultLabels, Counter>::default();
        let threshold = Gauge::<f64, AtomicU64>::default();
        let processing = Histogram::new(exponential_buckets(25e-6, 2.0, 17));
        let dead_letters = Counter::default();
        let ignored = Counter::default();
        let reconnects = Counter::default();
        let connected_gauge = Gauge::default();
        let unpublishable = Family::<KindLabels, Counter>::default();
        let overload = Family::<ActionLabels, Counter>::default();
        registry.register(
            "edgefilter_overload_inputs",
            "Inputs past --max-pending (the broker sent more than the filter's Receive Maximum): QoS 1 ones deferred (left with the broker, delivered again after a reconnect), QoS 0 ones dropped",
            overload.clone(),
        );
        for action in ["deferred", "dropped_qos0"] {
            let _ = overload.get_or_create(&ActionLabels { action });
        }
        registry.register(
            "edgefilter_unpublishable",
            "Publishes that could not go on the wire (topic too long to encode, packet larger than the broker accepts), by kind; an alert is dead-lettered instead",
            unpublishable.clone(),
        );
        registry.register(
            "edgefilter_messages_received",
            "Input messages received on the filtered topics",
            received.clone(),
        );
        registry.register(
            "edgefilter_alerts_published",
            "Alerts published (and acknowledged by the broker at QoS 1)",
            alerts.clone(),
        );
        registry.register(
            "edgefilter_messages_unmatched",
            "Valid input messages that are not alerts",
            unmatched.clone(),
        );
        registry.register(
            "edgefilter_messages_rejected",
            "Input messages rejected, by reason (dead-lettered when enabled)",
            rejected.clone(),
        );
        registry.register(
            "edgefilter_twin_updates",
            "Desired-property documents handled, by result",
            twin.clone(),
        );
        registry.register(
            "edgefilter_threshold",
            "Threshold in force",
            threshold.clone(),
        );
        registry.register_with_unit(
            "edgefilter_processing",
            "Time from receiving an input to its final verdict (alerts: to the alert's acknowledgement)",
            Unit::Seconds,
            processing.clone(),
        );
        registry.register(
            "edgefilter_dead_letters",
            "Rejected messages published to the dead-letter topic",
            dead_letters.clone(),
        );
        registry.register(
            "edgefilter_messages_ignored",
            "Messages acknowledged without a verdict (other IoT Edge inputs)",
            ignored.clone(),
        );
        registry.register(
            "edgefilter_reconnects",
            "Connections to the broker after the first",
            reconnects.clone(),
        );
        registry.register(
            "edgefilter_connected",
            "1 while connected to the broker",
            connected_gauge.clone(),
        );
        let pipeline = PipelineGauges::register(&mut registry);
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "edgefilter_build_info",
            "Always 1; the version label names the running edgefilter",
            build_info,
        );
        let rules = RuleMetrics::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector));
        let broker_dropped = Family::<BrokerDropLabels, Counter>::default();
        registry.register(
            "edgefilter_broker_dropped",
            "Messages the embedded broker dropped, by reason (queue_full: a subscriber's queue overflowed; inbox_full: a subscriber stopped reading)",
            broker_dropped.clone(),
        );
        let broker_paused = Counter::default();
        registry.register(
            "edgefilter_broker_paused_publishes",
            "Publishes to the input topics the embedded broker held back while the filter's queue was at its high-water mark (backpressure)",
            broker_paused.clone(),
        );
        let broker_stalls = Counter::default();
        registry.register(
            "edgefilter_broker_stalls",
            "Times the embedded broker's gate held publishers with no progress of the filter for --broker-stall-timeout, and closed the filter's connection to restart it (nothing is dropped: its session keeps every message)",
            broker_stalls.clone(),
        );
        for reason in BrokerDrop::ALL {
            let _ = broker_dropped.get_or_create(&BrokerDropLabels { reason });
        }
        let delivery = DeliveryMetrics::register(&mut registry);
        for reason in RejectReason::ALL {
            let _ = rejected.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        for result in [TwinResult::applied, TwinResult::refused, TwinResult::stale] {
            let _ = twin.get_or_create(&ResultLabels { result });
        }
        Metrics {
            registry,
            received,
            alerts,
            unmatched,
            rejected,
            twin,
            threshold,
            processing,
            dead_letters,
            ignored,
            reconnects,
            connected_gauge,
            connected: AtomicBool::new(false),
            pipeline,
            unpublishable,
            overload,
            unpublishable_log: Mutex::new((None, 0)),
            reject_log: Mutex::new([(None, 0); 5]),
            broker_dropped,
            broker_paused,
            broker_stalls,
            broker_drop_log: Mutex::new([(None, 0); 6]),
            rules,
            delivery,
        }
    }

    /// OpenMetrics text exposition of every metric (what Prometheus asks for).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), for clients that do not ask for OpenMetrics
    /// (curl, `promtool check metrics`, older collectors).
    pub fn render_prometheus_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    pub fn received(&self, n: u64) {
        self.received.inc_by(n);
    }

    pub fn alerts_published(&self, n: u64) {
        self.alerts.inc_by(n);
    }

    pub fn unmatched(&self, n: u64) {
        self.unmatched.inc_by(n);
    }

    /// A rejected message: counted by reason, logged (at most every 10 s per reason, with
    /// the number of others since).
    pub fn rejected(&self, reason: RejectReason, detail: &str, topic: &str, now: Instant) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
        let idx = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(others) = due(&self.reject_log, idx, now) {
            let reason = reason.as_str();
            if others > 0 {
                tracing::warn!(
                    "rejected a message on {topic} ({reason}): {detail}; {others} more `{reason}` since the last report"
                );
            } else {
                tracing::warn!("rejected a message on {topic} ({reason}): {detail}");
            }
        }
    }

    /// A publish that cannot go on the wire (`kind`: alert, dead_letter, twin): counted and
    /// logged (at most every 10 s, with the number of others since).
    pub fn unpublishable(&self, kind: &'static str, detail: &str, topic: &str, now: Instant) {
        self.unpublishable.get_or_create(&KindLabels { kind }).inc();
        let mut log = self
            .unpublishable_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (last, since) = &mut *log;
        if last.is_none_or(|t| now.duration_since(t) >= REJECT_LOG_EVERY) {
            let others = std::mem::take(since);
            *last = Some(now);
            let topic = crate::logging::shorten(topic);
            tracing::warn!("{kind} for {topic}: {detail} ({others} more since the last report)");
        } else {
            *since += 1;
        }
    }

    /// An input past `--max-pending` (`action`: deferred, dropped_qos0).
    pub fn overload(&self, action: &'static str) {
        self.overload.get_or_create(&ActionLabels { action }).inc();
    }

    pub fn overload_count(&self, action: &'static str) -> u64 {
        self.overload.get_or_create(&ActionLabels { action }).get()
    }

    pub fn unpublishable_count(&self, kind: &'static str) -> u64 {
        self.unpublishable.get_or_create(&KindLabels { kind }).get()
    }

    /// A message the embedded broker dropped: counted by reason, logged (at most every 10 s
    /// per reason, with the number of others since). `client` is the subscriber it was for
    /// (or the publisher, for a refused publish).
    pub fn broker_dropped(
        &self,
        reason: BrokerDrop,
        detail: &str,
        client: &str,
        topic: &str,
        now: Instant,
    ) {
        self.broker_dropped
            .get_or_create(&BrokerDropLabels { reason })
            .inc();
        let idx = BrokerDrop::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(others) = due(&self.broker_drop_log, idx, now) {
            let more = if others > 0 {
                format!("; {others} more {reason:?} drops since the last report")
            } else {
                String::new()
            };
            tracing::warn!(
                "embedded broker dropped a message on {topic:?} for client {client:?} ({reason:?}): {detail}{more}"
            );
        }
    }

    /// A publisher waited for the filter's queue (embedded broker backpressure).
    pub fn broker_paused(&self) {
        self.broker_paused.inc();
    }

    /// The gate's watchdog found the filter making no progress and restarted its connection.
    pub fn broker_stall(&self) {
        self.broker_stalls.inc();
    }

    pub fn broker_stall_count(&self) -> u64 {
        self.broker_stalls.get()
    }

    pub fn dead_lettered(&self, n: u64) {
        self.dead_letters.inc_by(n);
    }

    pub fn ignored(&self, n: u64) {
        self.ignored.inc_by(n);
    }

    pub fn twin_update(&self, result: TwinResult) {
        self.twin.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn threshold(&self, value: f64) {
        self.threshold.set(value);
    }

    pub fn processed(&self, elapsed: Duration) {
        self.processing.observe(elapsed.as_secs_f64());
    }

    pub fn connected(&self, up: bool, reconnect: bool) {
        self.connected.store(up, Ordering::Release);
        self.connected_gauge.set(i64::from(up));
        if up && reconnect {
            self.reconnects.inc();
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// Rate limit of a log line per reason: `Some(events not logged since the last line)` when
/// this event is to be logged, `None` (and counted) when it is not.
fn due<const N: usize>(
    log: &Mutex<[(Option<Instant>, u64); N]>,
    idx: usize,
    now: Instant,
) -> Option<u64> {
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    let (last, since) = &mut log[idx];
    if last.is_none_or(|t| now.duration_since(t) >= REJECT_LOG_EVERY) {
        *last = Some(now);
        Some(std::mem::take(since))
    } else {
        *since += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_and_render() {
        let m = Metrics::new();
        m.received(3);
        m.alerts_published(1);
        m.unmatched(1);
        m.rejected(
            RejectReason::NotJson,
            "trailing characters",
            "telemetry/x",
            Instant::now(),
        );
        m.rejected(
            RejectReason::NotJson,
            "again",
            "telemetry/x",
            Instant::now(),
        );
        m.twin_update(TwinResult::refused);
        m.threshold(30.5);
        m.processed(Duration::from_micros(300));
        let s = m.snapshot();
        assert_eq!(
            (
                s.received,
                s.alerts,
                s.unmatched,
                s.rejected,
                s.twin_refused
            ),
            (3, 1, 1, 2, 1)
        );
        let text = m.render();
        for line in [
            "edgefilter_messages_received_total 3",
            "edgefilter_alerts_published_total 1",
            "edgefilter_messages_unmatched_total 1",
            "edgefilter_messages_rejected_total{reason=\"not_json\"} 2",
            "edgefilter_messages_rejected_total{reason=\"too_large\"} 0",
            "edgefilter_twin_updates_total{result=\"refused\"} 1",
            "edgefilter_threshold 30.5",
            "edgefilter_processing_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("# UNIT edgefilter_processing_seconds seconds"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn broker_drops_count_by_reason() {
        let m = Metrics::new();
        m.broker_dropped(
            BrokerDrop::queue_full,
            "full",
            "slow",
            "telemetry/a",
            Instant::now(),
        );
        m.broker_dropped(
            BrokerDrop::queue_full,
            "full",
            "slow",
            "telemetry/b",
            Instant::now(),
        );
        m.broker_dropped(
            BrokerDrop::refused,
            "wildcard",
            "pub",
            "telemetry/#",
            Instant::now(),
        );
        assert_eq!(m.snapshot().broker_dropped, 3);
        let text = m.render();
        for line in [
            "edgefilter_broker_dropped_total{reason=\"queue_full\"} 2",
            "edgefilter_broker_dropped_total{reason=\"refused\"} 1",
            "edgefilter_broker_dropped_total{reason=\"expired\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn connection_state_is_tracked() {
        let m = Metrics::new();
        assert!(!m.is_connected());
        m.connected(true, false);
        assert!(m.is_connected());
        m.connected(false, false);
        m.connected(true, true);
        assert_eq!(m.snapshot().reconnects, 1);
    }
}
