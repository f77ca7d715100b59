//! The bound session (RFC 6120 §7 onwards): its state, which outlives any one
//! connection when stream management makes it resumable, and the loop that
//! moves stanzas between the framing and the router.

use crate::csi::{self, Csi, Pass};
use crate::framing::{End, Flow, Framing, Sink};
use crate::session::Conn;
use crate::sm::{self, Control, StreamManagement};
use starling_core::module::HookPoint;
use starling_core::{Outbound, Server, SessionHandle};
use starling_proto::stanza::{error_reply_to_element, EnvelopeError};
use starling_proto::xml::set_attr;
use starling_proto::{ns, BareJid, Element, Jid, Stanza, StanzaError, StanzaKind};
use starling_xmlstream::StreamEvent;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Queued stanzas written per write when a burst arrives.
const WRITE_BATCH: usize = 64;

/// A session after resource binding.
#[derive(Debug)]
pub(crate) struct Bound {
    pub handle: SessionHandle,
    pub bare: BareJid,
    /// What the router queues for this session.
    pub rx: mpsc::Receiver<Outbound>,
    /// Sent available presence (RFC 6121 §4.2) and not yet unavailable.
    pub available: bool,
    /// Where directed presence went, to send unavailable there at the end (RFC 6121 §4.6).
    pub directed: HashSet<Jid>,
    pub sm: Option<StreamManagement>,
    pub csi: Csi,
}

/// How the bound loop ended.
pub(crate) enum Exit {
    End(End),
    /// Another connection resumed the session (XEP-0198 §5).
    TakenOver(tokio::sync::oneshot::Sender<Box<Bound>>),
}

impl From<End> for Exit {
    fn from(end: End) -> Self {
        Exit::End(end)
    }
}

impl Bound {
    pub fn new(handle: SessionHandle, rx: mpsc::Receiver<Outbound>) -> Self {
        let bare = handle.jid.to_bare();
        Bound { handle, bare, rx, available: false, directed: HashSet::new(), sm: None, csi: Csi::default() }
    }

    pub fn resumption_id(&self) -> Option<&str> {
        self.sm.as_ref()?.resumption.as_ref().map(|r| r.id.as_str())
    }

    /// Writes a stanza to the client, counted and kept for stream
    /// management when it is on.
    pub fn write(&mut self, el: Box<Element>, sink: &mut dyn Sink) {
        sink.queue(&el);
        if let Some(sm) = &mut self.sm {
            sm.record(el);
        }
    }

    /// A stanza on its way to the client: through CSI, then written.
    fn deliver(&mut self, el: Box<Element>, max_held: usize, sink: &mut dyn Sink) {
        if let Pass::Send(held, el) = self.csi.filter(el, max_held) {
            for el in held {
                self.write(el, sink);
            }
            self.write(el, sink);
        }
    }

    /// Stanzas that will never be written on this session: the unacked,
    /// the held and the queued, in the order they were meant to go out.
    fn undelivered(&mut self) -> VecDeque<Box<Element>> {
        let mut out = self.sm.as_mut().map(|sm| sm.take_unacked()).unwrap_or_default();
        out.extend(self.csi.take_held());
        self.rx.close();
        // Stanzas queued behind a close request (a resource conflict, say)
        // are undelivered too, not dropped.
        while let Ok(queued) = self.rx.try_recv() {
            if let Outbound::Stanza(el) = queued {
                out.push_back(el);
            }
        }
        out
    }
}

/// Top-level elements that are not stanzas, by namespace: stream management
/// and client state indication are code of their own, reached like IQ
/// handlers by what they are.
fn handle_nonza<F: Framing>(conn: &mut Conn<F>, bound: &mut Bound, el: Element) -> Flow<()> {
    // Acks arrive with every batch: no namespace String, no Arc clone.
    if el.has_ns(ns::SM) {
        let service = &conn.service;
        return sm::handle(bound, &service.resumptions, &service.sm, el, &mut conn.framing);
    }
    if !el.has_ns(ns::CSI) {
        return Err(End::error_text("unsupported-stanza-type", el.name().to_owned()));
    }
    match el.name() {
        "active" => {
            bound.csi.set_inactive(false);
            for held in bound.csi.take_held() {
                bound.write(held, &mut conn.framing);
            }
        }
        "inactive" => bound.csi.set_inactive(true),
        _ => return Err(End::error("unsupported-stanza-type")),
    }
    Ok(())
}

/// The post-authentication stream features of the stream-level handlers,
/// for `session` if one is already bound (SASL2 with Bind 2). Stream
/// management is not offered once it is on (enabled or resumed inline,
/// XEP-0198 §7): enabling it again would fail (§3), and a client taking the
/// offer would lose the session it has.
pub(crate) fn stream_features(session: Option<&Bound>) -> Vec<Element> {
    let sm_on = session.is_some_and(|bound| bound.sm.is_some());
    let mut features = Vec::with_capacity(2);
    if !sm_on {
        features.push(sm::feature());
    }
    features.push(csi::feature());
    features
}

