//! The alert rules against a reference model written independently of them
//! (`tests/model/rules_model.py`, from README "Alert rules"): a long random stream — many
//! devices, values on and around the thresholds, malformed and field-less payloads, rule
//! changes (threshold, mode, hysteresis, clears, rate limit, window, lateness, idle time,
//! everything off), timer ticks and a final flush — goes through the real verdict stage in
//! random batches and through the model; every operation must publish the same things, in the
//! same order (a tick's or flush's summaries: the same set). Once with arrival time, once with
//! event time (out-of-order times, lateness, payloads without a time).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgefilter::pipeline::rules::summary::rfc3339;
use edgefilter::pipeline::rules::{AlertMode, Anchor, RuleSettings, Rules};
use edgefilter::pipeline::stage::{Batch, Job, OutKind, Stage, Work, NO_JOB};
use edgefilter::pipeline::verdict::{parse_rfc3339_us, FieldPath};
use serde_json::{json, Value};

const BASE_US: i64 = 1_700_000_000_000_000;

/// One operation of the stream.
enum Op {
    Rules(Arc<Rules>, Value),
    Read {
        device: String,
        body: String,
        at: i64,
    },
    Tick(i64),
    Flush,
}

fn random_rules(rng: &mut fastrand::Rng, event: bool, anchor: Anchor) -> (Arc<Rules>, Value) {
    let threshold = [20.0, 25.0, 30.0][rng.usize(..3)];
    let off = rng.u8(..8) == 0;
    let mut s = RuleSettings {
        mode: if rng.bool() {
            AlertMode::Edge
        } else {
            AlertMode::Every
        },
        hysteresis: [0.0, 0.5, 2.0][rng.usize(..3)],
        clear: rng.bool(),
        min_interval: Duration::from_millis([0, 0, 500, 2000][rng.usize(..4)]),
        window: Duration::from_secs([0, 1, 2, 5][rng.usize(..4)]),
        lateness: Duration::ZERO,
        idle: Duration::from_secs([1, 3, 30][rng.usize(..3)]),
        ..RuleSettings::default()
    };
    if event && !s.window.is_zero() {
        s.lateness = [Duration::ZERO, Duration::from_millis(500), s.window][rng.usize(..3)];
    }
    if off {
        s.mode = AlertMode::Every;
        s.min_interval = Duration::ZERO;
        s.window = Duration::ZERO;
    }
    s.check().unwrap();
    let us = |d: Duration| d.as_micros() as i64;
    let doc = json!({
        "op": "rules", "threshold": threshold, "mode": s.mode.as_str(),
        "hysteresis": s.hysteresis, "clear": s.clear,
        "min_interval_us": us(s.min_interval), "window_us": us(s.window),
        "lateness_us": us(s.lateness), "idle_us": us(s.idle),
        "event_field": if event { Value::from("t") } else { Value::Null },
    });
    let path = event.then(|| FieldPath::parse("t").unwrap());
    (Rules::with(threshold, s, path, anchor), doc)
}

