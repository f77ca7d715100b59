//! XEP-0060 publish-subscribe data of every service (an account's PEP
//! service, keyed by its bare JID, or a service domain): nodes with their
//! configuration (opaque JSON owned by the module), items (payloads as
//! serialized XML, forwarded as stored), affiliations and subscriptions.

use crate::accounts::is_unique_violation;
use crate::{Result, SqlStore, StoreError};
use async_trait::async_trait;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubItem {
    pub id: String,
    pub publisher: String,
    /// The payload element, serialized.
    pub payload: String,
    /// When it was published, in Unix milliseconds.
    pub published_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubSubscription {
    pub node: String,
    pub jid: String,
    pub subid: String,
    /// `subscribed` or `pending`.
    pub state: String,
    /// XEP-0060 §6.3 `pubsub#deliver`: whether notifications are sent.
    pub deliver: bool,
}

#[async_trait]
pub trait PubsubStore: Send + Sync {
    /// The node's configuration, if the node exists.
    async fn pubsub_node(&self, service: &str, node: &str) -> Result<Option<String>>;
    /// Names of the service's nodes, sorted.
    async fn pubsub_nodes(&self, service: &str) -> Result<Vec<String>>;
    /// Creates a node with `owner` as its owner; `AlreadyExists` if it exists.
    async fn create_pubsub_node(&self, service: &str, node: &str, config: &str, owner: &str) -> Result<()>;
    /// Replaces the configuration; `NotFound` if there is no such node.
    async fn configure_pubsub_node(&self, service: &str, node: &str, config: &str) -> Result<()>;
    /// Deletes the node with its items, affiliations and subscriptions.
    async fn delete_pubsub_node(&self, service: &str, node: &str) -> Result<bool>;
    /// Stores an item (replacing one with its id, which becomes the last
    /// published), then keeps only the newest `keep` items.
    async fn publish_pubsub_item(&self, service: &str, node: &str, item: &PubsubItem, keep: usize) -> Result<()>;
    /// The node's items, newest first, at most `limit`.
    async fn pubsub_items(&self, service: &str, node: &str, limit: usize) -> Result<Vec<PubsubItem>>;
    async fn pubsub_item(&self, service: &str, node: &str, id: &str) -> Result<Option<PubsubItem>>;
    async fn retract_pubsub_item(&self, service: &str, node: &str, id: &str) -> Result<bool>;
    /// Deletes every item of the node.
    async fn purge_pubsub_node(&self, service: &str, node: &str) -> Result<()>;
    /// (jid, affiliation) of one node, by JID.
    async fn pubsub_affiliations(&self, service: &str, node: &str) -> Result<Vec<(String, String)>>;
    /// (node, affiliation) of one JID on every node of the service.
    async fn pubsub_affiliations_of(&self, service: &str, jid: &str) -> Result<Vec<(String, String)>>;
    /// Sets (`Some`) or removes (`None`, i.e. "none") an affiliation.
    async fn set_pubsub_affiliation(
        &self,
        service: &str,
        node: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<()>;
    /// Subscriptions to one node.
    async fn pubsub_subscriptions(&self, service: &str, node: &str) -> Result<Vec<PubsubSubscription>>;
    /// Subscriptions of one JID (exactly as subscribed) on the service.
    async fn pubsub_subscriptions_of(&self, service: &str, jid: &str) -> Result<Vec<PubsubSubscription>>;
    /// Adds or replaces the subscription of `sub.jid` to `sub.node`.
    async fn set_pubsub_subscription(&self, service: &str, sub: &PubsubSubscription) -> Result<()>;
    async fn remove_pubsub_subscription(&self, service: &str, node: &str, jid: &str) -> Result<bool>;
}

fn item_from_row(row: &sqlx::any::AnyRow) -> Result<PubsubItem> {
    Ok(PubsubItem {
        id: row.try_get(0)?,
        publisher: row.try_get(1)?,
        payload: row.try_get(2)?,
        published_at: row.try_get(3)?,
    })
}

fn subscription_from_row(row: &sqlx::any::AnyRow) -> Result<PubsubSubscription> {
    Ok(PubsubSubscription {
        node: row.try_get(0)?,
        jid: row.try_get(1)?,
        subid: row.try_get(2)?,
        state: row.try_get(3)?,
        deliver: row.try_get::<i32, _>(4)? != 0,
    })
}

fn pairs(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<(String, String)>> {
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// The tables holding a node's data, in deletion order (the node last).
const NODE_TABLES: [&str; 4] = ["pubsub_items", "pubsub_affiliations", "pubsub_subscriptions", "pubsub_nodes"];

/// Removes an account's PEP service and its subscriptions and affiliations
/// on every other service (XEP-0077 §3.2: nothing of it is left).
pub(crate) async fn remove_account(tx: &mut sqlx::AnyConnection, bare: &str) -> Result<()> {
    for table in NODE_TABLES {
        // Table names are the literals above, not input.
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE service = $1")))
            .bind(bare)
            .execute(&mut *tx)
            .await?;
    }
    let resources = format!("{}/%", bare.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    for table in ["pubsub_affiliations", "pubsub_subscriptions"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE jid = $1 OR jid LIKE $2 ESCAPE '\\'")))
            .bind(bare)
            .bind(&resources)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl PubsubStore for SqlStore {
    async fn pubsub_node(&self, service: &str, node: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT config FROM pubsub_nodes WHERE service = $1 AND node = $2")
            .bind(service)
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    async fn pubsub_nodes(&self, service: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT node FROM pubsub_nodes WHERE service = $1 ORDER BY node")
            .bind(service)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get(0).map_err(Into::into)).collect()
    }

    async fn create_pubsub_node(&self, service: &str, node: &str, config: &str, owner: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query("INSERT INTO pubsub_nodes (service, node, config) VALUES ($1, $2, $3)")
            .bind(service)
            .bind(node)
            .bind(config)
            .execute(&mut *tx)
            .await;
        match created {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists),
            other => other?,
        };
        sqlx::query("INSERT INTO pubsub_affiliations (service, node, jid, affiliation) VALUES ($1, $2, $3, 'owner')")
            .bind(service)
            .bind(node)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn configure_pubsub_node(&self, service: &str, node: &str, config: &str) -> Result<()> {
        let done = sqlx::query("UPDATE pubsub_nodes SET config = $3 WHERE service = $1 AND node = $2")
            .bind(service)
            .bind(node)
            .bind(config)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_pubsub_node(&self, service: &str, node: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = 0;
        for table in NODE_TABLES {
            // Table names are the literals above, not input.
            deleted = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE service = $1 AND node = $2")))
                .bind(service)
                .bind(node)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn publish_pubsub_item(&self, service: &str, node: &str, item: &PubsubItem, keep: usize) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let next: i64 =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM pubsub_items WHERE service = $1 AND node = $2")
                .bind(service)
                .bind(node)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        sqlx::query(
            "INSERT INTO pubsub_items (service, node, item_id, publisher, payload, published_at, seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (service, node, item_id) DO UPDATE \
             SET publisher = excluded.publisher, payload = excluded.payload, \
             published_at = excluded.published_at, seq = excluded.seq",
        )
        .bind(service)
        .bind(node)
        .bind(&item.id)
        .bind(&item.publisher)
        .bind(&item.payload)
        .bind(item.published_at)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        // Everything older than the `keep` newest goes.
        sqlx::query("DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND seq <= $3")
            .bind(service)
            .bind(node)
            .bind(next - i64::try_from(keep).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pubsub_items(&self, service: &str, node: &str, limit: usize) -> Result<Vec<PubsubItem>> {
        let rows = sqlx::query(
            "SELECT item_id, publisher, payload, published_at FROM pubsub_items WHERE service = $1 AND node = $2 \
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(service)
        .bind(node)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(item_from_row).collect()
    }

    async fn pubsub_item(&self, service: &str, node: &str, id: &str) -> Result<Option<PubsubItem>> {
        let row = sqlx::query(
            "SELECT item_id, publisher, payload, published_at FROM pubsub_items WHERE service = $1 AND node = $2 AND item_id = $3",
        )
        .bind(service)
        .bind(node)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(item_from_row).transpose()
    }

    async fn retract_pubsub_item(&self, service: &str, node: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND item_id = $3")
            .bind(service)
            .bind(node)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_pubsub_node(&self, service: &str, node: &str) -> Result<()> {
        sqlx::query("DELETE FROM pubsub_items WHERE service = $1 AND node = $2")
            .bind(service)
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn pubsub_affiliations(&self, service: &str, node: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT jid, affiliation FROM pubsub_affiliations WHERE service = $1 AND node = $2 ORDER BY jid",
        )
        .bind(service)
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        pairs(rows)
    }

    async fn pubsub_affiliations_of(&self, service: &str, jid: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT node, affiliation FROM pubsub_affiliations WHERE service = $1 AND jid = $2 ORDER BY node",
        )
        .bind(service)
        .bind(jid)
        .fetch_all(&self.pool)
        .await?;
        pairs(rows)
    }

    async fn set_pubsub_affiliation(
        &self,
        service: &str,
        node: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<()> {
        let query = match affiliation {
            Some(_) => {
                "INSERT INTO pubsub_affiliations (service, node, jid, affiliation) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (service, node, jid) DO UPDATE SET affiliation = excluded.affiliation"
            }
            None => "DELETE FROM pubsub_affiliations WHERE service = $1 AND node = $2 AND jid = $3",
        };
        let mut q = sqlx::query(query).bind(service).bind(node).bind(jid);
        if let Some(affiliation) = affiliation {
            q = q.bind(affiliation);
        }
        q.execute(&self.pool).await?;
        Ok(())
    }

    async fn pubsub_subscriptions(&self, service: &str, node: &str) -> Result<Vec<PubsubSubscription>> {
        let rows = sqlx::query(
            "SELECT node, jid, subid, state, deliver FROM pubsub_subscriptions WHERE service = $1 AND node = $2 ORDER BY jid",
        )
        .bind(service)
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn pubsub_subscriptions_of(&self, service: &str, jid: &str) -> Result<Vec<PubsubSubscription>> {
        let rows = sqlx::query(
            "SELECT node, jid, subid, state, deliver FROM pubsub_subscriptions WHERE service = $1 AND jid = $2 ORDER BY node",
        )
        .bind(service)
        .bind(jid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    async fn set_pubsub_subscription(&self, service: &str, sub: &PubsubSubscription) -> Result<()> {
        sqlx::query(
            "INSERT INTO pubsub_subscriptions (service, node, jid, subid, state, deliver) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (service, node, jid) DO UPDATE \
             SET subid = excluded.subid, state = excluded.state, deliver = excluded.deliver",
        )
        .bind(service)
        .bind(&sub.node)
        .bind(&sub.jid)
        .bind(&sub.subid)
        .bind(&sub.state)
        .bind(sub.deliver as i32)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_pubsub_subscription(&self, service: &str, node: &str, jid: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pubsub_subscriptions WHERE service = $1 AND node = $2 AND jid = $3")
            .bind(service)
            .bind(node)
            .bind(jid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
