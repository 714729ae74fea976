//! Topic and property conventions of the broker we talk to — the part of MQTT in/out that
//! differs between a generic broker (SPEC §3.2: `telemetry/#` in, `alerts/{topic}` out with
//! MQTT 5 user properties, the twin on `<prefix>/desired` and `<prefix>/reported`) and Azure
//! IoT Edge's edgeHub (SPEC §3.3). The connection loop asks the dialect where an inbound
//! publish belongs and how to address what it publishes; everything else is shared.

use bytes::Bytes;

use super::codec::{InPublish, OutPublish, PublishProperties, Version};
use super::topic::{self, Template, TopicCache};

/// Where an inbound publish belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Telemetry to decide.
    Input,
    /// A desired-properties document for the twin.
    TwinDesired,
    /// Acknowledged without a verdict (e.g. another IoT Edge input, or our own twin echo).
    Ignore,
}

/// Per-message properties carried from the input to its alert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InputProps {
    #[default]
    None,
    /// MQTT 5 publish properties.
    V5(Box<PublishProperties>),
}

/// The generic-MQTT dialect.
#[derive(Debug)]
pub struct Generic {
    pub version: Version,
    pub input_filters: Vec<String>,
    pub qos: u8,
    pub twin_desired: String,
    pub twin_reported: String,
    pub alert_topics: TopicCache,
    pub dead_letter_topic: Option<String>,
}

impl Generic {
    pub fn new(
        version: Version,
        input_filters: Vec<String>,
        qos: u8,
        twin_prefix: &str,
        alert_template: Template,
        dead_letter_topic: Option<String>,
    ) -> Self {
        Generic {
            version,
            input_filters,
            qos,
            twin_desired: format!("{twin_prefix}/desired"),
            twin_reported: format!("{twin_prefix}/reported"),
            alert_topics: TopicCache::new(alert_template, 100_000),
            dead_letter_topic,
        }
    }

    /// Filters to subscribe after every CONNACK: (filters, QoS, MQTT 5 no-local).
    pub fn subscriptions(&self) -> Vec<(Vec<String>, u8, bool)> {
        vec![
            (self.input_filters.clone(), self.qos, true),
            (vec![self.twin_desired.clone()], 1, false),
        ]
    }

    pub fn route(&self, p: &InPublish) -> Route {
        if p.topic.as_ref() == self.twin_desired.as_bytes() {
            return Route::TwinDesired;
        }
        let topic = std::str::from_utf8(&p.topic).unwrap_or("");
        let plain = |f: &str| -> String {
            f.strip_prefix("$share/")
                .and_then(|r| r.split_once('/').map(|(_, f)| f.to_string()))
                .unwrap_or_else(|| f.to_string())
        };
        // A broker delivers only what matches a subscription; anything else (a retained
        // message on a stale subscription of a resumed session) is acknowledged and ignored.
        if self
            .input_filters
            .iter()
            .any(|f| topic::matches(topic, &plain(f)))
        {
            Route::Input
        } else {
            Route::Ignore
        }
    }

    pub fn input_props(&self, p: &mut InPublish) -> InputProps {
        match p.properties.take() {
            Some(props) => InputProps::V5(Box::new(props)),
            None => InputProps::None,
        }
    }

