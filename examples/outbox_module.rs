//! Measurement prototype for BENCHMARKS.md §8 (issue 9), not the product: an IoT Edge module
//! with the **outbox acknowledgement policy**, to measure it on the edgeHub path before it is
//! wired into the connection loop. An input that alerts is PUBACKed as soon as its alert is
//! committed to the durable outbox (`edgefilter::io::outbox`), not when edgeHub acknowledged the
//! alert; the alert's PUBACK marks it done; after a crash the outbox's pending alerts are sent
//! again before anything else. edgeHub delivers one message at a time, so the input's wait is
//! paid per input: here it is the commit (a `write`, or an `fdatasync`), not edgeHub's store.
//!
//! It uses edgefilter's own pieces (identity and credentials from the IoT Edge environment
//! and the workload API, TLS trusting the trust bundle, `ModuleTopics`, the verdict, the
//! outbox) on a minimal loop over rumqttc's packet codec: MQTT 3.1.1, input1 → output1,
//! threshold 25, no twin, no reconnect (it exits when the connection ends; the runtime
//! restarts it).
//!
//! `outbox_module [fsync|written] [outbox dir]`, with the runtime's IOTEDGE_* variables.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::BytesMut;
use edgefilter::io::azure::{AzureIdentity, DEFAULT_TOKEN_TTL};
use edgefilter::io::outbox::{Durability, Outbox};
use edgefilter::mqtt::azure::{Inbound, ModuleTopics};
use edgefilter::pipeline::verdict::{Evaluator, FieldPath};
use rumqttc::mqttbytes::v4::{Connect, Login, Packet, PubAck, Publish, Subscribe, SubscribeFilter};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let durability = match args.next().as_deref() {
        Some("written") => Durability::Written,
        _ => Durability::Fsync,
    };
    let dir = args.next().unwrap_or_else(|| "outbox".into());
    let identity = AzureIdentity::require_from_env(|k| std::env::var(k).ok())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let creds = identity.connect_credentials(now, DEFAULT_TOKEN_TTL).await?;
    let tls = tokio_rustls::TlsConnector::from(identity.tls_config().await?);
    let tcp = tokio::net::TcpStream::connect((identity.gateway_host_name.as_str(), 8883)).await?;
    tcp.set_nodelay(true)?;
    let stream = tls.connect(identity.server_name()?, tcp).await?;
    let (mut rd, mut wr) = tokio::io::split(stream);

    let topics = ModuleTopics::new(&identity.device_id, &identity.module_id);
    let mut out = BytesMut::new();
    let mut connect = Connect::new(creds.client_id.clone());
    connect.clean_session = false;
    connect.keep_alive = 60;
    connect.login = Some(Login::new(creds.username.clone(), creds.password.clone()));
    Packet::Connect(connect).write(&mut out, usize::MAX)?;
    let mut sub = Subscribe::new_many([SubscribeFilter::new(
        topics.input_filter(),
        QoS::AtLeastOnce,
    )]);
    sub.pkid = 1;
    Packet::Subscribe(sub).write(&mut out, usize::MAX)?;

    let (mut outbox, recovery) = Outbox::open(dir.as_ref(), durability, 16 << 20)?;
    // Alerts in flight to edgeHub: (packet id, outbox seq), in publish order.
    let mut in_flight: VecDeque<(u16, u64)> = VecDeque::new();
    let mut next_pkid: u16 = 2;
    let mut publish = |out: &mut BytesMut, topic: &[u8], payload: &[u8], seq: u64| {
        let pkid = next_pkid;
        next_pkid = next_pkid.checked_add(1).unwrap_or(2).max(2);
        let mut p = Publish::new(String::from_utf8_lossy(topic), QoS::AtLeastOnce, payload);
        p.pkid = pkid;
        let _ = Packet::Publish(p).write(out, usize::MAX);
        (pkid, seq)
    };
    for p in &recovery.pending {
        in_flight.push_back(publish(&mut out, &p.topic, &p.payload, p.seq));
    }
    wr.write_all(&out).await?;
    out.clear();

    let mut evaluator = Evaluator::new(FieldPath::parse("machine.temperature")?, 262_144);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        match Packet::read(&mut buf, 1 << 20) {
            Ok(Packet::Publish(p)) => {
                if let Ok(Inbound::Input(input)) = topics.classify(&p.topic) {
                    if input.input_name == "input1"
                        && evaluator.evaluate(&p.payload, 25.0).is_alert()
                    {
                        let topic = topics.alert_topic(&p.topic, "output1")?;
                        let seq = outbox.append(topic.as_bytes(), &p.payload)?;
                        // The policy: the alert is durable before its input is acknowledged.
                        outbox.commit()?;
                        in_flight.push_back(publish(&mut out, topic.as_bytes(), &p.payload, seq));
                    }
                }
                if p.qos == QoS::AtLeastOnce {
                    Packet::PubAck(PubAck::new(p.pkid)).write(&mut out, usize::MAX)?;
                }
            }
            Ok(Packet::PubAck(a)) => {
                if let Some(&(pkid, seq)) = in_flight.front() {
                    if pkid == a.pkid {
                        in_flight.pop_front();
                        outbox.done(seq)?;
                    }
                }
            }
            Ok(Packet::ConnAck(a)) if a.code as u8 != 0 => bail!("CONNACK {:?}", a.code),
            Ok(_) => {}
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                if !out.is_empty() {
                    wr.write_all(&out).await?;
                    out.clear();
                }
                let n = tokio::time::timeout(Duration::from_secs(90), rd.read_buf(&mut buf))
                    .await
                    .context("no packet for 90 s")??;
                if n == 0 {
                    bail!("connection closed");
                }
            }
            Err(e) => bail!("malformed packet: {e}"),
        }
    }
}
