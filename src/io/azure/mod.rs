//! Azure IoT Edge transport, the I/O side: who the module is ([`mod@env`]), its CONNECT
//! credentials ([`AzureIdentity::connect_credentials`], signed by the IoT Edge workload API
//! ([`workload`]) or locally with a connection string's key) and the trust in edgeHub
//! ([`AzureIdentity::tls_config`]). The connection loop (`io::connection`) calls in here before
//! every CONNECT. The pure half of the dialect — topics, property bags, SAS token text, twin
//! documents — is `mqtt::azure`, used by `flow::dialect`.
//!
//! ```text
//! env ─▶ AzureIdentity ─┬─▶ connect_credentials ─▶ CONNECT (client id, username, SAS password)
//!                       └─▶ tls_config ──────────▶ TLS to IOTEDGE_GATEWAYHOSTNAME:8883
//! (mqtt::azure) inbound PUBLISH ─▶ topics::ModuleTopics::classify ─▶ input (name, property bag) | twin | method
//! alert ─▶ propbag::OutputProperties::alert_from_input ─▶ topics::ModuleTopics::events_topic
//! ```
//!
//! The wire format is edgeHub's MQTT dialect (module topics, property bags, SAS tokens, the
//! workload API); where it leaves a choice open, the Python device SDK (azure-iot-device 2.x,
//! which the replaced module used) is followed and cited at the place of the choice.

pub mod env;
pub mod workload;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

pub use env::{AzureIdentity, CredentialSource};
pub use workload::{WorkloadClient, WorkloadError};

use crate::mqtt::azure::sas;

/// edgeHub's MQTT-over-TLS port on `IOTEDGE_GATEWAYHOSTNAME`.
pub const EDGEHUB_MQTT_PORT: u16 = 8883;

/// The `api-version` in the MQTT username: edgeHub only checks that one is present; this is
/// the one the Python SDK 2.14 sends (`constant.IOTHUB_API_VERSION`).
pub const MQTT_API_VERSION: &str = "2019-10-01";

/// Our product name and version, sent as `DeviceClientType` in the username (the SDK sends its
/// own user agent there) and as the workload API's `User-Agent`.
pub const USER_AGENT: &str = concat!("edgefilter/", env!("CARGO_PKG_VERSION"));

/// How long before expiry a token is renewed (the Python SDK reconnects 120 s early).
pub const RENEW_MARGIN: Duration = Duration::from_secs(120);

/// The customary SAS token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Everything that can go wrong on the Azure side before or around the MQTT connection.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// Some but not all of the workload-mode variables are set, and no connection string.
    #[error(
        "incomplete IoT Edge environment: {missing} not set (set all of {all}, or \
         EdgeHubConnectionString and EdgeModuleCACertificateFile)",
        all = env::WORKLOAD_VARS.join(", ")
    )]
    IncompleteEnvironment { missing: String },
    /// `--azure-edge on` without any IoT Edge environment.
    #[error(
        "no IoT Edge environment: set {all} (as the IoT Edge runtime does), or \
         EdgeHubConnectionString and EdgeModuleCACertificateFile",
        all = env::WORKLOAD_VARS.join(", ")
    )]
    NotConfigured,
    /// A variable is set but its value is unusable.
    #[error("{name}: {reason}")]
    BadVariable { name: &'static str, reason: String },
    /// `EdgeModuleCACertificateFile` (or another PEM file) could not be read.
    #[error("cannot read CA certificate file {path}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A PEM text held no usable certificate.
    #[error("{origin}: {reason}")]
    Certificates { origin: String, reason: String },
    /// The workload API (IoT Edge security daemon) failed or refused.
    #[error("IoT Edge workload API")]
    Workload(#[from] WorkloadError),
    /// The TLS configuration could not be built.
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
}

/// What an MQTT CONNECT to edgeHub carries, plus when to build the next one.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectCredentials {
    /// `<deviceId>/<moduleId>`, exactly.
    pub client_id: String,
    /// `<hub>/<deviceId>/<moduleId>/?api-version=2019-10-01&DeviceClientType=<url-encoded UA>`.
    pub username: String,
    /// The SAS token (`SharedAccessSignature sr=…&sig=…&se=…`).
    pub password: String,
    /// The token's expiry (`se`), Unix seconds.
    pub expires_at: u64,
    /// When to reconnect with fresh credentials, Unix seconds: [`RENEW_MARGIN`] before expiry,
    /// but never earlier than half the lifetime (so a short TTL does not reconnect in a loop).
    pub renew_at: u64,
}

