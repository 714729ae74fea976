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

use percent_encoding::percent_decode_str;

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
/// under its own name. `key` is percent-encoded, as in the topic.
fn system_name(key: &str) -> Option<&'static str> {
    // Decoded on the stack: no system property's name is longer.
    let mut buf = [0u8; 16];
    let mut n = 0;
    for b in percent_decode_str(key) {
        *buf.get_mut(n)? = b;
        n += 1;
    }
    Some(match &buf[..n] {
        b"$.exp" => "absolute-expiry-time",
        b"$.cid" => "cid",
        b"$.mid" => "messageId",
        b"$.to" => "to",
        b"$.uid" => "userId",
        b"ack" => "ack",
        b"$.on" => "outputName",
        b"$.ct" => "contentType",
        b"$.ce" => "contentEncoding",
        b"$.schema" => "messageSchema",
        b"iothub-operation" => "operation",
        b"$.ctime" => "creationTime",
        b"$.ifid" => "iothub-interface-id",
        b"$.sub" => "dt-subject",
        _ => return None,
    })
}

/// A .NET string's `Length` (UTF-16 code units) of `s` percent-decoded. The decoded text is
/// taken as UTF-8, as every bag edgefilter writes is: a byte that starts a character counts
/// one unit, one that starts a 4-byte character two (a surrogate pair).
fn units(s: &str) -> usize {
    percent_decode_str(s)
        .map(|b| match b {
            0x80..=0xBF => 0,
            0xF0..=0xFF => 2,
            _ => 1,
        })
        .sum()
}

/// The bag's `key=value` pairs, still encoded, split as `PropertyBag::decode` splits them.
fn pairs(bag: &str) -> impl Iterator<Item = (&str, &str)> {
    bag.split('&').filter_map(|entry| {
        let mut parts = entry.split('=');
        Some((parts.next()?, parts.next()?))
    })
}

/// edgeHub's `Message.Size()` of a message a module publishes to `topic`
/// (`devices/<dev>/modules/<mod>/messages/events/<property bag>`) with a body of `body_len`
/// bytes: the body, the bag's pairs (each key once; the last value wins) under the names
/// edgeHub gives them, the template's ids as `connectionDeviceId` and `connectionModuleId`,
/// and what edgeHub adds before it checks (`RoutingEdgeHub.AddEdgeSystemProperties`). None for
/// a topic that is not an events topic (twin requests are not routed, and not counted so).
/// It runs for every alert: it splits the topic once and decodes keys and values in place,
/// without copying them (about 1 µs a topic on the benchmark VM; decoding the bag into
/// strings took 4). Keys are compared as they are encoded: edgefilter encodes a key always
/// the same way.
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
    let bag = levels.next().unwrap_or_default().trim_end_matches('/');
    let pairs: Vec<(&str, &str)> = pairs(bag).collect();
    let mut properties = 0;
    for (i, (key, value)) in pairs.iter().enumerate() {
        // Later pairs replace earlier ones with the same key, as edgeHub's dictionaries do.
        if pairs[i + 1..].iter().any(|(later, _)| later == key) {
            continue;
        }
        properties += system_name(key).map_or_else(|| units(key), str::len) + units(value);
    }
    let raw_units = |s: &str| s.chars().map(char::len_utf16).sum::<usize>();
    let connection = "connectionDeviceId".len()
        + raw_units(device)
        + "connectionModuleId".len()
        + raw_units(module);
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
