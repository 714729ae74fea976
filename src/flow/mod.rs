//! The filter's protocol logic as one synchronous state machine: everything between the bytes
//! read from the broker and the bytes written back, except the I/O itself.
//!
//! ```text
//!  on_connack ─┐                       ┌─▶ SUBSCRIBE, resend (DUP) or requeue, reported twin
//!  on_packet ──┤  inputs ─▶ shards ─▶ next_dispatch() ─▶ (stage, inline or on a worker)
//!  on_verdicts ┤  alerts ─▶ batcher ─▶ outgoing QoS 1 window ─▶ output(Publish)   (PUBLISH)
//!  tick(now) ──┤  acks in arrival order, each input once every publish it caused is acked
//!  start_drain ┘  twin patches, keep-alive (PINGREQ), drain (DISCONNECT)   poll(now): read?, wake, exit
//! ```
//!
//! Events go in (`on_connack`, `on_packet`, `on_verdicts`, `tick`, `start_drain`,
//! `connection_lost`); effects come out: the bytes to write to each connection
//! ([`Flow::output`]), the batches to decide ([`Flow::next_dispatch`]) and, from
//! [`Flow::poll`], whether to read the input connection, when to wake up and whether the
//! connections are done. There is no socket, no runtime and no clock in here: time is an
//! argument, so every protocol rule is unit-tested with scripted packets (`tests.rs`).
//! `io::connection` is the thin I/O loop around it.
//!
//! The filter has one or two connections ([`Role`]): inputs, their PUBACKs and the
//! subscriptions on the input connection; our publishes and their PUBACKs on the publisher
//! connection when it is separate (generic MQTT), else on the input connection too (IoT Edge).
//! Separate, the input connection can stop reading at `--max-pending` held inputs — flow
//! control by TCP — while the PUBACKs those inputs wait for still arrive.
//!
//! One `Flow` lives as long as the filter: across reconnects it keeps the twin, the alerts not
//! yet acknowledged (resent with DUP when the publishing session resumed, requeued when it did
//! not) and the jobs still with the workers; inputs of a lost input connection are forgotten
//! (the broker redelivers them), so their late verdicts publish nothing twice.

mod dead_letter;
pub mod dialect;
mod inbound;
mod outbound;
mod outbox;
mod rules;
#[cfg(test)]
mod tests;
mod twin_get;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::metrics::{Metrics, PipelineState};
use crate::mqtt::ack_order::AckOrder;
use crate::mqtt::codec::{CodecError, ConnAckInfo, Encoder, Inbound, Version};
use crate::mqtt::keepalive::{Action, KeepAlive};
use crate::mqtt::outgoing::Outgoing;
use crate::pipeline::batch::{Batcher, Format};
use crate::pipeline::rules::{Anchor, RuleSettings, Rules};
use crate::pipeline::stage::{Batch, Job, Out, OutKind};
use crate::pipeline::verdict::{FieldPath, Verdict};
use crate::twin::{Source, Threshold, Twin};

pub use dead_letter::{dead_letter_envelope, DEAD_LETTER_KEEP};
use dialect::{Dialect, InputProps, Output as PubKind};
use outbound::{write_publish, PendingAlert, Sent};
use outbox::OutboxSide;
pub use outbox::{AckPolicy, OutboxAppend};

