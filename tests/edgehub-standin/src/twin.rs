//! The module twin as edgeHub serves it (test tooling, edgeHub ↔ module): the full twin for
//! a GET, reported patches applied (a new reported version) or refused with 400, desired
//! patches with their `$version`. Pure JSON state; topics in `routes.rs`.
//!
//! As edgeHub answers: GET → `$iothub/twin/res/200/?$rid=<rid>` with
//! `{"desired":{…,"$version":N},"reported":{…,"$version":M}}`; reported patch →
//! `$iothub/twin/res/204/?$rid=<rid>` (edgeHub's answer carries no `$version`), or 400 with an
//! empty body when a name holds `$`, `#`, `.` or whitespace; desired patches on
//! `$iothub/twin/PATCH/properties/desired/?$version=<v>` with `$version` in the body.

use serde_json::{Map, Value};

/// One module's twin.
#[derive(Debug, Clone)]
pub struct Twin {
    desired: Map<String, Value>,
    desired_version: u64,
    reported: Map<String, Value>,
    reported_version: u64,
}

impl Twin {
    /// A twin whose desired properties are `desired` (an object; the deployment's
    /// `properties.desired`), at version 1.
    pub fn new(desired: Value) -> Twin {
        Twin {
            desired: match desired {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            desired_version: 1,
            reported: Map::new(),
            reported_version: 1,
        }
    }

    /// The body of a 200 answer to a GET.
    pub fn full(&self) -> Vec<u8> {
        let mut desired = self.desired.clone();
        desired.insert("$version".into(), self.desired_version.into());
        let mut reported = self.reported.clone();
        reported.insert("$version".into(), self.reported_version.into());
        serde_json::json!({ "desired": desired, "reported": reported })
            .to_string()
            .into_bytes()
    }

    pub fn reported(&self) -> &Map<String, Value> {
        &self.reported
    }

    pub fn desired_version(&self) -> u64 {
        self.desired_version
    }

    /// Applies a reported patch: `Ok(new version)` (answer 204) or `Err(400)`.
    pub fn patch_reported(&mut self, body: &[u8]) -> Result<u64, u16> {
        let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(body) else {
            return Err(400);
        };
        if !names_ok(&patch) {
            return Err(400);
        }
        merge(&mut self.reported, patch);
        self.reported_version += 1;
        Ok(self.reported_version)
    }

    /// Applies a desired patch (an object); returns the new version and the body edgeHub
    /// sends the module (the patch with `$version`).
    pub fn patch_desired(&mut self, patch: Value) -> Option<(u64, Vec<u8>)> {
        let Value::Object(patch) = patch else {
            return None;
        };
        merge(&mut self.desired, patch.clone());
        self.desired_version += 1;
        let mut body = patch;
        body.insert("$version".into(), self.desired_version.into());
        Some((
            self.desired_version,
            Value::Object(body).to_string().into_bytes(),
        ))
    }
}

/// Property names edgeHub accepts in a reported patch, at every level.
fn names_ok(m: &Map<String, Value>) -> bool {
    m.iter().all(|(k, v)| {
        !k.is_empty()
            && !k.contains(['$', '#', '.'])
            && !k.chars().any(char::is_whitespace)
            && match v {
                Value::Object(inner) => names_ok(inner),
                _ => true,
            }
    })
}

/// JSON merge patch: `null` removes, objects merge, anything else replaces.
fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(&k);
            }
            Value::Object(p) => match target.get_mut(&k) {
                Some(Value::Object(t)) => merge(t, p),
                _ => {
                    let mut t = Map::new();
                    merge(&mut t, p);
                    target.insert(k, Value::Object(t));
                }
            },
            v => {
                target.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn get_reported_and_desired() {
        let mut t = Twin::new(json!({"TemperatureThreshold": 25}));
        let full: Value = serde_json::from_slice(&t.full()).unwrap();
        assert_eq!(
            full,
            json!({"desired":{"TemperatureThreshold":25,"$version":1},"reported":{"$version":1}})
        );
        assert_eq!(
            t.patch_reported(br#"{"TemperatureThreshold":25,"status":"ok","x":{"y":1}}"#),
            Ok(2)
        );
        assert_eq!(t.patch_reported(br#"{"x":{"y":null,"z":2}}"#), Ok(3));
        assert_eq!(t.reported()["x"], json!({"z":2}));
        for bad in [
            &br#"{"$version":3}"#[..],
            br#"{"a.b":1}"#,
            br#"{"a b":1}"#,
            br##"{"x":{"#":1}}"##,
            b"[1]",
            b"not json",
        ] {
            assert_eq!(
                t.patch_reported(bad),
                Err(400),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let (v, body) = t
            .patch_desired(json!({"TemperatureThreshold": 30}))
            .unwrap();
        assert_eq!(v, 2);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"TemperatureThreshold":30,"$version":2})
        );
        let full: Value = serde_json::from_slice(&t.full()).unwrap();
        assert_eq!(
            full["desired"],
            json!({"TemperatureThreshold":30,"$version":2})
        );
        assert_eq!(full["reported"]["$version"], 3);
    }
}
