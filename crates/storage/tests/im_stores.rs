//! The IM stores on a real engine: rosters and subscription requests (RFC 6121
//! §2 and §3, versions per XEP-0237), offline messages (XEP-0160), small
//! per-account documents (XEP-0049, XEP-0054, XEP-0191), and what removing an
//! account does to all of them (XEP-0077 §3.2).
//!
//! Every test runs twice: `sqlite::NAME` on a database file in a temp dir, and
//! `postgres::NAME` on a fresh database of its own (created through
//! STARLING_DATABASE_URL, whose role needs CREATEDB, and dropped afterwards)
//! when that variable is a `postgres://` URL, as `.ci/run` arranges. They are
//! `#[ignore]`d, so a run without PostgreSQL reports them skipped; the
//! PostgreSQL pass of `scripts/test` includes them.

use sqlx::Connection;
use starling_sasl::{HashAlg, ScramCredentials};
use starling_storage::{
    AccountDataStore, AccountStore, ArchiveFilter, ArchiveStore, NewArchived, OfflineMessage, OfflineStore, PageFrom,
    PubsubItem, PubsubStore, PubsubSubscription, RosterItem, RosterStore, SqlStore, StoreError, Subscription,
};
use std::time::Duration;

const HOST: &str = "example.com";
const OTHER_HOST: &str = "other.example";

// ---------------------------------------------------------------- engines

/// The database one test runs on.
struct Engine {
    store: SqlStore,
    url: String,
    _dir: Option<tempfile::TempDir>,
    /// Declared after `store`: the database is dropped after the pool.
    _pg: Option<PgDatabase>,
}

impl Engine {
    async fn sqlite() -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("im.db").display());
        let store = SqlStore::open(&url, 4).await.unwrap();
        Engine { store, url, _dir: Some(dir), _pg: None }
    }

    async fn postgres() -> Option<Engine> {
        let admin_url = std::env::var("STARLING_DATABASE_URL").ok().filter(|u| u.starts_with("postgres"))?;
        let db = PgDatabase::create(&admin_url).await;
        let store = SqlStore::open(&db.url, 4).await.unwrap();
        Some(Engine { store, url: db.url.clone(), _dir: None, _pg: Some(db) })
    }

    /// Another store on the same database, as after a server restart (the
    /// migrations run again and must change nothing).
    async fn reopen(&self) -> SqlStore {
        SqlStore::open(&self.url, 2).await.unwrap()
    }
}

/// A fresh PostgreSQL database, dropped (with whatever still connects to it)
/// when this is, also when the test panicked.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> PgDatabase {
        let salt: u32 = rand_u32();
        let name = format!("starling_t_{}_{salt:08x}", std::process::id());
        let url = with_database(admin_url, &name);
        let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to STARLING_DATABASE_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE (the role needs CREATEDB)");
        conn.close().await.unwrap();
        PgDatabase { admin_url: admin_url.to_owned(), name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // The test's runtime may be gone or panicking: a thread and runtime of our own.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// Unique enough across the tests of this process and parallel runs.
fn rand_u32() -> u32 {
    use std::hash::BuildHasher;
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one((n, std::time::SystemTime::now())) as u32
}

/// `url` with its database (the path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let authority = url.find("://").expect("URL with a scheme") + 3;
    let (base, query) = url.split_at(url[authority..].find('?').map_or(url.len(), |q| authority + q));
    let path = base[authority..].find('/').map_or(base.len(), |p| authority + p);
    format!("{}/{name}{query}", &base[..path])
}

/// `sqlite::NAME` and `postgres::NAME` for each `async fn NAME(&Engine)`.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let engine = super::Engine::sqlite().await;
                    super::$test(&engine).await;
                    engine.store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                // Reported as ignored (skipped) without a database; the
                // PostgreSQL pass of scripts/test runs them with --include-ignored.
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs STARLING_DATABASE_URL=postgres://… (scripts/test runs it)"]
                async fn $test() {
                    let engine = super::Engine::postgres().await.expect("STARLING_DATABASE_URL is a postgres:// URL");
                    super::$test(&engine).await;
                    engine.store.close().await;
                }
            )*
        }
    };
}

on_both_engines!(
    roster_of_a_new_account_is_empty_at_version_zero,
    roster_items_keep_every_attribute_and_each_change_is_a_new_version,
    rosters_are_per_account_and_per_host,
    concurrent_roster_changes_get_unique_versions,
    subscription_requests_wait_one_per_contact,
    offline_messages_keep_arrival_order_up_to_the_limit,
    concurrent_offline_pushes_respect_the_limit,
    account_data_is_per_account_and_per_store,
    removing_an_account_deletes_its_rows_and_ends_subscriptions_to_it,
    archive_pages_both_ways_with_filters_and_search,
    archive_tombstones_expiry_and_removal,
    concurrent_archive_appends_are_all_committed_and_searchable,
    pubsub_nodes_items_affiliations_and_subscriptions,
    removing_an_account_removes_its_pep_nodes_and_its_pubsub_subscriptions,
);

// ---------------------------------------------------------------- helpers

fn creds(password: &str) -> Vec<ScramCredentials> {
    HashAlg::ALL.into_iter().map(|h| ScramCredentials::generate(h, password, 4096).unwrap()).collect()
}

fn item(contact: &str, subscription: Subscription) -> RosterItem {
    RosterItem { subscription, ..RosterItem::new(contact) }
}

fn jid(user: &str) -> String {
    format!("{user}@{HOST}")
}

fn stanzas(messages: &[OfflineMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.stanza.as_str()).collect()
}

// ---------------------------------------------------------------- rosters

