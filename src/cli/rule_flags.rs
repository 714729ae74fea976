//! The alert-rule flags of `edgefilter run` (flattened into [`RunArgs`](super::RunArgs)), and
//! their validation into the rule settings the flow starts with — part of the command line
//! (`config`), the same checks the twin applies to its keys (`pipeline::rules`). Every rule is
//! off by default.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{parse_duration, ConfigError};
use crate::mqtt::topic::{self, Template};
use crate::pipeline::condition::Condition;
use crate::pipeline::rules::{AlertMode, DeviceThresholds, RuleSettings, DEFAULT_IDLE};
use crate::pipeline::verdict::FieldPath;
use crate::settings::{RuleConfig, SUMMARY_OUTPUT, SUMMARY_TOPIC};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Every reading above the threshold alerts (the seed's behaviour).
    Every,
    /// A device alerts once when it rises above the threshold, again only after a reading at
    /// or below threshold − hysteresis.
    Edge,
}

/// Alert rules: edge-triggered alerts, rate limits, windowed summaries (all off by default;
/// the twin changes them live, see README "Alert rules").
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// `every` reading above the threshold alerts, or only the rising `edge` of each device.
    #[arg(
        long,
        env = "EDGEFILTER_ALERT_MODE",
        value_enum,
        default_value = "every"
    )]
    pub alert_mode: ModeArg,

    /// Edge mode: a device re-arms when a reading falls to or below threshold − hysteresis.
    #[arg(
        long,
        env = "EDGEFILTER_HYSTERESIS",
        default_value = "0",
        allow_negative_numbers = true
    )]
    pub hysteresis: f64,

    /// Edge mode: publish a clearing message (`MessageType=AlertCleared`, the re-arming
    /// reading's body) when a device re-arms.
    #[arg(
        long,
        env = "EDGEFILTER_CLEAR_MESSAGES",
        value_name = "BOOL",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub clear_messages: bool,

    /// Where clearing messages go; `{topic}` is the input topic. Default: the alert topic
    /// under MQTT 5 (the `MessageType` property tells them apart), `cleared/{topic}` under
    /// MQTT 3.1.1 (no properties: the topic tells).
    #[arg(long, env = "EDGEFILTER_CLEAR_TOPIC")]
    pub clear_topic: Option<String>,

    /// At most one alert per device per interval (0 = no limit); the others are counted in
    /// `edgefilter_alerts_suppressed_total{rule="rate_limit"}`.
    #[arg(long, env = "EDGEFILTER_ALERT_MIN_INTERVAL", default_value = "0", value_parser = parse_duration)]
    pub alert_min_interval: Duration,

    /// Tumbling window per device whose summary (count, min, max, mean, last, alerts) is
    /// published when it closes (0 = no summaries; else at least 1s).
    #[arg(long, env = "EDGEFILTER_SUMMARY_WINDOW", default_value = "0", value_parser = parse_duration)]
    pub summary_window: Duration,

    /// Where window summaries go; `{topic}` is the device's input topic.
    #[arg(long, env = "EDGEFILTER_SUMMARY_TOPIC", default_value = SUMMARY_TOPIC)]
    pub summary_topic: String,

    /// IoT Edge module output the window summaries are sent to.
    #[arg(long, env = "EDGEFILTER_SUMMARY_OUTPUT", default_value = SUMMARY_OUTPUT)]
    pub summary_output: String,

    /// Place readings in windows and rate limits by the time they carry at this dotted path
    /// (an RFC 3339 string such as the sensor's `timeCreated`, or Unix seconds) instead of
    /// their arrival time.
    #[arg(long, env = "EDGEFILTER_EVENT_TIME_FIELD")]
    pub event_time_field: Option<String>,

    /// With --event-time-field: how long a window waits for late readings after its end
    /// (at most the window).
    #[arg(long, env = "EDGEFILTER_ALLOWED_LATENESS", default_value = "0", value_parser = parse_duration)]
    pub allowed_lateness: Duration,

    /// A device's rule state (edge, rate limit, window) is dropped after this long without a
    /// reading (kept at least as long as its window and rate limit need it).
    #[arg(long, env = "EDGEFILTER_DEVICE_IDLE", default_value = "1h", value_parser = parse_duration)]
    pub device_idle: Duration,

    /// A device's own threshold, `FILTER=VALUE` with an MQTT topic filter matched against the
    /// device (the input topic; IoT Edge: `device/module`); the most specific filter wins
    /// (repeatable; comma-separated in the variable).
    #[arg(
        long = "device-threshold",
        env = "EDGEFILTER_DEVICE_THRESHOLD",
        value_name = "FILTER=VALUE",
        value_delimiter = ','
    )]
    pub device_thresholds: Vec<String>,

    /// Per-device thresholds from a JSON file holding one object of topic filters to numbers
    /// (the twin's `Thresholds` form); `--device-threshold` entries override it.
    #[arg(long, env = "EDGEFILTER_THRESHOLDS_FILE", value_name = "FILE")]
    pub thresholds_file: Option<std::path::PathBuf>,

    /// Alert when this condition holds instead of when --field exceeds the threshold, e.g.
    /// `machine.temperature > threshold and machine.pressure >= 1.5` (README "Conditions").
    #[arg(long, env = "EDGEFILTER_CONDITION", value_name = "EXPR")]
    pub condition: Option<String>,
}

