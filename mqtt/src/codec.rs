//! MQTT packets on the wire, for both protocol versions, over rumqttc's packet codec
//! (`rumqttc::mqttbytes::v4` and `rumqttc::v5::mqttbytes::v5`). The filter's `Flow` (and
//! loadgen) read [`Inbound`] packets out of a read buffer and write outgoing ones into a write
//! buffer; this module hides which version is spoken. No I/O here.
//!
//! rumqttc writes a string's length as `len as u16`, so a topic of 65,536 bytes or more would
//! wrap into a malformed packet: [`OutPublish::check`] says whether a publish can be encoded
//! at all (and fits the broker's Maximum Packet Size), and [`OutPublish::write`] refuses what
//! it cannot encode without leaving partial bytes behind. (Whether a topic is a valid *name*
//! — no wildcards — depends on the dialect: IoT Edge device ids may hold `+` and `#`.)

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use thiserror::Error;

pub use rumqttc::v5::mqttbytes::v5::PublishProperties;

/// The protocol version spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.
    V5,
}

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("malformed MQTT 3.1.1 packet: {0}")]
    V4(rumqttc::mqttbytes::Error),
    #[error("malformed MQTT 5 packet: {0}")]
    V5(rumqttc::v5::mqttbytes::Error),
    #[error("packet larger than {max} bytes")]
    TooLarge { max: usize },
    #[error(transparent)]
    Unpublishable(#[from] Unpublishable),
}

/// Why a publish cannot go on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Unpublishable {
    #[error(transparent)]
    Topic(#[from] crate::topic::Unpublishable),
    #[error("its packet would be {size} bytes, more than the broker accepts ({max})")]
    TooLarge { size: usize, max: u32 },
}
/// Largest remaining length MQTT can encode (four bytes of variable-length integer).
pub const MAX_REMAINING: usize = 268_435_455;

/// An incoming PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPublish {
    pub topic: Bytes,
    pub payload: Bytes,
    pub qos: u8,
    pub pkid: u16,
    pub retain: bool,
    pub dup: bool,
    /// MQTT 5 properties (None with 3.1.1).
    pub properties: Option<PublishProperties>,
}

/// What the connection needs to know of a CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAckInfo {
    pub session_present: bool,
    /// 0 = accepted; otherwise the version's return/reason code.
    pub code: u8,
    pub reason: String,
    /// MQTT 5: the server's Receive Maximum (how many QoS 1 publishes it accepts in flight).
    pub receive_maximum: Option<u16>,
    /// MQTT 5: the largest packet the server accepts.
    pub maximum_packet_size: Option<u32>,
    /// MQTT 5: keep-alive the server imposes.
    pub server_keep_alive: Option<u16>,
}

/// Packets a client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    ConnAck(ConnAckInfo),
    Publish(InPublish),
    /// `ok` false when an MQTT 5 broker acknowledged with an error reason.
    PubAck {
        pkid: u16,
        ok: bool,
        reason: String,
    },
    /// Granted QoS per filter, `None` for a refused filter.
    SubAck {
        pkid: u16,
        granted: Vec<Option<u8>>,
    },
    PingResp,
    /// A PUBLISH larger than the reader takes whole ([`Reader`]): its topic, QoS, packet id
    /// and the first bytes of its payload; the rest was skipped unread.
    OversizePublish {
        publish: InPublish,
        /// The whole payload's length.
        size: usize,
    },
    Disconnect {
        reason: String,
    },
    /// Anything else a client does not expect (named for the log).
    Other(&'static str),
}

/// Decodes one packet from the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn decode(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Inbound>, CodecError> {
    let before = buf.len();
    // rumqttc takes a whole frame out of the buffer before parsing it: "insufficient bytes"
    // after that is a frame too short for its own contents, not a wait for more data.
    let malformed = |buf: &BytesMut| buf.len() != before;
    match version {
        Version::V4 => match v4::Packet::read(buf, max) {
            Ok(p) => Ok(Some(from_v4(p))),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) if !malformed(buf) => Ok(None),
            Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_)) => {
                Err(CodecError::TooLarge { max })
            }
            Err(e) => Err(CodecError::V4(e)),
        },
        Version::V5 => match v5::Packet::read(buf, Some(max as u32)) {
            Ok(p) => Ok(Some(from_v5(p))),
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) if !malformed(buf) => Ok(None),
            Err(rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded { .. }) => {
                Err(CodecError::TooLarge { max })
            }
            Err(e) => Err(CodecError::V5(e)),
        },
    }
}

