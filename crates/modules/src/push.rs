//! XEP-0357 Push Notifications. A client registers its app server (a JID
//! and a node, with publish-options such as a secret); when a message or a
//! subscription request arrives while the account has no attached session
//! (none, or only ones XEP-0198 keeps hibernating), the server publishes an
//! `urn:xmpp:push:summary` notification to each registered app server
//! through the router. An app server that answers with an error has that
//! registration removed (§5).

use crate::store::{account, store_error};
use dashmap::DashMap;
use serde::Deserialize;
use starling_core::module::{HookPoint, HookResult, IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError, Server};
use starling_proto::xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use starling_proto::xmpp_parsers::iq::Iq;
use starling_proto::xmpp_parsers::pubsub::pubsub::{Item, PubSub, Publish, PublishOptions};
use starling_proto::xmpp_parsers::pubsub::NodeName;
use starling_proto::xmpp_parsers::push::{Disable, Enable, Notification};
use starling_proto::{ns, BareJid, Element, IqType, Jid, Stanza, StanzaError, StanzaKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS_PUSH: &str = "urn:xmpp:push:0";
const NS_SUMMARY: &str = "urn:xmpp:push:summary";
/// `account_data` store of the registrations: key `jid\nnode`, value the
/// publish-options form (or empty).
const STORE: &str = "push";

pub struct Push;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Put the message body in notifications (it then passes through the
    /// app server and the phone vendor's push service): off by default.
    pub include_body: bool,
    /// Registrations one account may have.
    pub max_devices: usize,
    /// Notifications per registration per minute; more are not sent.
    pub max_per_minute: u32,
    /// Seconds to wait for an app server's answer.
    pub response_timeout_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig { include_body: false, max_devices: 10, max_per_minute: 30, response_timeout_secs: 30 }
    }
}

impl Module for Push {
    const NAME: &'static str = "push";
    type Config = PushConfig;

    fn load(config: PushConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        // §4: the account's server advertises support.
        ctx.add_account_feature(NS_PUSH);
        ctx.add_feature(NS_PUSH);
        let pusher = Arc::new(Pusher { config, pending: DashMap::new(), sent: DashMap::new() });
        let handler = pusher.clone();
        ctx.handle_iq(IqTarget::Account, IqType::Set, NS_PUSH, move |req| {
            let pusher = handler.clone();
            async move { pusher.register(req).await }
        });
        // After archiving (the notification follows what was stored), before
        // delivery; it never stops the stanza.
        for kind in [StanzaKind::Message, StanzaKind::Presence] {
            let pusher = pusher.clone();
            ctx.hook(HookPoint::Inbound(kind), -50, move |server, stanza| {
                let pusher = pusher.clone();
                async move {
                    pusher.arrived(&server, &stanza).await;
                    HookResult::Continue
                }
            });
        }
        // Messages the phone had not acknowledged when its connection died.
        let held = pusher.clone();
        ctx.hook(HookPoint::HeldForHibernated, 0, move |server, stanza| {
            let pusher = held.clone();
            async move {
                pusher.arrived(&server, &stanza).await;
                HookResult::Continue
            }
        });
        ctx.hook(HookPoint::SessionAvailable, 0, move |_, stanza| {
            // Someone is looking: the next notification counts from one again.
            if let Some(from) = &stanza.from {
                pusher.pending.remove(&from.to_bare());
            }
            async { HookResult::Continue }
        });
        Ok(Push)
    }
}

struct Pusher {
    config: PushConfig,
    /// Messages arrived since the account last had a session, per account.
    pending: DashMap<BareJid, u32>,
    /// When each registration was last notified, and how often in that minute.
    sent: DashMap<(BareJid, String), (Instant, u32)>,
}

/// One registered app server.
struct Registration {
    key: String,
    jid: Jid,
    node: String,
    options: Option<DataForm>,
}

impl Pusher {
    /// §5 (enable) and §6 (disable), for the requesting account.
    async fn register(&self, req: IqRequest) -> IqResult {
        let owner = req.stanza.from.as_ref().ok_or_else(StanzaError::bad_request)?.to_bare();
        let (host, user) = account(&owner);
        let store = &req.server.store;
        let payload = req.payload().clone();
        let invalid = |e: starling_proto::xmpp_parsers::Error| StanzaError::bad_request().with_text(e.to_string());
        match payload.name() {
            "enable" => {
                let enable = Enable::try_from(payload).map_err(|e| invalid(e.into()))?;
                let node = enable.node.ok_or_else(|| StanzaError::bad_request().with_text("a node is required"))?;
                let key = format!("{}\n{node}", enable.jid);
                let existing = store.all_data(host, user, STORE).await.map_err(store_error)?;
                if existing.len() >= self.config.max_devices && !existing.iter().any(|(k, _)| *k == key) {
                    return Err(StanzaError::not_allowed()
                        .with_text(format!("at most {} push registrations per account", self.config.max_devices)));
                }
                let options = enable.form.map(|f| String::from(&Element::from(f))).unwrap_or_default();
                store.set_data(host, user, STORE, &key, Some(&options)).await.map_err(store_error)?;
                Ok(None)
            }
            "disable" => {
                let disable = Disable::try_from(payload).map_err(|e| invalid(e.into()))?;
                for (key, _) in store.all_data(host, user, STORE).await.map_err(store_error)? {
                    let (jid, node) = key.split_once('\n').unwrap_or((&key, ""));
                    if jid == disable.jid.as_str() && disable.node.as_deref().is_none_or(|n| n == node) {
                        store.set_data(host, user, STORE, &key, None).await.map_err(store_error)?;
                    }
                }
                Ok(None)
            }
            _ => Err(StanzaError::bad_request()),
        }
    }

