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

use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The filter away from its session and expected back: publishers wait for it.
    pub away: Away,
}

/// The filter is expected back on its session: from its CONNECT (the takeover; at most
/// [`TAKEOVER_LIMIT`], ended early by a refusal) and after the watchdog's restart (at most a
/// stall timeout), until its session is connected. Every input publish asks: an atomic flag
/// first, the lock only while a deadline is set.
#[derive(Debug, Default)]
pub struct Away {
    /// Whether a deadline below is set (written under the lock).
    active: AtomicBool,
    until: Mutex<Deadlines>,
}

#[derive(Debug, Default)]
struct Deadlines {
    connect: Option<Instant>,
    restart: Option<Instant>,
}

impl Away {
    fn set(&self, change: impl FnOnce(&mut Deadlines)) {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut until);
        let active = until.connect.is_some() || until.restart.is_some();
        self.active.store(active, Ordering::Release);
    }

    /// The filter's CONNECT arrived at `now`.
    pub fn connecting(&self, now: Instant) {
        self.set(|u| u.connect = Some(now + TAKEOVER_LIMIT));
    }

    /// The filter's CONNECT was refused.
    pub fn refused(&self) {
        self.set(|u| u.connect = None);
    }

    /// The watchdog closed the filter's connection: expected back by `until`.
    pub fn restarted(&self, until: Instant) {
        self.set(|u| u.restart = Some(until));
    }

    /// The filter's session is connected.
    pub fn back(&self) {
        self.set(|u| *u = Deadlines::default());
    }

    /// Publishers wait at `now`.
    pub fn waiting(&self, now: Instant) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        [until.connect, until.restart]
            .into_iter()
            .flatten()
            .any(|t| now < t)
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
}

impl Watchdog {
    /// A gate that is shut for `after` with a publisher waiting is stalled (zero: never).
    pub fn new(after: Duration) -> Watchdog {
        Watchdog {
            after,
            passed: None,
            recovered: None,
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
        Watch::Recover {
            shut_for: now.saturating_duration_since(shut),
        }
    }

    /// How long a shut gate takes to be a stall.
    pub fn timeout(&self) -> Duration {
        self.after
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
        while self.away.waiting(Instant::now()) {
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
                    // Publishers wait for it rather than fill its offline queue.
                    self.away.restarted(now + self.watchdog().timeout());
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
                gate.away.connecting(Instant::now());
            }
            Parameter::ClientConnack(info, reason)
                if **info.client_id() == *gate.filter_client_id && !reason.success() =>
            {
                gate.away.refused();
            }
            Parameter::ClientConnected(session)
                if *session.id.client_id == *gate.filter_client_id =>
            {
                *gate.filter.write().unwrap_or_else(|e| e.into_inner()) = Some((*session).clone());
                gate.away.back();
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
        let away = Away::default();
        assert!(!away.waiting(t0));
        assert!(matches!(w.check(t0, t0 + 10 * S), Watch::Recover { .. }));
        away.restarted(t0 + 10 * S + w.timeout());
        assert!(away.waiting(t0 + 11 * S));
        away.back();
        assert!(!away.waiting(t0 + 11 * S));
        assert!(matches!(w.check(t0, t0 + 20 * S), Watch::Recover { .. }));
        away.restarted(t0 + 20 * S + w.timeout());
        assert!(away.waiting(t0 + 29 * S));
        assert!(
            !away.waiting(t0 + 30 * S),
            "not back within the timeout: no more waiting"
        );
    }

    #[test]
    fn a_takeover_holds_until_it_ends_or_times_out() {
        let t0 = Instant::now();
        let t = Away::default();
        assert!(!t.waiting(t0));
        t.connecting(t0);
        assert!(t.waiting(t0 + S));
        t.back();
        assert!(!t.waiting(t0 + S));
        t.connecting(t0);
        assert!(t.waiting(t0 + TAKEOVER_LIMIT - S));
        assert!(
            !t.waiting(t0 + TAKEOVER_LIMIT),
            "a CONNECT that never ends holds no longer"
        );
    }

    #[test]
    fn a_refused_connect_ends_its_hold_but_not_a_restarts() {
        let t0 = Instant::now();
        let away = Away::default();
        away.connecting(t0);
        away.refused();
        assert!(!away.waiting(t0 + S));
        away.restarted(t0 + 10 * S);
        away.connecting(t0 + S);
        away.refused();
        assert!(
            away.waiting(t0 + 2 * S),
            "still expected back after the restart"
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
