//! The observability endpoint beside the data flow: `GET /metrics` (OpenMetrics when the
//! scraper asks for it, as Prometheus does, else the classic Prometheus text format; IoT
//! Edge's port 9600 convention) and `GET /healthz` (200 while connected to the broker, 503
//! otherwise), served with hyper.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Binds the metrics listener (so a busy port is reported before anything else starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// What one scraper, or one hostile client, may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that has not sent a whole request head within this time is closed (also
    /// an idle keep-alive connection waiting for its next request).
    pub header_read_timeout: Duration,
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// After a failed accept (descriptors exhausted, …) the loop waits this long, doubling up
    /// to `accept_backoff_max`, instead of retrying at once.
    pub accept_backoff_min: Duration,
    pub accept_backoff_max: Duration,
    /// At most one log line per this interval about failed accepts or refused connections.
    pub log_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            accept_backoff_min: Duration::from_millis(10),
            accept_backoff_max: Duration::from_secs(1),
            log_interval: Duration::from_secs(10),
        }
    }
}

/// Where connections come from: the listener, or (in tests) a source of accept errors.
pub trait Accept: Send + 'static {
    fn accept(&mut self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Serves until `shutdown` completes, with the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, metrics, Limits::default(), shutdown).await
}

/// Counts events of one kind and logs them at most once per interval.
struct RateLimitedLog {
    what: &'static str,
    interval: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl RateLimitedLog {
    fn new(what: &'static str, interval: Duration) -> Self {
        RateLimitedLog {
            what,
            interval,
            last: None,
            unlogged: 0,
        }
    }

    fn event(&mut self, detail: &dyn std::fmt::Display) {
        self.unlogged += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + self.interval) {
            return;
        }
        tracing::warn!(
            "metrics endpoint: {} ({} since the last report): {detail}",
            self.what,
            self.unlogged
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// Serves until `shutdown` completes: at most `limits.max_connections` at once, each closed
/// when its request head does not arrive in time; failed accepts back off.
pub async fn serve_with(
    mut acceptor: impl Accept,
    metrics: Arc<Metrics>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut accept_errors = RateLimitedLog::new("accept failed", limits.log_interval);
    let mut refusals = RateLimitedLog::new("connection refused", limits.log_interval);
    let mut backoff = limits.accept_backoff_min;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = acceptor.accept() => a,
        };
        let stream = match accepted {
            Ok(stream) => {
                backoff = limits.accept_backoff_min;
                stream
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS do not clear by retrying at once: the pending
                // connection stays in the backlog and a retry loop would take a whole core.
                accept_errors.event(&e);
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(limits.accept_backoff_max);
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.event(&format_args!(
                "{} connections open already",
                limits.max_connections
            ));
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// Prometheus asks for OpenMetrics in its `Accept` header; everyone else (curl, promtool,
/// older collectors) gets the classic text format 0.0.4.
fn wants_openmetrics(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") if wants_openmetrics(req) => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            metrics.render_prometheus_text(),
        ),
        (&Method::GET, "/healthz") if metrics.is_connected() => {
            (StatusCode::OK, "text/plain", "ok\n".to_string())
        }
        (&Method::GET, "/healthz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not connected to the broker\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /healthz\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}
