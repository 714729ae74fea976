//! Tooling, the counting end of loadgen for what the filter's rules publish besides alerts:
//! which kind each publish on the sink's subscriptions is ([`classify`]: alert, clearing
//! message or window summary), and the exact accounting of the summaries against loadgen's
//! own rule model ([`crate::rules`]). Pure logic, no sockets.
//!
//! - **Event time** (`--event-time`): the windows are known in advance; every expected
//!   `(device, windowStart)` must arrive once with exactly the expected count, min, max,
//!   mean, last and alerts.
//! - **Arrival time**: where a window ends depends on when the filter received each reading,
//!   which loadgen cannot know; but a device's readings arrive in order, so its summaries,
//!   ordered by `windowStart`, must cut its readings into consecutive runs: each summary's
//!   figures must be exactly those of the next `count` readings, and together they must cover
//!   all of them. A summary that does not fit is unexpected; readings no summary covers are
//!   one lost summary (at least).
//!
//! Duplicates are a `(device, windowStart)` seen again with the same figures (a QoS 1
//! redelivery); with other figures it is unexpected.

use std::collections::{BTreeMap, HashMap};

use edgefilter_mqtt::topic;

use crate::rule_model::{event_windows, Reading, RuleSpec, WindowStats};

/// What a publish on the sink's subscriptions is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alert,
    Clear,
    Summary,
}

/// Decides the kind of a publish: by topic (the summary and clear subscriptions), else by
/// its MQTT 5 `MessageType` user property (`props`: the raw property bytes).
pub fn classify(
    topic_name: &[u8],
    props: &[u8],
    clear_filter: Option<&str>,
    summary_filter: Option<&str>,
) -> Kind {
    let name = std::str::from_utf8(topic_name).unwrap_or("");
    if summary_filter.is_some_and(|f| topic::matches(name, f)) {
        return Kind::Summary;
    }
    if clear_filter.is_some_and(|f| topic::matches(name, f)) {
        return Kind::Clear;
    }
    match message_type(props) {
        Some(b"AlertCleared") => Kind::Clear,
        Some(b"Summary") => Kind::Summary,
        _ => Kind::Alert,
    }
}

/// The `MessageType` user property in raw MQTT 5 publish properties (the last one wins).
pub fn message_type(mut p: &[u8]) -> Option<&[u8]> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (p.get(..n)?, p.get(n..)?);
        *p = rest;
        Some(head)
    }
    fn string<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = take(p, 2)?;
        take(p, usize::from(u16::from_be_bytes([len[0], len[1]])))
    }
    let mut found = None;
    while let Some((&id, rest)) = p.split_first() {
        p = rest;
        match id {
            0x01 => drop(take(&mut p, 1)?),
            0x02 => drop(take(&mut p, 4)?),
            0x23 => drop(take(&mut p, 2)?),
            0x03 | 0x08 | 0x09 => drop(string(&mut p)?),
            0x0B => while take(&mut p, 1)?[0] & 0x80 != 0 {},
            0x26 => {
                let (k, v) = (string(&mut p)?, string(&mut p)?);
                if k == b"MessageType" {
                    found = Some(v);
                }
            }
            _ => return found,
        }
    }
    found
}

/// One summary document as the filter published it.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub device: String,
    pub start_us: u64,
    pub end_us: u64,
    pub stats: WindowStats,
}

impl Doc {
    pub fn parse(payload: &[u8]) -> Option<Doc> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let time = |k: &str| -> Option<u64> {
            let t = humantime::parse_rfc3339(v[k].as_str()?).ok()?;
            Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as u64)
        };
        Some(Doc {
            device: v["device"].as_str()?.to_string(),
            start_us: time("windowStart")?,
            end_us: time("windowEnd")?,
            stats: WindowStats {
                count: v["count"].as_u64()?,
                min: v["min"].as_f64()?,
                max: v["max"].as_f64()?,
                mean: v["mean"].as_f64()?,
                last: v["last"].as_f64()?,
                alerts: v["alerts"].as_u64()?,
            },
        })
    }
}

/// The accounting's verdict on one kind of output.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindCounts {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
}

/// The summaries the sink received.
#[derive(Debug, Default)]
pub struct Summaries {
    /// First copies by (device, windowStart).
    docs: BTreeMap<(String, u64), Doc>,
    pub received: u64,
    pub duplicates: u64,
    /// Unreadable documents and second copies with other figures.
    pub bad: u64,
    /// Readings covered per device (first copies).
    covered: HashMap<String, u64>,
    /// The first problem seen, for diagnosis.
    pub first_problem: Option<String>,
    /// When the last summary of this run arrived (µs since the epoch).
    pub last_us: Option<u64>,
}

