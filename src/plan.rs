//! The configuration resolved in one pure step: validated [`Settings`] (and the IoT Edge
//! identity, if the environment names one) → a [`Plan`] that says what `run` starts and how
//! — which broker to reach (and whether to start the embedded one), the protocol version, the
//! dialect, the QoS of the filter's own subscription, the quick-ACK rule, and the `Flow`'s
//! settings. No sockets, no files: `run` does the I/O the plan asks for, and every decision
//! here is unit-tested.

use std::path::PathBuf;
use std::time::Duration;

use crate::flow::dialect::{Azure, Dialect, Generic};
use crate::flow::{AckPolicy, FlowConfig};
use crate::io::azure::{AzureError, AzureIdentity, EDGEHUB_MQTT_PORT};
use crate::io::embedded::{loopback_of, EmbeddedBroker};
use crate::io::outbox::Durability;
use crate::mqtt::codec::{ConnectOptions, Version};
use crate::mqtt::tcp::QuickAck;
use crate::pipeline::alert_batch::Format;
use crate::pipeline::verdict::FieldPath;
use crate::settings::{default_v4_clear_template, TlsFiles};
use crate::settings::{
    AzureEdge, BatchFormat, OutboxDurability, PublisherConnection, Settings, Target,
};

/// The session outlives a disconnection by this long (MQTT 5 session expiry); brokers keep
/// undelivered QoS 1 input for us meanwhile.
pub const SESSION_EXPIRY_SECS: u32 = 7 * 24 * 3600;

/// TLS for the filter's connection.
#[derive(Debug, Clone)]
pub enum TlsPlan {
    None,
    /// `mqtts://`: the files named on the command line, and the name the broker's
    /// certificate must carry.
    Files {
        files: TlsFiles,
        server_name: String,
    },
    /// IoT Edge: the workload API's trust bundle, fetched at every connect.
    IotEdge,
}

/// What `edgefilter run` does.
#[derive(Debug)]
pub struct Plan {
    /// Start this broker in-process first (no `--broker`, no IoT Edge).
    pub embedded: Option<EmbeddedBroker>,
    /// `host:port` of the broker the filter connects to.
    pub addr: String,
    pub tls: TlsPlan,
    pub version: Version,
    pub connect: ConnectOptions,
    /// The client id of the connection our publishes take when it is not the input one
    /// (`FlowConfig::separate_publisher`).
    pub publisher_client_id: Option<String>,
    pub quick_ack: QuickAck,
    /// The largest packet read whole (`codec::Reader`): an input within `--max-payload`
    /// fits with room for its topic and properties; anything larger is dead-lettered as
    /// `too_large` from its first KiB, the rest skipped unread.
    pub read_limit: usize,
    /// IoT Edge: the module's identity (credentials and trust at every connect).
    pub azure: Option<AzureIdentity>,
    pub token_ttl: Duration,
    /// Keep retrying the first connection (IoT Edge starts modules before edgeHub).
    pub retry_first_connect: bool,
    pub dialect: Dialect,
    pub flow: FlowConfig,
    pub field: FieldPath,
    pub max_payload: usize,
    /// The outbox acknowledgement policy's file (`--ack-policy`; `auto`: under IoT Edge).
    pub outbox: Option<OutboxPlan>,
}

/// Where and how durably the outbox keeps alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPlan {
    pub dir: PathBuf,
    pub durability: Durability,
}

/// The largest packet MQTT can carry (a 4-byte remaining length plus the fixed header).
pub const MAX_PACKET: u32 = 268_435_455 + 5;

/// On one connection, QoS 0 inputs held at most (`FlowConfig::max_held`) per `--max-pending`:
/// room for a broker that sends past our Receive Maximum while PUBACKs for our publishes are
/// due on the same socket (mosquitto 2.0.11 overshoots it on in-order PUBACKs).
pub const HELD_PER_PENDING: usize = 8;

/// The publisher connection's client id for the filter's `client_id`.
pub fn publisher_client_id(client_id: &str) -> String {
    format!("{client_id}-out")
}

/// The largest input packet read whole: the payload limit plus room for the longest topic
/// and 64 KiB of properties.
pub fn read_limit(max_payload: usize) -> usize {
    max_payload.saturating_add(2 * 65_536 + 16)
}

