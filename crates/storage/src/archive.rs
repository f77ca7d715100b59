//! Message archives (XEP-0313): append, page through by owner, peer, time
//! and id range, count, full-text search, replace (retraction tombstones),
//! delete by owner or age. One store for accounts' and rooms' archives: an
//! archive is named by its owner's bare JID.

use crate::{Dialect, Result, SqlStore, StoreError};
use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A message as archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// Order within the archive.
    pub seq: i64,
    /// The XEP-0359 id the archive gave it.
    pub stanza_id: String,
    /// Microseconds since the Unix epoch.
    pub stamp: i64,
    pub stanza: String,
}

/// A message to archive.
#[derive(Debug, Clone, Copy)]
pub struct NewArchived<'a> {
    pub archive: &'a str,
    pub stanza_id: &'a str,
    /// The other party's bare JID, and its resource (empty if none).
    pub peer: &'a str,
    pub peer_resource: &'a str,
    pub origin_id: Option<&'a str>,
    /// The owner sent it (else received it).
    pub outgoing: bool,
    pub stamp: i64,
    /// For full-text search.
    pub body: Option<&'a str>,
    pub stanza: &'a str,
}

/// Which messages of an archive a query is about (XEP-0313 §4.1.1 fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveFilter {
    /// A bare JID, and a resource to match exactly when `with` was a full JID.
    pub with: Option<(String, Option<String>)>,
    /// Inclusive bounds on the stamp, in microseconds.
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Exclusive bounds on the order (`after-id`, `before-id` resolved to `seq`).
    pub after_seq: Option<i64>,
    pub before_seq: Option<i64>,
    /// Only these stanza ids (`ids`), when not empty.
    pub ids: Vec<String>,
    /// Words the body must contain.
    pub text: Option<String>,
}

/// Where a page starts (XEP-0059 §2.2–2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFrom {
    /// The first messages after `seq` (or from the start), oldest first.
    After(Option<i64>),
    /// The last messages before `seq` (or up to the end).
    Before(Option<i64>),
}

/// One page, oldest first; `complete` when nothing more lies beyond it in
/// the direction of paging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePage {
    pub messages: Vec<ArchivedMessage>,
    pub complete: bool,
}

/// An append the archive writer has queued: its commit can be awaited.
#[must_use = "await `committed`, or say why the row need not be written yet"]
#[derive(Debug)]
pub struct ArchiveCommit(tokio::sync::oneshot::Receiver<std::result::Result<(), String>>);

impl ArchiveCommit {
    /// Resolves once the batch with this append is committed.
    pub async fn committed(self) -> Result<()> {
        self.0.await.map_err(|_| writer_gone())?.map_err(|e| StoreError::Database(sqlx::Error::Protocol(e)))
    }
}

#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// Queues a message for the archive, in call order (a bounded queue: it
    /// waits while the writer is behind); the commit is the handle's.
    async fn archive_enqueue(&self, message: &NewArchived<'_>) -> Result<ArchiveCommit>;
    /// Appends a message; returns once it is committed (in a batch with others).
    async fn archive_append(&self, message: &NewArchived<'_>) -> Result<()> {
        self.archive_enqueue(message).await?.committed().await
    }
    /// The order of the message with this stanza id, if the archive has it.
    async fn archive_seq(&self, archive: &str, stanza_id: &str) -> Result<Option<i64>>;
    async fn archive_page(
        &self,
        archive: &str,
        filter: &ArchiveFilter,
        from: PageFrom,
        max: usize,
    ) -> Result<ArchivePage>;
    /// How many messages match `filter` (XEP-0059 `count`).
    async fn archive_count(&self, archive: &str, filter: &ArchiveFilter) -> Result<u64>;
    /// The oldest and the newest message (XEP-0313 §5.1 metadata).
    async fn archive_ends(&self, archive: &str) -> Result<Option<(ArchivedMessage, ArchivedMessage)>>;
    /// Replaces the stanza (and drops the searchable body) of the message
    /// sent to `peer` (`outgoing`) or received from it, whose origin id (or
    /// else stanza id) is `id`: a retraction's tombstone. False when there
    /// is none.
    async fn archive_replace(&self, archive: &str, peer: &str, outgoing: bool, id: &str, stanza: &str) -> Result<bool>;
    /// Replaces the stanza (and drops the body) of the message with this
    /// stanza id: a moderator's tombstone (XEP-0425). False when there is none.
    async fn archive_replace_by_id(&self, archive: &str, stanza_id: &str, stanza: &str) -> Result<bool>;
    /// Deletes a whole archive (account or room removed).
    async fn archive_remove(&self, archive: &str) -> Result<()>;
    /// Deletes every message older than `stamp`; returns how many.
    async fn archive_expire(&self, stamp: i64) -> Result<u64>;
}