impl RuleArgs {
    /// The per-device thresholds of `--thresholds-file` and `--device-threshold`.
    fn thresholds(&self) -> Result<DeviceThresholds, ConfigError> {
        let mut map = BTreeMap::new();
        if let Some(path) = &self.thresholds_file {
            let shown = path.display();
            let text = std::fs::read(path)
                .map_err(|e| ConfigError::Rule(format!("--thresholds-file {shown}: {e}")))?;
            let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
                .map_err(|e| {
                    ConfigError::Rule(format!(
                        "--thresholds-file {shown}: not a JSON object of topic filters to numbers: {e}"
                    ))
                })?;
            for (k, v) in doc {
                let v = v.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                    ConfigError::Rule(format!(
                        "--thresholds-file {shown}: {k:?} must be a finite number, got {v}"
                    ))
                })?;
                map.insert(k, v);
            }
        }
        for entry in &self.device_thresholds {
            let bad = |why: &str| {
                ConfigError::Rule(format!(
                    "--device-threshold {entry:?}: {why} (FILTER=VALUE, e.g. telemetry/furnace-1=300)"
                ))
            };
            let (k, v) = entry.rsplit_once('=').ok_or_else(|| bad("no `=`"))?;
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| bad("the value must be a finite number"))?;
            map.insert(k.trim().to_string(), v);
        }
        DeviceThresholds::new(map)
            .map_err(|e| ConfigError::Rule(format!("--device-threshold: {e}")))
    }

    /// Checks the rule flags; `input_filters` must not read back what the rules publish.
    pub fn validate(&self, input_filters: &[String]) -> Result<RuleConfig, ConfigError> {
        let settings = RuleSettings {
            mode: match self.alert_mode {
                ModeArg::Every => AlertMode::Every,
                ModeArg::Edge => AlertMode::Edge,
            },
            hysteresis: self.hysteresis,
            clear: self.clear_messages,
            min_interval: self.alert_min_interval,
            window: self.summary_window,
            lateness: self.allowed_lateness,
            idle: if self.device_idle.is_zero() {
                DEFAULT_IDLE
            } else {
                self.device_idle
            },
            thresholds: Arc::new(self.thresholds()?),
            condition: match self.condition.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(c) => {
                    Some(Arc::new(Condition::parse(c).map_err(|e| {
                        ConfigError::Rule(format!("--condition {c:?}: {e}"))
                    })?))
                }
            },
        };
        if self.device_idle.is_zero() {
            return Err(ConfigError::Rule(
                "--device-idle must be at least 1s, got 0".into(),
            ));
        }
        settings
            .check()
            .map_err(|bad| ConfigError::Rule(format!("{} {}", bad.param.flag(), bad.why)))?;
        let event_time = match self.event_time_field.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(path) => Some(
                FieldPath::parse(path)
                    .map_err(|e| ConfigError::Rule(format!("--event-time-field: {e}")))?,
            ),
        };
        if event_time.is_none() && !self.allowed_lateness.is_zero() {
            return Err(ConfigError::Rule(
                "--allowed-lateness applies only with --event-time-field (arrival times are never late)".into(),
            ));
        }
        let template = |flag: &str, s: &str| {
            let t = Template::parse(s)
                .map_err(|why| ConfigError::Rule(format!("{flag} {s:?}: {why}")))?;
            for filter in input_filters {
                if topic::matches(&t.render(&topic::example_topic(filter)), filter) {
                    return Err(ConfigError::Rule(format!(
                        "{flag} {s:?} would be read back by --input-topic {filter:?} (a loop); choose topics that do not overlap"
                    )));
                }
            }
            Ok(t)
        };
        let clear_topic = match self.clear_topic.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(template("--clear-topic", s)?),
        };
        let summary_topic = template("--summary-topic", &self.summary_topic)?;
        if self.summary_output.is_empty() || self.summary_output.contains(['/', '+', '#']) {
            return Err(ConfigError::Rule(format!(
                "--summary-output {:?} must be a non-empty name without '/', '+' or '#'",
                self.summary_output
            )));
        }
        Ok(RuleConfig {
            settings,
            event_time,
            clear_topic,
            summary_topic,
            summary_output: self.summary_output.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command, ConfigError};
    use crate::pipeline::rules::AlertMode;
    use clap::Parser;
    use std::time::Duration;

    fn validate(extra: &[&str]) -> Result<crate::settings::Settings, ConfigError> {
        let mut argv = vec!["edgefilter", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a.validate(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn rules_are_off_by_default() {
        let r = validate(&[]).unwrap().rules;
        assert_eq!(r.settings, Default::default());
        assert_eq!(r.event_time, None);
        assert_eq!(r.clear_topic, None);
        assert_eq!(
            r.summary_topic.render("telemetry/d"),
            "summaries/telemetry/d"
        );
        assert_eq!(r.summary_output, "summary");
    }

    #[test]
    fn rule_flags_set_the_rules() {
        let r = validate(&[
            "--alert-mode",
            "edge",
            "--hysteresis",
            "2",
            "--clear-messages",
            "--alert-min-interval",
            "1m",
            "--summary-window",
            "10s",
            "--event-time-field",
            "timeCreated",
            "--allowed-lateness",
            "2s",
            "--device-idle",
            "10m",
            "--clear-topic",
            "cleared/{topic}",
        ])
        .unwrap()
        .rules;
        let s = &r.settings;
        assert_eq!(
            (s.mode, s.hysteresis, s.clear),
            (AlertMode::Edge, 2.0, true)
        );
        assert_eq!(s.min_interval, Duration::from_secs(60));
        assert_eq!(
            (s.window, s.lateness),
            (Duration::from_secs(10), Duration::from_secs(2))
        );
        assert_eq!(s.idle, Duration::from_secs(600));
        assert_eq!(r.event_time.unwrap().to_string(), "timeCreated");
        assert!(r.clear_topic.is_some());
        let off = validate(&["--clear-messages=false"]).unwrap().rules;
        assert!(!off.settings.clear);
    }

    #[test]
    fn rule_mistakes_are_one_line_naming_the_flag() {
        let e = |a: &[&str]| validate(a).unwrap_err().to_string();
        assert!(e(&["--hysteresis", "-1"]).starts_with("--hysteresis must be a number ≥ 0"));
        assert!(e(&["--summary-window", "500ms"])
            .starts_with("--summary-window must be 0 (off) or at least 1 s"));
        assert!(e(&[
            "--summary-window",
            "10s",
            "--event-time-field",
            "t",
            "--allowed-lateness",
            "11s"
        ])
        .starts_with("--allowed-lateness must not exceed"));
        assert!(e(&["--allowed-lateness", "1s"]).contains("only with --event-time-field"));
        assert!(e(&["--device-idle", "0"]).starts_with("--device-idle must be at least 1s"));
        assert!(e(&["--event-time-field", "a..b"]).starts_with("--event-time-field"));
        assert!(
            e(&["--summary-topic", "telemetry/s/{topic}"]).contains("read back by --input-topic")
        );
        assert!(e(&["--clear-topic", "x/+"]).starts_with("--clear-topic"));
        assert!(e(&["--summary-output", "a/b"]).starts_with("--summary-output"));
        assert!(e(&["--alert-min-interval", "9999h"])
            .starts_with("--alert-min-interval must be at most a week"));
    }
}
