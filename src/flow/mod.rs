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
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::metrics::{Metrics, PipelineState, TwinResult};
use crate::mqtt::ack_order::AckOrder;
use crate::mqtt::azure::twin_doc;
use crate::mqtt::codec::{
    CodecError, ConnAckInfo, Encoder, InPublish, Inbound, OutPublish, Unpublishable, Version,
};
use crate::mqtt::keepalive::{Action, KeepAlive};
use crate::mqtt::outgoing::Outgoing;
use crate::pipeline::batch::{group_by_key, json_array, Batcher, Format};
use crate::pipeline::pool::shard_of;
use crate::pipeline::stage::{Batch, Job, Out, OutKind, Rules};
use crate::pipeline::verdict::{Rejection, Verdict};
use crate::twin::{Outcome, Threshold, Twin};

pub use dead_letter::{dead_letter_envelope, DEAD_LETTER_KEEP};
use dialect::{Dialect, InputProps, Route};

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
    /// Our limit of unacknowledged outgoing QoS 1 publishes (the broker's Receive Maximum
    /// also applies).
    pub max_inflight: u16,
    pub batch_max: usize,
    pub batch_linger: Duration,
    pub batch_format: Format,
    pub drain_timeout: Duration,
    /// The keep-alive we ask for in CONNECT (an MQTT 5 broker may impose its own).
    pub keep_alive_secs: u16,
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

/// The inputs a publish finishes one part of when it is acknowledged (or written, at QoS 0).
#[derive(Debug)]
enum Covers {
    Nothing,
    One(u64),
    Many(Vec<u64>),
}

impl Covers {
    fn of(seq: Option<u64>) -> Covers {
        seq.map_or(Covers::Nothing, Covers::One)
    }

    fn for_each(&self, mut f: impl FnMut(u64)) {
        match self {
            Covers::Nothing => {}
            Covers::One(seq) => f(*seq),
            Covers::Many(seqs) => seqs.iter().copied().for_each(f),
        }
    }
}

/// What a publish is, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// This many alerts (more than one in an array batch).
    Alert(u64),
    DeadLetter,
    /// Twin reports and requests.
    Control,
}

/// A QoS 1 publish's tag in the outgoing window.
#[derive(Debug)]
struct Sent {
    covers: Covers,
    kind: Kind,
}

/// An alert waiting in the batcher.
#[derive(Debug)]
struct PendingAlert {
    /// None when the input belongs to a lost connection (nothing to acknowledge).
    seq: Option<u64>,
    topic: Bytes,
    payload: Bytes,
    props: InputProps,
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
    /// Batches decided on but not yet taken by the I/O loop, in order.
    ready: VecDeque<Batch<Meta>>,
    link: Option<Link>,
    /// Every subscription of some connection was granted (a later refusal is not a startup
    /// mistake).
    subscribed_once: bool,
    draining: Option<(Instant, Drain)>,
    renew_at: Option<Instant>,
}

impl Flow {
    pub fn new(
        cfg: FlowConfig,
        dialect: Dialect,
        metrics: Arc<Metrics>,
        threshold: Arc<Threshold>,
    ) -> Flow {
        let twin = Twin::new(threshold.get());
        metrics.threshold(twin.threshold());
        let shards = (0..cfg.shards.max(1)).map(|_| Shard::default()).collect();
        Flow {
            rules: Rules::new(twin.threshold()),
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
        });
        let reported = self.dialect.reported(&self.twin);
        self.publish(reported, Covers::Nothing, Kind::Control);
        for p in self.dialect.on_connected() {
            self.publish(p, Covers::Nothing, Kind::Control);
        }
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
            if !current && session_present && qos > 0 {
                while outs.next_if(|o| o.job as usize == i).is_some() {}
                continue;
            }
            let seq = current.then_some(seq);
            let mut props = Some(props);
            match job.verdict {
                Verdict::Rejected(rejection) => {
                    let props = props.take().unwrap_or_default();
                    self.reject(seq, &topic, &job.payload, &rejection, props);
                }
                Verdict::Unmatched => unmatched += 1,
                Verdict::Alert => {}
            }
            while let Some(out) = outs.next_if(|o| o.job as usize == i) {
                let last = outs.peek().is_none_or(|o| o.job as usize != i);
                let props = if last { props.take() } else { props.clone() };
                // The input is held until this publish is acknowledged.
                if let Some(seq) = seq {
                    self.acks.hold(seq, 1);
                }
                match out.kind {
                    OutKind::Alert => {
                        let alert = PendingAlert {
                            seq,
                            topic: topic.clone(),
                            payload: job.payload.clone(),
                            props: props.unwrap_or_default(),
                        };
                        self.batcher.push(alert, now);
                    }
                }
            }
            if let Some(seq) = seq {
                self.acks.done(seq);
            }
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

