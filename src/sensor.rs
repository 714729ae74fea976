//! The SimulatedTemperatureSensor of IoT Edge, reproduced: the message shape and the
//! temperature profile (`azure/PROTOCOL.md`). Feeds the demo, loadgen and the benches; it is
//! the input side of the data flow, before MQTT.
//!
//! Profile: machine temperature starts at 21 and moves by uniform[-0.25, 1.25) per message;
//! above 100 it random-walks ±0.5. Pressure = 1 + (T-21)·9/79. Ambient temperature 21 ± 0.5,
//! humidity an integer in 24..=26. [`Sensor::reset`] restarts at 21 (the `reset` method).

use std::io::Write;
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
pub fn write_body(out: &mut Vec<u8>, r: &Reading, time_created: SystemTime, tracking: &Tracking) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"machine":{{"temperature":{},"pressure":{}}},"ambient":{{"temperature":{},"humidity":{}}},"timeCreated":""#,
        r.machine_temperature, r.machine_pressure, r.ambient_temperature, r.ambient_humidity
    );
    write_iso8601(out, time_created);
    out.push(b'"');
    if let Some(seq) = tracking.seq {
        let _ = write!(out, r#","seq":{seq}"#);
    }
    if let Some(device) = tracking.device {
        let _ = write!(out, r#","device":"{device}""#);
    }
    if let Some(us) = tracking.sent_us {
        let _ = write!(out, r#","sentUs":{us}"#);
    }
    out.push(b'}');
}

/// UTC ISO-8601 with up to 7 fractional digits, trailing zeros trimmed, like .NET's `"o"`
/// round-trip format as the sensor prints it: `2019-12-09T15:05:08.4596891Z`.
pub fn write_iso8601(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let ticks = d.subsec_nanos() / 100; // 100 ns ticks
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    let _ = write!(
        out,
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
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    }
    out.push(b'Z');
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
    }
}
