//! Tooling, the output side of loadgen: the alert subscriber (MQTT out, from the filter's
//! point of view). One connection subscribed to `--alert-filter` (and, with the filter's
//! rules, to where clearing messages and summaries arrive); each read is framed in place, each
//! PUBLISH is classified ([`classify`]) and its payload goes to [`Accounting::on_alert`]
//! (alerts, clears) or [`Summaries::on_summary`], stamped with the read's time. After the
//! publishers finish, the controller hands over the expected sets and the sink drains: it
//! stops when everything expected has arrived or nothing came for the drain timeout. With
//! `--target azure` it also checks each alert's topic properties ([`PropertyCheck`]).

use crate::account::{Accounting, AlertKind, BitSet};
use crate::clock::{thread_cpu, Clock};
use crate::message::PROBE_DEVICE;
use crate::publisher::IDLE_PING;
use crate::summaries::{classify, Kind, Summaries};
use crate::target::PropertyCheck;
use crate::wire::{
    decode_control, frame, parse_publish, puback_packet, subscribe_packet, Conn, Inbound,
    WireError, DISCONNECT, PINGREQ,
};
use bytes::Buf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Progress the sink publishes for the controller.
#[derive(Default)]
pub struct SinkProgress {
    pub received: AtomicU64,
    pub probe_seen: AtomicBool,
}

/// Start draining: everything sent is acknowledged by the broker.
pub struct Drain {
    pub expected: BitSet,
    /// Sequence numbers whose clearing message is expected.
    pub expected_clears: BitSet,
    /// Per device (input topic): how many readings its summaries must cover.
    pub summarised: Vec<(String, u64)>,
    pub timeout: Duration,
}

/// What the sink still waits for.
struct Waiting {
    drain: Drain,
    missing: u64,
    missing_clears: u64,
    start_us: u64,
}

impl Waiting {
    fn done(&self, summaries: &Summaries) -> bool {
        self.missing == 0
            && self.missing_clears == 0
            && self
                .drain
                .summarised
                .iter()
                .all(|(device, n)| summaries.covered(device) >= *n)
    }
}

pub struct SinkResult {
    pub acct: Accounting,
    /// Clearing messages, counted like alerts.
    pub clears: Accounting,
    pub summaries: Summaries,
    /// The drain ended on the idle timeout (some expected alerts never came).
    pub timed_out: bool,
    /// Alerts of this run's messages (first copies and duplicates) whose topic failed the
    /// [`PropertyCheck`].
    pub bad_properties: u64,
    /// The topic of the first of them, for diagnosis.
    pub first_bad_topic: Option<String>,
    pub cpu: Duration,
}

/// Subscribes `conn` to `filter` at `qos` and waits for the SUBACK.
pub fn subscribe(
    conn: &mut Conn,
    filter: &str,
    qos: u8,
    timeout: Duration,
) -> Result<(), WireError> {
    conn.send(&subscribe_packet(&[filter], qos, 1, conn.version))?;
    let deadline = Instant::now() + timeout;
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(50)))?;
    loop {
        while let Some(f) = frame(&conn.buf)? {
            if f.kind() == 9 {
                return match decode_control(&mut conn.buf, conn.version)? {
                    Inbound::SubAck { granted, .. } if granted.iter().all(Option::is_some) => {
                        Ok(())
                    }
                    _ => Err(WireError::SubscribeRefused {
                        filter: filter.to_string(),
                    }),
                };
            }
            // Nothing else can precede the SUBACK; skip defensively.
            conn.buf.advance(f.len);
        }
        if Instant::now() > deadline {
            return Err(WireError::Timeout(timeout, "SUBACK"));
        }
        if conn.read_some()? == Some(0) {
            return Err(WireError::Closed);
        }
    }
}

/// Whether reads should be coalesced: more than one alert per `tick` arrived on average over
/// the last window. Under load the sink then lets alerts pile up in the socket for one tick
/// after a short read, so one read takes many messages — a wake-up and context switch saved
/// per message, for the sink and for the broker writing to it. Receive times (and so
/// latencies) are read per chunk, so the tick bounds their error; slow streams are read as
/// they come.
pub fn should_coalesce(alerts: u64, window_us: u64, tick_us: u64) -> bool {
    tick_us > 0 && alerts.saturating_mul(tick_us) > window_us
}

/// A read at least this large is not followed by a coalescing pause (the socket has more).
const COALESCE_BYTES: usize = 256 << 10;

/// How the sink reads.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// QoS of the subscription (1: every QoS 1 alert is acknowledged).
    pub qos: u8,
    pub clock: Clock,
    /// Read coalescing under load, see [`should_coalesce`].
    pub tick: Duration,
    /// What each alert's topic must show (`--target azure`).
    pub check: Option<PropertyCheck>,
    /// Clearing messages arrive on this subscription (else on the alert one, marked by the
    /// MQTT 5 `MessageType` property).
    pub clear_filter: Option<String>,
    /// Summaries arrive on this subscription.
    pub summary_filter: Option<String>,
}

