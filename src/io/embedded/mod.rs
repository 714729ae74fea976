//! The embedded broker (cargo feature `embedded-broker`, on by default): rmqtt started
//! in-process on `--listen` (MQTT 3.1, 3.1.1 and 5 on one port, retained messages, `$share`
//! groups), so `edgefilter run` with no `--broker` is a complete MQTT broker with the filter
//! attached. Sensors and consumers connect to it like to any broker; the filter's own
//! connection goes to it over loopback with a per-process secret. Its memory is bounded by
//! `--broker-queue` per session (its queue, and its inbox before it: [`inbox`]); what it
//! drops is counted by [`hooks`] into `/metrics`.
//!
//! `plan::resolve` builds its [`EmbeddedBroker`] settings (this module takes no `config`);
//! `run` calls [`EmbeddedBroker::start`] at one place and gets the address and login for the
//! filter's connection back.

#[cfg(feature = "cluster")]
mod cluster;
#[cfg(feature = "embedded-broker")]
mod gate;
#[cfg(feature = "embedded-broker")]
mod hooks;
#[cfg(feature = "embedded-broker")]
mod inbox;

use crate::settings::BrokerOptions;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use thiserror::Error;

use crate::metrics::Metrics;

#[derive(Debug, Error)]
pub enum EmbeddedError {
    #[error("--listen {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("--listen-tls {addr}: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("--listen {0} is reachable from other hosts and anyone could change the threshold through the twin: give --listen-password-file FILE (mosquitto_passwd format), or --listen-anonymous to accept clients without a login")]
    Open(SocketAddr),
    #[error("embedded broker: {0}")]
    Start(String),
    #[error("this edgefilter was built without the `embedded-broker` feature; pass --broker mqtt://HOST:PORT")]
    NotBuiltIn,
}

/// What every listener of the embedded broker serves (each connection's version is detected),
/// as the log and the demo say it.
pub const PROTOCOLS: &str = "MQTT 3.1.1 and 5";

/// Settings of the in-process broker (built from the run's settings by `plan`).
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    /// Every MQTT version (detected per connection).
    pub listen: SocketAddr,
    /// A second plain port (`--listen-v5`, same protocols).
    pub second: Option<SocketAddr>,
    /// Largest payload accepted from clients.
    pub max_payload: usize,
    pub options: BrokerOptions,
    /// The filter's client id (logs in with a per-process token) and twin prefix.
    pub filter_client_id: String,
    /// The client id of the filter's publisher connection (it logs in like the filter).
    pub filter_publisher_id: String,
    pub twin_topic: String,
    /// The filter's input filters: publishes to them wait while the filter's queue is at
    /// its high-water mark (backpressure, see `gate`).
    pub input_topics: Vec<String>,
}

/// A started broker: where the filter connects, and how it logs in.
#[derive(Debug, Clone)]
pub struct EmbeddedHandle {
    pub connect_to: SocketAddr,
    pub username: String,
    pub password: String,
}

