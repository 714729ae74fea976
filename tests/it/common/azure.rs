//! Stand-ins for the parts of an Azure IoT Edge device that cannot run here (tests of the io
//! layer, before MQTT in): the CAs and edgeHub's server certificate, the security daemon's
//! workload API, edgeHub's authenticating front door, and the module as a child process with
//! the runtime's environment.
//!
//! - the CA, edgeHub's certificate, the SAS check and the workload API stand-in come from
//!   the `edgehub-standin` crate (`tests/edgehub-standin`), shared with the edgeHub stand-in
//!   that has edgeHub's delivery semantics (`azure_standin.rs`);
//! - [`EdgeHubFront`]: what edgeHub does before any MQTT routing — terminates TLS with a
//!   certificate for the gateway host name, reads the CONNECT, checks client id, username and
//!   the SAS token (signature recomputed with the module key, expiry with edgeHub's 5 minutes of
//!   skew) and refuses with CONNACK 5 when they are wrong. Accepted connections are spliced to
//!   a real mosquitto, which then plays edgeHub's broker role (pipelined delivery, not
//!   edgeHub's one at a time: `azure_standin.rs` has that).
//!
//! Shared by `azure_workload.rs` and `azure_edge.rs` (included with `#[path]`); it depends on
//! nothing in `common/mod.rs`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::Packet;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

// Re-exported for the test files that include this one (each uses a different part).
#[allow(unused_imports)]
pub use edgehub_standin::workload::{start_stand_in, Behaviour, Seen, StandIn, API_VERSION};
#[allow(unused_imports)]
pub use edgehub_standin::{
    hmac_base64, new_ca, server_cert, server_config, token_fields, unix_now, verify_sas, Ca,
    Expected, SeenConnect, SKEW_SECS,
};

// ---------------------------------------------------------------------------------------------
// edgeHub's front door

#[derive(Default)]
struct Record {
    connects: Mutex<Vec<SeenConnect>>,
    /// TLS handshakes that failed, with the server side's error.
    tls_failures: Mutex<Vec<String>>,
    /// When the front door closed the module's socket, by the index of its CONNECT.
    closes: Mutex<Vec<(usize, Instant)>>,
    notify: Notify,
}

/// edgeHub's TLS and authentication in front of a plain mosquitto listener; optionally a
/// delay on everything the broker sends the module (a network hop, so that work is in flight
/// whenever the module reconnects).
pub struct EdgeHubFront {
    pub port: u16,
    record: Arc<Record>,
    task: tokio::task::JoinHandle<()>,
}

impl EdgeHubFront {
    pub async fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        upstream: SocketAddr,
        expected: Expected,
    ) -> EdgeHubFront {
        Self::start_with_delay(chain, key, upstream, expected, Duration::ZERO).await
    }

    /// Like [`Self::start`]; the broker's bytes reach the module `delay` late.
    pub async fn start_with_delay(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        upstream: SocketAddr,
        expected: Expected,
        delay: Duration,
    ) -> EdgeHubFront {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(chain, key));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let record = Arc::new(Record::default());
        let expected = Arc::new(expected);
        let r = record.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(front_door(
                    tcp,
                    acceptor.clone(),
                    upstream,
                    expected.clone(),
                    r.clone(),
                    delay,
                ));
            }
        });
        EdgeHubFront { port, record, task }
    }

    pub fn connects(&self) -> Vec<SeenConnect> {
        self.record.connects.lock().unwrap().clone()
    }

    /// When each accepted connection's socket was closed on the module (the index of its
    /// CONNECT in [`Self::connects`], the time).
    pub fn closes(&self) -> Vec<(usize, Instant)> {
        self.record.closes.lock().unwrap().clone()
    }

    pub fn tls_failures(&self) -> Vec<String> {
        self.record.tls_failures.lock().unwrap().clone()
    }

    /// Waits until `pred(connects, tls_failures)` holds (panics after `within`).
    pub async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[SeenConnect], &[String]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.record.notify.notified();
            if pred(&self.connects(), &self.tls_failures()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; CONNECTs {:?}, TLS failures {:?}",
                    self.connects(),
                    self.tls_failures()
                );
            }
        }
    }

    /// Waits for at least `n` CONNECTs and returns them all.
    pub async fn wait_connects(&self, n: usize, within: Duration) -> Vec<SeenConnect> {
        self.wait_until(within, &format!("{n} CONNECTs"), |c, _| c.len() >= n)
            .await;
        self.connects()
    }
}

