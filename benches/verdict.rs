//! Benchmark of the hot path's verdict (`pipeline::verdict`): messages per second per core for
//! the production [`Evaluator`] (simd-json tape, reused buffers) beside the alternatives —
//! simd-json's borrowed value, serde_json's `Value` (the baseline) and serde_json into a tiny
//! typed struct — plus the Evaluator's slow-path scanner alone. Inputs: real sensor payloads
//! (`sensor::write_body` with loadgen's tracking fields, about half of them alerts) and two
//! larger documents (4 KB with the field last; 300 keys).
//!
//! The `verdict/stage` group runs the verdict stage (`pipeline::stage`) over the sensor
//! payloads in batches of 64 as the pool runs it: the seed's rules (the default), a condition
//! of three comparisons, a per-device map of 10,000 topic filters, and both.
//!
//! `cargo bench --bench verdict -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use edgefilter::pipeline::condition::Condition;
use edgefilter::pipeline::rules::{Anchor, DeviceThresholds, RuleSettings, Rules};
use edgefilter::pipeline::stage::{Batch, Job, Stage};
use edgefilter::pipeline::verdict::{Evaluator, FieldPath, Verdict};
use edgefilter::sensor::{write_body, Sensor, Tracking};
use serde::Deserialize;
use simd_json::prelude::*;

const THRESHOLD: f64 = 50.0;
const MAX_PAYLOAD: usize = 262_144;

/// The condition of the stage benchmark: three comparisons over three fields.
const CONDITION: &str =
    "machine.temperature > threshold and machine.pressure >= 1.5 and ambient.humidity < 90";

/// 10,000 entries: an exact topic for each of the 8 devices and 9,982 others, and 10 filters
/// with wildcards.
fn big_map() -> Arc<DeviceThresholds> {
    let mut map: std::collections::BTreeMap<String, f64> = (0..9_982)
        .map(|i| (format!("telemetry/other-{i:05}"), 40.0 + (i % 20) as f64))
        .collect();
    for d in 0..8 {
        map.insert(format!("telemetry/sensor-{d:02}"), 45.0 + d as f64);
    }
    for i in 0..10 {
        map.insert(format!("plant{i}/+/bearing"), 80.0);
    }
    assert_eq!(map.len(), 10_000);
    Arc::new(DeviceThresholds::new(map).expect("a valid map"))
}

/// The sensor payloads as batches of 64 jobs, each with its device's topic.
fn batches(set: &[Vec<u8>], rules: &Arc<Rules>) -> Vec<Batch<()>> {
    let now = Instant::now();
    set.chunks(64)
        .map(|chunk| {
            let jobs = chunk
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let device = Bytes::from(format!("telemetry/sensor-{:02}", i % 8));
                    Job::new(Bytes::copy_from_slice(p), device, now, ())
                })
                .collect();
            Batch::new(0, rules.clone(), jobs)
        })
        .collect()
}

fn stage_group(c: &mut Criterion, set: &[Vec<u8>]) {
    let mut group = c.benchmark_group("verdict/stage");
    group.throughput(Throughput::Elements(set.len() as u64));
    let condition = Some(Arc::new(
        Condition::parse(CONDITION).expect("a valid condition"),
    ));
    let map = big_map();
    let variants: [(&str, RuleSettings); 4] = [
        ("default", RuleSettings::default()),
        (
            "condition_3_comparisons",
            RuleSettings {
                condition: condition.clone(),
                ..RuleSettings::default()
            },
        ),
        (
            "map_10000",
            RuleSettings {
                thresholds: map.clone(),
                ..RuleSettings::default()
            },
        ),
        (
            "condition_and_map",
            RuleSettings {
                condition,
                thresholds: map,
                ..RuleSettings::default()
            },
        ),
    ];
    for (name, settings) in variants {
        let rules = Rules::with(THRESHOLD, settings, None, Anchor::now());
        let mut batches = batches(set, &rules);
        let mut stage = Stage::new(
            FieldPath::parse("machine.temperature").unwrap(),
            MAX_PAYLOAD,
        );
        let alerts: usize = batches
            .iter_mut()
            .map(|b| {
                stage.run(b);
                b.outs.len()
            })
            .sum();
        eprintln!("verdict/stage/{name}: {alerts} alerts of {}", set.len());
        group.bench_function(name, |b| {
            b.iter(|| {
                for batch in batches.iter_mut() {
                    stage.run(black_box(batch));
                }
            })
        });
    }
    group.finish();
}

/// 1000 sensor bodies from 8 devices (125 readings each: 21 °C climbing to about 80 °C).
fn sensor_payloads() -> Vec<Vec<u8>> {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let mut out = Vec::new();
    for device in 0..8u64 {
        let mut sensor = Sensor::new(device);
        let name = format!("sensor-{device:02}");
        for i in 0..125u64 {
            let seq = device * 125 + i;
            let mut body = Vec::with_capacity(256);
            let tracking = Tracking {
                seq: Some(seq),
                device: Some(&name),
                sent_us: Some(1_790_000_000_000_000 + seq * 1000),
            };
            let now = t0 + Duration::from_micros(seq * 1234);
            write_body(&mut body, &sensor.next_reading(), now, &tracking);
            out.push(body);
        }
    }
    out
}

