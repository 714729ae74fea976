//! Topic names and filters: validation and matching (rumqttc's rules), the alert topic template
//! (`alerts/{topic}`), and a small cache so rendering an alert topic costs nothing per message.

use std::collections::HashMap;

use bytes::Bytes;

pub use rumqttc::v5::mqttbytes::valid_filter;

/// Whether `filter` matches the topic name `topic` (MQTT 5 §4.7): `+` one level, `#` any rest
/// (the parent level included), and a topic starting with `$` is not matched by a filter
/// starting with a wildcard — but is by a literal one (`$x/#` matches `$x/y`).
/// (rumqttc's `matches` never matches a `$` topic, which let `--input-topic '$x/#'
/// --alert-topic '$x/alerts/{topic}'` through the alert-loop check.)
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topics = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match topics.next() {
            Some(t) if f == "+" || f == t => continue,
            _ => return false,
        }
    }
    topics.next().is_none()
}

/// The longest topic MQTT can carry: its length is a u16 on the wire (3.1.1 §1.5.3, 5 §1.5.4).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// A topic name a client may publish to: non-empty, at most [`MAX_TOPIC_LEN`] bytes, no
/// wildcards, no NUL.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && rumqttc::v5::mqttbytes::valid_topic(topic)
        && !topic.contains('\0')
}

/// Why a rendered topic cannot be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unpublishable {
    #[error("the topic would be {0} bytes long (MQTT allows 65535)")]
    TooLong(usize),
    #[error("the topic would contain a wildcard (+ or #) or NUL")]
    Invalid,
    #[error("the topic would be empty")]
    Empty,
}

/// Checks a topic about to be encoded into a PUBLISH (rendered alert, dead-letter, twin or
/// IoT Edge topics): what this refuses would otherwise be a malformed packet.
pub fn check_publishable(topic: &str) -> Result<(), Unpublishable> {
    if topic.is_empty() {
        Err(Unpublishable::Empty)
    } else if topic.len() > MAX_TOPIC_LEN {
        Err(Unpublishable::TooLong(topic.len()))
    } else if !valid_topic(topic) {
        Err(Unpublishable::Invalid)
    } else {
        Ok(())
    }
}

