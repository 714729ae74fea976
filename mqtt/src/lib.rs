//! edgefilter-mqtt — the pure MQTT pieces of edgefilter, shared with loadgen.
//!
//! Nothing here reads or writes a socket: packets are decoded from and encoded into byte
//! buffers, and state machines take the time as an argument. The filter's `Flow` and loadgen
//! drive these pieces from their own I/O loops.
//!
//! - [`codec`]: MQTT 3.1.1 and 5 packets over rumqttc's packet codec (`Inbound`, `OutPublish`,
//!   `Encoder`), the only place that knows which version is spoken.
//! - [`outgoing`]: the outgoing QoS 1 window (packet ids, Receive Maximum, DUP resend).
//! - [`ack_order`]: inputs acknowledged in arrival order, each once every part of its work is
//!   done.
//! - [`keepalive`]: when to ping and when the broker is gone.
//! - [`topic`]: topic filters, templates (`alerts/{topic}`) and their cache.
//! - [`broker_url`]: `mqtt://` and `mqtts://` URLs.
//! - [`azure`]: edgeHub's topics, property bags, SAS token text and twin documents.
//! - [`tcp`]: when to send TCP ACKs at once, and the socket option that does it (the one
//!   system call in this crate, on a socket the caller owns).

pub mod ack_order;
pub mod azure;
pub mod broker_url;
pub mod codec;
pub mod keepalive;
pub mod outgoing;
pub mod tcp;
pub mod topic;
