//! XEP-0313 Message Archive Management for accounts. Messages are archived
//! for the sender and for a local recipient before they are delivered (so
//! every device can fetch the whole conversation later), once per account
//! however many resources it has; each copy is stamped with an XEP-0359
//! `<stanza-id/>` by the archive's owner, through a filter step so carbons
//! and offline storage carry it too. Queries are in `query.rs`, XEP-0441
//! preferences in `prefs.rs`.

mod prefs;
pub(crate) mod query;

use crate::store::{account, store_error};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use starling_core::module::{HookPoint, IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError, Server};
use starling_proto::minidom::Node;
use starling_proto::xml::element;
use starling_proto::{ns, BareJid, Element, IqType, Jid, Stanza, StanzaError, StanzaKind};
use starling_storage::NewArchived;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// After blocking (which may stop a message: nothing archived), before
/// carbons (whose copies then carry the stanza id).
const FILTER_PRIORITY: i32 = 0;

pub struct Mam;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamConfig {
    /// What is archived for an account that set no preferences (XEP-0441):
    /// `always`, `roster` (only contacts in the roster) or `never`.
    pub default: prefs::DefaultMode,
    /// Most results in one page, whatever a query asks (XEP-0059 `max`).
    pub max_page: usize,
    /// Results in a page when a query does not say.
    pub default_page: usize,
    /// Days messages are kept; 0 keeps them until the account goes.
    pub retention_days: u64,
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig { default: prefs::DefaultMode::Always, max_page: 250, default_page: 50, retention_days: 0 }
    }
}

impl Module for Mam {
    const NAME: &'static str = "mam";
    type Config = MamConfig;

    fn load(config: MamConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        if config.max_page == 0 || config.default_page == 0 || config.default_page > config.max_page {
            return Err(ModuleError::Failed {
                module: Self::NAME,
                message: "need 1 <= default_page <= max_page".into(),
            });
        }
        // §7: the account's bare JID advertises the archive.
        ctx.add_account_feature(ns::MAM);
        ctx.add_account_feature(ns::MAM_EXTENDED);
        let config = Arc::new(config);
        let cache = Arc::new(prefs::Cache::default());
        let archive = Arc::new(Archiver { config: config.clone(), prefs: cache.clone() });
        let outgoing = archive.clone();
        ctx.filter(HookPoint::Outbound(StanzaKind::Message), FILTER_PRIORITY, move |server, stanza| {
            let archive = outgoing.clone();
            async move { archive.outgoing(&server, &stanza).await }
        });
        let incoming = archive.clone();
        ctx.filter(HookPoint::Inbound(StanzaKind::Message), FILTER_PRIORITY, move |server, stanza| {
            let archive = incoming.clone();
            async move { archive.incoming(&server, &stanza).await }
        });
        let (get, set, set_cache) = (config.clone(), config.clone(), cache.clone());
        ctx.handle_iq(IqTarget::Account, IqType::Get, ns::MAM, move |req| get_request(req, get.clone()));
        ctx.handle_iq(IqTarget::Account, IqType::Set, ns::MAM, move |req| {
            set_request(req, set.clone(), set_cache.clone())
        });
        // Preferences are cached while the account is online.
        ctx.hook(HookPoint::AccountOffline, 0, move |_, stanza| {
            if let Some(from) = &stanza.from {
                cache.forget(&from.to_bare());
            }
            async { starling_core::module::HookResult::Continue }
        });
        if config.retention_days > 0 {
            ctx.hook(HookPoint::SessionAvailable, -100, move |server, _| {
                expire_once_a_day(server, Duration::from_secs(config.retention_days * 86_400));
                async { starling_core::module::HookResult::Continue }
            });
        }
        Ok(Mam)
    }
}

async fn get_request(req: IqRequest, config: Arc<MamConfig>) -> IqResult {
    let owner = own_archive(&req)?;
    match req.payload().name() {
        // §4.1.1: the query form's fields.
        "query" => Ok(Some(query::form_fields())),
        "metadata" => query::metadata(&req, &owner).await.map(Some),
        "prefs" => prefs::get(&req, &owner, &config).await.map(Some),
        _ => Err(StanzaError::bad_request()),
    }
}

async fn set_request(req: IqRequest, config: Arc<MamConfig>, cache: Arc<prefs::Cache>) -> IqResult {
    let owner = own_archive(&req)?;
    match req.payload().name() {
        "query" => query::run(&req, &owner, &config).await,
        "prefs" => {
            let answer = prefs::set(&req, &owner).await.map(Some);
            cache.forget(&owner);
            answer
        }
        _ => Err(StanzaError::bad_request()),
    }
}

