//! What edgeHub makes of a module's PUBLISH (test tooling, module → edgeHub): its inbound
//! topic templates (`appsettings_hub.json`, `mqttTopicNameConversion.InboundTemplates`) for
//! messages, and the twin operations of `TwinAddressHelper`. A topic matching none is
//! dropped — and still PUBACKed. Pure.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

/// A module publish, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromModule {
    /// A message to one of its outputs (`$.on`, when the bag names one), routed onward.
    Event { output: Option<String> },
    /// `$iothub/twin/GET/?$rid=<rid>`.
    TwinGet { rid: String },
    /// `$iothub/twin/PATCH/properties/reported/?$rid=<rid>`.
    TwinReported { rid: String },
    /// `$iothub/methods/res/<status>/?$rid=<rid>`.
    MethodResponse,
    /// Matches no template (or names another identity): dropped.
    Unknown,
}

fn rid_of(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "$rid" || *k == "%24rid")
        .map(|(_, v)| percent_decode_str(v).decode_utf8_lossy().into_owned())
        .filter(|r| !r.is_empty())
}

/// Classifies `topic`, published by module `module` of device `device` (raw ids).
pub fn classify(topic: &str, device: &str, module: &str) -> FromModule {
    if let Some(q) = topic.strip_prefix("$iothub/twin/GET/?") {
        return rid_of(q).map_or(FromModule::Unknown, |rid| FromModule::TwinGet { rid });
    }
    if let Some(q) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/?") {
        return rid_of(q).map_or(FromModule::Unknown, |rid| FromModule::TwinReported { rid });
    }
    if let Some(rest) = topic.strip_prefix("$iothub/methods/res/") {
        return match rest.split_once("/?") {
            Some((status, q)) if status.parse::<u16>().is_ok() && rid_of(q).is_some() => {
                FromModule::MethodResponse
            }
            _ => FromModule::Unknown,
        };
    }
    let Some(params) = event_params(topic, device, module) else {
        return FromModule::Unknown;
    };
    let output = pairs(params).find(|(k, _)| k == "$.on").map(|(_, v)| v);
    FromModule::Event { output }
}

/// The property bag of `devices/{deviceId}/modules/{moduleId}/messages/events[/][{params}[/]]`
/// for this module (None: not its events template).
fn event_params<'a>(topic: &'a str, device: &str, module: &str) -> Option<&'a str> {
    let rest = topic
        .strip_prefix("devices/")?
        .strip_prefix(device)?
        .strip_prefix("/modules/")?
        .strip_prefix(module)?
        .strip_prefix("/messages/events")?;
    let params = match rest {
        "" | "/" => "",
        _ => {
            let p = rest.strip_prefix('/')?;
            p.strip_suffix('/').unwrap_or(p)
        }
    };
    (!params.contains('/')).then_some(params)
}

/// The bag's `key=value` pairs, percent-decoded (pairs without `=` are left out).
fn pairs(params: &str) -> impl Iterator<Item = (String, String)> + '_ {
    params
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
}

/// edgeHub's `IncomingSystemPropertiesMap` (`Hub.Core/SystemProperties.cs`): the bag names it
/// turns into system properties, and the names they have there (whose length counts).
const INCOMING_SYSTEM_PROPERTIES: [(&str, &str); 14] = [
    ("$.exp", "absolute-expiry-time"),
    ("$.cid", "cid"),
    ("$.mid", "messageId"),
    ("$.to", "to"),
    ("$.uid", "userId"),
    ("ack", "ack"),
    ("$.on", "outputName"),
    ("$.ct", "contentType"),
    ("$.ce", "contentEncoding"),
    ("$.schema", "messageSchema"),
    ("iothub-operation", "operation"),
    ("$.ctime", "creationTime"),
    ("$.ifid", "iothub-interface-id"),
    ("$.sub", "dt-subject"),
];