impl<F: Framing> Conn<F> {
    /// Serves the bound session until its connection ends or another takes
    /// it over.
    pub(crate) async fn serve(&mut self, bound: &mut Bound) -> Exit {
        match self.serve_loop(bound).await {
            Ok(never) => match never {},
            Err(exit) => exit,
        }
    }

    async fn serve_loop(&mut self, bound: &mut Bound) -> Result<std::convert::Infallible, Exit> {
        let server = self.service.server.clone();
        let idle_secs = server.config.limits.idle_timeout_secs;
        // Zero disables the idle timeout: a deadline a century away.
        let idle = Duration::from_secs(if idle_secs == 0 { 3_153_600_000 } else { idle_secs });
        let max_held = self.service.csi_max_held;
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        let mut shutdown = server.shutdown.subscribe();
        // Stanzas that arrived in the same read as the bind request.
        self.handle_buffered(bound).await?;
        self.framing.flush().await?;
        loop {
            let room = bound.sm.as_ref().is_none_or(StreamManagement::has_room);
            // Unbiased: a session flooded with incoming stanzas must still
            // read its own socket (a client's ping, its acks) between batches.
            tokio::select! {
                _ = starling_core::server::shutting_down(&mut shutdown) => return Err(End::error("system-shutdown").into()),
                control = sm::control(&mut bound.sm) => match control {
                    Control::Takeover(reply) => return Err(Exit::TakenOver(reply)),
                    Control::Expire => {}
                },
                out = bound.rx.recv(), if room => {
                    let mut next = out;
                    let mut batched = 0;
                    loop {
                        match next {
                            Some(Outbound::Stanza(el)) => bound.deliver(el, max_held, &mut self.framing),
                            Some(Outbound::Close(condition)) => return Err(End::error(condition).into()),
                            None => return Err(End::error("conflict").into()),
                        }
                        batched += 1;
                        // Take another only if it will be written in this batch:
                        // one taken and not written would be lost.
                        if batched == WRITE_BATCH || !bound.sm.as_ref().is_none_or(StreamManagement::has_room) {
                            break;
                        }
                        match bound.rx.try_recv() {
                            Ok(out) => next = Some(out),
                            Err(_) => break,
                        }
                    }
                    if let Some(sm) = &mut bound.sm {
                        sm.request_ack(&mut self.framing);
                    }
                    self.framing.flush().await?;
                }
                event = self.framing.next_event() => {
                    timer.as_mut().reset(Instant::now() + idle);
                    // Boxed here and below: handling a stanza (routing, hooks) is
                    // rarely in flight, and inline it would size every idle task.
                    Box::pin(self.handle_event(bound, event?)).await?;
                    self.handle_buffered(bound).await?;
                    self.framing.flush().await?;
                }
                _ = &mut timer => return Err(End::error("connection-timeout").into()),
            }
        }
    }

    /// Handles the events already read, without waiting for more.
    async fn handle_buffered(&mut self, bound: &mut Bound) -> Flow<()> {
        while let Some(event) = self.framing.buffered_event() {
            Box::pin(self.handle_event(bound, event)).await?;
        }
        Ok(())
    }

    async fn handle_event(&mut self, bound: &mut Bound, event: StreamEvent) -> Flow<()> {
        match event {
            StreamEvent::Stanza(el) if is_stanza(&el) => {
                if let Some(sm) = &mut bound.sm {
                    sm.inbound = sm.inbound.wrapping_add(1);
                }
                self.handle_stanza(bound, el).await
            }
            StreamEvent::Stanza(el) => handle_nonza(self, bound, el),
            StreamEvent::Close => Err(End::PeerClosed),
            StreamEvent::Open(_) => Err(End::error("invalid-xml")),
        }
    }

    async fn handle_stanza(&mut self, bound: &mut Bound, el: Element) -> Flow<()> {
        let server = self.service.server.clone();
        let mut stanza = match Stanza::from_element(el, ns::CLIENT) {
            Ok(stanza) => stanza,
            Err(EnvelopeError::NotAStanza(what)) => return Err(End::error_text("unsupported-stanza-type", what)),
            Err(EnvelopeError::Bad(err, el)) => {
                // A stanza too broken to route gets its error straight back.
                tracing::debug!(jid = %bound.handle.jid, error = %err, "rejected stanza");
                let sender = Jid::from(bound.handle.jid.clone());
                if let Some(reply) = error_reply_to_element(*el, &err, &sender) {
                    bound.write(Box::new(reply), &mut self.framing);
                }
                return Ok(());
            }
        };
        // RFC 6120 §8.1.2.1: the server stamps `from`; a client may only
        // state its own full or bare JID.
        if let Some(from) = &stanza.from {
            if from.as_str() != bound.handle.jid.as_str() && from.as_str() != bound.bare.as_str() {
                return Err(End::error("invalid-from"));
            }
        }
        stanza.set_from(Jid::from(bound.handle.jid.clone()));
        match stanza.kind {
            StanzaKind::Presence if stanza.to.is_none() => broadcast_presence(&server, bound, stanza).await,
            StanzaKind::Presence => {
                let stanza = match stanza.type_.as_deref() {
                    None => {
                        bound.directed.insert(stanza.to.clone().expect("has to"));
                        // XEP-0398 §4: a MUC join carries the avatar hash too.
                        server.decorate_presence(stanza).await
                    }
                    Some("unavailable") => {
                        bound.directed.remove(stanza.to.as_ref().expect("has to"));
                        stanza
                    }
                    Some(_) => stanza,
                };
                server.route(stanza).await;
            }
            StanzaKind::Iq if is_session_request(&stanza) => {
                // RFC 6121 Appendix E: legacy session establishment is a no-op.
                bound.write(Box::new(stanza.iq_result(None)), &mut self.framing);
            }
            _ => server.route(stanza).await,
        }
        Ok(())
    }
}

