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
//!
//! Reading is [`decode`] (one whole packet) and, for a socket, [`Reader`] (`reader.rs`: bounded
//! memory, oversize PUBLISHes reduced to their head); writing is [`OutPublish`] and
//! [`Encoder`] (`encode.rs`).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use thiserror::Error;

pub use rumqttc::v5::mqttbytes::v5::PublishProperties;

mod encode;
mod reader;

pub use encode::{ConnectOptions, Encoder, OutPublish};
pub use reader::Reader;

/// The protocol version spoken on a connection (the one version type of the workspace: the
/// filter's `--mqtt-version`, loadgen's, the codec's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.
    V5,
}

impl Version {
    pub fn is_v5(self) -> bool {
        self == Version::V5
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    /// `5`, or `3` / `3.1.1` / `4` (the protocol level) for MQTT 3.1.1.
    fn from_str(s: &str) -> Result<Version, String> {
        match s.trim() {
            "5" => Ok(Version::V5),
            "3" | "3.1.1" | "4" => Ok(Version::V4),
            other => Err(format!("{other:?}: expected 5 or 3 (MQTT 3.1.1)")),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V4 => "3.1.1",
            Version::V5 => "5",
        })
    }
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
    /// Over one of edgeHub's limits (IoT Edge).
    #[error(transparent)]
    EdgeHub(#[from] crate::azure::limits::TooLarge),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_by_their_command_line_names() {
        for (name, v) in [
            ("5", Version::V5),
            ("3", Version::V4),
            ("3.1.1", Version::V4),
            ("4", Version::V4),
        ] {
            assert_eq!(name.parse::<Version>(), Ok(v));
        }
        assert!("6"
            .parse::<Version>()
            .unwrap_err()
            .contains("expected 5 or 3"));
        assert_eq!(Version::V4.to_string(), "3.1.1");
        assert!(Version::V5.is_v5() && !Version::V4.is_v5());
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
}