/// Appends waiting for the archive writer, and what each was told.
type Pending = (Append, tokio::sync::oneshot::Sender<std::result::Result<(), String>>);

/// Writes archive appends in batches: an append can wait for the commit of
/// its batch (an account's messages are archived before they are delivered;
/// a room's are not waited for), and the appends that arrive while
/// one batch commits go into the next, so one commit (one fsync) serves many
/// messages. One message a transaction, SQLite managed about 100 a second.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

/// Most appends in one transaction.
const BATCH: usize = 256;

impl Writer {
    fn start(pool: sqlx::AnyPool, dialect: Dialect) -> Self {
        let (queue, mut pending) = tokio::sync::mpsc::channel::<Pending>(4 * BATCH);
        tokio::spawn(async move {
            // A connection of its own, kept: an SQLite connection drops its
            // whole page cache whenever another connection has committed,
            // so batches taking turns on the pool's connections re-read
            // every index page they touch from the file.
            let mut connection: Option<sqlx::AnyConnection> = None;
            while let Some(first) = pending.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match pending.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let rows: Vec<&Append> = batch.iter().map(|(row, _)| row).collect();
                let result = insert(&pool, dialect, &mut connection, &rows).await.map_err(|e| {
                    tracing::error!(error = %e, messages = batch.len(), "archive batch not written");
                    // The next batch starts on a fresh connection.
                    connection = None;
                    e.to_string()
                });
                for (_, done) in batch {
                    let _ = done.send(result.clone());
                }
            }
        });
        Writer { queue }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

/// An append, owned, for the writer task.
#[derive(Debug)]
struct Append {
    archive: String,
    stanza_id: String,
    peer: String,
    peer_resource: String,
    origin_id: Option<String>,
    outgoing: bool,
    stamp: i64,
    body: Option<String>,
    stanza: String,
}

impl From<&NewArchived<'_>> for Append {
    fn from(m: &NewArchived<'_>) -> Self {
        Append {
            archive: m.archive.to_owned(),
            stanza_id: m.stanza_id.to_owned(),
            peer: m.peer.to_owned(),
            peer_resource: m.peer_resource.to_owned(),
            origin_id: m.origin_id.map(str::to_owned),
            outgoing: m.outgoing,
            stamp: m.stamp,
            body: m.body.map(str::to_owned),
            stanza: m.stanza.to_owned(),
        }
    }
}

/// Columns of one archived row, in the order `insert` binds them.
const INSERTED_COLUMNS: usize = 9;

/// Most rows in one statement: SQLite's FTS5 flushes its pending terms at
/// every statement (so one row a statement made the full-text index most of
/// a batch's cost), while sqlx maps each bind of a statement to its
/// parameter by a name lookup that is linear in the statement's parameters
/// (quadratic per statement: 256 rows of 9 binds spent more there than FTS5).
const ROWS_PER_STATEMENT: usize = 32;

/// The archive writer's SQLite settings, on its connection only. Its
/// commits are not synced one by one (WAL with `synchronous = NORMAL`: a
/// power cut, not a crash of the server, may lose the last commits) — the
/// archive is a copy of messages that are delivered or kept offline on
/// their own, and an fsync per batch was a tenth of its cost; the WAL is
/// checkpointed every 32 MiB instead of every 4 MiB, so an index page
/// written by many batches is copied into the database once, not per batch;
/// and a page cache of 16 MiB (default 2 MiB) keeps the archive's indexes
/// from being re-read from the file on every batch.
const WRITER_PRAGMAS: &str =
    "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 8192; PRAGMA cache_size = -16384";

