//! Tooling, the input side of loadgen: builds the telemetry messages (MQTT in, from the filter's
//! point of view). Each message is a SimulatedTemperatureSensor body
//! ([`edgefilter_sensor::write_body`]) carrying `seq`, `device` and `sentUs`, encoded as an
//! MQTT PUBLISH straight into the connection's batch buffer — no per-message allocation.
//!
//! The temperature comes from the sensor's real profile (one seeded [`Sensor`] per device), or
//! with `--alert-ratio` from a hash of `(seed, seq)` that puts it clearly above or below the
//! threshold in force. Either way loadgen knows the exact verdict: the body carries the f64's
//! shortest round-trip text, so the filter parses back exactly the value compared here.

use crate::rule_model::DeviceModel;
use crate::target::TopicTemplate;
use edgefilter_sensor::{write_body, Reading, Sensor, Tracking};
use std::time::{Duration, UNIX_EPOCH};

/// Where the machine temperature of each message comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TempSource {
    /// The sensor's profile (starts at 21, climbs, then random-walks above 100).
    Profile,
    /// Each message is an alert with probability `ratio`, deterministically in `(seed, seq)`;
    /// alerts are drawn in `T+0.5 .. T+40`, the others in `T-20 .. T-0.5`.
    Ratio(f64),
}

/// splitmix64: a fast, well-mixed hash of one u64.
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from a hash.
#[inline]
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The `--alert-ratio` temperature of message `seq` under `threshold`.
#[inline]
pub fn ratio_temperature(seed: u64, seq: u64, ratio: f64, threshold: f64) -> f64 {
    let h1 = splitmix64(seed ^ seq.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let h2 = splitmix64(h1);
    let u = unit(h2);
    if unit(h1) < ratio {
        threshold + 0.5 + u * 39.5
    } else {
        threshold - 20.0 + u * 19.5
    }
}

/// Whether message `seq` is malformed under `--malformed ratio` (independent of the alert
/// draw of [`ratio_temperature`]).
#[inline]
pub fn is_malformed(seed: u64, seq: u64, ratio: f64) -> bool {
    ratio > 0.0 && unit(splitmix64(!seed ^ seq.wrapping_mul(0x9FB2_1C65_1E98_DF25))) < ratio
}

/// One simulated device: its name, input topic and sensor.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    /// Written per message: with `--target azure` the topic carries the message's
    /// `sequenceNumber`.
    pub topic: TopicTemplate,
    pub sensor: Sensor,
    /// What the filter's rules do with this device's readings ([`crate::rules`]).
    pub model: DeviceModel,
    /// Its own threshold from the filter's per-device map (`--device-threshold`), if any.
    pub threshold: Option<f64>,
}

impl Device {
    /// Device `index` of a run seeded with `seed`, publishing to `topic`.
    pub fn new(index: u32, seed: u64, topic: TopicTemplate) -> Self {
        Device {
            name: device_name(index),
            topic,
            sensor: Sensor::new(splitmix64(seed ^ (u64::from(index) << 32))),
            model: DeviceModel::default(),
            threshold: None,
        }
    }

    /// The next reading of this device for message `seq`, with the temperature source applied.
    #[inline]
    pub fn reading(&mut self, src: TempSource, seed: u64, seq: u64, threshold: f64) -> Reading {
        let mut r = self.sensor.next_reading();
        if let TempSource::Ratio(ratio) = src {
            let t = ratio_temperature(seed, seq, ratio, threshold);
            r.machine_temperature = t;
            r.machine_pressure = 1.0 + (t - 21.0) * 9.0 / 79.0;
        }
        r
    }
}

pub fn device_name(index: u32) -> String {
    format!("dev-{index}")
}

/// The encoding options of a connection's PUBLISH packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishFormat {
    pub qos: u8,
    /// MQTT 5 adds a property length (0) after the packet id.
    pub v5: bool,
}

/// Appends one PUBLISH packet to `out`; `payload` appends the body. Byte-identical to
/// rumqttc's `Publish::write` (see the tests) but writes the body in place.
#[inline]
pub fn encode_publish(
    out: &mut Vec<u8>,
    fmt: PublishFormat,
    retain: bool,
    topic: &[u8],
    pkid: u16,
    payload: impl FnOnce(&mut Vec<u8>),
) {
    encode_publish_with(
        out,
        fmt,
        retain,
        |o| o.extend_from_slice(topic),
        pkid,
        payload,
    );
}

