//! Backpressure from the filter to the devices on the embedded broker. rmqtt acknowledges a
//! publish once it is routed and queues it per subscriber, dropping the oldest when the queue
//! is full; nothing slows the publisher down. This gate does: in the publishing client's own
//! session task (rmqtt's `MessagePublish` hook), a message for the filter's input topics waits
//! while the filter's queue is above its high-water mark, so that client's socket is not read
//! and TCP pushes back to the device. The filter's queue then never overflows while the filter
//! is connected; while it is not, nothing waits and what overflows is counted as a drop.
//!
//! A filter that connects on its persistent session takes it over: rmqtt kicks the old session
//! (closing its inbox), creates the new one and only then registers its inbox. A message routed
//! to the filter in between went into the closed inbox and was dropped ("Connection Tx is
//! closed"; reproduced by `tests/it/embedded_broker.rs`, 2 to 19 of 3,000 messages over 30
//! comebacks). So from the filter's CONNECT until its session is connected (or refused, or
//! [`TAKEOVER_LIMIT`] passed) the filter's input publishers wait too; and after a restart by
//! the watchdog, until the filter is back (or a stall timeout passed), so that they do not
//! overflow its offline queue meanwhile.
//!
//! A gate that stays shut is a stall of the whole input: its [`Watchdog`] notices when no
//! waiting publisher got through for `--broker-stall-timeout`, logs what it sees (the filter's
//! queue, inbox, in-flight window) and closes the filter's connection as a network failure
//! would: its persistent session keeps every queued and unacknowledged message, the filter
//! reconnects and gets them again, and the publishers keep waiting for it meanwhile.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::Session;
use rmqtt::types::{Message, Reason};

use super::inbox::Inboxes;
use crate::metrics::Metrics;
use crate::mqtt::topic;

pub struct Gate {
    /// The filter's input filters (without `$share/…`).
    pub inputs: Vec<String>,
    pub filter_client_id: String,
    /// Publishers wait while the filter's queue holds this many messages or more.
    pub high_water: usize,
    pub metrics: Arc<Metrics>,
    /// The filter's session, once it connected.
    pub filter: RwLock<Option<Session>>,
    /// What waits in the filter's inbox, before its queue.
    pub inboxes: Arc<Inboxes>,
    /// When the gate last let a waiting publisher through, and when it last recovered.
    pub watchdog: Mutex<Watchdog>,
    /// The filter's CONNECT being handled (its session taken over).
    pub takeover: Takeover,
}

/// Whether, and since when, the filter's session is being taken over by a new connection.
/// Every input publish asks: an atomic flag first, the lock only while a takeover runs.
#[derive(Debug, Default)]
pub struct Takeover {
    active: std::sync::atomic::AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Takeover {
    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.since.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn begin(&self, now: Instant) {
        *self.since() = Some(now);
        self.active
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn end(&self) {
        self.active
            .store(false, std::sync::atomic::Ordering::Release);
        *self.since() = None;
    }

    /// A takeover began less than [`TAKEOVER_LIMIT`] before `now` and has not ended.
    pub fn running(&self, now: Instant) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire)
            && self
                .since()
                .is_some_and(|t| now.saturating_duration_since(t) < TAKEOVER_LIMIT)
    }
}

/// The longest the gate holds publishers for a filter's CONNECT that neither connects nor is
/// refused (rmqtt ends a handshake on its own timeouts well before).
pub const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);

/// What a waiting publisher should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Wait,
    /// Nothing got through for this long: restart the filter's connection (once per stall
    /// timeout, whoever of the waiting publishers notices first).
    Recover {
        shut_for: Duration,
    },
}

/// The gate's stall detector: pure, fed the time by the waiting publishers.
#[derive(Debug, Clone)]
pub struct Watchdog {
    after: Duration,
    /// A waiting publisher last got through (the filter made progress).
    passed: Option<Instant>,
    /// The last recovery: the filter's connection was closed then.
    recovered: Option<Instant>,
    /// The filter has not connected again since the last recovery.
    away: bool,
}

impl Watchdog {
    /// A gate that is shut for `after` with a publisher waiting is stalled (zero: never).
    pub fn new(after: Duration) -> Watchdog {
        Watchdog {
            after,
            passed: None,
            recovered: None,
            away: false,
        }
    }

    /// A publisher that waited got through at `now`.
    pub fn passed(&mut self, now: Instant) {
        self.passed = Some(self.passed.map_or(now, |p| p.max(now)));
    }

