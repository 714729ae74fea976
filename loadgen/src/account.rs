//! Tooling, the counting end of loadgen: what came back on the alert subscription. Pure logic,
//! no sockets — the sink ([`crate::sink`]) feeds it one alert payload at a time, the
//! publishers record which sequence numbers they expected as alerts, and [`Accounting::finish`]
//! turns both into the exact lost / duplicate / unexpected counts.

use crate::timeline::{Timeline, LATENCY_MAX_US};
use hdrhistogram::Histogram;
use memchr::memmem::FinderRev;

/// A growable set of sequence numbers (one bit each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub fn new() -> Self {
        BitSet::default()
    }

    /// Sets bit `i`; returns whether it was already set.
    #[inline]
    pub fn insert(&mut self, i: u64) -> bool {
        let w = (i >> 6) as usize;
        if w >= self.words.len() {
            // Grow geometrically so a long run does not reallocate per word.
            let want = (w + 1).max(self.words.len() * 2).max(1024);
            self.words.resize(want, 0);
        }
        let mask = 1u64 << (i & 63);
        let was = self.words[w] & mask != 0;
        self.words[w] |= mask;
        was
    }

    #[inline]
    pub fn contains(&self, i: u64) -> bool {
        let w = (i >> 6) as usize;
        w < self.words.len() && self.words[w] & (1u64 << (i & 63)) != 0
    }

    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &BitSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }

    /// Number of members of `self` that are also in `other`.
    pub fn count_and(&self, other: &BitSet) -> u64 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }

    /// Number of members of `self` that are not in `other`.
    pub fn count_and_not(&self, other: &BitSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, a)| u64::from((a & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// The first `limit` members of `self` that are not in `other`, in order.
    pub fn first_and_not(&self, other: &BitSet, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, a) in self.words.iter().enumerate() {
            let mut bits = a & !other.words.get(i).copied().unwrap_or(0);
            while bits != 0 && out.len() < limit {
                let b = bits.trailing_zeros();
                out.push((i as u64) * 64 + u64::from(b));
                bits &= bits - 1;
            }
            if out.len() >= limit {
                break;
            }
        }
        out
    }
}

/// What one alert payload is, to the accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// A loadgen message seen for the first time.
    First,
    /// A loadgen message seen before.
    Duplicate,
    /// The readiness probe (never counted).
    Probe,
    /// A loadgen message from before this run's start (a filter still draining an earlier
    /// run's backlog): counted apart, never as this run's alert.
    Stale,
    /// No usable `"seq"`, or a sequence number loadgen never sent.
    Unknown,
}

/// Finds the numbers loadgen put in its bodies with a byte scan (no JSON parse): the body
/// ends with `…,"seq":N,"device":"…","sentUs":M}`, so a reverse search is short.
pub struct Scanner {
    seq: FinderRev<'static>,
    sent: FinderRev<'static>,
    probe: FinderRev<'static>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            seq: FinderRev::new(b"\"seq\":"),
            sent: FinderRev::new(b"\"sentUs\":"),
            probe: FinderRev::new(b"\"probe\":true"),
        }
    }
}

impl Scanner {
    /// `"seq":N` as a non-negative integer (whitespace after the colon allowed).
    #[inline]
    pub fn seq(&self, payload: &[u8]) -> Option<u64> {
        let at = self.seq.rfind(payload)?;
        parse_u64_after(payload, at + 6)
    }

    /// `"sentUs":M`, the intended send time in µs since the Unix epoch.
    #[inline]
    pub fn sent_us(&self, payload: &[u8]) -> Option<u64> {
        let at = self.sent.rfind(payload)?;
        parse_u64_after(payload, at + 9)
    }

    pub fn is_probe(&self, payload: &[u8]) -> bool {
        self.probe.rfind(payload).is_some()
    }
}

