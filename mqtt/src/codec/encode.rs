//! The write side of a connection: what a client puts into its write buffer. [`OutPublish`]
//! (alerts, twin reports, loadgen's telemetry) is kept as the version's packet so the outgoing
//! window can resend it after a reconnect; [`Encoder`] writes CONNECT (from
//! [`ConnectOptions`]), SUBSCRIBE, PUBACK, PINGREQ and DISCONNECT. The I/O loop sends the
//! buffer. No I/O here.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use super::{CodecError, PublishProperties, Unpublishable, Version, MAX_REMAINING};

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

    /// Replaces the body (a dead letter cut down to fit).
    pub fn set_payload(&mut self, payload: Bytes) {
        match self {
            OutPublish::V4(p) => p.payload = payload,
            OutPublish::V5(p) => p.payload = payload,
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
    use crate::codec::{decode, Inbound};

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
