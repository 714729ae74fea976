//! edgefilter — a telemetry filter for IoT gateways, the successor of the Python filter module
//! of Azure IoT Edge's tutorial (*the seed*, wherever the code compares with it: its
//! verdicts, its twin, its properties).
//!
//! # Layout
//!
//! Messages flow left to right; every arrow points down the list below (I/O on top, pure
//! logic beneath):
//!
//! ```text
//!           io::connection (socket, timers, shutdown: I/O only)
//!                 │ packets, verdicts, time                ▲ bytes to write, batches, wake-up
//!                 ▼                                        │
//! MQTT in ──▶ flow::Flow ──batches──▶ pipeline::stage (inline, or on pipeline::pool workers)
//!               │  ▲ acks in arrival order  ◀──verdicts────┘   verdict + rules (Arc snapshot)
//!               │  └─ alerts ─▶ batcher ─▶ QoS 1 window ─▶ MQTT out
//!               └─ twin patches ─▶ new rules snapshot (exact arrival point)
//! ```
//!
//! The layers, top to bottom (an import only ever points down; `tests/it/layers.rs` checks it):
//!
//! | layer | where | what lives there |
//! |---|---|---|
//! | flags | [`cli`] | clap flags, `--config` TOML files under flags and variables, their validation into [`settings`], `config check\|print` |
//! | faces | [`run`], [`demo`] | what `edgefilter run` and `edgefilter demo` start |
//! | plan | [`plan`] | settings → what to start and how, in one pure step |
//! | sockets, files, clocks | [`io`] | the connection loop ([`io::connection`]) with its transport, handshake and reconnect policy, TLS, the IoT Edge identity and workload API, the embedded broker, the outbox file ([`io::outbox`]), the metrics endpoint |
//! | protocol | [`flow`] | the filter's connections as one synchronous state machine: events in, effects out, time an argument; the broker's dialect ([`flow::dialect`]: generic MQTT or IoT Edge topics) |
//! | twin | [`twin`] | desired-property patches, their validation, the reported document |
//! | observability | [`metrics`], [`logging`], [`shutdown`] | counters and histograms as named events, the `process_*` figures ([`metrics::process`]); log formats; the stop signal |
//! | settings | [`settings`] | plain values everything above reads: `Settings`, defaults, targets |
//! | hot path | [`pipeline`] | [`pipeline::verdict`] decides one payload, [`pipeline::stage`] applies the rules to a batch (one stage per shard, the home of per-device state), [`pipeline::pool`] runs stages on worker threads, [`pipeline::alert_batch`] groups alerts into flushes (or JSON-array payloads) |
//! | MQTT | [`mqtt`], [`sensor`] | workspace crates shared with loadgen: codec adapter, outgoing window, arrival-ordered acks, keep-alive, topics, broker URLs, IoT Edge topics and property bags, TCP quick ACKs; the SimulatedTemperatureSensor profile |
//!
//! So a socket lives under `io/`, a clock is read only there (and in the faces), a flag only
//! under `cli/`, a verdict only under `pipeline/`.

#![forbid(unsafe_code)]

pub use edgefilter_mqtt as mqtt;
pub use edgefilter_sensor as sensor;

pub mod cli;
pub mod demo;
pub mod flow;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod run;
pub mod settings;
pub mod shutdown;
pub mod twin;
