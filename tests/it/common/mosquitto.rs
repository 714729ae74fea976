//! The mosquitto fixture every crate's integration tests share (the root crate's `tests/it/`
//! and loadgen's `tests/`, which includes this file by path): a real broker on an ephemeral
//! port, owned by one test, killed on drop, with its log kept in the test's temporary
//! directory. Plain std and tempfile only, so any test crate can include it.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; callers retry on a collision).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A mosquitto broker owned by one test, on an ephemeral port, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Mosquitto {
    /// A plain listener allowing anonymous clients.
    pub fn start() -> Mosquitto {
        Self::start_with(|_, port| format!("listener {port} 127.0.0.1\nallow_anonymous true\n"))
    }

    /// `config(dir, port)` returns the listener part of the configuration.
    pub fn start_with(config: impl Fn(&Path, u16) -> String) -> Mosquitto {
        let mut dir = tempfile::tempdir().unwrap();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.path().join("mosquitto.conf");
            let mut f = std::fs::File::create(&conf).unwrap();
            writeln!(f, "{}", config(dir.path(), port)).unwrap();
            // Generous queues: tests publish bursts; persistence off (sessions live in memory).
            writeln!(
                f,
                "persistence false\nmax_queued_messages 2000000\nmax_queued_bytes 0\nmax_inflight_messages 1000"
            )
            .unwrap();
            // Started as root, mosquitto would switch to its own user and not write its log here.
            writeln!(f, "user root").unwrap();
            writeln!(
                f,
                "log_dest file {}",
                dir.path().join("mosquitto.log").display()
            )
            .unwrap();
            drop(f);
            let child = Command::new(mosquitto_bin())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto must be installed (scripts/test.sh installs it)");
            let mut m = Mosquitto { port, child, dir };
            if wait_listening(m.addr(), Duration::from_secs(5)) {
                return m;
            }
            let _ = m.child.kill();
            let _ = m.child.wait();
            dir = m.dir_take();
        }
        panic!("mosquitto did not start on a free port in 5 attempts");
    }

    /// Stops the broker and starts it again on the same port with the same configuration
    /// (persistence is off: sessions and retained messages are gone, like after a crash).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let conf = self.dir.path().join("mosquitto.conf");
        for _ in 0..50 {
            self.child = Command::new(mosquitto_bin())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if wait_listening(self.addr(), Duration::from_secs(2)) {
                return;
            }
            // The port may still be held by the old socket for a moment.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        panic!("mosquitto did not restart on port {}", self.port);
    }

    fn dir_take(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_bin() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "mosquitto".into()
}
