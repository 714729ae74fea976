//! The delivery flags of `edgefilter run` — when an input is acknowledged (`--ack-policy`),
//! where and how durably the outbox keeps alerts (`--outbox-dir`, `--outbox-durability`), and
//! how long a twin request may go unanswered (`--twin-timeout`) — checked into
//! [`Delivery`](crate::settings::Delivery) as
//! part of [`RunArgs::validate`]. Whether the directory is writable is found when `run` opens
//! the outbox (it depends on IoT Edge being detected), before any socket is opened.

use std::time::Duration;

use super::{ConfigError, RunArgs};
use crate::settings::{AckPolicyArg, Delivery};

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
    use crate::cli::{Cli, Command};
    use crate::settings::OutboxDurability;
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
            std::path::PathBuf::from(crate::settings::defaults::OUTBOX_DIR)
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
