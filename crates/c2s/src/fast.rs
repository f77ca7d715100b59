//! FAST tokens (XEP-0484): a client that logged in with its password gets a
//! token for its installation (its SASL2 `<user-agent id/>`) and later logs
//! in with an HT mechanism in one round trip.
//!
//! Tokens are not stored: the database keeps, per account and client, a
//! random nonce, the mechanism, the expiry and the last `count`; the token
//! is `HMAC-SHA-256(server key, host, user, client, nonce)` with a key kept
//! in the data directory (`fast.key`), so a copy of the database alone
//! yields no usable token. A password change (storage) and account removal
//! delete them.

use base64::Engine;
use hmac::Mac;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use starling_sasl::ht::{HtInitial, HtMechanism};
use starling_sasl::{ChannelBindings, Failure};
use starling_storage::Store;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The account-data store holding one document per client id.
pub const STORE: &str = "fast";

pub(crate) struct FastTokens {
    key: [u8; 32],
    lifetime: Duration,
}

/// What is kept per (account, client): the token in use and one issued but
/// not used yet (XEP-0484 §4.5: the old one stays valid until the new one
/// is used).
#[derive(Debug, Default, Serialize, Deserialize)]
struct ClientTokens {
    current: Option<StoredToken>,
    pending: Option<StoredToken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredToken {
    mechanism: String,
    nonce: String,
    /// Seconds since the Unix epoch.
    expires: u64,
    /// The highest `count` seen with this token (replay protection).
    count: u64,
}

/// A token handed to the client.
pub(crate) struct Issued {
    pub token: String,
    /// XEP-0082 DateTime.
    pub expiry: String,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl FastTokens {
    /// Reads the key from `path`, making one at first start.
    pub fn open(path: &Path, lifetime: Duration) -> std::io::Result<Self> {
        Ok(FastTokens { key: starling_core::secret::load_or_create_key(path)?, lifetime })
    }

    fn token(&self, host: &str, user: &str, client: &str, nonce: &str) -> Vec<u8> {
        let raw = starling_core::secret::mac(&self.key, &[host, user, client, nonce]).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw).into_bytes()
    }

    async fn load(&self, store: &dyn Store, host: &str, user: &str, client: &str) -> Result<ClientTokens, Failure> {
        let doc = store.get_data(host, user, STORE, client).await.map_err(temporary)?;
        Ok(doc.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default())
    }

    async fn save(
        &self,
        store: &dyn Store,
        host: &str,
        user: &str,
        client: &str,
        tokens: &ClientTokens,
    ) -> Result<(), Failure> {
        let doc = (tokens.current.is_some() || tokens.pending.is_some())
            .then(|| serde_json::to_string(tokens).expect("serialisable"));
        store.set_data(host, user, STORE, client, doc.as_deref()).await.map_err(temporary)
    }

    /// Issues a new token for `client`; an earlier unused one is dropped
    /// (XEP-0484 §4.4), the one in use stays valid until the new one is used.
    pub async fn issue(
        &self,
        store: &dyn Store,
        host: &str,
        user: &str,
        client: &str,
        mechanism: HtMechanism,
    ) -> Result<Issued, Failure> {
        let mut tokens = self.load(store, host, user, client).await?;
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let expires = now() + self.lifetime.as_secs();
        let token = self.token(host, user, client, &nonce);
        tokens.pending = Some(StoredToken { mechanism: mechanism.name().to_owned(), nonce, expires, count: 0 });
        self.save(store, host, user, client, &tokens).await?;
        Ok(Issued {
            token: String::from_utf8(token).expect("base64"),
            expiry: starling_proto::time::format_utc(expires, 0),
        })
    }

    /// Checks a FAST login: the proof must come from an unexpired token of
    /// this client issued for `mechanism`, with a `count` above any seen.
    /// On success the token becomes the one in use (older ones are
    /// invalidated, XEP-0484 §4.5), or is deleted with `invalidate`; the
    /// answer is the responder hash and whether the token is due for
    /// rotation (past half its lifetime).
    #[allow(clippy::too_many_arguments)]
    pub async fn verify(
        &self,
        store: &dyn Store,
        host: &str,
        client: &str,
        mechanism: HtMechanism,
        initial: &HtInitial,
        bindings: &ChannelBindings,
        count: Option<u64>,
        invalidate: bool,
    ) -> Result<(Vec<u8>, bool), Failure> {
        let user = initial.username.as_str();
        let mut tokens = self.load(store, host, user, client).await?;
        let now = now();
        let candidates = [tokens.pending.clone(), tokens.current.clone()];
        for stored in candidates.into_iter().flatten() {
            if stored.mechanism != mechanism.name() || stored.expires <= now {
                continue;
            }
            let token = self.token(host, user, client, &stored.nonce);
            let Ok(answer) = initial.verify(mechanism, &token, bindings) else { continue };
            if count.is_some_and(|c| c <= stored.count) {
                return Err(Failure::NotAuthorized);
            }
            let due = stored.expires.saturating_sub(now) < self.lifetime.as_secs() / 2;
            if invalidate {
                tokens = ClientTokens::default();
            } else {
                let used = StoredToken { count: count.unwrap_or(stored.count), ..stored };
                tokens.pending = tokens.pending.filter(|p| p.nonce != used.nonce);
                tokens.current = Some(used);
            }
            self.save(store, host, user, client, &tokens).await?;
            return Ok((answer, due && !invalidate));
        }
        Err(Failure::NotAuthorized)
    }
}

fn temporary(e: starling_storage::StoreError) -> Failure {
    tracing::error!(error = %e, "FAST token store failed");
    Failure::TemporaryAuthFailure
}