async fn roster_of_a_new_account_is_empty_at_version_zero(e: &Engine) {
    let s = &e.store;
    assert_eq!(s.roster(HOST, "alice").await.unwrap(), (0, vec![]));
    assert_eq!(s.roster_size(HOST, "alice").await.unwrap(), 0);
    assert_eq!(s.roster_item(HOST, "alice", &jid("bob")).await.unwrap(), None);
    // RFC 6121 §2.5: removing an item that is not there is an error for the
    // client and no roster modification, so no new version (XEP-0237 §2.4).
    assert_eq!(s.remove_roster_item(HOST, "alice", &jid("bob")).await.unwrap(), None);
    assert_eq!(s.roster(HOST, "alice").await.unwrap().0, 0);
    assert!(s.subscription_requests(HOST, "alice").await.unwrap().is_empty());
}

async fn roster_items_keep_every_attribute_and_each_change_is_a_new_version(e: &Engine) {
    let s = &e.store;
    // RFC 6121 §2.1.2: name, subscription, ask ("pending out", §2.1.2.2),
    // approved (pre-approval, §2.1.2.1 and §3.4) and groups (§2.1.2.6), with
    // text that needs escaping in SQL and JSON.
    let bob = RosterItem {
        name: Some("Bob «B» O'Brien; DROP TABLE roster_items; --".into()),
        groups: vec!["Friends".into(), "Work \"HQ\"".into(), "Ψυχή".into(), r"back\slash".into(), "".into()],
        ..item(&jid("bob"), Subscription::Both)
    };
    let carol = RosterItem { ask: true, ..item(&jid("carol"), Subscription::None) };
    let dave = RosterItem { approved: true, ..item("dave@remote.example", Subscription::To) };
    let romeo = item("romeo@montague.example", Subscription::From);

    let mut version = 0;
    for it in [&romeo, &dave, &carol, &bob] {
        // XEP-0237 §2.2: the version is opaque to clients; Starling counts,
        // and every modification gets a new, larger one.
        let v = s.put_roster_item(HOST, "alice", it).await.unwrap();
        assert!(v > version, "version {v} after {version}");
        version = v;
        assert_eq!(s.roster_item(HOST, "alice", &it.contact).await.unwrap().as_ref(), Some(it));
    }
    // The whole roster, ordered by contact, at the latest version.
    let want = vec![bob.clone(), carol.clone(), dave.clone(), romeo.clone()];
    assert_eq!(s.roster(HOST, "alice").await.unwrap(), (version, want.clone()));
    assert_eq!(s.roster_size(HOST, "alice").await.unwrap(), 4);

    // RFC 6121 §2.1.5 / §2.4: a roster set replaces the item as a whole, so
    // a missing name or group list clears the stored one.
    let bob2 = RosterItem { subscription: Subscription::To, ..RosterItem::new(jid("bob")) };
    let v = s.put_roster_item(HOST, "alice", &bob2).await.unwrap();
    assert!(v > version);
    version = v;
    assert_eq!(s.roster_item(HOST, "alice", &jid("bob")).await.unwrap(), Some(bob2.clone()));
    assert_eq!(s.roster_size(HOST, "alice").await.unwrap(), 4);

    // RFC 6121 §2.5: removal is a modification with its own version.
    let v = s.remove_roster_item(HOST, "alice", &jid("carol")).await.unwrap().expect("carol was there");
    assert!(v > version);
    version = v;
    assert_eq!(s.roster_item(HOST, "alice", &jid("carol")).await.unwrap(), None);
    assert_eq!(s.remove_roster_item(HOST, "alice", &jid("carol")).await.unwrap(), None);
    let want = vec![bob2, dave, romeo];
    assert_eq!(s.roster(HOST, "alice").await.unwrap(), (version, want.clone()));

    // What a restarted server reads back (migrations run again as no-ops).
    let again = e.reopen().await;
    assert_eq!(again.roster(HOST, "alice").await.unwrap(), (version, want));
    again.close().await;
}

async fn rosters_are_per_account_and_per_host(e: &Engine) {
    let s = &e.store;
    let a1 = s.put_roster_item(HOST, "alice", &item(&jid("bob"), Subscription::Both)).await.unwrap();
    let a2 = s.put_roster_item(HOST, "alice", &item(&jid("carol"), Subscription::To)).await.unwrap();
    // Same username on another virtual host: another account.
    let o1 = s.put_roster_item(OTHER_HOST, "alice", &item(&jid("dave"), Subscription::From)).await.unwrap();
    let b1 = s.put_roster_item(HOST, "bob", &item(&jid("alice"), Subscription::Both)).await.unwrap();
    assert!(a2 > a1);
    // Each account counts its own versions.
    assert_eq!(o1, a1);
    assert_eq!(b1, a1);

    let (v, items) = s.roster(HOST, "alice").await.unwrap();
    assert_eq!(v, a2);
    assert_eq!(items.iter().map(|i| i.contact.as_str()).collect::<Vec<_>>(), [jid("bob"), jid("carol")]);
    let (v, items) = s.roster(OTHER_HOST, "alice").await.unwrap();
    assert_eq!((v, items), (o1, vec![item(&jid("dave"), Subscription::From)]));
    assert_eq!(s.roster_item(OTHER_HOST, "alice", &jid("bob")).await.unwrap(), None);

    // Removing bob's item for alice touches neither alice's roster nor hers on the other host.
    s.remove_roster_item(HOST, "bob", &jid("alice")).await.unwrap().unwrap();
    assert_eq!(s.roster(HOST, "alice").await.unwrap().0, a2);
    assert_eq!(s.roster_size(HOST, "alice").await.unwrap(), 2);
    assert_eq!(s.roster_size(OTHER_HOST, "alice").await.unwrap(), 1);
    assert_eq!(s.roster_size(HOST, "bob").await.unwrap(), 0);
}

