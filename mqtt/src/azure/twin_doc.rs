//! Module twin documents on edgeHub (twin): the full twin that answers a GET, and the
//! reported-properties patch the module sends after applying a desired patch. The patch's
//! validation and the threshold swap live in `crate::twin`; this file only speaks edgeHub's JSON.
//!
//! edgeHub checks every reported patch (`Microsoft.Azure.Devices.Edge.Hub.Core.Twin.
//! ReportedPropertiesValidator`): property names must not contain `$`, `#`, `.`, whitespace or
//! control characters (`$` is reserved for `$version` and `$metadata`), values are at most
//! 4096 bytes, integers within ±2^52, the document at most 32 KiB. A patch that breaks a rule
//! is refused with status 400. So the applied desired version is reported as
//! [`REPORTED_VERSION_KEY`] (`desiredVersion`), not as `$version`, which edgeHub would refuse.

use serde::Serialize;
use serde_json::{Map, Value};

/// The reported property that holds the last applied desired `$version` (see the module docs
/// for why it cannot be `$version` on edgeHub).
pub const REPORTED_VERSION_KEY: &str = "desiredVersion";

/// edgeHub's limit for one reported value, in bytes.
pub const MAX_REPORTED_VALUE_BYTES: usize = 4096;

/// A full-twin or reported-patch document edgeHub cannot have meant.
#[derive(Debug, thiserror::Error)]
pub enum TwinDocError {
    #[error("twin document is not JSON")]
    Json(#[from] serde_json::Error),
    #[error("twin document: {0}")]
    Shape(&'static str),
}

/// The module twin as a GET returns it (`{"desired":{…,"$version":N},"reported":{…}}`).
#[derive(Debug, Clone, PartialEq)]
pub struct FullTwin {
    /// The desired properties, `$version` and `$metadata` included as sent: the same shape as
    /// a desired patch, so it can be applied as one.
    pub desired: Map<String, Value>,
    /// `desired.$version`, when present and a non-negative integer.
    pub desired_version: Option<u64>,
    /// The reported properties (empty when absent).
    pub reported: Map<String, Value>,
}

impl FullTwin {
    /// The desired section as JSON bytes (feed it to the desired-patch handler).
    pub fn desired_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.desired).expect("a JSON map serializes")
    }
}

/// Parses the body of `$iothub/twin/res/200/?$rid=…`.
pub fn parse_full_twin(body: &[u8]) -> Result<FullTwin, TwinDocError> {
    let Value::Object(mut doc) = serde_json::from_slice::<Value>(body)? else {
        return Err(TwinDocError::Shape("top level is not an object"));
    };
    let desired = match doc.remove("desired") {
        Some(Value::Object(d)) => d,
        Some(_) => return Err(TwinDocError::Shape("\"desired\" is not an object")),
        None => return Err(TwinDocError::Shape("no \"desired\" section")),
    };
    let reported = match doc.remove("reported") {
        Some(Value::Object(r)) => r,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(TwinDocError::Shape("\"reported\" is not an object")),
    };
    let desired_version = desired.get("$version").and_then(Value::as_u64);
    Ok(FullTwin {
        desired,
        desired_version,
        reported,
    })
}

#[derive(Serialize)]
struct ReportedPatch<'a> {
    #[serde(rename = "TemperatureThreshold")]
    threshold: f64,
    #[serde(rename = "desiredVersion")]
    desired_version: Option<u64>,
    status: &'a str,
    source: &'a str,
    /// More reported properties (the alert rules in force), after these.
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// The reported patch after applying (or refusing) a desired patch:
/// `{"TemperatureThreshold":<threshold in force>,"desiredVersion":<last applied $version or
/// null>,"status":"ok" | "<why the last patch was refused>","source":"default" | "pending" |
/// "desired" | "restored"}`.
///
/// The status is cut to [`MAX_REPORTED_VALUE_BYTES`] (at a character boundary) so edgeHub never
/// refuses the patch for its length. The threshold in force is always finite (patches are
/// validated); a non-finite value would be written as `null`.
pub fn reported_patch(
    threshold: f64,
    applied_version: Option<u64>,
    status: &str,
    source: &str,
) -> Vec<u8> {
    reported_patch_with(threshold, applied_version, status, source, &Map::new())
}

