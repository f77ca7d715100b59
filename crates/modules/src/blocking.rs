//! XEP-0191: Blocking Command. A user keeps a list of blocked JIDs (stored
//! per account in the "blocklist" data store, key = the blocked JID); the
//! server answers blocklist gets, block and unblock sets, pushes changes to
//! the resources that asked for the list, and enforces the list with
//! stanza hooks in both directions (§3.3).
//!
//! Every stanza to or from a user consults the list, so lists of accounts
//! with a bound session are cached (loaded on first use, dropped when the
//! last session closes); all writes go through this module, which updates
//! the database first and then the cached copy.

use crate::store::{account, store_error};
use dashmap::DashMap;
use serde::Deserialize;
use starling_core::module::{HookPoint, HookResult, IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError, Server};
use starling_proto::xml::{element, set_attr};
use starling_proto::{ns, same_account, BareJid, Element, ErrorType, IqType, Jid, Stanza, StanzaError, StanzaKind};
use starling_storage::StoreError;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Account data store holding the blocked JIDs (value is empty).
const STORE: &str = "blocklist";
/// Session flag of a resource that requested the blocklist (§3.2), so
/// receives block and unblock pushes (§3.3, §3.4, §3.5).
const INTERESTED: &str = "blocklist";
/// Hooks run before the roster's presence handling and carbons, so nothing
/// reacts to a stanza that blocking stops.
const HOOK_PRIORITY: i32 = 100;

pub struct Blocking;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockingConfig {
    /// Most JIDs one blocklist may hold; a block command that would exceed
    /// it fails with `policy-violation` and blocks nothing.
    pub max_items: usize,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig { max_items: 1000 }
    }
}

impl Module for Blocking {
    const NAME: &'static str = "blocking";
    type Config = BlockingConfig;

    fn load(config: BlockingConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        if config.max_items == 0 {
            return Err(ModuleError::Config {
                module: Self::NAME.into(),
                message: "max_items must be at least 1".into(),
            });
        }
        let lists = Arc::new(Blocklists::new(config));
        // §3.1.
        ctx.add_feature(ns::BLOCKING);
        let l = lists.clone();
        ctx.handle_iq(IqTarget::Account, IqType::Get, ns::BLOCKING, move |req| get(l.clone(), req));
        let l = lists.clone();
        ctx.handle_iq(IqTarget::Account, IqType::Set, ns::BLOCKING, move |req| set(l.clone(), req));
        for kind in [StanzaKind::Message, StanzaKind::Presence, StanzaKind::Iq] {
            let l = lists.clone();
            ctx.hook(HookPoint::Outbound(kind), HOOK_PRIORITY, move |server, stanza| {
                let l = l.clone();
                async move { enforce(&l, &server, &stanza, true).await }
            });
            let l = lists.clone();
            ctx.hook(HookPoint::Inbound(kind), HOOK_PRIORITY, move |server, stanza| {
                let l = l.clone();
                async move { enforce(&l, &server, &stanza, false).await }
            });
        }
        ctx.hook(HookPoint::AccountOffline, 0, move |_, stanza| {
            if let Some(from) = &stanza.from {
                lists.cache.remove(&from.to_bare());
            }
            async { HookResult::Continue }
        });
        Ok(Blocking)
    }
}

/// A blocklist: normalized JID strings (RFC 7622 as parsed by `jid`).
type List = HashSet<String>;

struct Blocklists {
    max_items: usize,
    cache: DashMap<BareJid, Arc<List>>,
    push_id: AtomicU64,
}

/// §5 (XEP-0016 order): a list entry blocks `jid` if it is the exact JID
/// (user@domain/resource, or domain/resource, or a bare JID sending from
/// the bare address), its bare JID (any resource of user@domain), or its
/// domain (the domain itself and everything at it).
fn matches(list: &List, jid: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    list.contains(jid.as_str())
        || list.contains(jid.domain().as_str())
        // The bare JID is the full one up to its '/' (no node or domain holds one).
        || (jid.node().is_some()
            && jid.as_str().split_once('/').is_some_and(|(bare, _)| list.contains(bare)))
}

impl Blocklists {
    fn new(config: BlockingConfig) -> Self {
        Blocklists { max_items: config.max_items, cache: DashMap::new(), push_id: AtomicU64::new(1) }
    }

