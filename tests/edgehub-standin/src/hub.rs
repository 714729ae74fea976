//! The stand-in's shared state and its listeners (test tooling): the per-module store,
//! delivery and twin (`delivery.rs`, `twin.rs`), the record of what happened, and the two
//! listeners — edgeHub's TLS port for modules (`module_conn.rs`) and a plain-TCP side port
//! where sources feed module inputs and sinks read what the modules sent upstream
//! (`side.rs`). One delivery task per module turns the store into one PUBLISH at a time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::auth::Expected;
use crate::delivery::{Delivery, DeliveryStats, Stored};
use crate::twin::Twin;

/// edgeHub's MQTT decoder limit (`MaxInboundMessageSize`, 262,144): a packet whose whole size,
/// fixed header included, is larger closes the connection.
pub const MAX_PACKET_BYTES: usize = 262_144;
/// edgeHub's largest message (`Constants.MaxMessageSize`) as `Message.Size()` counts it (see
/// [`crate::routes::message_size`]): a module's event over it is acknowledged and dropped.
pub const MAX_MESSAGE_SIZE: usize = 262_144;
/// edgeHub's default `messageAckTimeout`.
pub const EDGEHUB_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The IoT hub host name in usernames and SAS resources.
    pub hub: String,
    /// The modules that may connect (device, module, key).
    pub modules: Vec<Expected>,
    /// How long a delivered message waits for its PUBACK before it is delivered again.
    pub ack_timeout: Duration,
    /// How long edgeHub takes to put a module's message into its store before the PUBACK
    /// (one at a time per connection, as the protocol gateway processes a client's publishes).
    pub store_delay: Duration,
    /// The largest packet (whole size, fixed header included) accepted from a module.
    pub max_packet: usize,
    /// Every module twin's initial desired properties.
    pub desired: Value,
    /// This many of each module's first twin GETs are lost: acknowledged (PUBACK) but never
    /// answered, as when edgeHub drops a request it could not serve (tests of the retry).
    pub lose_twin_gets: u32,
    /// How long a SUBSCRIBE takes to take effect; its SUBACK goes out then. edgeHub applies
    /// subscriptions asynchronously: it stores the new session state and registers each
    /// subscription, then sends the SUBACK (protocol gateway `MqttAdapter`,
    /// `ProcessPendingSubscriptionChanges`), while the module's publishes are processed
    /// meanwhile; an answer that matches no subscription yet is completed without being
    /// delivered.
    pub subscribe_delay: Duration,
}

impl Config {
    pub fn new(hub: &str, modules: Vec<Expected>) -> Config {
        Config {
            hub: hub.to_string(),
            modules,
            ack_timeout: EDGEHUB_ACK_TIMEOUT,
            store_delay: Duration::ZERO,
            max_packet: MAX_PACKET_BYTES,
            desired: serde_json::json!({ "TemperatureThreshold": 25 }),
            lose_twin_gets: 0,
            subscribe_delay: Duration::from_millis(20),
        }
    }
}

/// One CONNECT that reached the TLS port.
#[derive(Debug, Clone)]
pub struct SeenConnect {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub clean_session: bool,
    pub keep_alive: u16,
    /// `Ok(se)` when accepted, the reason when refused.
    pub verdict: Result<u64, String>,
    pub at: Instant,
}

impl SeenConnect {
    /// The CONNECT's fields with the authenticator's verdict, seen now.
    pub fn new(c: &rumqttc::mqttbytes::v4::Connect, verdict: Result<u64, String>) -> SeenConnect {
        SeenConnect {
            client_id: c.client_id.clone(),
            username: c.login.as_ref().map(|l| l.username.clone()),
            password: c.login.as_ref().map(|l| l.password.clone()),
            clean_session: c.clean_session,
            keep_alive: c.keep_alive,
            verdict,
            at: Instant::now(),
        }
    }
}

/// Something the stand-in did that a test may wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A module connection was closed by the stand-in, and why (`QoS 2 publish`,
    /// `packet over 262144 bytes`, `malformed packet`, `replaced by a new connection`).
    Closed { client_id: String, reason: String },
    /// A module publish matched no template and was dropped (PUBACKed all the same).
    Dropped { client_id: String, topic: String },
    /// A module event whose `Message.Size()` is over [`MAX_MESSAGE_SIZE`] was dropped
    /// (PUBACKed all the same, as edgeHub does).
    TooLarge {
        client_id: String,
        topic: String,
        size: usize,
    },
    /// A module message was routed upstream (to the sinks).
    Upstream { client_id: String, topic: String },
    /// A twin operation: `GET`, `GET lost`, `reported 204`, `reported 400`, `desired`; an
    /// answer the module had not subscribed to yet is completed without delivery: `GET not
    /// delivered`, `reported 204 not delivered`.
    Twin { client_id: String, what: String },
    /// A TLS handshake failed.
    TlsFailure(String),
}

