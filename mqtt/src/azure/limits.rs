//! edgeHub's two size limits on what a module publishes (batch → MQTT out), counted as edgeHub
//! counts them, so that a publish over either is caught before it is written or committed:
//!
//! - **the packet**: edgeHub's MQTT decoder (DotNetty `MqttDecoder`, `MaxInboundMessageSize`
//!   262,144 in `appsettings_hub.json`) refuses a packet whose whole size — fixed header,
//!   topic, packet id and payload — is over the limit, and closes the connection. A QoS 1
//!   publish that does this is sent again after every reconnect: it stops the module.
//! - **the message**: a packet under that whose `Message.Size()` is over 262,144
//!   (`Constants.MaxMessageSize`) is refused by edgeHub's router, and the protocol head
//!   acknowledges it all the same: dropped without a trace for the module. The size is the
//!   body's bytes plus the name and value lengths of every property edgeHub holds for it —
//!   the property bag's pairs and the system properties edgeHub adds itself.
//!
//! Pure functions over the topic and sizes; `flow` calls [`check`] for every publish under
//! IoT Edge.

use super::propbag::PropertyBag;

/// The largest packet edgeHub's decoder accepts, fixed header included.
pub const MAX_PACKET_BYTES: usize = 262_144;
/// The largest `Message.Size()` edgeHub routes.
pub const MAX_MESSAGE_SIZE: usize = 262_144;

/// Why edgeHub would not take a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    #[error(
        "its packet would be {0} bytes; edgeHub closes the connection on a packet over \
         {MAX_PACKET_BYTES}"
    )]
    Packet(usize),
    #[error(
        "its size as edgeHub counts it (body and properties) would be {0}; edgeHub drops a \
         message over {MAX_MESSAGE_SIZE}"
    )]
    Message(usize),
}

/// `edgeMessageId`: a GUID in .NET's default format, 36 characters.
const EDGE_MESSAGE_ID: usize = "edgeMessageId".len() + 36;
/// `edgeHubOriginInterface`: `internal` for a module of the edge device itself.
const ORIGIN_INTERFACE: usize = "edgeHubOriginInterface".len() + "internal".len();

/// The name edgeHub gives a property-bag key it takes as a system property
/// (`SystemProperties.IncomingSystemPropertiesMap`); any other key is an application property
/// under its own name.
fn system_name(wire: &str) -> Option<&'static str> {
    Some(match wire {
        "$.exp" => "absolute-expiry-time",
        "$.cid" => "cid",
        "$.mid" => "messageId",
        "$.to" => "to",
        "$.uid" => "userId",
        "ack" => "ack",
        "$.on" => "outputName",
        "$.ct" => "contentType",
        "$.ce" => "contentEncoding",
        "$.schema" => "messageSchema",
        "iothub-operation" => "operation",
        "$.ctime" => "creationTime",
        "$.ifid" => "iothub-interface-id",
        "$.sub" => "dt-subject",
        _ => return None,
    })
}

/// A .NET string's `Length`: UTF-16 code units.
fn units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// edgeHub's `Message.Size()` of a message a module publishes to `topic`
/// (`devices/<dev>/modules/<mod>/messages/events/<property bag>`) with a body of `body_len`
/// bytes: the body, the bag's pairs (each key once; the last value wins) under the names
/// edgeHub gives them, the template's ids as `connectionDeviceId` and `connectionModuleId`,
/// and what edgeHub adds before it checks (`RoutingEdgeHub.AddEdgeSystemProperties`). None for
/// a topic that is not an events topic (twin requests are not routed, and not counted so).
pub fn message_size(topic: &str, body_len: usize) -> Option<usize> {
    let mut levels = topic.splitn(7, '/');
    let (Some("devices"), Some(device), Some("modules"), Some(module)) =
        (levels.next(), levels.next(), levels.next(), levels.next())
    else {
        return None;
    };
    if (levels.next(), levels.next()) != (Some("messages"), Some("events")) {
        return None;
    }
    let bag = PropertyBag::decode(levels.next().unwrap_or_default().trim_end_matches('/'));
    let mut seen: Vec<&str> = Vec::with_capacity(bag.len());
    let mut properties = 0;
    // Later pairs replace earlier ones with the same key, as edgeHub's dictionaries do.
    for (key, value) in bag.iter().rev() {
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        properties += system_name(key).map_or_else(|| units(key), units) + units(value);
    }
    let connection =
        "connectionDeviceId".len() + units(device) + "connectionModuleId".len() + units(module);
    Some(body_len + properties + connection + EDGE_MESSAGE_ID + ORIGIN_INTERFACE)
}

