//! The generic MQTT dialect (any MQTT 3.1.1 or 5 broker): `telemetry/#` in, `alerts/{topic}` out (clears and
//! summaries on their own templates), MQTT 5 user properties, the twin on
//! `<prefix>/desired` and `<prefix>/reported`. Pure, like the rest of [`dialect`](super).

use bytes::Bytes;

use crate::mqtt::codec::{InPublish, OutPublish, PublishProperties, Version};
use crate::mqtt::topic::{self, Template, TopicCache};

use super::*;

/// The generic-MQTT dialect.
#[derive(Debug)]
pub struct Generic {
    pub version: Version,
    pub input_filters: Vec<String>,
    /// The input filters without their `$share/<group>/` prefix (what topics match).
    plain_filters: Vec<String>,
    pub qos: u8,
    /// QoS of the input subscription: `qos`, except on the embedded broker (see `run`).
    pub input_qos: u8,
    pub twin_desired: String,
    pub twin_reported: String,
    pub alert_topics: TopicCache,
    /// Where clearing messages and summaries go.
    pub rule_topics: Box<RuleTopics>,
    pub dead_letter_topic: Option<String>,
}

/// The topics of what the stateful rules publish (generic MQTT).
#[derive(Debug)]
pub struct RuleTopics {
    /// Clearing messages (None: the alert topic).
    pub clear: Option<TopicCache>,
    pub summary: TopicCache,
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
        let plain_filters = input_filters
            .iter()
            .map(|f| {
                f.strip_prefix("$share/")
                    .and_then(|r| r.split_once('/').map(|(_, f)| f.to_string()))
                    .unwrap_or_else(|| f.clone())
            })
            .collect();
        Generic {
            version,
            plain_filters,
            input_filters,
            qos,
            input_qos: qos,
            twin_desired: format!("{twin_prefix}/desired"),
            twin_reported: format!("{twin_prefix}/reported"),
            alert_topics: TopicCache::new(alert_template, 100_000),
            rule_topics: Box::new(RuleTopics {
                clear: None,
                summary: TopicCache::new(default_summary_template(), 100_000),
            }),
            dead_letter_topic,
        }
    }

    /// Clearing messages to `clear` (None: the alert topic), summaries to `summary`.
    pub fn with_rule_topics(mut self, clear: Option<Template>, summary: Template) -> Self {
        self.rule_topics = Box::new(RuleTopics {
            clear: clear.map(|t| TopicCache::new(t, 100_000)),
            summary: TopicCache::new(summary, 100_000),
        });
        self
    }

    /// Filters to subscribe after every CONNACK: (filters, QoS, MQTT 5 no-local).
    pub fn subscriptions(&self) -> Vec<(Vec<String>, u8, bool)> {
        vec![
            (self.input_filters.clone(), self.input_qos, true),
            // The reported document first: brokers send retained messages in the order of the
            // filters, so an earlier run's state is known before the desired one is judged.
            // No-local (MQTT 5): our own reports do not come back to us.
            (
                vec![self.twin_reported.clone(), self.twin_desired.clone()],
                1,
                true,
            ),
        ]
    }

    pub fn route(&self, p: &mut InPublish) -> Route {
        if p.topic.as_ref() == self.twin_desired.as_bytes() {
            return Route::TwinDesired;
        }
        if p.topic.as_ref() == self.twin_reported.as_bytes() {
            // Only the retained copy (sent because we subscribed); our own live reports come
            // back with the flag clear.
            return if p.retain {
                Route::TwinReported
            } else {
                Route::Ignore
            };
        }
        let topic = std::str::from_utf8(&p.topic).unwrap_or("");
        // A broker delivers only what matches a subscription; anything else (a retained
        // message on a stale subscription of a resumed session) is acknowledged and ignored.
        if self.plain_filters.iter().any(|f| topic::matches(topic, f)) {
            Route::Input(match p.properties.take() {
                Some(props) => InputProps::V5(Box::new(props)),
                None => InputProps::None,
            })
        } else {
            Route::Ignore
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

    /// The clearing message for an input: the original payload on the clear topic, with the
    /// input's properties plus `MessageType=AlertCleared` (MQTT 5).
    pub fn clear(&mut self, input_topic: &Bytes, payload: Bytes, props: InputProps) -> OutPublish {
        let topic = self.topic_for(RuleOutput::Clear, input_topic);
        let properties = match self.version {
            Version::V4 => None,
            Version::V5 => Some(typed_properties(props, RuleOutput::Clear)),
        };
        OutPublish::new(self.version, &topic, payload, self.qos, false, properties)
    }

    /// A window summary of `device` (its input topic) on the summary topic.
    pub fn summary(&mut self, device: &Bytes, payload: Bytes) -> OutPublish {
        let topic = self.rule_topics.summary.alert_topic(device);
        let properties = self.json_properties(RuleOutput::Summary, false);
        OutPublish::new(self.version, &topic, payload, self.qos, false, properties)
    }

    /// The topic a publish of `kind` for input topic (or summary device) `topic` goes to.
    pub fn topic_for(&mut self, kind: RuleOutput, topic: &Bytes) -> Bytes {
        let rules = &mut *self.rule_topics;
        match (kind, &mut rules.clear) {
            (RuleOutput::Alert, _) | (RuleOutput::Clear, None) => {
                self.alert_topics.alert_topic(topic)
            }
            (RuleOutput::Clear, Some(clears)) => clears.alert_topic(topic),
            (RuleOutput::Summary, _) => rules.summary.alert_topic(topic),
        }
    }

    /// An array-format publish of `kind` on `topic`: one JSON payload for several alerts,
    /// clears or summaries.
    pub fn array(&mut self, kind: RuleOutput, topic: &Bytes, payload: Bytes) -> OutPublish {
        let properties = self.json_properties(kind, true);
        OutPublish::new(self.version, topic, payload, self.qos, false, properties)
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
                    _ => PublishProperties::default(),
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

    /// MQTT 5: JSON content, `MessageType` for `kind`, `Batch=array` for array publishes.
    fn json_properties(&self, kind: RuleOutput, batch: bool) -> Option<PublishProperties> {
        let mut user_properties = vec![("MessageType".into(), kind.message_type().into())];
        if batch {
            user_properties.push(("Batch".into(), "array".into()));
        }
        (self.version == Version::V5).then(|| PublishProperties {
            content_type: Some("application/json".into()),
            user_properties,
            ..Default::default()
        })
    }
}
