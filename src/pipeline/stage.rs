//! The verdict stage: between MQTT in and the publisher, the one place where a message is
//! judged. A batch of jobs (the original payload `Bytes`, the device it came from, its arrival
//! time) arrives with an immutable snapshot of the rule parameters ([`Rules`], behind an `Arc`)
//! that was in force when the jobs arrived; [`Stage::run`] writes each job's verdict and
//! appends what it causes to be published ([`Out`]): alerts, and with the stateful rules
//! (`pipeline::rules`) clearing messages and window summaries. A batch may also be a tick (the
//! flow's timer: close the windows of silent devices, evict idle ones) or a flush (shutdown:
//! close every window), which carry no jobs.
//!
//! There is one `Stage` per shard, and a shard's messages all go through its stage in arrival
//! order, whether the connection's thread runs it (small batches, `--workers 0`) or a worker
//! thread of the [`pool`](super::pool) does. So per-device state ([`Devices`]) has exactly one
//! home, and a twin patch changes the rules at an exact arrival point: batches formed before
//! it carry the old snapshot. With every rule off (the default) a batch is decided as the seed
//! decides it, with no state and no allocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::rules::device::{Devices, Effect, Reading, RuleStats};
use super::rules::AlertMode;
pub use super::rules::Rules;
use super::verdict::{Evaluator, Extras, FieldPath, Verdict};

/// One message to decide.
#[derive(Debug)]
pub struct Job<M> {
    pub payload: Bytes,
    /// The device the message came from (the input topic, or IoT Edge's source device and
    /// module): the key of per-device state and of the shard.
    pub device: Bytes,
    pub arrived: Instant,
    /// Written by the stage.
    pub verdict: Verdict,
    /// Whatever the caller needs back with the verdict.
    pub meta: M,
}

impl<M> Job<M> {
    pub fn new(payload: Bytes, device: Bytes, arrived: Instant, meta: M) -> Self {
        Job {
            payload,
            device,
            arrived,
            verdict: Verdict::Unmatched,
            meta,
        }
    }
}

/// What a publish caused by a job (or a tick) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutKind {
    /// The job's original body, to the alert topic or output.
    Alert,
    /// The job's original body as a clearing message (edge mode: the device re-armed).
    Clear,
    /// A closed window's summary document for `device` (the device key: the input topic, or
    /// IoT Edge's source device and module).
    Summary { device: Bytes, payload: Bytes },
}

/// `Out::job` of a publish no job caused (a tick's or a flush's summaries).
pub const NO_JOB: u32 = u32::MAX;

/// A publish caused by `batch.jobs[job]` (or by the batch itself: [`NO_JOB`]), in the order
/// the stage decided them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub job: u32,
    pub kind: OutKind,
}

/// What a batch asks of its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Decide the jobs.
    Jobs,
    /// The flow's timer at this instant: close the windows whose time has passed, drop idle
    /// devices (no jobs).
    Tick(Instant),
    /// Shutdown: close every open window (no jobs).
    Flush,
}

/// Jobs of one shard, with the rules in force when they arrived.
#[derive(Debug)]
pub struct Batch<M> {
    pub shard: usize,
    /// Sent to a worker thread (else decided on the caller's thread).
    pub pooled: bool,
    pub rules: Arc<Rules>,
    pub work: Work,
    pub jobs: Vec<Job<M>>,
    /// Written by the stage, ordered by `job` ([`NO_JOB`] last).
    pub outs: Vec<Out>,
    /// Written by the stage: what the rules held back in this batch.
    pub stats: RuleStats,
    /// Written by the stage: devices with state in this shard after the batch.
    pub devices: u32,
}

impl<M> Batch<M> {
    pub fn new(shard: usize, rules: Arc<Rules>, jobs: Vec<Job<M>>) -> Self {
        Batch {
            shard,
            pooled: false,
            rules,
            work: Work::Jobs,
            jobs,
            outs: Vec::new(),
            stats: RuleStats::default(),
            devices: 0,
        }
    }

