//! edgeHub's delivery to one module (test tooling, edgeHub → module): the module's store of
//! routed messages, delivered **one at a time across all of its inputs**, each waiting for the
//! module's PUBACK up to the ack timeout (edgeHub: 30 s) and redelivered from the store when
//! it times out; PUBACKs must come in the order of the publishes (the protocol gateway's
//! `RequestAckPairProcessor`), an out-of-order or unknown one is ignored. Pure state: events
//! plus `now` in, publishes to send out; the socket side lives in `server.rs`.
//!
//! Sources: edgeHub's `DeviceMessageHandler.SendMessageAsync` (sends, then awaits the feedback
//! with `messageAckTimeout`; a timeout fails the send and the endpoint executor retries it
//! from the store) and the protocol gateway's `MqttAdapter` (one PUBACK queue per connection,
//! `AbortOnOutOfOrderPubAck` off in edgeHub). Simplifications, stated: a redelivery is a new
//! PUBLISH with a new packet id (edgeHub sends the stored message anew); the timed-out
//! publish leaves the PUBACK queue; a message whose topic matches none of the module's
//! subscription filters is dropped (the gateway finds no subscription for it).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A message in the module's store: the full topic edgeHub writes
/// (`devices/<dev>/modules/<mod>/inputs/<input>/<property bag>`) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub topic: String,
    pub payload: Bytes,
}

/// A QoS 1 PUBLISH to write to the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub pkid: u16,
    pub topic: String,
    pub payload: Bytes,
}

/// What a PUBACK from the module did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It completed the input message in flight: the next one may go.
    Input,
    /// It completed another QoS 1 publish (a twin response or desired patch).
    Other,
    /// It names a publish that is not first in the PUBACK queue: ignored.
    OutOfOrder,
    /// It names no publish awaiting a PUBACK: ignored.
    Unknown,
}

/// Counters of what the delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Messages put into the store.
    pub stored: u64,
    /// PUBLISHes of stored messages, redeliveries included.
    pub sent: u64,
    /// Of those, sends of a message that had been sent before (timeout or reconnect).
    pub redelivered: u64,
    /// Stored messages the module acknowledged (left the store).
    pub completed: u64,
    /// PUBACKs that were not first in the queue.
    pub out_of_order_acks: u64,
    /// PUBACKs for no pending publish.
    pub unknown_acks: u64,
    /// Messages whose PUBACK did not come within the ack timeout.
    pub timeouts: u64,
    /// Messages dropped because no subscription of the module matched their topic.
    pub unsubscribed: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    pkid: u16,
    deadline: Instant,
}

/// One module's store and delivery state.
#[derive(Debug)]
pub struct Delivery {
    store: VecDeque<Stored>,
    /// The store's head, sent and awaiting its PUBACK.
    in_flight: Option<InFlight>,
    /// Whether the head was sent before (its next send is a redelivery).
    head_sent: bool,
    /// Packet ids of QoS 1 publishes awaiting a PUBACK, in send order.
    pending: VecDeque<u16>,
    next_pkid: u16,
    connected: bool,
    filters: Vec<String>,
    ack_timeout: Duration,
    pub stats: DeliveryStats,
}

impl Delivery {
    pub fn new(ack_timeout: Duration) -> Delivery {
        Delivery {
            store: VecDeque::new(),
            in_flight: None,
            head_sent: false,
            pending: VecDeque::new(),
            next_pkid: 1,
            connected: false,
            filters: Vec::new(),
            ack_timeout,
            stats: DeliveryStats::default(),
        }
    }

    /// A message routed to one of the module's inputs.
    pub fn store(&mut self, m: Stored) {
        self.stats.stored += 1;
        self.store.push_back(m);
    }

    /// Messages in the store (the one in flight included).
    pub fn backlog(&self) -> usize {
        self.store.len()
    }

    /// The module connected: nothing is awaiting a PUBACK on the new connection. Its
    /// subscriptions persist (`clean_session=false`) unless `clean`.
    pub fn connected(&mut self, clean: bool) {
        self.connected = true;
        self.in_flight = None;
        self.pending.clear();
        if clean {
            self.filters.clear();
        }
    }

