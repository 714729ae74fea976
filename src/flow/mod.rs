//! The filter's per-connection protocol logic as one synchronous state machine: everything
//! between the bytes read from the broker and the bytes written back, except the I/O itself.
//!
//! ```text
//!  on_connack ─┐                       ┌─▶ SUBSCRIBE, resend (DUP) or requeue, reported twin
//!  on_packet ──┤  inputs ─▶ shards ─▶ next_dispatch() ─▶ (stage, inline or on a worker)
//!  on_verdicts ┤  alerts ─▶ batcher ─▶ outgoing QoS 1 window ─▶ output()   (PUBLISH)
//!  tick(now) ──┤  acks in arrival order, each input once every publish it caused is acked (PUBACK)
//!  start_drain ┘  twin patches, keep-alive (PINGREQ), drain (DISCONNECT)   poll(now): read?, wake, exit
//! ```
//!
//! Events go in (`on_connack`, `on_packet`, `on_verdicts`, `tick`, `start_drain`,
//! `connection_lost`); effects come out: the bytes to write ([`Flow::output`]), the batches to
//! decide ([`Flow::next_dispatch`]) and, from [`Flow::poll`], whether to read, when to wake up
//! and whether the connection is done. There is no socket, no runtime and no clock in here:
//! time is an argument, so every protocol rule is unit-tested with scripted packets
//! (`tests.rs`). `io::connection` is the thin I/O loop around it.
//!
//! One `Flow` lives as long as the filter: across reconnects it keeps the twin, the alerts not
//! yet acknowledged (resent with DUP when the session resumed, requeued when it did not) and
//! the jobs still with the workers; inputs of a lost connection are forgotten (the broker
//! redelivers them), so their late verdicts publish nothing twice.

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
use outbound::{write_publish, Covers, Kind, PendingAlert, Sent};
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
    /// Inputs in the pipeline (received, not yet acknowledged) before reading pauses.
    pub max_pending: usize,
    /// Most inputs held at once whatever the broker sends: past it, QoS 1 inputs stay with
    /// the broker until a reconnect and QoS 0 inputs are dropped (counted). Above
    /// `max_pending` (our Receive Maximum) because brokers overshoot it: mosquitto 2.0.11 was
    /// measured sending ~30,000 unacknowledged inputs against a Receive Maximum of 8,192, and
    /// every time this bound is hit costs a reconnect.
    pub max_held: usize,
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
    /// QoS 1 inputs were left with the broker (`--max-pending` reached): once the admitted
    /// ones are done, reconnect at once so the broker delivers the others again.
    Overflow,
}

/// What [`Flow::poll`] tells the I/O loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// Whether to read from the socket (input credit).
    pub read: bool,
    /// When to call [`Flow::tick`] at the latest.
    pub wake: Option<Instant>,
    /// The drain is complete and the DISCONNECT is in the output: write it and close.
    pub exit: Option<Drain>,
}

/// Jobs of one shard not yet handed to its stage.
#[derive(Debug, Default)]
struct Shard {
    jobs: Vec<Job<Meta>>,
    /// Batches with the shard's worker (one at a time, except after a forced dispatch).
    with_worker: usize,
}

