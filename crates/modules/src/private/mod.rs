//! XEP-0049: Private XML Storage. A user keeps arbitrary XML fragments on the
//! server, each under the (element name, namespace) of its root, readable
//! and writable by that user only. Bookmarks (`storage:bookmarks`) are also
//! the account's PEP native bookmarks (`bookmarks`, XEP-0402 `#compat`).

mod bookmarks;

use crate::store::{account, store_error};
use serde::Deserialize;
use starling_core::module::{IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError};
use starling_proto::xmpp_parsers::bookmarks::Storage;
use starling_proto::{ns, BareJid, Element, IqType, Jid, StanzaError};
use std::collections::HashSet;

/// `account_data` store name; keys are `{namespace}name` (Clark notation).
const STORE: &str = "private";

pub struct Private;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivateConfig {
    /// Largest fragment stored, in bytes of XML (larger get `not-acceptable`).
    pub max_bytes: usize,
    /// Most fragments one account may keep (beyond, `not-acceptable`).
    pub max_items: usize,
}

impl Default for PrivateConfig {
    fn default() -> Self {
        PrivateConfig { max_bytes: 64 * 1024, max_items: 100 }
    }
}

impl Module for Private {
    const NAME: &'static str = "private";
    type Config = PrivateConfig;

    fn load(config: PrivateConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        // Not required by the XEP, but what clients look for.
        ctx.add_feature(ns::PRIVATE);
        ctx.add_account_feature(bookmarks::COMPAT);
        ctx.handle_iq(IqTarget::Account, IqType::Get, ns::PRIVATE, get);
        ctx.handle_iq(IqTarget::Account, IqType::Set, ns::PRIVATE, move |req| set(req, config));
        Ok(Private)
    }
}

/// The account, which must be the sender's (§2.3 example 3 and §3:
/// forbidden otherwise), and the fragments of the request (§2.3: at least
/// one, none in a reserved namespace).
fn check(req: &IqRequest) -> Result<(BareJid, Vec<&Element>), StanzaError> {
    let from = req.stanza.from.as_ref().ok_or_else(StanzaError::service_unavailable)?.to_bare();
    if req.stanza.to.as_ref().is_some_and(|to| to.to_bare() != from) {
        return Err(StanzaError::forbidden());
    }
    let query = req.payload();
    if !query.is("query", ns::PRIVATE) {
        return Err(StanzaError::bad_request().with_text("expected <query xmlns='jabber:iq:private'/>"));
    }
    let fragments: Vec<&Element> = query.children().collect();
    if fragments.is_empty() {
        return Err(StanzaError::not_acceptable().with_text("a child element in its own namespace is required"));
    }
    if let Some(reserved) = fragments.iter().find(|f| is_reserved(&f.ns())) {
        return Err(StanzaError::not_acceptable().with_text(format!("namespace {:?} is reserved", reserved.ns())));
    }
    Ok((from, fragments))
}

/// §2.3 example 5 and §3: `jabber:*`, `http://jabber.org/*` and `vcard-temp`
/// are reserved. A
/// child without its own xmlns inherits `jabber:iq:private`, so it is too.
fn is_reserved(namespace: &str) -> bool {
    namespace.starts_with("jabber:") || namespace.starts_with("http://jabber.org/") || namespace == ns::VCARD
}

fn key(fragment: &Element) -> String {
    format!("{{{}}}{}", fragment.ns(), fragment.name())
}