/// What ends a connection from the protocol's side.
#[derive(Debug, Error)]
pub enum FlowError {
    #[error("broker disconnected us: {0}")]
    Disconnected(String),
    #[error("no answer to our keep-alive ping")]
    PingTimeout,
    #[error("unexpected packet {0} from the broker")]
    Unexpected(&'static str),
    #[error("the broker refused the subscription to {0}")]
    SubscribeRefused(String),
    #[error("cannot encode a packet")]
    Codec(#[from] CodecError),
}

impl FlowError {
    /// Mistakes a retry will not fix (a refused subscription): at startup they end the program.
    pub fn is_fatal_at_startup(&self) -> bool {
        matches!(self, FlowError::SubscribeRefused(_))
    }
}

/// The settings `Flow` works with (resolved once, see `plan`).
#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub version: Version,
    /// Verdict shards (one stage each).
    pub shards: usize,
    /// Whether the shards have worker threads (`--workers 0`: every batch is decided on the
    /// connection's thread).
    pub pooled: bool,
    /// Batches up to this size are decided on the connection's thread when their worker is
    /// idle (0: every batch goes to the workers).
    pub inline_batch: usize,
    /// Inputs in the pipeline (received, not yet acknowledged) before reading pauses; also
    /// our Receive Maximum (MQTT 5).
    pub max_pending: usize,
    /// One connection only (IoT Edge, `--publisher-connection shared`, QoS 0): reading goes on
    /// past `max_pending` while PUBACKs of our own publishes are due (they arrive on the same
    /// socket), and a QoS 0 input read past this many held inputs is dropped (counted). QoS 1
    /// inputs are always held: none may be left unacknowledged while later ones are
    /// acknowledged. Unused with a separate publisher connection.
    pub max_held: usize,
    /// Our publishes (alerts, dead letters, twin reports) go on a connection of their own
    /// ([`Role::Publish`]), so that the input connection can stop reading when `max_pending`
    /// inputs are held — TCP then pushes back on the broker — without holding up the PUBACKs
    /// those inputs wait for. Off under IoT Edge (one identity, and edgeHub delivers one
    /// message at a time).
    pub separate_publisher: bool,
    /// Our limit of unacknowledged outgoing QoS 1 publishes (the broker's Receive Maximum
    /// also applies).
    pub max_inflight: u16,
    pub batch_max: usize,
    pub batch_linger: Duration,
    pub batch_format: Format,
    pub drain_timeout: Duration,
    /// The keep-alive we ask for in CONNECT (an MQTT 5 broker may impose its own).
    pub keep_alive_secs: u16,
    /// The alert rules at startup (the twin may change them; all off by default).
    pub rules: RuleSettings,
    /// The event-time clock of the rules: the path of each payload's time (None: arrival).
    pub event_time: Option<FieldPath>,
    /// What an alerting input's PUBACK waits for.
    pub ack_policy: AckPolicy,
    /// IoT Edge: how long the twin GET may go unanswered before it is asked again.
    pub twin_timeout: Duration,
}

/// Per-input metadata travelling with a job through a stage and back.
#[derive(Debug)]
pub struct Meta {
    seq: u64,
    qos: u8,
    topic: Bytes,
    props: InputProps,
}

/// Why the flow stops taking input and waits for outstanding work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// SIGTERM/SIGINT: then disconnect and end.
    Shutdown,
    /// The IoT Edge SAS token expires soon: then disconnect and reconnect with a fresh one.
    Renew,
}

/// The filter's connections to the broker (one, or two with
/// [`FlowConfig::separate_publisher`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscriptions, inputs and their PUBACKs (and, on one connection, everything).
    Input,
    /// Our publishes and the broker's PUBACKs for them.
    Publish,
}

/// What [`Flow::poll`] tells the I/O loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// Whether to read from the input connection (input credit). The publisher connection is
    /// always read.
    pub read: bool,
    /// When to call [`Flow::tick`] at the latest.
    pub wake: Option<Instant>,
    /// The drain is complete and the DISCONNECT is in the output of every connection: write
    /// it and close.
    pub exit: Option<Drain>,
}

/// Jobs of one shard not yet handed to its stage.
#[derive(Debug, Default)]
struct Shard {
    jobs: Vec<Job<Meta>>,
    /// Batches with the shard's worker (one at a time, except after a forced dispatch).
    with_worker: usize,
}

/// State of one live connection.
#[derive(Debug)]
struct Link {
    keepalive: KeepAlive,
    session_present: bool,
    /// SUBSCRIBE packet ids awaiting their SUBACK, with their filters.
    subscribing: Vec<(u16, Vec<String>)>,
    /// The DISCONNECT is written: the connection ends for this reason.
    closing: Option<Drain>,
    /// A QoS 1 PUBLISH was left unacknowledged (a drain): every later one is left too. A
    /// PUBACK after one left out would break arrival order, and a broker that reuses packet
    /// ids in flight (mosquitto 2.0.11 past 65,535 of them) applies it to the wrong message.
    leaving: bool,
    /// Whether this connection's socket is read now (the input connection's flow control).
    reading: bool,
}