/// State of the current connection.
#[derive(Debug)]
struct Link {
    keepalive: KeepAlive,
    session_present: bool,
    /// SUBSCRIBE packet ids awaiting their SUBACK, with their filters.
    subscribing: Vec<(u16, Vec<String>)>,
    /// The broker's Maximum Packet Size (MQTT 5).
    max_packet: Option<u32>,
    /// QoS 1 inputs left with the broker because `--max-pending` was reached (see `admit`).
    deferred: u64,
    /// The DISCONNECT is written: the connection ends for this reason.
    closing: Option<Drain>,
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
    wbuf: BytesMut,
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
    link: Option<Link>,
    /// Every subscription of some connection was granted (a later refusal is not a startup
    /// mistake).
    subscribed_once: bool,
    draining: Option<(Instant, Drain)>,
    renew_at: Option<Instant>,
    /// The outbox policy's bookkeeping (inert under the alert policy).
    outbox: OutboxSide,
    /// IoT Edge: the twin GET awaiting its answer.
    twin_wait: Option<twin_get::TwinWait>,
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
            shards,
            spare_jobs: Vec::new(),
            spare_outs: Vec::new(),
            in_stages: 0,
            ready: VecDeque::new(),
            link: None,
            subscribed_once: false,
            draining: None,
            renew_at: None,
            outbox: OutboxSide::new(cfg.ack_policy),
            twin_wait: None,
            twin,
            dialect,
            metrics,
            threshold,
            cfg,
        }
    }

    // ----- events -------------------------------------------------------------------------

    /// The broker accepted our CONNECT: subscribe, resend (the session resumed) or requeue
    /// (a new session) what was in flight, report the twin state and, under IoT Edge, ask for
    /// the full twin.
    pub fn on_connack(&mut self, info: &ConnAckInfo, now: Instant) -> Result<(), FlowError> {
        let mut keepalive = KeepAlive::new(self.cfg.keep_alive_secs, now);
        if let Some(secs) = info.server_keep_alive {
            keepalive.server_keep_alive(secs);
        }
        let window = info
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(self.cfg.max_inflight);
        self.out.set_window(window);
        if info.session_present {
            let wbuf = &mut self.wbuf;
            let n = self.out.resend(|p| write_publish(p, wbuf));
            if n > 0 {
                tracing::info!("session resumed: resent {n} unacknowledged publishes");
            }
        } else {
            self.out.requeue_all();
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
        self.link = Some(Link {
            keepalive,
            session_present: info.session_present,
            subscribing,
            max_packet: info.maximum_packet_size,
            deferred: 0,
            closing: None,
        });
        if matches!(self.dialect, Dialect::Azure(_)) && self.twin.source() == Source::Default {
            // IoT Edge: the GET below answers; until then the report says so.
            self.twin.await_twin();
            self.metrics.delivery.twin_waiting(true);
        }
        let reported = self.dialect.reported(&self.twin);
        self.publish(reported, Covers::Nothing, Kind::Control);
        self.ask_twin(now, 1);
        Ok(())
    }

    /// One packet from the broker.
    pub fn on_packet(&mut self, p: Inbound, now: Instant) -> Result<(), FlowError> {
        match p {
            Inbound::Publish(publish) => self.on_publish(publish, now),
            Inbound::PubAck { pkid, ok, reason } => {
                if !ok {
                    tracing::warn!("the broker refused publish {pkid}: {reason}");
                }
                match self.out.acked(pkid) {
                    Some(sent) => self.finished(sent),
                    None => tracing::debug!("PUBACK for unknown packet id {pkid}"),
                }
            }
            Inbound::SubAck { pkid, granted } => self.on_suback(pkid, &granted)?,
            Inbound::PingResp => {
                if let Some(link) = &mut self.link {
                    link.keepalive.pong();
                }
            }
            Inbound::ConnAck(_) => return Err(FlowError::Unexpected("CONNACK")),
            Inbound::OversizePublish { publish, size } => self.on_oversize(publish, size, now),
            Inbound::Disconnect { reason } => return Err(FlowError::Disconnected(reason)),
            Inbound::Other(name) => tracing::debug!("ignoring {name} from the broker"),
        }
        Ok(())
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
        let session_present = self.link.as_ref().is_some_and(|l| l.session_present);
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

    /// Timers: keep-alive (ping, or give up), the IoT Edge token renewal, the rules' windows
    /// and idle devices.
    pub fn tick(&mut self, now: Instant) -> Result<(), FlowError> {
        self.rule_timer(now);
        self.twin_timer(now);
        if self.renew_at.is_some_and(|t| now >= t) {
            self.renew_at = None;
            self.start_drain(Drain::Renew, now);
        }
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        match link.keepalive.poll(now) {
            Action::Idle => Ok(()),
            Action::Ping => Ok(Encoder::pingreq(self.cfg.version, &mut self.wbuf).map(|_| ())?),
            Action::TimedOut => Err(FlowError::PingTimeout),
        }
    }

    /// Stops taking input and waits (up to `--drain-timeout`) for what is in flight.
    pub fn start_drain(&mut self, why: Drain, now: Instant) {
        match (why, self.draining) {
            (_, Some((_, Drain::Shutdown))) | (Drain::Renew | Drain::Overflow, Some(_)) => {}
            (Drain::Shutdown, Some((deadline, Drain::Renew | Drain::Overflow))) => {
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

    /// The connection is gone: forget its inputs (the broker redelivers them) and its state.
    /// Returns how many inputs were forgotten.
    pub fn connection_lost(&mut self) -> usize {
        self.link = None;
        // The next CONNACK asks for the twin again.
        self.twin_wait = None;
        self.out.release_reserved();
        self.metrics.connected(false, false);
        if matches!(self.draining, Some((_, Drain::Renew))) {
            self.draining = None;
        }
        self.acks.reset()
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

    /// Moves work towards the socket (due alert batches, queued publishes into the window,
    /// acknowledgements in arrival order), finishes a drain, and says what the loop does next.
    pub fn poll(&mut self, now: Instant) -> Poll {
        self.pump(now);
        let mut exit = self.link.as_ref().and_then(|l| l.closing);
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
                if Encoder::disconnect(self.cfg.version, &mut self.wbuf).is_ok() {
                    exit = Some(why);
                }
            }
        } else if self.link.as_ref().is_some_and(|l| l.deferred > 0) && self.acks.is_empty() {
            tracing::info!(
                "reconnecting: the inputs left with the broker come again on the resumed session"
            );
            if Encoder::disconnect(self.cfg.version, &mut self.wbuf).is_ok() {
                exit = Some(Drain::Overflow);
            }
        }
        // Input credit: stop reading when too much is in the pipeline, unless PUBACKs we are
        // waiting for can only come through that same socket — then inputs past the limit are
        // not admitted (`admit`), so memory stays bounded whatever the broker sends. (The
        // tracker holds every input of this connection not yet acknowledged; jobs of a lost
        // connection may still be in the stages.)
        if let (Some(why), Some(link)) = (exit, self.link.as_mut()) {
            link.closing = Some(why);
        }
        let pending = self.acks.len().max(self.in_stages);
        let over = pending >= self.cfg.max_pending;
        let read = exit.is_none() && (!over || self.out.inflight() > 0);
        self.metrics.pipeline(PipelineState {
            pending,
            inflight: self.out.inflight(),
            queued: self.out.queued(),
            paused: !read,
        });
        let mut wake = self.link.as_ref().and_then(|l| l.keepalive.deadline());
        for t in [
            self.batcher.deadline(),
            self.draining.map(|(d, _)| d),
            self.renew_at,
            self.rule_tick_at,
            self.twin_deadline(),
        ]
        .into_iter()
        .flatten()
        {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        Poll { read, wake, exit }
    }

    /// The bytes to write to the broker now.
    pub fn output(&self) -> &[u8] {
        &self.wbuf
    }

    /// The output was written at `now`.
    pub fn written(&mut self, now: Instant) {
        self.wbuf.clear();
        if let Some(link) = &mut self.link {
            link.keepalive.wrote(now);
        }
    }

    // ----- state for the loop and the tests -----------------------------------------------

    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// Whether the current connection resumed a session.
    pub fn session_present(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.session_present)
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
