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

/// Bytes that arrive in the same segment as the last SUBACK must be decoded at
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

/// Accepts the next connection and answers its CONNECT; returns the socket, what it read past
/// the CONNECT, and the client id.
fn accept_client(listener: &TcpListener, deadline: Instant) -> (TcpStream, BytesMut, String) {
    listener.set_nonblocking(true).unwrap();
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("no connection: {e}"),
        }
    };
    s.set_nonblocking(false).unwrap();
    let mut buf = BytesMut::new();
    let Some(Packet::Connect(c)) = next_packet(&mut s, &mut buf, deadline) else {
        panic!("no CONNECT");
    };
    let mut out = BytesMut::new();
    v4::ConnAck::new(v4::ConnectReturnCode::Success, false)
        .write(&mut out)
        .unwrap();
    s.write_all(&out).unwrap();
    (s, buf, c.client_id)
}

/// When one of the filter's two connections fails, the other is closed on purpose before both
/// are opened again: DISCONNECT, then nothing more until the broker closed that socket — a
/// broker that has not finished reading it must not see the same client id connect again (it
/// would take the session over and drop what it had not read). Here the broker keeps the input
/// socket open 300 ms after the filter's DISCONNECT and end of stream.
#[test]
fn when_the_publisher_connection_fails_the_input_one_closes_cleanly_before_reconnecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _filter = start_filter(port, &["--client-id", "ef", "--keep-alive", "60s"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (publisher, _, id) = accept_client(&listener, deadline);
    assert_eq!(id, "ef-out", "the publisher connection comes first");
    let (mut input, mut buf, id) = accept_client(&listener, deadline);
    assert_eq!(id, "ef");
    let mut subscribes = 0;
    while subscribes < 2 {
        match next_packet(&mut input, &mut buf, deadline) {
            Some(Packet::Subscribe(sub)) => {
                let codes = sub
                    .filters
                    .iter()
                    .map(|_| v4::SubscribeReasonCode::Success(QoS::AtLeastOnce))
                    .collect();
                let mut out = BytesMut::new();
                v4::SubAck::new(sub.pkid, codes).write(&mut out).unwrap();
                input.write_all(&out).unwrap();
                subscribes += 1;
            }
            Some(_) => {}
            None => panic!("edgefilter did not subscribe"),
        }
    }
    drop(publisher); // the publisher connection fails
    let mut said_goodbye = false;
    loop {
        match next_packet(&mut input, &mut buf, deadline) {
            Some(Packet::Disconnect) => said_goodbye = true,
            Some(_) => {}
            None => break, // end of stream (or the deadline)
        }
    }
    assert!(said_goodbye, "DISCONNECT on the input connection");
    // Nobody connects while the old input socket is still open.
    listener.set_nonblocking(true).unwrap();
    let open_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < open_until {
        if let Ok((_, from)) = listener.accept() {
            panic!("{from} connected again before the broker closed the old input socket");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (_publisher, _, id) = accept_client(&listener, deadline);
    assert_eq!(id, "ef-out");
    let (_input, _, id) = accept_client(&listener, deadline);
    assert_eq!(id, "ef");
}
