//! Property tests of the hot path's verdict (`pipeline::verdict`) against an independent
//! reference built on `serde_json::Value` (whose maps keep the last duplicate key, like
//! Python's dicts), on generated documents: random objects and nesting, optional `machine` /
//! `temperature` of every kind (duplicated, shuffled), integers, floats and exponents, random
//! whitespace, escaped keys; then the same documents mutated (truncated, a garbage byte
//! inserted, a byte deleted), where the reference says "not JSON" iff serde_json refuses them.
//!
//! serde_json is only a faithful stand-in for Python's `json` on a subset, so generation stays
//! inside it:
//! - nesting stays shallow (serde_json stops at 128 levels, we and Python near 1000);
//! - integers fit 64 bits (serde_json turns wider ones into floats; Python keeps them exact);
//! - floats have at most 15 significant digits and a decimal exponent within ±22, where
//!   serde_json's default float parsing is exact (beyond, it may be off by one ulp; ours and
//!   Python's are correctly rounded), and no exponent reaches the `f64` range limits
//!   (serde_json refuses `1e400`, Python reads +inf);
//! - no lone surrogate escapes (serde_json refuses them, Python accepts them), and in the
//!   mutation property no surrogate pairs either (a mutation can split one into lone halves)
//!   and no inserted `e`/`E` (inserted into a long integer it makes an exponent beyond the
//!   `f64` range).
//!
//! What lies outside this subset (big integers, 1e400, lone surrogates, deep nesting) is
//! covered by `tests/verdict_table.rs`, by the module's unit tests, and here by a property
//! that the simd-json fast path and the byte-by-byte slow path agree on arbitrary input.

use edgefilter::pipeline::verdict::{Evaluator, FieldPath, RejectReason, Verdict};
use proptest::prelude::*;

const MAX_PAYLOAD: usize = 4096;

/// A generated JSON value; keys and strings are raw JSON string contents (may hold escapes).
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(&'static str),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

const KEYS: &[&str] = &[
    "machine",
    "temperature",
    "temp\\u0065rature",
    "m\\u0061chine",
    "x",
    "pressure",
    "a",
    "b",
    "c",
    "",
];
const STRINGS: &[&str] = &[
    "",
    "x",
    "hot",
    "30",
    "temperature",
    "é",
    "😀",
    "\\n\\t\\\"\\\\\\/",
    "\\u0041",
    "\u{7f}",
];
const PAIR: &str = "\\ud83d\\ude00";

fn float_text(neg: bool, mantissa: u64, frac_digits: u32, exp: Option<(bool, i32)>) -> String {
    let scale = 10u64.pow(frac_digits);
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    s.push_str(&(mantissa / scale).to_string());
    if frac_digits > 0 {
        s.push_str(&format!(
            ".{:0width$}",
            mantissa % scale,
            width = frac_digits as usize
        ));
    }
    if let Some((upper, e)) = exp {
        s.push(if upper { 'E' } else { 'e' });
        if e >= 0 && upper {
            s.push('+');
        }
        s.push_str(&e.to_string());
    }
    s
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (-100i64..100).prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        // ≤ 15 significant digits, decimal exponent in [-13, 7]: exact for serde_json too.
        (
            any::<bool>(),
            0u64..1_000_000_000_000_000,
            0u32..=6,
            prop::option::of((any::<bool>(), -7i32..=7))
        )
            .prop_map(|(n, m, f, e)| float_text(n, m, f, e)),
        (
            any::<bool>(),
            0u64..1000,
            0u32..=2,
            prop::option::of((any::<bool>(), -3i32..=3))
        )
            .prop_map(|(n, m, f, e)| float_text(n, m, f, e)),
    ]
}

fn string(pairs: bool) -> impl Strategy<Value = &'static str> {
    let mut pool = STRINGS.to_vec();
    if pairs {
        pool.push(PAIR);
    }
    prop::sample::select(pool)
}

