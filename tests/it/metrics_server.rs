//! The metrics endpoint against hostile clients: half-sent requests are
//! closed after the header-read timeout and `/metrics` still answers; failed accepts (a
//! process out of descriptors) back off instead of spinning on a core.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edgefilter::io::http::{self, Accept, Limits};
use edgefilter::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// `GET path` over a fresh connection; the status code.
async fn get_status(addr: std::net::SocketAddr, path: &str) -> io::Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut text = Vec::new();
    s.read_to_end(&mut text).await?;
    let text = String::from_utf8_lossy(&text);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status line in {text:?}")))
}

/// Waits (30 s at most) until `/metrics` answers 200 again.
async fn metrics_answers_again(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get_status(addr, "/metrics").await {
            Ok(200) => return,
            other => assert!(Instant::now() < deadline, "/metrics: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn limits(header_read_timeout: Duration) -> Limits {
    Limits {
        header_read_timeout,
        max_connections: 64,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_timeout_and_metrics_still_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(http::serve_with(
        listener,
        Arc::new(Metrics::new()),
        limits(Duration::from_secs(1)),
        async {
            let _ = stopped.await;
        },
    ));
    assert_eq!(get_status(addr, "/metrics").await.unwrap(), 200);

    // 1,000 clients send a request head without its final blank line and then wait.
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        clients.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // A refused connection may already be closed: the write may fail, which is fine.
            let _ = s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n")
                .await;
            let mut buf = [0u8; 64];
            // The server must close the connection: EOF or a reset, never data, never silence.
            match tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(_)) => panic!("the server answered a half-sent request"),
                Err(_) => false,
            }
        });
    }
    let mut still_open = 0;
    while let Some(closed) = clients.join_next().await {
        if !closed.unwrap() {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "half-sent requests still open after 60 s");

    // The slots are free again: /metrics answers.
    metrics_answers_again(addr).await;
    let _ = stop.send(());
    server.await.unwrap();
}

/// Stands in for a listener in a process out of descriptors: every accept fails with EMFILE
/// while `failing` lasts, as `accept(2)` does then; afterwards the real listener answers.
struct ExhaustedListener {
    listener: TcpListener,
    failing_until: Instant,
    attempts: Arc<AtomicU64>,
}

impl Accept for ExhaustedListener {
    async fn accept(&mut self) -> io::Result<TcpStream> {
        if Instant::now() < self.failing_until {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        self.listener.accept().await.map(|(s, _)| s)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_instead_of_spinning() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = Arc::new(AtomicU64::new(0));
    let window = Duration::from_secs(2);
    let acceptor = ExhaustedListener {
        listener,
        failing_until: Instant::now() + window,
        attempts: attempts.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(http::serve_with(
        acceptor,
        Arc::new(Metrics::new()),
        limits(Duration::from_secs(5)),
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(window).await;
    // Backoff 10 ms doubling to 1 s: about 8 attempts in 2 s. A retry loop makes millions.
    let n = attempts.load(Ordering::Relaxed);
    assert!(
        (1..=20).contains(&n),
        "{n} accept attempts in {window:?} while accept kept failing"
    );
    // Once descriptors are back, the endpoint serves again (after at most one backoff step).
    metrics_answers_again(addr).await;
    let _ = stop.send(());
    server.await.unwrap();
}