/// Runs the sink on an already subscribed connection.
pub fn spawn(
    mut conn: Conn,
    opts: SinkOptions,
    progress: Arc<SinkProgress>,
    issued: Arc<AtomicU64>,
    run_start: Arc<AtomicU64>,
    drain_rx: Receiver<Drain>,
) -> std::io::Result<JoinHandle<Result<SinkResult, WireError>>> {
    thread::Builder::new()
        .name("loadgen-sink".into())
        .spawn(move || {
            let SinkOptions {
                qos,
                clock,
                tick,
                check,
                clear_filter,
                summary_filter,
            } = opts;
            let mut clears = Accounting::new();
            let mut summaries = Summaries::default();
            let (mut bad_properties, mut first_bad_topic) = (0u64, None);
            conn.stream
                .set_read_timeout(Some(Duration::from_millis(20)))?;
            let mut acct = Accounting::new();
            let mut acks = Vec::new();
            let mut last_write = Instant::now();
            let mut drain: Option<Waiting> = None;
            let v5 = conn.version.is_v5();
            let tick_us = tick.as_micros() as u64;
            // Alert rate over the last 10 ms window decides whether reads are coalesced.
            let (mut window_start, mut window_count, mut coalesce) = (clock.now_us(), 0u64, false);
            let timed_out = loop {
                let got = match conn.read_some()? {
                    Some(0) => return Err(WireError::Closed),
                    Some(n) => n,
                    None => 0,
                };
                if tick_us > 0 {
                    conn.quick_ack();
                }
                let now = clock.now_us();
                let before = acct.received + acct.probes;
                let issued = issued.load(Ordering::Acquire);
                let run_start = run_start.load(Ordering::Acquire);
                while let Some(f) = frame(&conn.buf)? {
                    match f.kind() {
                        3 => {
                            let p = parse_publish(&conn.buf, &f, v5)?;
                            if qos > 0 && p.qos > 0 {
                                acks.extend_from_slice(&puback_packet(p.pkid));
                            }
                            match classify(
                                p.topic,
                                p.properties,
                                clear_filter.as_deref(),
                                summary_filter.as_deref(),
                            ) {
                                Kind::Alert => {}
                                Kind::Clear => {
                                    let (kind, seq) =
                                        clears.on_alert(p.payload, now, issued, run_start);
                                    if let Some(w) = &mut drain {
                                        if kind == AlertKind::First
                                            && w.drain.expected_clears.contains(seq)
                                        {
                                            w.missing_clears -= 1;
                                        }
                                    }
                                    conn.buf.advance(f.len);
                                    continue;
                                }
                                Kind::Summary => {
                                    summaries
                                        .on_summary(p.payload, now, |d| d.ends_with(PROBE_DEVICE));
                                    conn.buf.advance(f.len);
                                    continue;
                                }
                            }
                            let (kind, seq) = acct.on_alert(p.payload, now, issued, run_start);
                            if let Some(check) = &check {
                                if matches!(kind, AlertKind::First | AlertKind::Duplicate)
                                    && !check.ok(p.topic, seq)
                                {
                                    bad_properties += 1;
                                    first_bad_topic.get_or_insert_with(|| {
                                        String::from_utf8_lossy(p.topic).into_owned()
                                    });
                                }
                            }
                            if kind == AlertKind::First {
                                if let Some(w) = &mut drain {
                                    if w.drain.expected.contains(seq) {
                                        w.missing -= 1;
                                    }
                                }
                            }
                            conn.buf.advance(f.len);
                        }
                        13 => conn.buf.advance(f.len),
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
                window_count += acct.received + acct.probes - before;
                if now - window_start >= 10_000 {
                    coalesce = should_coalesce(window_count, now - window_start, tick_us);
                    (window_start, window_count) = (now, 0);
                }
                if !acks.is_empty() {
                    conn.send(&acks)?;
                    acks.clear();
                    last_write = Instant::now();
                }
                if last_write.elapsed() > IDLE_PING {
                    conn.send(&PINGREQ)?;
                    last_write = Instant::now();
                }
                progress.received.store(acct.received, Ordering::Relaxed);
                if acct.probes > 0 {
                    progress.probe_seen.store(true, Ordering::Release);
                }
                if drain.is_none() {
                    if let Ok(d) = drain_rx.try_recv() {
                        let missing = d.expected.count() - d.expected.count_and(&acct.seen);
                        let missing_clears =
                            d.expected_clears.count() - d.expected_clears.count_and(&clears.seen);
                        drain = Some(Waiting {
                            drain: d,
                            missing,
                            missing_clears,
                            start_us: now,
                        });
                    }
                }
                if let Some(w) = &drain {
                    if w.done(&summaries) {
                        break false;
                    }
                    let last = [acct.last_alert_us, clears.last_alert_us, summaries.last_us]
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or(0);
                    let quiet_since = last.max(w.start_us);
                    if now.saturating_sub(quiet_since) >= w.drain.timeout.as_micros() as u64 {
                        break true;
                    }
                }
                if coalesce && got > 0 && got < COALESCE_BYTES {
                    thread::sleep(tick);
                }
            };
            let _ = conn.send(&DISCONNECT);
            Ok(SinkResult {
                acct,
                clears,
                summaries,
                timed_out,
                bad_properties,
                first_bad_topic,
                cpu: thread_cpu(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::should_coalesce;

    #[test]
    fn coalesces_only_above_one_alert_per_tick() {
        // 10 ms window, 250 µs tick: 40 alerts is one per tick.
        assert!(!should_coalesce(40, 10_000, 250));
        assert!(should_coalesce(41, 10_000, 250));
        assert!(!should_coalesce(0, 10_000, 250));
        assert!(!should_coalesce(1_000_000, 10_000, 0), "tick 0 disables");
    }
}