async fn concurrent_roster_changes_get_unique_versions(e: &Engine) {
    // XEP-0237 §2.4: roster pushes carry versions that MUST be unique, also
    // when several sessions of the account change the roster at once.
    const N: usize = 16;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let s = e.store.clone();
            tokio::spawn(async move {
                s.put_roster_item(HOST, "alice", &item(&format!("c{i:02}@{HOST}"), Subscription::None)).await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(tokio::time::timeout(Duration::from_secs(30), t).await.unwrap().unwrap().unwrap());
    }
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), N, "duplicate versions: {versions:?}");
    let (v, items) = e.store.roster(HOST, "alice").await.unwrap();
    assert_eq!((v, items.len()), (*versions.last().unwrap(), N));
}

async fn subscription_requests_wait_one_per_contact(e: &Engine) {
    let s = &e.store;
    // RFC 6121 §3.1.3: an inbound request the user has not answered is kept
    // (and presented again at the next login); a new request from the same
    // contact replaces the stored one.
    let from_romeo = "<presence from='romeo@montague.example' to='juliet@example.com' type='subscribe'>\
                      <status>Wherefore art thou? «ромео»</status></presence>";
    let from_mercutio = "<presence from='mercutio@example.com' type='subscribe'/>";
    s.add_subscription_request(HOST, "juliet", "romeo@montague.example", "<presence type='subscribe'/>").await.unwrap();
    s.add_subscription_request(HOST, "juliet", "mercutio@example.com", from_mercutio).await.unwrap();
    s.add_subscription_request(HOST, "juliet", "romeo@montague.example", from_romeo).await.unwrap();
    let want = vec![
        ("mercutio@example.com".to_owned(), from_mercutio.to_owned()),
        ("romeo@montague.example".to_owned(), from_romeo.to_owned()),
    ];
    assert_eq!(s.subscription_requests(HOST, "juliet").await.unwrap(), want);
    // Other accounts, here and on another host, have none.
    assert!(s.subscription_requests(HOST, "romeo").await.unwrap().is_empty());
    assert!(s.subscription_requests(OTHER_HOST, "juliet").await.unwrap().is_empty());
    // A pending inbound request is not a roster item: no roster change, no version.
    assert_eq!(s.roster(HOST, "juliet").await.unwrap(), (0, vec![]));

    // Answered (approved or denied, RFC 6121 §3.1.4 / §3.1.5): forgotten.
    assert!(s.remove_subscription_request(HOST, "juliet", "romeo@montague.example").await.unwrap());
    assert!(!s.remove_subscription_request(HOST, "juliet", "romeo@montague.example").await.unwrap());
    assert!(!s.remove_subscription_request(OTHER_HOST, "juliet", "mercutio@example.com").await.unwrap());
    assert_eq!(s.subscription_requests(HOST, "juliet").await.unwrap(), want[..1]);
}

// ---------------------------------------------------------------- offline

async fn offline_messages_keep_arrival_order_up_to_the_limit(e: &Engine) {
    let s = &e.store;
    let big = format!("<message to='alice@example.com'><body>{}</body></message>", "Ψ&amp;<".repeat(20_000));
    let m1 = "<message to='alice@example.com' type='chat'><body>first\nline two</body></message>";
    let m3 = "<message to='alice@example.com'><body>third, same second</body></message>";
    // XEP-0160 §2: stored in arrival order while the queue has room ...
    assert!(s.push_offline(HOST, "alice", m1, 1_700_000_000, 3).await.unwrap());
    // (bob's message lands between alice's: ids are global, queues are not)
    assert!(s.push_offline(HOST, "bob", "<message to='bob@example.com'/>", 1_700_000_001, 3).await.unwrap());
    assert!(s.push_offline(HOST, "alice", &big, 1_700_000_002, 3).await.unwrap());
    assert!(s.push_offline(HOST, "alice", m3, 1_700_000_002, 3).await.unwrap());
    // ... and refused once it is full (the server then bounces service-unavailable).
    assert!(!s.push_offline(HOST, "alice", "<message/>", 1_700_000_003, 3).await.unwrap());
    assert!(!s.push_offline(HOST, "carol", "<message/>", 1_700_000_003, 0).await.unwrap());
    // The limit is per account: bob, and alice on another host, still have room.
    assert!(s
        .push_offline(HOST, "bob", "<message to='bob@example.com'><body>2</body></message>", 1_700_000_004, 3)
        .await
        .unwrap());
    assert!(s.push_offline(OTHER_HOST, "alice", "<message/>", 1_700_000_005, 1).await.unwrap());

    let stored = s.offline_messages(HOST, "alice").await.unwrap();
    assert_eq!(stanzas(&stored), [m1, big.as_str(), m3]);
    // The stamps XEP-0203 delays are made from.
    assert_eq!(stored.iter().map(|m| m.stored_at).collect::<Vec<_>>(), [1_700_000_000, 1_700_000_002, 1_700_000_002]);
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id), "ids grow: {stored:?}");
    assert!(s.offline_messages(HOST, "carol").await.unwrap().is_empty());

    // Delivered up to the second message: only those go, and only alice's
    // (bob's message has an id below that one).
    s.delete_offline_through(HOST, "alice", stored[1].id).await.unwrap();
    assert_eq!(stanzas(&s.offline_messages(HOST, "alice").await.unwrap()), [m3]);
    assert_eq!(s.offline_messages(HOST, "bob").await.unwrap().len(), 2);
    assert_eq!(s.offline_messages(OTHER_HOST, "alice").await.unwrap().len(), 1);

    // Room again; new messages queue after the old ones.
    assert!(s.push_offline(HOST, "alice", "<message><body>4</body></message>", 1_700_000_006, 3).await.unwrap());
    let stored = s.offline_messages(HOST, "alice").await.unwrap();
    assert_eq!(stanzas(&stored), [m3, "<message><body>4</body></message>"]);
    s.delete_offline_through(HOST, "alice", stored[1].id).await.unwrap();
    assert!(s.offline_messages(HOST, "alice").await.unwrap().is_empty());
    assert_eq!(s.offline_messages(HOST, "bob").await.unwrap().len(), 2);
}

