//! A module's connection to the stand-in's TLS port (test tooling, edgeHub's MQTT protocol
//! head): TLS, the CONNECT checked as edgeHub's authenticator does (CONNACK 5 otherwise),
//! then the session — SUBSCRIBEs (in effect, and acknowledged, after the subscribe delay),
//! PUBACKs for delivered messages, and the module's own publishes, processed one at a time as
//! the protocol gateway does: events are routed upstream after the store delay and then
//! PUBACKed, twin requests answered (when the module subscribed to the answer), anything else
//! (an event over edgeHub's message size too) dropped and PUBACKed. A QoS 2 publish or a
//! packet whose whole size is over the limit closes the connection, as edgeHub does.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe, SubscribeReasonCode,
    UnsubAck,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use crate::auth::unix_now;
use crate::hub::{answer, encode, Conn, Event, SeenConnect, Shared, Slot, MAX_MESSAGE_SIZE};
use crate::routes::{classify, message_size, FromModule};

pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, acceptor.clone(), shared.clone()));
    }
}

/// The whole size of the packet at the head of `buf`, fixed header included, as soon as its
/// fixed header is there: what edgeHub's decoder compares with `MaxInboundMessageSize`
/// before it waits for the rest (DotNetty `MqttDecoder.TryDecodeRemainingLength`:
/// `completeMessageSize = remaining + 1 + length bytes`). None until the header is complete.
pub(crate) fn whole_size(buf: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        remaining += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(1 + (i + 1) + remaining);
        }
    }
    None
}

/// Reads one whole packet into `buf` (more bytes may follow it there). A packet whose whole
/// size is over `max` is refused as soon as its fixed header is read.
async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, String> {
    loop {
        if let Some(size) = whole_size(buf).filter(|&n| n > max) {
            return Err(format!("packet over {max} bytes ({size})"));
        }
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n)) => {
                return Err(format!("packet over {max} bytes ({n})"));
            }
            Err(rumqttc::mqttbytes::Error::InvalidQoS(2)) => return Err("QoS 2 publish".into()),
            Err(e) => return Err(format!("malformed packet: {e}")),
        }
        match rd.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => return Err("closed".into()),
        }
    }
}

async fn connection(tcp: TcpStream, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return shared.record(Event::TlsFailure(e.to_string())),
        Err(_) => return shared.record(Event::TlsFailure("handshake timed out".into())),
    };
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let max = shared.config.max_packet;
    let connect =
        match tokio::time::timeout(Duration::from_secs(10), read_packet(&mut rd, &mut buf, max))
            .await
        {
            Ok(Ok(Packet::Connect(c))) => c,
            // Not a CONNECT first, or nothing: edgeHub drops such a connection.
            _ => return,
        };
    let slot = shared.slots.get(&connect.client_id).cloned();
    let verdict = match &slot {
        Some(s) => s.expected.check(&connect, unix_now()),
        None => Err(format!("no module {:?} on this device", connect.client_id)),
    };
    shared
        .connects
        .lock()
        .unwrap()
        .push(SeenConnect::new(&connect, verdict.clone()));
    shared.notify.notify_waiters();
    let (Some(slot), Ok(_)) = (slot, verdict) else {
        // CONNACK "not authorized", then close, as edgeHub does for a bad token.
        let ack = encode(&Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::NotAuthorized,
            false,
        )));
        let _ = wr.write_all(&ack).await;
        let _ = wr.shutdown().await;
        return;
    };
    let client_id = connect.client_id.clone();
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let kill = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    {
        let mut st = slot.state.lock().unwrap();
        if let Some(old) = st.conn.take() {
            old.kill.notify_one();
            shared.record(Event::Closed {
                client_id: client_id.clone(),
                reason: "replaced by a new connection".into(),
            });
        }
        let present = st.had_session && !connect.clean_session;
        st.had_session = !connect.clean_session;
        st.connections += 1;
        st.delivery.connected(connect.clean_session);
        let _ = tx.send(encode(&Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            present,
        ))));
        st.conn = Some(Conn {
            id,
            tx: tx.clone(),
            kill: kill.clone(),
        });
    }
    slot.wake.notify_one();

    // Writer: everything for the module, in order.
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    // The module's publishes, one at a time (the protocol gateway's per-client processor).
    let (ptx, prx) = mpsc::unbounded_channel::<Publish>();
    let processor = tokio::spawn(process_publishes(
        prx,
        slot.clone(),
        shared.clone(),
        tx.clone(),
    ));
    // Its SUBSCRIBEs, one after another, each in effect only after the subscribe delay.
    let (stx, srx) = mpsc::unbounded_channel::<Subscribe>();
    let subscriber = tokio::spawn(apply_subscriptions(
        srx,
        slot.clone(),
        tx.clone(),
        shared.config.subscribe_delay,
    ));

    let reason = tokio::select! {
        r = session(&mut rd, &mut buf, max, &slot, &tx, &ptx, &stx) => r,
        _ = kill.notified() => None,
    };
    if let Some(reason) = reason {
        shared.record(Event::Closed {
            client_id: client_id.clone(),
            reason,
        });
    }
    {
        let mut st = slot.state.lock().unwrap();
        if st.conn.as_ref().is_some_and(|c| c.id == id) {
            st.conn = None;
            st.delivery.disconnected();
        }
    }
    slot.wake.notify_one();
    processor.abort();
    subscriber.abort();
    writer.abort();
}

