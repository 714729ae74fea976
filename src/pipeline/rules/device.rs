//! Per-device rule state, the stateful part of the verdict stage (between the verdict and the
//! publisher): one [`Devices`] per shard, fed the readings of its devices in arrival order and
//! ticked by the flow's timer. Pure: every call takes the time (µs since the Unix epoch) as an
//! argument and reports what to publish through a callback ([`Effect`]), in order.
//!
//! # Semantics, per device, for each reading with a number (others change nothing)
//! 1. **Time.** The reading's time `t` is its arrival, or with the event-time clock the time
//!    it carries (its arrival when it carries none, counted as `no_event_time`).
//! 2. **Window** (summaries on). `t` falls in the open window, or a later window begins: the
//!    open one closes (its summary is published before anything this reading causes) — with
//!    an allowed lateness it first waits as the previous window until the device's latest
//!    time passes its end + lateness. A window keeps the bounds it opened with; a new one is
//!    `[max(⌊t/W⌋·W, end of the last), ⌊t/W⌋·W + W)`, aligned on the wall clock. A reading
//!    older than every open window is late: counted, in no summary, alerts as usual.
//! 3. **Alert.** Above the threshold, a reading is an alert candidate — always in `every`
//!    mode, only while the device is armed in `edge` mode (else suppressed, `edge`). A
//!    candidate within `min_interval` of the device's last published alert is suppressed
//!    (`rate_limit`) and, in edge mode, the device stays armed, so the next reading above
//!    the threshold once the interval has passed alerts. A published alert disarms the
//!    device (edge) and counts in the reading's window.
//! 4. **Re-arm.** In edge mode, a disarmed device re-arms on a reading at or below
//!    `threshold − hysteresis` (and not above the threshold), publishing a clearing message
//!    (the reading's body) when clears are on. The threshold is the device's own when it has
//!    one; with a condition, a reading re-arms when the condition with `threshold − hysteresis`
//!    does not hold (the stage decides both and hands them in as [`Reading::above`] and
//!    [`Reading::rearm`]).
//!
//! Without input, [`Devices::tick`] closes the windows whose end (plus lateness) has passed —
//! for the event-time clock judged by the device's latest time plus the arrival time elapsed
//! since — and drops devices idle for [`Rules::keep_us`]. State lives in memory only: a
//! restart starts every device afresh (armed, no window, no rate limit).

use std::collections::HashMap;

use bytes::Bytes;

use super::summary::Window;
use super::{AlertMode, Rules};

/// What a reading or a tick causes to be published, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The reading's body as an alert.
    Alert,
    /// The reading's body as a clearing message (`MessageType=AlertCleared`).
    Clear,
    /// A closed window's summary document for `device`.
    Summary { device: Bytes, payload: Bytes },
}

/// Counters of what the rules held back, taken by the flow per batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Alert candidates of a disarmed device (edge mode).
    pub suppressed_edge: u32,
    /// Alert candidates within the rate limit.
    pub suppressed_rate: u32,
    /// Readings older than every open window of their device (event time).
    pub late: u32,
    /// Readings without a readable event time, placed by their arrival.
    pub no_event_time: u32,
    /// Messages in which a field of the condition was absent.
    pub condition_missing: u32,
}

/// One reading, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub device: &'a [u8],
    /// The number at `--field` (the summaries' value). Always there without a condition;
    /// with one, a reading without it counts in no window.
    pub value: Option<f64>,
    /// Strictly above the device's threshold (the exact comparison of the verdict), or the
    /// condition holds.
    pub above: bool,
    /// Edge mode re-arms on this reading: at or below the device's threshold − hysteresis, or
    /// with a condition: the condition with threshold − hysteresis does not hold.
    pub rearm: bool,
    /// Arrival at the filter, wall-clock µs.
    pub arrival_us: i64,
    /// The event time the payload carries, when the event-time clock is on.
    pub event_us: Option<i64>,
}