/// Reads packets out of a byte stream with bounded memory: a packet up to `max` bytes is
/// decoded whole; a larger PUBLISH is not buffered — its topic, packet id and first `keep`
/// payload bytes become an [`Inbound::OversizePublish`] (so it can be acknowledged and
/// dead-lettered in order) and the rest is skipped as it arrives. A larger packet of any
/// other kind is an error. So the read buffer never holds much more than `max` bytes,
/// whatever the broker sends.
#[derive(Debug, Clone)]
pub struct Reader {
    version: Version,
    max: usize,
    keep: usize,
    /// Bytes of an oversize packet still to skip.
    skip: usize,
}

impl Reader {
    pub fn new(version: Version, max: usize, keep: usize) -> Reader {
        Reader {
            version,
            max,
            keep,
            skip: 0,
        }
    }

    /// The next packet out of `buf`; `Ok(None)` when more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, CodecError> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            let _ = buf.split_to(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        match decode(self.version, buf, self.max) {
            Err(CodecError::TooLarge { .. }) => {}
            other => return other,
        }
        let Some(head) = oversize_head(self.version, buf, self.keep)? else {
            return Ok(None);
        };
        let _ = buf.split_to(head.consumed);
        self.skip = head.frame_len - head.consumed;
        let n = self.skip.min(buf.len());
        let _ = buf.split_to(n);
        self.skip -= n;
        Ok(Some(Inbound::OversizePublish {
            publish: head.publish,
            size: head.payload_len,
        }))
    }
}

/// The front of an oversize PUBLISH.
struct OversizeHead {
    publish: InPublish,
    payload_len: usize,
    frame_len: usize,
    /// Bytes of `buf` the head took.
    consumed: usize,
}

/// Parses the fixed header, topic, packet id and (MQTT 5) property length of the PUBLISH at
/// the front of `buf`, and takes up to `keep` payload bytes that are already there. `None`
/// until the bytes before the payload have arrived (at most 64 KiB of topic and the
/// properties' length). Properties are skipped, not buffered.
fn oversize_head(
    version: Version,
    buf: &BytesMut,
    keep: usize,
) -> Result<Option<OversizeHead>, CodecError> {
    let malformed = || match version {
        Version::V4 => CodecError::V4(rumqttc::mqttbytes::Error::MalformedPacket),
        Version::V5 => CodecError::V5(rumqttc::v5::mqttbytes::Error::MalformedPacket),
    };
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    if byte1 >> 4 != 3 {
        return Err(CodecError::TooLarge { max: 0 });
    }
    let Some((remaining, mut at)) = var_int(buf, 1)? else {
        return Ok(None);
    };
    let frame_len = at + remaining;
    let qos = (byte1 >> 1) & 3;
    if qos == 3 {
        return Err(malformed());
    }
    let Some(len) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let topic_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    at += 2;
    let Some(topic) = buf.get(at..at + topic_len) else {
        return Ok(None);
    };
    let topic = Bytes::copy_from_slice(topic);
    at += topic_len;
    let mut pkid = 0;
    if qos > 0 {
        let Some(id) = buf.get(at..at + 2) else {
            return Ok(None);
        };
        pkid = u16::from_be_bytes([id[0], id[1]]);
        at += 2;
    }
    let mut props_len = 0;
    if version == Version::V5 {
        let Some((len, end)) = var_int(buf, at)? else {
            return Ok(None);
        };
        props_len = len;
        at = end;
    }
    let payload_start = at + props_len;
    if payload_start > frame_len {
        return Err(malformed());
    }
    let payload_len = frame_len - payload_start;
    // The properties are skipped; whatever payload is already here (up to `keep`) is kept.
    let available = buf.len().saturating_sub(payload_start);
    let take = available.min(keep).min(payload_len);
    let payload = if take > 0 {
        Bytes::copy_from_slice(&buf[payload_start..payload_start + take])
    } else {
        Bytes::new()
    };
    let consumed = if available > 0 {
        payload_start + take
    } else {
        buf.len().min(payload_start)
    };
    Ok(Some(OversizeHead {
        publish: InPublish {
            topic,
            payload,
            qos,
            pkid,
            retain: byte1 & 1 != 0,
            dup: byte1 & 8 != 0,
            properties: None,
        },
        payload_len,
        frame_len,
        consumed,
    }))
}

