//! XEP-0441 archive preferences: a default (always, roster, never) and
//! lists of JIDs always or never archived, kept per account as the
//! `<prefs/>` element itself.

use super::MamConfig;
use crate::store::{account, store_error};
use serde::Deserialize;
use starling_core::module::IqRequest;
use starling_core::Server;
use starling_proto::xmpp_parsers::mam_prefs::{DefaultPrefs, Prefs as PrefsPayload};
use starling_proto::{BareJid, Element, StanzaError};
use starling_storage::StoreError;
use std::sync::Arc;

/// `account_data` store and key of an account's preferences.
const STORE: &str = "mam";
const KEY: &str = "prefs";

/// The config's default for accounts that set none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultMode {
    Always,
    Roster,
    Never,
}

pub struct Prefs(PrefsPayload);

/// Each account's preferences, read once per message otherwise: kept while
/// the account is online (dropped when it goes offline or sets new ones).
#[derive(Default)]
pub struct Cache(dashmap::DashMap<BareJid, Arc<Prefs>>);

impl Cache {
    pub async fn get(&self, server: &Server, owner: &BareJid, config: &MamConfig) -> Result<Arc<Prefs>, StoreError> {
        if let Some(prefs) = self.0.get(owner) {
            return Ok(prefs.clone());
        }
        let prefs = Arc::new(Prefs::load(server, owner, config).await?);
        if server.router.is_online(owner) {
            self.0.insert(owner.clone(), prefs.clone());
        }
        Ok(prefs)
    }

    pub fn forget(&self, owner: &BareJid) {
        self.0.remove(owner);
    }
}

impl Prefs {
    pub async fn load(server: &Server, owner: &BareJid, config: &MamConfig) -> Result<Prefs, StoreError> {
        let (host, user) = account(owner);
        let stored = server.store.get_data(host, user, STORE, KEY).await?;
        let parsed = stored.and_then(|xml| xml.parse::<Element>().ok()).and_then(|el| PrefsPayload::try_from(el).ok());
        Ok(Prefs(parsed.unwrap_or_else(|| PrefsPayload {
            default_: match config.default {
                DefaultMode::Always => DefaultPrefs::Always,
                DefaultMode::Roster => DefaultPrefs::Roster,
                DefaultMode::Never => DefaultPrefs::Never,
            },
            always: vec![],
            never: vec![],
        })))
    }

    /// XEP-0441 §2.2: the lists win over the default; `roster` means a
    /// contact in the owner's roster.
    pub async fn archives(&self, server: &Server, owner: &BareJid, peer: &BareJid) -> bool {
        let listed = |list: &[starling_proto::Jid]| list.iter().any(|j| j.to_bare() == *peer);
        if listed(&self.0.never) {
            return false;
        }
        if listed(&self.0.always) {
            return true;
        }
        match self.0.default_ {
            DefaultPrefs::Always => true,
            DefaultPrefs::Never => false,
            DefaultPrefs::Roster => {
                let (host, user) = account(owner);
                matches!(server.store.roster_item(host, user, peer.as_str()).await, Ok(Some(_)))
            }
        }
    }
}

pub async fn get(req: &IqRequest, owner: &BareJid, config: &MamConfig) -> Result<Element, StanzaError> {
    Ok(Prefs::load(&req.server, owner, config).await.map_err(store_error)?.0.into())
}

/// §2.3: replaces the preferences and answers with them.
pub async fn set(req: &IqRequest, owner: &BareJid) -> Result<Element, StanzaError> {
    let prefs = PrefsPayload::try_from(req.payload().clone())
        .map_err(|e| StanzaError::bad_request().with_text(format!("invalid preferences: {e}")))?;
    if prefs.always.len() + prefs.never.len() > 1000 {
        return Err(StanzaError::not_acceptable().with_text("at most 1000 JIDs in the preference lists"));
    }
    let el: Element = prefs.into();
    let (host, user) = account(owner);
    let server: &Arc<Server> = &req.server;
    server.store.set_data(host, user, STORE, KEY, Some(&String::from(&el))).await.map_err(store_error)?;
    Ok(el)
}
