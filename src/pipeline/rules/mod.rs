//! The alert rules beyond the seed's threshold, between the verdict and the publisher: their
//! parameters ([`Rules`], an immutable snapshot behind an `Arc` that every batch carries) and
//! the per-device state that applies them ([`device::Devices`], one per shard, owned by the
//! shard's [`Stage`](super::stage::Stage)).
//!
//! - **Alert mode** ([`AlertMode`]): `every` (the seed: every reading above the threshold
//!   alerts) or `edge` (a device alerts once when it rises above the threshold and re-arms
//!   when a reading falls to or below `threshold − hysteresis`; optionally a clearing message
//!   is published then).
//! - **Rate limit** (`min_interval`): at most one alert per device per interval.
//! - **Summaries** (`window`): tumbling windows per device, one JSON document per device and
//!   window ([`summary`]).
//! - **Clock**: arrival time at the filter (processing time), or with `event_time` the time
//!   each payload carries at a path, with an allowed lateness.
//! - **Eviction**: a device's state is dropped after `idle` without a reading.
//! - **Per-device thresholds** ([`thresholds`]) and a **condition** over several fields
//!   (`pipeline::condition`): what "above the threshold" means for a message. They need no
//!   per-device state: with them and no other rule, every reading is still decided alone.
//!
//! Every rule is off by default; then a batch is decided exactly as the seed decides it, with
//! no per-device state at all ([`Rules::stateless`]).

pub mod device;
pub mod summary;
pub mod thresholds;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::condition::Condition;
use super::verdict::FieldPath;
pub use thresholds::DeviceThresholds;

/// When a reading above the threshold alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMode {
    /// Every reading above the threshold (the seed's behaviour).
    Every,
    /// Once per excursion: on the rising edge, re-armed at `threshold − hysteresis`.
    Edge,
}

impl AlertMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertMode::Every => "every",
            AlertMode::Edge => "edge",
        }
    }

    pub fn parse(s: &str) -> Option<AlertMode> {
        match s {
            "every" => Some(AlertMode::Every),
            "edge" => Some(AlertMode::Edge),
            _ => None,
        }
    }
}

/// The rule parameters a twin patch may change, besides the threshold. Durations of zero turn
/// their rule off.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    pub mode: AlertMode,
    /// Edge mode re-arms at `threshold − hysteresis` (≥ 0, finite).
    pub hysteresis: f64,
    /// Edge mode: publish a clearing message when a device re-arms.
    pub clear: bool,
    /// At most one alert per device per this interval (0: no limit).
    pub min_interval: Duration,
    /// Tumbling summary windows of this length per device (0: no summaries).
    pub window: Duration,
    /// Event time only: how long a window waits for late readings after its end.
    pub lateness: Duration,
    /// A device's state is dropped after this long without a reading.
    pub idle: Duration,
    /// Thresholds per device (topic filters; the most specific match wins).
    pub thresholds: Arc<DeviceThresholds>,
    /// The test a message must pass to alert, instead of `field > threshold`.
    pub condition: Option<Arc<Condition>>,
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            mode: AlertMode::Every,
            hysteresis: 0.0,
            clear: false,
            min_interval: Duration::ZERO,
            window: Duration::ZERO,
            lateness: Duration::ZERO,
            idle: DEFAULT_IDLE,
            thresholds: Arc::default(),
            condition: None,
        }
    }
}

/// A rule parameter, for messages naming it as the twin key or the flag that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Mode,
    Hysteresis,
    Clear,
    MinInterval,
    Window,
    Lateness,
    Idle,
    Thresholds,
    Condition,
}

impl Param {
    pub const ALL: [Param; 9] = [
        Param::Mode,
        Param::Hysteresis,
        Param::Clear,
        Param::MinInterval,
        Param::Window,
        Param::Lateness,
        Param::Idle,
        Param::Thresholds,
        Param::Condition,
    ];

    /// The desired/reported property.
    pub fn twin_key(self) -> &'static str {
        match self {
            Param::Mode => "AlertMode",
            Param::Hysteresis => "Hysteresis",
            Param::Clear => "ClearMessages",
            Param::MinInterval => "AlertMinInterval",
            Param::Window => "SummaryWindow",
            Param::Lateness => "AllowedLateness",
            Param::Idle => "DeviceIdle",
            Param::Thresholds => "Thresholds",
            Param::Condition => "Condition",
        }
    }

    /// The `edgefilter run` flag.
    pub fn flag(self) -> &'static str {
        match self {
            Param::Mode => "--alert-mode",
            Param::Hysteresis => "--hysteresis",
            Param::Clear => "--clear-messages",
            Param::MinInterval => "--alert-min-interval",
            Param::Window => "--summary-window",
            Param::Lateness => "--allowed-lateness",
            Param::Idle => "--device-idle",
            Param::Thresholds => "--device-threshold",
            Param::Condition => "--condition",
        }
    }
}

/// A rule parameter out of range: which one, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam {
    pub param: Param,
    /// "must be …, got …" (the name goes in front).
    pub why: String,
}

/// Shortest summary window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// How long an idle device's state is kept by default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// The longest duration a rule accepts (a week): windows, intervals, lateness, idle time.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

