//! The filter's protocol logic as one synchronous state machine: everything between the bytes
//! read from the broker and the bytes written back, except the I/O itself.
//!
//! ```text
//!  handle_connack ──┐                        ┌─▶ SUBSCRIBE, resend (DUP) or requeue, reported twin
//!  handle_packet ───┤  inputs ─▶ intake ─▶ poll_dispatch() ─▶ (stage, inline or on a worker)
//!  handle_verdicts ─┤  alerts ─▶ egress: batcher ─▶ QoS 1 window ─▶ poll_transmit(Publish)
//!  handle_timeout ──┤  acks in arrival order, each input once every publish it caused is acked
//!  handle_drain ────┘  twin patches, keep-alive (PINGREQ), drain (DISCONNECT)
//! ```
//!
//! See [`Flow`] for the grammar (events in, effects out) and the order a driver calls it in.
//! There is no socket, no runtime and no clock in here: time is an argument, so every
//! protocol rule is unit-tested with scripted packets (`tests.rs`). `io::connection` is the
//! thin I/O loop around it.
//!
//! The filter has one or two connections ([`Role`]): inputs, their PUBACKs and the
//! subscriptions on the input connection; our publishes and their PUBACKs on the publisher
//! connection when it is separate (generic MQTT at QoS 1), else on the input connection too.
//! Separate, the input connection can stop reading at `--max-pending` held inputs — flow
//! control by TCP — while the PUBACKs those inputs wait for still arrive.
//!
//! One `Flow` lives as long as the filter: across reconnects it keeps the twin, the alerts not
//! yet acknowledged (resent with DUP when the publishing session resumed, requeued when it did
//! not) and the jobs still with the workers; inputs of a lost input connection are forgotten
//! (the broker redelivers them), so their late verdicts publish nothing twice.

mod dead_letter;
pub mod dialect;
mod egress;
mod inbound;
mod intake;
mod outbound;
mod outbox;
mod stateful_rules;
#[cfg(test)]
mod tests;
mod timer;
mod twin_get;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use crate::metrics::{Metrics, PipelineState};
use crate::mqtt::ack_order::AckOrder;
use crate::mqtt::codec::{CodecError, ConnAckInfo, Encoder, Inbound, Version};
use crate::mqtt::keepalive::{Action, KeepAlive};
use crate::mqtt::outgoing::Outgoing;
use crate::pipeline::alert_batch::{Batcher, Format};
use crate::pipeline::rules::{Anchor, RuleSettings, Rules};
use crate::pipeline::stage::{Batch, OutKind};
use crate::pipeline::verdict::{FieldPath, Verdict};
use crate::twin::{Source, Threshold, Twin};

pub use dead_letter::{dead_letter_envelope, DEAD_LETTER_KEEP};
use dialect::{Dialect, InputProps, RuleOutput};
use egress::Egress;
use intake::Intake;
use outbound::PendingAlert;
use outbox::OutboxSide;
pub use outbox::{AckPolicy, OutboxAppend};
use timer::{Timer, TimerTable};

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
    /// The drain is complete and the DISCONNECT is in the output of every connection: write
    /// it and close.
    pub exit: Option<Drain>,
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