/// [`encode_publish`] with the topic written in place too, by `topic` (at most 65535 bytes,
/// which `cli` checks for every topic loadgen writes).
#[inline]
pub fn encode_publish_with(
    out: &mut Vec<u8>,
    fmt: PublishFormat,
    retain: bool,
    topic: impl FnOnce(&mut Vec<u8>),
    pkid: u16,
    payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.push(0x30 | (fmt.qos << 1) | u8::from(retain));
    out.extend_from_slice(&[0, 0]); // remaining length, patched below (2 bytes is the usual size)
    let var_start = out.len();
    out.extend_from_slice(&[0, 0]); // topic length, patched below
    topic(out);
    let topic_len = out.len() - var_start - 2;
    debug_assert!(topic_len <= usize::from(u16::MAX));
    out[var_start..var_start + 2].copy_from_slice(&(topic_len as u16).to_be_bytes());
    if fmt.qos > 0 {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    if fmt.v5 {
        out.push(0);
    }
    payload(out);
    let mut len = [0u8; 4];
    let n = remaining_length(out.len() - var_start, &mut len);
    if n == 2 {
        out[start + 1..start + 3].copy_from_slice(&len[..2]);
    } else {
        out.splice(start + 1..start + 3, len[..n].iter().copied());
    }
}

/// MQTT variable-length "remaining length"; returns the number of bytes used (1..=4).
/// Lengths are bounded by the payload sizes loadgen writes (a few hundred bytes).
#[inline]
pub fn remaining_length(mut len: usize, out: &mut [u8; 4]) -> usize {
    let mut i = 0;
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out[i] = b;
        i += 1;
        if len == 0 || i == 4 {
            return i;
        }
    }
}

/// Appends the sensor body of message `seq` from `device`: `timeCreated` is `created_us`, the
/// time it is written; `sentUs` is `sent_us`, its intended send time (the latency is measured
/// from it, so it includes loadgen's own lateness).
#[inline]
pub fn write_message_body(
    out: &mut Vec<u8>,
    r: &Reading,
    seq: u64,
    device: &str,
    created_us: u64,
    sent_us: u64,
) {
    write_body(
        out,
        r,
        UNIX_EPOCH + Duration::from_micros(created_us),
        &Tracking {
            seq: Some(seq),
            device: Some(device),
            sent_us: Some(sent_us),
        },
    );
}

/// The probe's temperature: 1000 above every threshold of the run (before and after the
/// twin step, and every per-device one).
pub fn probe_temperature(
    threshold: f64,
    twin_step: Option<f64>,
    per_device: &[(String, f64)],
) -> f64 {
    per_device
        .iter()
        .map(|&(_, v)| v)
        .fold(threshold.max(twin_step.unwrap_or(threshold)), f64::max)
        + 1000.0
}

/// The readings of the probe body at `temperature`.
pub fn probe_reading(temperature: f64) -> Reading {
    Reading {
        machine_temperature: temperature,
        machine_pressure: 1.0 + (temperature - 21.0) * 9.0 / 79.0,
        ambient_temperature: 21.0,
        ambient_humidity: 25,
    }
}

