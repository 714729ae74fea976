//! The delivery flags of `edgefilter run` — when an input is acknowledged (`--ack-policy`),
//! where and how durably the outbox keeps alerts (`--outbox-dir`, `--outbox-durability`), and
//! how long a twin request may go unanswered (`--twin-timeout`) — checked into [`Delivery`] as
//! part of [`RunArgs::validate`]. Whether the directory is writable is found when `run` opens
//! the outbox (it depends on IoT Edge being detected), before any socket is opened.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::{ConfigError, RunArgs};

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

impl RunArgs {
    /// The delivery flags, checked.
    pub(super) fn delivery(&self) -> Result<Delivery, ConfigError> {
        if self.ack_policy == AckPolicyArg::Outbox && self.qos == 0 {
            return Err(ConfigError::OutboxAtQos0);
        }
        if self.outbox_dir.as_os_str().is_empty() {
            return Err(ConfigError::OutboxDir);
        }
        if self.twin_timeout < Duration::from_millis(100) {
            return Err(ConfigError::TwinTimeout);
        }
        Ok(Delivery {
            ack_policy: self.ack_policy,
            outbox_dir: self.outbox_dir.clone(),
            outbox_durability: self.outbox_durability,
            twin_timeout: self.twin_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Command};
    use clap::Parser;

    fn delivery(extra: &[&str]) -> Result<Delivery, ConfigError> {
        let mut argv = vec!["edgefilter", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a.validate().map(|s| s.delivery),
            _ => unreachable!(),
        }
    }

    #[test]
    fn auto_is_the_outbox_under_iot_edge_only() {
        let d = delivery(&[]).unwrap();
        assert_eq!(d.ack_policy, AckPolicyArg::Auto);
        assert!(d.uses_outbox(true) && !d.uses_outbox(false));
        assert_eq!(
            d.outbox_dir,
            PathBuf::from(super::super::defaults::OUTBOX_DIR)
        );
        assert_eq!(d.outbox_durability, OutboxDurability::Written);
        let d = delivery(&["--ack-policy", "alert"]).unwrap();
        assert!(!d.uses_outbox(true));
        let d = delivery(&["--ack-policy", "outbox", "--outbox-durability", "fsync"]).unwrap();
        assert!(d.uses_outbox(false));
        assert_eq!(d.outbox_durability, OutboxDurability::Fsync);
    }

    #[test]
    fn mistakes_are_one_line() {
        let e = delivery(&["--ack-policy", "outbox", "--qos", "0"]).unwrap_err();
        assert!(e.to_string().contains("--qos 1"), "{e}");
        let e = delivery(&["--twin-timeout", "1ms"]).unwrap_err();
        assert!(e.to_string().contains("--twin-timeout"), "{e}");
    }
}