/// `Message.Size()` of a module's event as edgeHub computes it before routing
/// (`RoutingEdgeHub.ProcessMessageInternal` → `ValidateMessageSize`; `Routing.Core/Message.cs`):
/// the body's bytes plus, for every application and system property, the .NET string length
/// (UTF-16 units) of its name and value. The bag's pairs become system properties under
/// their edgeHub names or application properties (`ProtocolGatewayMessageConverter.ToMessage`);
/// the template's ids become `connectionDeviceId` and `connectionModuleId`; edgeHub adds
/// `edgeMessageId` (a GUID, 36 characters) and `edgeHubOriginInterface` (`internal`: the
/// module runs on the edge device). None when `topic` is not this module's events template.
pub fn message_size(topic: &str, device: &str, module: &str, body_len: usize) -> Option<usize> {
    let params = event_params(topic, device, module)?;
    let guid = "00000000-0000-0000-0000-000000000000";
    let mut system: BTreeMap<String, String> = [
        ("connectionDeviceId", device),
        ("connectionModuleId", module),
        ("edgeMessageId", guid),
        ("edgeHubOriginInterface", "internal"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut application = BTreeMap::new();
    for (k, v) in pairs(params) {
        match INCOMING_SYSTEM_PROPERTIES
            .iter()
            .find(|(wire, _)| *wire == k)
        {
            Some((_, name)) => system.insert(name.to_string(), v),
            None => application.insert(k, v),
        };
    }
    let units = |s: &String| s.encode_utf16().count();
    let properties: usize = system
        .iter()
        .chain(application.iter())
        .map(|(k, v)| units(k) + units(v))
        .sum();
    Some(body_len + properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_size_counts_as_edgehub_does() {
        // A SimulatedTemperatureSensor alert from module `m` of device `dev1`, body 200 bytes:
        // connectionDeviceId+dev1 (22), connectionModuleId+m (19), edgeMessageId+GUID (49),
        // edgeHubOriginInterface+internal (30), outputName+output1 (17),
        // contentType+application/json (27), contentEncoding+utf-8 (20), MessageType+Alert (16),
        // sequenceNumber+7 (15), $.cdid+dev1 (10).
        let topic = "devices/dev1/modules/m/messages/events/%24.on=output1\
                     &%24.ct=application%2Fjson&%24.ce=utf-8&%24.cdid=dev1\
                     &MessageType=Alert&sequenceNumber=7";
        assert_eq!(
            message_size(topic, "dev1", "m", 200),
            Some(200 + 22 + 19 + 49 + 30 + 17 + 27 + 20 + 16 + 15 + 10)
        );
        // UTF-16 units, not bytes: "é" is one, "😀" two.
        let topic = "devices/dev1/modules/m/messages/events/k=%C3%A9%F0%9F%98%80";
        assert_eq!(
            message_size(topic, "dev1", "m", 0),
            Some(22 + 19 + 49 + 30 + 1 + 3)
        );
        assert_eq!(message_size("alerts/x", "dev1", "m", 1), None);
    }

    #[test]
    fn templates_and_twin_operations() {
        let c = |t: &str| classify(t, "gw:01@plant", "m");
        let ev = |o: Option<&str>| FromModule::Event {
            output: o.map(str::to_string),
        };
        assert_eq!(
            c("devices/gw:01@plant/modules/m/messages/events/%24.on=output1&MessageType=Alert"),
            ev(Some("output1"))
        );
        assert_eq!(
            c("devices/gw:01@plant/modules/m/messages/events/a=1/"),
            ev(None)
        );
        assert_eq!(c("devices/gw:01@plant/modules/m/messages/events"), ev(None));
        assert_eq!(
            c("devices/gw:01@plant/modules/m/messages/events/"),
            ev(None)
        );
        for unknown in [
            "devices/gw%3A01%40plant/modules/m/messages/events/%24.on=output1",
            "devices/gw:01@plant/modules/other/messages/events/",
            "devices/gw:01@plant/modules/m/messages/eventsX",
            "devices/gw:01@plant/modules/m/messages/events/a/b",
            "devices/gw:01@plant/modules/m/outputs/output1",
            "alerts/x",
            "$iothub/twin/GET/?$rid=",
            "$iothub/twin/GET/",
            "$iothub/methods/res/abc/?$rid=1",
        ] {
            assert_eq!(c(unknown), FromModule::Unknown, "{unknown}");
        }
        assert_eq!(
            c("$iothub/twin/GET/?$rid=7"),
            FromModule::TwinGet { rid: "7".into() }
        );
        assert_eq!(
            c("$iothub/twin/PATCH/properties/reported/?$rid=r%202"),
            FromModule::TwinReported { rid: "r 2".into() }
        );
        assert_eq!(
            c("$iothub/methods/res/200/?$rid=5"),
            FromModule::MethodResponse
        );
    }
}
