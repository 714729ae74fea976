//! Tooling, the end of loadgen: turns the counts, timings and latency histogram into the
//! human table (stdout), the `--summary` JSON and the `--hgrm` percentile distribution
//! (HdrHistogram's `outputPercentileDistribution` text format). Pure formatting.

use crate::summaries::KindCounts;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write;

/// End-to-end latency percentiles in µs (0 when no alert came back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The run's result. The first ten keys are the documented contract; the rest describe the
/// run (settings, timings, CPU) and help diagnose a failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub sent: u64,
    pub expected_alerts: u64,
    pub received_alerts: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    /// Messages per second over the send window (start → broker acknowledged the last
    /// message), the twin pause excluded.
    pub send_rate: f64,
    /// Alerts per second over start → last alert received, the twin pause excluded.
    pub alert_rate: f64,
    pub latency_us: Latency,
    /// Messages processed end to end per second: sent / (start → the later of the last
    /// acknowledgement and the last alert), the twin pause excluded.
    pub throughput: f64,
    pub latency_samples: u64,
    pub qos: u8,
    pub sink_qos: u8,
    pub mqtt_version: u8,
    /// Requested aggregate rate (0 = burst).
    pub rate: f64,
    pub connections: u32,
    pub devices: u32,
    pub threshold: f64,
    pub twin_step: Option<f64>,
    pub twin_version: Option<u64>,
    pub twin_pause_s: f64,
    pub send_s: f64,
    /// Start → end of the drain.
    pub duration_s: f64,
    pub drain_timed_out: bool,
    /// Publishes the broker refused (MQTT 5 PUBACK reason ≥ 0x80).
    pub refused: u64,
    /// Alerts for messages of an earlier run (`sentUs` before this run's start), e.g. from a
    /// filter still draining a backlog; not counted in any other figure.
    pub stale: u64,
    /// `mqtt` or `azure` (`--target`).
    pub target: String,
    /// Whether alert properties were checked (`--target azure` without `--no-property-check`).
    pub properties_checked: bool,
    /// `--target azure`: alerts whose topic lacks the expected properties (`$.on=<output>`
    /// first, `MessageType=Alert`, the message's `sequenceNumber`); always 0 for `mqtt`.
    pub bad_properties: u64,
    /// Of `sent`, messages with a malformed body (`--malformed`): the filter must reject them.
    pub malformed: u64,
    /// Readiness probes published before the clock started (alert-worthy; not in `sent`).
    pub probes: u64,
    /// The topic of the first such alert.
    pub first_bad_properties: Option<String>,
    /// CPU of the whole loadgen process from start to the end of the drain.
    pub cpu_s: f64,
    pub cpu_us_per_msg: f64,
    pub cpu_publishers_s: f64,
    pub cpu_sink_s: f64,
    /// How late loadgen itself wrote paced messages (µs after their intended send time; all
    /// zero in burst mode). This is part of every measured latency, so it bounds loadgen's
    /// own contribution on the sending side.
    pub send_lag_us: Latency,
    pub first_lost: Vec<u64>,
    pub first_unexpected: Vec<u64>,
    /// Ctrl-C ended the sending early.
    pub interrupted: bool,
    /// The filter's rules as loadgen was told them (`every`: the seed's).
    pub rules: String,
    /// Clearing messages (edge mode, `--clear-messages`): expected, received, lost, …
    pub clears: KindCounts,
    /// Window summaries (`--summary-window`), see `summaries` for how they are counted.
    pub summaries: KindCounts,
    /// The first summary that did not fit, or the first device with readings in none.
    pub first_summary_problem: Option<String>,
    /// Readings above the threshold: what the seed would have published as alerts.
    pub seed_alerts: u64,
    /// Everything that reached the alert consumer: alerts, clears and summaries received.
    pub cloud_messages: u64,
    /// `seed_alerts / cloud_messages`: how many times fewer cloud-bound messages than the
    /// seed's every-reading alerts.
    pub reduction: f64,
}

