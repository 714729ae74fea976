//! Tooling, io: loadgen's MQTT connections, on rumqttc's packet codec over blocking std
//! sockets. rumqttc encodes and decodes the session packets (CONNECT/CONNACK,
//! SUBSCRIBE/SUBACK, DISCONNECT, the twin's retained PUBLISH); the two hot packets get
//! zero-copy readers here — [`parse_publish`] borrows topic and payload from the read buffer
//! (rumqttc's v4 reader allocates a `String` per topic) and [`parse_puback`] reads a packet
//! id — both tested against frames written by rumqttc.

use bytes::{Buf, Bytes, BytesMut};
/// The one MQTT version type of the workspace (the codec's).
pub use edgefilter_mqtt::codec::Version;
use edgefilter_mqtt::codec::{self, CodecError, ConnectOptions, Encoder, OutPublish};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Largest packet loadgen accepts from the broker.
pub const MAX_PACKET: usize = 1 << 20;

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// A DISCONNECT with no reason code: valid for 3.1.1 and (normal disconnection) for 5.
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

#[derive(Debug, Error)]
pub enum WireError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("the broker refused the connection of {client_id}: {reason}")]
    Refused { client_id: String, reason: String },
    #[error("the broker refused the subscription to {filter:?}")]
    SubscribeRefused { filter: String },
    #[error("malformed packet from the broker: {0}")]
    Malformed(String),
    #[error("the broker closed the connection")]
    Closed,
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<CodecError> for WireError {
    fn from(e: CodecError) -> Self {
        WireError::Malformed(e.to_string())
    }
}

/// The fixed header of one complete packet at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub byte1: u8,
    /// Fixed header length (type byte + remaining-length bytes).
    pub header_len: usize,
    /// Whole packet length.
    pub len: usize,
}

impl Frame {
    pub fn kind(&self) -> u8 {
        self.byte1 >> 4
    }
}

/// The packet at the start of `buf`, if it is complete.
#[inline]
pub fn frame(buf: &[u8]) -> Result<Option<Frame>, WireError> {
    let mut rem = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        rem |= usize::from(b & 0x7F) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(WireError::Malformed("remaining length over 4 bytes".into()));
        }
    }
    if rem > MAX_PACKET {
        return Err(WireError::Malformed(format!("packet of {rem} bytes")));
    }
    let len = i + rem;
    Ok((buf.len() >= len).then_some(Frame {
        byte1: buf[0],
        header_len: i,
        len,
    }))
}

/// A PUBLISH, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishView<'a> {
    pub qos: u8,
    pub retain: bool,
    pub pkid: u16,
    pub topic: &'a [u8],
    pub payload: &'a [u8],
    /// MQTT 5: the raw properties (empty with 3.1.1).
    pub properties: &'a [u8],
}

/// Reads the PUBLISH framed by `f` at the start of `buf`.
#[inline]
pub fn parse_publish<'a>(buf: &'a [u8], f: &Frame, v5: bool) -> Result<PublishView<'a>, WireError> {
    let bad = || WireError::Malformed("truncated PUBLISH".into());
    let p = &buf[f.header_len..f.len];
    let qos = (f.byte1 >> 1) & 3;
    if qos == 3 {
        return Err(WireError::Malformed("PUBLISH with QoS 3".into()));
    }
    let tlen = usize::from(u16::from_be_bytes([
        *p.first().ok_or_else(bad)?,
        *p.get(1).ok_or_else(bad)?,
    ]));
    let mut at = 2 + tlen;
    let topic = p.get(2..at).ok_or_else(bad)?;
    let mut pkid = 0;
    if qos > 0 {
        let b = p.get(at..at + 2).ok_or_else(bad)?;
        pkid = u16::from_be_bytes([b[0], b[1]]);
        at += 2;
    }
    let mut props = 0..0;
    if v5 {
        // Property length (variable byte integer), then the properties.
        let mut plen = 0usize;
        let mut shift = 0;
        loop {
            let b = *p.get(at).ok_or_else(bad)?;
            at += 1;
            plen |= usize::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return Err(bad());
            }
        }
        props = at..at + plen;
        at += plen;
    }
    let payload = p.get(at..).ok_or_else(bad)?;
    let properties = p.get(props).ok_or_else(bad)?;
    Ok(PublishView {
        qos,
        retain: f.byte1 & 1 != 0,
        pkid,
        topic,
        payload,
        properties,
    })
}

