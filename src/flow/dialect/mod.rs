//! Topic and property conventions of the broker we talk to — the part of MQTT in/out that
//! differs between a generic broker (`telemetry/#` in, `alerts/{topic}` out with
//! MQTT 5 user properties, the twin on `<prefix>/desired` and `<prefix>/reported`) and Azure
//! IoT Edge's edgeHub (module inputs and outputs as topics with property bags). [`Flow`](super::Flow) asks the dialect where an inbound
//! publish belongs and how to address what it publishes; everything else is shared. Pure:
//! no I/O (the IoT Edge identity and credentials live in `io::azure`).

use bytes::Bytes;

use crate::mqtt::azure::limits;
use crate::mqtt::azure::propbag::PropertyBag;
use crate::mqtt::codec::{InPublish, OutPublish, PublishProperties, Unpublishable, Version};
use crate::mqtt::topic::{self, Template};
use crate::twin::Twin;

mod azure;
mod generic;
pub use azure::Azure;
pub use generic::{Generic, RuleTopics};

/// Where an inbound publish belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Telemetry to decide, with the properties its alert will carry on.
    Input(InputProps),
    /// A desired-properties document (or patch) for the twin.
    TwinDesired,
    /// The retained reported document of an earlier run (generic MQTT): the state to restore
    /// when the desired document is missing or invalid.
    TwinReported,
    /// IoT Edge: the full twin, answer to our GET (its `desired` section is applied).
    TwinFull,
    /// IoT Edge: another answer to a twin request (status code).
    TwinAnswer { status: u16, rid: String },
    /// Acknowledged without a verdict (another IoT Edge input, a stray topic).
    Ignore,
}

/// Per-message properties carried from the input to its alert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InputProps {
    #[default]
    None,
    /// MQTT 5 publish properties.
    V5(Box<PublishProperties>),
    /// IoT Edge property bag (from the input topic).
    Bag(Box<PropertyBag>),
}

/// What a publish caused by the rules is (alerts, and with the stateful rules clearing
/// messages and window summaries): where it goes and how it is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOutput {
    /// The input's body, `MessageType=Alert`, on the alert topic (IoT Edge: `--output-name`).
    Alert,
    /// The input's body, `MessageType=AlertCleared`: on the alert topic under MQTT 5 (the
    /// user property tells), on `--clear-topic` (`cleared/{topic}`) under MQTT 3.1.1 (the topic
    /// tells); IoT Edge: the alert output, the property bag tells.
    Clear,
    /// A window summary, `MessageType=Summary`, on `--summary-topic` (`summaries/{topic}`);
    /// IoT Edge: the `--summary-output` (`summary`).
    Summary,
}

impl RuleOutput {
    /// The `MessageType` property value.
    pub fn message_type(self) -> &'static str {
        match self {
            RuleOutput::Alert => "Alert",
            RuleOutput::Clear => "AlertCleared",
            RuleOutput::Summary => "Summary",
        }
    }
}

/// The dialect of the broker the filter is connected to.
// One per filter, never moved in a hot loop: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Dialect {
    Generic(Generic),
    Azure(Box<Azure>),
}

impl Dialect {
    pub fn subscriptions(&self) -> Vec<(Vec<String>, u8, bool)> {
        match self {
            Dialect::Generic(g) => g.subscriptions(),
            Dialect::Azure(a) => a.subscriptions(),
        }
    }

    pub fn route(&mut self, p: &mut InPublish) -> Route {
        match self {
            Dialect::Generic(g) => g.route(p),
            Dialect::Azure(a) => a.route(p),
        }
    }

    pub fn alert(&mut self, input_topic: &Bytes, payload: Bytes, props: InputProps) -> OutPublish {
        match self {
            Dialect::Generic(g) => g.alert(input_topic, payload, props),
            Dialect::Azure(a) => a.alert(payload, props),
        }
    }

    /// The device an input comes from: the key of its shard (inputs with the same key are
    /// decided and alerted in arrival order) and of per-device state.
    pub fn device_key(&self, topic: &Bytes, props: &InputProps) -> Bytes {
        match self {
            Dialect::Generic(_) => topic.clone(),
            Dialect::Azure(_) => Azure::device_key(props),
        }
    }

