//! Tooling, io: the QoS 1 window of one publisher connection — which packet ids are
//! unacknowledged. The writer takes an id per PUBLISH, the ack reader releases it on PUBACK;
//! both sides touch only atomics. Ids cycle through 1..=65535 and an id still in flight is
//! skipped, never reused (a window below 65 535 guarantees a free one exists).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Largest window: leaves ids free even if the broker acknowledges out of order.
pub const MAX_WINDOW: u32 = 60_000;

pub struct IdWindow {
    bits: Box<[AtomicU64]>,
    inflight: AtomicU32,
}

impl Default for IdWindow {
    fn default() -> Self {
        IdWindow {
            bits: (0..1024).map(|_| AtomicU64::new(0)).collect(),
            inflight: AtomicU32::new(0),
        }
    }
}

impl IdWindow {
    /// Number of unacknowledged ids.
    #[inline]
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Acquire)
    }

    /// Marks `id` in flight; false if it already was.
    #[inline]
    fn take(&self, id: u16) -> bool {
        let mask = 1u64 << (id & 63);
        let was = self.bits[usize::from(id >> 6)].fetch_or(mask, Ordering::AcqRel);
        if was & mask != 0 {
            return false;
        }
        self.inflight.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Releases `id` on its PUBACK; false for an id that was not in flight (a broker error).
    #[inline]
    pub fn release(&self, id: u16) -> bool {
        let mask = 1u64 << (id & 63);
        let was = self.bits[usize::from(id >> 6)].fetch_and(!mask, Ordering::AcqRel);
        if was & mask == 0 {
            return false;
        }
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        true
    }
}

/// The writer's side: hands out the next free packet id.
#[derive(Debug, Default)]
pub struct IdCursor {
    next: u16,
}

impl IdCursor {
    /// The next id not in flight, marked in flight. The caller keeps the window below
    /// [`MAX_WINDOW`], so the scan always ends.
    #[inline]
    pub fn next(&mut self, w: &IdWindow) -> u16 {
        loop {
            self.next = if self.next == u16::MAX {
                1
            } else {
                self.next + 1
            };
            if w.take(self.next) {
                return self.next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_wrap_below_65535_and_skip_ids_in_flight() {
        let w = IdWindow::default();
        let mut c = IdCursor::default();
        assert_eq!(c.next(&w), 1);
        assert_eq!(c.next(&w), 2);
        assert_eq!(w.inflight(), 2);
        // Id 1 stays unacknowledged across a whole wrap: it must be skipped, never reused.
        assert!(w.release(2));
        for expect in 3..=u16::MAX {
            let id = c.next(&w);
            assert_eq!(id, expect);
            assert!(w.release(id));
        }
        assert_eq!(c.next(&w), 2, "0 is never used and 1 is still in flight");
        assert!(w.release(1) && w.release(2));
        assert!(!w.release(2), "double ack");
        assert!(!w.release(77), "ack for an id never sent");
        assert_eq!(w.inflight(), 0);
    }

    #[test]
    fn window_counts_across_threads() {
        let w = std::sync::Arc::new(IdWindow::default());
        let mut c = IdCursor::default();
        let ids: Vec<u16> = (0..20_000).map(|_| c.next(&w)).collect();
        assert_eq!(w.inflight(), 20_000);
        let w2 = w.clone();
        std::thread::spawn(move || {
            for id in ids {
                assert!(w2.release(id));
            }
        })
        .join()
        .unwrap();
        assert_eq!(w.inflight(), 0);
    }
}