/// Message, presence and IQ in the client namespace (what stream
/// management counts); anything else at the top level is a nonza.
fn is_stanza(el: &Element) -> bool {
    // has_ns, not ns(): ns() allocates a String, and this runs per element.
    el.has_ns(ns::CLIENT) || (el.has_ns("") && matches!(el.name(), "message" | "presence" | "iq"))
}

fn is_session_request(stanza: &Stanza) -> bool {
    stanza.is_type("set")
        && stanza.to.as_ref().is_none_or(|to| to.node().is_none())
        && stanza.payload().is_some_and(|p| p.is("session", ns::SESSION))
}

/// Presence without `to`: the session's own availability. The router
/// records it first (so the sender's own resources, itself included, get
/// it back, RFC 6121 §4.2.2), then it is routed as a broadcast.
async fn broadcast_presence(server: &Arc<Server>, bound: &mut Bound, stanza: Stanza) {
    let router = &server.router;
    match stanza.type_.as_deref() {
        None => {
            // Module additions (XEP-0153's avatar hash) before it is recorded.
            let stanza = server.decorate_presence(stanza).await;
            let priority = stanza
                .el
                .get_child("priority", ns::CLIENT)
                .and_then(|p| p.text().trim().parse::<i8>().ok())
                .unwrap_or(0);
            let initial = !bound.available;
            router.set_presence(&bound.handle, Some(stanza.el.clone()), priority);
            bound.available = true;
            server.route(stanza.clone()).await;
            if initial {
                server.run_hooks(HookPoint::SessionAvailable, &mut Arc::new(stanza)).await;
            }
        }
        Some("unavailable") => {
            server.route(stanza.clone()).await;
            router.set_presence(&bound.handle, None, 0);
            bound.available = false;
            directed_unavailable(server, bound, &stanza.el).await;
        }
        // Subscription management and probes need a `to`; errors are dropped.
        Some(_) => {}
    }
}

/// Unavailable presence to everyone we sent directed presence to.
async fn directed_unavailable(server: &Arc<Server>, bound: &mut Bound, el: &Element) {
    for to in bound.directed.drain() {
        let mut el = el.clone();
        set_attr(&mut el, "to", to.as_str());
        if let Ok(stanza) = Stanza::from_element(el, ns::CLIENT) {
            server.route(stanza).await;
        }
    }
}

/// The session ends for good: it leaves the router, whoever saw it
/// available learns it is gone (RFC 6121 §4.6.3), modules clean up, and
/// what was never written is handled as undeliverable — messages go to
/// another resource or offline storage, IQ requests are answered with an
/// error (RFC 6121 §8.5.3.2.1); nothing is dropped silently.
pub(crate) async fn end_session(server: &Arc<Server>, mut bound: Bound) {
    server.router.unbind(&bound.handle);
    let mut el = Element::bare("presence", ns::CLIENT);
    set_attr(&mut el, "type", "unavailable");
    set_attr(&mut el, "from", bound.handle.jid.as_str());
    if let Ok(unavailable) = Stanza::from_element(el, ns::CLIENT) {
        if bound.available {
            server.route(unavailable.clone()).await;
        }
        directed_unavailable(server, &mut bound, &unavailable.el).await;
        let mut unavailable = Arc::new(unavailable);
        server.run_hooks(HookPoint::SessionClosed, &mut unavailable).await;
        if !server.router.is_online(&bound.bare) {
            server.run_hooks(HookPoint::AccountOffline, &mut unavailable).await;
        }
    }
    for el in bound.undelivered() {
        let Ok(stanza) = Stanza::from_element(*el, ns::CLIENT) else { continue };
        match stanza.kind {
            StanzaKind::Message => server.redeliver(stanza).await,
            StanzaKind::Iq if stanza.iq_type().is_some_and(|t| t.is_request()) => {
                server.bounce(&stanza, StanzaError::recipient_unavailable())
            }
            _ => {}
        }
    }
}
