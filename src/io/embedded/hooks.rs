//! The embedded broker's hooks, where edgefilter's rules meet rmqtt's session tasks:
//! logins at CONNECT (the password file, the filter's own token), the publish check (no
//! wildcards in topic names, the twin writable only by authorised clients) and every message
//! the broker drops (counted by reason in `/metrics`, logged). The decisions themselves are
//! pure functions ([`Access::login`], [`Access::publish`]) tested without a broker.

use std::net::SocketAddr;
use std::sync::Arc;

use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::types::{AuthResult, PublishAclResult, Reason};

use super::gate::GateHook;
use super::inbox::Inboxes;
use crate::metrics::{BrokerDrop, Metrics};
use crate::settings::Passwords;

/// Who may connect and what they may publish.
#[derive(Debug, Clone)]
pub struct Access {
    /// The filter's own client id and the secret it logs in with (as the user name, on both
    /// of its connections).
    pub filter_client_id: String,
    /// The client id of the filter's publisher connection.
    pub filter_publisher_id: String,
    pub filter_token: String,
    /// None: anonymous clients are admitted.
    pub passwords: Option<Passwords>,
    /// `<twin prefix>/desired` and `/reported`.
    pub twin_desired: String,
    pub twin_reported: String,
    /// Users (from the password file) who may write the twin's desired document.
    pub twin_writers: Vec<String>,
}

/// The answer to a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The filter itself (a superuser: its publishes skip the checks).
    Filter,
    User,
    Anonymous,
    BadPassword,
    /// No user name while a password file is in force.
    Missing,
    /// The filter's client id without its token: refused so nobody takes its session over.
    FilterIdTaken,
}

/// The answer to a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishCheck {
    Allow,
    Wildcard,
    TwinNotAuthorized,
}

impl Access {
    pub fn login(&self, client_id: &str, user: Option<&str>, password: Option<&[u8]>) -> Login {
        if client_id == self.filter_client_id || client_id == self.filter_publisher_id {
            // Both of the filter's connections log in with its client id and token.
            let filter = self.filter_client_id.as_str();
            return if user == Some(filter) && password == Some(self.filter_token.as_bytes()) {
                Login::Filter
            } else {
                Login::FilterIdTaken
            };
        }
        match (&self.passwords, user) {
            (None, _) => Login::Anonymous,
            (Some(_), None) => Login::Missing,
            (Some(p), Some(u)) if p.verify(u, password.unwrap_or_default()) => Login::User,
            (Some(_), Some(_)) => Login::BadPassword,
        }
    }

    /// `user` is the logged-in user (only set when a password file is in force); without a
    /// password file only clients on the loopback interface may write the twin.
    pub fn publish(
        &self,
        topic: &str,
        user: Option<&str>,
        remote: Option<SocketAddr>,
    ) -> PublishCheck {
        if topic.contains(['+', '#']) {
            return PublishCheck::Wildcard;
        }
        if topic == self.twin_reported {
            return PublishCheck::TwinNotAuthorized;
        }
        if topic == self.twin_desired {
            let allowed = match &self.passwords {
                Some(_) => user.is_some_and(|u| self.twin_writers.iter().any(|w| w == u)),
                None => remote.is_some_and(|a| a.ip().is_loopback()),
            };
            if !allowed {
                return PublishCheck::TwinNotAuthorized;
            }
        }
        PublishCheck::Allow
    }
}

struct AuthHandler(Arc<Access>);

