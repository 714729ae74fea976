//! Benches of the pipeline without sockets or tokio: the worker pool in-process for 1..N workers
//! (hand-off, verdict, hand-back), and the encoding of alert batches (one PUBLISH per alert in
//! MQTT 3.1.1 and 5, JSON arrays). `Throughput::Elements`: results read as messages per second.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgefilter::mqtt::codec::{OutPublish, PublishProperties, Version};
use edgefilter::pipeline::alert_batch::json_array;
use edgefilter::pipeline::pool::{shard_of, Pool, SharedStage};
use edgefilter::pipeline::stage::{Batch, Job, Rules, Stage};
use edgefilter::pipeline::verdict::FieldPath;
use edgefilter::sensor::{write_body, Sensor, Tracking};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Sensor payloads with the real profile (about 95 % alerts at threshold 25 once warm; the
/// threshold below is chosen for ~30 % alerts like the peers' runs).
fn payloads(n: usize) -> Vec<Bytes> {
    let mut sensors: Vec<Sensor> = (0..10).map(|i| Sensor::new(i + 1)).collect();
    let now = SystemTime::now();
    (0..n)
        .map(|i| {
            let s = &mut sensors[i % 10];
            if s.temperature() > 100.0 {
                s.reset();
            }
            let r = s.next_reading();
            let mut out = Vec::with_capacity(220);
            write_body(
                &mut out,
                &r,
                now,
                &Tracking {
                    seq: Some(i as u64),
                    device: None,
                    sent_us: None,
                },
            );
            Bytes::from(out)
        })
        .collect()
}

const BATCH: usize = 64;
const MESSAGES: usize = 64 * 256;

fn pool(c: &mut Criterion) {
    let field = FieldPath::parse("machine.temperature").unwrap();
    let bodies = payloads(MESSAGES);
    let topics: Vec<Bytes> = (0..16)
        .map(|i| Bytes::from(format!("telemetry/dev-{i}")))
        .collect();
    let max_workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.measurement_time(Duration::from_secs(5));
    for workers in 1..=max_workers {
        let (tx, rx) = crossbeam_channel::unbounded::<Batch<u32>>();
        let stages: Vec<SharedStage> = (0..workers)
            .map(|_| Arc::new(Mutex::new(Stage::new(field.clone(), 262_144))))
            .collect();
        let pool: Pool<u32> = Pool::start(&stages, 1024, tx).unwrap();
        let rules = Rules::new(60.0);
        group.bench_with_input(BenchmarkId::new("workers", workers), &workers, |b, _| {
            b.iter(|| {
                // Per-topic batches of 64, as the connection hands them over after a read.
                let mut sent = 0;
                for (i, chunk) in bodies.chunks(BATCH).enumerate() {
                    let topic = &topics[i % topics.len()];
                    let now = Instant::now();
                    let jobs = chunk
                        .iter()
                        .map(|p| Job::new(p.clone(), topic.clone(), now, 0u32))
                        .collect();
                    let shard = shard_of(topic, workers);
                    pool.submit(Batch::new(shard, rules.clone(), jobs)).unwrap();
                    sent += 1;
                }
                let mut alerts = 0usize;
                for _ in 0..sent {
                    let batch = rx.recv().unwrap();
                    alerts += batch.jobs.iter().filter(|j| j.verdict.is_alert()).count();
                }
                alerts
            })
        });
        pool.shutdown();
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let bodies = payloads(BATCH);
    let topic = Bytes::from_static(b"alerts/telemetry/dev-1");
    let props = PublishProperties {
        user_properties: vec![
            ("sequenceNumber".into(), "42".into()),
            (
                "batchId".into(),
                "5d7e3c1a-4f4b-4d1e-9d3c-1a2b3c4d5e6f".into(),
            ),
            ("MessageType".into(), "Alert".into()),
        ],
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    let mut group = c.benchmark_group("encode_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut buf = BytesMut::with_capacity(64 * 1024);
    for (name, version, with_props) in [
        ("single_v311", Version::V4, false),
        ("single_v5", Version::V5, true),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                for (i, body) in bodies.iter().enumerate() {
                    let p = with_props.then(|| props.clone());
                    let mut packet = OutPublish::new(version, &topic, body.clone(), 1, false, p);
                    packet.set_pkid(i as u16 + 1);
                    packet.write(&mut buf).unwrap();
                }
                buf.len()
            })
        });
    }
    group.bench_function("array", |b| {
        b.iter(|| {
            buf.clear();
            let payload = json_array(bodies.iter().map(|b| &b[..]));
            let mut packet = OutPublish::new(Version::V4, &topic, payload, 1, false, None);
            packet.set_pkid(1);
            packet.write(&mut buf).unwrap();
            buf.len()
        })
    });
    group.finish();
}

criterion_group!(benches, pool, encoding);
criterion_main!(benches);
