//! `edgefilter demo`: the whole data flow on one machine with nothing to set up. The embedded
//! broker starts on a free port; simulated sensors (the SimulatedTemperatureSensor
//! profile, restarted at 100 °C like the tutorial's sawtooth) publish to it; the filter runs as
//! `edgefilter run` would; a monitor subscribes to the alerts, prints a sample of them and a
//! stats line per second. Then the twin changes the filter live, in four steps: after a
//! quarter it turns on the alert rules — edge mode and 10 s summaries — and the demo counts the
//! cloud messages they save against the seed's every-reading alerts; at half time it gives
//! `telemetry/dev-0` a threshold of its own above the sawtooth (that device stops alerting); at
//! five eighths it sets a condition over two fields (hot *and* under pressure: each cycle
//! alerts only near its top); at three quarters it raises the threshold above the sensors'
//! range and the alert stream stops. At each twin step the sensors hold until the filter has
//! caught up, so a phase's counts start at the document's exact arrival point. A summary with
//! each phase's alerts (dev-0's among them, the lowest alerting temperature and pressure) and
//! latency percentiles ends the tour.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::io::embedded::{self, free_local_addr};
use crate::run::Shared;
use crate::sensor::{unix_micros, write_body, Sensor, Tracking};
use crate::settings::{Demo, Settings, Target};
use crate::shutdown::Shutdown;

