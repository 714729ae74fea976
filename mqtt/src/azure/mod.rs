//! Azure IoT Edge's MQTT dialect, the pure half (edgeHub's MQTT for modules): module topics
//! ([`topics`]), property bags ([`propbag`]), edgeHub's size limits ([`limits`]), SAS token
//! text and local signing ([`sas`]) and twin documents ([`twin_doc`]). The identity, the workload API and TLS live in the filter's
//! `io::azure`.

pub mod limits;
pub mod propbag;
pub mod sas;
pub mod topics;
pub mod twin_doc;

pub use propbag::{OutputProperties, PropertyBag};
pub use sas::SharedAccessKey;
pub use topics::{Inbound, InputTopic, ModuleTopics, TopicError, TwinResponse};
