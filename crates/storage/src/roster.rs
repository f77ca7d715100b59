//! Rosters (RFC 6121 §2), their XEP-0237 versions, and inbound subscription
//! requests waiting for the user's answer (RFC 6121 §3.1.3).

use crate::{Result, SqlStore};
use async_trait::async_trait;
use sqlx::Row;

/// The subscription state of a roster item (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    pub fn with(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub contact: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// The user asked to subscribe and the contact has not answered ("pending out").
    pub ask: bool,
    /// The user pre-approved the contact's subscription (RFC 6121 §3.4).
    pub approved: bool,
    pub groups: Vec<String>,
}

impl RosterItem {
    pub fn new(contact: impl Into<String>) -> Self {
        RosterItem { contact: contact.into(), ..Default::default() }
    }
}

#[async_trait]
pub trait RosterStore: Send + Sync {
    /// The whole roster and its version (0 for an account that never had one).
    async fn roster(&self, host: &str, username: &str) -> Result<(i64, Vec<RosterItem>)>;
    async fn roster_item(&self, host: &str, username: &str, contact: &str) -> Result<Option<RosterItem>>;
    /// Inserts or replaces an item; returns the new roster version.
    async fn put_roster_item(&self, host: &str, username: &str, item: &RosterItem) -> Result<i64>;
    /// Removes an item; returns the new roster version, `None` if there was no item.
    async fn remove_roster_item(&self, host: &str, username: &str, contact: &str) -> Result<Option<i64>>;
    async fn roster_size(&self, host: &str, username: &str) -> Result<usize>;
    /// Inbound subscription requests not yet answered: (contact, stanza XML).
    async fn subscription_requests(&self, host: &str, username: &str) -> Result<Vec<(String, String)>>;
    async fn add_subscription_request(&self, host: &str, username: &str, contact: &str, stanza: &str) -> Result<()>;
    /// Forgets a request; false if there was none.
    async fn remove_subscription_request(&self, host: &str, username: &str, contact: &str) -> Result<bool>;
}

/// The item columns in the order `item_from_row` reads them.
macro_rules! select_items {
    ($where:literal) => {
        concat!("SELECT contact, name, subscription, ask, approved, groups FROM roster_items WHERE ", $where)
    };
}

fn item_from_row(row: &sqlx::any::AnyRow) -> Result<RosterItem> {
    let groups: String = row.try_get(5)?;
    Ok(RosterItem {
        contact: row.try_get(0)?,
        name: row.try_get(1)?,
        subscription: Subscription::from_name(&row.try_get::<String, _>(2)?).unwrap_or_default(),
        ask: row.try_get::<i32, _>(3)? != 0,
        approved: row.try_get::<i32, _>(4)? != 0,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
    })
}

/// Bumps and returns the account's roster version inside `tx`.
pub(crate) async fn bump_version(tx: &mut sqlx::AnyConnection, host: &str, username: &str) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO roster_versions (host, username, version) VALUES ($1, $2, 1) \
         ON CONFLICT (host, username) DO UPDATE SET version = roster_versions.version + 1 \
         RETURNING version",
    )
    .bind(host)
    .bind(username)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.try_get(0)?)
}

pub(crate) async fn upsert_item(
    tx: &mut sqlx::AnyConnection,
    host: &str,
    username: &str,
    item: &RosterItem,
) -> Result<()> {
    let groups = serde_json::to_string(&item.groups).expect("strings serialize");
    sqlx::query(
        "INSERT INTO roster_items (host, username, contact, name, subscription, ask, approved, groups) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (host, username, contact) DO UPDATE SET name = excluded.name, \
         subscription = excluded.subscription, ask = excluded.ask, approved = excluded.approved, \
         groups = excluded.groups",
    )
    .bind(host)
    .bind(username)
    .bind(&item.contact)
    .bind(item.name.as_deref())
    .bind(item.subscription.as_str())
    .bind(item.ask as i32)
    .bind(item.approved as i32)
    .bind(groups)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl RosterStore for SqlStore {
    async fn roster(&self, host: &str, username: &str) -> Result<(i64, Vec<RosterItem>)> {
        let mut conn = self.pool.acquire().await?;
        let version = sqlx::query("SELECT version FROM roster_versions WHERE host = $1 AND username = $2")
            .bind(host)
            .bind(username)
            .fetch_optional(&mut *conn)
            .await?
            .map_or(Ok(0), |r| r.try_get(0))?;
        let rows = sqlx::query(select_items!("host = $1 AND username = $2 ORDER BY contact"))
            .bind(host)
            .bind(username)
            .fetch_all(&mut *conn)
            .await?;
        let items = rows.iter().map(item_from_row).collect::<Result<_>>()?;
        Ok((version, items))
    }

    async fn roster_item(&self, host: &str, username: &str, contact: &str) -> Result<Option<RosterItem>> {
        let row = sqlx::query(select_items!("host = $1 AND username = $2 AND contact = $3"))
            .bind(host)
            .bind(username)
            .bind(contact)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(item_from_row).transpose()
    }

    async fn put_roster_item(&self, host: &str, username: &str, item: &RosterItem) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        upsert_item(&mut tx, host, username, item).await?;
        let version = bump_version(&mut tx, host, username).await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn remove_roster_item(&self, host: &str, username: &str, contact: &str) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM roster_items WHERE host = $1 AND username = $2 AND contact = $3")
            .bind(host)
            .bind(username)
            .bind(contact)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let version = bump_version(&mut tx, host, username).await?;
        tx.commit().await?;
        Ok(Some(version))
    }

    async fn roster_size(&self, host: &str, username: &str) -> Result<usize> {
        let row = sqlx::query("SELECT COUNT(*) FROM roster_items WHERE host = $1 AND username = $2")
            .bind(host)
            .bind(username)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? as usize)
    }

    async fn subscription_requests(&self, host: &str, username: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT contact, stanza FROM subscription_requests WHERE host = $1 AND username = $2 ORDER BY contact",
        )
        .bind(host)
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn add_subscription_request(&self, host: &str, username: &str, contact: &str, stanza: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO subscription_requests (host, username, contact, stanza) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (host, username, contact) DO UPDATE SET stanza = excluded.stanza",
        )
        .bind(host)
        .bind(username)
        .bind(contact)
        .bind(stanza)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_subscription_request(&self, host: &str, username: &str, contact: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM subscription_requests WHERE host = $1 AND username = $2 AND contact = $3")
            .bind(host)
            .bind(username)
            .bind(contact)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
