//! Packaging (tooling): the Debian package, built with `cargo deb`, installed with `dpkg -i` on
//! this machine, used, removed and purged.
//!
//! The installed `/usr/bin/edgefilter` runs as the package's system user with the packaged
//! `/etc/edgefilter/edgefilter.toml` against a mosquitto owned by the test, and forwards an
//! alert. Then `dpkg -r` must remove the binary and the unit but keep the configuration,
//! and `dpkg --purge` must remove the configuration and the user.
//!
//! The binary packaged is the one this test run built (`CARGO_BIN_EXE_edgefilter`, the test
//! profile), not a release build: what is under test is the package — its files, conffiles,
//! dependencies, unit and maintainer scripts — and that the installed binary runs with them,
//! which does not depend on the optimisation level. A release build only for this test cost
//! CI about 4 minutes of its 11 (issue 17's suite-time target). `cargo deb --no-build` takes
//! the binary from `<target dir>/release/`, so the test gives it a target directory of its
//! own holding a copy (`CARGO_TARGET_DIR`); it strips and compresses it (`--fast`) in a few
//! seconds. The release package is `cargo deb -p edgefilter` (deployment/README.md). systemd
//! is not PID 1 here: the unit is checked with `systemd-analyze verify`, not started.
//!
//! Gate: installing packages needs root. As another user the test says so and passes
//! without installing; as root (CI, `scripts/test.sh`) it always runs, and fails when
//! `cargo deb` is missing (`scripts/test.sh` installs cargo-deb). A package `edgefilter` left
//! installed by an earlier, interrupted run is purged first. Checkouts on one machine take
//! turns through a lock file (`/tmp/edgefilter-deb-test.lock`) from install to purge.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn root_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .current_dir(root_dir())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", "edgefilter"])
        .stdout
        .starts_with(b"install ok")
}

fn user_exists(name: &str) -> bool {
    run("getent", &["passwd", name]).status.success()
}

/// `cargo <args>` in the repository with the environment of a plain shell plus `env`: the
/// variables cargo sets for a test (`CARGO_PKG_*`, `CARGO_MANIFEST_DIR`, …) are not cargo-deb's.
fn cargo(args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(root_dir()).env_clear();
    for key in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "TMPDIR",
        "LANG",
    ] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap_or_else(|e| panic!("cargo: {e}"));
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Holds an exclusive lock on a machine-wide file: the package, its user and dpkg's database
/// are the machine's, so two checkouts running this test at once must take turns.
struct MachineLock {
    _file: std::fs::File,
}

impl MachineLock {
    fn take() -> MachineLock {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::create("/tmp/edgefilter-deb-test.lock").unwrap();
        // SAFETY: a valid open descriptor; the lock is released when the file is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        MachineLock { _file: f }
    }
}

