//! `edgehub-standin`: the edgeHub and workload API stand-in as a process (test tooling for
//! the benchmarks and the Python SDK peer; the Rust tests use the library in-process).
//!
//! It generates a CA and edgeHub's server certificate for `--gateway-host`, a key per
//! module, serves each module's workload API at `<dir>/<module>/workload.sock`, listens for
//! modules on `--gateway-port` (edgeHub's 8883 by default: run it in its own network
//! namespace, e.g. `unshare -n`, where that port is free and needs no privilege) and for
//! sources and sinks on `--side-port`, then prints one JSON line:
//! `{"gateway_port":…,"side_port":…,"ca":"<dir>/ca.pem","modules":{"<mod>":{"env":{…}}}}`
//! where `env` is the IoT Edge runtime's environment for that module. Every 100 ms it writes
//! each module's counters to `<dir>/stats.json`; on SIGTERM or SIGINT it prints them as one
//! JSON line and exits.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use edgehub_standin::workload::{self, Behaviour, API_VERSION};
use edgehub_standin::{new_ca, server_cert, Config, EdgeHub, Expected};
use serde_json::json;

/// The generation id every module gets (`IOTEDGE_MODULEGENERATIONID`).
const GENERATION_ID: &str = "gen1";

#[derive(Parser, Debug)]
#[command(
    name = "edgehub-standin",
    about = "edgeHub stand-in with edgeHub's delivery semantics"
)]
struct Cli {
    /// Where the CA and the workload sockets go.
    #[arg(long)]
    dir: PathBuf,
    /// IoT hub host name (`IOTEDGE_IOTHUBHOSTNAME`).
    #[arg(long, default_value = "hub.test")]
    hub: String,
    /// The edge device's id, raw (`IOTEDGE_DEVICEID`).
    #[arg(long, default_value = "dev1")]
    device: String,
    /// A module that may connect (repeat for several).
    #[arg(long = "module", required = true)]
    modules: Vec<String>,
    /// edgeHub's host name: its certificate's name and `IOTEDGE_GATEWAYHOSTNAME`.
    #[arg(long, default_value = "localhost")]
    gateway_host: String,
    /// Port for modules (TLS). 0 = any free port.
    #[arg(long, default_value_t = 8883)]
    gateway_port: u16,
    /// Port for sources and sinks (plain MQTT). 0 = any free port.
    #[arg(long, default_value_t = 0)]
    side_port: u16,
    /// Time edgeHub takes to store a module's message before its PUBACK.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    store_delay: Duration,
    /// How long a delivered message waits for the module's PUBACK (edgeHub: 30 s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ack_timeout: Duration,
    /// Initial desired properties of every module twin (JSON object).
    #[arg(long, default_value = r#"{"TemperatureThreshold":25}"#)]
    desired: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let desired: serde_json::Value =
        serde_json::from_str(&cli.desired).context("--desired is not JSON")?;
    std::fs::create_dir_all(&cli.dir).with_context(|| format!("creating {:?}", cli.dir))?;
    let ca = new_ca("edgehub-standin CA");
    let ca_path = cli.dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).context("writing ca.pem")?;
    let (chain, server_key) = server_cert(&cli.gateway_host, &ca);

    let mut expected = Vec::new();
    let mut modules = serde_json::Map::new();
    for (i, module) in cli.modules.iter().enumerate() {
        let key: Vec<u8> = format!("module key {i} {module} {}", std::process::id()).into_bytes();
        let dir = cli.dir.join(module);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("workload.sock");
        workload::serve_at(
            Behaviour::daemon(&key, module, GENERATION_ID, &ca.pem),
            &socket,
        )
        .with_context(|| format!("serving the workload API at {socket:?}"))?;
        modules.insert(
            module.clone(),
            json!({ "env": {
                "IOTEDGE_IOTHUBHOSTNAME": cli.hub,
                "IOTEDGE_DEVICEID": cli.device,
                "IOTEDGE_MODULEID": module,
                "IOTEDGE_GATEWAYHOSTNAME": cli.gateway_host,
                "IOTEDGE_MODULEGENERATIONID": GENERATION_ID,
                "IOTEDGE_WORKLOADURI": format!("unix://{}", socket.display()),
                "IOTEDGE_APIVERSION": API_VERSION,
                "IOTEDGE_AUTHSCHEME": "sasToken",
            }}),
        );
        expected.push(Expected {
            hub: cli.hub.clone(),
            device: cli.device.clone(),
            module: module.clone(),
            key,
        });
    }
    let mut config = Config::new(&cli.hub, expected);
    config.store_delay = cli.store_delay;
    config.ack_timeout = cli.ack_timeout;
    config.desired = desired;
    let tls = tokio::net::TcpListener::bind(("127.0.0.1", cli.gateway_port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", cli.gateway_port))?;
    let side = tokio::net::TcpListener::bind(("127.0.0.1", cli.side_port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", cli.side_port))?;
    let hub = EdgeHub::start_on(config, chain, server_key, tls, side)?;
    println!(
        "{}",
        json!({
            "gateway_port": hub.tls_addr.port(),
            "side_port": hub.side_addr.port(),
            "ca": ca_path,
            "modules": modules,
        })
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // The counters, every 100 ms, to <dir>/stats.json (written aside, then renamed).
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (stats_file, stats_tmp) = (cli.dir.join("stats.json"), cli.dir.join("stats.json.tmp"));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let text = stats(&hub, &cli).to_string();
                if std::fs::write(&stats_tmp, text).is_ok() {
                    let _ = std::fs::rename(&stats_tmp, &stats_file);
                }
            }
        }
    }
    println!("{}", json!({ "stats": stats(&hub, &cli) }));
    Ok(())
}

/// Each module's counters and reported properties.
fn stats(hub: &EdgeHub, cli: &Cli) -> serde_json::Value {
    let mut stats = serde_json::Map::new();
    for module in &cli.modules {
        let id = format!("{}/{module}", cli.device);
        if let Some(s) = hub.stats(&id) {
            let d = s.delivery;
            stats.insert(
                module.clone(),
                json!({
                    "stored": d.stored, "sent": d.sent, "redelivered": d.redelivered,
                    "completed": d.completed, "timeouts": d.timeouts,
                    "out_of_order_acks": d.out_of_order_acks, "unknown_acks": d.unknown_acks,
                    "unsubscribed": d.unsubscribed, "backlog": s.backlog,
                    "upstream": s.upstream, "dropped": s.dropped, "too_large": s.too_large,
                    "connections": s.connections,
                    "reported": hub.reported(&id),
                }),
            );
        }
    }
    serde_json::Value::Object(stats)
}
