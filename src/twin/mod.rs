//! The twin: desired-property patches in, the threshold (and the alert rules, [`rule_keys`]) the
//! verdicts use, reported properties out. It sits beside the data flow — the connection hands
//! it the bodies that arrive on the twin topic, it validates them into a typed [`Patch`], and
//! only then swaps the threshold and the rules (all or nothing).
//!
//! - [`Threshold`]: the `f64` the workers compare with, stored as bits in an `AtomicU64`
//!   (readers never lock; a swap is a single store, so no one sees a torn value).
//! - [`Twin`]: the pure state machine — desired document → [`Outcome`] (applied, refused,
//!   stale), and the reported document with the threshold and the rules in force, the last
//!   applied `$version` and the status of the last patch.

pub mod rule_keys;

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use crate::pipeline::rules::RuleSettings;
use rule_keys::MapReport;
pub use rule_keys::RulePatch;

/// The threshold in force, shared lock-free between the twin and the pipeline.
#[derive(Debug)]
pub struct Threshold(AtomicU64);

impl Threshold {
    pub fn new(value: f64) -> Self {
        Threshold(AtomicU64::new(value.to_bits()))
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Acquire))
    }

    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Release);
    }
}

/// The desired property this module reads.
pub const THRESHOLD_KEY: &str = "TemperatureThreshold";

/// A desired document after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// `$version` of the desired document, when it carries one.
    pub version: Option<u64>,
    /// The new threshold, when the document sets one.
    pub threshold: Option<f64>,
    /// The rule keys the document sets.
    pub rules: RulePatch,
}

/// Why a desired document was refused (reported as the `status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("desired properties are not JSON: {0}")]
    NotJson(String),
    #[error("desired properties must be a JSON object")]
    NotObject,
    #[error("TemperatureThreshold must be a finite number, got {0}")]
    BadThreshold(String),
    #[error("$version must be a non-negative integer, got {0}")]
    BadVersion(String),
    #[error("{key} must be {what}, got {got}")]
    BadRule {
        key: &'static str,
        what: &'static str,
        got: String,
    },
    /// The rules the patch would put in force do not fit together.
    #[error("{key} {why}")]
    Rules { key: &'static str, why: String },
    /// A per-device threshold entry (or the map) is not valid.
    #[error("Thresholds: {0}")]
    Thresholds(String),
    /// The condition does not parse: where and what was expected.
    #[error("Condition {0}")]
    Condition(String),
}

/// What happened to one desired document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Validated and in force; `changed` when the threshold moved.
    Applied { threshold: f64, changed: bool },
    /// Refused; the old threshold stays.
    Refused(Refusal),
    /// `$version` older than the one in force: ignored.
    Stale { version: u64, current: u64 },
}

impl Outcome {
    /// The metric label of `edgefilter_twin_updates_total{result}`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Refused(_) => "refused",
            Outcome::Stale { .. } => "stale",
        }
    }
}

pub(crate) fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Validates a desired document (the full desired section or a patch).
pub fn parse_patch(doc: &[u8]) -> Result<Patch, Refusal> {
    let value: Value = serde_json::from_slice(doc).map_err(|e| Refusal::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(Refusal::NotObject);
    };
    patch_from_map(&map)
}

/// Validates an already parsed desired object (Azure's full-twin `desired` section).
pub fn patch_from_map(map: &Map<String, Value>) -> Result<Patch, Refusal> {
    let version = match map.get("$version") {
        None => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => return Err(Refusal::BadVersion(kind(other))),
    };
    let threshold = match map.get(THRESHOLD_KEY) {
        None => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Some(f),
            _ => return Err(Refusal::BadThreshold(kind(&Value::Number(n.clone())))),
        },
        Some(other) => return Err(Refusal::BadThreshold(kind(other))),
    };
    let rules = RulePatch::from_map(map)?;
    Ok(Patch {
        version,
        threshold,
        rules,
    })
}

/// Where the settings in force came from (reported as `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The command line (or configuration file): no twin document applied yet.
    Default,
    /// The command line's, while the twin was asked for and has not answered yet (IoT Edge).
    Pending,
    /// A desired document (patch) applied by this run.
    Desired,
    /// The reported state of an earlier run (its desired document is missing, invalid, or
    /// not newer).
    Restored,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Pending => "pending",
            Source::Desired => "desired",
            Source::Restored => "restored",
        }
    }
}