impl RuleSettings {
    /// Checks every parameter's range and how they fit together.
    pub fn check(&self) -> Result<(), BadParam> {
        let bad = |param, why: String| Err(BadParam { param, why });
        if !(self.hysteresis.is_finite() && self.hysteresis >= 0.0) {
            return bad(
                Param::Hysteresis,
                format!("must be a number ≥ 0, got {}", self.hysteresis),
            );
        }
        for (param, d) in [
            (Param::MinInterval, self.min_interval),
            (Param::Window, self.window),
            (Param::Lateness, self.lateness),
            (Param::Idle, self.idle),
        ] {
            if d > MAX_DURATION {
                return bad(
                    param,
                    format!(
                        "must be at most a week (604800 s), got {} s",
                        d.as_secs_f64()
                    ),
                );
            }
        }
        if !self.window.is_zero() && self.window < MIN_WINDOW {
            return bad(
                Param::Window,
                format!(
                    "must be 0 (off) or at least 1 s, got {} s",
                    self.window.as_secs_f64()
                ),
            );
        }
        if self.idle < MIN_WINDOW {
            return bad(
                Param::Idle,
                format!("must be at least 1 s, got {} s", self.idle.as_secs_f64()),
            );
        }
        if !self.window.is_zero() && self.lateness > self.window {
            return bad(
                Param::Lateness,
                format!(
                    "must not exceed the summary window ({} s), got {} s",
                    self.window.as_secs_f64(),
                    self.lateness.as_secs_f64()
                ),
            );
        }
        Ok(())
    }
}

/// Maps the monotonic clock the flow runs on to wall-clock µs since the Unix epoch, fixed
/// once per process: windows are aligned on the wall clock (10 s windows start at :00, :10,
/// …), and a wall-clock step during the run moves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub at: Instant,
    pub unix_us: i64,
}

impl Anchor {
    pub fn now() -> Anchor {
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Anchor {
            at: Instant::now(),
            unix_us,
        }
    }

    /// Wall-clock µs of `t`.
    pub fn unix_us(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.at) {
            Some(d) => self.unix_us + d.as_micros() as i64,
            None => self.unix_us - self.at.duration_since(t).as_micros() as i64,
        }
    }

    /// The instant at wall-clock µs `unix_us` (not before the anchor).
    pub fn instant(&self, unix_us: i64) -> Instant {
        self.at + Duration::from_micros(unix_us.saturating_sub(self.unix_us).max(0) as u64)
    }
}

/// The rule parameters in force for a batch. Immutable: a twin patch makes a new snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Alert when the field is strictly greater than this (a finite number).
    pub threshold: f64,
    pub settings: RuleSettings,
    /// The event-time clock: the path of the payload's time (None: arrival time).
    pub event_time: Option<FieldPath>,
    pub anchor: Anchor,
}

impl Rules {
    /// The seed's rules: `threshold`, every other rule off, anchored on the clock now. For
    /// tests and benches; the filter builds its rules with [`Rules::with`] and the anchor
    /// `run` takes once.
    pub fn new(threshold: f64) -> Arc<Rules> {
        Rules::with(threshold, RuleSettings::default(), None, Anchor::now())
    }

    pub fn with(
        threshold: f64,
        settings: RuleSettings,
        event_time: Option<FieldPath>,
        anchor: Anchor,
    ) -> Arc<Rules> {
        Arc::new(Rules {
            threshold,
            settings,
            event_time,
            anchor,
        })
    }

    /// The same rules with other settings (a twin patch).
    pub fn changed(&self, threshold: f64, settings: RuleSettings) -> Arc<Rules> {
        Rules::with(threshold, settings, self.event_time.clone(), self.anchor)
    }

    /// The seed's test exactly: `field > threshold` with one threshold for every device (no
    /// per-device thresholds, no condition).
    pub fn plain(&self) -> bool {
        self.settings.thresholds.is_empty() && self.settings.condition.is_none()
    }

    /// The threshold in force for `device`: its per-device threshold, else the threshold.
    #[inline]
    pub fn threshold_for(&self, device: &[u8]) -> f64 {
        self.settings
            .thresholds
            .get(device)
            .unwrap_or(self.threshold)
    }

    /// No rule needs per-device state: every reading is decided alone, as the seed does.
    pub fn stateless(&self) -> bool {
        let s = &self.settings;
        s.mode == AlertMode::Every && s.min_interval.is_zero() && s.window.is_zero()
    }

    /// Whether readings are placed by the time they carry (else by their arrival).
    pub fn event_clock(&self) -> bool {
        self.event_time.is_some()
    }

    /// The allowed lateness in µs (event time only; arrival times are never late).
    pub fn lateness_us(&self) -> i64 {
        if self.event_clock() {
            micros(self.settings.lateness)
        } else {
            0
        }
    }

    pub fn window_us(&self) -> i64 {
        micros(self.settings.window)
    }

    pub fn min_interval_us(&self) -> i64 {
        micros(self.settings.min_interval)
    }

    /// How long an idle device's state is kept: `idle`, but at least as long as a window (with
    /// its lateness) and the rate limit need it.
    pub fn keep_us(&self) -> i64 {
        micros(self.settings.idle)
            .max(self.window_us() + self.lateness_us())
            .max(self.min_interval_us())
    }

    /// When the stages must look at their devices next without input (windows of silent
    /// devices end, idle devices are evicted), after `now`; None when no rule needs it.
    pub fn next_tick(&self, now: Instant) -> Option<Instant> {
        if self.stateless() {
            return None;
        }
        let now_us = self.anchor.unix_us(now);
        // Idle devices are looked for at least every quarter of the keep time (≥ 1 s).
        let mut next = now_us + (self.keep_us() / 4).max(1_000_000);
        let w = self.window_us();
        if w > 0 {
            let boundary = if self.event_clock() {
                // Device clocks are only estimated: look every second (or window).
                now_us + w.min(1_000_000)
            } else {
                (now_us.div_euclid(w) + 1) * w
            };
            next = next.min(boundary);
        }
        Some(self.anchor.instant(next))
    }
}

/// A duration in µs, saturating (rule durations are at most [`MAX_DURATION`]).
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
