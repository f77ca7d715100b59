//! Stream management (XEP-0198): acks both ways, and resumption of a session
//! whose connection was lost. A resumable session outlives its connection:
//! its task keeps the [`Bound`] state (router entry, queue, unacknowledged
//! stanzas) while hibernating, and hands it to the connection that resumes
//! it — or, when the live connection still looks alive, takes it from there.

use crate::bound::Bound;
use crate::framing::{End, Flow, Sink, StreamFailure};
use crate::random_id;
use dashmap::DashMap;
use starling_proto::xml::{element, set_attr};
use starling_proto::{ns, BareJid, Element};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Stream management state of one session.
#[derive(Debug)]
pub(crate) struct StreamManagement {
    /// Stanzas handled from the client (the `h` we report), mod 2^32.
    pub inbound: u32,
    /// Stanzas sent to the client that it acknowledged, mod 2^32.
    acked: u32,
    /// Sent and not acknowledged yet, oldest first: `acked + i` is the
    /// sequence number of `unacked[i]`, less one.
    pub unacked: VecDeque<Box<Element>>,
    /// An `<r/>` is out and no `<a/>` has come back since.
    ack_requested: bool,
    /// Set when the client asked for resumption and the server allowed it.
    pub resumption: Option<Resumable>,
    max_unacked: usize,
}

/// What a resumable session holds: its id and the channel through which a
/// resuming connection reaches it.
#[derive(Debug)]
pub(crate) struct Resumable {
    pub id: String,
    control: mpsc::Receiver<Control>,
}

/// A message to a resumable session's task.
#[derive(Debug)]
pub(crate) enum Control {
    /// A connection authenticated as the owner resumes it: the task closes
    /// its stream (if any) and sends its state back.
    Takeover(oneshot::Sender<Box<Bound>>),
    /// Too many hibernated sessions for the account: this, the oldest, ends.
    Expire,
}

impl StreamManagement {
    fn new(max_unacked: usize) -> Self {
        StreamManagement {
            inbound: 0,
            acked: 0,
            unacked: VecDeque::new(),
            ack_requested: false,
            resumption: None,
            max_unacked,
        }
    }

    /// Stanzas sent so far, mod 2^32.
    fn sent(&self) -> u32 {
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// Records a stanza written to the client.
    pub fn record(&mut self, el: Box<Element>) {
        self.unacked.push_back(el);
    }

    /// Whether more stanzas may be sent before the client acknowledges some
    /// (the queue behind waits: bounded, so senders see backpressure).
    pub fn has_room(&self) -> bool {
        self.unacked.len() < self.max_unacked
    }

    /// The client handled stanzas up to `h` (XEP-0198 §4).
    pub fn ack(&mut self, h: u32) -> Flow<()> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            let sent = self.sent();
            let mut app = element("handled-count-too-high", ns::SM, &[]);
            set_attr(&mut app, "h", h.to_string());
            set_attr(&mut app, "send-count", sent.to_string());
            // XEP-0198 §5: undefined-condition with <handled-count-too-high/>.
            return Err(End::Error(Box::new(StreamFailure {
                condition: "undefined-condition",
                text: Some(format!("You acknowledged {h} stanzas, but I only sent you {sent} so far.")),
                app: Some(app),
            })));
        }
        self.unacked.drain(..newly);
        self.acked = h;
        self.ack_requested = false;
        Ok(())
    }

    /// Asks the client for an ack when stanzas are waiting for one and no
    /// request is out (one `<r/>` per write batch at most).
    pub fn request_ack(&mut self, sink: &mut dyn Sink) {
        if !self.unacked.is_empty() && !self.ack_requested {
            sink.queue(&Element::bare("r", ns::SM));
            self.ack_requested = true;
        }
    }

    /// Stanzas to send again after a resumption: everything unacknowledged
    /// becomes unsent again, numbered from the acknowledged count.
    pub fn take_unacked(&mut self) -> VecDeque<Box<Element>> {
        self.ack_requested = false;
        std::mem::take(&mut self.unacked)
    }
}

/// Every resumable session by its SM-ID, and the hibernating ones by account.
#[derive(Default)]
pub(crate) struct Resumptions {
    sessions: DashMap<String, Entry>,
    /// Hibernating sessions' ids per account, oldest first.
    hibernating: DashMap<BareJid, VecDeque<String>>,
}

