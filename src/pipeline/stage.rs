//! The verdict stage: between MQTT in and the publisher, the one place where a message is
//! judged. A batch of jobs (the original payload `Bytes`, the device it came from, its arrival
//! time) arrives with an immutable snapshot of the rule parameters ([`Rules`], behind an `Arc`)
//! that was in force when the jobs arrived; [`Stage::run`] writes each job's verdict and
//! appends what it causes to be published ([`Out`]) — today one alert per alert verdict.
//!
//! There is one `Stage` per shard, and a shard's messages all go through its stage in arrival
//! order, whether the connection's thread runs it (small batches, `--workers 0`) or a worker
//! thread of the [`pool`](super::pool) does. So per-device state (hysteresis, rate limits,
//! windows) has exactly one home, and a twin patch changes the rules at an exact arrival
//! point: batches formed before it carry the old snapshot.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::verdict::{Evaluator, FieldPath, Verdict};

/// The rule parameters in force for a batch. Immutable: a twin patch makes a new snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Alert when the field is strictly greater than this (a finite number).
    pub threshold: f64,
}

impl Rules {
    pub fn new(threshold: f64) -> Arc<Rules> {
        Arc::new(Rules { threshold })
    }
}

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

/// What a publish caused by a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    /// The job's original body, to the alert topic or output.
    Alert,
}

/// A publish caused by `batch.jobs[job]`, in the order the stage decided them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub job: u32,
    pub kind: OutKind,
}

/// Jobs of one shard, with the rules in force when they arrived.
#[derive(Debug)]
pub struct Batch<M> {
    pub shard: usize,
    /// Sent to a worker thread (else decided on the caller's thread).
    pub pooled: bool,
    pub rules: Arc<Rules>,
    pub jobs: Vec<Job<M>>,
    /// Written by the stage, ordered by `job`.
    pub outs: Vec<Out>,
}

impl<M> Batch<M> {
    pub fn new(shard: usize, rules: Arc<Rules>, jobs: Vec<Job<M>>) -> Self {
        Batch {
            shard,
            pooled: false,
            rules,
            jobs,
            outs: Vec::new(),
        }
    }
}

/// The verdict stage of one shard: the evaluator with its reused parse buffers (and, with
/// rules that need it, per-device state).
pub struct Stage {
    evaluator: Evaluator,
}

impl Stage {
    pub fn new(field: FieldPath, max_payload: usize) -> Stage {
        Stage {
            evaluator: Evaluator::new(field, max_payload),
        }
    }

    /// Decides every job of `batch` in order and appends the publishes they cause.
    pub fn run<M>(&mut self, batch: &mut Batch<M>) {
        let threshold = batch.rules.threshold;
        batch.outs.clear();
        for (i, job) in batch.jobs.iter_mut().enumerate() {
            job.verdict = self.evaluator.evaluate(&job.payload, threshold);
            if job.verdict.is_alert() {
                batch.outs.push(Out {
                    job: i as u32,
                    kind: OutKind::Alert,
                });
            }
        }
    }
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