/// About 4 KB of unrelated fields (strings, numbers, nested objects, arrays), then the field.
fn large_field_last() -> Vec<u8> {
    let mut doc = String::from("{");
    let mut i = 0;
    while doc.len() < 4000 {
        doc.push_str(&format!(
            r#""key{i}":{{"name":"value number {i}","n":{i}.25,"tags":["a","b",{i}],"ok":true}},"#
        ));
        i += 1;
    }
    doc.push_str(r#""machine":{"pressure":7.1,"temperature":71.5}}"#);
    doc.into_bytes()
}

/// 300 small keys at the top level and in `machine`, the temperature last.
fn many_keys() -> Vec<u8> {
    let mut doc = String::from("{");
    for i in 0..150 {
        doc.push_str(&format!(r#""k{i}":{i},"#));
    }
    doc.push_str(r#""machine":{"#);
    for i in 0..150 {
        doc.push_str(&format!(r#""m{i}":{i},"#));
    }
    doc.push_str(r#""temperature":51}}"#);
    doc.into_bytes()
}

#[derive(Deserialize)]
struct Message {
    machine: Option<Machine>,
}

#[derive(Deserialize)]
struct Machine {
    temperature: Option<f64>,
}

fn serde_value(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload).is_ok_and(|v| {
        v.get("machine")
            .and_then(|m| m.get("temperature"))
            .and_then(serde_json::Value::as_f64)
            .is_some_and(|t| t > THRESHOLD)
    })
}

fn serde_typed(payload: &[u8]) -> bool {
    serde_json::from_slice::<Message>(payload).is_ok_and(|m| {
        m.machine
            .and_then(|m| m.temperature)
            .is_some_and(|t| t > THRESHOLD)
    })
}

fn simd_borrowed(buf: &mut Vec<u8>, payload: &[u8]) -> bool {
    // simd-json parses in place: copy the input first (into a reused buffer).
    buf.clear();
    buf.extend_from_slice(payload);
    simd_json::to_borrowed_value(buf).is_ok_and(|v| {
        v.get("machine")
            .and_then(|m| m.get("temperature"))
            .and_then(|t| t.cast_f64())
            .is_some_and(|t| t > THRESHOLD)
    })
}

/// Benchmarks `decide` over every payload of `set` (one element per message).
fn per_message(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    set: &[Vec<u8>],
    mut decide: impl FnMut(&[u8]) -> bool,
) {
    group.bench_function(name, |b| {
        b.iter(|| {
            set.iter()
                .filter(|p| decide(black_box(p.as_slice())))
                .count()
        })
    });
}

fn approaches(group: &mut BenchmarkGroup<'_, WallTime>, set: &[Vec<u8>]) {
    let field = FieldPath::parse("machine.temperature").expect("valid path");
    group.throughput(Throughput::Elements(set.len() as u64));
    let mut evaluator = Evaluator::new(field.clone(), MAX_PAYLOAD);
    per_message(group, "evaluator_simd_tape", set, |p| {
        evaluator.evaluate(p, THRESHOLD).is_alert()
    });
    let mut buf = Vec::new();
    per_message(group, "simd_json_borrowed_value", set, |p| {
        simd_borrowed(&mut buf, p)
    });
    per_message(group, "serde_json_value", set, serde_value);
    per_message(group, "serde_json_typed", set, serde_typed);
    let mut slow = Evaluator::new(field, MAX_PAYLOAD);
    per_message(group, "evaluator_slow_path_only", set, |p| {
        slow.evaluate_slow(p, THRESHOLD).is_alert()
    });
}

/// All approaches must agree on the inputs, or the comparison is meaningless.
fn check(set: &[Vec<u8>]) -> usize {
    let mut evaluator = Evaluator::new(
        FieldPath::parse("machine.temperature").expect("valid path"),
        MAX_PAYLOAD,
    );
    let mut buf = Vec::new();
    let mut alerts = 0;
    for p in set {
        let v = evaluator.evaluate(p, THRESHOLD);
        assert!(matches!(v, Verdict::Alert | Verdict::Unmatched), "{v:?}");
        let alert = v.is_alert();
        assert_eq!(alert, serde_value(p));
        assert_eq!(alert, serde_typed(p));
        assert_eq!(alert, simd_borrowed(&mut buf, p));
        assert_eq!(v, evaluator.evaluate_slow(p, THRESHOLD));
        alerts += usize::from(alert);
    }
    alerts
}

fn bench(c: &mut Criterion) {
    let sensor = sensor_payloads();
    let alerts = check(&sensor);
    let mean = sensor.iter().map(Vec::len).sum::<usize>() / sensor.len();
    eprintln!(
        "sensor payloads: {} ({alerts} alerts at threshold {THRESHOLD}), mean {mean} bytes",
        sensor.len()
    );
    let mut group = c.benchmark_group("verdict/sensor");
    approaches(&mut group, &sensor);
    group.finish();
    stage_group(c, &sensor);

    for (name, doc) in [
        ("verdict/4kb_field_last", large_field_last()),
        ("verdict/300_keys", many_keys()),
    ] {
        let set = vec![doc];
        assert_eq!(check(&set), 1);
        eprintln!("{name}: {} bytes", set[0].len());
        let mut group = c.benchmark_group(name);
        approaches(&mut group, &set);
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