/// The status reported while the twin has not answered.
pub const PENDING_STATUS: &str =
    "waiting for the twin: the threshold in force is the command line's";

/// The twin's state: what is in force and how the last patch went.
#[derive(Debug, Clone)]
pub struct Twin {
    threshold: f64,
    rules: RuleSettings,
    version: Option<u64>,
    status: String,
    applied: u64,
    source: Source,
}

impl Twin {
    pub fn new(threshold: f64, rules: RuleSettings) -> Self {
        Twin {
            threshold,
            rules,
            version: None,
            status: "ok".into(),
            applied: 0,
            source: Source::Default,
        }
    }

    /// The twin was asked for (IoT Edge's GET): until a desired document is applied, the
    /// report says the settings are not the twin's yet.
    pub fn await_twin(&mut self) {
        if self.source == Source::Default {
            self.source = Source::Pending;
            self.status = PENDING_STATUS.into();
        }
    }

    /// Where the settings in force came from.
    pub fn source(&self) -> Source {
        self.source
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The alert rules in force.
    pub fn rules(&self) -> &RuleSettings {
        &self.rules
    }

    /// `$version` of the last applied desired document.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    pub fn status(&self) -> &str {
        &self.status
    }

    /// Validates, then applies a desired document; the caller stores the new threshold in the
    /// shared [`Threshold`] when the outcome is `Applied` and publishes [`Twin::reported`].
    pub fn handle(&mut self, doc: &[u8]) -> Outcome {
        match parse_patch(doc) {
            Ok(patch) => self.apply(patch),
            Err(refusal) => self.refuse(refusal),
        }
    }

    /// Applies a validated patch (or refuses it as stale).
    pub fn apply(&mut self, patch: Patch) -> Outcome {
        if let (Some(v), Some(current)) = (patch.version, self.version) {
            if v < current {
                return Outcome::Stale {
                    version: v,
                    current,
                };
            }
        }
        let rules = match patch.rules.apply_to(&self.rules) {
            Ok(rules) => rules,
            Err(refusal) => return self.refuse(refusal),
        };
        if let Err(bad) = rules.check() {
            return self.refuse(Refusal::Rules {
                key: bad.param.twin_key(),
                why: bad.why,
            });
        }
        self.rules = rules;
        let before = self.threshold;
        if let Some(t) = patch.threshold {
            self.threshold = t;
        }
        if patch.version.is_some() {
            self.version = patch.version;
        }
        self.status = "ok".into();
        self.applied += 1;
        self.source = Source::Desired;
        Outcome::Applied {
            threshold: self.threshold,
            changed: before.to_bits() != self.threshold.to_bits(),
        }
    }

    /// Restores the state an earlier run reported (the retained reported document, or the
    /// reported section of IoT Edge's full twin; its desired version under `version_key`),
    /// when it is newer than what is in force: a restart whose desired document is missing or
    /// invalid goes on with the last applied settings, not the command line's. A reported
    /// document that does not validate is ignored (`None`), as is an older one.
    pub fn restore(&mut self, reported: &Map<String, Value>, version_key: &str) -> Option<Outcome> {
        let version = reported.get(version_key).and_then(Value::as_u64)?;
        if self.version.is_some_and(|current| version <= current) {
            return None;
        }
        let mut settings = reported.clone();
        for key in ["$version", "$metadata", version_key, "status", "source"] {
            settings.remove(key);
        }
        let mut patch = patch_from_map(&settings).ok()?;
        patch.threshold?;
        if let Some(t) = patch.rules.thresholds.as_mut() {
            // The report holds the whole map in force.
            t.replace = true;
        }
        patch.version = Some(version);
        let outcome = self.apply(patch);
        self.source = Source::Restored;
        Some(outcome)
    }

    /// Records a refusal: the threshold stays, the status says why.
    pub fn refuse(&mut self, refusal: Refusal) -> Outcome {
        self.status = refusal.to_string();
        Outcome::Refused(refusal)
    }

