//! MQTT keep-alive, as pure state (MQTT out, when nothing else is written): the client must
//! write something at least once per keep-alive interval — a PINGREQ when it has nothing
//! else — and gives the connection up when a ping stays unanswered for a whole interval.
//! The interval is the one we asked for in CONNECT, or the broker's `server_keep_alive` from
//! an MQTT 5 CONNACK, which overrides it; 0 turns keep-alive off. While the client does not
//! read its socket (flow control), a PINGRESP may wait behind unread packets: then pings still
//! go out when the connection is silent, but none times out until reading resumes, and the
//! wait for an unanswered one starts again then. Time is an argument.

use std::time::{Duration, Instant};

/// What the connection must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing (yet).
    Idle,
    /// Write a PINGREQ (and call [`KeepAlive::wrote`]).
    Ping,
    /// The last ping stayed unanswered for a whole interval: the connection is dead.
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct KeepAlive {
    /// `None`: keep-alive is off.
    interval: Option<Duration>,
    last_write: Instant,
    ping_sent: Option<Instant>,
    /// The client is not reading its socket: an answer may be waiting unread.
    paused: bool,
}

impl KeepAlive {
    /// A new connection, just written to (its CONNECT).
    pub fn new(interval_secs: u16, now: Instant) -> Self {
        KeepAlive {
            interval: (interval_secs > 0).then(|| Duration::from_secs(u64::from(interval_secs))),
            last_write: now,
            ping_sent: None,
            paused: false,
        }
    }

    /// Whether the client reads its socket now. When reading resumes, an unanswered ping
    /// gets a whole interval again from `now`.
    pub fn set_reading(&mut self, reading: bool, now: Instant) {
        if reading && self.paused && self.ping_sent.is_some() {
            self.ping_sent = Some(now);
        }
        self.paused = !reading;
    }

    /// The broker's `server_keep_alive` (MQTT 5 CONNACK) replaces the interval we asked for.
    pub fn server_keep_alive(&mut self, secs: u16) {
        self.interval = (secs > 0).then(|| Duration::from_secs(u64::from(secs)));
    }

    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Something was written to the broker.
    pub fn wrote(&mut self, now: Instant) {
        self.last_write = now;
    }

    /// A PINGRESP arrived.
    pub fn pong(&mut self) {
        self.ping_sent = None;
    }

    /// What to do at `now`. A ping is asked for once per interval of silence.
    pub fn poll(&mut self, now: Instant) -> Action {
        let Some(interval) = self.interval else {
            return Action::Idle;
        };
        if let Some(sent) = self.ping_sent {
            if !self.paused {
                return if now >= sent + interval {
                    Action::TimedOut
                } else {
                    Action::Idle
                };
            }
        }
        if now >= self.last_write + interval {
            self.ping_sent.get_or_insert(now);
            return Action::Ping;
        }
        Action::Idle
    }

    /// When [`KeepAlive::poll`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let interval = self.interval?;
        Some(match self.ping_sent {
            Some(sent) if !self.paused => sent + interval,
            _ => self.last_write + interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_after_an_idle_interval_and_times_out_after_another() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut k = KeepAlive::new(30, t0);
        assert_eq!(k.deadline(), Some(t0 + 30 * s));
        assert_eq!(k.poll(t0 + 29 * s), Action::Idle);
        k.wrote(t0 + 29 * s);
        assert_eq!(
            k.poll(t0 + 58 * s),
            Action::Idle,
            "the write moved the deadline"
        );
        assert_eq!(k.poll(t0 + 59 * s), Action::Ping);
        assert_eq!(k.poll(t0 + 60 * s), Action::Idle, "one ping per silence");
        assert_eq!(k.deadline(), Some(t0 + 89 * s));
        assert_eq!(k.poll(t0 + 89 * s), Action::TimedOut);
    }

    #[test]
    fn a_pong_clears_the_ping() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut k = KeepAlive::new(10, t0);
        assert_eq!(k.poll(t0 + 10 * s), Action::Ping);
        k.wrote(t0 + 10 * s);
        k.pong();
        assert_eq!(k.poll(t0 + 19 * s), Action::Idle);
        assert_eq!(k.poll(t0 + 20 * s), Action::Ping);
    }

    #[test]
    fn no_timeout_while_not_reading_and_a_fresh_wait_when_reading_resumes() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut k = KeepAlive::new(10, t0);
        assert_eq!(k.poll(t0 + 10 * s), Action::Ping);
        k.wrote(t0 + 10 * s);
        k.set_reading(false, t0 + 12 * s);
        assert_eq!(k.poll(t0 + 20 * s), Action::Ping, "silence: ping again");
        k.wrote(t0 + 20 * s);
        assert_eq!(k.deadline(), Some(t0 + 30 * s), "the next ping, no timeout");
        assert_eq!(k.poll(t0 + 25 * s), Action::Idle);
        k.set_reading(true, t0 + 26 * s);
        assert_eq!(
            k.poll(t0 + 35 * s),
            Action::Idle,
            "a whole interval from the resume"
        );
        assert_eq!(k.poll(t0 + 36 * s), Action::TimedOut);
        let mut k = KeepAlive::new(10, t0);
        assert_eq!(k.poll(t0 + 10 * s), Action::Ping);
        k.wrote(t0 + 15 * s);
        k.set_reading(false, t0 + 11 * s);
        k.set_reading(true, t0 + 12 * s);
        k.pong();
        assert_eq!(
            k.poll(t0 + 21 * s),
            Action::Idle,
            "answered: nothing to time out"
        );
    }

    #[test]
    fn the_server_keep_alive_overrides_ours_and_zero_turns_it_off() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(30, t0);
        k.server_keep_alive(5);
        assert_eq!(k.interval(), Some(Duration::from_secs(5)));
        assert_eq!(k.poll(t0 + Duration::from_secs(5)), Action::Ping);
        k.server_keep_alive(0);
        assert_eq!(k.poll(t0 + Duration::from_secs(3600)), Action::Idle);
        assert_eq!(k.deadline(), None);
        assert_eq!(KeepAlive::new(0, t0).deadline(), None);
    }
}
