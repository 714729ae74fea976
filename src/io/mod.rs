//! Everything that touches a socket: the MQTT connection loop on rumqttc's packet codec
//! (MQTT in and out), TLS, the embedded broker, the metrics endpoint, topic conventions.

pub mod azure;
pub mod broker_url;
pub mod codec;
pub mod connection;
pub mod dialect;
pub mod embedded;
pub mod http;
pub mod session;
pub mod tls;
pub mod topic;
