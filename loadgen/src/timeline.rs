//! Tooling, beside the accounting: a small time series of the run for `--report` — per
//! interval (1 s) the messages sent, the alerts received and the latency percentiles of the
//! alerts that arrived in it. The sink records each alert ([`Timeline::alert`]); the
//! controller samples the publishers' running total once per poll ([`Timeline::sent_at`]).
//! Pure: time comes in as µs since the epoch, relative to the run's start.

use crate::report::Latency;
use hdrhistogram::Histogram;
use serde::Serialize;

/// The highest latency the histograms track (one hour, in µs); larger values saturate.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// One interval of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Interval {
    /// Start of the interval, seconds after the run's start.
    pub t_s: f64,
    /// Messages written in the interval (from the controller's samples).
    pub sent: u64,
    /// Alerts received in the interval (this run's, duplicates included).
    pub alerts: u64,
    /// Latency of the first copies received in the interval (0 when none).
    pub latency_us: Latency,
}

/// Per-interval counts and latency, built as the run goes.
pub struct Timeline {
    interval_us: u64,
    /// Intervals closed so far.
    pub rows: Vec<Interval>,
    cur: Histogram<u64>,
    cur_alerts: u64,
    /// `(interval index, running total)` of sent messages: the highest total seen per interval.
    sent: Vec<u64>,
}

impl Timeline {
    pub fn new(interval_us: u64) -> Self {
        Timeline {
            interval_us: interval_us.max(1),
            rows: Vec::new(),
            // 2 significant digits: per-interval percentiles, not the run's exact figures.
            cur: Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid histogram bounds"),
            cur_alerts: 0,
            sent: Vec::new(),
        }
    }

    fn index(&self, now_us: u64, start_us: u64) -> Option<usize> {
        (now_us >= start_us).then(|| ((now_us - start_us) / self.interval_us) as usize)
    }

    /// Closes intervals up to (not including) `idx`.
    fn advance_to(&mut self, idx: usize) {
        while self.rows.len() < idx {
            let t_s = (self.rows.len() as u64 * self.interval_us) as f64 / 1e6;
            self.rows.push(Interval {
                t_s,
                sent: 0,
                alerts: std::mem::take(&mut self.cur_alerts),
                latency_us: Latency::from_histogram(&self.cur),
            });
            self.cur.reset();
        }
    }

    /// One alert of this run received at `now_us`; `latency_us` for the first copy of a seq.
    #[inline]
    pub fn alert(&mut self, now_us: u64, start_us: u64, latency_us: Option<u64>) {
        let Some(idx) = self.index(now_us, start_us) else {
            return;
        };
        if idx > self.rows.len() {
            self.advance_to(idx);
        }
        self.cur_alerts += 1;
        if let Some(l) = latency_us {
            self.cur.saturating_record(l.max(1));
        }
    }

    /// The publishers' running total of sent messages at `now_us`.
    pub fn sent_at(&mut self, now_us: u64, start_us: u64, total: u64) {
        let Some(idx) = self.index(now_us, start_us) else {
            return;
        };
        if self.sent.len() <= idx {
            let last = self.sent.last().copied().unwrap_or(0);
            self.sent.resize(idx + 1, last);
        }
        self.sent[idx] = self.sent[idx].max(total);
    }

    /// Closes the last interval at `end_us` and fills in the sent counts: the rows of the run.
    pub fn finish(mut self, end_us: u64, start_us: u64) -> Vec<Interval> {
        let last = self.index(end_us, start_us).unwrap_or(0);
        let n = (last + 1).max(self.sent.len());
        self.advance_to(n);
        let mut before = 0;
        for (row, total) in self.rows.iter_mut().zip(&self.sent) {
            row.sent = total.saturating_sub(before);
            before = (*total).max(before);
        }
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_and_sent_land_in_their_intervals() {
        let s = 1_000_000_000u64; // run start
        let mut t = Timeline::new(1_000_000);
        t.alert(s - 5, s, Some(10)); // before the start: ignored
        t.sent_at(s + 100_000, s, 50);
        t.alert(s + 200_000, s, Some(1000));
        t.alert(s + 300_000, s, Some(3000));
        t.alert(s + 400_000, s, None); // a duplicate: counted, no latency
        t.sent_at(s + 900_000, s, 400);
        // Nothing in the second interval; the third has one alert.
        t.sent_at(s + 2_100_000, s, 900);
        t.alert(s + 2_500_000, s, Some(200));
        let rows = t.finish(s + 2_900_000, s);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows.iter().map(|r| r.t_s).collect::<Vec<_>>(),
            [0.0, 1.0, 2.0]
        );
        assert_eq!(
            rows.iter().map(|r| r.sent).collect::<Vec<_>>(),
            [400, 0, 500]
        );
        assert_eq!(rows.iter().map(|r| r.alerts).collect::<Vec<_>>(), [3, 0, 1]);
        // Two significant digits: within 1 %.
        assert!((2970..=3030).contains(&rows[0].latency_us.max));
        assert!(rows[0].latency_us.p50 >= 990 && rows[0].latency_us.p50 <= 1010);
        assert_eq!(rows[1].latency_us, Latency::default());
        assert!((198..=202).contains(&rows[2].latency_us.p99));
    }
}
