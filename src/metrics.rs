//! Observability for the whole data flow: each thing that can happen to a message is a named
//! event here ([`Metrics::received`], [`Metrics::alerts_published`], [`Metrics::rejected`], …)
//! that counts (Prometheus, rendered by `io::http` at `/metrics`) and, where a human should
//! know, logs — rate-limited, never one line per message. Events are emitted per batch by the
//! connection task. The standard `process_*` metrics come from [`crate::process_metrics`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::pipeline::rules::device::RuleStats;
use crate::pipeline::verdict::RejectReason;
use crate::process_metrics::ProcessCollector;

mod delivery;
pub use delivery::DeliveryMetrics;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reason {
    too_large,
    not_utf8,
    not_json,
    not_object,
    not_a_number,
}

impl From<RejectReason> for Reason {
    fn from(r: RejectReason) -> Self {
        match r {
            RejectReason::TooLarge => Reason::too_large,
            RejectReason::NotUtf8 => Reason::not_utf8,
            RejectReason::NotJson => Reason::not_json,
            RejectReason::NotObject => Reason::not_object,
            RejectReason::NotANumber => Reason::not_a_number,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TwinResult {
    applied,
    refused,
    stale,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: TwinResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Why the embedded broker dropped a message (`edgefilter_broker_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum BrokerDrop {
    /// A subscriber's queue (`--broker-queue`) was full: its oldest QoS 1 / newest QoS 0
    /// message went.
    queue_full,
    /// A subscriber's session did not keep up (its client stopped reading): `--broker-queue`
    /// messages already waited in its inbox, before its queue.
    inbox_full,
    /// Waited in a queue longer than the message expiry.
    expired,
    /// A publish the broker refused (wildcard topic name, twin without authorisation).
    refused,
    /// A session expired with messages still queued.
    session_ended,
    other,
}

impl BrokerDrop {
    pub const ALL: [BrokerDrop; 6] = [
        BrokerDrop::queue_full,
        BrokerDrop::inbox_full,
        BrokerDrop::expired,
        BrokerDrop::refused,
        BrokerDrop::session_ended,
        BrokerDrop::other,
    ];
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerDropLabels {
    pub reason: BrokerDrop,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

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
    /// Per broker drop reason: when it was last logged, and how many since.
    broker_drop_log: Mutex<[(Option<Instant>, u64); 6]>,
    rules: RuleMetrics,
    /// The outbox and the twin requests.
    pub delivery: DeliveryMetrics,
}

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

const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The state of the pipeline, set by the connection loop once per turn ([`Metrics::pipeline`]).
#[derive(Default)]
struct PipelineGauges {
    pending: Gauge,
    inflight: Gauge,
    queued: Gauge,
    paused: Gauge,
}

/// One sample of the pipeline's state for [`Metrics::pipeline`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineState {
    /// Inputs received and not yet acknowledged (the `--max-pending` budget).
    pub pending: usize,
    /// Outgoing QoS 1 publishes (alerts, dead letters) sent, not yet acknowledged by the broker.
    pub inflight: usize,
    /// Outgoing publishes waiting for a free slot of the `--max-inflight` window.
    pub queued: usize,
    /// Reading from the broker is paused because `pending` reached `--max-pending`.
    pub paused: bool,
}

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
        let pipeline = PipelineGauges::default();
        registry.register(
            "edgefilter_pending_messages",
            "Input messages in the pipeline: received, not yet acknowledged (limit --max-pending)",
            pipeline.pending.clone(),
        );
        registry.register(
            "edgefilter_inflight_publishes",
            "Outgoing QoS 1 publishes (alerts, dead letters) not yet acknowledged by the broker",
            pipeline.inflight.clone(),
        );
        registry.register(
            "edgefilter_queued_publishes",
            "Outgoing publishes waiting for a free slot of the --max-inflight window",
            pipeline.queued.clone(),
        );
        registry.register(
            "edgefilter_input_paused",
            "1 while reading input is paused because --max-pending messages are in the pipeline",
            pipeline.paused.clone(),
        );
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
        registry.register_collector(Box::new(ProcessCollector));
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

    /// The pipeline's state; `Flow::poll` calls this once per loop turn (atomic stores).
    pub fn pipeline(&self, s: PipelineState) {
        let g = &self.pipeline;
        g.pending.set(s.pending as i64);
        g.inflight.set(s.inflight as i64);
        g.queued.set(s.queued as i64);
        g.paused.set(i64::from(s.paused));
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
    pub fn rejected(&self, reason: RejectReason, detail: &str, topic: &str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
        let idx = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(others) = due(&self.reject_log, idx) {
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
    pub fn unpublishable(&self, kind: &'static str, detail: &str, topic: &str) {
        self.unpublishable.get_or_create(&KindLabels { kind }).inc();
        let now = Instant::now();
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
    pub fn broker_dropped(&self, reason: BrokerDrop, detail: &str, client: &str, topic: &str) {
        self.broker_dropped
            .get_or_create(&BrokerDropLabels { reason })
            .inc();
        let idx = BrokerDrop::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(others) = due(&self.broker_drop_log, idx) {
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

    // ----- the stateful rules (pipeline::rules) ---------------------------------------------

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
    }

    /// Devices with rule state, all shards.
    pub fn devices(&self, n: usize) {
        self.rules.devices.set(n as i64);
    }
}

/// The counters of the stateful rules.
#[derive(Default)]
struct RuleMetrics {
    clears: Counter,
    summaries: Counter,
    suppressed: Family<RuleLabels, Counter>,
    late: Counter,
    no_event_time: Counter,
    devices: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

impl RuleMetrics {
    const SUPPRESSED: [&'static str; 2] = ["edge", "rate_limit"];

    fn register(registry: &mut Registry) -> RuleMetrics {
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
            "edgefilter_devices_tracked",
            "Devices with rule state (edge, rate limit, windows); idle ones are evicted",
            m.devices.clone(),
        );
        for rule in Self::SUPPRESSED {
            let _ = m.suppressed(rule);
        }
        m
    }

    fn suppressed(&self, rule: &'static str) -> Counter {
        self.suppressed.get_or_create(&RuleLabels { rule }).clone()
    }
}

/// Rate limit of a log line per reason: `Some(events not logged since the last line)` when
/// this event is to be logged, `None` (and counted) when it is not.
fn due<const N: usize>(log: &Mutex<[(Option<Instant>, u64); N]>, idx: usize) -> Option<u64> {
    let now = Instant::now();
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
        m.rejected(RejectReason::NotJson, "trailing characters", "telemetry/x");
        m.rejected(RejectReason::NotJson, "again", "telemetry/x");
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
    fn pipeline_state_and_process_metrics_render_in_both_formats() {
        let m = Metrics::new();
        m.pipeline(PipelineState {
            pending: 17,
            inflight: 5,
            queued: 2,
            paused: true,
        });
        let classic = m.render_prometheus_text();
        for line in [
            "edgefilter_pending_messages 17",
            "edgefilter_inflight_publishes 5",
            "edgefilter_queued_publishes 2",
            "edgefilter_input_paused 1",
            "# TYPE edgefilter_messages_received_total counter",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            concat!(
                "edgefilter_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
        ] {
            assert!(classic.contains(line), "missing {line:?} in\n{classic}");
        }
        assert!(!classic.contains("# EOF"), "0.0.4 text has no EOF marker");
        assert!(m.render().contains("edgefilter_pending_messages 17"));
    }

    #[test]
    fn broker_drops_count_by_reason() {
        let m = Metrics::new();
        m.broker_dropped(BrokerDrop::queue_full, "full", "slow", "telemetry/a");
        m.broker_dropped(BrokerDrop::queue_full, "full", "slow", "telemetry/b");
        m.broker_dropped(BrokerDrop::refused, "wildcard", "pub", "telemetry/#");
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
