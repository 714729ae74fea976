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
//! | `Thresholds` | object: MQTT topic filter → finite number, or `null` to remove the entry; `null` for the whole key empties the map | `{}` |
//! | `Condition` | string in the condition grammar (`pipeline::condition`); `""` or `null` removes it | none |
//!
//! Durations are numbers of seconds (fractions allowed, at most a week), in the desired and
//! in the reported document alike, so a reported value compares equal to the desired one.
//!
//! `Thresholds` merges as the IoT Hub twin merges desired properties: a patch names the
//! entries it sets or removes, the others stay. A restored report replaces the map whole (it
//! is the whole map). Under IoT Edge the reported document carries `ThresholdEntries` (the
//! number of entries in force) instead of the map: edgeHub refuses reported names with `#`,
//! `.` or `$` and values over 4 KiB, which a map of topic filters would break.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{kind, Refusal};
use crate::pipeline::condition::Condition;
use crate::pipeline::rules::thresholds::{check_filter, DeviceThresholds};
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
    pub thresholds: Option<ThresholdsPatch>,
    /// `Some(None)`: remove the condition.
    pub condition: Option<Option<Arc<Condition>>>,
}

/// What a document does to the per-device thresholds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThresholdsPatch {
    /// Start from an empty map (`"Thresholds": null`, or a restored report).
    pub replace: bool,
    /// Entries to set (`Some`) or remove (`None`).
    pub entries: Vec<(String, Option<f64>)>,
}

impl ThresholdsPatch {
    /// `base` with the patch applied.
    pub fn apply_to(&self, base: &DeviceThresholds) -> Result<DeviceThresholds, Refusal> {
        let mut map = if self.replace {
            BTreeMap::new()
        } else {
            base.entries().clone()
        };
        for (k, v) in &self.entries {
            match v {
                Some(v) => map.insert(k.clone(), *v),
                None => map.remove(k),
            };
        }
        DeviceThresholds::new(map).map_err(|e| Refusal::Thresholds(e.to_string()))
    }
}

/// The `Thresholds` value of a desired document.
fn thresholds_patch(v: &Value) -> Result<ThresholdsPatch, Refusal> {
    let map = match v {
        Value::Null => {
            return Ok(ThresholdsPatch {
                replace: true,
                entries: Vec::new(),
            })
        }
        Value::Object(map) => map,
        other => {
            return Err(Refusal::Thresholds(format!(
                "must be an object of MQTT topic filters to numbers, or null, got {}",
                kind(other)
            )))
        }
    };
    let mut entries = Vec::with_capacity(map.len());
    for (k, v) in map {
        check_filter(k).map_err(|e| Refusal::Thresholds(e.to_string()))?;
        let v = match v {
            Value::Null => None,
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.is_finite() => Some(f),
                _ => return Err(bad_entry(k, v)),
            },
            _ => return Err(bad_entry(k, v)),
        };
        entries.push((k.clone(), v));
    }
    Ok(ThresholdsPatch {
        replace: false,
        entries,
    })
}

fn bad_entry(k: &str, v: &Value) -> Refusal {
    Refusal::Thresholds(format!(
        "{k:?} must be a finite number (or null to remove it), got {}",
        kind(v)
    ))
}

/// The `Condition` value of a desired document (`None`: no condition).
pub fn condition_value(v: &Value) -> Result<Option<Arc<Condition>>, Refusal> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Condition::parse(s)
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| Refusal::Condition(e.to_string())),
        other => Err(Refusal::BadRule {
            key: "Condition",
            what: "a string (or null)",
            got: kind(other),
        }),
    }
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
                Param::Thresholds => p.thresholds = Some(thresholds_patch(v)?),
                Param::Condition => p.condition = Some(condition_value(v)?),
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

    /// `base` with this patch's keys applied (the merged map may be refused: too large).
    pub fn apply_to(&self, base: &RuleSettings) -> Result<RuleSettings, Refusal> {
        Ok(RuleSettings {
            mode: self.mode.unwrap_or(base.mode),
            hysteresis: self.hysteresis.unwrap_or(base.hysteresis),
            clear: self.clear.unwrap_or(base.clear),
            min_interval: self.min_interval.unwrap_or(base.min_interval),
            window: self.window.unwrap_or(base.window),
            lateness: self.lateness.unwrap_or(base.lateness),
            idle: self.idle.unwrap_or(base.idle),
            thresholds: match &self.thresholds {
                Some(t) => Arc::new(t.apply_to(&base.thresholds)?),
                None => base.thresholds.clone(),
            },
            condition: match &self.condition {
                Some(c) => c.clone(),
                None => base.condition.clone(),
            },
        })
    }
}

/// A JSON number of seconds as a duration (µs precision, at most [`MAX_DURATION`]).
fn seconds(v: &Value) -> Option<Duration> {
    let s = v.as_f64().filter(|s| s.is_finite() && *s >= 0.0)?;
    let d = Duration::from_micros((s * 1e6).round() as u64);
    (d <= MAX_DURATION).then_some(d)
}

/// How the reported document carries the per-device thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapReport {
    /// `Thresholds`: the whole map (generic MQTT).
    Whole,
    /// `ThresholdEntries`: how many entries (IoT Edge: see the module documentation).
    Count,
}

