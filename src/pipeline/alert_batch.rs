//! Alert batching, between the verdict and MQTT out: alerts wait here until the batch is full
//! (`--batch-max`), its linger expired (`--batch-linger`), or the connection has nothing else
//! ready; then the whole batch goes out in one socket write. With `--batch-format array` a
//! batch becomes one PUBLISH per alert topic whose body is a JSON array of the original
//! bodies. Pure state with `now` passed in.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

/// How alerts are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One PUBLISH per alert, its body the original message (batched only into one write).
    Single,
    /// One PUBLISH per batch and alert topic, its body a JSON array of the original messages.
    Array,
}

/// Collects items until a flush is due.
#[derive(Debug)]
pub struct Batcher<T> {
    max: usize,
    linger: Duration,
    items: Vec<T>,
    /// When the oldest waiting item arrived (linger is measured from it).
    first_at: Option<Instant>,
}

impl<T> Batcher<T> {
    pub fn new(max: usize, linger: Duration) -> Self {
        Batcher {
            max: max.max(1),
            linger,
            items: Vec::with_capacity(max.clamp(1, 4096)),
            first_at: None,
        }
    }

    /// Adds an item; returns true when the batch is now full and should be flushed.
    pub fn push(&mut self, item: T, now: Instant) -> bool {
        if self.items.is_empty() {
            self.first_at = Some(now);
        }
        self.items.push(item);
        self.items.len() >= self.max
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the current batch must be flushed at the latest (None when empty).
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.linger)
    }

    /// True when the batch should be flushed at `now`: full, or its linger has passed.
    /// With a zero linger every non-empty batch is due.
    pub fn due(&self, now: Instant) -> bool {
        !self.items.is_empty()
            && (self.items.len() >= self.max || self.deadline().is_some_and(|d| now >= d))
    }

    /// Takes at most `max` items (oldest first), leaving the rest for the next flush.
    pub fn take(&mut self, now: Instant) -> std::vec::Drain<'_, T> {
        let n = self.items.len().min(self.max);
        self.first_at = if self.items.len() > n {
            Some(now)
        } else {
            None
        };
        self.items.drain(..n)
    }
}

/// The JSON array `[b1,b2,…]` of the given bodies, each copied verbatim.
pub fn json_array<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(b'[');
    for (i, b) in bodies.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.extend_from_slice(b);
    }
    out.put_u8(b']');
    out.freeze()
}

/// Splits `items` into runs by `key`, keeping the first-seen order of keys and the arrival
/// order within each key (an array batch becomes one PUBLISH per alert topic).
pub fn group_by_key<T, K: PartialEq + Clone>(
    items: Vec<T>,
    mut key: impl FnMut(&T) -> K,
) -> Vec<(K, Vec<T>)> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in items {
        let k = key(&item);
        match groups.iter_mut().find(|(gk, _)| *gk == k) {
            Some((_, g)) => g.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batches_are_due_at_once() {
        let now = Instant::now();
        let mut b = Batcher::new(3, Duration::from_secs(10));
        assert!(!b.push(1, now));
        assert!(!b.push(2, now));
        assert!(!b.due(now));
        assert!(b.push(3, now));
        assert!(b.due(now));
        assert_eq!(b.take(now).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn linger_is_measured_from_the_oldest_item() {
        let t0 = Instant::now();
        let mut b = Batcher::new(100, Duration::from_millis(5));
        b.push("a", t0);
        b.push("b", t0 + Duration::from_millis(4));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(5)));
        assert!(!b.due(t0 + Duration::from_millis(4)));
        assert!(b.due(t0 + Duration::from_millis(5)));
    }

    #[test]
    fn zero_linger_flushes_every_batch() {
        let now = Instant::now();
        let mut b = Batcher::new(100, Duration::ZERO);
        assert!(!b.due(now));
        b.push(1, now);
        assert!(b.due(now));
    }

    #[test]
    fn take_leaves_the_overflow_for_the_next_flush() {
        let now = Instant::now();
        let mut b = Batcher::new(2, Duration::ZERO);
        for i in 0..5 {
            b.push(i, now);
        }
        assert_eq!(b.take(now).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(b.len(), 3);
        assert!(b.due(now));
        assert_eq!(b.take(now).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(b.take(now).collect::<Vec<_>>(), vec![4]);
        assert!(!b.due(now));
    }

    #[test]
    fn arrays_hold_the_bodies_verbatim() {
        assert_eq!(
            &json_array([&b"{\"a\":1}"[..], b" {\"b\" : 2} "])[..],
            b"[{\"a\":1}, {\"b\" : 2} ]"
        );
        assert_eq!(&json_array(std::iter::empty())[..], b"[]");
    }

    #[test]
    fn groups_keep_order() {
        let g = group_by_key(vec![("x", 1), ("y", 2), ("x", 3)], |(k, _)| *k);
        assert_eq!(
            g,
            vec![("x", vec![("x", 1), ("x", 3)]), ("y", vec![("y", 2)])]
        );
    }
}
