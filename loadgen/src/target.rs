//! Tooling: where loadgen's messages go and where their alerts come back, per target. Only
//! topics depend on the target; the rest of loadgen is target-agnostic. Pure logic, tested
//! with literal fixtures.
//!
//! - `mqtt`: telemetry on `<prefix>/<device>`, alerts on `--alert-filter` (`alerts/#`).
//! - `azure`: loadgen publishes as edgeHub delivers a SimulatedTemperatureSensor message to a
//!   module input, `devices/<dev>/modules/<mod>/inputs/<input>/<property bag>`, and reads the
//!   module's output from `devices/<dev>/modules/<mod>/messages/events/#`. A plain broker stands
//!   in for edgeHub's routing. The bag is the sensor's as edgeHub passes it on:
//!   `sequenceNumber=<seq>&batchId=<GUID of the run>&$.ct=application/json&$.ce=utf-8&$.cdid=<dev>&$.cmid=SimulatedTemperatureSensor`
//!   (encoded with edgefilter's property-bag code). `sequenceNumber` makes every topic unique, so
//!   a [`TopicTemplate`] keeps everything but the number ready and a message's topic costs two
//!   copies and an integer.

use edgefilter_mqtt::azure::propbag::{encode_pairs_into, sys, PropertyBag, ALERT, MESSAGE_TYPE};
use edgefilter_mqtt::azure::ModuleTopics;

/// The module whose input loadgen feeds with `--target azure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureModule {
    /// The IoT Edge device (`--device-id`). edgeHub stamps it as `$.cdid` on the messages of
    /// the sensor module running on it.
    pub device_id: String,
    /// The filter module (`--module-id`).
    pub module_id: String,
    /// The input the route delivers to (`--input-name`).
    pub input_name: String,
    /// The output the filter sends alerts to (`--output-name`).
    pub output_name: String,
    /// The sensor's `batchId` property: one GUID per run, as the sensor has one per process.
    pub batch_id: String,
}

/// The module that sends the telemetry, as edgeHub names it in `$.cmid`.
pub const SENSOR_MODULE: &str = "SimulatedTemperatureSensor";
/// The application property carrying the message's sequence number.
pub const SEQUENCE_NUMBER: &str = "sequenceNumber";

/// Topic layout of the system under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Plain MQTT: telemetry on `<prefix>/<device>`.
    Mqtt { input_prefix: String },
    /// An IoT Edge module's input and events topics.
    Azure(AzureModule),
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Mqtt { .. } => "mqtt",
            Target::Azure(_) => "azure",
        }
    }

    /// Where the messages of `device` go.
    pub fn input_topic(&self, device: &str) -> TopicTemplate {
        match self {
            Target::Mqtt { input_prefix } => {
                TopicTemplate::fixed(format!("{input_prefix}/{device}"))
            }
            Target::Azure(m) => m.input_topic(),
        }
    }

    /// The alert subscription when `--alert-filter` is not given.
    pub fn default_alert_filter(&self) -> String {
        match self {
            Target::Mqtt { .. } => "alerts/#".to_string(),
            Target::Azure(m) => format!("{}#", m.topics().events_prefix()),
        }
    }

    /// What every alert's topic must show, where the target carries properties.
    pub fn property_check(&self) -> Option<PropertyCheck> {
        match self {
            Target::Mqtt { .. } => None,
            Target::Azure(m) => Some(PropertyCheck::new(m)),
        }
    }
}

impl AzureModule {
    pub fn topics(&self) -> ModuleTopics {
        ModuleTopics::new(&self.device_id, &self.module_id)
    }

    /// `devices/<dev>/modules/<mod>/inputs/<input>/` + the sensor's bag: edgeHub's
    /// `ModuleEndpoint` template filled with the raw ids and input name (as [`ModuleTopics`]
    /// does), the bag percent-encoded.
    pub fn input_topic(&self) -> TopicTemplate {
        let filter = self.topics().input_filter(); // devices/<dev>/modules/<mod>/inputs/#
        let mut head = filter.trim_end_matches('#').to_string();
        head.push_str(&self.input_name);
        head.push('/');
        let bag_start = head.len();
        encode_pairs_into(&mut head, [(SEQUENCE_NUMBER, "")]);
        let mut full = head.clone();
        encode_pairs_into(
            &mut full,
            [
                ("batchId", self.batch_id.as_str()),
                (sys::CONTENT_TYPE, "application/json"),
                (sys::CONTENT_ENCODING, "utf-8"),
                (sys::CONNECTION_DEVICE_ID, self.device_id.as_str()),
                (sys::CONNECTION_MODULE_ID, SENSOR_MODULE),
            ],
        );
        let tail = full[head.len()..].to_string();
        // Without a sequence number (the readiness probe): the bag from `batchId` on.
        let mut unnumbered = head[..bag_start].to_string();
        unnumbered.push_str(&tail[1..]);
        TopicTemplate {
            head: head.into_bytes(),
            tail: tail.into_bytes(),
            unnumbered: unnumbered.into_bytes(),
            numbered: true,
        }
    }
}