/// The readiness probe: an alert-worthy body (`temperature` well above any threshold loadgen
/// uses) without a `seq`, marked `"probe":true`, so the sink recognises and never counts it.
pub fn probe_body(temperature: f64, sent_us: u64) -> Vec<u8> {
    let r = probe_reading(temperature);
    let mut out = Vec::with_capacity(256);
    write_body(
        &mut out,
        &r,
        UNIX_EPOCH + Duration::from_micros(sent_us),
        &Tracking {
            seq: None,
            device: Some(PROBE_DEVICE),
            sent_us: Some(sent_us),
        },
    );
    out.pop(); // the closing brace
    out.extend_from_slice(br#","probe":true}"#);
    out
}

/// Device name (and topic suffix) of the readiness probe.
pub const PROBE_DEVICE: &str = "loadgen-probe";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_draw_follows_the_ratio_and_not_the_alert_draw() {
        let n = 100_000u64;
        let bad = (0..n).filter(|&s| is_malformed(7, s, 0.1)).count() as f64;
        assert!((bad / n as f64 - 0.1).abs() < 0.01, "{bad}");
        assert!(!(0..n).any(|s| is_malformed(7, s, 0.0)));
        assert!((0..n).all(|s| is_malformed(7, s, 1.0)));
        // Independent of the alert draw: malformed messages are alerts at the same ratio.
        let (mut bad, mut bad_alert) = (0u64, 0u64);
        for s in 0..n {
            if is_malformed(7, s, 0.2) {
                bad += 1;
                bad_alert += u64::from(ratio_temperature(7, s, 0.5, 25.0) > 25.0);
            }
        }
        assert!((bad_alert as f64 / bad as f64 - 0.5).abs() < 0.03);
    }
    use bytes::BytesMut;
    use rumqttc::v5::mqttbytes::{v5 as mq5, QoS as QoS5};
    use rumqttc::{Publish, QoS};

    fn ours(fmt: PublishFormat, retain: bool, topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = b"prefix".to_vec();
        encode_publish(&mut out, fmt, retain, topic.as_bytes(), pkid, |o| {
            o.extend_from_slice(payload)
        });
        assert_eq!(&out[..6], b"prefix");
        out.split_off(6)
    }

    #[test]
    fn publish_matches_rumqttc_v4() {
        for (qos, pkid) in [(QoS::AtMostOnce, 0), (QoS::AtLeastOnce, 65535)] {
            for len in [0usize, 10, 117, 118, 200, 16_370, 16_400, 70_000] {
                let payload = vec![b'x'; len];
                let mut p = Publish::new("telemetry/dev-1", qos, payload.clone());
                p.pkid = pkid;
                p.retain = len == 10;
                let mut want = BytesMut::new();
                p.write(&mut want).unwrap();
                let fmt = PublishFormat {
                    qos: qos as u8,
                    v5: false,
                };
                assert_eq!(
                    ours(fmt, len == 10, "telemetry/dev-1", pkid, &payload),
                    want.to_vec(),
                    "qos {qos:?} len {len}"
                );
            }
        }
    }

    #[test]
    fn publish_matches_rumqttc_v5() {
        for (qos, pkid) in [(QoS5::AtMostOnce, 0), (QoS5::AtLeastOnce, 7)] {
            for len in [3usize, 200, 20_000] {
                let payload = vec![b'y'; len];
                let mut p = mq5::Publish::new("t/a", qos, payload.clone(), None);
                p.pkid = pkid;
                let mut want = BytesMut::new();
                p.write(&mut want).unwrap();
                let fmt = PublishFormat {
                    qos: qos as u8,
                    v5: true,
                };
                assert_eq!(ours(fmt, false, "t/a", pkid, &payload), want.to_vec());
            }
        }
    }

    #[test]
    fn publish_with_a_per_message_topic_matches_rumqttc() {
        use crate::target::{AzureModule, Target};
        let t = Target::Azure(AzureModule {
            device_id: "dev1".into(),
            module_id: "edgefilter".into(),
            input_name: "input1".into(),
            output_name: "output1".into(),
            batch_id: "b".into(),
        })
        .input_topic("dev-0");
        let fmt = PublishFormat { qos: 1, v5: false };
        let mut out = Vec::new();
        encode_publish_with(
            &mut out,
            fmt,
            false,
            |o| t.write(o, Some(77)),
            9,
            |o| o.extend_from_slice(b"{}"),
        );
        let mut p = Publish::new(t.topic(Some(77)), QoS::AtLeastOnce, b"{}".to_vec());
        p.pkid = 9;
        let mut want = BytesMut::new();
        p.write(&mut want).unwrap();
        assert_eq!(out, want.to_vec());
    }

    #[test]
    fn publish_literal_bytes() {
        let fmt = PublishFormat { qos: 1, v5: false };
        assert_eq!(
            ours(fmt, false, "a/b", 10, b"hi"),
            [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i']
        );
    }

    #[test]
    fn ratio_temperatures_are_on_the_right_side() {
        let mut alerts = 0;
        for seq in 0..10_000 {
            let t = ratio_temperature(7, seq, 0.3, 25.0);
            assert!((5.0..=65.0).contains(&t));
            if t > 25.0 {
                assert!(t >= 25.5);
                alerts += 1;
            } else {
                assert!(t <= 24.5);
            }
            // Deterministic in (seed, seq).
            assert_eq!(t, ratio_temperature(7, seq, 0.3, 25.0));
        }
        assert!((2_850..3_150).contains(&alerts), "{alerts}");
        assert!((0..100).all(|s| ratio_temperature(1, s, 1.0, 25.0) > 25.0));
        assert!((0..100).all(|s| ratio_temperature(1, s, 0.0, 25.0) < 25.0));
    }

    #[test]
    fn body_round_trips_the_temperature() {
        let mut d = Device::new(3, 42, TopicTemplate::fixed("telemetry/dev-3".into()));
        assert_eq!(d.name, "dev-3");
        let r = d.reading(TempSource::Ratio(0.5), 42, 17, 25.0);
        let mut out = Vec::new();
        write_message_body(
            &mut out,
            &r,
            17,
            &d.name,
            1_700_000_000_123_456,
            1_700_000_000_000_000,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["machine"]["temperature"].as_f64(),
            Some(r.machine_temperature)
        );
        assert_eq!(v["seq"], 17);
        assert_eq!(v["device"], "dev-3");
        assert_eq!(v["sentUs"], 1_700_000_000_000_000u64);
        assert_eq!(v["timeCreated"], "2023-11-14T22:13:20.123456Z");
        // The profile: the first reading of every device is 21.
        let mut d = Device::new(0, 42, TopicTemplate::fixed("t".into()));
        assert_eq!(
            d.reading(TempSource::Profile, 42, 0, 25.0)
                .machine_temperature,
            21.0
        );
    }

    #[test]
    fn probe_is_marked_and_has_no_seq() {
        let p = probe_body(1025.0, 5);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["probe"], true);
        assert_eq!(v["machine"]["temperature"], 1025.0);
        assert!(v.get("seq").is_none());
        assert_eq!(v["device"], PROBE_DEVICE);
    }
}