/// Whether edgeHub takes a publish to `topic` of `packet_size` bytes whose body is
/// `body_len` bytes: the packet first (over it, the connection would close), then the
/// message size of an events topic.
pub fn check(topic: &[u8], body_len: usize, packet_size: usize) -> Result<(), TooLarge> {
    if packet_size > MAX_PACKET_BYTES {
        return Err(TooLarge::Packet(packet_size));
    }
    let size = std::str::from_utf8(topic)
        .ok()
        .and_then(|t| message_size(t, body_len));
    match size {
        Some(n) if n > MAX_MESSAGE_SIZE => Err(TooLarge::Message(n)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system properties edgeHub holds for every event of module `filter` of device
    /// `dev1`: connectionDeviceId+dev1 (22), connectionModuleId+filter (24), edgeMessageId+GUID
    /// (49), edgeHubOriginInterface+internal (30).
    const ALWAYS: usize = 22 + 24 + 49 + 30;

    #[test]
    fn a_sensor_alert_counts_its_body_properties_and_what_edgehub_adds() {
        let topic = "devices/dev1/modules/filter/messages/events/%24.on=output1\
                     &%24.ct=application%2Fjson&%24.ce=utf-8&MessageType=Alert\
                     &sequenceNumber=42";
        // outputName+output1 (17), contentType+application/json (27), contentEncoding+utf-8
        // (20), MessageType+Alert (16), sequenceNumber+42 (16).
        assert_eq!(
            message_size(topic, 180),
            Some(180 + ALWAYS + 17 + 27 + 20 + 16 + 16)
        );
    }

    #[test]
    fn hop_properties_count_under_edgehubs_names() {
        // $.ctime → creationTime (12), $.schema → messageSchema (13), $.sub → dt-subject (10),
        // iothub-operation → operation (9), ack → ack (3); $.cdid and $.cmid stay application
        // properties under their own names (6 characters each).
        let topic = "devices/dev1/modules/filter/messages/events/%24.on=o\
                     &%24.ctime=t&%24.schema=s&%24.sub=c&iothub-operation=x&ack=y\
                     &%24.cdid=d&%24.cmid=m";
        let props = (10 + 1) + (12 + 1) + (13 + 1) + (10 + 1) + (9 + 1) + (3 + 1) + (6 + 1) * 2;
        assert_eq!(message_size(topic, 0), Some(ALWAYS + props));
    }

    #[test]
    fn lengths_are_utf16_units_of_the_decoded_text_and_keys_count_once() {
        // "é" (2 bytes, %C3%A9) is one unit, "😀" (4 bytes) two; the repeated key counts once,
        // with its last value.
        let topic = "devices/dev1/modules/filter/messages/events/k=%C3%A9%F0%9F%98%80&z=1&z=22/";
        assert_eq!(message_size(topic, 0), Some(ALWAYS + (1 + 3) + (1 + 2)));
        // A raw device id's characters count as they are.
        assert_eq!(
            message_size("devices/gw:01@plant/modules/filter/messages/events/", 0),
            Some(ALWAYS - 4 + "gw:01@plant".len())
        );
    }

    #[test]
    fn only_events_topics_are_routed_and_counted() {
        for topic in [
            "$iothub/twin/PATCH/properties/reported/?$rid=1",
            "$iothub/twin/GET/?$rid=2",
            "devices/dev1/modules/filter/inputs/input1/a=b",
            "devices/dev1/messages/events/a=b",
        ] {
            assert_eq!(message_size(topic, 10), None, "{topic}");
        }
    }

    #[test]
    fn check_takes_the_packet_first_then_the_message() {
        let topic = b"devices/dev1/modules/filter/messages/events/%24.on=output1";
        let props = ALWAYS + 17;
        assert_eq!(check(topic, 10, MAX_PACKET_BYTES), Ok(()));
        assert_eq!(
            check(topic, 10, MAX_PACKET_BYTES + 1),
            Err(TooLarge::Packet(MAX_PACKET_BYTES + 1))
        );
        let at = MAX_MESSAGE_SIZE - props;
        assert_eq!(check(topic, at, 1000), Ok(()));
        assert_eq!(
            check(topic, at + 1, 1000),
            Err(TooLarge::Message(MAX_MESSAGE_SIZE + 1))
        );
        // A twin report is only a packet.
        assert_eq!(
            check(
                b"$iothub/twin/PATCH/properties/reported/?$rid=1",
                300_000,
                1000
            ),
            Ok(())
        );
    }
}