impl Summaries {
    /// Counts one summary payload; `ignore` tells the devices that are not this run's (the
    /// readiness probe).
    pub fn on_summary(&mut self, payload: &[u8], now_us: u64, ignore: impl Fn(&str) -> bool) {
        let Some(doc) = Doc::parse(payload) else {
            self.received += 1;
            self.bad += 1;
            self.problem(|| format!("unreadable summary {}", String::from_utf8_lossy(payload)));
            return;
        };
        if ignore(&doc.device) {
            return;
        }
        self.received += 1;
        self.last_us = Some(now_us);
        match self.docs.get(&(doc.device.clone(), doc.start_us)) {
            Some(first) if *first == doc => self.duplicates += 1,
            Some(_) => {
                self.bad += 1;
                self.problem(|| format!("a second, different summary {doc:?}"));
            }
            None => {
                *self.covered.entry(doc.device.clone()).or_default() += doc.stats.count;
                self.docs.insert((doc.device.clone(), doc.start_us), doc);
            }
        }
    }

    fn problem(&mut self, what: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what());
        }
    }

    /// Readings of `device` the summaries so far cover.
    pub fn covered(&self, device: &str) -> u64 {
        self.covered.get(device).copied().unwrap_or(0)
    }

    /// The final counts against each device's readings (by the device's input topic, which
    /// is the filter's device key).
    pub fn finish(
        &mut self,
        spec: &RuleSpec,
        devices: &BTreeMap<String, Vec<Reading>>,
    ) -> KindCounts {
        let mut c = KindCounts {
            received: self.received,
            duplicates: self.duplicates,
            unexpected: self.bad,
            ..Default::default()
        };
        let mut matched = 0;
        for (device, readings) in devices {
            let docs: Vec<&Doc> = self
                .docs
                .range((device.clone(), 0)..=(device.clone(), u64::MAX))
                .map(|(_, d)| d)
                .collect();
            let (m, lost, bad, problem) = if spec.event_time {
                check_event(docs, readings, spec.window_us)
            } else {
                check_partition(docs, readings, spec.window_us)
            };
            matched += m;
            c.lost += lost;
            c.unexpected += bad;
            if let Some(p) = problem {
                self.problem(|| format!("{device}: {p}"));
            }
        }
        let foreign = self
            .docs
            .keys()
            .filter(|(d, _)| !devices.contains_key(d))
            .count() as u64;
        if foreign > 0 {
            c.unexpected += foreign;
            self.problem(|| "summaries of devices this run did not publish".to_string());
        }
        c.expected = matched + c.lost;
        c
    }
}

type Check = (u64, u64, u64, Option<String>);

/// Event time: every expected window exactly. Returns (matched, lost, unexpected, problem).
fn check_event(docs: Vec<&Doc>, readings: &[Reading], window_us: u64) -> Check {
    let expected: BTreeMap<u64, WindowStats> =
        event_windows(readings, window_us).into_iter().collect();
    let (mut matched, mut bad, mut problem) = (0, 0, None);
    for d in docs {
        match expected.get(&d.start_us) {
            Some(want) if *want == d.stats && d.end_us == d.start_us + window_us => matched += 1,
            want => {
                bad += 1;
                problem.get_or_insert_with(|| format!("got {d:?}, expected {want:?}"));
            }
        }
    }
    let lost = expected.len() as u64 - matched;
    if lost > 0 {
        problem.get_or_insert_with(|| format!("{lost} of {} windows missing", expected.len()));
    }
    (matched, lost, bad, problem)
}

