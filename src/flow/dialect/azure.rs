//! IoT Edge's edgeHub dialect (MQTT 3.1.1 as edgeHub speaks it to a module): the module's input, output and twin
//! topics, the property bag on every output, the twin GET/reported requests with their
//! request ids. Pure, like the rest of [`dialect`](super).

use bytes::Bytes;

use crate::mqtt::azure::propbag::{sys, OutputProperties, PropertyBag, MESSAGE_TYPE};
use crate::mqtt::azure::topics::{self as az_topics, Inbound as AzInbound, ModuleTopics};
use crate::mqtt::azure::twin_doc;
use crate::mqtt::codec::{InPublish, OutPublish, Version};
use crate::twin::Twin;

use super::*;

/// The IoT Edge (edgeHub) dialect: MQTT 3.1.1, inputs and outputs as topics with property
/// bags, the twin on `$iothub/twin/...` (as the Azure IoT SDKs use them).
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
    pub(super) pending_get: Option<String>,
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
    pub(super) fn device_key(props: &InputProps) -> Bytes {
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
            .insert(MESSAGE_TYPE.into(), RuleOutput::Clear.message_type().into());
        self.events(&self.output_name, &props, payload)
    }

    /// A window summary to `--summary-output`, `MessageType=Summary`, JSON.
    pub fn summary(&mut self, payload: Bytes) -> OutPublish {
        let props = json_properties(RuleOutput::Summary, None);
        self.events(&self.summary_output, &props, payload)
    }

    /// An array-format publish of `kind` (alerts and clears to `--output-name`, summaries to
    /// `--summary-output`).
    pub fn array(&mut self, kind: RuleOutput, payload: Bytes) -> OutPublish {
        let props = json_properties(kind, Some("array"));
        let output = match kind {
            RuleOutput::Summary => &self.summary_output,
            RuleOutput::Alert | RuleOutput::Clear => &self.output_name,
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
fn json_properties(kind: RuleOutput, batch: Option<&str>) -> OutputProperties {
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