async fn concurrent_offline_pushes_respect_the_limit(e: &Engine) {
    // XEP-0160 §2: a full queue refuses the message (the sender gets an
    // error) — never an overfull queue, and never a store error, when
    // messages for one offline user arrive at once from several senders.
    const N: usize = 16;
    const LIMIT: usize = 5;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let s = e.store.clone();
            tokio::spawn(async move { s.push_offline(HOST, "alice", &format!("<message id='m{i}'/>"), 1, LIMIT).await })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(30), t).await.unwrap().unwrap().unwrap() {
            stored += 1;
        }
    }
    assert_eq!(stored, LIMIT);
    assert_eq!(e.store.offline_messages(HOST, "alice").await.unwrap().len(), LIMIT);
}

// ---------------------------------------------------------------- account data

async fn account_data_is_per_account_and_per_store(e: &Engine) {
    let s = &e.store;
    // XEP-0049: private XML keyed by the child's qualified name.
    let bookmarks = "<storage xmlns='storage:bookmarks'><conference jid='r@muc.example' name='O&apos;Hare'/></storage>";
    assert_eq!(s.get_data(HOST, "alice", "private", "storage:bookmarks").await.unwrap(), None);
    s.set_data(HOST, "alice", "private", "storage:bookmarks", Some("<storage xmlns='storage:bookmarks'/>"))
        .await
        .unwrap();
    s.set_data(HOST, "alice", "private", "storage:bookmarks", Some(bookmarks)).await.unwrap();
    s.set_data(HOST, "alice", "private", "exodus:prefs", Some("<prefs xmlns='exodus:prefs'/>")).await.unwrap();
    assert_eq!(s.get_data(HOST, "alice", "private", "storage:bookmarks").await.unwrap().as_deref(), Some(bookmarks));
    // XEP-0054: one vCard, here with a large photo; XEP-0191: one key per
    // blocked JID, empty values.
    let vcard = format!("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{}</BINVAL></PHOTO></vCard>", "QUJD".repeat(50_000));
    s.set_data(HOST, "alice", "vcard", "", Some(&vcard)).await.unwrap();
    for blocked in ["spam@bad.example", "bad.example", "eve@example.com/phone"] {
        s.set_data(HOST, "alice", "blocklist", blocked, Some("")).await.unwrap();
    }
    // The same keys for bob and for alice on another host are theirs.
    s.set_data(HOST, "bob", "private", "storage:bookmarks", Some("<bob/>")).await.unwrap();
    s.set_data(OTHER_HOST, "alice", "blocklist", "bad.example", Some("")).await.unwrap();

    assert_eq!(
        s.all_data(HOST, "alice", "private").await.unwrap(),
        [
            ("exodus:prefs".to_owned(), "<prefs xmlns='exodus:prefs'/>".to_owned()),
            ("storage:bookmarks".to_owned(), bookmarks.to_owned())
        ]
    );
    assert_eq!(s.get_data(HOST, "alice", "vcard", "").await.unwrap(), Some(vcard.clone()));
    let keys = |v: Vec<(String, String)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(s.all_data(HOST, "alice", "blocklist").await.unwrap()),
        ["bad.example", "eve@example.com/phone", "spam@bad.example"]
    );

    // None deletes one value; deleting what is not there is fine.
    s.set_data(HOST, "alice", "blocklist", "spam@bad.example", None).await.unwrap();
    s.set_data(HOST, "alice", "blocklist", "never@blocked.example", None).await.unwrap();
    assert_eq!(keys(s.all_data(HOST, "alice", "blocklist").await.unwrap()), ["bad.example", "eve@example.com/phone"]);
    // XEP-0191 §3.5: unblock all clears that store only.
    s.clear_data(HOST, "alice", "blocklist").await.unwrap();
    assert!(s.all_data(HOST, "alice", "blocklist").await.unwrap().is_empty());
    assert_eq!(s.all_data(HOST, "alice", "private").await.unwrap().len(), 2);
    assert_eq!(s.get_data(HOST, "alice", "vcard", "").await.unwrap(), Some(vcard));
    assert_eq!(s.all_data(OTHER_HOST, "alice", "blocklist").await.unwrap().len(), 1);
    assert_eq!(s.get_data(HOST, "bob", "private", "storage:bookmarks").await.unwrap().as_deref(), Some("<bob/>"));
}

// ---------------------------------------------------------------- account removal

