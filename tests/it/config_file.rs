//! `--config` files through the real binary: precedence (flag > environment > file >
//! default) seen by `config print` and by a running filter on a real mosquitto, unknown keys
//! and bad values refused in one line naming the key, `config check`, and the password kept
//! out of `config print` while the printed file stays usable as a configuration file.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn edgefilter(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefilter"));
    cmd.args(args);
    // Only the variables the test means: none of the runner's EDGEFILTER_* leak in.
    for (k, _) in std::env::vars() {
        if k.starts_with("EDGEFILTER_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `key = value   # source` lines of `config print`, parsed back as TOML per line.
fn printed(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("config print is not TOML: {e}\n{text}"))
}

fn line_of<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "ef.toml",
        "threshold = 30.5\nqos = 0\nclient-id = \"from-file\"\ninput-topic = [\"a/#\", \"b/+\"]\nbatch-linger = \"5ms\"\n",
    );
    let out = stdout(&edgefilter(
        &[
            "config",
            "print",
            "--config",
            &file,
            "--client-id",
            "from-flag",
        ],
        &[
            ("EDGEFILTER_QOS", "1"),
            ("EDGEFILTER_CLIENT_ID", "from-env"),
        ],
    ));
    let t = printed(&out);
    assert_eq!(t["client-id"].as_str(), Some("from-flag"));
    assert!(line_of(&out, "client-id").ends_with("# command line"));
    assert_eq!(t["qos"].as_integer(), Some(1));
    assert!(line_of(&out, "qos").ends_with("# environment, EDGEFILTER_QOS"));
    assert_eq!(t["threshold"].as_float(), Some(30.5));
    assert!(line_of(&out, "threshold").ends_with(&format!("# file, {file}")));
    assert_eq!(
        t["input-topic"].as_array().unwrap(),
        &vec![toml::Value::from("a/#"), toml::Value::from("b/+")]
    );
    assert_eq!(t["batch-linger"].as_str(), Some("5ms"));
    assert_eq!(t["metrics-addr"].as_str(), Some("127.0.0.1:9600"));
    assert!(line_of(&out, "metrics-addr").ends_with("# default"));
    assert!(out.contains("# broker =   # not set"), "{out}");
}

#[test]
fn unknown_keys_and_bad_values_are_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "a.toml", "qos = 1\nthreshhold = 30\n");
    one_line_error(&["run", "--config", &f], 2, "unknown key `threshhold`");
    let f = write(dir.path(), "b.toml", "qos = 2\n");
    let line = one_line_error(&["run", "--config", &f], 2, "key `qos`");
    assert!(line.contains("b.toml") && line.contains("'2'"), "{line}");
    let f = write(dir.path(), "c.toml", "threshold = [1, 2]\n");
    one_line_error(
        &["run", "--config", &f],
        2,
        "key `threshold`: takes one value",
    );
    let f = write(dir.path(), "d.toml", "qos = \n");
    one_line_error(&["run", "--config", &f], 2, "not TOML");
    let f = write(dir.path(), "e.toml", "[section]\nqos = 1\n");
    one_line_error(&["run", "--config", &f], 2, "unknown key `section`");
    let f = write(
        dir.path(),
        "f.toml",
        "password = \"x\"\npassword-file = \"/etc/pw\"\n",
    );
    one_line_error(&["run", "--config", &f], 2, "not both");
    one_line_error(
        &["run", "--config", "/nonexistent.toml"],
        2,
        "/nonexistent.toml",
    );
}

#[test]
fn config_check_validates_keys_values_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.toml",
        "broker = \"mqtt://127.0.0.1:1883\"\nqos = 1\nthreshold = 30\n",
    );
    let out = stdout(&edgefilter(&["config", "check", &good], &[]));
    assert!(out.contains("ok (3 settings from the file)"), "{out}");
    // Settings that parse but do not make a valid configuration: an alert loop.
    let lp = write(dir.path(), "loop.toml", "input-topic = [\"#\"]\n");
    one_line_error(&["config", "check", &lp], 1, "alert loop");
    let unknown = write(dir.path(), "u.toml", "colour = \"blue\"\n");
    one_line_error(&["config", "check", &unknown], 1, "unknown key `colour`");
}

#[test]
fn print_redacts_the_password_and_is_a_usable_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "secret.toml",
        "broker = \"mqtt://127.0.0.1:1883\"\nusername = \"gw1\"\npassword = \"hunter2-s3cret\"\nthreshold = 33\n",
    );
    let out = stdout(&edgefilter(&["config", "print", "--config", &file], &[]));
    assert!(!out.contains("hunter2"), "the password leaked:\n{out}");
    assert!(out.contains("# password = \"<redacted>\""), "{out}");
    // The printed settings, used as a file, give the same settings (less the password).
    let again = write(dir.path(), "printed.toml", &out);
    let check = stdout(&edgefilter(&["config", "check", &again], &[]));
    assert!(check.contains("ok"), "{check}");
    let reprinted = stdout(&edgefilter(&["config", "print", "--config", &again], &[]));
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("   #").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(strip(&out), strip(&reprinted));
    // A password from --password-file (flag) beats the file's `password`: not listed.
    let pw = write(dir.path(), "pw", "other\n");
    let out = stdout(&edgefilter(
        &["config", "print", "--config", &file, "--password-file", &pw],
        &[],
    ));
    assert!(
        !out.contains("<redacted>") && !out.contains("hunter2"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_filter_takes_file_values_under_the_environment() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    // The file: broker, input topic, metrics address and a threshold of 50; the environment
    // overrides the threshold with 30.
    let file = write(
        dir.path(),
        "run.toml",
        &format!(
            "broker = \"{}\"\ninput-topic = [\"sensors/#\"]\nthreshold = 50\nmetrics-addr = \"{metrics}\"\nstats-interval = \"0\"\nclient-id = \"ef-config-file\"\n",
            broker.url()
        ),
    );
    let mut f = FilterProcess::spawn_clean_env(
        &[
            ("EDGEFILTER_THRESHOLD", "30".to_string()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ],
        &["--config", &file],
    );
    assert!(
        wait_healthy(metrics, Duration::from_secs(20)),
        "edgefilter did not start from the file:\n{}",
        f.log()
    );
    let (_, text) = http_get(metrics, "/metrics").unwrap();
    assert!(text.contains("edgefilter_threshold 30"), "{text}");
    let c = Client4::connect(broker.port, "cfg-test").await;
    c.subscribe("alerts/#").await;
    c.publish("sensors/x", body(1, 40.0)).await; // above 30 (env), below 50 (file)
    c.inbox
        .wait_count("alerts/sensors/x", 1, Duration::from_secs(20))
        .await;
    f.signal("TERM");
    assert!(f.wait_exit(Duration::from_secs(20)).await.success());
}
