//! Tooling, the input side of loadgen: one publisher connection (MQTT in, from the filter's
//! point of view). A writer thread encodes due messages into one buffer and writes each batch
//! with a single `write_all`; an ack-reader thread consumes PUBACKs (QoS 1 window) and
//! PINGRESPs (QoS 0 "the broker has read everything" fence). The writer decides every
//! message's expected verdict as it encodes it and records the alert-worthy sequence numbers.

use crate::account::{new_latency_histogram, BitSet};
use crate::clock::{thread_cpu, Clock};
use crate::condition_model::{Expr, Message};
use crate::inflight::{IdCursor, IdWindow};
use crate::message::{
    encode_publish_with, is_malformed, write_message_body, Device, PublishFormat, TempSource,
};
use crate::rule_model::{Reading, RuleSpec};
use crate::schedule::{ConnSeqs, Schedule};
use crate::wire::{
    decode_control, frame, parse_puback, Conn, Inbound, WireError, DISCONNECT, PINGREQ,
};
use bytes::Buf;
use hdrhistogram::Histogram;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// A connection idle for this long sends a PINGREQ (a third of the keep-alive).
pub const IDLE_PING: Duration = Duration::from_secs(20);
/// Waiting for acknowledgements fails after this long without any progress.
pub const ACK_STALL: Duration = Duration::from_secs(60);

/// Pause of the ack reader after a short read.
const ACK_COALESCE: Duration = Duration::from_millis(1);
const ACK_COALESCE_BYTES: usize = 32 << 10;

/// State shared by the run's controller and all publishers.
pub struct Shared {
    pub clock: Clock,
    /// Start of the run (µs since the epoch).
    pub t0: u64,
    pub schedule: Schedule,
    /// Stop sending (Ctrl-C or a failure elsewhere); publishers still flush what they sent.
    pub stop: AtomicBool,
    /// Added to the schedule after the twin pause (µs).
    pub shift_us: AtomicU64,
    resumed: Mutex<bool>,
    resume_cv: Condvar,
    /// Messages written so far, all connections.
    pub sent: AtomicU64,
    /// Messages written so far whose verdict is "alert".
    pub expected: AtomicU64,
    /// One past the highest sequence number written (the sink treats anything above as unknown).
    pub issued: Arc<AtomicU64>,
}

impl Shared {
    pub fn new(clock: Clock, t0: u64, schedule: Schedule, issued: Arc<AtomicU64>) -> Self {
        Shared {
            clock,
            t0,
            schedule,
            stop: AtomicBool::new(false),
            shift_us: AtomicU64::new(0),
            resumed: Mutex::new(false),
            resume_cv: Condvar::new(),
            sent: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            issued,
        }
    }

    /// Releases the paused publishers, the schedule shifted by `shift_us`.
    pub fn resume(&self, shift_us: u64) {
        self.shift_us.store(shift_us, Ordering::Release);
        *self.resumed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.resume_cv.notify_all();
    }
}

/// What one publisher is given.
pub struct PubConfig {
    pub index: u32,
    /// Device indices of this connection (ascending) and their state.
    pub device_ids: Vec<u32>,
    pub devices: Vec<Device>,
    pub total_devices: u32,
    pub fmt: PublishFormat,
    /// Maximum unacknowledged QoS 1 messages.
    pub window: u32,
    /// Maximum messages per write.
    pub batch: usize,
    pub temp: TempSource,
    /// Probability of a malformed body (`--malformed`).
    pub malformed: f64,
    pub seed: u64,
    pub threshold: f64,
    /// The threshold after the twin step, if any.
    pub twin_threshold: Option<f64>,
    /// The filter's rules: what each reading publishes.
    pub rules: RuleSpec,
    /// The filter's `--condition`, in loadgen's model (None: `machine.temperature > threshold`).
    pub condition: Option<Arc<Expr>>,
    /// Shortest sleep of a paced writer: when messages are due closer together, it sleeps a
    /// tick and writes all that became due in one batch.
    pub tick: Duration,
}

