//! Shared fixtures of the integration tests: a real mosquitto started on an ephemeral port,
//! the edgefilter binary as a child process (so tests can SIGTERM and SIGKILL it), the
//! filter in-process (so tests can read its counters), and MQTT clients (rumqttc) that
//! publish telemetry and collect what arrives — with events, not sleeps, as synchronisation.

#![allow(dead_code)]

pub mod azure;
mod mosquitto;

// tests/cluster.rs includes these fixtures too and uses only some of them.
#[allow(unused_imports)]
pub use mosquitto::{free_port, wait_listening, Mosquitto};

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

/// The edgefilter binary as a child process.
pub struct FilterProcess {
    pub child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FilterProcess {
    /// `edgefilter run <args>` with this process's environment (and `RUST_LOG=info`).
    pub fn spawn(args: &[&str]) -> FilterProcess {
        Self::spawn_with(None, args)
    }

    /// `edgefilter run <args>` with exactly the environment `env` (no `IOTEDGE_*` variable
    /// leaks in from outside).
    pub fn spawn_clean_env(env: &[(&str, String)], args: &[&str]) -> FilterProcess {
        Self::spawn_with(Some(env), args)
    }

    fn spawn_with(env: Option<&[(&str, String)]>, args: &[&str]) -> FilterProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("edgefilter.log");
        let out = std::fs::File::create(&log).unwrap();
        // EDGEFILTER_BIN: run the tests against another build (e.g. to see a regression test
        // fail on the commit before its fix).
        let bin = std::env::var_os("EDGEFILTER_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_edgefilter").into());
        let mut cmd = Command::new(bin);
        cmd.arg("run").args(args);
        if let Some(env) = env {
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        // Under IoT Edge the default policy keeps an outbox; one per process (a test that
        // restarts a module passes its own --outbox-dir, which wins over the variable).
        if std::env::var_os("EDGEFILTER_OUTBOX_DIR").is_none()
            && !env.is_some_and(|e| e.iter().any(|(k, _)| *k == "EDGEFILTER_OUTBOX_DIR"))
        {
            cmd.env("EDGEFILTER_OUTBOX_DIR", dir.path().join("outbox"));
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        FilterProcess {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (the process reports progress there); panics if
    /// the process exits first or after `within`.
    pub async fn wait_log(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "edgefilter exited ({status}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "edgefilter did not log {needle:?} within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit status (panics after `within`).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "edgefilter did not exit within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FilterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `edgefilter run` with the given flags once, to completion (for CLI error tests).
pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgefilter"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the binary with `args`, expects exit status `code` and one error line on stderr naming
/// `needle` (no panic, no usage dump; informational log lines may precede it). Returns it.
pub fn one_line_error(args: &[&str], code: i32, needle: &str) -> String {
    let out = run_cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.starts_with("edgefilter: "), "{args:?}: {stderr}");
    assert!(
        last.contains(needle),
        "{args:?}: expected {needle:?} in {last:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    // One error line, no usage dump (informational log lines may precede it).
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("edgefilter: "))
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("Usage:"), "{args:?}: {stderr}");
    last.to_string()
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub retain: bool,
}

/// Everything a subscriber received, with a notification per message.
#[derive(Default)]
pub struct Inbox {
    pub messages: Mutex<Vec<Received>>,
    notify: Notify,
}

impl Inbox {
    pub fn push(&self, r: Received) {
        self.messages.lock().unwrap().push(r);
        self.notify.notify_waiters();
    }

    pub fn snapshot(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    pub fn on(&self, prefix: &str) -> Vec<Received> {
        self.snapshot()
            .into_iter()
            .filter(|m| m.topic.starts_with(prefix))
            .collect()
    }

    /// Waits until `pred` holds over the messages so far (or panics after `within`).
    pub async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            if pred(&self.messages.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let msgs = self.snapshot();
                panic!(
                    "timed out waiting for {what}; received {} messages: {:?}",
                    msgs.len(),
                    msgs.iter()
                        .rev()
                        .take(5)
                        .map(|m| (&m.topic, String::from_utf8_lossy(&m.payload)))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits until at least `n` messages arrived on topics starting with `prefix`.
    pub async fn wait_count(&self, prefix: &str, n: usize, within: Duration) {
        self.wait_until(within, &format!("{n} messages on {prefix}"), |m| {
            m.iter().filter(|r| r.topic.starts_with(prefix)).count() >= n
        })
        .await
    }
}

/// An MQTT 5 client (rumqttc) with its event loop on a task; subscribed filters land in the
/// inbox. `subscribe` waits for the SUBACK.
pub struct Client5 {
    pub client: rumqttc::v5::AsyncClient,
    pub inbox: Arc<Inbox>,
    subacks: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Client5 {
    pub async fn connect(port: u16, id: &str) -> Client5 {
        use rumqttc::v5::{Event, Incoming, MqttOptions};
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(Some(16 << 20));
        let (client, mut events) = rumqttc::v5::AsyncClient::new(o, 10_000);
        let inbox = Arc::new(Inbox::default());
        let subacks = Arc::new(Notify::new());
        let connected = Arc::new(Notify::new());
        let (i2, s2, c2) = (inbox.clone(), subacks.clone(), connected.clone());
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let props = p.properties.clone().unwrap_or_default();
                        i2.push(Received {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.clone(),
                            user_properties: props.user_properties,
                            content_type: props.content_type,
                            retain: p.retain,
                        });
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => s2.notify_one(),
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => c2.notify_one(),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected.notified())
            .await
            .expect("test client connects");
        Client5 {
            client,
            inbox,
            subacks,
            task,
        }
    }

    pub async fn subscribe(&self, filter: &str) {
        let notified = self.subacks.notified();
        self.client
            .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), notified)
            .await
            .expect("SUBACK");
    }

    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        user_properties: &[(&str, &str)],
    ) {
        let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
            user_properties: user_properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.into(),
                props,
            )
            .await
            .unwrap();
    }

    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Bytes>) {
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                true,
                payload.into(),
            )
            .await
            .unwrap();
    }
}

