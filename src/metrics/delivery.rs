//! The delivery metrics (beside the data flow, fed by the connection loop and `Flow`): the
//! outbox acknowledgement policy's file and the IoT Edge twin requests. Part of [`Metrics`].
//!
//! [`Metrics`]: super::Metrics

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Outbox and twin-request counters.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    outbox_pending: Gauge,
    outbox_replayed: Counter,
    outbox_errors: Counter,
    twin_unanswered: Counter,
    twin_waiting: Gauge,
}

impl DeliveryMetrics {
    pub(super) fn register(registry: &mut Registry) -> DeliveryMetrics {
        let m = DeliveryMetrics::default();
        registry.register(
            "edgefilter_outbox_pending",
            "Alerts in the outbox (--ack-policy outbox) whose PUBACK has not come yet",
            m.outbox_pending.clone(),
        );
        registry.register(
            "edgefilter_outbox_replayed",
            "Alerts an earlier run left in the outbox, sent again at start",
            m.outbox_replayed.clone(),
        );
        registry.register(
            "edgefilter_outbox_errors",
            "Outbox writes that failed; from then on inputs wait for their alerts' PUBACKs (the alert policy)",
            m.outbox_errors.clone(),
        );
        registry.register(
            "edgefilter_twin_requests_unanswered",
            "IoT Edge twin GETs that got no answer within --twin-timeout (each is sent again)",
            m.twin_unanswered.clone(),
        );
        registry.register(
            "edgefilter_twin_waiting",
            "1 while the IoT Edge twin has not answered a GET yet (the threshold is the command line's)",
            m.twin_waiting.clone(),
        );
        m
    }

    pub fn outbox_pending(&self, n: usize) {
        self.outbox_pending.set(n as i64);
    }

    pub fn outbox_replayed(&self, n: usize) {
        self.outbox_replayed.inc_by(n as u64);
    }

    pub fn outbox_error(&self) {
        self.outbox_errors.inc();
    }

    pub fn twin_unanswered(&self) {
        self.twin_unanswered.inc();
    }

    pub fn twin_waiting(&self, waiting: bool) {
        self.twin_waiting.set(i64::from(waiting));
    }

    pub fn twin_unanswered_count(&self) -> u64 {
        self.twin_unanswered.get()
    }

    pub fn outbox_errors_count(&self) -> u64 {
        self.outbox_errors.get()
    }
}
