//! Tooling: one loadgen run, wired together — connect, read the twin (`--target mqtt`), wait
//! until a probe travels the whole path (publisher → broker → filter → alert subscription),
//! start the clock, publish open-loop on every connection, take the twin step halfway if
//! asked, drain the alerts, and turn the counts into a [`Summary`].

use crate::account::{new_latency_histogram, BitSet};
use crate::cli::Config;
use crate::clock::{process_cpu, Clock};
use crate::condition_model::device_threshold;
use crate::message::{
    device_name, probe_body, probe_temperature, Device, PublishFormat, PROBE_DEVICE,
};
use crate::publisher::{self, PubConfig, PubEvent, PubResult, Shared};
use crate::report::{Latency, Summary};
use crate::rule_model::Reading;
use crate::schedule::devices_of;
use crate::sink::{self, Drain, SinkProgress, SinkResult};
use crate::summaries::KindCounts;
use crate::target::Target;
use crate::timeline::Interval;
use crate::twin::{reported_threshold, version_of, Twin, TwinError};
use crate::wire::{Conn, Version, WireError};
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

/// One run, in its phases: [`wire`] the connections, [`wait_ready`] for a probe to come back
/// through the filter, [`send`] open-loop (with the twin step), [`drain`] the alerts, and
/// [`summarize`] the counts.
pub fn run(cfg: &Config) -> Result<Outcome, RunError> {
    let mut w = wire(cfg)?;
    let probes = wait_ready(cfg, &mut w)?;
    let pb = bar(cfg, cfg.schedule.count());
    let sent = match send(cfg, &mut w, &pb) {
        Ok(sent) => sent,
        Err(e) => {
            pb.finish_and_clear();
            return Err(e);
        }
    };
    let mut sent = sent;
    let drained = drain(cfg, &mut w, &mut sent, &pb);
    pb.finish_and_clear();
    let mut drained = drained?;
    if cfg.twin_restore && sent.twin_version.is_some() {
        w.twin.set_threshold(cfg.threshold, cfg.twin_timeout)?;
    }
    w.twin.disconnect();
    Ok(summarize(cfg, &sent, &mut drained, probes))
}

/// The connections of a run, opened before the clock starts, and the running sink.
struct Wired {
    clock: Clock,
    /// The control connection: twin documents and readiness probes.
    twin: Twin,
    /// The alert subscription's thread (taken when it is joined).
    sink: Option<thread::JoinHandle<Result<SinkResult, WireError>>>,
    progress: Arc<SinkProgress>,
    drain_tx: mpsc::Sender<Drain>,
    issued: Arc<AtomicU64>,
    run_start: Arc<AtomicU64>,
    publishers: Vec<Conn>,
}

/// Connects the control connection (reading the retained twin documents with `--target
/// mqtt`), the alert subscription (its thread started) and the publishers.
fn wire(cfg: &Config) -> Result<Wired, RunError> {
    let addr = cfg.broker.addr();
    let id = &cfg.client_id;
    let v = cfg.version;
    let clock = Clock::start();

    // With --target azure the twin is edgeHub's and there are no retained documents to read.
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

    let mut publishers = Vec::new();
    for c in 0..cfg.connections {
        publishers.push(Conn::open(
            &addr,
            &format!("{id}-pub-{c}"),
            v,
            CONNECT_TIMEOUT,
            64 << 10,
        )?);
    }
    Ok(Wired {
        clock,
        twin,
        sink: Some(sink),
        progress,
        drain_tx,
        issued,
        run_start,
        publishers,
    })
}

