//! edgeHub's topic names (io: MQTT in → parse, batch → MQTT out, twin): the filters a module
//! subscribes to, the topics it publishes to, and the parsing of every topic edgeHub publishes
//! to it. Pure functions over strings, as in the Python SDK's
//! `iothub/pipeline/mqtt_topic_iothub.py` (`_get_topic_base`, `is_input_topic`).
//!
//! Device and module ids go into topics **raw**, never percent-encoded: edgeHub fills its
//! `devices/{deviceId}/modules/{moduleId}/inputs/{inputName}` template with the raw ids and
//! delivers only where the topic matches a subscription filter literally, and the SDK never
//! encodes them ("Neither Device ID nor Module ID should be URL encoded in a topic string").
//! An IoT Edge device id may hold `- : . + % _ # * ? ! ( ) , = @ ; $ '` (IoT Hub's identity rules), so
//! `gw:01@plant` is `devices/gw:01@plant/...` on the wire. Percent-encoding is only for what
//! the SDK encodes: request ids (`$rid`), property-bag keys and values ([`super::propbag`]),
//! and the SAS resource ([`super::sas`]).

use percent_encoding::percent_decode_str;

use super::propbag::{OutputProperties, PropertyBag};
use super::sas::encode_component;
use crate::topic::MAX_TOPIC_LEN;

/// Twin responses (full twin and reported-patch acknowledgements). Subscribe exactly this.
pub const TWIN_RESPONSE_FILTER: &str = "$iothub/twin/res/#";
/// Desired-property patches.
pub const TWIN_DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";
/// Direct method requests.
pub const METHODS_FILTER: &str = "$iothub/methods/POST/#";

const TWIN_RESPONSE_PREFIX: &str = "$iothub/twin/res/";
const TWIN_DESIRED_PREFIX: &str = "$iothub/twin/PATCH/properties/desired";
const METHODS_PREFIX: &str = "$iothub/methods/POST/";

/// A topic that is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic {topic:?}: {reason}")]
pub struct TopicError {
    pub topic: String,
    pub reason: &'static str,
}

fn topic_error(topic: &str, reason: &'static str) -> TopicError {
    TopicError {
        topic: topic.chars().take(200).collect(),
        reason,
    }
}

/// A message that arrived on one of the module's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputTopic {
    /// The input name (`input1`), percent-decoded.
    pub input_name: String,
    /// The message's properties.
    pub properties: PropertyBag,
}

/// The answer to a twin request: `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<v>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinResponse {
    /// 200 for a full twin, 204 for an accepted reported patch, 4xx/5xx for errors.
    pub status: u16,
    /// The request id the request carried.
    pub rid: String,
    /// The reported properties' new version (sent with 204).
    pub version: Option<u64>,
}

/// What an inbound PUBLISH from edgeHub is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A message on one of the module's inputs.
    Input(InputTopic),
    /// A twin response.
    TwinResponse(TwinResponse),
    /// A desired-properties patch (the body is the patch); `version` from the topic.
    DesiredPatch { version: Option<u64> },
    /// A direct method call (the body is its payload).
    MethodRequest { name: String, rid: String },
}

/// The topics of one module, built once from its raw device and module ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleTopics {
    device_id: String,
    module_id: String,
    /// `devices/<dev>/modules/<mod>/`, ids raw.
    base: String,
}

impl ModuleTopics {
    pub fn new(device_id: &str, module_id: &str) -> ModuleTopics {
        ModuleTopics {
            device_id: device_id.to_string(),
            module_id: module_id.to_string(),
            base: format!("devices/{device_id}/modules/{module_id}/"),
        }
    }

    /// `devices/<dev>/modules/<mod>/inputs/#`: every input of this module.
    pub fn input_filter(&self) -> String {
        format!("{}inputs/#", self.base)
    }

    /// `devices/<dev>/modules/<mod>/messages/events/`: where outputs are published, followed
    /// by the property bag.
    pub fn events_prefix(&self) -> String {
        format!("{}messages/events/", self.base)
    }

    /// The topic that sends a message with `properties` to `output_name`.
    pub fn events_topic(&self, output_name: &str, properties: &OutputProperties) -> String {
        let mut topic = self.events_prefix();
        properties.encode_into(output_name, &mut topic);
        topic
    }

