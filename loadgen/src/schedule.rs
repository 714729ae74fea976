//! Tooling, the input side of loadgen: which message goes when and where, before any MQTT.
//! Pure arithmetic — the open-loop send schedule (intended send time per sequence number),
//! the split of devices over publisher connections, and where the run stops and pauses.
//!
//! Message `seq` belongs to device `seq % devices`; device `d` is published by connection
//! `d % connections`, so each device's messages leave in order on one TCP connection. With a
//! rate `R`, message `seq` is due at `t0 + seq / R` (plus the twin pause shift once the pause
//! point has passed), whatever happened before it: the schedule never waits for the system
//! under test, so a stall shows up as latency instead of hiding (no coordinated omission).

/// Where a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After sequence numbers `0..n`.
    Count(u64),
    /// After this many µs of sending (burst mode with `--duration`).
    Elapsed(u64),
}

/// Where the twin step pauses the publishers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PausePoint {
    /// Before sequence number `s` (count-based runs: half the count).
    Seq(u64),
    /// After this many µs of sending (burst mode with `--duration`: half of it).
    Elapsed(u64),
}

/// The run's timing plan, shared by every publisher.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// µs between two consecutive messages of the aggregate stream; `None` is burst mode.
    pub period_us: Option<f64>,
    pub stop: Stop,
    pub pause: Option<PausePoint>,
}

impl Schedule {
    /// Builds the plan from the command line's rate (0 = burst), count and duration (µs).
    pub fn new(rate: f64, count: Option<u64>, duration_us: Option<u64>, pause: bool) -> Self {
        let period_us = (rate > 0.0).then(|| 1e6 / rate);
        let stop = match (count, duration_us, period_us) {
            (Some(n), _, _) => Stop::Count(n),
            (None, Some(d), Some(p)) => Stop::Count(((d as f64) / p).floor().max(1.0) as u64),
            (None, Some(d), None) => Stop::Elapsed(d),
            (None, None, _) => Stop::Count(100_000),
        };
        let pause = pause.then_some(match stop {
            Stop::Count(n) => PausePoint::Seq(n / 2),
            Stop::Elapsed(d) => PausePoint::Elapsed(d / 2),
        });
        Schedule {
            period_us,
            stop,
            pause,
        }
    }

    /// Total messages, when the run is count-based.
    pub fn count(&self) -> Option<u64> {
        match self.stop {
            Stop::Count(n) => Some(n),
            Stop::Elapsed(_) => None,
        }
    }

    /// Offset of message `seq`'s intended send time from the start, without pause shift.
    /// `None` in burst mode (a message is due as soon as it can be written).
    #[inline]
    pub fn offset_us(&self, seq: u64) -> Option<u64> {
        self.period_us.map(|p| (seq as f64 * p).round() as u64)
    }

    /// Intended send time of `seq` (µs since the epoch) for a run that started at `t0` and has
    /// been shifted by `shift` µs at the pause point (0 before it).
    #[inline]
    pub fn intended_us(&self, seq: u64, t0: u64, shift: u64) -> Option<u64> {
        self.offset_us(seq).map(|o| t0 + o + shift)
    }

    /// Whether the run is over before message `seq` at elapsed time `elapsed_us` (elapsed
    /// excludes the twin pause).
    #[inline]
    pub fn is_over(&self, seq: u64, elapsed_us: u64) -> bool {
        match self.stop {
            Stop::Count(n) => seq >= n,
            Stop::Elapsed(d) => elapsed_us >= d,
        }
    }

    /// Whether message `seq`, about to go at `elapsed_us`, is past the pause point.
    #[inline]
    pub fn is_past_pause(&self, seq: u64, elapsed_us: u64) -> bool {
        match self.pause {
            None => false,
            Some(PausePoint::Seq(s)) => seq >= s,
            Some(PausePoint::Elapsed(e)) => elapsed_us >= e,
        }
    }

    /// Offset from the start at which the pause point falls (µs), used to shift the schedule
    /// after the pause so the second half starts on time instead of as a backlog burst.
    pub fn pause_offset_us(&self) -> Option<u64> {
        match self.pause? {
            PausePoint::Seq(s) => self.offset_us(s),
            PausePoint::Elapsed(e) => Some(e),
        }
    }
}