    /// Timers: keep-alive (ping, or give up), the IoT Edge token renewal.
    pub fn tick(&mut self, now: Instant) -> Result<(), FlowError> {
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
            (_, Some((_, Drain::Shutdown))) | (Drain::Renew, Some(_)) => {}
            (Drain::Shutdown, Some((deadline, Drain::Renew))) => {
                // Already waiting for a renewal drain: keep its deadline, end afterwards.
                tracing::info!("shutdown: draining");
                self.draining = Some((deadline, Drain::Shutdown));
            }
            (why, None) => {
                if why == Drain::Shutdown {
                    tracing::info!(
                        "shutdown: draining (up to {} s)",
                        self.cfg.drain_timeout.as_secs_f64()
                    );
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
        let mut exit = None;
        if let Some((deadline, why)) = self.draining {
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
        }
        // Input credit: stop reading when too much is in the pipeline, unless PUBACKs we are
        // waiting for can only come through that same socket. (The tracker holds every input
        // of this connection not yet acknowledged; jobs of a lost connection may still be in
        // the stages.)
        let over = self.acks.len().max(self.in_stages) >= self.cfg.max_pending;
        let read = exit.is_none() && (!over || self.out.inflight() > 0);
        self.metrics.pipeline(PipelineState {
            pending: self.acks.len(),
            inflight: self.out.inflight(),
            queued: self.out.queued(),
            paused: !read,
        });
        let mut wake = self.link.as_ref().and_then(|l| l.keepalive.deadline());
        for t in [
            self.batcher.deadline(),
            self.draining.map(|(d, _)| d),
            self.renew_at,
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
            && self.ready.is_empty()
            && self.shards.iter().all(|s| s.jobs.is_empty())
            && self.batcher.is_empty()
            && self.out.is_idle()
            && self.acks.is_empty()
    }

    // ----- inside -------------------------------------------------------------------------

    fn on_suback(&mut self, pkid: u16, granted: &[Option<u8>]) -> Result<(), FlowError> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let Some(i) = link.subscribing.iter().position(|(id, _)| *id == pkid) else {
            return Ok(());
        };
        let (_, filters) = link.subscribing.swap_remove(i);
        self.out.unreserve(pkid);
        if let Some(refused) = granted.iter().position(Option::is_none) {
            return Err(FlowError::SubscribeRefused(
                filters.get(refused).cloned().unwrap_or_default(),
            ));
        }
        if link.subscribing.is_empty() {
            self.metrics.connected(true, self.subscribed_once);
            self.subscribed_once = true;
        }
        Ok(())
    }

    fn on_publish(&mut self, mut p: InPublish, now: Instant) {
        let pkid = (p.qos > 0).then_some(p.pkid);
        match self.dialect.route(&mut p) {
            Route::Input(props) => {
                if self.draining.is_some() {
                    // Not ours any more: unacknowledged, the broker redelivers it next session.
                    return;
                }
                let seq = self.acks.push(pkid, now);
                self.metrics.received(1);
                let device = self.dialect.device_key(&p.topic, &props);
                let shard = shard_of(&device, self.shards.len());
                let meta = Meta {
                    seq,
                    qos: p.qos,
                    topic: p.topic,
                    props,
                };
                let job = Job::new(p.payload, device, now, meta);
                let jobs = &mut self.shards[shard].jobs;
                if jobs.capacity() == 0 {
                    if let Some(v) = self.spare_jobs.pop() {
                        *jobs = v;
                    }
                }
                jobs.push(job);
            }
            Route::TwinDesired => {
                // What arrived before the patch is judged with the rules before it.
                self.dispatch(true);
                let seq = self.acks.push(pkid, now);
                self.apply_twin(&p.payload);
                self.acks.done(seq);
            }
            Route::TwinFull => {
                self.dispatch(true);
                let seq = self.acks.push(pkid, now);
                match twin_doc::parse_full_twin(&p.payload) {
                    Ok(full) => self.apply_twin(&full.desired_json()),
                    Err(e) => tracing::warn!("twin: unreadable full twin: {e}"),
                }
                self.acks.done(seq);
            }
            Route::TwinAnswer { status, rid } => {
                let seq = self.acks.push(pkid, now);
                if status >= 300 {
                    tracing::warn!("twin: request {rid} was answered with status {status}");
                }
                self.acks.done(seq);
            }
            Route::Ignore => {
                let seq = self.acks.push(pkid, now);
                self.metrics.ignored(1);
                self.acks.done(seq);
            }
        }
    }

    /// Validates and applies a desired document, then reports.
    fn apply_twin(&mut self, doc: &[u8]) {
        let before = self.twin.threshold();
        let outcome = self.twin.handle(doc);
        let result = match &outcome {
            Outcome::Applied { threshold, changed } => {
                self.rules = Rules::new(*threshold);
                self.threshold.set(*threshold);
                self.metrics.threshold(*threshold);
                if *changed {
                    tracing::info!(
                        "twin: threshold {before} -> {threshold} ($version {})",
                        self.twin.version().map_or("none".into(), |v| v.to_string())
                    );
                }
                TwinResult::applied
            }
            Outcome::Refused(why) => {
                tracing::warn!(
                    "twin: refused a desired patch: {why}; the threshold stays {before}"
                );
                TwinResult::refused
            }
            Outcome::Stale { version, current } => {
                tracing::info!("twin: ignored desired $version {version} (older than {current})");
                TwinResult::stale
            }
        };
        self.metrics.twin_update(result);
        if result != TwinResult::stale {
            let reported = self.dialect.reported(&self.twin);
            self.publish(reported, Covers::Nothing, Kind::Control);
        }
    }

    /// Forms batches of the collected jobs, with the rules in force.
    ///
    /// A worker gets its next batch only when its previous one came back (unless `force`):
    /// under load the jobs that arrive meanwhile accumulate into one larger batch, so the
    /// hand-offs (wake-ups and context switches, the dominant cost on small gateways) per
    /// message fall as the rate rises, while an idle worker still gets a message at once.
    /// `force` is for twin patches: what arrived before a patch must go with the old rules.
    fn dispatch(&mut self, force: bool) {
        for s in 0..self.shards.len() {
            let shard = &mut self.shards[s];
            let pending = shard.jobs.len();
            if pending == 0 {
                continue;
            }
            let idle = shard.with_worker == 0;
            // A hand-off and the hand-back cost about as much as 40 verdicts (two wake-ups and
            // context switches): a small batch for an idle worker is decided on the loop's
            // thread. An idle worker means nothing of this shard is out, so order holds.
            let inline = !self.cfg.pooled || (idle && pending <= self.cfg.inline_batch);
            if !inline && !idle && !force {
                continue;
            }
            let jobs = std::mem::take(&mut shard.jobs);
            if !inline {
                shard.with_worker += 1;
            }
            self.in_stages += pending;
            let mut batch = Batch::new(s, self.rules.clone(), jobs);
            batch.pooled = !inline;
            if let Some(outs) = self.spare_outs.pop() {
                batch.outs = outs;
            }
            self.ready.push_back(batch);
        }
    }

    /// Counts, explains and dead-letters a rejected input.
    fn reject(
        &mut self,
        seq: Option<u64>,
        topic: &Bytes,
        payload: &Bytes,
        r: &Rejection,
        props: InputProps,
    ) {
        let topic_str = String::from_utf8_lossy(topic);
        self.metrics.rejected(r.reason, &r.detail, &topic_str);
        self.dead_letter(seq, r.reason.as_str(), &r.detail, topic, payload, props);
    }

    /// Publishes the dead letter of an input (when dead-lettering is on).
    fn dead_letter(
        &mut self,
        seq: Option<u64>,
        reason: &str,
        detail: &str,
        topic: &Bytes,
        payload: &Bytes,
        props: InputProps,
    ) {
        let envelope =
            dead_letter_envelope(reason, detail, &String::from_utf8_lossy(topic), payload);
        if let Some(packet) = self.dialect.dead_letter(envelope, reason, topic, props) {
            if let Some(seq) = seq {
                self.acks.hold(seq, 1);
            }
            self.publish(packet, Covers::of(seq), Kind::DeadLetter);
        }
    }

    /// Moves work towards the socket: due alert batches, queued publishes into the window,
    /// acknowledgements in arrival order.
    fn pump(&mut self, now: Instant) {
        while self.batcher.due(now) {
            let alerts: Vec<PendingAlert> = self.batcher.take(now).collect();
            self.publish_alerts(alerts);
        }
        let wbuf = &mut self.wbuf;
        self.out.send_ready(|p| write_publish(p, wbuf));
        let version = self.cfg.version;
        let metrics = &self.metrics;
        let wbuf = &mut self.wbuf;
        self.acks.release(|r| {
            metrics.processed(now.saturating_duration_since(r.received));
            if let Some(pkid) = r.pkid {
                let _ = Encoder::puback(version, wbuf, pkid);
            }
        });
    }

    fn publish_alerts(&mut self, alerts: Vec<PendingAlert>) {
        match self.cfg.batch_format {
            Format::Single => {
                for a in alerts {
                    let packet = self.dialect.alert(&a.topic, a.payload.clone(), a.props);
                    match self.check(&packet) {
                        Ok(()) => self.publish(packet, Covers::of(a.seq), Kind::Alert(1)),
                        Err(why) => self.unpublishable_alert(a.seq, &a.topic, &a.payload, &why),
                    }
                }
            }
            Format::Array => {
                let dialect = &mut self.dialect;
                let groups = group_by_key(alerts, |a| dialect.array_key(&a.topic));
                for (alert_topic, group) in groups {
                    let payload = json_array(group.iter().map(|a| &a.payload[..]));
                    let packet = self.dialect.alert_array(&alert_topic, payload);
                    if let Err(why) = self.check(&packet) {
                        for a in &group {
                            self.unpublishable_alert(a.seq, &a.topic, &a.payload, &why);
                        }
                        continue;
                    }
                    let seqs: Vec<u64> = group.iter().filter_map(|a| a.seq).collect();
                    self.publish(packet, Covers::Many(seqs), Kind::Alert(group.len() as u64));
                }
            }
        }
    }

    /// Whether a publish can go on the wire: a valid topic name for the dialect, encodable,
    /// within the broker's Maximum Packet Size.
    fn check(&self, packet: &OutPublish) -> Result<(), Unpublishable> {
        self.dialect.check_topic(packet.topic())?;
        packet.check(self.link.as_ref().and_then(|l| l.max_packet))
    }

    /// An alert that cannot go on the wire (its topic too long to encode, or larger than the
    /// broker accepts): counted, explained, dead-lettered in its place, and its input
    /// finished — one bad message never blocks the stream.
    fn unpublishable_alert(
        &mut self,
        seq: Option<u64>,
        topic: &Bytes,
        payload: &Bytes,
        why: &Unpublishable,
    ) {
        let detail = format!("the alert cannot be published: {why}");
        self.metrics
            .unpublishable("alert", &detail, &String::from_utf8_lossy(topic));
        self.dead_letter(
            seq,
            "unpublishable",
            &detail,
            topic,
            payload,
            InputProps::None,
        );
        if let Some(seq) = seq {
            self.acks.done(seq);
        }
    }

    /// Sends a publish whose covered inputs were already held for it: QoS 1 through the
    /// window (finished on its PUBACK), QoS 0 straight into the output (finished now). What
    /// cannot go on the wire is counted and finished unsent.
    fn publish(&mut self, packet: OutPublish, covers: Covers, kind: Kind) {
        if let Err(why) = self.check(&packet) {
            let what = match kind {
                Kind::Alert(_) => "alert",
                Kind::DeadLetter => "dead_letter",
                Kind::Control => "twin",
            };
            let topic = String::from_utf8_lossy(packet.topic());
            self.metrics
                .unpublishable(what, &format!("cannot be published: {why}"), &topic);
            let acks = &mut self.acks;
            covers.for_each(|seq| {
                acks.done(seq);
            });
            return;
        }
        let sent = Sent { covers, kind };
        if packet.qos() > 0 {
            self.out.enqueue(packet, sent);
        } else {
            write_publish(&packet, &mut self.wbuf);
            self.finished(sent);
        }
    }

    /// A publish was acknowledged (or written, at QoS 0): count it, finish its inputs' part.
    fn finished(&mut self, sent: Sent) {
        match sent.kind {
            Kind::Alert(n) => self.metrics.alerts_published(n.max(1)),
            Kind::DeadLetter => self.metrics.dead_lettered(1),
            Kind::Control => {}
        }
        let acks = &mut self.acks;
        sent.covers.for_each(|seq| {
            acks.done(seq);
        });
    }
}

fn write_publish(p: &OutPublish, wbuf: &mut BytesMut) {
    if let Err(e) = p.write(wbuf) {
        tracing::error!("cannot encode a publish: {e}");
    }
}
