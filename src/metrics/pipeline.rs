//! The pipeline gauges (`edgefilter_pending_messages`, `…_inflight_publishes`,
//! `…_queued_publishes`, `edgefilter_input_paused`): the state of the connection loop between
//! input and acknowledgement, sampled by `Flow::poll` once per turn. Part of [`Metrics`].

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

/// The state of the pipeline, set by the connection loop once per turn ([`Metrics::pipeline`]).
#[derive(Default)]
pub(super) struct PipelineGauges {
    pub(super) pending: Gauge,
    pub(super) inflight: Gauge,
    pub(super) queued: Gauge,
    pub(super) paused: Gauge,
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

impl PipelineGauges {
    pub(super) fn register(registry: &mut Registry) -> PipelineGauges {
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
        pipeline
    }
}

impl Metrics {
    /// The pipeline's state; `Flow::poll` calls this once per loop turn (atomic stores).
    pub fn pipeline(&self, s: PipelineState) {
        let g = &self.pipeline;
        g.pending.set(s.pending as i64);
        g.inflight.set(s.inflight as i64);
        g.queued.set(s.queued as i64);
        g.paused.set(i64::from(s.paused));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
