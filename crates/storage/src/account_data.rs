//! Small per-account documents keyed by (store, key): private XML storage
//! (XEP-0049), vCards (XEP-0054), block lists (XEP-0191), last activity
//! (XEP-0012). Values are opaque text (usually serialized XML).

use crate::{Result, SqlStore};
use async_trait::async_trait;
use sqlx::Row;

#[async_trait]
pub trait AccountDataStore: Send + Sync {
    async fn get_data(&self, host: &str, username: &str, store: &str, key: &str) -> Result<Option<String>>;
    /// Sets (`Some`) or deletes (`None`) one value.
    async fn set_data(&self, host: &str, username: &str, store: &str, key: &str, value: Option<&str>) -> Result<()>;
    /// Every (key, value) of one store, sorted by key.
    async fn all_data(&self, host: &str, username: &str, store: &str) -> Result<Vec<(String, String)>>;
    /// Deletes every value of one store.
    async fn clear_data(&self, host: &str, username: &str, store: &str) -> Result<()>;
}

#[async_trait]
impl AccountDataStore for SqlStore {
    async fn get_data(&self, host: &str, username: &str, store: &str, key: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT value FROM account_data WHERE host = $1 AND username = $2 AND store = $3 AND key = $4")
                .bind(host)
                .bind(username)
                .bind(store)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    async fn set_data(&self, host: &str, username: &str, store: &str, key: &str, value: Option<&str>) -> Result<()> {
        let query = match value {
            Some(_) => {
                "INSERT INTO account_data (host, username, store, key, value) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (host, username, store, key) DO UPDATE SET value = excluded.value"
            }
            None => "DELETE FROM account_data WHERE host = $1 AND username = $2 AND store = $3 AND key = $4",
        };
        let mut q = sqlx::query(query).bind(host).bind(username).bind(store).bind(key);
        if let Some(value) = value {
            q = q.bind(value);
        }
        q.execute(&self.pool).await?;
        Ok(())
    }

    async fn all_data(&self, host: &str, username: &str, store: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT key, value FROM account_data WHERE host = $1 AND username = $2 AND store = $3 ORDER BY key",
        )
        .bind(host)
        .bind(username)
        .bind(store)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn clear_data(&self, host: &str, username: &str, store: &str) -> Result<()> {
        sqlx::query("DELETE FROM account_data WHERE host = $1 AND username = $2 AND store = $3")
            .bind(host)
            .bind(username)
            .bind(store)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
