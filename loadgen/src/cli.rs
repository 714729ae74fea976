//! Tooling: loadgen's command line (clap), validated in a second stage into a ready-to-use
//! [`Config`] — every bad value becomes one clear error before anything connects.

use crate::message::TempSource;
use crate::schedule::Schedule;
use crate::wire::MqttVersion;
use clap::{Parser, ValueEnum};
use edgefilter::io::broker_url::BrokerUrl;
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

    /// Number of simulated devices (topics <input-prefix>/dev-0 .. dev-N-1).
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

    /// The filter's threshold in force when the run starts (edgefilter's default is 25).
    #[arg(long, value_name = "T", default_value_t = 25.0)]
    pub threshold: f64,

    /// Halfway through the run, pause, change the threshold to T2 through the twin, wait for
    /// the filter to report it, and judge the second half with T2.
    #[arg(long, value_name = "T2")]
    pub twin_step: Option<f64>,

    /// After a --twin-step run, set the threshold back to --threshold through the twin (by
    /// default the filter keeps T2, and the retained desired patch stays).
    #[arg(long, requires = "twin_step")]
    pub twin_restore: bool,

    /// Twin topic prefix: patches go to PREFIX/desired, reports are read from PREFIX/reported.
    #[arg(long, value_name = "PREFIX", default_value = "edgefilter/twin")]
    pub twin_topic: String,

    /// How long to wait for the filter to report an applied twin patch.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, default_value = "30s")]
    pub twin_timeout: Duration,

    /// Telemetry topic prefix: messages go to PREFIX/<device>.
    #[arg(long, value_name = "PREFIX", default_value = "telemetry")]
    pub input_prefix: String,

    /// Topic filter the alerts arrive on.
    #[arg(long, value_name = "FILTER", default_value = "alerts/#")]
    pub alert_filter: String,

    /// MQTT protocol version of loadgen's connections.
    #[arg(long, value_name = "3|5", default_value = "3", value_parser = ["3", "5"])]
    pub mqtt_version: String,

    /// What the filter runs against: a plain MQTT broker, or (reserved) an IoT Edge hub.
    #[arg(long, value_enum, default_value_t = TargetKind::Mqtt)]
    pub target: TargetKind,

    /// Write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// Write the latency percentile distribution (HdrHistogram .hgrm text, milliseconds) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    Mqtt,
    Azure,
}

/// Topic layout of the system under test. Only topics (and, later, payload properties)
/// depend on the target; everything else in loadgen is target-agnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Plain MQTT: telemetry on `<prefix>/<device>`.
    Mqtt { input_prefix: String },
}

impl Target {
    pub fn input_topic(&self, device: &str) -> String {
        match self {
            Target::Mqtt { input_prefix } => format!("{input_prefix}/{device}"),
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("--broker: {0}")]
    Broker(String),
    #[error("--broker {0}: TLS (mqtts://) is not supported by loadgen yet; use mqtt://")]
    Tls(String),
    #[error("--target azure is not yet supported (it needs edgefilter's Azure topic/property-bag code); use --target mqtt")]
    Azure,
    #[error("{flag} must be {what}, got {value}")]
    Invalid {
        flag: &'static str,
        what: &'static str,
        value: String,
    },
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
    pub threshold: f64,
    pub twin_step: Option<f64>,
    pub twin_restore: bool,
    pub twin_prefix: String,
    pub twin_timeout: Duration,
    pub target: Target,
    pub alert_filter: String,
    pub version: MqttVersion,
    pub summary: Option<PathBuf>,
    pub hgrm: Option<PathBuf>,
    pub progress: bool,
    pub drain_timeout: Duration,
    pub ready_timeout: Duration,
    pub seed: u64,
    pub window: u32,
    pub batch: usize,
    pub tick: Duration,
    pub client_id: String,
}

fn invalid(flag: &'static str, what: &'static str, value: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        flag,
        what,
        value: value.to_string(),
    }
}

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let broker =
            BrokerUrl::parse(&self.broker).map_err(|e| ConfigError::Broker(e.to_string()))?;
        if broker.tls {
            return Err(ConfigError::Tls(self.broker));
        }
        if self.target == TargetKind::Azure {
            return Err(ConfigError::Azure);
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
            if v.is_empty() || v.contains(['#', '+']) {
                return Err(invalid(flag, "a topic prefix without wildcards", v));
            }
        }
        if self.alert_filter.is_empty() {
            return Err(invalid("--alert-filter", "a topic filter", "''"));
        }
        let duration = match (self.count, self.duration) {
            (None, None) if self.rate > 0.0 => Some(Duration::from_secs(10)),
            (_, d) => d,
        };
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
            threshold: self.threshold,
            twin_step: self.twin_step,
            twin_restore: self.twin_restore,
            twin_prefix: self.twin_topic,
            twin_timeout: self.twin_timeout,
            target: Target::Mqtt {
                input_prefix: self.input_prefix,
            },
            alert_filter: self.alert_filter,
            version: if self.mqtt_version == "5" {
                MqttVersion::V5
            } else {
                MqttVersion::V311
            },
            summary: self.summary,
            hgrm: self.hgrm,
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
        assert_eq!(c.version, MqttVersion::V311);
        assert_eq!(c.alert_filter, "alerts/#");
        assert_eq!(c.target.input_topic("dev-1"), "telemetry/dev-1");
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
        assert_eq!(c.version, MqttVersion::V5);
        assert_eq!(c.target.input_topic("dev-0"), "in/dev-0");
        assert!(!c.progress);
        let c = parse(&["--duration", "2s", "--twin-step", "30"]).unwrap();
        assert_eq!(c.schedule.stop, Stop::Elapsed(2_000_000));
        assert_eq!(c.schedule.pause, Some(PausePoint::Elapsed(1_000_000)));
    }

    #[test]
    fn one_clear_error_per_mistake() {
        let err = |a: &[&str]| parse(a).unwrap_err();
        assert!(err(&["--target", "azure"]).contains("not yet supported"));
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
