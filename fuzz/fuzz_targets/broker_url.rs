//! Fuzz target for `--broker` URLs (`mqtt::broker_url`): nothing panics; a parsed URL prints as
//! a URL that parses to the same thing; no error message or `Debug` form ever contains the
//! user info of the URL (`user:secret@`).
//!
//! `cargo +nightly fuzz run broker_url fuzz/corpus/broker_url fuzz/seeds/broker_url`

#![no_main]

use edgefilter::mqtt::broker_url::{redacted, BrokerUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Also with a secret in the user info, whatever the rest is.
    let with_secret = match text.find("://") {
        Some(i) => format!("{}://u:SECRETpw@{}", &text[..i], &text[i + 3..]),
        None => format!("u:SECRETpw@{text}"),
    };
    // Only the secret this target put in can be told apart from the fuzzer's own text.
    let secret_planted = !text.contains("SECRETpw");
    for s in [text, with_secret.as_str()] {
        match BrokerUrl::parse(s) {
            Ok(url) => {
                let shown = url.to_string();
                assert_eq!(BrokerUrl::parse(&shown).as_ref(), Ok(&url), "{shown}");
                assert!(url.port > 0);
                assert!(!url.host.is_empty());
                if secret_planted {
                    assert!(!format!("{url:?}{url}").contains("SECRETpw"), "{s:?}");
                }
            }
            Err(e) => {
                for shown in [e.to_string(), format!("{e:?}")] {
                    if secret_planted {
                        assert!(!shown.contains("SECRETpw"), "{s:?} → {shown}");
                    }
                }
            }
        }
        let _ = redacted(s);
    }
});
