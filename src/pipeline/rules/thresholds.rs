//! Per-device thresholds, read by the verdict stage for every message (hot path: MQTT in →
//! parse → **verdict** → batch → MQTT out): a map from MQTT topic filters to thresholds, set
//! by `--device-threshold`/`--thresholds-file` and the twin's `Thresholds` key, part of the
//! immutable rules snapshot each batch carries. A device (the input topic, or IoT Edge's
//! `device/module`) takes the threshold of the most specific filter that matches it, else the
//! threshold in force (`TemperatureThreshold`).
//!
//! **Most specific**: filters are compared level by level from the first; at the first level
//! where they differ, a literal level beats `+`, `+` beats the filter's end (the device has no
//! more levels), and that beats `#`. So an exact topic beats every wildcard,
//! `plant2/line1/#` beats `plant2/+/bearing` for `plant2/line1/bearing`, and `a/+` beats
//! `a/#` for `a/b`. Matching is MQTT's (`+` one level, `#` the rest including the parent
//! level, a wildcard first level never matches a `$` topic).
//!
//! **Lookups, not scans**: exact topics are one hash lookup; filters with wildcards form a
//! tree of levels walked in that order of preference, so the first match found is the most
//! specific, whatever the number of entries.

use std::collections::{BTreeMap, HashMap};

use crate::mqtt::topic;

/// Most entries in the map: each costs ~100 bytes plus its key in memory, and a twin patch
/// rebuilds the map on the connection's thread while input waits (~30 ms for 100,000).
pub const MAX_ENTRIES: usize = 100_000;

type Hasher = foldhash::fast::RandomState;

/// The per-device thresholds in force (empty: every device uses the threshold in force).
#[derive(Clone, Default)]
pub struct DeviceThresholds {
    /// The map as set (reported back, merged by twin patches).
    entries: BTreeMap<String, f64>,
    exact: HashMap<Box<[u8]>, f64, Hasher>,
    /// The filters with wildcards, as a tree of levels; node 0 is the root.
    tree: Vec<Level>,
}

impl std::fmt::Debug for DeviceThresholds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DeviceThresholds")
            .field(&self.entries)
            .finish()
    }
}

impl PartialEq for DeviceThresholds {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

#[derive(Debug, Clone, Default)]
struct Level {
    literal: HashMap<Box<[u8]>, u32, Hasher>,
    plus: Option<u32>,
    /// A filter ending in `#` here.
    hash: Option<f64>,
    /// A filter ending exactly here.
    end: Option<f64>,
}

/// Why an entry cannot be in the map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdsError {
    #[error("{0:?} is not an MQTT topic filter (`+` and `#` only as whole levels, `#` last, no NUL, at most 65535 bytes)")]
    BadFilter(String),
    #[error("{key:?} must be a finite number, got {got}")]
    BadValue { key: String, got: String },
    #[error("at most {MAX_ENTRIES} entries, got {0}")]
    TooMany(usize),
}

/// Whether `key` may be a key of the map.
pub fn check_filter(key: &str) -> Result<(), ThresholdsError> {
    if key.is_empty()
        || key.len() > topic::MAX_TOPIC_LEN
        || key.contains('\0')
        || !topic::valid_filter(key)
    {
        return Err(ThresholdsError::BadFilter(key.to_string()));
    }
    Ok(())
}

impl DeviceThresholds {
    /// The map of these entries (checked: filters, finite values, the size bound).
    pub fn new(entries: BTreeMap<String, f64>) -> Result<DeviceThresholds, ThresholdsError> {
        if entries.len() > MAX_ENTRIES {
            return Err(ThresholdsError::TooMany(entries.len()));
        }
        let mut map = DeviceThresholds {
            entries: BTreeMap::new(),
            exact: HashMap::default(),
            tree: Vec::new(),
        };
        for (key, &value) in &entries {
            check_filter(key)?;
            if !value.is_finite() {
                return Err(ThresholdsError::BadValue {
                    key: key.clone(),
                    got: value.to_string(),
                });
            }
            if key.split('/').any(|l| l == "+" || l == "#") {
                map.insert_wild(key, value);
            } else {
                map.exact.insert(Box::from(key.as_bytes()), value);
            }
        }
        map.entries = entries;
        Ok(map)
    }

