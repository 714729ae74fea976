//! The bound on each subscriber session's inbox in the embedded broker. rmqtt routes a message
//! (in the publisher's task) into the recipient session's inbox, an unbounded channel; the
//! session's own task moves it into the bounded queue (`--broker-queue`) and on to the socket.
//! While that task is stuck — writing to a client that stopped reading, up to the send timeout
//! — the inbox took all the traffic for that client (+600 MB in 30 s at 30k msg/s, measured
//! before this bound: BENCHMARKS.md §9).
//!
//! This module wraps rmqtt's router: every local recipient of a message passes [`Ledger`],
//! which counts what was routed to the session and what is known to have left its inbox.
//! That is learnt from probes: an empty `Subscribes` message with a reply channel, sent into
//! the same inbox, answered by the session's task once it reached it (the inbox is FIFO, so
//! everything routed before the probe has left by then). A session with `limit` messages
//! routed and not yet confirmed out gets no more: the message is shed for that recipient and
//! counted (`edgefilter_broker_dropped_total{reason="inbox_full"}`). So each connected
//! session's inbox holds at most `limit` routed messages, whatever its client does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rmqtt::context::ServerContext;
use rmqtt::router::Router;
use rmqtt::types::{
    Id, Message, NodeId, Route, SubRelationsMap, SubsSearchParams, SubsSearchResult,
    SubscriptionOptions, TopicName, Tx,
};
use rmqtt::utils::Counter;
use tokio::sync::oneshot;

use crate::metrics::{BrokerDrop, Metrics};

/// What the router should do with one message for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Route,
    /// Route it, and send a probe behind it.
    RouteAndProbe,
    Shed,
}

/// One connected session's inbox, as counts: pure, no channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Messages routed into the inbox since the session connected.
    routed: u64,
    /// Of those, how many are known to have left it.
    confirmed: u64,
    /// `routed` when the probe in the inbox was sent.
    probe: Option<u64>,
}

impl Ledger {
    /// At most how many messages wait in the inbox.
    pub fn waiting(&self) -> u64 {
        self.routed - self.confirmed
    }

    /// One more message for this session: shed once `limit` may be waiting; a probe every
    /// `step` messages while none is out.
    pub fn admit(&mut self, limit: u64, step: u64) -> Admit {
        if self.waiting() >= limit {
            return Admit::Shed;
        }
        self.routed += 1;
        if self.probe.is_none() && self.waiting() >= step {
            Admit::RouteAndProbe
        } else {
            Admit::Route
        }
    }

    /// A probe went into the inbox behind everything routed so far.
    pub fn probe_sent(&mut self) {
        self.probe = Some(self.routed);
    }

    /// The probe sent at `probe_sent` left the inbox (answered, or the inbox was closed).
    pub fn probe_done(&mut self) {
        if let Some(mark) = self.probe.take() {
            self.confirmed = self.confirmed.max(mark);
        }
    }

    pub fn probe_out(&self) -> bool {
        self.probe.is_some()
    }
}

type Reply = oneshot::Receiver<Vec<rmqtt::Result<rmqtt::types::SubscribeReturn>>>;

/// A connected session: its ledger, its inbox's sender and the probe's reply.
struct Slot {
    /// Which connection of the client id (a reconnect replaces the slot before the old
    /// session reports its end).
    id: Id,
    ledger: Ledger,
    tx: Tx,
    reply: Option<Reply>,
}

impl Slot {
    /// Takes in a probe's answer if it came.
    fn poll(&mut self) {
        if let Some(reply) = &mut self.reply {
            if !matches!(reply.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                self.reply = None;
                self.ledger.probe_done();
            }
        }
    }

    fn probe(&mut self) {
        let (reply_tx, reply) = oneshot::channel();
        if self
            .tx
            .unbounded_send(Message::Subscribes(Vec::new(), Some(reply_tx)))
            .is_ok()
        {
            self.ledger.probe_sent();
            self.reply = Some(reply);
        }
    }
}