/// The filter's protocol logic (see the module documentation).
///
/// # Grammar
///
/// Events go in through `handle_*`, effects come out through `poll*`; time is an argument of
/// every event that needs it, and nothing in here reads a clock.
///
/// | events in | effects out |
/// |---|---|
/// | [`handle_connack`](Self::handle_connack): a connection's CONNACK (and, for the input one, when its credentials must be renewed) | [`poll_dispatch`](Self::poll_dispatch): the next batch to decide (inline, or on the shard's worker) |
/// | [`handle_packet`](Self::handle_packet): one packet read from a connection | [`poll`](Self::poll): moves work towards the sockets; whether to read the input connection, whether the connections are done |
/// | [`handle_verdicts`](Self::handle_verdicts): a decided batch, back from its stage | [`poll_outbox`](Self::poll_outbox), [`poll_outbox_done`](Self::poll_outbox_done): what to append to the outbox file, what to mark done there |
/// | [`handle_timeout`](Self::handle_timeout): the clock reached [`poll_timeout`](Self::poll_timeout) | [`poll_transmit`](Self::poll_transmit): the bytes to write to a connection |
/// | [`handle_drain`](Self::handle_drain): stop taking input (shutdown) | [`poll_timeout`](Self::poll_timeout): when to call `handle_timeout` at the latest |
/// | [`handle_transmitted`](Self::handle_transmitted), [`handle_connection_lost`](Self::handle_connection_lost), [`handle_outbox_committed`](Self::handle_outbox_committed), [`handle_outbox_failed`](Self::handle_outbox_failed), [`handle_outbox_replay`](Self::handle_outbox_replay) | |
///
/// # Call order
///
/// A driver (`io::connection`) loops:
/// 1. feed the events of this turn (`handle_*`, any number, in the order they happened);
/// 2. take every batch from `poll_dispatch`, deciding inline ones at once and handing the
///    result back through `handle_verdicts`;
/// 3. call `poll(now)`; under the outbox policy, commit `poll_outbox()` to the file, then
///    `handle_outbox_committed` (or `handle_outbox_failed`) and `poll(now)` again, so the
///    acknowledgements the commit released go out in the same write;
/// 4. write `poll_transmit(role)` of each live connection, then `handle_transmitted(role)`;
///    close the connections when `poll` said `exit`;
/// 5. wait for a socket (the input one only when `poll` said `read`), a decided batch, or
///    `poll_timeout()`.
pub struct Flow {
    cfg: FlowConfig,
    dialect: Dialect,
    twin: Twin,
    /// The rules in force; each batch takes a snapshot when it is formed.
    rules: Arc<Rules>,
    metrics: Arc<Metrics>,
    /// The threshold for readers outside the flow (lock-free).
    threshold: Arc<Threshold>,
    /// Every input of the input connection, in arrival order, until acknowledged: the ledger
    /// between intake (arrival) and egress (the PUBACKs of what it caused).
    acks: AckOrder,
    intake: Intake<Meta>,
    egress: Egress,
    /// The flow's own deadlines; [`Flow::deadlines`] adds the components' (keep-alives, linger).
    timers: TimerTable,
    /// Devices with rule state, per shard (as the stages last reported).
    devices: Vec<usize>,
    /// The input connection, when it is up.
    input: Option<Link>,
    /// The publisher connection, when it is up (separate publisher only).
    publisher: Option<Link>,
    /// Every subscription of some connection was granted (a later refusal is not a startup
    /// mistake).
    subscribed_once: bool,
    /// Why input is no longer taken (its deadline is [`Timer::Drain`]).
    draining: Option<Drain>,
    /// The outbox policy's bookkeeping (inert under the alert policy).
    outbox: OutboxSide,
    /// IoT Edge: the twin GET awaiting its answer (its deadline is [`Timer::TwinGet`]).
    twin_wait: Option<twin_get::TwinWait>,
    /// The body of the last reported patch published: an unchanged state is not reported
    /// again (IoT Edge reconnects hourly to renew its token).
    reported_last: Option<Bytes>,
}