impl Link {
    fn new(info: &ConnAckInfo, keep_alive_secs: u16, now: Instant) -> Link {
        let mut keepalive = KeepAlive::new(keep_alive_secs, now);
        if let Some(secs) = info.server_keep_alive {
            keepalive.server_keep_alive(secs);
        }
        Link {
            keepalive,
            session_present: info.session_present,
            subscribing: Vec::new(),
            closing: None,
            leaving: false,
            reading: true,
        }
    }
}

/// The per-connection protocol logic (see the module documentation).
pub struct Flow {
    cfg: FlowConfig,
    dialect: Dialect,
    twin: Twin,
    /// The rules in force; each batch takes a snapshot when it is formed.
    rules: Arc<Rules>,
    metrics: Arc<Metrics>,
    /// The threshold for readers outside the flow (lock-free).
    threshold: Arc<Threshold>,
    acks: AckOrder,
    out: Outgoing<Sent>,
    batcher: Batcher<PendingAlert>,
    /// What to write to the input connection (everything, on one connection).
    wbuf: BytesMut,
    /// What to write to the publisher connection.
    pbuf: BytesMut,
    shards: Vec<Shard>,
    /// Vectors that came back with decided batches, for reuse.
    spare_jobs: Vec<Vec<Job<Meta>>>,
    spare_outs: Vec<Vec<Out>>,
    /// Jobs handed out and not yet back (any connection).
    in_stages: usize,
    /// Tick and flush batches handed out and not yet back.
    controls_out: usize,
    /// When the stages must next look at their devices without input (the rules' timer).
    rule_tick_at: Option<Instant>,
    /// Devices with rule state, per shard (as the stages last reported).
    devices: Vec<usize>,
    /// Batches decided on but not yet taken by the I/O loop, in order.
    ready: VecDeque<Batch<Meta>>,
    /// The input connection, when it is up.
    input: Option<Link>,
    /// The publisher connection, when it is up (separate publisher only).
    publisher: Option<Link>,
    /// The broker's Maximum Packet Size (MQTT 5) on the connection our publishes take, kept
    /// across its reconnects.
    max_packet: Option<u32>,
    /// Every subscription of some connection was granted (a later refusal is not a startup
    /// mistake).
    subscribed_once: bool,
    draining: Option<(Instant, Drain)>,
    renew_at: Option<Instant>,
    /// The outbox policy's bookkeeping (inert under the alert policy).
    outbox: OutboxSide,
    /// IoT Edge: the twin GET awaiting its answer.
    twin_wait: Option<twin_get::TwinWait>,
    /// The body of the last reported patch published: an unchanged state is not reported
    /// again (IoT Edge reconnects hourly to renew its token).
    reported_last: Option<Bytes>,
}

impl Flow {
    pub fn new(
        cfg: FlowConfig,
        dialect: Dialect,
        metrics: Arc<Metrics>,
        threshold: Arc<Threshold>,
    ) -> Flow {
        let twin = Twin::new(threshold.get(), cfg.rules.clone());
        metrics.threshold(twin.threshold());
        let shards = (0..cfg.shards.max(1)).map(|_| Shard::default()).collect();
        let rules = Rules::with(
            twin.threshold(),
            twin.rules().clone(),
            cfg.event_time.clone(),
            Anchor::now(),
        );
        Flow {
            rule_tick_at: rules.next_tick(rules.anchor.at),
            devices: vec![0; cfg.shards.max(1)],
            controls_out: 0,
            rules,
            out: Outgoing::new(cfg.max_inflight),
            batcher: Batcher::new(cfg.batch_max, cfg.batch_linger),
            acks: AckOrder::new(),
            wbuf: BytesMut::with_capacity(64 * 1024),
            pbuf: BytesMut::new(),
            shards,
            spare_jobs: Vec::new(),
            spare_outs: Vec::new(),
            in_stages: 0,
            ready: VecDeque::new(),
            input: None,
            publisher: None,
            max_packet: None,
            subscribed_once: false,
            draining: None,
            renew_at: None,
            outbox: OutboxSide::new(cfg.ack_policy),
            twin_wait: None,
            reported_last: None,
            twin,
            dialect,
            metrics,
            threshold,
            cfg,
        }
    }

