//! edgeHub's authenticator (test tooling, at CONNECT): the SAS token check and the CONNECT
//! fields a module must send (client id `<dev>/<mod>`, username
//! `<hub>/<dev>/<mod>/?api-version=…`, MQTT 3.1.1), as edgeHub's authenticator checks them. Pure.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rumqttc::mqttbytes::v4::Connect;
use rumqttc::mqttbytes::Protocol;

/// edgeHub accepts tokens that expired up to this long ago (clock skew).
pub const SKEW_SECS: u64 = 300;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// HMAC-SHA256 of `data` with `key`, base64 (what the security daemon's `sign` returns).
pub fn hmac_base64(key: &[u8], data: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    BASE64.encode(ring::hmac::sign(&key, data).as_ref())
}

/// Splits `SharedAccessSignature sr=…&sig=…&se=…` into its (still encoded) fields.
pub fn token_fields(token: &str) -> Result<HashMap<String, String>, String> {
    let fields = token
        .strip_prefix("SharedAccessSignature ")
        .ok_or("no SharedAccessSignature prefix")?;
    fields
        .split('&')
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("field {kv:?} is not k=v"))
        })
        .collect()
}

pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Checks a module's SAS token as edgeHub does: exactly `sr`, `sig`, `se`; `sr` names
/// `resource` (`<hub>/devices/<dev>/modules/<mod>`, raw ids) fully encoded; not expired beyond
/// the skew; `sig` is HMAC-SHA256 of `"<sr as sent>\n<se>"` with `key`. Returns `se`.
pub fn verify_sas(token: &str, key: &[u8], resource: &str, now: u64) -> Result<u64, String> {
    let fields = token_fields(token)?;
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names != ["se", "sig", "sr"] {
        return Err(format!("token fields {names:?}, expected se, sig, sr"));
    }
    let sr = &fields["sr"];
    if decode(sr) != resource || sr.contains('/') {
        return Err(format!("sr {sr:?} is not the encoded {resource:?}"));
    }
    let se: u64 = fields["se"]
        .parse()
        .map_err(|_| format!("se {:?} is not Unix seconds", fields["se"]))?;
    if se + SKEW_SECS < now {
        return Err(format!("token expired at {se} (now {now})"));
    }
    let sig = &fields["sig"];
    if sig.contains(['+', '/', '=']) {
        return Err(format!("sig {sig:?} is not percent-encoded"));
    }
    if decode(sig) != hmac_base64(key, format!("{sr}\n{se}").as_bytes()) {
        return Err("signature does not verify with the module key".into());
    }
    Ok(se)
}

/// Who may connect: a module's identity and key.
#[derive(Clone, Debug)]
pub struct Expected {
    pub hub: String,
    pub device: String,
    pub module: String,
    pub key: Vec<u8>,
}

impl Expected {
    /// `<dev>/<mod>`: the client id this module must use.
    pub fn client_id(&self) -> String {
        format!("{}/{}", self.device, self.module)
    }

    /// What edgeHub's authenticator checks before accepting a module: MQTT 3.1.1, the client
    /// id, a username naming the same identity (raw ids) with an `api-version`, and the SAS
    /// token. Returns the token's expiry.
    pub fn check(&self, c: &Connect, now: u64) -> Result<u64, String> {
        if c.protocol != Protocol::V4 {
            return Err(format!(
                "protocol {:?}, edgeHub speaks MQTT 3.1.1",
                c.protocol
            ));
        }
        let client_id = self.client_id();
        if c.client_id != client_id {
            return Err(format!(
                "client id {:?}, expected {client_id:?}",
                c.client_id
            ));
        }
        let login = c.login.as_ref().ok_or("no username and password")?;
        let prefix = format!("{}/{}/{}/?", self.hub, self.device, self.module);
        let query = login
            .username
            .strip_prefix(&prefix)
            .ok_or_else(|| format!("username {:?} does not start {prefix:?}", login.username))?;
        if !query.split('&').any(|p| p.starts_with("api-version=")) {
            return Err(format!("username {:?} has no api-version", login.username));
        }
        let resource = format!(
            "{}/devices/{}/modules/{}",
            self.hub, self.device, self.module
        );
        verify_sas(&login.password, &self.key, &resource, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::Login;

    fn token(key: &[u8], resource: &str, se: u64) -> String {
        let sr =
            percent_encoding::utf8_percent_encode(resource, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let sig = hmac_base64(key, format!("{sr}\n{se}").as_bytes());
        let sig = percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC);
        format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}")
    }

    fn connect(client_id: &str, username: &str, password: &str) -> Connect {
        let mut c = Connect::new(client_id);
        c.login = Some(Login::new(username, password));
        c
    }

    #[test]
    fn accepts_raw_ids_and_refuses_encoded_ones() {
        let e = Expected {
            hub: "hub.test".into(),
            device: "gw:01@plant".into(),
            module: "m".into(),
            key: b"k".to_vec(),
        };
        let now = 1_700_000_000;
        let good = token(b"k", "hub.test/devices/gw:01@plant/modules/m", now + 60);
        let ok = connect(
            "gw:01@plant/m",
            "hub.test/gw:01@plant/m/?api-version=2019-10-01",
            &good,
        );
        assert_eq!(e.check(&ok, now), Ok(now + 60));
        let encoded = connect(
            "gw%3A01%40plant/m",
            "hub.test/gw:01@plant/m/?api-version=2019-10-01",
            &good,
        );
        assert!(e.check(&encoded, now).unwrap_err().contains("client id"));
        let user = connect(
            "gw:01@plant/m",
            "hub.test/gw%3A01%40plant/m/?api-version=2019-10-01",
            &good,
        );
        assert!(e.check(&user, now).unwrap_err().contains("username"));
        let no_api = connect("gw:01@plant/m", "hub.test/gw:01@plant/m/?x=1", &good);
        assert!(e.check(&no_api, now).unwrap_err().contains("api-version"));
        let wrong_key = token(b"other", "hub.test/devices/gw:01@plant/modules/m", now + 60);
        let bad = connect(
            "gw:01@plant/m",
            "hub.test/gw:01@plant/m/?api-version=1",
            &wrong_key,
        );
        assert!(e.check(&bad, now).unwrap_err().contains("signature"));
        let expired = token(b"k", "hub.test/devices/gw:01@plant/modules/m", now - 301);
        let old = connect(
            "gw:01@plant/m",
            "hub.test/gw:01@plant/m/?api-version=1",
            &expired,
        );
        assert!(e.check(&old, now).unwrap_err().contains("expired"));
    }
}