/// Readiness: a probe must travel the whole path (publisher → broker → filter → alert
/// subscription) before the clock starts. Returns how many probes were sent.
fn wait_ready(cfg: &Config, w: &mut Wired) -> Result<u64, RunError> {
    let probe_t = probe_temperature(cfg.threshold, cfg.twin_step, &cfg.rules.thresholds);
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
    while !w.progress.probe_seen.load(Ordering::Acquire) {
        if w.sink_finished() {
            return Err(w.sink_failure());
        }
        if ready_start.elapsed() > cfg.ready_timeout {
            return Err(RunError::NotReady {
                filter: cfg.alert_filter.clone(),
                timeout: cfg.ready_timeout,
            });
        }
        if Instant::now() >= next_probe {
            w.twin
                .publish0(&probe_topic, &probe_body(probe_t, w.clock.now_us()))?;
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
    Ok(probes)
}

/// What the send phase leaves for the drain and the summary.
struct Sent {
    /// When the clock started (µs on the run's clock), and the process CPU time then.
    t0: u64,
    cpu0: Duration,
    results: Vec<PubResult>,
    first_pause_us: Option<u64>,
    resume_us: Option<u64>,
    twin_version: Option<u64>,
    /// (µs, messages sent so far), for the timeline.
    sent_samples: Vec<(u64, u64)>,
}

/// Starts the clock and the publishers, takes the twin step once they all paused halfway
/// (`--twin-step`), and watches until they are done (or stopped: a failure, the sink gone,
/// SIGINT).
fn send(cfg: &Config, w: &mut Wired, pb: &ProgressBar) -> Result<Sent, RunError> {
    let clock = w.clock;
    let cpu0 = process_cpu();
    let t0 = clock.now_us();
    w.run_start.store(t0, Ordering::Release);
    let shared = Arc::new(Shared::new(clock, t0, cfg.schedule, w.issued.clone()));
    let (ev_tx, ev_rx) = mpsc::channel();
    let fmt = PublishFormat {
        qos: cfg.qos,
        v5: cfg.version == Version::V5,
    };
    let mut handles = Vec::new();
    for (c, conn) in (0..cfg.connections).zip(std::mem::take(&mut w.publishers)) {
        let ids = devices_of(c, cfg.connections, cfg.devices);
        let devices = ids
            .iter()
            .map(|&d| {
                let topic = cfg.target.input_topic(&device_name(d));
                let mut dev = Device::new(d, cfg.seed, topic);
                dev.threshold = device_threshold(&cfg.rules.thresholds, &dev.topic.topic(None));
                dev
            })
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
            condition: cfg.rules.condition.clone(),
            tick: cfg.tick,
        };
        handles.push(publisher::spawn(conn, pc, shared.clone(), ev_tx.clone())?);
    }
    drop(ev_tx);

    let stop = |shared: &Shared| {
        shared.stop.store(true, Ordering::Release);
        shared.resume(0);
    };
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
                    match w.twin.set_threshold(t2, cfg.twin_timeout) {
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
                stop(&shared);
                done += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // The alert subscription broke (its error is reported below), or SIGINT: stop sending.
        let stopping = w.sink_finished() || INTERRUPTED.load(Ordering::Relaxed);
        if stopping && !shared.stop.load(Ordering::Relaxed) {
            stop(&shared);
        }
        if let Err(e) = w.twin.service() {
            failure.get_or_insert(RunError::Wire(e));
            stop(&shared);
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
            w.progress.received.load(Ordering::Relaxed),
            rate_now.round()
        ));
    }
    let results: Vec<PubResult> = handles
        .into_iter()
        .filter_map(|h| h.join().ok().flatten())
        .collect();
    if let Some(e) = failure {
        return Err(e);
    }
    if w.sink_finished() {
        return Err(w.sink_failure());
    }
    Ok(Sent {
        t0,
        cpu0,
        results,
        first_pause_us,
        resume_us,
        twin_version,
        sent_samples,
    })
}

/// What the drain leaves: the sink's counts, the end of the run and its CPU time.
struct Drained {
    sink: SinkResult,
    /// Every publisher's expected alerts, together.
    expected: BitSet,
    expected_clears: BitSet,
    readings: std::collections::BTreeMap<String, Vec<Reading>>,
    send_lag: Histogram<u64>,
    end_us: u64,
    cpu: Duration,
}

