//! XEP-0160: offline messages. A chat or normal message for an account with
//! no available resource is stored (before the sender's stream moves on, so
//! a crash cannot lose it) with an XEP-0203 delay stamp, and delivered when
//! the account next sends available presence with a non-negative priority.

use serde::Deserialize;
use starling_core::module::{HookPoint, HookResult};
use starling_core::{Module, ModuleContext, ModuleError, Outbound, Server};
use starling_proto::time::format_utc;
use starling_proto::xml::{element, set_attr};
use starling_proto::{ns, Element, Jid, Stanza, StanzaError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Offline;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    /// Most messages kept per account; beyond it senders get `service-unavailable`.
    pub max_messages: usize,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig { max_messages: 1000 }
    }
}

impl Module for Offline {
    const NAME: &'static str = "offline";
    type Config = OfflineConfig;

    fn load(config: OfflineConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        ctx.add_feature(ns::MSGOFFLINE);
        let limit = config.max_messages;
        ctx.hook(HookPoint::MessageUndeliverable, 0, move |server, stanza| store(server, stanza, limit));
        ctx.hook(HookPoint::SessionAvailable, -10, deliver);
        Ok(Offline)
    }
}

/// XEP-0334 hints and chat states decide what is worth keeping.
fn worth_storing(el: &Element) -> bool {
    if el.has_child("no-store", ns::HINTS) || el.has_child("no-permanent-store", ns::HINTS) {
        return false;
    }
    el.has_child("body", ns::CLIENT) || el.has_child("store", ns::HINTS)
}

async fn store(server: Arc<Server>, stanza: Arc<Stanza>, limit: usize) -> HookResult {
    let Some(to) = stanza.to.as_ref().map(Jid::to_bare) else {
        return HookResult::Continue;
    };
    let (host, username) = (to.domain().as_str(), to.node().map_or("", |n| n.as_str()));
    match server.store.exists(host, username).await {
        Ok(true) => {}
        // No such account: the core answers service-unavailable.
        Ok(false) => return HookResult::Continue,
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            server.bounce(&stanza, StanzaError::internal_server_error());
            return HookResult::Handled;
        }
    }
    if !worth_storing(&stanza.el) {
        // A chat state or receipt alone is stale by the time anyone reads it.
        return HookResult::Handled;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut el = stanza.el.clone();
    // XEP-0203 §3: when the server received it.
    el.append_child(element(
        "delay",
        ns::DELAY,
        &[("from", host), ("stamp", &format_utc(now.as_secs(), now.subsec_millis()))],
    ));
    let xml = String::from(&el);
    match server.store.push_offline(host, username, &xml, now.as_secs() as i64, limit).await {
        Ok(true) => {}
        Ok(false) => server.bounce(&stanza, StanzaError::service_unavailable().with_text("offline storage is full")),
        Err(e) => {
            tracing::error!(error = %e, "storing offline message failed");
            server.bounce(&stanza, StanzaError::internal_server_error());
        }
    }
    HookResult::Handled
}

/// Sends the stored messages to the session that just became available,
/// deleting only those its queue accepted.
async fn deliver(server: Arc<Server>, presence: Arc<Stanza>) -> HookResult {
    let Some(Ok(session)) = presence.from.as_ref().map(Jid::try_as_full) else { return HookResult::Continue };
    let priority = presence.el.get_child("priority", ns::CLIENT).and_then(|p| p.text().trim().parse::<i8>().ok());
    if priority.unwrap_or(0) < 0 {
        return HookResult::Continue;
    }
    let Some(handle) = server.router.session(session) else { return HookResult::Continue };
    let (host, username) = (session.domain().as_str(), session.node().map_or("", |n| n.as_str()));
    let messages = match server.store.offline_messages(host, username).await {
        Ok(messages) => messages,
        Err(e) => {
            tracing::error!(error = %e, "loading offline messages failed");
            return HookResult::Continue;
        }
    };
    let mut delivered = None;
    for message in messages {
        let Ok(mut el) = message.stanza.parse::<Element>() else {
            tracing::warn!(id = message.id, "unreadable offline message skipped");
            delivered = Some(message.id);
            continue;
        };
        set_attr(&mut el, "to", session.as_str());
        if handle.send(Outbound::stanza(el)).is_err() {
            // The rest stays stored for the next login.
            break;
        }
        delivered = Some(message.id);
    }
    if let Some(last) = delivered {
        if let Err(e) = server.store.delete_offline_through(host, username, last).await {
            tracing::error!(error = %e, "deleting delivered offline messages failed");
        }
    }
    HookResult::Continue
}