    /// The blocklist of `owner`, from the cache or the database; kept in the
    /// cache only while the account has a session (offline accounts are
    /// read on demand, like rosters).
    async fn get(&self, server: &Server, owner: &BareJid) -> Result<Arc<List>, StoreError> {
        if let Some(list) = self.cache.get(owner) {
            return Ok(list.clone());
        }
        let (host, user) = account(owner);
        let list: Arc<List> =
            Arc::new(server.store.all_data(host, user, STORE).await?.into_iter().map(|(k, _)| k).collect());
        if !server.router.is_online(owner) {
            return Ok(list);
        }
        // A concurrent load or write may have filled the entry meanwhile:
        // that copy is at least as new as ours.
        Ok(self.cache.entry(owner.clone()).or_insert(list).clone())
    }

    /// Applies a change (already stored) to the cached copy, if any.
    fn update(&self, owner: &BareJid, change: impl FnOnce(&mut List)) {
        if let Some(mut cached) = self.cache.get_mut(owner) {
            let mut list = List::clone(&cached);
            change(&mut list);
            *cached = Arc::new(list);
        }
    }

    /// Sends `command` (a `<block/>` or `<unblock/>`) to every interested
    /// resource of `owner` (§3.3, §3.4, §3.5).
    fn push(&self, server: &Server, owner: &BareJid, command: &Element) {
        for session in server.router.with_flag(owner, INTERESTED) {
            let id = format!("block-push-{}", self.push_id.fetch_add(1, Ordering::Relaxed));
            let mut iq = element("iq", ns::CLIENT, &[("type", "set"), ("to", session.jid.as_str())]);
            set_attr(&mut iq, "id", id);
            iq.append_child(command.clone());
            server.send_to_local(iq);
        }
    }
}

/// The account whose list the IQ is about: the sender's own (a blocklist
/// belongs to its account only).
fn owner(req: &IqRequest) -> Result<BareJid, StanzaError> {
    let from = req.stanza.from.as_ref().ok_or_else(StanzaError::bad_request)?.to_bare();
    match &req.stanza.to {
        Some(to) if to.to_bare() != from => Err(StanzaError::forbidden()),
        _ => Ok(from),
    }
}

/// §3.2: the blocklist; the requesting resource becomes interested in pushes.
async fn get(lists: Arc<Blocklists>, req: IqRequest) -> IqResult {
    let owner = owner(&req)?;
    if !req.payload().is("blocklist", ns::BLOCKING) {
        return Err(StanzaError::bad_request());
    }
    if let Some(Ok(from)) = req.stanza.from.as_ref().map(Jid::try_as_full) {
        req.server.router.set_flag(from, INTERESTED, true);
    }
    let list = lists.get(&req.server, &owner).await.map_err(store_error)?;
    let mut jids: Vec<&String> = list.iter().collect();
    jids.sort();
    let mut blocklist = Element::bare("blocklist", ns::BLOCKING);
    for jid in jids {
        blocklist.append_child(element("item", ns::BLOCKING, &[("jid", jid)]));
    }
    Ok(Some(blocklist))
}

/// The `<item jid=…/>` children of a command, normalized and deduplicated
/// in request order.
fn items(command: &Element) -> Result<Vec<String>, StanzaError> {
    let mut seen = HashSet::new();
    let mut jids = Vec::new();
    for child in command.children() {
        if !child.is("item", ns::BLOCKING) {
            return Err(StanzaError::bad_request().with_text("only <item/> elements are allowed here"));
        }
        let jid = child
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(|| StanzaError::jid_malformed().with_text("each item needs a valid 'jid'"))?;
        if seen.insert(jid.as_str().to_owned()) {
            jids.push(jid.as_str().to_owned());
        }
    }
    Ok(jids)
}

/// The command as pushed: the items in normalized form.
fn command_element(name: &str, jids: &[String]) -> Element {
    let mut command = Element::bare(name, ns::BLOCKING);
    for jid in jids {
        command.append_child(element("item", ns::BLOCKING, &[("jid", jid)]));
    }
    command
}

async fn set(lists: Arc<Blocklists>, req: IqRequest) -> IqResult {
    let owner = owner(&req)?;
    let command = req.payload();
    let jids = items(command)?;
    let server = &req.server;
    if command.is("block", ns::BLOCKING) {
        block(&lists, server, &owner, jids).await
    } else if command.is("unblock", ns::BLOCKING) {
        unblock(&lists, server, &owner, jids).await
    } else {
        Err(StanzaError::bad_request().with_text("expected <block/> or <unblock/>"))
    }
}