/// Progress notes to the controller.
#[derive(Debug)]
pub enum PubEvent {
    /// Reached the pause point, everything before it acknowledged by the broker.
    Paused {
        conn: u32,
        at_us: u64,
    },
    /// Finished, everything acknowledged by the broker.
    Done {
        conn: u32,
        at_us: u64,
    },
    Failed {
        conn: u32,
        error: String,
    },
}

/// What one publisher did.
#[derive(Debug)]
pub struct PubResult {
    pub sent: u64,
    /// Of `sent`, messages with a malformed body (never expected as alerts).
    pub malformed: u64,
    /// Sequence numbers whose expected verdict is "alert" (after the rules).
    pub expected: BitSet,
    /// Sequence numbers whose clearing message is expected.
    pub clears: BitSet,
    /// Readings above the threshold: the alerts the seed would publish.
    pub seed_alerts: u64,
    /// With summaries: each device's input topic and readings in order.
    pub readings: Vec<(String, Vec<Reading>)>,
    /// QoS 1 publishes the broker answered with an error reason code (MQTT 5).
    pub refused: u64,
    /// PUBACKs for ids that were not in flight.
    pub bogus_acks: u64,
    /// CPU of the writer and ack-reader threads.
    pub cpu: Duration,
    /// When the broker had acknowledged everything (µs since the epoch).
    pub done_us: u64,
    /// How late each paced message was written (µs after its intended send time): loadgen's
    /// own share of the measured latency. Empty in burst mode.
    pub send_lag: Histogram<u64>,
}

struct Acks {
    ids: IdWindow,
    acked: AtomicU64,
    refused: AtomicU64,
    bogus: AtomicU64,
    pongs: AtomicU64,
    finishing: AtomicBool,
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    writer: Thread,
    reader_cpu_us: AtomicU64,
}

impl Acks {
    fn fail(&self, msg: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(msg);
        self.failed.store(true, Ordering::Release);
        self.writer.unpark();
    }

    fn progress(&self) -> u64 {
        self.acked.load(Ordering::Acquire) + self.pongs.load(Ordering::Acquire)
    }
}

/// Starts the publisher on `conn`; the thread returns its result (or `None` after a failure,
/// which it reports as [`PubEvent::Failed`]).
pub fn spawn(
    conn: Conn,
    cfg: PubConfig,
    shared: Arc<Shared>,
    events: Sender<PubEvent>,
) -> Result<JoinHandle<Option<PubResult>>, WireError> {
    let stream = conn.stream.try_clone()?;
    stream.set_read_timeout(None)?;
    let name = format!("loadgen-pub-{}", cfg.index);
    let h = thread::Builder::new().name(name).spawn(move || {
        let index = cfg.index;
        let mut w = Writer::new(stream, cfg, shared);
        let acks = w.acks.clone();
        let reader = match thread::Builder::new()
            .name(format!("loadgen-ack-{index}"))
            .spawn(move || read_acks(conn, &acks))
        {
            Ok(r) => r,
            Err(e) => {
                let _ = events.send(PubEvent::Failed {
                    conn: index,
                    error: e.to_string(),
                });
                return None;
            }
        };
        let out = w.run(&events);
        w.acks.finishing.store(true, Ordering::Release);
        let _ = w.stream.write_all(&DISCONNECT);
        let _ = w.stream.shutdown(Shutdown::Both);
        let _ = reader.join();
        match out {
            Ok(done_us) => {
                let _ = events.send(PubEvent::Done {
                    conn: index,
                    at_us: done_us,
                });
                let readings = w
                    .cfg
                    .devices
                    .iter_mut()
                    .filter(|_| w.cfg.rules.summaries())
                    .map(|d| (d.topic.topic(None), std::mem::take(&mut d.model.readings)))
                    .collect();
                Some(PubResult {
                    sent: w.sent,
                    malformed: w.malformed,
                    expected: std::mem::take(&mut w.expected),
                    clears: std::mem::take(&mut w.clears),
                    seed_alerts: w.seed_alerts,
                    readings,
                    refused: w.acks.refused.load(Ordering::Acquire),
                    bogus_acks: w.acks.bogus.load(Ordering::Acquire),
                    cpu: thread_cpu()
                        + Duration::from_micros(w.acks.reader_cpu_us.load(Ordering::Acquire)),
                    done_us,
                    send_lag: std::mem::replace(&mut w.send_lag, new_latency_histogram()),
                })
            }
            Err(error) => {
                let _ = events.send(PubEvent::Failed { conn: index, error });
                None
            }
        }
    })?;
    Ok(h)
}

