//! Event time, for the stateful rules' optional event-time clock (`--event-time-field`): the
//! time a payload holds at a path, read from the same simd-json tape as the verdict's number
//! (or, on the rare payloads simd-json refuses, from a `serde_json` parse). Part of the hot
//! path's `pipeline::verdict`; only used when an event-time field is configured.
//!
//! Two forms are understood, both as µs since the Unix epoch:
//! - a string in RFC 3339 form, `2026-11-26T07:00:00.5123456Z` or with an offset
//!   (`…+02:00`), as the SimulatedTemperatureSensor's `timeCreated`;
//! - a number: seconds since the Unix epoch, fractions allowed (`1764140400.25`).
//!
//! Anything else (absent, another type, an unparsable string, out of range) is no time.

use simd_json::{Node, StaticNode};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::FieldPath;

/// The event time of a tape node.
pub(super) fn tape_time(node: &Node<'_>) -> Option<i64> {
    match *node {
        Node::String(s) => parse_rfc3339_us(s),
        Node::Static(StaticNode::F64(x)) => seconds_to_us(x),
        Node::Static(StaticNode::U64(v)) => i64::try_from(v).ok()?.checked_mul(1_000_000),
        Node::Static(StaticNode::I64(v)) => v.checked_mul(1_000_000),
        _ => None,
    }
}

/// The event time at `path` of a payload simd-json refused (valid for Python's parser, e.g.
/// an integer beyond 64 bits elsewhere in the document). Allocates; rare.
pub(super) fn slow_time(payload: &[u8], path: &FieldPath) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let mut at = &v;
    for key in path.keys() {
        at = at.as_object()?.get(key)?;
    }
    match at {
        serde_json::Value::String(s) => parse_rfc3339_us(s),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.checked_mul(1_000_000),
            (None, Some(f)) => seconds_to_us(f),
            _ => None,
        },
        _ => None,
    }
}

/// An RFC 3339 date-time as µs since the Unix epoch (sub-µs digits are truncated).
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).ok()
}

/// Seconds since the epoch (finite, within ±2^62 µs) as µs, rounded to the nearest.
fn seconds_to_us(x: f64) -> Option<i64> {
    let us = (x * 1e6).round();
    (us.is_finite() && us.abs() < 4.6e18).then_some(us as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(
            parse_rfc3339_us("2023-11-14T22:13:20.123456Z"),
            Some(1_700_000_000_123_456)
        );
        // .NET's seven digits (the sensor's timeCreated): the 100 ns digit is dropped.
        assert_eq!(
            parse_rfc3339_us("2023-11-14T22:13:20.1234567Z"),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(
            parse_rfc3339_us("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_rfc3339_us("1969-12-31T23:59:59.5Z"), Some(-500_000));
        for bad in [
            "",
            "yesterday",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-13-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_are_epoch_seconds() {
        assert_eq!(seconds_to_us(1.5), Some(1_500_000));
        assert_eq!(seconds_to_us(-0.25), Some(-250_000));
        assert_eq!(seconds_to_us(f64::INFINITY), None);
        assert_eq!(seconds_to_us(1e300), None);
        assert_eq!(
            tape_time(&Node::Static(StaticNode::U64(2))),
            Some(2_000_000)
        );
        assert_eq!(
            tape_time(&Node::Static(StaticNode::I64(-2))),
            Some(-2_000_000)
        );
        assert_eq!(tape_time(&Node::Static(StaticNode::U64(u64::MAX))), None);
        assert_eq!(tape_time(&Node::Static(StaticNode::Bool(true))), None);
    }

    #[test]
    fn the_slow_path_reads_the_same_times() {
        let path = FieldPath::parse("t").unwrap();
        assert_eq!(
            slow_time(br#"{"t":"1970-01-01T00:00:02Z"}"#, &path),
            Some(2_000_000)
        );
        assert_eq!(slow_time(br#"{"t":3}"#, &path), Some(3_000_000));
        assert_eq!(slow_time(br#"{"t":0.5}"#, &path), Some(500_000));
        assert_eq!(slow_time(br#"{"t":null}"#, &path), None);
        assert_eq!(slow_time(br#"{"u":1}"#, &path), None);
        assert_eq!(slow_time(b"[]", &path), None);
    }
}
