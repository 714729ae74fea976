//! `Flow`'s intake (MQTT in → verdict stages): the jobs collected per shard, the batches formed
//! from them (each carrying the rules snapshot in force when it was formed), and the count of
//! what is out with the stages. Pure: no clock, no socket.
//!
//! Invariants (tested below):
//! - a shard's jobs reach its stage in arrival order: a batch for a shard whose worker is busy
//!   waits until the worker's previous batch came back — unless the dispatch is forced (a twin
//!   patch, a control batch), and then it queues behind the earlier ones;
//! - `in_stages` counts the jobs handed out and not yet back, `controls_out` the job-less
//!   (tick, flush) batches; both are 0 again once everything came back;
//! - the vectors of returned batches are reused (bounded pools): a steady stream allocates
//!   nothing per batch.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::pipeline::rules::Rules;
use crate::pipeline::stage::{Batch, Job, Out, Work};

/// Jobs of one shard not yet handed to its stage.
#[derive(Debug)]
struct Shard<M> {
    jobs: Vec<Job<M>>,
    /// Batches with the shard's worker (one at a time, except after a forced dispatch).
    with_worker: usize,
}

impl<M> Default for Shard<M> {
    fn default() -> Self {
        Shard {
            jobs: Vec::new(),
            with_worker: 0,
        }
    }
}

/// The intake of the filter's inputs (see the module documentation).
#[derive(Debug)]
pub(super) struct Intake<M> {
    shards: Vec<Shard<M>>,
    /// Vectors that came back with decided batches, for reuse.
    spare_jobs: Vec<Vec<Job<M>>>,
    spare_outs: Vec<Vec<Out>>,
    /// Jobs handed out and not yet back (any connection).
    in_stages: usize,
    /// Tick and flush batches handed out and not yet back.
    controls_out: usize,
    /// Batches formed but not yet taken by the I/O loop, in order.
    ready: VecDeque<Batch<M>>,
    /// Whether shards have worker threads (else every batch is decided inline).
    pooled: bool,
    /// Batches up to this size go inline when their worker is idle.
    inline_batch: usize,
}

/// At most this many spare vectors of each kind are kept, each at most this large.
const SPARES: usize = 64;
const SPARE_CAPACITY: usize = 4096;

impl<M> Intake<M> {
    pub(super) fn new(shards: usize, pooled: bool, inline_batch: usize) -> Self {
        Intake {
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            spare_jobs: Vec::new(),
            spare_outs: Vec::new(),
            in_stages: 0,
            controls_out: 0,
            ready: VecDeque::new(),
            pooled,
            inline_batch,
        }
    }

    pub(super) fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Collects a job for `shard`.
    pub(super) fn push(&mut self, shard: usize, job: Job<M>) {
        let jobs = &mut self.shards[shard].jobs;
        if jobs.capacity() == 0 {
            if let Some(v) = self.spare_jobs.pop() {
                *jobs = v;
            }
        }
        jobs.push(job);
    }

    /// Forms batches of the collected jobs, with `rules`.
    ///
    /// A worker gets its next batch only when its previous one came back (unless `force`):
    /// under load the jobs that arrive meanwhile accumulate into one larger batch, so the
    /// hand-offs (wake-ups and context switches, the dominant cost on small gateways) per
    /// message fall as the rate rises, while an idle worker still gets a message at once.
    /// `force` is for twin patches: what arrived before a patch must go with the old rules.
    pub(super) fn dispatch(&mut self, force: bool, rules: &Arc<Rules>) {
        for s in 0..self.shards.len() {
            let shard = &mut self.shards[s];
            let pending = shard.jobs.len();
            if pending == 0 {
                continue;
            }
            let idle = shard.with_worker == 0;
            // A hand-off and the hand-back cost about as much as 40 verdicts (two wake-ups and
            // context switches): a small batch for an idle worker is decided on the loop's
            // thread. An idle worker means nothing of this shard is out, so order holds.
            let inline = !self.pooled || (idle && pending <= self.inline_batch);
            if !inline && !idle && !force {
                continue;
            }
            let jobs = std::mem::take(&mut shard.jobs);
            if !inline {
                shard.with_worker += 1;
            }
            self.in_stages += pending;
            let mut batch = Batch::new(s, rules.clone(), jobs);
            batch.pooled = !inline;
            if let Some(outs) = self.spare_outs.pop() {
                batch.outs = outs;
            }
            self.ready.push_back(batch);
        }
    }

    /// Hands every shard a batch without jobs (`work`: a tick or a flush), after the jobs
    /// collected so far (which go first, with the rules they arrived under).
    pub(super) fn control(&mut self, work: Work, rules: &Arc<Rules>) {
        self.dispatch(true, rules);
        for s in 0..self.shards.len() {
            let shard = &mut self.shards[s];
            // On the loop's thread when the worker is idle (order holds), else behind the
            // worker's batches.
            let inline = !self.pooled || shard.with_worker == 0;
            if !inline {
                shard.with_worker += 1;
            }
            let mut batch = Batch::control(s, rules.clone(), work);
            batch.pooled = !inline;
            self.controls_out += 1;
            self.ready.push_back(batch);
        }
    }