impl Drop for Client5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An MQTT 3.1.1 client, same shape as [`Client5`].
pub struct Client4 {
    pub client: rumqttc::AsyncClient,
    pub inbox: Arc<Inbox>,
    subacks: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Client4 {
    pub async fn connect(port: u16, id: &str) -> Client4 {
        use rumqttc::{Event, MqttOptions, Packet};
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(16 << 20, 16 << 20);
        o.set_inflight(1000);
        let (client, mut events) = rumqttc::AsyncClient::new(o, 10_000);
        let inbox = Arc::new(Inbox::default());
        let subacks = Arc::new(Notify::new());
        let connected = Arc::new(Notify::new());
        let (i2, s2, c2) = (inbox.clone(), subacks.clone(), connected.clone());
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => i2.push(Received {
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        user_properties: Vec::new(),
                        content_type: None,
                        retain: p.retain,
                    }),
                    Ok(Event::Incoming(Packet::SubAck(_))) => s2.notify_one(),
                    Ok(Event::Incoming(Packet::ConnAck(_))) => c2.notify_one(),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected.notified())
            .await
            .expect("test client connects");
        Client4 {
            client,
            inbox,
            subacks,
            task,
        }
    }

    pub async fn subscribe(&self, filter: &str) {
        let notified = self.subacks.notified();
        self.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), notified)
            .await
            .expect("SUBACK");
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload)
            .await
            .unwrap();
    }
}

impl Drop for Client4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A sensor-shaped body with the given machine temperature and a sequence number.
pub fn body(seq: u64, temperature: f64) -> String {
    format!(
        r#"{{"machine":{{"temperature":{temperature},"pressure":1.5}},"ambient":{{"temperature":21.1,"humidity":25}},"timeCreated":"2026-11-26T07:00:00.1234567Z","seq":{seq}}}"#
    )
}

/// The `seq` of a body written by [`body`].
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v["seq"].as_u64()
}

/// The filter in-process: settings from `edgefilter run` flags; returns the shared counters
/// and a stop handle. The task ends after the drain.
pub struct InProcess {
    pub shared: edgefilter::run::Shared,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<(), edgefilter::run::RunError>>,
}

