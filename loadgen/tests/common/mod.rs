//! Test support for loadgen's end-to-end tests: a real mosquitto on an ephemeral port, a
//! stand-in filter, and a runner for the loadgen binary.
//!
//! The filter here is a STAND-IN for edgefilter (which loadgen exists to test, and which is
//! built elsewhere): a rumqttc client that forwards `telemetry/#` messages whose
//! `machine.temperature` exceeds its threshold to `alerts/<topic>` unchanged, in arrival
//! order, and implements the generic twin (desired patch in, retained reported document out).
//! It can misbehave on purpose (drop, duplicate, ignore the twin) so the tests can check that
//! loadgen's accounting catches each fault exactly.
//!
//! With `Behaviour::azure` it stands in for edgefilter in IoT Edge mode AND for edgeHub's
//! routing (neither edgeHub nor a real module input can run here): it reads
//! `devices/dev1/modules/edgefilter/inputs/input1/#`, checks each input topic's property bag
//! with edgefilter's own parser, and sends alerts to
//! `devices/dev1/modules/edgefilter/messages/events/%24.on=output1&MessageType=Alert&sequenceNumber=<n>`.

#![allow(dead_code)]

use edgefilter_mqtt::azure::ModuleTopics;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// mosquitto on an ephemeral port: the same fixture as the root crate's integration tests.
#[path = "../../../tests/it/common/mosquitto.rs"]
mod mosquitto;

pub use mosquitto::Mosquitto;

/// How the stand-in filter behaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    pub threshold: f64,
    /// Drop every n-th alert (counting from 1), 0 = never.
    pub drop_every: u64,
    /// Publish every n-th alert twice, 0 = never.
    pub duplicate_every: u64,
    /// Apply desired patches (false: report them applied but keep the old threshold).
    pub apply_twin: bool,
    /// IoT Edge topics (module dev1/edgefilter, input1 → output1) instead of telemetry/alerts.
    pub azure: bool,
    /// With `azure`: send every n-th alert without `MessageType=Alert`, 0 = never.
    pub untagged_every: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            threshold: 25.0,
            drop_every: 0,
            duplicate_every: 0,
            apply_twin: true,
            azure: false,
            untagged_every: 0,
        }
    }
}

/// What the stand-in filter did (probes excluded).
#[derive(Debug, Default)]
pub struct Stats {
    pub telemetry: AtomicU64,
    pub alerts: AtomicU64,
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub patches: AtomicU64,
    /// Alerts whose temperature lies in (low, high] (set by `count_band`).
    pub in_band: AtomicU64,
    /// `azure`: input messages whose topic was not the sensor's as edgeHub delivers it
    /// (property bag, `sequenceNumber` = the body's `seq`, one `batchId` for the run).
    pub bad_inputs: AtomicU64,
    /// `azure`: alerts sent without `MessageType=Alert`.
    pub untagged: AtomicU64,
}

const AZ_INPUT_FILTER: &str = "devices/dev1/modules/edgefilter/inputs/input1/#";
const AZ_EVENTS: &str = "devices/dev1/modules/edgefilter/messages/events/";

/// Checks an input topic as edgeHub would deliver the sensor's message; returns its
/// `sequenceNumber` (None for a probe) and `batchId`, or None when the topic is wrong.
fn azure_input(topic: &str, body_seq: Option<u64>) -> Option<(Option<u64>, String)> {
    let input = ModuleTopics::new("dev1", "edgefilter")
        .parse_input(topic)
        .ok()?;
    let p = &input.properties;
    let fixed = [
        ("$.ct", "application/json"),
        ("$.ce", "utf-8"),
        ("$.cdid", "dev1"),
        ("$.cmid", "SimulatedTemperatureSensor"),
    ];
    if input.input_name != "input1" || fixed.iter().any(|(k, v)| p.get(k) != Some(v)) {
        return None;
    }
    let seq = p.get("sequenceNumber").map(|n| n.parse::<u64>().ok());
    if seq.flatten() != body_seq || seq == Some(None) {
        return None;
    }
    Some((seq.flatten(), p.get("batchId")?.to_string()))
}

pub struct Forwarder {
    client: Client,
    threads: Vec<JoinHandle<()>>,
    pub stats: Arc<Stats>,
    /// One message per desired patch the filter received.
    patch_rx: mpsc::Receiver<()>,
}

impl Forwarder {
    /// Starts the stand-in filter and returns once its subscriptions are active and its
    /// initial reported document (threshold, `$version` 0) is retained by the broker.
    pub fn start(port: u16, b: Behaviour) -> Forwarder {
        Self::start_with_band(port, b, None)
    }