/// Inserts in chunks of power-of-two sizes up to [`ROWS_PER_STATEMENT`]
/// (six distinct statements, kept by the prepared-statement cache), each
/// chunk one multi-row statement, all in one transaction on the writer's
/// connection (opened from `pool` when it has none).
async fn insert(
    pool: &sqlx::AnyPool,
    dialect: Dialect,
    connection: &mut Option<sqlx::AnyConnection>,
    rows: &[&Append],
) -> Result<()> {
    let connection = match connection {
        Some(connection) => connection,
        None => {
            let mut fresh = pool.acquire().await?.detach();
            if dialect == Dialect::Sqlite {
                sqlx::raw_sql(WRITER_PRAGMAS).execute(&mut fresh).await?;
            }
            connection.insert(fresh)
        }
    };
    let mut tx = sqlx::Connection::begin(connection).await?;
    let mut rest = rows;
    while !rest.is_empty() {
        let chunk_len = 1 << rest.len().min(ROWS_PER_STATEMENT).ilog2();
        let (chunk, tail) = rest.split_at(chunk_len);
        rest = tail;
        let mut query = sqlx::query(insert_statement(chunk_len));
        for m in chunk {
            query = query
                .bind(&m.archive)
                .bind(&m.stanza_id)
                .bind(&m.peer)
                .bind(&m.peer_resource)
                .bind(m.origin_id.as_deref())
                .bind(i16::from(m.outgoing))
                .bind(m.stamp)
                .bind(m.body.as_deref())
                .bind(&m.stanza);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `INSERT … VALUES ($1, …, $9), ($10, …)` for `rows` rows, made once per size.
fn insert_statement(rows: usize) -> &'static str {
    static STATEMENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| {
        (0..=ROWS_PER_STATEMENT.ilog2())
            .map(|size| {
                let tuples: Vec<String> = (0..1usize << size)
                    .map(|row| {
                        let params: Vec<String> =
                            (1..=INSERTED_COLUMNS).map(|c| format!("${}", row * INSERTED_COLUMNS + c)).collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                format!(
                    "INSERT INTO archive (archive, stanza_id, peer, peer_resource, origin_id, outgoing, stamp, body, stanza) \
                     VALUES {}",
                    tuples.join(", ")
                )
            })
            .collect()
    });
    &statements[rows.ilog2() as usize]
}

/// A bind value of a query built at run time.
enum Bind {
    Text(String),
    Int(i64),
}

/// `WHERE …` for `filter` on `archive`, with its binds, numbered from `$1`.
fn filter_sql(dialect: Dialect, archive: &str, filter: &ArchiveFilter) -> (String, Vec<Bind>) {
    let mut sql = String::from("archive = $1");
    let mut binds = vec![Bind::Text(archive.to_owned())];
    let mut push = |sql: &mut String, clause: &str, bind: Bind| {
        binds.push(bind);
        sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
    };
    if let Some((peer, resource)) = &filter.with {
        push(&mut sql, " AND peer = $?", Bind::Text(peer.clone()));
        if let Some(resource) = resource {
            push(&mut sql, " AND peer_resource = $?", Bind::Text(resource.clone()));
        }
    }
    for (bound, clause) in [
        (filter.start, " AND stamp >= $?"),
        (filter.end, " AND stamp <= $?"),
        (filter.after_seq, " AND seq > $?"),
        (filter.before_seq, " AND seq < $?"),
    ] {
        if let Some(bound) = bound {
            push(&mut sql, clause, Bind::Int(bound));
        }
    }
    if !filter.ids.is_empty() {
        sql.push_str(" AND stanza_id IN (");
        for (i, id) in filter.ids.iter().enumerate() {
            push(&mut sql, if i == 0 { "$?" } else { ", $?" }, Bind::Text(id.clone()));
        }
        sql.push(')');
    }
    if let Some(text) = &filter.text {
        match dialect {
            Dialect::Sqlite => push(
                &mut sql,
                " AND seq IN (SELECT rowid FROM archive_fts WHERE archive_fts MATCH $?)",
                Bind::Text(fts5_phrases(text)),
            ),
            Dialect::Postgres => push(
                &mut sql,
                " AND to_tsvector('simple', COALESCE(body, '')) @@ plainto_tsquery('simple', $?)",
                Bind::Text(text.clone()),
            ),
        }
    }
    (sql, binds)
}

/// The words of `text` as FTS5 phrases (all must match): quoted, so the
/// user's text is never read as FTS5 query syntax.
fn fts5_phrases(text: &str) -> String {
    text.split_whitespace().map(|w| format!("\"{}\"", w.replace('"', "\"\""))).collect::<Vec<_>>().join(" ")
}

/// `sql` is built from the literals above; every value is a bind.
fn query_with(sql: String, binds: &[Bind]) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    binds.iter().fold(sqlx::query(sqlx::AssertSqlSafe(sql)), |q, b| match b {
        Bind::Text(t) => q.bind(t.as_str()),
        Bind::Int(i) => q.bind(*i),
    })
}

fn message(row: &AnyRow) -> Result<ArchivedMessage> {
    Ok(ArchivedMessage {
        seq: row.try_get(0)?,
        stanza_id: row.try_get(1)?,
        stamp: row.try_get(2)?,
        stanza: row.try_get(3)?,
    })
}

const COLUMNS: &str = "seq, stanza_id, stamp, stanza";

#[async_trait]
impl ArchiveStore for SqlStore {
    async fn archive_enqueue(&self, m: &NewArchived<'_>) -> Result<ArchiveCommit> {
        let (done, committed) = tokio::sync::oneshot::channel();
        let writer = self.archive_writer.get_or_init(|| Writer::start(self.pool.clone(), self.dialect()));
        writer.queue.send((Append::from(m), done)).await.map_err(|_| writer_gone())?;
        Ok(ArchiveCommit(committed))
    }

    async fn archive_seq(&self, archive: &str, stanza_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT seq FROM archive WHERE archive = $1 AND stanza_id = $2")
            .bind(archive)
            .bind(stanza_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn archive_page(
        &self,
        archive: &str,
        filter: &ArchiveFilter,
        from: PageFrom,
        max: usize,
    ) -> Result<ArchivePage> {
        let mut filter = filter.clone();
        let backwards = match from {
            PageFrom::After(seq) => {
                filter.after_seq = filter.after_seq.max(seq);
                false
            }
            PageFrom::Before(seq) => {
                filter.before_seq = match (filter.before_seq, seq) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                true
            }
        };
        let (where_, binds) = filter_sql(self.dialect(), archive, &filter);
        // One more than asked: whether it exists says if the page is the last.
        let limit = i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1);
        let order = if backwards { "DESC" } else { "ASC" };
        let sql = format!("SELECT {COLUMNS} FROM archive WHERE {where_} ORDER BY seq {order} LIMIT {limit}");
        let rows = query_with(sql, &binds).fetch_all(&self.pool).await?;
        let mut messages = rows.iter().map(message).collect::<Result<Vec<_>>>()?;
        let complete = messages.len() <= max;
        messages.truncate(max);
        if backwards {
            messages.reverse();
        }
        Ok(ArchivePage { messages, complete })
    }

    async fn archive_count(&self, archive: &str, filter: &ArchiveFilter) -> Result<u64> {
        let (where_, binds) = filter_sql(self.dialect(), archive, filter);
        let sql = format!("SELECT COUNT(*) FROM archive WHERE {where_}");
        let count: i64 = query_with(sql, &binds).fetch_one(&self.pool).await?.try_get(0)?;
        Ok(count.try_into().unwrap_or_default())
    }

    async fn archive_ends(&self, archive: &str) -> Result<Option<(ArchivedMessage, ArchivedMessage)>> {
        let end =
            |order: &str| format!("SELECT {COLUMNS} FROM archive WHERE archive = $1 ORDER BY seq {order} LIMIT 1");
        let first = sqlx::query(sqlx::AssertSqlSafe(end("ASC"))).bind(archive).fetch_optional(&self.pool).await?;
        let last = sqlx::query(sqlx::AssertSqlSafe(end("DESC"))).bind(archive).fetch_optional(&self.pool).await?;
        match (first, last) {
            (Some(first), Some(last)) => Ok(Some((message(&first)?, message(&last)?))),
            _ => Ok(None),
        }
    }

    async fn archive_replace(&self, archive: &str, peer: &str, outgoing: bool, id: &str, stanza: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE archive SET stanza = $5, body = NULL WHERE seq = (SELECT seq FROM archive \
             WHERE archive = $1 AND peer = $2 AND outgoing = $3 AND (origin_id = $4 OR stanza_id = $4) \
             ORDER BY seq DESC LIMIT 1)",
        )
        .bind(archive)
        .bind(peer)
        .bind(i16::from(outgoing))
        .bind(id)
        .bind(stanza)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn archive_replace_by_id(&self, archive: &str, stanza_id: &str, stanza: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE archive SET stanza = $3, body = NULL WHERE archive = $1 AND stanza_id = $2")
            .bind(archive)
            .bind(stanza_id)
            .bind(stanza)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn archive_remove(&self, archive: &str) -> Result<()> {
        sqlx::query("DELETE FROM archive WHERE archive = $1").bind(archive).execute(&self.pool).await?;
        Ok(())
    }

    async fn archive_expire(&self, stamp: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM archive WHERE stamp < $1").bind(stamp).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}