fn value(pairs: bool) -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        number().prop_map(J::Num),
        string(pairs).prop_map(J::Str),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..4).prop_map(J::Obj),
        ]
    })
}

/// A top-level object, usually with `machine` entries (objects with `temperature` entries of
/// any kind, mostly numbers), duplicated and shuffled among other keys; sometimes anything.
fn document(pairs: bool) -> impl Strategy<Value = J> {
    let temperature = prop_oneof![3 => number().prop_map(J::Num), 1 => value(pairs)];
    let machine = prop_oneof![
        4 => (
            prop::collection::vec((prop::sample::select(KEYS), value(pairs)), 0..3),
            prop::collection::vec(temperature, 0..3),
        )
            .prop_map(|(mut entries, temps)| {
                entries.extend(temps.into_iter().map(|t| ("temperature", t)));
                entries
            })
            .prop_shuffle()
            .prop_map(J::Obj),
        1 => value(pairs),
    ];
    let object = (
        prop::collection::vec((prop::sample::select(KEYS), value(pairs)), 0..4),
        prop::collection::vec(machine, 0..3),
    )
        .prop_map(|(mut entries, machines)| {
            entries.extend(machines.into_iter().map(|m| ("machine", m)));
            entries
        })
        .prop_shuffle()
        .prop_map(J::Obj);
    prop_oneof![9 => object, 1 => value(pairs)]
}

const WS: &[&str] = &["", "", " ", "\n", "\t", "\r\n", "  \t"];

/// Renders `j` with whitespace picked cyclically from `ws` between all tokens.
fn render(j: &J, ws: &[usize]) -> Vec<u8> {
    fn go(j: &J, ws: &[usize], k: &mut usize, out: &mut String) {
        let space = |k: &mut usize, out: &mut String| {
            out.push_str(WS[ws[*k % ws.len()] % WS.len()]);
            *k += 1;
        };
        match j {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => {
                out.push('"');
                out.push_str(s);
                out.push('"');
            }
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    space(k, out);
                    go(item, ws, k, out);
                    space(k, out);
                }
                out.push(']');
            }
            J::Obj(entries) => {
                out.push('{');
                space(k, out);
                for (i, (key, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        space(k, out);
                    }
                    out.push('"');
                    out.push_str(key);
                    out.push('"');
                    space(k, out);
                    out.push(':');
                    space(k, out);
                    go(v, ws, k, out);
                    space(k, out);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    let mut k = 0;
    out.push_str(WS[ws[0] % WS.len()]);
    go(j, ws, &mut k, &mut out);
    out.push_str(WS[ws[ws.len() - 1] % WS.len()]);
    out.into_bytes()
}

fn whitespace() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..WS.len(), 1..12)
}

fn threshold() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(25.0),
        (-100i32..100).prop_map(f64::from),
        -1e3..1e3f64,
        -1e20..1e20f64,
        any::<i64>().prop_map(|v| v as f64),
    ]
}

/// What the verdict should be, without the detail text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Alert,
    Unmatched,
    Rejected(RejectReason),
}

fn outcome(v: &Verdict) -> Outcome {
    match v {
        Verdict::Alert => Outcome::Alert,
        Verdict::Unmatched => Outcome::Unmatched,
        Verdict::Rejected(r) => {
            assert!(!r.detail.is_empty(), "a rejection explains itself");
            Outcome::Rejected(r.reason)
        }
    }
}

/// `v > t` exactly, written independently of the crate: rounding is monotone, so the rounded
/// value decides unless it equals `t` (then `t` is integral and compares as an integer).
fn int_gt(v: i128, t: f64) -> bool {
    let r = v as f64;
    if r != t {
        return r > t;
    }
    v > t as i128
}