/// A connection's SUBSCRIBEs in order: each takes effect after `delay` (edgeHub stores the
/// session state and registers the subscriptions first), then its SUBACK goes out.
async fn apply_subscriptions(
    mut srx: mpsc::UnboundedReceiver<Subscribe>,
    slot: Arc<Slot>,
    tx: mpsc::UnboundedSender<Bytes>,
    delay: Duration,
) {
    while let Some(s) = srx.recv().await {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let codes = s
            .filters
            .iter()
            .map(|f| {
                SubscribeReasonCode::Success(match f.qos {
                    QoS::AtMostOnce => QoS::AtMostOnce,
                    _ => QoS::AtLeastOnce,
                })
            })
            .collect();
        slot.state
            .lock()
            .unwrap()
            .delivery
            .subscribe(s.filters.into_iter().map(|f| f.path));
        let _ = tx.send(encode(&Packet::SubAck(SubAck::new(s.pkid, codes))));
        slot.wake.notify_one();
    }
}

/// The session's read side. Returns why the stand-in closed the connection (None when the
/// module closed it or disconnected).
async fn session<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
    slot: &Slot,
    tx: &mpsc::UnboundedSender<Bytes>,
    ptx: &mpsc::UnboundedSender<Publish>,
    stx: &mpsc::UnboundedSender<Subscribe>,
) -> Option<String> {
    loop {
        let packet = match read_packet(rd, buf, max).await {
            Ok(p) => p,
            Err(e) if e == "closed" => return None,
            Err(e) => return Some(e),
        };
        match packet {
            Packet::Publish(p) if p.qos == QoS::ExactlyOnce => {
                return Some("QoS 2 publish".into());
            }
            Packet::Publish(p) => {
                let _ = ptx.send(p);
            }
            Packet::PubAck(a) => {
                slot.state.lock().unwrap().delivery.puback(a.pkid);
                slot.wake.notify_one();
            }
            Packet::Subscribe(s) => {
                let _ = stx.send(s);
            }
            Packet::Unsubscribe(u) => {
                let _ = tx.send(encode(&Packet::UnsubAck(UnsubAck::new(u.pkid))));
            }
            Packet::PingReq => {
                let _ = tx.send(encode(&Packet::PingResp));
            }
            Packet::Disconnect => return None,
            Packet::Connect(_) => return Some("second CONNECT".into()),
            _ => {}
        }
    }
}

