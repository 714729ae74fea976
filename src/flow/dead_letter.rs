//! The dead-letter body (after the verdict, before MQTT out): what a rejected input — or one
//! whose alert could not be published — becomes on the dead-letter topic or output. Pure.

use base64::Engine as _;
use bytes::Bytes;

/// Payload bytes kept in a dead letter for an oversize message.
pub const DEAD_LETTER_KEEP: usize = 1024;

/// `{"reason":…,"detail":…,"topic":…,"payload":…}` with the original payload as a string when
/// it is UTF-8 (`payload_base64` otherwise). `payload` is what was read of the input's `size`
/// bytes (all of it, except for inputs too large to read). The payload is cut to 1 KiB
/// (`"truncated":true`, `"size"`) for oversize messages and for alerts that could not be
/// published (over edgeHub's limits, or otherwise).
pub fn dead_letter_envelope(
    reason: &str,
    detail: &str,
    topic: &str,
    payload: &[u8],
    size: usize,
) -> Bytes {
    let cut = matches!(
        reason,
        "too_large" | "unpublishable" | "too_large_for_edgehub"
    );
    let (kept, truncated) = if cut && payload.len() > DEAD_LETTER_KEEP {
        (&payload[..DEAD_LETTER_KEEP], true)
    } else {
        (payload, size > payload.len())
    };
    let mut doc = serde_json::json!({ "reason": reason, "detail": detail, "topic": topic });
    match std::str::from_utf8(kept) {
        Ok(text) => doc["payload"] = text.into(),
        Err(_) => {
            doc["payload_base64"] = base64::engine::general_purpose::STANDARD
                .encode(kept)
                .into()
        }
    }
    if truncated {
        doc["truncated"] = true.into();
        doc["size"] = size.max(payload.len()).into();
    }
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_keep_the_payload_losslessly() {
        let v: serde_json::Value = serde_json::from_slice(&dead_letter_envelope(
            "not_json", "why", "t/1", b"garbage", 7,
        ))
        .unwrap();
        assert_eq!(
            (v["reason"].as_str(), v["payload"].as_str()),
            (Some("not_json"), Some("garbage"))
        );
        let v: serde_json::Value = serde_json::from_slice(&dead_letter_envelope(
            "not_utf8",
            "why",
            "t/1",
            b"\xff\x00",
            2,
        ))
        .unwrap();
        assert_eq!(v["payload_base64"], "/wA=");
        let big = vec![b'x'; 5000];
        let v: serde_json::Value =
            serde_json::from_slice(&dead_letter_envelope("too_large", "why", "t/1", &big, 5000))
                .unwrap();
        assert_eq!(
            (v["truncated"].as_bool(), v["size"].as_u64()),
            (Some(true), Some(5000))
        );
        assert_eq!(v["payload"].as_str().map(str::len), Some(DEAD_LETTER_KEEP));
        // An input too large to read: its first bytes, and the size it had.
        let v: serde_json::Value = serde_json::from_slice(&dead_letter_envelope(
            "too_large",
            "why",
            "t/1",
            &big[..100],
            2_000_000,
        ))
        .unwrap();
        assert_eq!(
            (v["truncated"].as_bool(), v["size"].as_u64()),
            (Some(true), Some(2_000_000))
        );
        assert_eq!(v["payload"].as_str().map(str::len), Some(100));
    }
}