struct Writer {
    stream: TcpStream,
    cfg: PubConfig,
    shared: Arc<Shared>,
    acks: Arc<Acks>,
    ids: IdCursor,
    buf: Vec<u8>,
    expected: BitSet,
    clears: BitSet,
    seed_alerts: u64,
    sent: u64,
    malformed: u64,
    pings: u64,
    last_write: Instant,
    send_lag: Histogram<u64>,
}

impl Writer {
    fn new(stream: TcpStream, cfg: PubConfig, shared: Arc<Shared>) -> Self {
        let acks = Arc::new(Acks {
            ids: IdWindow::default(),
            acked: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bogus: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            finishing: AtomicBool::new(false),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            writer: thread::current(),
            reader_cpu_us: AtomicU64::new(0),
        });
        let buf = Vec::with_capacity(cfg.batch * 320);
        Writer {
            stream,
            cfg,
            shared,
            acks,
            ids: IdCursor::default(),
            buf,
            expected: BitSet::new(),
            clears: BitSet::new(),
            seed_alerts: 0,
            sent: 0,
            malformed: 0,
            pings: 0,
            last_write: Instant::now(),
            send_lag: new_latency_histogram(),
        }
    }

    fn failure(&self) -> Option<String> {
        if !self.acks.failed.load(Ordering::Acquire) {
            return None;
        }
        self.acks
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn write(&mut self, bytes_from_buf: bool, extra: &[u8]) -> Result<(), String> {
        let r = if bytes_from_buf {
            self.stream.write_all(&self.buf)
        } else {
            self.stream.write_all(extra)
        };
        r.map_err(|e| {
            self.failure()
                .unwrap_or_else(|| format!("publisher {}: write failed: {e}", self.cfg.index))
        })?;
        self.last_write = Instant::now();
        Ok(())
    }

    fn ping(&mut self) -> Result<(), String> {
        self.write(false, &PINGREQ)?;
        self.pings += 1;
        Ok(())
    }

    /// Waits until `done(acks)`; fails on a dead connection or no progress for [`ACK_STALL`].
    fn wait(&mut self, what: &str, done: impl Fn(&Acks, u64) -> bool) -> Result<(), String> {
        let mut seen = self.acks.progress();
        let mut since = Instant::now();
        loop {
            if done(&self.acks, self.pings) {
                return Ok(());
            }
            if let Some(f) = self.failure() {
                return Err(f);
            }
            let p = self.acks.progress();
            if p != seen {
                (seen, since) = (p, Instant::now());
            } else if since.elapsed() > ACK_STALL {
                return Err(format!(
                    "publisher {}: no {what} from the broker for {ACK_STALL:?}",
                    self.cfg.index
                ));
            }
            if self.last_write.elapsed() > IDLE_PING {
                self.ping()?;
            }
            thread::park_timeout(Duration::from_millis(10));
        }
    }

    /// Waits until the broker has everything: all PUBACKs (QoS 1) or a PING round trip (QoS 0).
    fn sync_with_broker(&mut self) -> Result<(), String> {
        if self.cfg.fmt.qos > 0 {
            self.wait("PUBACK", |a, _| a.ids.inflight() == 0)
        } else {
            self.ping()?;
            self.wait("PINGRESP", |a, pings| {
                a.pongs.load(Ordering::Acquire) >= pings
            })
        }
    }

    /// The twin pause: report, then wait for the controller to resume. Returns the shift.
    fn pause(&mut self, events: &Sender<PubEvent>) -> Result<u64, String> {
        self.sync_with_broker()?;
        let _ = events.send(PubEvent::Paused {
            conn: self.cfg.index,
            at_us: self.shared.clock.now_us(),
        });
        let shared = self.shared.clone();
        let mut resumed = shared.resumed.lock().unwrap_or_else(|e| e.into_inner());
        while !*resumed {
            resumed = shared
                .resume_cv
                .wait_timeout(resumed, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if self.last_write.elapsed() > IDLE_PING {
                self.ping()?;
            }
            if let Some(f) = self.failure() {
                return Err(f);
            }
        }
        Ok(self.shared.shift_us.load(Ordering::Acquire))
    }

    /// Sends this connection's share of the run; returns when the broker has acknowledged all.
    fn run(&mut self, events: &Sender<PubEvent>) -> Result<u64, String> {
        let shared = self.shared.clone();
        let sched = shared.schedule;
        let clock = shared.clock;
        let t0 = shared.t0;
        let mut seqs = ConnSeqs::new(self.cfg.device_ids.clone(), self.cfg.total_devices);
        let mut shift = 0u64;
        let mut paused = sched.pause.is_none();
        let qos1 = self.cfg.fmt.qos > 0;
        let window = self.cfg.window;
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = clock.now_us();
            let elapsed = now.saturating_sub(t0 + shift);
            let (seq, _) = seqs.peek();
            if sched.is_over(seq, elapsed) {
                break;
            }
            if !paused && sched.is_past_pause(seq, elapsed) {
                shift = self.pause(events)?;
                paused = true;
                continue;
            }
            if let Some(due) = sched.intended_us(seq, t0, shift) {
                if due > now {
                    let wait = Duration::from_micros(due - now).max(self.cfg.tick);
                    thread::sleep(wait.min(Duration::from_millis(50)));
                    if self.last_write.elapsed() > IDLE_PING {
                        self.ping()?;
                    }
                    continue;
                }
            }
            if qos1 && self.acks.ids.inflight() >= window {
                self.wait("PUBACK", |a, _| a.ids.inflight() < window)?;
                continue;
            }
            // Encode every due message, up to a batch.
            self.buf.clear();
            let threshold = if paused && sched.pause.is_some() {
                self.cfg.twin_threshold.unwrap_or(self.cfg.threshold)
            } else {
                self.cfg.threshold
            };
            let mut n = 0u64;
            let mut new_expected = 0u64;
            let mut last_seq = seq;
            while n < self.cfg.batch as u64 {
                let (seq, di) = seqs.peek();
                let intended = match sched.intended_us(seq, t0, shift) {
                    Some(due) if due > now => break,
                    Some(due) => {
                        self.send_lag.saturating_record((now - due).max(1));
                        due
                    }
                    None => now,
                };
                if n > 0
                    && (sched.is_over(seq, elapsed)
                        || (!paused && sched.is_past_pause(seq, elapsed))
                        || (qos1 && self.acks.ids.inflight() >= window))
                {
                    break;
                }
                let dev = &mut self.cfg.devices[di];
                let threshold = dev.threshold.unwrap_or(threshold);
                let r = dev.reading(self.cfg.temp, self.cfg.seed, seq, threshold);
                let broken = is_malformed(self.cfg.seed, seq, self.cfg.malformed);
                if broken {
                    self.malformed += 1;
                } else {
                    let t = r.machine_temperature;
                    let rearm_at = threshold - self.cfg.rules.hysteresis;
                    let (above, rearm) = match self.cfg.condition.as_deref() {
                        None => (t > threshold, t <= rearm_at),
                        Some(c) => {
                            let m = Message {
                                reading: &r,
                                seq: Some(seq),
                                sent_us: intended,
                            };
                            (c.holds(&m, threshold), !c.holds(&m, rearm_at))
                        }
                    };
                    self.seed_alerts += u64::from(above);
                    // The reading's time is when it is written, `now`, not when it was due:
                    // a publisher running late would otherwise stamp readings older than their
                    // arrival, and past the filter's allowed lateness they are rightly late
                    // (in no summary) while the model counted them in.
                    let p = dev.model.reading(&self.cfg.rules, t, above, rearm, now);
                    if p.alert {
                        self.expected.insert(seq);
                        new_expected += 1;
                    }
                    if p.clear {
                        self.clears.insert(seq);
                    }
                }
                let pkid = if qos1 {
                    self.ids.next(&self.acks.ids)
                } else {
                    0
                };
                let dev = &self.cfg.devices[di];
                encode_publish_with(
                    &mut self.buf,
                    self.cfg.fmt,
                    false,
                    |o| dev.topic.write(o, Some(seq)),
                    pkid,
                    |o| {
                        write_message_body(o, &r, seq, &dev.name, now, intended);
                        if broken {
                            o.pop(); // the closing brace: not JSON any more
                        }
                    },
                );
                last_seq = seq;
                n += 1;
                seqs.advance();
            }
            if n == 0 {
                continue;
            }
            shared.issued.fetch_max(last_seq + 1, Ordering::AcqRel);
            self.write(true, &[])?;
            self.sent += n;
            shared.sent.fetch_add(n, Ordering::Relaxed);
            shared.expected.fetch_add(new_expected, Ordering::Relaxed);
        }
        if !paused && !shared.stop.load(Ordering::Relaxed) {
            // Ran out of messages before the pause point: still take part in the pause.
            self.pause(events)?;
        }
        self.sync_with_broker()?;
        Ok(clock.now_us())
    }
}

/// The ack reader: PUBACKs release ids, PINGRESPs count pongs; wakes the writer per read.
fn read_acks(mut conn: Conn, acks: &Acks) {
    let result = (|| -> Result<(), WireError> {
        loop {
            let got = match conn.read_some()? {
                Some(0) => return Err(WireError::Closed),
                None => continue,
                Some(n) => n,
            };
            let mut n = 0u64;
            while let Some(f) = frame(&conn.buf)? {
                match f.kind() {
                    4 => {
                        let (id, reason) = parse_puback(&conn.buf, &f)?;
                        if acks.ids.release(id) {
                            n += 1;
                            if reason >= 0x80 {
                                acks.refused.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            acks.bogus.fetch_add(1, Ordering::Relaxed);
                        }
                        conn.buf.advance(f.len);
                    }
                    13 => {
                        acks.pongs.fetch_add(1, Ordering::AcqRel);
                        conn.buf.advance(f.len);
                    }
                    _ => {
                        if let Inbound::Disconnect { reason } =
                            decode_control(&mut conn.buf, conn.version)?
                        {
                            return Err(WireError::Malformed(format!(
                                "the broker sent DISCONNECT ({reason})"
                            )));
                        }
                    }
                }
            }
            if n > 0 {
                acks.acked.fetch_add(n, Ordering::AcqRel);
            }
            acks.writer.unpark();
            if got < ACK_COALESCE_BYTES {
                // Let acknowledgements pile up: one read per millisecond instead of a wake-up
                // per PUBACK (the window is far larger than a millisecond of messages).
                thread::sleep(ACK_COALESCE);
            }
        }
    })();
    acks.reader_cpu_us
        .store(thread_cpu().as_micros() as u64, Ordering::Release);
    if let Err(e) = result {
        if !acks.finishing.load(Ordering::Acquire) {
            acks.fail(format!("publisher {}: {e}", conn.client_id));
        }
    }
}