    // ----- events -------------------------------------------------------------------------

    /// The broker accepted the CONNECT of one of our connections. Whichever carries our
    /// publishes resends (the session resumed) or requeues (a new session) what was in flight;
    /// the input connection subscribes and reports the twin state — under IoT Edge only once
    /// every SUBACK is in (`on_suback`), with the full-twin GET.
    pub fn on_connack(
        &mut self,
        role: Role,
        info: &ConnAckInfo,
        now: Instant,
    ) -> Result<(), FlowError> {
        let link = Link::new(info, self.cfg.keep_alive_secs, now);
        if role == self.publish_role() {
            let window = info
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(self.cfg.max_inflight);
            self.out.set_window(window);
            self.max_packet = info.maximum_packet_size;
            if info.session_present {
                let buf = match role {
                    Role::Input => &mut self.wbuf,
                    Role::Publish => &mut self.pbuf,
                };
                let n = self.out.resend(|p| write_publish(p, buf));
                if n > 0 {
                    tracing::info!("session resumed: resent {n} unacknowledged publishes");
                }
            } else {
                self.out.requeue_all();
            }
        }
        if role == Role::Publish {
            self.publisher = Some(link);
            return Ok(());
        }
        let mut subscribing = Vec::new();
        for (filters, qos, no_local) in self.dialect.subscriptions() {
            let Some(pkid) = self.out.reserve_id() else {
                break;
            };
            Encoder::subscribe(
                self.cfg.version,
                &mut self.wbuf,
                pkid,
                &filters,
                qos,
                no_local,
            )?;
            subscribing.push((pkid, filters));
        }
        self.input = Some(Link {
            subscribing,
            ..link
        });
        if !matches!(self.dialect, Dialect::Azure(_)) {
            // The retained report, at every connect (a broker may have lost it).
            self.report(true);
            return Ok(());
        }
        if self.twin.source() == Source::Default {
            // IoT Edge: the GET answers; until then the report says so.
            self.twin.await_twin();
            self.metrics.delivery.twin_waiting(true);
        }
        if self
            .input
            .as_ref()
            .is_some_and(|l| l.subscribing.is_empty())
        {
            self.twin_subscribed(now);
        }
        Ok(())
    }

    /// One packet from the broker on connection `role`.
    pub fn on_packet(&mut self, role: Role, p: Inbound, now: Instant) -> Result<(), FlowError> {
        match p {
            Inbound::Publish(publish) if role == Role::Input => self.on_publish(publish, now),
            Inbound::Publish(publish) => self.stray_publish(publish.qos, publish.pkid),
            Inbound::PubAck { pkid, ok, reason } if role == self.publish_role() => {
                if !ok {
                    tracing::warn!("the broker refused publish {pkid}: {reason}");
                }
                match self.out.acked(pkid) {
                    Some(sent) => self.finished(sent),
                    None => tracing::debug!("PUBACK for unknown packet id {pkid}"),
                }
            }
            Inbound::PubAck { pkid, .. } => {
                tracing::debug!("PUBACK {pkid} on the input connection, which publishes nothing")
            }
            Inbound::SubAck { pkid, granted } => self.on_suback(pkid, &granted, now)?,
            Inbound::PingResp => {
                if let Some(link) = self.link_mut(role) {
                    link.keepalive.pong();
                }
            }
            Inbound::ConnAck(_) => return Err(FlowError::Unexpected("CONNACK")),
            Inbound::OversizePublish { publish, size } if role == Role::Input => {
                self.on_oversize(publish, size, now)
            }
            Inbound::OversizePublish { publish, .. } => {
                self.stray_publish(publish.qos, publish.pkid)
            }
            Inbound::Disconnect { reason } => return Err(FlowError::Disconnected(reason)),
            Inbound::Other(name) => tracing::debug!("ignoring {name} from the broker"),
        }
        Ok(())
    }