/// A payload of device `d` with a temperature near the thresholds (exact thresholds and
/// re-arm points included), sometimes malformed or without the field; with event time a
/// `t` that runs ahead of, behind and out of order with its arrival, or is missing.
fn body(rng: &mut fastrand::Rng, at: i64, skew: i64, event: bool) -> String {
    let v: f64 = match rng.u8(..10) {
        0 => [20.0, 25.0, 30.0, 18.0, 23.0, 24.5, 28.0, 29.5][rng.usize(..8)],
        _ => (rng.f64() * 30.0 + 12.0) * 4.0f64.round() / 4.0,
    };
    let v = (v * 4.0).round() / 4.0;
    let t = match (event, rng.u8(..20)) {
        (false, _) | (true, 0) => String::new(),
        (true, 1) => format!(r#","t":{}"#, (at + skew) / 250_000 * 250_000 / 1_000_000),
        (true, 2) => r#","t":"not a time""#.to_string(),
        (true, n) => {
            let jitter = if n < 6 { -(rng.i64(0..1_500_000)) } else { 0 };
            format!(r#","t":"{}""#, rfc3339(at + skew + jitter))
        }
    };
    match rng.u8(..40) {
        0 => format!(r#"{{"machine":{{"temperature":{v}}}"#), // not JSON
        1 => format!(r#"{{"ambient":{{"temperature":{v}}}{t}}}"#), // no field
        2 => format!(r#"{{"machine":{{"temperature":"{v}"}}{t}}}"#), // not a number
        _ => format!(r#"{{"machine":{{"temperature":{v}}}{t}}}"#),
    }
}

fn stream(seed: u64, n: usize, event: bool, anchor: Anchor) -> Vec<Op> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let devices = 40;
    let skews: Vec<i64> = (0..devices)
        .map(|_| rng.i64(-3_000_000..3_000_000))
        .collect();
    let mut ops = Vec::new();
    let mut now = BASE_US;
    let (rules, doc) = random_rules(&mut rng, event, anchor);
    ops.push(Op::Rules(rules, doc));
    for _ in 0..n {
        now += rng.i64(0..40_000);
        match rng.u16(..1000) {
            0..=2 => {
                let (rules, doc) = random_rules(&mut rng, event, anchor);
                ops.push(Op::Rules(rules, doc));
            }
            3..=30 => ops.push(Op::Tick(now)),
            _ => {
                // A few devices talk most; the rest now and then (eviction, silent windows).
                let d = if rng.bool() {
                    rng.usize(..4)
                } else {
                    rng.usize(..devices)
                };
                ops.push(Op::Read {
                    device: format!("telemetry/dev-{d}"),
                    body: body(&mut rng, now, skews[d], event),
                    at: now,
                });
            }
        }
    }
    ops.push(Op::Flush);
    ops
}

/// What one publish is, comparable across the two implementations.
fn canonical(kind: &OutKind) -> Value {
    match kind {
        OutKind::Alert => json!(["alert"]),
        OutKind::Clear => json!(["clear"]),
        OutKind::Summary { device, payload } => {
            let v: Value = serde_json::from_slice(payload).unwrap();
            let t = |k: &str| parse_rfc3339_us(v[k].as_str().unwrap()).unwrap();
            assert_eq!(v["device"], String::from_utf8_lossy(device).as_ref());
            json!([
                "summary",
                v["device"],
                t("windowStart"),
                t("windowEnd"),
                v["count"],
                v["min"],
                v["max"],
                v["mean"],
                v["last"],
                v["alerts"],
                t("firstArrival"),
                t("lastArrival"),
                v["partial"]
            ])
        }
    }
}

/// Runs the stream through a real stage in random batches: per operation, what it published.
fn run_stage(ops: &[Op], anchor: Anchor, seed: u64) -> Vec<Vec<Value>> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1 << 16);
    let mut out: Vec<Vec<Value>> = ops.iter().map(|_| Vec::new()).collect();
    let instant = |us: i64| anchor.at + Duration::from_micros((us - anchor.unix_us) as u64);
    let mut rules: Option<Arc<Rules>> = None;
    let mut pending: Vec<Job<usize>> = Vec::new();
    let run =
        |stage: &mut Stage, batch: &mut Batch<usize>, op: usize, out: &mut Vec<Vec<Value>>| {
            stage.run(batch);
            for o in &batch.outs {
                let at = if o.job == NO_JOB {
                    op
                } else {
                    batch.jobs[o.job as usize].meta
                };
                out[at].push(canonical(&o.kind));
            }
        };
    for (i, op) in ops.iter().enumerate() {
        let flush_jobs = !matches!(op, Op::Read { .. }) || pending.len() >= rng.usize(1..64);
        if flush_jobs && !pending.is_empty() {
            let mut b = Batch::new(0, rules.clone().unwrap(), std::mem::take(&mut pending));
            run(&mut stage, &mut b, usize::MAX, &mut out);
        }
        match op {
            Op::Rules(r, _) => {
                // As the flow does at a twin patch: the stage sees the new rules at once.
                rules = Some(r.clone());
                let now = ops[..i].iter().rev().find_map(|o| match o {
                    Op::Read { at, .. } => Some(*at),
                    Op::Tick(t) => Some(*t),
                    _ => None,
                });
                let mut b =
                    Batch::control(0, r.clone(), Work::Tick(instant(now.unwrap_or(BASE_US))));
                run(&mut stage, &mut b, i, &mut out);
            }
            Op::Read { device, body, at } => pending.push(Job::new(
                Bytes::from(body.clone()),
                Bytes::from(device.clone()),
                instant(*at),
                i,
            )),
            Op::Tick(now) => {
                let mut b = Batch::control(0, rules.clone().unwrap(), Work::Tick(instant(*now)));
                run(&mut stage, &mut b, i, &mut out);
            }
            Op::Flush => {
                let mut b = Batch::control(0, rules.clone().unwrap(), Work::Flush);
                run(&mut stage, &mut b, i, &mut out);
            }
        }
    }
    out
}

fn run_model(ops: &[Op]) -> Vec<Vec<Value>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/model/rules_model.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the reference model");
    let mut input = String::new();
    let mut last = BASE_US;
    for op in ops {
        let line = match op {
            Op::Rules(_, doc) => {
                // The model's rule change happens at the same point as the stage's tick.
                let mut d = doc.clone();
                d["now_us"] = last.into();
                d
            }
            Op::Read { device, body, at } => {
                last = *at;
                json!({"op": "read", "device": device, "body": body, "arrival_us": at})
            }
            Op::Tick(now) => {
                last = *now;
                json!({"op": "tick", "now_us": now})
            }
            Op::Flush => json!({"op": "flush"}),
        };
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "the model failed");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Vec<Value>>(l).unwrap())
        .collect()
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|x| x.to_string());
    v
}

fn compare(event: bool, seed: u64, n: usize) {
    let anchor = Anchor {
        at: Instant::now(),
        unix_us: BASE_US,
    };
    let ops = stream(seed, n, event, anchor);
    let real = run_stage(&ops, anchor, seed);
    let model = run_model(&ops);
    assert_eq!(real.len(), model.len());
    let (mut alerts, mut clears, mut summaries) = (0, 0, 0);
    for (i, (r, m)) in real.into_iter().zip(model).enumerate() {
        let (r, m) = match &ops[i] {
            Op::Read { .. } => (r, m),
            _ => (sorted(r), sorted(m)),
        };
        for x in &r {
            match x[0].as_str() {
                Some("alert") => alerts += 1,
                Some("clear") => clears += 1,
                _ => summaries += 1,
            }
        }
        if r != m {
            let what = match &ops[i] {
                Op::Read { device, body, at } => format!("read {device} {body} at {at}"),
                Op::Tick(t) => format!("tick at {t}"),
                Op::Rules(_, d) => format!("rules {d}"),
                Op::Flush => "flush".into(),
            };
            panic!("operation {i} ({what}):\n stage: {r:?}\n model: {m:?}");
        }
    }
    // The stream exercises every kind of output.
    assert!(
        alerts > 1000 && clears > 100 && summaries > 1000,
        "{alerts} {clears} {summaries}"
    );
}

#[test]
fn arrival_time_rules_match_the_reference_model() {
    compare(false, 11, 100_000);
}

#[test]
fn event_time_rules_match_the_reference_model() {
    compare(true, 12, 100_000);
}