    /// A stanza for a local account: notify if it is worth waking a phone
    /// for and nobody is attached to read it.
    async fn arrived(self: &Arc<Self>, server: &Arc<Server>, stanza: &Stanza) {
        let Some(owner) = stanza.to.as_ref().map(Jid::to_bare).filter(|o| o.node().is_some()) else { return };
        let notify = match stanza.kind {
            StanzaKind::Message => {
                !matches!(stanza.type_.as_deref(), Some("error" | "groupchat" | "headline"))
                    && (stanza.el.has_child("body", ns::CLIENT)
                        || stanza.el.has_child("encrypted", ns::OMEMO)
                        || stanza.el.has_child("encrypted", ns::OMEMO_LEGACY))
            }
            StanzaKind::Presence => stanza.is_type("subscribe"),
            StanzaKind::Iq => false,
        };
        if !notify || server.router.has_attached(&owner) {
            return;
        }
        let (host, user) = account(&owner);
        let registrations = match server.store.all_data(host, user, STORE).await {
            Ok(r) if r.is_empty() => return,
            Ok(r) => r,
            Err(e) => return tracing::warn!(error = %e, "push registrations unavailable"),
        };
        let count = {
            let mut pending = self.pending.entry(owner.clone()).or_default();
            *pending += u32::from(stanza.kind == StanzaKind::Message);
            *pending
        };
        for (key, options) in registrations {
            let Some(registration) = parse_registration(key, &options) else { continue };
            if !self.allowed(&owner, &registration.key) {
                tracing::debug!(%owner, app_server = %registration.jid, "push rate limit reached");
                continue;
            }
            let iq = self.notification(&owner, &registration, stanza, count);
            let (pusher, server, owner) = (self.clone(), server.clone(), owner.clone());
            // The app server answers later (or never): not on the delivery path.
            tokio::spawn(async move { pusher.publish(&server, &owner, registration, iq).await });
        }
    }

    /// A per-registration rate limit: `max_per_minute` in any minute window.
    fn allowed(&self, owner: &BareJid, key: &str) -> bool {
        let now = Instant::now();
        let mut entry = self.sent.entry((owner.clone(), key.to_owned())).or_insert((now, 0));
        let (since, count) = &mut *entry;
        if now.duration_since(*since) >= Duration::from_secs(60) {
            (*since, *count) = (now, 0);
        }
        *count += 1;
        *count <= self.config.max_per_minute
    }

    /// §5 example: a publish to the registration's node with the summary
    /// form and the registration's publish-options.
    fn notification(&self, owner: &BareJid, to: &Registration, stanza: &Stanza, count: u32) -> Element {
        let mut fields = vec![Field::text_single("message-count", &count.to_string())];
        if let Some(sender) = &stanza.from {
            let var =
                if stanza.kind == StanzaKind::Message { "last-message-sender" } else { "pending-subscription-count" };
            let value = if stanza.kind == StanzaKind::Message { sender.to_string() } else { "1".into() };
            fields.push(Field::text_single(var, &value));
        }
        if self.config.include_body {
            if let Some(body) = stanza.el.get_child("body", ns::CLIENT) {
                fields.push(Field::text_single("last-message-body", &body.text()));
            }
        }
        let summary = DataForm::new(DataFormType::Submit, NS_SUMMARY, fields);
        let item = Item {
            id: None,
            publisher: None,
            payload: Some(Notification { form: Some(summary), payloads: vec![] }.into()),
        };
        let pubsub = PubSub::Publish {
            publish: Publish { node: NodeName(to.node.clone()), items: vec![item] },
            publish_options: to.options.clone().map(|form| PublishOptions { form: Some(form) }),
        };
        let iq = Iq::from_set("", pubsub).with_from(owner.clone().into()).with_to(to.jid.clone());
        iq.into()
    }

    async fn publish(&self, server: &Arc<Server>, owner: &BareJid, registration: Registration, iq: Element) {
        let timeout = Duration::from_secs(self.config.response_timeout_secs);
        match server.request_iq(iq, timeout).await {
            Ok(answer) if answer.stanza.is_type("error") => {
                // §5: the app server refuses: this registration is over.
                tracing::info!(%owner, app_server = %registration.jid, "push app server refused; registration removed");
                let (host, user) = account(owner);
                if let Err(e) = server.store.set_data(host, user, STORE, &registration.key, None).await {
                    tracing::warn!(error = %e, "push registration not removed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%owner, app_server = %registration.jid, error = %e, "push not answered"),
        }
    }
}

fn parse_registration(key: String, options: &str) -> Option<Registration> {
    let (jid, node) = key.split_once('\n')?;
    let (jid, node) = (Jid::new(jid).ok()?, node.to_owned());
    let options = options.parse::<Element>().ok().and_then(|el| DataForm::try_from(el).ok());
    Some(Registration { key, jid, node, options })
}
