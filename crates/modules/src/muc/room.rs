//! One room (XEP-0045), run by its own task: occupants with roles,
//! affiliations, history and subject, the admin and owner use cases, the
//! room's archive (XEP-0313, XEP-0359 ids), XEP-0421 occupant ids,
//! XEP-0410 self-pings, voice requests and IQs between occupants.

use super::form::{RoomConfig, VoiceRequest};
use super::{MucConfig, Service, DIRECTORY, NS_MUC, STORE};
use crate::mam::{query as mam_query, MamConfig};
use base64::Engine;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use starling_core::module::IqRequest;
use starling_core::Server;
use starling_proto::minidom::Node;
use starling_proto::xml::{element, set_attr, text_element};
use starling_proto::xmpp_parsers::data_forms::{DataForm, DataFormType};
use starling_proto::xmpp_parsers::muc::muc::Muc;
use starling_proto::xmpp_parsers::muc::user::{Affiliation, Role, Status};
use starling_proto::{ns, BareJid, Element, FullJid, IqType, Jid, Stanza, StanzaError, StanzaKind};
use starling_storage::ArchiveCommit;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
const NS_PING: &str = "urn:xmpp:ping";
const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";

/// What a room keeps across restarts when it is persistent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomState {
    pub config: RoomConfig,
    /// Bare JID → owner, admin, member or outcast.
    pub affiliations: BTreeMap<String, String>,
    pub subject: Option<(String, String)>,
    /// Key of the room's XEP-0421 occupant ids.
    pub secret: String,
}

impl RoomState {
    pub fn new(config: &MucConfig, creator: BareJid) -> Self {
        let mut secret = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
        RoomState {
            config: RoomConfig::new(config.max_occupants),
            affiliations: BTreeMap::from([(creator.to_string(), "owner".to_owned())]),
            subject: None,
            secret: hex::encode(secret),
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

struct Occupant {
    nick: String,
    jid: FullJid,
    role: Role,
    /// The occupant's last presence, without our `<x/>`s.
    presence: Element,
    /// Its XEP-0421 `<occupant-id/>`, made once at join (it goes on every
    /// presence and message it causes).
    occupant_id: Element,
    /// Messages sent in the current minute, for the rate limit.
    sent: (Instant, u32),
}

struct HistoryEntry {
    stamp: SystemTime,
    message: Element,
}

pub struct Room {
    service: Arc<Service>,
    server: Arc<Server>,
    jid: BareJid,
    state: RoomState,
    occupants: Vec<Occupant>,
    history: VecDeque<HistoryEntry>,
    public_name: Arc<Mutex<Option<String>>>,
    /// The commit of the last message queued for the room's archive.
    archived: Option<ArchiveCommit>,
    /// Made by the join that started it: that join gets status 201 (§10.1).
    new: bool,
    destroyed: bool,
}

fn rank(affiliation: &Affiliation) -> u8 {
    match affiliation {
        Affiliation::Owner => 4,
        Affiliation::Admin => 3,
        Affiliation::Member => 2,
        Affiliation::None => 1,
        Affiliation::Outcast => 0,
    }
}

fn role_rank(role: &Role) -> u8 {
    match role {
        Role::Moderator => 3,
        Role::Participant => 2,
        Role::Visitor => 1,
        Role::None => 0,
    }
}

/// The attribute value of an affiliation, "none" included (xmpp-parsers
/// leaves a default value out of attributes).
fn affiliation_name(affiliation: &Affiliation) -> &'static str {
    match affiliation {
        Affiliation::Owner => "owner",
        Affiliation::Admin => "admin",
        Affiliation::Member => "member",
        Affiliation::Outcast => "outcast",
        Affiliation::None => "none",
    }
}

fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Moderator => "moderator",
        Role::Participant => "participant",
        Role::Visitor => "visitor",
        Role::None => "none",
    }
}

impl Room {
    pub fn new(
        service: Arc<Service>,
        server: Arc<Server>,
        jid: BareJid,
        state: RoomState,
        public_name: Arc<Mutex<Option<String>>>,
        new: bool,
    ) -> Self {
        let room = Room {
            service,
            server,
            jid,
            state,
            occupants: vec![],
            history: VecDeque::new(),
            public_name,
            archived: None,
            new,
            destroyed: false,
        };
        room.publish_name();
        room
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Stanza>, id: u64) {
        while let Some(stanza) = rx.recv().await {
            self.handle(stanza).await;
            if self.destroyed || (self.occupants.is_empty() && !self.state.config.persistent) {
                let name = self.jid.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
                self.service.room_ended(&name, id);
                rx.close();
                // What was queued meanwhile goes to the room's successor (or
                // gets item-not-found): never dropped.
                while let Ok(stanza) = rx.try_recv() {
                    self.service.route(&self.server, stanza).await;
                }
                tracing::debug!(room = %self.jid, "room ended");
                return;
            }
        }
    }

    async fn handle(&mut self, stanza: Stanza) {
        let Some(from) = stanza.from.clone() else { return };
        let nick = stanza.to.as_ref().and_then(|t| t.resource()).map(|r| r.as_str().to_owned());
        if stanza.kind == StanzaKind::Iq && !stanza.iq_type().is_some_and(IqType::is_request) {
            // Only answers to IQs forwarded to occupants come to a nick
            // (a vCard's from the account's bare JID).
            if let Some(nick) = nick {
                self.iq_answer(stanza, &from, &nick).await;
            }
            return;
        }
        let Ok(from) = from.try_into_full() else {
            // Occupants are sessions; a bare sender (a server) gets an error.
            return self.server.bounce(&stanza, StanzaError::bad_request());
        };
        match stanza.kind {
            StanzaKind::Presence => self.presence(stanza, from, nick).await,
            StanzaKind::Message => self.message(stanza, from, nick).await,
            StanzaKind::Iq => match nick {
                Some(nick) if !self.is_self_ping(&stanza, &from, &nick) => {
                    self.iq_to_occupant(stanza, &from, &nick).await
                }
                _ => {
                    let result = self.iq(&stanza, &from, nick.as_deref()).await;
                    self.server.answer_iq(&stanza, result);
                }
            },
        }
    }