async fn removing_an_account_deletes_its_rows_and_ends_subscriptions_to_it(e: &Engine) {
    let s = &e.store;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        s.create(HOST, user, &creds(user)).await.unwrap();
    }
    s.create(OTHER_HOST, "alice", &creds("other")).await.unwrap();

    // Everything alice owns, in every table, on both hosts.
    for host in [HOST, OTHER_HOST] {
        s.put_roster_item(host, "alice", &item(&jid("bob"), Subscription::Both)).await.unwrap();
        s.put_roster_item(
            host,
            "alice",
            &RosterItem { ask: true, ..item("romeo@montague.example", Subscription::None) },
        )
        .await
        .unwrap();
        s.add_subscription_request(host, "alice", &jid("erin"), "<presence type='subscribe'/>").await.unwrap();
        s.push_offline(host, "alice", "<message><body>hi</body></message>", 1_700_000_000, 10).await.unwrap();
        s.set_data(host, "alice", "private", "storage:bookmarks", Some("<storage/>")).await.unwrap();
        s.set_data(host, "alice", "vcard", "", Some("<vCard/>")).await.unwrap();
    }

    // Other accounts' items for alice@example.com, in each subscription state.
    let bob_item = RosterItem {
        name: Some("Alice".into()),
        groups: vec!["Friends".into()],
        ..item(&jid("alice"), Subscription::Both)
    };
    s.put_roster_item(HOST, "bob", &bob_item).await.unwrap();
    s.put_roster_item(HOST, "bob", &item(&jid("carol"), Subscription::Both)).await.unwrap();
    // bob also knows the other alice, whose account stays.
    s.put_roster_item(HOST, "bob", &item(&format!("alice@{OTHER_HOST}"), Subscription::Both)).await.unwrap();
    // carol asked alice and has no answer yet ("pending out", RFC 6121 §2.1.2.2).
    s.put_roster_item(HOST, "carol", &RosterItem { ask: true, ..item(&jid("alice"), Subscription::None) })
        .await
        .unwrap();
    // dave lets alice see his presence and pre-approved more (RFC 6121 §3.4);
    // alice's request to dave is still waiting for him.
    s.put_roster_item(HOST, "dave", &RosterItem { approved: true, ..item(&jid("alice"), Subscription::From) })
        .await
        .unwrap();
    s.add_subscription_request(HOST, "dave", &jid("alice"), "<presence from='alice@example.com' type='subscribe'/>")
        .await
        .unwrap();
    s.add_subscription_request(HOST, "dave", &jid("erin"), "<presence from='erin@example.com' type='subscribe'/>")
        .await
        .unwrap();
    // erin merely lists alice, with no subscription either way.
    let erin_item = item(&jid("alice"), Subscription::None);
    s.put_roster_item(HOST, "erin", &erin_item).await.unwrap();
    // frank only pre-approved alice (RFC 6121 §3.4): a new account of that
    // name must not inherit the approval.
    s.put_roster_item(HOST, "frank", &RosterItem { approved: true, ..item(&jid("alice"), Subscription::None) })
        .await
        .unwrap();

    let version = |user: &'static str| async move { s.roster(HOST, user).await.unwrap().0 };
    let (bob_v, carol_v, dave_v, erin_v) =
        (version("bob").await, version("carol").await, version("dave").await, version("erin").await);
    let other_alice = s.roster(OTHER_HOST, "alice").await.unwrap();

    assert!(s.remove(HOST, "alice").await.unwrap());

    // XEP-0077 §3.2: the account and everything stored for it are gone.
    assert!(!s.exists(HOST, "alice").await.unwrap());
    for hash in HashAlg::ALL {
        assert!(s.credentials(HOST, "alice", hash).await.unwrap().is_none());
    }
    assert_eq!(s.list(HOST).await.unwrap(), ["bob", "carol", "dave", "erin"]);
    assert_eq!(s.roster(HOST, "alice").await.unwrap(), (0, vec![]));
    assert!(s.subscription_requests(HOST, "alice").await.unwrap().is_empty());
    assert!(s.offline_messages(HOST, "alice").await.unwrap().is_empty());
    assert!(s.all_data(HOST, "alice", "private").await.unwrap().is_empty());
    assert_eq!(s.get_data(HOST, "alice", "vcard", "").await.unwrap(), None);

    // XEP-0077 §3.2: "the server SHOULD also cancel all existing presence
    // subscriptions related to that entity". Cancelled both ways (RFC 6121
    // §3.2 and §3.3) and with nothing pending, each contact keeps the item —
    // it is theirs — in state "none", and gets a new roster version for it.
    let ended =
        |it: &RosterItem| RosterItem { subscription: Subscription::None, ask: false, approved: false, ..it.clone() };
    assert_eq!(s.roster_item(HOST, "bob", &jid("alice")).await.unwrap(), Some(ended(&bob_item)));
    assert_eq!(version("bob").await, bob_v + 1);
    assert_eq!(
        s.roster_item(HOST, "carol", &jid("alice")).await.unwrap(),
        Some(item(&jid("alice"), Subscription::None))
    );
    assert_eq!(version("carol").await, carol_v + 1);
    assert_eq!(
        s.roster_item(HOST, "dave", &jid("alice")).await.unwrap(),
        Some(item(&jid("alice"), Subscription::None))
    );
    assert_eq!(version("dave").await, dave_v + 1);
    assert_eq!(
        s.roster_item(HOST, "frank", &jid("alice")).await.unwrap(),
        Some(item(&jid("alice"), Subscription::None))
    );
    // alice's pending request to dave went with her; erin's did not.
    assert_eq!(
        s.subscription_requests(HOST, "dave").await.unwrap().into_iter().map(|(c, _)| c).collect::<Vec<_>>(),
        [jid("erin")]
    );
    // Nothing changed for erin (XEP-0237 §2.4: no modification, no new version),
    // nor for bob's other items.
    assert_eq!(s.roster_item(HOST, "erin", &jid("alice")).await.unwrap(), Some(erin_item));
    assert_eq!(version("erin").await, erin_v);
    assert_eq!(s.roster_item(HOST, "bob", &jid("carol")).await.unwrap(), Some(item(&jid("carol"), Subscription::Both)));
    let other = format!("alice@{OTHER_HOST}");
    assert_eq!(s.roster_item(HOST, "bob", &other).await.unwrap(), Some(item(&other, Subscription::Both)));

    // alice on the other host is another account: all of hers is still there.
    assert!(s.exists(OTHER_HOST, "alice").await.unwrap());
    assert!(s.credentials(OTHER_HOST, "alice", HashAlg::Sha256).await.unwrap().unwrap().verify_password("other"));
    assert_eq!(s.roster(OTHER_HOST, "alice").await.unwrap(), other_alice);
    assert_eq!(s.subscription_requests(OTHER_HOST, "alice").await.unwrap().len(), 1);
    assert_eq!(s.offline_messages(OTHER_HOST, "alice").await.unwrap().len(), 1);
    assert_eq!(s.all_data(OTHER_HOST, "alice", "private").await.unwrap().len(), 1);

    // Removing again: no such account, and nobody's roster changes again.
    assert!(!s.remove(HOST, "alice").await.unwrap());
    assert_eq!(version("bob").await, bob_v + 1);

    // A new account of the same name starts with nothing of the old one's.
    s.create(HOST, "alice", &creds("new")).await.unwrap();
    assert_eq!(s.roster(HOST, "alice").await.unwrap(), (0, vec![]));
    assert!(s.offline_messages(HOST, "alice").await.unwrap().is_empty());
    assert!(s.all_data(HOST, "alice", "private").await.unwrap().is_empty());
    assert!(s.credentials(HOST, "alice", HashAlg::Sha1).await.unwrap().unwrap().verify_password("new"));
}

