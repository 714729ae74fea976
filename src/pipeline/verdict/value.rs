//! A field's value as a condition sees it (hot path: MQTT in → parse → **verdict** → batch →
//! MQTT out): what the verdict stage's walk over a document found at each field of the
//! condition (`fields.rs`), and how such a number compares with the condition's `f64` values
//! exactly (`pipeline::condition` evaluates its program over these).

use std::cmp::Ordering;

use super::number::{decimal_int_gt, int_gt};
use super::Kind;

/// The largest magnitude up to which every integer is exact as an `f64`.
const EXACT: u128 = 1 << 53;

/// What one message holds at one field of the condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FieldValue {
    Absent,
    /// A number: how it compares with an `f64` is [`FieldValue::cmp`]'s business.
    Float(f64),
    Int(i128),
    /// An integer literal wider than 64 bits (the slow path): its bytes in the payload.
    Literal {
        start: u32,
        end: u32,
    },
    /// Present, not a number.
    NotNumber(Kind),
}

impl FieldValue {
    /// How the number compares with `v` (finite), exactly; `None` when absent or not a number.
    pub(crate) fn cmp(&self, v: f64, payload: &[u8]) -> Option<Ordering> {
        match *self {
            FieldValue::Float(x) => x.partial_cmp(&v),
            // Both exact as `f64` (|i| ≤ 2^53): the `f64` comparison is the exact one.
            FieldValue::Int(i) if i.unsigned_abs() <= EXACT => (i as i64 as f64).partial_cmp(&v),
            FieldValue::Int(i) => Some(if int_gt(i, v) {
                Ordering::Greater
            } else if int_gt(-i, -v) {
                Ordering::Less
            } else {
                Ordering::Equal
            }),
            FieldValue::Literal { start, end } => {
                let lit = payload.get(start as usize..end as usize)?;
                let (negative, digits) = match lit.split_first() {
                    Some((b'-', rest)) => (true, rest),
                    _ => (false, lit),
                };
                Some(if decimal_int_gt(negative, digits, v) {
                    Ordering::Greater
                } else if decimal_int_gt(!negative, digits, -v) {
                    Ordering::Less
                } else {
                    Ordering::Equal
                })
            }
            FieldValue::Absent | FieldValue::NotNumber(_) => None,
        }
    }
}
