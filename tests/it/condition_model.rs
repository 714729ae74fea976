//! Conditions and per-device thresholds against a reference model written independently of
//! them (`tests/model/condition_model.py`, from the README's semantics over Python's
//! `json.loads`): 60,000 random cases — documents with nested objects, duplicate keys,
//! escaped keys, integers beyond 64 bits, `1e400`, lone surrogates, strings, booleans, nulls,
//! arrays where numbers are expected; random conditions over those fields (every operator,
//! `and`/`or`/`not`, parentheses, values on either side, `threshold`); random devices and
//! maps of topic filters — go through the real verdict stage and through the model, and every
//! verdict must be the same.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use edgefilter::pipeline::condition::Condition;
use edgefilter::pipeline::rules::{Anchor, DeviceThresholds, RuleSettings, Rules};
use edgefilter::pipeline::stage::{Batch, Job, Stage};
use edgefilter::pipeline::verdict::{FieldPath, Verdict};
use serde_json::{json, Value};

const CASES: usize = 60_000;

/// Field paths the conditions and documents share (as condition text, and as keys).
const PATHS: [(&str, &[&str]); 8] = [
    ("machine.temperature", &["machine", "temperature"]),
    ("machine.pressure", &["machine", "pressure"]),
    ("ambient.temperature", &["ambient", "temperature"]),
    ("a", &["a"]),
    ("b", &["b"]),
    ("m.x.y", &["m", "x", "y"]),
    ("\"k.1\"", &["k.1"]),
    ("\"and\".threshold", &["and", "threshold"]),
];

const NUMBERS: [&str; 16] = [
    "0",
    "-0",
    "1",
    "-1",
    "1.5",
    "25",
    "25.0",
    "24.999",
    "300",
    "-40",
    "1e2",
    "2.5E-1",
    "9007199254740993",
    "123456789012345678901234567890",
    "1e400",
    "-1e400",
];

fn number(rng: &mut fastrand::Rng) -> String {
    if rng.bool() {
        NUMBERS[rng.usize(..NUMBERS.len())].to_string()
    } else {
        format!("{}", (rng.i32(-400..400) as f64) / 4.0)
    }
}

/// A JSON value for a field: mostly numbers, sometimes another kind or an object.
fn value(rng: &mut fastrand::Rng, depth: usize) -> String {
    match rng.u8(..20) {
        0 => "\"25\"".into(),
        1 => "true".into(),
        2 => "null".into(),
        3 => "[1]".into(),
        4 if depth < 3 => object(rng, depth + 1),
        _ => number(rng),
    }
}

fn key(rng: &mut fastrand::Rng) -> String {
    const KEYS: [&str; 12] = [
        "machine",
        "temperature",
        "pressure",
        "ambient",
        "a",
        "b",
        "m",
        "x",
        "y",
        "k.1",
        "and",
        "threshold",
    ];
    let k = KEYS[rng.usize(..KEYS.len())];
    match (k, rng.u8(..6)) {
        ("temperature", 0) => "temp\\u0065rature".into(),
        _ => k.into(),
    }
}

fn object(rng: &mut fastrand::Rng, depth: usize) -> String {
    let n = rng.usize(0..5);
    let members: Vec<String> = (0..n)
        .map(|_| format!("\"{}\":{}", key(rng), value(rng, depth)))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// A document that holds (or not) each path, with noise, duplicates and slow-path material.
fn document(rng: &mut fastrand::Rng) -> String {
    if rng.u8(..50) == 0 {
        return ["[1,2]", "42", "\"s\"", "{", "{\"a\":1}x", "{\"a\":NaN}"][rng.usize(..6)].into();
    }
    let mut members = Vec::new();
    for (_, keys) in PATHS {
        if rng.u8(..4) == 0 {
            continue;
        }
        let mut v = value(rng, 2);
        // Nest the value under the path's keys, the outer ones first.
        for k in keys[1..].iter().rev() {
            v = format!("{{\"{}\":{v}}}", json_key(k));
        }
        members.push(format!("\"{}\":{v}", json_key(keys[0])));
        if rng.u8(..10) == 0 {
            // A duplicate key: the last one wins.
            members.push(format!("\"{}\":{}", json_key(keys[0]), value(rng, 1)));
        }
    }
    if rng.u8(..10) == 0 {
        members.push("\"s\":\"\\ud800\"".into());
    }
    if rng.u8(..5) == 0 {
        members.push(format!("\"noise\":{}", object(rng, 1)));
    }
    fastrand_shuffle(rng, &mut members);
    let ws = if rng.bool() { " " } else { "" };
    format!("{{{ws}{}{ws}}}", members.join(&format!(",{ws}")))
}

fn json_key(k: &str) -> String {
    serde_json::to_string(k)
        .unwrap()
        .trim_matches('"')
        .to_string()
}

fn fastrand_shuffle(rng: &mut fastrand::Rng, v: &mut [String]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.usize(..=i));
    }
}

