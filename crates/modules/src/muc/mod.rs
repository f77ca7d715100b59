//! XEP-0045 Multi-User Chat at `conference.<host>`. Each room is a task of
//! its own with a bounded queue: stanzas to one room are handled in order,
//! a busy room never blocks another, and rooms run on any core. The
//! service routes by room name; `room.rs` is a room, `form.rs` its
//! configuration. Room messages are archived (XEP-0313 on the room JID)
//! in the archive store, stamped with the room's XEP-0359 stanza ids.

mod form;
mod room;

use crate::store::store_error;
use dashmap::DashMap;
use futures::future::BoxFuture;
use room::{Room, RoomState};
use serde::Deserialize;
use starling_core::{Module, ModuleContext, ModuleError, Server};
use starling_proto::xml::element;
use starling_proto::{ns, BareJid, Element, IqType, Stanza, StanzaError, StanzaKind};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// `account_data` store of persistent rooms: host = the service domain,
/// username = the room name.
const STORE: &str = "muc";
/// Persistent public rooms by name, under the service's own "" account:
/// disco#items lists them while they are not running.
const DIRECTORY: &str = "muc_directory";
/// How long a stanza waits for room in a busy room's queue.
const ROOM_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Muc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    /// Occupants one room takes by default (owners may lower it).
    pub max_occupants: usize,
    /// Messages kept for history on join.
    pub history_length: usize,
    /// Only accounts of this server may create rooms.
    pub local_creation_only: bool,
    /// Rooms one account may have created and running at once.
    pub max_rooms_per_owner: usize,
    /// Messages one occupant may send per minute; beyond, `resource-constraint`.
    pub max_messages_per_minute: u32,
    /// Stanzas waiting for one room; beyond, senders wait (10 s at most,
    /// then `resource-constraint`).
    pub room_queue: usize,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            max_occupants: 200,
            history_length: 20,
            local_creation_only: true,
            max_rooms_per_owner: 100,
            max_messages_per_minute: 120,
            room_queue: 256,
        }
    }
}

impl Module for Muc {
    const NAME: &'static str = "muc";
    type Config = MucConfig;

    fn load(config: MucConfig, ctx: &mut ModuleContext) -> Result<Self, ModuleError> {
        if config.room_queue == 0 || config.max_occupants == 0 {
            return Err(ModuleError::Failed {
                module: Self::NAME,
                message: "room_queue and max_occupants must be at least 1".into(),
            });
        }
        let config = Arc::new(config);
        for service in ctx.services().to_vec() {
            let service = Arc::new(Service {
                domain: service.domain.clone(),
                config: config.clone(),
                rooms: DashMap::new(),
                next_room: AtomicU64::new(0),
            });
            ctx.serve_domain(&service.domain.clone(), move |server, stanza| {
                let service = service.clone();
                async move { service.route(&server, stanza).await }
            });
        }
        Ok(Muc)
    }
}

/// One MUC service domain and its running rooms.
pub(crate) struct Service {
    pub domain: String,
    pub config: Arc<MucConfig>,
    rooms: DashMap<String, RoomHandle>,
    next_room: AtomicU64,
}

#[derive(Clone)]
struct RoomHandle {
    id: u64,
    tx: mpsc::Sender<Stanza>,
    /// What disco#items lists while the room runs.
    public_name: Arc<std::sync::Mutex<Option<String>>>,
    /// Who created it (a new room; not one loaded from the store).
    creator: Option<BareJid>,
}

