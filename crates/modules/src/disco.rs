//! XEP-0030: Service Discovery. The server's identity and features are
//! whatever the loaded modules declared, with their XEP-0128 extension forms.

use serde::Deserialize;
use starling_core::module::Identity;
use starling_core::module::{IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError, ModuleRegistry};
use starling_proto::xml::element;
use starling_proto::xmpp_parsers::disco::{DiscoItemsResult, Item};
use starling_proto::{ns, Element, IqType, Jid, StanzaError};

pub struct Disco;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoConfig {}

impl Module for Disco {
    const NAME: &'static str = "disco";
    type Config = DiscoConfig;

    fn load(_: DiscoConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        ctx.add_identity("server", "im", Some("Starling"));
        ctx.add_feature(ns::DISCO_INFO);
        ctx.add_feature(ns::DISCO_ITEMS);
        ctx.handle_iq(IqTarget::Host, IqType::Get, ns::DISCO_INFO, server_info);
        ctx.handle_iq(IqTarget::Host, IqType::Get, ns::DISCO_ITEMS, server_items);
        ctx.handle_iq(IqTarget::Account, IqType::Get, ns::DISCO_INFO, account_info);
        Ok(Disco)
    }
}

/// The empty `<query/>` of the answer, keeping the request's node (§3.2).
fn echo_node(req: &IqRequest, namespace: &str) -> Element {
    match req.payload().attr("node") {
        Some(node) => element("query", namespace, &[("node", node)]),
        None => Element::bare("query", namespace),
    }
}

/// §4.1: the host's items are the service domains configured under it
/// (modules' and external components'); its nodes have none (§4.2).
async fn server_items(req: IqRequest) -> IqResult {
    let node = req.payload().attr("node").map(str::to_owned);
    let host = req.stanza.to.as_ref().map(|to| to.domain().as_str()).unwrap_or_default();
    let items = match node {
        Some(_) => Vec::new(),
        None => req
            .server
            .domains
            .services_of(host)
            .filter_map(|(domain, name)| {
                Some(Item { jid: Jid::new(domain).ok()?, node: None, name: name.map(str::to_owned) })
            })
            .collect(),
    };
    Ok(Some(DiscoItemsResult { node, items, rsm: None }.into()))
}

async fn server_info(req: IqRequest) -> IqResult {
    let info = server_info_query(&req.server.modules);
    match req.payload().attr("node") {
        None => Ok(Some(info)),
        // XEP-0115 §6.2: the caps node#ver answers like the server itself.
        Some(node) if crate::caps::is_current_node(&info, node) => {
            let mut query = echo_node(&req, ns::DISCO_INFO);
            for child in info.children() {
                query.append_child(child.clone());
            }
            Ok(Some(query))
        }
        Some(_) => Err(StanzaError::item_not_found()),
    }
}

/// The server's disco#info `<query/>` (no node): the loaded modules'
/// identities and features, then their XEP-0128 extension forms. XEP-0115's
/// verification string is computed from exactly this.
pub fn server_info_query(modules: &ModuleRegistry) -> Element {
    let mut query = Element::bare("query", ns::DISCO_INFO);
    for identity in modules.identities() {
        query.append_child(identity_element(&identity));
    }
    for var in modules.features() {
        query.append_child(element("feature", ns::DISCO_INFO, &[("var", var)]));
    }
    for form in modules.disco_extensions() {
        query.append_child(form);
    }
    query
}

fn identity_element(identity: &Identity) -> Element {
    let mut attrs = vec![("category", identity.category), ("type", identity.type_)];
    if let Some(name) = identity.name {
        attrs.push(("name", name));
    }
    element("identity", ns::DISCO_INFO, &attrs)
}

/// XEP-0030 §3.1 for an account: `account/registered` and what modules add
/// for accounts (XEP-0163 PEP), answered only to the account itself until
/// rosters (presence subscriptions) exist.
async fn account_info(req: IqRequest) -> IqResult {
    let Some(from) = &req.stanza.from else {
        return Err(StanzaError::service_unavailable());
    };
    let to = req.stanza.to.as_ref().unwrap_or(from);
    if from.to_bare() != to.to_bare() || req.payload().attr("node").is_some() {
        return Err(StanzaError::service_unavailable());
    }
    let mut query = echo_node(&req, ns::DISCO_INFO);
    query.append_child(element("identity", ns::DISCO_INFO, &[("category", "account"), ("type", "registered")]));
    for identity in req.server.modules.account_identities() {
        query.append_child(identity_element(&identity));
    }
    let mut features = req.server.modules.account_features();
    features.push(ns::DISCO_INFO);
    features.sort_unstable();
    features.dedup();
    for var in features {
        query.append_child(element("feature", ns::DISCO_INFO, &[("var", var)]));
    }
    Ok(Some(query))
}
