//! Topic and property conventions of the broker we talk to — the part of MQTT in/out that
//! differs between a generic broker (SPEC §3.2: `telemetry/#` in, `alerts/{topic}` out with
//! MQTT 5 user properties, the twin on `<prefix>/desired` and `<prefix>/reported`) and Azure
//! IoT Edge's edgeHub (SPEC §3.3). [`Flow`](super::Flow) asks the dialect where an inbound
//! publish belongs and how to address what it publishes; everything else is shared. Pure:
//! no I/O (the IoT Edge identity and credentials live in `io::azure`).

use bytes::Bytes;

use crate::mqtt::azure::propbag::{sys, OutputProperties, PropertyBag, MESSAGE_TYPE};
use crate::mqtt::azure::topics::{self as az_topics, Inbound as AzInbound, ModuleTopics};
use crate::mqtt::azure::twin_doc;
use crate::mqtt::codec::{InPublish, OutPublish, PublishProperties, Version};
use crate::mqtt::topic::{self, Template, TopicCache};
use crate::twin::Twin;

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
pub enum Output {
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

impl Output {
    /// The `MessageType` property value.
    pub fn message_type(self) -> &'static str {
        match self {
            Output::Alert => "Alert",
            Output::Clear => "AlertCleared",
            Output::Summary => "Summary",
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
    /// decided and alerted in arrival order, SPEC §2) and of per-device state.
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
    pub fn array_key(&mut self, kind: Output, topic: &Bytes) -> Bytes {
        match self {
            Dialect::Generic(g) => g.topic_for(kind, topic),
            Dialect::Azure(_) => Bytes::new(),
        }
    }

    /// An array-format publish of `kind` for `key` (see [`Dialect::array_key`]).
    pub fn array(&mut self, kind: Output, key: &Bytes, payload: Bytes) -> OutPublish {
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

    /// Whether `topic` may be published to, as a name (encodability is the codec's check):
    /// a generic broker's topic names hold no wildcard and no NUL — a PUBLISH to
    /// `telemetry/#`, which some brokers accept, must not give an alert on `alerts/telemetry/#`.
    /// IoT Edge device ids may hold `+` and `#` (PROTOCOL.md), so edgeHub's topics are not
    /// checked here.
    pub fn check_topic(&self, topic: &[u8]) -> Result<(), topic::Unpublishable> {
        match self {
            Dialect::Generic(_) => match std::str::from_utf8(topic) {
                Ok(t) => topic::check_publishable(t),
                Err(_) => Err(topic::Unpublishable::Invalid),
            },
            Dialect::Azure(_) => Ok(()),
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

/// The IoT Edge (edgeHub) dialect: MQTT 3.1.1, inputs and outputs as topics with property
/// bags, the twin on `$iothub/twin/...` (`azure/PROTOCOL.md`).
#[derive(Debug)]
pub struct Azure {
    topics: ModuleTopics,
    input_name: String,
    output_name: String,
    dead_letter_output: Option<String>,
    /// Where window summaries go (`--summary-output`).
    summary_output: String,
    next_rid: u64,
    /// Request id of the full-twin GET awaiting its answer.
    pending_get: Option<String>,
}

impl Azure {
    /// `dead_letter_topic`'s last level names the output rejected messages go to
    /// (`edgefilter/deadletter` → output `deadletter`).
    pub fn new(
        device_id: &str,
        module_id: &str,
        input_name: &str,
        output_name: &str,
        dead_letter_topic: Option<&str>,
    ) -> Self {
        Azure {
            topics: ModuleTopics::new(device_id, module_id),
            input_name: input_name.to_string(),
            output_name: output_name.to_string(),
            dead_letter_output: dead_letter_topic
                .and_then(|t| t.rsplit('/').next())
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            summary_output: "summary".to_string(),
            next_rid: 1,
            pending_get: None,
        }
    }

    /// Window summaries go to `output` (default `summary`).
    pub fn with_summary_output(mut self, output: &str) -> Self {
        self.summary_output = output.to_string();
        self
    }

    fn rid(&mut self) -> String {
        let rid = self.next_rid.to_string();
        self.next_rid += 1;
        rid
    }

    pub fn subscriptions(&self) -> Vec<(Vec<String>, u8, bool)> {
        vec![(
            vec![
                self.topics.input_filter(),
                az_topics::TWIN_RESPONSE_FILTER.to_string(),
                az_topics::TWIN_DESIRED_FILTER.to_string(),
            ],
            1,
            false,
        )]
    }

    pub fn route(&mut self, p: &mut InPublish) -> Route {
        let topic = String::from_utf8_lossy(&p.topic);
        match self.topics.classify(&topic) {
            Ok(AzInbound::Input(input)) if input.input_name == self.input_name => {
                Route::Input(InputProps::Bag(Box::new(input.properties)))
            }
            Ok(AzInbound::Input(_)) | Ok(AzInbound::MethodRequest { .. }) => Route::Ignore,
            Ok(AzInbound::DesiredPatch { .. }) => Route::TwinDesired,
            Ok(AzInbound::TwinResponse(r)) => {
                if r.status == 200 && self.pending_get.as_deref() == Some(r.rid.as_str()) {
                    self.pending_get = None;
                    Route::TwinFull
                } else {
                    Route::TwinAnswer {
                        status: r.status,
                        rid: r.rid,
                    }
                }
            }
            Err(e) => {
                tracing::debug!("ignoring a publish on an unknown topic: {e}");
                Route::Ignore
            }
        }
    }

    /// The topic carries per-message properties (`sequenceNumber`, …), so it cannot be the
    /// shard key: the message's source is, the device and module edgeHub received it from
    /// (`$.cdid`, `$.cmid`).
    fn device_key(props: &InputProps) -> Bytes {
        let InputProps::Bag(bag) = props else {
            return Bytes::new();
        };
        let device = bag.get(sys::CONNECTION_DEVICE_ID).unwrap_or_default();
        let module = bag.get(sys::CONNECTION_MODULE_ID).unwrap_or_default();
        Bytes::from(format!("{device}/{module}"))
    }

    fn events(&self, output: &str, props: &OutputProperties, payload: Bytes) -> OutPublish {
        let topic = Bytes::from(self.topics.events_topic(output, props));
        OutPublish::new(Version::V4, &topic, payload, 1, false, None)
    }

    /// The alert: the original body to `--output-name`, the input's properties forwarded
    /// with `MessageType=Alert`, encoded as the Python SDK does.
    pub fn alert(&mut self, payload: Bytes, props: InputProps) -> OutPublish {
        let bag = match props {
            InputProps::Bag(bag) => *bag,
            _ => PropertyBag::new(),
        };
        self.events(
            &self.output_name,
            &OutputProperties::alert_from_input(&bag),
            payload,
        )
    }

    /// The clearing message: the original body to `--output-name`, the input's properties
    /// forwarded with `MessageType=AlertCleared`.
    pub fn clear(&mut self, payload: Bytes, props: InputProps) -> OutPublish {
        let bag = match props {
            InputProps::Bag(bag) => *bag,
            _ => PropertyBag::new(),
        };
        let mut props = OutputProperties::from_input(&bag);
        props
            .custom
            .insert(MESSAGE_TYPE.into(), Output::Clear.message_type().into());
        self.events(&self.output_name, &props, payload)
    }

    /// A window summary to `--summary-output`, `MessageType=Summary`, JSON.
    pub fn summary(&mut self, payload: Bytes) -> OutPublish {
        let props = json_properties(Output::Summary, None);
        self.events(&self.summary_output, &props, payload)
    }

    /// An array-format publish of `kind` (alerts and clears to `--output-name`, summaries to
    /// `--summary-output`).
    pub fn array(&mut self, kind: Output, payload: Bytes) -> OutPublish {
        let props = json_properties(kind, Some("array"));
        let output = match kind {
            Output::Summary => &self.summary_output,
            Output::Alert | Output::Clear => &self.output_name,
        };
        self.events(output, &props, payload)
    }

    /// `$iothub/twin/GET/?$rid=N` at QoS 1, as the Python SDK sends twin requests (paho's
    /// publish defaults to QoS 1; the SDK asks again after a reconnect). A new GET replaces
    /// the one awaited: only its answer counts. (`Flow` asks again when none comes.)
    pub fn twin_get(&mut self) -> OutPublish {
        let rid = self.rid();
        let topic = Bytes::from(az_topics::twin_get_topic(&rid));
        self.pending_get = Some(rid);
        OutPublish::new(Version::V4, &topic, Bytes::new(), 1, false, None)
    }

    /// The reported patch (`desiredVersion`: edgeHub refuses `$` in reported names), at QoS 1
    /// as the SDK sends it (resent after a reconnect until acknowledged).
    pub fn reported(&mut self, twin: &Twin) -> OutPublish {
        let rid = self.rid();
        let topic = Bytes::from(az_topics::twin_reported_topic(&rid));
        let doc = twin_doc::reported_patch_with(
            twin.threshold(),
            twin.version(),
            twin.status(),
            twin.source().as_str(),
            &twin.reported_rules(),
        );
        OutPublish::new(Version::V4, &topic, Bytes::from(doc), 1, false, None)
    }

    /// Rejected input to the dead-letter output, with the reason as properties.
    pub fn dead_letter(&self, envelope: Bytes, reason: &str, source: &Bytes) -> Option<OutPublish> {
        let output = self.dead_letter_output.as_ref()?;
        let input = self
            .topics
            .parse_input(&String::from_utf8_lossy(source))
            .map(|i| i.input_name)
            .unwrap_or_default();
        let props = json_bag([
            ("edgefilter-reason", reason.to_string()),
            ("edgefilter-input", input),
        ]);
        Some(self.events(output, &props, envelope))
    }
}

/// JSON content with `MessageType` set (and `Batch=array` for array publishes).
fn json_properties(kind: Output, batch: Option<&str>) -> OutputProperties {
    let batch = batch.map(|b| ("Batch", b.to_string()));
    json_bag(
        [(MESSAGE_TYPE, kind.message_type().to_string())]
            .into_iter()
            .chain(batch),
    )
}

/// Properties of a JSON body edgefilter wrote, with these application properties.
fn json_bag<'a>(custom: impl IntoIterator<Item = (&'a str, String)>) -> OutputProperties {
    OutputProperties {
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        custom: custom
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ..Default::default()
    }
}

/// The generic-MQTT dialect.
#[derive(Debug)]
pub struct Generic {
    pub version: Version,
    pub input_filters: Vec<String>,
    /// The input filters without their `$share/<group>/` prefix (what topics match).
    plain_filters: Vec<String>,
    pub qos: u8,
    /// QoS of the input subscription: `qos`, except on the embedded broker (see `run`).
    pub input_qos: u8,
    pub twin_desired: String,
    pub twin_reported: String,
    pub alert_topics: TopicCache,
    /// Where clearing messages and summaries go.
    pub rule_topics: Box<RuleTopics>,
    pub dead_letter_topic: Option<String>,
}

/// The topics of what the stateful rules publish (generic MQTT).
#[derive(Debug)]
pub struct RuleTopics {
    /// Clearing messages (None: the alert topic).
    pub clear: Option<TopicCache>,
    pub summary: TopicCache,
}

impl Generic {
    pub fn new(
        version: Version,
        input_filters: Vec<String>,
        qos: u8,
        twin_prefix: &str,
        alert_template: Template,
        dead_letter_topic: Option<String>,
    ) -> Self {
        let plain_filters = input_filters
            .iter()
            .map(|f| {
                f.strip_prefix("$share/")
                    .and_then(|r| r.split_once('/').map(|(_, f)| f.to_string()))
                    .unwrap_or_else(|| f.clone())
            })
            .collect();
        Generic {
            version,
            plain_filters,
            input_filters,
            qos,
            input_qos: qos,
            twin_desired: format!("{twin_prefix}/desired"),
            twin_reported: format!("{twin_prefix}/reported"),
            alert_topics: TopicCache::new(alert_template, 100_000),
            rule_topics: Box::new(RuleTopics {
                clear: None,
                summary: TopicCache::new(default_summary_template(), 100_000),
            }),
            dead_letter_topic,
        }
    }

    /// Clearing messages to `clear` (None: the alert topic), summaries to `summary`.
    pub fn with_rule_topics(mut self, clear: Option<Template>, summary: Template) -> Self {
        self.rule_topics = Box::new(RuleTopics {
            clear: clear.map(|t| TopicCache::new(t, 100_000)),
            summary: TopicCache::new(summary, 100_000),
        });
        self
    }

    /// Filters to subscribe after every CONNACK: (filters, QoS, MQTT 5 no-local).
    pub fn subscriptions(&self) -> Vec<(Vec<String>, u8, bool)> {
        vec![
            (self.input_filters.clone(), self.input_qos, true),
            // The reported document first: brokers send retained messages in the order of the
            // filters, so an earlier run's state is known before the desired one is judged.
            // No-local (MQTT 5): our own reports do not come back to us.
            (
                vec![self.twin_reported.clone(), self.twin_desired.clone()],
                1,
                true,
            ),
        ]
    }

    pub fn route(&self, p: &mut InPublish) -> Route {
        if p.topic.as_ref() == self.twin_desired.as_bytes() {
            return Route::TwinDesired;
        }
        if p.topic.as_ref() == self.twin_reported.as_bytes() {
            // Only the retained copy (sent because we subscribed); our own live reports come
            // back with the flag clear.
            return if p.retain {
                Route::TwinReported
            } else {
                Route::Ignore
            };
        }
        let topic = std::str::from_utf8(&p.topic).unwrap_or("");
        // A broker delivers only what matches a subscription; anything else (a retained
        // message on a stale subscription of a resumed session) is acknowledged and ignored.
        if self.plain_filters.iter().any(|f| topic::matches(topic, f)) {
            Route::Input(match p.properties.take() {
                Some(props) => InputProps::V5(Box::new(props)),
                None => InputProps::None,
            })
        } else {
            Route::Ignore
        }
    }

    /// The alert for an input: the original payload on the alert topic, with the input's
    /// properties plus `MessageType=Alert` (MQTT 5).
    pub fn alert(&mut self, input_topic: &Bytes, payload: Bytes, props: InputProps) -> OutPublish {
        let topic = self.alert_topics.alert_topic(input_topic);
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => Some(alert_properties(props)),
        };
        OutPublish::new(self.version, &topic, payload, self.qos, false, properties)
    }

    /// The clearing message for an input: the original payload on the clear topic, with the
    /// input's properties plus `MessageType=AlertCleared` (MQTT 5).
    pub fn clear(&mut self, input_topic: &Bytes, payload: Bytes, props: InputProps) -> OutPublish {
        let topic = self.topic_for(Output::Clear, input_topic);
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => Some(typed_properties(props, Output::Clear)),
        };
        OutPublish::new(self.version, &topic, payload, self.qos, false, properties)
    }

    /// A window summary of `device` (its input topic) on the summary topic.
    pub fn summary(&mut self, device: &Bytes, payload: Bytes) -> OutPublish {
        let topic = self.rule_topics.summary.alert_topic(device);
        let properties = self.json_properties(Output::Summary, false);
        OutPublish::new(self.version, &topic, payload, self.qos, false, properties)
    }

    /// The topic a publish of `kind` for input topic (or summary device) `topic` goes to.
    pub fn topic_for(&mut self, kind: Output, topic: &Bytes) -> Bytes {
        let rules = &mut *self.rule_topics;
        match (kind, &mut rules.clear) {
            (Output::Alert, _) | (Output::Clear, None) => self.alert_topics.alert_topic(topic),
            (Output::Clear, Some(clears)) => clears.alert_topic(topic),
            (Output::Summary, _) => rules.summary.alert_topic(topic),
        }
    }

    /// An array-format publish of `kind` on `topic`: one JSON payload for several alerts,
    /// clears or summaries.
    pub fn array(&mut self, kind: Output, topic: &Bytes, payload: Bytes) -> OutPublish {
        let properties = self.json_properties(kind, true);
        OutPublish::new(self.version, topic, payload, self.qos, false, properties)
    }

    /// The reported-properties document, retained.
    pub fn reported(&self, doc: Vec<u8>) -> OutPublish {
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => Some(PublishProperties {
                content_type: Some("application/json".into()),
                ..Default::default()
            }),
        };
        OutPublish::new(
            self.version,
            &Bytes::from(self.twin_reported.clone()),
            Bytes::from(doc),
            1,
            true,
            properties,
        )
    }

