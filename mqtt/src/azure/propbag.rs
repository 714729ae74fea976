//! Message property bags (io: MQTT in → parse, and batch → MQTT out): edgeHub carries a
//! message's properties in the topic, after the input name on the way in and after
//! `messages/events/` on the way out, as `key=value` pairs joined by `&`, keys and values
//! percent-encoded (`$` → `%24`, `/` → `%2F`).
//!
//! Encoding follows the Python SDK exactly (`iothub/pipeline/mqtt_topic_iothub.py`,
//! `encode_message_properties_in_topic`): `urlencode(pairs, quote_via=urllib.parse.quote)` with
//! `safe=""`, so only ASCII letters, digits and `-._~` stay as they are ([`super::sas::COMPONENT`]);
//! a space is `%20`, never `+`. System properties come first in the order
//! `$.on, $.mid, $.cid, $.uid, $.ct, $.ce, $.ifid, $.exp` (each only when non-empty), then
//! custom properties sorted by key. Decoding follows `extract_message_properties_from_topic`:
//! split at `&` and `=`, percent-decode (a `+` stays a `+`), pairs without `=` are skipped,
//! any order is accepted.

use std::collections::BTreeMap;

use percent_encoding::{percent_decode_str, utf8_percent_encode};

use super::sas::COMPONENT;

/// Wire names of the system properties.
pub mod sys {
    /// Output name (module → edgeHub).
    pub const OUTPUT_NAME: &str = "$.on";
    pub const MESSAGE_ID: &str = "$.mid";
    pub const CORRELATION_ID: &str = "$.cid";
    pub const USER_ID: &str = "$.uid";
    pub const CONTENT_TYPE: &str = "$.ct";
    pub const CONTENT_ENCODING: &str = "$.ce";
    pub const INTERFACE_ID: &str = "$.ifid";
    pub const EXPIRY: &str = "$.exp";
    pub const TO: &str = "$.to";
    pub const CREATION_TIME: &str = "$.ctime";
    pub const SCHEMA: &str = "$.schema";
    /// The SDK's name for a message's acknowledgement mode (kept on the message, not sent).
    pub const IOTHUB_ACK: &str = "iothub-ack";
    /// Device that sent the message to edgeHub (edgeHub → module).
    pub const CONNECTION_DEVICE_ID: &str = "$.cdid";
    /// Module that sent the message to edgeHub (edgeHub → module).
    pub const CONNECTION_MODULE_ID: &str = "$.cmid";
}

/// The custom property that marks an alert.
pub const MESSAGE_TYPE: &str = "MessageType";
/// Its value.
pub const ALERT: &str = "Alert";

/// A decoded property bag: pairs in wire order (duplicates kept; [`PropertyBag::get`] returns
/// the last, as the SDK's dict assignment does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyBag {
    pairs: Vec<(String, String)>,
}

impl PropertyBag {
    pub fn new() -> PropertyBag {
        PropertyBag::default()
    }

    /// Decodes `k=v&k=v` (without the leading topic). Never fails: invalid UTF-8 after
    /// percent-decoding becomes U+FFFD, as Python's `unquote` does; an empty text is an empty bag.
    pub fn decode(encoded: &str) -> PropertyBag {
        let mut bag = PropertyBag::new();
        for entry in encoded.split('&') {
            // The SDK splits at every '=' and takes the first two parts; encoded values
            // contain no raw '='.
            let mut parts = entry.split('=');
            let key = parts.next().unwrap_or_default();
            let Some(value) = parts.next() else {
                continue;
            };
            bag.push(decode_component(key), decode_component(value));
        }
        bag
    }

    /// Appends a pair.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// The value of `key` (the last one when repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pairs in wire order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Encodes the pairs in their order.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode_pairs_into(&mut out, self.iter());
        out
    }
}

fn decode_component(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Appends `k=v&k=v` for `pairs` to `out`, percent-encoding keys and values; adds a `&` first
/// when `out` already holds pairs (does not end in `/` and is not empty).
pub fn encode_pairs_into<'a>(
    out: &mut String,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    for (k, v) in pairs {
        if !out.is_empty() && !out.ends_with('/') {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, COMPONENT));
        out.push('=');
        out.extend(utf8_percent_encode(v, COMPONENT));
    }
}