/// The IoT Edge identity `--azure-edge` asks for, read through `var` (the environment).
pub fn azure_identity(
    settings: &Settings,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<AzureIdentity>, AzureError> {
    match settings.azure_edge {
        AzureEdge::Off => Ok(None),
        AzureEdge::Auto => AzureIdentity::from_env(var),
        AzureEdge::On => AzureIdentity::require_from_env(var).map(Some),
    }
}

/// Resolves the settings (and the IoT Edge identity, when there is one) into the plan.
pub fn resolve(settings: &Settings, azure: Option<AzureIdentity>) -> Plan {
    let mut version = settings.mqtt_version;
    let mut embedded = None;
    let (addr, tls) = match (&azure, &settings.target) {
        (Some(identity), target) => {
            // edgeHub speaks MQTT 3.1.1 over TLS on the gateway host; --broker may override
            // where to connect (the certificate must still name the gateway host).
            version = Version::V4;
            let addr = match target {
                Target::External(url) => url.addr(),
                Target::Embedded { .. } => {
                    format!("{}:{}", identity.gateway_host_name, EDGEHUB_MQTT_PORT)
                }
            };
            (addr, TlsPlan::IotEdge)
        }
        (None, Target::Embedded { v4, v5 }) => {
            embedded = Some(EmbeddedBroker {
                listen: *v4,
                second: *v5,
                max_payload: settings.max_payload,
                options: settings.broker.clone(),
                filter_client_id: settings.client_id.clone(),
                filter_publisher_id: publisher_client_id(&settings.client_id),
                twin_topic: settings.twin_topic.clone(),
                input_topics: settings.input_topics.clone(),
            });
            // Every MQTT version on one port: the filter speaks --mqtt-version there.
            (loopback_of(*v4).to_string(), TlsPlan::None)
        }
        (None, Target::External(url)) => (
            url.addr(),
            if url.tls {
                TlsPlan::Files {
                    files: settings.tls.clone(),
                    server_name: url.host.clone(),
                }
            } else {
                TlsPlan::None
            },
        ),
    };
    let in_azure = azure.is_some();
    let on_embedded = embedded.is_some();
    // At QoS 0 nothing waits for a PUBACK: one connection can stop reading at --max-pending
    // as well, and its input stream's TCP ACKs ride on the alerts it writes (on a socket that
    // only reads, a Nagle-writing broker sends smaller segments: twice the reads per message,
    // BENCHMARKS.md §12).
    let separate_publisher = !in_azure
        && settings.qos > 0
        && settings.publisher_connection == PublisherConnection::Separate;
    let dialect = match &azure {
        Some(identity) => Dialect::Azure(Box::new(
            Azure::new(
                &identity.device_id,
                &identity.module_id,
                &settings.input_name,
                &settings.output_name,
                settings.dead_letter_topic.as_deref(),
            )
            .with_summary_output(&settings.rules.summary_output),
        )),
        None => {
            // Clearing messages: on the alert topic under MQTT 5 (the MessageType property tells
            // them apart), on their own topic under 3.1.1 (no properties: the topic tells).
            let clear_topic = match (&settings.rules.clear_topic, version) {
                (Some(t), _) => Some(t.clone()),
                (None, Version::V4) => Some(default_v4_clear_template()),
                (None, Version::V5) => None,
            };
            // The input subscription has --qos on the embedded broker too: at QoS 1 the
            // broker's in-flight window paces what it sends us (tests/it/embedded_broker.rs).
            let generic = Generic::new(
                version,
                settings.input_subscriptions(),
                settings.qos,
                &settings.twin_topic,
                settings.alert_topic.clone(),
                settings.dead_letter_topic.clone(),
            )
            .with_rule_topics(clear_topic, settings.rules.summary_topic.clone());
            Dialect::Generic(generic)
        }
    };
    let keep_alive_secs = settings.keep_alive.as_secs().clamp(1, 65535) as u16;
    let outbox = settings.delivery.uses_outbox(in_azure).then(|| OutboxPlan {
        dir: settings.delivery.outbox_dir.clone(),
        durability: match settings.delivery.outbox_durability {
            OutboxDurability::Written => Durability::Written,
            OutboxDurability::Fsync => Durability::Fsync,
        },
    });
    Plan {
        embedded,
        addr,
        tls,
        version,
        connect: ConnectOptions {
            client_id: settings.client_id.clone(),
            keep_alive_secs,
            clean: false,
            session_expiry_secs: SESSION_EXPIRY_SECS,
            receive_maximum: settings.max_pending.clamp(1, 65535) as u16,
            // Any size (MQTT's largest packet): a broker would drop what exceeds our limit
            // without a trace, while the reader dead-letters it, counted.
            maximum_packet_size: MAX_PACKET,
            username: settings.username.clone(),
            password: settings.password.clone(),
        },
        publisher_client_id: separate_publisher.then(|| publisher_client_id(&settings.client_id)),
        read_limit: read_limit(settings.max_payload),
        quick_ack: if !in_azure && on_embedded {
            QuickAck::Always
        } else if !in_azure && settings.qos == 0 {
            QuickAck::BelowRate
        } else {
            QuickAck::Never
        },
        azure,
        token_ttl: settings.azure_token_ttl,
        retry_first_connect: in_azure,
        dialect,
        flow: FlowConfig {
            version,
            shards: settings.workers.max(1),
            pooled: settings.workers > 0,
            inline_batch: settings.inline_batch,
            max_pending: settings.max_pending,
            max_held: settings.max_pending.saturating_mul(HELD_PER_PENDING),
            separate_publisher,
            max_inflight: settings.max_inflight,
            batch_max: settings.batch_max,
            batch_linger: settings.batch_linger,
            batch_format: match settings.batch_format {
                BatchFormat::Single => Format::Single,
                BatchFormat::Array => Format::Array,
            },
            drain_timeout: settings.drain_timeout,
            keep_alive_secs,
            rules: settings.rules.settings.clone(),
            event_time: settings.rules.event_time.clone(),
            twin_timeout: settings.delivery.twin_timeout,
            ack_policy: if outbox.is_some() {
                AckPolicy::Outbox
            } else {
                AckPolicy::Alert
            },
        },
        outbox,
        field: settings.field.clone(),
        max_payload: settings.max_payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn settings(extra: &[&str]) -> Settings {
        let mut argv = vec!["edgefilter", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a.validate().unwrap(),
            _ => unreachable!(),
        }
    }

    fn identity() -> AzureIdentity {
        let vars = [
            ("IOTEDGE_IOTHUBHOSTNAME", "hub.azure-devices.net"),
            ("IOTEDGE_DEVICEID", "gw1"),
            ("IOTEDGE_MODULEID", "filter"),
            ("IOTEDGE_GATEWAYHOSTNAME", "edgehub"),
            ("IOTEDGE_MODULEGENERATIONID", "g1"),
            (
                "IOTEDGE_WORKLOADURI",
                "unix:///var/run/iotedge/workload.sock",
            ),
            ("IOTEDGE_APIVERSION", "2019-01-30"),
        ];
        AzureIdentity::from_env(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
        .unwrap()
    }

    fn input_qos(plan: &Plan) -> u8 {
        match &plan.dialect {
            Dialect::Generic(g) => g.input_qos,
            Dialect::Azure(_) => 1,
        }
    }

    #[test]
    fn publishes_take_a_connection_of_their_own_only_where_a_puback_waits() {
        let url = ["--broker", "mqtt://b:1883"];
        let separate = |plan: &Plan| {
            assert_eq!(
                plan.flow.separate_publisher,
                plan.publisher_client_id.is_some()
            );
            plan.publisher_client_id.clone()
        };
        assert_eq!(
            separate(&resolve(&settings(&url), None)).as_deref(),
            Some("edgefilter-out")
        );
        assert_eq!(
            separate(&resolve(&settings(&["--client-id", "ef-1"]), None)).as_deref(),
            Some("ef-1-out"),
            "the embedded broker too"
        );
        let qos0 = settings(&[&url[..], &["--qos", "0"]].concat());
        assert_eq!(separate(&resolve(&qos0, None)), None);
        let shared = settings(&[&url[..], &["--publisher-connection", "shared"]].concat());
        assert_eq!(separate(&resolve(&shared, None)), None);
        assert_eq!(
            separate(&resolve(&settings(&url), Some(identity()))),
            None,
            "IoT Edge: one module identity"
        );
    }

    #[test]
    fn the_embedded_default_starts_a_broker_and_subscribes_at_the_configured_qos() {
        let plan = resolve(&settings(&["--listen", "0.0.0.0:1883"]), None);
        let broker = plan.embedded.as_ref().unwrap();
        assert_eq!(broker.listen.to_string(), "0.0.0.0:1883");
        assert_eq!(
            plan.addr, "127.0.0.1:1883",
            "a wildcard listener is reached on loopback"
        );
        assert_eq!(
            plan.version,
            Version::V5,
            "one port serves MQTT 3.1.1 and 5"
        );
        assert_eq!(input_qos(&plan), 1);
        assert_eq!(plan.quick_ack, QuickAck::Always);
        assert!(!plan.retry_first_connect);
        let plan = resolve(&settings(&["--qos", "0"]), None);
        assert_eq!(input_qos(&plan), 0);
    }

    #[test]
    fn the_embedded_broker_is_reached_on_listen_with_the_chosen_version() {
        let plan = resolve(&settings(&["--listen-v5", "127.0.0.1:1884"]), None);
        assert_eq!(
            (plan.addr.as_str(), plan.version),
            ("127.0.0.1:1883", Version::V5)
        );
        assert_eq!(
            plan.embedded.as_ref().unwrap().second.unwrap().to_string(),
            "127.0.0.1:1884"
        );
        let plan = resolve(&settings(&["--mqtt-version", "3"]), None);
        assert_eq!(
            (plan.addr.as_str(), plan.version),
            ("127.0.0.1:1883", Version::V4)
        );
    }

    #[test]
    fn an_external_broker_keeps_the_qos_and_quick_acks_only_at_qos_0() {
        let plan = resolve(&settings(&["--broker", "mqtt://b:1883"]), None);
        assert!(plan.embedded.is_none());
        assert_eq!((input_qos(&plan), plan.quick_ack), (1, QuickAck::Never));
        assert!(matches!(plan.tls, TlsPlan::None));
        let plan = resolve(
            &settings(&["--broker", "mqtts://b:8883", "--qos", "0"]),
            None,
        );
        assert_eq!((input_qos(&plan), plan.quick_ack), (0, QuickAck::BelowRate));
        assert!(matches!(&plan.tls, TlsPlan::Files { server_name, .. } if server_name == "b"));
    }

    #[test]
    fn iot_edge_speaks_mqtt_3_over_tls_to_the_gateway_and_retries_the_first_connect() {
        let plan = resolve(&settings(&[]), Some(identity()));
        assert!(plan.embedded.is_none(), "no embedded broker under IoT Edge");
        assert_eq!(plan.addr, "edgehub:8883");
        assert_eq!(plan.version, Version::V4);
        assert!(matches!(plan.tls, TlsPlan::IotEdge));
        assert!(matches!(plan.dialect, Dialect::Azure(_)));
        assert_eq!(plan.quick_ack, QuickAck::Never);
        assert!(plan.retry_first_connect);
        assert_eq!(plan.flow.ack_policy, AckPolicy::Outbox, "auto: the outbox");
        assert_eq!(
            plan.outbox,
            Some(OutboxPlan {
                dir: PathBuf::from("/var/lib/edgefilter/outbox"),
                durability: Durability::Written
            })
        );
        let plan = resolve(
            &settings(&["--broker", "mqtt://127.0.0.1:9"]),
            Some(identity()),
        );
        assert_eq!(
            plan.addr, "127.0.0.1:9",
            "--broker overrides where to connect"
        );
    }

    #[test]
    fn the_flow_settings_follow_the_flags() {
        let plan = resolve(
            &settings(&[
                "--workers",
                "0",
                "--batch-format",
                "array",
                "--keep-alive",
                "5s",
            ]),
            None,
        );
        assert!(!plan.flow.pooled);
        assert_eq!(plan.flow.shards, 1);
        assert_eq!(plan.flow.batch_format, Format::Array);
        assert_eq!(plan.flow.keep_alive_secs, 5);
        assert_eq!(plan.connect.keep_alive_secs, 5);
        let plan = resolve(&settings(&["--workers", "3"]), None);
        assert!(plan.flow.pooled);
        assert_eq!(plan.flow.shards, 3);
        assert!(!plan.connect.clean, "a persistent session");
    }

    #[test]
    fn the_ack_policy_is_the_alert_outside_iot_edge_unless_asked() {
        let plan = resolve(&settings(&[]), None);
        assert_eq!(plan.flow.ack_policy, AckPolicy::Alert);
        assert!(plan.outbox.is_none());
        let plan = resolve(
            &settings(&[
                "--ack-policy",
                "outbox",
                "--outbox-dir",
                "ob",
                "--outbox-durability",
                "fsync",
            ]),
            None,
        );
        assert_eq!(plan.flow.ack_policy, AckPolicy::Outbox);
        assert_eq!(
            plan.outbox,
            Some(OutboxPlan {
                dir: PathBuf::from("ob"),
                durability: Durability::Fsync
            })
        );
        let plan = resolve(&settings(&["--ack-policy", "alert"]), Some(identity()));
        assert_eq!(plan.flow.ack_policy, AckPolicy::Alert);
    }
}