impl Summary {
    /// Exit status 0 only for a clean run.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.unexpected == 0
            && self.bad_properties == 0
            && self.clears.lost == 0
            && self.clears.unexpected == 0
            && self.summaries.lost == 0
            && self.summaries.unexpected == 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the summary is plain data") + "\n"
    }

    /// The human end table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rate = if self.rate > 0.0 {
            format!("{} msg/s", thousands(self.rate.round() as u64))
        } else {
            "burst".to_string()
        };
        let _ = writeln!(
            s,
            "loadgen: {}QoS {} (alerts QoS {}), MQTT {}, {} connection(s), {} device(s), rate {rate}, threshold {}{}",
            if self.target == "azure" { "IoT Edge topics, " } else { "" },
            self.qos,
            self.sink_qos,
            if self.mqtt_version == 5 { "5" } else { "3.1.1" },
            self.connections,
            self.devices,
            self.threshold,
            self.twin_step
                .map_or_else(String::new, |t| format!(" → {t} (twin $version {})", self.twin_version.unwrap_or(0))),
        );
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<17}{v}");
        };
        row(
            &mut s,
            "sent",
            format!(
                "{:>12}   {} msg/s over {:.3} s",
                thousands(self.sent),
                thousands(self.send_rate.round() as u64),
                self.send_s
            ),
        );
        if self.malformed > 0 {
            row(
                &mut s,
                "malformed",
                format!(
                    "{:>12}   (of sent; to be rejected, never alerts)",
                    thousands(self.malformed)
                ),
            );
        }
        row(
            &mut s,
            "expected alerts",
            format!("{:>12}", thousands(self.expected_alerts)),
        );
        row(
            &mut s,
            "received alerts",
            format!(
                "{:>12}   {} alerts/s",
                thousands(self.received_alerts),
                thousands(self.alert_rate.round() as u64)
            ),
        );
        let mark = |n: u64| if n == 0 { "" } else { "   <-- FAIL" };
        row(
            &mut s,
            "lost",
            format!("{:>12}{}", thousands(self.lost), mark(self.lost)),
        );
        row(
            &mut s,
            "duplicates",
            format!("{:>12}", thousands(self.duplicates)),
        );
        row(
            &mut s,
            "unexpected",
            format!(
                "{:>12}{}",
                thousands(self.unexpected),
                mark(self.unexpected)
            ),
        );
        if self.properties_checked {
            row(
                &mut s,
                "bad properties",
                format!(
                    "{:>12}{}",
                    thousands(self.bad_properties),
                    mark(self.bad_properties)
                ),
            );
        } else if self.target == "azure" {
            row(&mut s, "bad properties", "not checked".into());
        }
        if let Some(topic) = &self.first_bad_properties {
            row(&mut s, "first bad topic", topic.clone());
        }
        if self.stale > 0 {
            row(
                &mut s,
                "stale alerts",
                format!(
                    "{:>12}   (of an earlier run; not counted)",
                    thousands(self.stale)
                ),
            );
        }
        if self.refused > 0 {
            row(
                &mut s,
                "refused by broker",
                format!("{:>12}", thousands(self.refused)),
            );
        }
        row(
            &mut s,
            "throughput",
            format!(
                "{:>12} msg/s end to end",
                thousands(self.throughput.round() as u64)
            ),
        );
        let l = &self.latency_us;
        row(
            &mut s,
            "latency",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                human_us(l.p50),
                human_us(l.p90),
                human_us(l.p99),
                human_us(l.p999),
                human_us(l.max),
                thousands(self.latency_samples)
            ),
        );
        if self.rules != "every" && !self.rules.is_empty() {
            row(&mut s, "rules", self.rules.clone());
            for (name, k) in [("clears", &self.clears), ("summaries", &self.summaries)] {
                if k.expected + k.received == 0 {
                    continue;
                }
                row(
                    &mut s,
                    name,
                    format!(
                        "{:>12}   expected {}, lost {}{}, duplicates {}, unexpected {}{}",
                        thousands(k.received),
                        thousands(k.expected),
                        thousands(k.lost),
                        mark(k.lost),
                        thousands(k.duplicates),
                        thousands(k.unexpected),
                        mark(k.unexpected)
                    ),
                );
            }
            if let Some(p) = &self.first_summary_problem {
                row(&mut s, "first summary issue", p.clone());
            }
            row(
                &mut s,
                "cloud messages",
                format!(
                    "{:>12}   alerts + clears + summaries; the seed's every-reading alerts: {} ({}x fewer)",
                    thousands(self.cloud_messages),
                    thousands(self.seed_alerts),
                    self.reduction
                ),
            );
        }
        if self.rate > 0.0 {
            let g = &self.send_lag_us;
            row(
                &mut s,
                "send lag",
                format!(
                    "p50 {}  p99 {}  max {}  (loadgen's own lateness, included in the latency)",
                    human_us(g.p50),
                    human_us(g.p99),
                    human_us(g.max)
                ),
            );
        }
        row(
            &mut s,
            "loadgen cpu",
            format!(
                "{:.3} s = {:.2} µs/msg (publishers {:.3} s, sink {:.3} s)",
                self.cpu_s, self.cpu_us_per_msg, self.cpu_publishers_s, self.cpu_sink_s
            ),
        );
        if self.drain_timed_out {
            row(
                &mut s,
                "drain",
                "ended on --drain-timeout (no alert for that long)".into(),
            );
        }
        if !self.first_lost.is_empty() {
            row(&mut s, "first lost seqs", format!("{:?}", self.first_lost));
        }
        if !self.first_unexpected.is_empty() {
            row(
                &mut s,
                "first unexpected",
                format!("{:?}", self.first_unexpected),
            );
        }
        if self.interrupted {
            row(&mut s, "note", "interrupted: sending stopped early".into());
        }
        row(
            &mut s,
            "result",
            if self.passed() {
                "PASS".into()
            } else {
                "FAIL".into()
            },
        );
        s
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::with_capacity(d.len() + d.len() / 3);
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// µs below 10 ms, ms with one decimal above.
pub fn human_us(us: u64) -> String {
    if us < 10_000 {
        format!("{us} µs")
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

/// The histogram (recorded in µs) as HdrHistogram's `outputPercentileDistribution` prints it
/// with 5 ticks per half distance and values scaled to milliseconds, preceded by one `#`
/// comment line naming the unit.
pub fn hgrm(h: &Histogram<u64>) -> String {
    const SCALE: f64 = 1000.0; // µs → ms
    let p = usize::from(h.sigfig());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# loadgen end-to-end latency; Value in milliseconds (recorded in microseconds)"
    );
    let _ = write!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.p$} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.p$} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let _ = writeln!(s, "#[Mean    = {mean:12.p$}, StdDeviation   = {sd:12.p$}]");
    let _ = writeln!(
        s,
        "#[Max     = {max:12.p$}, Total count    = {:12}]",
        h.len()
    );
    let sub_buckets = (2.0 * 10f64.powi(h.sigfig().into())).log2().ceil().exp2() as u64;
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        h.buckets()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::new_latency_histogram;

    #[test]
    fn summary_json_has_the_contract_keys() {
        let s = Summary {
            sent: 10,
            expected_alerts: 3,
            received_alerts: 3,
            send_rate: 1000.0,
            alert_rate: 300.0,
            latency_us: Latency {
                p50: 1,
                p90: 2,
                p99: 3,
                p999: 4,
                max: 5,
            },
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        for k in [
            "sent",
            "expected_alerts",
            "received_alerts",
            "lost",
            "duplicates",
            "unexpected",
            "send_rate",
            "alert_rate",
        ] {
            assert!(v[k].is_number(), "{k}");
        }
        assert_eq!(v["sent"], 10);
        assert_eq!(v["send_rate"], 1000.0);
        assert_eq!(
            v["latency_us"],
            serde_json::json!({"p50": 1, "p90": 2, "p99": 3, "p999": 4, "max": 5})
        );
        assert!(s.passed());
        assert!(!Summary {
            lost: 1,
            ..s.clone()
        }
        .passed());
        assert!(!Summary {
            unexpected: 1,
            ..s.clone()
        }
        .passed());
        assert!(!Summary {
            bad_properties: 1,
            ..s.clone()
        }
        .passed());
        assert!(
            Summary { duplicates: 1, ..s }.passed(),
            "duplicates are reported, not failed"
        );
    }

    #[test]
    fn table_names_every_figure() {
        let s = Summary {
            sent: 1_234_567,
            rate: 1000.0,
            send_lag_us: Latency {
                p50: 70,
                ..Default::default()
            },
            lost: 2,
            first_lost: vec![5, 9],
            latency_us: Latency {
                p50: 850,
                p90: 12_345,
                ..Default::default()
            },
            ..Default::default()
        };
        let t = s.table();
        for want in [
            "1,234,567",
            "lost",
            "<-- FAIL",
            "850 µs",
            "12.3 ms",
            "[5, 9]",
            "FAIL",
        ] {
            assert!(t.contains(want), "{want} in\n{t}");
        }
        assert!(
            !t.contains("malformed"),
            "no malformed row without --malformed: {t}"
        );
        let t = Summary {
            malformed: 1234,
            ..Default::default()
        }
        .table();
        for want in ["malformed", "1,234"] {
            assert!(t.contains(want), "{want} in\n{t}");
        }
        assert!(!t.contains("bad properties"), "mqtt target: {t}");
        let t = Summary {
            target: "azure".into(),
            properties_checked: true,
            bad_properties: 3,
            first_bad_properties: Some("devices/d/modules/m/messages/events/x=1".into()),
            ..Default::default()
        }
        .table();
        for want in [
            "IoT Edge topics",
            "bad properties              3   <-- FAIL",
            "first bad topic  devices/d/modules/m/messages/events/x=1",
        ] {
            assert!(t.contains(want), "{want} in\n{t}");
        }
    }

    #[test]
    fn latency_percentiles() {
        let mut h = new_latency_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(
            (l.p50, l.p90, l.p99, l.p999, l.max),
            (500, 900, 990, 999, 1000)
        );
        assert_eq!(
            Latency::from_histogram(&new_latency_histogram()),
            Latency::default()
        );
    }

    #[test]
    fn hgrm_is_hdrhistogram_text() {
        let mut h = new_latency_histogram();
        h.record_n(1000, 3).unwrap(); // 1 ms
        h.record(3000).unwrap(); // 3 ms
        let out = hgrm(&h);
        let want = "\
# loadgen end-to-end latency; Value in milliseconds (recorded in microseconds)
       Value     Percentile TotalCount 1/(1-Percentile)

       1.000 0.000000000000          3           1.00
       1.000 0.100000000000          3           1.11
       1.000 0.200000000000          3           1.25
       1.000 0.300000000000          3           1.43
       1.000 0.400000000000          3           1.67
       1.000 0.500000000000          3           2.00
       1.000 0.550000000000          3           2.22
       1.000 0.600000000000          3           2.50
       1.000 0.650000000000          3           2.86
       1.000 0.700000000000          3           3.33
       3.001 0.750000000000          4           4.00
       3.001 1.000000000000          4
#[Mean    =        1.500, StdDeviation   =        0.866]
#[Max     =        3.001, Total count    =            4]
#[Buckets =           22, SubBuckets     =         2048]
";
        assert_eq!(out, want);
    }

    #[test]
    fn human_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(139_983_123), "139,983,123");
        assert_eq!(human_us(9_999), "9999 µs");
        assert_eq!(human_us(10_000), "10.0 ms");
    }
}