/// §4: an account queries its own archive only.
fn own_archive(req: &IqRequest) -> Result<BareJid, StanzaError> {
    let from = req.stanza.from.as_ref().ok_or_else(StanzaError::bad_request)?.to_bare();
    match &req.stanza.to {
        Some(to) if to.to_bare() != from => Err(StanzaError::forbidden()),
        _ => Ok(from),
    }
}

struct Archiver {
    config: Arc<MamConfig>,
    prefs: Arc<prefs::Cache>,
}

impl Archiver {
    /// The sender's copy: archived if the sender is a local account.
    async fn outgoing(&self, server: &Arc<Server>, stanza: &Stanza) -> Option<Stanza> {
        let from = stanza.from.as_ref()?;
        let to = stanza.to.as_ref()?;
        if let Some(retract) = stanza.el.get_child("retract", ns::RETRACT) {
            self.retract(server, &from.to_bare(), to, retract).await;
        }
        if !archivable(stanza) || !server.domains.is_host(from.domain().as_str()) {
            return None;
        }
        // A client does not choose the ids its own archive gives.
        let mut stanza = without_stanza_ids(stanza, |by| server.domains.is_host(by.domain().as_str()));
        let owner = from.to_bare();
        self.archive(server, &owner, to, true, &mut stanza).await;
        Some(stanza)
    }

    /// The recipient's copy: archived if the recipient is a local account.
    async fn incoming(&self, server: &Arc<Server>, stanza: &Stanza) -> Option<Stanza> {
        let owner = stanza.to.as_ref()?.to_bare();
        let from = stanza.from.as_ref()?;
        if !archivable(stanza) || owner.node().is_none() {
            return None;
        }
        // §8.1 (XEP-0359 §4): ids claiming to be by the recipient's archive
        // come from someone else: they go.
        let mut stanza = without_stanza_ids(stanza, |by| by.to_bare() == owner);
        let (host, user) = account(&owner);
        if !server.router.is_online(&owner) && !server.store.exists(host, user).await.unwrap_or(false) {
            return Some(stanza);
        }
        self.archive(server, &owner, from, false, &mut stanza).await;
        Some(stanza)
    }

    /// Archives `stanza` for `owner` (exchanged with `peer`) if the owner's
    /// preferences allow, and stamps it with the archive's id.
    async fn archive(&self, server: &Arc<Server>, owner: &BareJid, peer: &Jid, outgoing: bool, stanza: &mut Stanza) {
        let peer_bare = peer.to_bare();
        match self.prefs.get(server, owner, &self.config).await {
            Ok(prefs) if prefs.archives(server, owner, &peer_bare).await => {}
            Ok(_) => return,
            Err(e) => return tracing::warn!(error = %e, %owner, "archive preferences unavailable; not archiving"),
        }
        let stanza_id = new_stanza_id();
        let xml = String::from(&stanza.el);
        let body = stanza.el.get_child("body", ns::CLIENT).map(Element::text);
        let origin_id = stanza.el.get_child("origin-id", ns::SID).and_then(|o| o.attr("id"));
        let message = NewArchived {
            archive: owner.as_str(),
            stanza_id: &stanza_id,
            peer: peer_bare.as_str(),
            peer_resource: peer.resource().map_or("", |r| r.as_str()),
            origin_id,
            outgoing,
            stamp: unix_micros(),
            body: body.as_deref(),
            stanza: &xml,
        };
        if let Err(e) = server.store.archive_append(&message).await {
            // The message still goes out; only its archive copy is missing.
            return tracing::error!(error = %e, %owner, "archiving failed");
        }
        stanza.el.append_child(element("stanza-id", ns::SID, &[("id", &stanza_id), ("by", owner.as_str())]));
    }

