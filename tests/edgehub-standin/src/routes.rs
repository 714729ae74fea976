//! What edgeHub makes of a module's PUBLISH (test tooling, module → edgeHub): its inbound
//! topic templates (`appsettings_hub.json`, `mqttTopicNameConversion.InboundTemplates`) for
//! messages, and the twin operations of `TwinAddressHelper`. A topic matching none is
//! dropped — and still PUBACKed. Pure.

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
    // devices/{deviceId}/modules/{moduleId}/messages/events[/][{params}[/]]
    let prefix = format!("devices/{device}/modules/{module}/messages/events");
    let Some(rest) = topic.strip_prefix(&prefix) else {
        return FromModule::Unknown;
    };
    let params = match rest {
        "" | "/" => "",
        _ => match rest.strip_prefix('/') {
            Some(p) => p.strip_suffix('/').unwrap_or(p),
            None => return FromModule::Unknown,
        },
    };
    if params.contains('/') {
        return FromModule::Unknown;
    }
    let output = params
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| percent_decode_str(k).decode_utf8_lossy() == "$.on")
        .map(|(_, v)| percent_decode_str(v).decode_utf8_lossy().into_owned());
    FromModule::Event { output }
}

#[cfg(test)]
mod tests {
    use super::*;

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
