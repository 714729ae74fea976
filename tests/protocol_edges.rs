//! Protocol edges a real broker rarely shows on demand, played by a scripted broker on an
//! ephemeral port: the edgefilter binary connects to it, and the script decides exactly which
//! bytes arrive in which TCP segment. (It stands in for a broker only where mosquitto cannot
//! be made to do the thing under test; everything else is tested against mosquitto.)
//!
//! Set `EDGEFILTER_BIN` to run these against another build (e.g. an older commit's, to see a
//! regression test fail before its fix).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{self, Packet};
use rumqttc::mqttbytes::QoS;

fn binary() -> String {
    std::env::var("EDGEFILTER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_edgefilter").into())
}

struct Filter(Child);

impl Drop for Filter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_filter(port: u16, extra: &[&str]) -> Filter {
    let child = Command::new(binary())
        .args(["run", "--broker", &format!("mqtt://127.0.0.1:{port}")])
        .args([
            "--mqtt-version",
            "3",
            "--metrics-addr",
            "off",
            "--stats-interval",
            "0",
        ])
        .args(extra)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Filter(child)
}

/// Reads the next packet the client sent, within `deadline`.
fn next_packet(s: &mut TcpStream, buf: &mut BytesMut, deadline: Instant) -> Option<Packet> {
    loop {
        match Packet::read(buf, 1 << 20) {
            Ok(p) => return Some(p),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => panic!("malformed packet from edgefilter: {e}"),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Issue 8 item 8: bytes that arrive in the same segment as the last SUBACK must be decoded at
/// once, not when the next segment happens to arrive (with nothing else to read, that was the
/// next keep-alive exchange: a minute here).
#[test]
fn a_publish_in_the_segment_of_the_last_suback_is_handled_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // One connection: this broker plays the input connection only.
    let _filter = start_filter(
        port,
        &[
            "--qos",
            "0",
            "--keep-alive",
            "60s",
            "--publisher-connection",
            "shared",
        ],
    );
    listener.set_nonblocking(false).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut buf = BytesMut::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let Some(Packet::Connect(..)) = next_packet(&mut s, &mut buf, deadline) else {
        panic!("no CONNECT");
    };
    let mut out = BytesMut::new();
    v4::ConnAck::new(v4::ConnectReturnCode::Success, false)
        .write(&mut out)
        .unwrap();
    s.write_all(&out).unwrap();
    // Collect the SUBSCRIBEs, then answer both and deliver a telemetry message in one write.
    let mut subscribes = Vec::new();
    while subscribes.len() < 2 {
        match next_packet(&mut s, &mut buf, deadline) {
            Some(Packet::Subscribe(sub)) => subscribes.push(sub),
            Some(_) => {}
            None => panic!("edgefilter did not subscribe"),
        }
    }
    let mut out = BytesMut::new();
    for sub in &subscribes {
        let codes = sub
            .filters
            .iter()
            .map(|_| v4::SubscribeReasonCode::Success(QoS::AtLeastOnce))
            .collect();
        v4::SubAck::new(sub.pkid, codes).write(&mut out).unwrap();
    }
    v4::Publish::new(
        "telemetry/dev-1",
        QoS::AtMostOnce,
        br#"{"machine":{"temperature":99}}"#.to_vec(),
    )
    .write(&mut out)
    .unwrap();
    s.write_all(&out).unwrap();
    let sent = Instant::now();
    let within = Duration::from_secs(5);
    while let Some(p) = next_packet(&mut s, &mut buf, sent + within) {
        if let Packet::Publish(p) = p {
            if p.topic == "alerts/telemetry/dev-1" {
                assert_eq!(&p.payload[..], br#"{"machine":{"temperature":99}}"#);
                return;
            }
        }
    }
    panic!("no alert within {within:?}: the publish after the SUBACKs was left undecoded");
}
