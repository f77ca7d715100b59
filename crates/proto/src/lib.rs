//! Protocol types shared by every layer: the stanza envelope (parsed once at
//! the edge, the router reads only this), stanza errors, namespaces. Re-exports
//! the xmpp-rs `jid` and `minidom` crates so features use one version.

pub mod error;
pub mod ns;
pub mod stanza;
pub mod time;
pub mod xml;

pub use error::{ErrorType, StanzaError};
pub use jid::{self, BareJid, FullJid, Jid};
pub use minidom::{self, Element};
pub use stanza::{IqType, Stanza, StanzaKind};
pub use xmpp_parsers;

/// Whether two addresses belong to the same account (equal bare JIDs),
/// without building the bare JIDs: hooks ask this of every stanza.
pub fn same_account(a: &Jid, b: &Jid) -> bool {
    a.node() == b.node() && a.domain() == b.domain()
}
