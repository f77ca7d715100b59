//! The roster store with a cache of the rosters of online accounts.
//!
//! Writes go to the database first and then drop the cached copy, so the
//! next read reloads: simple, and correct when two sessions of one account
//! (or both ends of a local subscription) change rosters at once.

use super::RosterConfig;
use dashmap::DashMap;
use starling_core::Server;
use starling_proto::BareJid;
use starling_storage::{RosterItem, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

pub(super) struct CachedRoster {
    pub version: i64,
    pub items: HashMap<String, RosterItem>,
}

pub(super) struct Rosters {
    pub config: RosterConfig,
    cache: DashMap<BareJid, Arc<CachedRoster>>,
}

pub(super) use crate::store::{account, store_error};

impl Rosters {
    pub fn new(config: RosterConfig) -> Self {
        Rosters { config, cache: DashMap::new() }
    }

    pub async fn get(&self, server: &Server, owner: &BareJid) -> Result<Arc<CachedRoster>, StoreError> {
        if let Some(cached) = self.cache.get(owner) {
            return Ok(cached.clone());
        }
        let (host, user) = account(owner);
        let (version, items) = server.store.roster(host, user).await?;
        let roster =
            Arc::new(CachedRoster { version, items: items.into_iter().map(|i| (i.contact.clone(), i)).collect() });
        // Only online accounts are kept; others are read on demand.
        if server.router.is_online(owner) {
            self.cache.insert(owner.clone(), roster.clone());
        }
        Ok(roster)
    }

    pub async fn item(
        &self,
        server: &Server,
        owner: &BareJid,
        contact: &BareJid,
    ) -> Result<Option<RosterItem>, StoreError> {
        Ok(self.get(server, owner).await?.items.get(contact.as_str()).cloned())
    }

    /// Stores an item; returns the new roster version.
    pub async fn put(&self, server: &Server, owner: &BareJid, item: &RosterItem) -> Result<i64, StoreError> {
        let (host, user) = account(owner);
        let version = server.store.put_roster_item(host, user, item).await;
        self.cache.remove(owner);
        version
    }

    pub async fn remove(&self, server: &Server, owner: &BareJid, contact: &BareJid) -> Result<Option<i64>, StoreError> {
        let (host, user) = account(owner);
        let version = server.store.remove_roster_item(host, user, contact.as_str()).await;
        self.cache.remove(owner);
        version
    }

    pub fn forget(&self, owner: &BareJid) {
        self.cache.remove(owner);
    }
}