    /// The next batch to decide, in order (forming batches first when none is ready).
    pub(super) fn next(&mut self, rules: &Arc<Rules>) -> Option<Batch<M>> {
        if self.ready.is_empty() {
            self.dispatch(false, rules);
        }
        self.ready.pop_front()
    }

    /// A batch came back from its stage (its jobs not yet taken out).
    pub(super) fn returned(&mut self, batch: &Batch<M>) {
        if batch.pooled {
            let shard = &mut self.shards[batch.shard];
            shard.with_worker = shard.with_worker.saturating_sub(1);
        }
        if batch.work != Work::Jobs {
            self.controls_out = self.controls_out.saturating_sub(1);
        }
        self.in_stages -= batch.jobs.len();
    }

    /// The emptied vectors of a returned batch, for the next ones.
    pub(super) fn recycle(&mut self, jobs: Vec<Job<M>>, mut outs: Vec<Out>) {
        debug_assert!(jobs.is_empty());
        if jobs.capacity() <= SPARE_CAPACITY && self.spare_jobs.len() < SPARES {
            self.spare_jobs.push(jobs);
        }
        outs.clear();
        if outs.capacity() <= SPARE_CAPACITY && self.spare_outs.len() < SPARES {
            self.spare_outs.push(outs);
        }
    }

    /// Jobs handed out and not yet back.
    pub(super) fn in_stages(&self) -> usize {
        self.in_stages
    }

    /// Nothing collected, formed or out with a stage.
    pub(super) fn is_idle(&self) -> bool {
        self.in_stages == 0
            && self.controls_out == 0
            && self.ready.is_empty()
            && self.shards.iter().all(|s| s.jobs.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;

    fn job(n: u32) -> Job<u32> {
        Job::new(
            Bytes::from_static(b"{}"),
            Bytes::from_static(b"d"),
            Instant::now(),
            n,
        )
    }

    fn metas(b: &Batch<u32>) -> Vec<u32> {
        b.jobs.iter().map(|j| j.meta).collect()
    }

    #[test]
    fn a_busy_worker_gets_one_larger_batch_when_its_last_one_is_back() {
        let rules = Rules::new(25.0);
        let mut i = Intake::new(1, true, 0);
        i.push(0, job(1));
        let first = i.next(&rules).unwrap();
        assert!(first.pooled);
        i.push(0, job(2));
        i.push(0, job(3));
        assert!(i.next(&rules).is_none(), "the worker is busy: 2 and 3 wait");
        assert_eq!(i.in_stages(), 1);
        i.returned(&first);
        let second = i.next(&rules).unwrap();
        assert_eq!(metas(&second), vec![2, 3], "in arrival order, together");
        assert_eq!(i.in_stages(), 2);
    }

    #[test]
    fn a_forced_dispatch_queues_behind_the_batch_out_and_counts_come_back_to_zero() {
        let rules = Rules::new(25.0);
        let mut i = Intake::new(2, true, 0);
        i.push(0, job(1));
        let first = i.next(&rules).unwrap();
        i.push(0, job(2));
        i.dispatch(true, &rules); // a twin patch arrived: 2 goes with the old rules
        let forced = i.next(&rules).unwrap();
        assert_eq!(metas(&forced), vec![2]);
        i.control(Work::Flush, &rules);
        let controls: Vec<_> = std::iter::from_fn(|| i.next(&rules)).collect();
        assert_eq!(controls.len(), 2, "one per shard");
        assert!(!i.is_idle());
        for mut b in [first, forced].into_iter().chain(controls) {
            i.returned(&b);
            let jobs = std::mem::take(&mut b.jobs);
            let outs = std::mem::take(&mut b.outs);
            i.recycle(jobs.into_iter().take(0).collect(), outs);
        }
        assert!(i.is_idle());
        assert_eq!(i.in_stages(), 0);
    }

    #[test]
    fn small_batches_for_an_idle_worker_are_decided_inline() {
        let rules = Rules::new(25.0);
        let mut i = Intake::new(1, true, 32);
        i.push(0, job(1));
        let b = i.next(&rules).unwrap();
        assert!(!b.pooled, "idle worker, small batch: on the loop's thread");
        i.returned(&b);
        let mut one = Intake::new(1, false, 0);
        one.push(0, job(1));
        assert!(
            !one.next(&rules).unwrap().pooled,
            "no workers: always inline"
        );
    }

    #[test]
    fn returned_vectors_are_reused() {
        let rules = Rules::new(25.0);
        let mut i = Intake::new(1, false, 0);
        i.push(0, job(1));
        let mut b = i.next(&rules).unwrap();
        i.returned(&b);
        let mut jobs = std::mem::take(&mut b.jobs);
        jobs.clear();
        let cap = jobs.capacity();
        i.recycle(jobs, std::mem::take(&mut b.outs));
        i.push(0, job(2));
        let b = i.next(&rules).unwrap();
        assert_eq!(b.jobs.capacity(), cap, "the spare vector was taken");
    }
}
