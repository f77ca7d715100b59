//! Storage: one trait per kind of data, implemented over sqlx for SQLite (the
//! embedded default) and PostgreSQL, chosen by the database URL.
//!
//! The SQL here is written once for both dialects (numbered `$n` parameters,
//! standard types) and run through sqlx's `Any` driver; the schema differs
//! per dialect only where the types do, so each has its own migrations.

mod account_data;
mod accounts;
mod archive;
mod offline;
mod pubsub;
mod roster;
mod sql;

pub use account_data::AccountDataStore;
pub use accounts::AccountStore;
pub use archive::{ArchiveCommit, ArchiveFilter, ArchivePage, ArchiveStore, ArchivedMessage, NewArchived, PageFrom};
pub use offline::{OfflineMessage, OfflineStore};
pub use pubsub::{PubsubItem, PubsubStore, PubsubSubscription};
pub use roster::{RosterItem, RosterStore, Subscription};
pub use sql::{Dialect, SqlStore};

/// Every kind of data the server keeps, as one object for the server to hold.
pub trait Store: AccountStore + RosterStore + OfflineStore + AccountDataStore + ArchiveStore + PubsubStore {}

impl<T: AccountStore + RosterStore + OfflineStore + AccountDataStore + ArchiveStore + PubsubStore> Store for T {}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    #[error("not found")]
    NotFound,
    #[error("unsupported database URL {0:?} (use sqlite://… or postgres://…)")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