impl InProcess {
    pub async fn start(flags: &[&str]) -> InProcess {
        use clap::Parser;
        let mut argv = vec![
            "edgefilter",
            "run",
            "--metrics-addr",
            "off",
            "--stats-interval",
            "0",
        ];
        argv.extend_from_slice(flags);
        let edgefilter::cli::Command::Run(args) =
            edgefilter::cli::Cli::try_parse_from(argv).unwrap().command
        else {
            unreachable!()
        };
        let settings = args.validate().unwrap();
        let shared = edgefilter::run::Shared::new(settings.threshold);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(edgefilter::run::run(settings, shared.clone(), rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !shared.metrics.is_connected() {
            assert!(
                !task.is_finished(),
                "the filter stopped before connecting: {:?}",
                task.await
            );
            assert!(
                Instant::now() < deadline,
                "the filter did not connect within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        InProcess { shared, stop, task }
    }

    /// Signals shutdown and waits for the drain.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("drains")
            .unwrap()
            .unwrap();
    }
}

/// Waits until `ok` holds, polling every 20 ms; fails the test after `within`. For counters
/// the filter updates after the event a test can see: a publish counts as published on the
/// broker's PUBACK, which reaches the filter after a subscriber may already hold the message.
pub async fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP relay on an ephemeral port in front of `upstream` that holds every byte coming back
/// from upstream for `delay` (in order; the other direction passes at once). It stands in for
/// a slow or distant broker link, so a test can see what a client does while its broker's
/// replies (CONNACK, PUBACK) are on the way.
pub struct DelayProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(upstream: u16, delay: Duration) -> DelayProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0
                            || tx
                                .send((Instant::now() + delay, buf[..n].to_vec()))
                                .is_err()
                        {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((due, bytes)) = rx.recv().await {
                        tokio::time::sleep_until(due.into()).await;
                        if cw.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                });
            }
        });
        DelayProxy { port, task }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET path` on `addr` over HTTP/1.0 (std only): the status code and the body. Used for
/// `/metrics`, `/healthz` and Prometheus' HTTP API.
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Polls `/healthz` on `metrics` until it answers 200 (connected to the broker).
pub fn wait_healthy(metrics: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if matches!(http_get(metrics, "/healthz"), Ok((200, _))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs loadgen in-process (the workspace's own stress tester) with `args` (after the program
/// name) and returns its summary: exact accounting of every message's verdict.
pub async fn loadgen(args: &[&str]) -> loadgen::report::Summary {
    let argv = std::iter::once("loadgen").chain(args.iter().copied());
    let args = <loadgen::cli::Args as clap::Parser>::try_parse_from(argv).unwrap();
    let cfg = args.validate().unwrap();
    tokio::task::spawn_blocking(move || loadgen::run::run(&cfg))
        .await
        .unwrap()
        .unwrap()
        .summary
}

/// One loadgen run against `broker` (after `--broker URL --no-progress --drain-timeout 20s`,
/// these arguments); the summary must pass with nothing lost or unexpected, of any kind
/// (alerts, clearing messages, summaries).
pub async fn loadgen_run(broker: &Mosquitto, args: &[&str]) -> loadgen::report::Summary {
    use clap::Parser;
    let url = broker.url();
    let mut argv = vec![
        "loadgen",
        "--broker",
        &url,
        "--no-progress",
        "--drain-timeout",
        "20s",
    ];
    argv.extend_from_slice(args);
    let cfg = loadgen::cli::Args::try_parse_from(argv)
        .unwrap()
        .validate()
        .unwrap();
    let outcome = tokio::task::spawn_blocking(move || loadgen::run::run(&cfg))
        .await
        .unwrap()
        .unwrap();
    let s = outcome.summary;
    assert!(s.passed(), "{}", s.table());
    assert_eq!(
        (s.lost, s.unexpected, s.clears.lost, s.clears.unexpected),
        (0, 0, 0, 0),
        "{}",
        s.table()
    );
    assert_eq!(
        (s.summaries.lost, s.summaries.unexpected),
        (0, 0),
        "{}",
        s.table()
    );
    s
}
