//! Who hears about a node's events (XEP-0060 §7.1.2.1, §4.3 of XEP-0163)
//! and the sending itself: subscribers of the node and, on PEP, every
//! available resource of the owner and of the owner's presence subscribers
//! whose entity capabilities ask for the node's `+notify`.

use super::interests::Interests;
use super::node::{AccessModel, NodeConfig};
use super::service::Service;
use super::xml;
use starling_core::Server;
use starling_proto::xmpp_parsers::pubsub::event::Payload as Event;
use starling_proto::{ns, BareJid, FullJid, Jid, Stanza};
use std::collections::HashSet;
use std::sync::Arc;

async fn send(server: &Arc<Server>, service: &Service, to: &Jid, event: Event, published_at: Option<i64>) {
    match Stanza::from_element(xml::notification(&service.jid(), to, event, published_at), ns::CLIENT) {
        Ok(stanza) => server.deliver(stanza).await,
        Err(e) => tracing::error!(error = ?e, "pubsub notification is not a stanza"),
    }
}

/// Sends `event` about `node` to everyone who should have it.
pub async fn broadcast(
    server: &Arc<Server>,
    interests: &Interests,
    service: &Service,
    node: &str,
    config: &NodeConfig,
    mut event: Event,
) {
    if !config.deliver_notifications {
        return;
    }
    if !config.deliver_payloads {
        if let Event::Items { published, .. } = &mut event {
            published.iter_mut().for_each(|item| item.payload = None);
        }
    }
    let mut reached: HashSet<BareJid> = HashSet::new();
    let mut sessions: Vec<FullJid> = Vec::new();
    if let Service::Pep(owner) = service {
        match interested(server, interests, owner, node, config).await {
            Ok(found) => sessions = found,
            Err(e) => tracing::error!(error = %e, "PEP contacts not read"),
        }
    }
    for full in sessions {
        reached.insert(full.to_bare());
        send(server, service, &Jid::from(full), event.clone(), None).await;
    }
    let subscribers = match server.store.pubsub_subscriptions(service.key(), node).await {
        Ok(subs) => subs,
        Err(e) => return tracing::error!(error = %e, "pubsub subscribers not read"),
    };
    for sub in subscribers.iter().filter(|s| s.state == "subscribed" && s.deliver) {
        let Ok(jid) = Jid::new(&sub.jid) else { continue };
        // A bare subscription of an account already notified per resource adds nothing.
        if jid.resource().is_none() && reached.contains(&jid.to_bare()) {
            continue;
        }
        send(server, service, &jid, event.clone(), None).await;
    }
}

/// XEP-0163 §4.3.1: the available resources, the owner's and its local
/// presence subscribers', that want the node's notifications.
async fn interested(
    server: &Server,
    interests: &Interests,
    owner: &BareJid,
    node: &str,
    config: &NodeConfig,
) -> Result<Vec<FullJid>, starling_storage::StoreError> {
    let wanting = |bare: &BareJid| {
        server.router.available(bare).into_iter().map(|h| h.jid).filter(|full| interests.wants(full, node))
    };
    let mut found: Vec<FullJid> = wanting(owner).collect();
    let (host, user) = crate::store::account(owner);
    let (_, roster) = server.store.roster(host, user).await?;
    for item in roster.iter().filter(|i| i.subscription.has_from()) {
        let allowed = match config.access_model {
            AccessModel::Open | AccessModel::Presence => true,
            AccessModel::Roster => item.groups.iter().any(|g| config.roster_groups_allowed.contains(g)),
            // Only affiliated or approved JIDs read these: they subscribe explicitly.
            AccessModel::Whitelist | AccessModel::Authorize => false,
        };
        let Ok(contact) = BareJid::new(&item.contact) else { continue };
        if allowed && server.domains.is_host(contact.domain().as_str()) {
            found.extend(wanting(&contact));
        }
    }
    Ok(found)
}

/// §6.1.7 and XEP-0163 §4.3.4: the last published item, to one address.
pub async fn send_last(server: &Arc<Server>, service: &Service, node: &str, config: &NodeConfig, to: &Jid) {
    if !config.deliver_notifications {
        return;
    }
    let last = match server.store.pubsub_items(service.key(), node, 1).await {
        Ok(items) => items.into_iter().next(),
        Err(e) => return tracing::error!(error = %e, "last pubsub item not read"),
    };
    let Some(item) = last else { return };
    let payload = match config.deliver_payloads {
        true => match xml::payload(&item) {
            Ok(payload) => Some(payload),
            Err(_) => return,
        },
        false => None,
    };
    let publisher = BareJid::new(&item.publisher).ok();
    let event = xml::published(node, &item.id, publisher.as_ref(), payload);
    send(server, service, to, event, Some(item.published_at)).await;
}
