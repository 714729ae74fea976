//! The seed's own module as a peer (test tooling): where the Python SDK's venv and the
//! tutorial's module script are, and the fresh network namespace a test needs to run it —
//! the SDK connects to edgeHub's port 8883, fixed in its transport, which is free only in a
//! namespace of the test's own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The SDK venv's Python (`$EDGEFILTER_PEERS_VENV`, default `<repository>/.venv-peers`, made
/// by `scripts/peers/setup.sh`); panics with that advice when it is missing.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("EDGEFILTER_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv-peers"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no SDK venv at {}: run scripts/peers/setup.sh",
        venv.display()
    );
    python
}

/// `scripts/peers/seed_module.py`: the tutorial's module on the real SDK.
pub fn seed_module_script() -> PathBuf {
    root().join("scripts/peers/seed_module.py")
}

/// Moves this process into a fresh network namespace with loopback up. Call it before the
/// process starts a thread of its own: threads and children made later inherit the
/// namespace. Needs root.
pub fn new_network_namespace() {
    // SAFETY: a plain syscall with a constant flag, made before this process starts a thread
    // of its own.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed (needs root): {}",
        std::io::Error::last_os_error()
    );
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip");
    let up = Command::new(ip)
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2)");
    assert!(up.success());
}

/// A test beside the seed's module: `test(the venv's python)` on a two-thread tokio runtime,
/// in a fresh network namespace (made first, before any thread).
pub fn run_with_seed<F: std::future::Future<Output = ()>>(test: impl FnOnce(PathBuf) -> F) {
    let python = venv_python();
    new_network_namespace();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test(python));
}
