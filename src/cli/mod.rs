//! The command line, at the top of the crate: raw clap arguments (`Cli`, `RunArgs`), the
//! `--config` file under them ([`file`](self::file)), and their validation into the ready-to-use
//! [`Settings`] (the `settings` layer) that `run` wires into the pipeline. Everything a user
//! can get wrong is caught here and reported as one [`ConfigError`] line, before any socket is
//! opened. Nothing below imports this layer.

pub mod file;
pub mod rule_flags;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use thiserror::Error;

use crate::mqtt::broker_url::BrokerUrlError;
use crate::pipeline::verdict::FieldPathError;
use crate::settings::defaults;
pub(crate) use crate::settings::{parse_addr, parse_duration};
pub use crate::settings::{
    AckPolicyArg, AzureEdge, BatchFormat, LogFormat, OutboxDurability, PublisherConnection,
    Settings, Target, Version,
};

mod broker;
mod delivery;
mod validate;

/// edgefilter: forwards the telemetry whose `machine.temperature` exceeds a threshold.
#[derive(Debug, Parser)]
#[command(name = "edgefilter", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the filter module (embedded broker unless --broker or an IoT Edge environment is given).
    Run(Box<RunArgs>),
    /// A zero-setup tour: embedded broker, simulated sensors, the filter, a twin step, a summary.
    Demo(DemoArgs),
    /// Check or print configuration files (see `run --config`).
    Config {
        #[command(subcommand)]
        command: file::ConfigCommand,
    },
}