    /// A PUBLISH on the publisher connection, which subscribes to nothing (a subscription
    /// left in its session by another program using the same client id): acknowledged at
    /// once and ignored, so it never comes back.
    fn stray_publish(&mut self, qos: u8, pkid: u16) {
        self.metrics.ignored(1);
        if qos > 0 {
            let _ = Encoder::puback(self.cfg.version, &mut self.pbuf, pkid);
        }
    }

    /// A batch came back from its stage (a worker, or the I/O loop's thread).
    pub fn on_verdicts(&mut self, mut batch: Batch<Meta>, now: Instant) {
        if batch.pooled {
            let shard = &mut self.shards[batch.shard];
            shard.with_worker = shard.with_worker.saturating_sub(1);
        }
        self.rule_results(&batch);
        // With per-device state the stage has moved on: a redelivered input will be judged
        // against the state this one left, so what this one caused must go out.
        let stateless = batch.rules.stateless();
        let session_present = self.session_present();
        let mut outs = batch.outs.iter().peekable();
        let mut unmatched = 0;
        for (i, job) in batch.jobs.drain(..).enumerate() {
            self.in_stages -= 1;
            let Meta {
                seq,
                qos,
                topic,
                props,
            } = job.meta;
            let current = self.acks.is_current(seq);
            // An input of a lost connection that the broker will redeliver: what it causes
            // here would only duplicate what its redelivery causes.
            if !current && session_present && qos > 0 && stateless {
                while outs.next_if(|o| o.job as usize == i).is_some() {}
                continue;
            }
            let seq = current.then_some(seq);
            let mut props = Some(props);
            match job.verdict {
                Verdict::Rejected(rejection) => {
                    let props = props.take().unwrap_or_default();
                    let size = job.payload.len();
                    self.reject(seq, &topic, &job.payload, size, &rejection, props);
                }
                Verdict::Unmatched => unmatched += 1,
                Verdict::Alert => {}
            }
            while let Some(out) = outs.next_if(|o| o.job as usize == i) {
                let kind = match &out.kind {
                    OutKind::Alert => PubKind::Alert,
                    OutKind::Clear => PubKind::Clear,
                    OutKind::Summary { .. } => {
                        self.summary(out, now);
                        continue;
                    }
                };
                let last = outs.peek().is_none_or(|o| o.job as usize != i);
                let props = if last { props.take() } else { props.clone() };
                // The input is held until this publish is acknowledged.
                if let Some(seq) = seq {
                    self.acks.hold(seq, 1);
                }
                let alert = PendingAlert {
                    kind,
                    seq,
                    topic: topic.clone(),
                    payload: job.payload.clone(),
                    props: props.unwrap_or_default(),
                };
                self.batcher.push(alert, now);
            }
            if let Some(seq) = seq {
                self.acks.done(seq);
            }
        }
        // A tick's or a flush's summaries, caused by no input.
        for out in outs {
            self.summary(out, now);
        }
        self.metrics.unmatched(unmatched);
        let Batch { jobs, mut outs, .. } = batch;
        if jobs.capacity() <= 4096 && self.spare_jobs.len() < 64 {
            self.spare_jobs.push(jobs);
        }
        outs.clear();
        if outs.capacity() <= 4096 && self.spare_outs.len() < 64 {
            self.spare_outs.push(outs);
        }
    }

    /// Timers: keep-alive (ping, or give up) on each connection, the IoT Edge token renewal,
    /// the rules' windows and idle devices.
    pub fn tick(&mut self, now: Instant) -> Result<(), FlowError> {
        self.rule_timer(now);
        self.twin_timer(now);
        if self.renew_at.is_some_and(|t| now >= t) {
            self.renew_at = None;
            self.start_drain(Drain::Renew, now);
        }
        for role in [Role::Input, Role::Publish] {
            let Some(link) = self.link_mut(role) else {
                continue;
            };
            match link.keepalive.poll(now) {
                Action::Idle => {}
                Action::Ping => {
                    let version = self.cfg.version;
                    Encoder::pingreq(version, self.buf(role))?;
                }
                Action::TimedOut => return Err(FlowError::PingTimeout),
            }
        }
        Ok(())
    }

