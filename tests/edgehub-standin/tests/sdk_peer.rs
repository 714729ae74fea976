//! Smoke test of the seed's own module (`scripts/peers/seed_module.py`: the tutorial's logic
//! on the real Python device SDK, azure-iot-device 2.14) against the edgeHub stand-in: the
//! SDK reads the IoT Edge runtime's environment, signs its token through the workload API
//! stand-in, trusts the stand-in's CA from the trust bundle, connects to edgeHub's port 8883,
//! receives input1 one message at a time and sends its alerts to output1. It shows the peer
//! the benchmarks run (`scripts/edge_path.py`) really works on this path, and that the SDK
//! and the stand-in agree on the wire (raw device id `gw:01@plant` in topics).
//!
//! The stand-in plays edgeHub and the security daemon (neither can run here). The SDK
//! connects to port 8883, fixed in its transport: this test moves its own process into a
//! fresh network namespace (root; `unshare(CLONE_NEWNET)` before any thread starts) where
//! 127.0.0.1:8883 is free. Needs the SDK venv: `scripts/peers/setup.sh` (scripts/test.sh
//! runs it and sets EDGEFILTER_PEERS_VENV).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use edgehub_standin::peer::{run_with_seed, seed_module_script};
use edgehub_standin::workload::{start_stand_in, Behaviour};
use edgehub_standin::{new_ca, server_cert, Config, EdgeHub, Event, Expected};

const DEVICE: &str = "gw:01@plant";
const MODULE: &str = "seed";
const KEY: &[u8] = b"the seed module's key";

#[test]
fn the_tutorial_module_on_the_python_sdk_filters_through_the_stand_in() {
    run_with_seed(run);
}

async fn run(python: PathBuf) {
    let ca = new_ca("IoT Edge device CA");
    let (chain, key) = server_cert("localhost", &ca);
    let config = Config::new(
        "hub.test",
        vec![Expected {
            hub: "hub.test".into(),
            device: DEVICE.into(),
            module: MODULE.into(),
            key: KEY.to_vec(),
        }],
    );
    let tls = tokio::net::TcpListener::bind("127.0.0.1:8883")
        .await
        .unwrap();
    let side = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = EdgeHub::start_on(config, chain, key, tls, side).unwrap();
    let daemon = start_stand_in(Behaviour::daemon(KEY, MODULE, "gen1", &ca.pem));
    let script = seed_module_script();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(python)
        .arg(script)
        .env_clear()
        .envs([
            ("IOTEDGE_IOTHUBHOSTNAME", "hub.test".to_string()),
            ("IOTEDGE_DEVICEID", DEVICE.to_string()),
            ("IOTEDGE_MODULEID", MODULE.to_string()),
            ("IOTEDGE_GATEWAYHOSTNAME", "localhost".to_string()),
            ("IOTEDGE_MODULEGENERATIONID", "gen1".to_string()),
            (
                "IOTEDGE_WORKLOADURI",
                format!("unix://{}", daemon.socket.display()),
            ),
            (
                "IOTEDGE_APIVERSION",
                edgehub_standin::workload::API_VERSION.to_string(),
            ),
            ("IOTEDGE_AUTHSCHEME", "sasToken".to_string()),
        ])
        .stdout(log.reopen().unwrap())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    let output = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let within = Duration::from_secs(60);
    hub.wait_until(within, |c, _| c.iter().any(|c| c.verdict.is_ok()))
        .await
        .unwrap_or_else(|e| panic!("the SDK never connected: {e}\n{}", output()));
    let connect = hub
        .connects()
        .into_iter()
        .find(|c| c.verdict.is_ok())
        .unwrap();
    assert_eq!(connect.client_id, "gw:01@plant/seed");

    let base = format!("devices/{DEVICE}/modules/{MODULE}");
    for seq in 0..30u64 {
        let t = if seq % 3 == 2 { "31.5" } else { "20.5" };
        let body = format!(
            r#"{{"machine":{{"temperature":{t},"pressure":1.5}},"ambient":{{"temperature":21.1,"humidity":25}},"timeCreated":"2026-11-26T07:00:00Z"}}"#
        );
        assert!(hub.route_to_input(
            &format!(
                "{base}/inputs/input1/sequenceNumber={seq}&%24.ct=application%2Fjson&%24.ce=utf-8\
                 &%24.cdid=gw%3A01%40plant&%24.cmid=SimulatedTemperatureSensor"
            ),
            Bytes::from(body),
        ));
    }
    let alerts = |ev: &[Event]| -> Vec<String> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Upstream { topic, .. } => Some(topic.clone()),
                _ => None,
            })
            .collect()
    };
    hub.wait_until(within, |_, ev| alerts(ev).len() >= 10)
        .await
        .unwrap_or_else(|e| panic!("no alerts: {e}\n{}", output()));
    let got = alerts(&hub.events());
    assert_eq!(got.len(), 10, "{got:?}");
    // The SDK's encoding: raw ids, $.on first, then the system and the custom properties it
    // was handed ($.cdid and $.cmid among them), sorted.
    for topic in &got {
        assert!(
            topic.starts_with(&format!("{base}/messages/events/%24.on=output1&")),
            "{topic}"
        );
        assert!(topic.contains("MessageType=Alert"), "{topic}");
    }
    assert!(got[0].contains("sequenceNumber=2"), "{}", got[0]);
    // The SDK acknowledges each input on receipt: all 30 leave edgeHub's store.
    let deadline = std::time::Instant::now() + within;
    while hub.stats("gw:01@plant/seed").unwrap().delivery.completed < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            hub.stats("gw:01@plant/seed")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hub.stats("gw:01@plant/seed").unwrap().dropped, 0);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    // Its own counters (printed on SIGTERM): every message received (the last one alerted, so
    // its handler ran), none failed. (Its alert count may lag the upstream by the one whose
    // PUBACK was on its way.)
    let out = output();
    assert!(
        out.contains("\"received\": 30") && out.contains("\"errors\": 0"),
        "{out}"
    );
}
