//! The SimulatedTemperatureSensor of IoT Edge, reproduced: the message shape and the
//! temperature profile of Microsoft's SimulatedTemperatureSensor module (the tutorial's
//! sensor). Feeds the demo, loadgen and the benches; it is
//! the input side of the data flow, before MQTT.
//!
//! Profile: machine temperature starts at 21 and moves by uniform[-0.25, 1.25) per message;
//! above 100 it random-walks ±0.5. Pressure = 1 + (T-21)·9/79. Ambient temperature 21 ± 0.5,
//! humidity an integer in 24..=26. [`Sensor::reset`] restarts at 21 (the `reset` method).

use std::time::{SystemTime, UNIX_EPOCH};

/// One reading of the simulated machine and its surroundings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub machine_temperature: f64,
    pub machine_pressure: f64,
    pub ambient_temperature: f64,
    pub ambient_humidity: i64,
}

/// A deterministic simulated sensor (seeded), one per device.
#[derive(Debug, Clone)]
pub struct Sensor {
    rng: fastrand::Rng,
    temperature: f64,
}

impl Sensor {
    pub const START: f64 = 21.0;

    pub fn new(seed: u64) -> Self {
        Sensor {
            rng: fastrand::Rng::with_seed(seed),
            temperature: Self::START,
        }
    }

    /// Restarts the machine temperature at 21 (the sensor's `reset` direct method).
    pub fn reset(&mut self) {
        self.temperature = Self::START;
    }

    /// The machine temperature the next reading will report.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Produces the next reading and advances the profile.
    pub fn next_reading(&mut self) -> Reading {
        let t = self.temperature;
        let reading = Reading {
            machine_temperature: t,
            machine_pressure: 1.0 + (t - 21.0) * 9.0 / 79.0,
            ambient_temperature: 21.0 + self.rng.f64() - 0.5,
            ambient_humidity: self.rng.i64(24..=26),
        };
        self.temperature = if t > 100.0 {
            t + self.rng.f64() - 0.5
        } else {
            t + self.rng.f64() * 1.5 - 0.25
        };
        reading
    }
}

/// Fields loadgen and the demo add to the sensor's body so alerts can be accounted for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracking<'a> {
    /// Sequence number of the message (per run).
    pub seq: Option<u64>,
    /// Device name.
    pub device: Option<&'a str>,
    /// Intended send time, microseconds since the Unix epoch.
    pub sent_us: Option<u64>,
}

