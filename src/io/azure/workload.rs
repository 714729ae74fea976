//! IoT Edge workload API client (io, before MQTT in): asks the security daemon, over its unix
//! socket, to sign the SAS token's string (the module's key never leaves the daemon) and for the
//! trust bundle that edgeHub's server certificate chains to.
//!
//! HTTP/1.1 with hyper's connection-level client: one short connection per request (a module
//! makes two requests per token lifetime, so pooling buys nothing; the daemon allows at most 10
//! concurrent requests per module socket and we never make more than one at a time).
//! Requests as the IoT Edge security daemon serves them (and the Python SDK's
//! `iothub/edge_hsm.py` makes them):
//! - `POST /modules/{moduleId}/genid/{generationId}/sign?api-version=…` with
//!   `{"keyId":"primary","algo":"HMACSHA256","data":"<base64>"}` → `{"digest":"<base64>"}`;
//! - `GET /trust-bundle?api-version=…` → `{"certificate":"<PEM>"}`;
//! - errors: 4xx/5xx with `{"message":"…"}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

use crate::mqtt::azure::sas::encode_component;

/// Largest response body read (a trust bundle of a few certificates is a few KiB).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How long one request may take, connection included, unless changed with
/// [`WorkloadClient::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed workload API request. `request` is `sign` or `trust-bundle`.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{request}: cannot connect to {path}")]
    Connect {
        request: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{request}: HTTP exchange failed")]
    Http {
        request: &'static str,
        #[source]
        source: hyper::Error,
    },
    /// The daemon answered with an error status; `message` is its error body's `message`
    /// (or the body text when it is not the documented JSON).
    #[error("{request}: HTTP {status}: {message}")]
    Status {
        request: &'static str,
        status: u16,
        message: String,
    },
    #[error("{request}: unexpected response: {reason}")]
    BadResponse {
        request: &'static str,
        reason: String,
    },
    #[error("{request}: no answer within {timeout:?}")]
    Timeout {
        request: &'static str,
        timeout: Duration,
    },
}

impl WorkloadError {
    /// The HTTP status of an error answer, if the daemon answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            WorkloadError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client for one module's workload API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadClient {
    socket_path: PathBuf,
    module_id: String,
    generation_id: String,
    api_version: String,
    timeout: Duration,
}

#[derive(Serialize)]
struct SignRequest<'a> {
    #[serde(rename = "keyId")]
    key_id: &'a str,
    algo: &'a str,
    data: String,
}

#[derive(Deserialize)]
struct SignResponse {
    digest: String,
}

#[derive(Deserialize)]
struct TrustBundleResponse {
    certificate: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    message: String,
}