impl fmt::Debug for ConnectCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectCredentials")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &"<SAS token>")
            .field("expires_at", &self.expires_at)
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

/// `renew_at` for a token issued at `now` with lifetime `ttl` seconds and expiry `expires_at`.
pub fn renew_at(now: u64, ttl: u64, expires_at: u64) -> u64 {
    expires_at
        .saturating_sub(RENEW_MARGIN.as_secs())
        .max(now.saturating_add(ttl / 2))
}

impl AzureIdentity {
    /// The MQTT client id: `<deviceId>/<moduleId>`.
    pub fn client_id(&self) -> String {
        format!("{}/{}", self.device_id, self.module_id)
    }

    /// The MQTT username, as the Python SDK forms it (`IoTHubMQTTTranslationStage`): host name
    /// and client id raw (device ids such as `gw:01@plant` included), only the query pairs
    /// percent-encoded.
    pub fn username(&self) -> String {
        format!(
            "{}/{}/{}/?api-version={}&DeviceClientType={}",
            self.hub_host_name,
            self.device_id,
            self.module_id,
            MQTT_API_VERSION,
            sas::encode_component(USER_AGENT)
        )
    }

    /// The TLS server name edgeHub's certificate must carry (`IOTEDGE_GATEWAYHOSTNAME`).
    /// Cannot fail for an identity from [`AzureIdentity::from_env`], which checks the name.
    pub fn server_name(&self) -> Result<ServerName<'static>, AzureError> {
        ServerName::try_from(self.gateway_host_name.clone()).map_err(|_| AzureError::BadVariable {
            name: "IOTEDGE_GATEWAYHOSTNAME",
            reason: format!(
                "gateway host name {:?} is not a valid TLS server name",
                self.gateway_host_name
            ),
        })
    }

    /// A workload API client for this module, in workload mode.
    pub fn workload_client(&self) -> Option<WorkloadClient> {
        match &self.credentials {
            CredentialSource::Workload {
                socket_path,
                generation_id,
                api_version,
                ..
            } => Some(WorkloadClient::new(
                socket_path.clone(),
                &self.module_id,
                generation_id,
                api_version,
            )),
            CredentialSource::SharedAccessKey { .. } => None,
        }
    }

    /// Builds CONNECT credentials valid for `ttl` from `now_unix`: the SAS token is signed by
    /// the workload API (workload mode) or locally with the connection string's key.
    pub async fn connect_credentials(
        &self,
        now_unix: u64,
        ttl: Duration,
    ) -> Result<ConnectCredentials, AzureError> {
        let ttl = ttl.as_secs().max(1);
        let expires_at = now_unix.saturating_add(ttl);
        let sr = sas::encoded_resource_uri(&self.hub_host_name, &self.device_id, &self.module_id);
        let to_sign = sas::string_to_sign(&sr, expires_at);
        let sig = match &self.credentials {
            CredentialSource::SharedAccessKey { key, .. } => key.sign(to_sign.as_bytes()),
            CredentialSource::Workload {
                socket_path,
                generation_id,
                api_version,
                ..
            } => {
                WorkloadClient::new(socket_path, &self.module_id, generation_id, api_version)
                    .sign(to_sign.as_bytes())
                    .await?
            }
        };
        Ok(ConnectCredentials {
            client_id: self.client_id(),
            username: self.username(),
            password: sas::token(&sr, &sig, expires_at),
            expires_at,
            renew_at: renew_at(now_unix, ttl, expires_at),
        })
    }

    /// The certificates edgeHub's chain must lead to: the workload API's trust bundle, or the
    /// `EdgeModuleCACertificateFile` in the development fallback. Nothing else is trusted.
    pub async fn trusted_roots(&self) -> Result<RootCertStore, AzureError> {
        match &self.credentials {
            CredentialSource::Workload {
                socket_path,
                generation_id,
                api_version,
                ..
            } => {
                let pem =
                    WorkloadClient::new(socket_path, &self.module_id, generation_id, api_version)
                        .trust_bundle()
                        .await?;
                root_store_from_pem(pem.as_bytes(), "workload API trust bundle")
            }
            CredentialSource::SharedAccessKey { ca_file, .. } => {
                let pem = tokio::fs::read(ca_file)
                    .await
                    .map_err(|source| AzureError::CaFile {
                        path: ca_file.display().to_string(),
                        source,
                    })?;
                root_store_from_pem(&pem, &format!("CA certificate file {}", ca_file.display()))
            }
        }
    }

    /// The rustls client configuration for edgeHub: TLS 1.2+, the ring provider (no
    /// process-wide provider needed), only [`Self::trusted_roots`] as roots, no client
    /// certificate. Host name verification is rustls' own, against [`Self::server_name`].
    pub async fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, AzureError> {
        let roots = self.trusted_roots().await?;
        client_config(roots)
    }
}

