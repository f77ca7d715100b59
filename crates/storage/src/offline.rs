//! Offline messages (XEP-0160): stored in arrival order, bounded per account.

use crate::{Result, SqlStore};
use async_trait::async_trait;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    pub id: i64,
    pub stanza: String,
    /// Seconds since the Unix epoch.
    pub stored_at: i64,
}

#[async_trait]
pub trait OfflineStore: Send + Sync {
    /// Stores a message unless the account already holds `limit`; false when full.
    async fn push_offline(
        &self,
        host: &str,
        username: &str,
        stanza: &str,
        stored_at: i64,
        limit: usize,
    ) -> Result<bool>;
    /// The stored messages, oldest first.
    async fn offline_messages(&self, host: &str, username: &str) -> Result<Vec<OfflineMessage>>;
    /// Deletes messages up to and including `last_id` (those just delivered).
    async fn delete_offline_through(&self, host: &str, username: &str, last_id: i64) -> Result<()>;
}

#[async_trait]
impl OfflineStore for SqlStore {
    async fn push_offline(
        &self,
        host: &str,
        username: &str,
        stanza: &str,
        stored_at: i64,
        limit: usize,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM offline_messages WHERE host = $1 AND username = $2")
            .bind(host)
            .bind(username)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if count as usize >= limit {
            return Ok(false);
        }
        sqlx::query("INSERT INTO offline_messages (host, username, stanza, stored_at) VALUES ($1, $2, $3, $4)")
            .bind(host)
            .bind(username)
            .bind(stanza)
            .bind(stored_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn offline_messages(&self, host: &str, username: &str) -> Result<Vec<OfflineMessage>> {
        let rows = sqlx::query(
            "SELECT id, stanza, stored_at FROM offline_messages WHERE host = $1 AND username = $2 ORDER BY id",
        )
        .bind(host)
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(OfflineMessage { id: r.try_get(0)?, stanza: r.try_get(1)?, stored_at: r.try_get(2)? }))
            .collect()
    }

    async fn delete_offline_through(&self, host: &str, username: &str, last_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM offline_messages WHERE host = $1 AND username = $2 AND id <= $3")
            .bind(host)
            .bind(username)
            .bind(last_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
