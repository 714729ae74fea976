//! Fuzz target for topic rendering and matching (`mqtt::topic`) and what the connection does
//! with a rendered topic (`mqtt::codec::OutPublish::write`): templates and input topics of any
//! text, up to a little over MQTT's limit. A rendered alert topic is either refused (by
//! `check_publishable`, and by `write`, which then leaves the buffer untouched) or a valid MQTT
//! topic of at most 65,535 bytes that encodes and decodes back to itself, for MQTT 3.1.1 and 5
//! (a 65,537-byte topic used to wrap its u16 length). Filter matching agrees with
//! `example_topic`; the cache returns what rendering returns.
//!
//! `cargo +nightly fuzz run topic fuzz/corpus/topic fuzz/seeds/topic`

#![no_main]

use bytes::{Bytes, BytesMut};
use edgefilter::mqtt::codec::{decode, Inbound, OutPublish, Version};
use edgefilter::mqtt::topic::{
    check_publishable, example_topic, matches, valid_filter, valid_topic, Template, TopicCache,
    MAX_TOPIC_LEN,
};
use libfuzzer_sys::fuzz_target;

/// What the connection would do with `topic`: refuse it, or put it on the wire intact.
fn encodes_intact_or_refused(topic: &str) {
    let publishable = check_publishable(topic).is_ok();
    for version in [Version::V4, Version::V5] {
        let p = OutPublish::new(
            version,
            &Bytes::copy_from_slice(topic.as_bytes()),
            Bytes::from_static(b"{}"),
            0,
            false,
            None,
        );
        let mut buf = BytesMut::new();
        match p.write(&mut buf) {
            Ok(_) => {
                assert!(
                    topic.len() <= MAX_TOPIC_LEN,
                    "{version:?}: wrote a {}-byte topic",
                    topic.len()
                );
                let Ok(Some(Inbound::Publish(back))) = decode(version, &mut buf, 1 << 20) else {
                    panic!("{version:?}: a written publish does not decode");
                };
                assert_eq!(&back.topic[..], topic.as_bytes(), "{version:?}");
                assert!(buf.is_empty(), "{version:?}: bytes left after the publish");
            }
            Err(_) => {
                assert!(buf.is_empty(), "{version:?}: a refused publish left bytes");
                assert!(!publishable, "{version:?}: refused a publishable topic");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // [repeat lo, repeat hi] template \0 topic
    let (repeat, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (template, unit) = text.split_once('\0').unwrap_or(("alerts/{topic}", text));
    let count = if unit.is_empty() {
        0
    } else {
        repeat.min(70_000 / unit.len())
    };
    let input = unit.repeat(count.max(1));

    if let Ok(t) = Template::parse(template) {
        let rendered = t.render(&input);
        if check_publishable(&rendered).is_ok() {
            assert!(rendered.len() <= MAX_TOPIC_LEN);
            assert!(valid_topic(&rendered), "{rendered:?}");
            let mut cache = TopicCache::new(t.clone(), 2);
            let key = Bytes::from(input.clone());
            assert_eq!(&cache.alert_topic(&key)[..], rendered.as_bytes());
            assert_eq!(&cache.alert_topic(&key)[..], rendered.as_bytes());
        }
        encodes_intact_or_refused(&rendered);
    }
    if valid_filter(unit) {
        let probe = example_topic(unit);
        let plain = match unit.strip_prefix("$share/").and_then(|r| r.split_once('/')) {
            Some((_, f)) => f,
            None => unit,
        };
        assert!(matches(&probe, plain), "{probe:?} !~ {plain:?}");
    }
    if valid_topic(&input) && valid_filter(template) {
        let _ = matches(&input, template);
    }
});