/// Reads the PUBACK framed by `f`: packet id and reason code (0 = success; 3.1.1 has none).
#[inline]
pub fn parse_puback(buf: &[u8], f: &Frame) -> Result<(u16, u8), WireError> {
    let p = &buf[f.header_len..f.len];
    match p {
        [a, b] => Ok((u16::from_be_bytes([*a, *b]), 0)),
        [a, b, r, ..] => Ok((u16::from_be_bytes([*a, *b]), *r)),
        _ => Err(WireError::Malformed("short PUBACK".into())),
    }
}

/// Encodes the CONNECT of a clean session.
pub fn connect_packet(client_id: &str, keep_alive: u16, version: Version) -> Vec<u8> {
    let options = ConnectOptions {
        client_id: client_id.to_string(),
        keep_alive_secs: keep_alive,
        clean: true,
        session_expiry_secs: 0,
        receive_maximum: u16::MAX,
        maximum_packet_size: MAX_PACKET as u32,
        username: None,
        password: None,
    };
    let mut out = BytesMut::new();
    Encoder::connect(version, &mut out, &options)
        .expect("a CONNECT with a short client id always encodes");
    out.to_vec()
}

/// Encodes a SUBSCRIBE to `filters`, all at `qos`.
pub fn subscribe_packet(filters: &[&str], qos: u8, pkid: u16, version: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    Encoder::subscribe(version, &mut out, pkid, filters, qos, false)
        .expect("a SUBSCRIBE to valid filters always encodes");
    out.to_vec()
}

/// Encodes a PUBLISH with an owned payload (twin patches, probes: rare packets).
pub fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    pkid: u16,
    version: Version,
) -> Vec<u8> {
    let mut p = OutPublish::new(
        version,
        &Bytes::copy_from_slice(topic.as_bytes()),
        Bytes::copy_from_slice(payload),
        qos,
        retain,
        None,
    );
    p.set_pkid(pkid);
    let mut out = BytesMut::new();
    p.write(&mut out)
        .expect("a PUBLISH with a packet id when QoS > 0 always encodes");
    out.to_vec()
}

/// Encodes a PUBACK (success, no properties: the same bytes in 3.1.1 and 5).
#[inline]
pub fn puback_packet(pkid: u16) -> [u8; 4] {
    let [a, b] = pkid.to_be_bytes();
    [0x40, 0x02, a, b]
}

/// Decodes (and removes) the session packet framed at the start of `buf`.
pub fn decode_control(buf: &mut BytesMut, version: Version) -> Result<Inbound, WireError> {
    codec::decode(version, buf, MAX_PACKET)?
        .ok_or_else(|| WireError::Malformed("truncated packet".into()))
}

/// One blocking MQTT connection: the socket and what has been read but not yet consumed.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: Version,
    pub client_id: String,
    scratch: Vec<u8>,
}

pub use edgefilter_mqtt::codec::Inbound;

/// Keep-alive announced in every CONNECT (some brokers, rumqttd among them, refuse 0);
/// loadgen sends a PINGREQ on any connection idle for a third of it.
pub const KEEP_ALIVE_S: u16 = 60;