    // ------------------------------------------------------------ lookups

    fn affiliation(&self, jid: &BareJid) -> Affiliation {
        let name = self.state.affiliations.get(jid.as_str()).map(String::as_str).unwrap_or("none");
        name.parse().unwrap_or(Affiliation::None)
    }

    fn occupant(&self, jid: &FullJid) -> Option<usize> {
        self.occupants.iter().position(|o| &o.jid == jid)
    }

    fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    fn default_role(&self, affiliation: &Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            _ if self.state.config.moderated => Role::Visitor,
            _ => Role::Participant,
        }
    }

    fn occupant_jid(&self, nick: &str) -> Jid {
        self.jid.with_resource_str(nick).map(Jid::from).unwrap_or_else(|_| self.jid.clone().into())
    }

    /// XEP-0421: the same id for the same account in this room, whatever its nick.
    fn occupant_id(&self, real: &BareJid) -> Element {
        // Keyed by the room's random secret: stable, and unlinkable across rooms.
        let id = starling_core::secret::mac(&[0; 32], &["occupant-id", &self.state.secret, real.as_str()]).finalize();
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&id.into_bytes()[..18]);
        element("occupant-id", NS_OCCUPANT_ID, &[("id", &id)])
    }

    /// The name disco#items lists the room by, if it is public.
    fn listed_name(&self) -> Option<String> {
        let config = &self.state.config;
        config.public.then(|| {
            if config.name.is_empty() {
                self.jid.node().map(|n| n.to_string()).unwrap_or_default()
            } else {
                config.name.clone()
            }
        })
    }

    fn publish_name(&self) {
        *self.public_name.lock().expect("room name lock") = self.listed_name();
    }

    /// Saves a persistent room (deletes one that no longer is), and its
    /// entry in the service's directory of rooms that are not running.
    async fn persist(&self) {
        let (domain, name) = (self.jid.domain().as_str(), self.jid.node().map_or("", |n| n.as_str()));
        let persistent = self.state.config.persistent;
        let value = persistent.then(|| toml::to_string(&self.state).expect("serialisable room"));
        let listed = self.listed_name().filter(|_| persistent);
        let store = &self.server.store;
        let saved = match store.set_data(domain, name, STORE, "room", value.as_deref()).await {
            Ok(()) => store.set_data(domain, "", DIRECTORY, name, listed.as_deref()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            tracing::error!(room = %self.jid, error = %e, "room not saved");
        }
    }

    async fn send(&self, el: Element) {
        if let Ok(stanza) = Stanza::from_element(el, ns::CLIENT) {
            self.server.deliver(stanza).await;
        }
    }

    // ------------------------------------------------------------ presence

    /// `occupant`'s presence as `to` sees it (§7.2.3: real JIDs only for
    /// moderators unless the room is non-anonymous).
    fn presence_of(&self, occupant: &Occupant, to: &Occupant, statuses: &[Status]) -> Element {
        let mut presence = occupant.presence.clone();
        set_attr(&mut presence, "from", self.occupant_jid(&occupant.nick).to_string());
        set_attr(&mut presence, "to", to.jid.to_string());
        let affiliation = self.affiliation(&occupant.jid.to_bare());
        let mut item = element(
            "item",
            ns::MUC_USER,
            &[("affiliation", affiliation_name(&affiliation)), ("role", role_name(&occupant.role))],
        );
        if self.state.config.whois_anyone || to.role == Role::Moderator {
            set_attr(&mut item, "jid", occupant.jid.to_string());
        }
        let mut x = Element::bare("x", ns::MUC_USER);
        x.append_child(item);
        let mut statuses = statuses.to_vec();
        if to.jid == occupant.jid {
            statuses.push(Status::SelfPresence);
            if self.state.config.whois_anyone {
                statuses.push(Status::NonAnonymousRoom);
            }
        }
        for status in statuses {
            x.append_child(status.into());
        }
        presence.append_child(x);
        presence.append_child(occupant.occupant_id.clone());
        presence
    }

    async fn broadcast_presence(&self, index: usize, statuses: &[Status]) {
        let occupant = &self.occupants[index];
        for to in &self.occupants {
            self.send(self.presence_of(occupant, to, statuses)).await;
        }
    }

    /// Tells everyone (the occupant included) that it left, with `statuses`
    /// (307 kicked, 301 banned…) and maybe a reason, then removes it.
    async fn remove(&mut self, index: usize, statuses: &[Status], reason: Option<&str>) {
        let mut gone = self.occupants.remove(index);
        gone.role = Role::None;
        set_attr(&mut gone.presence, "type", "unavailable");
        let mut everyone: Vec<&Occupant> = self.occupants.iter().collect();
        everyone.push(&gone);
        for to in everyone {
            let mut presence = self.presence_of(&gone, to, statuses);
            if let (Some(reason), Some(x)) = (reason, presence.get_child_mut("x", ns::MUC_USER)) {
                if let Some(item) = x.get_child_mut("item", ns::MUC_USER) {
                    item.append_child(text_element("reason", ns::MUC_USER, reason));
                }
            }
            self.send(presence).await;
        }
    }

    async fn presence(&mut self, stanza: Stanza, from: FullJid, nick: Option<String>) {
        let current = self.occupant(&from);
        match (stanza.type_.as_deref(), current) {
            // §7.14: leaving.
            (Some("unavailable"), Some(index)) => self.remove(index, &[], None).await,
            // §11 (333): the occupant's session is gone (its server
            // bounced what the room sent): the others see it leave.
            (Some("error"), Some(index)) => self.remove(index, &[Status::ServiceErrorKick], None).await,
            (Some(_), _) => {}
            (None, Some(index)) => match nick {
                // §7.6: a nick change.
                Some(nick) if nick != self.occupants[index].nick => self.change_nick(&stanza, index, nick).await,
                // §7.7: a presence update (status, show).
                _ => {
                    self.occupants[index].presence = client_presence(&stanza.el);
                    self.broadcast_presence(index, &[]).await;
                }
            },
            (None, None) => match nick {
                Some(nick) => {
                    if let Err(err) = self.join(&stanza, from, nick).await {
                        self.server.bounce(&stanza, err);
                    }
                }
                // §7.2.1: a join needs a nick.
                None => self.server.bounce(&stanza, StanzaError::jid_malformed().with_text("a nickname is required")),
            },
        }
    }

    /// §7.2: the checks, then presence both ways, history and subject.
    async fn join(&mut self, stanza: &Stanza, from: FullJid, nick: String) -> Result<(), StanzaError> {
        let bare = from.to_bare();
        let affiliation = self.affiliation(&bare);
        let config = &self.state.config;
        if affiliation == Affiliation::Outcast {
            return Err(StanzaError::forbidden().with_text("you are banned from this room"));
        }
        if config.members_only && rank(&affiliation) < rank(&Affiliation::Member) {
            return Err(StanzaError::registration_required().with_text("this room is for members only"));
        }
        let muc = stanza.el.get_child("x", NS_MUC).and_then(|x| Muc::try_from(x.clone()).ok());
        if let Some(password) = &config.password {
            if muc.as_ref().and_then(|m| m.password.as_ref()) != Some(password) {
                return Err(StanzaError::not_authorized().with_text("a password is required"));
            }
        }
        if nick.trim().is_empty() {
            return Err(StanzaError::jid_malformed().with_text("a nickname is required"));
        }
        // §7.2.9: a nick in use by someone else.
        if self.occupants.iter().any(|o| o.nick == nick && o.jid.to_bare() != bare) {
            return Err(StanzaError::conflict().with_text("that nickname is in use"));
        }
        if self.occupants.len() >= config.max_users && rank(&affiliation) < rank(&Affiliation::Admin) {
            return Err(StanzaError::service_unavailable().with_text("the room is full"));
        }
        let role = self.default_role(&affiliation);
        self.occupants.push(Occupant {
            nick,
            jid: from,
            role,
            presence: client_presence(&stanza.el),
            occupant_id: self.occupant_id(&bare),
            sent: (Instant::now(), 0),
        });
        let index = self.occupants.len() - 1;
        // Existing occupants' presence to the newcomer, then the newcomer's to all.
        for other in &self.occupants[..index] {
            self.send(self.presence_of(other, &self.occupants[index], &[])).await;
        }
        let statuses = if std::mem::take(&mut self.new) { vec![Status::RoomHasBeenCreated] } else { vec![] };
        self.broadcast_presence(index, &statuses).await;
        self.send_history(index, muc.and_then(|m| m.history)).await;
        // §7.2.15: the subject (empty if none) ends the join.
        let (setter, subject) = self.state.subject.clone().unwrap_or_default();
        let mut message =
            element("message", ns::CLIENT, &[("type", "groupchat"), ("to", &self.occupants[index].jid.to_string())]);
        let from = if setter.is_empty() { self.jid.to_string() } else { self.occupant_jid(&setter).to_string() };
        set_attr(&mut message, "from", from);
        message.append_child(text_element("subject", ns::CLIENT, subject));
        self.send(message).await;
        Ok(())
    }

    /// §7.2.14: history, within what the join asked for.
    async fn send_history(&self, index: usize, wanted: Option<starling_proto::xmpp_parsers::muc::muc::History>) {
        let max_stanzas = wanted.as_ref().and_then(|h| h.maxstanzas).map_or(usize::MAX, |n| n as usize);
        let max_chars = wanted.as_ref().and_then(|h| h.maxchars).map_or(usize::MAX, |n| n as usize);
        let not_before = wanted.as_ref().and_then(|h| {
            let since = h.since.as_ref().map(|s| UNIX_EPOCH + Duration::from_secs(s.0.timestamp().max(0) as u64));
            let seconds = h.seconds.map(|s| SystemTime::now() - Duration::from_secs(s.into()));
            since.max(seconds)
        });
        let mut chosen = Vec::new();
        let mut chars = 0;
        for entry in self.history.iter().rev() {
            if chosen.len() >= max_stanzas || not_before.is_some_and(|t| entry.stamp < t) {
                break;
            }
            chars += String::from(&entry.message).len();
            if chars > max_chars {
                break;
            }
            chosen.push(entry);
        }
        let to = self.occupants[index].jid.to_string();
        for entry in chosen.into_iter().rev() {
            let mut message = entry.message.clone();
            set_attr(&mut message, "to", to.clone());
            let secs = entry.stamp.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let stamp = starling_proto::time::format_utc(secs, 0);
            message.append_child(element("delay", ns::DELAY, &[("stamp", &stamp), ("from", self.jid.as_str())]));
            self.send(message).await;
        }
    }

    async fn change_nick(&mut self, stanza: &Stanza, index: usize, nick: String) {
        if self.occupants.iter().any(|o| o.nick == nick) {
            return self.server.bounce(stanza, StanzaError::conflict().with_text("that nickname is in use"));
        }
        // §7.6.3: unavailable with 303 and the new nick, then available.
        let old = &self.occupants[index];
        for to in &self.occupants {
            let mut presence = self.presence_of(old, to, &[Status::NewNick]);
            set_attr(&mut presence, "type", "unavailable");
            if let Some(item) =
                presence.get_child_mut("x", ns::MUC_USER).and_then(|x| x.get_child_mut("item", ns::MUC_USER))
            {
                set_attr(item, "nick", nick.clone());
            }
            self.send(presence).await;
        }
        self.occupants[index].nick = nick;
        self.occupants[index].presence = client_presence(&stanza.el);
        self.broadcast_presence(index, &[]).await;
    }

    // ------------------------------------------------------------ messages

    async fn message(&mut self, stanza: Stanza, from: FullJid, nick: Option<String>) {
        if stanza.is_type("error") {
            return;
        }
        let Some(index) = self.occupant(&from) else {
            if nick.is_none()
                && stanza.el.get_child("x", ns::MUC_USER).is_some_and(|x| x.has_child("invite", ns::MUC_USER))
            {
                return self.server.bounce(&stanza, StanzaError::not_acceptable().with_text("join the room first"));
            }
            // §7.4: only occupants speak.
            return self.server.bounce(&stanza, StanzaError::not_acceptable().with_text("you are not in this room"));
        };
        if let Some(target) = nick {
            return self.private_message(stanza, index, &target).await;
        }
        if let Some(invite) = stanza.el.get_child("x", ns::MUC_USER).and_then(|x| x.get_child("invite", ns::MUC_USER)) {
            return self.invite(&stanza, index, invite.clone()).await;
        }
        let occupant = &mut self.occupants[index];
        let now = Instant::now();
        if now.duration_since(occupant.sent.0) >= Duration::from_secs(60) {
            occupant.sent = (now, 0);
        }
        occupant.sent.1 += 1;
        if occupant.sent.1 > self.service.config.max_messages_per_minute {
            return self
                .server
                .bounce(&stanza, StanzaError::resource_constraint().with_text("too many messages; slow down"));
        }
        if let Some(request) = VoiceRequest::from_message(&stanza.el) {
            return self.voice_request(&stanza, index, request).await;
        }
        if !stanza.is_type("groupchat") {
            return self
                .server
                .bounce(&stanza, StanzaError::bad_request().with_text("messages to the room are groupchat"));
        }
        // §7.4: visitors in a moderated room have no voice.
        if self.occupants[index].role == Role::Visitor {
            return self.server.bounce(&stanza, StanzaError::forbidden().with_text("you have no voice in this room"));
        }
        let subject = stanza.el.get_child("subject", ns::CLIENT).map(Element::text);
        let has_body = stanza.el.has_child("body", ns::CLIENT);
        if let (Some(subject), false) = (&subject, has_body) {
            // §8.1: who may change the subject.
            if !self.state.config.change_subject && self.occupants[index].role != Role::Moderator {
                return self
                    .server
                    .bounce(&stanza, StanzaError::forbidden().with_text("only moderators may change the subject"));
            }
            self.state.subject = Some((self.occupants[index].nick.clone(), subject.clone()));
            self.persist().await;
        }
        // XEP-0424 §5: the author retracts one of their messages: the room's
        // archive keeps a tombstone, and the retraction goes out as sent.
        if let Some(id) = stanza.el.get_child("retract", ns::RETRACT).and_then(|r| r.attr("id")).map(str::to_owned) {
            let author = self.occupants[index].jid.to_bare();
            self.retract_archived(&id, Retraction::ByAuthor(&author)).await;
        }
        self.broadcast_message(stanza.el, index, subject.is_none() || has_body).await;
    }

    /// §7.13: a visitor asks for voice, and the moderators get the §8.6
    /// approval form; a moderator's approving answer grants it (§8.3).
    async fn voice_request(&mut self, stanza: &Stanza, index: usize, request: VoiceRequest) {
        match request {
            VoiceRequest::Ask => {
                let asker = &self.occupants[index];
                if asker.role != Role::Visitor {
                    return self
                        .server
                        .bounce(stanza, StanzaError::not_acceptable().with_text("you have voice already"));
                }
                let form: Element = VoiceRequest::approval_form(&asker.jid, &asker.nick).into();
                for moderator in self.occupants.iter().filter(|o| o.role == Role::Moderator) {
                    let mut message =
                        element("message", ns::CLIENT, &[("from", self.jid.as_str()), ("to", moderator.jid.as_str())]);
                    message.append_child(form.clone());
                    self.send(message).await;
                }
            }
            VoiceRequest::Answer { nick, allow } => {
                if self.occupants[index].role != Role::Moderator {
                    return self
                        .server
                        .bounce(stanza, StanzaError::forbidden().with_text("only moderators answer voice requests"));
                }
                let Some(target) = self.by_nick(&nick) else {
                    return self.server.bounce(stanza, StanzaError::item_not_found().with_text("no such occupant"));
                };
                if allow && self.occupants[target].role == Role::Visitor {
                    self.occupants[target].role = Role::Participant;
                    self.broadcast_presence(target, &[]).await;
                }
            }
        }
    }

    /// XEP-0425 §3: a moderator retracts a message by the room's stanza id.
    async fn moderate(&mut self, from: &FullJid, payload: &Element) -> Result<(), StanzaError> {
        let index = self.occupant(from).filter(|&i| self.occupants[i].role == Role::Moderator).ok_or_else(|| {
            StanzaError::forbidden().with_text("Only moderators are allowed to moderate other participants' messages")
        })?;
        let id = payload.attr("id").ok_or_else(|| StanzaError::bad_request().with_text("which message?"))?.to_owned();
        if !payload.has_child("retract", ns::RETRACT) {
            return Err(StanzaError::feature_not_implemented().with_text("only retraction is supported"));
        }
        let reason = payload.get_child("reason", NS_MODERATE).map(Element::text);
        let moderator = &self.occupants[index];
        let mut moderated =
            element("moderated", NS_MODERATE, &[("by", &self.occupant_jid(&moderator.nick).to_string())]);
        moderated.append_child(moderator.occupant_id.clone());
        let by_moderator = Retraction::ByModerator { moderated: moderated.clone(), reason: reason.clone() };
        if !self.retract_archived(&id, by_moderator).await {
            return Err(StanzaError::item_not_found().with_text("no such message in the room's archive"));
        }
        let mut retract = element("retract", ns::RETRACT, &[("id", &id)]);
        retract.append_child(moderated);
        if let Some(reason) = reason {
            retract.append_child(text_element("reason", ns::RETRACT, reason));
        }
        for to in &self.occupants {
            let mut message = element(
                "message",
                ns::CLIENT,
                &[("type", "groupchat"), ("from", self.jid.as_str()), ("to", &to.jid.to_string())],
            );
            message.append_child(retract.clone());
            self.send(message).await;
        }
        Ok(())
    }

    /// Replaces the archived message `id` with a tombstone (XEP-0424 §6,
    /// XEP-0425 §4), and takes it out of the history.
    async fn retract_archived(&mut self, id: &str, by: Retraction<'_>) -> bool {
        self.archive_written().await;
        let filter = starling_storage::ArchiveFilter { ids: vec![id.to_owned()], ..Default::default() };
        let page = self
            .server
            .store
            .archive_page(self.jid.as_str(), &filter, starling_storage::PageFrom::After(None), 1)
            .await;
        let Some(original) =
            page.ok().and_then(|p| p.messages.into_iter().next()).and_then(|m| m.stanza.parse::<Element>().ok())
        else {
            return false;
        };
        // The tombstone keeps who said it (address, occupant id), not what.
        let mut tombstone = Element::bare("message", ns::CLIENT);
        for attribute in ["type", "from", "to", "id"] {
            if let Some(value) = original.attr(attribute) {
                set_attr(&mut tombstone, attribute, value);
            }
        }
        if let Some(occupant_id) = original.get_child("occupant-id", NS_OCCUPANT_ID) {
            tombstone.append_child(occupant_id.clone());
        }
        let stamp = starling_proto::time::format_utc(
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            0,
        );
        let mut retracted = element("retracted", ns::RETRACT, &[("stamp", &stamp)]);
        let replaced = match by {
            Retraction::ByModerator { moderated, reason } => {
                retracted.append_child(moderated);
                if let Some(reason) = reason {
                    retracted.append_child(text_element("reason", ns::RETRACT, reason));
                }
                tombstone.append_child(retracted);
                self.server.store.archive_replace_by_id(self.jid.as_str(), id, &String::from(&tombstone)).await
            }
            // Only a message the author sent: the archive checks the sender.
            Retraction::ByAuthor(author) => {
                tombstone.append_child(retracted);
                let xml = String::from(&tombstone);
                self.server.store.archive_replace(self.jid.as_str(), author.as_str(), false, id, &xml).await
            }
        };
        let replaced = replaced.unwrap_or_else(|e| {
            tracing::error!(room = %self.jid, error = %e, "retraction not archived");
            false
        });
        if replaced {
            let room = self.jid.to_string();
            self.history.retain(|entry| {
                !entry
                    .message
                    .children()
                    .any(|c| c.is("stanza-id", ns::SID) && c.attr("by") == Some(&room) && c.attr("id") == Some(id))
            });
        }
        replaced
    }

    /// §7.4: the message from room/nick to every occupant, with the room's
    /// stanza id; archived and kept for history.
    async fn broadcast_message(&mut self, mut el: Element, index: usize, record: bool) {
        let sender = &self.occupants[index];
        let (nick, real) = (sender.nick.clone(), sender.jid.to_bare());
        // Only the room gives its ids.
        let room = self.jid.to_string();
        for node in el.take_nodes() {
            let theirs = matches!(&node, Node::Element(c)
                if (c.is("stanza-id", ns::SID) && c.attr("by") == Some(&room)) || c.is("occupant-id", NS_OCCUPANT_ID));
            if !theirs {
                el.append_node(node);
            }
        }
        set_attr(&mut el, "from", self.occupant_jid(&nick).to_string());
        el.append_child(self.occupants[index].occupant_id.clone());
        if record && self.state.config.archiving {
            let id = self.archive(&el, &real).await;
            if let Some(id) = id {
                el.append_child(element("stanza-id", ns::SID, &[("id", &id), ("by", &room)]));
            }
        }
        if record {
            self.history.push_back(HistoryEntry { stamp: SystemTime::now(), message: el.clone() });
            while self.history.len() > self.service.config.history_length {
                self.history.pop_front();
            }
        }
        // The envelope is read once; each copy only gets its `to`.
        let Ok(message) = Stanza::from_element(el, ns::CLIENT) else { return };
        for to in &self.occupants {
            let mut copy = message.clone();
            copy.set_to(to.jid.clone().into());
            self.server.deliver(copy).await;
        }
    }

    /// Waits until what the room queued for its archive is written, before
    /// it reads or changes rows there (batches commit in queue order).
    async fn archive_written(&mut self) {
        if let Some(commit) = self.archived.take() {
            let _ = commit.committed().await;
        }
    }

    async fn archive(&mut self, el: &Element, real: &BareJid) -> Option<String> {
        let mut raw = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut raw);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut stored = el.clone();
        set_attr(&mut stored, "to", self.jid.to_string());
        let xml = String::from(&stored);
        let body = el.get_child("body", ns::CLIENT).map(Element::text);
        let message = starling_storage::NewArchived {
            archive: self.jid.as_str(),
            stanza_id: &id,
            peer: real.as_str(),
            peer_resource: "",
            origin_id: el.get_child("origin-id", ns::SID).and_then(|o| o.attr("id")),
            outgoing: false,
            stamp: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64),
            body: body.as_deref(),
            stanza: &xml,
        };
        match self.server.store.archive_enqueue(&message).await {
            Ok(commit) => {
                // Not awaited here: waiting for each message's commit held
                // back the room and every occupant's copy (the p99 of the
                // muc benchmark). The id is the room's already, the queue
                // keeps broadcast order, and the writer logs a failed batch.
                self.archived = Some(commit);
                Some(id)
            }
            Err(e) => {
                tracing::error!(room = %self.jid, error = %e, "room archive failed");
                None
            }
        }
    }

    /// §7.5: occupant to occupant, through the room.
    async fn private_message(&self, stanza: Stanza, index: usize, target: &str) {
        if !self.state.config.allow_pm {
            return self
                .server
                .bounce(&stanza, StanzaError::not_allowed().with_text("private messages are off in this room"));
        }
        let Some(to) = self.by_nick(target) else {
            return self.server.bounce(&stanza, StanzaError::item_not_found().with_text("no such occupant"));
        };
        let mut el = stanza.el;
        set_attr(&mut el, "from", self.occupant_jid(&self.occupants[index].nick).to_string());
        set_attr(&mut el, "to", self.occupants[to].jid.to_string());
        if !el.has_child("x", ns::MUC_USER) {
            el.append_child(Element::bare("x", ns::MUC_USER));
        }
        self.send(el).await;
    }

    /// §7.8.2: a mediated invitation, sent on from the room.
    async fn invite(&self, stanza: &Stanza, index: usize, invite: Element) {
        let Some(invitee) = invite.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return self.server.bounce(stanza, StanzaError::jid_malformed());
        };
        let mut message = element("message", ns::CLIENT, &[("from", self.jid.as_str()), ("to", &invitee.to_string())]);
        let mut x = Element::bare("x", ns::MUC_USER);
        let mut forwarded = element("invite", ns::MUC_USER, &[("from", self.occupants[index].jid.to_bare().as_str())]);
        if let Some(reason) = invite.get_child("reason", ns::MUC_USER) {
            forwarded.append_child(reason.clone());
        }
        x.append_child(forwarded);
        if let Some(password) = &self.state.config.password {
            x.append_child(text_element("password", ns::MUC_USER, password.clone()));
        }
        message.append_child(x);
        self.send(message).await;
    }

    // ------------------------------------------------------------ IQs

    /// XEP-0410 §3: a ping to one's own occupant JID (or from outside the
    /// room) is the room's to answer; other pings go to the occupant.
    fn is_self_ping(&self, stanza: &Stanza, from: &FullJid, nick: &str) -> bool {
        stanza.payload().is_some_and(|p| p.is("ping", NS_PING))
            && self.occupant(from).is_none_or(|i| self.occupants[i].nick == nick)
    }

    /// §17.4 (IQ rule 3): an IQ to an occupant JID goes on to the
    /// occupant's real JID from the sender's occupant JID, so that neither
    /// learns the other's real JID. vCard requests go to the account's bare
    /// JID, where vCards are answered (avatars in rooms, XEP-0153).
    async fn iq_to_occupant(&self, stanza: Stanza, from: &FullJid, nick: &str) {
        let Some(sender) = self.occupant(from) else {
            return self.server.bounce(&stanza, StanzaError::not_acceptable().with_text("join the room first"));
        };
        let Some(target) = self.by_nick(nick) else {
            return self.server.bounce(&stanza, StanzaError::item_not_found().with_text("no such occupant"));
        };
        let real = &self.occupants[target].jid;
        let to = if stanza.payload().is_some_and(|p| p.is("vCard", ns::VCARD)) {
            real.to_bare().to_string()
        } else {
            real.to_string()
        };
        let mut el = stanza.el;
        set_attr(&mut el, "from", self.occupant_jid(&self.occupants[sender].nick).to_string());
        set_attr(&mut el, "to", to);
        self.send(el).await;
    }

    /// The answer to an IQ forwarded by [`Self::iq_to_occupant`]: back to
    /// the asking occupant, from the answering occupant's JID.
    async fn iq_answer(&self, stanza: Stanza, from: &Jid, nick: &str) {
        let answering = self.occupants.iter().find(|o| {
            o.jid.as_str() == from.as_str() || (from.resource().is_none() && o.jid.to_bare().as_str() == from.as_str())
        });
        let (Some(answering), Some(asker)) = (answering, self.by_nick(nick)) else { return };
        let mut el = stanza.el;
        set_attr(&mut el, "from", self.occupant_jid(&answering.nick).to_string());
        set_attr(&mut el, "to", self.occupants[asker].jid.to_string());
        self.send(el).await;
    }

    async fn iq(
        &mut self,
        stanza: &Stanza,
        from: &FullJid,
        nick: Option<&str>,
    ) -> Result<Option<Element>, StanzaError> {
        let payload = stanza.payload().ok_or_else(StanzaError::bad_request)?;
        let namespace = payload.ns();
        if let Some(nick) = nick {
            // XEP-0410 §3: a self-ping answers whether the sender is joined
            // with that nick (other IQs to a nick were forwarded).
            return match self.occupant(from) {
                Some(i) if self.occupants[i].nick == nick => Ok(None),
                _ => Err(StanzaError::not_acceptable().with_text("not joined with that nickname")),
            };
        }
        match (stanza.iq_type(), namespace.as_str()) {
            (Some(IqType::Get), ns::DISCO_INFO) => Ok(Some(self.disco_info())),
            (Some(IqType::Get), ns::DISCO_ITEMS) => Ok(Some(Element::bare("query", ns::DISCO_ITEMS))),
            (Some(IqType::Get), NS_PING) => Ok(None),
            (Some(IqType::Get), NS_ADMIN) => self.admin_list(from, payload).map(Some),
            (Some(IqType::Set), NS_ADMIN) => self.admin_set(from, payload).await.map(|()| None),
            (Some(IqType::Get), NS_OWNER) => {
                self.require_owner(from)?;
                let mut query = Element::bare("query", NS_OWNER);
                query.append_child(self.state.config.form().into());
                Ok(Some(query))
            }
            (Some(IqType::Set), NS_OWNER) => self.owner_set(from, payload).await.map(|()| None),
            (Some(IqType::Set), NS_MODERATE) => self.moderate(from, payload).await.map(|()| None),
            (Some(_), ns::MAM) => {
                // The archive is for those in the room or with an affiliation.
                let affiliated = rank(&self.affiliation(&from.to_bare())) >= rank(&Affiliation::Member);
                if self.occupant(from).is_none() && !affiliated {
                    return Err(StanzaError::forbidden().with_text("join the room to read its archive"));
                }
                if stanza.iq_type() == Some(IqType::Get) {
                    return Ok(Some(mam_query::form_fields()));
                }
                self.archive_written().await;
                let request = IqRequest { server: self.server.clone(), stanza: stanza.clone(), stream: None };
                mam_query::run(&request, &self.jid, &MamConfig::default()).await
            }
            _ => Err(StanzaError::service_unavailable()),
        }
    }

    /// §6.4: identity, features and `muc#roominfo`.
    fn disco_info(&self) -> Element {
        let config = &self.state.config;
        let name = if config.name.is_empty() {
            self.jid.node().map(|n| n.to_string()).unwrap_or_default()
        } else {
            config.name.clone()
        };
        let mut query = Element::bare("query", ns::DISCO_INFO);
        query.append_child(element(
            "identity",
            ns::DISCO_INFO,
            &[("category", "conference"), ("type", "text"), ("name", &name)],
        ));
        let mut features =
            vec![ns::DISCO_INFO, NS_MUC, NS_OCCUPANT_ID, "http://jabber.org/protocol/muc#self-ping-optimization"];
        if config.archiving {
            features.push(ns::MAM);
        }
        features.extend(config.features());
        for var in features {
            query.append_child(element("feature", ns::DISCO_INFO, &[("var", var)]));
        }
        query.append_child(config.info_form(self.occupants.len()).into());
        query
    }

    fn actor(&self, from: &FullJid) -> (Affiliation, Role) {
        let role = self.occupant(from).map_or(Role::None, |i| self.occupants[i].role.clone());
        (self.affiliation(&from.to_bare()), role)
    }

    fn require_owner(&self, from: &FullJid) -> Result<(), StanzaError> {
        match self.affiliation(&from.to_bare()) {
            Affiliation::Owner => Ok(()),
            _ => Err(StanzaError::forbidden().with_text("only owners may do that")),
        }
    }

    /// §9.5, §9.8, §8.5: lists by affiliation (admins and owners) or role (moderators).
    fn admin_list(&self, from: &FullJid, query: &Element) -> Result<Element, StanzaError> {
        let wanted = query.get_child("item", NS_ADMIN).ok_or_else(StanzaError::bad_request)?;
        let (affiliation, role) = self.actor(from);
        let mut answer = Element::bare("query", NS_ADMIN);
        if let Some(list) = wanted.attr("affiliation") {
            if rank(&affiliation) < rank(&Affiliation::Admin) {
                return Err(StanzaError::forbidden());
            }
            for (jid, held) in &self.state.affiliations {
                if held == list {
                    answer.append_child(element("item", NS_ADMIN, &[("affiliation", held), ("jid", jid)]));
                }
            }
        } else if let Some(list) = wanted.attr("role") {
            if role != Role::Moderator {
                return Err(StanzaError::forbidden());
            }
            for o in self.occupants.iter().filter(|o| role_name(&o.role) == list) {
                let aff = affiliation_name(&self.affiliation(&o.jid.to_bare()));
                answer.append_child(element(
                    "item",
                    NS_ADMIN,
                    &[("affiliation", aff), ("role", list), ("nick", &o.nick), ("jid", &o.jid.to_string())],
                ));
            }
        } else {
            return Err(StanzaError::bad_request());
        }
        Ok(answer)
    }

    /// §8 and §9: role changes by nick (kick, voice, moderator) and
    /// affiliation changes by JID (member, admin, owner, ban, none).
    async fn admin_set(&mut self, from: &FullJid, query: &Element) -> Result<(), StanzaError> {
        let (actor_affiliation, actor_role) = self.actor(from);
        let items: Vec<Element> = query.children().filter(|c| c.is("item", NS_ADMIN)).cloned().collect();
        if items.is_empty() {
            return Err(StanzaError::bad_request());
        }
        for item in items {
            let reason = item.get_child("reason", NS_ADMIN).map(Element::text);
            if let (Some(role), Some(nick)) = (item.attr("role"), item.attr("nick")) {
                let role: Role = role.parse().map_err(|_| StanzaError::bad_request())?;
                let target =
                    self.by_nick(nick).ok_or_else(|| StanzaError::item_not_found().with_text("no such occupant"))?;
                let target_affiliation = self.affiliation(&self.occupants[target].jid.to_bare());
                // §8.2, §8.4, §9.6: moderators act on those below admins; granting
                // or revoking moderator takes an admin.
                let allowed = actor_role == Role::Moderator
                    && (rank(&target_affiliation) < rank(&Affiliation::Admin)
                        || rank(&actor_affiliation) > rank(&target_affiliation))
                    && (role != Role::Moderator && self.occupants[target].role != Role::Moderator
                        || rank(&actor_affiliation) >= rank(&Affiliation::Admin));
                if !allowed {
                    return Err(StanzaError::not_allowed().with_text("you may not change that occupant's role"));
                }
                if role == Role::None {
                    self.remove(target, &[Status::Kicked], reason.as_deref()).await;
                } else {
                    self.occupants[target].role = role;
                    self.broadcast_presence(target, &[]).await;
                }
            } else if let (Some(affiliation), Some(jid)) = (item.attr("affiliation"), item.attr("jid")) {
                let affiliation: Affiliation = affiliation.parse().map_err(|_| StanzaError::bad_request())?;
                let jid = BareJid::new(jid).map_err(|_| StanzaError::jid_malformed())?;
                let current = self.affiliation(&jid);
                // §9 and §10: admins manage members and outcasts below them;
                // owners everything.
                let needed = if matches!(affiliation, Affiliation::Owner | Affiliation::Admin)
                    || matches!(current, Affiliation::Owner | Affiliation::Admin)
                {
                    Affiliation::Owner
                } else {
                    Affiliation::Admin
                };
                if rank(&actor_affiliation) < rank(&needed) {
                    return Err(StanzaError::not_allowed().with_text("you may not change that affiliation"));
                }
                let owners = self.state.affiliations.values().filter(|a| *a == "owner").count();
                if current == Affiliation::Owner && affiliation != Affiliation::Owner && owners <= 1 {
                    return Err(StanzaError::conflict().with_text("a room keeps at least one owner"));
                }
                match affiliation {
                    Affiliation::None => self.state.affiliations.remove(jid.as_str()),
                    ref other => self.state.affiliations.insert(jid.to_string(), affiliation_name(other).to_owned()),
                };
                self.persist().await;
                self.affiliation_changed(&jid, &affiliation, reason.as_deref()).await;
            } else {
                return Err(
                    StanzaError::bad_request().with_text("an item needs a nick and role, or a jid and affiliation")
                );
            }
        }
        Ok(())
    }

    /// The occupants of `jid` after an affiliation change: banned (301),
    /// removed as non-members (321), or shown with the new affiliation.
    async fn affiliation_changed(&mut self, jid: &BareJid, affiliation: &Affiliation, reason: Option<&str>) {
        while let Some(index) = self.occupants.iter().position(|o| &o.jid.to_bare() == jid) {
            let status = match affiliation {
                Affiliation::Outcast => Status::Banned,
                Affiliation::None if self.state.config.members_only => Status::RemovalFromRoom,
                _ => break,
            };
            self.remove(index, &[status], reason).await;
        }
        let role = self.default_role(affiliation);
        let indices: Vec<usize> =
            (0..self.occupants.len()).filter(|&i| &self.occupants[i].jid.to_bare() == jid).collect();
        for index in indices {
            if role_rank(&role) > role_rank(&self.occupants[index].role)
                || self.occupants[index].role == Role::Moderator
            {
                self.occupants[index].role = role.clone();
            }
            self.broadcast_presence(index, &[]).await;
        }
    }

    /// §10.2 (configuration), §10.1.2 (instant room), §10.9 (destroy).
    async fn owner_set(&mut self, from: &FullJid, query: &Element) -> Result<(), StanzaError> {
        self.require_owner(from)?;
        if let Some(destroy) = query.get_child("destroy", NS_OWNER) {
            return self.destroy(destroy.clone()).await;
        }
        let form = query
            .get_child("x", ns::DATA_FORMS)
            .and_then(|x| DataForm::try_from(x.clone()).ok())
            .ok_or_else(|| StanzaError::bad_request().with_text("a data form is required"))?;
        if form.type_ == DataFormType::Cancel {
            return Ok(());
        }
        let was_persistent = self.state.config.persistent;
        let mut config = self.state.config.clone();
        config.apply(&form, self.service.config.max_occupants)?;
        self.state.config = config;
        if self.state.config.persistent || was_persistent {
            self.persist().await;
        }
        self.publish_name();
        // §10.2.1: occupants learn that the configuration changed.
        for to in &self.occupants {
            let mut message = element(
                "message",
                ns::CLIENT,
                &[("type", "groupchat"), ("from", self.jid.as_str()), ("to", &to.jid.to_string())],
            );
            let mut x = Element::bare("x", ns::MUC_USER);
            x.append_child(element("status", ns::MUC_USER, &[("code", "104")]));
            message.append_child(x);
            self.send(message).await;
        }
        Ok(())
    }

    async fn destroy(&mut self, destroy: Element) -> Result<(), StanzaError> {
        for occupant in std::mem::take(&mut self.occupants) {
            let mut presence = element(
                "presence",
                ns::CLIENT,
                &[
                    ("type", "unavailable"),
                    ("from", &self.occupant_jid(&occupant.nick).to_string()),
                    ("to", &occupant.jid.to_string()),
                ],
            );
            let mut x = Element::bare("x", ns::MUC_USER);
            x.append_child(element("item", ns::MUC_USER, &[("affiliation", "none"), ("role", "none")]));
            x.append_child(starling_proto::xml::move_namespace(destroy.clone(), NS_OWNER, ns::MUC_USER));
            presence.append_child(x);
            self.send(presence).await;
        }
        self.state.config.persistent = false;
        self.persist().await;
        self.destroyed = true;
        *self.public_name.lock().expect("room name lock") = None;
        Ok(())
    }
}

/// Who retracts an archived message.
enum Retraction<'a> {
    /// XEP-0424: the account that sent it.
    ByAuthor(&'a BareJid),
    /// XEP-0425: a moderator, with the `<moderated/>` element naming them.
    ByModerator { moderated: Element, reason: Option<String> },
}

/// The client's presence without what the room adds (`<x/>` of MUC).
fn client_presence(el: &Element) -> Element {
    let mut presence = Element::bare("presence", ns::CLIENT);
    for child in el.children() {
        if !child.has_ns(NS_MUC) && !child.has_ns(ns::MUC_USER) && !child.is("occupant-id", NS_OCCUPANT_ID) {
            presence.append_child(child.clone());
        }
    }
    presence
}
