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
use std::time::Instant;

use bytes::Bytes;

use super::rules::device::{Devices, Effect, Reading, RuleStats};
pub use super::rules::Rules;
use super::verdict::{Evaluator, FieldPath, Verdict};

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
        if rules.stateless() && self.devices.is_empty() {
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
                for (i, job) in jobs.iter_mut().enumerate() {
                    let r = self
                        .evaluator
                        .evaluate_reading(&job.payload, rules.threshold, time);
                    job.verdict = r.verdict;
                    let Some(value) = r.value else { continue };
                    let reading = Reading {
                        device: &job.device,
                        value,
                        above: job.verdict.is_alert(),
                        arrival_us: anchor.unix_us(job.arrived),
                        event_us: r.time_us,
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