/// Tells the sink what to expect and waits until it has it all (or its drain timeout).
fn drain(
    cfg: &Config,
    w: &mut Wired,
    sent: &mut Sent,
    pb: &ProgressBar,
) -> Result<Drained, RunError> {
    let mut expected = BitSet::new();
    let mut expected_clears = BitSet::new();
    let mut readings = std::collections::BTreeMap::new();
    let mut send_lag = new_latency_histogram();
    for r in &mut sent.results {
        expected.union_with(&r.expected);
        expected_clears.union_with(&r.clears);
        readings.extend(std::mem::take(&mut r.readings));
        let _ = send_lag.add(&r.send_lag);
    }
    let expected_count = expected.count();
    // A silent device's last window closes on the filter's timer, at its end.
    let window = Duration::from_micros(cfg.rules.spec.window_us);
    let _ = w.drain_tx.send(Drain {
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
    while !w.sink_finished() {
        pb.set_message(format!(
            "draining: {} alerts received, {expected_count} expected",
            w.progress.received.load(Ordering::Relaxed)
        ));
        let _ = w.twin.service();
        thread::sleep(Duration::from_millis(50));
    }
    let sink = match w.sink.take().map(thread::JoinHandle::join) {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(RunError::Sink(e)),
        _ => return Err(RunError::Publisher("the alert subscriber crashed".into())),
    };
    Ok(Drained {
        sink,
        expected,
        expected_clears,
        readings,
        send_lag,
        end_us: w.clock.now_us(),
        cpu: process_cpu().saturating_sub(sent.cpu0),
    })
}

/// The counts and rates of the run: the twin pause does not count towards rates.
fn summarize(cfg: &Config, s: &Sent, d: &mut Drained, probes: u64) -> Outcome {
    let (t0, results) = (s.t0, &s.results);
    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let send_end_us = results.iter().map(|r| r.done_us).max().unwrap_or(t0);
    let mut timeline =
        std::mem::replace(&mut d.sink.acct.timeline, crate::timeline::Timeline::new(1));
    for &(at, total) in &s.sent_samples {
        timeline.sent_at(at, t0, total);
    }
    timeline.sent_at(send_end_us, t0, sent);
    let timeline = timeline.finish(d.end_us, t0);
    let sink_result = &mut d.sink;
    let acct = &sink_result.acct;
    let counts = acct.finish(&d.expected);
    let clear_counts = sink_result.clears.finish(&d.expected_clears);
    let summary_counts = sink_result.summaries.finish(&cfg.rules.spec, &d.readings);
    let seed_alerts: u64 = results.iter().map(|r| r.seed_alerts).sum();
    let cloud = counts.received_alerts + clear_counts.received_alerts + summary_counts.received;
    let (fp, ru) = (
        s.first_pause_us.unwrap_or(u64::MAX),
        s.resume_us.unwrap_or(u64::MAX),
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
    let cpu = d.cpu;
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
        mqtt_version: if cfg.version == Version::V5 { 5 } else { 3 },
        rate: cfg.rate,
        connections: cfg.connections,
        devices: cfg.devices,
        threshold: cfg.threshold,
        twin_step: cfg.twin_step,
        twin_version: s.twin_version,
        twin_pause_s: match (s.first_pause_us, s.resume_us) {
            (Some(f), Some(r)) => r.saturating_sub(f) as f64 / 1e6,
            _ => 0.0,
        },
        send_s: (send_s * 1e6).round() / 1e6,
        duration_s: d.end_us.saturating_sub(t0) as f64 / 1e6,
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
        send_lag_us: Latency::from_histogram(&d.send_lag),
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
    let latency = std::mem::replace(&mut d.sink.acct.latency, new_latency_histogram());
    Outcome {
        summary,
        latency,
        timeline,
    }
}

impl Wired {
    fn sink_finished(&self) -> bool {
        self.sink.as_ref().is_none_or(|h| h.is_finished())
    }

    /// The alert subscription ended early: its error.
    fn sink_failure(&mut self) -> RunError {
        match self.sink.take().map(thread::JoinHandle::join) {
            Some(Ok(Err(e))) => RunError::Sink(e),
            _ => RunError::Publisher("the alert subscriber stopped".into()),
        }
    }
}
