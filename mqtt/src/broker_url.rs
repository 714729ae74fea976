//! `--broker` URLs: `mqtt://HOST[:PORT]` (1883) and `mqtts://HOST[:PORT]` (8883).
//!
//! Credentials in the URL (`mqtt://user:pass@host`) are refused with a hint to use
//! `--username` and `--password-file`: a URL on the command line or in the environment is
//! visible to every local user (`ps`, `/proc/*/cmdline`, `docker inspect`), a password file is
//! not. The refusal, like every other error here, shows the URL with its user info replaced by
//! `***`, so the secret never reaches a terminal or a log.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BrokerUrlError {
    #[error("{0:?}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")]
    Scheme(String),
    #[error("{0:?}: expected a host name, an IPv4 address or [an IPv6 address] after the scheme")]
    Host(String),
    #[error("{0:?}: the port must be a number from 1 to 65535")]
    Port(String),
    #[error("{0:?}: credentials in the URL are not accepted (they would show in the process list); use --username and --password-file")]
    UserInfo(String),
}

/// `s` with the user info of its authority (up to the last `@` before the path) replaced by
/// `***`: the form of a URL that may be shown.
pub fn redacted(s: &str) -> String {
    let start = s.find("://").map_or(0, |i| i + 3);
    let end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    match s[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &s[..start], &s[start + at..]),
        None => s.to_string(),
    }
}

impl BrokerUrl {
    pub fn parse(s: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let shown = redacted(s.trim());
        if shown != s.trim() {
            return Err(BrokerUrlError::UserInfo(shown));
        }
        let s = s.trim();
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("ssl://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (false, r)
        } else {
            return Err(BrokerUrlError::Scheme(s.to_string()));
        };
        let rest = rest.trim_end_matches('/');
        let bad_host = || BrokerUrlError::Host(s.to_string());
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            // [::1]:1883 — an IPv6 address, then nothing or `:PORT`.
            let (h, after) = bracketed.split_once(']').ok_or_else(bad_host)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad_host)?),
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad_host());
            }
            (h.to_string(), port)
        } else {
            let (h, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            // A name or an IPv4 address (IPv6 goes in brackets): letters, digits, `-`, `.`,
            // `_`. Anything else (a second `:`, `]`, whitespace, control characters) is refused
            // rather than looked up or printed.
            let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
            if h.is_empty() || !h.chars().all(name_char) {
                return Err(bad_host());
            }
            (h.to_string(), port)
        };
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(BrokerUrlError::Port(s.to_string())),
            },
        };
        Ok(BrokerUrl { host, port, tls })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}", self.addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_and_default_ports() {
        let u = BrokerUrl::parse("mqtt://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("localhost", 1883, false));
        let u = BrokerUrl::parse("mqtts://broker.example:9999").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example", 9999, true)
        );
        assert_eq!(BrokerUrl::parse("mqtts://h").unwrap().port, 8883);
        let u = BrokerUrl::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        assert_eq!(u.addr(), "[::1]:1884");
    }

    #[test]
    fn credentials_are_refused_and_never_shown() {
        for url in [
            "mqtt://user:s3cret@broker:1883",
            "mqtts://user:s3cret@broker",
            "mqtt://user:s3cret@[::1]:1883/",
            "mqtt://:s3cret@broker",
            "mqtt://us%40er:s3%3Acret@broker:1883",
            "mqtt://user:s3cret@",
            "user:s3cret@broker:1883",
            "http://user:s3cret@broker",
            "mqtt://a@b:s3cret@broker:99999",
        ] {
            let e = BrokerUrl::parse(url).unwrap_err();
            assert!(matches!(e, BrokerUrlError::UserInfo(_)), "{url}: {e:?}");
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains("s3cret"), "{url}: {shown}");
            }
            assert!(e.to_string().contains("--password-file"), "{url}: {e}");
        }
        assert_eq!(
            redacted("mqtt://user:pw@host:1883/x@y"),
            "mqtt://***@host:1883/x@y"
        );
        assert_eq!(redacted("mqtt://host:1883"), "mqtt://host:1883");
        // A user name alone is refused too: it belongs in --username.
        assert!(matches!(
            BrokerUrl::parse("mqtt://gw1@host"),
            Err(BrokerUrlError::UserInfo(u)) if u == "mqtt://***@host"
        ));
    }

    #[test]
    fn hosts_are_names_or_addresses() {
        // Found by fuzzing: `mqtts://<NUL>:1]:8882` parsed as a host with NULs and `]`, and
        // printed back as a URL that parses to another port.
        for bad in [
            "mqtts://\0\0\0:1\0\0:1]:8882/",
            "mqtt://[::1]junk",
            "mqtt://[::1]:",
            "mqtt://[nonsense]:1883",
            "mqtt://::1:1883",
            "mqtt://host name:1883",
            "mqtt://host]:1883",
            "mqtt://h\nx:1883",
        ] {
            assert!(
                matches!(
                    BrokerUrl::parse(bad),
                    Err(BrokerUrlError::Host(_) | BrokerUrlError::Port(_))
                ),
                "{bad:?}: {:?}",
                BrokerUrl::parse(bad)
            );
        }
        for good in [
            "mqtt://broker-1.example_x:1883",
            "mqtt://10.0.0.1",
            "mqtts://[::ffff:10.0.0.1]",
        ] {
            let url = BrokerUrl::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(BrokerUrl::parse(&url.to_string()), Ok(url), "{good}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        assert!(matches!(
            BrokerUrl::parse("http://h"),
            Err(BrokerUrlError::Scheme(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://:1883"),
            Err(BrokerUrlError::Host(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://h:0"),
            Err(BrokerUrlError::Port(_))
        ));
        assert!(matches!(
            BrokerUrl::parse("mqtt://h:x"),
            Err(BrokerUrlError::Port(_))
        ));
    }
}
