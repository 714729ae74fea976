//! loadgen — the bundled stress tester of edgefilter. It plays both ends of the
//! filter's data flow: the sensors (MQTT in) and the alert consumer (MQTT out).
//!
//! # Layout
//!
//! ```text
//!  schedule ─▶ message ─▶ publisher (N connections) ─▶ broker ─▶ filter ─▶ broker ─▶ sink ─▶ account
//!   (when)     (what,        (batches, QoS 1 window:                                (alerts)  (lost, dup,
//!              verdict)       inflight)                                                        unexpected,
//!                                    twin (control connection: probes, twin step)              latency)
//! ```
//!
//! - [`cli`]: the command line and its validation into a [`cli::Config`].
//! - [`target`]: the topics per target (`mqtt`, or `azure`: module input and events topics
//!   with property bags) and the alert property check.
//! - [`schedule`]: the open-loop schedule, device → connection split, stop and pause points.
//! - [`message`]: sensor bodies, expected verdicts, PUBLISH encoding in place.
//! - [`publisher`]: one connection's writer and PUBACK/PINGRESP reader threads.
//! - [`inflight`]: QoS 1 packet ids in flight.
//! - [`sink`]: the alert subscriber; [`account`]: its pure accounting; [`summaries`]: the
//!   kinds of what arrives (alerts, clearing messages, window summaries) and the summaries'
//!   accounting, against [`rules`]: loadgen's own model of the filter's alert rules, and
//!   [`condition_model`]: its model of conditions and per-device thresholds.
//! - [`twin`]: retained twin documents, probes, the desired patch of `--twin-step`.
//! - [`wire`]: connections on rumqttc's packet codec; [`clock`]: time and CPU.
//! - [`report`]: table, summary JSON, `.hgrm`; [`timeline`] and [`plot`]: the per-second
//!   series and the `--report` charts; [`run`]: wires one run together.

pub mod account;
pub mod cli;
pub mod clock;
pub mod condition_model;
pub mod inflight;
pub mod message;
pub mod plot;
pub mod publisher;
pub mod report;
pub mod rule_model;
pub mod run;
pub mod schedule;
pub mod sink;
pub mod summaries;
pub mod target;
pub mod timeline;
pub mod twin;
pub mod wire;