impl Flow {
    /// A flow whose rules' clock starts at `anchor` (the process's start: windows align on
    /// the wall clock).
    pub fn new(
        cfg: FlowConfig,
        dialect: Dialect,
        metrics: Arc<Metrics>,
        threshold: Arc<Threshold>,
        anchor: Anchor,
    ) -> Flow {
        let twin = Twin::new(threshold.get(), cfg.rules.clone());
        metrics.threshold(twin.threshold());
        let rules = Rules::with(
            twin.threshold(),
            twin.rules().clone(),
            cfg.event_time.clone(),
            anchor,
        );
        let publish_role = if cfg.separate_publisher {
            Role::Publish
        } else {
            Role::Input
        };
        let mut timers = TimerTable::default();
        timers.set(Timer::Rules, rules.next_tick(anchor.at));
        Flow {
            devices: vec![0; cfg.shards.max(1)],
            rules,
            acks: AckOrder::new(),
            intake: Intake::new(cfg.shards, cfg.pooled, cfg.inline_batch),
            egress: Egress::new(
                Outgoing::new(cfg.max_inflight),
                Batcher::new(cfg.batch_max, cfg.batch_linger),
                publish_role,
            ),
            timers,
            input: None,
            publisher: None,
            subscribed_once: false,
            draining: None,
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

    // ----- events in ----------------------------------------------------------------------

    /// The broker accepted the CONNECT of one of our connections. Whichever carries our
    /// publishes resends (the session resumed) or requeues (a new session) what was in flight;
    /// the input connection subscribes and reports the twin state — under IoT Edge only once
    /// every SUBACK is in, with the full-twin GET. `renew_at`: when the input connection's
    /// credentials (an IoT Edge SAS token) must be renewed by reconnecting.
    pub fn handle_connack(
        &mut self,
        role: Role,
        info: &ConnAckInfo,
        renew_at: Option<Instant>,
        now: Instant,
    ) -> Result<(), FlowError> {
        let link = Link::new(info, self.cfg.keep_alive_secs, now);
        if role == self.publish_role() {
            let window = info
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(self.cfg.max_inflight);
            self.egress.out.set_window(window);
            self.egress.max_packet = info.maximum_packet_size;
            if info.session_present {
                let n = self.egress.resend();
                if n > 0 {
                    tracing::info!("session resumed: resent {n} unacknowledged publishes");
                }
            } else {
                self.egress.out.requeue_all();
            }
        }
        if role == Role::Publish {
            self.publisher = Some(link);
            return Ok(());
        }
        self.timers.set(Timer::Renew, renew_at);
        let mut subscribing = Vec::new();
        for (filters, qos, no_local) in self.dialect.subscriptions() {
            let Some(pkid) = self.egress.out.reserve_id() else {
                break;
            };
            Encoder::subscribe(
                self.cfg.version,
                self.egress.buf(Role::Input),
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
            self.report(true, now);
        } else {
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
        }
        Ok(())
    }

    /// One packet read from connection `role`.
    pub fn handle_packet(&mut self, role: Role, p: Inbound, now: Instant) -> Result<(), FlowError> {
        match p {
            Inbound::Publish(publish) if role == Role::Input => self.on_publish(publish, now),
            Inbound::Publish(publish) => self.stray_publish(publish.qos, publish.pkid),
            Inbound::PubAck { pkid, ok, reason } if role == self.publish_role() => {
                if !ok {
                    tracing::warn!("the broker refused publish {pkid}: {reason}");
                }
                match self.egress.out.acked(pkid) {
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
            let _ = Encoder::puback(self.cfg.version, self.egress.buf(Role::Publish), pkid);
        }
    }

    /// A batch came back from its stage (a worker, or the I/O loop's thread).
    pub fn handle_verdicts(&mut self, mut batch: Batch<Meta>, now: Instant) {
        self.intake.returned(&batch);
        self.rule_results(&batch);
        // With per-device state the stage has moved on: a redelivered input will be judged
        // against the state this one left, so what this one caused must go out.
        let stateless = batch.rules.stateless();
        let session_present = self.session_present();
        let mut outs = batch.outs.iter().peekable();
        let mut unmatched = 0;
        for (i, job) in batch.jobs.drain(..).enumerate() {
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
                    self.reject(seq, &topic, &job.payload, size, &rejection, props, now);
                }
                Verdict::Unmatched => unmatched += 1,
                Verdict::Alert => {}
            }
            while let Some(out) = outs.next_if(|o| o.job as usize == i) {
                let kind = match &out.kind {
                    OutKind::Alert => RuleOutput::Alert,
                    OutKind::Clear => RuleOutput::Clear,
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
                self.egress.batcher.push(alert, now);
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
        let Batch { jobs, outs, .. } = batch;
        self.intake.recycle(jobs, outs);
    }

    /// The clock reached [`Flow::poll_timeout`]: whatever is due — keep-alive (ping, or give
    /// up) on each connection, the IoT Edge token renewal, the rules' windows and idle
    /// devices, the twin GET's retry. (A batch's linger and the drain's limit are acted on by
    /// [`Flow::poll`].)
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), FlowError> {
        let deadlines = self.deadlines();
        for timer in deadlines.expired(now) {
            match timer {
                Timer::KeepAliveInput => self.keep_alive(Role::Input, now)?,
                Timer::KeepAlivePublish => self.keep_alive(Role::Publish, now)?,
                Timer::Renew => {
                    self.timers.set(Timer::Renew, None);
                    self.handle_drain(Drain::Renew, now);
                }
                Timer::Rules => self.rule_timer(now),
                Timer::TwinGet => self.twin_timer(now),
                Timer::Linger | Timer::Drain => {}
            }
        }
        Ok(())
    }

    /// Connection `role`'s keep-alive at its deadline.
    fn keep_alive(&mut self, role: Role, now: Instant) -> Result<(), FlowError> {
        let Some(link) = self.link_mut(role) else {
            return Ok(());
        };
        match link.keepalive.poll(now) {
            Action::Idle => Ok(()),
            Action::Ping => {
                Encoder::pingreq(self.cfg.version, self.egress.buf(role))?;
                Ok(())
            }
            Action::TimedOut => Err(FlowError::PingTimeout),
        }
    }

    /// Stops taking input and waits (up to `--drain-timeout`) for what is in flight.
    pub fn handle_drain(&mut self, why: Drain, now: Instant) {
        match (why, self.draining) {
            (_, Some(Drain::Shutdown)) | (Drain::Renew, Some(_)) => {}
            (Drain::Shutdown, Some(Drain::Renew)) => {
                // Already waiting for a renewal drain: keep its deadline, end afterwards.
                tracing::info!("shutdown: draining");
                self.draining = Some(Drain::Shutdown);
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
                self.draining = Some(why);
                self.timers
                    .set(Timer::Drain, Some(now + self.cfg.drain_timeout));
            }
        }
    }

    /// The bytes of [`Flow::poll_transmit`] for `role` were written at `now`.
    pub fn handle_transmitted(&mut self, role: Role, now: Instant) {
        self.egress.clear(role);
        if let Some(link) = self.link_mut(role) {
            link.keepalive.wrote(now);
        }
    }

    /// Connection `role` is gone. What was written for it and not sent is dropped (its
    /// PUBACKs name packet ids of a dead connection; its publishes are still tracked and go
    /// out again after the next CONNACK). The input connection's inputs are forgotten (the
    /// broker redelivers them); returns how many.
    pub fn handle_connection_lost(&mut self, role: Role) -> usize {
        self.egress.clear(role);
        match role {
            Role::Publish => {
                self.publisher = None;
                0
            }
            Role::Input => {
                self.input = None;
                // The next CONNACK asks for the twin again.
                self.twin_wait = None;
                self.timers.set(Timer::TwinGet, None);
                self.timers.set(Timer::Renew, None);
                self.egress.out.release_reserved();
                self.metrics.connected(false, false);
                if self.draining == Some(Drain::Renew) {
                    self.draining = None;
                    self.timers.set(Timer::Drain, None);
                }
                self.acks.reset()
            }
        }
    }

    // ----- effects out --------------------------------------------------------------------

    /// The next batch to decide, in order: run it through its shard's stage (on a worker when
    /// `pooled`, else right away) and hand it back with [`Flow::handle_verdicts`].
    pub fn poll_dispatch(&mut self) -> Option<Batch<Meta>> {
        self.intake.next(&self.rules)
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
        } else if let Some(why) = self.draining {
            let drained = self.drained();
            let over = self.timers.get(Timer::Drain).is_some_and(|d| now >= d);
            if drained || over {
                if !drained {
                    tracing::warn!(
                        "drain timeout: {} inputs still pending, {} alerts unacknowledged; the broker keeps them",
                        self.acks.pending(),
                        self.egress.out.inflight() + self.egress.out.queued()
                    );
                }
                let version = self.cfg.version;
                let mut said = true;
                for (role, up) in [Role::Input, Role::Publish].into_iter().zip(live) {
                    if up {
                        said &= Encoder::disconnect(version, self.egress.buf(role)).is_ok();
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
        let pending = self.acks.len().max(self.intake.in_stages());
        let read = exit.is_none()
            && (pending < self.cfg.max_pending
                || (!self.cfg.separate_publisher && self.egress.out.inflight() > 0));
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
            inflight: self.egress.out.inflight(),
            queued: self.egress.out.queued(),
            paused: !read,
        });
        Poll { read, exit }
    }

    /// The bytes to write to connection `role` now.
    pub fn poll_transmit(&self, role: Role) -> &[u8] {
        self.egress.transmit(role)
    }

    /// When [`Flow::handle_timeout`] (or [`Flow::poll`], for a batch's linger and the drain's
    /// limit) must run at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines().next()
    }

    /// Every deadline in one table: the flow's own (`self.timers`: drain, renewal, rules,
    /// twin GET) with those its components keep read where they live (each connection's
    /// keep-alive, the batcher's linger), so no copy can go stale.
    fn deadlines(&self) -> TimerTable {
        let keepalive = |l: &Option<Link>| l.as_ref().and_then(|l| l.keepalive.deadline());
        let mut all = self.timers.clone();
        all.set(Timer::KeepAliveInput, keepalive(&self.input));
        all.set(Timer::KeepAlivePublish, keepalive(&self.publisher));
        all.set(Timer::Linger, self.egress.batcher.deadline());
        all
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
        self.egress.publish_role()
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

    /// Some connection had all its subscriptions granted.
    pub fn subscribed_once(&self) -> bool {
        self.subscribed_once
    }

    pub fn shutting_down(&self) -> bool {
        self.draining == Some(Drain::Shutdown)
    }

    /// Inputs received on this connection and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.acks.len()
    }

    /// Everything acknowledged and released: nothing left to lose.
    pub fn drained(&self) -> bool {
        self.intake.is_idle() && self.egress.is_idle() && self.acks.is_empty() && self.outbox.idle()
    }
}