/// Adds the rules in force to a reported document.
pub fn report(s: &RuleSettings, doc: &mut Map<String, Value>, map: MapReport) {
    let secs = |d: Duration| Value::from(d.as_secs_f64());
    for param in Param::ALL {
        let v = match param {
            Param::Thresholds if map == MapReport::Count => {
                doc.insert("ThresholdEntries".into(), Value::from(s.thresholds.len()));
                continue;
            }
            Param::Thresholds => Value::Object(
                s.thresholds
                    .entries()
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect(),
            ),
            Param::Condition => s
                .condition
                .as_ref()
                .map_or(Value::Null, |c| Value::from(c.source())),
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
    fn thresholds_merge_like_the_iot_hub_twin_and_are_reported() {
        let mut tw = twin();
        tw.handle(
            br#"{"Thresholds":{"telemetry/furnace-1":300,"plant2/+/bearing":80},"$version":2}"#,
        );
        let t = &tw.rules().thresholds;
        assert_eq!(t.get(b"telemetry/furnace-1"), Some(300.0));
        assert_eq!(t.get(b"plant2/l1/bearing"), Some(80.0));
        assert_eq!(
            tw.reported()["Thresholds"],
            serde_json::json!({"telemetry/furnace-1":300.0,"plant2/+/bearing":80.0})
        );
        // A patch names what it changes; null removes an entry, the others stay.
        tw.handle(br#"{"Thresholds":{"telemetry/furnace-1":null,"plant2/#":60},"$version":3}"#);
        assert_eq!(
            tw.reported()["Thresholds"],
            serde_json::json!({"plant2/#":60.0,"plant2/+/bearing":80.0})
        );
        // Under IoT Edge the report counts the entries (edgeHub refuses `#` in names).
        assert_eq!(tw.reported_rules()["ThresholdEntries"], 2);
        assert!(tw.reported_rules().get("Thresholds").is_none());
        tw.handle(br#"{"Thresholds":null}"#);
        assert!(tw.rules().thresholds.is_empty());
        assert_eq!(tw.reported()["Thresholds"], serde_json::json!({}));
    }

    #[test]
    fn a_condition_is_set_reported_and_removed() {
        let mut tw = twin();
        let c = "machine.temperature > threshold and machine.pressure >= 1.5";
        let doc = serde_json::json!({"Condition": c, "$version": 2}).to_string();
        assert!(matches!(tw.handle(doc.as_bytes()), Outcome::Applied { .. }));
        assert_eq!(tw.rules().condition.as_ref().unwrap().source(), c);
        assert_eq!(tw.reported()["Condition"], c);
        assert_eq!(tw.reported_rules()["Condition"], c);
        tw.handle(br#"{"Condition":""}"#);
        assert!(tw.rules().condition.is_none());
        assert_eq!(tw.reported()["Condition"], serde_json::Value::Null);
    }

    #[test]
    fn a_bad_entry_or_condition_refuses_the_whole_patch() {
        let big: serde_json::Map<String, serde_json::Value> = (0
            ..=crate::pipeline::rules::thresholds::MAX_ENTRIES)
            .map(|i| (format!("d/{i}"), serde_json::Value::from(1)))
            .collect();
        let big = serde_json::json!({"Thresholds": big}).to_string();
        for (doc, why) in [
            (r#"{"TemperatureThreshold":30,"Thresholds":{"a/#/b":1}}"#, "Thresholds: \"a/#/b\" is not an MQTT topic filter"),
            (r#"{"Thresholds":{"a":"hot"}}"#, "Thresholds: \"a\" must be a finite number (or null to remove it), got string \"hot\""),
            (r#"{"Thresholds":[1]}"#, "Thresholds: must be an object of MQTT topic filters to numbers, or null, got an array"),
            (r#"{"TemperatureThreshold":30,"Condition":"a >"}"#, "Condition at column 4: expected a field, a number or `threshold`, found the end"),
            (r#"{"Condition":5}"#, "Condition must be a string (or null), got number 5"),
            (big.as_str(), "Thresholds: at most 100000 entries, got 100002"),
        ] {
            let mut tw = twin();
            tw.handle(br#"{"Thresholds":{"x":1},"Condition":"a > 1","$version":2}"#);
            let before = tw.rules().clone();
            assert!(matches!(tw.handle(doc.as_bytes()), Outcome::Refused(_)), "{doc:.80}");
            assert!(tw.status().starts_with(why), "{} vs {why}", tw.status());
            assert_eq!(tw.rules(), &before);
            assert_eq!((tw.threshold(), tw.version()), (25.0, Some(2)));
        }
    }

    #[test]
    fn a_restored_report_replaces_the_map() {
        let mut before = twin();
        before.handle(br#"{"TemperatureThreshold":30,"Thresholds":{"a":1,"b":2},"Condition":"x > threshold","$version":4}"#);
        let serde_json::Value::Object(report) = before.reported() else {
            panic!("an object")
        };
        let mut after = Twin::new(
            25.0,
            RuleSettings {
                thresholds: std::sync::Arc::new(
                    crate::pipeline::rules::DeviceThresholds::new([("c".to_string(), 3.0)].into())
                        .unwrap(),
                ),
                ..RuleSettings::default()
            },
        );
        assert!(after.restore(&report, "$version").is_some());
        assert_eq!(after.rules(), before.rules());
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
