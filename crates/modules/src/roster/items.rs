//! RFC 6121 §2: roster get, set and remove, pushes to interested resources,
//! XEP-0237 versions.

use super::cache::{account, store_error, Rosters};
use super::subscription;
use starling_core::module::{IqRequest, IqResult};
use starling_core::Server;
use starling_proto::xml::{element, set_attr, text_element};
use starling_proto::{ns, BareJid, Element, Jid, StanzaError};
use starling_storage::RosterItem;
use std::collections::HashSet;
use std::sync::Arc;

/// The session flag of an "interested resource" (RFC 6121 §2.1.6): it asked
/// for the roster, so it gets pushes.
pub(super) const INTERESTED: &str = "roster";

/// The requesting account, if the IQ is for its own roster (§2.1.5: a roster
/// belongs to its account only).
fn owner(req: &IqRequest) -> Result<BareJid, StanzaError> {
    let from = req.stanza.from.as_ref().ok_or_else(StanzaError::bad_request)?.to_bare();
    match &req.stanza.to {
        Some(to) if to.to_bare() != from => Err(StanzaError::forbidden()),
        _ => Ok(from),
    }
}

pub(super) fn item_element(item: &RosterItem) -> Element {
    let mut el = element("item", ns::ROSTER, &[("jid", &item.contact), ("subscription", item.subscription.as_str())]);
    if let Some(name) = &item.name {
        set_attr(&mut el, "name", name.as_str());
    }
    if item.ask {
        set_attr(&mut el, "ask", "subscribe");
    }
    if item.approved {
        set_attr(&mut el, "approved", "true");
    }
    for group in &item.groups {
        el.append_child(text_element("group", ns::ROSTER, group.as_str()));
    }
    el
}

pub(super) async fn get(rosters: Arc<Rosters>, req: IqRequest) -> IqResult {
    let owner = owner(&req)?;
    if let Some(Ok(from)) = req.stanza.from.as_ref().map(Jid::try_as_full) {
        req.server.router.set_flag(from, INTERESTED, true);
    }
    let roster = rosters.get(&req.server, &owner).await.map_err(store_error)?;
    let version = roster.version.to_string();
    let mut query = Element::bare("query", ns::ROSTER);
    match req.payload().attr("ver") {
        // XEP-0237 §3: unchanged since the client's copy → empty result.
        Some(ver) if ver == version => return Ok(None),
        Some(_) => set_attr(&mut query, "ver", version),
        None => {}
    }
    let mut items: Vec<_> = roster.items.values().collect();
    items.sort_by(|a, b| a.contact.cmp(&b.contact));
    for item in items {
        query.append_child(item_element(item));
    }
    Ok(Some(query))
}

pub(super) async fn set(rosters: Arc<Rosters>, req: IqRequest) -> IqResult {
    let owner = owner(&req)?;
    let query = req.payload();
    let mut children = query.children();
    // §2.3.3: exactly one item.
    let (Some(item_el), None) = (children.next(), children.next()) else {
        return Err(StanzaError::bad_request().with_text("a roster set carries exactly one item"));
    };
    if !item_el.is("item", ns::ROSTER) {
        return Err(StanzaError::bad_request());
    }
    let contact = item_el
        .attr("jid")
        .and_then(|j| BareJid::new(j).ok())
        .ok_or_else(|| StanzaError::jid_malformed().with_text("the item needs a valid bare JID"))?;
    let server = &req.server;
    if item_el.attr("subscription") == Some("remove") {
        return remove(&rosters, server, &owner, &contact).await;
    }
    let limits = &rosters.config;
    let name = item_el.attr("name").filter(|n| !n.is_empty()).map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > limits.max_name_bytes) {
        return Err(StanzaError::not_acceptable().with_text("item name too long"));
    }
    let mut groups = Vec::new();
    let mut seen = HashSet::new();
    for g in item_el.children().filter(|c| c.is("group", ns::ROSTER)) {
        let g = g.text();
        if g.is_empty() {
            return Err(StanzaError::not_acceptable().with_text("empty group name"));
        }
        if g.len() > limits.max_name_bytes {
            return Err(StanzaError::not_acceptable().with_text("group name too long"));
        }
        if !seen.insert(g.clone()) {
            return Err(StanzaError::bad_request().with_text("duplicate group"));
        }
        groups.push(g);
    }
    if groups.len() > limits.max_groups {
        return Err(StanzaError::not_acceptable().with_text("too many groups"));
    }
    let existing = rosters.item(server, &owner, &contact).await.map_err(store_error)?;
    if existing.is_none() {
        let roster = rosters.get(server, &owner).await.map_err(store_error)?;
        if roster.items.len() >= limits.max_items {
            return Err(StanzaError::not_allowed().with_text("roster is full"));
        }
    }
    // §2.1.2.5: the client cannot set subscription state, only name and groups.
    let item = RosterItem { name, groups, ..existing.unwrap_or_else(|| RosterItem::new(contact.as_str())) };
    let version = rosters.put(server, &owner, &item).await.map_err(store_error)?;
    push(server, &owner, &item_element(&item), version);
    Ok(None)
}

/// §2.5: removing an item cancels the subscriptions both ways first.
async fn remove(rosters: &Rosters, server: &Arc<Server>, owner: &BareJid, contact: &BareJid) -> IqResult {
    let Some(item) = rosters.item(server, owner, contact).await.map_err(store_error)? else {
        return Err(StanzaError::item_not_found());
    };
    if item.subscription.has_to() || item.ask {
        subscription::send_from_account(server, owner, contact, "unsubscribe").await;
    }
    if item.subscription.has_from() {
        subscription::send_from_account(server, owner, contact, "unsubscribed").await;
    }
    // A request the user never answered goes with the item.
    let (host, user) = account(owner);
    server.store.remove_subscription_request(host, user, contact.as_str()).await.map_err(store_error)?;
    if let Some(version) = rosters.remove(server, owner, contact).await.map_err(store_error)? {
        let removed = element("item", ns::ROSTER, &[("jid", contact.as_str()), ("subscription", "remove")]);
        push(server, owner, &removed, version);
    }
    Ok(None)
}

/// A roster push (§2.1.6) of one item to every interested resource.
pub(super) fn push(server: &Server, owner: &BareJid, item: &Element, version: i64) {
    for session in server.router.with_flag(owner, INTERESTED) {
        let mut query = element("query", ns::ROSTER, &[("ver", &version.to_string())]);
        query.append_child(item.clone());
        let mut iq = element("iq", ns::CLIENT, &[("type", "set"), ("to", session.jid.as_str())]);
        set_attr(&mut iq, "id", format!("push-{version}"));
        iq.append_child(query);
        server.send_to_local(iq);
    }
}
