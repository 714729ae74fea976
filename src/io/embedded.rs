//! The embedded broker (cargo feature `embedded-broker`, on by default): rumqttd started
//! in-process on `--listen`, so `edgefilter run` with no `--broker` is a complete MQTT broker
//! with the filter attached — sensors and consumers connect to it like to any broker, and the
//! filter's own connection goes to it over loopback.

use std::net::{SocketAddr, TcpListener};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EmbeddedError {
    #[error("--listen {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the embedded broker did not start listening on {0} within 10 s")]
    NotListening(SocketAddr),
    #[error("embedded broker: {0}")]
    Start(String),
    #[error("this edgefilter was built without the `embedded-broker` feature; pass --broker mqtt://HOST:PORT")]
    NotBuiltIn,
}

/// Settings of the in-process broker.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    /// MQTT 3.1.1 listener (sensors and most clients).
    pub v4: Option<SocketAddr>,
    /// MQTT 5 listener.
    pub v5: Option<SocketAddr>,
    /// Largest payload accepted from clients.
    pub max_payload: usize,
}

impl EmbeddedBroker {
    /// Starts the broker on its own threads and waits until it accepts connections.
    #[cfg(feature = "embedded-broker")]
    pub fn start(&self) -> Result<(), EmbeddedError> {
        use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
        use std::collections::HashMap;

        let listeners: Vec<SocketAddr> = self.v4.iter().chain(self.v5.iter()).copied().collect();
        // rumqttd only logs bind failures: check the addresses first for a clear error.
        for addr in &listeners {
            TcpListener::bind(addr).map_err(|source| EmbeddedError::Bind {
                addr: *addr,
                source,
            })?;
        }
        let connections = ConnectionSettings {
            connection_timeout_ms: 60_000,
            // Room for a payload of --max-payload plus topic and properties, so oversize
            // messages still reach the filter (which rejects and dead-letters them).
            max_payload_size: self.max_payload.saturating_mul(2).max(1 << 20),
            max_inflight_count: 1000,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        let server = |name: &str, listen: SocketAddr| {
            let mut m = HashMap::new();
            m.insert(
                "1".to_string(),
                ServerSettings {
                    name: name.to_string(),
                    listen,
                    tls: None,
                    next_connection_delay_ms: 1,
                    connections: connections.clone(),
                },
            );
            m
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 10_010,
                max_outgoing_packet_count: 1000,
                // The router keeps each topic's message log in memory, and a subscriber that
                // lags by more than the log skips what rolled out. rumqttd's example size
                // (10 × 100 MiB per topic) kept every burst we measured lossless; 4 × 8 MiB
                // lost 17 % of a 700k msg/s QoS 0 burst (BENCHMARKS.md). Memory is the price.
                max_segment_size: 100 << 20,
                max_segment_count: 10,
                ..Default::default()
            },
            v4: self.v4.map(|a| server("embedded-v4", a)),
            v5: self.v5.map(|a| server("embedded-v5", a)),
            ..Default::default()
        };
        let mut broker = Broker::new(config);
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!("embedded broker stopped: {e}");
                }
            })
            .map_err(|e| EmbeddedError::Start(e.to_string()))?;
        for addr in listeners {
            wait_listening(addr)?;
        }
        Ok(())
    }

    #[cfg(not(feature = "embedded-broker"))]
    pub fn start(&self) -> Result<(), EmbeddedError> {
        Err(EmbeddedError::NotBuiltIn)
    }
}

#[cfg(feature = "embedded-broker")]
fn wait_listening(addr: SocketAddr) -> Result<(), EmbeddedError> {
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            addr.port(),
        )
    } else {
        addr
    };
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(EmbeddedError::NotListening(addr))
}

/// A free TCP port on 127.0.0.1 (for the demo and tests).
pub fn free_local_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}