/// Appends the sensor's JSON body for `r` to `out`:
/// `{"machine":{"temperature":…,"pressure":…},"ambient":{"temperature":…,"humidity":…},"timeCreated":"…"}`
/// with the tracking fields (if any) after `timeCreated`.
///
/// This is loadgen's per-message hot path, so it writes bytes directly, without `std::fmt`:
/// floats with `ryu` (the shortest text that parses back to the same `f64`, as `{}` would,
/// but always with a `.0` or an exponent: `21.0`, `1e-7`, `1.5e300`, like the .NET sensor's
/// `21.0`), integers with `itoa`. Non-finite floats print as `NaN`/`inf`/`-inf` (not JSON,
/// as before: the sensor never produces them). The device name is written as a JSON string.
pub fn write_body(out: &mut Vec<u8>, r: &Reading, time_created: SystemTime, tracking: &Tracking) {
    let mut f = ryu::Buffer::new();
    let mut i = itoa::Buffer::new();
    out.extend_from_slice(br#"{"machine":{"temperature":"#);
    out.extend_from_slice(f.format(r.machine_temperature).as_bytes());
    out.extend_from_slice(br#","pressure":"#);
    out.extend_from_slice(f.format(r.machine_pressure).as_bytes());
    out.extend_from_slice(br#"},"ambient":{"temperature":"#);
    out.extend_from_slice(f.format(r.ambient_temperature).as_bytes());
    out.extend_from_slice(br#","humidity":"#);
    out.extend_from_slice(i.format(r.ambient_humidity).as_bytes());
    out.extend_from_slice(br#"},"timeCreated":""#);
    write_iso8601(out, time_created);
    out.push(b'"');
    if let Some(seq) = tracking.seq {
        out.extend_from_slice(br#","seq":"#);
        out.extend_from_slice(i.format(seq).as_bytes());
    }
    if let Some(device) = tracking.device {
        out.extend_from_slice(br#","device":"#);
        write_json_string(out, device);
    }
    if let Some(us) = tracking.sent_us {
        out.extend_from_slice(br#","sentUs":"#);
        out.extend_from_slice(i.format(us).as_bytes());
    }
    out.push(b'}');
}

/// `s` as a JSON string: copied as is when nothing needs escaping (the usual device name),
/// escaped by serde_json otherwise.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serialising a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// UTC ISO-8601 with up to 7 fractional digits, trailing zeros trimmed, like .NET's `"o"`
/// round-trip format as the sensor prints it: `2019-12-09T15:05:08.4596891Z`. Times before
/// the epoch print as the epoch.
pub fn write_iso8601(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let ticks = d.subsec_nanos() / 100; // 100 ns ticks
    let (days, rem) = (secs / 86_400, (secs % 86_400) as u32);
    let (y, m, day) = civil_from_days(days as i64);
    if (0..10_000).contains(&y) {
        push_digits(out, y as u32, 4);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(y).as_bytes());
    }
    out.push(b'-');
    push_digits(out, m, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, rem / 3600, 2);
    out.push(b':');
    push_digits(out, rem % 3600 / 60, 2);
    out.push(b':');
    push_digits(out, rem % 60, 2);
    if ticks > 0 {
        // 7 digits with the trailing zeros dropped: strip them from the number first.
        let (mut v, mut len) = (ticks, 7);
        while v % 10 == 0 {
            v /= 10;
            len -= 1;
        }
        let mut frac = [b'0'; 7];
        for slot in frac[..len].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.push(b'.');
        out.extend_from_slice(&frac[..len]);
    }
    out.push(b'Z');
}

/// Appends `v` as exactly `width` decimal digits, zero-padded (`v < 10^width`).
#[inline]
fn push_digits(out: &mut Vec<u8>, mut v: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Microseconds since the Unix epoch.
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn profile_climbs_then_walks() {
        let mut s = Sensor::new(7);
        let first = s.next_reading();
        assert_eq!(first.machine_temperature, 21.0);
        assert_eq!(first.machine_pressure, 1.0);
        let mut last = first;
        for _ in 0..400 {
            let r = s.next_reading();
            let step = r.machine_temperature - last.machine_temperature;
            if last.machine_temperature > 100.0 {
                assert!((-0.5..0.5).contains(&step), "walk step {step}");
            } else {
                assert!((-0.25..1.25).contains(&step), "climb step {step}");
            }
            assert!((20.5..21.5).contains(&r.ambient_temperature));
            assert!((24..=26).contains(&r.ambient_humidity));
            last = r;
        }
        assert!(
            last.machine_temperature > 90.0,
            "climbed to {}",
            last.machine_temperature
        );
        s.reset();
        assert_eq!(s.next_reading().machine_temperature, 21.0);
    }

    #[test]
    fn body_has_the_sensor_shape() {
        let r = Reading {
            machine_temperature: 21.5,
            machine_pressure: 1.25,
            ambient_temperature: 20.75,
            ambient_humidity: 25,
        };
        let t = UNIX_EPOCH + Duration::from_nanos(1_575_903_908_459_689_100);
        let mut out = Vec::new();
        write_body(
            &mut out,
            &r,
            t,
            &Tracking {
                seq: Some(3),
                device: Some("dev-1"),
                sent_us: Some(9),
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"machine":{"temperature":21.5,"pressure":1.25},"ambient":{"temperature":20.75,"humidity":25},"timeCreated":"2019-12-09T15:05:08.4596891Z","seq":3,"device":"dev-1","sentUs":9}"#
        );
    }

    #[test]
    fn whole_and_extreme_floats_keep_their_value() {
        // Format change from `{}` (ryu): whole numbers keep a `.0`, very small and very large
        // magnitudes use an exponent. Every form is a JSON number that parses back exactly.
        let r = Reading {
            machine_temperature: 21.0,
            machine_pressure: 1e-7,
            ambient_temperature: -1.5e300,
            ambient_humidity: -3,
        };
        let mut out = Vec::new();
        write_body(&mut out, &r, UNIX_EPOCH, &Tracking::default());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"machine":{"temperature":21.0,"pressure":1e-7},"ambient":{"temperature":-1.5e300,"humidity":-3},"timeCreated":"1970-01-01T00:00:00Z"}"#
        );
    }

    /// The numbers of a body as written, found by their keys (in order).
    fn number_texts(body: &str) -> Vec<&str> {
        let mut rest = body;
        let mut out = Vec::new();
        for key in [
            "\"temperature\":",
            "\"pressure\":",
            "\"temperature\":",
            "\"humidity\":",
            "\"seq\":",
            "\"sentUs\":",
        ] {
            let at = rest.find(key).unwrap() + key.len();
            rest = &rest[at..];
            let end = rest.find([',', '}']).unwrap();
            out.push(&rest[..end]);
        }
        out
    }

    proptest! {
        #[test]
        fn body_is_json_and_every_number_reads_back_exactly(
            t in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
            p in -1e6f64..1e6,
            a in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL,
            humidity: i64,
            seq: u64,
            sent_us: u64,
            secs in 0u64..300_000_000_000,
            sub_ns in 0u32..1_000_000_000,
            device in "(?s).{0,12}",
        ) {
            let r = Reading {
                machine_temperature: t,
                machine_pressure: p,
                ambient_temperature: a,
                ambient_humidity: humidity,
            };
            let time = UNIX_EPOCH + Duration::new(secs, sub_ns);
            let mut out = Vec::new();
            let tracking = Tracking { seq: Some(seq), device: Some(&device), sent_us: Some(sent_us) };
            write_body(&mut out, &r, time, &tracking);
            let text = std::str::from_utf8(&out).unwrap();
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            prop_assert_eq!(v["device"].as_str(), Some(&device[..]));
            let mut iso = Vec::new();
            write_iso8601(&mut iso, time);
            prop_assert_eq!(v["timeCreated"].as_str().map(str::as_bytes), Some(&iso[..]));
            let n = number_texts(text);
            for (txt, want) in n[..3].iter().zip([t, p, a]) {
                let got: f64 = txt.parse().unwrap();
                prop_assert_eq!(got.to_bits(), want.to_bits(), "{} for {}", txt, want);
            }
            prop_assert_eq!(n[3].parse::<i64>().unwrap(), humidity);
            prop_assert_eq!(n[4].parse::<u64>().unwrap(), seq);
            prop_assert_eq!(n[5].parse::<u64>().unwrap(), sent_us);
        }

        #[test]
        fn iso_matches_the_formatting_version(
            secs in 0u64..10_000_000_000_000,
            sub_ns in 0u32..1_000_000_000,
        ) {
            let t = UNIX_EPOCH + Duration::new(secs, sub_ns);
            let mut out = Vec::new();
            write_iso8601(&mut out, t);
            prop_assert_eq!(String::from_utf8(out).unwrap(), iso_with_fmt(t));
        }
    }

    /// The former `format!`-based `write_iso8601`, kept as the oracle.
    fn iso_with_fmt(t: SystemTime) -> String {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() as i64;
        let ticks = d.subsec_nanos() / 100;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, day) = civil_from_days(days);
        let mut s = format!(
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        if ticks > 0 {
            let mut frac = format!("{ticks:07}");
            while frac.ends_with('0') {
                frac.pop();
            }
            s.push('.');
            s.push_str(&frac);
        }
        s.push('Z');
        s
    }

    #[test]
    fn iso_trims_trailing_zeros() {
        let mut out = Vec::new();
        write_iso8601(
            &mut out,
            UNIX_EPOCH + Duration::from_millis(951_782_400_500),
        );
        assert_eq!(out, b"2000-02-29T00:00:00.5Z");
        out.clear();
        write_iso8601(&mut out, UNIX_EPOCH);
        assert_eq!(out, b"1970-01-01T00:00:00Z");
        out.clear();
        write_iso8601(&mut out, UNIX_EPOCH + Duration::from_nanos(100));
        assert_eq!(out, b"1970-01-01T00:00:00.0000001Z");
        out.clear();
        // Year 10000 and after: more than 4 digits, as `{:04}` printed them.
        write_iso8601(&mut out, UNIX_EPOCH + Duration::from_secs(253_402_300_800));
        assert_eq!(out, b"10000-01-01T00:00:00Z");
        out.clear();
        // Before the epoch: the epoch.
        write_iso8601(&mut out, UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(out, b"1970-01-01T00:00:00Z");
    }
}