/// The module's publishes, in order: events after the store delay, then their PUBACK; twin
/// requests answered, then PUBACKed; unknown topics and events over edgeHub's message size
/// dropped and PUBACKed.
async fn process_publishes(
    mut prx: mpsc::UnboundedReceiver<Publish>,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Bytes>,
) {
    let client_id = slot.expected.client_id();
    let delay = shared.config.store_delay;
    while let Some(p) = prx.recv().await {
        let kind = classify(&p.topic, &slot.expected.device, &slot.expected.module);
        let size = message_size(
            &p.topic,
            &slot.expected.device,
            &slot.expected.module,
            p.payload.len(),
        );
        match kind {
            FromModule::Event { .. } if size.is_some_and(|n| n > MAX_MESSAGE_SIZE) => {
                // edgeHub's routing refuses it (`EdgeHubMessageTooLargeException`), the
                // protocol head logs that and completes the publish all the same.
                slot.state.lock().unwrap().too_large += 1;
                shared.record(Event::TooLarge {
                    client_id: client_id.clone(),
                    topic: p.topic.clone(),
                    size: size.unwrap_or_default(),
                });
            }
            FromModule::Event { .. } => {
                if !delay.is_zero() {
                    // tokio's timer has a 1 ms resolution; a blocking-pool thread sleeps to
                    // within tens of µs, which delays of 0.2 ms need.
                    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await;
                }
                slot.state.lock().unwrap().upstream += 1;
                shared.upstream(&p.topic, p.payload.clone());
                shared.record(Event::Upstream {
                    client_id: client_id.clone(),
                    topic: p.topic.clone(),
                });
            }
            FromModule::TwinGet { rid } => {
                let mut st = slot.state.lock().unwrap();
                if st.lose_gets > 0 {
                    st.lose_gets -= 1;
                    drop(st);
                    shared.record(Event::Twin {
                        client_id: client_id.clone(),
                        what: "GET lost".into(),
                    });
                    if p.qos == QoS::AtLeastOnce {
                        let _ = tx.send(encode(&Packet::PubAck(PubAck::new(p.pkid))));
                    }
                    continue;
                }
                let body = Bytes::from(st.twin.full());
                let sent = answer(&mut st, &format!("$iothub/twin/res/200/?$rid={rid}"), body);
                drop(st);
                shared.record(Event::Twin {
                    client_id: client_id.clone(),
                    what: if sent { "GET" } else { "GET not delivered" }.into(),
                });
            }
            FromModule::TwinReported { rid } => {
                let mut st = slot.state.lock().unwrap();
                // edgeHub's answer names the request only (its TwinEndpoint template,
                // `$iothub/twin/res/{statusCode}/?$rid={correlationId}`): no `$version`.
                let topic = |status| format!("$iothub/twin/res/{status}/?$rid={rid}");
                let (topic, what) = match st.twin.patch_reported(&p.payload) {
                    Ok(_) => (topic(204), "reported 204".to_string()),
                    Err(status) => (topic(status), format!("reported {status}")),
                };
                let sent = answer(&mut st, &topic, Bytes::new());
                drop(st);
                shared.record(Event::Twin {
                    client_id: client_id.clone(),
                    what: if sent {
                        what
                    } else {
                        format!("{what} not delivered")
                    },
                });
            }
            FromModule::MethodResponse => {}
            FromModule::Unknown => {
                slot.state.lock().unwrap().dropped += 1;
                shared.record(Event::Dropped {
                    client_id: client_id.clone(),
                    topic: p.topic.clone(),
                });
            }
        }
        if p.qos == QoS::AtLeastOnce {
            let _ = tx.send(encode(&Packet::PubAck(PubAck::new(p.pkid))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::whole_size;

    #[test]
    fn whole_size_counts_the_fixed_header() {
        assert_eq!(whole_size(&[0x30]), None, "length not read yet");
        assert_eq!(whole_size(&[0xC0, 0x00]), Some(2), "PINGREQ");
        // Remaining length 262,140 = 0xFC 0xFF 0x0F: 1 + 3 + 262,140 = 262,144.
        assert_eq!(whole_size(&[0x32, 0xFC, 0xFF, 0x0F]), Some(262_144));
        assert_eq!(whole_size(&[0x32, 0xFD, 0xFF, 0x0F]), Some(262_145));
        assert_eq!(whole_size(&[0x32, 0xFD, 0xFF]), None);
    }
}
