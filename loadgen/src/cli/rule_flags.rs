//! Tooling: loadgen's flags for the filter's alert rules, mirroring edgefilter's (`--alert-mode`,
//! `--hysteresis`, …), so that a run knows exactly what the filter must publish: alerts,
//! clearing messages and window summaries ([`crate::rules`]).

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{invalid, ConfigError};
use crate::condition_model::Expr;
use crate::rule_model::RuleSpec;
use crate::target::Target;
use crate::wire::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Every,
    Edge,
}

/// The rules the filter under test runs with (all off: the seed's behaviour).
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// The filter's --alert-mode: `every` reading above the threshold alerts, or only each
    /// device's rising `edge`.
    #[arg(long, value_enum, default_value_t = Mode::Every)]
    pub alert_mode: Mode,

    /// The filter's --hysteresis (edge mode re-arms at threshold − hysteresis).
    #[arg(
        long,
        value_name = "H",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub hysteresis: f64,

    /// The filter publishes clearing messages (--clear-messages): expect one per re-arm.
    #[arg(long)]
    pub clear_messages: bool,

    /// The filter's --alert-min-interval. Needs --event-time: on the filter's arrival clock
    /// which alerts a rate limit lets through cannot be known exactly.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub alert_min_interval: Option<Duration>,

    /// The filter's --summary-window: expect one summary per device and window.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub summary_window: Option<Duration>,

    /// The filter runs with --event-time-field timeCreated: windows and rate limits follow
    /// the times the messages were written (exact expectations). Without it, each device's
    /// summaries are checked as a partition of its readings.
    #[arg(long)]
    pub event_time: bool,

    /// Where clearing messages arrive [default: the alert filter with MQTT 5 (the
    /// MessageType property tells), cleared/# with MQTT 3.1.1].
    #[arg(long, value_name = "FILTER")]
    pub clear_filter: Option<String>,

    /// Where window summaries arrive [default: summaries/#].
    #[arg(long, value_name = "FILTER")]
    pub summary_filter: Option<String>,

    /// The filter's --condition: expect an alert for each message it holds for (with the
    /// device's threshold for `threshold`).
    #[arg(long, value_name = "EXPR")]
    pub condition: Option<String>,

    /// The filter's --device-threshold FILTER=VALUE (repeatable): a device takes the value of
    /// the most specific filter matching its topic.
    #[arg(long = "device-threshold", value_name = "FILTER=VALUE")]
    pub device_thresholds: Vec<String>,

    /// The filter's --thresholds-file: a JSON object of topic filters to numbers
    /// (--device-threshold entries override it).
    #[arg(long, value_name = "FILE")]
    pub thresholds_file: Option<std::path::PathBuf>,
}

/// The validated rule flags.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSetup {
    pub spec: RuleSpec,
    /// Clearing messages arrive here (None: on the alert subscription).
    pub clear_filter: Option<String>,
    /// Summaries arrive here (None: no summaries expected).
    pub summary_filter: Option<String>,
    /// The filter's condition (None: `machine.temperature > threshold`).
    pub condition: Option<Arc<Expr>>,
    /// The filter's per-device thresholds.
    pub thresholds: Vec<(String, f64)>,
}

