//! XEP-0402 §5.3 `#compat`: bookmarks kept through XEP-0049 private XML
//! (`storage:bookmarks`, XEP-0048) and PEP native bookmarks
//! (`urn:xmpp:bookmarks:1`) are one list. The PEP node holds the rooms: a
//! legacy client's read is built from it, and its write becomes
//! per-room publishes and retractions there (rooms it left unchanged are
//! not republished, so they cause no notification). Both go to the account's
//! PEP service as the owner's own IQs, so pubsub's access rules, limits and
//! notifications apply as if the client had sent them.

use crate::pubsub::own_pep_request;
use starling_core::Server;
use starling_proto::xmpp_parsers::bookmarks::{Conference as LegacyConference, Storage};
use starling_proto::xmpp_parsers::bookmarks2::Conference;
use starling_proto::xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use starling_proto::xmpp_parsers::pubsub::pubsub::{Item, Items, Publish, PublishOptions, Retract};
use starling_proto::xmpp_parsers::pubsub::{ItemId, NodeName, PubSub};
use starling_proto::{BareJid, Element, Jid, StanzaError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The XEP-0049 fragment's namespace.
pub const LEGACY: &str = "storage:bookmarks";
const NODE: &str = "urn:xmpp:bookmarks:1";
/// Announced on the account (§6).
pub const COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// The PEP node's rooms as XEP-0048 conferences, by room JID; `None` when
/// the account has no bookmarks node (or the server no PEP).
pub async fn read(server: &Arc<Server>, owner: &Jid) -> Result<Option<Vec<LegacyConference>>, StanzaError> {
    let Some(items) = items(server, owner).await? else { return Ok(None) };
    Ok(Some(items.into_iter().filter_map(|(jid, conference)| Some(legacy(jid.parse().ok()?, conference))).collect()))
}

/// Makes the PEP node hold exactly the rooms of `storage`.
pub async fn write(server: &Arc<Server>, owner: &Jid, storage: &Storage) -> Result<(), StanzaError> {
    let mut current = items(server, owner).await?.unwrap_or_default();
    for wanted in &storage.conferences {
        let id = wanted.jid.to_string();
        let mut conference = native(wanted);
        if let Some(existing) = current.remove(&id) {
            if legacy(wanted.jid.clone(), existing.clone()) == *wanted {
                continue;
            }
            // §3: extensions a native client added are kept.
            conference.extensions = existing.extensions;
        }
        let item = Item { id: Some(ItemId(id)), publisher: None, payload: Some(conference.into()) };
        let publish = PubSub::Publish {
            publish: Publish { node: NodeName(NODE.to_owned()), items: vec![item] },
            publish_options: Some(PublishOptions { form: Some(node_options()) }),
        };
        pep(server, owner, "set", publish).await?;
    }
    // What is left was removed from the list.
    if !current.is_empty() {
        let items = current.into_keys().map(|id| Item { id: Some(ItemId(id)), publisher: None, payload: None });
        let retract = Retract { node: NodeName(NODE.to_owned()), notify: true, items: items.collect() };
        pep(server, owner, "set", PubSub::Retract(retract)).await?;
    }
    Ok(())
}

/// §3: the node is private (XEP-0223) and keeps every room.
fn node_options() -> DataForm {
    let field = |var: &str, value: &str| Field::new(var, FieldType::TextSingle).with_value(value);
    DataForm::new(
        DataFormType::Submit,
        PUBLISH_OPTIONS,
        vec![
            field("pubsub#persist_items", "true"),
            field("pubsub#max_items", "max"),
            field("pubsub#send_last_published_item", "never"),
            field("pubsub#access_model", "whitelist"),
        ],
    )
}

/// The node's items by id (the room JID), or `None` without a node.
async fn items(server: &Arc<Server>, owner: &Jid) -> Result<Option<BTreeMap<String, Conference>>, StanzaError> {
    let answer = match pep(server, owner, "get", PubSub::Items(Items::new(NODE))).await {
        Ok(answer) => answer,
        Err(e) if matches!(e.condition, "item-not-found" | "service-unavailable") => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(PubSub::Items(items)) = answer else { return Ok(Some(BTreeMap::new())) };
    let conferences = items.items.into_iter().filter_map(|item| {
        let conference = Conference::try_from(item.payload?).ok()?;
        Some((item.id?.0, conference))
    });
    Ok(Some(conferences.collect()))
}

/// A pubsub request to the owner's PEP service, as the owner sends it.
async fn pep(server: &Arc<Server>, owner: &Jid, type_: &str, payload: PubSub) -> Result<Option<PubSub>, StanzaError> {
    let answer = own_pep_request(server, owner, type_, payload.into()).await?;
    Ok(answer.and_then(|el: Element| PubSub::try_from(el).ok()))
}

fn native(legacy: &LegacyConference) -> Conference {
    Conference {
        autojoin: legacy.autojoin,
        name: legacy.name.clone(),
        nick: legacy.nick.clone(),
        password: legacy.password.clone(),
        extensions: None,
    }
}

fn legacy(jid: BareJid, conference: Conference) -> LegacyConference {
    LegacyConference {
        autojoin: conference.autojoin,
        jid,
        name: conference.name,
        nick: conference.nick,
        password: conference.password,
    }
}
