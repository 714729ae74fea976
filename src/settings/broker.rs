//! The embedded broker's settings beyond its addresses: bounds, logins, TLS listener, cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Passwords;

/// The embedded broker's settings beyond its addresses (checked from the flags by the command line).
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub queue: usize,
    pub inflight: u16,
    /// The gate's watchdog: publishers held this long with no progress of the filter restart
    /// its connection (zero: never).
    pub stall_timeout: Duration,
    pub passwords: Option<Passwords>,
    pub anonymous_anywhere: bool,
    pub twin_writers: Vec<String>,
    /// TLS listener: address, certificate chain, key.
    pub tls: Option<(SocketAddr, PathBuf, PathBuf)>,
    pub cluster: Option<Cluster>,
}

/// This node and its peers' gRPC addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub node_id: u64,
    pub peers: Vec<(u64, SocketAddr)>,
}
