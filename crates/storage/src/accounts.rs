//! Accounts and their SCRAM credentials.

use crate::{Result, SqlStore, StoreError};
use async_trait::async_trait;
use sqlx::Row;
use starling_sasl::{HashAlg, ScramCredentials};
use std::time::{SystemTime, UNIX_EPOCH};

#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account with one credential per hash; `AlreadyExists` if taken.
    async fn create(&self, host: &str, username: &str, creds: &[ScramCredentials]) -> Result<()>;
    /// Replaces an account's credentials; `NotFound` if there is no such account.
    async fn set_credentials(&self, host: &str, username: &str, creds: &[ScramCredentials]) -> Result<()>;
    async fn credentials(&self, host: &str, username: &str, hash: HashAlg) -> Result<Option<ScramCredentials>>;
    async fn exists(&self, host: &str, username: &str) -> Result<bool>;
    /// Removes an account and everything it owns in every store; other
    /// accounts' subscriptions to it end (their items drop to `none`).
    /// False if there was no such account.
    async fn remove(&self, host: &str, username: &str) -> Result<bool>;
    /// Usernames on `host`, sorted.
    async fn list(&self, host: &str) -> Result<Vec<String>>;
}

fn hash_name(hash: HashAlg) -> &'static str {
    hash.name()
}

fn hash_from_name(name: &str) -> Option<HashAlg> {
    HashAlg::ALL.into_iter().find(|h| h.name() == name)
}

async fn insert_credentials(
    tx: &mut sqlx::AnyConnection,
    host: &str,
    username: &str,
    creds: &[ScramCredentials],
) -> Result<()> {
    for c in creds {
        sqlx::query(
            "INSERT INTO scram_credentials (host, username, hash, salt, iterations, stored_key, server_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(host)
        .bind(username)
        .bind(hash_name(c.hash))
        .bind(c.salt.clone())
        .bind(c.iterations as i32)
        .bind(c.stored_key.clone())
        .bind(c.server_key.clone())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create(&self, host: &str, username: &str, creds: &[ScramCredentials]) -> Result<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query("INSERT INTO accounts (host, username, created_at) VALUES ($1, $2, $3)")
            .bind(host)
            .bind(username)
            .bind(now)
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists),
            other => other?,
        };
        insert_credentials(&mut tx, host, username, creds).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_credentials(&self, host: &str, username: &str, creds: &[ScramCredentials]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query("SELECT 1 FROM accounts WHERE host = $1 AND username = $2")
            .bind(host)
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM scram_credentials WHERE host = $1 AND username = $2")
            .bind(host)
            .bind(username)
            .execute(&mut *tx)
            .await?;
        insert_credentials(&mut tx, host, username, creds).await?;
        // A new password revokes every FAST login token (XEP-0484 §5).
        sqlx::query("DELETE FROM account_data WHERE host = $1 AND username = $2 AND store = 'fast'")
            .bind(host)
            .bind(username)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn credentials(&self, host: &str, username: &str, hash: HashAlg) -> Result<Option<ScramCredentials>> {
        let row = sqlx::query(
            "SELECT hash, salt, iterations, stored_key, server_key FROM scram_credentials \
             WHERE host = $1 AND username = $2 AND hash = $3",
        )
        .bind(host)
        .bind(username)
        .bind(hash_name(hash))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let name: String = row.try_get(0)?;
        Ok(hash_from_name(&name).map(|hash| ScramCredentials {
            hash,
            salt: row.get(1),
            iterations: row.get::<i32, _>(2) as u32,
            stored_key: row.get(3),
            server_key: row.get(4),
        }))
    }

    async fn exists(&self, host: &str, username: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM accounts WHERE host = $1 AND username = $2")
            .bind(host)
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn remove(&self, host: &str, username: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        for table in [
            "scram_credentials",
            "roster_items",
            "roster_versions",
            "subscription_requests",
            "offline_messages",
            "account_data",
        ] {
            // Table names are the literals above, not input.
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE host = $1 AND username = $2")))
                .bind(host)
                .bind(username)
                .execute(&mut *tx)
                .await?;
        }
        // Local contacts keep the item (it is theirs) without the subscription.
        let jid = format!("{username}@{host}");
        let owners = sqlx::query(
            "SELECT host, username FROM roster_items WHERE contact = $1 AND (subscription <> 'none' OR ask <> 0 OR approved <> 0)",
        )
        .bind(&jid)
        .fetch_all(&mut *tx)
        .await?;
        for owner in owners {
            let (owner_host, owner_user): (String, String) = (owner.try_get(0)?, owner.try_get(1)?);
            sqlx::query(
                "UPDATE roster_items SET subscription = 'none', ask = 0, approved = 0 \
                 WHERE host = $1 AND username = $2 AND contact = $3",
            )
            .bind(&owner_host)
            .bind(&owner_user)
            .bind(&jid)
            .execute(&mut *tx)
            .await?;
            crate::roster::bump_version(&mut tx, &owner_host, &owner_user).await?;
        }
        sqlx::query("DELETE FROM subscription_requests WHERE contact = $1").bind(&jid).execute(&mut *tx).await?;
        // XEP-0313: the account's archive goes with it.
        sqlx::query("DELETE FROM archive WHERE archive = $1").bind(&jid).execute(&mut *tx).await?;
        crate::pubsub::remove_account(&mut tx, &jid).await?;
        let done = sqlx::query("DELETE FROM accounts WHERE host = $1 AND username = $2")
            .bind(host)
            .bind(username)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list(&self, host: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT username FROM accounts WHERE host = $1 ORDER BY username")
            .bind(host)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
