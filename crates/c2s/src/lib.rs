//! Client-to-server connections (RFC 6120): listeners with STARTTLS or
//! direct TLS (XEP-0368), stream negotiation (TLS, SASL, resource binding)
//! and the bound session that moves stanzas between its socket and the router.

mod features;
mod listener;
mod session;
mod throttle;
pub mod tls;
mod transport;

pub use listener::{serve, Listener};
pub use tls::{HostCertificate, TlsContext};