    /// A rejected input on the dead-letter topic: a JSON envelope naming the reason (both
    /// versions), plus the reason and source topic as user properties (MQTT 5).
    pub fn dead_letter(
        &self,
        envelope: Bytes,
        reason: &str,
        source: &Bytes,
        props: InputProps,
    ) -> Option<OutPublish> {
        let topic = self.dead_letter_topic.as_ref()?;
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => {
                let mut p = match props {
                    InputProps::V5(p) => *p,
                    _ => PublishProperties::default(),
                };
                strip_connection_properties(&mut p);
                p.content_type = Some("application/json".into());
                p.payload_format_indicator = Some(1);
                p.user_properties
                    .push(("edgefilter-reason".into(), reason.into()));
                p.user_properties.push((
                    "edgefilter-topic".into(),
                    String::from_utf8_lossy(source).into_owned(),
                ));
                Some(p)
            }
        };
        Some(OutPublish::new(
            self.version,
            &Bytes::from(topic.clone()),
            envelope,
            self.qos,
            false,
            properties,
        ))
    }

    /// MQTT 5: JSON content, `MessageType` for `kind`, `Batch=array` for array publishes.
    fn json_properties(&self, kind: Output, batch: bool) -> Option<PublishProperties> {
        let mut user_properties = vec![("MessageType".into(), kind.message_type().into())];
        if batch {
            user_properties.push(("Batch".into(), "array".into()));
        }
        (self.version == Version::V5).then(|| PublishProperties {
            content_type: Some("application/json".into()),
            user_properties,
            ..Default::default()
        })
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
    typed_properties(props, Output::Alert)
}

/// The input's MQTT 5 properties with `MessageType` set for `kind`.
fn typed_properties(props: InputProps, kind: Output) -> PublishProperties {
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