/// The state of one device.
#[derive(Debug, Clone)]
struct DeviceState {
    open: Option<Window>,
    /// Event time with lateness: the window before `open`, still taking late readings.
    prev: Option<Box<Window>>,
    /// End of the newest window that is no longer `open`: readings before it are late
    /// unless `prev` takes them, and the next window starts no earlier.
    floor: i64,
    /// Rule time of the last published alert.
    last_alert: i64,
    /// Arrival of the last reading (eviction; the event clock's estimate).
    last_seen: i64,
    /// The largest rule time seen (the event clock's watermark before lateness).
    max_time: i64,
    /// Edge mode: the next reading above the threshold alerts.
    armed: bool,
}

const NEVER: i64 = i64::MIN;

impl DeviceState {
    fn new() -> DeviceState {
        DeviceState {
            open: None,
            prev: None,
            floor: NEVER,
            last_alert: NEVER,
            last_seen: NEVER,
            max_time: NEVER,
            armed: true,
        }
    }
}

/// Which window a reading went into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Open,
    Prev,
    Late,
    None,
}

/// The devices of one shard and their rule state.
#[derive(Debug, Default)]
pub struct Devices {
    map: HashMap<Box<[u8]>, DeviceState>,
    pub stats: RuleStats,
}

fn publish(key: &[u8], w: &Window, partial: bool, out: &mut dyn FnMut(Effect)) {
    out(Effect::Summary {
        device: Bytes::copy_from_slice(key),
        payload: w.document(key, partial),
    });
}

impl Devices {
    pub fn new() -> Devices {
        Devices::default()
    }

    /// Devices with state.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies the rules to one reading.
    pub fn reading(&mut self, rules: &Rules, r: &Reading<'_>, out: &mut dyn FnMut(Effect)) {
        let st = match self.map.get_mut(r.device) {
            Some(st) => st,
            None => self
                .map
                .entry(Box::from(r.device))
                .or_insert_with(DeviceState::new),
        };
        let t = if rules.event_clock() {
            match r.event_us {
                Some(t) => t,
                None => {
                    self.stats.no_event_time += 1;
                    r.arrival_us
                }
            }
        } else {
            r.arrival_us
        };
        st.last_seen = r.arrival_us;
        st.max_time = st.max_time.max(t);
        let slot = if let (true, Some(value)) = (rules.window_us() > 0, r.value) {
            let slot = place(st, r.device, rules, t, value, r.arrival_us, out);
            // The device's time moved on: a window waiting for late readings may be done.
            let watermark = st.max_time.saturating_sub(rules.lateness_us());
            close_due(st, r.device, watermark, out);
            slot
        } else {
            Slot::None
        };
        if slot == Slot::Late {
            self.stats.late += 1;
        }
        let s = &rules.settings;
        let edge = s.mode == AlertMode::Edge;
        if r.above {
            if edge && !st.armed {
                self.stats.suppressed_edge += 1;
                return;
            }
            let interval = rules.min_interval_us();
            if interval > 0 && st.last_alert != NEVER && t.saturating_sub(st.last_alert) < interval
            {
                self.stats.suppressed_rate += 1;
                return;
            }
            st.last_alert = t;
            if edge {
                st.armed = false;
            }
            match slot {
                Slot::Open => st.open.as_mut().map(|w| w.alerts += 1),
                Slot::Prev => st.prev.as_mut().map(|w| w.alerts += 1),
                Slot::Late | Slot::None => None,
            };
            out(Effect::Alert);
        } else if edge && !st.armed && r.rearm {
            st.armed = true;
            if s.clear {
                out(Effect::Clear);
            }
        }
    }