    /// The clearing message for an input (edge mode: its device re-armed).
    pub fn clear(&mut self, input_topic: &Bytes, payload: Bytes, props: InputProps) -> OutPublish {
        match self {
            Dialect::Generic(g) => g.clear(input_topic, payload, props),
            Dialect::Azure(a) => a.clear(payload, props),
        }
    }

    /// A window summary of `device` (the input topic, or IoT Edge's source device/module).
    pub fn summary(&mut self, device: &Bytes, payload: Bytes) -> OutPublish {
        match self {
            Dialect::Generic(g) => g.summary(device, payload),
            Dialect::Azure(a) => a.summary(payload),
        }
    }

    /// Publishes of one kind with the same key share one array-format publish (`topic`: the
    /// input topic, or a summary's device).
    pub fn array_key(&mut self, kind: RuleOutput, topic: &Bytes) -> Bytes {
        match self {
            Dialect::Generic(g) => g.topic_for(kind, topic),
            Dialect::Azure(_) => Bytes::new(),
        }
    }

    /// An array-format publish of `kind` for `key` (see [`Dialect::array_key`]).
    pub fn array(&mut self, kind: RuleOutput, key: &Bytes, payload: Bytes) -> OutPublish {
        match self {
            Dialect::Generic(g) => g.array(kind, key, payload),
            Dialect::Azure(a) => a.array(kind, payload),
        }
    }

    /// The reported properties for the twin's current state.
    pub fn reported(&mut self, twin: &Twin) -> OutPublish {
        match self {
            Dialect::Generic(g) => g.reported(twin.reported_bytes()),
            Dialect::Azure(a) => a.reported(twin),
        }
    }

    pub fn dead_letter(
        &self,
        envelope: Bytes,
        reason: &str,
        source: &Bytes,
        props: InputProps,
    ) -> Option<OutPublish> {
        match self {
            Dialect::Generic(g) => g.dead_letter(envelope, reason, source, props),
            Dialect::Azure(a) => a.dead_letter(envelope, reason, source),
        }
    }

    /// An alert of an earlier run, from the outbox (its topic and body as they were
    /// published), at QoS 1. IoT Edge topics carry every property; an MQTT 5 alert comes
    /// back with `MessageType=Alert` but without the input's other user properties.
    pub fn replayed_alert(&self, topic: &Bytes, payload: Bytes) -> OutPublish {
        match self {
            Dialect::Generic(g) => {
                let properties = match g.version {
                    Version::V4 => None,
                    Version::V5 => Some(alert_properties(InputProps::None)),
                };
                OutPublish::new(g.version, topic, payload, 1, false, properties)
            }
            Dialect::Azure(_) => OutPublish::new(Version::V4, topic, payload, 1, false, None),
        }
    }

    /// IoT Edge: the full-twin GET (a new request id each time); generic MQTT has none (the
    /// broker sends the retained desired document on subscribe).
    pub fn twin_get(&mut self) -> Option<OutPublish> {
        match self {
            Dialect::Generic(_) => None,
            Dialect::Azure(a) => Some(a.twin_get()),
        }
    }

    /// Whether the broker takes `packet`, beyond what the codec checks (encodability, an
    /// MQTT 5 broker's Maximum Packet Size). A generic broker: its topic name holds no
    /// wildcard and no NUL — a PUBLISH to `telemetry/#`, which some brokers accept, must not
    /// give an alert on `alerts/telemetry/#`. edgeHub: its two size limits (the whole packet,
    /// and the message as edgeHub counts it, `mqtt::azure::limits`), which it never announces
    /// (MQTT 3.1.1); its topics are not checked as names, since IoT Edge device ids may hold
    /// `+` and `#`.
    pub fn check(&self, packet: &OutPublish) -> Result<(), Unpublishable> {
        match self {
            Dialect::Generic(_) => match std::str::from_utf8(packet.topic()) {
                Ok(t) => Ok(topic::check_publishable(t)?),
                Err(_) => Err(topic::Unpublishable::Invalid.into()),
            },
            Dialect::Azure(_) => Ok(limits::check(
                packet.topic(),
                packet.payload().len(),
                packet.size(),
            )?),
        }
    }