fn comparison(rng: &mut fastrand::Rng) -> String {
    const OPS: [&str; 6] = [">", ">=", "<", "<=", "==", "!="];
    let field = PATHS[rng.usize(..PATHS.len())].0;
    let op = OPS[rng.usize(..OPS.len())];
    // Any number but the out-of-range ones, which a condition refuses.
    let v = match rng.u8(..3) {
        0 => "threshold",
        _ => NUMBERS[rng.usize(..NUMBERS.len() - 2)],
    };
    if rng.u8(..4) == 0 {
        format!("{v} {op} {field}")
    } else {
        format!("{field} {op} {v}")
    }
}

fn condition(rng: &mut fastrand::Rng, depth: usize) -> String {
    match rng.u8(..if depth > 3 { 1 } else { 6 }) {
        0 | 1 => comparison(rng),
        2 => format!("not {}", condition(rng, depth + 1)),
        3 => format!("({})", condition(rng, depth + 1)),
        4 => format!(
            "{} and {}",
            condition(rng, depth + 1),
            condition(rng, depth + 1)
        ),
        _ => format!(
            "{} or {}",
            condition(rng, depth + 1),
            condition(rng, depth + 1)
        ),
    }
}

fn thresholds(rng: &mut fastrand::Rng) -> Vec<(String, f64)> {
    const FILTERS: [&str; 9] = [
        "telemetry/dev-1",
        "telemetry/+",
        "telemetry/#",
        "#",
        "plant2/+/bearing",
        "plant2/line1/#",
        "+/+/+",
        "telemetry/dev-1/#",
        "$SYS/#",
    ];
    let mut out: Vec<(String, f64)> = Vec::new();
    for f in FILTERS {
        if rng.u8(..3) == 0 {
            out.push((f.to_string(), (rng.i32(-100..400) as f64) / 2.0));
        }
    }
    out
}

#[test]
fn the_stage_agrees_with_the_reference_model() {
    let mut rng = fastrand::Rng::with_seed(0x19);
    let field = FieldPath::parse("machine.temperature").unwrap();
    let mut stage = Stage::new(field, 1 << 16);
    let mut input = Vec::new();
    let mut ours = Vec::new();
    let devices = [
        "telemetry/dev-1",
        "telemetry/dev-2",
        "plant2/line1/bearing",
        "plant2/line2/bearing",
        "telemetry/dev-1/sub",
        "$SYS/x",
        "other",
    ];
    let mut conditions = std::collections::BTreeSet::new();
    for _ in 0..CASES {
        let cond_text = (rng.u8(..8) != 0).then(|| condition(&mut rng, 0));
        let map = thresholds(&mut rng);
        let threshold = [25.0, 0.0, -1.5, 300.0][rng.usize(..4)];
        let device = devices[rng.usize(..devices.len())];
        let body = document(&mut rng);
        let settings = RuleSettings {
            thresholds: Arc::new(DeviceThresholds::new(map.iter().cloned().collect()).unwrap()),
            condition: cond_text
                .as_deref()
                .map(|c| Arc::new(Condition::parse(c).unwrap_or_else(|e| panic!("{c}: {e}")))),
            ..RuleSettings::default()
        };
        if let Some(c) = &cond_text {
            conditions.insert(c.clone());
        }
        let rules = Rules::with(threshold, settings, None, Anchor::now());
        let job = Job::new(
            Bytes::from(body.clone()),
            Bytes::from_static(device.as_bytes()),
            Instant::now(),
            (),
        );
        let mut batch = Batch::new(0, rules, vec![job]);
        stage.run(&mut batch);
        ours.push(match &batch.jobs[0].verdict {
            Verdict::Alert => "alert".to_string(),
            Verdict::Unmatched => "unmatched".to_string(),
            Verdict::Rejected(r) => r.reason.as_str().to_string(),
        });
        let case = json!({
            "condition": cond_text,
            "threshold": threshold,
            "thresholds": map.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
            "device": device,
            "field": "machine.temperature",
            "body": body,
        });
        writeln!(input, "{case}").unwrap();
    }
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/model/condition_model.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the reference model");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "the model failed");
    let theirs: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(theirs.len(), CASES);
    let mut by_verdict = std::collections::BTreeMap::new();
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "case {i}");
        *by_verdict.entry(a.as_str()).or_insert(0usize) += 1;
    }
    // The stream exercised every outcome, and thousands of distinct conditions.
    for v in [
        "alert",
        "unmatched",
        "not_a_number",
        "not_object",
        "not_json",
    ] {
        assert!(
            by_verdict.get(v).copied().unwrap_or(0) > 50,
            "{v}: {by_verdict:?}"
        );
    }
    assert!(conditions.len() > 10_000, "{}", conditions.len());
}
