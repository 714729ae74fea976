//! Who the module is (io, before MQTT in): reads the IoT Edge runtime's environment into an
//! [`AzureIdentity`], or the development fallback (`EdgeHubConnectionString` +
//! `EdgeModuleCACertificateFile`), or says there is none so `--azure-edge auto` can use generic
//! MQTT. A half-configured environment is an error naming what is missing.
//!
//! The order follows the Python SDK's `create_from_edge_environment`
//! (`azure/iot/device/iothub/abstract_clients.py`): all seven `IOTEDGE_*` variables → workload
//! mode; otherwise the connection string (the SDK then requires the CA file and the connection
//! string's `HostName`, `DeviceId`, `ModuleId`, `GatewayHostName`, `SharedAccessKey`).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use rustls_pki_types::ServerName;

use super::AzureError;
use crate::mqtt::azure::sas::SharedAccessKey;

/// The variables the IoT Edge runtime gives every module container, all required for workload
/// mode.
pub const WORKLOAD_VARS: [&str; 7] = [
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_APIVERSION",
];

/// Optional; when present it must say `sasToken` (the only scheme edgeHub offers modules).
pub const AUTH_SCHEME_VAR: &str = "IOTEDGE_AUTHSCHEME";
/// Development fallback: `HostName=…;GatewayHostName=…;DeviceId=…;ModuleId=…;SharedAccessKey=…`.
pub const CONNECTION_STRING_VAR: &str = "EdgeHubConnectionString";
/// Development fallback: PEM file with the CA that signed edgeHub's server certificate.
pub const CA_FILE_VAR: &str = "EdgeModuleCACertificateFile";

/// The module's identity on the IoT Edge device and how it proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureIdentity {
    /// The IoT hub's host name (`IOTEDGE_IOTHUBHOSTNAME` / `HostName`): part of the SAS resource
    /// and of the MQTT username.
    pub hub_host_name: String,
    /// The edge device's id (`IOTEDGE_DEVICEID` / `DeviceId`).
    pub device_id: String,
    /// This module's id (`IOTEDGE_MODULEID` / `ModuleId`).
    pub module_id: String,
    /// edgeHub's host name on the module network (`IOTEDGE_GATEWAYHOSTNAME` /
    /// `GatewayHostName`): where to connect, and the name its certificate must carry.
    /// Validated as a TLS server name.
    pub gateway_host_name: String,
    /// Where the SAS signature and the trusted roots come from.
    pub credentials: CredentialSource,
}

/// How the module signs its SAS token and which CA it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Inside an IoT Edge deployment: the security daemon's workload API signs and serves the
    /// trust bundle.
    Workload {
        /// `IOTEDGE_WORKLOADURI` as given (`unix:///var/run/iotedge/workload.sock`).
        workload_uri: String,
        /// The socket path taken from it.
        socket_path: PathBuf,
        /// `IOTEDGE_MODULEGENERATIONID`: part of the sign request's path.
        generation_id: String,
        /// `IOTEDGE_APIVERSION`: the workload API's `api-version`.
        api_version: String,
    },
    /// Development fallback: the connection string's key signs locally; the CA file is the
    /// only trusted root.
    SharedAccessKey {
        key: SharedAccessKey,
        ca_file: PathBuf,
    },
}

impl AzureIdentity {
    /// Reads the environment through `get` (pass `|k| std::env::var(k).ok()`).
    ///
    /// - all of [`WORKLOAD_VARS`] set → workload mode;
    /// - else `EdgeHubConnectionString` set → development fallback (then
    ///   `EdgeModuleCACertificateFile` is required);
    /// - else nothing of the above set → `Ok(None)` (not an IoT Edge module);
    /// - else (some set, not enough) → an error naming what is missing.
    ///
    /// Empty values count as unset.
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<AzureIdentity>, AzureError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let workload: Vec<(&'static str, Option<String>)> =
            WORKLOAD_VARS.iter().map(|&n| (n, get(n))).collect();
        let missing: Vec<&str> = workload
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
        if missing.is_empty() {
            let values: HashMap<&str, String> = workload
                .into_iter()
                .map(|(n, v)| (n, v.unwrap_or_default()))
                .collect();
            return Self::workload(&values, get(AUTH_SCHEME_VAR)).map(Some);
        }
        if let Some(cs) = get(CONNECTION_STRING_VAR) {
            let ca_file = get(CA_FILE_VAR).ok_or(AzureError::IncompleteEnvironment {
                missing: format!("{CA_FILE_VAR} (needed with {CONNECTION_STRING_VAR})"),
            })?;
            return Self::fallback(&cs, PathBuf::from(ca_file)).map(Some);
        }
        if missing.len() < WORKLOAD_VARS.len() {
            return Err(AzureError::IncompleteEnvironment {
                missing: missing.join(", "),
            });
        }
        if get(CA_FILE_VAR).is_some() {
            return Err(AzureError::IncompleteEnvironment {
                missing: format!("{CONNECTION_STRING_VAR} (needed with {CA_FILE_VAR})"),
            });
        }
        Ok(None)
    }

