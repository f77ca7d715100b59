//! What every module that keeps per-account data needs around the store.

use starling_proto::{BareJid, StanzaError};
use starling_storage::StoreError;

/// (host, username) of a local account's bare JID: the store's key.
pub(crate) fn account(jid: &BareJid) -> (&str, &str) {
    (jid.domain().as_str(), jid.node().map_or("", |n| n.as_str()))
}

/// A store failure as the requester sees it: `internal-server-error`; the
/// cause goes to the log, not to the client.
pub(crate) fn store_error(e: StoreError) -> StanzaError {
    tracing::error!(error = %e, "store failed");
    StanzaError::internal_server_error()
}
