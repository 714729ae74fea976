//! The alert rules in the twin (beside the data flow, like the threshold): the desired keys
//! that change them, validated into a [`RulePatch`] before anything is swapped, and their
//! values in the reported document. The rules themselves are `pipeline::rules`.
//!
//! | key | value | default |
//! |---|---|---|
//! | `AlertMode` | `"every"` or `"edge"` | `"every"` |
//! | `Hysteresis` | number ≥ 0 (edge mode re-arms at threshold − hysteresis) | 0 |
//! | `ClearMessages` | `true` / `false` (edge mode: publish a clearing message on re-arm) | false |
//! | `AlertMinInterval` | seconds ≥ 0, at most one alert per device per interval; 0 = off | 0 |
//! | `SummaryWindow` | seconds, 0 = off or ≥ 1: tumbling summary windows per device | 0 |
//! | `AllowedLateness` | seconds ≥ 0, ≤ the window (event time only) | 0 |
//! | `DeviceIdle` | seconds ≥ 1: a device's state is dropped after this long without input | 3600 |
//!
//! Durations are numbers of seconds (fractions allowed, at most a week), in the desired and
//! in the reported document alike, so a reported value compares equal to the desired one.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{kind, Refusal};
use crate::pipeline::rules::{AlertMode, Param, RuleSettings, MAX_DURATION};

/// The rule keys a desired document sets (each `None` when absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulePatch {
    pub mode: Option<AlertMode>,
    pub hysteresis: Option<f64>,
    pub clear: Option<bool>,
    pub min_interval: Option<Duration>,
    pub window: Option<Duration>,
    pub lateness: Option<Duration>,
    pub idle: Option<Duration>,
}

impl RulePatch {
    /// Reads the rule keys of a desired object (other keys are not its business).
    pub fn from_map(map: &Map<String, Value>) -> Result<RulePatch, Refusal> {
        let mut p = RulePatch::default();
        for param in Param::ALL {
            let Some(v) = map.get(param.twin_key()) else {
                continue;
            };
            let bad = |what: &'static str| Refusal::BadRule {
                key: param.twin_key(),
                what,
                got: kind(v),
            };
            match param {
                Param::Mode => {
                    let mode = v.as_str().and_then(AlertMode::parse);
                    p.mode = Some(mode.ok_or_else(|| bad("\"every\" or \"edge\""))?);
                }
                Param::Hysteresis => {
                    let h = v.as_f64().filter(|h| h.is_finite() && *h >= 0.0);
                    p.hysteresis = Some(h.ok_or_else(|| bad("a number ≥ 0"))?);
                }
                Param::Clear => p.clear = Some(v.as_bool().ok_or_else(|| bad("true or false"))?),
                Param::MinInterval | Param::Window | Param::Lateness | Param::Idle => {
                    let d = seconds(v)
                        .ok_or_else(|| bad("a number of seconds ≥ 0 (at most 604800)"))?;
                    match param {
                        Param::MinInterval => p.min_interval = Some(d),
                        Param::Window => p.window = Some(d),
                        Param::Lateness => p.lateness = Some(d),
                        _ => p.idle = Some(d),
                    }
                }
            }
        }
        Ok(p)
    }

    /// `base` with this patch's keys applied.
    pub fn apply_to(&self, base: &RuleSettings) -> RuleSettings {
        RuleSettings {
            mode: self.mode.unwrap_or(base.mode),
            hysteresis: self.hysteresis.unwrap_or(base.hysteresis),
            clear: self.clear.unwrap_or(base.clear),
            min_interval: self.min_interval.unwrap_or(base.min_interval),
            window: self.window.unwrap_or(base.window),
            lateness: self.lateness.unwrap_or(base.lateness),
            idle: self.idle.unwrap_or(base.idle),
        }
    }
}

/// A JSON number of seconds as a duration (µs precision, at most [`MAX_DURATION`]).
fn seconds(v: &Value) -> Option<Duration> {
    let s = v.as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
    let d = Duration::from_micros((s * 1e6).round() as u64);
    (d <= MAX_DURATION).then_some(d)
}