    /// Like [`Self::from_env`], for `--azure-edge on`: no IoT Edge environment is an error.
    pub fn require_from_env(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<AzureIdentity, AzureError> {
        Self::from_env(get)?.ok_or(AzureError::NotConfigured)
    }

    fn workload(
        v: &HashMap<&str, String>,
        auth_scheme: Option<String>,
    ) -> Result<AzureIdentity, AzureError> {
        if let Some(scheme) = auth_scheme {
            if scheme != "sasToken" {
                return Err(AzureError::BadVariable {
                    name: AUTH_SCHEME_VAR,
                    reason: format!("only sasToken is supported, got {scheme:?}"),
                });
            }
        }
        let workload_uri = v["IOTEDGE_WORKLOADURI"].trim().to_string();
        let socket_path = parse_workload_uri(&workload_uri)?;
        let hub_host_name = host_name("IOTEDGE_IOTHUBHOSTNAME", &v["IOTEDGE_IOTHUBHOSTNAME"])?;
        let gateway_host_name =
            gateway_host_name("IOTEDGE_GATEWAYHOSTNAME", &v["IOTEDGE_GATEWAYHOSTNAME"])?;
        Ok(AzureIdentity {
            hub_host_name,
            device_id: v["IOTEDGE_DEVICEID"].clone(),
            module_id: v["IOTEDGE_MODULEID"].clone(),
            gateway_host_name,
            credentials: CredentialSource::Workload {
                workload_uri,
                socket_path,
                generation_id: v["IOTEDGE_MODULEGENERATIONID"].clone(),
                api_version: v["IOTEDGE_APIVERSION"].trim().to_string(),
            },
        })
    }

    fn fallback(connection_string: &str, ca_file: PathBuf) -> Result<AzureIdentity, AzureError> {
        let fields = parse_connection_string(connection_string)?;
        let field = |key: &str| {
            fields
                .get(key)
                .cloned()
                .ok_or_else(|| bad_cs(format!("has no {key}")))
        };
        let key = SharedAccessKey::from_base64(&field("SharedAccessKey")?)
            .map_err(|_| bad_cs("SharedAccessKey is not valid base64".to_string()))?;
        Ok(AzureIdentity {
            hub_host_name: host_name(CONNECTION_STRING_VAR, &field("HostName")?)?,
            device_id: field("DeviceId")?,
            module_id: field("ModuleId")?,
            gateway_host_name: gateway_host_name(
                CONNECTION_STRING_VAR,
                &field("GatewayHostName")?,
            )?,
            credentials: CredentialSource::SharedAccessKey { key, ca_file },
        })
    }
}

impl fmt::Display for AzureIdentity {
    /// `<deviceId>/<moduleId> via <gateway> (workload API | shared access key)`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.credentials {
            CredentialSource::Workload { .. } => "workload API",
            CredentialSource::SharedAccessKey { .. } => "shared access key",
        };
        write!(
            f,
            "{}/{} via {} ({how})",
            self.device_id, self.module_id, self.gateway_host_name
        )
    }
}

fn bad_cs(reason: String) -> AzureError {
    AzureError::BadVariable {
        name: CONNECTION_STRING_VAR,
        reason,
    }
}

/// The keys a connection string may hold (the SDK's `connection_string.py`); the others
/// are accepted and ignored.
const CONNECTION_STRING_KEYS: [&str; 7] = [
    "HostName",
    "SharedAccessKeyName",
    "SharedAccessKey",
    "SharedAccessSignature",
    "DeviceId",
    "ModuleId",
    "GatewayHostName",
];

/// `Key=Value;Key=Value`: split at `;`, each pair at its first `=` (base64 keys end in `=`).
/// Unknown keys, duplicates, empty values and pairs without `=` are errors (no value is ever
/// quoted back: it may be the key). A trailing `;` is tolerated.
fn parse_connection_string(s: &str) -> Result<HashMap<String, String>, AzureError> {
    let mut fields = HashMap::new();
    for (i, part) in s.trim().split(';').enumerate() {
        if part.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(bad_cs(format!("part {} is not Key=Value", i + 1)));
        };
        let k = k.trim();
        if !CONNECTION_STRING_KEYS.contains(&k) {
            return Err(bad_cs(format!(
                "unknown key {k:?} (expected {})",
                CONNECTION_STRING_KEYS.join(", ")
            )));
        }
        if v.trim().is_empty() {
            return Err(bad_cs(format!("{k} is empty")));
        }
        if fields.insert(k.to_string(), v.trim().to_string()).is_some() {
            return Err(bad_cs(format!("{k} appears twice")));
        }
    }
    Ok(fields)
}