/// The threshold the twin sets last: above the sawtooth's top, so alerts stop.
const RAISED_THRESHOLD: f64 = 105.0;
/// The twin's steps: when (eighths of the tour) and the desired document (without its
/// `$version`, which is the step's number + 1).
const STEPS: [(u32, &str); 4] = [
    // The alert rules (README "Alert rules").
    (2, r#""AlertMode": "edge", "SummaryWindow": 10"#),
    // A per-device threshold above the sawtooth's top: dev-0 stops alerting.
    (4, r#""Thresholds": {"telemetry/dev-0": 105}"#),
    // Hot and under pressure (the profile's pressure passes 9 at about 92 °C).
    (
        5,
        r#""Condition": "machine.temperature > threshold and machine.pressure > 9""#,
    ),
    (6, r#""TemperatureThreshold": 105"#),
];
/// What each phase of the tour is (the one before the first step, then one per step).
const PHASES: [&str; STEPS.len() + 1] = [
    "the seed's rules",
    "edge mode + summaries",
    "dev-0's own threshold 105",
    "condition: hot and p > 9",
    "threshold raised to 105",
];
/// One message in this many is malformed, to show rejection and dead-lettering.
const MALFORMED_EVERY: u64 = 997;
/// Most alert lines printed per second (the rest are counted).
const ALERT_LINES_PER_SEC: u32 = 3;

/// Holds the sensors while the twin changes, so that a phase's counts start and end exactly
/// at the twin document's arrival point, however far behind a loaded machine runs.
#[derive(Default)]
struct Gate {
    /// Odd: the sensors hold (the tour adds 1 to hold, 1 to release).
    hold: AtomicU64,
    /// The hold the sensors have obeyed: nothing more is being published.
    idle_at: AtomicU64,
}

/// What the monitor sees.
#[derive(Default)]
struct Seen {
    alerts: AtomicU64,
    summaries: AtomicU64,
    dead_letters: AtomicU64,
    reported_version: AtomicU64,
    /// Threshold in the last reported document (f64 bits).
    reported_threshold: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
    /// When each phase after the first began (Unix µs; 0: not yet), so that an alert is
    /// counted in the phase its reading was sent in.
    phase_starts: [AtomicU64; STEPS.len()],
    phases: [PhaseSeen; STEPS.len() + 1],
}

/// The alerts of one phase, as the monitor sees them.
struct PhaseSeen {
    alerts: AtomicU64,
    /// From `telemetry/dev-0`, the device that gets a threshold of its own.
    dev0: AtomicU64,
    /// The lowest alerting temperature and pressure (f64 bits: both are positive, so their
    /// bits order as the numbers do).
    lowest_temperature: AtomicU64,
    lowest_pressure: AtomicU64,
}

impl Default for PhaseSeen {
    fn default() -> Self {
        PhaseSeen {
            alerts: AtomicU64::new(0),
            dev0: AtomicU64::new(0),
            lowest_temperature: AtomicU64::new(f64::INFINITY.to_bits()),
            lowest_pressure: AtomicU64::new(f64::INFINITY.to_bits()),
        }
    }
}

impl Seen {
    /// Counts an alert of `topic` whose reading was sent at `sent_us`.
    fn alert(&self, topic: &str, sent_us: u64, temperature: f64, pressure: f64) {
        let phase = self
            .phase_starts
            .iter()
            .take_while(|s| {
                let s = s.load(Ordering::SeqCst);
                s != 0 && sent_us >= s
            })
            .count();
        let p = &self.phases[phase];
        p.alerts.fetch_add(1, Ordering::Relaxed);
        if topic == "alerts/telemetry/dev-0" {
            p.dev0.fetch_add(1, Ordering::Relaxed);
        }
        if temperature > 0.0 {
            p.lowest_temperature
                .fetch_min(temperature.to_bits(), Ordering::Relaxed);
        }
        if pressure > 0.0 {
            p.lowest_pressure
                .fetch_min(pressure.to_bits(), Ordering::Relaxed);
        }
    }
}

pub async fn run(args: Demo, shutdown: impl Into<Shutdown>) -> anyhow::Result<()> {
    let mut shutdown = shutdown.into();
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(args.devices > 0, "--devices must be at least 1");
    let addr = free_local_addr().context("no free local port for the embedded broker")?;
    let metrics_addr = free_local_addr().context("no free local port for the metrics endpoint")?;
    // The settings of `edgefilter run --listen ADDR`, built directly: nothing from the
    // command line or the environment leaks into the tour.
    let mut settings = Settings::defaults(Target::Embedded { v4: addr, v5: None });
    settings.metrics_addr = Some(metrics_addr);
    settings.stats_interval = Duration::ZERO;
    settings.client_id = "edgefilter-demo".into();
    let threshold = settings.threshold;
    let shared = Shared::new(threshold);
    let metrics = shared.metrics.clone();

    println!("edgefilter demo");
    println!(
        "  embedded broker   mqtt://{addr} ({})",
        embedded::PROTOCOLS
    );
    println!("  metrics           http://{metrics_addr}/metrics");
    println!(
        "  sensors           {} devices, {} msg/s in total, telemetry/dev-N (1 in {MALFORMED_EVERY} malformed)",
        args.devices, args.rate
    );
    println!("  filter            machine.temperature > {threshold} -> alerts/telemetry/dev-N");
    let at = |eighths: u32| args.duration.as_secs_f64() * f64::from(eighths) / 8.0;
    println!(
        "  twin              at {:.0} s edge mode and 10 s summaries per device (alert rules),",
        at(STEPS[0].0)
    );
    println!(
        "                    at {:.0} s telemetry/dev-0 gets a threshold of its own, 105 (it stops alerting),",
        at(STEPS[1].0)
    );
    println!(
        "                    at {:.0} s a condition over two fields: hot and under pressure (pressure > 9),",
        at(STEPS[2].0)
    );
    println!(
        "                    at {:.0} s the threshold goes to {RAISED_THRESHOLD} (above the sensors' 100 °C top)",
        at(STEPS[3].0)
    );
    println!();

    let (filter_stop, filter_stop_rx) = crate::shutdown::channel();
    let filter = tokio::spawn(crate::run::run(settings, shared, filter_stop_rx));

    // Wait for the filter's connection before the clock starts.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while !metrics.is_connected() {
        if filter.is_finished() || Instant::now() > ready_by {
            filter_stop.fire();
            return match filter.await {
                Ok(Err(e)) => Err(e).context("the filter did not start"),
                _ => anyhow::bail!("the filter did not connect to the embedded broker within 10 s"),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let seen = Arc::new(Seen {
        latency: Mutex::new(Some(Histogram::new_with_bounds(1, 60_000_000, 3)?)),
        reported_threshold: AtomicU64::new(threshold.to_bits()),
        ..Default::default()
    });
    let (monitor, monitor_task) = start_monitor(addr, seen.clone()).await?;
    let sent = Arc::new(AtomicU64::new(0));
    // Readings above the threshold: what the seed would have published as alerts.
    let above = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Gate::default());
    let (sensors_stop, sensors_stop_rx) = crate::shutdown::channel();
    let sensors = tokio::spawn(sensors(
        addr,
        args,
        (sent.clone(), above.clone(), threshold),
        gate.clone(),
        sensors_stop_rx,
    ));

    let start = Instant::now();
    let eighth = args.duration / 8;
    let mut step = 0;
    // The rules phase: (readings above, alerts, summaries, suppressed) at its start, then at
    // its end.
    let mut rules_from = None;
    let mut rules_to = None;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (0u64, 0u64);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => { interrupted = true; break; }
        }
        let elapsed = start.elapsed();
        if step < STEPS.len() && elapsed >= eighth * STEPS[step].0 {
            step += 1;
            let version = step + 1;
            let doc = format!("{{{}, \"$version\": {version}}}", STEPS[step - 1].1);
            // Hold the sensors, let the filter finish what it has, count, change the twin,
            // and go on once the filter reports the new version.
            let held = Instant::now();
            let hold = gate.hold.fetch_add(1, Ordering::SeqCst) + 1;
            let by = held + Duration::from_secs(10);
            let exact = wait_for(by, || {
                let s = metrics.snapshot();
                gate.idle_at.load(Ordering::SeqCst) == hold
                    && s.received >= sent.load(Ordering::SeqCst)
                    && s.pending == 0
                    && s.outgoing == 0
            })
            .await;
            let s = metrics.snapshot();
            let counts = (
                above.load(Ordering::SeqCst),
                s.alerts,
                s.summaries,
                s.suppressed,
            );
            // The rules' phase: from the first step to the second.
            if step == 1 {
                rules_from = Some(counts);
            } else if step == 2 {
                rules_to = Some(counts);
            }
            monitor
                .publish(
                    "edgefilter/twin/desired",
                    QoS::AtLeastOnce,
                    true,
                    doc.clone(),
                )
                .await?;
            println!("  twin  desired -> {doc} (retained on edgefilter/twin/desired)");
            let applied = wait_for(by, || {
                seen.reported_version.load(Ordering::Relaxed) >= version as u64
            })
            .await;
            seen.phase_starts[step - 1].store(unix_micros(SystemTime::now()), Ordering::SeqCst);
            gate.hold.fetch_add(1, Ordering::SeqCst);
            if !(exact && applied) {
                println!(
                    "  (the filter did not catch up within 10 s: the phases' counts below are approximate)"
                );
            }
        }
        let s = metrics.snapshot();
        let alerts = seen.alerts.load(Ordering::Relaxed);
        let now_sent = sent.load(Ordering::Relaxed);
        println!(
            "[{:>3.0}s] sent {:>6}/s  alerts {:>6}/s  | total in {:>7}  alerts {:>7}  summaries {:>4}  unmatched {:>7}  rejected {:>3}  threshold {}",
            elapsed.as_secs_f64(),
            now_sent - last.0,
            alerts - last.1,
            s.received,
            alerts,
            seen.summaries.load(Ordering::Relaxed),
            s.unmatched,
            s.rejected,
            f64::from_bits(seen.reported_threshold.load(Ordering::Relaxed)),
        );
        last = (now_sent, alerts);
        if elapsed >= args.duration {
            break;
        }
    }

    // Stop the sensors, let the last alerts arrive, then drain the filter.
    sensors_stop.fire();
    let sent_total = sensors.await.context("sensors task")??;
    let settle_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle_until {
        let s = metrics.snapshot();
        if s.received >= sent_total && s.alerts == seen.alerts.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    filter_stop.fire();
    filter.await.context("filter task")??;
    monitor_task.abort();

    let s = metrics.snapshot();
    let hist = seen
        .latency
        .lock()
        .map_err(|_| anyhow::anyhow!("latency lock"))?
        .take();
    let secs = start.elapsed().as_secs_f64();
    println!();
    println!("summary{}", if interrupted { " (interrupted)" } else { "" });
    println!(
        "  messages sent        {sent_total} ({:.0} msg/s)",
        sent_total as f64 / secs
    );
    println!("  received by filter   {}", s.received);
    println!(
        "  alerts               {} published, {} seen by the monitor",
        s.alerts,
        seen.alerts.load(Ordering::Relaxed)
    );
    println!("  unmatched            {}", s.unmatched);
    if let Some(from) = rules_from {
        // The rules phase's last windows close after it: every summary to the end of the tour
        // counts (the later phases' too, so the cut printed is a lower bound).
        let to = rules_to.unwrap_or_else(|| {
            (
                above.load(Ordering::Relaxed),
                s.alerts,
                s.summaries,
                s.suppressed,
            )
        });
        let seed = to.0 - from.0;
        let (alerts, summaries) = (to.1 - from.1, s.summaries - from.2);
        let cloud = alerts + summaries;
        println!(
            "  alert rules          edge mode + 10 s summaries: {cloud} cloud messages ({alerts} alerts, {summaries} summaries, {} suppressed) where the seed would have sent {seed} alerts: {:.0}x fewer",
            to.3 - from.3,
            seed as f64 / cloud.max(1) as f64
        );
    }
    println!(
        "  rejected             {} ({} dead-lettered)",
        s.rejected,
        seen.dead_letters.load(Ordering::Relaxed)
    );
    println!(
        "  twin                 {} applied, {} refused; reported $version {}",
        s.twin_applied,
        s.twin_refused,
        seen.reported_version.load(Ordering::Relaxed)
    );
    println!("  phases               alerts by when their reading was sent:");
    let mut from = 0.0;
    for (k, (name, p)) in PHASES.iter().zip(&seen.phases).enumerate() {
        let to = STEPS.get(k).map_or(secs, |s| at(s.0));
        let lowest = |bits: &AtomicU64| {
            let v = f64::from_bits(bits.load(Ordering::Relaxed));
            if v.is_finite() {
                format!("{v:>6.2}")
            } else {
                format!("{:>6}", "-")
            }
        };
        println!(
            "    {from:>3.0}-{to:<3.0} s  {name:<26} {:>7} alerts, {:>6} from dev-0; lowest alerting temperature {}, pressure {}",
            p.alerts.load(Ordering::Relaxed),
            p.dev0.load(Ordering::Relaxed),
            lowest(&p.lowest_temperature),
            lowest(&p.lowest_pressure),
        );
        from = to;
    }
    if let Some(h) = hist.filter(|h| !h.is_empty()) {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  latency (send -> alert received)  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

/// Polls `done` every 10 ms until it holds (true) or `by` passes (false).
async fn wait_for(by: Instant, mut done: impl FnMut() -> bool) -> bool {
    while !done() {
        if Instant::now() > by {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn options(id: &str, addr: std::net::SocketAddr) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(1000);
    o
}

/// Subscribes to alerts, dead letters and the reported twin; prints a sample of alerts.
async fn start_monitor(
    addr: std::net::SocketAddr,
    seen: Arc<Seen>,
) -> anyhow::Result<(AsyncClient, tokio::task::JoinHandle<()>)> {
    let (client, mut events) = AsyncClient::new(options("edgefilter-demo-monitor", addr), 1000);
    client.subscribe("alerts/#", QoS::AtMostOnce).await?;
    client
        .subscribe("edgefilter/deadletter", QoS::AtMostOnce)
        .await?;
    client
        .subscribe("edgefilter/twin/reported", QoS::AtMostOnce)
        .await?;
    client.subscribe("summaries/#", QoS::AtMostOnce).await?;
    let task = tokio::spawn(async move {
        let mut window = Instant::now();
        let mut printed = 0;
        loop {
            let event = match events.poll().await {
                Ok(e) => e,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Event::Incoming(Packet::Publish(p)) = event else {
                continue;
            };
            let now_us = unix_micros(SystemTime::now());
            if p.topic.starts_with("alerts/") {
                seen.alerts.fetch_add(1, Ordering::Relaxed);
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                let sent_us = v["sentUs"].as_u64().unwrap_or(now_us);
                let temperature = v["machine"]["temperature"].as_f64().unwrap_or(f64::NAN);
                let pressure = v["machine"]["pressure"].as_f64().unwrap_or(f64::NAN);
                seen.alert(&p.topic, sent_us, temperature, pressure);
                let latency_us = now_us.saturating_sub(sent_us).max(1);
                if let Ok(mut h) = seen.latency.lock() {
                    if let Some(h) = h.as_mut() {
                        let _ = h.record(latency_us);
                    }
                }
                if window.elapsed() >= Duration::from_secs(1) {
                    window = Instant::now();
                    printed = 0;
                }
                if printed < ALERT_LINES_PER_SEC {
                    printed += 1;
                    println!(
                        "        ALERT {:<24} temperature {temperature:>6.2}  pressure {pressure:>5.2}  ({:.2} ms after it was sent)",
                        p.topic,
                        latency_us as f64 / 1000.0
                    );
                }
            } else if p.topic.starts_with("summaries/") {
                if seen.summaries.fetch_add(1, Ordering::Relaxed) == 0 {
                    println!("        SUMMARY {}", String::from_utf8_lossy(&p.payload));
                }
            } else if p.topic == "edgefilter/deadletter" {
                let n = seen.dead_letters.fetch_add(1, Ordering::Relaxed);
                if n < 2 {
                    println!(
                        "        DEAD LETTER {}",
                        String::from_utf8_lossy(&p.payload)
                    );
                }
            } else if p.topic == "edgefilter/twin/reported" {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                let version = v["$version"].as_u64().unwrap_or(0);
                seen.reported_version.store(version, Ordering::Relaxed);
                if let Some(t) = v["TemperatureThreshold"].as_f64() {
                    seen.reported_threshold
                        .store(t.to_bits(), Ordering::Relaxed);
                }
                println!(
                    "  twin  reported <- {}",
                    String::from_utf8_lossy(&p.payload)
                );
            }
        }
    });
    Ok((client, task))
}

/// Publishes the sensors' messages at the requested rate until stopped; returns how many.
async fn sensors(
    addr: std::net::SocketAddr,
    args: Demo,
    (sent, above, threshold): (Arc<AtomicU64>, Arc<AtomicU64>, f64),
    gate: Arc<Gate>,
    mut stop: Shutdown,
) -> anyhow::Result<u64> {
    let (client, mut events) = AsyncClient::new(options("edgefilter-demo-sensors", addr), 10_000);
    let poller = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let devices: Vec<String> = (0..args.devices).map(|i| format!("dev-{i}")).collect();
    let mut sensors: Vec<Sensor> = (0..args.devices)
        .map(|i| Sensor::new(u64::from(i) + 1))
        .collect();
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut start = tokio::time::Instant::now();
    let mut held_since = None;
    let mut seq: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut body = Vec::with_capacity(256);
    'outer: loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => break 'outer,
        }
        let hold = gate.hold.load(Ordering::SeqCst);
        if hold % 2 == 1 {
            held_since.get_or_insert_with(tokio::time::Instant::now);
            gate.idle_at.store(hold, Ordering::SeqCst);
            continue;
        }
        if let Some(t) = held_since.take() {
            // Go on where the hold began: no burst of the held time's messages.
            start += t.elapsed();
        }
        // Open loop: everything whose send time has come.
        let due = (start.elapsed().as_secs_f64() / period.as_secs_f64()) as u64;
        while seq < due {
            let d = (seq % u64::from(args.devices)) as usize;
            let sensor = &mut sensors[d];
            if sensor.temperature() > 100.0 {
                sensor.reset();
            }
            let reading = sensor.next_reading();
            if reading.machine_temperature > threshold && !(seq + 1).is_multiple_of(MALFORMED_EVERY)
            {
                above.fetch_add(1, Ordering::Relaxed);
            }
            let now = SystemTime::now();
            body.clear();
            write_body(
                &mut body,
                &reading,
                now,
                &Tracking {
                    seq: Some(seq),
                    device: Some(&devices[d]),
                    sent_us: Some(unix_micros(now)),
                },
            );
            if (seq + 1).is_multiple_of(MALFORMED_EVERY) {
                body.truncate(body.len() / 2);
            }
            let topic = format!("telemetry/{}", devices[d]);
            if client
                .publish(topic, QoS::AtLeastOnce, false, body.clone())
                .await
                .is_err()
            {
                break 'outer;
            }
            seq += 1;
            sent.store(seq, Ordering::Relaxed);
        }
    }
    // Give the client a moment to hand over what is queued.
    tokio::time::sleep(Duration::from_millis(200)).await;
    poller.abort();
    Ok(seq)
}
