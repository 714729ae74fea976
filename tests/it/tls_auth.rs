//! `mqtts://` and logins against a real mosquitto: a TLS listener whose certificates come from a
//! CA generated in the test (rcgen), with client certificates required; a wrong CA is refused
//! with a clear error; a password file login works and a wrong password is refused.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const WAIT: Duration = Duration::from_secs(20);

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes `<name>.pem` and `<name>.key` for a certificate signed by `ca`.
fn issue(ca: &Ca, dir: &Path, name: &str, hosts: &[&str]) {
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

/// mosquitto with a TLS listener (client certificates required) and a plain one for the test's
/// own clients; returns (broker, plain port, certificate directory).
fn tls_broker() -> (Mosquitto, u16, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let ca = new_ca("edgefilter test CA");
    std::fs::write(certs.path().join("ca.pem"), &ca.pem).unwrap();
    issue(&ca, certs.path(), "server", &["localhost"]);
    issue(&ca, certs.path(), "client", &[]);
    std::fs::write(
        certs.path().join("other-ca.pem"),
        new_ca("someone else").pem,
    )
    .unwrap();
    let plain = free_port();
    let dir = certs.path().to_path_buf();
    let broker = Mosquitto::start_with(move |_, port| {
        format!(
            "per_listener_settings false\nallow_anonymous true\n\
             listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
             listener {plain} 127.0.0.1\n",
            path(&dir, "ca.pem"),
            path(&dir, "server.pem"),
            path(&dir, "server.key"),
        )
    });
    assert!(wait_listening(([127, 0, 0, 1], plain).into(), WAIT));
    (broker, plain, certs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_client_certificate_filters() {
    let (broker, plain, certs) = tls_broker();
    let d = certs.path();
    let url = format!("mqtts://localhost:{}", broker.port);
    let filter = InProcess::start(&[
        "--broker",
        &url,
        "--ca",
        &path(d, "ca.pem"),
        "--client-cert",
        &path(d, "client.pem"),
        "--client-key",
        &path(d, "client.key"),
        "--client-id",
        "ef-tls",
    ])
    .await;
    let sub = Client5::connect(plain, "sub").await;
    sub.subscribe("alerts/#").await;
    let publisher = Client5::connect(plain, "pub").await;
    publisher.publish("telemetry/tls", body(1, 20.0), &[]).await;
    publisher.publish("telemetry/tls", body(2, 40.0), &[]).await;
    sub.inbox.wait_count("alerts/", 1, WAIT).await;
    filter.stop().await;
    let alerts = sub.inbox.on("alerts/");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].payload, body(2, 40.0).as_bytes());
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let (broker, _plain, certs) = tls_broker();
    let d = certs.path();
    let url = format!("mqtts://localhost:{}", broker.port);
    let line = one_line_error(
        &[
            "run",
            "--broker",
            &url,
            "--ca",
            &path(d, "other-ca.pem"),
            "--client-cert",
            &path(d, "client.pem"),
            "--client-key",
            &path(d, "client.key"),
            "--metrics-addr",
            "off",
        ],
        1,
        "TLS handshake with localhost:",
    );
    assert!(
        line.starts_with("edgefilter: TLS handshake with localhost:"),
        "{line}"
    );
    assert!(
        line.contains("UnknownIssuer") || line.contains("certificate"),
        "{line}"
    );
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    let (broker, _plain, certs) = tls_broker();
    let d = certs.path();
    // The certificate names localhost; 127.0.0.1 is not in it.
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let line = one_line_error(
        &[
            "run",
            "--broker",
            &url,
            "--ca",
            &path(d, "ca.pem"),
            "--metrics-addr",
            "off",
        ],
        1,
        "TLS handshake",
    );
    assert!(
        line.contains("NotValidForName") || line.contains("name"),
        "{line}"
    );
}

fn password_broker() -> (Mosquitto, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["gateway", "s3cret"])
        .status()
        .expect("mosquitto_passwd (mosquitto package) must be installed");
    assert!(status.success());
    let pw = passwords.display().to_string();
    let broker = Mosquitto::start_with(move |_, port| {
        format!("listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n")
    });
    (broker, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_login_is_accepted() {
    let (broker, dir) = password_broker();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    let filter = InProcess::start(&[
        "--broker",
        &broker.url(),
        "--username",
        "gateway",
        "--password-file",
        &file.display().to_string(),
        "--client-id",
        "ef-login",
    ])
    .await;
    assert!(filter.shared.metrics.is_connected());
    filter.stop().await;
}

#[test]
fn a_wrong_password_is_refused_with_one_line() {
    let (broker, dir) = password_broker();
    let file = dir.path().join("pw");
    std::fs::write(&file, "wrong\n").unwrap();
    one_line_error(
        &[
            "run",
            "--broker",
            &broker.url(),
            "--username",
            "gateway",
            "--password-file",
            &file.display().to_string(),
            "--metrics-addr",
            "off",
        ],
        1,
        "refused the connection",
    );
}