/// Parses the decimal digits at `payload[at..]` (after optional spaces); the number must end
/// at a non-digit or the end of the payload, and fit in a u64.
#[inline]
fn parse_u64_after(payload: &[u8], mut at: usize) -> Option<u64> {
    while at < payload.len() && matches!(payload[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    let mut n: u64 = 0;
    let start = at;
    while at < payload.len() && payload[at].is_ascii_digit() {
        n = n
            .checked_mul(10)?
            .checked_add(u64::from(payload[at] - b'0'))?;
        at += 1;
    }
    (at > start).then_some(n)
}

/// Everything the sink has counted so far.
pub struct Accounting {
    scanner: Scanner,
    /// Sequence numbers received at least once.
    pub seen: BitSet,
    /// Every counted alert message (not probes), duplicates and unknowns included.
    pub received: u64,
    pub duplicates: u64,
    /// Alerts with no usable seq or a seq loadgen never sent.
    pub unknown: u64,
    /// Probes received (readiness; never counted as alerts).
    pub probes: u64,
    /// Alerts for messages of an earlier run (never counted as alerts).
    pub stale: u64,
    /// End-to-end latency in µs: receive time − intended send time, first copy of each seq.
    pub latency: Histogram<u64>,
    /// Receive time (µs since the epoch) of the first and the last counted alert.
    pub first_alert_us: Option<u64>,
    pub last_alert_us: Option<u64>,
    /// Per-second counts and latency for `--report`.
    pub timeline: Timeline,
}

impl Default for Accounting {
    fn default() -> Self {
        Accounting::new()
    }
}

impl Accounting {
    pub fn new() -> Self {
        Accounting {
            scanner: Scanner::default(),
            seen: BitSet::new(),
            received: 0,
            duplicates: 0,
            unknown: 0,
            probes: 0,
            stale: 0,
            latency: new_latency_histogram(),
            first_alert_us: None,
            last_alert_us: None,
            timeline: Timeline::new(1_000_000),
        }
    }

    /// Counts one alert payload received at `now_us`. `issued` is one past the highest
    /// sequence number any publisher has used so far (anything at or above it is unknown);
    /// `run_start_us` is when this run's clock started (`u64::MAX` before): every message of
    /// this run was intended at or after it, so an earlier `sentUs` is another run's.
    #[inline]
    pub fn on_alert(
        &mut self,
        payload: &[u8],
        now_us: u64,
        issued: u64,
        run_start_us: u64,
    ) -> (AlertKind, u64) {
        let Some(seq) = self.scanner.seq(payload) else {
            if self.scanner.is_probe(payload) {
                self.probes += 1;
                return (AlertKind::Probe, 0);
            }
            self.count_alert(now_us);
            self.timeline.alert(now_us, run_start_us, None);
            self.unknown += 1;
            return (AlertKind::Unknown, 0);
        };
        let sent = self.scanner.sent_us(payload);
        if sent.is_some_and(|s| s < run_start_us) {
            self.stale += 1;
            return (AlertKind::Stale, seq);
        }
        self.count_alert(now_us);
        if seq >= issued {
            self.timeline.alert(now_us, run_start_us, None);
            self.unknown += 1;
            return (AlertKind::Unknown, seq);
        }
        if self.seen.insert(seq) {
            self.timeline.alert(now_us, run_start_us, None);
            self.duplicates += 1;
            return (AlertKind::Duplicate, seq);
        }
        let latency = sent.map(|sent| now_us.saturating_sub(sent).max(1));
        if let Some(l) = latency {
            self.latency.saturating_record(l);
        }
        self.timeline.alert(now_us, run_start_us, latency);
        (AlertKind::First, seq)
    }

    fn count_alert(&mut self, now_us: u64) {
        self.received += 1;
        self.first_alert_us.get_or_insert(now_us);
        self.last_alert_us = Some(now_us);
    }

    /// The final counts against the set of sequence numbers that should have raised alerts.
    pub fn finish(&self, expected: &BitSet) -> Counts {
        let expected_alerts = expected.count();
        let matched = expected.count_and(&self.seen);
        Counts {
            expected_alerts,
            received_alerts: self.received,
            lost: expected_alerts - matched,
            duplicates: self.duplicates,
            unexpected: self.seen.count_and_not(expected) + self.unknown,
            first_lost: expected.first_and_not(&self.seen, 10),
            first_unexpected: self.seen.first_and_not(expected, 10),
        }
    }
}

pub fn new_latency_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits cannot fail to construct.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// The accounting's verdict on a run. Identity:
/// `received_alerts = (expected_alerts − lost) + unexpected + duplicates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub expected_alerts: u64,
    pub received_alerts: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    /// Up to 10 lost sequence numbers, smallest first (for diagnosis).
    pub first_lost: Vec<u64>,
    /// Up to 10 sequence numbers that came back but were not expected.
    pub first_unexpected: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"machine":{"temperature":30.5,"pressure":2.1},"ambient":{"temperature":20.9,"humidity":25},"timeCreated":"2026-11-26T07:00:00.5Z","seq":1234,"device":"dev-4","sentUs":1000000}"#;

    #[test]
    fn scans_seq_and_sent_time() {
        let s = Scanner::default();
        assert_eq!(s.seq(BODY), Some(1234));
        assert_eq!(s.sent_us(BODY), Some(1_000_000));
        assert!(!s.is_probe(BODY));
        // Re-serialised JSON with spaces still scans.
        assert_eq!(s.seq(br#"{"seq": 7, "sentUs": 9}"#), Some(7));
        assert_eq!(s.sent_us(br#"{"seq": 7, "sentUs": 9}"#), Some(9));
        // At the very end of the payload.
        assert_eq!(s.seq(br#""seq":42"#), Some(42));
    }

    #[test]
    fn rejects_what_is_not_a_seq() {
        let s = Scanner::default();
        assert_eq!(s.seq(br#"{"seq":-1}"#), None);
        assert_eq!(s.seq(br#"{"seq":"5"}"#), None);
        assert_eq!(s.seq(br#"{"seq":}"#), None);
        assert_eq!(s.seq(br#"{"sequence":5}"#), None);
        assert_eq!(s.seq(br#"{"seq":99999999999999999999}"#), None);
        assert_eq!(s.seq(b""), None);
        assert!(s.is_probe(br#"{"device":"loadgen-probe","probe":true}"#));
    }

    #[test]
    fn bitset_grows_and_counts() {
        let mut a = BitSet::new();
        assert!(!a.insert(3));
        assert!(a.insert(3));
        assert!(!a.insert(100_000));
        assert!(a.contains(100_000) && !a.contains(99_999) && !a.contains(10_000_000));
        let mut b = BitSet::new();
        b.insert(3);
        b.insert(5);
        assert_eq!(a.count(), 2);
        assert_eq!(a.count_and(&b), 1);
        assert_eq!(a.count_and_not(&b), 1);
        assert_eq!(b.count_and_not(&a), 1);
        assert_eq!(a.first_and_not(&b, 10), vec![100_000]);
        b.union_with(&a);
        assert_eq!(b.count(), 3);
        assert_eq!(b.first_and_not(&BitSet::new(), 2), vec![3, 5]);
    }

    fn body(seq: u64, sent: u64) -> Vec<u8> {
        format!(
            r#"{{"machine":{{"temperature":30}},"seq":{seq},"device":"dev-0","sentUs":{sent}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn accounting_is_exact() {
        let mut acc = Accounting::new();
        // Expected alerts: 0, 2, 4, 6, 8 of seqs 0..10.
        let mut expected = BitSet::new();
        for s in (0..10).step_by(2) {
            expected.insert(s);
        }
        assert_eq!(
            acc.on_alert(&body(0, 100), 350, 10, 0),
            (AlertKind::First, 0)
        );
        assert_eq!(
            acc.on_alert(&body(2, 100), 1100, 10, 0),
            (AlertKind::First, 2)
        );
        assert_eq!(
            acc.on_alert(&body(2, 100), 1200, 10, 0).0,
            AlertKind::Duplicate
        );
        assert_eq!(acc.on_alert(&body(3, 100), 1300, 10, 0).0, AlertKind::First); // not expected
        assert_eq!(
            acc.on_alert(&body(11, 100), 1400, 10, 0).0,
            AlertKind::Unknown
        ); // never sent
        assert_eq!(acc.on_alert(b"{}", 1500, 10, 0).0, AlertKind::Unknown);
        assert_eq!(
            acc.on_alert(br#"{"probe":true}"#, 1600, 10, 0).0,
            AlertKind::Probe
        );
        let c = acc.finish(&expected);
        assert_eq!(
            c,
            Counts {
                expected_alerts: 5,
                received_alerts: 6,
                lost: 3,
                duplicates: 1,
                unexpected: 3,
                first_lost: vec![4, 6, 8],
                first_unexpected: vec![3],
            }
        );
        assert_eq!(
            c.received_alerts,
            c.expected_alerts - c.lost + c.unexpected + c.duplicates
        );
        // Latency only for first copies with a sentUs: 250 µs, 1000 µs, 1200 µs.
        assert_eq!(acc.latency.len(), 3);
        assert_eq!(acc.latency.min(), 250);
        assert_eq!(acc.latency.max(), 1200);
        assert_eq!(
            (acc.first_alert_us, acc.last_alert_us),
            (Some(350), Some(1500))
        );
        assert_eq!(acc.probes, 1);
    }

    #[test]
    fn alerts_from_an_earlier_run_are_stale() {
        let mut acc = Accounting::new();
        // Before this run starts, anything with a seq is another run's.
        assert_eq!(
            acc.on_alert(&body(1, 500), 600, 0, u64::MAX).0,
            AlertKind::Stale
        );
        // This run started at 1000: sentUs 999 is stale, 1000 is ours.
        assert_eq!(
            acc.on_alert(&body(2, 999), 1500, 10, 1000).0,
            AlertKind::Stale
        );
        assert_eq!(
            acc.on_alert(&body(2, 1000), 1500, 10, 1000).0,
            AlertKind::First
        );
        assert_eq!((acc.stale, acc.received, acc.duplicates), (2, 1, 0));
        let mut expected = BitSet::new();
        expected.insert(2);
        let c = acc.finish(&expected);
        assert_eq!((c.lost, c.unexpected, c.received_alerts), (0, 0, 1));
    }
}
