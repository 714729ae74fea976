//! TLS for `mqtts://` brokers (the transport under MQTT in and out): a rustls client
//! configuration from `--ca` (or the public web roots when no CA is given), with an optional
//! client certificate for mutual TLS. Host names are always verified.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;

pub use crate::settings::TlsFiles;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{flag} {path}: {detail}")]
    File {
        flag: &'static str,
        path: String,
        detail: String,
    },
    #[error("{flag} {path}: no PEM certificate found")]
    NoCertificate { flag: &'static str, path: String },
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
}

fn file_error(flag: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        flag,
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn read_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(flag, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            flag,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// A root store holding exactly the certificates of `pem` text.
pub fn roots_from_pem(
    flag: &'static str,
    origin: &str,
    pem: &[u8],
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::File {
            flag,
            path: origin.to_string(),
            detail: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::File {
            flag,
            path: origin.to_string(),
            detail: e.to_string(),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::NoCertificate {
            flag,
            path: origin.to_string(),
        });
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a client configuration whose only roots are `roots`, with an optional client
/// certificate chain and key.
pub fn client_config(
    roots: RootCertStore,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The configuration for `--ca`, `--client-cert`, `--client-key`.
pub fn from_files(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &files.ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| file_error("--ca", path, e))?;
            roots_from_pem("--ca", &path.display().to_string(), &pem)?
        }
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let client = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("--client-cert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_error("--client-key", key, e))?;
            Some((chain, key))
        }
        _ => None,
    };
    client_config(roots, client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_empty_ca_files_are_named() {
        let files = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = from_files(&files).unwrap_err().to_string();
        assert!(e.starts_with("--ca /nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let files = TlsFiles {
            ca: Some(empty.clone()),
            ..Default::default()
        };
        let e = from_files(&files).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn public_roots_are_the_default() {
        assert!(from_files(&TlsFiles::default()).is_ok());
    }
}