    /// Stops taking input and waits (up to `--drain-timeout`) for what is in flight.
    pub fn start_drain(&mut self, why: Drain, now: Instant) {
        match (why, self.draining) {
            (_, Some((_, Drain::Shutdown))) | (Drain::Renew, Some(_)) => {}
            (Drain::Shutdown, Some((deadline, Drain::Renew))) => {
                // Already waiting for a renewal drain: keep its deadline, end afterwards.
                tracing::info!("shutdown: draining");
                self.draining = Some((deadline, Drain::Shutdown));
                self.flush_rules();
            }
            (why, None) => {
                if why == Drain::Shutdown {
                    tracing::info!(
                        "shutdown: draining (up to {} s)",
                        self.cfg.drain_timeout.as_secs_f64()
                    );
                    self.flush_rules();
                }
                self.draining = Some((now + self.cfg.drain_timeout, why));
            }
        }
    }

    /// When the connection must be renewed (IoT Edge: before the SAS token expires).
    pub fn renew_at(&mut self, at: Option<Instant>) {
        self.renew_at = at;
    }

    /// Connection `role` is gone. What was written for it and not sent is dropped (its
    /// PUBACKs name packet ids of a dead connection; its publishes are still tracked and go
    /// out again after the next CONNACK). The input connection's inputs are forgotten (the
    /// broker redelivers them); returns how many.
    pub fn connection_lost(&mut self, role: Role) -> usize {
        match role {
            Role::Publish => {
                self.publisher = None;
                self.pbuf.clear();
                0
            }
            Role::Input => {
                self.input = None;
                self.wbuf.clear();
                // The next CONNACK asks for the twin again.
                self.twin_wait = None;
                self.out.release_reserved();
                self.metrics.connected(false, false);
                if matches!(self.draining, Some((_, Drain::Renew))) {
                    self.draining = None;
                }
                self.acks.reset()
            }
        }
    }

    // ----- effects ------------------------------------------------------------------------

    /// The next batch to decide, in order: run it through its shard's stage (on a worker when
    /// `pooled`, else right away) and hand it back with [`Flow::on_verdicts`].
    pub fn next_dispatch(&mut self) -> Option<Batch<Meta>> {
        if self.ready.is_empty() {
            self.dispatch(false);
        }
        self.ready.pop_front()
    }

