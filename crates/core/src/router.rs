//! The session registry and local delivery. Sharded (DashMap) so sessions on
//! different cores never contend on one lock; each session has a bounded queue.

use dashmap::DashMap;
use starling_proto::{BareJid, Element, FullJid};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Session flag of a session whose connection is gone while stream
/// management keeps it for resumption (XEP-0198 §5).
pub const HIBERNATING: &str = "hibernating";

/// What a session task receives from the rest of the server.
#[derive(Debug)]
pub enum Outbound {
    /// Boxed so the queue's slots stay small: every session's queue holds a
    /// block of them even when idle.
    Stanza(Box<Element>),
    /// Close the stream with this RFC 6120 §4.9.3 condition.
    Close(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The session's queue is full: it reads slower than it is sent to.
    #[error("recipient queue full")]
    QueueFull,
    #[error("recipient gone")]
    Gone,
    #[error("no such session")]
    NotBound,
}

impl Outbound {
    pub fn stanza(el: Element) -> Self {
        Outbound::Stanza(Box::new(el))
    }
}

/// A bound session as other tasks see it.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub jid: FullJid,
    tx: mpsc::Sender<Outbound>,
}

impl SessionHandle {
    pub fn send(&self, out: Outbound) -> Result<(), DeliveryError> {
        self.tx.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DeliveryError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => DeliveryError::Gone,
        })
    }

    /// Queues `out`, waiting while the queue is full (backpressure for a
    /// producer of many stanzas in a row, like an archive query's results).
    pub async fn send_wait(&self, out: Outbound) -> Result<(), DeliveryError> {
        self.tx.send(out).await.map_err(|_| DeliveryError::Gone)
    }

    /// Queues a stanza; on failure the element comes back, so a caller can
    /// bounce it without having cloned it first.
    pub fn queue(&self, el: Element) -> Result<(), (DeliveryError, Element)> {
        try_queue(&self.tx, el)
    }
}

/// Queues a stanza on a session's or a component's queue, giving the
/// element back on failure.
pub(crate) fn try_queue(tx: &mpsc::Sender<Outbound>, el: Element) -> Result<(), (DeliveryError, Element)> {
    tx.try_send(Outbound::stanza(el)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(Outbound::Stanza(el)) => (DeliveryError::QueueFull, *el),
        mpsc::error::TrySendError::Closed(Outbound::Stanza(el)) => (DeliveryError::Gone, *el),
        _ => unreachable!("a stanza was sent"),
    })
}

#[derive(Debug)]
struct Resource {
    handle: SessionHandle,
    /// The last available presence it broadcast (RFC 6121 §4.2), `None`
    /// before initial presence and after unavailable.
    presence: Option<Element>,
    priority: i8,
    /// Per-session switches modules set (e.g. "roster": asked for the
    /// roster, so gets pushes; "carbons": enabled XEP-0280).
    flags: Vec<&'static str>,
}

impl Resource {
    fn available(&self) -> bool {
        self.presence.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("resource in use")]
    Conflict,
}

#[derive(Debug, Default)]
pub struct Router {
    sessions: DashMap<BareJid, Vec<Resource>>,
    next_id: AtomicU64,
}

impl Router {
    /// Registers a session under `jid`. With `replace`, an existing session
    /// with that resource is removed and returned so the caller can close it;
    /// otherwise an existing one is a conflict.
    pub fn bind(
        &self,
        jid: FullJid,
        tx: mpsc::Sender<Outbound>,
        replace: bool,
    ) -> Result<(SessionHandle, Option<SessionHandle>), BindError> {
        let handle = SessionHandle { id: self.next_id.fetch_add(1, Ordering::Relaxed), jid, tx };
        let mut resources = self.sessions.entry(handle.jid.to_bare()).or_default();
        let existing = resources.iter().position(|r| r.handle.jid == handle.jid);
        let replaced = match existing {
            Some(_) if !replace => return Err(BindError::Conflict),
            Some(i) => Some(resources.swap_remove(i).handle),
            None => None,
        };
        resources.push(Resource { handle: handle.clone(), presence: None, priority: 0, flags: Vec::new() });
        Ok((handle, replaced))
    }