/// Packages the binary of this test run into `dir`; returns the package's path.
fn build_deb(dir: &Path) -> PathBuf {
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_edgefilter"),
        target.join("release/edgefilter"),
    )
    .unwrap();
    let deb = dir.join("edgefilter.deb");
    let version = run("cargo", &["deb", "--version"]);
    assert!(
        version.status.success(),
        "cargo deb is missing: cargo install cargo-deb --locked (scripts/test.sh does)"
    );
    cargo(
        &[
            "deb",
            "--no-build",
            // Line tables (backtraces) are for the build tree; the package goes without.
            "--strip",
            "--fast",
            "--locked",
            "-p",
            "edgefilter",
            "--output",
            deb.to_str().unwrap(),
        ],
        &[("CARGO_TARGET_DIR", &target)],
    );
    deb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deb_installs_runs_and_purges_cleanly() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("not root: the .deb is not installed here (scripts/test.sh runs as root in CI)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path());
    let _lock = MachineLock::take();
    if installed() {
        eprintln!("purging an edgefilter package left by an earlier run");
        ok("dpkg", &["--purge", "edgefilter"]);
    }
    let deb = deb.to_str().unwrap();

    // What the package holds.
    let contents = ok("dpkg-deb", &["--contents", deb]);
    for path in [
        "./usr/bin/edgefilter",
        "./etc/edgefilter/edgefilter.toml",
        "./usr/lib/systemd/system/edgefilter.service",
        "./usr/lib/systemd/system/edgefilter.service.d/package.conf",
        "./usr/share/edgefilter/grafana/edgefilter.json",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
    let conffiles = ok("dpkg-deb", &["--info", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/edgefilter/edgefilter.toml");
    let depends = ok("dpkg-deb", &["--field", deb, "Depends"]);
    assert!(
        depends.contains("adduser") && depends.contains("libc6"),
        "{depends}"
    );
    // The unit inside is the repository's, byte for byte.
    let x = tmp.path().join("x");
    ok("dpkg-deb", &["-x", deb, x.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(x.join("usr/lib/systemd/system/edgefilter.service")).unwrap(),
        std::fs::read(root_dir().join("deployment/systemd/edgefilter.service")).unwrap()
    );

    // Install.
    ok("dpkg", &["-i", deb]);
    assert!(installed());
    assert!(
        user_exists("edgefilter"),
        "postinst creates the system user"
    );
    let pw = ok("getent", &["passwd", "edgefilter"]);
    let uid: u32 = pw.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system user: {pw}");
    let conf = Path::new("/etc/edgefilter/edgefilter.toml");
    let stat = ok("stat", &["-c", "%U:%G %a", conf.to_str().unwrap()]);
    assert_eq!(stat.trim(), "root:edgefilter 640");
    ok(
        "/usr/bin/edgefilter",
        &["config", "check", "/etc/edgefilter/edgefilter.toml"],
    );
    // systemd's own check of the installed unit with the package's drop-in.
    if run("systemd-analyze", &["--version"]).status.success() {
        let out = run(
            "systemd-analyze",
            &[
                "verify",
                "--man=no",
                "/usr/lib/systemd/system/edgefilter.service",
            ],
        );
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !printed.contains("edgefilter.service"),
            "systemd-analyze verify:\n{printed}"
        );
    } else {
        eprintln!("systemd-analyze not installed: the unit was not verified");
    }

    // The installed binary, as the package's user, with the packaged file (the broker and
    // the metrics address from flags), against a mosquitto owned by the test.
    let broker = Mosquitto::start();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = tmp.path().join("installed.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=edgefilter",
            "--regid=edgefilter",
            "--init-groups",
            "/usr/bin/edgefilter",
            "run",
            "--config",
            "/etc/edgefilter/edgefilter.toml",
        ])
        .arg(format!("--broker={}", broker.url()))
        .arg(format!("--metrics-addr={metrics}"))
        .args(["--client-id", "ef-deb-test", "--stats-interval", "0"])
        .env_remove("EDGEFILTER_CONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("setpriv (util-linux)");
    let healthy = wait_healthy(metrics, Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(healthy, "the installed edgefilter did not connect:\n{text}");
    let c = Client4::connect(broker.port, "deb-test").await;
    c.subscribe("alerts/#").await;
    c.publish("telemetry/dev-1", body(1, 31.5)).await;
    c.inbox
        .wait_count("alerts/telemetry/dev-1", 1, Duration::from_secs(20))
        .await;
    let ps = ok("ps", &["-o", "user=", "-p", &child.id().to_string()]);
    assert_eq!(ps.trim(), "edgefilter");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM drains and exits 0: {status}");

    // Remove: binary and unit go, the configuration stays (a conffile).
    ok("dpkg", &["-r", "edgefilter"]);
    assert!(!Path::new("/usr/bin/edgefilter").exists());
    assert!(!Path::new("/usr/lib/systemd/system/edgefilter.service").exists());
    assert!(!Path::new("/usr/lib/systemd/system/edgefilter.service.d").exists());
    assert!(conf.exists(), "dpkg -r keeps conffiles");

    // Purge: the configuration and the user go too.
    ok("dpkg", &["--purge", "edgefilter"]);
    assert!(!Path::new("/etc/edgefilter").exists());
    assert!(!user_exists("edgefilter"), "postrm purge removes the user");
    assert!(!run("getent", &["group", "edgefilter"]).status.success());
    let status = run("dpkg-query", &["-W", "-f=${Status}", "edgefilter"]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains("installed"));
}

#[test]
fn the_packaged_configuration_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgefilter"))
        .args(["config", "check", "deployment/debian/edgefilter.toml"])
        .current_dir(root_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