    /// Without input, at wall-clock `now_us`: closes the windows whose time has passed and
    /// drops devices idle for [`Rules::keep_us`] (closing what they still hold, as partial).
    pub fn tick(&mut self, rules: &Rules, now_us: i64, out: &mut dyn FnMut(Effect)) {
        let keep = rules.keep_us();
        let lateness = rules.lateness_us();
        let event = rules.event_clock();
        self.map.retain(|key, st| {
            // The device's time now: arrival time, or its latest event time plus the arrival
            // time elapsed since (its clock's offset from ours, as last seen).
            let now_t = if event && st.max_time != NEVER {
                st.max_time
                    .saturating_add(now_us.saturating_sub(st.last_seen).max(0))
            } else {
                now_us
            };
            let watermark = now_t.saturating_sub(lateness);
            close_due(st, key, watermark, out);
            if now_us.saturating_sub(st.last_seen) >= keep {
                close_all(st, key, out);
                return false;
            }
            true
        });
        // Evicted devices give their memory back (the table keeps its peak size otherwise).
        if self.map.capacity() > 1024 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to(self.map.len() * 2);
        }
    }

    /// Closes every open window as partial (shutdown, summaries turned off).
    pub fn flush(&mut self, out: &mut dyn FnMut(Effect)) {
        for (key, st) in self.map.iter_mut() {
            close_all(st, key, out);
        }
    }

    /// The rules changed from `old` to `new` (at the arrival point of a twin patch).
    pub fn rules_changed(&mut self, old: &Rules, new: &Rules, out: &mut dyn FnMut(Effect)) {
        if new.stateless() {
            // Every rule off: publish what the windows hold and forget the devices.
            self.flush(out);
            self.map = HashMap::new();
            return;
        }
        if new.window_us() == 0 && old.window_us() > 0 {
            self.flush(out);
        }
        if new.settings.mode == AlertMode::Edge && old.settings.mode != AlertMode::Edge {
            // Edge mode starts armed: a device above the threshold alerts once more.
            for st in self.map.values_mut() {
                st.armed = true;
            }
        }
    }
}

/// Puts a reading at rule time `t` into its window (opening one, closing the one it ends).
fn place(
    st: &mut DeviceState,
    key: &[u8],
    rules: &Rules,
    t: i64,
    value: f64,
    arrival: i64,
    out: &mut dyn FnMut(Effect),
) -> Slot {
    let w = rules.window_us();
    let lateness = rules.lateness_us();
    if let Some(open) = st.open.as_mut() {
        if open.contains(t) {
            open.add(value, arrival);
            return Slot::Open;
        }
    }
    let before_open = st.open.as_ref().is_some_and(|o| t < o.start);
    if before_open || t < st.floor {
        return match st.prev.as_mut() {
            Some(prev) if prev.contains(t) => {
                prev.add(value, arrival);
                Slot::Prev
            }
            _ => Slot::Late,
        };
    }
    if let Some(closing) = st.open.take() {
        // `t` is past the open window: it closes, or waits for late readings as the
        // previous window (at most two windows per device: an older one closes first).
        st.floor = closing.end;
        let watermark = st.max_time.saturating_sub(lateness);
        close_due(st, key, watermark, out);
        if closing.end <= watermark {
            publish(key, &closing, false, out);
        } else {
            if let Some(prev) = st.prev.take() {
                publish(key, &prev, false, out);
            }
            st.prev = Some(Box::new(closing));
        }
    }
    let aligned = t.div_euclid(w) * w;
    let mut open = Window::new(aligned.max(st.floor), aligned + w);
    open.add(value, arrival);
    st.open = Some(open);
    Slot::Open
}

/// Closes the windows that end at or before `watermark`, oldest first.
fn close_due(st: &mut DeviceState, key: &[u8], watermark: i64, out: &mut dyn FnMut(Effect)) {
    if st.prev.as_ref().is_some_and(|p| p.end <= watermark) {
        if let Some(prev) = st.prev.take() {
            publish(key, &prev, false, out);
        }
    }
    if st.open.as_ref().is_some_and(|o| o.end <= watermark) {
        if let Some(open) = st.open.take() {
            st.floor = open.end;
            publish(key, &open, false, out);
        }
    }
}

/// Closes every window of a device before its time (partial).
fn close_all(st: &mut DeviceState, key: &[u8], out: &mut dyn FnMut(Effect)) {
    if let Some(prev) = st.prev.take() {
        publish(key, &prev, true, out);
    }
    if let Some(open) = st.open.take() {
        st.floor = open.end;
        publish(key, &open, true, out);
    }
}

#[cfg(test)]
mod tests;
