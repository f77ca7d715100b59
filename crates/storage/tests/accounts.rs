//! The account store on a real engine: SQLite in a temp dir, and PostgreSQL
//! too when STARLING_DATABASE_URL points at one (as `.ci/run` arranges).

use starling_sasl::{HashAlg, ScramCredentials};
use starling_storage::{AccountStore, SqlStore, StoreError};

fn creds(password: &str) -> Vec<ScramCredentials> {
    HashAlg::ALL.into_iter().map(|h| ScramCredentials::generate(h, password, 4096).unwrap()).collect()
}

async fn exercise(store: &SqlStore, host: &str) {
    assert!(store.list(host).await.unwrap().is_empty());
    store.create(host, "alice", &creds("secret")).await.unwrap();
    assert!(matches!(store.create(host, "alice", &creds("x")).await, Err(StoreError::AlreadyExists)));
    assert!(store.exists(host, "alice").await.unwrap());
    assert!(!store.exists("other.example", "alice").await.unwrap());
    for hash in HashAlg::ALL {
        let c = store.credentials(host, "alice", hash).await.unwrap().unwrap();
        assert_eq!(c.hash, hash);
        assert!(c.iterations >= 4096);
        assert!(c.verify_password("secret"));
        assert!(!c.verify_password("wrong"));
    }
    store.set_credentials(host, "alice", &creds("new")).await.unwrap();
    let c = store.credentials(host, "alice", HashAlg::Sha256).await.unwrap().unwrap();
    assert!(c.verify_password("new") && !c.verify_password("secret"));
    assert!(matches!(store.set_credentials(host, "nobody", &creds("x")).await, Err(StoreError::NotFound)));
    store.create(host, "bob", &creds("b")).await.unwrap();
    assert_eq!(store.list(host).await.unwrap(), ["alice", "bob"]);
    assert!(store.remove(host, "alice").await.unwrap());
    assert!(!store.remove(host, "alice").await.unwrap());
    assert!(store.credentials(host, "alice", HashAlg::Sha1).await.unwrap().is_none());
    assert_eq!(store.list(host).await.unwrap(), ["bob"]);
    store.remove(host, "bob").await.unwrap();
}

#[tokio::test]
async fn sqlite_accounts_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqlStore::open(&url, 2).await.unwrap();
    exercise(&store, "example.com").await;
    store.create("example.com", "carol", &creds("c")).await.unwrap();
    store.close().await;
    // Migrations are idempotent and data survives a restart.
    let store = SqlStore::open(&url, 2).await.unwrap();
    assert!(store.exists("example.com", "carol").await.unwrap());
}

#[tokio::test]
#[ignore = "needs STARLING_DATABASE_URL=postgres://… (scripts/test runs it)"]
async fn postgres_accounts() {
    let url = std::env::var("STARLING_DATABASE_URL").expect("STARLING_DATABASE_URL is set");
    assert!(url.starts_with("postgres"), "STARLING_DATABASE_URL is a postgres:// URL");
    let store = SqlStore::open(&url, 2).await.unwrap();
    // A host name of its own so reruns and other tests do not collide.
    let host = format!("pg{}.example", std::process::id());
    exercise(&store, &host).await;
}

#[tokio::test]
async fn unknown_url_scheme_is_refused() {
    assert!(matches!(SqlStore::open("mysql://x", 1).await, Err(StoreError::UnsupportedUrl(_))));
}
