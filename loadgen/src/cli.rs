//! Tooling: loadgen's command line (clap), validated in a second stage into a ready-to-use
//! [`Config`] — every bad value becomes one clear error before anything connects.

pub mod rule_flags;

use crate::condition_model::{device_threshold, Message};
use crate::message::{device_name, probe_reading, probe_temperature, TempSource, PROBE_DEVICE};
use crate::schedule::Schedule;
use crate::target::{AzureModule, PropertyCheck, Target};
use crate::wire::Version;
use clap::{Parser, ValueEnum};
use edgefilter_mqtt::broker_url::BrokerUrl;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Open-loop MQTT stress tester for edgefilter: publishes SimulatedTemperatureSensor
/// telemetry, knows every message's expected verdict, and counts what comes back on the alert
/// topics — lost, duplicated, unexpected — with end-to-end latency percentiles.
///
/// Exit status: 0 when nothing was lost and nothing unexpected arrived, 1 otherwise,
/// 2 for usage, connection or setup errors.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Args {
    /// Broker to publish to and read alerts from: mqtt://HOST[:PORT].
    #[arg(long, value_name = "URL")]
    pub broker: String,

    /// Aggregate send rate in messages per second, spread over the connections; 0 = as fast
    /// as possible (burst).
    #[arg(long, value_name = "MSG/S", default_value_t = 0.0)]
    pub rate: f64,

    /// Send for this long (e.g. 30s, 2m). With --rate this is rate × duration messages.
    /// Default when neither --duration nor --count is given: 10s with --rate, else --count 100000.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, conflicts_with = "count")]
    pub duration: Option<Duration>,

    /// Send exactly this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Number of simulated devices dev-0 .. dev-N-1 (topics <input-prefix>/dev-<i>; with
    /// --target azure they all feed the module's one input, each with its own sensor profile).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub devices: u32,

    /// Publisher TCP connections; each publishes its own subset of the devices.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: u32,

    /// QoS of the telemetry publishes.
    #[arg(long, value_name = "0|1", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,

    /// QoS of the alert subscription (QoS 0 like the peers' sink keeps the sink cheapest).
    #[arg(long, value_name = "0|1", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub sink_qos: u8,

    /// Instead of the sensor's temperature profile, make each message an alert with this
    /// probability (deterministic in --seed and the message's seq), its temperature well
    /// clear of the threshold (T+0.5..T+40 or T-20..T-0.5).
    #[arg(long, value_name = "R")]
    pub alert_ratio: Option<f64>,

    /// Make each message malformed with this probability (deterministic in --seed and the
    /// message's seq): the sensor body without its closing brace, which a filter must reject
    /// (`not_json`) and never forward. Counted as `malformed` in the summary.
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub malformed: f64,

    /// The filter's threshold in force when the run starts (edgefilter's default is 25).
    #[arg(long, value_name = "T", default_value_t = 25.0)]
    pub threshold: f64,

    /// Halfway through the run, pause, change the threshold to T2 through the twin, wait for
    /// the filter to report it, and judge the second half with T2 (not with --target azure:
    /// the module twin is edgeHub's).
    #[arg(long, value_name = "T2")]
    pub twin_step: Option<f64>,

    /// After a --twin-step run, set the threshold back to --threshold through the twin (by
    /// default the filter keeps T2, and the retained desired patch stays).
    #[arg(long, requires = "twin_step")]
    pub twin_restore: bool,

    /// Twin topic prefix: patches go to PREFIX/desired, reports are read from PREFIX/reported
    /// [default: edgefilter/twin] (--target mqtt only).
    #[arg(long, value_name = "PREFIX")]
    pub twin_topic: Option<String>,

    /// How long to wait for the filter to report an applied twin patch.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, default_value = "30s")]
    pub twin_timeout: Duration,

    /// Telemetry topic prefix: messages go to PREFIX/<device> [default: telemetry]
    /// (--target mqtt only).
    #[arg(long, value_name = "PREFIX")]
    pub input_prefix: Option<String>,

    /// Topic filter the alerts arrive on [default: alerts/#; with --target azure the module's
    /// events, devices/<device-id>/modules/<module-id>/messages/events/#].
    #[arg(long, value_name = "FILTER")]
    pub alert_filter: Option<String>,

    /// MQTT protocol version of loadgen's connections.
    #[arg(long, value_name = "3|5", default_value = "3", value_parser = ["3", "5"])]
    pub mqtt_version: String,

    /// What the filter runs against: a plain MQTT broker (telemetry/<device> in, alerts/# out),
    /// or IoT Edge topics: loadgen publishes as edgeHub delivers the sensor's messages to the
    /// module's input (devices/<dev>/modules/<mod>/inputs/<input>/<property bag>) and reads
    /// the module's events (devices/<dev>/modules/<mod>/messages/events/#), on a broker that
    /// stands in for edgeHub's routing.
    #[arg(long, value_enum, default_value_t = TargetKind::Mqtt)]
    pub target: TargetKind,

    /// --target azure: the IoT Edge device id [default: dev1].
    #[arg(long, value_name = "ID")]
    pub device_id: Option<String>,

    /// --target azure: the filter module's id [default: edgefilter].
    #[arg(long, value_name = "ID")]
    pub module_id: Option<String>,

    /// --target azure: the module input the telemetry is routed to [default: input1].
    #[arg(long, value_name = "NAME")]
    pub input_name: Option<String>,

    /// --target azure: the module output the alerts are sent to [default: output1].
    #[arg(long, value_name = "NAME")]
    pub output_name: Option<String>,

    /// --target azure: do not check the alerts' property bags ($.on=<output> first,
    /// MessageType=Alert, the message's sequenceNumber), e.g. when --alert-filter reads the
    /// input topics themselves (the broker path without a filter).
    #[arg(long)]
    pub no_property_check: bool,

    /// Write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// Write the latency percentile distribution (HdrHistogram .hgrm text, milliseconds) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,

    /// Write charts of the run to FILE: throughput and latency percentiles per second, and the
    /// latency distribution. `.svg` writes the charts, `.html` a page with the charts and the
    /// summary table.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// After the last message is acknowledged by the broker, stop waiting for alerts when
    /// none has arrived for this long.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,

    /// Give up when no readiness probe has come back through the filter within this long.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, default_value = "30s")]
    pub ready_timeout: Duration,

    /// Seed of the sensors and of the --alert-ratio draw.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Maximum unacknowledged QoS 1 messages per connection (at most 60000: packet ids are
    /// never reused while in flight). The default keeps a fast broker busy while keeping the
    /// socket's send buffer from filling, which would cost the writer a context switch per
    /// wake-up; raise it for brokers with a long acknowledgement round trip.
    #[arg(long, value_name = "N", default_value_t = 2_000)]
    pub inflight: u32,

    /// Time resolution traded for CPU: a paced publisher sleeps at least this long (and then
    /// sends everything that became due), and under load (more than one alert per tick) the
    /// alert subscriber reads at most once per tick. Latencies are accurate to about a tick.
    /// 0 = wake for every message (costly above a few thousand messages per second).
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, default_value = "500us")]
    pub tick: Duration,

    /// Maximum messages per socket write.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub batch: usize,

    /// Prefix of the MQTT client ids (default loadgen-<pid>).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    #[command(flatten)]
    pub rules: rule_flags::RuleArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    Mqtt,
    Azure,
}

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("--broker: {0}")]
    Broker(String),
    #[error("--broker {0}: TLS (mqtts://) is not supported by loadgen yet; use mqtt://")]
    Tls(String),
    #[error("{flag} is not supported with --target azure: {why}")]
    NotAzure {
        flag: &'static str,
        why: &'static str,
    },
    #[error("{0} applies only to --target azure")]
    AzureOnly(&'static str),
    #[error("{flag} must be {what}, got {value}")]
    Invalid {
        flag: &'static str,
        what: &'static str,
        value: String,
    },
    #[error("{0}")]
    Rules(&'static str),
    /// A `--condition` loadgen cannot model (the message names it).
    #[error("{0}")]
    Condition(String),
    /// A `--thresholds-file` that cannot be read or is not an object of numbers.
    #[error("--thresholds-file {path}: {why}")]
    ThresholdsFile { path: String, why: String },
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub broker: BrokerUrl,
    pub schedule: Schedule,
    pub rate: f64,
    pub devices: u32,
    pub connections: u32,
    pub qos: u8,
    pub sink_qos: u8,
    pub temp: TempSource,
    /// Probability that a message is malformed (`--malformed`).
    pub malformed: f64,
    pub threshold: f64,
    pub twin_step: Option<f64>,
    pub twin_restore: bool,
    pub twin_prefix: String,
    pub twin_timeout: Duration,
    pub target: Target,
    /// What each alert's topic must show (`--target azure` without `--no-property-check`).
    pub property_check: Option<PropertyCheck>,
    pub alert_filter: String,
    pub version: Version,
    pub summary: Option<PathBuf>,
    pub hgrm: Option<PathBuf>,
    /// `--report`: charts of the run, SVG or HTML by the file's extension.
    pub report: Option<PathBuf>,
    pub progress: bool,
    pub drain_timeout: Duration,
    pub ready_timeout: Duration,
    pub seed: u64,
    pub window: u32,
    pub batch: usize,
    pub tick: Duration,
    pub client_id: String,
    /// The filter's rules and where their outputs arrive.
    pub rules: rule_flags::RuleSetup,
}

fn invalid(flag: &'static str, what: &'static str, value: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        flag,
        what,
        value: value.to_string(),
    }
}

