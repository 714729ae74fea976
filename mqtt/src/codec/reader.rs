//! The read side of a connection's socket: [`Reader`] takes the bytes the I/O loop read
//! (a read buffer of any fill) and yields [`Inbound`] packets, with [`decode`] for packets up to
//! the limit and a head-only parse for a larger PUBLISH, whose rest it skips as it arrives. The
//! filter's `Flow` dead-letters such an input by its head; the read buffer stays bounded. No I/O
//! here.

use bytes::{Bytes, BytesMut};

use super::{decode, CodecError, InPublish, Inbound, Version};

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
        let too_large = match decode(self.version, buf, self.max) {
            Err(e @ CodecError::TooLarge { .. }) => e,
            other => return other,
        };
        if buf.first().is_some_and(|&byte1| byte1 >> 4 != 3) {
            // Only a PUBLISH is streamed; any other packet over the limit is the error.
            return Err(too_large);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{OutPublish, PublishProperties};

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
        assert!(matches!(
            reader.next(&mut buf),
            Err(CodecError::TooLarge { max: 1024 })
        ));
    }
}