    /// XEP-0424 §5: the sender retracts a message; both archives (the
    /// sender's, and a local recipient's) keep a tombstone instead.
    async fn retract(&self, server: &Arc<Server>, sender: &BareJid, to: &Jid, retract: &Element) {
        let Some(id) = retract.attr("id") else { return };
        let recipient = to.to_bare();
        let now = starling_proto::time::format_utc(unix_micros() as u64 / 1_000_000, 0);
        // Only what the sender sent: in its archive, and in the recipient's.
        for (archive, peer, outgoing) in [(sender, &recipient, true), (&recipient, sender, false)] {
            if !server.domains.is_host(archive.domain().as_str()) {
                continue;
            }
            let mut tombstone =
                element("message", ns::CLIENT, &[("from", sender.as_str()), ("to", recipient.as_str())]);
            tombstone.append_child(element("retracted", ns::RETRACT, &[("id", id), ("stamp", &now)]));
            let tombstone = String::from(&tombstone);
            let replaced =
                server.store.archive_replace(archive.as_str(), peer.as_str(), outgoing, id, &tombstone).await;
            if let Err(e) = replaced {
                tracing::error!(error = %e, "retraction not applied to the archive");
            }
        }
    }
}

/// §5.1.1 and XEP-0334: messages with content are archived (a body, an
/// encrypted payload, a store hint); chat states alone, errors, headlines
/// and group chat (archived by the room) are not.
fn archivable(stanza: &Stanza) -> bool {
    let el = &stanza.el;
    if matches!(stanza.type_.as_deref(), Some("error" | "groupchat" | "headline")) {
        return false;
    }
    if el.has_child("no-store", ns::HINTS) || el.has_child("no-permanent-store", ns::HINTS) {
        return false;
    }
    // Server-made wrappers are not conversation.
    if el.has_child("result", ns::MAM) || el.has_child("sent", ns::CARBONS) || el.has_child("received", ns::CARBONS) {
        return false;
    }
    el.has_child("body", ns::CLIENT)
        || el.has_child("store", ns::HINTS)
        || el.has_child("encrypted", ns::OMEMO_LEGACY)
        || el.has_child("encrypted", ns::OMEMO)
        || el.has_child("retract", ns::RETRACT)
}

/// A copy of `stanza` without the `<stanza-id/>` children whose `by`
/// matches (or that have none we can read).
fn without_stanza_ids(stanza: &Stanza, claimed: impl Fn(&Jid) -> bool) -> Stanza {
    let mut copy = stanza.clone();
    for node in copy.el.take_nodes() {
        if let Node::Element(child) = &node {
            let by = child.attr("by").and_then(|b| Jid::new(b).ok());
            if child.is("stanza-id", ns::SID) && by.is_none_or(|by| claimed(&by)) {
                tracing::debug!(from = ?stanza.from, "dropped a stanza-id claiming our archive");
                continue;
            }
        }
        copy.el.append_node(node);
    }
    copy
}

/// An id unique within an archive: 96 random bits.
fn new_stanza_id() -> String {
    let mut raw = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn unix_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Deletes messages past the retention; runs at most once a day, started
/// by logins so an idle server does no work.
fn expire_once_a_day(server: Arc<Server>, retention: Duration) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_RUN: AtomicI64 = AtomicI64::new(0);
    let now = unix_micros();
    let day = 86_400_000_000;
    let last = LAST_RUN.load(Ordering::Relaxed);
    if now - last < day || LAST_RUN.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    let cutoff = now - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        match server.store.archive_expire(cutoff).await {
            Ok(removed) => tracing::info!(removed, "archived messages past retention removed"),
            Err(e) => tracing::warn!(error = %store_error(e), "archive expiry failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(xml: &str) -> Stanza {
        Stanza::from_element(xml.parse().unwrap(), ns::CLIENT).unwrap()
    }

    #[test]
    fn what_is_archived() {
        let archived = |xml: &str| archivable(&message(xml));
        assert!(archived("<message xmlns='jabber:client' type='chat'><body>hi</body></message>"));
        assert!(archived("<message xmlns='jabber:client'><store xmlns='urn:xmpp:hints'/></message>"));
        assert!(archived("<message xmlns='jabber:client' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/></message>"));
        // XEP-0085 chat states alone, errors, group chat, no-store hints: not.
        assert!(!archived(
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
        assert!(!archived("<message xmlns='jabber:client' type='error'><body>x</body></message>"));
        assert!(!archived("<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"));
        assert!(!archived("<message xmlns='jabber:client'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"));
    }

    #[test]
    fn stanza_ids_claiming_an_archive_are_dropped() {
        let stanza = message(
            "<message xmlns='jabber:client'><body>x</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='bob@example.com'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='theirs' by='room@muc.example.org'/></message>",
        );
        let bob = BareJid::new("bob@example.com").unwrap();
        let kept = without_stanza_ids(&stanza, |by| by.to_bare() == bob);
        let ids: Vec<_> = kept.el.children().filter_map(|c| c.attr("id")).collect();
        assert_eq!(ids, ["theirs"]);
    }
}