    /// The reported properties: `{"TemperatureThreshold":…,"$version":…,"status":…,
    /// "source":"default"|"pending"|"desired"|"restored"}` and the rules in force
    /// (`"AlertMode":"every",…`, see [`rule_keys`]). (`$version` is null until a versioned desired
    /// document was applied; `source` says whether the settings come from the command line,
    /// the command line while the twin has not answered, a desired document, or an earlier
    /// run's report.)
    pub fn reported(&self) -> Value {
        let mut doc = Map::new();
        doc.insert(THRESHOLD_KEY.into(), Value::from(self.threshold));
        doc.insert("$version".into(), Value::from(self.version));
        doc.insert("status".into(), Value::from(self.status.clone()));
        doc.insert("source".into(), Value::from(self.source.as_str()));
        rule_keys::report(&self.rules, &mut doc, MapReport::Whole);
        Value::Object(doc)
    }

    /// The rules in force as IoT Edge's reported properties (without the threshold and the
    /// version; the per-device thresholds as their count, see [`rule_keys`]).
    pub fn reported_rules(&self) -> Map<String, Value> {
        let mut doc = Map::new();
        rule_keys::report(&self.rules, &mut doc, MapReport::Count);
        doc
    }

    pub fn reported_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.reported()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(doc: &str) -> Map<String, Value> {
        serde_json::from_str(doc).unwrap()
    }

