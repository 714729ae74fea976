//! The verdict: one payload + the threshold in force → alert, unmatched, or rejected with a
//! reason. This is the core of the hot path (MQTT in → parse → **verdict** → batch → MQTT
//! out): the worker pool (`pipeline::pool`) owns one [`Evaluator`] per worker thread and calls
//! [`Evaluator::evaluate`] for every message, synchronously, with the threshold it just read
//! from the twin's `AtomicU64`.
//!
//! # Semantics
//! The oracle is the seed's Python module, `json.loads(body.decode('utf-8'))` then
//! `"machine" in data and "temperature" in data["machine"] and data["machine"]["temperature"] > T`,
//! as the product contract pins it down (Python's verdicts, minus the two deviations below),
//! generalised to the configured dotted [`FieldPath`]. In order:
//! 1. longer than `max_payload` → [`RejectReason::TooLarge`], before any parsing;
//! 2. not UTF-8 (strict, like Python's decoder: overlongs and encoded surrogates are
//!    invalid) → [`RejectReason::NotUtf8`];
//! 3. not JSON as Python reads it → [`RejectReason::NotJson`]: empty body, UTF-8 BOM, trailing
//!    data, unescaped control characters in strings, bad escapes, … plus the `NaN`,
//!    `Infinity` and `-Infinity` literals, which Python accepts but JSON does not have;
//! 4. top level not an object → [`RejectReason::NotObject`];
//! 5. path absent → [`Verdict::Unmatched`]; so is a path that crosses a non-object
//!    (`"machine": "x"`, `"machine": [...]`): the path is absent;
//! 6. field present but not a number (string, boolean, null, object, array) →
//!    [`RejectReason::NotANumber`];
//! 7. a number → [`Verdict::Alert`] iff strictly greater than the threshold, else
//!    [`Verdict::Unmatched`]. Integers compare exactly with the `f64` threshold, as Python
//!    compares `int` with `float` (`9007199254740993 > 9007199254740992.0`); floats are
//!    parsed correctly rounded, out of range meaning ±inf or ±0 (`1e400` alerts, `-1e400` and
//!    `1e-400` do not); integers have any length, up to Python's 4300-digit limit.
//!
//! Keys match in their decoded form (`"temp\u0065rature"` is `temperature`); with duplicate
//! keys the last one wins, at every level of the path; whitespace (space, tab, CR, LF) is
//! allowed anywhere between tokens.
//!
//! # How
//! The fast path copies the payload into a per-evaluator scratch buffer with
//! [`simd_json::INPUT_PADDING`] bytes of padding and builds a simd-json tape in place
//! ([`simd_json::fill_tape_padded`]), reusing the scratch, the parser's buffers and the tape:
//! no heap allocation per message once warmed up (only a rejection allocates, for its
//! detail text). It then walks the tape along the path, scanning every key of each object
//! and skipping nested values by their node counts, so the last duplicate wins. simd-json
//! validates UTF-8 and the JSON grammar (RFC 8259); whatever it accepts, Python accepts with
//! the same values. That claim is tested: `tests/it/verdict_props.rs` and the fuzz target
//! (`fuzz/`) check that both paths agree on any input, and the two paths were compared with
//! CPython 3.11 on half a million generated and mutated documents while this was written.
//!
//! When simd-json refuses a payload, the slow path (`scan`) decides exactly what Python
//! would: invalid UTF-8 or JSON with the byte offset of the first error, or the verdict for
//! documents that are valid for Python but beyond simd-json: integers wider than 64 bits,
//! exponents outside the `f64` range, lone surrogate escapes such as `"\ud800"` (simd-json
//! refuses them; Python keeps them in the string). [`Evaluator::evaluate_slow`] runs it alone.
//!
//! # Deviations from Python, kept on purpose
//! - `NaN`, `Infinity`, `-Infinity` are rejected as not JSON (they are not JSON, and a
//!   consumer of the alert would choke on them); Python accepts them.
//! - A boolean field is rejected as not a number (a sensor sending `true` is broken, not
//!   hot); Python compares `True` as 1
//!   (`true` would alert against a threshold of 0.5).
//! - Where Python raises an exception — field a string/null/object/array (`TypeError` on
//!   `>`), top level not an object, a path crossing a string or list (`in` is a substring or
//!   membership test there, then indexing fails) — Python drops the message; we give the
//!   same "no alert" as a counted rejection (or `Unmatched` for the crossed path).
//! - Nesting: documents nested deeper than 1000 arrays/objects are not JSON. CPython raises
//!   `RecursionError` around its recursion limit of 1000 (at 996 levels for a top-level call
//!   in 3.11; fewer from deeper call stacks), so the exact cut-off differs by a few levels.
//! - Integer literals of more than 4300 digits are not JSON: CPython ≥ 3.11 (and the 2022
//!   security releases of 3.7–3.10) raises `ValueError` for them; older Pythons accepted them.

