//! Logins of the embedded broker: a password file in mosquitto's format (`mosquitto_passwd`
//! writes it), read at start and checked at each CONNECT by the broker's authentication hook.
//! Pure: text in, verdicts out — no sockets, no broker types.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::{digest, pbkdf2};
use thiserror::Error;

/// A password file line that cannot be used (the line number is 1-based).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PasswdError {
    #[error("line {0}: expected USER:HASH as written by `mosquitto_passwd`")]
    Syntax(usize),
    #[error("line {0}: the password is not hashed; hash the file with `mosquitto_passwd -U FILE`")]
    Plain(usize),
    #[error("line {0}: unknown hash `{1}` (expected mosquitto's $6$ or $7$)")]
    Scheme(usize, String),
    #[error("no user in the file")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    /// `$6$salt$hash`: SHA-512 of password then salt.
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// `$7$iterations$salt$hash`: PBKDF2-HMAC-SHA512 (mosquitto 2.0's default).
    Pbkdf2 {
        iterations: std::num::NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

/// The users of a password file and their hashed passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Passwords {
    users: HashMap<String, Hash>,
}

/// User names only: hashes stay out of debug output.
impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("Passwords").field("users", &users).finish()
    }
}

impl Passwords {
    /// Parses the file's text: `user:$7$…` lines; empty lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Passwords, PasswdError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').ok_or(PasswdError::Syntax(n))?;
            if user.is_empty() {
                return Err(PasswdError::Syntax(n));
            }
            users.insert(user.to_string(), parse_hash(n, hash)?);
        }
        if users.is_empty() {
            return Err(PasswdError::Empty);
        }
        Ok(Passwords { users })
    }

    /// True when `user` is in the file and `password` matches its hash.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            None => false,
            Some(Hash::Sha512 { salt, hash }) => {
                let mut ctx = digest::Context::new(&digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                let digest = ctx.finish();
                // Compared without an early exit.
                digest.as_ref().len() == hash.len()
                    && digest
                        .as_ref()
                        .iter()
                        .zip(hash)
                        .fold(0, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            Some(Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            }) => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn parse_hash(n: usize, s: &str) -> Result<Hash, PasswdError> {
    let Some(rest) = s.strip_prefix('$') else {
        return Err(PasswdError::Plain(n));
    };
    let b64 = |x: &str| STANDARD.decode(x).map_err(|_| PasswdError::Syntax(n));
    let parts: Vec<&str> = rest.split('$').collect();
    match parts.as_slice() {
        ["6", salt, hash] => Ok(Hash::Sha512 {
            salt: b64(salt)?,
            hash: b64(hash)?,
        }),
        ["7", iterations, salt, hash] => Ok(Hash::Pbkdf2 {
            iterations: iterations.parse().map_err(|_| PasswdError::Syntax(n))?,
            salt: b64(salt)?,
            hash: b64(hash)?,
        }),
        ["6" | "7", ..] => Err(PasswdError::Syntax(n)),
        [scheme, ..] => Err(PasswdError::Scheme(n, format!("${scheme}$"))),
        [] => Err(PasswdError::Syntax(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by mosquitto 2.0.11: `mosquitto_passwd -b -c pw alice s3cret`.
    const ALICE: &str = "alice:$7$101$1tWVG68+JewdWKvz$Cea5F8BtOKa3trXex0KshDEd/t1zYmlEwhz4m2hiQbvEb+jvO4DmfxKhs8Rzo1uImgl1RUm9OsADrnV7UhdEiw==";

    #[test]
    fn mosquitto_pbkdf2_lines_verify() {
        let p = Passwords::parse(&format!("# users\n\n{ALICE}\n")).unwrap();
        assert_eq!(p.len(), 1);
        assert!(p.verify("alice", b"s3cret"));
        assert!(!p.verify("alice", b"s3cret "));
        assert!(!p.verify("alice", b""));
        assert!(!p.verify("bob", b"s3cret"));
    }

    #[test]
    fn sha512_lines_verify() {
        let salt = b"0123456789ab";
        let mut ctx = digest::Context::new(&digest::SHA512);
        ctx.update(b"pw");
        ctx.update(salt);
        let line = format!(
            "bob:$6${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(ctx.finish())
        );
        let p = Passwords::parse(&line).unwrap();
        assert!(p.verify("bob", b"pw"));
        assert!(!p.verify("bob", b"pW"));
    }

    #[test]
    fn bad_files_are_named() {
        assert_eq!(Passwords::parse(""), Err(PasswdError::Empty));
        assert_eq!(Passwords::parse("alice"), Err(PasswdError::Syntax(1)));
        assert_eq!(
            Passwords::parse("# c\nalice:secret"),
            Err(PasswdError::Plain(2))
        );
        assert_eq!(
            Passwords::parse("alice:$1$x$y"),
            Err(PasswdError::Scheme(1, "$1$".into()))
        );
        assert_eq!(
            Passwords::parse("alice:$7$many$AA==$AA=="),
            Err(PasswdError::Syntax(1))
        );
        assert_eq!(
            Passwords::parse("alice:$7$101$1tWVG68+JewdWKvz"),
            Err(PasswdError::Syntax(1))
        );
    }
}
