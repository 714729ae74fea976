//! edgefilter — a telemetry filter for IoT gateways.
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
//! - [`run`] (and [`demo`]): the faces; [`plan`] resolves the validated settings ([`config`])
//!   into what to start and how, in one pure step; [`config_file`]: `--config` TOML files
//!   under the flags and variables, `config check|print`; [`shutdown`] is the stop signal.
//! - [`io`]: everything that touches a socket — the connection loop ([`io::connection`]) with
//!   its transport, handshake and reconnect policy, TLS, the IoT Edge identity and workload
//!   API, the embedded broker, the metrics endpoint. Its parts take small settings of their
//!   own, which [`plan`] builds: `io` does not read [`config`].
//! - [`flow`]: the per-connection protocol logic as one synchronous state machine (events in,
//!   effects out, time as an argument), with the broker's dialect ([`flow::dialect`]: generic
//!   MQTT or IoT Edge topics).
//! - [`pipeline`]: the hot path — [`pipeline::verdict`] decides one payload,
//!   [`pipeline::stage`] applies the rules to a batch (one stage per shard, the home of
//!   per-device state), [`pipeline::pool`] runs stages on worker threads,
//!   [`pipeline::batch`] groups alerts into flushes (or JSON-array payloads).
//! - [`mqtt`] (workspace crate `edgefilter-mqtt`, shared with loadgen): pure MQTT pieces —
//!   codec adapter, outgoing window, arrival-ordered acks, keep-alive, topics, broker URLs,
//!   IoT Edge topics and property bags, TCP quick ACKs.
//! - [`twin`]: desired-property patches, their validation, the reported document.
//! - [`metrics`]: counters and histograms as named events, rendered as Prometheus text, and
//!   the standard `process_*` figures read from `/proc` at each scrape ([`metrics::process`]).
//! - [`io::outbox`]: a durable append-only file of alerts, replayed after a crash: the
//!   `--ack-policy outbox` acknowledges an input once its alert is committed there
//!   ([`flow`] says what to append, [`io::outbox`] writes it once per loop turn).
//! - [`sensor`] (workspace crate `edgefilter-sensor`): the SimulatedTemperatureSensor profile
//!   (demo, loadgen, benches).

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
