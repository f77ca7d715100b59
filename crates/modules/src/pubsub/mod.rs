//! XEP-0060 Publish-Subscribe and XEP-0163 Personal Eventing Protocol.
//!
//! Every account is a PEP service at its bare JID (the IQ handlers below),
//! and each `[[services]]` domain of this module (by default
//! `pubsub.<host>`) is a pubsub service. Both run the same node model
//! (`node`), request handling (`service`) and notifications (`notify`);
//! PEP adds the `+notify` interests of entity capabilities (`interests`).
//! Nodes, items, subscriptions and affiliations live in the store.

mod interests;
mod node;
mod notify;
mod service;
mod xml;

use interests::Interests;
use serde::Deserialize;
use service::{check_read, Request, Service};
use starling_core::module::{Addressed, HookPoint, HookResult, IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError, Server};
use starling_proto::xml::element;
use starling_proto::xmpp_parsers::disco::{DiscoItemsResult, Item};
use starling_proto::xmpp_parsers::ns as xns;
use starling_proto::{ns, BareJid, Element, IqType, Jid, Stanza, StanzaError, StanzaKind};
use std::sync::Arc;

pub struct Pubsub;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubConfig {
    /// Nodes one service (an account's PEP, or a service domain) may hold.
    pub max_nodes_per_service: usize,
    /// Items a node keeps at most; what `pubsub#max_items` = `max` means.
    pub max_items_per_node: usize,
    /// Largest item payload, in bytes of XML.
    pub max_payload_bytes: usize,
    /// Entity capabilities hashes remembered (for `+notify` interests).
    pub caps_cache_size: usize,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            max_nodes_per_service: 256,
            max_items_per_node: 256,
            max_payload_bytes: 64 * 1024,
            caps_cache_size: 4096,
        }
    }
}

/// §10 service discovery features, after `http://jabber.org/protocol/pubsub#`.
const FEATURES: [&str; 27] = [
    "http://jabber.org/protocol/pubsub",
    "http://jabber.org/protocol/pubsub#access-authorize",
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#instant-nodes",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#manage-subscriptions",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#subscribe",
    "http://jabber.org/protocol/pubsub#subscription-options",
];

struct State {
    config: PubsubConfig,
    interests: Interests,
}

impl State {
    fn request<'a>(&'a self, server: &'a Arc<Server>, service: Service, from: Jid) -> Request<'a> {
        Request { server, config: &self.config, interests: &self.interests, service, from }
    }
}

impl Module for Pubsub {
    const NAME: &'static str = "pubsub";
    type Config = PubsubConfig;

    fn load(config: PubsubConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        let state = Arc::new(State { interests: Interests::new(config.caps_cache_size), config });
        // XEP-0163 §6.1: every account is a PEP service; clients look for
        // publish-options there before relying on it.
        ctx.add_account_identity("pubsub", "pep", None);
        for feature in FEATURES {
            ctx.add_account_feature(feature);
        }
        for (type_, namespace) in [
            (IqType::Get, xns::PUBSUB),
            (IqType::Set, xns::PUBSUB),
            (IqType::Get, xns::PUBSUB_OWNER),
            (IqType::Set, xns::PUBSUB_OWNER),
        ] {
            let state = state.clone();
            ctx.handle_iq(IqTarget::Account, type_, namespace, move |req| {
                let state = state.clone();
                async move { pep_request(&state, req).await }
            });
        }
        let s = state.clone();
        ctx.handle_iq(IqTarget::Account, IqType::Get, ns::DISCO_ITEMS, move |req| {
            let s = s.clone();
            async move {
                let (service, from) = pep_service(&req)?;
                disco_items(&s.request(&req.server, service, from), req.payload()).await
            }
        });
        let domains: Vec<String> = ctx.services().iter().map(|s| s.domain.clone()).collect();
        for domain in domains {
            let jid = BareJid::new(&domain)
                .map_err(|e| ModuleError::Failed { module: Self::NAME, message: e.to_string() })?;
            let state = state.clone();
            ctx.serve_domain(&domain, move |server, stanza| {
                let (state, jid) = (state.clone(), jid.clone());
                async move { serve(&state, &server, jid, stanza).await }
            });
        }
        let s = state.clone();
        ctx.hook(HookPoint::Outbound(StanzaKind::Presence), 0, move |server, stanza| {
            let s = s.clone();
            async move {
                if stanza.to.is_none() {
                    match stanza.type_.as_deref() {
                        None => s.interests.presence(&server, &stanza).await,
                        Some("unavailable") => forget(&s, &stanza),
                        Some(_) => {}
                    }
                }
                HookResult::Continue
            }
        });
        let s = state.clone();
        ctx.hook(HookPoint::Inbound(StanzaKind::Presence), 0, move |server, stanza| {
            let s = s.clone();
            async move {
                if stanza.type_.is_none() {
                    s.interests.contact_presence(&server, &stanza).await;
                }
                HookResult::Continue
            }
        });
        let s = state.clone();
        ctx.hook(HookPoint::SessionClosed, 0, move |_, stanza| {
            forget(&s, &stanza);
            async { HookResult::Continue }
        });
        ctx.hook(HookPoint::To(StanzaKind::Iq, Addressed::Host), 100, move |server, stanza| {
            let s = state.clone();
            async move { s.interests.answer(&server, &stanza).await }
        });
        Ok(Pubsub)
    }
}