    /// Queues a stanza for the session bound to `jid` without cloning its
    /// handle (see [`SessionHandle::queue`]).
    pub fn queue_stanza(&self, jid: &FullJid, el: Element) -> Result<(), (DeliveryError, Element)> {
        let Some(rs) = self.sessions.get(&jid.to_bare()) else {
            return Err((DeliveryError::NotBound, el));
        };
        match rs.iter().find(|r| &r.handle.jid == jid) {
            Some(r) => r.handle.queue(el),
            None => Err((DeliveryError::NotBound, el)),
        }
    }

    pub fn is_bound(&self, jid: &FullJid) -> bool {
        self.sessions.get(&jid.to_bare()).is_some_and(|rs| rs.iter().any(|r| &r.handle.jid == jid))
    }

    /// Removes the session (if it is still the one bound under its JID).
    pub fn unbind(&self, handle: &SessionHandle) {
        let bare = handle.jid.to_bare();
        self.sessions.remove_if_mut(&bare, |_, rs| {
            rs.retain(|r| r.handle.id != handle.id);
            rs.is_empty()
        });
    }

    /// Records a session's available presence (`None`: unavailable).
    pub fn set_presence(&self, handle: &SessionHandle, presence: Option<Element>, priority: i8) {
        if let Some(mut rs) = self.sessions.get_mut(&handle.jid.to_bare()) {
            if let Some(r) = rs.iter_mut().find(|r| r.handle.id == handle.id) {
                r.presence = presence;
                r.priority = priority;
            }
        }
    }

    /// The last presence of each available resource of an account (to
    /// answer probes, RFC 6121 §4.3.2).
    pub fn presences(&self, bare: &BareJid) -> Vec<(FullJid, Element)> {
        self.sessions.get(bare).map_or_else(Vec::new, |rs| {
            rs.iter().filter_map(|r| Some((r.handle.jid.clone(), r.presence.clone()?))).collect()
        })
    }

    /// Turns a per-session flag on or off.
    pub fn set_flag(&self, jid: &FullJid, flag: &'static str, on: bool) {
        if let Some(mut rs) = self.sessions.get_mut(&jid.to_bare()) {
            if let Some(r) = rs.iter_mut().find(|r| &r.handle.jid == jid) {
                r.flags.retain(|f| *f != flag);
                if on {
                    r.flags.push(flag);
                }
            }
        }
    }

    /// Sessions of an account with `flag` on.
    pub fn with_flag(&self, bare: &BareJid, flag: &str) -> Vec<SessionHandle> {
        self.sessions.get(bare).map_or_else(Vec::new, |rs| {
            rs.iter().filter(|r| r.flags.contains(&flag)).map(|r| r.handle.clone()).collect()
        })
    }

    /// Whether the account has a session with a live connection: bound and
    /// not [`HIBERNATING`] (XEP-0357: otherwise its phone needs a push).
    pub fn has_attached(&self, bare: &BareJid) -> bool {
        self.sessions.get(bare).is_some_and(|rs| rs.iter().any(|r| !r.flags.contains(&HIBERNATING)))
    }

    /// Whether the account has any bound session (no handles are cloned).
    pub fn is_online(&self, bare: &BareJid) -> bool {
        self.sessions.contains_key(bare)
    }

    /// Every bound session of an account, available or not.
    pub fn resources(&self, bare: &BareJid) -> Vec<SessionHandle> {
        self.sessions.get(bare).map_or_else(Vec::new, |rs| rs.iter().map(|r| r.handle.clone()).collect())
    }