/// Per-module counters beyond the delivery's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleStats {
    pub delivery: DeliveryStats,
    /// Messages in the store now.
    pub backlog: usize,
    pub upstream: u64,
    pub dropped: u64,
    /// Events dropped for their `Message.Size()`.
    pub too_large: u64,
    pub connections: u64,
}

pub(crate) struct Conn {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub kill: Arc<Notify>,
}

pub(crate) struct ModuleState {
    pub delivery: Delivery,
    pub twin: Twin,
    pub conn: Option<Conn>,
    pub had_session: bool,
    /// Twin GETs still to lose (`Config::lose_twin_gets`).
    pub lose_gets: u32,
    pub upstream: u64,
    pub dropped: u64,
    pub too_large: u64,
    pub connections: u64,
}

pub(crate) struct Slot {
    pub expected: Expected,
    pub state: Mutex<ModuleState>,
    pub wake: Notify,
}

pub(crate) struct Sink {
    pub filters: Vec<String>,
    pub tx: mpsc::UnboundedSender<Bytes>,
}

pub(crate) struct Shared {
    pub config: Config,
    pub slots: HashMap<String, Arc<Slot>>,
    pub sinks: Mutex<Vec<Sink>>,
    pub connects: Mutex<Vec<SeenConnect>>,
    pub events: Mutex<Vec<Event>>,
    pub notify: Notify,
    pub next_conn: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn record(&self, e: Event) {
        self.events.lock().unwrap().push(e);
        self.notify.notify_waiters();
    }

    /// The slot of `devices/<dev>/modules/<mod>/...` (device ids hold no `/`).
    pub fn slot_for_topic(&self, topic: &str) -> Option<&Arc<Slot>> {
        let mut parts = topic.split('/');
        if parts.next() != Some("devices") {
            return None;
        }
        let dev = parts.next()?;
        if parts.next() != Some("modules") {
            return None;
        }
        let module = parts.next()?;
        self.slots.get(&format!("{dev}/{module}"))
    }

    /// Sends a module message upstream: to every sink with a matching filter, at QoS 0.
    pub fn upstream(&self, topic: &str, payload: Bytes) {
        let packet = encode(&Packet::Publish(Publish::from_bytes(
            topic,
            QoS::AtMostOnce,
            payload,
        )));
        self.sinks.lock().unwrap().retain(|s| {
            if s.filters
                .iter()
                .any(|f| rumqttc::mqttbytes::matches(topic, f))
            {
                s.tx.send(packet.clone()).is_ok()
            } else {
                !s.tx.is_closed()
            }
        });
    }

    /// Stores a message for a module's input and wakes its delivery.
    pub fn store(&self, slot: &Slot, topic: String, payload: Bytes) {
        slot.state
            .lock()
            .unwrap()
            .delivery
            .store(Stored { topic, payload });
        slot.wake.notify_one();
    }

    /// Applies a desired patch to a module's twin and sends it if the module listens.
    pub fn desired_patch(&self, slot: &Slot, patch: Value) -> bool {
        let mut st = slot.state.lock().unwrap();
        let Some((version, body)) = st.twin.patch_desired(patch) else {
            return false;
        };
        let topic = format!("$iothub/twin/PATCH/properties/desired/?$version={version}");
        if st.conn.is_some() {
            answer(&mut st, &topic, Bytes::from(body));
        }
        drop(st);
        self.record(Event::Twin {
            client_id: slot.expected.client_id(),
            what: format!("desired {version}"),
        });
        true
    }
}

/// Sends a twin answer as edgeHub does: only when a subscription of the module matches it;
/// otherwise it is completed without delivery (protocol gateway `MqttAdapter`: "no matching
/// subscription found - complete the message without publishing"). Whether it was sent.
pub(crate) fn answer(st: &mut ModuleState, topic: &str, payload: Bytes) -> bool {
    if !st.delivery.subscribed_to(topic) {
        return false;
    }
    send_other(st, topic, payload);
    true
}

/// Sends a QoS 1 publish that is not a stored message (twin) on the module's connection.
pub(crate) fn send_other(st: &mut ModuleState, topic: &str, payload: Bytes) {
    let pkid = st.delivery.send_other();
    let mut p = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
    p.pkid = pkid;
    if let Some(c) = &st.conn {
        let _ = c.tx.send(encode(&Packet::Publish(p)));
    }
}

pub(crate) fn encode(p: &Packet) -> Bytes {
    let mut buf = BytesMut::with_capacity(p.size());
    // Sizes are within limits: nothing the stand-in sends exceeds the MQTT maximum.
    let _ = p.write(&mut buf, usize::MAX);
    buf.freeze()
}

