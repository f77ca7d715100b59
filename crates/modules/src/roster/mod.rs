//! RFC 6121 §2–§4: rosters (with XEP-0237 versioning), presence
//! subscriptions and presence broadcast, as one module because the three
//! share the roster: `items.rs` answers roster get/set and sends pushes,
//! `subscription.rs` runs the §3 state machine (Appendix A), `presence.rs`
//! broadcasts and answers for available resources (§4).
//!
//! Rosters of accounts with a bound session are cached (`cache.rs`): every
//! presence broadcast reads them and must not hit the database.

mod cache;
mod items;
mod presence;
mod subscription;

use cache::Rosters;
use serde::Deserialize;
use starling_core::module::{HookPoint, HookResult, IqTarget};
use starling_core::{Module, ModuleContext, ModuleError};
use starling_proto::{ns, Element, IqType, StanzaKind};
use std::sync::Arc;

pub struct Roster;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RosterConfig {
    /// Most items one roster may hold (RFC 6121 §2.1.2: beyond it, `not-allowed`).
    pub max_items: usize,
    /// Longest item name and group name, in bytes.
    pub max_name_bytes: usize,
    /// Most groups on one item.
    pub max_groups: usize,
}

impl Default for RosterConfig {
    fn default() -> Self {
        RosterConfig { max_items: 1000, max_name_bytes: 1024, max_groups: 64 }
    }
}

impl Module for Roster {
    const NAME: &'static str = "roster";
    type Config = RosterConfig;

    fn load(config: RosterConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        let rosters = Arc::new(Rosters::new(config));
        // XEP-0237 §2 and RFC 6121 §3.4: advertised as stream features.
        ctx.add_stream_feature(Element::bare("ver", ns::ROSTER_VER));
        ctx.add_stream_feature(Element::bare("sub", ns::PRE_APPROVAL));
        let r = rosters.clone();
        ctx.handle_iq(IqTarget::Account, IqType::Get, ns::ROSTER, move |req| items::get(r.clone(), req));
        let r = rosters.clone();
        ctx.handle_iq(IqTarget::Account, IqType::Set, ns::ROSTER, move |req| items::set(r.clone(), req));
        let r = rosters.clone();
        ctx.hook(HookPoint::Outbound(StanzaKind::Presence), 0, move |server, stanza| {
            let r = r.clone();
            async move {
                match stanza.to {
                    None => presence::broadcast(&r, &server, &stanza).await,
                    Some(_) => subscription::outbound(&r, &server, stanza).await,
                }
            }
        });
        let r = rosters.clone();
        ctx.hook(HookPoint::Inbound(StanzaKind::Presence), 0, move |server, stanza| {
            let r = r.clone();
            async move {
                match stanza.type_.as_deref() {
                    Some("probe") => presence::probe(&r, &server, &stanza).await,
                    Some(_) if subscription::is_subscription(&stanza) => {
                        subscription::inbound(&r, &server, stanza).await
                    }
                    _ => HookResult::Continue,
                }
            }
        });
        let r = rosters.clone();
        ctx.hook(HookPoint::SessionAvailable, 0, move |server, stanza| {
            let r = r.clone();
            async move { presence::initial(&r, &server, &stanza).await }
        });
        ctx.hook(HookPoint::AccountOffline, 0, move |_, stanza| {
            if let Some(from) = &stanza.from {
                rosters.forget(&from.to_bare());
            }
            async { HookResult::Continue }
        });
        Ok(Roster)
    }
}