    /// Moves work towards the sockets (due alert batches, queued publishes into the window,
    /// acknowledgements in arrival order), finishes a drain, and says what the loop does next.
    pub fn poll(&mut self, now: Instant) -> Poll {
        self.pump(now);
        let live = [Role::Input, Role::Publish].map(|r| self.link(r).is_some());
        let mut exit = self
            .input
            .as_ref()
            .or(self.publisher.as_ref())
            .and_then(|l| l.closing);
        if exit.is_some() {
            // Already said goodbye; nothing more goes out.
        } else if let Some((deadline, why)) = self.draining {
            let drained = self.drained();
            if drained || now >= deadline {
                if !drained {
                    tracing::warn!(
                        "drain timeout: {} inputs still pending, {} alerts unacknowledged; the broker keeps them",
                        self.acks.pending(),
                        self.out.inflight() + self.out.queued()
                    );
                }
                let version = self.cfg.version;
                let mut said = true;
                for (role, up) in [Role::Input, Role::Publish].into_iter().zip(live) {
                    if up {
                        said &= Encoder::disconnect(version, self.buf(role)).is_ok();
                    }
                }
                if said {
                    exit = Some(why);
                }
            }
        }
        if let Some(why) = exit {
            for role in [Role::Input, Role::Publish] {
                if let Some(link) = self.link_mut(role) {
                    link.closing = Some(why);
                }
            }
        }
        // Input credit. With a publisher connection of its own, reading stops at
        // --max-pending held inputs: TCP pushes back on the broker, and the PUBACKs those
        // inputs wait for arrive on the other socket. On one connection those PUBACKs come
        // through this socket, behind whatever input the broker sent first, so reading goes on
        // while some are due: held input is then bounded by the broker's respect of our
        // Receive Maximum, not by us (stopping would stall the connection until the keep-alive
        // gave up). (The tracker holds every input of this connection not yet acknowledged;
        // jobs of a lost connection may still be in the stages.)
        let pending = self.acks.len().max(self.in_stages);
        let read = exit.is_none()
            && (pending < self.cfg.max_pending
                || (!self.cfg.separate_publisher && self.out.inflight() > 0));
        if let Some(link) = self.input.as_mut() {
            if link.reading != read {
                link.reading = read;
                // On one connection a stalled socket must still time out (the PUBACKs we
                // wait for are behind the unread inputs); on a separate input connection the
                // PINGRESP may wait there while the publisher connection makes progress.
                if self.cfg.separate_publisher {
                    link.keepalive.set_reading(read, now);
                }
            }
        }
        self.metrics.pipeline(PipelineState {
            pending,
            inflight: self.out.inflight(),
            queued: self.out.queued(),
            paused: !read,
        });
        let mut wake = None;
        for t in [
            self.input.as_ref().and_then(|l| l.keepalive.deadline()),
            self.publisher.as_ref().and_then(|l| l.keepalive.deadline()),
            self.batcher.deadline(),
            self.draining.map(|(d, _)| d),
            self.renew_at,
            self.rule_tick_at,
            self.twin_deadline(),
        ]
        .into_iter()
        .flatten()
        {
            wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
        }
        Poll { read, wake, exit }
    }

    /// The bytes to write to connection `role` now.
    pub fn output(&self, role: Role) -> &[u8] {
        match role {
            Role::Input => &self.wbuf,
            Role::Publish => &self.pbuf,
        }
    }

    /// The output of connection `role` was written at `now`.
    pub fn written(&mut self, role: Role, now: Instant) {
        match role {
            Role::Input => self.wbuf.clear(),
            Role::Publish => self.pbuf.clear(),
        }
        if let Some(link) = self.link_mut(role) {
            link.keepalive.wrote(now);
        }
    }

    // ----- state for the loop and the tests -----------------------------------------------

    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// Whether the current input connection resumed a session.
    pub fn session_present(&self) -> bool {
        self.input.as_ref().is_some_and(|l| l.session_present)
    }

    /// The connection our publishes take.
    pub fn publish_role(&self) -> Role {
        if self.cfg.separate_publisher {
            Role::Publish
        } else {
            Role::Input
        }
    }

    fn link(&self, role: Role) -> Option<&Link> {
        match role {
            Role::Input => self.input.as_ref(),
            Role::Publish => self.publisher.as_ref(),
        }
    }

    fn link_mut(&mut self, role: Role) -> Option<&mut Link> {
        match role {
            Role::Input => self.input.as_mut(),
            Role::Publish => self.publisher.as_mut(),
        }
    }

    /// The output buffer of connection `role`.
    fn buf(&mut self, role: Role) -> &mut BytesMut {
        match role {
            Role::Input => &mut self.wbuf,
            Role::Publish => &mut self.pbuf,
        }
    }

    /// Some connection had all its subscriptions granted.
    pub fn subscribed_once(&self) -> bool {
        self.subscribed_once
    }

    pub fn shutting_down(&self) -> bool {
        matches!(self.draining, Some((_, Drain::Shutdown)))
    }

    /// Inputs received on this connection and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.acks.len()
    }

    /// Everything acknowledged and released: nothing left to lose.
    pub fn drained(&self) -> bool {
        self.in_stages == 0
            && self.controls_out == 0
            && self.ready.is_empty()
            && self.shards.iter().all(|s| s.jobs.is_empty())
            && self.batcher.is_empty()
            && self.out.is_idle()
            && self.acks.is_empty()
            && self.outbox.idle()
    }

    // ----- inside -------------------------------------------------------------------------
}
