//! The verdict under a condition (hot path: MQTT in → parse → **verdict** → batch → MQTT out):
//! one simd-json parse, one walk over the tape that reads every field of the condition at
//! once (the condition's tree of keys: each object on a field's path is scanned once, the
//! last duplicate key winning as everywhere in the verdict), then the condition's program over
//! those values. No allocation once the evaluator has seen the condition's size.
//!
//! The rejections come first and are the seed's: too large, not UTF-8, not JSON, top level not
//! an object; then a field of the condition present but not a number rejects as
//! `not_a_number`. When simd-json refuses a payload the slow path (`scan`) reads each field in
//! turn, with the same answers (Python's numbers of any size, lone surrogates, the exact
//! error).

use simd_json::{Node, StaticNode};

use super::scan::{self, Found, Scanned};
use super::{
    kind, locate, reject, skip, walk, Evaluator, FieldPath, FieldValue, RejectReason, Verdict,
};
use crate::pipeline::condition::{Condition, PathNode};

/// A condition's verdict with what the stateful rules read from the same parse.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionReading {
    pub verdict: Verdict,
    /// A field of the condition was absent (its comparisons were false).
    pub missing: bool,
    /// The number at `--field`, when asked for and present (the summaries' value).
    pub value: Option<f64>,
    /// The event time at the given path, µs since the Unix epoch.
    pub time_us: Option<i64>,
}

/// What the rules want besides the verdict.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    /// Read the number at `--field` (summaries).
    pub value: bool,
    /// Read the event time at this path.
    pub time: Option<&'a FieldPath>,
}

const NONE: u32 = u32::MAX;

impl Evaluator {
    /// Decides one payload under `cond`, with `threshold` for the name `threshold`.
    pub fn evaluate_condition(
        &mut self,
        payload: &[u8],
        cond: &Condition,
        threshold: f64,
        extras: Extras<'_>,
    ) -> ConditionReading {
        let mut out = ConditionReading {
            verdict: Verdict::Unmatched,
            missing: false,
            value: None,
            time_us: None,
        };
        if payload.len() > self.max_payload {
            out.verdict = self.too_large(payload.len());
            return out;
        }
        self.values.clear();
        self.values.resize(cond.fields().len(), FieldValue::Absent);
        if let Err(v) = self.read_fast(payload, cond, extras, &mut out) {
            if let Some(v) = v {
                out.verdict = v;
                return out;
            }
            self.values.fill(FieldValue::Absent);
            if let Err(v) = self.read_slow(payload, cond, extras, &mut out) {
                out.verdict = v;
                return out;
            }
        }
        for (i, v) in self.values.iter().enumerate() {
            match v {
                FieldValue::NotNumber(k) => {
                    out.verdict = reject(
                        RejectReason::NotANumber,
                        format!("{} is {}, not a number", cond.fields()[i], k.described()),
                    );
                    return out;
                }
                FieldValue::Absent => out.missing = true,
                _ => {}
            }
        }
        if cond.eval(&self.values, threshold, payload) {
            out.verdict = Verdict::Alert;
        }
        out
    }

    /// The condition over the values of the last [`Evaluator::evaluate_condition`] (same
    /// payload), with another threshold: edge mode's re-arm test at threshold − hysteresis.
    pub fn condition_again(&self, payload: &[u8], cond: &Condition, threshold: f64) -> bool {
        cond.eval(&self.values, threshold, payload)
    }

    /// simd-json: `Ok` with the values filled in, `Err(Some(verdict))` for a rejection decided
    /// here, `Err(None)` when simd-json refused the payload (the slow path decides).
    fn read_fast(
        &mut self,
        payload: &[u8],
        cond: &Condition,
        extras: Extras<'_>,
        out: &mut ConditionReading,
    ) -> Result<(), Option<Verdict>> {
        let trie = cond.trie();
        if self.last.len() < trie.len() {
            self.last.resize(trie.len(), NONE);
        }
        let Evaluator {
            field,
            parser,
            values,
            last,
            ..
        } = self;
        let read = |tape: &[Node<'_>]| -> Result<(), Option<Verdict>> {
            match tape.first() {
                Some(Node::Object { .. }) => {
                    visit(tape, 0, trie, 0, values, last).ok_or(None)?;
                    if extras.value {
                        let mut v = 0.0;
                        if let Some(Found::Number { .. }) = walk(tape, &field.keys, 0.0, &mut v) {
                            out.value = Some(v);
                        }
                    }
                    if let Some(t) = extras.time {
                        out.time_us = locate(tape, &t.keys)
                            .flatten()
                            .and_then(|i| super::time::tape_time(&tape[i]));
                    }
                    Ok(())
                }
                Some(other) => Err(Some(reject(
                    RejectReason::NotObject,
                    format!("top level is {}, not an object", kind(other).described()),
                ))),
                None => Err(None),
            }
        };
        parser.parse(payload, read).unwrap_or(Err(None))
    }