mod fields;
pub(crate) mod number;
mod scan;
mod time;
mod value;

use simd_json::{Node, StaticNode, Tape};
use thiserror::Error;

pub use fields::{ConditionReading, Extras};
use scan::Found;
pub(crate) use scan::Kind;
use time::{slow_time, tape_time};

pub use time::parse_rfc3339_us;
pub(crate) use value::FieldValue;

/// Deepest nesting of arrays and objects accepted, on both paths.
pub const MAX_DEPTH: usize = scan::MAX_DEPTH;

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

/// A verdict with what the stateful rules (`pipeline::rules`) read from the same parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub verdict: Verdict,
    /// The field's number as the nearest `f64`, when the verdict was decided by one (alert
    /// or not). The verdict itself compares exactly (see the module documentation).
    pub value: Option<f64>,
    /// The event time at the configured path, µs since the Unix epoch (`time`).
    pub time_us: Option<i64>,
}

impl Reading {
    fn of(verdict: Verdict) -> Reading {
        Reading {
            verdict,
            value: None,
            time_us: None,
        }
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

    /// A path of these keys (each non-empty; a key may hold dots, as a quoted key of a
    /// condition does).
    pub fn from_keys(keys: Vec<String>) -> Result<FieldPath, FieldPathError> {
        if keys.is_empty() || keys.iter().any(String::is_empty) {
            return Err(FieldPathError::Empty(keys.join(".")));
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

/// Per-worker verdict state: the field to read and the parse buffers reused from one message
/// to the next. One per worker thread (it is `Send`, not shared).
pub struct Evaluator {
    field: FieldPath,
    max_payload: usize,
    /// The fast path's parse buffers.
    parser: Parser,
    /// Slow path: the outcome per path level.
    levels: Vec<Found>,
    /// The number of the last [`Found::Number`] (either path).
    value: f64,
    /// A condition's field values for the message being decided, by slot.
    values: Vec<FieldValue>,
    /// A condition's walk: the tape index of the last occurrence of each key of its tree.
    last: Vec<u32>,
}

impl Evaluator {
    pub fn new(field: FieldPath, max_payload: usize) -> Self {
        const TYPICAL: usize = 512;
        Evaluator {
            levels: Vec::with_capacity(field.keys.len()),
            field,
            max_payload,
            parser: Parser {
                scratch: Vec::with_capacity(TYPICAL + simd_json::INPUT_PADDING),
                buffers: simd_json::Buffers::with_max_depth(TYPICAL, MAX_DEPTH),
                tape: Tape(Vec::with_capacity(64)),
            },
            value: 0.0,
            values: Vec::new(),
            last: Vec::new(),
        }
    }

    pub fn field(&self) -> &FieldPath {
        &self.field
    }

    /// Decides one payload against `threshold` (a finite number).
    pub fn evaluate(&mut self, payload: &[u8], threshold: f64) -> Verdict {
        if payload.len() > self.max_payload {
            return self.too_large(payload.len());
        }
        match self.fast(payload, threshold, None) {
            Some(found) => self.verdict(found),
            None => self.slow(payload, threshold),
        }
    }

    /// [`Evaluator::evaluate`], plus what the stateful rules need: the field's number (when
    /// the verdict comes from one) and, with `time` given, the event time the payload holds
    /// there (µs since the Unix epoch; see [`event_time_us`]). One parse for both.
    pub fn evaluate_reading(
        &mut self,
        payload: &[u8],
        threshold: f64,
        time: Option<&FieldPath>,
    ) -> Reading {
        if payload.len() > self.max_payload {
            return Reading::of(self.too_large(payload.len()));
        }
        let mut time_us = None;
        let (found, value) = match self.fast(payload, threshold, time.map(|t| (t, &mut time_us))) {
            Some(found) => (found, self.value),
            None => {
                if let Err(e) = std::str::from_utf8(payload) {
                    let detail = format!("invalid UTF-8 at byte {}", e.valid_up_to());
                    return Reading::of(reject(RejectReason::NotUtf8, detail));
                }
                let mut n = scan::Scanned::default();
                let found = scan::scan(
                    payload,
                    &self.field.keys,
                    threshold,
                    &mut self.levels,
                    &mut n,
                );
                self.value = n.value;
                match found {
                    Ok(found) => {
                        if let Some(t) = time {
                            time_us = slow_time(payload, t);
                        }
                        (found, self.value)
                    }
                    Err(e) => return Reading::of(reject(RejectReason::NotJson, e.to_string())),
                }
            }
        };
        Reading {
            value: matches!(found, Found::Number { .. }).then_some(value),
            verdict: self.verdict(found),
            time_us,
        }
    }

    /// The slow path alone: the same verdict as [`Evaluator::evaluate`] for every input, from
    /// the byte-by-byte scanner instead of simd-json. For tests, fuzzing and benchmarks.
    pub fn evaluate_slow(&mut self, payload: &[u8], threshold: f64) -> Verdict {
        if payload.len() > self.max_payload {
            return self.too_large(payload.len());
        }
        self.slow(payload, threshold)
    }

    /// simd-json tape parse and walk; `None` when simd-json refuses the payload. A number found
    /// is left in `self.value`; with `time`, the event time at its path is written to its slot.
    fn fast(
        &mut self,
        payload: &[u8],
        threshold: f64,
        time: Option<(&FieldPath, &mut Option<i64>)>,
    ) -> Option<Found> {
        let Evaluator {
            field,
            parser,
            value,
            ..
        } = self;
        parser
            .parse(payload, |tape| {
                let found = walk(tape, &field.keys, threshold, value);
                if let (Some(_), Some((path, slot))) = (found, time) {
                    *slot = locate(tape, &path.keys)
                        .flatten()
                        .and_then(|i| tape_time(&tape[i]));
                }
                found
            })
            .flatten()
    }

    fn slow(&mut self, payload: &[u8], threshold: f64) -> Verdict {
        if let Err(e) = std::str::from_utf8(payload) {
            return reject(
                RejectReason::NotUtf8,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            );
        }
        let mut n = scan::Scanned::default();
        let found = scan::scan(
            payload,
            &self.field.keys,
            threshold,
            &mut self.levels,
            &mut n,
        );
        self.value = n.value;
        match found {
            Ok(found) => self.verdict(found),
            Err(e) => reject(RejectReason::NotJson, e.to_string()),
        }
    }

    fn too_large(&self, len: usize) -> Verdict {
        reject(
            RejectReason::TooLarge,
            format!("{len} bytes, more than --max-payload {}", self.max_payload),
        )
    }

    fn verdict(&self, found: Found) -> Verdict {
        match found {
            Found::Number { alert: true } => Verdict::Alert,
            Found::Number { alert: false } | Found::Absent => Verdict::Unmatched,
            Found::TopLevel(kind) => reject(
                RejectReason::NotObject,
                format!("top level is {}, not an object", kind.described()),
            ),
            Found::NotNumber(kind) => reject(
                RejectReason::NotANumber,
                format!("{} is {}, not a number", self.field, kind.described()),
            ),
        }
    }
}

/// simd-json's buffers, reused from one message to the next: no heap allocation per message
/// once they have grown to the largest payload seen.
struct Parser {
    /// The payload copy simd-json parses in place (it unescapes strings into it), followed by
    /// `INPUT_PADDING` bytes its SIMD loads may read. Grows to the largest payload seen.
    scratch: Vec<u8>,
    /// simd-json's structural index, string and stack buffers.
    buffers: simd_json::Buffers,
    /// The tape's allocation, kept empty between calls (hence `'static`).
    tape: Tape<'static>,
}

impl Parser {
    /// Builds the tape of `payload` and hands it to `read`; `None` when simd-json refuses the
    /// payload (the slow path decides).
    #[inline]
    fn parse<R>(&mut self, payload: &[u8], read: impl FnOnce(&[Node<'_>]) -> R) -> Option<R> {
        let len = payload.len();
        let padded = len + simd_json::INPUT_PADDING;
        if self.scratch.len() < padded {
            // The padding may hold anything; only growth writes it.
            self.scratch.resize(padded, b' ');
        }
        self.scratch[..len].copy_from_slice(payload);
        let Parser {
            scratch,
            buffers,
            tape,
        } = self;
        let mut filled = std::mem::replace(tape, Tape(Vec::new())).reset();
        let out = simd_json::fill_tape_padded(&mut scratch[..padded], len, buffers, &mut filled)
            .ok()
            .map(|()| read(&filled.0));
        *tape = filled.reset();
        out
    }
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("field", &self.field.to_string())
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

fn reject(reason: RejectReason, detail: String) -> Verdict {
    Verdict::Rejected(Rejection { reason, detail })
}

/// Follows `keys` down a tape simd-json built. At each level the last occurrence of the key
/// wins: every key of the object is looked at, nested values skipped by their node counts.
/// `None` only if the tape is not shaped as simd-json documents it (then the slow path
/// decides).
fn walk(tape: &[Node<'_>], keys: &[String], threshold: f64, value: &mut f64) -> Option<Found> {
    match tape.first()? {
        Node::Object { .. } => {}
        other => return Some(Found::TopLevel(kind(other))),
    }
    let Some(at) = locate(tape, keys)? else {
        return Some(Found::Absent);
    };
    Some(match *tape.get(at)? {
        Node::Static(StaticNode::F64(x)) => {
            *value = x;
            Found::Number {
                alert: x > threshold,
            }
        }
        Node::Static(StaticNode::U64(v)) => {
            *value = v as f64;
            Found::Number {
                alert: number::int_gt(i128::from(v), threshold),
            }
        }
        Node::Static(StaticNode::I64(v)) => {
            *value = v as f64;
            Found::Number {
                alert: number::int_gt(i128::from(v), threshold),
            }
        }
        ref other => match kind(other) {
            // Only with simd-json's `128bit` feature: let the slow path compare it.
            Kind::Number => return None,
            k => Found::NotNumber(k),
        },
    })
}

/// The tape index of the value at `keys` (the last duplicate wins at every level): `Some(None)`
/// when the path is absent or crosses a value that is not an object, `None` when the tape is
/// not shaped as simd-json documents it.
fn locate(tape: &[Node<'_>], keys: &[String]) -> Option<Option<usize>> {
    let mut at = 0;
    for key in keys {
        let Node::Object { len, .. } = *tape.get(at)? else {
            return Some(None);
        };
        let mut i = at + 1;
        let mut value = None;
        for _ in 0..len {
            let Node::String(k) = *tape.get(i)? else {
                return None;
            };
            i += 1;
            if k == key {
                value = Some(i);
            }
            i = skip(tape, i)?;
        }
        match value {
            Some(v) => at = v,
            None => return Some(None),
        }
    }
    Some(Some(at))
}

/// The index after the value at `i`.
fn skip(tape: &[Node<'_>], i: usize) -> Option<usize> {
    Some(match tape.get(i)? {
        Node::Object { count, .. } | Node::Array { count, .. } => i + 1 + count,
        _ => i + 1,
    })
}

fn kind(node: &Node<'_>) -> Kind {
    match node {
        Node::String(_) => Kind::String,
        Node::Object { .. } => Kind::Object,
        Node::Array { .. } => Kind::Array,
        Node::Static(StaticNode::Bool(_)) => Kind::Bool,
        Node::Static(StaticNode::Null) => Kind::Null,
        Node::Static(_) => Kind::Number,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(path: &str) -> Vec<String> {
        FieldPath::parse(path).unwrap().keys
    }

    fn tape_of(json: &str) -> Vec<Node<'static>> {
        let buf: &'static mut [u8] = json.as_bytes().to_vec().leak();
        simd_json::to_tape(buf).unwrap().0
    }

    #[test]
    fn walk_skips_nested_values_by_count() {
        let tape = tape_of(
            r#"{"machine":{"x":{"temperature":99,"y":[1,{"temperature":98}]},"temperature":20},"z":[]}"#,
        );
        assert_eq!(
            walk(&tape, &keys("machine.temperature"), 25.0, &mut 0.0),
            Some(Found::Number { alert: false })
        );
        assert_eq!(
            walk(&tape, &keys("machine.x.y"), 25.0, &mut 0.0),
            Some(Found::NotNumber(Kind::Array))
        );
        assert_eq!(
            walk(&tape, &keys("z.temperature"), 25.0, &mut 0.0),
            Some(Found::Absent)
        );
    }

    #[test]
    fn walk_gives_up_on_a_malformed_tape() {
        // A tape simd-json would never build: the slow path decides instead of a panic.
        let truncated = [Node::Object { len: 2, count: 2 }, Node::String("machine")];
        assert_eq!(
            walk(&truncated, &keys("machine.temperature"), 25.0, &mut 0.0),
            None
        );
        let not_a_key = [
            Node::Object { len: 1, count: 2 },
            Node::Static(StaticNode::Null),
        ];
        assert_eq!(walk(&not_a_key, &keys("machine"), 25.0, &mut 0.0), None);
        assert_eq!(walk(&[], &keys("machine"), 25.0, &mut 0.0), None);
    }

    #[test]
    fn fast_path_refusals_fall_back_to_the_slow_path() {
        let mut ev = Evaluator::new(FieldPath::parse("machine.temperature").unwrap(), 1024);
        for doc in [
            r#"{"machine":{"temperature":1e400}}"#,
            r#"{"machine":{"temperature":18446744073709551616}}"#,
            r#"{"x":"\ud800","machine":{"temperature":26}}"#,
        ] {
            assert_eq!(ev.fast(doc.as_bytes(), 25.0, None), None, "{doc}");
            assert_eq!(ev.evaluate(doc.as_bytes(), 25.0), Verdict::Alert, "{doc}");
        }
        let doc = r#"{"machine":{"temperature":26}}"#;
        assert_eq!(
            ev.fast(doc.as_bytes(), 25.0, None),
            Some(Found::Number { alert: true })
        );
    }
}
