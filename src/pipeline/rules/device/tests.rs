//! The rules' state machine with explicit time (µs since the epoch, no clock, no sleeps):
//! every boundary of every rule, one reading or tick at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::pipeline::rules::{Anchor, RuleSettings};
use crate::pipeline::verdict::FieldPath;

const S: i64 = 1_000_000;

/// One shard's devices under a rule set, fed by hand.
struct Rig {
    devices: Devices,
    rules: Arc<Rules>,
}

/// What one call published, readably.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Alert,
    Clear,
    /// device, count, (start, end) in s, partial
    Summary(String, u64, (f64, f64), bool, Value),
}

fn settings(f: impl FnOnce(&mut RuleSettings)) -> RuleSettings {
    let mut s = RuleSettings::default();
    f(&mut s);
    s
}

fn anchor() -> Anchor {
    Anchor {
        at: Instant::now(),
        unix_us: 0,
    }
}

impl Rig {
    fn new(f: impl FnOnce(&mut RuleSettings)) -> Rig {
        Rig {
            devices: Devices::new(),
            rules: Rules::with(25.0, settings(f), None, anchor()),
        }
    }

    fn event_time(f: impl FnOnce(&mut RuleSettings)) -> Rig {
        Rig {
            devices: Devices::new(),
            rules: Rules::with(
                25.0,
                settings(f),
                Some(FieldPath::parse("t").unwrap()),
                anchor(),
            ),
        }
    }

    fn collect(f: impl FnOnce(&mut dyn FnMut(Effect))) -> Vec<Got> {
        let mut got = Vec::new();
        f(&mut |e| {
            got.push(match e {
                Effect::Alert => Got::Alert,
                Effect::Clear => Got::Clear,
                Effect::Summary { device, payload } => {
                    let v: Value = serde_json::from_slice(&payload).unwrap();
                    let secs = |k: &str| {
                        crate::pipeline::verdict::parse_rfc3339_us(v[k].as_str().unwrap()).unwrap()
                            as f64
                            / 1e6
                    };
                    Got::Summary(
                        String::from_utf8(device.to_vec()).unwrap(),
                        v["count"].as_u64().unwrap(),
                        (secs("windowStart"), secs("windowEnd")),
                        v["partial"].as_bool().unwrap(),
                        v,
                    )
                }
            })
        });
        got
    }

    /// A reading of `device` arriving at `at` (µs).
    fn read(&mut self, device: &str, value: f64, at: i64) -> Vec<Got> {
        self.read_event(device, value, at, None)
    }

    fn read_event(&mut self, device: &str, value: f64, at: i64, event: Option<i64>) -> Vec<Got> {
        let r = Reading {
            device: device.as_bytes(),
            value: Some(value),
            above: value > self.rules.threshold,
            rearm: value <= self.rules.threshold - self.rules.settings.hysteresis,
            arrival_us: at,
            event_us: event,
        };
        let (devices, rules) = (&mut self.devices, &self.rules);
        Rig::collect(|out| devices.reading(rules, &r, out))
    }

    fn tick(&mut self, now: i64) -> Vec<Got> {
        let (devices, rules) = (&mut self.devices, &self.rules);
        Rig::collect(|out| devices.tick(rules, now, out))
    }

    fn change(&mut self, threshold: f64, f: impl FnOnce(&mut RuleSettings)) -> Vec<Got> {
        let mut s = self.rules.settings.clone();
        f(&mut s);
        let new = self.rules.changed(threshold, s);
        let old = std::mem::replace(&mut self.rules, new);
        let (devices, rules) = (&mut self.devices, &self.rules);
        Rig::collect(|out| devices.rules_changed(&old, rules, out))
    }
}

fn alerts(got: &[Got]) -> usize {
    got.iter().filter(|g| **g == Got::Alert).count()
}

fn summary(got: &[Got]) -> (&str, u64, (f64, f64), bool, &Value) {
    match got {
        [Got::Summary(d, n, w, p, v), ..] => (d, *n, *w, *p, v),
        other => panic!("expected a summary first, got {other:?}"),
    }
}

#[test]
fn every_mode_alerts_on_every_reading_above() {
    let mut r = Rig::new(|_| {});
    assert_eq!(r.read("d", 26.0, 0), vec![Got::Alert]);
    assert_eq!(r.read("d", 30.0, 1), vec![Got::Alert]);
    assert_eq!(
        r.read("d", 25.0, 2),
        vec![],
        "exactly at the threshold: no alert"
    );
    assert_eq!(r.read("d", 25.000001, 3), vec![Got::Alert]);
}