    /// The topic for the alert of a message that arrived on `input_topic`: its properties
    /// forwarded as [`OutputProperties::alert_from_input`] describes, sent to `output_name`.
    pub fn alert_topic(&self, input_topic: &str, output_name: &str) -> Result<String, TopicError> {
        let input = self.parse_input(input_topic)?;
        let topic = self.events_topic(
            output_name,
            &OutputProperties::alert_from_input(&input.properties),
        );
        // Percent-encoding can triple a property bag: a legal input topic can give an events
        // topic longer than MQTT's 65,535 bytes. (Only the length: device ids may hold `+`
        // and `#`.)
        if topic.len() > MAX_TOPIC_LEN {
            return Err(topic_error(
                input_topic,
                "its alert topic cannot be published",
            ));
        }
        Ok(topic)
    }

    /// Parses `devices/<dev>/modules/<mod>/inputs/<name>[/<property bag>]`. The device and
    /// module must be this module's, compared raw (as the SDK's `is_input_topic` does: an
    /// encoded id is another id); any input name parses and is percent-decoded (the SDK's
    /// `get_input_name_from_topic`). Device ids hold no `/`, so the levels split cleanly.
    pub fn parse_input(&self, topic: &str) -> Result<InputTopic, TopicError> {
        let rest = topic
            .strip_prefix("devices/")
            .ok_or_else(|| topic_error(topic, "not an input topic"))?;
        let mut parts = rest.splitn(6, '/');
        let (dev, modules, module, inputs, name) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if modules != "modules" || inputs != "inputs" {
            return Err(topic_error(topic, "not an input topic"));
        }
        if dev != self.device_id || module != self.module_id {
            return Err(topic_error(topic, "input topic of another module"));
        }
        if name.is_empty() {
            return Err(topic_error(topic, "input topic without an input name"));
        }
        Ok(InputTopic {
            input_name: decode(name),
            properties: PropertyBag::decode(parts.next().unwrap_or_default()),
        })
    }

    /// Sorts an inbound topic into input message, twin response, desired patch or method call.
    pub fn classify(&self, topic: &str) -> Result<Inbound, TopicError> {
        if topic.starts_with(TWIN_RESPONSE_PREFIX) {
            parse_twin_response(topic).map(Inbound::TwinResponse)
        } else if topic.starts_with(TWIN_DESIRED_PREFIX) {
            parse_desired_patch(topic).map(|version| Inbound::DesiredPatch { version })
        } else if topic.starts_with(METHODS_PREFIX) {
            parse_method_request(topic).map(|(name, rid)| Inbound::MethodRequest { name, rid })
        } else {
            self.parse_input(topic).map(Inbound::Input)
        }
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `?$k=v&$k=v` → decoded pairs, leading `$` stripped from keys (the SDK's `_extract_properties`).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|e| !e.is_empty()).map(|entry| {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        (decode(k).trim_start_matches('$').to_string(), decode(v))
    })
}

/// The part after `/?` of `<path>/?<query>`, or "" when there is no query.
fn query_of<'a>(topic: &str, rest: &'a str) -> Result<&'a str, TopicError> {
    if rest.is_empty() || rest == "/" {
        return Ok("");
    }
    rest.strip_prefix("/?")
        .or_else(|| rest.strip_prefix('?'))
        .ok_or_else(|| topic_error(topic, "unexpected text before the query"))
}

fn parse_version(topic: &str, v: &str) -> Result<u64, TopicError> {
    v.parse()
        .map_err(|_| topic_error(topic, "$version is not a non-negative integer"))
}

/// `$iothub/twin/GET/?$rid=<rid>`: ask for the full twin.
pub fn twin_get_topic(rid: &str) -> String {
    format!("$iothub/twin/GET/?$rid={}", encode_component(rid))
}

/// `$iothub/twin/PATCH/properties/reported/?$rid=<rid>`: send a reported-properties patch.
pub fn twin_reported_topic(rid: &str) -> String {
    format!(
        "$iothub/twin/PATCH/properties/reported/?$rid={}",
        encode_component(rid)
    )
}

/// `$iothub/methods/res/<status>/?$rid=<rid>`: answer a direct method call.
pub fn method_response_topic(status: u16, rid: &str) -> String {
    format!(
        "$iothub/methods/res/{status}/?$rid={}",
        encode_component(rid)
    )
}

/// Parses `$iothub/twin/res/<status>/?$rid=<rid>[&$version=<v>]`.
pub fn parse_twin_response(topic: &str) -> Result<TwinResponse, TopicError> {
    let rest = topic
        .strip_prefix(TWIN_RESPONSE_PREFIX)
        .ok_or_else(|| topic_error(topic, "not a twin response topic"))?;
    let (status, rest) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let status: u16 = status
        .parse()
        .map_err(|_| topic_error(topic, "twin response status is not a number"))?;
    let mut rid = None;
    let mut version = None;
    for (k, v) in query_pairs(query_of(topic, rest)?) {
        match k.as_str() {
            "rid" => rid = Some(v),
            "version" => version = Some(parse_version(topic, &v)?),
            _ => {}
        }
    }
    let rid = rid
        .filter(|r| !r.is_empty())
        .ok_or_else(|| topic_error(topic, "twin response without $rid"))?;
    Ok(TwinResponse {
        status,
        rid,
        version,
    })
}