/// The reference verdict: the seed's Python semantics (with the two deviations of
/// `pipeline::verdict`) on top of `serde_json::Value`.
fn reference(payload: &[u8], path: &str, t: f64) -> Outcome {
    use serde_json::Value;
    if payload.len() > MAX_PAYLOAD {
        return Outcome::Rejected(RejectReason::TooLarge);
    }
    if std::str::from_utf8(payload).is_err() {
        return Outcome::Rejected(RejectReason::NotUtf8);
    }
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        return Outcome::Rejected(RejectReason::NotJson);
    };
    if !value.is_object() {
        return Outcome::Rejected(RejectReason::NotObject);
    }
    let mut cur = &value;
    for key in path.split('.') {
        match cur.as_object().and_then(|o| o.get(key)) {
            Some(v) => cur = v,
            None => return Outcome::Unmatched,
        }
    }
    let Value::Number(n) = cur else {
        return Outcome::Rejected(RejectReason::NotANumber);
    };
    let alert = if let Some(v) = n.as_i64() {
        int_gt(i128::from(v), t)
    } else if let Some(v) = n.as_u64() {
        int_gt(i128::from(v), t)
    } else {
        n.as_f64().is_some_and(|x| x > t)
    };
    if alert {
        Outcome::Alert
    } else {
        Outcome::Unmatched
    }
}

fn mutate(mut doc: Vec<u8>, kind: u8, at: prop::sample::Index, byte: u8) -> Vec<u8> {
    let i = at.index(doc.len() + 1);
    match kind % 3 {
        0 => doc.truncate(i),
        1 => doc.insert(i, byte),
        _ => {
            if i < doc.len() {
                doc.remove(i);
            }
        }
    }
    doc
}

/// Bytes to insert. Without `e`/`E`: inserted into a long integer they make an exponent
/// beyond the f64 range (`1e068306`), which serde_json refuses and Python reads as inf.
fn garbage() -> impl Strategy<Value = u8> {
    prop::sample::select(
        b" \t\n,:{}[]\"\\0123456789-+.tfnuxNI\x00\x01\x1f\x7f\x80\xc3\xe2\xff".to_vec(),
    )
}

/// Any byte, for the fast/slow agreement property (no reference involved).
fn any_garbage() -> impl Strategy<Value = u8> {
    prop_oneof![garbage(), Just(b'e'), Just(b'E'), any::<u8>()]
}