/// Flags of `edgefilter run`. Every flag can also come from an `EDGEFILTER_*` variable.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML file whose keys are these flags without their dashes (`qos = 1`); flags and
    /// variables override it (see `edgefilter config print`).
    #[arg(long, env = "EDGEFILTER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// External broker, `mqtt://HOST:PORT` or `mqtts://HOST:PORT`; none starts the embedded broker.
    /// (Credentials go in --username and --password-file, never in the URL.)
    #[arg(long, env = "EDGEFILTER_BROKER", hide_env_values = true)]
    pub broker: Option<BrokerArg>,

    /// Address the embedded broker listens on, MQTT 3.1, 3.1.1 and 5 (only without --broker).
    #[arg(long, env = "EDGEFILTER_LISTEN", default_value = defaults::LISTEN)]
    pub listen: String,

    /// A second port of the embedded broker (same protocols as --listen; kept for setups that
    /// had a separate MQTT 5 port).
    #[arg(long, env = "EDGEFILTER_LISTEN_V5")]
    pub listen_v5: Option<String>,

    /// Embedded broker: most messages queued per client session; beyond it the broker drops
    /// (counted in edgefilter_broker_dropped_total and logged). Bounds the broker's memory.
    #[arg(long, env = "EDGEFILTER_BROKER_QUEUE", default_value_t = defaults::BROKER_QUEUE)]
    pub broker_queue: usize,

    /// Embedded broker: most unacknowledged QoS 1 messages in flight to each client.
    #[arg(long, env = "EDGEFILTER_BROKER_INFLIGHT", default_value_t = defaults::BROKER_INFLIGHT, value_parser = clap::value_parser!(u16).range(1..))]
    pub broker_inflight: u16,

    /// Embedded broker: publishers held back this long while the filter takes none of its
    /// input restart the filter's connection (logged and counted; its session keeps every
    /// message). 0 turns the watchdog off.
    #[arg(long, env = "EDGEFILTER_BROKER_STALL_TIMEOUT", default_value = defaults::BROKER_STALL_TIMEOUT, value_parser = parse_duration)]
    pub broker_stall_timeout: Duration,

    /// Embedded broker: clients must log in with a user of this file (mosquitto_passwd format).
    #[arg(long, env = "EDGEFILTER_LISTEN_PASSWORD_FILE")]
    pub listen_password_file: Option<PathBuf>,

    /// Embedded broker: accept clients without a login on an address other hosts can reach
    /// (without it, such an address needs --listen-password-file).
    /// (`--listen-anonymous` alone means true; a value is accepted so configuration files
    /// can say `listen-anonymous = false`.)
    #[arg(
        long,
        env = "EDGEFILTER_LISTEN_ANONYMOUS",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub listen_anonymous: bool,

    /// Embedded broker: a user (of --listen-password-file) allowed to write the twin's desired
    /// document (repeatable; comma-separated in the variable).
    #[arg(
        long = "twin-writer",
        env = "EDGEFILTER_TWIN_WRITER",
        value_delimiter = ','
    )]
    pub twin_writers: Vec<String>,

    /// Embedded broker: also serve MQTT over TLS on this address (needs --listen-cert/-key).
    #[arg(long, env = "EDGEFILTER_LISTEN_TLS")]
    pub listen_tls: Option<String>,

    /// PEM certificate chain of the embedded broker's TLS listener.
    #[arg(long, env = "EDGEFILTER_LISTEN_CERT")]
    pub listen_cert: Option<PathBuf>,

    /// PEM private key of --listen-cert.
    #[arg(long, env = "EDGEFILTER_LISTEN_KEY")]
    pub listen_key: Option<PathBuf>,

    /// Cluster (cargo feature `cluster`): this node's id, 1..; the nodes of one cluster have
    /// distinct ids and the same --cluster-peers.
    #[arg(long, env = "EDGEFILTER_CLUSTER_NODE_ID")]
    pub cluster_node_id: Option<u64>,

    /// Cluster: every node as ID@HOST:PORT (their gRPC addresses, this node included;
    /// comma-separated). This node's gRPC server listens on its own entry's address.
    #[arg(
        long = "cluster-peers",
        env = "EDGEFILTER_CLUSTER_PEERS",
        value_delimiter = ','
    )]
    pub cluster_peers: Vec<String>,

    /// Topic filter to read telemetry from (repeatable; comma-separated in the variable).
    #[arg(
        long = "input-topic",
        env = "EDGEFILTER_INPUT_TOPIC",
        value_delimiter = ',',
        default_value = defaults::INPUT_TOPIC
    )]
    pub input_topics: Vec<String>,

    /// Where alerts go; `{topic}` is replaced by the input topic.
    #[arg(long, env = "EDGEFILTER_ALERT_TOPIC", default_value = defaults::ALERT_TOPIC)]
    pub alert_topic: String,

    /// Dotted path of the number compared with the threshold.
    #[arg(long, env = "EDGEFILTER_FIELD", default_value = defaults::FIELD)]
    pub field: String,

    /// Initial threshold (a twin patch replaces it at runtime).
    #[arg(
        long,
        env = "EDGEFILTER_THRESHOLD",
        default_value_t = defaults::THRESHOLD,
        allow_negative_numbers = true
    )]
    pub threshold: f64,

    /// Topic prefix of the generic MQTT twin (`<prefix>/desired`, `<prefix>/reported`).
    #[arg(long, env = "EDGEFILTER_TWIN_TOPIC", default_value = defaults::TWIN_TOPIC)]
    pub twin_topic: String,

    /// 1: at-least-once end to end (input acked after its alert is acked); 0: at-most-once.
    #[arg(long, env = "EDGEFILTER_QOS", default_value_t = defaults::QOS, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,

    /// Verdict worker threads (default: the number of CPUs); 0 decides on the connection's own
    /// thread, without hand-offs (the cheapest on gateways with one or two cores).
    #[arg(long, env = "EDGEFILTER_WORKERS")]
    pub workers: Option<usize>,

    /// Batches of at most this many messages are decided on the connection's thread when their
    /// worker is idle (a hand-off costs about 40 verdicts); 0 sends every batch to the workers.
    #[arg(long, env = "EDGEFILTER_INLINE_BATCH", default_value_t = defaults::INLINE_BATCH)]
    pub inline_batch: usize,

    /// Most alerts written in one flush (one JSON array with --batch-format array).
    #[arg(long, env = "EDGEFILTER_BATCH_MAX", default_value_t = defaults::BATCH_MAX)]
    pub batch_max: usize,

    /// How long a batch may wait for more alerts before it is flushed (0 = flush as soon as the
    /// connection has nothing else ready).
    #[arg(long, env = "EDGEFILTER_BATCH_LINGER", default_value = defaults::BATCH_LINGER, value_parser = parse_duration)]
    pub batch_linger: Duration,

    #[arg(
        long,
        env = "EDGEFILTER_BATCH_FORMAT",
        value_enum,
        default_value = "single"
    )]
    pub batch_format: BatchFormat,

    /// Which connection alerts, dead letters and twin reports take at --qos 1: `separate` (a
    /// second connection, client id `<--client-id>-out`) or `shared` (the input connection).
    /// At --qos 0 and under IoT Edge (one module identity) they always share.
    #[arg(
        long,
        env = "EDGEFILTER_PUBLISHER_CONNECTION",
        value_enum,
        default_value = "separate"
    )]
    pub publisher_connection: PublisherConnection,

    /// Topic for rejected input (with the reason); empty disables dead-lettering.
    #[arg(
        long,
        env = "EDGEFILTER_DEAD_LETTER_TOPIC",
        default_value = defaults::DEAD_LETTER_TOPIC
    )]
    pub dead_letter_topic: String,

    /// MQTT client id; the persistent session is keyed by it.
    #[arg(long, env = "EDGEFILTER_CLIENT_ID", default_value = defaults::CLIENT_ID)]
    pub client_id: String,

    /// Subscribe as `$share/NAME/<filter>` so several instances split the input.
    #[arg(long, env = "EDGEFILTER_SHARE_GROUP")]
    pub share_group: Option<String>,

    /// PEM file with the CA certificates that verify the broker (mqtts://).
    #[arg(long, env = "EDGEFILTER_CA")]
    pub ca: Option<PathBuf>,

    /// PEM client certificate (chain) for mutual TLS.
    #[arg(long, env = "EDGEFILTER_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, env = "EDGEFILTER_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,

    #[arg(long, env = "EDGEFILTER_USERNAME")]
    pub username: Option<String>,

    /// File whose first line is the password (never on the command line).
    #[arg(long, env = "EDGEFILTER_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,

    /// MQTT version of the filter's connections: 5, or 3 (3.1.1).
    #[arg(long, env = "EDGEFILTER_MQTT_VERSION", default_value = "5", value_parser = parse_version)]
    pub mqtt_version: Version,

    /// Prometheus `/metrics` and `/healthz` address; `off` disables.
    #[arg(
        long,
        env = "EDGEFILTER_METRICS_ADDR",
        default_value = defaults::METRICS_ADDR
    )]
    pub metrics_addr: String,

    /// Larger payloads are rejected (`too_large`) without being parsed.
    #[arg(long, env = "EDGEFILTER_MAX_PAYLOAD", default_value_t = defaults::MAX_PAYLOAD)]
    pub max_payload: usize,

    /// On SIGTERM/SIGINT, how long to wait for outstanding alert acknowledgements.
    #[arg(long, env = "EDGEFILTER_DRAIN_TIMEOUT", default_value = defaults::DRAIN_TIMEOUT, value_parser = parse_duration)]
    pub drain_timeout: Duration,

    #[arg(
        long,
        env = "EDGEFILTER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Interval of the one-line statistics log (0 disables).
    #[arg(long, env = "EDGEFILTER_STATS_INTERVAL", default_value = defaults::STATS_INTERVAL, value_parser = parse_duration)]
    pub stats_interval: Duration,

    #[arg(
        long,
        env = "EDGEFILTER_AZURE_EDGE",
        value_enum,
        default_value = "auto"
    )]
    pub azure_edge: AzureEdge,

    /// IoT Edge module input that is filtered (others are counted and acknowledged).
    #[arg(long, env = "EDGEFILTER_INPUT_NAME", default_value = defaults::INPUT_NAME)]
    pub input_name: String,

    /// IoT Edge: lifetime of the SAS tokens (the connection is renewed 2 min before expiry,
    /// or at half the lifetime for short ones).
    #[arg(long, env = "EDGEFILTER_AZURE_TOKEN_TTL", default_value = defaults::AZURE_TOKEN_TTL, value_parser = parse_duration)]
    pub azure_token_ttl: Duration,

    /// IoT Edge module output the alerts are sent to.
    #[arg(long, env = "EDGEFILTER_OUTPUT_NAME", default_value = defaults::OUTPUT_NAME)]
    pub output_name: String,

    /// Most input messages in the pipeline (received, not yet acknowledged) before reading pauses.
    #[arg(long, env = "EDGEFILTER_MAX_PENDING", default_value_t = defaults::MAX_PENDING)]
    pub max_pending: usize,

    /// Most unacknowledged outgoing QoS 1 publishes (the broker's Receive Maximum also applies).
    #[arg(long, env = "EDGEFILTER_MAX_INFLIGHT", default_value_t = defaults::MAX_INFLIGHT, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_inflight: u16,

    /// MQTT keep-alive interval.
    #[arg(long, env = "EDGEFILTER_KEEP_ALIVE", default_value = defaults::KEEP_ALIVE, value_parser = parse_duration)]
    pub keep_alive: Duration,

    #[command(flatten)]
    pub rules: rule_flags::RuleArgs,
    /// What an input's acknowledgement waits for when it caused an alert: `alert` = the
    /// alert's PUBACK; `outbox` = the alert written to the local outbox (resent after a
    /// restart until acknowledged); `auto` = `outbox` under IoT Edge, `alert` elsewhere.
    #[arg(
        long,
        env = "EDGEFILTER_ACK_POLICY",
        value_enum,
        default_value = "auto"
    )]
    pub ack_policy: AckPolicyArg,

    /// Directory of the outbox (created if missing; one edgefilter per directory).
    #[arg(long, env = "EDGEFILTER_OUTBOX_DIR", default_value = defaults::OUTBOX_DIR)]
    pub outbox_dir: PathBuf,

    /// `written`: alerts in the outbox survive the process dying (kill -9, crash), not a
    /// power cut; `fsync`: a committed alert survives a power cut too (one fdatasync per
    /// commit). The README's "Delivery guarantees" says what each leaves open under IoT Edge.
    #[arg(
        long,
        env = "EDGEFILTER_OUTBOX_DURABILITY",
        value_enum,
        default_value = "written"
    )]
    pub outbox_durability: OutboxDurability,

    /// IoT Edge: how long the twin GET may go unanswered before it is sent again (then twice
    /// as long each time, up to 8 times this).
    #[arg(long, env = "EDGEFILTER_TWIN_TIMEOUT", default_value = defaults::TWIN_TIMEOUT, value_parser = parse_duration)]
    pub twin_timeout: Duration,
}