/// The ledgers of every connected session, by client id.
pub struct Inboxes {
    limit: u64,
    step: u64,
    metrics: Arc<Metrics>,
    slots: RwLock<HashMap<String, Arc<Mutex<Slot>>>>,
}

impl Inboxes {
    /// At most `limit` messages wait in each session's inbox.
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Inboxes {
        let limit = limit.max(1) as u64;
        Inboxes {
            limit,
            step: (limit / 4).max(1),
            metrics,
            slots: RwLock::new(HashMap::new()),
        }
    }

    fn slot(&self, client_id: &str) -> Option<Arc<Mutex<Slot>>> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(client_id)
            .cloned()
    }

    /// A session connected with a new, empty inbox.
    pub fn connected(&self, id: Id, tx: Tx) {
        let client_id = id.client_id.to_string();
        let slot = Slot {
            id,
            ledger: Ledger::default(),
            tx,
            reply: None,
        };
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client_id, Arc::new(Mutex::new(slot)));
    }

    /// The session went offline: rmqtt's offline loop drains its inbox into the bounded
    /// queue without a socket to wait for.
    pub fn disconnected(&self, id: &Id) {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let client_id: &str = &id.client_id;
        let same = slots.get(client_id).is_some_and(|slot| {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.id == *id && slot.id.create_time == id.create_time
        });
        if same {
            slots.remove(client_id);
        }
    }

    /// Whether a message for `client_id` may go into its inbox (counted when not).
    pub fn admit(&self, client_id: &str, topic: &str) -> bool {
        let Some(slot) = self.slot(client_id) else {
            return true;
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.poll();
        match slot.ledger.admit(self.limit, self.step) {
            Admit::Route => true,
            Admit::RouteAndProbe => {
                slot.probe();
                true
            }
            Admit::Shed => {
                drop(slot);
                self.metrics.broker_dropped(
                    BrokerDrop::inbox_full,
                    &format!(
                        "{} messages wait for its session, which does not keep up (--broker-queue)",
                        self.limit
                    ),
                    client_id,
                    topic,
                    std::time::Instant::now(),
                );
                false
            }
        }
    }

    /// At most how many messages wait in `client_id`'s inbox (0 when it is not connected);
    /// sends a probe if none is out and a step's worth may wait, so the answer gets fresher
    /// while callers wait (without a probe per call on a session that keeps up).
    pub fn waiting(&self, client_id: &str) -> u64 {
        let Some(slot) = self.slot(client_id) else {
            return 0;
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.poll();
        if !slot.ledger.probe_out() && slot.ledger.waiting() >= self.step {
            slot.probe();
        }
        slot.ledger.waiting()
    }
}

impl Inboxes {
    /// Puts `message` into `client_id`'s inbox, behind what is routed there (false: the
    /// client is not connected, or its session ended).
    pub fn send(&self, client_id: &str, message: Message) -> bool {
        self.slot(client_id).is_some_and(|slot| {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.tx.unbounded_send(message).is_ok()
        })
    }
}

/// rmqtt's router with [`Inboxes::admit`] applied to this node's recipients, and its
/// subscription changes kept apart from its lookups.
///
/// The second is a deadlock guard. rmqtt's `DefaultRouter::matches` holds a read guard of its
/// relations map (a `DashMap`: a *blocking* lock per shard) across `.await`s for `$share`
/// subscribers (`router().await`, `is_online().await`), and `add`/`remove` take the same
/// shard's write lock without awaiting. A lookup that yields there (tokio's cooperative budget,
/// a contended lock) while a client's disconnect removes a subscription in the same shard
/// blocks that worker thread for good: the lookup can never run again to release its guard,
/// and the tasks queued on that worker (the filter's sessions, most often) stop — the stall of
/// BENCHMARKS.md §14. Here lookups share `order` and changes take it alone, asynchronously, so
/// a change never meets a lookup's guard.
pub struct BoundedRouter {
    pub inner: Box<dyn Router>,
    pub inboxes: Arc<Inboxes>,
    pub node: NodeId,
    pub order: tokio::sync::RwLock<()>,
}

#[async_trait::async_trait]
impl Router for BoundedRouter {
    async fn add(
        &self,
        topic_filter: &str,
        id: Id,
        opts: SubscriptionOptions,
    ) -> rmqtt::Result<()> {
        let _alone = self.order.write().await;
        self.inner.add(topic_filter, id, opts).await
    }

    async fn remove(&self, topic_filter: &str, id: Id) -> rmqtt::Result<bool> {
        let _alone = self.order.write().await;
        self.inner.remove(topic_filter, id).await
    }

    async fn matches(&self, id: Id, topic: &TopicName) -> rmqtt::Result<SubRelationsMap> {
        let mut relations = {
            let _shared = self.order.read().await;
            self.inner.matches(id, topic).await?
        };
        if let Some(local) = relations.get_mut(&self.node) {
            local.retain(|(_, client_id, ..)| self.inboxes.admit(client_id, topic));
        }
        Ok(relations)
    }

    async fn is_online(&self, node_id: NodeId, client_id: &str) -> bool {
        self.inner.is_online(node_id, client_id).await
    }

    async fn gets(&self, limit: usize) -> Vec<Route> {
        self.inner.gets(limit).await
    }

    async fn get(&self, topic: &str) -> rmqtt::Result<Vec<Route>> {
        self.inner.get(topic).await
    }

    async fn query_subscriptions(&self, q: &SubsSearchParams) -> Vec<SubsSearchResult> {
        self.inner.query_subscriptions(q).await
    }

    async fn topics_tree(&self) -> usize {
        self.inner.topics_tree().await
    }

    fn topics(&self) -> Counter {
        self.inner.topics()
    }

    fn routes(&self) -> Counter {
        self.inner.routes()
    }

    fn merge_topics(&self, topics_map: &rmqtt::types::HashMap<NodeId, Counter>) -> Counter {
        self.inner.merge_topics(topics_map)
    }

    fn merge_routes(&self, routes_map: &rmqtt::types::HashMap<NodeId, Counter>) -> Counter {
        self.inner.merge_routes(routes_map)
    }

    async fn list_topics(&self, top: usize) -> Vec<String> {
        self.inner.list_topics(top).await
    }

    async fn list_relations(&self, top: usize) -> Vec<serde_json::Value> {
        self.inner.list_relations(top).await
    }

    fn relations(&self) -> &rmqtt::types::AllRelationsMap {
        self.inner.relations()
    }
}

/// Puts [`BoundedRouter`] in front of the router the broker (and its plugins) set up.
pub async fn install(scx: &ServerContext, inboxes: Arc<Inboxes>) {
    let mut router = scx.extends.router_mut().await;
    let inner = std::mem::replace(
        &mut *router,
        Box::new(rmqtt::router::DefaultRouter::new(None)),
    );
    *router = Box::new(BoundedRouter {
        inner,
        inboxes,
        node: scx.node.id(),
        order: tokio::sync::RwLock::new(()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rmqtt's `DefaultRouter` in the shape that matters: `matches` holds a blocking read
    /// guard (its `DashMap` shard) across an `.await`, `remove` takes the write lock without
    /// awaiting.
    #[derive(Default)]
    struct ShardRouter {
        /// A reader holds the shard (a blocking lock, as `DashMap`'s).
        shard: Mutex<bool>,
        released: std::sync::Condvar,
        resume: tokio::sync::Notify,
        relations: rmqtt::types::AllRelationsMap,
    }

    impl ShardRouter {
        fn hold(&self, held: bool) {
            *self.shard.lock().unwrap_or_else(|e| e.into_inner()) = held;
            self.released.notify_all();
        }

        /// The write lock: blocks the thread while a reader holds the shard.
        fn write(&self) {
            let mut held = self.shard.lock().unwrap_or_else(|e| e.into_inner());
            while *held {
                held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    #[async_trait::async_trait]
    impl Router for ShardRouter {
        async fn add(&self, _: &str, _: Id, _: SubscriptionOptions) -> rmqtt::Result<()> {
            self.write();
            Ok(())
        }
        async fn remove(&self, _: &str, _: Id) -> rmqtt::Result<bool> {
            self.write();
            Ok(true)
        }
        async fn matches(&self, _: Id, _: &TopicName) -> rmqtt::Result<SubRelationsMap> {
            self.hold(true);
            // A `$share` member's `is_online().await` that does not complete at once.
            self.resume.notified().await;
            self.hold(false);
            Ok(SubRelationsMap::default())
        }
        async fn is_online(&self, _: NodeId, _: &str) -> bool {
            true
        }
        async fn gets(&self, _: usize) -> Vec<Route> {
            Vec::new()
        }
        async fn get(&self, _: &str) -> rmqtt::Result<Vec<Route>> {
            Ok(Vec::new())
        }
        async fn query_subscriptions(&self, _: &SubsSearchParams) -> Vec<SubsSearchResult> {
            Vec::new()
        }
        async fn topics_tree(&self) -> usize {
            0
        }
        fn topics(&self) -> Counter {
            Counter::new()
        }
        fn routes(&self) -> Counter {
            Counter::new()
        }
        fn merge_topics(&self, _: &rmqtt::types::HashMap<NodeId, Counter>) -> Counter {
            Counter::new()
        }
        fn merge_routes(&self, _: &rmqtt::types::HashMap<NodeId, Counter>) -> Counter {
            Counter::new()
        }
        async fn list_topics(&self, _: usize) -> Vec<String> {
            Vec::new()
        }
        async fn list_relations(&self, _: usize) -> Vec<serde_json::Value> {
            Vec::new()
        }
        fn relations(&self) -> &rmqtt::types::AllRelationsMap {
            &self.relations
        }
    }

    /// A lookup suspended inside rmqtt's router while a disconnect removes a subscription: on
    /// one worker thread, the removal used to block the thread on the lookup's guard, so the
    /// lookup never ran again (the embedded broker's stall, BENCHMARKS.md §14). The removal now
    /// waits for the lookup, asynchronously.
    #[test]
    fn a_subscription_change_waits_for_a_suspended_lookup_instead_of_blocking_its_thread() {
        assert_eq!(
            lookup_then_removal(true),
            Some((true, true)),
            "the runtime's thread is blocked: the removal waits on the suspended lookup's guard"
        );
    }

    /// The same without [`BoundedRouter`]'s ordering (rmqtt's router alone): the thread wedges.
    #[test]
    fn without_the_ordering_the_removal_wedges_the_thread() {
        assert_eq!(lookup_then_removal(false), None);
    }

    /// A lookup that suspends holding the shard, then a removal, on one thread; what both
    /// returned, or None if they did not finish within 2 s (the thread is left blocked).
    fn lookup_then_removal(ordered: bool) -> Option<(bool, bool)> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Its own thread: a wedged runtime must fail the test, not hang it.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let inner = Arc::new(ShardRouter::default());
                let bounded = BoundedRouter {
                    inner: Box::new(ArcRouter(inner.clone())),
                    inboxes: Arc::new(Inboxes::new(10, Arc::new(Metrics::new()))),
                    node: 1,
                    order: tokio::sync::RwLock::new(()),
                };
                let router: Arc<dyn Router> = if ordered {
                    Arc::new(bounded)
                } else {
                    Arc::new(ArcRouter(inner.clone()))
                };
                let id = Id::new(1, 1, None, None, "dev".into(), None);
                let topic = TopicName::from("telemetry/a");
                let (r, i) = (router.clone(), id.clone());
                let lookup = tokio::spawn(async move { r.matches(i, &topic).await.is_ok() });
                tokio::task::yield_now().await;
                let (r, i) = (router.clone(), id.clone());
                let removal = tokio::spawn(async move { r.remove("alerts/#", i).await.is_ok() });
                tokio::task::yield_now().await;
                inner.resume.notify_one();
                let both = (lookup.await.unwrap(), removal.await.unwrap());
                let _ = done_tx.send(both);
            });
        });
        done_rx.recv_timeout(std::time::Duration::from_secs(2)).ok()
    }

    /// Shares one [`ShardRouter`] between the test and the [`BoundedRouter`] around it.
    struct ArcRouter(Arc<ShardRouter>);

    #[async_trait::async_trait]
    impl Router for ArcRouter {
        async fn add(&self, t: &str, id: Id, o: SubscriptionOptions) -> rmqtt::Result<()> {
            self.0.add(t, id, o).await
        }
        async fn remove(&self, t: &str, id: Id) -> rmqtt::Result<bool> {
            self.0.remove(t, id).await
        }
        async fn matches(&self, id: Id, t: &TopicName) -> rmqtt::Result<SubRelationsMap> {
            self.0.matches(id, t).await
        }
        async fn is_online(&self, n: NodeId, c: &str) -> bool {
            self.0.is_online(n, c).await
        }
        async fn gets(&self, l: usize) -> Vec<Route> {
            self.0.gets(l).await
        }
        async fn get(&self, t: &str) -> rmqtt::Result<Vec<Route>> {
            self.0.get(t).await
        }
        async fn query_subscriptions(&self, q: &SubsSearchParams) -> Vec<SubsSearchResult> {
            self.0.query_subscriptions(q).await
        }
        async fn topics_tree(&self) -> usize {
            self.0.topics_tree().await
        }
        fn topics(&self) -> Counter {
            self.0.topics()
        }
        fn routes(&self) -> Counter {
            self.0.routes()
        }
        fn merge_topics(&self, m: &rmqtt::types::HashMap<NodeId, Counter>) -> Counter {
            self.0.merge_topics(m)
        }
        fn merge_routes(&self, m: &rmqtt::types::HashMap<NodeId, Counter>) -> Counter {
            self.0.merge_routes(m)
        }
        async fn list_topics(&self, t: usize) -> Vec<String> {
            self.0.list_topics(t).await
        }
        async fn list_relations(&self, t: usize) -> Vec<serde_json::Value> {
            self.0.list_relations(t).await
        }
        fn relations(&self) -> &rmqtt::types::AllRelationsMap {
            self.0.relations()
        }
    }

    #[test]
    fn a_session_that_answers_its_probes_is_never_shed() {
        let mut l = Ledger::default();
        for i in 1..=10_000u64 {
            match l.admit(8, 2) {
                Admit::Shed => panic!("shed at {i}"),
                Admit::RouteAndProbe => l.probe_sent(),
                Admit::Route => {}
            }
            // The session's task reaches the probe right away.
            l.probe_done();
            assert!(l.waiting() < 8);
        }
    }

    #[test]
    fn a_session_that_stops_reading_gets_at_most_limit() {
        let mut l = Ledger::default();
        let mut probes = 0;
        let mut routed = 0;
        for _ in 0..1000 {
            match l.admit(8, 2) {
                Admit::Shed => {}
                Admit::RouteAndProbe => {
                    routed += 1;
                    probes += 1;
                    l.probe_sent();
                }
                Admit::Route => routed += 1,
            }
        }
        // One probe, never answered: 8 in the inbox, the other 992 shed.
        assert_eq!((routed, probes, l.waiting()), (8, 1, 8));
        // It catches up: the probe comes back, 2 of the 8 are confirmed out.
        l.probe_done();
        assert_eq!(l.waiting(), 6);
        assert_eq!(l.admit(8, 2), Admit::RouteAndProbe);
        l.probe_sent();
        assert_eq!(l.admit(8, 2), Admit::Route);
        assert_eq!(l.admit(8, 2), Admit::Shed);
        l.probe_done();
        assert_eq!(l.waiting(), 1);
    }

    #[test]
    fn a_limit_of_one_routes_one_at_a_time() {
        let mut l = Ledger::default();
        assert_eq!(l.admit(1, 1), Admit::RouteAndProbe);
        l.probe_sent();
        assert_eq!(l.admit(1, 1), Admit::Shed);
        l.probe_done();
        assert_eq!(l.admit(1, 1), Admit::RouteAndProbe);
    }
}