/// A concrete topic that `filter` matches (wildcards replaced by one level), used to probe
/// whether alert topics would loop back into the input.
pub fn example_topic(filter: &str) -> String {
    let filter = filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/').map(|(_, f)| f))
        .unwrap_or(filter);
    filter
        .split('/')
        .map(|level| match level {
            "+" | "#" => "x",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `alerts/{topic}`: literal text with `{topic}` standing for the whole input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Topic,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, &'static str> {
        if s.is_empty() {
            return Err("must not be empty");
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("{topic}") {
            if i > 0 {
                parts.push(Part::Literal(rest[..i].to_string()));
            }
            parts.push(Part::Topic);
            rest = &rest[i + "{topic}".len()..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        let literal: String = parts
            .iter()
            .filter_map(|p| match p {
                Part::Literal(l) => Some(l.as_str()),
                Part::Topic => None,
            })
            .collect();
        if literal.contains(['+', '#']) {
            return Err("must not contain the wildcards + or #");
        }
        if literal.contains(['{', '}']) {
            return Err("the only placeholder is {topic}");
        }
        Ok(Template { parts })
    }

    pub fn render(&self, topic: &str) -> String {
        let mut out = String::with_capacity(topic.len() + 16);
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Topic => out.push_str(topic),
            }
        }
        out
    }

    /// True when the template does not depend on the input topic.
    pub fn is_constant(&self) -> bool {
        !self.parts.contains(&Part::Topic)
    }
}

/// Remembers rendered alert topics per input topic (devices are few, messages many).
/// Bounded: cleared when it holds more than `cap` topics.
#[derive(Debug)]
pub struct TopicCache {
    template: Template,
    map: HashMap<Bytes, Bytes>,
    cap: usize,
}

impl TopicCache {
    pub fn new(template: Template, cap: usize) -> Self {
        TopicCache {
            template,
            map: HashMap::new(),
            cap,
        }
    }

    /// The alert topic for `input` (a cheap `Bytes` clone after the first time).
    pub fn alert_topic(&mut self, input: &Bytes) -> Bytes {
        if let Some(t) = self.map.get(input) {
            return t.clone();
        }
        if self.map.len() >= self.cap {
            self.map.clear();
        }
        let rendered = Bytes::from(self.template.render(&String::from_utf8_lossy(input)));
        self.map.insert(input.clone(), rendered.clone());
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders_the_input_topic() {
        let t = Template::parse("alerts/{topic}").unwrap();
        assert_eq!(t.render("telemetry/dev-1"), "alerts/telemetry/dev-1");
        let t = Template::parse("{topic}/alert").unwrap();
        assert_eq!(t.render("a/b"), "a/b/alert");
        assert!(Template::parse("alerts/all").unwrap().is_constant());
        assert!(Template::parse("alerts/#").is_err());
        assert!(Template::parse("alerts/{device}").is_err());
        assert!(Template::parse("").is_err());
    }

    #[test]
    fn rendered_topics_longer_than_mqtt_allows_are_refused() {
        // A legal 65,530-byte input topic rendered as alerts/{topic} is 65,537 bytes: its
        // u16 length would wrap (found as a stalled stream under a poison topic).
        let t = Template::parse("alerts/{topic}").unwrap();
        let input = format!("telemetry/{}", "M".repeat(65_520));
        assert_eq!(input.len(), 65_530);
        assert!(valid_topic(&input));
        assert_eq!(
            check_publishable(&t.render(&input)),
            Err(Unpublishable::TooLong(65_537))
        );
        // Exactly at the limit is fine.
        let input = "M".repeat(MAX_TOPIC_LEN - "alerts/".len());
        assert_eq!(check_publishable(&t.render(&input)), Ok(()));
        assert!(!valid_topic(&"M".repeat(MAX_TOPIC_LEN + 1)));
    }

    #[test]
    fn wildcards_and_nul_from_the_input_topic_are_refused() {
        // rumqttd accepts a PUBLISH to `telemetry/#`; its alert must not go to `alerts/telemetry/#`.
        let t = Template::parse("alerts/{topic}").unwrap();
        for input in ["telemetry/#", "telemetry/+/x", "a\0b"] {
            assert_eq!(
                check_publishable(&t.render(input)),
                Err(Unpublishable::Invalid),
                "{input:?}"
            );
        }
        assert_eq!(check_publishable(&t.render("telemetry/dev-1")), Ok(()));
        assert_eq!(
            check_publishable(&Template::parse("{topic}").unwrap().render("")),
            Err(Unpublishable::Empty)
        );
    }

    #[test]
    fn dollar_topics_match_literal_filters_only() {
        assert!(matches("$t", "$t"));
        assert!(matches("$x/alerts/$x/y", "$x/#"));
        assert!(matches("$SYS/broker/load", "$SYS/+/load"));
        assert!(!matches("$SYS/broker", "#"));
        assert!(!matches("$SYS/broker", "+/broker"));
        assert!(matches("a/b", "a/b/#"));
        assert!(matches("a", "a/#"));
        assert!(matches("a/b/c", "a/+/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("/x", "+/x") && matches("/x", "/+") && !matches("x", "x/+"));
    }

    #[test]
    fn example_topics_match_their_filter() {
        for f in ["telemetry/#", "a/+/c", "#", "$share/g/a/#", "x"] {
            let t = example_topic(f);
            let plain = f.strip_prefix("$share/g/").unwrap_or(f);
            assert!(matches(&t, plain), "{t} !~ {plain}");
        }
    }

    #[test]
    fn cache_returns_the_same_rendering() {
        let mut c = TopicCache::new(Template::parse("alerts/{topic}").unwrap(), 2);
        let a = Bytes::from_static(b"telemetry/a");
        assert_eq!(&c.alert_topic(&a)[..], b"alerts/telemetry/a");
        assert_eq!(&c.alert_topic(&a)[..], b"alerts/telemetry/a");
        c.alert_topic(&Bytes::from_static(b"t/b"));
        c.alert_topic(&Bytes::from_static(b"t/c"));
        assert_eq!(&c.alert_topic(&a)[..], b"alerts/telemetry/a");
    }
}