/// The running stand-in. Dropping it stops its listeners.
pub struct EdgeHub {
    /// edgeHub's MQTT-over-TLS port for modules.
    pub tls_addr: SocketAddr,
    /// The plain MQTT port for sources and sinks.
    pub side_addr: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl EdgeHub {
    /// Starts on ephemeral ports of 127.0.0.1 (needs a tokio runtime).
    pub async fn start(
        config: Config,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> std::io::Result<EdgeHub> {
        let tls = TcpListener::bind("127.0.0.1:0").await?;
        let side = TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(config, chain, key, tls, side)
    }

    /// Starts on listeners the caller bound (the binary binds edgeHub's port 8883 in its own
    /// network namespace).
    pub fn start_on(
        config: Config,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        tls: TcpListener,
        side: TcpListener,
    ) -> std::io::Result<EdgeHub> {
        let slots = config
            .modules
            .iter()
            .map(|e| {
                let slot = Slot {
                    expected: e.clone(),
                    state: Mutex::new(ModuleState {
                        delivery: Delivery::new(config.ack_timeout),
                        twin: Twin::new(config.desired.clone()),
                        conn: None,
                        had_session: false,
                        lose_gets: config.lose_twin_gets,
                        upstream: 0,
                        dropped: 0,
                        too_large: 0,
                        connections: 0,
                    }),
                    wake: Notify::new(),
                };
                (e.client_id(), Arc::new(slot))
            })
            .collect();
        let shared = Arc::new(Shared {
            config,
            slots,
            sinks: Mutex::new(Vec::new()),
            connects: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            notify: Notify::new(),
            next_conn: 1.into(),
        });
        let tls_addr = tls.local_addr()?;
        let side_addr = side.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::certs::server_config(chain, key));
        let mut tasks = vec![
            tokio::spawn(crate::module_conn::accept_loop(
                tls,
                acceptor,
                shared.clone(),
            )),
            tokio::spawn(crate::side::accept_loop(side, shared.clone())),
        ];
        for slot in shared.slots.values() {
            tasks.push(tokio::spawn(deliver(slot.clone())));
        }
        Ok(EdgeHub {
            tls_addr,
            side_addr,
            shared,
            tasks,
        })
    }

    pub fn connects(&self) -> Vec<SeenConnect> {
        self.shared.connects.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.shared.events.lock().unwrap().clone()
    }

    /// A module's counters (`client_id` = `<dev>/<mod>`).
    pub fn stats(&self, client_id: &str) -> Option<ModuleStats> {
        let slot = self.shared.slots.get(client_id)?;
        let st = slot.state.lock().unwrap();
        Some(ModuleStats {
            delivery: st.delivery.stats,
            backlog: st.delivery.backlog(),
            upstream: st.upstream,
            dropped: st.dropped,
            too_large: st.too_large,
            connections: st.connections,
        })
    }

    /// A module's reported properties.
    pub fn reported(&self, client_id: &str) -> Option<Value> {
        let slot = self.shared.slots.get(client_id)?;
        let st = slot.state.lock().unwrap();
        Some(Value::Object(st.twin.reported().clone()))
    }

    /// Routes a message to a module's input, as a route into
    /// `BrokeredEndpoint("/modules/<mod>/inputs/<input>")` does (`topic` is the full input
    /// topic with its property bag). False when the topic names no known module.
    pub fn route_to_input(&self, topic: &str, payload: Bytes) -> bool {
        match self.shared.slot_for_topic(topic) {
            Some(slot) => {
                self.shared.store(slot, topic.to_string(), payload);
                true
            }
            None => false,
        }
    }

    /// A desired-properties patch for a module's twin (sent to it when it listens).
    pub fn desired_patch(&self, client_id: &str, patch: Value) -> bool {
        match self.shared.slots.get(client_id) {
            Some(slot) => self.shared.desired_patch(slot, patch),
            None => false,
        }
    }

    /// Waits until `pred(connects, events)` holds or `within` passes (then `Err` with both).
    pub async fn wait_until(
        &self,
        within: Duration,
        pred: impl Fn(&[SeenConnect], &[Event]) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.notify.notified();
            if pred(&self.connects(), &self.events()) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // Counters change without a notification: look once more.
                if pred(&self.connects(), &self.events()) {
                    return Ok(());
                }
                return Err(format!(
                    "CONNECTs {:?}, events {:?}",
                    self.connects(),
                    self.events()
                ));
            }
        }
    }
}

impl Drop for EdgeHub {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for slot in self.shared.slots.values() {
            if let Some(c) = slot.state.lock().unwrap().conn.take() {
                c.kill.notify_one();
            }
        }
    }
}

/// A module's delivery: whenever it may, the next stored message goes out; a timed-out one
/// goes out again.
async fn deliver(slot: Arc<Slot>) {
    loop {
        let deadline = {
            let mut st = slot.state.lock().unwrap();
            let now = Instant::now();
            st.delivery.tick(now);
            while let Some(send) = st.delivery.next(now) {
                let mut p = Publish::from_bytes(send.topic, QoS::AtLeastOnce, send.payload);
                p.pkid = send.pkid;
                if let Some(c) = &st.conn {
                    let _ = c.tx.send(encode(&Packet::Publish(p)));
                }
            }
            st.delivery.deadline()
        };
        match deadline {
            Some(d) => {
                tokio::select! {
                    _ = slot.wake.notified() => {}
                    _ = tokio::time::sleep_until(d.into()) => {}
                }
            }
            None => slot.wake.notified().await,
        }
    }
}