/// A device's input topic, ready to be written for any message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    /// Everything before the sequence number.
    head: Vec<u8>,
    /// Everything after it.
    tail: Vec<u8>,
    /// The topic of a message without a sequence number.
    unnumbered: Vec<u8>,
    /// Whether topics carry the sequence number at all.
    numbered: bool,
}

impl TopicTemplate {
    /// The same topic for every message.
    pub fn fixed(topic: String) -> TopicTemplate {
        TopicTemplate {
            head: Vec::new(),
            tail: Vec::new(),
            unnumbered: topic.into_bytes(),
            numbered: false,
        }
    }

    /// Appends the topic of message `seq` (`None`: a message without one, such as a probe).
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>, seq: Option<u64>) {
        match seq {
            Some(seq) if self.numbered => {
                out.extend_from_slice(&self.head);
                out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                out.extend_from_slice(&self.tail);
            }
            _ => out.extend_from_slice(&self.unnumbered),
        }
    }

    /// The topic of message `seq` as a string.
    pub fn topic(&self, seq: Option<u64>) -> String {
        let mut out = Vec::new();
        self.write(&mut out, seq);
        // Built from &strs and ASCII digits.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The longest topic this template writes (a u64 has at most 20 digits).
    pub fn max_len(&self) -> usize {
        let numbered = if self.numbered {
            self.head.len() + 20 + self.tail.len()
        } else {
            0
        };
        numbered.max(self.unnumbered.len())
    }
}

/// The check of an alert's properties with `--target azure`: its topic must be the module's
/// events topic with a bag that starts with `$.on=<output>` and contains `MessageType=Alert`
/// and the message's `sequenceNumber` (forwarded from the input, as the SDK-based module did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyCheck {
    events_prefix: Vec<u8>,
    output_name: String,
    /// `%24.on=<output>` as the SDK encodes it.
    output_pair: Vec<u8>,
}

impl PropertyCheck {
    pub fn new(m: &AzureModule) -> PropertyCheck {
        let mut output_pair = String::new();
        encode_pairs_into(
            &mut output_pair,
            [(sys::OUTPUT_NAME, m.output_name.as_str())],
        );
        PropertyCheck {
            events_prefix: m.topics().events_prefix().into_bytes(),
            output_name: m.output_name.clone(),
            output_pair: output_pair.into_bytes(),
        }
    }

