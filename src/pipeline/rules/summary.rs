//! Windowed summaries, the output side of the rules: one tumbling window of one device's
//! readings ([`Window`]) and the JSON document it becomes when it closes — published by the
//! flow to `summaries/{topic}` (IoT Edge: the `summary` output), batched like alerts.
//!
//! ```json
//! {"device":"telemetry/dev-1","windowStart":"2026-11-26T07:00:10Z","windowEnd":"2026-11-26T07:00:20Z",
//!  "count":10,"min":21.5,"max":30.25,"mean":25.9,"last":30.25,"alerts":1,
//!  "firstArrival":"2026-11-26T07:00:10.012345Z","lastArrival":"2026-11-26T07:00:19.912345Z","partial":false}
//! ```
//!
//! `windowStart`/`windowEnd` are in the rules' clock (arrival time, or event time); arrivals
//! are when the filter received the first and the last reading. Numbers are the readings'
//! values as `f64` (shortest round-trip form; a value beyond the `f64` range is `null`), the
//! mean is their sum in arrival order divided by the count. `partial` is true when the window
//! was closed before its end: at shutdown, when summaries were turned off, or when the device
//! was evicted.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};

/// One device's open window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// µs since the epoch, in the rules' clock; `start ≤ time < end`.
    pub start: i64,
    pub end: i64,
    pub count: u32,
    /// Alerts published for readings of this window.
    pub alerts: u32,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub last: f64,
    /// Arrival (wall-clock µs) of the first and the last reading.
    pub first_arrival: i64,
    pub last_arrival: i64,
}

impl Window {
    pub fn new(start: i64, end: i64) -> Window {
        Window {
            start,
            end,
            count: 0,
            alerts: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            last: 0.0,
            first_arrival: 0,
            last_arrival: 0,
        }
    }

    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }

    pub fn add(&mut self, value: f64, arrival_us: i64) {
        if self.count == 0 {
            self.first_arrival = arrival_us;
        }
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
        self.last = value;
        self.last_arrival = arrival_us;
    }

    /// The summary document of this window for `device`.
    pub fn document(&self, device: &[u8], partial: bool) -> Bytes {
        let doc = json!({
            "device": String::from_utf8_lossy(device),
            "windowStart": rfc3339(self.start),
            "windowEnd": rfc3339(self.end),
            "count": self.count,
            "min": number(self.min),
            "max": number(self.max),
            "mean": number(self.sum / f64::from(self.count.max(1))),
            "last": number(self.last),
            "alerts": self.alerts,
            "firstArrival": rfc3339(self.first_arrival),
            "lastArrival": rfc3339(self.last_arrival),
            "partial": partial,
        });
        Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
    }
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// µs since the epoch as RFC 3339 UTC: whole seconds without a fraction, else six digits.
pub fn rfc3339(us: i64) -> String {
    let t = if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    };
    if us.rem_euclid(1_000_000) == 0 {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_micros(t).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_summarises_its_readings() {
        let mut w = Window::new(10_000_000, 20_000_000);
        assert!(w.contains(10_000_000) && w.contains(19_999_999) && !w.contains(20_000_000));
        for (v, at) in [(21.5, 10_000_001), (30.25, 11_000_000), (25.0, 19_500_000)] {
            w.add(v, at);
        }
        w.alerts = 1;
        let v: Value = serde_json::from_slice(&w.document(b"telemetry/d", false)).unwrap();
        assert_eq!(
            v,
            json!({
                "device": "telemetry/d",
                "windowStart": "1970-01-01T00:00:10Z",
                "windowEnd": "1970-01-01T00:00:20Z",
                "count": 3, "min": 21.5, "max": 30.25, "mean": (21.5 + 30.25 + 25.0) / 3.0,
                "last": 25.0, "alerts": 1,
                "firstArrival": "1970-01-01T00:00:10.000001Z",
                "lastArrival": "1970-01-01T00:00:19.500000Z",
                "partial": false,
            })
        );
    }

    #[test]
    fn values_beyond_f64_are_null() {
        let mut w = Window::new(0, 1);
        w.add(f64::INFINITY, 0);
        let v: Value = serde_json::from_slice(&w.document(b"d", true)).unwrap();
        assert_eq!(v["max"], Value::Null);
        assert_eq!(v["partial"], true);
    }
}
