//! Tooling, twin: loadgen's control connection. It reads the filter's retained twin documents
//! (`<prefix>/reported`, `<prefix>/desired`), sends the readiness probes, and for
//! `--twin-step` publishes a retained desired patch and waits until the reported document
//! shows it applied. The decisions (next `$version`, "is this report our patch?") are pure
//! functions below, tested without a broker.

use crate::publisher::IDLE_PING;
use crate::wire::{
    decode_control, frame, parse_publish, publish_packet, subscribe_packet, Conn, Inbound,
    WireError, PINGREQ,
};
use bytes::Buf;
use serde_json::Value;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TwinError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("twin: the filter refused the patch {patch}: status {status:?}")]
    Refused { patch: String, status: String },
    #[error("twin: no reported document with $version {version} and TemperatureThreshold {threshold} on {topic} within {timeout:?} (last reported: {last})")]
    NotApplied {
        version: u64,
        threshold: f64,
        topic: String,
        timeout: Duration,
        last: String,
    },
}

/// The retained twin documents as found (invalid JSON is kept as a string value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TwinDocs {
    pub reported: Option<Value>,
    pub desired: Option<Value>,
}

/// The `$version` of a twin document, if it has a non-negative integer one.
pub fn version_of(doc: &Value) -> Option<u64> {
    doc.get("$version").and_then(Value::as_u64)
}

/// The threshold a reported document says is in force.
pub fn reported_threshold(doc: &Value) -> Option<f64> {
    doc.get("TemperatureThreshold").and_then(Value::as_f64)
}

/// The `$version` for the next patch: above both the reported and the desired ones (a filter
/// ignores versions older than the one in force); 1 when there is no twin yet.
pub fn next_version(docs: &TwinDocs) -> u64 {
    let r = docs.reported.as_ref().and_then(version_of);
    let d = docs.desired.as_ref().and_then(version_of);
    r.max(d).map_or(1, |v| v + 1)
}

/// The desired patch body.
pub fn patch_body(threshold: f64, version: u64) -> Vec<u8> {
    // Rust prints the shortest text that reads back as the same f64 (the CLI refuses NaN/inf).
    format!(r#"{{"TemperatureThreshold":{threshold},"$version":{version}}}"#).into_bytes()
}

/// How a reported document relates to the patch loadgen published.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportCheck {
    Applied,
    Refused(String),
    Pending,
}

pub fn check_reported(doc: &Value, version: u64, threshold: f64) -> ReportCheck {
    if version_of(doc) != Some(version) {
        return ReportCheck::Pending;
    }
    let status = doc.get("status").map_or_else(
        || "ok".to_string(),
        |s| s.as_str().map_or_else(|| s.to_string(), str::to_string),
    );
    if status != "ok" {
        return ReportCheck::Refused(status);
    }
    if reported_threshold(doc) == Some(threshold) {
        ReportCheck::Applied
    } else {
        ReportCheck::Pending
    }
}

fn parse_doc(payload: &[u8]) -> Option<Value> {
    if payload.is_empty() {
        return None; // an empty retained message deletes the retained document
    }
    Some(
        serde_json::from_slice(payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned())),
    )
}

/// The control connection.
pub struct Twin {
    conn: Conn,
    reported_topic: String,
    desired_topic: String,
    next_pkid: u16,
    last_write: Instant,
    /// The latest documents seen (retained at start, then live updates).
    pub docs: TwinDocs,
}

impl Twin {
    pub fn new(conn: Conn, prefix: &str) -> Self {
        Twin {
            conn,
            reported_topic: format!("{prefix}/reported"),
            desired_topic: format!("{prefix}/desired"),
            next_pkid: 1,
            last_write: Instant::now(),
            docs: TwinDocs::default(),
        }
    }

    pub fn reported_topic(&self) -> &str {
        &self.reported_topic
    }

