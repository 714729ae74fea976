//! `Flow`'s timers, in one table (beside the data flow): every deadline the state machine keeps
//! — the keep-alive of each connection, the alert batch's linger, the drain's limit, the IoT
//! Edge token renewal, the rules' tick, the twin GET's retry — with the earliest as the I/O
//! loop's next wake-up ([`TimerTable::next`]) and the expired ones handled by
//! `Flow::handle_timeout`. Pure: time is an argument.

use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// The input connection's keep-alive (ping, or give up).
    KeepAliveInput,
    /// The publisher connection's keep-alive.
    KeepAlivePublish,
    /// The oldest alert waiting in the batcher must go out.
    Linger,
    /// The drain's limit (`--drain-timeout`).
    Drain,
    /// IoT Edge: reconnect with a fresh SAS token.
    Renew,
    /// The rules' tick: windows of silent devices close, idle devices go.
    Rules,
    /// IoT Edge: ask for the full twin again.
    TwinGet,
}

impl Timer {
    pub(super) const ALL: [Timer; 7] = [
        Timer::KeepAliveInput,
        Timer::KeepAlivePublish,
        Timer::Linger,
        Timer::Drain,
        Timer::Renew,
        Timer::Rules,
        Timer::TwinGet,
    ];
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TimerTable {
    at: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Option<Instant>) {
        self.at[timer as usize] = at;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// The timers due at `now`, in the table's order.
    pub(super) fn expired(&self, now: Instant) -> impl Iterator<Item = Timer> + '_ {
        Timer::ALL
            .into_iter()
            .filter(move |t| self.get(*t).is_some_and(|at| at <= now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_earliest_deadline_is_the_next_wake_up_and_due_ones_expire() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Rules, Some(t0 + 10 * s));
        t.set(Timer::KeepAliveInput, Some(t0 + 30 * s));
        t.set(Timer::Linger, Some(t0 + s));
        assert_eq!(t.next(), Some(t0 + s));
        assert_eq!(
            t.expired(t0 + 10 * s).collect::<Vec<_>>(),
            vec![Timer::Linger, Timer::Rules]
        );
        t.set(Timer::Linger, None);
        assert_eq!(t.next(), Some(t0 + 10 * s));
        assert_eq!(t.get(Timer::Drain), None);
    }
}
