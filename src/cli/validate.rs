//! `RunArgs::validate`: every flag of `edgefilter run` checked and turned into [`Settings`],
//! each mistake as one [`ConfigError`] line, before any socket is opened.

use std::time::Duration;

use crate::mqtt::broker_url::BrokerUrl;
use crate::mqtt::topic;
use crate::pipeline::verdict::FieldPath;

use super::*;
use crate::settings::TlsFiles;

impl RunArgs {
    /// Checks every flag and turns them into [`Settings`]. Reads the password file (small).
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let target = match &self.broker {
            Some(url) if !url.trim().is_empty() => Target::External(BrokerUrl::parse(url)?),
            _ => Target::Embedded {
                v4: parse_addr(&self.listen)
                    .ok_or_else(|| ConfigError::Listen(self.listen.clone()))?,
                v5: match self.listen_v5.as_deref().map(str::trim) {
                    None | Some("") | Some("off") => None,
                    Some(s) => {
                        Some(parse_addr(s).ok_or_else(|| ConfigError::Listen(s.to_string()))?)
                    }
                },
            },
        };
        let metrics_addr = match self.metrics_addr.trim() {
            "off" | "" => None,
            s => Some(parse_addr(s).ok_or_else(|| ConfigError::MetricsAddr(s.to_string()))?),
        };
        let field = FieldPath::parse(&self.field)?;
        if !self.threshold.is_finite() {
            return Err(ConfigError::Threshold(self.threshold));
        }
        let input_topics: Vec<String> = self
            .input_topics
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if input_topics.is_empty() {
            return Err(ConfigError::NoInputTopic);
        }
        for t in &input_topics {
            if !topic::valid_filter(t) {
                return Err(ConfigError::InputTopic(t.clone()));
            }
        }
        let alert_topic = topic::Template::parse(&self.alert_topic)
            .map_err(|why| ConfigError::AlertTopic(self.alert_topic.clone(), why))?;
        for filter in &input_topics {
            let probe = topic::example_topic(filter);
            let rendered = alert_topic.render(&probe);
            if topic::matches(&rendered, filter) {
                return Err(ConfigError::AlertLoop {
                    alert: self.alert_topic.clone(),
                    filter: filter.clone(),
                });
            }
        }
        if !topic::valid_topic(&self.twin_topic) {
            return Err(ConfigError::TwinTopic(self.twin_topic.clone()));
        }
        let dead_letter_topic = match self.dead_letter_topic.trim() {
            "" => None,
            t if topic::valid_topic(t) => Some(t.to_string()),
            t => return Err(ConfigError::DeadLetterTopic(t.to_string())),
        };
        if let Some(g) = &self.share_group {
            if g.is_empty() || g.contains(['/', '+', '#']) {
                return Err(ConfigError::ShareGroup(g.clone()));
            }
        }
        if self.client_id.is_empty() {
            return Err(ConfigError::ClientId);
        }
        let workers = match self.workers {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.batch_max == 0 {
            return Err(ConfigError::BatchMax);
        }
        if self.max_pending == 0 {
            return Err(ConfigError::MaxPending);
        }
        if self.max_payload == 0 || self.max_payload > 268_435_455 {
            return Err(ConfigError::MaxPayload);
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(ConfigError::ClientCertPair);
        }
        let ka = self.keep_alive.as_secs();
        if !(1..=65535).contains(&ka) {
            return Err(ConfigError::KeepAlive);
        }
        let rules = self.rules.validate(&input_topics)?;
        let tls = TlsFiles {
            ca: self.ca.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        };
        let tls_requested = tls.ca.is_some() || tls.client_cert.is_some();
        if tls_requested {
            match &target {
                Target::External(url) if url.tls => {}
                _ => return Err(ConfigError::TlsWithoutMqtts),
            }
        }
        for (flag, path) in [
            ("--ca", &tls.ca),
            ("--client-cert", &tls.client_cert),
            ("--client-key", &tls.client_key),
        ] {
            if let Some(p) = path {
                std::fs::metadata(p).map_err(|source| ConfigError::File {
                    flag,
                    path: p.display().to_string(),
                    source,
                })?;
            }
        }
        let password = match &self.password_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::File {
                    flag: "--password-file",
                    path: p.display().to_string(),
                    source,
                })?;
                let line = text.lines().next().unwrap_or("").to_string();
                if line.is_empty() {
                    return Err(ConfigError::EmptyPassword(p.display().to_string()));
                }
                Some(line)
            }
        };
        let broker = self.broker_options(&target)?;
        let delivery = self.delivery()?;
        Ok(Settings {
            broker,
            delivery,
            target,
            input_topics,
            alert_topic,
            field,
            threshold: self.threshold,
            twin_topic: self.twin_topic.trim_end_matches('/').to_string(),
            qos: self.qos,
            workers,
            inline_batch: self.inline_batch,
            batch_max: self.batch_max,
            batch_linger: self.batch_linger,
            batch_format: self.batch_format,
            publisher_connection: self.publisher_connection,
            dead_letter_topic,
            client_id: self.client_id.clone(),
            share_group: self.share_group.clone(),
            tls,
            username: self.username.clone(),
            password,
            mqtt_version: self.mqtt_version,
            metrics_addr,
            max_payload: self.max_payload,
            drain_timeout: self.drain_timeout,
            log_format: self.log_format,
            stats_interval: self.stats_interval,
            azure_edge: self.azure_edge,
            azure_token_ttl: self.azure_token_ttl.max(Duration::from_secs(2)),
            input_name: self.input_name.clone(),
            output_name: self.output_name.clone(),
            max_pending: self.max_pending,
            max_inflight: self.max_inflight,
            keep_alive: self.keep_alive,
            rules,
        })
    }
}
