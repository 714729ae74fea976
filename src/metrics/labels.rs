//! The label values and label sets of the [`Metrics`] families: why an input was rejected,
//! what a twin document did, why the embedded broker dropped a message, what an overloaded
//! input or an unpublishable publish was. Plain data, encoded by `prometheus_client` when
//! `io::http` renders `/metrics`.
//!
//! [`Metrics`]: super::Metrics

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

use crate::pipeline::verdict::RejectReason;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reason {
    too_large,
    not_utf8,
    not_json,
    not_object,
    not_a_number,
}

impl From<RejectReason> for Reason {
    fn from(r: RejectReason) -> Self {
        match r {
            RejectReason::TooLarge => Reason::too_large,
            RejectReason::NotUtf8 => Reason::not_utf8,
            RejectReason::NotJson => Reason::not_json,
            RejectReason::NotObject => Reason::not_object,
            RejectReason::NotANumber => Reason::not_a_number,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TwinResult {
    applied,
    refused,
    stale,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: TwinResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Why the embedded broker dropped a message (`edgefilter_broker_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum BrokerDrop {
    /// A subscriber's queue (`--broker-queue`) was full: its oldest QoS 1 / newest QoS 0
    /// message went.
    queue_full,
    /// A subscriber's session did not keep up (its client stopped reading): `--broker-queue`
    /// messages already waited in its inbox, before its queue.
    inbox_full,
    /// Waited in a queue longer than the message expiry.
    expired,
    /// A publish the broker refused (wildcard topic name, twin without authorisation).
    refused,
    /// A session expired with messages still queued.
    session_ended,
    other,
}

impl BrokerDrop {
    pub const ALL: [BrokerDrop; 6] = [
        BrokerDrop::queue_full,
        BrokerDrop::inbox_full,
        BrokerDrop::expired,
        BrokerDrop::refused,
        BrokerDrop::session_ended,
        BrokerDrop::other,
    ];
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerDropLabels {
    pub reason: BrokerDrop,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}
