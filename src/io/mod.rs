//! Everything that touches a socket: the connection loop ([`connection`]) around the pure
//! `Flow`, its transport ([`transport`]: TCP/TLS), handshake and reconnect policy, TLS
//! configuration ([`tls`]), the IoT Edge identity and workload API ([`azure`]), the embedded
//! broker ([`embedded`]), the metrics endpoint ([`http`]) and the outbox's file I/O
//! ([`outbox`]).

pub mod azure;
pub mod connection;
pub mod embedded;
pub mod handshake;
pub mod http;
pub mod outbox;
pub mod reconnect;
pub mod tls;
pub mod transport;