/// `--broker` as given, before validation: its `Debug` form hides user info a user may have
/// put in the URL (which validation refuses).
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerArg(pub String);

impl std::str::FromStr for BrokerArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(BrokerArg(s.to_string()))
    }
}

impl std::ops::Deref for BrokerArg {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BrokerArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::mqtt::broker_url::redacted(&self.0))
    }
}

/// Flags of `edgefilter demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long the tour runs; the twin turns the alert rules on after a third and raises the
    /// threshold after two thirds.
    #[arg(long, env = "EDGEFILTER_DEMO_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Messages per second, over all simulated sensors.
    #[arg(long, env = "EDGEFILTER_DEMO_RATE", default_value = "2000")]
    pub rate: u32,
    /// Number of simulated sensors (one topic each).
    #[arg(long, env = "EDGEFILTER_DEMO_DEVICES", default_value = "10")]
    pub devices: u32,
}

impl DemoArgs {
    pub fn settings(&self) -> crate::settings::Demo {
        crate::settings::Demo {
            duration: self.duration,
            rate: self.rate,
            devices: self.devices,
        }
    }
}

fn parse_version(s: &str) -> Result<Version, String> {
    s.parse()
}

/// One line naming what is wrong with the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("--broker")]
    Broker(#[from] BrokerUrlError),
    #[error("--listen/--listen-v5 {0:?}: expected HOST:PORT such as 127.0.0.1:1883")]
    Listen(String),
    #[error("--metrics-addr {0:?}: expected HOST:PORT or `off`")]
    MetricsAddr(String),
    #[error("--field")]
    Field(#[from] FieldPathError),
    #[error("--threshold must be a finite number, got {0}")]
    Threshold(f64),
    #[error("--input-topic {0:?} is not a valid MQTT topic filter")]
    InputTopic(String),
    #[error("--input-topic: at least one filter is required")]
    NoInputTopic,
    #[error("--alert-topic {0:?}: {1}")]
    AlertTopic(String, &'static str),
    #[error("--alert-topic {alert:?} would be read back by --input-topic {filter:?} (an alert loop); choose topics that do not overlap")]
    AlertLoop { alert: String, filter: String },
    #[error("--twin-topic {0:?} must be a topic without wildcards")]
    TwinTopic(String),
    #[error("--dead-letter-topic {0:?} must be a topic without wildcards")]
    DeadLetterTopic(String),
    #[error("--share-group {0:?} must be a non-empty name without '/', '+' or '#'")]
    ShareGroup(String),
    #[error("--client-id must not be empty")]
    ClientId,
    #[error("--batch-max must be at least 1")]
    BatchMax,
    #[error("--max-pending must be at least 1")]
    MaxPending,
    #[error("--max-payload must be between 1 and 268435455 bytes")]
    MaxPayload,
    #[error("--client-cert and --client-key must be given together")]
    ClientCertPair,
    #[error("{flag} {path}")]
    File {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("--password-file {0}: the file is empty")]
    EmptyPassword(String),
    #[error("--ca, --client-cert and --client-key need an mqtts:// broker")]
    TlsWithoutMqtts,
    #[error("--keep-alive must be between 1s and 65535s")]
    KeepAlive,
    #[error("--broker-queue must be at least 1")]
    BrokerQueue,
    #[error("--listen-password-file {path}: {source}")]
    PasswordFile {
        path: String,
        source: crate::settings::PasswdError,
    },
    #[error("--twin-writer needs --listen-password-file (the user must log in)")]
    TwinWriterWithoutPasswords,
    #[error("--listen-tls needs --listen-cert and --listen-key")]
    ListenTlsFiles,
    #[error("--listen-cert/--listen-key need --listen-tls ADDR")]
    ListenCertWithoutTls,
    #[error("--cluster-node-id and --cluster-peers go together (ID@HOST:PORT for every node, this one included)")]
    ClusterPair,
    #[error("--cluster-peers {0:?}: expected ID@HOST:PORT with ID 1 or more")]
    ClusterPeer(String),
    #[error("--cluster-peers has no entry for --cluster-node-id {0}")]
    ClusterSelf(u64),
    #[error("--cluster-node-id: this edgefilter was built without the `cluster` feature (cargo build --features cluster)")]
    ClusterNotBuiltIn,
    #[error("--cluster-*, --listen-tls and the other embedded broker flags need the embedded broker (no --broker)")]
    EmbeddedOnly,
    /// An alert-rule flag (the message names it).
    #[error("{0}")]
    Rule(String),
    #[error("--ack-policy outbox needs --qos 1 (at QoS 0 nothing is acknowledged)")]
    OutboxAtQos0,
    #[error("--outbox-dir must not be empty")]
    OutboxDir,
    #[error("--twin-timeout must be at least 100ms")]
    TwinTimeout,
}
#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["edgefilter", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = args(&[]).validate().unwrap();
        assert!(
            matches!(s.target, Target::Embedded { v4, v5: None } if v4.to_string() == "127.0.0.1:1883")
        );
        assert_eq!(s.input_topics, vec!["telemetry/#"]);
        assert_eq!(
            s.alert_topic.render("telemetry/dev-1"),
            "alerts/telemetry/dev-1"
        );
        assert_eq!(s.threshold, 25.0);
        assert_eq!(s.twin_desired_topic(), "edgefilter/twin/desired");
        assert_eq!(s.qos, 1);
        assert_eq!(
            s.dead_letter_topic.as_deref(),
            Some("edgefilter/deadletter")
        );
        assert_eq!(s.client_id, "edgefilter");
        assert_eq!(s.mqtt_version, Version::V5);
        assert_eq!(s.metrics_addr.unwrap().port(), 9600);
        assert_eq!(s.max_payload, 262_144);
        assert_eq!(s.batch_format, BatchFormat::Single);
        assert_eq!(s.input_name, "input1");
        assert_eq!(s.output_name, "output1");
    }

    #[test]
    fn mistakes_are_named() {
        let e = |a: &[&str]| crate::logging::chain(&args(a).validate().unwrap_err());
        assert!(e(&["--broker", "http://x"]).starts_with("--broker"));
        assert!(e(&["--input-topic", "a/#/b"]).contains("--input-topic"));
        assert!(e(&["--input-topic", "#"]).contains("alert loop"));
        // A `$` topic is matched by a literal filter (fuzzing found rumqttc's matches did not).
        assert!(e(&[
            "--input-topic",
            "$x/#",
            "--alert-topic",
            "$x/alerts/{topic}"
        ])
        .contains("alert loop"));
        assert!(e(&["--alert-topic", "out/+"]).contains("--alert-topic"));
        assert!(e(&["--field", "machine..temperature"]).starts_with("--field"));
        assert!(
            e(&["--ca", "/nonexistent/ca.pem", "--broker", "mqtts://h:8883"])
                .contains("/nonexistent/ca.pem")
        );
        assert!(e(&["--ca", "/etc/hostname"]).contains("mqtts://"));
        assert!(e(&["--metrics-addr", "nowhere"]).contains("--metrics-addr"));
    }

    #[test]
    fn credentials_never_show() {
        let a = args(&["--broker", "mqtt://gw1:s3cret@broker:1883"]);
        assert!(!format!("{a:?}").contains("s3cret"));
        let e = crate::logging::chain(&a.validate().unwrap_err());
        assert!(e.starts_with("--broker"), "{e}");
        assert!(e.contains("--password-file"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let s = args(&["--username", "gw1", "--password-file", pw.to_str().unwrap()])
            .validate()
            .unwrap();
        assert_eq!(s.password.as_deref(), Some("s3cret"));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("password: Some(\"***\")"),
            "{shown}"
        );
    }

    #[test]
    fn built_defaults_equal_an_empty_command_line() {
        let parsed = args(&[]).validate().unwrap();
        let built = Settings::defaults(parsed.target.clone());
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
    }

    #[test]
    fn share_group_prefixes_filters() {
        let s = args(&["--share-group", "g1", "--input-topic", "a/#,b/+"])
            .validate()
            .unwrap();
        assert_eq!(
            s.input_subscriptions(),
            vec!["$share/g1/a/#", "$share/g1/b/+"]
        );
    }

    #[test]
    fn metrics_can_be_disabled() {
        assert!(args(&["--metrics-addr", "off"])
            .validate()
            .unwrap()
            .metrics_addr
            .is_none());
    }
}
