//! Fuzz target for twin documents (`twin`, `mqtt::azure::twin_doc`): any bytes as a generic
//! desired patch, as an IoT Edge full twin and as its desired section. Nothing panics; the
//! threshold in force stays finite; a refused or stale document changes neither threshold nor
//! version; versions never go back; every reported document is valid JSON (edgeHub's names and
//! its 4 KiB value limit on IoT Edge).
//!
//! `cargo +nightly fuzz run twin fuzz/corpus/twin fuzz/seeds/twin`

#![no_main]

use edgefilter::mqtt::azure::twin_doc::{self, MAX_REPORTED_VALUE_BYTES};
use edgefilter::pipeline::rules::RuleSettings;
use edgefilter::twin::{self, Outcome, Twin};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(tw: &mut Twin, doc: &[u8]) {
    let (before_t, before_v) = (tw.threshold(), tw.version());
    let outcome = tw.handle(doc);
    assert!(tw.threshold().is_finite());
    match &outcome {
        Outcome::Applied { threshold, .. } => {
            assert_eq!(threshold.to_bits(), tw.threshold().to_bits());
            assert_eq!(tw.status(), "ok");
            if let (Some(b), Some(a)) = (before_v, tw.version()) {
                assert!(a >= b, "version went back from {b} to {a}");
            }
            assert!(before_v.is_none() || tw.version().is_some());
        }
        Outcome::Refused(_) | Outcome::Stale { .. } => {
            assert_eq!(before_t.to_bits(), tw.threshold().to_bits());
            assert_eq!(before_v, tw.version());
        }
    }
    // The validation alone agrees with what handle did.
    match twin::parse_patch(doc) {
        Ok(_) => assert!(!matches!(outcome, Outcome::Refused(_))),
        Err(_) => assert!(matches!(outcome, Outcome::Refused(_))),
    }
    let reported: Value = serde_json::from_slice(&tw.reported_bytes()).expect("reported is JSON");
    assert!(reported["TemperatureThreshold"].is_number());
    let patch = twin_doc::reported_patch(tw.threshold(), tw.version(), tw.status(), tw.source().as_str());
    let patch: Value = serde_json::from_slice(&patch).expect("reported patch is JSON");
    let status = patch["status"].as_str().expect("status is a string");
    assert!(status.len() <= MAX_REPORTED_VALUE_BYTES);
}

fuzz_target!(|data: &[u8]| {
    // Generic MQTT twin: the document as a desired patch, twice (the second may be stale),
    // then after a versioned patch.
    let mut tw = Twin::new(25.0, RuleSettings::default());
    check(&mut tw, data);
    check(&mut tw, data);
    let mut tw = Twin::new(25.0, RuleSettings::default());
    check(&mut tw, br#"{"TemperatureThreshold": 30, "$version": 5}"#);
    check(&mut tw, data);

    // IoT Edge: the document as a full twin; its desired section applied as a patch.
    if let Ok(full) = twin_doc::parse_full_twin(data) {
        let desired = full.desired_json();
        let via_map = twin::patch_from_map(&full.desired);
        let via_bytes = twin::parse_patch(&desired);
        assert_eq!(via_map.is_ok(), via_bytes.is_ok());
        if let (Ok(a), Ok(b)) = (&via_map, &via_bytes) {
            assert_eq!(a.version, b.version);
            assert_eq!(a.threshold.map(f64::to_bits), b.threshold.map(f64::to_bits));
        }
        if let Ok(p) = via_map {
            assert_eq!(p.version, full.desired_version);
        }
        let mut tw = Twin::new(25.0, RuleSettings::default());
        check(&mut tw, &desired);
    }
});
