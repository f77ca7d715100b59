//! XEP-0012: Last Activity. To the server: its uptime (§5). To an account's
//! bare JID: seconds since its last session ended, with the status of its
//! last unavailable presence, or 0 while it has a session (§3) — answered
//! only to the user and to contacts subscribed to the user's presence
//! (§8: anything else would leak presence), others get `forbidden`. Queries
//! to a full JID from unauthorized senders are stopped the same way (§4).

use crate::store::{account, store_error};
use dashmap::DashMap;
use serde::Deserialize;
use starling_core::module::{HookPoint, HookResult, IqRequest, IqResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError, Server};
use starling_proto::minidom::rxml::Namespace;
use starling_proto::xml::element;
use starling_proto::{ns, BareJid, Element, FullJid, IqType, Jid, Stanza, StanzaError, StanzaKind};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// `account_data` store name; key "", value `UNIX_SECONDS\nSTATUS`.
const STORE: &str = "lastlog";

pub struct Last;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastConfig {}

/// Status text of the unavailable presence each session sent, kept until
/// the session ends.
type Statuses = Arc<DashMap<FullJid, String>>;

impl Module for Last {
    const NAME: &'static str = "last";
    type Config = LastConfig;

    fn load(_: LastConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        // §6: support is advertised as a disco feature.
        ctx.add_feature(ns::LAST);
        // Modules load at startup, so this is the server's start.
        let started = Instant::now();
        ctx.handle_iq(IqTarget::Host, IqType::Get, ns::LAST, move |_| async move {
            Ok(Some(query(started.elapsed().as_secs(), "")))
        });
        ctx.handle_iq(IqTarget::Account, IqType::Get, ns::LAST, account_last);
        ctx.hook(HookPoint::Inbound(StanzaKind::Iq), 10, to_full_jid);
        let statuses: Statuses = Arc::default();
        let s = statuses.clone();
        // Before the roster's broadcast (priority 0); never takes the stanza.
        ctx.hook(HookPoint::Outbound(StanzaKind::Presence), 10, move |_, presence| {
            remember_status(s.clone(), presence)
        });
        ctx.hook(HookPoint::SessionClosed, 0, move |server, presence| {
            session_closed(server, presence, statuses.clone())
        });
        Ok(Last)
    }
}

fn query(seconds: u64, status: &str) -> Element {
    let mut q = element("query", ns::LAST, &[("seconds", &seconds.to_string())]);
    if !status.is_empty() {
        q.append_text_node(status);
    }
    q
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// §3 / §8: the user, or a contact with a subscription to the user's
/// presence (`from` or `both` on the user's roster).
async fn may_see(server: &Server, user: &BareJid, requester: &BareJid) -> Result<bool, StanzaError> {
    if user == requester {
        return Ok(true);
    }
    let (host, username) = account(user);
    let item = server.store.roster_item(host, username, requester.as_str()).await.map_err(store_error)?;
    Ok(item.is_some_and(|i| i.subscription.has_from()))
}

/// §3: an IQ-get to an account's bare JID, answered by the server.
async fn account_last(req: IqRequest) -> IqResult {
    let from = req.stanza.from.as_ref().ok_or_else(StanzaError::service_unavailable)?;
    let user = req.stanza.to.as_ref().unwrap_or(from).to_bare();
    if !may_see(&req.server, &user, &from.to_bare()).await? {
        return Err(StanzaError::forbidden());
    }
    // §3: online now → 0 seconds, no status.
    if req.server.router.is_online(&user) {
        return Ok(Some(query(0, "")));
    }
    let (host, username) = account(&user);
    let stored = req.server.store.get_data(host, username, STORE, "").await.map_err(store_error)?;
    let Some((at, status)) = stored.as_deref().and_then(|v| v.split_once('\n')) else {
        // Never logged out (or no such account): nothing to tell.
        return Err(StanzaError::service_unavailable());
    };
    let at: u64 = at.parse().unwrap_or(0);
    Ok(Some(query(unix_now().saturating_sub(at), status)))
}

/// §4: a last-activity query for a full JID reaches the resource only if
/// the sender may see the user's presence; otherwise the server answers
/// `forbidden`.
async fn to_full_jid(server: Arc<Server>, stanza: Arc<Stanza>) -> HookResult {
    let (Some(from), Some(Ok(to))) = (&stanza.from, stanza.to.as_ref().map(Jid::try_as_full)) else {
        return HookResult::Continue;
    };
    if !stanza.is_type("get") || !stanza.payload().is_some_and(|p| p.is("query", ns::LAST)) {
        return HookResult::Continue;
    }
    match may_see(&server, &to.to_bare(), &from.to_bare()).await {
        Ok(true) => HookResult::Continue,
        Ok(false) => {
            server.bounce(&stanza, StanzaError::forbidden());
            HookResult::Handled
        }
        Err(err) => {
            server.bounce(&stanza, err);
            HookResult::Handled
        }
    }
}

/// Keeps the status of an unavailable broadcast (§3: the status of "the
/// last unavailable presence received from the user").
async fn remember_status(statuses: Statuses, presence: Arc<Stanza>) -> HookResult {
    if presence.to.is_none() && presence.is_type("unavailable") {
        if let Some(Ok(session)) = presence.from.as_ref().map(Jid::try_as_full) {
            statuses.insert(session.clone(), status_text(&presence.el));
        }
    }
    HookResult::Continue
}

/// The `<status/>` without `xml:lang`, else the first one.
fn status_text(presence: &Element) -> String {
    let statuses: Vec<&Element> = presence.children().filter(|c| c.is("status", ns::CLIENT)).collect();
    let plain = statuses.iter().find(|s| s.attr_ns(&Namespace::XML, "lang").is_none());
    plain.or(statuses.first()).map(|s| s.text()).unwrap_or_default()
}

/// When the account's last session ends, its logout time and status are stored.
async fn session_closed(server: Arc<Server>, presence: Arc<Stanza>, statuses: Statuses) -> HookResult {
    let Some(Ok(session)) = presence.from.as_ref().map(Jid::try_as_full) else {
        return HookResult::Continue;
    };
    let status = statuses.remove(session).map(|(_, s)| s).unwrap_or_default();
    let user = session.to_bare();
    if server.router.is_online(&user) {
        return HookResult::Continue;
    }
    let (host, username) = account(&user);
    let value = format!("{}\n{status}", unix_now());
    if let Err(e) = server.store.set_data(host, username, STORE, "", Some(&value)).await {
        tracing::error!(error = %e, "storing last activity failed");
    }
    HookResult::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prefers_the_one_without_language() {
        let el: Element = "<presence xmlns='jabber:client' type='unavailable'>\
            <status xml:lang='fr'>Au revoir</status><status>Heading Home</status></presence>"
            .parse()
            .unwrap();
        assert_eq!(status_text(&el), "Heading Home");
        let el: Element = "<presence xmlns='jabber:client' type='unavailable'/>".parse().unwrap();
        assert_eq!(status_text(&el), "");
        assert_eq!(
            String::from(&query(903, "Heading Home")),
            "<query xmlns='jabber:iq:last' seconds='903'>Heading Home</query>"
        );
    }
}