fn forget(state: &State, stanza: &Stanza) {
    if let Some(Ok(session)) = stanza.from.clone().map(Jid::try_into_full) {
        state.interests.forget(&session);
    }
}

/// A request of `owner` (a full JID) to its own PEP service, answered
/// in-process: for modules that keep an account's data in PEP (XEP-0402
/// bookmarks, XEP-0398 avatars). `service-unavailable` without this module.
pub(crate) async fn own_pep_request(server: &Arc<Server>, owner: &Jid, type_: &str, payload: Element) -> IqResult {
    let bare = owner.to_bare();
    let mut iq = element(
        "iq",
        ns::CLIENT,
        &[("type", type_), ("id", "internal"), ("from", owner.as_str()), ("to", bare.as_str())],
    );
    iq.append_child(payload);
    let stanza = Stanza::from_element(iq, ns::CLIENT).map_err(|_| StanzaError::internal_server_error())?;
    server.inline_iq(stanza, IqTarget::Account).await
}

/// The PEP service an IQ to an account (or to one's own, without `to`)
/// addresses, and the requester.
fn pep_service(req: &IqRequest) -> Result<(Service, Jid), StanzaError> {
    let from = req.stanza.from.clone().ok_or_else(StanzaError::service_unavailable)?;
    let owner = req.stanza.to.as_ref().unwrap_or(&from).to_bare();
    Ok((Service::Pep(owner), from))
}

/// A pubsub IQ to an account: its PEP service answers.
async fn pep_request(state: &State, req: IqRequest) -> IqResult {
    let (service, from) = pep_service(&req)?;
    let set = req.stanza.is_type("set");
    let request = state.request(&req.server, service, from);
    let payload = req.payload();
    if payload.is("pubsub", xns::PUBSUB) {
        request.handle_pubsub(payload, set).await
    } else if payload.is("pubsub", xns::PUBSUB_OWNER) {
        request.handle_owner(payload, set).await
    } else {
        Err(StanzaError::bad_request())
    }
}

/// Every stanza to a pubsub service domain: IQ requests are answered,
/// anything else is dropped (errors must not be answered, the rest has no meaning here).
async fn serve(state: &State, server: &Arc<Server>, domain: BareJid, stanza: Stanza) {
    let Some(type_) = stanza.iq_type().filter(|t| t.is_request()) else { return };
    let Some(from) = stanza.from.clone() else { return };
    let set = type_ == IqType::Set;
    let to_domain = stanza.to.as_ref().is_some_and(|to| to.node().is_none() && to.resource().is_none());
    let payload = stanza.payload().cloned().unwrap_or_else(|| Element::bare("none", ""));
    let request = state.request(server, Service::Domain(domain.clone()), from);
    let outcome = if !to_domain {
        Err(StanzaError::service_unavailable())
    } else if payload.is("pubsub", xns::PUBSUB) {
        request.handle_pubsub(&payload, set).await
    } else if payload.is("pubsub", xns::PUBSUB_OWNER) {
        request.handle_owner(&payload, set).await
    } else if payload.is("query", ns::DISCO_INFO) && !set {
        disco_info(&request, &payload).await
    } else if payload.is("query", ns::DISCO_ITEMS) && !set {
        disco_items(&request, &payload).await
    } else {
        Err(StanzaError::service_unavailable())
    };
    let reply = match outcome {
        Ok(payload) => Some(stanza.iq_result(payload)),
        Err(e) => stanza.error_reply(&e),
    };
    if let Some(reply) = reply {
        server.send_to_local(reply);
    }
}

/// §5.1 (the service) and §5.3 (one node).
async fn disco_info(request: &Request<'_>, query: &Element) -> IqResult {
    let mut info = Element::bare("query", ns::DISCO_INFO);
    let identity = |type_: &str| element("identity", ns::DISCO_INFO, &[("category", "pubsub"), ("type", type_)]);
    let feature = |var: &str| element("feature", ns::DISCO_INFO, &[("var", var)]);
    match query.attr("node") {
        Some(node) => {
            request.node(node).await?.ok_or_else(StanzaError::item_not_found)?;
            starling_proto::xml::set_attr(&mut info, "node", node);
            info.append_child(identity("leaf"));
            info.append_child(feature(ns::DISCO_INFO));
        }
        None => {
            info.append_child(identity("service"));
            for var in [ns::DISCO_INFO, ns::DISCO_ITEMS].into_iter().chain(FEATURES) {
                info.append_child(feature(var));
            }
        }
    }
    Ok(Some(info))
}

/// §5.2, and for an account XEP-0163 §6.2 (only the nodes the requester may
/// read): the service's nodes, all leaves (no collections).
async fn disco_items(request: &Request<'_>, query: &Element) -> IqResult {
    let node = query.attr("node").map(str::to_owned);
    let mut items = Vec::new();
    if node.is_none() {
        let service = &request.service;
        let names = request.server.store.pubsub_nodes(service.key()).await.map_err(crate::store::store_error)?;
        for name in names {
            let Some(config) = request.node(&name).await? else { continue };
            // Only what the requester may read is listed.
            if check_read(request.server, service, &name, &config, &request.from).await.is_ok() {
                let title = Some(config.title).filter(|t| !t.is_empty());
                items.push(Item { jid: service.jid(), node: Some(name), name: title });
            }
        }
    }
    Ok(Some(DiscoItemsResult { node, items, rsm: None }.into()))
}