    /// A batch without jobs: a tick or a flush.
    pub fn control(shard: usize, rules: Arc<Rules>, work: Work) -> Self {
        Batch {
            work,
            ..Batch::new(shard, rules, Vec::new())
        }
    }
}

/// The verdict stage of one shard: the evaluator with its reused parse buffers, and the
/// per-device rule state of the shard's devices.
pub struct Stage {
    evaluator: Evaluator,
    devices: Devices,
    /// The rules of the last batch (a new snapshot is a twin patch's arrival point).
    rules: Option<Arc<Rules>>,
}

impl Stage {
    pub fn new(field: FieldPath, max_payload: usize) -> Stage {
        Stage {
            evaluator: Evaluator::new(field, max_payload),
            devices: Devices::new(),
            rules: None,
        }
    }

    /// Devices with rule state in this shard.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Decides every job of `batch` in order (or does its tick or flush) and appends the
    /// publishes they cause.
    pub fn run<M>(&mut self, batch: &mut Batch<M>) {
        batch.outs.clear();
        let rules = &batch.rules;
        if self.rules.as_ref().is_none_or(|r| !Arc::ptr_eq(r, rules)) {
            if let Some(old) = self.rules.replace(rules.clone()) {
                let outs = &mut batch.outs;
                self.devices
                    .rules_changed(&old, rules, &mut |e| push(outs, NO_JOB, e));
            }
        }
        if rules.stateless() && self.devices.is_empty() && rules.plain() {
            // The seed's rules: every reading alone, no state.
            let threshold = rules.threshold;
            for (i, job) in batch.jobs.iter_mut().enumerate() {
                job.verdict = self.evaluator.evaluate(&job.payload, threshold);
                if job.verdict.is_alert() {
                    batch.outs.push(Out {
                        job: i as u32,
                        kind: OutKind::Alert,
                    });
                }
            }
        } else if rules.stateless() && self.devices.is_empty() {
            // Per-device thresholds or a condition, still every reading alone.
            for (i, job) in batch.jobs.iter_mut().enumerate() {
                let threshold = rules.threshold_for(&job.device);
                job.verdict = match rules.settings.condition.as_deref() {
                    None => self.evaluator.evaluate(&job.payload, threshold),
                    Some(cond) => {
                        let r = self.evaluator.evaluate_condition(
                            &job.payload,
                            cond,
                            threshold,
                            Extras::default(),
                        );
                        self.devices.stats.condition_missing += u32::from(r.missing);
                        r.verdict
                    }
                };
                if job.verdict.is_alert() {
                    batch.outs.push(Out {
                        job: i as u32,
                        kind: OutKind::Alert,
                    });
                }
            }
        } else {
            self.run_rules(batch);
        }
        batch.stats = std::mem::take(&mut self.devices.stats);
        batch.devices = u32::try_from(self.devices.len()).unwrap_or(u32::MAX);
        // A rule change's summaries came first but belong with the tick's, after the jobs'.
        if batch.outs.first().is_some_and(|o| o.job == NO_JOB) {
            batch.outs.sort_by_key(|o| o.job);
        }
    }

    fn run_rules<M>(&mut self, batch: &mut Batch<M>) {
        let Batch {
            rules,
            jobs,
            outs,
            work,
            ..
        } = batch;
        let anchor = rules.anchor;
        match *work {
            Work::Tick(now) => {
                self.devices
                    .tick(rules, anchor.unix_us(now), &mut |e| push(outs, NO_JOB, e));
            }
            Work::Flush => self.devices.flush(&mut |e| push(outs, NO_JOB, e)),
            Work::Jobs => {
                let time = rules.event_time.as_ref();
                let s = &rules.settings;
                let edge = s.mode == AlertMode::Edge;
                for (i, job) in jobs.iter_mut().enumerate() {
                    let threshold = rules.threshold_for(&job.device);
                    let rearm_at = threshold - s.hysteresis;
                    let (value, rearm, time_us) = match s.condition.as_deref() {
                        None => {
                            let r = self
                                .evaluator
                                .evaluate_reading(&job.payload, threshold, time);
                            job.verdict = r.verdict;
                            let Some(value) = r.value else { continue };
                            (Some(value), value <= rearm_at, r.time_us)
                        }
                        Some(cond) => {
                            let extras = Extras {
                                value: s.window > Duration::ZERO,
                                time,
                            };
                            let r = self.evaluator.evaluate_condition(
                                &job.payload,
                                cond,
                                threshold,
                                extras,
                            );
                            self.devices.stats.condition_missing += u32::from(r.missing);
                            job.verdict = r.verdict;
                            if matches!(job.verdict, Verdict::Rejected(_)) {
                                continue;
                            }
                            let rearm = edge
                                && !self.evaluator.condition_again(&job.payload, cond, rearm_at);
                            (r.value, rearm, r.time_us)
                        }
                    };
                    let reading = Reading {
                        device: &job.device,
                        value,
                        above: job.verdict.is_alert(),
                        rearm,
                        arrival_us: anchor.unix_us(job.arrived),
                        event_us: time_us,
                    };
                    self.devices
                        .reading(rules, &reading, &mut |e| push(outs, i as u32, e));
                }
            }
        }
    }
}