impl EmbeddedBroker {
    /// Every address the broker listens on.
    fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.listen)
            .chain(self.second)
            .chain(self.options.tls.as_ref().map(|t| t.0))
    }

    /// Refuses a listener other hosts can reach unless clients must log in (or the user said
    /// anonymous is fine).
    pub fn check_open(&self) -> Result<(), EmbeddedError> {
        if self.options.passwords.is_some() || self.options.anonymous_anywhere {
            return Ok(());
        }
        match self.addresses().find(|a| !a.ip().is_loopback()) {
            Some(a) => Err(EmbeddedError::Open(a)),
            None => Ok(()),
        }
    }

    /// Starts the broker on threads of its own and waits until it accepts connections; what
    /// it drops is counted in `metrics`.
    #[cfg(feature = "embedded-broker")]
    pub fn start(&self, metrics: Arc<Metrics>) -> Result<EmbeddedHandle, EmbeddedError> {
        self.check_open()?;
        // rmqtt only logs bind failures: check the addresses first for a clear error.
        for addr in self.addresses() {
            TcpListener::bind(addr).map_err(|e| EmbeddedError::Bind {
                addr,
                reason: e.to_string(),
            })?;
        }
        let token = random_token()?;
        let handle = EmbeddedHandle {
            connect_to: loopback_of(self.listen),
            username: self.filter_client_id.clone(),
            password: token.clone(),
        };
        let addresses: Vec<String> = self.addresses().map(|a| a.to_string()).collect();
        let tls = if self.options.tls.is_some() {
            " (the last with TLS)"
        } else {
            ""
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let broker = self.clone();
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("embedded-broker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(EmbeddedError::Start(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(serve(broker, metrics, token, ready_tx));
            })
            .map_err(|e| EmbeddedError::Start(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => tracing::info!(
                "embedded broker listening on {} ({PROTOCOLS}){tls}",
                addresses.join(", ")
            ),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(EmbeddedError::Start("the broker thread ended".into())),
        }
        wait_listening(handle.connect_to)?;
        Ok(handle)
    }

    #[cfg(not(feature = "embedded-broker"))]
    pub fn start(&self, _metrics: Arc<Metrics>) -> Result<EmbeddedHandle, EmbeddedError> {
        Err(EmbeddedError::NotBuiltIn)
    }
}

/// Plugin settings (TOML, as rmqtt reads them): retained messages in memory, at most 10,000
/// topics, no expiry (the twin's desired state lives there); `$share` round robin.
#[cfg(feature = "embedded-broker")]
fn retainer_config(max_payload: usize) -> String {
    format!(
        "storage.type = \"ram\"\nmax_retained_messages = 10000\nmax_payload_size = \"{max_payload}B\"\nretained_message_ttl = \"0m\"\n"
    )
}

