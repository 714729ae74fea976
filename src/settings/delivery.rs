//! When an input is acknowledged and where the outbox keeps alerts (the `--ack-policy`,
//! `--outbox-*` and `--twin-timeout` settings).

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

/// `--ack-policy`: what an input's PUBACK waits for when its verdict caused an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckPolicyArg {
    /// `outbox` under Azure IoT Edge, `alert` elsewhere.
    Auto,
    /// The alert's own PUBACK from the broker.
    Alert,
    /// The alert committed to the local outbox (sent again after a restart until acknowledged).
    Outbox,
}

/// `--outbox-durability`: what a commit to the outbox does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutboxDurability {
    /// `write` only: survives the process (kill -9, crash, restart), not a power cut.
    Written,
    /// `fdatasync` at every commit: survives a power cut too.
    Fsync,
}

/// The checked delivery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub ack_policy: AckPolicyArg,
    pub outbox_dir: PathBuf,
    pub outbox_durability: OutboxDurability,
    pub twin_timeout: Duration,
}

impl Delivery {
    /// Whether the outbox is used: `auto` resolves with `iot_edge` (see [`AckPolicyArg`]).
    /// Under IoT Edge, edgeHub delivers one input at a time and waits for its PUBACK, so an
    /// input that waits for its alert's PUBACK makes edgeHub wait for its own store time per
    /// alert; elsewhere brokers pipeline thousands of inputs and the alert's PUBACK costs no
    /// throughput (BENCHMARKS.md §1 and §8).
    pub fn uses_outbox(&self, iot_edge: bool) -> bool {
        match self.ack_policy {
            AckPolicyArg::Outbox => true,
            AckPolicyArg::Alert => false,
            AckPolicyArg::Auto => iot_edge,
        }
    }
}