impl RuleArgs {
    pub fn validate(
        &self,
        version: Version,
        target: &Target,
        alert_filter: &str,
    ) -> Result<RuleSetup, ConfigError> {
        if !(self.hysteresis.is_finite() && self.hysteresis >= 0.0) {
            return Err(invalid("--hysteresis", "a number ≥ 0", self.hysteresis));
        }
        let min_interval = self.alert_min_interval.unwrap_or_default();
        let window = self.summary_window.unwrap_or_default();
        if !window.is_zero() && window < Duration::from_secs(1) {
            return Err(invalid(
                "--summary-window",
                "at least 1s (as the filter's)",
                humantime::format_duration(window),
            ));
        }
        if !min_interval.is_zero() && !self.event_time {
            return Err(ConfigError::Rules(
                "--alert-min-interval needs --event-time: on the filter's arrival clock which alerts a rate limit lets through cannot be known (run the filter with --event-time-field timeCreated)",
            ));
        }
        let edge = self.alert_mode == Mode::Edge;
        if self.clear_messages && !edge {
            return Err(ConfigError::Rules(
                "--clear-messages needs --alert-mode edge (only edge mode clears)",
            ));
        }
        let spec = RuleSpec::new(
            edge,
            self.hysteresis,
            self.clear_messages,
            min_interval,
            window,
            self.event_time,
        );
        if spec.any() && matches!(target, Target::Azure(_)) {
            return Err(ConfigError::NotAzure {
                flag: "--alert-mode edge, --alert-min-interval and --summary-window",
                why: "every simulated device reaches the module as the one sensor module (its $.cdid/$.cmid), so per-device rules see one device",
            });
        }
        let clear_filter = match (&self.clear_filter, version) {
            _ if !spec.clears => None,
            (Some(f), _) if f == alert_filter => None,
            (Some(f), _) => Some(f.clone()),
            (None, Version::V5) => None,
            (None, Version::V4) => Some("cleared/#".to_string()),
        };
        let summary_filter = spec.summaries().then(|| {
            self.summary_filter
                .clone()
                .unwrap_or_else(|| "summaries/#".to_string())
        });
        for f in [&clear_filter, &summary_filter].into_iter().flatten() {
            if f.is_empty() {
                return Err(invalid(
                    "--clear-filter/--summary-filter",
                    "a topic filter",
                    "''",
                ));
            }
        }
        let condition = match self.condition.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(Arc::new(Expr::parse(c).map_err(|why| {
                ConfigError::Condition(format!("--condition {c:?}: {why}"))
            })?)),
        };
        let mut thresholds = Vec::new();
        if let Some(path) = &self.thresholds_file {
            let bad = |why: String| ConfigError::ThresholdsFile {
                path: path.display().to_string(),
                why,
            };
            let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let map: std::collections::BTreeMap<String, f64> =
                serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
            thresholds.extend(map);
        }
        for entry in &self.device_thresholds {
            let parsed = entry
                .rsplit_once('=')
                .and_then(|(k, v)| Some((k.trim().to_string(), v.trim().parse::<f64>().ok()?)));
            match parsed {
                Some((k, v)) if v.is_finite() && !k.is_empty() => {
                    thresholds.retain(|(f, _)| *f != k);
                    thresholds.push((k, v));
                }
                _ => return Err(invalid("--device-threshold", "FILTER=VALUE", entry)),
            }
        }
        if !thresholds.is_empty() && matches!(target, Target::Azure(_)) {
            return Err(ConfigError::NotAzure {
                flag: "--device-threshold",
                why: "every simulated device reaches the module as the one sensor module (its $.cdid/$.cmid), so per-device thresholds see one device",
            });
        }
        Ok(RuleSetup {
            spec,
            clear_filter,
            summary_filter,
            condition,
            thresholds,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::Args;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<crate::cli::Config, String> {
        let mut v = vec!["loadgen", "--broker", "mqtt://127.0.0.1:1883"];
        v.extend_from_slice(args);
        Args::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn rules_are_off_by_default() {
        let c = parse(&[]).unwrap();
        assert!(!c.rules.spec.any());
        assert_eq!((c.rules.clear_filter, c.rules.summary_filter), (None, None));
        assert_eq!(c.rules.spec.describe(), "every");
    }

    #[test]
    fn rule_flags_and_where_their_outputs_arrive() {
        let c = parse(&[
            "--alert-mode",
            "edge",
            "--clear-messages",
            "--summary-window",
            "10s",
        ])
        .unwrap();
        let s = c.rules.spec;
        assert!(s.edge && s.clears && s.summaries());
        assert_eq!(s.window_us, 10_000_000);
        // MQTT 3.1.1: clears on their own topic; summaries on summaries/#.
        assert_eq!(c.rules.clear_filter.as_deref(), Some("cleared/#"));
        assert_eq!(c.rules.summary_filter.as_deref(), Some("summaries/#"));
        // MQTT 5: clears on the alert subscription, told apart by MessageType.
        let c = parse(&[
            "--mqtt-version",
            "5",
            "--alert-mode",
            "edge",
            "--clear-messages",
        ])
        .unwrap();
        assert_eq!(c.rules.clear_filter, None);
        let c = parse(&[
            "--alert-min-interval",
            "1s",
            "--event-time",
            "--summary-window",
            "2s",
            "--summary-filter",
            "s/#",
        ])
        .unwrap();
        assert_eq!(c.rules.spec.min_interval_us, 1_000_000);
        assert_eq!(c.rules.summary_filter.as_deref(), Some("s/#"));
    }

    #[test]
    fn rule_mistakes() {
        let err = |a: &[&str]| parse(a).unwrap_err();
        assert!(err(&["--alert-min-interval", "1s"]).contains("needs --event-time"));
        assert!(err(&["--clear-messages"]).contains("needs --alert-mode edge"));
        assert!(err(&["--hysteresis", "-1"]).contains("--hysteresis"));
        assert!(err(&["--summary-window", "500ms"]).contains("--summary-window"));
        assert!(err(&["--target", "azure", "--alert-mode", "edge"]).contains("--target azure"));
    }
}
