//! Tooling: one loadgen run, wired together — connect, read the twin (`--target mqtt`), wait
//! until a probe travels the whole path (publisher → broker → filter → alert subscription),
//! start the clock, publish open-loop on every connection, take the twin step halfway if
//! asked, drain the alerts, and turn the counts into a [`Summary`].

use crate::account::{new_latency_histogram, BitSet};
use crate::cli::Config;
use crate::clock::{process_cpu, Clock};
use crate::message::{device_name, probe_body, Device, PublishFormat, PROBE_DEVICE};
use crate::publisher::{self, PubConfig, PubEvent, PubResult, Shared};
use crate::report::{Latency, Summary};
use crate::schedule::devices_of;
use crate::sink::{self, Drain, SinkProgress};
use crate::summaries::KindCounts;
use crate::target::Target;
use crate::timeline::Interval;
use crate::twin::{reported_threshold, version_of, Twin, TwinError};
use crate::wire::{Conn, MqttVersion, WireError};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Set by the SIGINT handler (see `main`): stop sending, drain, report.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Why a run could not produce a result (all exit with status 2).
#[derive(Debug, Error)]
pub enum RunError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("{0}")]
    Twin(#[from] TwinError),
    #[error("the filter is not ready: no probe came back on {filter:?} within {timeout:?} (is the filter running and subscribed to the input topics?)")]
    NotReady { filter: String, timeout: Duration },
    #[error("{0}")]
    Publisher(String),
    #[error("alert subscription: {0}")]
    Sink(WireError),
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The result of a run: the summary, the latency histogram behind it, and the run per second.
pub struct Outcome {
    pub summary: Summary,
    pub latency: Histogram<u64>,
    pub timeline: Vec<Interval>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn bar(cfg: &Config, count: Option<u64>) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let pb = match count {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let tmpl = if count.is_some() {
        "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} sent  {msg}"
    } else {
        "{elapsed_precise} {spinner} {human_pos} sent  {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(tmpl) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

pub fn run(cfg: &Config) -> Result<Outcome, RunError> {
    let addr = cfg.broker.addr();
    let id = &cfg.client_id;
    let v = cfg.version;
    let clock = Clock::start();

    // Control connection: twin documents and readiness probes. With --target azure the twin
    // is edgeHub's and there are no retained documents to read.
    let mut twin = Twin::new(
        Conn::open(&addr, &format!("{id}-ctl"), v, CONNECT_TIMEOUT, 64 << 10)?,
        &cfg.twin_prefix,
    );
    let docs = match cfg.target {
        Target::Mqtt { .. } => twin.read_retained(cfg.ready_timeout)?,
        Target::Azure(_) => Default::default(),
    };
    if let Some(doc) = &docs.reported {
        if let Some(t) = reported_threshold(doc) {
            if t != cfg.threshold {
                eprintln!(
                    "loadgen: warning: {} reports TemperatureThreshold {t} ($version {}), but verdicts are judged with --threshold {}",
                    twin.reported_topic(),
                    version_of(doc).map_or_else(|| "?".into(), |v| v.to_string()),
                    cfg.threshold
                );
            }
        }
    }

    // The alert subscription.
    let mut sink_conn = Conn::open(&addr, &format!("{id}-sink"), v, CONNECT_TIMEOUT, 1 << 20)?;
    for filter in [
        Some(&cfg.alert_filter),
        cfg.rules.clear_filter.as_ref(),
        cfg.rules.summary_filter.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        sink::subscribe(&mut sink_conn, filter, cfg.sink_qos, CONNECT_TIMEOUT)?;
    }
    let issued = Arc::new(AtomicU64::new(0));
    let run_start = Arc::new(AtomicU64::new(u64::MAX));
    let progress = Arc::new(SinkProgress::default());
    let (drain_tx, drain_rx) = mpsc::channel();
    let sink = sink::spawn(
        sink_conn,
        sink::SinkOptions {
            qos: cfg.sink_qos,
            clock,
            tick: cfg.tick,
            check: cfg.property_check.clone(),
            clear_filter: cfg.rules.clear_filter.clone(),
            summary_filter: cfg.rules.summary_filter.clone(),
        },
        progress.clone(),
        issued.clone(),
        run_start.clone(),
        drain_rx,
    )?;

    // Publisher connections, connected before the clock starts.
    let mut pub_conns = Vec::new();
    for c in 0..cfg.connections {
        pub_conns.push(Conn::open(
            &addr,
            &format!("{id}-pub-{c}"),
            v,
            CONNECT_TIMEOUT,
            64 << 10,
        )?);
    }

    // Readiness: a probe must travel the whole path before the clock starts.
    let probe_t = cfg.threshold.max(cfg.twin_step.unwrap_or(cfg.threshold)) + 1000.0;
    let probe_topic = cfg.target.input_topic(PROBE_DEVICE).topic(None);
    let ready_start = Instant::now();
    let mut next_probe = ready_start;
    let mut probes = 0u64;
    if cfg.progress {
        eprintln!(
            "loadgen: waiting for a probe to come back through the filter on {:?}…",
            cfg.alert_filter
        );
    }
    while !progress.probe_seen.load(Ordering::Acquire) {
        if sink.is_finished() {
            return Err(sink_failure(sink));
        }
        if ready_start.elapsed() > cfg.ready_timeout {
            return Err(RunError::NotReady {
                filter: cfg.alert_filter.clone(),
                timeout: cfg.ready_timeout,
            });
        }
        if Instant::now() >= next_probe {
            twin.publish0(&probe_topic, &probe_body(probe_t, clock.now_us()))?;
            probes += 1;
            next_probe += Duration::from_millis(200);
        }
        thread::sleep(Duration::from_millis(5));
    }
    if cfg.progress {
        eprintln!(
            "loadgen: ready after {} ms; go",
            ready_start.elapsed().as_millis()
        );
    }

    // GO.
    let cpu0 = process_cpu();
    let t0 = clock.now_us();
    run_start.store(t0, Ordering::Release);
    let shared = Arc::new(Shared::new(clock, t0, cfg.schedule, issued.clone()));
    let (ev_tx, ev_rx) = mpsc::channel();
    let fmt = PublishFormat {
        qos: cfg.qos,
        v5: v == MqttVersion::V5,
    };
    let mut handles = Vec::new();
    for (c, conn) in (0..cfg.connections).zip(pub_conns) {
        let ids = devices_of(c, cfg.connections, cfg.devices);
        let devices = ids
            .iter()
            .map(|&d| Device::new(d, cfg.seed, cfg.target.input_topic(&device_name(d))))
            .collect();
        let pc = PubConfig {
            index: c,
            device_ids: ids,
            devices,
            total_devices: cfg.devices,
            fmt,
            window: cfg.window,
            batch: cfg.batch,
            temp: cfg.temp,
            malformed: cfg.malformed,
            seed: cfg.seed,
            threshold: cfg.threshold,
            twin_threshold: cfg.twin_step,
            rules: cfg.rules.spec,
            tick: cfg.tick,
        };
        handles.push(publisher::spawn(conn, pc, shared.clone(), ev_tx.clone())?);
    }
    drop(ev_tx);

    let pb = bar(cfg, cfg.schedule.count());
    let mut paused = 0u32;
    let mut done = 0u32;
    let mut first_pause_us = None;
    let mut resume_us = None;
    let mut twin_version = None;
    let mut last_tick = (Instant::now(), 0u64);
    let mut rate_now = 0.0;
    let mut failure = None;
    let mut sent_samples = Vec::new();
    while done < cfg.connections {
        match ev_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(PubEvent::Paused { at_us, .. }) => {
                paused += 1;
                first_pause_us = Some(first_pause_us.map_or(at_us, |f: u64| f.min(at_us)));
                if paused == cfg.connections && !shared.stop.load(Ordering::Acquire) {
                    let t2 = cfg.twin_step.unwrap_or(cfg.threshold);
                    pb.set_message(format!("twin: setting TemperatureThreshold {t2}…"));
                    match twin.set_threshold(t2, cfg.twin_timeout) {
                        Ok(version) => twin_version = Some(version),
                        Err(e) => {
                            failure = Some(RunError::Twin(e));
                            shared.stop.store(true, Ordering::Release);
                        }
                    }
                    let now = clock.now_us();
                    resume_us = Some(now);
                    let pause_at = cfg.schedule.pause_offset_us().map_or(now, |o| t0 + o);
                    shared.resume(now.saturating_sub(pause_at));
                }
            }
            Ok(PubEvent::Done { .. }) => done += 1,
            Ok(PubEvent::Failed { error, .. }) => {
                failure.get_or_insert(RunError::Publisher(error));
                shared.stop.store(true, Ordering::Release);
                shared.resume(0);
                done += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if sink.is_finished() && !shared.stop.load(Ordering::Relaxed) {
            // The alert subscription broke: stop sending, report the sink's error below.
            shared.stop.store(true, Ordering::Release);
            shared.resume(0);
        }
        if INTERRUPTED.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
            shared.stop.store(true, Ordering::Release);
            shared.resume(0);
        }
        if let Err(e) = twin.service() {
            failure.get_or_insert(RunError::Wire(e));
            shared.stop.store(true, Ordering::Release);
            shared.resume(0);
        }
        let sent = shared.sent.load(Ordering::Relaxed);
        sent_samples.push((clock.now_us(), sent));
        if last_tick.0.elapsed() >= Duration::from_millis(500) {
            rate_now = (sent - last_tick.1) as f64 / last_tick.0.elapsed().as_secs_f64();
            last_tick = (Instant::now(), sent);
        }
        pb.set_position(sent);
        pb.set_message(format!(
            "{} alerts  {}/s",
            progress.received.load(Ordering::Relaxed),
            rate_now.round()
        ));
    }
    let mut results: Vec<PubResult> = handles
        .into_iter()
        .filter_map(|h| h.join().ok().flatten())
        .collect();
    if let Some(e) = failure {
        pb.finish_and_clear();
        return Err(e);
    }
    if sink.is_finished() {
        pb.finish_and_clear();
        return Err(sink_failure(sink));
    }
    let mut expected = BitSet::new();
    let mut expected_clears = BitSet::new();
    let mut readings = std::collections::BTreeMap::new();
    let mut send_lag = new_latency_histogram();
    for r in &mut results {
        expected.union_with(&r.expected);
        expected_clears.union_with(&r.clears);
        readings.extend(std::mem::take(&mut r.readings));
        let _ = send_lag.add(&r.send_lag);
    }
    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let send_end_us = results.iter().map(|r| r.done_us).max().unwrap_or(t0);
    let expected_count = expected.count();

    // Drain. A silent device's last window closes on the filter's timer, at its end.
    let window = Duration::from_micros(cfg.rules.spec.window_us);
    let _ = drain_tx.send(Drain {
        expected: expected.clone(),
        expected_clears: expected_clears.clone(),
        summarised: readings
            .iter()
            .map(|(d, r): (&String, &Vec<_>)| (d.clone(), r.len() as u64))
            .collect(),
        timeout: cfg
            .drain_timeout
            .max(window + window / 2 + Duration::from_secs(2)),
    });
    while !sink.is_finished() {
        pb.set_message(format!(
            "draining: {} alerts received, {expected_count} expected",
            progress.received.load(Ordering::Relaxed)
        ));
        let _ = twin.service();
        thread::sleep(Duration::from_millis(50));
    }
    let mut sink_result = match sink.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            pb.finish_and_clear();
            return Err(RunError::Sink(e));
        }
        Err(_) => {
            pb.finish_and_clear();
            return Err(RunError::Publisher("the alert subscriber crashed".into()));
        }
    };
    let end_us = clock.now_us();
    let cpu = process_cpu().saturating_sub(cpu0);
    pb.finish_and_clear();

    if cfg.twin_restore && twin_version.is_some() {
        twin.set_threshold(cfg.threshold, cfg.twin_timeout)?;
    }
    twin.disconnect();

    let mut timeline = std::mem::replace(
        &mut sink_result.acct.timeline,
        crate::timeline::Timeline::new(1),
    );
    for (at, total) in sent_samples {
        timeline.sent_at(at, t0, total);
    }
    timeline.sent_at(send_end_us, t0, sent);
    let timeline = timeline.finish(end_us, t0);
    let acct = &sink_result.acct;
    let counts = acct.finish(&expected);
    let clear_counts = sink_result.clears.finish(&expected_clears);
    let summary_counts = sink_result.summaries.finish(&cfg.rules.spec, &readings);
    let seed_alerts: u64 = results.iter().map(|r| r.seed_alerts).sum();
    let cloud = counts.received_alerts + clear_counts.received_alerts + summary_counts.received;
    // Active time: the twin pause does not count towards rates.
    let (fp, ru) = (
        first_pause_us.unwrap_or(u64::MAX),
        resume_us.unwrap_or(u64::MAX),
    );
    let active = |us: u64| -> f64 {
        let paused_us = if us >= ru {
            ru.saturating_sub(fp)
        } else {
            us.saturating_sub(fp)
        };
        us.saturating_sub(t0).saturating_sub(paused_us) as f64 / 1e6
    };
    let per_s = |n: u64, s: f64| {
        if s > 0.0 {
            (n as f64 / s * 10.0).round() / 10.0
        } else {
            0.0
        }
    };
    let send_s = active(send_end_us);
    let alert_s = acct.last_alert_us.map_or(0.0, active);
    let through_s = active(send_end_us.max(acct.last_alert_us.unwrap_or(0)));
    let summary = Summary {
        sent,
        malformed: results.iter().map(|r| r.malformed).sum(),
        probes,
        expected_alerts: counts.expected_alerts,
        received_alerts: counts.received_alerts,
        lost: counts.lost,
        duplicates: counts.duplicates,
        unexpected: counts.unexpected,
        send_rate: per_s(sent, send_s),
        alert_rate: per_s(counts.received_alerts, alert_s),
        latency_us: Latency::from_histogram(&acct.latency),
        throughput: per_s(sent, through_s),
        latency_samples: acct.latency.len(),
        qos: cfg.qos,
        sink_qos: cfg.sink_qos,
        mqtt_version: if v == MqttVersion::V5 { 5 } else { 3 },
        rate: cfg.rate,
        connections: cfg.connections,
        devices: cfg.devices,
        threshold: cfg.threshold,
        twin_step: cfg.twin_step,
        twin_version,
        twin_pause_s: match (first_pause_us, resume_us) {
            (Some(f), Some(r)) => r.saturating_sub(f) as f64 / 1e6,
            _ => 0.0,
        },
        send_s: (send_s * 1e6).round() / 1e6,
        duration_s: end_us.saturating_sub(t0) as f64 / 1e6,
        drain_timed_out: sink_result.timed_out,
        refused: results.iter().map(|r| r.refused).sum(),
        cpu_s: cpu.as_secs_f64(),
        cpu_us_per_msg: if sent > 0 {
            (cpu.as_secs_f64() * 1e6 / sent as f64 * 1000.0).round() / 1000.0
        } else {
            0.0
        },
        cpu_publishers_s: results.iter().map(|r| r.cpu.as_secs_f64()).sum(),
        cpu_sink_s: sink_result.cpu.as_secs_f64(),
        send_lag_us: Latency::from_histogram(&send_lag),
        stale: acct.stale,
        target: cfg.target.name().to_string(),
        properties_checked: cfg.property_check.is_some(),
        bad_properties: sink_result.bad_properties,
        first_bad_properties: sink_result.first_bad_topic.clone(),
        first_lost: counts.first_lost,
        first_unexpected: counts.first_unexpected,
        interrupted: INTERRUPTED.load(Ordering::Relaxed),
        rules: cfg.rules.spec.describe(),
        clears: KindCounts {
            expected: clear_counts.expected_alerts,
            received: clear_counts.received_alerts,
            lost: clear_counts.lost,
            duplicates: clear_counts.duplicates,
            unexpected: clear_counts.unexpected,
        },
        summaries: summary_counts,
        first_summary_problem: sink_result.summaries.first_problem.clone(),
        seed_alerts,
        cloud_messages: cloud,
        reduction: if cloud > 0 {
            (seed_alerts as f64 / cloud as f64 * 10.0).round() / 10.0
        } else {
            0.0
        },
    };
    Ok(Outcome {
        summary,
        latency: sink_result.acct.latency,
        timeline,
    })
}

fn sink_failure(sink: thread::JoinHandle<Result<crate::sink::SinkResult, WireError>>) -> RunError {
    match sink.join() {
        Ok(Err(e)) => RunError::Sink(e),
        _ => RunError::Publisher("the alert subscriber stopped".into()),
    }
}
