//! Everything that touches a socket: the MQTT connection loop on rumqttc's packet codec, TLS,
//! the embedded broker, the metrics endpoint, topic helpers.

pub mod azure;
pub mod broker_url;
pub mod topic;
