//! TCP quick ACKs, for the filter's connection and loadgen's: when to acknowledge incoming
//! segments at once ([`QuickAckRate`], pure, `now` passed in) and the socket option that does it
//! ([`quick_ack`], Linux `TCP_QUICKACK` through socket2, no `unsafe`).
//!
//! Brokers write with Nagle's algorithm (mosquitto's default, rumqttd): a small packet waits
//! until the previous one is acknowledged, and when the receiver has nothing to send back its
//! ACK is delayed up to 40 ms. Measured (BENCHMARKS.md): QoS 0 through mosquitto at 5k msg/s
//! p50 22 ms without, 0.14 ms with; the embedded broker at 2k msg/s p50 4.4 ms without,
//! 0.18 ms with. The price is a loop turn per small segment (8-16 µs/msg on the 2-vCPU VM), so
//! a QoS 0 connection quick-ACKs only while its input is below [`QUICK_ACK_BELOW`]; at QoS 1
//! every input's PUBACK carries the ACK and nothing is needed. `TCP_QUICKACK` lapses by
//! itself, so it is renewed after every read.

use std::time::{Duration, Instant};

/// When a connection acknowledges reads at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuickAck {
    /// Never: every input gets a PUBACK (QoS 1) that carries the ACK anyway.
    Never,
    /// After every read (the embedded broker).
    Always,
    /// While the input rate is below [`QUICK_ACK_BELOW`] (QoS 0 input through a broker).
    BelowRate,
}

/// Under this many packets per second a [`QuickAck::BelowRate`] connection acknowledges
/// every read at once.
pub const QUICK_ACK_BELOW: u64 = 25_000;

/// Counts packets per 100 ms window to decide [`QuickAck::BelowRate`].
#[derive(Debug, Clone)]
pub struct QuickAckRate {
    mode: QuickAck,
    window_start: Instant,
    packets: u64,
    /// The last full window was below the rate.
    slow: bool,
}

impl QuickAckRate {
    const WINDOW: Duration = Duration::from_millis(100);

    pub fn new(mode: QuickAck, now: Instant) -> Self {
        QuickAckRate {
            mode,
            window_start: now,
            packets: 0,
            slow: true,
        }
    }

    /// `n` packets were decoded.
    pub fn packets(&mut self, n: u64) {
        self.packets += n;
    }

    /// Whether to quick-ACK the read that just happened.
    pub fn after_read(&mut self, now: Instant) -> bool {
        match self.mode {
            QuickAck::Never => false,
            QuickAck::Always => true,
            QuickAck::BelowRate => {
                let elapsed = now.saturating_duration_since(self.window_start);
                if elapsed >= Self::WINDOW {
                    let per_sec = self.packets * 1_000_000 / (elapsed.as_micros().max(1) as u64);
                    self.slow = per_sec < QUICK_ACK_BELOW;
                    self.window_start = now;
                    self.packets = 0;
                }
                self.slow
            }
        }
    }
}

/// Acknowledges the segments received so far at once (Linux; elsewhere nothing). A failure
/// only means the option is not applied, which costs latency, not correctness.
pub fn quick_ack<S: std::os::fd::AsFd>(socket: &S) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(socket).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_acks_follow_the_input_rate() {
        let t0 = Instant::now();
        let mut p = QuickAckRate::new(QuickAck::BelowRate, t0);
        assert!(p.after_read(t0), "a new connection starts quick");
        // 100 ms with 3000 packets = 30k/s: above the bound, ACKs are left to TCP.
        p.packets(3000);
        assert!(!p.after_read(t0 + Duration::from_millis(100)));
        // Decided per window: still slow=false inside the next window.
        p.packets(10);
        assert!(!p.after_read(t0 + Duration::from_millis(150)));
        // The next window saw 10 packets: back to quick ACKs.
        assert!(p.after_read(t0 + Duration::from_millis(200)));
        assert!(QuickAckRate::new(QuickAck::Always, t0).after_read(t0));
        assert!(!QuickAckRate::new(QuickAck::Never, t0).after_read(t0));
    }

    #[test]
    fn the_option_is_set_on_a_live_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        quick_ack(&client);
        #[cfg(target_os = "linux")]
        assert!(socket2::SockRef::from(&client).tcp_quickack().unwrap());
    }
}
