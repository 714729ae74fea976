//! The validated configuration of `edgefilter run` ([`Settings`], what `plan` resolves and
//! `run` wires into the pipeline) and where the filter's connection goes ([`Target`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::mqtt::broker_url::BrokerUrl;
use crate::mqtt::topic;
use crate::pipeline::verdict::FieldPath;

use super::*;

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
    pub rules: rules::RuleConfig,
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
                passwords: None,
                anonymous_anywhere: false,
                twin_writers: Vec::new(),
                tls: None,
                cluster: None,
            },
            rules: rules::RuleConfig::off(),
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