/// MQTT's variable-length integer at `buf[at..]`: (value, index after it), `None` when
/// incomplete.
fn var_int(buf: &[u8], mut at: usize) -> Result<Option<(usize, usize)>, CodecError> {
    let mut value = 0usize;
    for shift in [0, 7, 14, 21] {
        let Some(&b) = buf.get(at) else {
            return Ok(None);
        };
        at += 1;
        value |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(Some((value, at)));
        }
    }
    Err(CodecError::V4(
        rumqttc::mqttbytes::Error::MalformedRemainingLength,
    ))
}

fn from_v4(p: v4::Packet) -> Inbound {
    match p {
        v4::Packet::ConnAck(c) => Inbound::ConnAck(ConnAckInfo {
            session_present: c.session_present,
            code: c.code as u8,
            reason: format!("{:?}", c.code),
            receive_maximum: None,
            maximum_packet_size: None,
            server_keep_alive: None,
        }),
        v4::Packet::Publish(p) => Inbound::Publish(InPublish {
            topic: Bytes::from(p.topic),
            payload: p.payload,
            qos: p.qos as u8,
            pkid: p.pkid,
            retain: p.retain,
            dup: p.dup,
            properties: None,
        }),
        v4::Packet::PubAck(a) => Inbound::PubAck {
            pkid: a.pkid,
            ok: true,
            reason: String::new(),
        },
        v4::Packet::SubAck(s) => Inbound::SubAck {
            pkid: s.pkid,
            granted: s
                .return_codes
                .iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => Some(*q as u8),
                    v4::SubscribeReasonCode::Failure => None,
                })
                .collect(),
        },
        v4::Packet::PingResp => Inbound::PingResp,
        v4::Packet::Disconnect => Inbound::Disconnect {
            reason: "broker sent DISCONNECT".into(),
        },
        v4::Packet::Connect(_) => Inbound::Other("CONNECT"),
        v4::Packet::PubRec(_) => Inbound::Other("PUBREC"),
        v4::Packet::PubRel(_) => Inbound::Other("PUBREL"),
        v4::Packet::PubComp(_) => Inbound::Other("PUBCOMP"),
        v4::Packet::Subscribe(_) => Inbound::Other("SUBSCRIBE"),
        v4::Packet::Unsubscribe(_) => Inbound::Other("UNSUBSCRIBE"),
        v4::Packet::UnsubAck(_) => Inbound::Other("UNSUBACK"),
        v4::Packet::PingReq => Inbound::Other("PINGREQ"),
    }
}

