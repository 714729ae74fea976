//! `edgefilter run`: wires the validated settings into the data flow — the embedded broker
//! (when no broker is given), the connection loop with its worker pool, the metrics endpoint
//! and the periodic stats line — and runs until the shutdown signal and the drain are done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;

use crate::config::{AzureEdge, MqttVersion, Settings, Target};
use crate::io::azure::{AzureError, AzureIdentity, EDGEHUB_MQTT_PORT};
use crate::io::codec::{ConnectOptions, Version};
use crate::io::connection::{self, ConnectionError, Endpoint, Plan, QuickAck, Shared};
use crate::io::dialect::{Azure, Dialect, Generic};
use crate::io::embedded::{EmbeddedBroker, EmbeddedError};
use crate::io::http;
use crate::io::tls::{self, TlsError};
use crate::metrics::Metrics;
use crate::twin::Threshold;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("--metrics-addr {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("IoT Edge: {0}")]
    Azure(#[from] AzureError),
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

/// The protocol version of the filter's connection.
fn version_of(v: MqttVersion) -> Version {
    match v {
        MqttVersion::V5 => Version::V5,
        MqttVersion::V311 => Version::V4,
    }
}

/// The session outlives a disconnection by this long (MQTT 5 session expiry); brokers keep
/// undelivered QoS 1 input for us meanwhile.
const SESSION_EXPIRY_SECS: u32 = 7 * 24 * 3600;

/// Runs the module until `shutdown` turns true and the pipeline drained.
pub async fn run(
    settings: Settings,
    shared: Shared,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut version = version_of(settings.mqtt_version);
    let azure = match settings.azure_edge {
        AzureEdge::Off => None,
        AzureEdge::Auto => AzureIdentity::from_env(|k| std::env::var(k).ok())?,
        AzureEdge::On => Some(AzureIdentity::require_from_env(|k| std::env::var(k).ok())?),
    };
    let endpoint = match (&azure, &settings.target) {
        (Some(identity), target) => {
            // edgeHub speaks MQTT 3.1.1 over TLS on the gateway host; --broker may override
            // where to connect (the certificate must still name the gateway host).
            version = Version::V4;
            let addr = match target {
                Target::External(url) => url.addr(),
                Target::Embedded { .. } => {
                    format!("{}:{}", identity.gateway_host_name, EDGEHUB_MQTT_PORT)
                }
            };
            tracing::info!("IoT Edge mode: {identity}, edgeHub at {addr}");
            Endpoint { addr, tls: None }
        }
        (None, Target::Embedded { v4, v5 }) => {
            let broker = EmbeddedBroker {
                v4: Some(*v4),
                v5: *v5,
                max_payload: settings.max_payload,
            };
            broker.start()?;
            match v5 {
                Some(v5) => tracing::info!(
                    "embedded broker listening on {v4} (MQTT 3.1.1) and {v5} (MQTT 5)"
                ),
                None => tracing::info!("embedded broker listening on {v4} (MQTT 3.1.1)"),
            }
            // The filter speaks MQTT 5 when the broker serves it (and it was not turned off).
            let (listen, v) = match (v5, version) {
                (Some(v5), Version::V5) => (*v5, Version::V5),
                _ => (*v4, Version::V4),
            };
            version = v;
            let connect_to = if listen.ip().is_unspecified() {
                std::net::SocketAddr::new([127, 0, 0, 1].into(), listen.port())
            } else {
                listen
            };
            Endpoint {
                addr: connect_to.to_string(),
                tls: None,
            }
        }
        (None, Target::External(url)) => Endpoint {
            addr: url.addr(),
            tls: if url.tls {
                Some((tls::from_files(&settings.tls)?, url.host.clone()))
            } else {
                None
            },
        },
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(addr) = settings.metrics_addr {
        let listener = http::bind(addr)
            .await
            .map_err(|source| RunError::Metrics { addr, source })?;
        tracing::info!("metrics on http://{addr}/metrics");
        tokio::spawn(http::serve(
            listener,
            shared.metrics.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    if !settings.stats_interval.is_zero() {
        tokio::spawn(stats_lines(
            shared.metrics.clone(),
            settings.stats_interval,
            stopped(stop_rx.clone()),
        ));
    }

    let in_azure = azure.is_some();
    let dialect = match azure {
        Some(identity) => Dialect::Azure(Box::new(Azure::new(
            identity,
            &settings.input_name,
            &settings.output_name,
            settings.dead_letter_topic.as_deref(),
        ))),
        None => {
            let mut generic = Generic::new(
                version,
                settings.input_subscriptions(),
                settings.qos,
                &settings.twin_topic,
                settings.alert_topic.clone(),
                settings.dead_letter_topic.clone(),
            );
            if matches!(settings.target, Target::Embedded { .. }) {
                // Broker and filter share one process: a QoS 1 hop between them could not save
                // anything a crash loses, and rumqttd holds PUBACKs for our alerts behind the
                // inputs it delivers to us, which a QoS 1 input (acknowledged only after its
                // alert) would deadlock. Alerts stay QoS 1, stored by the broker for consumers.
                generic.input_qos = 0;
            }
            Dialect::Generic(generic)
        }
    };
    let plan = Plan {
        version,
        endpoint,
        connect: ConnectOptions {
            client_id: settings.client_id.clone(),
            keep_alive_secs: settings.keep_alive.as_secs().clamp(1, 65535) as u16,
            clean: false,
            session_expiry_secs: SESSION_EXPIRY_SECS,
            receive_maximum: settings.max_pending.clamp(1, 65535) as u16,
            maximum_packet_size: (settings.max_payload.saturating_mul(4).max(1 << 20) + 65536)
                as u32,
            username: settings.username.clone(),
            password: settings.password.clone(),
        },
        qos: settings.qos,
        field: settings.field.clone(),
        workers: settings.workers,
        inline_batch: settings.inline_batch,
        max_payload: settings.max_payload,
        max_pending: settings.max_pending,
        max_inflight: settings.max_inflight,
        batch_max: settings.batch_max,
        batch_linger: settings.batch_linger,
        batch_format: settings.batch_format,
        drain_timeout: settings.drain_timeout,
        token_ttl: settings.azure_token_ttl,
        quick_ack: if !in_azure && matches!(settings.target, Target::Embedded { .. }) {
            QuickAck::Always
        } else if !in_azure && settings.qos == 0 {
            QuickAck::BelowRate
        } else {
            QuickAck::Never
        },
        // IoT Edge starts modules before edgeHub may be ready: keep trying.
        retry_first_connect: in_azure,
    };
    tracing::info!(
        "filtering {} where {} > {} (QoS {}, {} workers) -> {}",
        settings.input_topics.join(", "),
        settings.field,
        shared.threshold.get(),
        settings.qos,
        settings.workers,
        settings.alert_topic.render("{topic}"),
    );
    let result = connection::run(plan, dialect, shared.clone(), shutdown).await;
    let _ = stop_tx.send(true);
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

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// One log line per interval with the counters and rates.
async fn stats_lines(
    metrics: Arc<Metrics>,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last = metrics.snapshot();
    let mut last_at = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let now = metrics.snapshot();
        let secs = last_at.elapsed().as_secs_f64().max(1e-9);
        last_at = Instant::now();
        if now != last {
            tracing::info!(
                "stats: {} received ({:.0}/s), {} alerts ({:.0}/s), {} unmatched, {} rejected, {} dead letters",
                now.received,
                (now.received - last.received) as f64 / secs,
                now.alerts,
                (now.alerts - last.alerts) as f64 / secs,
                now.unmatched,
                now.rejected,
                now.dead_letters,
            );
        }
        last = now;
    }
}