fn push(outs: &mut Vec<Out>, job: u32, e: Effect) {
    let kind = match e {
        Effect::Alert => OutKind::Alert,
        Effect::Clear => OutKind::Clear,
        Effect::Summary { device, payload } => OutKind::Summary { device, payload },
    };
    outs.push(Out { job, kind });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::condition::Condition;
    use crate::pipeline::rules::{Anchor, DeviceThresholds, RuleSettings};

    fn job(body: &'static [u8]) -> Job<()> {
        Job::new(
            Bytes::from_static(body),
            Bytes::from_static(b"d"),
            Instant::now(),
            (),
        )
    }

    #[test]
    fn alerts_cause_one_publish_each_in_order() {
        let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1024);
        let mut batch = Batch::new(
            0,
            Rules::new(25.0),
            vec![
                job(br#"{"machine":{"temperature":30}}"#),
                job(br#"{"machine":{"temperature":20}}"#),
                job(b"nope"),
                job(br#"{"machine":{"temperature":26}}"#),
            ],
        );
        stage.run(&mut batch);
        assert_eq!(batch.jobs[1].verdict, Verdict::Unmatched);
        assert!(matches!(batch.jobs[2].verdict, Verdict::Rejected(_)));
        let jobs: Vec<u32> = batch.outs.iter().map(|o| o.job).collect();
        assert_eq!(jobs, vec![0, 3]);
    }

    fn job_from(device: &'static str, body: String) -> Job<()> {
        Job::new(
            Bytes::from(body),
            Bytes::from_static(device.as_bytes()),
            Instant::now(),
            (),
        )
    }

    fn temp(t: f64, p: f64) -> String {
        format!(r#"{{"machine":{{"temperature":{t},"pressure":{p}}}}}"#)
    }

    fn rules_with(f: impl FnOnce(&mut RuleSettings)) -> Arc<Rules> {
        let mut s = RuleSettings::default();
        f(&mut s);
        Rules::with(25.0, s, None, Anchor::now())
    }

    fn alerts(stage: &mut Stage, rules: &Arc<Rules>, jobs: Vec<Job<()>>) -> Vec<(u32, OutKind)> {
        let mut batch = Batch::new(0, rules.clone(), jobs);
        stage.run(&mut batch);
        batch.outs.into_iter().map(|o| (o.job, o.kind)).collect()
    }

    fn map(entries: &[(&str, f64)]) -> Arc<DeviceThresholds> {
        Arc::new(
            DeviceThresholds::new(entries.iter().map(|&(k, v)| (k.to_string(), v)).collect())
                .unwrap(),
        )
    }

    #[test]
    fn each_device_is_judged_by_its_own_threshold() {
        let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1024);
        let rules = rules_with(|s| {
            s.thresholds = map(&[("telemetry/furnace-1", 300.0), ("plant2/+/bearing", 80.0)])
        });
        let got = alerts(
            &mut stage,
            &rules,
            vec![
                job_from("telemetry/furnace-1", temp(299.0, 1.0)),
                job_from("telemetry/furnace-1", temp(301.0, 1.0)),
                job_from("plant2/l1/bearing", temp(79.0, 1.0)),
                job_from("plant2/l1/bearing", temp(81.0, 1.0)),
                job_from("telemetry/other", temp(26.0, 1.0)),
            ],
        );
        let jobs: Vec<u32> = got.iter().map(|g| g.0).collect();
        assert_eq!(jobs, vec![1, 3, 4]);
    }

    #[test]
    fn a_condition_with_per_device_thresholds() {
        let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1024);
        let rules = rules_with(|s| {
            s.thresholds = map(&[("hot", 300.0)]);
            s.condition = Some(Arc::new(
                Condition::parse("machine.temperature > threshold and machine.pressure >= 1.5")
                    .unwrap(),
            ));
        });
        let mut batch = Batch::new(
            0,
            rules,
            vec![
                job_from("hot", temp(301.0, 1.5)),
                job_from("hot", temp(299.0, 2.0)),
                job_from("cold", temp(26.0, 1.4)),
                job_from("cold", temp(26.0, 1.6)),
                job_from("cold", r#"{"machine":{"temperature":30}}"#.into()),
                job_from(
                    "cold",
                    r#"{"machine":{"temperature":30,"pressure":"x"}}"#.into(),
                ),
            ],
        );
        stage.run(&mut batch);
        let jobs: Vec<u32> = batch.outs.iter().map(|o| o.job).collect();
        assert_eq!(jobs, vec![0, 3]);
        assert!(matches!(batch.jobs[5].verdict, Verdict::Rejected(_)));
        assert_eq!(batch.stats.condition_missing, 1);
    }

    #[test]
    fn edge_mode_re_arms_at_the_devices_threshold_and_on_the_condition() {
        // Per-device threshold 30, hysteresis 2: re-arms at 28 (the global 25 - 2 would be 23).
        let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1024);
        let rules = rules_with(|s| {
            s.mode = AlertMode::Edge;
            s.hysteresis = 2.0;
            s.clear = true;
            s.thresholds = map(&[("d", 30.0)]);
        });
        let got = alerts(
            &mut stage,
            &rules,
            [31.0, 29.0, 31.0, 28.0, 31.0]
                .iter()
                .map(|&t| job_from("d", temp(t, 1.0)))
                .collect(),
        );
        assert_eq!(
            got,
            vec![
                (0, OutKind::Alert),
                (3, OutKind::Clear),
                (4, OutKind::Alert)
            ]
        );
        // With a condition: alerts when it becomes true, re-arms when it fails at threshold − 2.
        let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1024);
        let rules = rules_with(|s| {
            s.mode = AlertMode::Edge;
            s.hysteresis = 2.0;
            s.clear = true;
            s.condition = Some(Arc::new(
                Condition::parse("machine.temperature > threshold and machine.pressure > 1")
                    .unwrap(),
            ));
        });
        let got = alerts(
            &mut stage,
            &rules,
            vec![
                job_from("d", temp(26.0, 2.0)),                        // alert
                job_from("d", temp(24.0, 2.0)),                        // 24 > 23: still armed off
                job_from("d", temp(26.0, 2.0)),                        // suppressed
                job_from("d", temp(26.0, 0.5)), // pressure fails: re-arm + clear
                job_from("d", temp(26.0, 2.0)), // alert
                job_from("d", r#"{"machine":{"pressure":2}}"#.into()), // temperature missing: re-arm
            ],
        );
        assert_eq!(
            got,
            vec![
                (0, OutKind::Alert),
                (3, OutKind::Clear),
                (4, OutKind::Alert),
                (5, OutKind::Clear)
            ]
        );
    }

    #[test]
    fn the_batch_rules_decide() {
        let mut stage = Stage::new(FieldPath::parse("machine.temperature").unwrap(), 1024);
        for (threshold, alerts) in [(25.0, 1), (35.0, 0)] {
            let mut batch = Batch::new(
                0,
                Rules::new(threshold),
                vec![job(br#"{"machine":{"temperature":30}}"#)],
            );
            stage.run(&mut batch);
            assert_eq!(batch.outs.len(), alerts);
        }
    }
}
