//! Offline messages (XEP-0160): stored in arrival order, bounded per account.

use crate::{Dialect, Result, SqlStore};
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
        if self.dialect() == Dialect::Postgres {
            // Under READ COMMITTED two concurrent pushes would both count
            // `limit - 1` and both insert: one push per account at a time.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("starling offline {username}@{host}"))
                .execute(&mut *tx)
                .await?;
        }
        // Count and insert in one statement: on SQLite a transaction that
        // reads first and writes second fails at once with SQLITE_BUSY when
        // another connection wrote in between; a single write statement takes
        // the write lock first (waiting for it) and then counts exactly.
        let done = sqlx::query(
            "INSERT INTO offline_messages (host, username, stanza, stored_at) SELECT $1, $2, $3, $4 \
             WHERE (SELECT COUNT(*) FROM offline_messages WHERE host = $1 AND username = $2) < $5",
        )
        .bind(host)
        .bind(username)
        .bind(stanza)
        .bind(stored_at)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
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
