//! The settings of the filter, at the bottom of the crate: plain values that everything above
//! may read — `io`, `flow`, `logging`, `metrics` — and that import nothing above them (the
//! MQTT pieces and the pipeline's value types only). The command line (`cli`) builds them:
//! flags, environment, `--config` file, validation. [`Settings`] is the validated
//! configuration of `edgefilter run`, which `plan` resolves and `run` wires; [`Target`] is
//! where the filter's connections go; [`defaults`] are the flags' defaults, in one place.

mod alert_rules;
mod broker;
mod delivery;
mod passwd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::mqtt::broker_url::BrokerUrl;
pub use crate::mqtt::codec::Version;
use crate::mqtt::topic;
use crate::pipeline::verdict::FieldPath;
pub use alert_rules::{default_v4_clear_template, RuleConfig, SUMMARY_OUTPUT, SUMMARY_TOPIC};
pub use broker::{BrokerOptions, Cluster};
pub use delivery::{AckPolicyArg, Delivery, OutboxDurability};
pub use passwd::{PasswdError, Passwords};

/// TLS material named on the command line (read when connecting).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// `edgefilter demo`: how long, how fast, how many sensors.
#[derive(Debug, Clone, Copy)]
pub struct Demo {
    pub duration: Duration,
    pub rate: u32,
    pub devices: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BatchFormat {
    /// One PUBLISH per alert, its body the original message (batched only into one socket write).
    Single,
    /// One PUBLISH per batch and alert topic, its body a JSON array of the original messages.
    Array,
}

/// Which connection the filter's own publishes (alerts, dead letters, twin reports) take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublisherConnection {
    /// A second connection (client id `<--client-id>-out`) at `--qos 1`: the input connection
    /// can then stop reading when `--max-pending` inputs are held (TCP backpressure on the
    /// broker) without holding up the PUBACKs those inputs wait for. (At `--qos 0` nothing
    /// waits for a PUBACK: one connection.)
    Separate,
    /// The input connection: one client id, but under overload reading goes on while those
    /// PUBACKs are due, so held input is bounded only by the broker's respect of our Receive
    /// Maximum (mosquitto 2.0.11 overshoots it). Always so under IoT Edge.
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
    /// IoT Edge's `<6> 2026-11-26 07:00:00.000 +00:00 [INF] - text` form.
    Edge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AzureEdge {
    /// Azure IoT Edge mode when the runtime's variables or EdgeHubConnectionString are present.
    Auto,
    On,
    Off,
}

/// The defaults of `edgefilter run`'s flags, in one place: clap shows and applies them, and
/// [`Settings::defaults`] builds the same settings without parsing anything (the demo).
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:1883";
    pub const INPUT_TOPIC: &str = "telemetry/#";
    pub const ALERT_TOPIC: &str = "alerts/{topic}";
    pub const FIELD: &str = "machine.temperature";
    pub const THRESHOLD: f64 = 25.0;
    pub const TWIN_TOPIC: &str = "edgefilter/twin";
    pub const QOS: u8 = 1;
    pub const INLINE_BATCH: usize = 32;
    pub const BATCH_MAX: usize = 256;
    pub const BATCH_LINGER: &str = "0ms";
    pub const DEAD_LETTER_TOPIC: &str = "edgefilter/deadletter";
    pub const CLIENT_ID: &str = "edgefilter";
    pub const METRICS_ADDR: &str = "127.0.0.1:9600";
    pub const MAX_PAYLOAD: usize = 262_144;
    pub const DRAIN_TIMEOUT: &str = "10s";
    pub const STATS_INTERVAL: &str = "10s";
    pub const INPUT_NAME: &str = "input1";
    pub const OUTPUT_NAME: &str = "output1";
    pub const AZURE_TOKEN_TTL: &str = "1h";
    pub const MAX_PENDING: usize = 8192;
    pub const MAX_INFLIGHT: u16 = 4096;
    pub const KEEP_ALIVE: &str = "30s";
    pub const BROKER_QUEUE: usize = 10_000;
    pub const BROKER_INFLIGHT: u16 = 1024;
    pub const BROKER_STALL_TIMEOUT: &str = "10s";
    /// The IoT Edge deployment mounts a volume at /var/lib/edgefilter (deployment/); the
    /// systemd unit has it as its StateDirectory.
    pub const OUTBOX_DIR: &str = "/var/lib/edgefilter/outbox";
    pub const TWIN_TIMEOUT: &str = "10s";
}

/// Where the filter's MQTT connection goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start the broker in-process (every MQTT version on `v4`, and on `v5` when given) and
    /// connect to it.
    Embedded {
        v4: SocketAddr,
        v5: Option<SocketAddr>,
    },
    /// A broker someone else runs.
    External(BrokerUrl),
}

