//! Fuzz target for IoT Edge property bags and module topics (`mqtt::azure::{propbag, topics}`):
//! on any topic edgeHub could send, parsing never panics, a decoded bag survives
//! encode → decode unchanged, and the alert topic built from an input is either refused or a
//! topic MQTT can carry (at most 65,535 bytes; edgeHub accepts its device ids' `+` and `#`).
//!
//! `cargo +nightly fuzz run propbag fuzz/corpus/propbag fuzz/seeds/propbag`

#![no_main]

use edgefilter::mqtt::azure::propbag::{OutputProperties, PropertyBag};
use edgefilter::mqtt::azure::topics::{Inbound, ModuleTopics};
use edgefilter::mqtt::topic::MAX_TOPIC_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First two bytes: how many times the rest is repeated (long topics are the interesting
    // ones for the 65,535-byte limit, and libFuzzer keeps inputs short).
    let (repeat, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b]) % 2048) + 1, rest),
        _ => (1, data),
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let bag_text = text.repeat(repeat.min(65_535 / text.len().max(1)).max(1));

    // decode → encode → decode is the identity on decoded bags.
    let bag = PropertyBag::decode(&bag_text);
    let again = PropertyBag::decode(&bag.encode());
    assert_eq!(bag, again, "bag changed through encode/decode");
    let _ = bag.get("$.ct");

    let out = OutputProperties::alert_from_input(&bag);
    let encoded = out.encode("output1");
    let decoded = PropertyBag::decode(&encoded);
    assert_eq!(decoded.get("$.on"), Some("output1"));
    assert_eq!(decoded.get("MessageType"), Some("Alert"));

    // The same text as the property part of an input topic, and as a whole topic.
    let topics = ModuleTopics::new("dev1", "filter");
    let input = format!("devices/dev1/modules/filter/inputs/input1/{bag_text}");
    for topic in [input.as_str(), bag_text.as_str()] {
        let _ = topics.classify(topic);
        if topic.len() > MAX_TOPIC_LEN {
            continue;
        }
        if let Ok(Inbound::Input(i)) = topics.classify(topic) {
            assert_eq!(
                i.properties,
                PropertyBag::decode(topic.splitn(7, '/').nth(6).unwrap_or(""))
            );
        }
        if let Ok(alert) = topics.alert_topic(topic, "output1") {
            assert!(
                alert.len() <= MAX_TOPIC_LEN,
                "unpublishable alert topic of {} bytes",
                alert.len()
            );
        }
    }
});