    /// The module's connection closed: the message in flight stays first in the store.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.in_flight = None;
        self.pending.clear();
    }

    /// A SUBSCRIBE's filters.
    pub fn subscribe(&mut self, filters: impl IntoIterator<Item = String>) {
        for f in filters {
            if !self.filters.contains(&f) {
                self.filters.push(f);
            }
        }
    }

    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    /// Whether some subscription filter matches `topic`.
    pub fn subscribed_to(&self, topic: &str) -> bool {
        self.filters.iter().any(|f| filter_matches(topic, f))
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.pending.contains(&pkid) {
                self.pending.push_back(pkid);
                return pkid;
            }
        }
    }

    /// A packet id for another QoS 1 publish (twin), queued for its PUBACK.
    pub fn send_other(&mut self) -> u16 {
        self.allocate_pkid()
    }

    /// The next stored message to publish, if one may go now: connected, nothing in flight.
    /// Messages no subscription matches are dropped on the way (counted).
    pub fn next(&mut self, now: Instant) -> Option<Send> {
        if !self.connected || self.in_flight.is_some() {
            return None;
        }
        loop {
            let head = self.store.front()?;
            if self.subscribed_to(&head.topic) {
                break;
            }
            // Without a module-messages subscription edgeHub would not send at all; with
            // one that does not match, the gateway drops the message.
            if self.filters.iter().all(|f| !is_module_messages_filter(f)) {
                return None;
            }
            self.store.pop_front();
            self.head_sent = false;
            self.stats.unsubscribed += 1;
        }
        let (topic, payload) = {
            let head = self.store.front()?;
            (head.topic.clone(), head.payload.clone())
        };
        let pkid = self.allocate_pkid();
        self.in_flight = Some(InFlight {
            pkid,
            deadline: now + self.ack_timeout,
        });
        self.stats.sent += 1;
        if self.head_sent {
            self.stats.redelivered += 1;
        }
        self.head_sent = true;
        Some(Send {
            pkid,
            topic,
            payload,
        })
    }

    /// A PUBACK from the module.
    pub fn puback(&mut self, pkid: u16) -> AckOutcome {
        if self.pending.front() == Some(&pkid) {
            self.pending.pop_front();
            if self.in_flight.is_some_and(|f| f.pkid == pkid) {
                self.in_flight = None;
                self.store.pop_front();
                self.head_sent = false;
                self.stats.completed += 1;
                return AckOutcome::Input;
            }
            return AckOutcome::Other;
        }
        if self.pending.contains(&pkid) {
            self.stats.out_of_order_acks += 1;
            AckOutcome::OutOfOrder
        } else {
            self.stats.unknown_acks += 1;
            AckOutcome::Unknown
        }
    }

    /// When the message in flight times out, if one is.
    pub fn deadline(&self) -> Option<Instant> {
        self.in_flight.map(|f| f.deadline)
    }

    /// Times out the message in flight if its deadline passed; it stays first in the store
    /// and [`Self::next`] sends it again. Returns whether it timed out.
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.in_flight {
            Some(f) if now >= f.deadline => {
                self.in_flight = None;
                self.pending.retain(|&p| p != f.pkid);
                self.stats.timeouts += 1;
                true
            }
            _ => false,
        }
    }
}

/// edgeHub's `ModuleMessageTopicRegex`, `^devices/.+/modules/.+/#$`: a subscription it treats
/// as the module's input messages.
pub fn is_module_messages_filter(filter: &str) -> bool {
    filter
        .strip_prefix("devices/")
        .and_then(|r| r.strip_suffix("/#"))
        .and_then(|r| r.split_once("/modules/"))
        .is_some_and(|(d, m)| !d.is_empty() && !m.is_empty())
}

