//! The IoT Edge security daemon's workload API (test tooling, before TLS and CONNECT): a
//! stand-in on a unix socket that serves the two calls a module makes — sign (real
//! HMAC-SHA256 with a module key the test knows) and the trust bundle (CAs the test generated)
//! — after checking each request's method, path, `api-version` and JSON body as the daemon
//! does. Used by the Rust tests (edgefilter's workload client) and, through the binary, by the
//! Python SDK peer (`requests_unixsocket`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::auth::{decode, hmac_base64};

/// The workload API version the runtime announces (`IOTEDGE_APIVERSION`).
pub const API_VERSION: &str = "2022-08-03";

/// What the daemon knows about the module.
pub struct Daemon {
    pub key: Vec<u8>,
    pub module_id: String,
    pub generation_id: String,
    pub bundle_pem: String,
}

#[derive(Clone)]
pub enum Behaviour {
    /// Answers as the daemon does, after checking the request.
    Daemon(Arc<Daemon>),
    /// Answers every request with this status and body.
    Fail { status: u16, body: &'static str },
    /// Reads the request and never answers.
    Hang,
}

impl Behaviour {
    pub fn daemon(key: &[u8], module_id: &str, generation_id: &str, bundle_pem: &str) -> Self {
        Behaviour::Daemon(Arc::new(Daemon {
            key: key.to_vec(),
            module_id: module_id.into(),
            generation_id: generation_id.into(),
            bundle_pem: bundle_pem.into(),
        }))
    }
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub body: Vec<u8>,
}

pub struct StandIn {
    pub socket: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

impl StandIn {
    /// How many requests had this method and a path starting with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path_and_query.starts_with(prefix))
            .count()
    }
}

fn json_response(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn error(status: u16, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        serde_json::json!({ "message": message }).to_string(),
    )
}

/// What the daemon would answer (its checks are the test's assertions on the request). The
/// module id in the sign path is compared after percent-decoding, as the daemon's router does.
fn answer(seen: &Seen, d: &Daemon) -> Response<Full<Bytes>> {
    let query = format!("api-version={API_VERSION}");
    let (path, q) = seen
        .path_and_query
        .split_once('?')
        .unwrap_or((&seen.path_and_query, ""));
    if q != query {
        return error(400, &format!("expected ?{query}, got ?{q}"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    match (seen.method.as_str(), segments.as_slice()) {
        ("POST", ["", "modules", module, "genid", genid, "sign"]) => {
            if decode(module) != d.module_id || *genid != d.generation_id {
                return error(404, &format!("no module {module} generation {genid}"));
            }
            let Ok(req) = serde_json::from_slice::<HashMap<String, String>>(&seen.body) else {
                return error(400, "body is not a JSON object of strings");
            };
            if req.len() != 3
                || req.get("keyId").map(String::as_str) != Some("primary")
                || req.get("algo").map(String::as_str) != Some("HMACSHA256")
            {
                return error(400, "expected keyId=primary, algo=HMACSHA256, data");
            }
            let Some(Ok(data)) = req.get("data").map(|d| BASE64.decode(d)) else {
                return error(400, "data is not base64");
            };
            json_response(
                200,
                serde_json::json!({ "digest": hmac_base64(&d.key, &data) }).to_string(),
            )
        }
        ("GET", ["", "trust-bundle"]) => json_response(
            200,
            serde_json::json!({ "certificate": d.bundle_pem }).to_string(),
        ),
        _ => error(
            404,
            &format!("no route for {} {}", seen.method, seen.path_and_query),
        ),
    }
}

async fn serve(
    req: Request<Incoming>,
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let request = Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        body,
    };
    seen.lock().unwrap().push(request.clone());
    Ok(match behaviour {
        Behaviour::Daemon(d) => answer(&request, &d),
        Behaviour::Fail { status, body } => json_response(status, body.to_string()),
        Behaviour::Hang => std::future::pending().await,
    })
}

/// Serves the workload API on `<tempdir>/workload.sock` (needs a tokio runtime).
pub fn start_stand_in(behaviour: Behaviour) -> StandIn {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("workload.sock");
    let listener = UnixListener::bind(&socket).expect("bind the workload socket");
    let seen = Arc::new(Mutex::new(Vec::new()));
    accept_loop(listener, behaviour, seen.clone());
    StandIn {
        socket,
        seen,
        _dir: dir,
    }
}

fn accept_loop(listener: UnixListener, behaviour: Behaviour, seen: Arc<Mutex<Vec<Seen>>>) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let behaviour = behaviour.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    serve(req, behaviour.clone(), seen.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// Serves the workload API on a socket at `socket` (the binary's choice of path); the
/// returned [`StandIn`] owns no temp dir.
pub fn serve_at(behaviour: Behaviour, socket: &Path) -> std::io::Result<Arc<Mutex<Vec<Seen>>>> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    accept_loop(listener, behaviour, seen.clone());
    Ok(seen)
}