/// The devices that connection `conn` publishes, of `devices` in all over `connections`.
pub fn devices_of(conn: u32, connections: u32, devices: u32) -> Vec<u32> {
    (0..devices).filter(|d| d % connections == conn).collect()
}

/// The sequence numbers of one connection, in increasing order: `k·devices + d` for each of
/// its devices `d` (ascending), `k = 0, 1, …`.
#[derive(Debug, Clone)]
pub struct ConnSeqs {
    devices: Vec<u32>,
    total_devices: u64,
    k: u64,
    i: usize,
}

impl ConnSeqs {
    /// `own` must be non-empty and ascending.
    pub fn new(own: Vec<u32>, total_devices: u32) -> Self {
        assert!(!own.is_empty(), "a connection needs at least one device");
        ConnSeqs {
            devices: own,
            total_devices: u64::from(total_devices),
            k: 0,
            i: 0,
        }
    }

    /// The next sequence number and the index (into this connection's device list) of its device.
    #[inline]
    pub fn peek(&self) -> (u64, usize) {
        (
            self.k * self.total_devices + u64::from(self.devices[self.i]),
            self.i,
        )
    }

    #[inline]
    pub fn advance(&mut self) {
        self.i += 1;
        if self.i == self.devices.len() {
            self.i = 0;
            self.k += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_split_over_connections() {
        assert_eq!(devices_of(0, 3, 10), vec![0, 3, 6, 9]);
        assert_eq!(devices_of(2, 3, 10), vec![2, 5, 8]);
        assert_eq!(devices_of(0, 1, 3), vec![0, 1, 2]);
    }

    #[test]
    fn connections_cover_every_seq_once_in_order() {
        let (c, d) = (3u32, 10u32);
        let mut all = Vec::new();
        for conn in 0..c {
            let mut s = ConnSeqs::new(devices_of(conn, c, d), d);
            let mut last = None;
            loop {
                let (seq, i) = s.peek();
                if seq >= 100 {
                    break;
                }
                assert!(last < Some(seq), "increasing");
                assert_eq!(devices_of(conn, c, d)[i], (seq % 10) as u32);
                last = Some(seq);
                all.push(seq);
                s.advance();
            }
        }
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn paced_schedule_is_open_loop() {
        let s = Schedule::new(4000.0, Some(10), None, false);
        assert_eq!(s.period_us, Some(250.0));
        assert_eq!(s.intended_us(0, 1_000, 0), Some(1_000));
        assert_eq!(s.intended_us(4, 1_000, 0), Some(2_000));
        assert_eq!(s.intended_us(4, 1_000, 500), Some(2_500));
        // Fractional periods round per message, they do not accumulate error.
        let s = Schedule::new(3.0, None, Some(2_000_000), false);
        assert_eq!(s.stop, Stop::Count(6));
        assert_eq!(s.offset_us(1), Some(333_333));
        assert_eq!(s.offset_us(3), Some(1_000_000));
        assert!(!s.is_over(5, 0) && s.is_over(6, 0));
    }

    #[test]
    fn burst_schedule_and_pause_points() {
        let s = Schedule::new(0.0, Some(1000), None, true);
        assert_eq!(s.period_us, None);
        assert_eq!(s.intended_us(5, 1, 0), None);
        assert_eq!(s.pause, Some(PausePoint::Seq(500)));
        assert!(!s.is_past_pause(499, u64::MAX) && s.is_past_pause(500, 0));
        assert_eq!(s.pause_offset_us(), None);

        let s = Schedule::new(0.0, None, Some(4_000_000), true);
        assert_eq!(s.stop, Stop::Elapsed(4_000_000));
        assert_eq!(s.count(), None);
        assert_eq!(s.pause, Some(PausePoint::Elapsed(2_000_000)));
        assert!(!s.is_past_pause(u64::MAX, 1_999_999) && s.is_past_pause(0, 2_000_000));
        assert!(s.is_over(0, 4_000_000) && !s.is_over(u64::MAX, 3_999_999));

        let s = Schedule::new(1000.0, Some(100), None, true);
        assert_eq!(s.pause_offset_us(), Some(50_000));
        assert_eq!(
            Schedule::new(0.0, None, None, false).stop,
            Stop::Count(100_000)
        );
    }
}
