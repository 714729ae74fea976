//! The worker pool: between MQTT in and the publisher. The connection hands batches of jobs
//! (original payload `Bytes` + whatever metadata it needs back) to std threads over bounded
//! crossbeam channels, sharded by topic so one device's messages stay in order; each worker
//! owns an [`Evaluator`] with reused parse buffers, writes the verdict into each job, and
//! hands the whole batch (the same `Vec`, for reuse) to a [`Sink`].
//!
//! The threshold travels with the batch: the connection loads it from the twin's atomic once
//! per batch at arrival time, so a twin patch changes exactly the verdicts of the messages
//! that arrived after it, whatever the workers' backlog.

use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::verdict::{Evaluator, FieldPath, Verdict};

/// One message to decide.
#[derive(Debug)]
pub struct Job<M> {
    pub payload: Bytes,
    /// Written by the worker.
    pub verdict: Verdict,
    pub meta: M,
}

impl<M> Job<M> {
    pub fn new(payload: Bytes, meta: M) -> Self {
        Job {
            payload,
            verdict: Verdict::Unmatched,
            meta,
        }
    }
}

/// Jobs for one worker, with the threshold in force when they arrived.
#[derive(Debug)]
pub struct Batch<M> {
    pub threshold: f64,
    pub jobs: Vec<Job<M>>,
}

/// Where decided batches go (the connection task, or a bench's collector).
pub trait Sink<M>: Send + 'static {
    fn done(&self, batch: Batch<M>);
}

impl<M: Send + 'static> Sink<M> for tokio::sync::mpsc::UnboundedSender<Batch<M>> {
    fn done(&self, batch: Batch<M>) {
        // The receiver is gone only when the connection shut down; the batch is moot then.
        let _ = self.send(batch);
    }
}

impl<M: Send + 'static> Sink<M> for Sender<Batch<M>> {
    fn done(&self, batch: Batch<M>) {
        let _ = self.send(batch);
    }
}

/// A fixed set of verdict threads.
pub struct Pool<M> {
    senders: Vec<Sender<Batch<M>>>,
    handles: Vec<JoinHandle<()>>,
}

impl<M: Send + 'static> Pool<M> {
    /// Starts `workers` threads; each channel holds up to `capacity` batches.
    pub fn start<S: Sink<M> + Clone>(
        workers: usize,
        field: &FieldPath,
        max_payload: usize,
        capacity: usize,
        sink: S,
    ) -> std::io::Result<Pool<M>> {
        let workers = workers.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) = crossbeam_channel::bounded::<Batch<M>>(capacity.max(1));
            let evaluator = Evaluator::new(field.clone(), max_payload);
            let sink = sink.clone();
            let handle = std::thread::Builder::new()
                .name(format!("verdict-{i}"))
                .spawn(move || work(rx, evaluator, sink))?;
            senders.push(tx);
            handles.push(handle);
        }
        Ok(Pool { senders, handles })
    }

    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// The worker for a topic: the same topic always goes to the same worker.
    pub fn shard(&self, topic: &[u8]) -> usize {
        shard_of(topic, self.senders.len())
    }

    /// Hands a batch to worker `shard`. Blocks only if that worker's channel is full, which the
    /// connection's credit (`--max-pending`) makes rare; returns the batch if the pool stopped.
    pub fn submit(&self, shard: usize, batch: Batch<M>) -> Result<(), Batch<M>> {
        match self.senders[shard].try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(batch)) => self.senders[shard].send(batch).map_err(|e| e.0),
            Err(TrySendError::Disconnected(batch)) => Err(batch),
        }
    }

    /// Closes the channels and waits for the workers to finish what they hold.
    pub fn shutdown(self) {
        drop(self.senders);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn work<M, S: Sink<M>>(rx: Receiver<Batch<M>>, mut evaluator: Evaluator, sink: S) {
    for mut batch in rx {
        let threshold = batch.threshold;
        for job in &mut batch.jobs {
            job.verdict = evaluator.evaluate(&job.payload, threshold);
        }
        sink.done(batch);
    }
}

/// FNV-1a over the topic, reduced to `n` shards.
pub fn shard_of(topic: &[u8], n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in topic {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::verdict::{RejectReason, Rejection};

    #[test]
    fn verdicts_come_back_with_their_jobs() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let field = FieldPath::parse("machine.temperature").unwrap();
        let pool: Pool<u32> = Pool::start(2, &field, 1024, 8, tx).unwrap();
        let bodies: [&'static [u8]; 3] = [
            br#"{"machine":{"temperature":30}}"#,
            br#"{"machine":{"temperature":20}}"#,
            b"nope",
        ];
        for (i, body) in bodies.iter().enumerate() {
            let batch = Batch {
                threshold: 25.0,
                jobs: vec![Job::new(Bytes::from_static(body), i as u32)],
            };
            pool.submit(pool.shard(format!("t/{i}").as_bytes()), batch)
                .unwrap();
        }
        let mut got: Vec<(u32, Verdict)> = Vec::new();
        for _ in 0..3 {
            let b: Batch<u32> = rx.recv().unwrap();
            got.extend(b.jobs.into_iter().map(|j| (j.meta, j.verdict)));
        }
        got.sort_by_key(|(m, _)| *m);
        assert_eq!(got[0].1, Verdict::Alert);
        assert_eq!(got[1].1, Verdict::Unmatched);
        assert!(matches!(
            &got[2].1,
            Verdict::Rejected(Rejection {
                reason: RejectReason::NotJson,
                ..
            })
        ));
        pool.shutdown();
    }

    #[test]
    fn the_batch_threshold_decides() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let field = FieldPath::parse("machine.temperature").unwrap();
        let pool: Pool<()> = Pool::start(1, &field, 1024, 8, tx).unwrap();
        for threshold in [25.0, 35.0] {
            let jobs = vec![Job::new(
                Bytes::from_static(br#"{"machine":{"temperature":30}}"#),
                (),
            )];
            pool.submit(0, Batch { threshold, jobs }).unwrap();
        }
        assert_eq!(rx.recv().unwrap().jobs[0].verdict, Verdict::Alert);
        assert_eq!(rx.recv().unwrap().jobs[0].verdict, Verdict::Unmatched);
        pool.shutdown();
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        for n in 1..8 {
            let s = shard_of(b"telemetry/dev-1", n);
            assert!(s < n);
            assert_eq!(s, shard_of(b"telemetry/dev-1", n));
        }
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| shard_of(format!("telemetry/dev-{i}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4, "64 devices use all 4 workers");
    }
}
