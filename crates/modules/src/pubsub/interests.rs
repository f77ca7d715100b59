//! XEP-0163 §4.2 filtered notifications: which nodes each available session
//! wants, from the `+notify` features of its entity capabilities
//! (XEP-0115). A verification string is looked up once (one disco#info per
//! new hash, whichever session showed it first), checked against its hash
//! (§5.4) and cached for every session that advertises it. An answer that
//! does not verify (some clients hash a stale feature list) still tells what
//! the sessions that asked want, like Prosody does, but is not cached.

use super::node::SendLast;
use super::notify;
use super::service::{check_read, parse_config, Service};
use base64::Engine;
use dashmap::DashMap;
use starling_core::module::HookResult;
use starling_core::Server;
use starling_proto::xml::element;
use starling_proto::xmpp_parsers::caps::{self, Caps};
use starling_proto::xmpp_parsers::disco::DiscoInfoResult;
use starling_proto::xmpp_parsers::hashes::Algo;
use starling_proto::{ns, BareJid, FullJid, Jid, Stanza};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Prefix of the ids of the server's disco#info queries; the verification
/// string follows, so the answer names what it verifies.
const QUERY_ID: &str = "pep-caps:";
/// A query unanswered for this long is asked again by the next session.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Queries in flight at once: more new hashes wait for a later presence.
const MAX_QUERIES: usize = 256;

/// A disco#info query in flight for one verification string.
struct Query {
    algo: Algo,
    sent: Instant,
    /// Sessions that advertised the hash meanwhile: they get the last items once it is known.
    waiting: Vec<FullJid>,
}

/// What one available session advertised.
struct Advertised {
    ver: String,
    /// The nodes from an answer that did not verify: this session's own.
    unverified: Option<Arc<HashSet<String>>>,
}

pub struct Interests {
    /// Verified hashes: verification string → the nodes it wants notifications of.
    known: DashMap<String, Arc<HashSet<String>>>,
    /// The capabilities each available session advertised.
    sessions: DashMap<FullJid, Advertised>,
    queries: DashMap<String, Query>,
    capacity: usize,
}

impl Interests {
    pub fn new(capacity: usize) -> Self {
        Interests { known: DashMap::new(), sessions: DashMap::new(), queries: DashMap::new(), capacity }
    }

    /// The nodes whose notifications the session's capabilities ask for.
    fn nodes_of(&self, session: &FullJid) -> Option<Arc<HashSet<String>>> {
        let advertised = self.sessions.get(session)?;
        match &advertised.unverified {
            Some(nodes) => Some(nodes.clone()),
            None => self.known.get(&advertised.ver).map(|nodes| nodes.clone()),
        }
    }

    /// Whether the session's capabilities ask for the node's notifications.
    pub fn wants(&self, session: &FullJid, node: &str) -> bool {
        self.nodes_of(session).is_some_and(|nodes| nodes.contains(node))
    }

    /// XEP-0163 §4.3.4: a contact's available presence reaches an account,
    /// so the contact's session gets the last items it wants of the
    /// account's nodes (when the access model lets it read them).
    pub async fn contact_presence(&self, server: &Arc<Server>, stanza: &Stanza) {
        let Some(Ok(session)) = stanza.from.clone().map(Jid::try_into_full) else { return };
        let Some(owner) = stanza.to.as_ref().map(Jid::to_bare) else { return };
        if owner == session.to_bare() || !server.domains.is_host(session.domain().as_str()) {
            return;
        }
        if let Some(nodes) = self.nodes_of(&session).filter(|nodes| !nodes.is_empty()) {
            send_last_of(server, owner, &session, &nodes).await;
        }
    }

    pub fn forget(&self, session: &FullJid) {
        self.sessions.remove(session);
    }

    /// An available presence broadcast: records the session's capabilities
    /// and, when they are new for it, sends it the last items it wants.
    pub async fn presence(&self, server: &Arc<Server>, stanza: &Stanza) {
        let Some(Ok(session)) = stanza.from.clone().map(Jid::try_into_full) else { return };
        let caps = stanza.el.get_child("c", ns::CAPS).and_then(|c| Caps::try_from(c.clone()).ok());
        let Some(caps) = caps else {
            self.forget(&session);
            return;
        };
        let ver = base64::engine::general_purpose::STANDARD.encode(&caps.ver);
        let advertised = Advertised { ver: ver.clone(), unverified: None };
        if self.sessions.insert(session.clone(), advertised).is_some_and(|old| old.ver == ver) {
            return;
        }
        let known = self.known.get(&ver).map(|nodes| nodes.clone());
        match known {
            Some(nodes) => spawn_last_items(server.clone(), session, nodes),
            None => self.ask(server, session, &caps, ver),
        }
    }

