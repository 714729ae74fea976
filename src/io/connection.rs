//! The connection loop: MQTT in and MQTT out, I/O only. It owns the sockets (the input
//! connection and, for generic MQTT, the publisher connection), the verdict stages and the
//! worker pool, and feeds [`Flow`] — which holds every protocol decision — with what happens:
//!
//! ```text
//!   socket reads ─▶ codec::decode ─▶ Flow::handle_packet     Flow::poll_dispatch ─▶ stage (inline)
//!   worker results ───────────────▶ Flow::handle_verdicts                       └─▶ pool (workers)
//!   timer ────────────────────────▶ Flow::handle_timeout    Flow::poll ─▶ read?, exit
//!   shutdown ─────────────────────▶ Flow::handle_drain      Flow::poll_transmit ─▶ one write per socket and turn
//!   outbox committed ─────────────▶ Flow::handle_outbox_committed   Flow::poll_outbox ─▶ OutboxIo
//!                                                           Flow::poll_timeout ─▶ next wake-up
//! ```
//!
//! All outgoing packets of one loop turn go out with one `write_all` per socket: rumqttc's own
//! event loop flushes once per request, which is what this loop exists to avoid. Around each
//! connection: [`Transport`] (TCP/TLS), [`handshake`](super::handshake) (CONNECT/CONNACK)
//! and [`Backoff`] (when to retry); IoT Edge credentials are renewed before every CONNECT.
//! The two connections come and go together: both are opened (the publisher first), and when
//! one fails the other is closed cleanly too before both are opened again. A connection closed
//! on purpose is closed cleanly: DISCONNECT, then the socket's end once the broker closed it,
//! before the next CONNECT with the same client id — never a session takeover, which would
//! drop what the broker had not read yet.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::azure::{AzureError, AzureIdentity};
use super::handshake::{self, WireError};
use super::outbox::OutboxIo;
use super::reconnect::Backoff;
use super::transport::{Endpoint, Transport, TransportError};
use crate::flow::{Drain, Flow, FlowError, Meta, Role};
use crate::logging::chain;
use crate::mqtt::codec::{CodecError, ConnectOptions, Encoder, Reader, Version};
use crate::mqtt::tcp::{quick_ack, QuickAck, QuickAckRate};
use crate::pipeline::pool::{run_stage, Pool, SharedStage};
use crate::pipeline::stage::{Batch, Stage};
use crate::pipeline::verdict::FieldPath;
use crate::shutdown::Shutdown;

/// Bytes of an oversize input's payload kept for its dead letter.
const OVERSIZE_KEEP: usize = crate::flow::DEAD_LETTER_KEEP;

#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    /// The byte stream failed after the handshake (the same failures as in it).
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error("publisher connection: {0}")]
    Publisher(Box<ConnectionError>),
    #[error("the verdict workers stopped")]
    WorkersGone,
    #[error(transparent)]
    Azure(#[from] AzureError),
}

impl From<std::io::Error> for ConnectionError {
    fn from(e: std::io::Error) -> Self {
        ConnectionError::Wire(e.into())
    }
}

impl From<CodecError> for ConnectionError {
    fn from(e: CodecError) -> Self {
        ConnectionError::Wire(e.into())
    }
}

impl ConnectionError {
    /// Mistakes a retry will not fix (wrong CA, refused credentials, refused subscription):
    /// at startup they end the program with this message.
    pub fn is_fatal_at_startup(&self) -> bool {
        match self {
            ConnectionError::Wire(e) => e.is_fatal_at_startup(),
            ConnectionError::Flow(e) => e.is_fatal_at_startup(),
            ConnectionError::Publisher(e) => e.is_fatal_at_startup(),
            ConnectionError::Handshake(e) => e.is_fatal_at_startup(),
            _ => true,
        }
    }
}

/// How to reach the broker and keep the connection (resolved once, see `plan`).
pub struct ConnectPlan {
    pub version: Version,
    pub endpoint: Endpoint,
    pub connect: ConnectOptions,
    /// The publisher connection's client id, when our publishes take a connection of their
    /// own (`FlowConfig::separate_publisher`); it connects with the same options otherwise.
    pub publisher_client_id: Option<String>,
    /// When to send TCP ACKs at once (`mqtt::tcp`).
    pub quick_ack: QuickAck,
    /// The largest packet read whole; a larger PUBLISH is acknowledged and dead-lettered
    /// from its first bytes, the rest skipped unread (`codec::Reader`).
    pub read_limit: usize,
    /// IoT Edge: fresh credentials and trust before every CONNECT.
    pub azure: Option<AzureLink>,
    /// Keep retrying the first connection instead of failing (IoT Edge modules may start
    /// before edgeHub).
    pub retry_first_connect: bool,
}