/// §3.3.
async fn block(lists: &Blocklists, server: &Arc<Server>, owner: &BareJid, jids: Vec<String>) -> IqResult {
    if jids.is_empty() {
        return Err(StanzaError::bad_request().with_text("a block command needs at least one item"));
    }
    let before = lists.get(server, owner).await.map_err(store_error)?;
    let new: Vec<&String> = jids.iter().filter(|j| !before.contains(*j)).collect();
    if before.len() + new.len() > lists.max_items {
        return Err(
            StanzaError::policy_violation().with_text(format!("a blocklist holds at most {} JIDs", lists.max_items))
        );
    }
    let (host, user) = account(owner);
    for jid in &new {
        if let Err(e) = server.store.set_data(host, user, STORE, jid, Some("")).await {
            // Part may be stored: reload from the database next time.
            lists.cache.remove(owner);
            return Err(store_error(e));
        }
    }
    lists.update(owner, |list| list.extend(new.iter().map(|j| (*j).clone())));
    let mut after = List::clone(&before);
    after.extend(new.into_iter().cloned());
    presence_change(server, owner, &before, &after, true).await;
    lists.push(server, owner, &command_element("block", &jids));
    Ok(None)
}

/// §3.4 (the listed JIDs) and §3.5 (no items: every JID).
async fn unblock(lists: &Blocklists, server: &Arc<Server>, owner: &BareJid, jids: Vec<String>) -> IqResult {
    let before = lists.get(server, owner).await.map_err(store_error)?;
    let (host, user) = account(owner);
    let after = if jids.is_empty() {
        server.store.clear_data(host, user, STORE).await.map_err(store_error)?;
        lists.update(owner, List::clear);
        List::new()
    } else {
        for jid in jids.iter().filter(|j| before.contains(*j)) {
            if let Err(e) = server.store.set_data(host, user, STORE, jid, None).await {
                lists.cache.remove(owner);
                return Err(store_error(e));
            }
        }
        lists.update(owner, |list| {
            for jid in &jids {
                list.remove(jid);
            }
        });
        let mut after = List::clone(&before);
        for jid in &jids {
            after.remove(jid);
        }
        after
    };
    presence_change(server, owner, &before, &after, false).await;
    lists.push(server, owner, &command_element("unblock", &jids));
    Ok(None)
}

/// §3.3: contacts allowed to see the user's presence (subscription "from"
/// or "both", RFC 6121) that become blocked get unavailable presence from
/// each available resource; §3.4: those that become unblocked get the
/// current presence. Sent with `deliver`, past the user's own outbound
/// hooks (which would drop presence to a blocked JID).
async fn presence_change(server: &Arc<Server>, owner: &BareJid, before: &List, after: &List, blocking: bool) {
    let presences = server.router.presences(owner);
    if presences.is_empty() {
        return;
    }
    let (host, user) = account(owner);
    let roster = match server.store.roster(host, user).await {
        Ok((_, items)) => items,
        Err(e) => {
            tracing::error!(error = %e, "roster load for blocking presence failed");
            return;
        }
    };
    for item in roster.iter().filter(|i| i.subscription.has_from()) {
        let Ok(contact) = Jid::new(&item.contact) else { continue };
        let (was, is) = (matches(before, &contact), matches(after, &contact));
        let changed = if blocking { !was && is } else { was && !is };
        if !changed {
            continue;
        }
        for (full, current) in &presences {
            let mut el = if blocking { Element::bare("presence", ns::CLIENT) } else { current.clone() };
            if blocking {
                set_attr(&mut el, "type", "unavailable");
            }
            set_attr(&mut el, "from", full.as_str());
            set_attr(&mut el, "to", contact.as_str());
            if let Ok(stanza) = Stanza::from_element(el, ns::CLIENT) {
                server.deliver(stanza).await;
            }
        }
    }
}

/// §3.3: `not-acceptable` with the `<blocked/>` application condition.
fn blocked_error() -> StanzaError {
    let mut err = StanzaError::not_acceptable().with_app_condition(Element::bare("blocked", ns::BLOCKING_ERRORS));
    // As in the XEP's example: retrying will not help.
    err.type_ = ErrorType::Cancel;
    err
}

/// Whether a stanza may be answered with an error: message and IQ
/// requests, never errors or IQ results (RFC 6120 §8.3.1).
fn answerable(stanza: &Stanza) -> bool {
    match stanza.kind {
        StanzaKind::Presence => false,
        StanzaKind::Message => !stanza.is_type("error"),
        StanzaKind::Iq => stanza.iq_type().is_some_and(|t| t.is_request()),
    }
}