impl Service {
    /// Boxed: a room that ends hands what it still had queued back here.
    fn route<'a>(self: &'a Arc<Self>, server: &'a Arc<Server>, stanza: Stanza) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(to) = stanza.to.clone() else { return };
            let Some(name) = to.node().map(|n| n.as_str().to_owned()) else {
                return self.to_service(server, &stanza).await;
            };
            let handle = match self.rooms.get(&name).map(|h| h.clone()) {
                Some(handle) => handle,
                None => match self.start_room(server, &name, &stanza).await {
                    Ok(Some(handle)) => handle,
                    Ok(None) => return,
                    Err(err) => return server.bounce(&stanza, err),
                },
            };
            // A full queue holds the sender back a while (a burst of joins
            // to a big room after a restart fills it with presence work)
            // before the stanza is refused.
            if let Err(e) = handle.tx.send_timeout(stanza, ROOM_QUEUE_WAIT).await {
                let stanza = match e {
                    mpsc::error::SendTimeoutError::Timeout(s) | mpsc::error::SendTimeoutError::Closed(s) => s,
                };
                server.bounce(&stanza, StanzaError::resource_constraint().with_text("the room is busy; try again"));
            }
        })
    }

    /// Starts the task of a room that is not running: a persistent one from
    /// the store, or a new one for a join (XEP-0045 §10.1). Anything else to
    /// a room that does not exist gets `item-not-found`.
    async fn start_room(
        self: &Arc<Self>,
        server: &Arc<Server>,
        name: &str,
        stanza: &Stanza,
    ) -> Result<Option<RoomHandle>, StanzaError> {
        let stored = server.store.get_data(&self.domain, name, STORE, "room").await.map_err(store_error)?;
        let jid = BareJid::new(&format!("{name}@{}", self.domain)).map_err(|_| StanzaError::jid_malformed())?;
        let state = match stored.as_deref().map(RoomState::from_toml) {
            Some(Ok(state)) => state,
            Some(Err(e)) => {
                tracing::error!(room = %jid, error = %e, "stored room unreadable");
                return Err(StanzaError::internal_server_error());
            }
            None => {
                let joining = stanza.kind == StanzaKind::Presence
                    && stanza.type_.is_none()
                    && stanza.to.as_ref().is_some_and(|t| t.resource().is_some());
                if !joining {
                    if stanza.kind == StanzaKind::Presence {
                        return Ok(None);
                    }
                    return Err(StanzaError::item_not_found().with_text("no such room"));
                }
                let creator = stanza.from.as_ref().ok_or_else(StanzaError::bad_request)?;
                if self.config.local_creation_only && !server.domains.is_host(creator.domain().as_str()) {
                    return Err(StanzaError::not_allowed().with_text("only local users may create rooms here"));
                }
                let creator = creator.to_bare();
                let created = self.rooms.iter().filter(|r| r.creator.as_ref() == Some(&creator)).count();
                if created >= self.config.max_rooms_per_owner {
                    return Err(StanzaError::not_allowed()
                        .with_text(format!("at most {} rooms per user", self.config.max_rooms_per_owner)));
                }
                RoomState::new(&self.config, creator)
            }
        };
        let creator = (stored.is_none()).then(|| stanza.from.as_ref().map(|f| f.to_bare())).flatten();
        let (tx, rx) = mpsc::channel(self.config.room_queue);
        let handle = RoomHandle {
            id: self.next_room.fetch_add(1, Ordering::Relaxed),
            tx,
            public_name: Arc::new(std::sync::Mutex::new(None)),
            creator,
        };
        // Two first stanzas at once: the first one's room wins.
        let handle = match self.rooms.entry(name.to_owned()) {
            dashmap::Entry::Occupied(running) => return Ok(Some(running.get().clone())),
            dashmap::Entry::Vacant(slot) => slot.insert(handle).clone(),
        };
        let room = Room::new(self.clone(), server.clone(), jid, state, handle.public_name.clone(), stored.is_none());
        tokio::spawn(room.run(rx, handle.id));
        Ok(Some(handle))
    }

    /// The room ended (empty and temporary, or destroyed): it leaves the
    /// table unless a newer one took its name.
    fn room_ended(&self, name: &str, id: u64) {
        self.rooms.remove_if(name, |_, h| h.id == id);
    }

    /// §6.3: the public rooms, persistent ones that are not running included.
    async fn public_rooms(&self, server: &Server) -> Result<Option<Element>, StanzaError> {
        let stored = server.store.all_data(&self.domain, "", DIRECTORY).await.map_err(store_error)?;
        let mut listed: BTreeMap<String, Option<String>> =
            stored.into_iter().map(|(room, name)| (room, Some(name))).collect();
        // A running room's own state is newer than the store's.
        for entry in self.rooms.iter() {
            listed.insert(entry.key().clone(), entry.value().public_name.lock().expect("room name lock").clone());
        }
        let mut query = Element::bare("query", ns::DISCO_ITEMS);
        for (room, name) in listed {
            if let Some(name) = name {
                let jid = format!("{room}@{}", self.domain);
                query.append_child(element("item", ns::DISCO_ITEMS, &[("jid", &jid), ("name", &name)]));
            }
        }
        Ok(Some(query))
    }

    /// Stanzas to the service itself: disco (XEP-0045 §6.1, §6.3).
    async fn to_service(&self, server: &Arc<Server>, stanza: &Stanza) {
        if stanza.kind != StanzaKind::Iq || !stanza.iq_type().is_some_and(IqType::is_request) {
            return;
        }
        let payload = stanza.payload();
        let result = match (stanza.iq_type(), payload.map(|p| (p.name(), p.ns()))) {
            (Some(IqType::Get), Some(("query", n))) if n == ns::DISCO_INFO => {
                let mut query = Element::bare("query", ns::DISCO_INFO);
                query.append_child(element(
                    "identity",
                    ns::DISCO_INFO,
                    &[("category", "conference"), ("type", "text"), ("name", "Chatrooms")],
                ));
                for var in [ns::DISCO_INFO, ns::DISCO_ITEMS, NS_MUC] {
                    query.append_child(element("feature", ns::DISCO_INFO, &[("var", var)]));
                }
                Ok(Some(query))
            }
            (Some(IqType::Get), Some(("query", n))) if n == ns::DISCO_ITEMS => self.public_rooms(server).await,
            _ => Err(StanzaError::service_unavailable()),
        };
        server.answer_iq(stanza, result);
    }
}