    /// Also counts forwarded alerts whose temperature is in `(band.0, band.1]`.
    pub fn start_with_band(port: u16, b: Behaviour, band: Option<(f64, f64)>) -> Forwarder {
        let mut opts = MqttOptions::new(format!("stand-in-filter-{port}"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_inflight(1000);
        let (client, mut connection) = Client::new(opts, 100_000);
        let (in_tx, in_rx) = mpsc::channel::<rumqttc::Publish>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let events = thread::spawn(move || {
            let (mut subacks, mut ready_sent) = (0, false);
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if in_tx.send(p).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => subacks += 1,
                    Ok(Event::Incoming(Packet::PubAck(_))) if subacks == 2 && !ready_sent => {
                        ready_sent = true;
                        let _ = ready_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let input_filter = if b.azure {
            AZ_INPUT_FILTER
        } else {
            "telemetry/#"
        };
        client.subscribe(input_filter, QoS::AtMostOnce).unwrap();
        client
            .subscribe("edgefilter/twin/desired", QoS::AtLeastOnce)
            .unwrap();
        let stats = Arc::new(Stats::default());
        let (c, s) = (client.clone(), stats.clone());
        let (patch_tx, patch_rx) = mpsc::channel();
        let filter = thread::spawn(move || {
            let mut threshold = b.threshold;
            let mut batch_id: Option<String> = None;
            // The initial report goes out after both SUBSCRIBEs (requests are sent in order),
            // so its PUBACK means the filter is fully set up.
            report(&c, threshold, 0);
            for p in in_rx {
                if p.topic == "edgefilter/twin/desired" {
                    let Ok(doc) = serde_json::from_slice::<Value>(&p.payload) else {
                        continue;
                    };
                    let (Some(t), Some(v)) = (
                        doc["TemperatureThreshold"].as_f64(),
                        doc["$version"].as_u64(),
                    ) else {
                        continue;
                    };
                    s.patches.fetch_add(1, Ordering::Relaxed);
                    let _ = patch_tx.send(());
                    if b.apply_twin {
                        threshold = t;
                    }
                    report(&c, t, v);
                    continue;
                }
                let Ok(doc) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                let probe = doc.get("probe").is_some();
                if !probe {
                    s.telemetry.fetch_add(1, Ordering::Relaxed);
                }
                let mut seq = None;
                if b.azure {
                    // One batchId for the whole run.
                    let checked =
                        azure_input(&p.topic, doc["seq"].as_u64()).filter(|(_, batch)| {
                            batch_id.get_or_insert_with(|| batch.clone()) == batch
                        });
                    let Some((n, _)) = checked else {
                        s.bad_inputs.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    seq = n;
                }
                let Some(t) = doc["machine"]["temperature"].as_f64() else {
                    continue;
                };
                if t <= threshold {
                    continue;
                }
                let mut alert_topic = if b.azure {
                    let mut topic = format!("{AZ_EVENTS}%24.on=output1&MessageType=Alert");
                    if let Some(n) = seq {
                        topic.push_str(&format!("&sequenceNumber={n}"));
                    }
                    topic
                } else {
                    format!("alerts/{}", p.topic)
                };
                if probe {
                    let _ = c.publish(alert_topic, QoS::AtMostOnce, false, p.payload.to_vec());
                    continue;
                }
                let n = s.alerts.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some((lo, hi)) = band {
                    if t > lo && t <= hi {
                        s.in_band.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if b.untagged_every > 0 && n % b.untagged_every == 0 {
                    s.untagged.fetch_add(1, Ordering::Relaxed);
                    alert_topic = alert_topic.replace("&MessageType=Alert", "");
                }
                if b.drop_every > 0 && n % b.drop_every == 0 {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let copies = if b.duplicate_every > 0 && n % b.duplicate_every == 0 {
                    s.duplicated.fetch_add(1, Ordering::Relaxed);
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let _ = c.publish(
                        alert_topic.clone(),
                        QoS::AtMostOnce,
                        false,
                        p.payload.to_vec(),
                    );
                    s.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stand-in filter ready");
        Forwarder {
            client,
            threads: vec![events, filter],
            stats,
            patch_rx,
        }
    }

    /// Publishes a retained message (QoS 1) and returns once the broker has handled it: a
    /// desired patch sent after it on the same connection comes back to this filter only
    /// after the broker has processed the retained publish.
    pub fn publish_retained(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
            .unwrap();
        self.client
            .publish(
                "edgefilter/twin/desired",
                QoS::AtLeastOnce,
                false,
                br#"{"TemperatureThreshold":25,"$version":0}"#.to_vec(),
            )
            .unwrap();
        self.patch_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the fence patch came back");
    }

    pub fn get(&self, f: impl Fn(&Stats) -> &AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }
}

fn report(c: &Client, threshold: f64, version: u64) {
    let doc =
        serde_json::json!({"TemperatureThreshold": threshold, "$version": version, "status": "ok"});
    let _ = c.publish(
        "edgefilter/twin/reported",
        QoS::AtLeastOnce,
        true,
        serde_json::to_vec(&doc).unwrap(),
    );
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The result of one loadgen run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub summary: Option<Value>,
    pub hgrm: Option<String>,
}

/// Runs the loadgen binary against `broker` with `args` (plus --summary/--hgrm to temp files).
pub fn loadgen(broker: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let summary: PathBuf = dir.path().join("summary.json");
    let hgrm: PathBuf = dir.path().join("latency.hgrm");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--broker")
        .arg(broker)
        .args(args)
        .arg("--summary")
        .arg(&summary)
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--no-progress")
        .output()
        .expect("run loadgen");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        summary: std::fs::read(&summary)
            .ok()
            .map(|b| serde_json::from_slice(&b).expect("summary is JSON")),
        hgrm: std::fs::read_to_string(&hgrm).ok(),
    };
    eprintln!("loadgen exit {}\n{}{}", run.code, run.stdout, run.stderr);
    run
}

impl Run {
    pub fn n(&self, key: &str) -> u64 {
        let s = self.summary.as_ref().expect("a summary was written");
        s[key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary key {key} is a count: {s}"))
    }
}