/// §2.3 example 2: the stored fragment, or the empty element asked for
/// when nothing is stored.
async fn get(req: IqRequest) -> IqResult {
    let (owner, fragments) = check(&req)?;
    let namespaces: HashSet<String> = fragments.iter().map(|f| f.ns()).collect();
    if namespaces.len() > 1 {
        // §2.3: one namespace per get.
        return Err(StanzaError::bad_request().with_text("query one namespace at a time"));
    }
    let (host, user) = account(&owner);
    let mut query = Element::bare("query", ns::PRIVATE);
    for fragment in fragments {
        let stored = req.server.store.get_data(host, user, STORE, &key(fragment)).await.map_err(store_error)?;
        let parsed = stored.map(|xml| xml.parse::<Element>());
        if fragment.is("storage", bookmarks::LEGACY) {
            if let Some(rooms) = bookmarks::read(&req.server, requester(&req)?).await? {
                // The rooms are PEP's; web-page bookmarks only this copy has.
                let urls = match &parsed {
                    Some(Ok(el)) => Storage::try_from(el.clone()).map(|s| s.urls).unwrap_or_default(),
                    _ => vec![],
                };
                query.append_child(Storage { conferences: rooms, urls }.into());
                continue;
            }
        }
        match parsed {
            Some(Ok(el)) => query.append_child(el),
            Some(Err(e)) => {
                tracing::error!(error = %e, "stored private XML does not parse");
                return Err(StanzaError::internal_server_error());
            }
            None => query.append_child(Element::bare(fragment.name(), fragment.ns())),
        };
    }
    Ok(Some(query))
}

/// §2.3 example 1: each fragment replaces what was stored under its name
/// and namespace; an empty one deletes it. All are checked before any is
/// written.
async fn set(req: IqRequest, config: PrivateConfig) -> IqResult {
    let (owner, fragments) = check(&req)?;
    let (host, user) = account(&owner);
    let legacy_bookmarks = fragments.iter().find(|f| f.is("storage", bookmarks::LEGACY)).copied();
    let mut writes = Vec::with_capacity(fragments.len());
    for fragment in fragments {
        let empty = fragment.nodes().next().is_none() && fragment.attrs().iter().next().is_none();
        let xml = (!empty).then(|| String::from(fragment));
        if xml.as_ref().is_some_and(|xml| xml.len() > config.max_bytes) {
            let text = format!("{} is larger than {} bytes", key(fragment), config.max_bytes);
            return Err(StanzaError::not_acceptable().with_text(text));
        }
        writes.push((key(fragment), xml));
    }
    let mut new_keys = HashSet::new();
    for (key, xml) in &writes {
        if xml.is_some() && req.server.store.get_data(host, user, STORE, key).await.map_err(store_error)?.is_none() {
            new_keys.insert(key.as_str());
        }
    }
    if !new_keys.is_empty() {
        let stored = req.server.store.all_data(host, user, STORE).await.map_err(store_error)?.len();
        if stored + new_keys.len() > config.max_items {
            let text = format!("at most {} fragments are kept", config.max_items);
            return Err(StanzaError::not_acceptable().with_text(text));
        }
    }
    // Bookmarks go to PEP first: what it refuses is not stored either.
    if let Some(fragment) = legacy_bookmarks {
        let storage = Storage::try_from(fragment.clone())
            .map_err(|e| StanzaError::bad_request().with_text(format!("storage:bookmarks: {e}")))?;
        bookmarks::write(&req.server, requester(&req)?, &storage).await?;
    }
    for (key, xml) in &writes {
        req.server.store.set_data(host, user, STORE, key, xml.as_deref()).await.map_err(store_error)?;
    }
    Ok(None)
}

fn requester(req: &IqRequest) -> Result<&Jid, StanzaError> {
    req.stanza.from.as_ref().ok_or_else(StanzaError::service_unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_namespaces_and_keys() {
        assert!(is_reserved("jabber:iq:roster") && is_reserved("jabber:iq:private"));
        assert!(is_reserved("http://jabber.org/protocol/disco#info") && is_reserved("vcard-temp"));
        assert!(!is_reserved("storage:bookmarks") && !is_reserved("urn:example:prefs"));
        let el: Element = "<storage xmlns='storage:bookmarks'/>".parse().unwrap();
        assert_eq!(key(&el), "{storage:bookmarks}storage");
    }
}