#[test]
fn database_is_replaced_in_urls() {
    assert_eq!(with_database("postgres://u:p@127.0.0.1:5433/starling", "t"), "postgres://u:p@127.0.0.1:5433/t");
    assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "t"), "postgres://u@h/t?sslmode=disable");
    assert_eq!(with_database("postgresql://h:1", "t"), "postgresql://h:1/t");
}

// ---------------------------------------------------------------- archive

const ALICE: &str = "alice@example.com";

/// Archives `n` messages for alice, alternately with bob and carol, one a
/// second from 1,700,000,000 s; message `i` has the id `id{i}` and body `body {i}`.
async fn fill_archive(s: &SqlStore, n: usize) {
    for i in 0..n {
        let (id, origin, body) = (format!("id{i}"), format!("origin{i}"), format!("body {i}"));
        let stanza = format!("<message xmlns='jabber:client'><body>{body}</body></message>");
        let peer = if i % 2 == 0 { "bob@example.com" } else { "carol@example.com" };
        let message = NewArchived {
            archive: ALICE,
            stanza_id: &id,
            peer,
            peer_resource: "phone",
            origin_id: Some(&origin),
            outgoing: i % 3 == 0,
            stamp: (1_700_000_000 + i as i64) * 1_000_000,
            body: Some(&body),
            stanza: &stanza,
        };
        s.archive_append(&message).await.unwrap();
    }
}

fn ids(page: &starling_storage::ArchivePage) -> Vec<&str> {
    page.messages.iter().map(|m| m.stanza_id.as_str()).collect()
}

async fn archive_pages_both_ways_with_filters_and_search(e: &Engine) {
    let s = &e.store;
    fill_archive(s, 10).await;
    let all = ArchiveFilter::default();
    let seq = |id: &str| {
        let id = id.to_owned();
        async move { s.archive_seq(ALICE, &id).await.unwrap().unwrap() }
    };

    // XEP-0059 forward paging, then backward from the end.
    let first = s.archive_page(ALICE, &all, PageFrom::After(None), 4).await.unwrap();
    assert_eq!((ids(&first), first.complete), (vec!["id0", "id1", "id2", "id3"], false));
    let last = s.archive_page(ALICE, &all, PageFrom::After(Some(seq("id7").await)), 4).await.unwrap();
    assert_eq!((ids(&last), last.complete), (vec!["id8", "id9"], true));
    let end = s.archive_page(ALICE, &all, PageFrom::Before(None), 3).await.unwrap();
    assert_eq!((ids(&end), end.complete), (vec!["id7", "id8", "id9"], false));
    let start = s.archive_page(ALICE, &all, PageFrom::Before(Some(seq("id2").await)), 3).await.unwrap();
    assert_eq!((ids(&start), start.complete), (vec!["id0", "id1"], true));
    assert_eq!(s.archive_count(ALICE, &all).await.unwrap(), 10);
    assert_eq!(s.archive_seq(ALICE, "nope").await.unwrap(), None);
    assert_eq!(s.archive_count("bob@example.com", &all).await.unwrap(), 0, "archives are per owner");

    // Filters: peer, time, id range, ids, words.
    let with_bob = ArchiveFilter { with: Some(("bob@example.com".into(), None)), ..all.clone() };
    assert_eq!(s.archive_count(ALICE, &with_bob).await.unwrap(), 5);
    let other_resource = ArchiveFilter { with: Some(("bob@example.com".into(), Some("laptop".into()))), ..all.clone() };
    assert_eq!(s.archive_count(ALICE, &other_resource).await.unwrap(), 0);
    let window = ArchiveFilter { start: Some(1_700_000_002_000_000), end: Some(1_700_000_004_000_000), ..all.clone() };
    assert_eq!(ids(&s.archive_page(ALICE, &window, PageFrom::After(None), 10).await.unwrap()), ["id2", "id3", "id4"]);
    let range = ArchiveFilter { after_seq: Some(seq("id5").await), before_seq: Some(seq("id8").await), ..all.clone() };
    assert_eq!(ids(&s.archive_page(ALICE, &range, PageFrom::Before(None), 10).await.unwrap()), ["id6", "id7"]);
    let picked = ArchiveFilter { ids: vec!["id9".into(), "id0".into()], ..all.clone() };
    assert_eq!(ids(&s.archive_page(ALICE, &picked, PageFrom::After(None), 10).await.unwrap()), ["id0", "id9"]);
    let words = ArchiveFilter { text: Some("body 7".into()), ..all.clone() };
    assert_eq!(ids(&s.archive_page(ALICE, &words, PageFrom::After(None), 10).await.unwrap()), ["id7"]);
    let syntax = ArchiveFilter { text: Some("\"body AND OR (".into()), ..all.clone() };
    assert_eq!(s.archive_count(ALICE, &syntax).await.unwrap(), 0, "search text is words, never query syntax");

    let (oldest, newest) = s.archive_ends(ALICE).await.unwrap().unwrap();
    assert_eq!((oldest.stanza_id.as_str(), newest.stanza_id.as_str()), ("id0", "id9"));
    assert!(s.archive_ends("bob@example.com").await.unwrap().is_none());
}