fn from_v5(p: v5::Packet) -> Inbound {
    match p {
        v5::Packet::ConnAck(c) => {
            let props = c.properties.as_ref();
            Inbound::ConnAck(ConnAckInfo {
                session_present: c.session_present,
                code: if c.code == v5::ConnectReturnCode::Success {
                    0
                } else {
                    0x80
                },
                reason: match props.and_then(|p| p.reason_string.clone()) {
                    Some(r) => format!("{:?}: {r}", c.code),
                    None => format!("{:?}", c.code),
                },
                receive_maximum: props.and_then(|p| p.receive_max),
                maximum_packet_size: props.and_then(|p| p.max_packet_size),
                server_keep_alive: props.and_then(|p| p.server_keep_alive),
            })
        }
        v5::Packet::Publish(p) => Inbound::Publish(InPublish {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos as u8,
            pkid: p.pkid,
            retain: p.retain,
            dup: p.dup,
            properties: p.properties,
        }),
        v5::Packet::PubAck(a) => {
            let ok = matches!(
                a.reason,
                v5::PubAckReason::Success | v5::PubAckReason::NoMatchingSubscribers
            );
            Inbound::PubAck {
                pkid: a.pkid,
                ok,
                reason: format!("{:?}", a.reason),
            }
        }
        v5::Packet::SubAck(s) => Inbound::SubAck {
            pkid: s.pkid,
            granted: s
                .return_codes
                .iter()
                .map(|c| match c {
                    v5::SubscribeReasonCode::Success(q) => Some(*q as u8),
                    _ => None,
                })
                .collect(),
        },
        v5::Packet::PingResp(_) => Inbound::PingResp,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            reason: match d.properties.and_then(|p| p.reason_string) {
                Some(r) => format!("{:?}: {r}", d.reason_code),
                None => format!("{:?}", d.reason_code),
            },
        },
        v5::Packet::Auth(_) => Inbound::Other("AUTH"),
        v5::Packet::Connect(..) => Inbound::Other("CONNECT"),
        v5::Packet::PubRec(_) => Inbound::Other("PUBREC"),
        v5::Packet::PubRel(_) => Inbound::Other("PUBREL"),
        v5::Packet::PubComp(_) => Inbound::Other("PUBCOMP"),
        v5::Packet::Subscribe(_) => Inbound::Other("SUBSCRIBE"),
        v5::Packet::Unsubscribe(_) => Inbound::Other("UNSUBSCRIBE"),
        v5::Packet::UnsubAck(_) => Inbound::Other("UNSUBACK"),
        v5::Packet::PingReq(_) => Inbound::Other("PINGREQ"),
    }
}

/// The CONNECT a client sends.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub client_id: String,
    pub keep_alive_secs: u16,
    /// false = resume the session (clean_session=false / clean start false).
    pub clean: bool,
    /// MQTT 5 session expiry; the session outlives the connection by this many seconds.
    pub session_expiry_secs: u32,
    /// MQTT 5 Receive Maximum we announce (inputs in flight towards us).
    pub receive_maximum: u16,
    /// MQTT 5 Maximum Packet Size we accept.
    pub maximum_packet_size: u32,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// An outgoing PUBLISH, kept as the version's packet so it can be resent after a reconnect.
#[derive(Debug, Clone)]
pub enum OutPublish {
    V4(v4::Publish),
    V5(v5::Publish),
}

impl OutPublish {
    pub fn new(
        version: Version,
        topic: &Bytes,
        payload: Bytes,
        qos: u8,
        retain: bool,
        properties: Option<PublishProperties>,
    ) -> OutPublish {
        let qos = qos_of(qos);
        match version {
            Version::V4 => {
                let mut p = v4::Publish::from_bytes(
                    String::from_utf8_lossy(topic).into_owned(),
                    qos,
                    payload,
                );
                p.retain = retain;
                OutPublish::V4(p)
            }
            Version::V5 => OutPublish::V5(v5::Publish {
                dup: false,
                qos: match qos {
                    rumqttc::mqttbytes::QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    _ => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                },
                retain,
                topic: topic.clone(),
                pkid: 0,
                payload,
                properties,
            }),
        }
    }

    pub fn qos(&self) -> u8 {
        match self {
            OutPublish::V4(p) => p.qos as u8,
            OutPublish::V5(p) => p.qos as u8,
        }
    }

    pub fn set_pkid(&mut self, pkid: u16) {
        match self {
            OutPublish::V4(p) => p.pkid = pkid,
            OutPublish::V5(p) => p.pkid = pkid,
        }
    }

    pub fn set_dup(&mut self) {
        match self {
            OutPublish::V4(p) => p.dup = true,
            OutPublish::V5(p) => p.dup = true,
        }
    }

    pub fn payload(&self) -> &Bytes {
        match self {
            OutPublish::V4(p) => &p.payload,
            OutPublish::V5(p) => &p.payload,
        }
    }