    pub fn session(&self, jid: &FullJid) -> Option<SessionHandle> {
        let rs = self.sessions.get(&jid.to_bare())?;
        rs.iter().find(|r| &r.handle.jid == jid).map(|r| r.handle.clone())
    }

    /// Available resources of an account (RFC 6121 §4.2.2 broadcast targets).
    pub fn available(&self, bare: &BareJid) -> Vec<SessionHandle> {
        self.sessions
            .get(bare)
            .map_or_else(Vec::new, |rs| rs.iter().filter(|r| r.available()).map(|r| r.handle.clone()).collect())
    }

    /// Whether the account has at least one available resource.
    pub fn has_available(&self, bare: &BareJid) -> bool {
        self.sessions.get(bare).is_some_and(|rs| rs.iter().any(Resource::available))
    }

    /// Targets for a message to a bare JID (RFC 6121 §8.5.2.1.1): the available
    /// resources with the highest non-negative priority.
    pub fn message_targets(&self, bare: &BareJid) -> Vec<SessionHandle> {
        let Some(rs) = self.sessions.get(bare) else {
            return Vec::new();
        };
        let Some(top) = rs.iter().filter(|r| r.available() && r.priority >= 0).map(|r| r.priority).max() else {
            return Vec::new();
        };
        rs.iter().filter(|r| r.available() && r.priority == top).map(|r| r.handle.clone()).collect()
    }

    /// Every bound session (for shutdown).
    pub fn all(&self) -> Vec<SessionHandle> {
        self.sessions.iter().flat_map(|e| e.value().iter().map(|r| r.handle.clone()).collect::<Vec<_>>()).collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.iter().map(|e| e.value().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> FullJid {
        FullJid::new(s).unwrap()
    }

    #[test]
    fn bare_jid_messages_go_to_highest_non_negative_priority() {
        let router = Router::default();
        let (tx, _rx) = mpsc::channel(4);
        let (a, _) = router.bind(full("u@h/a"), tx.clone(), true).unwrap();
        let (b, _) = router.bind(full("u@h/b"), tx.clone(), true).unwrap();
        let (c, _) = router.bind(full("u@h/c"), tx, true).unwrap();
        let bare = BareJid::new("u@h").unwrap();
        assert!(router.message_targets(&bare).is_empty(), "no initial presence yet");
        let p = || Some(Element::bare("presence", "jabber:client"));
        router.set_presence(&a, p(), 5);
        router.set_presence(&b, p(), 5);
        router.set_presence(&c, p(), -1);
        let ids: Vec<u64> = router.message_targets(&bare).iter().map(|h| h.id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&a.id) && ids.contains(&b.id));
        router.set_presence(&a, p(), -3);
        router.set_presence(&b, p(), -2);
        assert!(router.message_targets(&bare).is_empty(), "negative priorities get no bare messages");
    }

    #[test]
    fn resource_conflict_replace_or_refuse() {
        let router = Router::default();
        let (tx, _rx) = mpsc::channel(4);
        let (first, _) = router.bind(full("u@h/r"), tx.clone(), true).unwrap();
        assert_eq!(router.bind(full("u@h/r"), tx.clone(), false).unwrap_err(), BindError::Conflict);
        let (second, replaced) = router.bind(full("u@h/r"), tx, true).unwrap();
        assert_eq!(replaced.unwrap().id, first.id);
        router.unbind(&first);
        assert!(router.is_bound(&second.jid), "unbinding the replaced session keeps the new one");
        router.unbind(&second);
        assert_eq!(router.session_count(), 0);
    }

    #[test]
    fn full_queue_is_reported_not_grown() {
        let router = Router::default();
        let (tx, _rx) = mpsc::channel(1);
        let (h, _) = router.bind(full("u@h/r"), tx, true).unwrap();
        assert!(h.send(Outbound::Close("x")).is_ok());
        assert_eq!(h.send(Outbound::Close("x")).unwrap_err(), DeliveryError::QueueFull);
    }
}