#[async_trait::async_trait]
impl Handler for AuthHandler {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let access = &self.0;
        match param {
            Parameter::ClientAuthenticate(ci) => {
                let user = ci.username().map(|u| u.as_ref());
                let login = access.login(ci.client_id(), user, ci.password().map(|p| p.as_ref()));
                let result = match login {
                    Login::Filter => AuthResult::Allow(true, None),
                    Login::User | Login::Anonymous => AuthResult::Allow(false, None),
                    Login::BadPassword => {
                        tracing::warn!(
                            "embedded broker: refused {:?} from {:?}: bad user name or password",
                            ci.client_id(),
                            ci.id().remote_addr
                        );
                        AuthResult::BadUsernameOrPassword
                    }
                    Login::Missing => {
                        tracing::warn!(
                            "embedded broker: refused {:?} from {:?}: no login (--listen-password-file is in force)",
                            ci.client_id(),
                            ci.id().remote_addr
                        );
                        AuthResult::NotAuthorized
                    }
                    Login::FilterIdTaken => {
                        tracing::warn!(
                            "embedded broker: refused a client from {:?} using the filter's client id {:?}",
                            ci.id().remote_addr,
                            ci.client_id()
                        );
                        AuthResult::NotAuthorized
                    }
                };
                (false, Some(HookResult::AuthResult(result)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let user = access
                    .passwords
                    .as_ref()
                    .and(session.id.username.as_ref().map(|u| u.as_ref()));
                match access.publish(&publish.topic, user, session.id.remote_addr) {
                    PublishCheck::Allow => (true, acc),
                    refused => {
                        let why = match refused {
                            PublishCheck::Wildcard => "wildcard in the topic name",
                            _ => "not authorised to write the twin",
                        };
                        (
                            false,
                            Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                                false,
                                Some(why.into()),
                            ))),
                        )
                    }
                }
            }
            _ => (true, acc),
        }
    }
}

struct DropHandler {
    metrics: Arc<Metrics>,
    queue_len: usize,
}

#[async_trait::async_trait]
impl Handler for DropHandler {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::MessageDropped(to, from, publish, reason) = param {
            let client = to.as_ref().unwrap_or(&from.id).client_id.to_string();
            let (kind, detail) = classify(reason, self.queue_len);
            self.metrics.broker_dropped(
                kind,
                &detail,
                &client,
                &publish.topic,
                std::time::Instant::now(),
            );
        }
        (true, acc)
    }
}

/// Keeps [`Inboxes`] in step with the sessions that are connected.
struct InboxHook(Arc<Inboxes>);

#[async_trait::async_trait]
impl Handler for InboxHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientConnected(session) => {
                let entry = session.scx.extends.shared().await.entry(session.id.clone());
                if let Some(tx) = entry.tx() {
                    self.0.connected(session.id.clone(), tx);
                }
            }
            Parameter::ClientDisconnected(session, _) => self.0.disconnected(&session.id),
            _ => {}
        }
        (true, acc)
    }
}

/// The counter label and the log text of a drop.
fn classify(reason: &Reason, queue_len: usize) -> (BrokerDrop, String) {
    match reason {
        Reason::MessageQueueFull => (
            BrokerDrop::queue_full,
            format!("its queue of {queue_len} messages is full (--broker-queue)"),
        ),
        Reason::MessageExpiration => (BrokerDrop::expired, "expired in the queue".into()),
        Reason::PublishResult(r) => (
            BrokerDrop::refused,
            r.reason_string
                .as_ref()
                .map_or_else(|| "refused".to_string(), |s| s.to_string()),
        ),
        Reason::SessionExpiration => (
            BrokerDrop::session_ended,
            "its session expired with messages queued".into(),
        ),
        other => (BrokerDrop::other, other.to_string()),
    }
}