    /// A publisher waiting since `since` looks at `now`.
    pub fn check(&mut self, since: Instant, now: Instant) -> Watch {
        if self.after.is_zero() {
            return Watch::Wait;
        }
        let shut = self.passed.map_or(since, |p| p.max(since));
        let quiet = self.recovered.map_or(shut, |r| r.max(shut));
        if now.saturating_duration_since(quiet) < self.after {
            return Watch::Wait;
        }
        self.recovered = Some(now);
        self.away = true;
        Watch::Recover {
            shut_for: now.saturating_duration_since(shut),
        }
    }

    /// The filter connected (again).
    pub fn returned(&mut self) {
        self.away = false;
    }

    /// Restarted by a recovery less than a stall timeout before `now`, and not back yet:
    /// publishers wait for it rather than fill its offline queue.
    pub fn awaiting_return(&self, now: Instant) -> bool {
        self.away && self.recovering(now)
    }

    /// Within a stall timeout of the last recovery: the filter is expected back.
    pub fn recovering(&self, now: Instant) -> bool {
        self.recovered
            .is_some_and(|r| now.saturating_duration_since(r) < self.after)
    }
}

/// How often a waiting publisher looks at the queue again.
const POLL: Duration = Duration::from_millis(1);

impl Gate {
    fn filter_session(&self) -> Option<Session> {
        self.filter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn is_input(&self, topic: &str) -> bool {
        self.inputs.iter().any(|f| topic::matches(topic, f))
    }

    /// What waits for the filter: in its queue, and (at most) in its inbox — which grows
    /// instead of the queue while the filter's session task waits on its socket.
    fn backlog(&self, filter: &Session) -> usize {
        let inbox = self.inboxes.waiting(&self.filter_client_id) as usize;
        filter.deliver_queue().len() + inbox
    }

    fn watchdog(&self) -> std::sync::MutexGuard<'_, Watchdog> {
        self.watchdog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the filter's session is being taken over or the watchdog's restart has not
    /// brought it back yet, then until the filter's backlog is below the mark (or the filter is
    /// gone, and not just restarted by the watchdog).
    async fn wait(&self) {
        let mut held = false;
        while {
            let now = Instant::now();
            self.takeover.running(now) || self.watchdog().awaiting_return(now)
        } {
            if !held {
                held = true;
                self.metrics.broker_paused();
            }
            tokio::time::sleep(POLL).await;
        }
        let Some(mut filter) = self.filter_session() else {
            return;
        };
        let mut since = None;
        while self.backlog(&filter) >= self.high_water {
            let now = Instant::now();
            if !filter.connected().await.unwrap_or(false) {
                let recovering = self.watchdog().recovering(now);
                if !recovering {
                    break;
                }
                // Restarted by the watchdog: wait for its new session.
                if let Some(newer) = self.filter_session() {
                    filter = newer;
                }
            } else if let Some(since) = since {
                let watch = self.watchdog().check(since, now);
                if let Watch::Recover { shut_for } = watch {
                    self.recover(&filter, shut_for);
                }
            }
            if since.is_none() {
                since = Some(now);
                self.metrics.broker_paused();
            }
            tokio::time::sleep(POLL).await;
        }
        if since.is_some() {
            self.watchdog().passed(Instant::now());
        }
    }

    /// The filter took nothing for `shut_for` while publishers waited: say what is seen, and
    /// close its connection the way a network failure would (its session keeps everything).
    fn recover(&self, filter: &Session, shut_for: Duration) {
        // Not waiting for its lock: a session task stuck while holding it is what is looked at.
        let inflight = filter.out_inflight().try_read().map_or_else(
            |_| "? (its window is locked)".to_string(),
            |w| w.len().to_string(),
        );
        tracing::warn!(
            "embedded broker: the filter's input made no progress for {:.1} s while publishers waited \
             (its queue {}, its inbox ≤ {}, in flight to it {}, high-water mark {}): restarting its \
             connection (its session keeps every message)",
            shut_for.as_secs_f64(),
            filter.deliver_queue().len(),
            self.inboxes.waiting(&self.filter_client_id),
            inflight,
            self.high_water,
        );
        self.metrics.broker_stall();
        let closed = Message::Closed(Reason::from_static(
            "the embedded broker's gate saw no progress (--broker-stall-timeout)",
        ));
        if !self.inboxes.send(&self.filter_client_id, closed) {
            tracing::warn!("embedded broker: the filter's session did not take the restart");
        }
    }
}

/// The gate as an rmqtt hook handler (registered for the filter's CONNECT, CONNACK and
/// connection, and for every PUBLISH).
pub struct GateHook(pub Arc<Gate>);

#[async_trait::async_trait]
impl Handler for GateHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let gate = &self.0;
        match param {
            Parameter::ClientConnect(info) if **info.client_id() == *gate.filter_client_id => {
                gate.takeover.begin(Instant::now());
            }
            Parameter::ClientConnack(info, reason)
                if **info.client_id() == *gate.filter_client_id && !reason.success() =>
            {
                gate.takeover.end();
            }
            Parameter::ClientConnected(session)
                if *session.id.client_id == *gate.filter_client_id =>
            {
                *gate.filter.write().unwrap_or_else(|e| e.into_inner()) = Some((*session).clone());
                gate.watchdog().returned();
                gate.takeover.end();
            }
            Parameter::MessagePublish(_, from, publish)
                if *from.id.client_id != *gate.filter_client_id
                    && gate.is_input(&publish.topic) =>
            {
                gate.wait().await;
            }
            _ => {}
        }
        (true, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_gate_that_lets_publishers_through_is_not_stalled() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(10 * S);
        for i in 0..100u32 {
            let now = t0 + i * S;
            // Each publisher waits 5 s, then gets through.
            assert_eq!(w.check(now, now + 5 * S), Watch::Wait);
            w.passed(now + 5 * S);
        }
    }