#[test]
fn edge_mode_alerts_once_per_excursion_with_hysteresis() {
    let mut r = Rig::new(|s| {
        s.mode = AlertMode::Edge;
        s.hysteresis = 2.0;
        s.clear = true;
    });
    assert_eq!(r.read("d", 20.0, 0), vec![], "below: armed, nothing");
    assert_eq!(
        r.read("d", 25.0, 1),
        vec![],
        "exactly at the threshold is not above"
    );
    assert_eq!(r.read("d", 26.0, 2), vec![Got::Alert], "the rising edge");
    assert_eq!(r.read("d", 30.0, 3), vec![], "still above: suppressed");
    assert_eq!(
        r.read("d", 24.0, 4),
        vec![],
        "below, but above the re-arm point 23"
    );
    assert_eq!(
        r.read("d", 23.000001, 5),
        vec![],
        "just above the re-arm point"
    );
    assert_eq!(r.read("d", 26.0, 6), vec![], "not re-armed: no alert");
    assert_eq!(
        r.read("d", 23.0, 7),
        vec![Got::Clear],
        "exactly at the re-arm point"
    );
    assert_eq!(
        r.read("d", 10.0, 8),
        vec![],
        "armed already: one clear only"
    );
    assert_eq!(
        r.read("d", 25.5, 9),
        vec![Got::Alert],
        "armed: alerts again"
    );
    assert_eq!(r.devices.stats.suppressed_edge, 2);
    // Devices are independent.
    assert_eq!(r.read("other", 26.0, 10), vec![Got::Alert]);
}

#[test]
fn edge_without_hysteresis_rearms_at_the_threshold_and_clears_only_when_asked() {
    let mut r = Rig::new(|s| s.mode = AlertMode::Edge);
    assert_eq!(r.read("d", 26.0, 0), vec![Got::Alert]);
    assert_eq!(
        r.read("d", 25.0, 1),
        vec![],
        "re-armed at the threshold, no clear"
    );
    assert_eq!(r.read("d", 26.0, 2), vec![Got::Alert]);
}

#[test]
fn rate_limit_boundaries() {
    let mut r = Rig::new(|s| s.min_interval = Duration::from_secs(10));
    assert_eq!(r.read("d", 30.0, 0), vec![Got::Alert]);
    assert_eq!(
        r.read("d", 30.0, 10 * S - 1),
        vec![],
        "1 µs before the interval ends"
    );
    assert_eq!(
        r.read("d", 30.0, 10 * S),
        vec![Got::Alert],
        "exactly one interval later"
    );
    assert_eq!(r.read("d", 30.0, 15 * S), vec![]);
    assert_eq!(r.read("e", 30.0, 15 * S), vec![Got::Alert], "per device");
    assert_eq!(r.devices.stats.suppressed_rate, 2);
    // Suppressed alerts do not restart the interval: measured from the last published.
    assert_eq!(r.read("d", 30.0, 20 * S), vec![Got::Alert]);
}

#[test]
fn a_rate_limited_edge_stays_armed() {
    let mut r = Rig::new(|s| {
        s.mode = AlertMode::Edge;
        s.min_interval = Duration::from_secs(10);
        s.clear = true;
    });
    assert_eq!(r.read("d", 30.0, 0), vec![Got::Alert]);
    assert_eq!(r.read("d", 20.0, S), vec![Got::Clear]);
    assert_eq!(
        r.read("d", 30.0, 2 * S),
        vec![],
        "the next edge is within the interval"
    );
    assert_eq!(
        r.read("d", 30.0, 9 * S),
        vec![],
        "still armed, still within"
    );
    assert_eq!(
        r.read("d", 30.0, 10 * S),
        vec![Got::Alert],
        "the condition persists past the interval: it alerts (late, not never)"
    );
    assert_eq!(r.read("d", 30.0, 11 * S), vec![], "and is disarmed now");
    assert_eq!(r.devices.stats.suppressed_rate, 2);
    assert_eq!(r.devices.stats.suppressed_edge, 1);
}

#[test]
fn window_boundaries_and_contents() {
    let mut r = Rig::new(|s| s.window = Duration::from_secs(10));
    assert!(r.read("d", 20.0, 3 * S).is_empty());
    assert_eq!(alerts(&r.read("d", 30.0, 5 * S)), 1);
    assert!(
        r.read("d", 21.5, 10 * S - 1).is_empty(),
        "the last µs of [0, 10)"
    );
    let got = r.read("d", 22.0, 10 * S);
    assert_eq!(got.len(), 1, "the first µs of [10, 20) closes [0, 10)");
    let (device, count, window, partial, v) = summary(&got);
    assert_eq!(
        (device, count, window, partial),
        ("d", 3, (0.0, 10.0), false)
    );
    assert_eq!(
        (v["min"].as_f64(), v["max"].as_f64()),
        (Some(20.0), Some(30.0))
    );
    assert_eq!(v["last"], 21.5);
    assert_eq!(v["mean"], (20.0 + 30.0 + 21.5) / 3.0);
    assert_eq!(v["alerts"], 1);
    assert_eq!(v["firstArrival"], "1970-01-01T00:00:03Z");
    assert_eq!(v["lastArrival"], "1970-01-01T00:00:09.999999Z");
    // A silent device's window closes on the timer at its end, not a µs before.
    assert!(r.tick(20 * S - 1).is_empty());
    let got = r.tick(20 * S);
    assert_eq!(summary(&got).1, 1);
    assert_eq!(summary(&got).2, (10.0, 20.0));
    assert!(r.tick(30 * S).is_empty(), "closed once");
    // The next reading opens the window it falls into (empty windows publish nothing).
    let got = r.read("d", 23.0, 45 * S);
    assert!(got.is_empty());
    let got = r.tick(50 * S);
    assert_eq!(summary(&got).2, (40.0, 50.0));
}