const PATHS: &[&str] = &[
    "machine.temperature",
    "machine",
    "temperature",
    "x",
    "a.b.c",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn generated_documents_match_the_reference(
        doc in document(true), ws in whitespace(), t in threshold()
    ) {
        let payload = render(&doc, &ws);
        let mut ev = Evaluator::new(FieldPath::parse("machine.temperature").unwrap(), MAX_PAYLOAD);
        let expected = reference(&payload, "machine.temperature", t);
        prop_assert_eq!(outcome(&ev.evaluate(&payload, t)), expected,
            "{}", String::from_utf8_lossy(&payload));
    }

    #[test]
    fn other_field_paths_match_the_reference(
        doc in document(true), ws in whitespace(), t in threshold(),
        path in prop::sample::select(PATHS)
    ) {
        let payload = render(&doc, &ws);
        let mut ev = Evaluator::new(FieldPath::parse(path).unwrap(), MAX_PAYLOAD);
        prop_assert_eq!(outcome(&ev.evaluate(&payload, t)), reference(&payload, path, t),
            "{} at {}", String::from_utf8_lossy(&payload), path);
    }

    #[test]
    fn mutated_documents_match_the_reference(
        doc in document(false), ws in whitespace(), t in threshold(),
        kind in any::<u8>(), at in any::<prop::sample::Index>(), byte in garbage()
    ) {
        let payload = mutate(render(&doc, &ws), kind, at, byte);
        let mut ev = Evaluator::new(FieldPath::parse("machine.temperature").unwrap(), MAX_PAYLOAD);
        prop_assert_eq!(outcome(&ev.evaluate(&payload, t)),
            reference(&payload, "machine.temperature", t),
            "{:?}", String::from_utf8_lossy(&payload));
    }

    /// A shared Evaluator gives each message the verdict a fresh one gives: nothing leaks
    /// through the reused scratch, parser buffers, tape or slow-path state.
    #[test]
    fn verdict_is_independent_of_previous_calls(
        messages in prop::collection::vec(
            (document(true), whitespace(), threshold(), any::<bool>(), any::<u8>(),
             any::<prop::sample::Index>(), garbage()),
            1..10)
    ) {
        let field = FieldPath::parse("machine.temperature").unwrap();
        let mut shared = Evaluator::new(field.clone(), MAX_PAYLOAD);
        for (doc, ws, t, broken, kind, at, byte) in messages {
            let mut payload = render(&doc, &ws);
            if broken {
                payload = mutate(payload, kind, at, byte);
            }
            let fresh = Evaluator::new(field.clone(), MAX_PAYLOAD).evaluate(&payload, t);
            prop_assert_eq!(shared.evaluate(&payload, t), fresh);
        }
    }

    /// The simd-json fast path and the byte-by-byte slow path agree on anything, including
    /// what serde_json cannot judge: huge and exotic numbers, lone surrogates, arbitrary bytes.
    #[test]
    fn fast_and_slow_paths_agree(
        doc in document(true), ws in whitespace(), t in threshold(),
        exotic in prop::sample::select(vec![
            "1e400", "-1e400", "1e-400", "18446744073709551616", "-9223372036854775809",
            "123456789012345678901234567890", "0.1e-99999", "\"\\ud800\"", "\"\\udc00x\"",
            "\"\\ud83d\\u0041\"", "NaN", "-Infinity",
        ]),
        splice in any::<prop::sample::Index>(),
        kind in any::<u8>(), at in any::<prop::sample::Index>(), byte in any_garbage(),
        raw in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut ev = Evaluator::new(FieldPath::parse("machine.temperature").unwrap(), MAX_PAYLOAD);
        let payload = render(&doc, &ws);
        // Replace one number or string of the document by an exotic token.
        let text = String::from_utf8(payload.clone()).unwrap();
        let starts: Vec<usize> = text
            .char_indices()
            .filter(|&(i, c)| c.is_ascii_digit() && !text[..i].ends_with(|p: char| p.is_ascii_alphanumeric() || p == '.' || p == '-' || p == '+'))
            .map(|(i, _)| i)
            .collect();
        let mut exotic_doc = payload.clone();
        if !starts.is_empty() {
            let s = starts[splice.index(starts.len())];
            let e = s + text[s..].find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))).unwrap_or(text.len() - s);
            exotic_doc = [&payload[..s], exotic.as_bytes(), &payload[e..]].concat();
        }
        for p in [payload.clone(), exotic_doc, mutate(payload, kind, at, byte), raw] {
            prop_assert_eq!(ev.evaluate(&p, t), ev.evaluate_slow(&p, t),
                "{:?}", String::from_utf8_lossy(&p));
        }
    }
}

#[test]
fn generator_covers_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    let mut ev = Evaluator::new(
        FieldPath::parse("machine.temperature").unwrap(),
        MAX_PAYLOAD,
    );
    let strategy = (document(true), whitespace(), threshold());
    let mutated = (
        document(false),
        whitespace(),
        any::<u8>(),
        any::<prop::sample::Index>(),
        garbage(),
    );
    for _ in 0..3000 {
        let (doc, ws, t) = strategy.new_tree(&mut runner).unwrap().current();
        seen.insert(outcome(&ev.evaluate(&render(&doc, &ws), t)));
        let (doc, ws, kind, at, byte) = mutated.new_tree(&mut runner).unwrap().current();
        seen.insert(outcome(
            &ev.evaluate(&mutate(render(&doc, &ws), kind, at, byte), 25.0),
        ));
    }
    for o in [
        Outcome::Alert,
        Outcome::Unmatched,
        Outcome::Rejected(RejectReason::NotUtf8),
        Outcome::Rejected(RejectReason::NotJson),
        Outcome::Rejected(RejectReason::NotObject),
        Outcome::Rejected(RejectReason::NotANumber),
    ] {
        assert!(seen.contains(&o), "generated inputs never gave {o:?}");
    }
}