/// Arrival time: the summaries cut the readings into consecutive runs.
fn check_partition(docs: Vec<&Doc>, readings: &[Reading], window_us: u64) -> Check {
    let (mut matched, mut bad, mut problem) = (0, 0, None);
    let mut at = 0usize;
    for d in docs {
        let n = d.stats.count as usize;
        let fits = d.end_us.saturating_sub(d.start_us) <= window_us
            && d.end_us % window_us == 0
            && at + n <= readings.len()
            && WindowStats::of(&readings[at..at + n]) == d.stats;
        if fits {
            matched += 1;
        } else {
            bad += 1;
            problem.get_or_insert_with(|| {
                let want = readings.get(at..at + n).map(WindowStats::of);
                format!(
                    "readings {at}..{}: got {d:?}, the readings give {want:?}",
                    at + n
                )
            });
        }
        at += n;
    }
    let lost = u64::from(at < readings.len());
    if lost > 0 {
        problem.get_or_insert_with(|| format!("readings {at}..{} in no summary", readings.len()));
    }
    (matched, lost, bad, problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(value: f64, t_us: u64) -> Reading {
        Reading {
            value,
            t_us,
            alerted: value > 25.0,
        }
    }

    fn doc(device: &str, start: u64, readings: &[Reading], w: u64) -> Vec<u8> {
        let s = WindowStats::of(readings);
        let t = |us: u64| {
            humantime::format_rfc3339_micros(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(us),
            )
            .to_string()
        };
        serde_json::to_vec(&serde_json::json!({
            "device": device, "windowStart": t(start), "windowEnd": t(start + w),
            "count": s.count, "min": s.min, "max": s.max, "mean": s.mean, "last": s.last,
            "alerts": s.alerts, "firstArrival": t(start), "lastArrival": t(start), "partial": false
        }))
        .unwrap()
    }

    #[test]
    fn kinds_by_topic_and_property() {
        let clear = [
            0x26, 0, 11, b'M', b'e', b's', b's', b'a', b'g', b'e', b'T', b'y', b'p', b'e', 0, 12,
        ]
        .iter()
        .copied()
        .chain(*b"AlertCleared")
        .collect::<Vec<u8>>();
        let mut with_ct = vec![0x03, 0, 4];
        with_ct.extend_from_slice(b"json");
        with_ct.extend_from_slice(&clear);
        assert_eq!(message_type(&with_ct), Some(&b"AlertCleared"[..]));
        assert_eq!(
            classify(b"alerts/t/d", &with_ct, None, Some("summaries/#")),
            Kind::Clear
        );
        assert_eq!(
            classify(b"alerts/t/d", &[], None, Some("summaries/#")),
            Kind::Alert
        );
        assert_eq!(
            classify(b"summaries/t/d", &[], None, Some("summaries/#")),
            Kind::Summary
        );
        assert_eq!(
            classify(b"cleared/t/d", &[], Some("cleared/#"), None),
            Kind::Clear
        );
        assert_eq!(message_type(&[0x26, 0, 5]), None, "truncated");
    }

    #[test]
    fn event_time_summaries_are_exact() {
        let spec = RuleSpec {
            window_us: 10,
            event_time: true,
            ..Default::default()
        };
        let rs = vec![reading(20.0, 1), reading(30.0, 5), reading(21.0, 12)];
        let devices = BTreeMap::from([("t/d".to_string(), rs.clone())]);
        let mut s = Summaries::default();
        s.on_summary(&doc("t/d", 0, &rs[..2], 10), 0, |_| false);
        s.on_summary(&doc("t/d", 0, &rs[..2], 10), 0, |_| false);
        s.on_summary(&doc("t/probe", 0, &rs[..1], 10), 0, |d| {
            d.ends_with("probe")
        });
        let c = s.finish(&spec, &devices);
        assert_eq!(
            c,
            KindCounts {
                expected: 2,
                received: 2,
                lost: 1,
                duplicates: 1,
                unexpected: 0
            }
        );
        s.on_summary(&doc("t/d", 10, &rs[..1], 10), 0, |_| false);
        let c = s.finish(&spec, &devices);
        assert_eq!(
            (c.lost, c.unexpected),
            (1, 1),
            "wrong figures: unexpected, and still lost"
        );
    }

    #[test]
    fn arrival_time_summaries_partition_the_readings() {
        let spec = RuleSpec {
            window_us: 10,
            ..Default::default()
        };
        let rs: Vec<Reading> = (0..5).map(|i| reading(20.0 + f64::from(i), 0)).collect();
        let devices = BTreeMap::from([("t/d".to_string(), rs.clone())]);
        let mut s = Summaries::default();
        s.on_summary(&doc("t/d", 0, &rs[..2], 10), 0, |_| false);
        s.on_summary(&doc("t/d", 10, &rs[2..5], 10), 0, |_| false);
        assert_eq!(s.covered("t/d"), 5);
        let c = s.finish(&spec, &devices);
        assert_eq!((c.expected, c.lost, c.unexpected), (2, 0, 0));
        // A summary that skips a reading does not fit, and the tail is then uncovered.
        let mut s = Summaries::default();
        s.on_summary(&doc("t/d", 0, &rs[1..3], 10), 0, |_| false);
        let c = s.finish(&spec, &devices);
        assert_eq!((c.lost, c.unexpected), (1, 1));
        assert!(s.first_problem.is_some());
    }
}