/// Aborts the spawned connection task when the request ends (or is cancelled by the timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl WorkloadClient {
    /// A client for the socket at `socket_path` (the path part of `IOTEDGE_WORKLOADURI`).
    pub fn new(
        socket_path: impl Into<PathBuf>,
        module_id: &str,
        generation_id: &str,
        api_version: &str,
    ) -> WorkloadClient {
        WorkloadClient {
            socket_path: socket_path.into(),
            module_id: module_id.to_string(),
            generation_id: generation_id.to_string(),
            api_version: api_version.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> WorkloadClient {
        self.timeout = timeout;
        self
    }

    /// The socket this client talks to.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The sign request's path and query, with module id and generation id url-encoded.
    pub fn sign_path(&self) -> String {
        format!(
            "/modules/{}/genid/{}/sign?api-version={}",
            encode_component(&self.module_id),
            encode_component(&self.generation_id),
            encode_component(&self.api_version)
        )
    }

    /// The trust bundle request's path and query.
    pub fn trust_bundle_path(&self) -> String {
        format!(
            "/trust-bundle?api-version={}",
            encode_component(&self.api_version)
        )
    }

    /// HMAC-SHA256 of `data` with the module's primary key, as the daemon's base64 digest.
    pub async fn sign(&self, data: &[u8]) -> Result<String, WorkloadError> {
        const REQUEST: &str = "sign";
        let body = serde_json::to_vec(&SignRequest {
            key_id: "primary",
            algo: "HMACSHA256",
            data: BASE64.encode(data),
        })
        .expect("a struct of strings serializes");
        let body = self
            .call(REQUEST, Method::POST, &self.sign_path(), Some(body))
            .await?;
        let resp: SignResponse =
            serde_json::from_slice(&body).map_err(|e| WorkloadError::BadResponse {
                request: REQUEST,
                reason: format!("expected {{\"digest\": …}}: {e}"),
            })?;
        match BASE64.decode(&resp.digest) {
            Ok(d) if d.len() == 32 => Ok(resp.digest),
            _ => Err(WorkloadError::BadResponse {
                request: REQUEST,
                reason: "digest is not a base64 HMAC-SHA256".to_string(),
            }),
        }
    }

    /// The trust bundle: PEM text, possibly several certificates.
    pub async fn trust_bundle(&self) -> Result<String, WorkloadError> {
        const REQUEST: &str = "trust-bundle";
        let body = self
            .call(REQUEST, Method::GET, &self.trust_bundle_path(), None)
            .await?;
        let resp: TrustBundleResponse =
            serde_json::from_slice(&body).map_err(|e| WorkloadError::BadResponse {
                request: REQUEST,
                reason: format!("expected {{\"certificate\": …}}: {e}"),
            })?;
        Ok(resp.certificate)
    }

    /// One request on a fresh connection; the body of a 2xx answer, or the error.
    async fn call(
        &self,
        request: &'static str,
        method: Method,
        path_and_query: &str,
        json_body: Option<Vec<u8>>,
    ) -> Result<Bytes, WorkloadError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, "localhost")
            .header(USER_AGENT, super::USER_AGENT);
        if json_body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(json_body.unwrap_or_default())))
            .map_err(|e| WorkloadError::BadResponse {
                request,
                reason: format!("cannot build the request: {e}"),
            })?;
        let exchange = async {
            let stream = UnixStream::connect(&self.socket_path)
                .await
                .map_err(|source| WorkloadError::Connect {
                    request,
                    path: self.socket_path.display().to_string(),
                    source,
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|source| WorkloadError::Http { request, source })?;
            let _conn = AbortOnDrop(tokio::spawn(async move {
                // Errors surface through send_request / the body below.
                let _ = conn.await;
            }));
            let resp = sender
                .send_request(req)
                .await
                .map_err(|source| WorkloadError::Http { request, source })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| WorkloadError::BadResponse {
                    request,
                    reason: format!("cannot read the body: {e}"),
                })?
                .to_bytes();
            Ok::<_, WorkloadError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| WorkloadError::Timeout {
                request,
                timeout: self.timeout,
            })??;
        if status.is_success() {
            Ok(body)
        } else {
            Err(WorkloadError::Status {
                request,
                status: status.as_u16(),
                message: error_message(status, &body),
            })
        }
    }
}

/// The `message` of an error body, else the body text (shortened), else the status reason.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<ErrorResponse>(body) {
        return e.message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("(empty body)")
            .to_string();
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_the_module_id_and_carry_the_api_version() {
        let c = WorkloadClient::new("/run/w.sock", "filter module/1", "6376", "2022-08-03");
        assert_eq!(
            c.sign_path(),
            "/modules/filter%20module%2F1/genid/6376/sign?api-version=2022-08-03"
        );
        assert_eq!(
            c.trust_bundle_path(),
            "/trust-bundle?api-version=2022-08-03"
        );
    }

    #[test]
    fn sign_request_body_is_the_documented_json() {
        let body = serde_json::to_string(&SignRequest {
            key_id: "primary",
            algo: "HMACSHA256",
            data: BASE64.encode(b"a%2Fb\n1700000000"),
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"keyId":"primary","algo":"HMACSHA256","data":"YSUyRmIKMTcwMDAwMDAwMA=="}"#
        );
    }

    #[test]
    fn error_messages_come_from_the_body() {
        let s = StatusCode::NOT_FOUND;
        assert_eq!(
            error_message(s, br#"{"message":"Module not found"}"#),
            "Module not found"
        );
        assert_eq!(error_message(s, b"plain text\n"), "plain text");
        assert_eq!(error_message(s, b""), "Not Found");
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = WorkloadClient::new(dir.path().join("none.sock"), "m", "g", "2022-08-03");
        let e = c.sign(b"x").await.unwrap_err();
        assert!(matches!(e, WorkloadError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("none.sock"), "{e}");
    }
}