    /// Whether `rid` answers our full-twin GET.
    pub fn is_twin_get(&self, rid: &str) -> bool {
        match self {
            Dialect::Generic(_) => false,
            Dialect::Azure(a) => a.pending_get.as_deref() == Some(rid),
        }
    }
}
/// `summaries/{topic}`.
pub fn default_summary_template() -> Template {
    Template::parse("summaries/{topic}").expect("a valid template")
}

/// Topic aliases and subscription identifiers belong to one connection, not to a message.
fn strip_connection_properties(p: &mut PublishProperties) {
    p.topic_alias = None;
    p.subscription_identifiers.clear();
}

/// The input's MQTT 5 properties with `MessageType=Alert` set (an existing `MessageType` is
/// replaced).
pub fn alert_properties(props: InputProps) -> PublishProperties {
    typed_properties(props, RuleOutput::Alert)
}

/// The input's MQTT 5 properties with `MessageType` set for `kind`.
fn typed_properties(props: InputProps, kind: RuleOutput) -> PublishProperties {
    let mut p = match props {
        InputProps::V5(p) => *p,
        _ => PublishProperties::default(),
    };
    strip_connection_properties(&mut p);
    p.user_properties.retain(|(k, _)| k != "MessageType");
    p.user_properties
        .push(("MessageType".into(), kind.message_type().into()));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic() -> Generic {
        Generic::new(
            Version::V5,
            vec!["$share/g/telemetry/#".into()],
            1,
            "edgefilter/twin",
            Template::parse("alerts/{topic}").unwrap(),
            Some("edgefilter/deadletter".into()),
        )
    }

    fn publish(topic: &'static [u8]) -> InPublish {
        InPublish {
            topic: Bytes::from_static(topic),
            payload: Bytes::new(),
            qos: 1,
            pkid: 1,
            retain: false,
            dup: false,
            properties: None,
        }
    }

    #[test]
    fn routes_by_topic() {
        let g = generic();
        assert_eq!(
            g.route(&mut publish(b"telemetry/dev-1")),
            Route::Input(InputProps::None)
        );
        assert_eq!(
            g.route(&mut publish(b"edgefilter/twin/desired")),
            Route::TwinDesired
        );
        assert_eq!(g.route(&mut publish(b"other/x")), Route::Ignore);
    }

    #[test]
    fn alerts_keep_properties_and_add_the_type() {
        let mut g = generic();
        let props = PublishProperties {
            user_properties: vec![
                ("sequenceNumber".into(), "7".into()),
                ("MessageType".into(), "Telemetry".into()),
            ],
            content_type: Some("application/json".into()),
            topic_alias: Some(3),
            subscription_identifiers: vec![1],
            ..Default::default()
        };
        let alert = g.alert(
            &Bytes::from_static(b"telemetry/d"),
            Bytes::from_static(b"{}"),
            InputProps::V5(Box::new(props)),
        );
        assert_eq!(alert.topic(), b"alerts/telemetry/d");
        let p = alert.properties().unwrap();
        assert_eq!(
            p.user_properties,
            vec![
                ("sequenceNumber".to_string(), "7".to_string()),
                ("MessageType".to_string(), "Alert".to_string())
            ]
        );
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!((p.topic_alias, p.subscription_identifiers.len()), (None, 0));
    }

    #[test]
    fn azure_inputs_shard_by_their_source_not_their_properties() {
        let key = |bag: &str| {
            let props = InputProps::Bag(Box::new(PropertyBag::decode(bag)));
            Azure::device_key(&props).to_vec()
        };
        let sensor = "%24.cdid=dev1&%24.cmid=SimulatedTemperatureSensor";
        assert_eq!(
            key(&format!("sequenceNumber=1&batchId=a&{sensor}")),
            key(&format!("sequenceNumber=2&batchId=b&{sensor}"))
        );
        assert_eq!(key(sensor), b"dev1/SimulatedTemperatureSensor");
        assert_ne!(key(sensor), key("%24.cdid=dev1&%24.cmid=OtherSensor"));
        assert_eq!(key("sequenceNumber=1"), b"/");
    }

    #[test]
    fn clears_and_summaries_say_what_they_are() {
        let mut g = generic();
        let props = PublishProperties {
            user_properties: vec![("sequenceNumber".into(), "7".into())],
            ..Default::default()
        };
        let input = Bytes::from_static(b"telemetry/d");
        let clear = g.clear(
            &input,
            Bytes::from_static(b"{}"),
            InputProps::V5(Box::new(props)),
        );
        assert_eq!(
            clear.topic(),
            b"alerts/telemetry/d",
            "MQTT 5: the alert topic"
        );
        assert_eq!(
            clear.properties().unwrap().user_properties,
            vec![
                ("sequenceNumber".to_string(), "7".to_string()),
                ("MessageType".to_string(), "AlertCleared".to_string())
            ]
        );
        let summary = g.summary(&input, Bytes::from_static(b"{}"));
        assert_eq!(summary.topic(), b"summaries/telemetry/d");
        let p = summary.properties().unwrap();
        assert_eq!(
            p.user_properties,
            vec![("MessageType".into(), "Summary".into())]
        );
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        // MQTT 3.1.1 has no properties: clears go to a topic of their own.
        let mut g4 = Generic::new(
            Version::V4,
            vec!["telemetry/#".into()],
            1,
            "edgefilter/twin",
            Template::parse("alerts/{topic}").unwrap(),
            None,
        )
        .with_rule_topics(
            Some(Template::parse("cleared/{topic}").unwrap()),
            Template::parse("sum/{topic}").unwrap(),
        );
        let clear = g4.clear(&input, Bytes::from_static(b"{}"), InputProps::None);
        assert_eq!(
            (clear.topic(), clear.properties()),
            (&b"cleared/telemetry/d"[..], None)
        );
        assert_eq!(g4.summary(&input, Bytes::new()).topic(), b"sum/telemetry/d");
    }

    #[test]
    fn azure_clears_and_summaries_carry_their_message_type() {
        let mut a = Azure::new("dev1", "filter", "input1", "output1", None);
        let bag = PropertyBag::decode("sequenceNumber=3&%24.cdid=dev1&%24.cmid=sensor");
        let clear = a.clear(Bytes::new(), InputProps::Bag(Box::new(bag)));
        let topic = String::from_utf8(clear.topic().to_vec()).unwrap();
        assert!(
            topic.starts_with("devices/dev1/modules/filter/messages/events/"),
            "{topic}"
        );
        assert!(topic.contains("%24.on=output1"), "{topic}");
        assert!(topic.contains("MessageType=AlertCleared"), "{topic}");
        assert!(topic.contains("sequenceNumber=3"), "{topic}");
        let mut a = a.with_summary_output("stats");
        let summary = String::from_utf8(a.summary(Bytes::new()).topic().to_vec()).unwrap();
        assert!(summary.contains("%24.on=stats"), "{summary}");
        assert!(summary.contains("MessageType=Summary"), "{summary}");
        assert!(summary.contains("%24.ct=application%2Fjson"), "{summary}");
    }

    #[test]
    fn dead_letters_name_the_reason() {
        let g = generic();
        let dl = g
            .dead_letter(
                Bytes::from_static(b"{}"),
                "not_json",
                &Bytes::from_static(b"telemetry/d"),
                InputProps::None,
            )
            .unwrap();
        assert_eq!(dl.topic(), b"edgefilter/deadletter");
        let p = dl.properties().unwrap();
        assert!(p
            .user_properties
            .contains(&("edgefilter-reason".into(), "not_json".into())));
        assert!(p
            .user_properties
            .contains(&("edgefilter-topic".into(), "telemetry/d".into())));
    }
}
