//! The synchronous hot path, between MQTT in and MQTT out: the verdict ([`verdict`], and
//! its [`condition`] over several fields when one is set), the
//! per-shard stage that applies the rules to a batch ([`stage`]) with the per-device rule
//! state ([`rules`]), the worker threads that run stages ([`pool`]) and alert batching
//! ([`alert_batch`]). Nothing here touches a socket or an async runtime; `flow` decides what goes
//! where and `io::connection` runs it.

pub mod alert_batch;
pub mod condition;
pub mod pool;
pub mod rules;
pub mod stage;
pub mod verdict;