#[test]
fn a_summary_comes_before_the_alert_of_the_reading_that_closed_its_window() {
    let mut r = Rig::new(|s| s.window = Duration::from_secs(10));
    r.read("d", 20.0, S);
    let got = r.read("d", 30.0, 11 * S);
    assert!(matches!(got[..], [Got::Summary(..), Got::Alert]), "{got:?}");
}

#[test]
fn twin_changes_in_the_middle_of_a_window() {
    let mut r = Rig::new(|s| s.window = Duration::from_secs(10));
    r.read("d", 30.0, 11 * S);
    // Threshold up mid-window: later readings are judged with it, the window goes on.
    assert!(r.change(35.0, |_| {}).is_empty());
    assert!(r.read("d", 30.0, 12 * S).is_empty());
    // A longer window: the open one keeps its bounds [10, 20); the next one starts at its end
    // and ends on the new size's boundary [20, 60).
    assert!(r
        .change(35.0, |s| s.window = Duration::from_secs(60))
        .is_empty());
    r.read("d", 20.0, 15 * S);
    let got = r.read("d", 21.0, 21 * S);
    let (_, count, window, _, v) = summary(&got);
    assert_eq!((count, window), (3, (10.0, 20.0)));
    assert_eq!(v["alerts"], 1, "30 alerted at 25, not at 35");
    let got = r.tick(60 * S);
    assert_eq!(summary(&got).2, (20.0, 60.0));
    // Summaries off: the open window is published at once, partial.
    r.read("d", 22.0, 61 * S);
    let got = r.change(35.0, |s| s.window = Duration::ZERO);
    let (_, count, window, partial, _) = summary(&got);
    assert_eq!((count, window, partial), (1, (60.0, 120.0), true));
    assert!(r.read("d", 22.0, 200 * S).is_empty());
}

#[test]
fn switching_to_edge_mode_arms_every_device() {
    let mut r = Rig::new(|s| {
        s.mode = AlertMode::Edge;
        s.window = Duration::from_secs(10);
    });
    assert_eq!(alerts(&r.read("d", 30.0, 0)), 1);
    r.change(25.0, |s| s.mode = AlertMode::Every);
    assert_eq!(alerts(&r.read("d", 30.0, 1)), 1);
    r.change(25.0, |s| s.mode = AlertMode::Edge);
    assert_eq!(alerts(&r.read("d", 30.0, 2)), 1, "armed by the switch");
    assert_eq!(alerts(&r.read("d", 30.0, 3)), 0);
}

#[test]
fn idle_devices_are_evicted_and_start_afresh() {
    let mut r = Rig::new(|s| {
        s.mode = AlertMode::Edge;
        s.idle = Duration::from_secs(60);
    });
    assert_eq!(r.read("d", 30.0, 0), vec![Got::Alert]);
    assert_eq!(r.read("e", 30.0, 30 * S), vec![Got::Alert]);
    r.tick(60 * S - 1);
    assert_eq!(r.devices.len(), 2);
    r.tick(60 * S);
    assert_eq!(r.devices.len(), 1, "d was idle 60 s, e 30 s");
    assert_eq!(r.read("d", 30.0, 61 * S), vec![Got::Alert], "afresh: armed");
    assert_eq!(r.read("e", 30.0, 61 * S), vec![], "kept: still disarmed");
}

#[test]
fn eviction_waits_for_the_window_and_the_rate_limit() {
    let mut r = Rig::new(|s| {
        s.idle = Duration::from_secs(1);
        s.window = Duration::from_secs(10);
        s.min_interval = Duration::from_secs(30);
    });
    assert_eq!(r.rules.keep_us(), 30 * S);
    r.read("d", 30.0, 0);
    assert_eq!(summary(&r.tick(10 * S)).1, 1);
    assert_eq!(r.devices.len(), 1);
    r.tick(30 * S);
    assert!(r.devices.is_empty());
}