/// Registers the hooks on the broker (before it accepts connections).
pub async fn register(
    scx: &rmqtt::context::ServerContext,
    access: Access,
    metrics: Arc<Metrics>,
    queue_len: usize,
    gate: Arc<super::gate::Gate>,
    inboxes: Arc<Inboxes>,
) {
    let access = Arc::new(access);
    let register = scx.extends.hook_mgr().register();
    register
        .add(
            Type::ClientAuthenticate,
            Box::new(AuthHandler(access.clone())),
        )
        .await;
    register
        .add(Type::MessagePublishCheckAcl, Box::new(AuthHandler(access)))
        .await;
    register
        .add(
            Type::MessageDropped,
            Box::new(DropHandler { metrics, queue_len }),
        )
        .await;
    register
        .add(Type::ClientConnected, Box::new(InboxHook(inboxes.clone())))
        .await;
    register
        .add(Type::ClientDisconnected, Box::new(InboxHook(inboxes)))
        .await;
    for t in [
        Type::ClientConnect,
        Type::ClientConnack,
        Type::ClientConnected,
    ] {
        register.add(t, Box::new(GateHook(gate.clone()))).await;
    }
    register
        .add(Type::MessagePublish, Box::new(GateHook(gate)))
        .await;
    register.start().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice:$7$101$1tWVG68+JewdWKvz$Cea5F8BtOKa3trXex0KshDEd/t1zYmlEwhz4m2hiQbvEb+jvO4DmfxKhs8Rzo1uImgl1RUm9OsADrnV7UhdEiw==";

    fn access(passwords: bool) -> Access {
        Access {
            filter_client_id: "edgefilter".into(),
            filter_publisher_id: "edgefilter-out".into(),
            filter_token: "t0ken".into(),
            passwords: passwords.then(|| {
                Passwords::parse(&format!("{ALICE}\n{}", ALICE.replace("alice", "ops"))).unwrap()
            }),
            twin_desired: "edgefilter/twin/desired".into(),
            twin_reported: "edgefilter/twin/reported".into(),
            twin_writers: vec!["ops".into()],
        }
    }

    #[test]
    fn logins() {
        let open = access(false);
        assert_eq!(open.login("dev-1", None, None), Login::Anonymous);
        assert_eq!(
            open.login("edgefilter", Some("edgefilter"), Some(b"t0ken")),
            Login::Filter
        );
        assert_eq!(open.login("edgefilter", None, None), Login::FilterIdTaken);
        assert_eq!(
            open.login("edgefilter-out", Some("edgefilter"), Some(b"t0ken")),
            Login::Filter,
            "the filter's publisher connection"
        );
        assert_eq!(
            open.login("edgefilter-out", Some("edgefilter-out"), Some(b"guess")),
            Login::FilterIdTaken
        );
        assert_eq!(
            open.login("edgefilter", Some("edgefilter"), Some(b"guess")),
            Login::FilterIdTaken
        );
        let closed = access(true);
        assert_eq!(closed.login("dev-1", None, None), Login::Missing);
        assert_eq!(
            closed.login("dev-1", Some("alice"), Some(b"s3cret")),
            Login::User
        );
        assert_eq!(
            closed.login("dev-1", Some("alice"), Some(b"wrong")),
            Login::BadPassword
        );
        assert_eq!(
            closed.login("edgefilter", Some("alice"), Some(b"s3cret")),
            Login::FilterIdTaken
        );
    }

    #[test]
    fn publish_checks() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let far: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let open = access(false);
        assert_eq!(
            open.publish("telemetry/#", None, Some(lo)),
            PublishCheck::Wildcard
        );
        assert_eq!(
            open.publish("telemetry/+/x", None, Some(lo)),
            PublishCheck::Wildcard
        );
        assert_eq!(
            open.publish("telemetry/a", None, Some(far)),
            PublishCheck::Allow
        );
        assert_eq!(
            open.publish("edgefilter/twin/desired", None, Some(lo)),
            PublishCheck::Allow
        );
        assert_eq!(
            open.publish("edgefilter/twin/desired", Some("ops"), Some(far)),
            PublishCheck::TwinNotAuthorized
        );
        assert_eq!(
            open.publish("edgefilter/twin/reported", None, Some(lo)),
            PublishCheck::TwinNotAuthorized
        );
        let closed = access(true);
        assert_eq!(
            closed.publish("edgefilter/twin/desired", Some("alice"), Some(lo)),
            PublishCheck::TwinNotAuthorized
        );
        assert_eq!(
            closed.publish("edgefilter/twin/desired", Some("ops"), Some(far)),
            PublishCheck::Allow
        );
        assert_eq!(
            closed.publish("telemetry/a", Some("alice"), Some(far)),
            PublishCheck::Allow
        );
    }
}