    /// XEP-0115 §6.1: asks the session for the disco#info behind its hash, unless
    /// another session's query for it is under way.
    fn ask(&self, server: &Server, session: FullJid, caps: &Caps, ver: String) {
        if self.queries.len() >= MAX_QUERIES {
            // Clients that never answered must not block everyone else's new hashes.
            self.queries.retain(|_, query| query.sent.elapsed() < QUERY_TIMEOUT);
            if self.queries.len() >= MAX_QUERIES {
                return;
            }
        }
        let node = format!("{}#{ver}", caps.node);
        let id = format!("{QUERY_ID}{ver}");
        match self.queries.entry(ver) {
            dashmap::Entry::Occupied(mut query) if query.get().sent.elapsed() < QUERY_TIMEOUT => {
                query.get_mut().waiting.push(session);
                return;
            }
            entry => {
                entry.insert(Query { algo: caps.hash.clone(), sent: Instant::now(), waiting: vec![session.clone()] });
            }
        }
        let mut iq = element(
            "iq",
            ns::CLIENT,
            &[("type", "get"), ("id", &id), ("from", session.domain().as_str()), ("to", session.as_str())],
        );
        iq.append_child(element("query", ns::DISCO_INFO, &[("node", &node)]));
        server.send_to_local(iq);
    }

    /// An IQ to the host: takes the answers to the server's queries.
    pub async fn answer(&self, server: &Arc<Server>, stanza: &Stanza) -> HookResult {
        let Some(ver) = stanza.id.as_deref().and_then(|id| id.strip_prefix(QUERY_ID)) else {
            return HookResult::Continue;
        };
        if !(stanza.is_type("result") || stanza.is_type("error")) {
            return HookResult::Continue;
        }
        let Some((ver, query)) = self.queries.remove(ver) else { return HookResult::Handled };
        let Some(Ok(info)) = stanza.payload().map(|p| DiscoInfoResult::try_from(p.clone())) else {
            tracing::debug!(%ver, "no disco#info for entity capabilities");
            return HookResult::Handled;
        };
        let nodes: HashSet<String> =
            info.features.iter().filter_map(|f| f.strip_suffix("+notify")).map(str::to_owned).collect();
        let nodes = Arc::new(nodes);
        let verified = verifies(&info, &query.algo, &ver);
        if verified {
            if self.known.len() >= self.capacity {
                // Bounded: drop some entry; its sessions are asked again on their next presence.
                let victim = self.known.iter().next().map(|e| e.key().clone());
                if let Some(victim) = victim {
                    self.known.remove(&victim);
                }
            }
            self.known.insert(ver.clone(), nodes.clone());
        } else {
            tracing::debug!(%ver, ?info, "entity capabilities do not verify: not cached");
        }
        for session in query.waiting {
            let current = match self.sessions.get_mut(&session) {
                Some(mut advertised) if advertised.ver == ver => {
                    if !verified {
                        advertised.unverified = Some(nodes.clone());
                    }
                    true
                }
                _ => false,
            };
            if current {
                spawn_last_items(server.clone(), session, nodes.clone());
            }
        }
        HookResult::Handled
    }
}

/// XEP-0115 §5.4: the disco#info hashes to the advertised verification string.
fn verifies(info: &DiscoInfoResult, algo: &Algo, ver: &str) -> bool {
    let Ok(hash) = caps::hash_caps(&caps::compute_disco(info), algo.clone()) else { return false };
    base64::engine::general_purpose::STANDARD.encode(hash.hash) == ver
}

/// `send_last_items` in a task of its own: reading a big roster's nodes
/// must not hold up the presence or answer being routed.
fn spawn_last_items(server: Arc<Server>, session: FullJid, nodes: Arc<HashSet<String>>) {
    tokio::spawn(async move { send_last_items(&server, &session, &nodes).await });
}

/// XEP-0163 §4.3.4: a session that (newly) wants some nodes gets the last
/// item of each, from its own account and from every local contact whose
/// presence it is subscribed to.
async fn send_last_items(server: &Arc<Server>, session: &FullJid, nodes: &HashSet<String>) {
    if nodes.is_empty() {
        return;
    }
    let account = session.to_bare();
    let (host, user) = crate::store::account(&account);
    let roster = match server.store.roster(host, user).await {
        Ok((_, items)) => items,
        Err(e) => return tracing::error!(error = %e, "roster not read"),
    };
    let contacts = roster
        .iter()
        .filter(|i| i.subscription.has_to())
        .filter_map(|i| BareJid::new(&i.contact).ok())
        .filter(|c| server.domains.is_host(c.domain().as_str()));
    for publisher in std::iter::once(account.clone()).chain(contacts) {
        send_last_of(server, publisher, session, nodes).await;
    }
}

/// The last item of each of `publisher`'s PEP nodes that `session` wants
/// and may read.
async fn send_last_of(server: &Arc<Server>, publisher: BareJid, session: &FullJid, nodes: &HashSet<String>) {
    let service = Service::Pep(publisher);
    let existing = match server.store.pubsub_nodes(service.key()).await {
        Ok(existing) => existing,
        Err(e) => return tracing::error!(error = %e, "PEP nodes not read"),
    };
    let requester = Jid::from(session.to_bare());
    let to = Jid::from(session.clone());
    for node in existing.iter().filter(|n| nodes.contains(*n)) {
        let Ok(Some(stored)) = server.store.pubsub_node(service.key(), node).await else { continue };
        let Ok(config) = parse_config(&stored) else { continue };
        if config.send_last_published_item != SendLast::OnSubAndPresence {
            continue;
        }
        if check_read(server, &service, node, &config, &requester).await.is_ok() {
            notify::send_last(server, &service, node, &config, &to).await;
        }
    }
}
