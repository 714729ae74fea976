//! The outbox's file I/O for the connection loop (the `outbox` acknowledgement policy): opens
//! the file store ([`store`]) before the first connection and hands `Flow` what an earlier run left
//! there; then, once per loop turn, appends the alerts `Flow` asks for and commits them in one
//! write (group commit; one fdatasync with `--outbox-durability fsync`), tells `Flow` they are
//! committed, and marks done what the broker acknowledged. A failing write is logged once,
//! counted, and turns the rest of the run to the alert policy — nothing is acknowledged that
//! is not either in the outbox or acknowledged by the broker.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::flow::{Flow, OutboxAppend};
use crate::logging::chain;
use crate::metrics::Metrics;
pub mod store;

pub use store::{Durability, Outbox, OutboxError};

/// Outbox files above this size are compacted (the pending alerts rewritten).
const COMPACT_AT: u64 = 16 << 20;

/// The open outbox of a running filter.
pub struct OutboxIo {
    outbox: Option<Outbox>,
    metrics: Arc<Metrics>,
}

impl OutboxIo {
    /// Opens (or creates) the outbox in `dir`; returns it with the alerts an earlier run
    /// left there (for [`OutboxIo::start`]). Fails when the directory cannot be created or
    /// written, or another process holds the outbox.
    pub fn open(
        dir: &Path,
        durability: Durability,
        metrics: Arc<Metrics>,
    ) -> Result<(OutboxIo, Vec<OutboxAppend>), OutboxError> {
        let (outbox, recovery) = Outbox::open(dir, durability, COMPACT_AT)?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(
                "outbox: cut {} bytes of a record torn by the last crash",
                recovery.truncated_bytes
            );
        }
        let pending = recovery
            .pending
            .into_iter()
            .map(|p| OutboxAppend {
                seq: p.seq,
                topic: Bytes::from(p.topic),
                payload: Bytes::from(p.payload),
            })
            .collect();
        let io = OutboxIo {
            outbox: Some(outbox),
            metrics,
        };
        Ok((io, pending))
    }

    /// Queues the earlier run's alerts in `flow`, ahead of everything else, and tells it
    /// where the file's numbering goes on.
    pub fn start(&self, flow: &mut Flow, pending: Vec<OutboxAppend>) {
        let n = pending.len();
        if n > 0 {
            tracing::info!(
                "outbox: sending again {n} alerts an earlier run did not get acknowledged"
            );
        }
        self.metrics.delivery.outbox_replayed(n);
        let next = self.outbox.as_ref().map_or(0, Outbox::next_seq);
        flow.handle_outbox_replay(next, pending, std::time::Instant::now());
        self.metrics.delivery.outbox_pending(flow.outbox_pending());
    }

    /// One loop turn: append and commit what `flow` recorded, mark done what was
    /// acknowledged. Returns whether inputs may have been released (poll `flow` again).
    pub fn turn(&mut self, flow: &mut Flow) -> bool {
        let Some(outbox) = &mut self.outbox else {
            return false;
        };
        let appends = flow.poll_outbox();
        let mut released = false;
        let mut result = Ok(());
        if !appends.is_empty() {
            result = append_all(outbox, &appends).and_then(|()| outbox.commit());
            if result.is_ok() {
                flow.handle_outbox_committed();
                released = true;
            }
        }
        if result.is_ok() {
            if let Some(seq) = flow.poll_outbox_done() {
                result = outbox.done(seq);
            }
        }
        if let Err(e) = result {
            tracing::error!(
                "{}; inputs now wait for their alerts' acknowledgements (the alert policy)",
                chain(&e)
            );
            self.metrics.delivery.outbox_error();
            self.outbox = None;
            flow.handle_outbox_failed();
            released = true;
        }
        self.metrics.delivery.outbox_pending(flow.outbox_pending());
        released
    }
}

/// Appends in `Flow`'s order; the outbox must number them as `Flow` did.
fn append_all(outbox: &mut Outbox, appends: &[OutboxAppend]) -> Result<(), OutboxError> {
    for a in appends {
        let expected = outbox.next_seq();
        if a.seq != expected {
            return Err(OutboxError::OutOfStep {
                flow: a.seq,
                file: expected,
            });
        }
        outbox.append(&a.topic, &a.payload)?;
    }
    Ok(())
}