    /// The alert for an input: the original payload on the alert topic, with the input's
    /// properties plus `MessageType=Alert` (MQTT 5).
    pub fn alert(&mut self, input_topic: &Bytes, payload: Bytes, props: InputProps) -> OutPublish {
        let topic = self.alert_topics.alert_topic(input_topic);
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => Some(alert_properties(props)),
        };
        OutPublish::new(self.version, &topic, payload, self.qos, false, properties)
    }

    /// An array-format alert: one payload for several inputs on the same alert topic.
    pub fn alert_array(&mut self, alert_topic: &Bytes, payload: Bytes) -> OutPublish {
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => Some(PublishProperties {
                content_type: Some("application/json".into()),
                user_properties: vec![
                    ("MessageType".into(), "Alert".into()),
                    ("Batch".into(), "array".into()),
                ],
                ..Default::default()
            }),
        };
        OutPublish::new(
            self.version,
            alert_topic,
            payload,
            self.qos,
            false,
            properties,
        )
    }

    /// The reported-properties document, retained.
    pub fn reported(&self, doc: Vec<u8>) -> OutPublish {
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => Some(PublishProperties {
                content_type: Some("application/json".into()),
                ..Default::default()
            }),
        };
        OutPublish::new(
            self.version,
            &Bytes::from(self.twin_reported.clone()),
            Bytes::from(doc),
            1,
            true,
            properties,
        )
    }

    /// A rejected input on the dead-letter topic: a JSON envelope naming the reason (both
    /// versions), plus the reason and source topic as user properties (MQTT 5).
    pub fn dead_letter(
        &self,
        envelope: Bytes,
        reason: &str,
        source: &Bytes,
        props: InputProps,
    ) -> Option<OutPublish> {
        let topic = self.dead_letter_topic.as_ref()?;
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => {
                let mut p = match props {
                    InputProps::V5(p) => *p,
                    InputProps::None => PublishProperties::default(),
                };
                strip_connection_properties(&mut p);
                p.content_type = Some("application/json".into());
                p.payload_format_indicator = Some(1);
                p.user_properties
                    .push(("edgefilter-reason".into(), reason.into()));
                p.user_properties.push((
                    "edgefilter-topic".into(),
                    String::from_utf8_lossy(source).into_owned(),
                ));
                Some(p)
            }
        };
        Some(OutPublish::new(
            self.version,
            &Bytes::from(topic.clone()),
            envelope,
            self.qos,
            false,
            properties,
        ))
    }

    pub fn alert_topic_for(&mut self, input_topic: &Bytes) -> Bytes {
        self.alert_topics.alert_topic(input_topic)
    }
}

/// Topic aliases and subscription identifiers belong to one connection, not to a message.
fn strip_connection_properties(p: &mut PublishProperties) {
    p.topic_alias = None;
    p.subscription_identifiers.clear();
}

/// The input's MQTT 5 properties with `MessageType=Alert` set (an existing `MessageType` is
/// replaced).
pub fn alert_properties(props: InputProps) -> PublishProperties {
    let mut p = match props {
        InputProps::V5(p) => *p,
        InputProps::None => PublishProperties::default(),
    };
    strip_connection_properties(&mut p);
    p.user_properties.retain(|(k, _)| k != "MessageType");
    p.user_properties
        .push(("MessageType".into(), "Alert".into()));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic() -> Generic {
        Generic::new(
            Version::V5,
            vec!["$share/g/telemetry/#".into()],
            1,
            "edgefilter/twin",
            Template::parse("alerts/{topic}").unwrap(),
            Some("edgefilter/deadletter".into()),
        )
    }

    fn publish(topic: &'static [u8]) -> InPublish {
        InPublish {
            topic: Bytes::from_static(topic),
            payload: Bytes::new(),
            qos: 1,
            pkid: 1,
            retain: false,
            dup: false,
            properties: None,
        }
    }

    #[test]
    fn routes_by_topic() {
        let g = generic();
        assert_eq!(g.route(&publish(b"telemetry/dev-1")), Route::Input);
        assert_eq!(
            g.route(&publish(b"edgefilter/twin/desired")),
            Route::TwinDesired
        );
        assert_eq!(g.route(&publish(b"other/x")), Route::Ignore);
    }

    #[test]
    fn alerts_keep_properties_and_add_the_type() {
        let mut g = generic();
        let props = PublishProperties {
            user_properties: vec![
                ("sequenceNumber".into(), "7".into()),
                ("MessageType".into(), "Telemetry".into()),
            ],
            content_type: Some("application/json".into()),
            topic_alias: Some(3),
            subscription_identifiers: vec![1],
            ..Default::default()
        };
        let alert = g.alert(
            &Bytes::from_static(b"telemetry/d"),
            Bytes::from_static(b"{}"),
            InputProps::V5(Box::new(props)),
        );
        assert_eq!(alert.topic(), b"alerts/telemetry/d");
        let p = alert.properties().unwrap();
        assert_eq!(
            p.user_properties,
            vec![
                ("sequenceNumber".to_string(), "7".to_string()),
                ("MessageType".to_string(), "Alert".to_string())
            ]
        );
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!((p.topic_alias, p.subscription_identifiers.len()), (None, 0));
    }

    #[test]
    fn dead_letters_name_the_reason() {
        let g = generic();
        let dl = g
            .dead_letter(
                Bytes::from_static(b"{}"),
                "not_json",
                &Bytes::from_static(b"telemetry/d"),
                InputProps::None,
            )
            .unwrap();
        assert_eq!(dl.topic(), b"edgefilter/deadletter");
        let p = dl.properties().unwrap();
        assert!(p
            .user_properties
            .contains(&("edgefilter-reason".into(), "not_json".into())));
        assert!(p
            .user_properties
            .contains(&("edgefilter-topic".into(), "telemetry/d".into())));
    }
}
