//! The worker pool: between MQTT in and the publisher. The connection hands batches of jobs to
//! std threads over bounded crossbeam channels, one thread per shard (shards are chosen by
//! device, so one device's messages stay in order); each worker runs its shard's [`Stage`] on
//! the batch and hands the whole batch (the same `Vec`s, for reuse) to a [`Sink`].
//!
//! A shard's stage is shared with the connection's thread, which runs small batches itself
//! while the shard's worker is idle (`Flow` only does so when nothing of that shard is with
//! the worker, so the lock is never contended and order holds).

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::stage::{Batch, Stage};

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

/// A shard's stage, shared between its worker and the connection's thread.
pub type SharedStage = Arc<Mutex<Stage>>;

/// Runs `batch` through `stage` (a poisoned lock only means an earlier run panicked; the
/// stage holds no invariant a panic could break, so it is used as is).
pub fn run_stage<M>(stage: &SharedStage, batch: &mut Batch<M>) {
    stage
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .run(batch);
}

/// A fixed set of verdict threads, one per shard.
pub struct Pool<M> {
    senders: Vec<Sender<Batch<M>>>,
    handles: Vec<JoinHandle<()>>,
}

impl<M: Send + 'static> Pool<M> {
    /// Starts one thread per stage; each channel holds up to `capacity` batches.
    pub fn start<S: Sink<M> + Clone>(
        stages: &[SharedStage],
        capacity: usize,
        sink: S,
    ) -> std::io::Result<Pool<M>> {
        let mut senders = Vec::with_capacity(stages.len());
        let mut handles = Vec::with_capacity(stages.len());
        for (i, stage) in stages.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded::<Batch<M>>(capacity.max(1));
            let stage = stage.clone();
            let sink = sink.clone();
            let handle = std::thread::Builder::new()
                .name(format!("verdict-{i}"))
                .spawn(move || work(rx, stage, sink))?;
            senders.push(tx);
            handles.push(handle);
        }
        Ok(Pool { senders, handles })
    }

    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Hands a batch to the worker of `batch.shard`. Blocks only if that worker's channel is
    /// full, which the connection's input credit makes rare; returns the batch if the pool
    /// stopped.
    pub fn submit(&self, batch: Batch<M>) -> Result<(), Batch<M>> {
        let Some(tx) = self.senders.get(batch.shard) else {
            return Err(batch);
        };
        match tx.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(batch)) => tx.send(batch).map_err(|e| e.0),
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

fn work<M, S: Sink<M>>(rx: Receiver<Batch<M>>, stage: SharedStage, sink: S) {
    for mut batch in rx {
        run_stage(&stage, &mut batch);
        sink.done(batch);
    }
}

/// FNV-1a over the device key, reduced to `n` shards.
pub fn shard_of(key: &[u8], n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stage::{Job, Rules};
    use crate::pipeline::verdict::{FieldPath, RejectReason, Rejection, Verdict};
    use bytes::Bytes;
    use std::time::Instant;

    fn stages(n: usize) -> Vec<SharedStage> {
        let field = FieldPath::parse("machine.temperature").unwrap();
        (0..n)
            .map(|_| Arc::new(Mutex::new(Stage::new(field.clone(), 1024))))
            .collect()
    }

    #[test]
    fn verdicts_come_back_with_their_jobs() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool: Pool<u32> = Pool::start(&stages(2), 8, tx).unwrap();
        let bodies: [&'static [u8]; 3] = [
            br#"{"machine":{"temperature":30}}"#,
            br#"{"machine":{"temperature":20}}"#,
            b"nope",
        ];
        for (i, body) in bodies.iter().enumerate() {
            let device = Bytes::from(format!("t/{i}"));
            let shard = shard_of(&device, pool.workers());
            let job = Job::new(Bytes::from_static(body), device, Instant::now(), i as u32);
            pool.submit(Batch::new(shard, Rules::new(25.0), vec![job]))
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
    fn a_shard_without_a_worker_is_refused() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let pool: Pool<()> = Pool::start(&stages(1), 8, tx).unwrap();
        assert!(pool
            .submit(Batch::new(3, Rules::new(1.0), Vec::new()))
            .is_err());
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
