//! The root crate's integration tests, as one test binary (one link instead of one per file):
//! each module is the file of one subject, `common/` their shared fixtures (mosquitto on an
//! ephemeral port, the filter as a child process or in-process, MQTT clients, the IoT Edge
//! stand-ins). Run one subject with `cargo nextest run --test it -E 'test(/^mosquitto::/)'`.
//!
//! Three test files stay binaries of their own under `tests/`: `verdict_table.rs` and
//! `rules_memory.rs` each install a counting global allocator (one per binary, and it would
//! count every other test here), and `cluster.rs` needs the `cluster` feature.

mod common;

mod azure_edge;
mod azure_seed_parity;
mod azure_standin;
mod azure_workload;
mod cli;
mod condition_e2e;
mod condition_model;
mod config_file;
mod debian_package;
mod deployment;
mod embedded;
mod embedded_broker;
mod layers;
mod metrics_server;
mod mosquitto;
mod prometheus;
mod protocol_edges;
mod rules_e2e;
mod rules_model;
mod tls_auth;
mod verdict_props;