async fn archive_tombstones_expiry_and_removal(e: &Engine) {
    let s = &e.store;
    s.create("example.com", "alice", &creds("alice")).await.unwrap();
    fill_archive(s, 10).await;
    // id0 and id6 are outgoing to bob; id3 is outgoing to carol.
    assert!(s.archive_replace(ALICE, "bob@example.com", true, "origin6", "<tombstone/>").await.unwrap());
    assert!(!s.archive_replace(ALICE, "bob@example.com", true, "origin2", "<x/>").await.unwrap(), "received, not sent");
    assert!(!s.archive_replace(ALICE, "carol@example.com", true, "origin6", "<x/>").await.unwrap(), "another peer");
    assert!(s.archive_replace_by_id(ALICE, "id2", "<moderated/>").await.unwrap(), "XEP-0425: by stanza id alone");
    assert!(!s.archive_replace_by_id(ALICE, "origin2", "<x/>").await.unwrap(), "not by origin id");
    let six = ArchiveFilter { ids: vec!["id6".into()], ..ArchiveFilter::default() };
    let page = s.archive_page(ALICE, &six, PageFrom::After(None), 1).await.unwrap();
    assert_eq!(page.messages[0].stanza, "<tombstone/>");
    let words = ArchiveFilter { text: Some("6".into()), ..ArchiveFilter::default() };
    assert_eq!(s.archive_count(ALICE, &words).await.unwrap(), 0, "the body is no longer searchable");

    assert_eq!(s.archive_expire(1_700_000_003_000_000).await.unwrap(), 3);
    assert_eq!(s.archive_ends(ALICE).await.unwrap().unwrap().0.stanza_id, "id3");
    // XEP-0313: removing the account removes its archive.
    assert!(s.remove("example.com", "alice").await.unwrap());
    assert_eq!(s.archive_count(ALICE, &ArchiveFilter::default()).await.unwrap(), 0);
}

/// Appends that arrive together are written as one transaction of several
/// multi-row statements (a batch is larger than a statement): each append
/// returns only once committed, none is lost, each gets its own order and
/// its body is searchable.
async fn concurrent_archive_appends_are_all_committed_and_searchable(e: &Engine) {
    let s = &e.store;
    const N: usize = 300;
    let appends = (0..N).map(|i| async move {
        let (id, body) = (format!("c{i}"), format!("word{i}"));
        let stanza = format!("<message xmlns='jabber:client'><body>{body}</body></message>");
        let message = NewArchived {
            archive: ALICE,
            stanza_id: &id,
            peer: "bob@example.com",
            peer_resource: "",
            origin_id: None,
            outgoing: false,
            stamp: 1_700_000_000_000_000 + i as i64,
            body: Some(&body),
            stanza: &stanza,
        };
        s.archive_append(&message).await.unwrap();
        s.archive_seq(ALICE, &id).await.unwrap().expect("committed before the append returned")
    });
    let mut seqs = futures::future::join_all(appends).await;
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N, "one order per message");
    assert_eq!(s.archive_count(ALICE, &ArchiveFilter::default()).await.unwrap(), N as u64);
    let words = ArchiveFilter { text: Some("word299".into()), ..ArchiveFilter::default() };
    let found = s.archive_page(ALICE, &words, PageFrom::After(None), 10).await.unwrap();
    assert_eq!(ids(&found), vec!["c299"]);
}

// ---------------------------------------------------------------- pubsub

fn pubsub_item(id: &str, payload: &str) -> PubsubItem {
    PubsubItem { id: id.into(), publisher: jid("alice"), payload: payload.into(), published_at: 1_700_000_000_000 }
}

fn pubsub_subscription(node: &str, who: &str) -> PubsubSubscription {
    PubsubSubscription {
        node: node.into(),
        jid: who.into(),
        subid: "s1".into(),
        state: "subscribed".into(),
        deliver: true,
    }
}