    #[test]
    fn a_shut_gate_recovers_once_per_timeout() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(10 * S);
        w.passed(t0);
        // Publishers waiting since 1 s and 3 s; nothing gets through.
        assert_eq!(w.check(t0 + S, t0 + 10 * S), Watch::Wait);
        assert_eq!(
            w.check(t0 + S, t0 + 11 * S),
            Watch::Recover { shut_for: 10 * S }
        );
        // The other waiter sees the same stall: no second recovery right away.
        assert_eq!(w.check(t0 + 3 * S, t0 + 13 * S), Watch::Wait);
        assert!(w.recovering(t0 + 20 * S));
        assert!(!w.recovering(t0 + 21 * S));
        // Still shut a timeout after the recovery: once more.
        assert_eq!(
            w.check(t0 + 3 * S, t0 + 21 * S),
            Watch::Recover { shut_for: 18 * S }
        );
        // The filter is back: publishers get through again.
        w.passed(t0 + 22 * S);
        assert_eq!(w.check(t0 + 22 * S, t0 + 31 * S), Watch::Wait);
    }

    #[test]
    fn a_publisher_counts_from_when_it_began_to_wait() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(10 * S);
        // No one passed for ages, but this publisher only waits since 100 s.
        assert_eq!(w.check(t0 + 100 * S, t0 + 105 * S), Watch::Wait);
        assert!(matches!(
            w.check(t0 + 100 * S, t0 + 110 * S),
            Watch::Recover { .. }
        ));
    }

    #[test]
    fn publishers_wait_for_a_restarted_filter_until_it_is_back_or_a_timeout_passed() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(10 * S);
        assert!(!w.awaiting_return(t0));
        assert!(matches!(w.check(t0, t0 + 10 * S), Watch::Recover { .. }));
        assert!(w.awaiting_return(t0 + 11 * S));
        w.returned();
        assert!(!w.awaiting_return(t0 + 11 * S));
        assert!(matches!(w.check(t0, t0 + 20 * S), Watch::Recover { .. }));
        assert!(w.awaiting_return(t0 + 29 * S));
        assert!(
            !w.awaiting_return(t0 + 30 * S),
            "not back within the timeout: no more waiting"
        );
    }

    #[test]
    fn a_takeover_holds_until_it_ends_or_times_out() {
        let t0 = Instant::now();
        let t = Takeover::default();
        assert!(!t.running(t0));
        t.begin(t0);
        assert!(t.running(t0 + S));
        t.end();
        assert!(!t.running(t0 + S));
        t.begin(t0);
        assert!(t.running(t0 + TAKEOVER_LIMIT - S));
        assert!(
            !t.running(t0 + TAKEOVER_LIMIT),
            "a CONNECT that never ends holds no longer"
        );
    }

    #[test]
    fn zero_turns_the_watchdog_off() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(Duration::ZERO);
        assert_eq!(w.check(t0, t0 + 1000 * S), Watch::Wait);
        assert!(!w.recovering(t0 + S));
    }
}
