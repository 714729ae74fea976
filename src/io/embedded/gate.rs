//! Backpressure from the filter to the devices on the embedded broker. rmqtt acknowledges a
//! publish once it is routed and queues it per subscriber, dropping the oldest when the queue
//! is full; nothing slows the publisher down. This gate does: in the publishing client's own
//! session task (rmqtt's `MessagePublish` hook), a message for the filter's input topics waits
//! while the filter's queue is above its high-water mark, so that client's socket is not read
//! and TCP pushes back to the device. The filter's queue then never overflows while the filter
//! is connected; while it is not, nothing waits and what overflows is counted as a drop.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::Session;

use super::inbox::Inboxes;
use crate::metrics::Metrics;
use crate::mqtt::topic;

pub struct Gate {
    /// The filter's input filters (without `$share/…`).
    pub inputs: Vec<String>,
    pub filter_client_id: String,
    /// Publishers wait while the filter's queue holds this many messages or more.
    pub high_water: usize,
    pub metrics: Arc<Metrics>,
    /// The filter's session, once it connected.
    pub filter: RwLock<Option<Session>>,
    /// What waits in the filter's inbox, before its queue.
    pub inboxes: Arc<Inboxes>,
}

/// How often a waiting publisher looks at the queue again.
const POLL: Duration = Duration::from_millis(1);

impl Gate {
    fn filter_session(&self) -> Option<Session> {
        self.filter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn is_input(&self, topic: &str) -> bool {
        self.inputs.iter().any(|f| topic::matches(topic, f))
    }

    /// What waits for the filter: in its queue, and (at most) in its inbox — which grows
    /// instead of the queue while the filter's session task waits on its socket.
    fn backlog(&self, filter: &Session) -> usize {
        let inbox = self.inboxes.waiting(&self.filter_client_id) as usize;
        filter.deliver_queue().len() + inbox
    }

    /// Waits until the filter's backlog is below the mark (or the filter is gone).
    async fn wait(&self) {
        let Some(filter) = self.filter_session() else {
            return;
        };
        let mut paused = false;
        while self.backlog(&filter) >= self.high_water {
            if !filter.connected().await.unwrap_or(false) {
                break;
            }
            if !paused {
                paused = true;
                self.metrics.broker_paused();
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The gate as an rmqtt hook handler (registered for two hook types).
pub struct GateHook(pub Arc<Gate>);

#[async_trait::async_trait]
impl Handler for GateHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let gate = &self.0;
        match param {
            Parameter::ClientConnected(session)
                if *session.id.client_id == *gate.filter_client_id =>
            {
                *gate.filter.write().unwrap_or_else(|e| e.into_inner()) = Some((*session).clone());
            }
            Parameter::MessagePublish(_, from, publish)
                if *from.id.client_id != *gate.filter_client_id
                    && gate.is_input(&publish.topic) =>
            {
                gate.wait().await;
            }
            _ => {}
        }
        (true, acc)
    }
}