    fn insert_wild(&mut self, filter: &str, value: f64) {
        if self.tree.is_empty() {
            self.tree.push(Level::default());
        }
        let mut n = 0usize;
        for level in filter.split('/') {
            if level == "#" {
                self.tree[n].hash = Some(value);
                return;
            }
            let next = if level == "+" {
                self.tree[n].plus
            } else {
                self.tree[n].literal.get(level.as_bytes()).copied()
            };
            n = match next {
                Some(c) => c as usize,
                None => {
                    self.tree.push(Level::default());
                    let c = (self.tree.len() - 1) as u32;
                    if level == "+" {
                        self.tree[n].plus = Some(c);
                    } else {
                        self.tree[n].literal.insert(Box::from(level.as_bytes()), c);
                    }
                    c as usize
                }
            };
        }
        self.tree[n].end = Some(value);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The map as set.
    pub fn entries(&self) -> &BTreeMap<String, f64> {
        &self.entries
    }

    /// The threshold of the most specific filter matching `device`, if any.
    #[inline]
    pub fn get(&self, device: &[u8]) -> Option<f64> {
        if let Some(&v) = self.exact.get(device) {
            return Some(v);
        }
        match self.tree.first() {
            None => return None,
            Some(root) if self.tree.len() == 1 && root.hash.is_none() => return None,
            Some(_) => {}
        }
        self.best(0, Some(device), device.first() == Some(&b'$'))
    }

    /// The most specific match below node `n` for the levels `rest` (None: no level left).
    fn best(&self, n: usize, rest: Option<&[u8]>, dollar: bool) -> Option<f64> {
        let node = &self.tree[n];
        let Some(rest) = rest else {
            return node.end.or(node.hash);
        };
        let (level, tail) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(&c) = node.literal.get(level) {
            if let Some(v) = self.best(c as usize, tail, false) {
                return Some(v);
            }
        }
        if dollar {
            // A wildcard first level never matches a `$` topic.
            return None;
        }
        if let Some(c) = node.plus {
            if let Some(v) = self.best(c as usize, tail, false) {
                return Some(v);
            }
        }
        node.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, f64)]) -> DeviceThresholds {
        DeviceThresholds::new(entries.iter().map(|&(k, v)| (k.to_string(), v)).collect()).unwrap()
    }

    /// The rule written out: the most specific of the matching filters, by brute force.
    fn reference(entries: &[(&str, f64)], device: &str) -> Option<f64> {
        fn rank(filter: &str, device: &str) -> Vec<u8> {
            let mut levels = filter.split('/');
            let mut out = Vec::new();
            for _ in device.split('/') {
                match levels.next() {
                    Some("#") => {
                        out.push(0);
                        return out;
                    }
                    Some("+") => out.push(2),
                    Some(_) => out.push(3),
                    None => unreachable!("a matching filter covers every level"),
                }
            }
            out.push(match levels.next() {
                None => 1,
                Some(_) => 0, // `#` for the parent level
            });
            out
        }
        entries
            .iter()
            .filter(|(f, _)| topic::matches(device, f))
            .max_by_key(|(f, _)| rank(f, device))
            .map(|&(_, v)| v)
    }

    #[test]
    fn the_most_specific_filter_wins() {
        let entries = [
            ("telemetry/furnace-1", 300.0),
            ("plant2/+/bearing", 80.0),
            ("plant2/line1/#", 70.0),
            ("plant2/#", 60.0),
            ("a/+", 1.0),
            ("a/#", 2.0),
            ("#", 9.0),
            ("+/+/+", 5.0),
        ];
        let m = map(&entries);
        for (device, want) in [
            ("telemetry/furnace-1", Some(300.0)),
            ("telemetry/furnace-2", Some(9.0)),
            ("plant2/line2/bearing", Some(80.0)),
            ("plant2/line1/bearing", Some(70.0)),
            ("plant2/line2/pump", Some(60.0)),
            ("plant2", Some(60.0)),
            ("a/b", Some(1.0)),
            ("a", Some(2.0)),
            ("a/b/c", Some(2.0)),
            ("x/y/z", Some(5.0)),
            ("$SYS/x", None),
        ] {
            assert_eq!(m.get(device.as_bytes()), want, "{device}");
            assert_eq!(reference(&entries, device), want, "{device} (reference)");
        }
        assert_eq!(map(&[]).get(b"a"), None);
        assert_eq!(map(&[("$SYS/#", 3.0)]).get(b"$SYS/x"), Some(3.0));
    }

    #[test]
    fn random_maps_agree_with_the_rule_written_out() {
        let mut rng = fastrand::Rng::with_seed(19);
        let levels = ["a", "b", "+", "#", ""];
        for _ in 0..2000 {
            let mut entries: Vec<(String, f64)> = Vec::new();
            for i in 0..rng.usize(0..8) {
                let n = rng.usize(1..4);
                let mut f: Vec<&str> = (0..n).map(|_| levels[rng.usize(..4)]).collect();
                if let Some(p) = f.iter().position(|&l| l == "#") {
                    f.truncate(p + 1);
                }
                entries.push((f.join("/"), i as f64));
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|a, b| a.0 == b.0);
            let refs: Vec<(&str, f64)> = entries.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let m = map(&refs);
            for _ in 0..20 {
                let n = rng.usize(1..5);
                let device: Vec<&str> = (0..n)
                    .map(|_| ["a", "b", "c", ""][rng.usize(..4)])
                    .collect();
                let device = device.join("/");
                assert_eq!(
                    m.get(device.as_bytes()),
                    reference(&refs, &device),
                    "{refs:?} {device}"
                );
            }
        }
    }

    #[test]
    fn bad_entries_are_named() {
        let one = |k: &str, v: f64| DeviceThresholds::new([(k.to_string(), v)].into()).unwrap_err();
        assert!(matches!(one("a/#/b", 1.0), ThresholdsError::BadFilter(_)));
        assert!(matches!(one("a+", 1.0), ThresholdsError::BadFilter(_)));
        assert!(matches!(one("", 1.0), ThresholdsError::BadFilter(_)));
        assert!(matches!(
            one("a", f64::NAN),
            ThresholdsError::BadValue { .. }
        ));
        let many = (0..=MAX_ENTRIES).map(|i| (format!("d/{i}"), 1.0)).collect();
        assert_eq!(
            DeviceThresholds::new(many).unwrap_err(),
            ThresholdsError::TooMany(MAX_ENTRIES + 1)
        );
    }
}