#[cfg(feature = "embedded-broker")]
async fn serve(
    broker: EmbeddedBroker,
    metrics: Arc<Metrics>,
    token: String,
    ready: std::sync::mpsc::Sender<Result<(), EmbeddedError>>,
) {
    use rmqtt::context::ServerContext;
    use rmqtt::server::MqttServer;

    let opts = &broker.options;
    let builder = ServerContext::new()
        // rmqtt refuses connections when the host's load is high: a gateway is always busy.
        .busy_check_enable(false)
        .plugins_config_map_add("rmqtt-retainer", retainer_config(broker.max_payload))
        .plugins_config_map_add("rmqtt-shared-subscription", "strategy = \"round_robin\"\n");
    #[cfg(feature = "cluster")]
    let builder = cluster::configure(builder, opts.cluster.as_ref());
    let scx = builder.build().await;
    let started = async {
        rmqtt_retainer::register(&scx, true, false)
            .await
            .map_err(|e| EmbeddedError::Start(format!("retainer: {e}")))?;
        rmqtt_shared_subscription::register(&scx, true, false)
            .await
            .map_err(|e| EmbeddedError::Start(format!("shared subscriptions: {e}")))?;
        #[cfg(feature = "cluster")]
        cluster::start(&scx, opts.cluster.as_ref()).await?;
        // After the plugins: the cluster's router is the one to wrap.
        let inboxes = Arc::new(inbox::Inboxes::new(opts.queue, metrics.clone()));
        inbox::install(&scx, inboxes.clone()).await;
        hooks::register(
            &scx,
            hooks::Access {
                filter_client_id: broker.filter_client_id.clone(),
                filter_publisher_id: broker.filter_publisher_id.clone(),
                filter_token: token,
                passwords: opts.passwords.clone(),
                twin_desired: format!("{}/desired", broker.twin_topic),
                twin_reported: format!("{}/reported", broker.twin_topic),
                twin_writers: opts.twin_writers.clone(),
            },
            metrics.clone(),
            opts.queue,
            Arc::new(gate::Gate {
                inputs: broker.input_topics.clone(),
                filter_client_id: broker.filter_client_id.clone(),
                high_water: (opts.queue / 2).max(1),
                metrics: metrics.clone(),
                filter: Default::default(),
                inboxes: inboxes.clone(),
                watchdog: std::sync::Mutex::new(gate::Watchdog::new(opts.stall_timeout)),
                away: Default::default(),
            }),
            inboxes,
        )
        .await;
        let mut server = MqttServer::new(scx.clone());
        let mut id = 1u16;
        for addr in std::iter::once(broker.listen).chain(broker.second) {
            let l = listener(&broker, "tcp", addr)
                .bind()
                .and_then(|l| l.tcp())
                .map_err(|e| EmbeddedError::Bind {
                    addr,
                    reason: e.to_string(),
                })?;
            server = server.listener_by_id(l, id);
            id += 1;
        }
        if let Some((addr, cert, key)) = &opts.tls {
            let l = tls_listener(&broker, *addr, cert, key).map_err(|e| EmbeddedError::Tls {
                addr: *addr,
                reason: e.to_string(),
            })?;
            server = server.listener_by_id(l, id);
        }
        Ok::<_, EmbeddedError>(server.build())
    };
    match started.await {
        Ok(server) => {
            let _ = ready.send(Ok(()));
            if let Err(e) = server.run().await {
                tracing::error!("embedded broker stopped: {e}");
            }
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

/// One listener's settings: Nagle off (rmqtt's default on held acks for 40 ms), a QoS 1
/// window and a queue per session from the flags, room for --max-payload.
#[cfg(feature = "embedded-broker")]
fn listener(broker: &EmbeddedBroker, kind: &str, addr: SocketAddr) -> rmqtt::net::Builder {
    let opts = &broker.options;
    rmqtt::net::Builder::new()
        .name(format!("edgefilter/{kind}"))
        .laddr(addr)
        .nodelay(true)
        .max_inflight(std::num::NonZeroU16::new(opts.inflight).unwrap_or(std::num::NonZeroU16::MIN))
        .max_mqueue_len(opts.queue)
        // Room for a payload of --max-payload plus topic and properties, so oversize
        // messages still reach the filter (which rejects and dead-letters them).
        .max_packet_size(broker.max_payload.saturating_mul(2).max(1 << 20) as u32)
        // No retransmission on a live connection (MQTT 5 allows it only on reconnect): rmqtt
        // re-sends unacknowledged messages every 20 s by default, which fills the socket of a
        // client that does not read until a write blocks — and while a session's task is
        // blocked, its unbounded inbox grows with the traffic (a `#` subscriber that never
        // read took the process from 44 to 670 MB after 5 minutes at 30k msg/s). No expiry in
        // the queue either: it is bounded by --broker-queue, and expiry timers re-send too.
        .message_retry_interval(std::time::Duration::ZERO)
        .message_expiry_interval(std::time::Duration::ZERO)
        // Logins are decided by our authentication hook, anonymous ones included.
        .allow_anonymous(false)
        .max_connections(10_000)
}

#[cfg(feature = "embedded-broker")]
fn tls_listener(
    broker: &EmbeddedBroker,
    addr: SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> rmqtt::Result<rmqtt::net::Listener> {
    listener(broker, "tls", addr)
        .tls_cert(Some(cert.display().to_string()))
        .tls_key(Some(key.display().to_string()))
        .bind()?
        .tls()
}

/// 32 random bytes, hex: the filter's password on its own broker.
#[cfg(feature = "embedded-broker")]
fn random_token() -> Result<String, EmbeddedError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| EmbeddedError::Start("no random numbers for the filter's login".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where to reach a listener: its own address, or loopback for a wildcard one.
pub fn loopback_of(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

#[cfg(feature = "embedded-broker")]
fn wait_listening(addr: SocketAddr) -> Result<(), EmbeddedError> {
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(EmbeddedError::Start(format!(
        "not listening on {addr} within 10 s"
    )))
}

/// A free TCP port on 127.0.0.1 (for the demo and tests).
pub fn free_local_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}