    /// Whether the alert of message `seq` arrived on a topic with the right properties.
    pub fn ok(&self, topic: &[u8], seq: u64) -> bool {
        let Some(bag) = topic.strip_prefix(&self.events_prefix[..]) else {
            return false;
        };
        // Fast path: the SDK's encoding, compared as bytes.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(seq).as_bytes();
        let mut pairs = bag.split(|&b| b == b'&');
        if pairs.next() == Some(&self.output_pair[..]) {
            let (mut alert, mut numbered) = (false, false);
            for pair in pairs {
                alert |= pair == b"MessageType=Alert";
                numbered |= pair
                    .strip_prefix(b"sequenceNumber=")
                    .is_some_and(|n| n == digits);
            }
            if alert && numbered {
                return true;
            }
        }
        // Any other encoding of the same properties (edgeHub decodes before it routes).
        let bag = PropertyBag::decode(&String::from_utf8_lossy(bag));
        let first_is_output = bag
            .iter()
            .next()
            .is_some_and(|(k, v)| k == sys::OUTPUT_NAME && v == self.output_name);
        let has = |key: &str, value: &str| bag.iter().any(|(k, v)| k == key && v == value);
        first_is_output
            && has(MESSAGE_TYPE, ALERT)
            && has(
                SEQUENCE_NUMBER,
                std::str::from_utf8(digits).unwrap_or_default(),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> AzureModule {
        AzureModule {
            device_id: "dev1".into(),
            module_id: "edgefilter".into(),
            input_name: "input1".into(),
            output_name: "output1".into(),
            batch_id: "6f1ed5f2-4b9c-4a7a-8f7e-0c2a1d3e5b7f".into(),
        }
    }

    #[test]
    fn mqtt_topics_are_per_device() {
        let t = Target::Mqtt {
            input_prefix: "telemetry".into(),
        };
        let dev = t.input_topic("dev-3");
        assert_eq!(dev.topic(Some(42)), "telemetry/dev-3");
        assert_eq!(dev.topic(None), "telemetry/dev-3");
        assert_eq!(dev.max_len(), 15);
        assert_eq!(t.default_alert_filter(), "alerts/#");
        assert_eq!(t.property_check(), None);
    }

    #[test]
    fn azure_input_topic_is_the_sensors_as_edgehub_delivers_it() {
        let t = Target::Azure(module());
        let dev = t.input_topic("dev-3");
        let mut out = b"x".to_vec();
        dev.write(&mut out, Some(42));
        assert_eq!(
            std::str::from_utf8(&out[1..]).unwrap(),
            "devices/dev1/modules/edgefilter/inputs/input1/sequenceNumber=42\
             &batchId=6f1ed5f2-4b9c-4a7a-8f7e-0c2a1d3e5b7f&%24.ct=application%2Fjson\
             &%24.ce=utf-8&%24.cdid=dev1&%24.cmid=SimulatedTemperatureSensor"
        );
        // Every device of the run goes to the module's one input.
        assert_eq!(t.input_topic("dev-0"), dev);
        assert_eq!(
            dev.topic(None),
            "devices/dev1/modules/edgefilter/inputs/input1/\
             batchId=6f1ed5f2-4b9c-4a7a-8f7e-0c2a1d3e5b7f&%24.ct=application%2Fjson\
             &%24.ce=utf-8&%24.cdid=dev1&%24.cmid=SimulatedTemperatureSensor"
        );
        assert_eq!(
            dev.max_len(),
            dev.topic(Some(u64::MAX)).len(),
            "20 digits at most"
        );
        assert_eq!(
            t.default_alert_filter(),
            "devices/dev1/modules/edgefilter/messages/events/#"
        );
        // edgefilter's own parser reads it back as the module's input with the sensor's bag.
        let parsed = module().topics().parse_input(&dev.topic(Some(7))).unwrap();
        assert_eq!(parsed.input_name, "input1");
        let p = &parsed.properties;
        assert_eq!(p.get("sequenceNumber"), Some("7"));
        assert_eq!(p.get("$.ct"), Some("application/json"));
        assert_eq!(p.get("$.ce"), Some("utf-8"));
        assert_eq!(p.get("$.cmid"), Some("SimulatedTemperatureSensor"));
    }

    #[test]
    fn odd_ids_are_raw_in_topics_and_encoded_in_the_bag() {
        let m = AzureModule {
            device_id: "gw:01@plant".into(),
            module_id: "filter_2".into(),
            input_name: "input-1".into(),
            output_name: "out 1".into(),
            batch_id: "b".into(),
        };
        assert_eq!(
            m.input_topic().topic(Some(0)),
            "devices/gw:01@plant/modules/filter_2/inputs/input-1/sequenceNumber=0\
             &batchId=b&%24.ct=application%2Fjson&%24.ce=utf-8&%24.cdid=gw%3A01%40plant\
             &%24.cmid=SimulatedTemperatureSensor"
        );
        let check = PropertyCheck::new(&m);
        assert!(check.ok(
            b"devices/gw:01@plant/modules/filter_2/messages/events/%24.on=out%201&MessageType=Alert&sequenceNumber=5",
            5
        ));
        assert!(!check.ok(
            b"devices/gw%3A01%40plant/modules/filter_2/messages/events/%24.on=out%201&MessageType=Alert&sequenceNumber=5",
            5
        ));
    }

    #[test]
    fn alert_properties_are_checked() {
        let check = PropertyCheck::new(&module());
        let events = "devices/dev1/modules/edgefilter/messages/events/";
        let ok = |bag: &str, seq| check.ok(format!("{events}{bag}").as_bytes(), seq);
        // What the stand-in forwarder and edgefilter send.
        assert!(ok("%24.on=output1&MessageType=Alert&sequenceNumber=42", 42));
        assert!(ok(
            "%24.on=output1&%24.ct=application%2Fjson&%24.ce=utf-8&MessageType=Alert\
             &batchId=6f1ed5f2-4b9c-4a7a-8f7e-0c2a1d3e5b7f&sequenceNumber=42",
            42
        ));
        // Another encoding of the same properties.
        assert!(ok(
            "$.on=output1&Message%54ype=Alert&sequenceNumber=%342",
            42
        ));
        // Faults.
        assert!(!ok(
            "%24.on=output1&MessageType=Alert&sequenceNumber=43",
            42
        ));
        assert!(!ok(
            "%24.on=output1&MessageType=Alert&sequenceNumber=420",
            42
        ));
        assert!(
            !ok("%24.on=output1&sequenceNumber=42", 42),
            "no MessageType"
        );
        assert!(!ok("%24.on=output1&MessageType=Info&sequenceNumber=42", 42));
        assert!(!ok(
            "%24.on=output2&MessageType=Alert&sequenceNumber=42",
            42
        ));
        assert!(
            !ok("MessageType=Alert&%24.on=output1&sequenceNumber=42", 42),
            "$.on first"
        );
        assert!(
            !ok("%24.on=output1&MessageType=Alert", 42),
            "no sequenceNumber"
        );
        assert!(!ok("", 42));
        assert!(!check.ok(
            b"devices/dev2/modules/edgefilter/messages/events/%24.on=output1&MessageType=Alert&sequenceNumber=42",
            42
        ));
        assert!(!check.ok(b"alerts/telemetry/dev-1", 42));
    }
}