/// The IoT Edge identity and the lifetime of each SAS token.
pub struct AzureLink {
    pub identity: AzureIdentity,
    pub token_ttl: Duration,
}

/// What the verdict stages need (one stage per shard of `Flow`'s configuration).
pub struct Stages {
    pub field: FieldPath,
    pub max_payload: usize,
}

/// Runs the filter's connection until the shutdown fired and the flow drained (`outbox`: the
/// outbox policy's file, already replayed into `flow`).
pub async fn run(
    plan: ConnectPlan,
    flow: Flow,
    stages: Stages,
    outbox: Option<OutboxIo>,
    shutdown: Shutdown,
) -> Result<(), ConnectionError> {
    let cfg = flow.config().clone();
    let stages: Vec<SharedStage> = (0..cfg.shards.max(1))
        .map(|_| {
            Arc::new(Mutex::new(Stage::new(
                stages.field.clone(),
                stages.max_payload,
            )))
        })
        .collect();
    let (tx, results) = mpsc::unbounded_channel();
    let pool = if cfg.pooled {
        Some(Pool::start(&stages, cfg.max_pending + 64, tx).map_err(ConnectionError::from)?)
    } else {
        None
    };
    let mut driver = Driver {
        plan,
        flow,
        stages,
        pool,
        results,
        outbox,
    };
    let result = driver.run(shutdown).await;
    if let Some(pool) = driver.pool.take() {
        pool.shutdown();
    }
    result
}

/// What drives `Flow`: how to reach the broker, the stages and workers that decide batches, the
/// workers' results, and the outbox file.
struct Driver {
    plan: ConnectPlan,
    flow: Flow,
    stages: Vec<SharedStage>,
    pool: Option<Pool<Meta>>,
    results: mpsc::UnboundedReceiver<Batch<Meta>>,
    outbox: Option<OutboxIo>,
}

/// A connected socket with what was read but not yet decoded.
struct Socket {
    role: Role,
    transport: Transport,
    rbuf: BytesMut,
    reader: Reader,
    quick_acks: QuickAckRate,
}

