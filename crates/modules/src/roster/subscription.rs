//! RFC 6121 §3: the presence subscription state machine, both for requests a
//! local user sends (Appendix A.2, "outbound") and for those addressed to a
//! local user (Appendix A.3, "inbound").

use super::cache::{account, store_error, Rosters};
use super::items::{item_element, push};
use starling_core::domains::DomainKind;
use starling_core::module::HookResult;
use starling_core::Server;
use starling_proto::xml::set_attr;
use starling_proto::{ns, BareJid, Element, Stanza, StanzaError};
use starling_storage::{RosterItem, StoreError, Subscription};
use std::sync::Arc;

pub(super) fn is_subscription(stanza: &Stanza) -> bool {
    matches!(stanza.type_.as_deref(), Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed"))
}

/// A subscription stanza from `from` to `to`, both bare (§3.1.2: the
/// server stamps the bare JID), keeping what the client put inside
/// (a status, a nickname).
fn subscription_stanza(base: Option<&Element>, type_: &str, from: &BareJid, to: &BareJid) -> Stanza {
    let mut el = base.cloned().unwrap_or_else(|| Element::bare("presence", ns::CLIENT));
    set_attr(&mut el, "type", type_);
    set_attr(&mut el, "from", from.as_str());
    set_attr(&mut el, "to", to.as_str());
    Stanza::from_element(el, ns::CLIENT).expect("a presence with valid JIDs")
}

/// Sends a subscription stanza of the account's to `contact`, as if routed
/// from the account (used by roster removal, §2.5.2).
pub(super) async fn send_from_account(server: &Arc<Server>, owner: &BareJid, contact: &BareJid, type_: &str) {
    server.deliver(subscription_stanza(None, type_, owner, contact)).await;
}

/// Sends the current presence of every available resource of `owner` to
/// `contact` (after approving a subscription, §3.1.5), or unavailable
/// presence from each (after cancelling one, §3.2.3).
async fn send_presence_of(server: &Arc<Server>, owner: &BareJid, contact: &BareJid, unavailable: bool) {
    for (full, el) in server.router.presences(owner) {
        let mut el = if unavailable { Element::bare("presence", ns::CLIENT) } else { el };
        if unavailable {
            set_attr(&mut el, "type", "unavailable");
        }
        set_attr(&mut el, "from", full.as_str());
        set_attr(&mut el, "to", contact.as_str());
        if let Ok(stanza) = Stanza::from_element(el, ns::CLIENT) {
            server.route(stanza).await;
        }
    }
}

/// Stores a changed item and pushes it.
async fn save(rosters: &Rosters, server: &Server, owner: &BareJid, item: &RosterItem) -> Result<(), StoreError> {
    let version = rosters.put(server, owner, item).await?;
    push(server, owner, &item_element(item), version);
    Ok(())
}

/// A subscription stanza a local user sent to `to`.
pub(super) async fn outbound(rosters: &Rosters, server: &Arc<Server>, stanza: Arc<Stanza>) -> HookResult {
    if !is_subscription(&stanza) {
        return HookResult::Continue;
    }
    let (Some(from), Some(to)) = (&stanza.from, &stanza.to) else {
        return HookResult::Continue;
    };
    let (user, contact) = (from.to_bare(), to.to_bare());
    let type_ = stanza.type_.clone().unwrap_or_default();
    if user == contact {
        server.bounce(&stanza, StanzaError::bad_request().with_text("an account is always subscribed to itself"));
        return HookResult::Handled;
    }
    if server.domains.kind(contact.domain().as_str()) == DomainKind::Remote && server.domains.remote().is_none() {
        // Federation is off (RFC 6120 §10.4.2): nothing to change in the roster.
        server.bounce(&stanza, StanzaError::remote_server_not_found());
        return HookResult::Handled;
    }
    if let Err(err) = outbound_transition(rosters, server, &stanza, &type_, &user, &contact).await {
        server.bounce(&stanza, err);
    }
    HookResult::Handled
}

async fn outbound_transition(
    rosters: &Rosters,
    server: &Arc<Server>,
    stanza: &Stanza,
    type_: &str,
    user: &BareJid,
    contact: &BareJid,
) -> Result<(), StanzaError> {
    let existing = rosters.item(server, user, contact).await.map_err(store_error)?;
    let is_new = existing.is_none();
    let mut item = existing.unwrap_or_else(|| RosterItem::new(contact.as_str()));
    let forward = || subscription_stanza(Some(&stanza.el), type_, user, contact);
    let (host, username) = account(user);
    match type_ {
        "subscribe" => {
            if !item.subscription.has_to() && !item.ask {
                if is_new
                    && rosters.get(server, user).await.map_err(store_error)?.items.len() >= rosters.config.max_items
                {
                    return Err(StanzaError::not_allowed().with_text("roster is full"));
                }
                item.ask = true;
                save(rosters, server, user, &item).await.map_err(store_error)?;
            }
            server.deliver(forward()).await;
        }
        "unsubscribe" => {
            if item.subscription.has_to() || item.ask {
                item.subscription = Subscription::with(false, item.subscription.has_from());
                item.ask = false;
                save(rosters, server, user, &item).await.map_err(store_error)?;
            }
            server.deliver(forward()).await;
        }
        "subscribed" => {
            let requested = server
                .store
                .remove_subscription_request(host, username, contact.as_str())
                .await
                .map_err(store_error)?;
            if item.subscription.has_from() {
                return Ok(());
            }
            if requested {
                item.subscription = Subscription::with(item.subscription.has_to(), true);
                item.approved = false;
                save(rosters, server, user, &item).await.map_err(store_error)?;
                server.deliver(forward()).await;
                send_presence_of(server, user, contact, false).await;
            } else if !item.approved {
                // §3.4: approving before being asked is a pre-approval.
                item.approved = true;
                save(rosters, server, user, &item).await.map_err(store_error)?;
            }
        }
        "unsubscribed" => {
            let requested = server
                .store
                .remove_subscription_request(host, username, contact.as_str())
                .await
                .map_err(store_error)?;
            if item.subscription.has_from() || item.approved {
                let had_from = item.subscription.has_from();
                item.subscription = Subscription::with(item.subscription.has_to(), false);
                item.approved = false;
                save(rosters, server, user, &item).await.map_err(store_error)?;
                if had_from {
                    server.deliver(forward()).await;
                    send_presence_of(server, user, contact, true).await;
                    return Ok(());
                }
            }
            if requested {
                server.deliver(forward()).await;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A subscription stanza for a local user (`to`) from `from`.
pub(super) async fn inbound(rosters: &Rosters, server: &Arc<Server>, stanza: Arc<Stanza>) -> HookResult {
    let (Some(from), Some(to)) = (&stanza.from, &stanza.to) else {
        return HookResult::Handled;
    };
    let (user, contact) = (to.to_bare(), from.to_bare());
    let type_ = stanza.type_.clone().unwrap_or_default();
    if let Err(e) = inbound_transition(rosters, server, &stanza, &type_, &user, &contact).await {
        tracing::error!(error = %e, "inbound subscription failed");
    }
    HookResult::Handled
}

async fn inbound_transition(
    rosters: &Rosters,
    server: &Arc<Server>,
    stanza: &Stanza,
    type_: &str,
    user: &BareJid,
    contact: &BareJid,
) -> Result<(), StoreError> {
    let (host, username) = account(user);
    if !server.store.exists(host, username).await? {
        // §3.1.3: no such account; the requester learns it is not subscribed.
        if type_ == "subscribe" {
            server.deliver(subscription_stanza(None, "unsubscribed", user, contact)).await;
        }
        return Ok(());
    }
    let mut el = stanza.el.clone();
    set_attr(&mut el, "from", contact.as_str());
    let deliver = |el: Element| {
        for session in server.router.available(user) {
            let mut el = el.clone();
            set_attr(&mut el, "to", session.jid.as_str());
            server.send_to_local(el);
        }
    };
    let existing = rosters.item(server, user, contact).await?;
    match type_ {
        "subscribe" => match existing {
            Some(item) if item.subscription.has_from() => {
                // §3.1.3: already approved; answer for the user.
                server.deliver(subscription_stanza(None, "subscribed", user, contact)).await;
            }
            Some(mut item) if item.approved => {
                item.subscription = Subscription::with(item.subscription.has_to(), true);
                item.approved = false;
                save(rosters, server, user, &item).await?;
                server.deliver(subscription_stanza(None, "subscribed", user, contact)).await;
                send_presence_of(server, user, contact, false).await;
            }
            _ => {
                // Kept until the user answers; delivered again at each login.
                let xml = String::from(&el);
                server.store.add_subscription_request(host, username, contact.as_str(), &xml).await?;
                deliver(el);
            }
        },
        "unsubscribe" => {
            let requested = server.store.remove_subscription_request(host, username, contact.as_str()).await?;
            match existing {
                Some(mut item) if item.subscription.has_from() => {
                    item.subscription = Subscription::with(item.subscription.has_to(), false);
                    save(rosters, server, user, &item).await?;
                    deliver(el);
                    send_presence_of(server, user, contact, true).await;
                }
                _ if requested => deliver(el),
                _ => {}
            }
        }
        "subscribed" => {
            if let Some(mut item) = existing.filter(|i| i.ask) {
                item.subscription = Subscription::with(true, item.subscription.has_from());
                item.ask = false;
                save(rosters, server, user, &item).await?;
                deliver(el);
            }
        }
        "unsubscribed" => {
            if let Some(mut item) = existing.filter(|i| i.ask || i.subscription.has_to()) {
                item.subscription = Subscription::with(false, item.subscription.has_from());
                item.ask = false;
                save(rosters, server, user, &item).await?;
                deliver(el);
            }
        }
        _ => {}
    }
    Ok(())
}