/// The properties of a message a module sends to an output, as the Python SDK's `Message`
/// holds them. Build one from an input message with [`OutputProperties::from_input`] or
/// [`OutputProperties::alert_from_input`], encode it with [`OutputProperties::encode_into`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputProperties {
    /// `$.mid`
    pub message_id: Option<String>,
    /// `$.cid`
    pub correlation_id: Option<String>,
    /// `$.uid`
    pub user_id: Option<String>,
    /// `$.ct`
    pub content_type: Option<String>,
    /// `$.ce`
    pub content_encoding: Option<String>,
    /// `$.ifid`
    pub interface_id: Option<String>,
    /// `$.exp`
    pub expiry_time_utc: Option<String>,
    /// Application properties, sorted by key (the SDK sorts them before encoding).
    pub custom: BTreeMap<String, String>,
}

impl OutputProperties {
    /// The properties to forward with an input message: exactly those the replaced Python
    /// module forwarded by sending the received `Message` on (azure-iot-device 2.14,
    /// `extract_message_properties_from_topic` then `encode_message_properties_in_topic`):
    /// - `$.mid`, `$.cid`, `$.uid`, `$.ct`, `$.ce`, `$.exp` are kept as system properties
    ///   (the SDK reads them into the message's fields and writes them back out; an empty
    ///   one is left out);
    /// - `$.to` is dropped (the SDK ignores it), and `iothub-ack` (the SDK keeps it as the
    ///   message's `ack`, which it never sends);
    /// - every other key is kept as an application property: the sensor's `sequenceNumber`
    ///   and `batchId`, and what edgeHub tells about the message — `$.ctime`, `$.schema`,
    ///   `$.sub`, `iothub-operation`, `ack` (which edgeHub takes back as system properties)
    ///   and `$.cdid`, `$.cmid` (the sensor's device and module, application properties
    ///   from then on);
    /// - except `$.on`, which edgeHub never hands a module: the output is ours to name.
    pub fn from_input(input: &PropertyBag) -> OutputProperties {
        let mut out = OutputProperties::default();
        for (k, v) in input.iter() {
            let slot = match k {
                sys::MESSAGE_ID => &mut out.message_id,
                sys::CORRELATION_ID => &mut out.correlation_id,
                sys::USER_ID => &mut out.user_id,
                sys::CONTENT_TYPE => &mut out.content_type,
                sys::CONTENT_ENCODING => &mut out.content_encoding,
                sys::EXPIRY => &mut out.expiry_time_utc,
                sys::TO | sys::IOTHUB_ACK | sys::OUTPUT_NAME => continue,
                _ => {
                    out.custom.insert(k.to_string(), v.to_string());
                    continue;
                }
            };
            *slot = Some(v.to_string());
        }
        out
    }

    /// [`Self::from_input`] plus `MessageType=Alert` (replacing any `MessageType`), what the
    /// Python module set before forwarding.
    pub fn alert_from_input(input: &PropertyBag) -> OutputProperties {
        let mut out = OutputProperties::from_input(input);
        out.custom
            .insert(MESSAGE_TYPE.to_string(), ALERT.to_string());
        out
    }