impl Args {
    /// The target and its topics; the flags of the other target are refused.
    fn target(&self) -> Result<Target, ConfigError> {
        let azure_flags = [
            ("--device-id", &self.device_id),
            ("--module-id", &self.module_id),
            ("--input-name", &self.input_name),
            ("--output-name", &self.output_name),
        ];
        match self.target {
            TargetKind::Mqtt => {
                if let Some((flag, _)) = azure_flags.iter().find(|(_, v)| v.is_some()) {
                    return Err(ConfigError::AzureOnly(flag));
                }
                if self.no_property_check {
                    return Err(ConfigError::AzureOnly("--no-property-check"));
                }
                Ok(Target::Mqtt {
                    input_prefix: self
                        .input_prefix
                        .clone()
                        .unwrap_or_else(|| "telemetry".to_string()),
                })
            }
            TargetKind::Azure => {
                const TWIN: &str = "the module twin is edgeHub's";
                for (flag, given, why) in [
                    ("--twin-step", self.twin_step.is_some(), TWIN),
                    ("--twin-topic", self.twin_topic.is_some(), TWIN),
                    (
                        "--input-prefix",
                        self.input_prefix.is_some(),
                        "the input topic is devices/<device-id>/modules/<module-id>/inputs/<input-name>",
                    ),
                ] {
                    if given {
                        return Err(ConfigError::NotAzure { flag, why });
                    }
                }
                for (flag, v) in azure_flags {
                    if v.as_deref() == Some("") {
                        return Err(invalid(flag, "a non-empty name", "''"));
                    }
                }
                let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
                Ok(Target::Azure(AzureModule {
                    device_id: or(&self.device_id, "dev1"),
                    module_id: or(&self.module_id, "edgefilter"),
                    input_name: or(&self.input_name, "input1"),
                    output_name: or(&self.output_name, "output1"),
                    batch_id: uuid::Uuid::new_v4().to_string(),
                }))
            }
        }
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let broker =
            BrokerUrl::parse(&self.broker).map_err(|e| ConfigError::Broker(e.to_string()))?;
        if broker.tls {
            return Err(ConfigError::Tls(self.broker));
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return Err(invalid(
                "--rate",
                "a number of messages per second ≥ 0",
                self.rate,
            ));
        }
        if self.count == Some(0) {
            return Err(invalid("--count", "at least 1", 0));
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err(invalid("--duration", "longer than 0", "0s"));
        }
        if self.devices == 0 {
            return Err(invalid("--devices", "at least 1", 0));
        }
        if self.connections == 0 || self.connections > self.devices {
            return Err(invalid(
                "--connections",
                "between 1 and --devices (each connection publishes its own devices)",
                self.connections,
            ));
        }
        if let Some(r) = self.alert_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(invalid("--alert-ratio", "between 0 and 1", r));
            }
        }
        if let Some(r) = &self.report {
            if crate::plot::Format::of(r).is_none() {
                return Err(invalid(
                    "--report",
                    "a file name ending in .svg or .html",
                    r.display(),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.malformed) {
            return Err(invalid("--malformed", "between 0 and 1", self.malformed));
        }
        if !self.threshold.is_finite() {
            return Err(invalid("--threshold", "a finite number", self.threshold));
        }
        if let Some(t) = self.twin_step {
            if !t.is_finite() {
                return Err(invalid("--twin-step", "a finite number", t));
            }
        }
        if self.inflight == 0 || self.inflight > crate::inflight::MAX_WINDOW {
            return Err(invalid("--inflight", "between 1 and 60000", self.inflight));
        }
        if self.tick > Duration::from_millis(100) {
            return Err(invalid(
                "--tick",
                "at most 100ms",
                humantime::format_duration(self.tick),
            ));
        }
        if self.batch == 0 {
            return Err(invalid("--batch", "at least 1", 0));
        }
        for (flag, v) in [
            ("--input-prefix", &self.input_prefix),
            ("--twin-topic", &self.twin_topic),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v.contains(['#', '+']) {
                    return Err(invalid(flag, "a topic prefix without wildcards", v));
                }
            }
        }
        if self.alert_filter.as_deref() == Some("") {
            return Err(invalid("--alert-filter", "a topic filter", "''"));
        }
        let target = self.target()?;
        let longest = target.input_topic(&device_name(self.devices - 1));
        if longest.max_len() > usize::from(u16::MAX) {
            return Err(invalid(
                "the input topic",
                "at most 65535 bytes",
                format!("{} bytes", longest.max_len()),
            ));
        }
        let duration = match (self.count, self.duration) {
            (None, None) if self.rate > 0.0 => Some(Duration::from_secs(10)),
            (_, d) => d,
        };
        let version = if self.mqtt_version == "5" {
            Version::V5
        } else {
            Version::V4
        };
        let alert_filter = self
            .alert_filter
            .unwrap_or_else(|| target.default_alert_filter());
        let rules = self.rules.validate(version, &target, &alert_filter)?;
        if let Some(c) = &rules.condition {
            // The readiness probe must come back through the filter.
            let t = probe_temperature(self.threshold, self.twin_step, &rules.thresholds);
            let probe_topic = target.input_topic(PROBE_DEVICE).topic(None);
            let reading = probe_reading(t);
            let probe = Message {
                reading: &reading,
                seq: None,
                sent_us: 0,
            };
            for th in [Some(self.threshold), self.twin_step].into_iter().flatten() {
                let th = device_threshold(&rules.thresholds, &probe_topic).unwrap_or(th);
                if !c.holds(&probe, th) {
                    return Err(ConfigError::Condition(format!(
                        "--condition does not hold for loadgen's readiness probe (machine.temperature {t}, machine.pressure {}, no seq): it would never come back",
                        reading.machine_pressure
                    )));
                }
            }
        }
        let schedule = Schedule::new(
            self.rate,
            self.count,
            duration.map(|d| d.as_micros() as u64),
            self.twin_step.is_some(),
        );
        Ok(Config {
            broker,
            schedule,
            rate: self.rate,
            devices: self.devices,
            connections: self.connections,
            qos: self.qos,
            sink_qos: self.sink_qos,
            temp: self
                .alert_ratio
                .map_or(TempSource::Profile, TempSource::Ratio),
            malformed: self.malformed,
            threshold: self.threshold,
            twin_step: self.twin_step,
            twin_restore: self.twin_restore,
            twin_prefix: self
                .twin_topic
                .unwrap_or_else(|| "edgefilter/twin".to_string()),
            twin_timeout: self.twin_timeout,
            alert_filter,
            property_check: target.property_check().filter(|_| !self.no_property_check),
            target,
            version,
            summary: self.summary,
            hgrm: self.hgrm,
            report: self.report,
            progress: !self.no_progress,
            drain_timeout: self.drain_timeout,
            ready_timeout: self.ready_timeout,
            seed: self.seed,
            window: self.inflight,
            batch: self.batch,
            tick: self.tick,
            client_id: self
                .client_id
                .unwrap_or_else(|| format!("loadgen-{}", std::process::id())),
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{PausePoint, Stop};

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut v = vec!["loadgen", "--broker", "mqtt://127.0.0.1:1883"];
        v.extend_from_slice(args);
        Args::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.schedule.stop, Stop::Count(100_000));
        assert_eq!(c.schedule.period_us, None);
        assert_eq!((c.devices, c.connections, c.qos, c.sink_qos), (10, 1, 1, 0));
        assert_eq!(c.threshold, 25.0);
        assert_eq!(c.temp, TempSource::Profile);
        assert_eq!(c.version, Version::V4);
        assert_eq!(c.alert_filter, "alerts/#");
        assert_eq!(c.target.input_topic("dev-1").topic(None), "telemetry/dev-1");
        assert_eq!(c.twin_prefix, "edgefilter/twin");
        assert_eq!(c.drain_timeout, Duration::from_secs(10));
        assert_eq!((c.window, c.batch), (2_000, 256));
        assert_eq!(c.tick, Duration::from_micros(500));
        // A rate without a length runs 10 s.
        let c = parse(&["--rate", "5000"]).unwrap();
        assert_eq!(c.schedule.stop, Stop::Count(50_000));
    }

    #[test]
    fn full_command_line() {
        let c = parse(&[
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--devices",
            "8",
            "--connections",
            "4",
            "--qos",
            "0",
            "--alert-ratio",
            "0.25",
            "--threshold",
            "30",
            "--twin-step",
            "40",
            "--twin-restore",
            "--mqtt-version",
            "5",
            "--input-prefix",
            "in",
            "--alert-filter",
            "out/#",
            "--seed",
            "9",
            "--no-progress",
            "--sink-qos",
            "1",
        ])
        .unwrap();
        assert_eq!(c.schedule.stop, Stop::Count(6000));
        assert_eq!(c.schedule.pause, Some(PausePoint::Seq(3000)));
        assert_eq!((c.devices, c.connections, c.qos, c.sink_qos), (8, 4, 0, 1));
        assert_eq!(c.temp, TempSource::Ratio(0.25));
        assert_eq!(
            (c.threshold, c.twin_step, c.twin_restore),
            (30.0, Some(40.0), true)
        );
        assert_eq!(c.version, Version::V5);
        assert_eq!(c.target.input_topic("dev-0").topic(Some(3)), "in/dev-0");
        assert!(!c.progress);
        let c = parse(&["--duration", "2s", "--twin-step", "30"]).unwrap();
        assert_eq!(c.schedule.stop, Stop::Elapsed(2_000_000));
        assert_eq!(c.schedule.pause, Some(PausePoint::Elapsed(1_000_000)));
    }

    #[test]
    fn azure_target() {
        let c = parse(&["--target", "azure"]).unwrap();
        let Target::Azure(m) = &c.target else {
            panic!("{:?}", c.target)
        };
        assert_eq!(
            (
                m.device_id.as_str(),
                m.module_id.as_str(),
                m.input_name.as_str(),
                m.output_name.as_str()
            ),
            ("dev1", "edgefilter", "input1", "output1")
        );
        assert_eq!(m.batch_id.len(), 36, "a GUID: {}", m.batch_id);
        assert_eq!(
            c.alert_filter,
            "devices/dev1/modules/edgefilter/messages/events/#"
        );
        assert!(c.property_check.is_some());
        let c = parse(&["--target", "azure", "--no-property-check"]).unwrap();
        assert!(c.property_check.is_none());
        assert!(c.target.input_topic("dev-0").topic(Some(9)).starts_with(
            "devices/dev1/modules/edgefilter/inputs/input1/sequenceNumber=9&batchId="
        ));
        let c = parse(&[
            "--target",
            "azure",
            "--device-id",
            "gw",
            "--module-id",
            "filter",
            "--input-name",
            "in",
            "--output-name",
            "out",
            "--alert-filter",
            "devices/gw/modules/filter/messages/#",
        ])
        .unwrap();
        assert!(c
            .target
            .input_topic("dev-0")
            .topic(None)
            .starts_with("devices/gw/modules/filter/inputs/in/batchId="));
        assert_eq!(c.alert_filter, "devices/gw/modules/filter/messages/#");
        // One GUID per run.
        let other = parse(&["--target", "azure"]).unwrap();
        assert_ne!(other.target, parse(&["--target", "azure"]).unwrap().target);
    }

    #[test]
    fn one_clear_error_per_mistake() {
        let err = |a: &[&str]| parse(a).unwrap_err();
        assert!(err(&["--device-id", "d"]).contains("--device-id applies only to --target azure"));
        assert!(err(&["--output-name", "o"]).contains("--output-name"));
        assert!(err(&["--no-property-check"]).contains("--no-property-check applies only"));
        assert_eq!(
            err(&["--target", "azure", "--twin-step", "30"]),
            "--twin-step is not supported with --target azure: the module twin is edgeHub's"
        );
        assert!(err(&["--target", "azure", "--twin-topic", "t"]).contains("--twin-topic"));
        assert!(err(&["--target", "azure", "--input-prefix", "t"]).contains("--input-prefix"));
        assert!(err(&["--target", "azure", "--module-id", ""]).contains("--module-id"));
        let long = "x".repeat(70_000);
        assert!(err(&["--input-prefix", &long]).contains("at most 65535 bytes"));
        assert!(err(&["--count", "0"]).contains("--count"));
        assert!(err(&["--count", "5", "--duration", "1s"]).contains("cannot be used with"));
        assert!(err(&["--connections", "11"]).contains("--connections"));
        assert!(err(&["--alert-ratio", "1.5"]).contains("--alert-ratio"));
        assert!(err(&["--qos", "2"]).contains("--qos"));
        assert!(err(&["--mqtt-version", "4"]).contains("--mqtt-version"));
        assert!(err(&["--twin-step", "NaN"]).contains("--twin-step"));
        assert!(err(&["--twin-restore"]).contains("--twin-step"));
        assert!(err(&["--inflight", "65535"]).contains("--inflight"));
        assert!(err(&["--input-prefix", "a/#"]).contains("--input-prefix"));
        assert!(err(&["--duration", "soon"]).contains("--duration"));
        let e = Args::try_parse_from(["loadgen", "--broker", "mqtts://h"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(matches!(e, ConfigError::Tls(_)));
        let e = Args::try_parse_from(["loadgen", "--broker", "http://h"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(matches!(e, ConfigError::Broker(_)));
    }
}