/// `unix:///abs/path.sock` → `/abs/path.sock`.
fn parse_workload_uri(uri: &str) -> Result<PathBuf, AzureError> {
    match uri.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') && path.len() > 1 => Ok(PathBuf::from(path)),
        _ => Err(AzureError::BadVariable {
            name: "IOTEDGE_WORKLOADURI",
            reason: format!(
                "expected a unix socket URI such as unix:///var/run/iotedge/workload.sock, \
                 got {uri:?}"
            ),
        }),
    }
}

fn host_name(name: &'static str, value: &str) -> Result<String, AzureError> {
    let value = value.trim();
    if value.contains(['/', ' ', '\t', ';', '?', '#']) {
        return Err(AzureError::BadVariable {
            name,
            reason: format!("{value:?} is not a host name"),
        });
    }
    Ok(value.to_string())
}

fn gateway_host_name(name: &'static str, value: &str) -> Result<String, AzureError> {
    let value = host_name(name, value)?;
    ServerName::try_from(value.as_str()).map_err(|_| AzureError::BadVariable {
        name,
        reason: format!("gateway host name {value:?} is not a valid TLS server name"),
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const RUNTIME: [(&str, &str); 8] = [
        ("IOTEDGE_IOTHUBHOSTNAME", "myhub.azure-devices.net"),
        ("IOTEDGE_DEVICEID", "dev1"),
        ("IOTEDGE_MODULEID", "filtermodule"),
        ("IOTEDGE_GATEWAYHOSTNAME", "edgehub"),
        ("IOTEDGE_MODULEGENERATIONID", "637651234567890123"),
        (
            "IOTEDGE_WORKLOADURI",
            "unix:///var/run/iotedge/workload.sock",
        ),
        ("IOTEDGE_APIVERSION", "2022-08-03"),
        ("IOTEDGE_AUTHSCHEME", "sasToken"),
    ];

    const CS: &str = "HostName=myhub.azure-devices.net;GatewayHostName=gw.local;DeviceId=dev1;\
                      ModuleId=filtermodule;SharedAccessKey=c2VjcmV0LWtleS0wMTIzNDU2Nzg5";

    #[test]
    fn nothing_set_means_not_an_edge_module() {
        assert_eq!(AzureIdentity::from_env(env(&[])).unwrap(), None);
        assert_eq!(
            AzureIdentity::from_env(env(&[("IOTEDGE_DEVICEID", "")])).unwrap(),
            None
        );
        let e = AzureIdentity::require_from_env(env(&[])).unwrap_err();
        assert!(matches!(e, AzureError::NotConfigured));
        assert!(e.to_string().contains("IOTEDGE_WORKLOADURI"), "{e}");
    }

    #[test]
    fn the_runtime_environment_gives_workload_mode() {
        let id = AzureIdentity::from_env(env(&RUNTIME)).unwrap().unwrap();
        assert_eq!(
            id,
            AzureIdentity {
                hub_host_name: "myhub.azure-devices.net".into(),
                device_id: "dev1".into(),
                module_id: "filtermodule".into(),
                gateway_host_name: "edgehub".into(),
                credentials: CredentialSource::Workload {
                    workload_uri: "unix:///var/run/iotedge/workload.sock".into(),
                    socket_path: "/var/run/iotedge/workload.sock".into(),
                    generation_id: "637651234567890123".into(),
                    api_version: "2022-08-03".into(),
                },
            }
        );
        assert_eq!(
            id.to_string(),
            "dev1/filtermodule via edgehub (workload API)"
        );
        // The auth scheme is optional.
        assert!(AzureIdentity::from_env(env(&RUNTIME[..7]))
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_partial_runtime_environment_names_what_is_missing() {
        let partial: Vec<(&str, &str)> = RUNTIME
            .iter()
            .copied()
            .filter(|(k, _)| *k != "IOTEDGE_MODULEGENERATIONID" && *k != "IOTEDGE_APIVERSION")
            .collect();
        let e = AzureIdentity::from_env(env(&partial)).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "incomplete IoT Edge environment: IOTEDGE_MODULEGENERATIONID, \
                 IOTEDGE_APIVERSION not set"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_runtime_values_are_named() {
        let with = |k: &str, v: &'static str| {
            let mut vars: Vec<(&str, &str)> = RUNTIME.to_vec();
            vars.retain(|(n, _)| *n != k);
            vars.push((Box::leak(k.to_string().into_boxed_str()), v));
            AzureIdentity::from_env(env(&vars)).unwrap_err().to_string()
        };
        let e = with("IOTEDGE_WORKLOADURI", "http://localhost:15580");
        assert!(
            e.starts_with("IOTEDGE_WORKLOADURI: expected a unix socket URI"),
            "{e}"
        );
        let e = with("IOTEDGE_WORKLOADURI", "unix://relative.sock");
        assert!(e.starts_with("IOTEDGE_WORKLOADURI:"), "{e}");
        let e = with("IOTEDGE_AUTHSCHEME", "x509");
        assert_eq!(
            e,
            "IOTEDGE_AUTHSCHEME: only sasToken is supported, got \"x509\""
        );
        let e = with("IOTEDGE_GATEWAYHOSTNAME", "edge hub");
        assert!(e.starts_with("IOTEDGE_GATEWAYHOSTNAME:"), "{e}");
        let e = with("IOTEDGE_IOTHUBHOSTNAME", "hub/x");
        assert!(e.starts_with("IOTEDGE_IOTHUBHOSTNAME:"), "{e}");
    }

    #[test]
    fn the_connection_string_gives_the_fallback() {
        let id = AzureIdentity::from_env(env(&[
            ("EdgeHubConnectionString", CS),
            ("EdgeModuleCACertificateFile", "/certs/edge-ca.pem"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(id.hub_host_name, "myhub.azure-devices.net");
        assert_eq!(id.device_id, "dev1");
        assert_eq!(id.module_id, "filtermodule");
        assert_eq!(id.gateway_host_name, "gw.local");
        assert_eq!(
            id.credentials,
            CredentialSource::SharedAccessKey {
                key: SharedAccessKey::from_base64("c2VjcmV0LWtleS0wMTIzNDU2Nzg5").unwrap(),
                ca_file: "/certs/edge-ca.pem".into(),
            }
        );
        // The key never shows in Debug.
        assert!(!format!("{id:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn the_fallback_is_used_when_the_runtime_environment_is_partial() {
        let id = AzureIdentity::from_env(env(&[
            ("IOTEDGE_DEVICEID", "other"),
            ("EdgeHubConnectionString", CS),
            ("EdgeModuleCACertificateFile", "/certs/edge-ca.pem"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(id.device_id, "dev1");
    }

    #[test]
    fn fallback_errors_name_the_problem_without_quoting_the_key() {
        let err = |cs: &str, ca: Option<&str>| {
            let mut vars = vec![("EdgeHubConnectionString", cs)];
            if let Some(ca) = ca {
                vars.push(("EdgeModuleCACertificateFile", ca));
            }
            AzureIdentity::from_env(env(&vars)).unwrap_err().to_string()
        };
        assert!(err(CS, None).contains("EdgeModuleCACertificateFile (needed with"));
        let ca = Some("/ca.pem");
        assert_eq!(
            err(&CS.replace("ModuleId=filtermodule;", ""), ca),
            "EdgeHubConnectionString: has no ModuleId"
        );
        assert_eq!(
            err(&CS.replace("GatewayHostName=gw.local;", ""), ca),
            "EdgeHubConnectionString: has no GatewayHostName"
        );
        assert_eq!(
            err(&format!("{CS};DeviceId=x"), ca),
            "EdgeHubConnectionString: DeviceId appears twice"
        );
        assert!(err(&format!("{CS};Foo=bar"), ca).contains("unknown key \"Foo\""));
        assert_eq!(
            err(&format!("{CS};garbage"), ca),
            "EdgeHubConnectionString: part 6 is not Key=Value"
        );
        let bad_key = CS.replace("c2VjcmV0LWtleS0wMTIzNDU2Nzg5", "%%%secret%%%");
        let e = err(&bad_key, ca);
        assert_eq!(
            e,
            "EdgeHubConnectionString: SharedAccessKey is not valid base64"
        );
        assert!(
            AzureIdentity::from_env(env(&[("EdgeModuleCACertificateFile", "/ca.pem")]))
                .unwrap_err()
                .to_string()
                .contains("EdgeHubConnectionString (needed with EdgeModuleCACertificateFile)")
        );
        // A trailing ';' is fine.
        assert!(AzureIdentity::from_env(env(&[
            ("EdgeHubConnectionString", &format!("{CS};")),
            ("EdgeModuleCACertificateFile", "/ca.pem"),
        ]))
        .is_ok());
    }
}
