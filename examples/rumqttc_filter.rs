//! Baseline for BENCHMARKS.md: the same filter written the obvious way on rumqttc's own event
//! loop (`AsyncClient` + `EventLoop`, manual acks), with edgefilter's verdict. It exists to
//! measure what owning the connection loop on rumqttc's packet codec gains (one write per
//! loop turn for every packet of that turn): rumqttc
//! flushes the socket once per request and reads at most ten packets per poll.
//!
//! It is a generous baseline: it acknowledges an input as soon as its alert is handed to the
//! client (not when the broker acknowledged the alert), which is less work than edgefilter's
//! at-least-once. MQTT 3.1.1, topics `telemetry/#` → `alerts/<topic>`, threshold 25.
//!
//! `cargo run --release --example rumqttc_filter -- mqtt://127.0.0.1:1883 [qos]`

use std::time::Duration;

use edgefilter::mqtt::broker_url::BrokerUrl;
use edgefilter::pipeline::verdict::{Evaluator, FieldPath};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = BrokerUrl::parse(
        &args
            .next()
            .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into()),
    )?;
    let qos = match args.next().as_deref() {
        Some("0") => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    };
    let mut options = MqttOptions::new("rumqttc-filter", url.host.clone(), url.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_inflight(1000);
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_request_channel_capacity(10_000);
    let (client, mut events) = AsyncClient::new(options, 10_000);
    client.subscribe("telemetry/#", qos).await?;
    let mut evaluator = Evaluator::new(FieldPath::parse("machine.temperature")?, 262_144);
    // The event loop must keep being polled while the filter publishes (a full request
    // channel would otherwise deadlock it): one task polls, this one decides.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("rumqttc_filter: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return Ok(()) },
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if evaluator.evaluate(&p.payload, 25.0).is_alert() {
            client
                .publish_bytes(format!("alerts/{}", p.topic), qos, false, p.payload.clone())
                .await?;
        }
        if p.qos != QoS::AtMostOnce {
            client.ack(&p).await?;
        }
    }
}