    /// The system properties in the SDK's order, with `$.on` first; empty ones are left out.
    fn system_pairs<'a>(
        &'a self,
        output_name: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        [
            (sys::OUTPUT_NAME, Some(output_name)),
            (sys::MESSAGE_ID, self.message_id.as_deref()),
            (sys::CORRELATION_ID, self.correlation_id.as_deref()),
            (sys::USER_ID, self.user_id.as_deref()),
            (sys::CONTENT_TYPE, self.content_type.as_deref()),
            (sys::CONTENT_ENCODING, self.content_encoding.as_deref()),
            (sys::INTERFACE_ID, self.interface_id.as_deref()),
            (sys::EXPIRY, self.expiry_time_utc.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
    }

    /// Appends the encoded bag for `output_name` to `out` (an events topic prefix ending in
    /// `/`, or an empty string).
    pub fn encode_into(&self, output_name: &str, out: &mut String) {
        encode_pairs_into(out, self.system_pairs(output_name));
        encode_pairs_into(
            out,
            self.custom.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
    }

    /// The encoded bag for `output_name`.
    pub fn encode(&self, output_name: &str) -> String {
        let mut out = String::new();
        self.encode_into(output_name, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A property bag as edgeHub's own tests write one.
    const EDGEHUB_BAG: &str =
        "Foo=Bar&%24.ce=utf-8&%24.ct=application%2Fjson&%24.cdid=fromDevice1&%24.cmid=fromModule1";

    #[test]
    fn decodes_edgehubs_fixture() {
        let bag = PropertyBag::decode(EDGEHUB_BAG);
        let pairs: Vec<_> = bag.iter().collect();
        assert_eq!(
            pairs,
            [
                ("Foo", "Bar"),
                ("$.ce", "utf-8"),
                ("$.ct", "application/json"),
                ("$.cdid", "fromDevice1"),
                ("$.cmid", "fromModule1"),
            ]
        );
        assert_eq!(bag.get("$.ct"), Some("application/json"));
        assert_eq!(bag.encode(), EDGEHUB_BAG);
    }

    #[test]
    fn decode_tolerates_empty_odd_and_repeated_entries() {
        assert!(PropertyBag::decode("").is_empty());
        let bag = PropertyBag::decode("a=1&&novalue&b=&a=2&c=x+y%20z&d=%ZZ&e=%FF");
        assert_eq!(bag.get("a"), Some("2"));
        assert_eq!(bag.get("b"), Some(""));
        assert_eq!(bag.get("c"), Some("x+y z"));
        assert_eq!(bag.get("novalue"), None);
        assert_eq!(bag.get("d"), Some("%ZZ"));
        assert_eq!(bag.get("e"), Some("\u{FFFD}"));
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        let mut bag = PropertyBag::new();
        bag.push("$.a b", "x/y+z=w&v~_.-");
        // python3 -c "import urllib.parse as u; print(u.quote('\$.a b',safe='')+'='+u.quote('x/y+z=w&v~_.-',safe=''))"
        assert_eq!(bag.encode(), "%24.a%20b=x%2Fy%2Bz%3Dw%26v~_.-");
    }

    #[test]
    fn alert_properties_from_the_sensor_follow_the_sdk_order() {
        // What edgeHub delivers for a SimulatedTemperatureSensor message.
        let input = PropertyBag::decode(
            "sequenceNumber=42&batchId=6f1ed5f2-4b9c-4a7a-8f7e-0c2a1d3e5b7f\
             &%24.ct=application%2Fjson&%24.ce=utf-8\
             &%24.cdid=dev1&%24.cmid=SimulatedTemperatureSensor",
        );
        let out = OutputProperties::alert_from_input(&input);
        assert_eq!(out.content_type.as_deref(), Some("application/json"));
        assert_eq!(out.custom.len(), 5);
        // The sensor's device and module stay, as application properties sorted by code
        // point (`$` before capitals).
        assert_eq!(
            out.encode("output1"),
            "%24.on=output1&%24.ct=application%2Fjson&%24.ce=utf-8\
             &%24.cdid=dev1&%24.cmid=SimulatedTemperatureSensor&MessageType=Alert\
             &batchId=6f1ed5f2-4b9c-4a7a-8f7e-0c2a1d3e5b7f&sequenceNumber=42"
        );
    }

    #[test]
    fn the_seeds_properties_system_ones_in_the_sdk_order_the_rest_as_application_ones() {
        // Everything edgeHub hands a module (its OutgoingSystemPropertiesMap), and more.
        let input = PropertyBag::decode(
            "%24.exp=2030-01-01T00%3A00%3A00Z&%24.uid=u&%24.cid=c&%24.mid=m\
             &%24.to=%2Fdevices%2Fd&%24.ctime=t&%24.schema=s&%24.sub=c1&%24.on=old\
             &%24.ifid=i&iothub-ack=full&ack=none&iothub-operation=x&%24.ct=\
             &MessageType=Info&z=1",
        );
        let out = OutputProperties::alert_from_input(&input);
        assert_eq!(
            out.encode("output1"),
            "%24.on=output1&%24.mid=m&%24.cid=c&%24.uid=u\
             &%24.exp=2030-01-01T00%3A00%3A00Z\
             &%24.ctime=t&%24.ifid=i&%24.schema=s&%24.sub=c1&MessageType=Alert&ack=none\
             &iothub-operation=x&z=1"
        );
    }

    #[test]
    fn the_protocol_example_is_reproduced() {
        // The documented example: an alert to output1 with content type and encoding.
        let input = PropertyBag::decode("%24.ct=application%2Fjson&%24.ce=utf-8");
        let mut topic = String::from("devices/dev1/modules/filtermodule/messages/events/");
        OutputProperties::alert_from_input(&input).encode_into("output1", &mut topic);
        assert_eq!(
            topic,
            "devices/dev1/modules/filtermodule/messages/events/\
             %24.on=output1&%24.ct=application%2Fjson&%24.ce=utf-8&MessageType=Alert"
        );
    }

    #[test]
    fn custom_keys_sort_by_code_point_like_python() {
        let mut out = OutputProperties::default();
        for k in ["b", "B", "a", "é", "_"] {
            out.custom.insert(k.into(), "1".into());
        }
        // sorted(["b","B","a","é","_"]) == ['B', '_', 'a', 'b', 'é']
        assert_eq!(out.encode("o"), "%24.on=o&B=1&_=1&a=1&b=1&%C3%A9=1");
    }
}
