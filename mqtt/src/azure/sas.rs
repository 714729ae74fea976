//! SAS tokens for the MQTT CONNECT password (io, before MQTT in): the resource URI, the string
//! to sign, local HMAC-SHA256 signing with a connection string's key, and the token text.
//!
//! Format (the Python SDK's `common/auth/sastoken.py`):
//! `SharedAccessSignature sr=<quote(uri, safe="")>&sig=<quote(base64 digest, safe="")>&se=<expiry>`
//! with the digest taken over `sr + "\n" + se`; no `skn` for module identities.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The characters Python's `urllib.parse.quote(s, safe="")` leaves alone (Python ≥ 3.7):
/// ASCII letters, digits and `-._~`. Everything else is percent-encoded as UTF-8 bytes. The SDK
/// uses this for the SAS resource and signature, property bags, request ids and the user agent.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `urllib.parse.quote(s, safe="")`.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// `<hub>/devices/<deviceId>/modules/<moduleId>` percent-encoded with nothing safe: the `sr`.
pub fn encoded_resource_uri(hub_host_name: &str, device_id: &str, module_id: &str) -> String {
    encode_component(&format!(
        "{hub_host_name}/devices/{device_id}/modules/{module_id}"
    ))
}

/// The text whose HMAC-SHA256 is the signature: `sr + "\n" + se`.
pub fn string_to_sign(encoded_resource_uri: &str, expires_at: u64) -> String {
    format!("{encoded_resource_uri}\n{expires_at}")
}

/// The token text from the encoded resource URI, the base64 digest and the expiry.
pub fn token(encoded_resource_uri: &str, signature_base64: &str, expires_at: u64) -> String {
    format!(
        "SharedAccessSignature sr={encoded_resource_uri}&sig={}&se={expires_at}",
        encode_component(signature_base64)
    )
}

/// A module's shared access key (the base64-decoded `SharedAccessKey` of a connection string).
/// Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedAccessKey(Vec<u8>);

impl SharedAccessKey {
    /// Decodes a base64 key as found in a connection string.
    pub fn from_base64(text: &str) -> Result<SharedAccessKey, base64::DecodeError> {
        let key = BASE64.decode(text.trim())?;
        Ok(SharedAccessKey(key))
    }

    /// HMAC-SHA256 of `data` with this key, base64-encoded (what the workload API's `sign`
    /// returns as `digest`).
    pub fn sign(&self, data: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        BASE64.encode(ring::hmac::sign(&key, data).as_ref())
    }
}

impl fmt::Debug for SharedAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedAccessKey(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_python_quote_with_nothing_safe() {
        // python3 -c "import urllib.parse as u; print(u.quote('aZ09-._~!*\'()/:@\$&=+, é', safe=''))"
        assert_eq!(
            encode_component("aZ09-._~!*'()/:@$&=+, é"),
            "aZ09-._~%21%2A%27%28%29%2F%3A%40%24%26%3D%2B%2C%20%C3%A9"
        );
    }

    #[test]
    fn resource_uri_is_encoded_whole() {
        assert_eq!(
            encoded_resource_uri("myhub.azure-devices.net", "dev1", "filtermodule"),
            "myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Ffiltermodule"
        );
        assert_eq!(string_to_sign("a%2Fb", 1_700_000_000), "a%2Fb\n1700000000");
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = SharedAccessKey::from_base64(&BASE64.encode(b"Jefe")).unwrap();
        let digest = BASE64
            .decode(key.sign(b"what do ya want for nothing?"))
            .unwrap();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn token_encodes_the_signature_and_has_no_skn() {
        // python3 -c 'import hmac,hashlib,base64,urllib.parse as u;
        //   sr=u.quote("myhub.azure-devices.net/devices/dev1/modules/filtermodule",safe="");
        //   d=hmac.new(b"secret-key-0123456789",(sr+"\n1700003600").encode(),hashlib.sha256).digest();
        //   print(base64.b64encode(d).decode())'
        let key = SharedAccessKey::from_base64("c2VjcmV0LWtleS0wMTIzNDU2Nzg5").unwrap();
        let sr = encoded_resource_uri("myhub.azure-devices.net", "dev1", "filtermodule");
        let sig = key.sign(string_to_sign(&sr, 1_700_003_600).as_bytes());
        assert_eq!(sig, "AE1HH0FMWdGzwTxvXN/TcJb9sfNQOkBJqpEZom+0bjY=");
        assert_eq!(
            token(&sr, &sig, 1_700_003_600),
            "SharedAccessSignature \
             sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Ffiltermodule\
             &sig=AE1HH0FMWdGzwTxvXN%2FTcJb9sfNQOkBJqpEZom%2B0bjY%3D&se=1700003600"
        );
    }

    #[test]
    fn bad_keys_are_refused_and_keys_never_print() {
        assert!(SharedAccessKey::from_base64("not base64!").is_err());
        let key = SharedAccessKey::from_base64("c2VjcmV0").unwrap();
        assert_eq!(format!("{key:?}"), "SharedAccessKey(<6 bytes>)");
    }
}