    /// The slow path: each field scanned in turn.
    fn read_slow(
        &mut self,
        payload: &[u8],
        cond: &Condition,
        extras: Extras<'_>,
        out: &mut ConditionReading,
    ) -> Result<(), Verdict> {
        if let Err(e) = std::str::from_utf8(payload) {
            let detail = format!("invalid UTF-8 at byte {}", e.valid_up_to());
            return Err(reject(RejectReason::NotUtf8, detail));
        }
        let one = |keys: &[String], levels: &mut Vec<Found>| {
            let mut n = Scanned::default();
            match scan::scan(payload, keys, 0.0, levels, &mut n) {
                Err(e) => Err(reject(RejectReason::NotJson, e.to_string())),
                Ok(Found::TopLevel(k)) => Err(reject(
                    RejectReason::NotObject,
                    format!("top level is {}, not an object", k.described()),
                )),
                Ok(Found::Absent) => Ok(FieldValue::Absent),
                Ok(Found::NotNumber(k)) => Ok(FieldValue::NotNumber(k)),
                Ok(Found::Number { .. }) if n.float => Ok(FieldValue::Float(n.value)),
                Ok(Found::Number { .. }) => Ok(FieldValue::Literal {
                    start: n.start as u32,
                    end: n.end as u32,
                }),
            }
        };
        for (slot, f) in cond.fields().iter().enumerate() {
            self.values[slot] = one(f.keys(), &mut self.levels)?;
        }
        if extras.value {
            let mut n = Scanned::default();
            let found = scan::scan(payload, &self.field.keys, 0.0, &mut self.levels, &mut n);
            if let Ok(Found::Number { .. }) = found {
                out.value = Some(n.value);
            }
        }
        if let Some(t) = extras.time {
            out.time_us = super::time::slow_time(payload, t);
        }
        Ok(())
    }
}

/// Reads the fields below trie node `n` from the object at tape index `at`: one pass over its
/// keys records the last occurrence of each child key, then each found child is read (a field
/// that ends here) and walked into (a field that goes deeper). `None` when the tape is not
/// shaped as simd-json documents it, or holds a number only the slow path compares.
fn visit(
    tape: &[Node<'_>],
    at: usize,
    trie: &[PathNode],
    n: usize,
    values: &mut [FieldValue],
    last: &mut [u32],
) -> Option<()> {
    let Node::Object { len, .. } = *tape.get(at)? else {
        return Some(());
    };
    let children = trie[n].children();
    let kids = trie.get(children.clone())?;
    let seen = last.get_mut(children.clone())?;
    seen.fill(NONE);
    let mut i = at + 1;
    for _ in 0..len {
        let Node::String(k) = *tape.get(i)? else {
            return None;
        };
        i += 1;
        for (kid, seen) in kids.iter().zip(seen.iter_mut()) {
            if same_key(&kid.key, k.as_bytes()) {
                *seen = i as u32;
            }
        }
        i = skip(tape, i)?;
    }
    for c in children {
        let at = last[c];
        if at == NONE {
            continue;
        }
        let at = at as usize;
        let kid = &trie[c];
        if let Some(slot) = kid.slot {
            values[usize::from(slot)] = match *tape.get(at)? {
                Node::Static(StaticNode::F64(x)) => FieldValue::Float(x),
                Node::Static(StaticNode::U64(v)) => FieldValue::Int(i128::from(v)),
                Node::Static(StaticNode::I64(v)) => FieldValue::Int(i128::from(v)),
                ref other => match kind(other) {
                    super::Kind::Number => return None,
                    k => FieldValue::NotNumber(k),
                },
            };
        }
        if kid.first != kid.end {
            visit(tape, at, trie, c, values, last)?;
        }
    }
    Some(())
}

/// `want == k`, inline: the keys of a document are short, and most differ from the wanted
/// ones by their length or first bytes, so a call to `memcmp` per key costs more than the
/// comparison (`same_key` loads the two ends as words, which covers keys up to 16 bytes).
#[inline(always)]
fn same_key(want: &[u8], k: &[u8]) -> bool {
    let n = want.len();
    if n != k.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]));
    let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap_or([0; 4]));
    match n {
        0 => true,
        1..=3 => want[0] == k[0] && want[n / 2] == k[n / 2] && want[n - 1] == k[n - 1],
        4..=7 => half(want, 0) == half(k, 0) && half(want, n - 4) == half(k, n - 4),
        8..=16 => word(want, 0) == word(k, 0) && word(want, n - 8) == word(k, n - 8),
        _ => want == k,
    }
}

#[cfg(test)]
mod tests {
    use super::same_key;

    #[test]
    fn same_key_is_slice_equality_at_every_length() {
        for n in 0..=20usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i).collect();
            assert!(same_key(&a, &a.clone()), "{n}");
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 1;
                assert!(!same_key(&a, &b), "{n} at {i}");
            }
            let mut longer = a.clone();
            longer.push(b'a');
            assert!(!same_key(&a, &longer), "{n} longer");
        }
    }
}
