//! `edgefilter run`: does what the [`Plan`](crate::plan) says — starts the embedded broker
//! (when no broker is given), reads the TLS files, serves the metrics endpoint and the
//! periodic stats line, builds the `Flow` and runs the connection loop until the shutdown and
//! the drain are done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::flow::Flow;
use crate::io::azure::AzureError;
use crate::io::connection::{self, AzureLink, ConnectPlan, ConnectionError, Stages};
use crate::io::embedded::EmbeddedError;
use crate::io::http;
use crate::io::outbox::OutboxError;
use crate::io::outbox::OutboxIo;
use crate::io::tls::{self, TlsError};
use crate::io::transport::Endpoint;
use crate::metrics::Metrics;
use crate::pipeline::rules::Anchor;
use crate::plan::{self, TlsPlan};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::twin::Threshold;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("--metrics-addr {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Driver(#[from] ConnectionError),
    #[error(transparent)]
    Azure(#[from] AzureError),
    #[error("--outbox-dir {dir} (or --ack-policy alert)")]
    Outbox {
        dir: String,
        #[source]
        source: OutboxError,
    },
}

/// What the filter shares with whoever runs it (counters, the threshold in force).
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub threshold: Arc<Threshold>,
}

impl Shared {
    /// Fresh counters and the initial threshold.
    pub fn new(threshold: f64) -> Shared {
        Shared {
            metrics: Arc::new(Metrics::new()),
            threshold: Arc::new(Threshold::new(threshold)),
        }
    }
}

/// Runs the module until `shutdown` fires and the pipeline drained.
pub async fn run(
    settings: Settings,
    shared: Shared,
    shutdown: impl Into<Shutdown>,
) -> Result<(), RunError> {
    let shutdown = shutdown.into();
    let identity = plan::azure_identity(&settings, |k| std::env::var(k).ok())?;
    let mut plan = plan::resolve(&settings, identity);
    // The outbox first: a directory that cannot be written is a configuration mistake.
    let outbox = match &plan.outbox {
        Some(o) => {
            let opened =
                OutboxIo::open(&o.dir, o.durability, shared.metrics.clone()).map_err(|source| {
                    RunError::Outbox {
                        dir: o.dir.display().to_string(),
                        source,
                    }
                })?;
            tracing::info!(
                "acknowledging inputs once their alerts are in the outbox {} ({:?})",
                o.dir.display(),
                o.durability
            );
            Some(opened)
        }
        None => None,
    };
    if let Some(broker) = &plan.embedded {
        // The filter logs in to its own broker with the secret the broker was started with.
        let login = broker.start(shared.metrics.clone())?;
        plan.connect.username = Some(login.username);
        plan.connect.password = Some(login.password);
    }
    if let Some(identity) = &plan.azure {
        tracing::info!("IoT Edge mode: {identity}, edgeHub at {}", plan.addr);
    }
    let endpoint = Endpoint {
        addr: plan.addr.clone(),
        tls: match &plan.tls {
            TlsPlan::Files { files, server_name } => {
                Some((tls::from_files(files)?, server_name.clone()))
            }
            TlsPlan::None | TlsPlan::IotEdge => None,
        },
    };

    let (stop, stopped) = crate::shutdown::channel();
    if let Some(addr) = settings.metrics_addr {
        let listener = http::bind(addr)
            .await
            .map_err(|source| RunError::Metrics { addr, source })?;
        tracing::info!("metrics on http://{addr}/metrics");
        let mut stopped = stopped.clone();
        tokio::spawn(http::serve(listener, shared.metrics.clone(), async move {
            stopped.wait().await
        }));
    }
    if !settings.stats_interval.is_zero() {
        tokio::spawn(stats_lines(
            shared.metrics.clone(),
            settings.stats_interval,
            stopped.clone(),
        ));
    }

    tracing::info!(
        "filtering {} where {} > {} (QoS {}, {} workers) -> {}",
        settings.input_topics.join(", "),
        settings.field,
        shared.threshold.get(),
        settings.qos,
        settings.workers,
        settings.alert_topic.render("{topic}"),
    );
    let mut flow = Flow::new(
        plan.flow,
        plan.dialect,
        shared.metrics.clone(),
        shared.threshold.clone(),
        Anchor::now(),
    );
    let outbox = outbox.map(|(io, pending)| {
        io.start(&mut flow, pending);
        io
    });
    let connect_plan = ConnectPlan {
        version: plan.version,
        endpoint,
        connect: plan.connect,
        publisher_client_id: plan.publisher_client_id,
        quick_ack: plan.quick_ack,
        read_limit: plan.read_limit,
        azure: plan.azure.map(|identity| AzureLink {
            identity,
            token_ttl: plan.token_ttl,
        }),
        retry_first_connect: plan.retry_first_connect,
    };
    let stages = Stages {
        field: plan.field,
        max_payload: plan.max_payload,
    };
    let result = connection::run(connect_plan, flow, stages, outbox, shutdown).await;
    stop.fire();
    let s = shared.metrics.snapshot();
    tracing::info!(
        "stopped: {} received, {} alerts, {} unmatched, {} rejected",
        s.received,
        s.alerts,
        s.unmatched,
        s.rejected
    );
    Ok(result?)
}

/// One log line per interval with the counters and rates.
async fn stats_lines(metrics: Arc<Metrics>, every: Duration, mut stop: Shutdown) {
    let mut last = metrics.snapshot();
    let mut last_at = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.wait() => return,
            _ = tick.tick() => {}
        }
        let now = metrics.snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(1e-9);
        last_at = Instant::now();
        if now != last {
            tracing::info!(
                "stats: {} received ({:.0}/s), {} alerts ({:.0}/s), {} unmatched, {} rejected, {} dead letters, {} dropped by the embedded broker",
                now.received,
                (now.received - last.received) as f64 / secs,
                now.alerts,
                (now.alerts - last.alerts) as f64 / secs,
                now.unmatched,
                now.rejected,
                now.dead_letters,
                now.broker_dropped,
            );
        }
        last = now;
    }
}
