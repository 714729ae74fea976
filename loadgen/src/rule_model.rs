//! Tooling: loadgen's own model of edgefilter's alert rules (edgefilter's README, "Alert
//! rules"), written apart from the filter's code so that a run checks the filter instead of
//! repeating it. Per device, in the device's order: which readings publish an alert (edge
//! mode, hysteresis, rate limit), which a clearing message, and what each window's summary
//! holds. Pure; the publishers feed it as they encode, the accounting ([`crate::summaries`])
//! compares what came back.
//!
//! Time is the `timeCreated` loadgen writes, the time the message is written (not its intended
//! send time: late writes would carry times older than their arrival, which the filter rightly
//! counts late past its allowed lateness): exact when the filter runs with
//! `--event-time-field timeCreated` (`--event-time` here). With the
//! filter's arrival clock only what does not depend on time is exact (edge mode, clears); the
//! windows are then checked as a partition of each device's readings (see `summaries`), and a
//! rate limit cannot be predicted (refused by `cli`).

use std::time::Duration;

/// The rules the filter runs with (loadgen's flags mirror edgefilter's).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RuleSpec {
    /// `--alert-mode edge`.
    pub edge: bool,
    pub hysteresis: f64,
    /// `--clear-messages`: edge mode publishes a clearing message on re-arm.
    pub clears: bool,
    /// µs; 0 = no rate limit.
    pub min_interval_us: u64,
    /// µs; 0 = no summaries.
    pub window_us: u64,
    /// The filter places readings by `timeCreated` (`--event-time`).
    pub event_time: bool,
}

impl RuleSpec {
    pub fn new(
        edge: bool,
        hysteresis: f64,
        clears: bool,
        min_interval: Duration,
        window: Duration,
        event_time: bool,
    ) -> RuleSpec {
        RuleSpec {
            edge,
            hysteresis,
            clears: clears && edge,
            min_interval_us: min_interval.as_micros() as u64,
            window_us: window.as_micros() as u64,
            event_time,
        }
    }

    /// Whether any rule beyond the seed's is on.
    pub fn any(&self) -> bool {
        self.edge || self.min_interval_us > 0 || self.window_us > 0
    }

    pub fn summaries(&self) -> bool {
        self.window_us > 0
    }

    /// One line for the report: `every` (the seed's), or the rules on.
    pub fn describe(&self) -> String {
        let mut parts = vec![if self.edge { "edge" } else { "every" }.to_string()];
        if self.edge && self.hysteresis > 0.0 {
            parts.push(format!("hysteresis {}", self.hysteresis));
        }
        if self.clears {
            parts.push("clears".into());
        }
        let d = |us: u64| humantime::format_duration(Duration::from_micros(us)).to_string();
        if self.min_interval_us > 0 {
            parts.push(format!("min interval {}", d(self.min_interval_us)));
        }
        if self.window_us > 0 {
            parts.push(format!("summaries every {}", d(self.window_us)));
        }
        if self.event_time && self.any() {
            parts.push("event time".into());
        }
        parts.join(", ")
    }
}

/// One reading as the summaries need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub value: f64,
    /// The time the message was written (µs since the epoch) = the body's `timeCreated`.
    pub t_us: u64,
    /// An alert was published for it.
    pub alerted: bool,
}

/// What one reading publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub alert: bool,
    pub clear: bool,
}

/// One device's rule state and, with summaries, its readings.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    /// Edge mode: not alerted since the last re-arm.
    armed: bool,
    last_alert_us: Option<u64>,
    pub readings: Vec<Reading>,
}

impl Default for DeviceModel {
    fn default() -> Self {
        DeviceModel {
            armed: true,
            last_alert_us: None,
            readings: Vec::new(),
        }
    }
}

impl DeviceModel {
    /// A valid reading `value` at `t_us`: `above` the device's threshold (or its condition
    /// holds), and whether it would re-arm the device (at or below threshold − hysteresis, or
    /// the condition fails there).
    pub fn reading(
        &mut self,
        spec: &RuleSpec,
        value: f64,
        above: bool,
        rearm: bool,
        t_us: u64,
    ) -> Published {
        let mut out = Published::default();
        if above {
            let rate_ok = match self.last_alert_us {
                Some(last) if spec.min_interval_us > 0 => {
                    t_us.saturating_sub(last) >= spec.min_interval_us
                }
                _ => true,
            };
            // A rate-limited rising edge leaves the device armed.
            if (!spec.edge || self.armed) && rate_ok {
                out.alert = true;
                self.last_alert_us = Some(t_us);
                self.armed = false;
            }
        } else if !self.armed && rearm {
            self.armed = true;
            out.clear = spec.clears;
        }
        if spec.summaries() {
            self.readings.push(Reading {
                value,
                t_us,
                alerted: out.alert,
            });
        }
        out
    }
}