    pub fn topic(&self) -> &[u8] {
        match self {
            OutPublish::V4(p) => p.topic.as_bytes(),
            OutPublish::V5(p) => &p.topic,
        }
    }

    pub fn properties(&self) -> Option<&PublishProperties> {
        match self {
            OutPublish::V4(_) => None,
            OutPublish::V5(p) => p.properties.as_ref(),
        }
    }

    /// The whole packet's size on the wire (with its packet id, even before one is set).
    pub fn size(&self) -> usize {
        let (size, pkid_missing) = match self {
            OutPublish::V4(p) => (
                p.size(),
                p.qos != rumqttc::mqttbytes::QoS::AtMostOnce && p.pkid == 0,
            ),
            OutPublish::V5(p) => (
                p.size(),
                p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce && p.pkid == 0,
            ),
        };
        if !pkid_missing {
            return size;
        }
        // rumqttc counts the packet id only once it is set: add its two bytes.
        let len = (1..=4)
            .map(|ll| size - 1 - ll)
            .find(|&len| var_int_len(len) == size - 1 - len)
            .unwrap_or(size);
        let len = len + 2;
        1 + var_int_len(len) + len
    }

    /// Whether the publish can be encoded, and fits `max_packet` (the broker's Maximum Packet
    /// Size, MQTT 5) when there is one.
    pub fn check(&self, max_packet: Option<u32>) -> Result<(), Unpublishable> {
        let len = self.topic().len();
        if len > crate::topic::MAX_TOPIC_LEN {
            return Err(crate::topic::Unpublishable::TooLong(len).into());
        }
        let size = self.size();
        let max = max_packet.map_or(MAX_REMAINING + 5, |m| m as usize);
        if size > max {
            return Err(Unpublishable::TooLarge {
                size,
                max: max.min(u32::MAX as usize) as u32,
            });
        }
        Ok(())
    }

    /// Appends the packet to `buf`; on an error `buf` is left as it was.
    pub fn write(&self, buf: &mut BytesMut) -> Result<usize, CodecError> {
        self.check(None)?;
        let mark = buf.len();
        let written = match self {
            OutPublish::V4(p) => p.write(buf).map_err(CodecError::V4),
            OutPublish::V5(p) => p.write(buf).map_err(CodecError::V5),
        };
        if written.is_err() {
            buf.truncate(mark);
        }
        written
    }
}

/// Bytes of MQTT's variable-length integer for `n`.
fn var_int_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn qos_of(q: u8) -> rumqttc::mqttbytes::QoS {
    if q == 0 {
        rumqttc::mqttbytes::QoS::AtMostOnce
    } else {
        rumqttc::mqttbytes::QoS::AtLeastOnce
    }
}

fn v5_qos(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    if q == 0 {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce
    } else {
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce
    }
}

/// Writers for the other packets a client sends.
pub struct Encoder;

impl Encoder {
    pub fn connect(
        version: Version,
        buf: &mut BytesMut,
        o: &ConnectOptions,
    ) -> Result<usize, CodecError> {
        match version {
            Version::V4 => {
                let mut c = v4::Connect::new(o.client_id.clone());
                c.keep_alive = o.keep_alive_secs;
                c.clean_session = o.clean;
                if o.username.is_some() || o.password.is_some() {
                    c.set_login(
                        o.username.clone().unwrap_or_default(),
                        o.password.clone().unwrap_or_default(),
                    );
                }
                c.write(buf).map_err(CodecError::V4)
            }
            Version::V5 => {
                let mut props = v5::ConnectProperties::new();
                props.session_expiry_interval = Some(o.session_expiry_secs);
                props.receive_maximum = Some(o.receive_maximum);
                props.max_packet_size = Some(o.maximum_packet_size);
                let c = v5::Connect {
                    keep_alive: o.keep_alive_secs,
                    client_id: o.client_id.clone(),
                    clean_start: o.clean,
                    properties: Some(props),
                };
                let login = if o.username.is_some() || o.password.is_some() {
                    Some(v5::Login::new(
                        o.username.clone().unwrap_or_default(),
                        o.password.clone().unwrap_or_default(),
                    ))
                } else {
                    None
                };
                v5::Packet::Connect(c, None, login)
                    .write(buf, None)
                    .map_err(CodecError::V5)
            }
        }
    }

