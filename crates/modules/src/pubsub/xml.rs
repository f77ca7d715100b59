//! The elements the service answers and notifies with, built from the
//! xmpp-parsers types; the few the crate cannot build (its fields are
//! private) come from `untyped` below.

use super::node::NodeConfig;
use starling_proto::time::format_utc;
use starling_proto::xml::element;
use starling_proto::xmpp_parsers::data_forms::DataFormType;
use starling_proto::xmpp_parsers::ns as xns;
use starling_proto::xmpp_parsers::pubsub::event::{self, Payload as Event};
use starling_proto::xmpp_parsers::pubsub::owner::{self, Owner, Payload as OwnerPayload};
use starling_proto::xmpp_parsers::pubsub::pubsub::{self as ps, PubSub};
use starling_proto::xmpp_parsers::pubsub::{ItemId, NodeName, Subscription};
use starling_proto::{ns, BareJid, Element, Jid, StanzaError};
use starling_storage::{PubsubItem, PubsubSubscription};

fn name(node: &str) -> NodeName {
    NodeName(node.to_owned())
}

/// A stored payload, parsed to be sent inside a new element.
pub fn payload(item: &PubsubItem) -> Result<Element, StanzaError> {
    item.payload.parse().map_err(|e| {
        tracing::error!(error = %e, "stored pubsub payload does not parse");
        StanzaError::internal_server_error()
    })
}

/// §7.1.2: the id of the published item.
pub fn publish_result(node: &str, id: &str) -> Element {
    let item = ps::Item { id: Some(ItemId(id.to_owned())), publisher: None, payload: None };
    PubSub::Publish { publish: ps::Publish { node: name(node), items: vec![item] }, publish_options: None }.into()
}

/// §8.1.2: the name of an instant node.
pub fn created(node: &str) -> Element {
    PubSub::Create { create: ps::Create { node: Some(name(node)) }, configure: None }.into()
}

/// §6.5.2: the items, newest first.
pub fn items_result(node: &str, items: &[PubsubItem]) -> Result<Element, StanzaError> {
    let items = items
        .iter()
        .map(|item| {
            Ok(ps::Item {
                id: Some(ItemId(item.id.clone())),
                publisher: Jid::new(&item.publisher).ok(),
                payload: Some(payload(item)?),
            })
        })
        .collect::<Result<Vec<_>, StanzaError>>()?;
    Ok(PubSub::Items(ps::Items { max_items: None, node: name(node), subid: None, items }).into())
}

/// §6.3.3: a subscription's options.
pub fn options(options: ps::Options) -> Element {
    PubSub::Subscribe { subscribe: None, options: Some(options) }.into()
}

/// §5.7: (node, affiliation) pairs.
pub fn affiliations(affiliations: &[(String, String)]) -> Element {
    let affiliations = affiliations
        .iter()
        .filter_map(|(node, a)| Some(ps::Affiliation { node: name(node), affiliation: a.parse().ok()? }))
        .collect();
    PubSub::Affiliations(ps::Affiliations { node: None, affiliations }).into()
}

/// §8.2.1: the configuration form of a node.
pub fn configure_form(node: &str, config: &NodeConfig) -> Element {
    let payload = OwnerPayload::Configure { node: Some(name(node)), form: Some(config.to_form(DataFormType::Form)) };
    Owner { payload }.into()
}

/// §8.3: the default configuration.
pub fn owner_default(config: &NodeConfig) -> Element {
    Owner { payload: OwnerPayload::Default { form: Some(config.to_form(DataFormType::Form)) } }.into()
}

/// §8.8.1: the subscriptions to a node.
pub fn owner_subscriptions(node: &str, subs: &[PubsubSubscription]) -> Element {
    let subscriptions = subs
        .iter()
        .filter_map(|s| {
            Some(owner::SubscriptionElem {
                jid: Jid::new(&s.jid).ok()?,
                subscription: s.state.parse().unwrap_or(Subscription::None),
                subid: Some(s.subid.clone()),
            })
        })
        .collect();
    Owner { payload: OwnerPayload::Subscriptions { node: name(node), subscriptions } }.into()
}