impl Drop for EdgeHubFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn front_door(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream: SocketAddr,
    expected: Arc<Expected>,
    record: Arc<Record>,
    delay: Duration,
) {
    let mut tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            record.tls_failures.lock().unwrap().push(e.to_string());
            record.notify.notify_waiters();
            return;
        }
    };
    // Read until one whole packet is buffered; keep the bytes to forward them unchanged.
    let mut buf = BytesMut::with_capacity(4096);
    let connect = loop {
        let mut probe = buf.clone();
        match Packet::read(&mut probe, 1 << 20) {
            Ok(Packet::Connect(c)) => break c,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            // Not an MQTT 3.1.1 CONNECT first: edgeHub drops such a connection too.
            Ok(_) | Err(_) => return,
        }
        match tokio::time::timeout(Duration::from_secs(10), tls.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let verdict = expected.check(&connect, unix_now());
    let accepted = verdict.is_ok();
    let index = {
        let mut connects = record.connects.lock().unwrap();
        connects.push(SeenConnect::new(&connect, verdict));
        connects.len() - 1
    };
    record.notify.notify_waiters();
    // Whenever this returns, the module's socket is closed: record when.
    struct Closed(Arc<Record>, usize);
    impl Drop for Closed {
        fn drop(&mut self) {
            let at = Instant::now();
            self.0.closes.lock().unwrap().push((self.1, at));
        }
    }
    let _closed = Closed(record.clone(), index);
    if !accepted {
        // CONNACK "not authorized", then close, as edgeHub does for a bad token.
        let _ = tls.write_all(&[0x20, 0x02, 0x00, 0x05]).await;
        let _ = tls.shutdown().await;
        return;
    }
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    if up.write_all(&buf).await.is_err() {
        return;
    }
    if delay.is_zero() {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
        return;
    }
    // Module → broker as it comes; broker → module through a delay line. When the module
    // closes its side (after a DISCONNECT) the broker's side is shut too, and the module's
    // socket closes once the broker closed and what it sent went through the delay line: like
    // a broker across a network hop, whose close reaches the module `delay` late.
    let (mut module_rd, mut module_wr) = tokio::io::split(tls);
    let (mut broker_rd, mut broker_wr) = up.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Bytes)>();
    let from_broker = async move {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = broker_rd.read(&mut chunk).await {
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, Bytes::copy_from_slice(&chunk[..n]))).is_err() {
                return;
            }
        }
    };
    let to_module = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if module_wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let to_broker = async move {
        let _ = tokio::io::copy(&mut module_rd, &mut broker_wr).await;
        let _ = broker_wr.shutdown().await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = to_broker => {}
        _ = async { tokio::join!(from_broker, to_module) } => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The module as a child process

/// The workload-mode environment the IoT Edge runtime gives a module container.
pub fn runtime_env(
    hub: &str,
    device: &str,
    module: &str,
    gateway: &str,
    generation_id: &str,
    socket: &Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("IOTEDGE_IOTHUBHOSTNAME", hub.to_string()),
        ("IOTEDGE_DEVICEID", device.to_string()),
        ("IOTEDGE_MODULEID", module.to_string()),
        ("IOTEDGE_GATEWAYHOSTNAME", gateway.to_string()),
        ("IOTEDGE_MODULEGENERATIONID", generation_id.to_string()),
        (
            "IOTEDGE_WORKLOADURI",
            format!("unix://{}", socket.display()),
        ),
        ("IOTEDGE_APIVERSION", API_VERSION.to_string()),
        ("IOTEDGE_AUTHSCHEME", "sasToken".to_string()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// `GET /metrics` from the module's metrics endpoint.
pub async fn scrape(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The value of the sample named exactly `name` (labels included, e.g.
/// `edgefilter_messages_rejected_total{reason="not_json"}`); 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}
