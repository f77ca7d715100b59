//! Federation: server-to-server streams (RFC 6120, `jabber:server`).
//!
//! Outgoing: one stream per (local domain, remote domain) pair, opened when
//! the first stanza for the pair is routed and reused by every later one;
//! stanzas wait in a bounded queue while it is set up, and bounce to their
//! senders if it cannot be. Incoming: a listener whose streams authenticate
//! the peer's domain, then hand each stanza whose `from` is at an
//! authenticated domain and whose `to` is at one of ours to the router.
//!
//! Streams are encrypted with TLS (STARTTLS, or direct TLS, XEP-0368) and a
//! peer proves its domain with a certificate valid for it (SASL EXTERNAL,
//! XEP-0178) or, where the configuration allows it, with dialback (XEP-0220)
//! keyed by a secret kept in the data directory.

mod dialback;
mod incoming;
mod outgoing;
mod rate;
pub mod resolve;
mod stream;
pub mod tls;

use dashmap::DashMap;
use resolve::{DnsResolver, Resolver, StaticResolver};
use starling_core::config::S2sConfig;
use starling_core::domains::{DomainKind, RemoteRoute};
use starling_core::Server;
use starling_proto::{ns, Element, Stanza, StanzaError};
use starling_xmlstream::Limits;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub use tls::S2sTls;

/// The federation service: the route to other servers and the listeners.
pub struct S2s {
    /// The server holds this as its remote route and this holds the server:
    /// both live as long as the process.
    server: Arc<Server>,
    /// This service, for the tasks it spawns.
    me: Weak<S2s>,
    config: S2sConfig,
    resolver: Arc<dyn Resolver>,
    tls: S2sTls,
    /// XEP-0220 §2.4: the secret dialback keys are made with.
    dialback_secret: [u8; 32],
    /// Outgoing streams by (local domain, remote domain).
    links: DashMap<(String, String), OutLink>,
    next_link: AtomicU64,
    /// Streams both ways (`s2s.max_connections`).
    connections: Arc<Semaphore>,
    limits: Limits,
}

#[derive(Debug, Clone)]
struct OutLink {
    id: u64,
    tx: mpsc::Sender<Element>,
}

/// A listener for other servers: STARTTLS, or TLS from the first byte.
pub struct S2sListener {
    pub tcp: TcpListener,
    pub direct_tls: bool,
}

impl S2s {
    /// The federation service with DNS resolution (`s2s.hosts` first) and
    /// the dialback secret in `data_dir`.
    pub fn new(server: Arc<Server>, tls: S2sTls) -> anyhow::Result<Arc<Self>> {
        let config = server.config.s2s.clone();
        let dns: Arc<dyn Resolver> = Arc::new(DnsResolver::from_system()?);
        let resolver = Arc::new(StaticResolver { hosts: config.hosts.clone(), fallback: Some(dns) });
        let path = server.config.server.data_dir.join("dialback.key");
        let dialback_secret = starling_core::secret::load_or_create_key(&path)
            .map_err(|e| anyhow::anyhow!("dialback secret {}: {e}", path.display()))?;
        let limits = starling_c2s::parser_limits(&server.config.limits);
        Ok(Arc::new_cyclic(|me| S2s {
            me: me.clone(),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config,
            resolver,
            tls,
            dialback_secret,
            links: DashMap::new(),
            next_link: AtomicU64::new(0),
            limits,
            server,
        }))
    }

    fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.config.handshake_timeout_secs)
    }

    fn idle_timeout(&self) -> Duration {
        // Zero disables it: a deadline a century away.
        let secs = self.config.idle_timeout_secs;
        Duration::from_secs(if secs == 0 { 3_153_600_000 } else { secs })
    }

    fn is_denied(&self, domain: &str) -> bool {
        self.config.deny.iter().any(|d| d == domain)
    }

    /// Whether `domain` may authenticate with dialback without a valid certificate.
    fn dialback_allowed(&self, domain: &str) -> bool {
        !self.config.require_valid_certificates || self.config.insecure_domains.iter().any(|d| d == domain)
    }

    /// Whether stanzas to `domain` are ours to take (hosts, services, components).
    fn is_local(&self, domain: &str) -> bool {
        self.server.domains.kind(domain) != DomainKind::Remote
    }

    /// XEP-0220 §2.4 recommended key: HMAC-SHA256 over the receiving
    /// domain, the originating domain and the stream id, in hex.
    fn dialback_key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        use hmac::Mac;
        let mac = starling_core::secret::mac(&self.dialback_secret, &[receiving, originating, stream_id]);
        hex::encode(mac.finalize().into_bytes())
    }

    /// The link for (local, remote), starting its stream if there is none.
    fn link(&self, local: &str, remote: &str) -> Result<OutLink, StanzaError> {
        let key = (local.to_owned(), remote.to_owned());
        if let Some(link) = self.links.get(&key) {
            return Ok(link.clone());
        }
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| StanzaError::resource_constraint().with_text("too many server-to-server connections"))?;
        let link = self.links.entry(key.clone()).or_insert_with(|| {
            let id = self.next_link.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = mpsc::channel(self.config.queue);
            let me = self.me.upgrade().expect("the service outlives its use");
            tokio::spawn(outgoing::run(me, key, id, rx, permit));
            OutLink { id, tx }
        });
        Ok(link.clone())
    }

    /// Sends a stanza error back to the sender of `el`, a stanza of ours
    /// that could not go out.
    fn bounce(&self, el: Element, err: StanzaError) {
        if let Ok(stanza) = Stanza::from_element(el, ns::CLIENT) {
            self.server.bounce(&stanza, err);
        }
    }
}

impl RemoteRoute for S2s {
    fn send(&self, stanza: Stanza) -> Result<(), Box<(Stanza, StanzaError)>> {
        let (Some(from), Some(to)) = (&stanza.from, &stanza.to) else {
            return Err(Box::new((stanza, StanzaError::bad_request())));
        };
        let (local, remote) = (from.domain().as_str().to_owned(), to.domain().as_str().to_owned());
        // We speak for our own domains only: no relaying between others.
        if !self.is_local(&local) {
            return Err(Box::new((stanza, StanzaError::not_allowed())));
        }
        if self.is_denied(&remote) {
            return Err(Box::new((stanza, StanzaError::remote_server_not_found())));
        }
        let Stanza { kind, from, to, id, type_, el } = stanza;
        let mut el = el;
        // A stream that just ended leaves a closed queue behind: once more
        // with a new stream.
        for _ in 0..2 {
            let link = match self.link(&local, &remote) {
                Ok(link) => link,
                Err(err) => return Err(Box::new((Stanza { kind, from, to, id, type_, el }, err))),
            };
            match link.tx.try_send(el) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(back)) => {
                    let err = StanzaError::resource_constraint().with_text("too many stanzas queued for that server");
                    return Err(Box::new((Stanza { kind, from, to, id, type_, el: back }, err)));
                }
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.links.remove_if(&(local.clone(), remote.clone()), |_, l| l.id == link.id);
                    el = back;
                }
            }
        }
        Err(Box::new((Stanza { kind, from, to, id, type_, el }, StanzaError::remote_server_not_found())))
    }
}

/// Accepts other servers' streams on `listeners` until shutdown, then
/// waits for the open ones to close.
pub async fn serve(s2s: Arc<S2s>, listeners: Vec<S2sListener>) {
    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        accept_loops.spawn(accept_loop(s2s.clone(), listener));
    }
    accept_loops.join_all().await;
}

async fn accept_loop(s2s: Arc<S2s>, listener: S2sListener) {
    let mut shutdown = s2s.server.shutdown.subscribe();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.tcp.accept() => accepted,
            _ = starling_core::server::shutting_down(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "s2s accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = s2s.connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many server-to-server connections; refusing one");
            continue;
        };
        connections.spawn(incoming::run(s2s.clone(), tcp, peer, listener.direct_tls, permit));
        while connections.try_join_next().is_some() {}
    }
    let grace = Duration::from_secs(s2s.server.config.server.shutdown_grace_secs);
    let _ = tokio::time::timeout(grace, connections.join_all()).await;
}

/// Held by each stream for as long as it is open (`s2s.max_connections`).
type Permit = OwnedSemaphorePermit;