#[test]
fn eviction_publishes_what_a_window_still_holds() {
    // Event time: the window's end is judged by the device's clock, which stopped.
    let mut r = Rig::event_time(|s| {
        s.idle = Duration::from_secs(10);
        s.window = Duration::from_secs(10);
    });
    r.read_event("d", 20.0, 100 * S, Some(5 * S));
    assert!(r.tick(104 * S).is_empty());
    let got = r.tick(105 * S);
    assert_eq!(
        summary(&got).2,
        (0.0, 10.0),
        "event 5 s + 5 s elapsed = the end"
    );
}

#[test]
fn a_restart_starts_every_device_afresh() {
    let rules = |s: &mut RuleSettings| {
        s.mode = AlertMode::Edge;
        s.min_interval = Duration::from_secs(60);
        s.window = Duration::from_secs(10);
    };
    let mut r = Rig::new(rules);
    assert_eq!(alerts(&r.read("d", 30.0, 0)), 1);
    assert_eq!(alerts(&r.read("d", 30.0, S)), 0);
    // The state is in memory only: a new process (new Devices) alerts again, and the
    // window it was in is gone (its readings are in no summary).
    let mut r = Rig::new(rules);
    assert_eq!(alerts(&r.read("d", 30.0, 2 * S)), 1);
    assert_eq!(summary(&r.tick(10 * S)).1, 1);
}

#[test]
fn shutdown_flushes_open_windows_as_partial() {
    let mut r = Rig::new(|s| s.window = Duration::from_secs(10));
    r.read("a", 20.0, S);
    r.read("b", 21.0, 2 * S);
    let (devices, _) = (&mut r.devices, ());
    let got = Rig::collect(|out| devices.flush(out));
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|g| matches!(g, Got::Summary(_, 1, _, true, _))));
    assert!(r.tick(20 * S).is_empty(), "flushed once");
}

#[test]
fn every_rule_off_forgets_the_devices() {
    let mut r = Rig::new(|s| s.window = Duration::from_secs(10));
    r.read("a", 20.0, S);
    let got = r.change(25.0, |s| s.window = Duration::ZERO);
    assert_eq!(got.len(), 1);
    assert!(r.devices.is_empty());
}

#[test]
fn event_time_windows_with_lateness() {
    let mut r = Rig::event_time(|s| {
        s.window = Duration::from_secs(10);
        s.lateness = Duration::from_secs(3);
    });
    // Arrival times are irrelevant to placement; event times decide.
    assert!(r.read_event("d", 1.0, 1000 * S, Some(5 * S)).is_empty());
    assert!(
        r.read_event("d", 2.0, 1001 * S, Some(11 * S)).is_empty(),
        "[0,10) waits for late readings until the device's time passes 13 s"
    );
    assert!(
        r.read_event("d", 3.0, 1002 * S, Some(9 * S)).is_empty(),
        "late, in time"
    );
    let got = r.read_event("d", 4.0, 1003 * S, Some(13 * S));
    let (_, count, window, partial, v) = summary(&got);
    assert_eq!((count, window, partial), (2, (0.0, 10.0), false));
    assert_eq!(v["last"], 3.0, "last in arrival order");
    assert!(r.read_event("d", 5.0, 1004 * S, Some(8 * S)).is_empty());
    assert_eq!(r.devices.stats.late, 1, "[0,10) is closed: too late");
    // The timer judges by the device's latest time (13 s) plus the arrival time elapsed since
    // its last reading (at 1004 s): the end 20 s + 3 s lateness is reached at 1014 s.
    assert!(r.tick(1014 * S - 1).is_empty());
    let got = r.tick(1014 * S);
    assert_eq!(summary(&got).1, 2);
    assert_eq!(summary(&got).2, (10.0, 20.0));
}

#[test]
fn event_time_rate_limit_and_missing_times() {
    let mut r = Rig::event_time(|s| s.min_interval = Duration::from_secs(10));
    assert_eq!(r.read_event("d", 30.0, 0, Some(100 * S)), vec![Got::Alert]);
    assert_eq!(r.read_event("d", 30.0, 0, Some(109 * S)), vec![]);
    assert_eq!(r.read_event("d", 30.0, 0, Some(110 * S)), vec![Got::Alert]);
    // No time in the payload: placed by its arrival (here far before 110 s: limited).
    assert_eq!(r.read_event("d", 30.0, 50 * S, None), vec![]);
    assert_eq!(r.devices.stats.no_event_time, 1);
}

#[test]
fn arrival_time_ignores_event_times() {
    let mut r = Rig::new(|s| s.window = Duration::from_secs(10));
    r.read_event("d", 1.0, S, Some(99 * S));
    let got = r.tick(10 * S);
    assert_eq!(summary(&got).2, (0.0, 10.0));
}
