//! `Flow`'s IoT Edge twin GET (beside the data flow): the full twin is asked for at every
//! connect, once every SUBACK of the connection is in — edgeHub applies subscriptions
//! asynchronously and completes, without delivering, an answer that matches none yet
//! (protocol gateway `MqttAdapter`), so a GET sent with the SUBSCRIBE could go unanswered; the
//! Python SDK waits for the SUBACK too. The reported patch goes then as well, and only when
//! the state differs from the last one reported (a token renewal reconnects every hour). When
//! no answer comes within `--twin-timeout` the GET is asked again — the wait doubling up to
//! 8× — with a log line and a metric each time, until edgeHub answers. The GET and the
//! reported patches go at QoS 1 (as the Python SDK sends them), so a lost connection resends
//! them too; a GET edgeHub acknowledged but never answered is what the timer is for. Until
//! the first answer the reported state says `"source":"pending"` (the threshold is the command
//! line's, not the twin's). Pure: time is an argument.

use std::time::{Duration, Instant};

use super::dialect::Dialect;
use super::outbound::{Covers, SentKind};
use super::timer::Timer;
use super::Flow;

/// The GET awaiting its answer (its deadline is the timer table's [`Timer::TwinGet`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct TwinWait {
    attempt: u32,
}

/// The wait before the `attempt`-th GET is asked again.
fn wait_for(timeout: Duration, attempt: u32) -> Duration {
    timeout * (1u32 << attempt.saturating_sub(1).min(3))
}

impl Flow {
    /// Every subscription of the connection is in effect: under IoT Edge, report the twin
    /// state if it changed and ask for the full twin.
    pub(super) fn twin_subscribed(&mut self, now: Instant) {
        if matches!(self.dialect, Dialect::Azure(_)) {
            self.report(false, now);
            self.ask_twin(now, 1);
        }
    }

    /// Sends the full-twin GET (IoT Edge only) and starts its timer.
    pub(super) fn ask_twin(&mut self, now: Instant, attempt: u32) {
        let Some(get) = self.dialect.twin_get() else {
            return;
        };
        self.publish(get, Covers::Nothing, SentKind::Control, now);
        self.twin_wait = Some(TwinWait { attempt });
        self.timers.set(
            Timer::TwinGet,
            Some(now + wait_for(self.cfg.twin_timeout, attempt)),
        );
    }

    /// The full twin came.
    pub(super) fn twin_answered(&mut self) {
        self.twin_wait = None;
        self.timers.set(Timer::TwinGet, None);
        self.metrics.delivery.twin_waiting(false);
    }

    /// Timer: a GET without an answer is asked again.
    pub(super) fn twin_timer(&mut self, now: Instant) {
        let Some(wait) = self.twin_wait else {
            return;
        };
        let due = self.timers.get(Timer::TwinGet).is_some_and(|d| now >= d);
        if !due || self.input.is_none() {
            return;
        }
        let waited = wait_for(self.cfg.twin_timeout, wait.attempt);
        tracing::warn!(
            "twin: no answer to the twin GET within {} s (attempt {}); asking again — the threshold stays {} until the twin answers",
            waited.as_secs_f64(),
            wait.attempt,
            self.twin.threshold()
        );
        self.metrics.delivery.twin_unanswered();
        self.ask_twin(now, wait.attempt + 1);
    }

    /// When the twin GET is asked again (tests).
    #[cfg(test)]
    pub(super) fn twin_deadline(&self) -> Option<Instant> {
        self.timers.get(Timer::TwinGet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_eight_times() {
        let t = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=6).map(|a| wait_for(t, a).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 80, 80]);
    }
}
