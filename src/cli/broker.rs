//! The embedded broker's flags of `edgefilter run` (bounds, logins, TLS, cluster), checked
//! into [`BrokerOptions`] as part of [`RunArgs::validate`]; files are read here, before any
//! socket is opened.

use super::{parse_addr, ConfigError, RunArgs, Target};
use crate::settings::{BrokerOptions, Cluster};

impl RunArgs {
    /// The embedded broker's flags, checked (files read) even when they will not be used.
    pub(super) fn broker_options(&self, target: &Target) -> Result<BrokerOptions, ConfigError> {
        use crate::settings::Passwords;
        if self.broker_queue == 0 {
            return Err(ConfigError::BrokerQueue);
        }
        let passwords = match &self.listen_password_file {
            None => None,
            Some(p) => {
                let path = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::File {
                    flag: "--listen-password-file",
                    path: path.clone(),
                    source,
                })?;
                Some(
                    Passwords::parse(&text)
                        .map_err(|source| ConfigError::PasswordFile { path, source })?,
                )
            }
        };
        let twin_writers: Vec<String> = self
            .twin_writers
            .iter()
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty())
            .collect();
        if !twin_writers.is_empty() && passwords.is_none() {
            return Err(ConfigError::TwinWriterWithoutPasswords);
        }
        let tls = match self.listen_tls.as_deref().map(str::trim) {
            None | Some("") | Some("off") => {
                if self.listen_cert.is_some() || self.listen_key.is_some() {
                    return Err(ConfigError::ListenCertWithoutTls);
                }
                None
            }
            Some(a) => {
                let addr = parse_addr(a).ok_or_else(|| ConfigError::Listen(a.to_string()))?;
                let (Some(cert), Some(key)) = (&self.listen_cert, &self.listen_key) else {
                    return Err(ConfigError::ListenTlsFiles);
                };
                for (flag, p) in [("--listen-cert", cert), ("--listen-key", key)] {
                    std::fs::metadata(p).map_err(|source| ConfigError::File {
                        flag,
                        path: p.display().to_string(),
                        source,
                    })?;
                }
                Some((addr, cert.clone(), key.clone()))
            }
        };
        let cluster = match (self.cluster_node_id, self.cluster_peers.is_empty()) {
            (None, true) => None,
            (Some(id), false) => {
                if !cfg!(feature = "cluster") {
                    return Err(ConfigError::ClusterNotBuiltIn);
                }
                let mut peers = Vec::new();
                for p in &self.cluster_peers {
                    let bad = || ConfigError::ClusterPeer(p.clone());
                    let (nid, addr) = p.trim().split_once('@').ok_or_else(bad)?;
                    let nid: u64 = nid.parse().map_err(|_| bad())?;
                    if nid == 0 {
                        return Err(bad());
                    }
                    peers.push((nid, parse_addr(addr).ok_or_else(bad)?));
                }
                if !peers.iter().any(|(n, _)| *n == id) {
                    return Err(ConfigError::ClusterSelf(id));
                }
                Some(Cluster { node_id: id, peers })
            }
            _ => return Err(ConfigError::ClusterPair),
        };
        let used = passwords.is_some()
            || tls.is_some()
            || cluster.is_some()
            || self.listen_anonymous
            || !twin_writers.is_empty();
        if used && matches!(target, Target::External(_)) {
            return Err(ConfigError::EmbeddedOnly);
        }
        Ok(BrokerOptions {
            queue: self.broker_queue,
            inflight: self.broker_inflight,
            stall_timeout: self.broker_stall_timeout,
            passwords,
            anonymous_anywhere: self.listen_anonymous,
            twin_writers,
            tls,
            cluster,
        })
    }
}