    /// SUBSCRIBE to `filters` at `qos`; with MQTT 5, `no_local` keeps our own publishes from
    /// coming back to us.
    pub fn subscribe<S: AsRef<str>>(
        version: Version,
        buf: &mut BytesMut,
        pkid: u16,
        filters: &[S],
        qos: u8,
        no_local: bool,
    ) -> Result<usize, CodecError> {
        match version {
            Version::V4 => {
                let mut s = v4::Subscribe::new_many(
                    filters
                        .iter()
                        .map(|f| v4::SubscribeFilter::new(f.as_ref().to_string(), qos_of(qos))),
                );
                s.pkid = pkid;
                s.write(buf).map_err(CodecError::V4)
            }
            Version::V5 => {
                let mut s = v5::Subscribe::new_many(
                    filters.iter().map(|f| {
                        let f = f.as_ref();
                        let mut filter = v5::Filter::new(f, v5_qos(qos));
                        // Shared subscriptions must not set No Local (MQTT 5 §3.8.3.1).
                        filter.nolocal = no_local && !f.starts_with("$share/");
                        filter
                    }),
                    None,
                );
                s.pkid = pkid;
                s.write(buf).map_err(CodecError::V5)
            }
        }
    }

    pub fn puback(version: Version, buf: &mut BytesMut, pkid: u16) -> Result<usize, CodecError> {
        match version {
            Version::V4 => v4::PubAck::new(pkid).write(buf).map_err(CodecError::V4),
            Version::V5 => v5::PubAck::new(pkid, None)
                .write(buf)
                .map_err(CodecError::V5),
        }
    }

    pub fn pingreq(version: Version, buf: &mut BytesMut) -> Result<usize, CodecError> {
        match version {
            Version::V4 => v4::PingReq.write(buf).map_err(CodecError::V4),
            Version::V5 => v5::PingReq::write(buf).map_err(CodecError::V5),
        }
    }

