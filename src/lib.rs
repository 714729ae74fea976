//! edgefilter — a telemetry filter for IoT gateways.
//!
//! # Layout
//!
//! Messages flow left to right:
//!
//! ```text
//! MQTT in ──Bytes──▶ pipeline::pool ──▶ pipeline::verdict ──▶ io::connection (alerts, acks) ──▶ MQTT out
//!   (io::connection decides small batches itself when their worker is idle)
//!                                  ▲
//!                       twin (threshold in an AtomicU64)
//! ```
//!
//! - [`config`]: the command line (clap) and its validation into ready-to-use settings;
//!   [`config_file`]: `--config` TOML files under the flags and variables, `config check|print`.
//! - [`pipeline`]: the synchronous hot path — [`pipeline::verdict`] decides one payload,
//!   [`pipeline::pool`] runs verdicts on worker threads sharded by topic,
//!   [`pipeline::ack`] releases input acknowledgements in arrival order,
//!   [`pipeline::batch`] groups alerts into flushes (or JSON-array payloads).
//! - [`io`]: everything that touches a socket — the MQTT connection loop built on rumqttc's
//!   packet codec ([`io::connection`], with [`io::codec`] and the outgoing window
//!   [`io::session`]), the topic conventions of generic brokers and of IoT Edge
//!   ([`io::dialect`], [`io::azure`]: SAS tokens, workload API, property bags), TLS, the
//!   embedded broker, the metrics endpoint.
//! - [`twin`]: desired-property patches, their validation, the lock-free threshold and the
//!   reported document.
//! - [`metrics`]: counters and histograms as named events, rendered as Prometheus text;
//!   [`process_metrics`]: the standard `process_*` figures read from `/proc` at each scrape.
//! - [`sensor`]: the SimulatedTemperatureSensor profile (demo, loadgen, benches).
//! - [`run`]: wires the parts together for `edgefilter run`; [`demo`] for `edgefilter demo`.

pub mod config;
pub mod config_file;
pub mod demo;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod process_metrics;
pub mod run;
pub mod sensor;
pub mod twin;