/// How long a connection closed on purpose waits for the broker to close its end.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Socket {
    /// Reads into the buffer; `Closed` at the end of the stream.
    async fn read(&mut self) -> Result<Instant, ConnectionError> {
        if self.transport.read_buf(&mut self.rbuf).await? == 0 {
            return Err(WireError::Closed.into());
        }
        let now = Instant::now();
        if self.quick_acks.after_read(now) {
            quick_ack(self.transport.tcp());
        }
        Ok(now)
    }

    /// Every complete packet in the read buffer, into the flow.
    fn decode(&mut self, flow: &mut Flow, now: Instant) -> Result<(), ConnectionError> {
        while let Some(p) = self.reader.next(&mut self.rbuf)? {
            self.quick_acks.packets(1);
            flow.handle_packet(self.role, p, now)?;
        }
        if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        Ok(())
    }

    /// Writes what the flow has for this connection.
    async fn flush(&mut self, flow: &mut Flow) -> Result<(), ConnectionError> {
        if !flow.poll_transmit(self.role).is_empty() {
            self.transport
                .write_all(flow.poll_transmit(self.role))
                .await?;
            flow.handle_transmitted(self.role, Instant::now());
        }
        Ok(())
    }

    /// Ends a connection on purpose, its DISCONNECT already written (or, with `disconnect`,
    /// written here): our side of the stream is shut, then what the broker still sends is
    /// read and dropped until it closes its side (the server closes the network connection
    /// after a DISCONNECT), up to [`CLOSE_WAIT`]. Only then may the same client id connect
    /// again without the broker taking the session over from a socket it has not finished
    /// reading.
    async fn close(mut self, version: Version, disconnect: bool) {
        if disconnect {
            let mut buf = BytesMut::new();
            if Encoder::disconnect(version, &mut buf).is_ok() {
                let _ = self.transport.write_all(&buf).await;
            }
        }
        let _ = self.transport.shutdown().await;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let mut sink = vec![0u8; 64 * 1024];
            loop {
                match self.transport.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

/// The live connections: the input one and, when our publishes have their own, the
/// publisher one.
struct Sockets {
    input: Socket,
    publisher: Option<Socket>,
}

impl Sockets {
    /// Both closed on purpose (`said`: the drain already wrote their DISCONNECTs).
    async fn close(self, version: Version, said: bool) {
        let Sockets { input, publisher } = self;
        match publisher {
            Some(p) => {
                tokio::join!(input.close(version, !said), p.close(version, !said));
            }
            None => input.close(version, !said).await,
        }
    }
}

impl Driver {
    async fn run(&mut self, mut shutdown: Shutdown) -> Result<(), ConnectionError> {
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(10),
        );
        let mut connected_before = false;
        loop {
            if shutdown.is_triggered() {
                self.flow.handle_drain(Drain::Shutdown, Instant::now());
            }
            let attempt = tokio::select! {
                r = self.open() => r,
                _ = shutdown.wait(), if !self.flow.shutting_down() => {
                    tracing::info!("shutdown requested while connecting");
                    return Ok(());
                }
            };
            let mut sockets = match attempt {
                Ok(sockets) => sockets,
                Err(e) => {
                    let first = !connected_before && !self.plan.retry_first_connect;
                    if first && (e.is_fatal_at_startup() || backoff.attempts() >= 3) {
                        return Err(e);
                    }
                    if self.flow.shutting_down() {
                        tracing::warn!("shutting down while disconnected: {}; unacknowledged input stays with the broker", chain(&e));
                        return Ok(());
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!("{}; retrying in {} ms", chain(&e), delay.as_millis());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait() => return Ok(()),
                    }
                    continue;
                }
            };
            backoff.connected(Instant::now());
            connected_before = true;
            let result = self.serve(&mut sockets, &mut shutdown).await;
            // Whatever ended it, the sockets are closed cleanly (a DISCONNECT where the drain
            // did not already write one) before any new CONNECT.
            sockets.close(self.plan.version, result.is_ok()).await;
            let dropped = self.flow.handle_connection_lost(Role::Input);
            self.flow.handle_connection_lost(Role::Publish);
            backoff.lost(Instant::now());
            match result {
                Ok(Drain::Shutdown) => return Ok(()),
                Ok(Drain::Renew) => tracing::info!("reconnecting with a fresh SAS token"),
                Err(e) => {
                    if e.is_fatal_at_startup() && !self.flow.subscribed_once() {
                        return Err(e);
                    }
                    if self.flow.shutting_down() {
                        tracing::warn!("connection lost while draining: {}", chain(&e));
                        return Ok(());
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "{}; reconnecting in {} ms ({dropped} unacknowledged inputs will be redelivered by the broker)",
                        chain(&e),
                        delay.as_millis()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait() => return Ok(()),
                    }
                }
            }
        }
    }

    /// The publisher connection (when our publishes have their own), then the input one.
    async fn open(&mut self) -> Result<Sockets, ConnectionError> {
        let publisher = match self.plan.publisher_client_id.clone() {
            // Its failure reads like the input connection's would (same broker, same
            // credentials): a refused login or certificate is named as such.
            Some(id) => Some(self.open_one(Role::Publish, Some(id)).await?),
            None => None,
        };
        match self.open_one(Role::Input, None).await {
            Ok(input) => Ok(Sockets { input, publisher }),
            Err(e) => {
                if let Some(p) = publisher {
                    self.flow.handle_connection_lost(Role::Publish);
                    p.close(self.plan.version, true).await;
                }
                Err(e)
            }
        }
    }

    /// Transport, CONNECT/CONNACK (with fresh IoT Edge credentials), then `Flow` takes over
    /// connection `role`.
    async fn open_one(
        &mut self,
        role: Role,
        client_id: Option<String>,
    ) -> Result<Socket, ConnectionError> {
        let mut connect = self.plan.connect.clone();
        if let Some(id) = client_id {
            connect.client_id = id;
        }
        let mut endpoint = self.plan.endpoint.clone();
        let mut renew_at = None;
        if let Some(azure) = &self.plan.azure {
            // A fresh SAS token (signed by the workload API or the connection string's key) and
            // the trust bundle as the only roots, at every connect.
            let now_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let creds = azure
                .identity
                .connect_credentials(now_unix, azure.token_ttl)
                .await?;
            connect.client_id = creds.client_id;
            connect.username = Some(creds.username);
            connect.password = Some(creds.password);
            let config = azure.identity.tls_config().await?;
            endpoint.tls = Some((config, azure.identity.gateway_host_name.clone()));
            renew_at =
                Some(Instant::now() + Duration::from_secs(creds.renew_at.saturating_sub(now_unix)));
        }
        let mut transport = Transport::connect(&endpoint).await?;
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let version = self.plan.version;
        let info = handshake::connect(&mut transport, &mut rbuf, version, &connect, &endpoint.addr)
            .await?;
        let now = Instant::now();
        self.flow.handle_connack(role, &info, renew_at, now)?;
        tracing::info!(
            "connected to {} (MQTT {}, {}session {})",
            endpoint.addr,
            if version == Version::V5 { "5" } else { "3.1.1" },
            match (role, self.plan.publisher_client_id.is_some()) {
                (Role::Publish, _) => "publisher connection, ",
                (Role::Input, true) => "input connection, ",
                (Role::Input, false) => "",
            },
            if info.session_present {
                "resumed"
            } else {
                "new"
            }
        );
        Ok(Socket {
            role,
            transport,
            rbuf,
            reader: Reader::new(version, self.plan.read_limit, OVERSIZE_KEEP),
            quick_acks: QuickAckRate::new(self.plan.quick_ack, now),
        })
    }

    /// The connected loop. Returns how the drain ended (its DISCONNECTs written), or the
    /// error that lost a connection.
    async fn serve(
        &mut self,
        sockets: &mut Sockets,
        shutdown: &mut Shutdown,
    ) -> Result<Drain, ConnectionError> {
        // Whatever arrived with the CONNACKs is decoded before the first wait.
        let now = Instant::now();
        if let Some(p) = sockets.publisher.as_mut() {
            p.decode(&mut self.flow, now).map_err(publisher_error)?;
        }
        sockets.input.decode(&mut self.flow, now)?;
        loop {
            let now = Instant::now();
            self.run_dispatches(now)?;
            let mut poll = self.flow.poll(now);
            // The outbox policy: what this turn recorded is committed in one write before
            // anything goes out, then the inputs it held are acknowledged in the same write.
            if let Some(outbox) = &mut self.outbox {
                if outbox.turn(&mut self.flow) {
                    poll = self.flow.poll(now);
                }
            }
            if let Some(p) = sockets.publisher.as_mut() {
                p.flush(&mut self.flow).await.map_err(publisher_error)?;
            }
            sockets.input.flush(&mut self.flow).await?;
            if let Some(why) = poll.exit {
                return Ok(why);
            }
            let wake = self
                .flow
                .poll_timeout()
                .unwrap_or_else(|| now + Duration::from_secs(3600));
            let has_publisher = sockets.publisher.is_some();
            tokio::select! {
                r = sockets.input.read(), if poll.read => {
                    let now = r?;
                    sockets.input.decode(&mut self.flow, now)?;
                }
                r = read_opt(sockets.publisher.as_mut()), if has_publisher => {
                    let now = r.map_err(publisher_error)?;
                    if let Some(p) = sockets.publisher.as_mut() {
                        p.decode(&mut self.flow, now).map_err(publisher_error)?;
                    }
                }
                b = self.results.recv() => {
                    let Some(batch) = b else { return Err(ConnectionError::WorkersGone) };
                    let now = Instant::now();
                    self.flow.handle_verdicts(batch, now);
                    // Take whatever else is ready in the same turn (one write for all).
                    for _ in 0..64 {
                        match self.results.try_recv() {
                            Ok(batch) => self.flow.handle_verdicts(batch, now),
                            Err(_) => break,
                        }
                    }
                }
                _ = shutdown.wait(), if !self.flow.shutting_down() => {
                    self.flow.handle_drain(Drain::Shutdown, Instant::now());
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    self.flow.handle_timeout(Instant::now())?;
                }
            }
            // Whatever else is ready now joins this turn, so that one write per socket carries
            // it all: with two sockets, an input and the PUBACK of an alert arrive apart.
            if let Some(p) = sockets.publisher.as_mut() {
                if let Some(r) = now_or_never(p.read()) {
                    let now = r.map_err(publisher_error)?;
                    p.decode(&mut self.flow, now).map_err(publisher_error)?;
                }
            }
            if poll.read {
                if let Some(r) = now_or_never(sockets.input.read()) {
                    let now = r?;
                    sockets.input.decode(&mut self.flow, now)?;
                }
            }
            while let Ok(batch) = self.results.try_recv() {
                self.flow.handle_verdicts(batch, Instant::now());
            }
        }
    }

    /// Batches the flow formed: small ones decided right here, the others to the workers.
    fn run_dispatches(&mut self, now: Instant) -> Result<(), ConnectionError> {
        while let Some(mut batch) = self.flow.poll_dispatch() {
            if batch.pooled {
                let Some(pool) = &self.pool else {
                    return Err(ConnectionError::WorkersGone);
                };
                pool.submit(batch)
                    .map_err(|_| ConnectionError::WorkersGone)?;
            } else {
                run_stage(&self.stages[batch.shard], &mut batch);
                self.flow.handle_verdicts(batch, now);
            }
        }
        Ok(())
    }
}

/// Reads the publisher connection (never called without one).
async fn read_opt(socket: Option<&mut Socket>) -> Result<Instant, ConnectionError> {
    match socket {
        Some(c) => c.read().await,
        None => std::future::pending().await,
    }
}

/// An error of the publisher connection, named as such.
fn publisher_error(e: ConnectionError) -> ConnectionError {
    match e {
        ConnectionError::Publisher(_) => e,
        e => ConnectionError::Publisher(Box::new(e)),
    }
}

/// Polls `fut` once: its output when it is ready now, `None` when it would wait (it is
/// dropped then; the reads here lose nothing when dropped).
fn now_or_never<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