impl Conn {
    /// Connects, sends CONNECT (clean session) and waits for a successful CONNACK.
    pub fn open(
        addr: &str,
        client_id: &str,
        version: Version,
        timeout: Duration,
        read_chunk: usize,
    ) -> Result<Conn, WireError> {
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|_| WireError::Resolve(addr.to_string()))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| WireError::Connect {
            addr: addr.to_string(),
            source: last,
        })?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(read_chunk * 2),
            version,
            client_id: client_id.to_string(),
            scratch: vec![0; read_chunk],
        };
        conn.send(&connect_packet(client_id, KEEP_ALIVE_S, version))?;
        let deadline = Instant::now() + timeout;
        match conn.next_control(deadline, "CONNACK")? {
            Inbound::ConnAck(info) if info.code == 0 => Ok(conn),
            Inbound::ConnAck(info) => Err(WireError::Refused {
                client_id: client_id.to_string(),
                reason: info.reason,
            }),
            other => Err(WireError::Malformed(format!(
                "expected CONNACK, got {other:?}"
            ))),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads what the socket has into the buffer. `Ok(None)` on read timeout, `Ok(Some(0))`
    /// when the broker closed the connection.
    pub fn read_some(&mut self) -> io::Result<Option<usize>> {
        match self.stream.read(&mut self.scratch) {
            Ok(n) => {
                self.buf.extend_from_slice(&self.scratch[..n]);
                Ok(Some(n))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Asks the kernel to acknowledge incoming segments at once instead of delaying the ACK
    /// (Linux `TCP_QUICKACK`, which lapses by itself, so it is renewed after every read).
    /// A reader that pauses between reads (the sink's tick) would otherwise hold back its
    /// ACKs, and a broker writing with Nagle's algorithm (mosquitto's default) then holds
    /// back its next small packets until the delayed-ACK timer fires — up to 40 ms of latency
    /// that would be loadgen's own doing.
    pub fn quick_ack(&self) {
        edgefilter_mqtt::tcp::quick_ack(&self.stream);
    }

    /// Reads until a session packet arrives (PUBLISHes before it are an error here: only used
    /// during the handshake, before any subscription).
    fn next_control(
        &mut self,
        deadline: Instant,
        what: &'static str,
    ) -> Result<Inbound, WireError> {
        loop {
            if let Some(f) = frame(&self.buf)? {
                if f.kind() == 3 || f.kind() == 4 {
                    self.buf.advance(f.len);
                    continue;
                }
                return decode_control(&mut self.buf, self.version);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WireError::Timeout(Duration::ZERO, what));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.read_some()? {
                Some(0) => return Err(WireError::Closed),
                Some(_) => {}
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::{self as mqb5, v5 as mq5};

    #[test]
    fn frames_complete_packets_only() {
        assert_eq!(frame(&[]).unwrap(), None);
        assert_eq!(frame(&[0x40]).unwrap(), None);
        assert_eq!(frame(&[0x40, 2, 0]).unwrap(), None);
        assert_eq!(
            frame(&[0x40, 2, 0, 1, 0xff]).unwrap(),
            Some(Frame {
                byte1: 0x40,
                header_len: 2,
                len: 4
            })
        );
        // 200-byte remaining length: two length bytes.
        let mut big = vec![0x30, 0xC8, 0x01];
        big.resize(3 + 200, 0);
        assert_eq!(frame(&big).unwrap().unwrap().len, 203);
        assert_eq!(frame(&big[..202]).unwrap(), None);
        assert!(frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0x7f]).is_err(),
            "over MAX_PACKET"
        );
    }

    #[test]
    fn reads_publishes_written_by_rumqttc() {
        for (version, qos, pkid) in [
            (Version::V4, 0, 0),
            (Version::V4, 1, 513),
            (Version::V5, 0, 0),
            (Version::V5, 1, 9),
        ] {
            let pkt = publish_packet(
                "alerts/telemetry/dev-1",
                b"{\"seq\":1}",
                qos,
                qos == 1,
                pkid,
                version,
            );
            let f = frame(&pkt).unwrap().unwrap();
            assert_eq!((f.kind(), f.len), (3, pkt.len()));
            let p = parse_publish(&pkt, &f, version.is_v5()).unwrap();
            assert_eq!(
                p,
                PublishView {
                    qos,
                    retain: qos == 1,
                    pkid,
                    topic: b"alerts/telemetry/dev-1",
                    payload: b"{\"seq\":1}",
                    properties: b"",
                }
            );
        }
        // A v5 PUBLISH with properties (user property MessageType=Alert): the payload after them,
        // the properties apart.
        let mut p = mq5::Publish::new("a", mqb5::QoS::AtLeastOnce, &b"body"[..], None);
        p.pkid = 3;
        p.properties = Some(mq5::PublishProperties {
            user_properties: vec![("MessageType".into(), "Alert".into())],
            content_type: Some("application/json".into()),
            ..Default::default()
        });
        let mut out = BytesMut::new();
        p.write(&mut out).unwrap();
        let f = frame(&out).unwrap().unwrap();
        let v = parse_publish(&out, &f, true).unwrap();
        assert_eq!((v.topic, v.payload, v.pkid), (&b"a"[..], &b"body"[..], 3));
        assert_eq!(
            crate::summaries::message_type(v.properties),
            Some(&b"Alert"[..])
        );
    }

    #[test]
    fn rejects_truncated_publishes() {
        // Topic length 10 but only 2 bytes follow.
        let pkt = [0x30, 4, 0, 10, b'a', b'b'];
        let f = frame(&pkt).unwrap().unwrap();
        assert!(parse_publish(&pkt, &f, false).is_err());
        let pkt = [0x32, 3, 0, 0, 1];
        let f = frame(&pkt).unwrap().unwrap();
        assert!(parse_publish(&pkt, &f, false).is_err(), "missing pkid byte");
        assert!(parse_publish(&[0x36, 0], &frame(&[0x36, 0]).unwrap().unwrap(), false).is_err());
    }

    #[test]
    fn reads_pubacks() {
        let mut v4 = BytesMut::new();
        rumqttc::PubAck::new(700).write(&mut v4).unwrap();
        let f = frame(&v4).unwrap().unwrap();
        assert_eq!(parse_puback(&v4, &f).unwrap(), (700, 0));
        assert_eq!(&v4[..], &puback_packet(700));
        let mut v5 = BytesMut::new();
        let mut a = mq5::PubAck::new(9, None);
        a.reason = mq5::PubAckReason::NoMatchingSubscribers;
        a.write(&mut v5).unwrap();
        let f = frame(&v5).unwrap().unwrap();
        assert_eq!(parse_puback(&v5, &f).unwrap(), (9, 0x10));
    }

    #[test]
    fn session_packets_round_trip_through_rumqttc() {
        // SUBACK as a broker sends it: decoded through the shared codec adapter.
        let mut b = BytesMut::from(&[0x90, 4, 0, 5, 0, 0x80][..]);
        assert_eq!(
            decode_control(&mut b, Version::V4).unwrap(),
            Inbound::SubAck {
                pkid: 5,
                granted: vec![Some(0), None]
            }
        );
        assert!(b.is_empty());
        let mut b = BytesMut::from(&[0x20, 2, 0, 5][..]);
        assert!(matches!(
            decode_control(&mut b, Version::V4).unwrap(),
            Inbound::ConnAck(info) if info.code != 0 && info.reason == "NotAuthorized"
        ));
        let mut b = BytesMut::from(&[0xD0, 0][..]);
        assert_eq!(
            decode_control(&mut b, Version::V5).unwrap(),
            Inbound::PingResp
        );
        // Our CONNECT and SUBSCRIBE are rumqttc's, literally.
        assert_eq!(
            connect_packet("lg", 60, Version::V4),
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'l', b'g']
        );
        assert_eq!(
            subscribe_packet(&["a/#"], 1, 1, Version::V4),
            [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1]
        );
    }
}
