//! RFC 6121 §4: presence broadcast to subscribers, presence of contacts at
//! login, probes, and subscription requests kept for offline users.

use super::cache::{account, Rosters};
use starling_core::domains::DomainKind;
use starling_core::module::HookResult;
use starling_core::Server;
use starling_proto::xml::set_attr;
use starling_proto::{ns, BareJid, Element, Jid, Stanza};

/// Whether presence for `contact` can reach anyone: an account here with an
/// available resource (RFC 6121 §4.2.2: only those would get anything, and
/// others are skipped without routing), a module's service, a connected
/// component (one that is away would only bounce it), or another server's
/// account while federation is on (only its server knows who is online).
fn reachable(server: &Server, contact: &BareJid) -> bool {
    let domain = contact.domain().as_str();
    match server.domains.kind(domain) {
        DomainKind::Host => server.router.has_available(contact),
        DomainKind::Service => true,
        DomainKind::Component => server.domains.component(domain).is_some(),
        DomainKind::Remote => server.domains.remote().is_some(),
    }
}
use std::sync::Arc;

fn with_to(el: &Element, to: &str) -> Option<Stanza> {
    let mut el = el.clone();
    set_attr(&mut el, "to", to);
    Stanza::from_element(el, ns::CLIENT).ok()
}

/// §4.2.2, §4.4.2, §4.5.2: available and unavailable presence without `to`
/// goes to every contact with a subscription from the user. The account's
/// own resources get it from the core afterwards.
pub(super) async fn broadcast(rosters: &Rosters, server: &Arc<Server>, stanza: &Stanza) -> HookResult {
    if !matches!(stanza.type_.as_deref(), None | Some("unavailable")) {
        return HookResult::Continue;
    }
    let Some(from) = &stanza.from else { return HookResult::Continue };
    let roster = match rosters.get(server, &from.to_bare()).await {
        Ok(roster) => roster,
        Err(e) => {
            tracing::error!(error = %e, "roster load for presence broadcast failed");
            return HookResult::Continue;
        }
    };
    for item in roster.items.values().filter(|i| i.subscription.has_from()) {
        if !BareJid::new(&item.contact).is_ok_and(|c| reachable(server, &c)) {
            continue;
        }
        if let Some(copy) = with_to(&stanza.el, &item.contact) {
            server.route(copy).await;
        }
    }
    HookResult::Continue
}

/// A session sent initial presence: it gets the presence of the contacts
/// it subscribes to (§4.2.2: probes) and the subscription requests that
/// wait for an answer (§3.1.3).
///
/// Probes to local contacts are sent from the session's full JID so that
/// only this session receives the answers; its other resources already
/// have them. Local contacts without an available resource are not probed:
/// their answer could only be "unavailable", which is what a client assumes
/// of a contact it has no presence from (and it spares loading the
/// offline contact's roster to authorize the probe).
pub(super) async fn initial(rosters: &Rosters, server: &Arc<Server>, stanza: &Stanza) -> HookResult {
    let Some(Ok(session)) = stanza.from.as_ref().map(Jid::try_as_full) else { return HookResult::Continue };
    let user = session.to_bare();
    if let Ok(roster) = rosters.get(server, &user).await {
        for item in roster.items.values().filter(|i| i.subscription.has_to()) {
            let Ok(contact) = BareJid::new(&item.contact) else { continue };
            if !reachable(server, &contact) {
                continue;
            }
            let mut probe = Element::bare("presence", ns::CLIENT);
            set_attr(&mut probe, "type", "probe");
            set_attr(&mut probe, "from", session.as_str());
            if let Some(probe) = with_to(&probe, contact.as_str()) {
                server.route(probe).await;
            }
        }
    }
    let (host, username) = account(&user);
    match server.store.subscription_requests(host, username).await {
        Ok(requests) => {
            for (_, xml) in requests {
                if let Ok(mut el) = xml.parse::<Element>() {
                    set_attr(&mut el, "to", session.as_str());
                    server.send_to_local(el);
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "loading subscription requests failed"),
    }
    HookResult::Continue
}

/// §4.3.2: a probe for a local account is answered with the presence of
/// each of its available resources, or unavailable presence, if the prober
/// is subscribed; otherwise it is dropped.
pub(super) async fn probe(rosters: &Rosters, server: &Arc<Server>, stanza: &Stanza) -> HookResult {
    let (Some(prober), Some(to)) = (&stanza.from, &stanza.to) else { return HookResult::Handled };
    let owner = to.to_bare();
    let allowed = prober.to_bare() == owner
        || matches!(rosters.item(server, &owner, &prober.to_bare()).await, Ok(Some(i)) if i.subscription.has_from());
    if !allowed {
        return HookResult::Handled;
    }
    let presences = server.router.presences(&owner);
    if presences.is_empty() {
        let mut el = Element::bare("presence", ns::CLIENT);
        set_attr(&mut el, "type", "unavailable");
        set_attr(&mut el, "from", owner.as_str());
        if let Some(answer) = with_to(&el, prober.as_str()) {
            server.deliver(answer).await;
        }
    }
    for (full, el) in presences {
        let mut el = el;
        set_attr(&mut el, "from", full.as_str());
        if let Some(answer) = with_to(&el, prober.as_str()) {
            server.route(answer).await;
        }
    }
    HookResult::Handled
}