    pub fn disconnect(version: Version, buf: &mut BytesMut) -> Result<usize, CodecError> {
        match version {
            Version::V4 => v4::Disconnect.write(buf).map_err(CodecError::V4),
            Version::V5 => v5::Disconnect::new(v5::DisconnectReasonCode::NormalDisconnection)
                .write(buf)
                .map_err(CodecError::V5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_publish_round_trips_the_payload_bytes() {
        let mut buf = BytesMut::new();
        let mut p = OutPublish::new(
            Version::V4,
            &Bytes::from_static(b"alerts/t/1"),
            Bytes::from_static(b"{\"a\":1}"),
            1,
            false,
            None,
        );
        p.set_pkid(7);
        p.write(&mut buf).unwrap();
        // Literal: PUBLISH QoS1 (0x32), remaining 21, topic len 10, topic, pkid 7, payload.
        assert_eq!(&buf[..], b"\x32\x15\x00\x0aalerts/t/1\x00\x07{\"a\":1}");
        let Some(Inbound::Publish(got)) = decode(Version::V4, &mut buf, 1024).unwrap() else {
            panic!("not a publish")
        };
        assert_eq!(
            (&got.topic[..], &got.payload[..], got.qos, got.pkid),
            (&b"alerts/t/1"[..], &b"{\"a\":1}"[..], 1, 7)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn v5_publish_keeps_user_properties() {
        let props = PublishProperties {
            user_properties: vec![("MessageType".into(), "Alert".into())],
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        let mut p = OutPublish::new(
            Version::V5,
            &Bytes::from_static(b"a"),
            Bytes::from_static(b"x"),
            1,
            true,
            Some(props.clone()),
        );
        p.set_pkid(1);
        p.set_dup();
        let mut buf = BytesMut::new();
        p.write(&mut buf).unwrap();
        assert_eq!(buf[0], 0x3b, "PUBLISH, DUP, QoS 1, RETAIN");
        let Some(Inbound::Publish(got)) = decode(Version::V5, &mut buf, 1024).unwrap() else {
            panic!("not a publish")
        };
        assert_eq!(got.properties, Some(props));
        assert!(got.retain && got.dup);
    }

    #[test]
    fn topics_too_long_to_encode_are_refused_without_writing() {
        let long = Bytes::from(vec![b'M'; 65_536]);
        let p = OutPublish::new(Version::V4, &long, Bytes::from_static(b"x"), 0, false, None);
        assert_eq!(
            p.check(None),
            Err(Unpublishable::Topic(crate::topic::Unpublishable::TooLong(
                65_536
            )))
        );
        let mut buf = BytesMut::from(&b"keep"[..]);
        assert!(p.write(&mut buf).is_err());
        assert_eq!(
            &buf[..],
            b"keep",
            "nothing of the refused packet is left behind"
        );
        let ok = OutPublish::new(
            Version::V4,
            &Bytes::from(vec![b'M'; 65_535]),
            Bytes::from_static(b"x"),
            0,
            false,
            None,
        );
        assert_eq!(ok.check(None), Ok(()));
    }

    #[test]
    fn the_broker_maximum_packet_size_is_checked() {
        let p = OutPublish::new(
            Version::V5,
            &Bytes::from_static(b"a/b"),
            Bytes::from(vec![b'x'; 100]),
            1,
            false,
            None,
        );
        let size = p.size();
        assert_eq!(p.check(Some(size as u32)), Ok(()));
        assert_eq!(
            p.check(Some(size as u32 - 1)),
            Err(Unpublishable::TooLarge {
                size,
                max: size as u32 - 1
            })
        );
        let mut p = p;
        p.set_pkid(1);
        assert_eq!(
            p.size(),
            size,
            "the size counts the packet id before it is set"
        );
        // At the boundary where the packet id makes the remaining length one byte longer.
        for payload in [120, 121, 122, 123, 124, 16_370, 16_375, 16_380] {
            let mut p = OutPublish::new(
                Version::V4,
                &Bytes::from_static(b"a/b"),
                Bytes::from(vec![b'x'; payload]),
                1,
                false,
                None,
            );
            let before = p.size();
            p.set_pkid(9);
            let mut buf = BytesMut::new();
            assert_eq!(p.write(&mut buf).unwrap(), before, "payload {payload}");
            assert_eq!(buf.len(), before);
        }
    }

    #[test]
    fn a_failed_write_leaves_the_buffer_as_it_was() {
        // QoS 1 without a packet id: rumqttc refuses after writing the fixed header.
        let p = OutPublish::new(
            Version::V4,
            &Bytes::from_static(b"t"),
            Bytes::from_static(b"x"),
            1,
            false,
            None,
        );
        let mut buf = BytesMut::new();
        assert!(p.write(&mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_too_short_for_its_contents_is_an_error_not_a_wait() {
        // Found by fuzzing: an MQTT 5 CONNACK whose remaining length leaves no room for its
        // property length used to vanish (rumqttc took the frame, then said "insufficient").
        let mut buf = BytesMut::from(&[0x20, 0x02, 0x00, 0x00, 0xd0, 0x00][..]);
        assert!(decode(Version::V5, &mut buf, 1024).is_err());
        // A merely incomplete packet still waits for more bytes.
        let mut buf = BytesMut::from(&[0x20, 0x03, 0x00][..]);
        assert!(decode(Version::V5, &mut buf, 1024).unwrap().is_none());
        assert_eq!(buf.len(), 3);
    }

    fn big_publish(version: Version, payload: usize, qos: u8) -> BytesMut {
        let body: Vec<u8> = (0..payload).map(|i| b'a' + (i % 26) as u8).collect();
        let props = (version == Version::V5).then(|| PublishProperties {
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        });
        let mut p = OutPublish::new(
            version,
            &Bytes::from_static(b"telemetry/big"),
            Bytes::from(body),
            qos,
            false,
            props,
        );
        p.set_pkid(77);
        let mut buf = BytesMut::new();
        p.write(&mut buf).unwrap();
        buf
    }

    #[test]
    fn oversize_publishes_are_read_in_bounded_memory() {
        for version in [Version::V4, Version::V5] {
            let wire = big_publish(version, 100_000, 1);
            // Followed by a PUBACK, fed in small chunks like a socket would.
            let mut stream = wire.to_vec();
            stream.extend_from_slice(&[0x40, 0x02, 0x00, 0x05]);
            let mut reader = Reader::new(version, 4096, 100);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(1000) {
                buf.extend_from_slice(chunk);
                while let Some(p) = reader.next(&mut buf).unwrap() {
                    got.push(p);
                }
                assert!(buf.len() <= 4096 + 1000, "buffered {}", buf.len());
            }
            assert_eq!(got.len(), 2, "{version:?}");
            let Inbound::OversizePublish { publish, size } = &got[0] else {
                panic!("{:?}", got[0])
            };
            assert_eq!(*size, 100_000);
            assert_eq!(
                (&publish.topic[..], publish.qos, publish.pkid),
                (&b"telemetry/big"[..], 1, 77)
            );
            assert_eq!(
                &publish.payload[..],
                &b"abcdefghijklmnopqrstuvwxyz".repeat(4)[..100]
            );
            assert!(matches!(got[1], Inbound::PubAck { pkid: 5, .. }));
        }
    }

    #[test]
    fn packets_within_the_limit_decode_as_usual_and_other_oversize_packets_are_errors() {
        let mut reader = Reader::new(Version::V4, 1 << 20, 100);
        let mut buf = big_publish(Version::V4, 1000, 0);
        assert!(matches!(
            reader.next(&mut buf).unwrap(),
            Some(Inbound::Publish(p)) if p.payload.len() == 1000
        ));
        // A SUBACK announcing 1 MiB: not a PUBLISH, nothing to skip it for.
        let mut reader = Reader::new(Version::V4, 1024, 100);
        let mut buf = BytesMut::from(&[0x90, 0x80, 0x80, 0x40][..]);
        assert!(reader.next(&mut buf).is_err());
    }

    #[test]
    fn partial_packets_wait_for_more_bytes() {
        let mut buf = BytesMut::from(&b"\x40\x02\x00"[..]); // PUBACK missing a byte
        assert!(decode(Version::V4, &mut buf, 1024).unwrap().is_none());
        buf.extend_from_slice(b"\x05");
        assert!(matches!(
            decode(Version::V4, &mut buf, 1024).unwrap(),
            Some(Inbound::PubAck {
                pkid: 5,
                ok: true,
                ..
            })
        ));
    }

    #[test]
    fn control_packets_have_their_literal_form() {
        let mut buf = BytesMut::new();
        Encoder::puback(Version::V4, &mut buf, 0x0102).unwrap();
        Encoder::pingreq(Version::V4, &mut buf).unwrap();
        Encoder::disconnect(Version::V4, &mut buf).unwrap();
        assert_eq!(&buf[..], b"\x40\x02\x01\x02\xc0\x00\xe0\x00");
        let mut buf = BytesMut::new();
        Encoder::subscribe(Version::V4, &mut buf, 1, &["telemetry/#"], 1, true).unwrap();
        assert_eq!(&buf[..], b"\x82\x10\x00\x01\x00\x0btelemetry/#\x01");
    }

    #[test]
    fn v4_connect_asks_for_a_persistent_session() {
        let mut buf = BytesMut::new();
        let o = ConnectOptions {
            client_id: "ef".into(),
            keep_alive_secs: 30,
            clean: false,
            session_expiry_secs: 0,
            receive_maximum: 100,
            maximum_packet_size: 1 << 20,
            username: Some("u".into()),
            password: Some("p".into()),
        };
        Encoder::connect(Version::V4, &mut buf, &o).unwrap();
        // flags: username (0x80) + password (0x40), clean session bit clear.
        assert_eq!(
            &buf[..],
            b"\x10\x14\x00\x04MQTT\x04\xc0\x00\x1e\x00\x02ef\x00\x01u\x00\x01p"
        );
    }
}
