//! The stand-in's side port (test tooling, plain MQTT 3.1.1, not part of edgeHub): what
//! edgeHub's routes and IoT Hub would do around the module.
//!
//! - A **source** (loadgen `--target azure`, a test) publishes to a module's input topic
//!   `devices/<dev>/modules/<mod>/inputs/<input>/<property bag>`, as edgeHub writes it after a
//!   route such as `FROM …/SimulatedTemperatureSensor/outputs/temperatureOutput INTO
//!   BrokeredEndpoint("/modules/<mod>/inputs/input1")`: the message goes into that module's
//!   store (PUBACKed once stored) and is delivered one at a time.
//! - A **sink** subscribes (e.g. `devices/<dev>/modules/<mod>/messages/events/#`) and receives,
//!   at QoS 0 with their original topics, the messages the modules sent to their outputs: the
//!   route `FROM /messages/modules/<mod>/outputs/* INTO $upstream`.
//! - `$standin/desired/<dev>/<mod>` with a JSON object body patches that module's desired
//!   properties (the operator editing the twin in IoT Hub).
//!
//! Any client id and credentials are accepted; QoS 2 is not served.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::hub::{encode, Shared, Sink};

/// The topic prefix of desired-property patches on the side port.
pub const DESIRED_PREFIX: &str = "$standin/desired/";

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(client(tcp, shared.clone()));
    }
}

async fn client(tcp: TcpStream, shared: Arc<Shared>) {
    let (mut rd, mut wr) = tcp.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Coalesce what is queued into one write.
            let mut out = BytesMut::from(&first[..]);
            while out.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(more) => out.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if wr.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut sink_registered = false;
    'read: loop {
        loop {
            let packet = match Packet::read(&mut buf, 16 << 20) {
                Ok(p) => p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(_) => break 'read,
            };
            match packet {
                Packet::Connect(_) => {
                    let _ = tx.send(encode(&Packet::ConnAck(ConnAck::new(
                        ConnectReturnCode::Success,
                        false,
                    ))));
                }
                Packet::Publish(p) => {
                    if let Some(rest) = p.topic.strip_prefix(DESIRED_PREFIX) {
                        if let (Some(slot), Ok(patch)) = (
                            shared.slots.get(rest),
                            serde_json::from_slice::<serde_json::Value>(&p.payload),
                        ) {
                            shared.desired_patch(slot, patch);
                        }
                    } else if let Some(slot) = shared.slot_for_topic(&p.topic) {
                        shared.store(slot, p.topic.clone(), p.payload.clone());
                    }
                    if p.qos != QoS::AtMostOnce {
                        let _ = tx.send(encode(&Packet::PubAck(PubAck::new(p.pkid))));
                    }
                }
                Packet::Subscribe(s) => {
                    let codes = s
                        .filters
                        .iter()
                        .map(|_| SubscribeReasonCode::Success(QoS::AtMostOnce))
                        .collect();
                    let filters: Vec<String> = s.filters.into_iter().map(|f| f.path).collect();
                    let _ = tx.send(encode(&Packet::SubAck(SubAck::new(s.pkid, codes))));
                    let mut sinks = shared.sinks.lock().unwrap();
                    if sink_registered {
                        if let Some(me) = sinks.iter_mut().find(|s| s.tx.same_channel(&tx)) {
                            me.filters.extend(filters);
                        }
                    } else {
                        sinks.push(Sink {
                            filters,
                            tx: tx.clone(),
                        });
                        sink_registered = true;
                    }
                }
                Packet::Unsubscribe(u) => {
                    let _ = tx.send(encode(&Packet::UnsubAck(UnsubAck::new(u.pkid))));
                }
                Packet::PingReq => {
                    let _ = tx.send(encode(&Packet::PingResp));
                }
                Packet::Disconnect => break 'read,
                _ => {}
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    shared
        .sinks
        .lock()
        .unwrap()
        .retain(|s| !s.tx.same_channel(&tx));
    drop(tx);
    let _ = writer.await;
}