struct Entry {
    owner: BareJid,
    control: mpsc::Sender<Control>,
}

/// Why a resume request cannot be honoured.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResumeError {
    /// No such session, or not one of the authenticated account's.
    NotFound,
}

impl Resumptions {
    fn register(&self, owner: BareJid) -> Resumable {
        let (control, rx) = mpsc::channel(1);
        let id = format!("{}{}", random_id(), random_id());
        self.sessions.insert(id.clone(), Entry { owner, control });
        Resumable { id, control: rx }
    }

    /// Forgets a session that ended for good.
    pub fn remove(&self, id: &str) {
        if let Some((_, entry)) = self.sessions.remove(id) {
            self.stop_hibernating(&entry.owner, id);
        }
    }

    /// Takes a session over for a connection authenticated as `owner`. The
    /// session's task answers with its state; one that ended meanwhile (it
    /// expired) is not found.
    pub async fn take_over(&self, id: &str, owner: &BareJid) -> Result<Box<Bound>, ResumeError> {
        // The previd comes from the client: it must name one of its own sessions.
        let control = match self.sessions.get(id) {
            Some(entry) if entry.owner == *owner => entry.control.clone(),
            _ => return Err(ResumeError::NotFound),
        };
        let (tx, rx) = oneshot::channel();
        control.send(Control::Takeover(tx)).await.map_err(|_| ResumeError::NotFound)?;
        rx.await.map_err(|_| ResumeError::NotFound)
    }

    /// Marks a session hibernating; past `limit` per account the oldest
    /// hibernating one is told to expire.
    fn start_hibernating(&self, owner: &BareJid, id: &str, limit: usize) {
        let oldest = {
            let mut ids = self.hibernating.entry(owner.clone()).or_default();
            ids.push_back(id.to_owned());
            if ids.len() > limit {
                ids.pop_front()
            } else {
                None
            }
        };
        if let Some(oldest) = oldest {
            if let Some(entry) = self.sessions.get(&oldest) {
                let _ = entry.control.try_send(Control::Expire);
            }
        }
    }

    fn stop_hibernating(&self, owner: &BareJid, id: &str) {
        self.hibernating.remove_if_mut(owner, |_, ids| {
            ids.retain(|i| i != id);
            ids.is_empty()
        });
    }
}

/// Waits for a control message to a resumable session; never resolves for
/// a session without resumption.
pub(crate) async fn control(sm: &mut Option<StreamManagement>) -> Control {
    match sm.as_mut().and_then(|sm| sm.resumption.as_mut()) {
        Some(r) => r.control.recv().await.unwrap_or(Control::Expire),
        None => std::future::pending().await,
    }
}

/// How a hibernation ended.
pub(crate) enum Wake {
    /// A connection resumed the session; the state went to it.
    Resumed,
    /// Timed out, expired by a newer one, or the server shuts down: the
    /// session ends with its state back.
    Ended(Box<Bound>),
}

/// Keeps a session whose connection was lost until it is resumed or
/// `timeout` passes (XEP-0198 §5).
pub(crate) async fn hibernate(
    resumptions: &Resumptions,
    mut bound: Box<Bound>,
    timeout: Duration,
    limit: usize,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Wake {
    let id = bound.resumption_id().expect("only resumable sessions hibernate").to_owned();
    tracing::debug!(jid = %bound.handle.jid, "session hibernating");
    resumptions.start_hibernating(&bound.bare, &id, limit);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let wake = tokio::select! {
            c = control(&mut bound.sm) => c,
            _ = tokio::time::sleep_until(deadline) => Control::Expire,
            _ = starling_core::server::shutting_down(shutdown) => Control::Expire,
        };
        match wake {
            Control::Takeover(reply) => {
                resumptions.stop_hibernating(&bound.bare, &id);
                match reply.send(bound) {
                    Ok(()) => return Wake::Resumed,
                    // The resuming connection went away meanwhile: go on waiting.
                    Err(back) => {
                        bound = back;
                        resumptions.start_hibernating(&bound.bare, &id, usize::MAX);
                    }
                }
            }
            Control::Expire => {
                tracing::debug!(jid = %bound.handle.jid, "hibernated session ends");
                return Wake::Ended(bound);
            }
        }
    }
}