/// An item published, as its notification says it (§7.1.2.1).
pub fn published(node: &str, id: &str, publisher: Option<&BareJid>, payload: Option<Element>) -> Event {
    let item =
        event::Item { id: Some(ItemId(id.to_owned())), publisher: publisher.map(|p| Jid::from(p.clone())), payload };
    Event::Items { node: name(node), published: vec![item], retracted: Vec::new() }
}

/// §7.2.2.1.
pub fn retracted(node: &str, id: &str) -> Event {
    Event::Items { node: name(node), published: Vec::new(), retracted: vec![ItemId(id.to_owned())] }
}

/// §8.2.5.
pub fn configuration(node: &str) -> Event {
    Event::Configuration { node: name(node), form: None }
}

/// §8.4.2.
pub fn deleted(node: &str) -> Event {
    Event::Delete { node: name(node), redirect: None }
}

/// §8.5.2.
pub fn purged(node: &str) -> Event {
    Event::Purge { node: name(node) }
}

/// A notification message from `service` to `to` (§7.1.2.1); one sent
/// late (the last item, §6.1.7) carries an XEP-0203 stamp of when the item
/// was published (Unix milliseconds).
pub fn notification(service: &Jid, to: &Jid, event: Event, published_at: Option<i64>) -> Element {
    let mut message = element(
        "message",
        ns::CLIENT,
        &[("from", service.as_str()), ("to", to.as_str()), ("type", "headline"), ("id", &super::service::random_id())],
    );
    message.append_child(event::Event { payload: event }.into());
    if let Some(millis) = published_at.and_then(|m| u64::try_from(m).ok()) {
        let stamp = format_utc(millis / 1000, (millis % 1000) as u32);
        message.append_child(element("delay", ns::DELAY, &[("from", service.as_str()), ("stamp", &stamp)]));
    }
    message
}

/// §6.1.2: a subscription as the subscriber sees it; the crate's
/// `SubscriptionElem` has private fields, so it is built here.
pub fn subscription(sub: &PubsubSubscription) -> Element {
    let mut pubsub = Element::bare("pubsub", xns::PUBSUB);
    pubsub.append_child(untyped::subscription(sub));
    pubsub
}

/// §5.6: the requester's subscriptions.
pub fn subscriptions(subs: &[PubsubSubscription]) -> Element {
    let mut list = Element::bare("subscriptions", xns::PUBSUB);
    for sub in subs {
        list.append_child(untyped::subscription(sub));
    }
    let mut pubsub = Element::bare("pubsub", xns::PUBSUB);
    pubsub.append_child(list);
    pubsub
}

/// §8.9.1: the (jid, affiliation) pairs of a node.
pub fn owner_affiliations(node: &str, affiliations: &[(String, String)]) -> Element {
    let mut pubsub = Element::bare("pubsub", xns::PUBSUB_OWNER);
    pubsub.append_child(untyped::owner_affiliations(node, affiliations));
    pubsub
}

/// Elements whose xmpp-parsers types keep their fields private
/// (`pubsub::SubscriptionElem`, `owner::Affiliation`), so they cannot be
/// built outside the crate.
mod untyped {
    use super::*;

    pub fn owner_affiliations(node: &str, affiliations: &[(String, String)]) -> Element {
        let mut list = element("affiliations", xns::PUBSUB_OWNER, &[("node", node)]);
        for (jid, affiliation) in affiliations {
            list.append_child(element("affiliation", xns::PUBSUB_OWNER, &[("jid", jid), ("affiliation", affiliation)]));
        }
        list
    }

    pub fn subscription(sub: &PubsubSubscription) -> Element {
        element(
            "subscription",
            xns::PUBSUB,
            &[("node", &sub.node), ("jid", &sub.jid), ("subid", &sub.subid), ("subscription", &sub.state)],
        )
    }
}
