//! A stand-in for Azure IoT Edge's edgeHub and the security daemon's workload API, with
//! edgeHub's **delivery semantics** (test tooling; neither can run here: edgeHub is a .NET
//! container, the daemon needs the IoT Edge runtime). It sits where edgeHub sits in the data
//! flow — between the module (edgefilter, or the tutorial's Python module) and everything
//! else — and behaves as edgeHub's sources say:
//!
//! - TLS with a CA generated per run ([`certs`]); the CONNECT checked as edgeHub's
//!   authenticator does, SAS signature recomputed with the module key ([`auth`]);
//! - per-module store, **one message at a time across all inputs**, each waiting for its
//!   PUBACK up to the ack timeout (edgeHub: 30 s) and then redelivered; out-of-order PUBACKs
//!   ignored ([`delivery`]);
//! - the module's own publishes processed one at a time: events routed upstream after a
//!   configurable store delay and then PUBACKed; topics matching no template, and events
//!   whose `Message.Size()` is over 262,144, dropped and PUBACKed; a QoS 2 publish or a
//!   packet whose whole size is over 262,144 bytes closes the connection ([`routes`],
//!   `module_conn.rs`);
//! - subscriptions in effect only after a delay, as edgeHub applies them asynchronously; an
//!   answer the module has not subscribed to yet is completed without delivery;
//! - the module twin: GET, reported patches (204 without `$version`, or 400 for
//!   `$ # .`/whitespace names), desired patches ([`twin`]);
//! - a plain-TCP side port where sources feed module inputs and sinks receive what went
//!   upstream ([`side`]);
//! - the workload API on a unix socket: sign and trust bundle ([`workload`]);
//! - for tests that run the seed's module on the Python SDK beside it: the venv, the script
//!   and a network namespace of their own ([`peer`]).
//!
//! Used in-process by the Rust integration tests and as the `edgehub-standin` binary by the
//! benchmarks and the Python SDK peer. What it does not model: edgeHub's routing language
//! (every module output goes upstream), message TTL and store limits, direct methods beyond
//! accepting responses, the gateway's own retransmissions, keep-alive enforcement.

pub mod auth;
pub mod certs;
pub mod delivery;
mod hub;
mod module_conn;
pub mod peer;
pub mod routes;
pub mod side;
pub mod twin;
pub mod workload;

pub use auth::{hmac_base64, token_fields, unix_now, verify_sas, Expected, SKEW_SECS};
pub use certs::{new_ca, server_cert, server_config, Ca, Chain};
pub use hub::{
    Config, EdgeHub, Event, ModuleStats, SeenConnect, EDGEHUB_ACK_TIMEOUT, MAX_MESSAGE_SIZE,
    MAX_PACKET_BYTES,
};
