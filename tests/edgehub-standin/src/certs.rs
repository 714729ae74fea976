//! Certificates for the stand-in (test tooling, before TLS): a CA generated per run that
//! plays the IoT Edge device CA (the workload API's trust bundle), and edgeHub's server
//! certificate for the gateway host name, signed by it (rcgen, ring).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority: its certificate (DER and PEM) and what signs with it.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A self-signed CA named `name`.
pub fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("key generation");
    let cert = params.self_signed(&key).expect("self-signed CA");
    Ca {
        pem: cert.pem(),
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate chain and its private key.
pub type Chain = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A server certificate for `host` (a DNS name or an IP address) signed by `ca`, with its key.
pub fn server_cert(host: &str, ca: &Ca) -> Chain {
    let mut params = CertificateParams::new(vec![host.to_string()]).expect("valid host name");
    params.distinguished_name.push(DnType::CommonName, host);
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key generation");
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("signed server certificate");
    (
        vec![cert.der().clone(), ca.cert.clone()],
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

/// A rustls server configuration presenting `chain` (TLS 1.2 and 1.3, ring).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<rustls::ServerConfig> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("a usable certificate and key");
    Arc::new(config)
}