/// The validated configuration of `edgefilter run`. (`Debug` shows the password as `***`.)
#[derive(Clone)]
pub struct Settings {
    pub target: Target,
    pub input_topics: Vec<String>,
    pub alert_topic: topic::Template,
    pub field: FieldPath,
    pub threshold: f64,
    pub twin_topic: String,
    pub qos: u8,
    pub workers: usize,
    pub inline_batch: usize,
    pub batch_max: usize,
    pub batch_linger: Duration,
    pub batch_format: BatchFormat,
    pub publisher_connection: PublisherConnection,
    pub dead_letter_topic: Option<String>,
    pub client_id: String,
    pub share_group: Option<String>,
    pub tls: TlsFiles,
    pub username: Option<String>,
    pub password: Option<String>,
    pub mqtt_version: Version,
    pub metrics_addr: Option<SocketAddr>,
    pub max_payload: usize,
    pub drain_timeout: Duration,
    pub log_format: LogFormat,
    pub stats_interval: Duration,
    pub azure_edge: AzureEdge,
    pub azure_token_ttl: Duration,
    pub input_name: String,
    pub output_name: String,
    pub max_pending: usize,
    pub max_inflight: u16,
    pub keep_alive: Duration,
    pub broker: BrokerOptions,
    pub rules: RuleConfig,
    pub delivery: Delivery,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("target", &self.target)
            .field("input_topics", &self.input_topics)
            .field("alert_topic", &self.alert_topic)
            .field("field", &self.field)
            .field("threshold", &self.threshold)
            .field("twin_topic", &self.twin_topic)
            .field("qos", &self.qos)
            .field("workers", &self.workers)
            .field("inline_batch", &self.inline_batch)
            .field("batch_max", &self.batch_max)
            .field("batch_linger", &self.batch_linger)
            .field("batch_format", &self.batch_format)
            .field("publisher_connection", &self.publisher_connection)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("client_id", &self.client_id)
            .field("share_group", &self.share_group)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("mqtt_version", &self.mqtt_version)
            .field("metrics_addr", &self.metrics_addr)
            .field("max_payload", &self.max_payload)
            .field("drain_timeout", &self.drain_timeout)
            .field("log_format", &self.log_format)
            .field("stats_interval", &self.stats_interval)
            .field("azure_edge", &self.azure_edge)
            .field("azure_token_ttl", &self.azure_token_ttl)
            .field("input_name", &self.input_name)
            .field("output_name", &self.output_name)
            .field("max_pending", &self.max_pending)
            .field("max_inflight", &self.max_inflight)
            .field("keep_alive", &self.keep_alive)
            .field("rules", &self.rules)
            .field("delivery", &self.delivery)
            .finish()
    }
}

impl Settings {
    /// The settings of `edgefilter run` without flags (nor variables), for `target`: what the
    /// demo starts from. Built from [`defaults`], as clap applies them (tested).
    pub fn defaults(target: Target) -> Settings {
        let duration = |s: &str| parse_duration(s).unwrap_or_default();
        Settings {
            target,
            input_topics: vec![defaults::INPUT_TOPIC.to_string()],
            alert_topic: topic::Template::parse(defaults::ALERT_TOPIC)
                .expect("the default alert topic is a valid template"),
            field: FieldPath::parse(defaults::FIELD).expect("the default field is a valid path"),
            threshold: defaults::THRESHOLD,
            twin_topic: defaults::TWIN_TOPIC.to_string(),
            qos: defaults::QOS,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            inline_batch: defaults::INLINE_BATCH,
            batch_max: defaults::BATCH_MAX,
            batch_linger: duration(defaults::BATCH_LINGER),
            batch_format: BatchFormat::Single,
            publisher_connection: PublisherConnection::Separate,
            dead_letter_topic: Some(defaults::DEAD_LETTER_TOPIC.to_string()),
            client_id: defaults::CLIENT_ID.to_string(),
            share_group: None,
            tls: TlsFiles::default(),
            username: None,
            password: None,
            mqtt_version: Version::V5,
            metrics_addr: parse_addr(defaults::METRICS_ADDR),
            max_payload: defaults::MAX_PAYLOAD,
            drain_timeout: duration(defaults::DRAIN_TIMEOUT),
            log_format: LogFormat::Text,
            stats_interval: duration(defaults::STATS_INTERVAL),
            azure_edge: AzureEdge::Auto,
            azure_token_ttl: duration(defaults::AZURE_TOKEN_TTL),
            input_name: defaults::INPUT_NAME.to_string(),
            output_name: defaults::OUTPUT_NAME.to_string(),
            max_pending: defaults::MAX_PENDING,
            max_inflight: defaults::MAX_INFLIGHT,
            keep_alive: duration(defaults::KEEP_ALIVE),
            broker: BrokerOptions {
                queue: defaults::BROKER_QUEUE,
                inflight: defaults::BROKER_INFLIGHT,
                stall_timeout: duration(defaults::BROKER_STALL_TIMEOUT),
                passwords: None,
                anonymous_anywhere: false,
                twin_writers: Vec::new(),
                tls: None,
                cluster: None,
            },
            rules: RuleConfig::off(),
            delivery: Delivery {
                ack_policy: AckPolicyArg::Auto,
                outbox_dir: PathBuf::from(defaults::OUTBOX_DIR),
                outbox_durability: OutboxDurability::Written,
                twin_timeout: duration(defaults::TWIN_TIMEOUT),
            },
        }
    }

    /// The subscription filters for the input, with the share group applied.
    pub fn input_subscriptions(&self) -> Vec<String> {
        self.input_topics
            .iter()
            .map(|f| match &self.share_group {
                Some(g) => format!("$share/{g}/{f}"),
                None => f.clone(),
            })
            .collect()
    }

    pub fn twin_desired_topic(&self) -> String {
        format!("{}/desired", self.twin_topic)
    }

    pub fn twin_reported_topic(&self) -> String {
        format!("{}/reported", self.twin_topic)
    }
}

/// A duration as flags and files write it (`500ms`, `10s`, `1m`; `0` alone is zero).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 500ms, 10s, 1m)"))
}

/// `HOST:PORT` (resolved; the first address).
pub fn parse_addr(s: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs().ok()?.next()
}