/// Parses `$iothub/twin/PATCH/properties/desired/[?$version=<v>]` into the patch's version.
pub fn parse_desired_patch(topic: &str) -> Result<Option<u64>, TopicError> {
    let rest = topic
        .strip_prefix(TWIN_DESIRED_PREFIX)
        .ok_or_else(|| topic_error(topic, "not a desired-properties patch topic"))?;
    let mut version = None;
    for (k, v) in query_pairs(query_of(topic, rest)?) {
        if k == "version" {
            version = Some(parse_version(topic, &v)?);
        }
    }
    Ok(version)
}

/// Parses `$iothub/methods/POST/<name>/?$rid=<rid>` into (method name, request id).
pub fn parse_method_request(topic: &str) -> Result<(String, String), TopicError> {
    let rest = topic
        .strip_prefix(METHODS_PREFIX)
        .ok_or_else(|| topic_error(topic, "not a method request topic"))?;
    let (name, rest) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if name.is_empty() {
        return Err(topic_error(topic, "method request without a name"));
    }
    let rid = query_pairs(query_of(topic, rest)?)
        .filter(|(k, _)| k == "rid")
        .map(|(_, v)| v)
        .last()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| topic_error(topic, "method request without $rid"))?;
    Ok((decode(name), rid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> ModuleTopics {
        ModuleTopics::new("Device1", "Module1")
    }

    #[test]
    fn subscription_filters() {
        assert_eq!(
            topics().input_filter(),
            "devices/Device1/modules/Module1/inputs/#"
        );
        assert_eq!(TWIN_RESPONSE_FILTER, "$iothub/twin/res/#");
        assert_eq!(
            TWIN_DESIRED_FILTER,
            "$iothub/twin/PATCH/properties/desired/#"
        );
    }

    /// Every character IoT Hub allows in a device id, with the module
    /// name characters `[A-Za-z0-9_-]`.
    const ODD_DEVICE_IDS: [&str; 5] = [
        "gw:01@plant",
        "dev$1",
        "a(b)=c",
        "-:.+%_#*?!(),=@;$'",
        "x%2Fy%20z",
    ];

    #[test]
    fn ids_go_into_topics_raw() {
        let t = ModuleTopics::new("gw:01@plant", "filter_module-2");
        assert_eq!(
            t.input_filter(),
            "devices/gw:01@plant/modules/filter_module-2/inputs/#"
        );
        assert_eq!(
            t.events_prefix(),
            "devices/gw:01@plant/modules/filter_module-2/messages/events/"
        );
        assert_eq!(
            ModuleTopics::new("dev$1", "m").input_filter(),
            "devices/dev$1/modules/m/inputs/#"
        );
        assert_eq!(
            ModuleTopics::new("a(b)=c", "m").events_prefix(),
            "devices/a(b)=c/modules/m/messages/events/"
        );
        assert_eq!(
            ModuleTopics::new("-:.+%_#*?!(),=@;$'", "m").input_filter(),
            "devices/-:.+%_#*?!(),=@;$'/modules/m/inputs/#"
        );
        // A '%' is part of the id, not an escape.
        assert_eq!(
            ModuleTopics::new("x%2Fy%20z", "m").input_filter(),
            "devices/x%2Fy%20z/modules/m/inputs/#"
        );
    }

    #[test]
    fn odd_ids_round_trip_through_input_and_alert_topics() {
        for dev in ODD_DEVICE_IDS {
            let t = ModuleTopics::new(dev, "filtermodule");
            // What edgeHub delivers: its template with the raw ids, the bag encoded.
            let input = format!(
                "devices/{dev}/modules/filtermodule/inputs/input1/sequenceNumber=3\
                 &%24.ct=application%2Fjson&%24.cdid={}",
                crate::azure::sas::encode_component(dev)
            );
            let parsed = t
                .parse_input(&input)
                .unwrap_or_else(|e| panic!("{dev}: {e}"));
            assert_eq!(parsed.input_name, "input1", "{dev}");
            assert_eq!(parsed.properties.get("$.cdid"), Some(dev), "{dev}");
            assert_eq!(
                t.alert_topic(&input, "output1").unwrap(),
                format!(
                    "devices/{dev}/modules/filtermodule/messages/events/\
                     %24.on=output1&%24.ct=application%2Fjson&%24.cdid={}\
                     &MessageType=Alert&sequenceNumber=3",
                    crate::azure::sas::encode_component(dev)
                ),
                "{dev}"
            );
        }
    }

    #[test]
    fn an_encoded_id_is_another_device() {
        // The old, wrong encoding of gw:01@plant names another device: not our input.
        let t = ModuleTopics::new("gw:01@plant", "m");
        assert_eq!(
            t.parse_input("devices/gw%3A01%40plant/modules/m/inputs/input1")
                .unwrap_err()
                .reason,
            "input topic of another module"
        );
        let t = ModuleTopics::new("x%2Fy", "m");
        assert!(t.parse_input("devices/x%2Fy/modules/m/inputs/i").is_ok());
        assert!(t.parse_input("devices/x/y/modules/m/inputs/i").is_err());
        assert!(t.parse_input("devices/x%252Fy/modules/m/inputs/i").is_err());
    }

    #[test]
    fn parses_edgehubs_input_fixture() {
        let t = "devices/Device1/modules/Module1/inputs/input1/\
                 Foo=Bar&%24.ce=utf-8&%24.ct=application%2Fjson&%24.cdid=fromDevice1&%24.cmid=fromModule1";
        let input = topics().parse_input(t).unwrap();
        assert_eq!(input.input_name, "input1");
        assert_eq!(input.properties.get("Foo"), Some("Bar"));
        assert_eq!(input.properties.get("$.ct"), Some("application/json"));
        assert_eq!(input.properties.get("$.cmid"), Some("fromModule1"));
        assert_eq!(input.properties.len(), 5);
        assert_eq!(topics().classify(t).unwrap(), Inbound::Input(input));
    }

    #[test]
    fn any_input_name_parses_and_the_bag_may_be_missing() {
        let t = topics();
        for (topic, name, props) in [
            (
                "devices/Device1/modules/Module1/inputs/control",
                "control",
                0,
            ),
            (
                "devices/Device1/modules/Module1/inputs/control/",
                "control",
                0,
            ),
            (
                "devices/Device1/modules/Module1/inputs/in%2F2/a=1",
                "in/2",
                1,
            ),
        ] {
            let input = t.parse_input(topic).unwrap();
            assert_eq!(input.input_name, name, "{topic}");
            assert_eq!(input.properties.len(), props, "{topic}");
        }
    }

    #[test]
    fn foreign_or_malformed_input_topics_are_refused() {
        let t = topics();
        for (topic, reason) in [
            (
                "devices/Other/modules/Module1/inputs/input1",
                "input topic of another module",
            ),
            (
                "devices/Device1/modules/Other/inputs/input1",
                "input topic of another module",
            ),
            (
                "devices/Device1/modules/Module1/inputs/",
                "input topic without an input name",
            ),
            (
                "devices/Device1/modules/Module1/inputs",
                "input topic without an input name",
            ),
            (
                "devices/Device1/messages/devicebound/x",
                "not an input topic",
            ),
            ("telemetry/dev1", "not an input topic"),
            ("", "not an input topic"),
        ] {
            assert_eq!(t.parse_input(topic).unwrap_err().reason, reason, "{topic}");
        }
        assert_eq!(
            t.classify("telemetry/x").unwrap_err().to_string(),
            "topic \"telemetry/x\": not an input topic"
        );
    }

    #[test]
    fn events_topics_put_the_output_first() {
        let t = ModuleTopics::new("dev1", "filtermodule");
        let props = OutputProperties::alert_from_input(&PropertyBag::decode(
            "%24.ct=application%2Fjson&%24.ce=utf-8",
        ));
        assert_eq!(
            t.events_topic("output1", &props),
            "devices/dev1/modules/filtermodule/messages/events/\
             %24.on=output1&%24.ct=application%2Fjson&%24.ce=utf-8&MessageType=Alert"
        );
    }

    #[test]
    fn alert_topic_for_a_sensor_message() {
        let t = ModuleTopics::new("dev1", "filtermodule");
        let alert = t
            .alert_topic(
                "devices/dev1/modules/filtermodule/inputs/input1/sequenceNumber=7&batchId=b-1\
                 &%24.ct=application%2Fjson&%24.ce=utf-8&%24.cdid=dev1\
                 &%24.cmid=SimulatedTemperatureSensor",
                "output1",
            )
            .unwrap();
        assert_eq!(
            alert,
            "devices/dev1/modules/filtermodule/messages/events/%24.on=output1\
             &%24.ct=application%2Fjson&%24.ce=utf-8&%24.cdid=dev1\
             &%24.cmid=SimulatedTemperatureSensor&MessageType=Alert&batchId=b-1&sequenceNumber=7"
        );
        assert!(t
            .alert_topic("devices/dev1/modules/x/inputs/input1", "o")
            .is_err());
    }

    #[test]
    fn alert_topics_longer_than_mqtt_allows_are_refused() {
        // A legal 40,000-byte input topic whose property value percent-encodes to 3× its size.
        let t = ModuleTopics::new("dev1", "filtermodule");
        let input = format!(
            "devices/dev1/modules/filtermodule/inputs/input1/k={}",
            "!".repeat(40_000)
        );
        assert!(input.len() <= MAX_TOPIC_LEN);
        let e = t.alert_topic(&input, "output1").unwrap_err();
        assert_eq!(e.reason, "its alert topic cannot be published");
        let props = OutputProperties::alert_from_input(&t.parse_input(&input).unwrap().properties);
        assert!(t.events_topic("output1", &props).len() > 120_000);
    }

    #[test]
    fn twin_request_topics() {
        assert_eq!(twin_get_topic("1"), "$iothub/twin/GET/?$rid=1");
        assert_eq!(
            twin_reported_topic("r 2"),
            "$iothub/twin/PATCH/properties/reported/?$rid=r%202"
        );
        assert_eq!(
            method_response_topic(200, "5"),
            "$iothub/methods/res/200/?$rid=5"
        );
    }

    #[test]
    fn parses_twin_responses() {
        assert_eq!(
            parse_twin_response("$iothub/twin/res/200/?$rid=1").unwrap(),
            TwinResponse {
                status: 200,
                rid: "1".into(),
                version: None
            }
        );
        assert_eq!(
            parse_twin_response("$iothub/twin/res/204/?$rid=abc&$version=12").unwrap(),
            TwinResponse {
                status: 204,
                rid: "abc".into(),
                version: Some(12)
            }
        );
        assert_eq!(
            parse_twin_response("$iothub/twin/res/400/?$version=3&$rid=r%202").unwrap(),
            TwinResponse {
                status: 400,
                rid: "r 2".into(),
                version: Some(3)
            }
        );
        assert_eq!(
            topics().classify("$iothub/twin/res/500/?$rid=9").unwrap(),
            Inbound::TwinResponse(TwinResponse {
                status: 500,
                rid: "9".into(),
                version: None
            })
        );
        for (topic, reason) in [
            (
                "$iothub/twin/res/abc/?$rid=1",
                "twin response status is not a number",
            ),
            ("$iothub/twin/res/200/", "twin response without $rid"),
            ("$iothub/twin/res/200/?$rid=", "twin response without $rid"),
            (
                "$iothub/twin/res/204/?$rid=1&$version=-1",
                "$version is not a non-negative integer",
            ),
            (
                "$iothub/twin/res/200/x?$rid=1",
                "unexpected text before the query",
            ),
            ("$iothub/twin/GET/?$rid=1", "not a twin response topic"),
        ] {
            assert_eq!(
                parse_twin_response(topic).unwrap_err().reason,
                reason,
                "{topic}"
            );
        }
    }

    #[test]
    fn parses_desired_patch_versions() {
        assert_eq!(
            parse_desired_patch("$iothub/twin/PATCH/properties/desired/?$version=3").unwrap(),
            Some(3)
        );
        assert_eq!(
            parse_desired_patch("$iothub/twin/PATCH/properties/desired/").unwrap(),
            None
        );
        assert_eq!(
            parse_desired_patch("$iothub/twin/PATCH/properties/desired").unwrap(),
            None
        );
        assert!(parse_desired_patch("$iothub/twin/PATCH/properties/desired/?$version=x").is_err());
        assert_eq!(
            topics()
                .classify("$iothub/twin/PATCH/properties/desired/?$version=44")
                .unwrap(),
            Inbound::DesiredPatch { version: Some(44) }
        );
    }

    #[test]
    fn parses_method_requests() {
        assert_eq!(
            parse_method_request("$iothub/methods/POST/reset/?$rid=7").unwrap(),
            ("reset".to_string(), "7".to_string())
        );
        assert_eq!(
            topics()
                .classify("$iothub/methods/POST/set%20x/?$rid=a")
                .unwrap(),
            Inbound::MethodRequest {
                name: "set x".into(),
                rid: "a".into()
            }
        );
        assert!(parse_method_request("$iothub/methods/POST//?$rid=7").is_err());
        assert!(parse_method_request("$iothub/methods/POST/reset/").is_err());
    }
}