/// The contents of one window as the filter must summarise it.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStats {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub last: f64,
    pub alerts: u64,
}

impl WindowStats {
    /// Of these readings, in order (the filter sums in arrival order: the same order).
    pub fn of(readings: &[Reading]) -> WindowStats {
        let mut sum = 0.0;
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for r in readings {
            sum += r.value;
            min = min.min(r.value);
            max = max.max(r.value);
        }
        WindowStats {
            count: readings.len() as u64,
            min,
            max,
            mean: sum / readings.len() as f64,
            last: readings.last().map_or(f64::NAN, |r| r.value),
            alerts: readings.iter().filter(|r| r.alerted).count() as u64,
        }
    }
}

/// Event time: the windows `[k·W, (k+1)·W)` of a device's readings (in order), with their
/// start (µs) and stats.
pub fn event_windows(readings: &[Reading], window_us: u64) -> Vec<(u64, WindowStats)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < readings.len() {
        let start = readings[i].t_us / window_us * window_us;
        let n = readings[i..]
            .iter()
            .take_while(|r| r.t_us / window_us * window_us == start)
            .count();
        out.push((start, WindowStats::of(&readings[i..i + n])));
        i += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(f: impl FnOnce(&mut RuleSpec)) -> RuleSpec {
        let mut s = RuleSpec::default();
        f(&mut s);
        s
    }

    /// A reading judged against a threshold of 25, as the seed's field.
    fn read(d: &mut DeviceModel, s: &RuleSpec, v: f64, t_us: u64) -> Published {
        d.reading(s, v, v > 25.0, v <= 25.0 - s.hysteresis, t_us)
    }

    #[test]
    fn every_mode_is_the_seed() {
        let s = spec(|_| {});
        let mut d = DeviceModel::default();
        let alerts: Vec<bool> = [30.0, 30.0, 25.0, 26.0]
            .iter()
            .map(|&v| read(&mut d, &s, v, 0).alert)
            .collect();
        assert_eq!(alerts, [true, true, false, true]);
    }

    #[test]
    fn edge_mode_with_hysteresis_and_clears() {
        let s = spec(|s| {
            s.edge = true;
            s.hysteresis = 2.0;
            s.clears = true;
        });
        let mut d = DeviceModel::default();
        let got: Vec<(bool, bool)> = [26.0, 30.0, 24.0, 23.0, 23.0, 25.5]
            .iter()
            .map(|&v| {
                let p = read(&mut d, &s, v, 0);
                (p.alert, p.clear)
            })
            .collect();
        assert_eq!(
            got,
            [
                (true, false),
                (false, false),
                (false, false),
                (false, true),
                (false, false),
                (true, false)
            ]
        );
    }

    #[test]
    fn rate_limit_keeps_an_edge_armed() {
        let s = spec(|s| {
            s.edge = true;
            s.min_interval_us = 10;
        });
        let mut d = DeviceModel::default();
        assert!(read(&mut d, &s, 30.0, 0).alert);
        assert!(!read(&mut d, &s, 20.0, 1).alert);
        assert!(!read(&mut d, &s, 30.0, 9).alert, "within the interval");
        assert!(
            read(&mut d, &s, 30.0, 10).alert,
            "still armed, interval over"
        );
    }

    #[test]
    fn windows_group_by_event_time() {
        let r = |value, t_us, alerted| Reading {
            value,
            t_us,
            alerted,
        };
        let w = event_windows(&[r(1.0, 5, false), r(3.0, 9, true), r(2.0, 10, false)], 10);
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].0, w[0].1.count, w[0].1.mean, w[0].1.alerts),
            (0, 2, 2.0, 1)
        );
        assert_eq!((w[1].0, w[1].1.last), (10, 2.0));
    }
}