    fn pkid(&mut self) -> u16 {
        let id = self.next_pkid;
        self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
        id
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.conn.send(bytes)?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Processes what has been read. Returns (PUBACK ids seen, PINGRESPs seen).
    fn process(&mut self) -> Result<(Vec<u16>, u32), WireError> {
        let mut acks = Vec::new();
        let mut pongs = 0;
        let v5 = self.conn.version.is_v5();
        while let Some(f) = frame(&self.conn.buf)? {
            match f.kind() {
                3 => {
                    let p = parse_publish(&self.conn.buf, &f, v5)?;
                    if p.topic == self.reported_topic.as_bytes() {
                        self.docs.reported = parse_doc(p.payload);
                    } else if p.topic == self.desired_topic.as_bytes() {
                        self.docs.desired = parse_doc(p.payload);
                    }
                    self.conn.buf.advance(f.len);
                }
                4 => {
                    let (id, _) = crate::wire::parse_puback(&self.conn.buf, &f)?;
                    acks.push(id);
                    self.conn.buf.advance(f.len);
                }
                _ => match decode_control(&mut self.conn.buf, self.conn.version)? {
                    Inbound::PingResp => pongs += 1,
                    Inbound::Disconnect { reason: r } => {
                        return Err(WireError::Malformed(format!(
                            "the broker sent DISCONNECT ({r})"
                        )))
                    }
                    _ => {}
                },
            }
        }
        Ok((acks, pongs))
    }

    /// Reads until `done` holds or `deadline` passes (false then).
    fn read_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&Self, &[u16], u32) -> bool,
    ) -> Result<bool, WireError> {
        let (mut acks, mut pongs) = (Vec::new(), 0);
        loop {
            let (a, p) = self.process()?;
            acks.extend(a);
            pongs += p;
            if done(self, &acks, pongs) {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.conn
                .stream
                .set_read_timeout(Some(left.min(Duration::from_millis(50))))?;
            if self.conn.read_some()? == Some(0) {
                return Err(WireError::Closed);
            }
        }
    }

    /// Subscribes to the twin documents and collects the retained ones: the broker sends them
    /// right after the SUBACK, before it answers the PINGREQ sent after the SUBSCRIBE.
    pub fn read_retained(&mut self, timeout: Duration) -> Result<TwinDocs, WireError> {
        let id = self.pkid();
        let (r, d) = (self.reported_topic.clone(), self.desired_topic.clone());
        self.send(&subscribe_packet(&[&r, &d], 0, id, self.conn.version))?;
        self.send(&PINGREQ)?;
        if !self.read_until(Instant::now() + timeout, |_, _, pongs| pongs > 0)? {
            return Err(WireError::Timeout(timeout, "the twin subscription"));
        }
        Ok(self.docs.clone())
    }

    /// Publishes at QoS 0 (readiness probes).
    pub fn publish0(&mut self, topic: &str, payload: &[u8]) -> Result<(), WireError> {
        let pkt = publish_packet(topic, payload, 0, false, 0, self.conn.version);
        self.send(&pkt)
    }

    /// Keeps the connection alive and the latest documents current; never blocks.
    pub fn service(&mut self) -> Result<(), WireError> {
        self.conn.stream.set_nonblocking(true)?;
        let r = self.conn.read_some();
        self.conn.stream.set_nonblocking(false)?;
        if r? == Some(0) {
            return Err(WireError::Closed);
        }
        self.process()?;
        if self.last_write.elapsed() > IDLE_PING {
            self.send(&PINGREQ)?;
        }
        Ok(())
    }

    /// Publishes the retained desired patch `{TemperatureThreshold, $version}` (QoS 1) and
    /// waits until the reported document shows it applied. Returns the version used.
    pub fn set_threshold(&mut self, threshold: f64, timeout: Duration) -> Result<u64, TwinError> {
        self.service()?;
        let version = next_version(&self.docs);
        let body = patch_body(threshold, version);
        let id = self.pkid();
        let pkt = publish_packet(&self.desired_topic, &body, 1, true, id, self.conn.version);
        self.send(&pkt)?;
        let mut refused = None;
        let applied = self.read_until(Instant::now() + timeout, |t, acks, _| {
            let Some(doc) = &t.docs.reported else {
                return false;
            };
            match check_reported(doc, version, threshold) {
                ReportCheck::Applied => acks.contains(&id),
                ReportCheck::Refused(s) => {
                    refused = Some(s);
                    true
                }
                ReportCheck::Pending => false,
            }
        })?;
        if let Some(status) = refused {
            return Err(TwinError::Refused {
                patch: String::from_utf8_lossy(&body).into_owned(),
                status,
            });
        }
        if !applied {
            return Err(TwinError::NotApplied {
                version,
                threshold,
                topic: self.reported_topic.clone(),
                timeout,
                last: self
                    .docs
                    .reported
                    .as_ref()
                    .map_or_else(|| "none".into(), Value::to_string),
            });
        }
        Ok(version)
    }

    pub fn disconnect(mut self) {
        let _ = self.send(&crate::wire::DISCONNECT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn next_version_is_above_reported_and_desired() {
        assert_eq!(next_version(&TwinDocs::default()), 1);
        let docs = TwinDocs {
            reported: Some(json!({"TemperatureThreshold": 25, "$version": 4, "status": "ok"})),
            desired: Some(json!({"TemperatureThreshold": 30, "$version": 6})),
        };
        assert_eq!(next_version(&docs), 7);
        let docs = TwinDocs {
            reported: Some(json!({"$version": 9})),
            desired: Some(Value::String("garbage".into())),
        };
        assert_eq!(next_version(&docs), 10);
    }

    #[test]
    fn recognises_the_applied_patch() {
        let ok = json!({"TemperatureThreshold": 30.0, "$version": 5, "status": "ok"});
        assert_eq!(check_reported(&ok, 5, 30.0), ReportCheck::Applied);
        assert_eq!(check_reported(&ok, 6, 30.0), ReportCheck::Pending);
        assert_eq!(check_reported(&ok, 5, 31.0), ReportCheck::Pending);
        let int = json!({"TemperatureThreshold": 30, "$version": 5});
        assert_eq!(
            check_reported(&int, 5, 30.0),
            ReportCheck::Applied,
            "status optional, integer threshold"
        );
        let bad = json!({"TemperatureThreshold": 25, "$version": 5, "status": "TemperatureThreshold must be a number"});
        assert_eq!(
            check_reported(&bad, 5, 30.0),
            ReportCheck::Refused("TemperatureThreshold must be a number".into())
        );
        assert_eq!(reported_threshold(&ok), Some(30.0));
    }

    #[test]
    fn patch_is_the_documented_shape() {
        assert_eq!(
            patch_body(30.0, 4),
            br#"{"TemperatureThreshold":30,"$version":4}"#
        );
        assert_eq!(
            patch_body(25.5, 1),
            br#"{"TemperatureThreshold":25.5,"$version":1}"#
        );
        assert_eq!(parse_doc(b""), None);
        assert_eq!(parse_doc(b"{\"a\":1}"), Some(json!({"a": 1})));
        assert_eq!(parse_doc(b"nope"), Some(Value::String("nope".into())));
    }
}