/// The certificates in a PEM text (other PEM sections are skipped) as a root store. Errors when
/// the text holds no certificate webpki can use as a trust anchor; `origin` names the source in
/// the error message. Unusable certificates beside usable ones are skipped with a warning, as a
/// trust bundle is a list the daemon assembles and one odd entry should not stop the module.
pub fn root_store_from_pem(pem: &[u8], origin: &str) -> Result<RootCertStore, AzureError> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        match item {
            Ok(cert) => certs.push(cert),
            Err(e) => {
                return Err(AzureError::Certificates {
                    origin: origin.to_string(),
                    reason: format!("invalid PEM: {e}"),
                })
            }
        }
    }
    if certs.is_empty() {
        return Err(AzureError::Certificates {
            origin: origin.to_string(),
            reason: "holds no PEM certificate".to_string(),
        });
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(AzureError::Certificates {
            origin: origin.to_string(),
            reason: format!("none of its {ignored} certificate(s) can be parsed"),
        });
    }
    if ignored > 0 {
        tracing::warn!(origin, added, ignored, "skipped unparsable certificates");
    }
    Ok(roots)
}

/// A client configuration trusting exactly `roots`, with the ring provider and TLS 1.2/1.3.
pub fn client_config(roots: RootCertStore) -> Result<Arc<rustls::ClientConfig>, AzureError> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::azure::SharedAccessKey;
    use std::path::PathBuf;

    fn fallback_identity(ca_file: PathBuf) -> AzureIdentity {
        AzureIdentity {
            hub_host_name: "myhub.azure-devices.net".into(),
            device_id: "dev1".into(),
            module_id: "filtermodule".into(),
            gateway_host_name: "edgehub".into(),
            credentials: CredentialSource::SharedAccessKey {
                // base64 "c2VjcmV0LWtleS0wMTIzNDU2Nzg5" = b"secret-key-0123456789"
                key: SharedAccessKey::from_base64("c2VjcmV0LWtleS0wMTIzNDU2Nzg5").unwrap(),
                ca_file,
            },
        }
    }

    #[test]
    fn renew_at_is_two_minutes_early_but_never_before_half_the_ttl() {
        assert_eq!(renew_at(1_000, 3600, 4_600), 4_480);
        assert_eq!(renew_at(1_000, 60, 1_060), 1_030);
        assert_eq!(renew_at(1_000, 240, 1_240), 1_120);
        assert_eq!(renew_at(1_000, 200, 1_200), 1_100);
    }

    #[test]
    fn client_id_and_username_follow_edgehub() {
        let id = fallback_identity(PathBuf::from("/nonexistent"));
        assert_eq!(id.client_id(), "dev1/filtermodule");
        assert_eq!(
            id.username(),
            format!(
                "myhub.azure-devices.net/dev1/filtermodule/?api-version=2019-10-01\
                 &DeviceClientType=edgefilter%2F{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(id.server_name().unwrap().to_str(), "edgehub");
        let mut bad = id.clone();
        bad.gateway_host_name = "not a host".into();
        assert!(bad.server_name().is_err());
    }

    #[test]
    fn odd_device_ids_are_raw_in_client_id_and_username_and_encoded_in_sr() {
        let ua = format!("edgefilter%2F{}", env!("CARGO_PKG_VERSION"));
        for (dev, sr_dev) in [
            ("gw:01@plant", "gw%3A01%40plant"),
            ("dev$1", "dev%241"),
            ("a(b)=c", "a%28b%29%3Dc"),
            (
                "-:.+%_#*?!(),=@;$'",
                "-%3A.%2B%25_%23%2A%3F%21%28%29%2C%3D%40%3B%24%27",
            ),
        ] {
            let mut id = fallback_identity(PathBuf::from("/nonexistent"));
            id.device_id = dev.into();
            id.module_id = "filter_module-2".into();
            assert_eq!(id.client_id(), format!("{dev}/filter_module-2"));
            assert_eq!(
                id.username(),
                format!(
                    "myhub.azure-devices.net/{dev}/filter_module-2/?api-version=2019-10-01\
                     &DeviceClientType={ua}"
                )
            );
            // python3 -c 'import urllib.parse as u; print(u.quote("<id>", safe=""))'
            assert_eq!(
                sas::encoded_resource_uri(&id.hub_host_name, dev, "filter_module-2"),
                format!("myhub.azure-devices.net%2Fdevices%2F{sr_dev}%2Fmodules%2Ffilter_module-2")
            );
        }
    }

    #[tokio::test]
    async fn local_credentials_carry_a_locally_signed_token() {
        let id = fallback_identity(PathBuf::from("/nonexistent"));
        let c = id
            .connect_credentials(1_700_000_000, DEFAULT_TOKEN_TTL)
            .await
            .unwrap();
        assert_eq!(c.client_id, "dev1/filtermodule");
        assert_eq!(c.expires_at, 1_700_003_600);
        assert_eq!(c.renew_at, 1_700_003_480);
        // Expected signature computed independently:
        // python3 -c 'import hmac,hashlib,base64,urllib.parse as u;
        //   sr=u.quote("myhub.azure-devices.net/devices/dev1/modules/filtermodule",safe="");
        //   d=hmac.new(b"secret-key-0123456789",(sr+"\n1700003600").encode(),hashlib.sha256).digest();
        //   print(u.quote(base64.b64encode(d).decode(),safe=""))'
        assert_eq!(
            c.password,
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Ffiltermodule\
             &sig=AE1HH0FMWdGzwTxvXN%2FTcJb9sfNQOkBJqpEZom%2B0bjY%3D&se=1700003600"
        );
        assert!(!format!("{c:?}").contains("SharedAccessSignature"));
    }

    #[tokio::test]
    async fn missing_ca_file_is_named_in_the_error() {
        let id = fallback_identity(PathBuf::from("/nonexistent/ca.pem"));
        let e = id.tls_config().await.unwrap_err();
        assert!(matches!(e, AzureError::CaFile { .. }), "{e:?}");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        let e = root_store_from_pem(b"hello", "bundle").unwrap_err();
        assert_eq!(e.to_string(), "bundle: holds no PEM certificate");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = root_store_from_pem(garbage, "bundle").unwrap_err();
        assert!(e.to_string().starts_with("bundle: none of its 1"), "{e}");
    }
}