/// Shared settings for the stream-level handlers.
pub(crate) struct SmSettings {
    pub resume_timeout: Duration,
    pub max_unacked: usize,
}

/// `<enable/>`, `<r/>` and `<a/>` on a bound stream (XEP-0198 §3–§4).
pub(crate) fn handle(
    bound: &mut Bound,
    resumptions: &Arc<Resumptions>,
    settings: &SmSettings,
    el: Element,
    sink: &mut dyn Sink,
) -> Flow<()> {
    match el.name() {
        "enable" => {
            if bound.sm.is_some() {
                sink.queue(&failed(None, "unexpected-request"));
                return Ok(());
            }
            let mut sm = StreamManagement::new(settings.max_unacked);
            let mut enabled = Element::bare("enabled", ns::SM);
            if matches!(el.attr("resume"), Some("true" | "1")) && !settings.resume_timeout.is_zero() {
                let resumable = resumptions.register(bound.bare.clone());
                set_attr(&mut enabled, "id", resumable.id.clone());
                set_attr(&mut enabled, "resume", "true");
                set_attr(&mut enabled, "max", settings.resume_timeout.as_secs().to_string());
                sm.resumption = Some(resumable);
            }
            bound.sm = Some(sm);
            sink.queue(&enabled);
        }
        "r" => {
            if let Some(sm) = &bound.sm {
                sink.queue(&ack_element(sm.inbound));
            }
        }
        "a" => {
            let Some(sm) = bound.sm.as_mut() else { return Ok(()) };
            let Some(h) = el.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                return Err(End::error_text("invalid-xml", "<a/> without a valid 'h'"));
            };
            sm.ack(h)?;
        }
        // <resume/> on a bound stream, or anything else of ours out of place.
        _ => sink.queue(&failed(None, "unexpected-request")),
    }
    Ok(())
}

pub(crate) fn ack_element(h: u32) -> Element {
    element("a", ns::SM, &[("h", &h.to_string())])
}

/// `<failed/>` with a stanza error condition (and the `h` we handled, when
/// known).
pub(crate) fn failed(h: Option<u32>, condition: &str) -> Element {
    let mut failed = Element::bare("failed", ns::SM);
    if let Some(h) = h {
        set_attr(&mut failed, "h", h.to_string());
    }
    failed.append_child(Element::bare(condition, ns::STANZAS));
    failed
}

/// The stream feature offered after authentication (XEP-0198 §2).
pub(crate) fn feature() -> Element {
    Element::bare("sm", ns::SM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(i: u32) -> Box<Element> {
        Box::new(element("message", ns::CLIENT, &[("id", &i.to_string())]))
    }

    #[test]
    fn acks_count_modulo_two_to_the_32() {
        // XEP-0198 §4: h wraps to 0 after 2^32 - 1.
        let mut sm = StreamManagement::new(100);
        sm.acked = u32::MAX - 1;
        for i in 0..4 {
            sm.record(stanza(i));
        }
        assert_eq!(sm.sent(), 2);
        sm.ack(u32::MAX).unwrap();
        assert_eq!(sm.unacked.len(), 3);
        sm.ack(1).unwrap();
        assert_eq!(sm.unacked.len(), 1);
        assert_eq!(sm.unacked[0].attr("id"), Some("3"));
        sm.ack(1).unwrap();
        assert_eq!(sm.unacked.len(), 1, "a repeated ack changes nothing");
    }

    #[test]
    fn acking_more_than_was_sent_is_a_stream_error() {
        // XEP-0198 §5: undefined-condition with <handled-count-too-high/>.
        let mut sm = StreamManagement::new(100);
        sm.record(stanza(0));
        let Err(End::Error(failure)) = sm.ack(2) else { panic!("accepted") };
        assert_eq!(failure.condition, "undefined-condition");
        let app = failure.app.expect("app condition");
        assert!(app.is("handled-count-too-high", ns::SM));
        assert_eq!(app.attr("h"), Some("2"));
        assert_eq!(app.attr("send-count"), Some("1"));
    }
}
