//! The sqlx-backed store shared by every feature's storage trait.

use crate::{Result, StoreError};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Dialect::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }
}

#[derive(Clone, Debug)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    dialect: Dialect,
    /// Archive appends, written in batches (`archive.rs`), made at first use.
    pub(crate) archive_writer: std::sync::Arc<std::sync::OnceLock<crate::archive::Writer>>,
}

impl SqlStore {
    /// Connects (creating an SQLite file if missing) and applies migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let url = match dialect {
            // Create the file on first start.
            Dialect::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // Per connection: statement journals stay in memory
                        // instead of temporary files. The page cache stays
                        // SQLite's 2 MiB: each pooled connection fills its
                        // own with what logins read (16 MiB each was 3 KiB
                        // per idle client at 19,000); only the archive
                        // writer's connection gets a big one.
                        sqlx::raw_sql("PRAGMA temp_store = MEMORY").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if dialect == Dialect::Sqlite {
            // WAL lets readers proceed during writes; the mode is stored in
            // the file, so setting it once applies to every connection.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
        }
        let store = SqlStore { pool, dialect, archive_writer: Default::default() };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?,
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