    #[test]
    fn an_earlier_runs_report_is_restored_when_newer() {
        let mut t = Twin::new(25.0, RuleSettings::default());
        // The desired document is invalid: the threshold stays the command line's...
        t.handle(br#"{"TemperatureThreshold":"hot","$version":7}"#);
        assert_eq!((t.threshold(), t.source()), (25.0, Source::Default));
        // ...until the retained report of the run that applied version 6 is read.
        let restored = t.restore(
            &map(r#"{"TemperatureThreshold":40,"$version":6,"status":"ok","source":"desired"}"#),
            "$version",
        );
        assert!(matches!(restored, Some(Outcome::Applied { threshold, .. }) if threshold == 40.0));
        assert_eq!((t.version(), t.source()), (Some(6), Source::Restored));
        assert_eq!(t.reported()["source"], "restored");
        // An older or equal report changes nothing; a newer desired document applies.
        assert!(t
            .restore(
                &map(r#"{"TemperatureThreshold":1,"$version":6}"#),
                "$version"
            )
            .is_none());
        t.handle(br#"{"TemperatureThreshold":45,"$version":8}"#);
        assert_eq!((t.threshold(), t.source()), (45.0, Source::Desired));
        assert!(t
            .restore(
                &map(r#"{"TemperatureThreshold":1,"$version":7}"#),
                "$version"
            )
            .is_none());
    }

    #[test]
    fn a_restored_report_brings_back_the_rules_too() {
        // The run before applied edge mode and summaries; its full report, read back after a
        // restart whose desired document is gone, puts the same settings in force.
        let mut before = Twin::new(25.0, RuleSettings::default());
        before.handle(br#"{"TemperatureThreshold":30,"AlertMode":"edge","Hysteresis":2,"SummaryWindow":10,"$version":4}"#);
        let Value::Object(report) = before.reported() else {
            panic!("the report is an object")
        };
        let mut after = Twin::new(25.0, RuleSettings::default());
        assert!(after.restore(&report, "$version").is_some());
        assert_eq!(after.source(), Source::Restored);
        assert_eq!(after.reported_rules(), before.reported_rules());
        assert_eq!((after.threshold(), after.version()), (30.0, Some(4)));
    }

    #[test]
    fn unusable_reports_are_ignored() {
        let mut t = Twin::new(25.0, RuleSettings::default());
        for doc in [
            r#"{"TemperatureThreshold":40}"#,
            r#"{"TemperatureThreshold":"x","$version":3}"#,
            r#"{"$version":3,"status":"ok"}"#,
        ] {
            assert!(t.restore(&map(doc), "$version").is_none(), "{doc}");
        }
        assert_eq!((t.threshold(), t.source()), (25.0, Source::Default));
        // IoT Edge reports the version as desiredVersion.
        assert!(t
            .restore(
                &map(r#"{"TemperatureThreshold":30,"desiredVersion":2}"#),
                "desiredVersion"
            )
            .is_some());
        assert_eq!(t.threshold(), 30.0);
    }

    #[test]
    fn threshold_swaps_whole_values() {
        let t = Threshold::new(25.0);
        assert_eq!(t.get(), 25.0);
        t.set(-0.5);
        assert_eq!(t.get(), -0.5);
    }

    #[test]
    fn a_valid_patch_changes_the_threshold_and_version() {
        let mut tw = Twin::new(25.0, RuleSettings::default());
        assert_eq!(
            tw.handle(br#"{"TemperatureThreshold": 30, "$version": 4}"#),
            Outcome::Applied {
                threshold: 30.0,
                changed: true
            }
        );
        assert_eq!(tw.version(), Some(4));
        let r = tw.reported();
        assert_eq!(r["TemperatureThreshold"], 30.0);
        assert_eq!(r["$version"], 4);
        assert_eq!(r["status"], "ok");
    }

    #[test]
    fn invalid_thresholds_are_refused_and_the_old_one_stays() {
        for doc in [
            &br#"{"TemperatureThreshold": "30", "$version": 5}"#[..],
            br#"{"TemperatureThreshold": null}"#,
            br#"{"TemperatureThreshold": true}"#,
            br#"{"TemperatureThreshold": NaN}"#,
            br#"{"TemperatureThreshold": 1e400}"#,
            br#"{"TemperatureThreshold": [1]}"#,
            br#"[30]"#,
            b"not json",
            br#"{"TemperatureThreshold": 30, "$version": -1}"#,
        ] {
            let mut tw = Twin::new(25.0, RuleSettings::default());
            tw.handle(br#"{"$version": 2}"#);
            let out = tw.handle(doc);
            assert!(
                matches!(out, Outcome::Refused(_)),
                "{}: {out:?}",
                String::from_utf8_lossy(doc)
            );
            assert_eq!(tw.threshold(), 25.0);
            assert_eq!(
                tw.version(),
                Some(2),
                "a refused patch does not move the version"
            );
            assert_ne!(tw.reported()["status"], "ok");
        }
    }

    #[test]
    fn older_versions_are_ignored_equal_ones_reapplied() {
        let mut tw = Twin::new(25.0, RuleSettings::default());
        tw.handle(br#"{"TemperatureThreshold": 30, "$version": 4}"#);
        assert_eq!(
            tw.handle(br#"{"TemperatureThreshold": 99, "$version": 3}"#),
            Outcome::Stale {
                version: 3,
                current: 4
            }
        );
        assert_eq!(tw.threshold(), 30.0);
        assert_eq!(
            tw.handle(br#"{"TemperatureThreshold": 30, "$version": 4}"#),
            Outcome::Applied {
                threshold: 30.0,
                changed: false
            }
        );
    }

    #[test]
    fn unknown_keys_are_ignored_and_a_good_patch_clears_the_error() {
        let mut tw = Twin::new(25.0, RuleSettings::default());
        tw.handle(br#"{"TemperatureThreshold": "x"}"#);
        assert_ne!(tw.status(), "ok");
        assert_eq!(
            tw.handle(br#"{"Other": {"deep": 1}, "$version": 7}"#),
            Outcome::Applied {
                threshold: 25.0,
                changed: false
            }
        );
        assert_eq!(tw.status(), "ok");
        assert_eq!(tw.version(), Some(7));
    }

    #[test]
    fn the_source_is_pending_until_the_twin_answers() {
        let mut tw = Twin::new(25.0, RuleSettings::default());
        assert_eq!(tw.reported()["source"], "default");
        tw.await_twin();
        assert_eq!(tw.source(), Source::Pending);
        assert_eq!(tw.reported()["status"], PENDING_STATUS);
        // A refused document leaves the command line's threshold: still not the twin's.
        tw.handle(br#"{"TemperatureThreshold": "hot"}"#);
        assert_eq!(tw.source(), Source::Pending);
        tw.handle(br#"{"TemperatureThreshold": 30, "$version": 2}"#);
        assert_eq!((tw.source(), tw.status()), (Source::Desired, "ok"));
        tw.await_twin();
        assert_eq!(
            tw.source(),
            Source::Desired,
            "asking again keeps what the twin said"
        );
    }

    #[test]
    fn unversioned_patches_apply_and_keep_the_version() {
        let mut tw = Twin::new(25.0, RuleSettings::default());
        tw.handle(br#"{"TemperatureThreshold": 26, "$version": 3}"#);
        tw.handle(br#"{"TemperatureThreshold": 27}"#);
        assert_eq!(tw.threshold(), 27.0);
        assert_eq!(tw.version(), Some(3));
    }
}