/// [`reported_patch`] with more properties (names edgeHub accepts: no `$`, `#`, `.`).
pub fn reported_patch_with(
    threshold: f64,
    applied_version: Option<u64>,
    status: &str,
    source: &str,
    extra: &Map<String, Value>,
) -> Vec<u8> {
    let mut end = status.len().min(MAX_REPORTED_VALUE_BYTES);
    while !status.is_char_boundary(end) {
        end -= 1;
    }
    serde_json::to_vec(&ReportedPatch {
        threshold,
        desired_version: applied_version,
        status: &status[..end],
        source,
        extra,
    })
    .expect("a struct of numbers and a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_twin() {
        let body = br#"{"desired":{"TemperatureThreshold":25,"$version":7},
                        "reported":{"TemperatureThreshold":25.0,"$version":3}}"#;
        let twin = parse_full_twin(body).unwrap();
        assert_eq!(twin.desired_version, Some(7));
        assert_eq!(twin.desired["TemperatureThreshold"], 25);
        assert_eq!(twin.reported["$version"], 3);
        assert_eq!(
            twin.desired_json(),
            br#"{"$version":7,"TemperatureThreshold":25}"#
        );
    }

    #[test]
    fn a_twin_without_reported_or_version_is_fine() {
        let twin = parse_full_twin(br#"{"desired":{}}"#).unwrap();
        assert_eq!(twin.desired_version, None);
        assert!(twin.reported.is_empty());
        let twin = parse_full_twin(br#"{"desired":{"$version":"x"},"reported":null}"#).unwrap();
        assert_eq!(twin.desired_version, None);
    }

    #[test]
    fn malformed_twins_are_refused() {
        for (body, msg) in [
            (&b"not json"[..], "twin document is not JSON"),
            (b"[]", "twin document: top level is not an object"),
            (b"{}", "twin document: no \"desired\" section"),
            (
                br#"{"desired":3}"#,
                "twin document: \"desired\" is not an object",
            ),
            (
                br#"{"desired":{},"reported":[]}"#,
                "twin document: \"reported\" is not an object",
            ),
        ] {
            let e = parse_full_twin(body).unwrap_err().to_string();
            assert!(e.starts_with(msg), "{e}");
        }
    }

    #[test]
    fn reported_patches_use_names_edgehub_accepts() {
        assert_eq!(
            reported_patch(30.0, Some(3), "ok", "desired"),
            br#"{"TemperatureThreshold":30.0,"desiredVersion":3,"status":"ok","source":"desired"}"#
        );
        assert_eq!(
            reported_patch(
                25.5,
                None,
                "TemperatureThreshold must be a number, got \"hot\"",
                "default"
            ),
            br#"{"TemperatureThreshold":25.5,"desiredVersion":null,"status":"TemperatureThreshold must be a number, got \"hot\"","source":"default"}"#
        );
        // No name with '$', '#', '.', or whitespace (edgeHub's ReportedPropertiesValidator).
        let v: Value =
            serde_json::from_slice(&reported_patch(1.0, Some(1), "ok", "desired")).unwrap();
        for k in v.as_object().unwrap().keys() {
            assert!(!k.contains(['$', '#', '.', ' ']), "{k}");
        }
    }

    #[test]
    fn long_statuses_are_cut_at_a_character_boundary() {
        let status = "é".repeat(3000); // 6000 bytes
        let v: Value =
            serde_json::from_slice(&reported_patch(1.0, Some(1), &status, "desired")).unwrap();
        let s = v["status"].as_str().unwrap();
        assert_eq!(s.len(), MAX_REPORTED_VALUE_BYTES);
        assert!(s.chars().all(|c| c == 'é'));
    }
}