/// Whether `filter` matches `topic` as the protocol gateway matches them
/// (`Util.CheckTopicFilterMatch`): MQTT's `+` and `#`, `a/#` matching `a` too, and no
/// exception for topics that start with `$` (edgeHub's twin topics do).
fn filter_matches(topic: &str, filter: &str) -> bool {
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(_) if f == "+" => {}
            Some(level) if level == f => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_the_protocol_gateway_matches_them() {
        assert!(filter_matches(
            "$iothub/twin/res/200/?$rid=1",
            "$iothub/twin/res/#"
        ));
        assert!(filter_matches("a/b/c", "a/+/c"));
        assert!(filter_matches("a", "a/#"));
        assert!(!filter_matches(
            "$iothub/twin/PATCH/x",
            "$iothub/twin/res/#"
        ));
        assert!(!filter_matches("a/b", "a"));
        assert!(!filter_matches("a", "a/b"));
    }

    const INPUTS: &str = "devices/gw:01@plant/modules/m/inputs/#";

    fn msg(input: &str, n: u32) -> Stored {
        Stored {
            topic: format!("devices/gw:01@plant/modules/m/inputs/{input}/sequenceNumber={n}"),
            payload: Bytes::from(n.to_string()),
        }
    }

    fn ready(timeout: Duration) -> Delivery {
        let mut d = Delivery::new(timeout);
        d.connected(false);
        d.subscribe([INPUTS.to_string()]);
        d
    }

    #[test]
    fn one_at_a_time_across_inputs() {
        let t0 = Instant::now();
        let mut d = ready(Duration::from_secs(30));
        d.store(msg("input1", 1));
        d.store(msg("control", 2));
        d.store(msg("input1", 3));
        let first = d.next(t0).unwrap();
        assert_eq!(first.payload, "1");
        assert_eq!(d.next(t0), None, "nothing more until the PUBACK");
        assert_eq!(d.puback(first.pkid), AckOutcome::Input);
        let second = d.next(t0).unwrap();
        assert_eq!(second.payload, "2", "the other input waits its turn too");
        assert_eq!(d.next(t0), None);
        assert_eq!(d.puback(second.pkid), AckOutcome::Input);
        assert_eq!(d.next(t0).unwrap().payload, "3");
        assert_eq!(d.backlog(), 1);
    }

    #[test]
    fn redelivers_after_the_ack_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(500);
        let mut d = ready(timeout);
        d.store(msg("input1", 1));
        d.store(msg("input1", 2));
        let first = d.next(t0).unwrap();
        assert_eq!(d.deadline(), Some(t0 + timeout));
        assert!(!d.tick(t0 + timeout - Duration::from_millis(1)));
        assert!(d.tick(t0 + timeout));
        let again = d.next(t0 + timeout).unwrap();
        assert_eq!(again.payload, "1", "the same message, not the next one");
        assert_ne!(again.pkid, first.pkid);
        // A late PUBACK of the first send is for no pending publish.
        assert_eq!(d.puback(first.pkid), AckOutcome::Unknown);
        assert_eq!(d.next(t0 + timeout), None);
        assert_eq!(d.puback(again.pkid), AckOutcome::Input);
        assert_eq!(d.next(t0 + timeout).unwrap().payload, "2");
        assert_eq!(
            (
                d.stats.sent,
                d.stats.redelivered,
                d.stats.timeouts,
                d.stats.completed
            ),
            (3, 1, 1, 1)
        );
    }

    #[test]
    fn out_of_order_pubacks_are_ignored() {
        let t0 = Instant::now();
        let mut d = ready(Duration::from_secs(30));
        let twin = d.send_other();
        d.store(msg("input1", 1));
        let input = d.next(t0).unwrap();
        // The input's PUBACK before the twin response's: not first in the queue.
        assert_eq!(d.puback(input.pkid), AckOutcome::OutOfOrder);
        assert_eq!(d.next(t0), None, "still in flight");
        assert_eq!(d.puback(twin), AckOutcome::Other);
        assert_eq!(d.puback(input.pkid), AckOutcome::Input);
        assert_eq!(d.stats.out_of_order_acks, 1);
        assert_eq!(d.puback(999), AckOutcome::Unknown);
    }

    #[test]
    fn a_reconnect_redelivers_what_was_in_flight() {
        let t0 = Instant::now();
        let mut d = ready(Duration::from_secs(30));
        d.store(msg("input1", 1));
        let first = d.next(t0).unwrap();
        d.disconnected();
        assert_eq!(d.next(t0), None, "not connected");
        d.connected(false);
        let again = d.next(t0).unwrap();
        assert_eq!(again.payload, first.payload);
        assert_eq!(d.stats.redelivered, 1);
        assert_eq!(
            d.filters(),
            [INPUTS],
            "a persistent session keeps its subscriptions"
        );
        d.connected(true);
        assert!(d.filters().is_empty());
    }

    #[test]
    fn nothing_goes_out_before_an_input_subscription_and_mismatches_are_dropped() {
        let t0 = Instant::now();
        let mut d = Delivery::new(Duration::from_secs(30));
        d.connected(false);
        d.store(msg("input1", 1));
        d.subscribe(["$iothub/twin/res/#".to_string()]);
        assert_eq!(d.next(t0), None, "no module-messages subscription yet");
        assert_eq!(d.backlog(), 1);
        // The percent-encoded id's filter: edgeHub takes it as a module-messages
        // subscription, but it matches none of the raw topics.
        d.subscribe(["devices/gw%3A01%40plant/modules/m/inputs/#".to_string()]);
        assert_eq!(d.next(t0), None);
        assert_eq!(d.stats.unsubscribed, 1);
        assert_eq!(d.backlog(), 0);
    }

    #[test]
    fn module_messages_filters_are_edgehubs() {
        assert!(is_module_messages_filter("devices/d/modules/m/#"));
        assert!(is_module_messages_filter("devices/d/modules/m/inputs/#"));
        assert!(is_module_messages_filter(
            "devices/gw:01@plant/modules/m/inputs/#"
        ));
        assert!(!is_module_messages_filter("devices/d/modules/m/inputs/+"));
        assert!(!is_module_messages_filter("$iothub/twin/res/#"));
        assert!(!is_module_messages_filter("devices//modules/m/#"));
    }

    #[test]
    fn packet_ids_skip_those_still_pending() {
        let mut d = ready(Duration::from_secs(30));
        d.next_pkid = u16::MAX;
        assert_eq!(d.send_other(), u16::MAX);
        assert_eq!(d.send_other(), 1);
        d.next_pkid = u16::MAX;
        assert_eq!(d.send_other(), 2, "65535 and 1 are still pending");
    }
}