/// Adds the rules in force to a reported document.
pub fn report(s: &RuleSettings, doc: &mut Map<String, Value>) {
    let secs = |d: Duration| Value::from(d.as_secs_f64());
    for param in Param::ALL {
        let v = match param {
            Param::Mode => Value::from(s.mode.as_str()),
            Param::Hysteresis => Value::from(s.hysteresis),
            Param::Clear => Value::from(s.clear),
            Param::MinInterval => secs(s.min_interval),
            Param::Window => secs(s.window),
            Param::Lateness => secs(s.lateness),
            Param::Idle => secs(s.idle),
        };
        doc.insert(param.twin_key().to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline::rules::{AlertMode, RuleSettings};
    use crate::twin::{Outcome, Twin};
    use std::time::Duration;

    fn twin() -> Twin {
        Twin::new(25.0, RuleSettings::default())
    }

    #[test]
    fn rule_keys_change_the_rules_and_are_reported() {
        let mut tw = twin();
        let out = tw.handle(
            br#"{"AlertMode":"edge","Hysteresis":1.5,"ClearMessages":true,"AlertMinInterval":30,
                 "SummaryWindow":10,"AllowedLateness":0.5,"DeviceIdle":600,"$version":3}"#,
        );
        assert!(matches!(out, Outcome::Applied { threshold, changed: false } if threshold == 25.0));
        let r = tw.rules();
        assert_eq!(r.mode, AlertMode::Edge);
        assert_eq!((r.hysteresis, r.clear), (1.5, true));
        assert_eq!(r.min_interval, Duration::from_secs(30));
        assert_eq!(r.window, Duration::from_secs(10));
        assert_eq!(r.lateness, Duration::from_millis(500));
        assert_eq!(r.idle, Duration::from_secs(600));
        let rep = tw.reported();
        assert_eq!(rep["AlertMode"], "edge");
        assert_eq!(rep["Hysteresis"], 1.5);
        assert_eq!(rep["ClearMessages"], true);
        assert_eq!(rep["AlertMinInterval"], 30.0);
        assert_eq!(rep["SummaryWindow"], 10.0);
        assert_eq!(rep["AllowedLateness"], 0.5);
        assert_eq!(rep["DeviceIdle"], 600.0);
        assert_eq!(rep["$version"], 3);
        // Keys a patch leaves out keep their value.
        tw.handle(br#"{"Hysteresis":0}"#);
        assert_eq!(tw.rules().mode, AlertMode::Edge);
    }

    #[test]
    fn bad_rule_values_are_refused_with_the_reason_and_change_nothing() {
        for (doc, why) in [
            (&br#"{"AlertMode":"sometimes"}"#[..], "AlertMode must be \"every\" or \"edge\", got string \"sometimes\""),
            (br#"{"Hysteresis":-1}"#, "Hysteresis must be a number ≥ 0, got number -1"),
            (br#"{"ClearMessages":"yes"}"#, "ClearMessages must be true or false, got string \"yes\""),
            (br#"{"AlertMinInterval":"30s"}"#, "AlertMinInterval must be a number of seconds ≥ 0 (at most 604800), got string \"30s\""),
            (br#"{"SummaryWindow":1e9}"#, "SummaryWindow must be a number of seconds ≥ 0 (at most 604800), got number 1000000000.0"),
            (br#"{"SummaryWindow":0.5}"#, "SummaryWindow must be 0 (off) or at least 1 s, got 0.5 s"),
            (br#"{"DeviceIdle":0}"#, "DeviceIdle must be at least 1 s, got 0 s"),
            (br#"{"SummaryWindow":5,"AllowedLateness":6}"#, "AllowedLateness must not exceed the summary window (5 s), got 6 s"),
            // A good threshold does not get through with a bad rule: all or nothing.
            (br#"{"TemperatureThreshold":30,"AlertMode":1}"#, "AlertMode must be \"every\" or \"edge\", got number 1"),
        ] {
            let mut tw = twin();
            tw.handle(br#"{"$version":2}"#);
            let out = tw.handle(doc);
            assert!(matches!(out, Outcome::Refused(_)), "{}", String::from_utf8_lossy(doc));
            assert_eq!(tw.status(), why);
            assert_eq!(tw.rules(), &RuleSettings::default());
            assert_eq!((tw.threshold(), tw.version()), (25.0, Some(2)));
        }
    }

    #[test]
    fn stale_rule_patches_are_ignored() {
        let mut tw = twin();
        tw.handle(br#"{"AlertMode":"edge","$version":5}"#);
        assert!(matches!(
            tw.handle(br#"{"AlertMode":"every","$version":4}"#),
            Outcome::Stale { .. }
        ));
        assert_eq!(tw.rules().mode, AlertMode::Edge);
    }
}
