//! The seed's alert properties, side by side (io: MQTT in → verdict → MQTT out under IoT
//! Edge): the tutorial's module on the real Python device SDK (`scripts/peers/seed_module.py`,
//! azure-iot-device 2.14) and edgefilter, two modules of one device, get the same inputs with
//! every property edgeHub hands a module, and the property bags of their alerts — decoded, and
//! as text — must be the same.
//!
//! The edgeHub stand-in (`tests/edgehub-standin`) stands in for edgeHub and the workload API
//! (neither can run here). The SDK connects to port 8883, fixed in its transport, so this
//! test moves its process into a fresh network namespace (root; `unshare(CLONE_NEWNET)` before
//! any thread starts) where 127.0.0.1:8883 is free; edgefilter, its child, shares it. Needs
//! the SDK venv: `scripts/peers/setup.sh` (scripts/test.sh runs it and sets
//! EDGEFILTER_PEERS_VENV).

use crate::common;
use crate::common::azure as azure_common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use azure_common::{runtime_env, start_stand_in, Behaviour};
use bytes::Bytes;
use common::{Client4, FilterProcess};
use edgefilter::mqtt::azure::propbag::PropertyBag;
use edgehub_standin::peer::{run_with_seed, seed_module_script};
use edgehub_standin::{new_ca, server_cert, Config, EdgeHub, Expected};

const HUB: &str = "hub.test";
const DEVICE: &str = "gw:01@plant";
const KEY: &[u8] = b"a module key";
const WAIT: Duration = Duration::from_secs(60);

/// Property bags as edgeHub writes them on an input topic: the sensor's; every property
/// edgeHub's `OutgoingSystemPropertiesMap` can carry, with application properties holding
/// characters that need encoding and a `MessageType` the alert replaces; empty values.
const BAGS: [&str; 3] = [
    "sequenceNumber=0&batchId=6f1ed5f2-4b9c-4a7a-8f7e-0c2a1d3e5b7f&%24.ct=application%2Fjson\
     &%24.ce=utf-8&%24.cdid=gw%3A01%40plant&%24.cmid=SimulatedTemperatureSensor",
    "%24.exp=2030-01-01T00%3A00%3A00.0000000Z&%24.cid=corr-1&%24.mid=msg-1\
     &%24.to=%2Fdevices%2Fgw%3A01%40plant%2Fmodules%2Fedgefilter%2Finputs%2Finput1\
     &%24.uid=user-1&ack=full&%24.ct=application%2Fjson&%24.ce=utf-8\
     &%24.schema=telemetry-v2&iothub-operation=telemetry\
     &%24.ctime=2026-11-26T07%3A00%3A00.1234567Z&%24.cdid=gw%3A01%40plant\
     &%24.cmid=SimulatedTemperatureSensor&%24.sub=thermostat1&sequenceNumber=1\
     &MessageType=Telemetry&unit=%C2%B0C&note=a%20b%26c%3Dd%2Fe%2Bf",
    "%24.ct=&%24.mid=&empty=&sequenceNumber=2",
];

#[test]
fn alerts_carry_the_same_properties_as_the_seeds() {
    run_with_seed(run);
}

/// The property bags of the messages a module sent upstream, in order.
fn bags(sink: &Client4, module: &str) -> Vec<String> {
    let prefix = format!("devices/{DEVICE}/modules/{module}/messages/events/");
    sink.inbox
        .snapshot()
        .into_iter()
        .filter_map(|m| m.topic.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

async fn run(python: PathBuf) {
    let ca = new_ca("IoT Edge device CA");
    let (chain, key) = server_cert("localhost", &ca);
    let modules = ["seed", "edgefilter"];
    let config = Config::new(
        HUB,
        modules
            .iter()
            .map(|m| Expected {
                hub: HUB.into(),
                device: DEVICE.into(),
                module: m.to_string(),
                key: KEY.to_vec(),
            })
            .collect(),
    );
    let tls = tokio::net::TcpListener::bind("127.0.0.1:8883")
        .await
        .unwrap();
    let side = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub = EdgeHub::start_on(config, chain, key, tls, side).unwrap();
    let sink = Client4::connect(hub.side_addr.port(), "iothub").await;
    sink.subscribe("devices/+/modules/+/messages/events/#")
        .await;
    let daemons: Vec<_> = modules
        .iter()
        .map(|m| start_stand_in(Behaviour::daemon(KEY, m, "gen1", &ca.pem)))
        .collect();

    // The seed, as the tutorial deployed it.
    let log = tempfile::NamedTempFile::new().unwrap();
    let script = seed_module_script();
    let mut seed = Command::new(python)
        .arg(script)
        .env_clear()
        .envs(runtime_env(
            HUB,
            DEVICE,
            "seed",
            "localhost",
            "gen1",
            &daemons[0].socket,
        ))
        .stdout(log.reopen().unwrap())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    let seed_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    // edgefilter, with the runtime's environment and its defaults.
    let env = runtime_env(
        HUB,
        DEVICE,
        "edgefilter",
        "localhost",
        "gen1",
        &daemons[1].socket,
    );
    let filter = FilterProcess::spawn_clean_env(&env, &["--metrics-addr", "off"]);

    for (seq, bag) in BAGS.iter().enumerate() {
        let body = format!(r#"{{"machine":{{"temperature":40.5}},"seq":{seq}}}"#);
        for module in modules {
            let topic = format!("devices/{DEVICE}/modules/{module}/inputs/input1/{bag}");
            assert!(hub.route_to_input(&topic, Bytes::from(body.clone())));
        }
    }
    let both = |m: &[common::Received]| {
        modules.iter().all(|module| {
            let prefix = format!("devices/{DEVICE}/modules/{module}/messages/events/");
            m.iter().filter(|r| r.topic.starts_with(&prefix)).count() >= BAGS.len()
        })
    };
    let waited = tokio::time::timeout(WAIT, async {
        while !both(&sink.inbox.snapshot()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (from_seed, from_filter) = (bags(&sink, "seed"), bags(&sink, "edgefilter"));
    assert!(
        waited.is_ok(),
        "alerts: seed {from_seed:?}, edgefilter {from_filter:?}\nseed log:\n{}\nedgefilter log:\n{}",
        seed_log(),
        filter.log()
    );
    assert_eq!(from_seed.len(), from_filter.len());
    for (i, (s, f)) in from_seed.iter().zip(&from_filter).enumerate() {
        let decoded = |b: &str| -> Vec<(String, String)> {
            PropertyBag::decode(b)
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(decoded(f), decoded(s), "input {i}: edgefilter ≠ the seed");
        assert_eq!(f, s, "input {i}: the same text, as the SDK encodes it");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &seed.id().to_string()])
        .status();
    let _ = seed.wait();
    drop(filter);
}