/// Enforces the list of the local account on one side of a stanza.
///
/// Outbound (§3.3, last paragraph), the user sends to a blocked JID:
/// messages and IQ requests bounce with `<blocked/>`. Inbound (§3.3), a
/// blocked JID sends to the user: messages and IQ requests get
/// `service-unavailable` (the user appears offline). Either way presence
/// (broadcast copies included), IQ responses and errors are dropped, and a
/// list that cannot be read fails closed.
async fn enforce(lists: &Blocklists, server: &Arc<Server>, stanza: &Stanza, outbound: bool) -> HookResult {
    // Presence without `to` is a broadcast: its copies come back one by one.
    let (Some(from), Some(to)) = (&stanza.from, &stanza.to) else { return HookResult::Continue };
    let (user, peer) = if outbound { (from, to) } else { (to, from) };
    // §6 note: never between the user's own resources; and the user's own
    // server stays reachable.
    if same_account(user, peer) || (peer.node().is_none() && server.domains.is_host(peer.domain().as_str())) {
        return HookResult::Continue;
    }
    let error = match lists.get(server, &user.to_bare()).await {
        Ok(list) if !matches(&list, peer) => return HookResult::Continue,
        Ok(_) if outbound => blocked_error(),
        Ok(_) => StanzaError::service_unavailable(),
        Err(e) => store_error(e),
    };
    if answerable(stanza) {
        server.bounce(stanza, error);
    }
    HookResult::Handled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> List {
        items.iter().map(|s| Jid::new(s).unwrap().as_str().to_owned()).collect()
    }

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    #[test]
    fn jid_matching_follows_xep_0191_section_5() {
        // <user@domain/resource>: only that resource.
        let l = list(&["romeo@montague.net/orchard"]);
        assert!(matches(&l, &jid("romeo@montague.net/orchard")));
        assert!(!matches(&l, &jid("romeo@montague.net/garden")));
        assert!(!matches(&l, &jid("romeo@montague.net")));
        // <user@domain>: any resource, and the bare JID itself.
        let l = list(&["romeo@montague.net"]);
        assert!(matches(&l, &jid("romeo@montague.net/orchard")));
        assert!(matches(&l, &jid("romeo@montague.net")));
        assert!(!matches(&l, &jid("benvolio@montague.net/x")));
        // <domain/resource>: only that resource of the domain.
        let l = list(&["montague.net/bot"]);
        assert!(matches(&l, &jid("montague.net/bot")));
        assert!(!matches(&l, &jid("romeo@montague.net/bot")));
        assert!(!matches(&l, &jid("montague.net")));
        // <domain>: the domain and everyone at it.
        let l = list(&["montague.net"]);
        for j in ["montague.net", "montague.net/bot", "romeo@montague.net", "romeo@montague.net/x"] {
            assert!(matches(&l, &jid(j)), "{j}");
        }
        assert!(!matches(&l, &jid("juliet@capulet.com")));
        // Stored JIDs are normalized, as are stamped senders.
        let l = list(&["Romeo@Montague.NET"]);
        assert!(matches(&l, &jid("romeo@montague.net/orchard")));
    }

    #[test]
    fn items_are_validated_and_deduplicated() {
        let el: Element = "<block xmlns='urn:xmpp:blocking'><item jid='a@b'/><item jid='A@b'/><item jid='c'/></block>"
            .parse()
            .unwrap();
        assert_eq!(items(&el).unwrap(), ["a@b", "c"]);
        let el: Element = "<block xmlns='urn:xmpp:blocking'><item jid='@b'/></block>".parse().unwrap();
        assert_eq!(items(&el).unwrap_err().condition, "jid-malformed");
        let el: Element = "<block xmlns='urn:xmpp:blocking'><item/></block>".parse().unwrap();
        assert_eq!(items(&el).unwrap_err().condition, "jid-malformed");
        let el: Element = "<block xmlns='urn:xmpp:blocking'><x xmlns='urn:other'/></block>".parse().unwrap();
        assert_eq!(items(&el).unwrap_err().condition, "bad-request");
    }

    #[test]
    fn blocked_error_carries_the_application_condition() {
        let el = blocked_error().to_element();
        assert_eq!(el.attr("type"), Some("cancel"));
        assert!(el.has_child("not-acceptable", ns::STANZAS));
        assert!(el.has_child("blocked", ns::BLOCKING_ERRORS));
    }
}
