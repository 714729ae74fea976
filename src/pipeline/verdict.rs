//! The verdict: one payload + the threshold in force → alert, unmatched, or rejected with a
//! reason. This is the hot path's core; it is synchronous, allocation-free for accepted input,
//! and its semantics follow the seed's Python module (`json.loads`, then
//! `data["machine"]["temperature"] > T`), as SPEC §5 pins them down.
//!
//! TEMPORARY implementation (serde_json); being replaced by the simd-json tape version.

use thiserror::Error;

/// Why a payload was rejected. Low-cardinality: these are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Longer than `--max-payload`; not parsed.
    TooLarge,
    /// The body is not valid UTF-8.
    NotUtf8,
    /// Not JSON as Python's `json` reads it (BOM, trailing garbage, NaN/Infinity, …).
    NotJson,
    /// Valid JSON whose top level is not an object.
    NotObject,
    /// The field exists but is not a JSON number.
    NotANumber,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::TooLarge,
        RejectReason::NotUtf8,
        RejectReason::NotJson,
        RejectReason::NotObject,
        RejectReason::NotANumber,
    ];

    /// The metric label and dead-letter `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::NotJson => "not_json",
            RejectReason::NotObject => "not_object",
            RejectReason::NotANumber => "not_a_number",
        }
    }
}

/// A rejected payload: the reason (label) and a human explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

/// The outcome for one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verdict {
    Alert,
    #[default]
    Unmatched,
    Rejected(Rejection),
}

impl Verdict {
    pub fn is_alert(&self) -> bool {
        matches!(self, Verdict::Alert)
    }
}

/// A dotted path such as `machine.temperature`: object keys from the top level down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    keys: Vec<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FieldPathError {
    #[error("{0:?}: expected object keys separated by dots, such as machine.temperature")]
    Empty(String),
}

impl FieldPath {
    pub fn parse(s: &str) -> Result<FieldPath, FieldPathError> {
        let keys: Vec<String> = s.split('.').map(str::to_string).collect();
        if s.is_empty() || keys.iter().any(String::is_empty) {
            return Err(FieldPathError::Empty(s.to_string()));
        }
        Ok(FieldPath { keys })
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.keys.join("."))
    }
}

/// Per-worker verdict state: the field to read and reusable parse buffers.
pub struct Evaluator {
    field: FieldPath,
    max_payload: usize,
}

impl Evaluator {
    pub fn new(field: FieldPath, max_payload: usize) -> Self {
        Evaluator { field, max_payload }
    }

    pub fn field(&self) -> &FieldPath {
        &self.field
    }

    /// Decides one payload against `threshold` (a finite number).
    pub fn evaluate(&mut self, payload: &[u8], threshold: f64) -> Verdict {
        let reject = |reason, detail: String| Verdict::Rejected(Rejection { reason, detail });
        if payload.len() > self.max_payload {
            return reject(
                RejectReason::TooLarge,
                format!(
                    "{} bytes, more than --max-payload {}",
                    payload.len(),
                    self.max_payload
                ),
            );
        }
        let text = match std::str::from_utf8(payload) {
            Ok(t) => t,
            Err(e) => return reject(RejectReason::NotUtf8, e.to_string()),
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return reject(RejectReason::NotJson, e.to_string()),
        };
        let mut cur = match &value {
            serde_json::Value::Object(_) => &value,
            _ => return reject(RejectReason::NotObject, "top level is not an object".into()),
        };
        for key in &self.field.keys {
            match cur.get(key) {
                Some(v) => cur = v,
                None => return Verdict::Unmatched,
            }
        }
        match cur.as_f64() {
            Some(x) if x > threshold => Verdict::Alert,
            Some(_) => Verdict::Unmatched,
            None => reject(
                RejectReason::NotANumber,
                format!("{} is not a number", self.field),
            ),
        }
    }
}
