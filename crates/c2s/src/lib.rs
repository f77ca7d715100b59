//! Client-to-server sessions (RFC 6120): stream negotiation (TLS, SASL,
//! resource binding), the bound session that moves stanzas between its
//! client and the router, stream management (XEP-0198) and client state
//! indication (XEP-0352) — written once against [`Framing`]; the TCP
//! framing and listeners (STARTTLS, direct TLS per XEP-0368) live here,
//! WebSocket and BOSH in the `http` crate.

mod bound;
mod csi;
mod features;
pub mod framing;
mod listener;
mod session;
mod sm;
mod tcp;
mod throttle;
pub mod tls;
mod transport;

pub use framing::{End, Flow, Framing, Sink};
pub use listener::{serve, Listener};
pub use session::ClientService;
pub use tcp::{parse_failure, parser_limits};
pub use tls::{HostCertificate, TlsContext};

/// An unguessable identifier for stream ids, generated resources and SM-IDs.
pub(crate) fn random_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..16).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}
