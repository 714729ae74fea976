//! Bench of the durable outbox (`src/outbox.rs`): what recording one alert costs before its
//! input may be acknowledged — `append` + `commit` of a 200-byte alert with its IoT Edge
//! topic, written only (survives the process) or fdatasync'd (survives a power cut), and
//! `done` (edgeHub's PUBACK of the alert). On the filesystem of the working directory (the
//! module's volume), not tmpfs. `Throughput::Elements`: results read as alerts per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgefilter::io::outbox::{Durability, Outbox};

const TOPIC: &[u8] = b"devices/gw:01@plant/modules/filtermodule/messages/events/%24.on=output1\
&%24.ct=application%2Fjson&%24.ce=utf-8&MessageType=Alert&batchId=0b5f0ac5-3c1a-4a43-9e2b-6f2f3c1f8a11\
&sequenceNumber=123456";
const BODY: &[u8] = br#"{"machine":{"temperature":31.25,"pressure":1.1234567},"ambient":{"temperature":21.07,"humidity":25},"timeCreated":"2026-11-26T07:00:00.1234567Z"}"#;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(1));
    for (name, durability) in [
        ("written", Durability::Written),
        ("fsync", Durability::Fsync),
    ] {
        let dir = tempfile::tempdir_in(".").unwrap();
        let (mut o, _) = Outbox::open(dir.path(), durability, 64 << 20).unwrap();
        g.bench_function(format!("append+commit+done/{name}"), |b| {
            b.iter(|| {
                let seq = o.append(TOPIC, BODY).unwrap();
                o.commit().unwrap();
                o.done(seq).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