/// XEP-0060 data of one service: a node with its configuration and owner
/// (§8.1), items newest first and trimmed to the node's capacity (§7.1,
/// §6.5.7), a republished id becoming the newest, retraction (§7.2), purge
/// (§8.5), affiliations (§8.9), subscriptions (§6.1, §6.2), deletion (§8.4).
async fn pubsub_nodes_items_affiliations_and_subscriptions(e: &Engine) {
    let s = &e.store;
    let svc = "pubsub.example.com";
    s.create_pubsub_node(svc, "news", "{}", &jid("alice")).await.unwrap();
    assert!(matches!(s.create_pubsub_node(svc, "news", "{}", &jid("bob")).await, Err(StoreError::AlreadyExists)));
    assert_eq!(s.pubsub_node(svc, "news").await.unwrap().as_deref(), Some("{}"));
    s.configure_pubsub_node(svc, "news", "{\"max_items\":2}").await.unwrap();
    assert_eq!(s.pubsub_node(svc, "news").await.unwrap().as_deref(), Some("{\"max_items\":2}"));
    assert!(matches!(s.configure_pubsub_node(svc, "none", "{}").await, Err(StoreError::NotFound)));
    assert_eq!(s.pubsub_affiliations(svc, "news").await.unwrap(), [(jid("alice"), "owner".to_owned())]);

    for id in ["a", "b", "c"] {
        s.publish_pubsub_item(svc, "news", &pubsub_item(id, &format!("<p>{id}</p>")), 2).await.unwrap();
    }
    let ids = |items: Vec<PubsubItem>| items.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(s.pubsub_items(svc, "news", 10).await.unwrap()), ["c", "b"], "the two newest");
    s.publish_pubsub_item(svc, "news", &pubsub_item("b", "<p>b2</p>"), 2).await.unwrap();
    assert_eq!(ids(s.pubsub_items(svc, "news", 10).await.unwrap()), ["b", "c"], "republished is newest");
    assert_eq!(s.pubsub_item(svc, "news", "b").await.unwrap().unwrap().payload, "<p>b2</p>");
    assert_eq!(ids(s.pubsub_items(svc, "news", 1).await.unwrap()), ["b"]);
    assert!(s.retract_pubsub_item(svc, "news", "b").await.unwrap());
    assert!(!s.retract_pubsub_item(svc, "news", "b").await.unwrap());
    s.purge_pubsub_node(svc, "news").await.unwrap();
    assert!(s.pubsub_items(svc, "news", 10).await.unwrap().is_empty());

    s.set_pubsub_affiliation(svc, "news", &jid("bob"), Some("member")).await.unwrap();
    s.set_pubsub_affiliation(svc, "news", &jid("bob"), Some("publisher")).await.unwrap();
    assert_eq!(
        s.pubsub_affiliations_of(svc, &jid("bob")).await.unwrap(),
        [("news".to_owned(), "publisher".to_owned())]
    );
    s.set_pubsub_affiliation(svc, "news", &jid("bob"), None).await.unwrap();
    assert!(s.pubsub_affiliations_of(svc, &jid("bob")).await.unwrap().is_empty());

    s.set_pubsub_subscription(svc, &pubsub_subscription("news", &jid("carol"))).await.unwrap();
    assert_eq!(s.pubsub_subscriptions(svc, "news").await.unwrap(), [pubsub_subscription("news", &jid("carol"))]);
    assert_eq!(s.pubsub_subscriptions_of(svc, &jid("carol")).await.unwrap().len(), 1);
    let paused = PubsubSubscription { deliver: false, ..pubsub_subscription("news", &jid("carol")) };
    s.set_pubsub_subscription(svc, &paused).await.unwrap();
    assert_eq!(s.pubsub_subscriptions(svc, "news").await.unwrap(), [paused]);
    assert!(s.remove_pubsub_subscription(svc, "news", &jid("carol")).await.unwrap());
    assert!(!s.remove_pubsub_subscription(svc, "news", &jid("carol")).await.unwrap());

    s.create_pubsub_node(svc, "blog", "{}", &jid("bob")).await.unwrap();
    assert_eq!(s.pubsub_nodes(svc).await.unwrap(), ["blog", "news"]);
    s.publish_pubsub_item(svc, "news", &pubsub_item("x", "<p/>"), 2).await.unwrap();
    assert!(s.delete_pubsub_node(svc, "news").await.unwrap());
    assert!(!s.delete_pubsub_node(svc, "news").await.unwrap());
    assert_eq!(s.pubsub_node(svc, "news").await.unwrap(), None);
    assert!(s.pubsub_items(svc, "news", 10).await.unwrap().is_empty());
    assert_eq!(s.pubsub_nodes(svc).await.unwrap(), ["blog"]);
}

/// XEP-0077 §3.2 with XEP-0163: the account's PEP service goes, and so do
/// its subscriptions and affiliations on other services (by bare or full
/// JID), while a similarly named account's stay.
async fn removing_an_account_removes_its_pep_nodes_and_its_pubsub_subscriptions(e: &Engine) {
    let s = &e.store;
    s.create(HOST, "alice", &creds("pw")).await.unwrap();
    let alice = jid("alice");
    s.create_pubsub_node(&alice, "urn:xmpp:omemo:2:devices", "{}", &alice).await.unwrap();
    s.publish_pubsub_item(&alice, "urn:xmpp:omemo:2:devices", &pubsub_item("current", "<devices/>"), 1).await.unwrap();
    let bob = jid("bob");
    s.create_pubsub_node(&bob, "urn:example:mood", "{}", &bob).await.unwrap();
    s.set_pubsub_subscription(&bob, &pubsub_subscription("urn:example:mood", &alice)).await.unwrap();
    s.set_pubsub_subscription(&bob, &pubsub_subscription("urn:example:mood", &format!("{alice}/desk"))).await.unwrap();
    s.set_pubsub_subscription(&bob, &pubsub_subscription("urn:example:mood", "alice_x@example.com")).await.unwrap();
    s.set_pubsub_affiliation(&bob, "urn:example:mood", &alice, Some("member")).await.unwrap();

    assert!(s.remove(HOST, "alice").await.unwrap());
    assert!(s.pubsub_nodes(&alice).await.unwrap().is_empty());
    assert!(s.pubsub_items(&alice, "urn:xmpp:omemo:2:devices", 10).await.unwrap().is_empty());
    let left: Vec<String> =
        s.pubsub_subscriptions(&bob, "urn:example:mood").await.unwrap().into_iter().map(|s| s.jid).collect();
    assert_eq!(left, ["alice_x@example.com"], "LIKE wildcards in the JID are escaped");
    assert_eq!(s.pubsub_affiliations(&bob, "urn:example:mood").await.unwrap(), [(bob.clone(), "owner".to_owned())]);
}
