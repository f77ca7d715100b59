//! The server: shared state for every session, and stanza routing
//! (RFC 6120 §10, RFC 6121 §8) between local sessions and modules.

use crate::config::Config;
use crate::domains::{ComponentLink, DomainKind, DomainTable, Route};
use crate::module::{
    Addressed, HookPoint, HookResult, IqRequest, IqResult, IqTarget, ModuleRegistry, Step, StreamInfo,
};
use crate::router::{DeliveryError, Outbound, Router};
use dashmap::DashMap;
use starling_proto::{BareJid, Element, FullJid, Jid, Stanza, StanzaError, StanzaKind};
use starling_storage::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

pub struct Server {
    pub config: Config,
    pub router: Router,
    /// Who serves each domain: hosts, module services, components, remote.
    pub domains: DomainTable,
    pub modules: ModuleRegistry,
    /// Every kind of stored data (accounts, rosters, offline messages…).
    pub store: Arc<dyn Store>,
    /// Set when shutdown starts; sessions watch it.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// IQ requests the server sent and waits on, by id: the expected
    /// responder, and where its answer goes.
    pending_iqs: DashMap<String, (Jid, oneshot::Sender<IqAnswer>)>,
    next_iq: AtomicU64,
    /// This server, for replies that a module service (an async handler)
    /// receives from the synchronous [`Server::send_to_local`].
    me: Weak<Server>,
}

/// The answer to a server-sent IQ request. The responder's stream goes on
/// once this is dropped (or after a few seconds), so what the requester
/// does with the answer happens before the responder's next stanza.
#[derive(Debug)]
pub struct IqAnswer {
    pub stanza: Stanza,
    _handled: oneshot::Sender<()>,
}

/// Why a server-sent IQ request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IqRequestError {
    #[error("the request has no valid `to`")]
    NoRecipient,
    #[error("no answer in time")]
    Timeout,
}

impl Server {
    pub fn new(config: Config, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new_cyclic(|me| Server {
            me: me.clone(),
            router: Router::default(),
            domains: DomainTable::new(&config),
            modules: ModuleRegistry::new(&config.services),
            config,
            store,
            shutdown: tokio::sync::watch::channel(false).0,
            pending_iqs: DashMap::new(),
            next_iq: AtomicU64::new(0),
        })
    }

    /// Sends an IQ request of the server's own (or one it makes on an
    /// account's behalf, `from` set accordingly) and waits up to `timeout`
    /// for the answer: the result or error stanza. The `id` is set here.
    pub async fn request_iq(self: &Arc<Self>, mut iq: Element, timeout: Duration) -> Result<IqAnswer, IqRequestError> {
        let to = iq.attr("to").and_then(|t| Jid::new(t).ok()).ok_or(IqRequestError::NoRecipient)?;
        let id = format!("starling-{}", self.next_iq.fetch_add(1, Ordering::Relaxed));
        starling_proto::xml::set_attr(&mut iq, "id", id.clone());
        let stanza = Stanza::from_element(iq, starling_proto::ns::CLIENT).map_err(|_| IqRequestError::NoRecipient)?;
        let (tx, rx) = oneshot::channel();
        self.pending_iqs.insert(id.clone(), (to, tx));
        self.deliver(stanza).await;
        let answer = tokio::time::timeout(timeout, rx).await;
        self.pending_iqs.remove(&id);
        answer.ok().and_then(Result::ok).ok_or(IqRequestError::Timeout)
    }

    /// The waiter of a [`request_iq`](Self::request_iq) that `stanza`
    /// answers, if it comes from whom the request went to.
    fn take_pending(&self, stanza: &Stanza) -> Option<oneshot::Sender<IqAnswer>> {
        if stanza.kind != StanzaKind::Iq || stanza.iq_type().is_none_or(|t| t.is_request()) {
            return None;
        }
        let id = stanza.id.as_deref().filter(|id| id.starts_with("starling-"))?;
        let (_, (_, waiter)) = self.pending_iqs.remove_if(id, |_, (to, _)| stanza.from.as_ref() == Some(to))?;
        Some(waiter)
    }

    /// Where stanzas to `domain` go.
    pub fn resolve(&self, domain: &str) -> Route {
        match self.domains.kind(domain) {
            DomainKind::Host => Route::Host,
            DomainKind::Service => Route::Service(self.modules.service_handler(domain)),
            DomainKind::Component => Route::Component(self.domains.component(domain)),
            DomainKind::Remote => Route::Remote(self.domains.remote()),
        }
    }

    /// Runs the hooks and filters at `point` in priority order until a hook
    /// handles the stanza; a filter's change replaces `stanza`.
    pub async fn run_hooks(self: &Arc<Self>, point: HookPoint, stanza: &mut Arc<Stanza>) -> HookResult {
        if let Some(steps) = self.modules.hooks(point) {
            for step in steps.iter() {
                match step {
                    Step::Hook(hook) => {
                        if hook(self.clone(), stanza.clone()).await == HookResult::Handled {
                            return HookResult::Handled;
                        }
                    }
                    Step::Filter(filter) => {
                        if let Some(changed) = filter(self.clone(), stanza.clone()).await {
                            *stanza = Arc::new(changed);
                        }
                    }
                }
            }
        }
        HookResult::Continue
    }

    /// Adds what the modules' presence decorators return to an available
    /// presence, broadcast or directed (see `ModuleContext::decorate_presence`).
    /// The session calls it before it records and routes the presence, so
    /// probe answers carry the same children.
    pub async fn decorate_presence(self: &Arc<Self>, stanza: Stanza) -> Stanza {
        let decorators = self.modules.presence_decorators();
        if decorators.is_empty() {
            return stanza;
        }
        // Decorators share the presence, like hooks; each sees the client's.
        let shared = Arc::new(stanza);
        let mut added = Vec::new();
        for decorator in decorators {
            added.extend(decorator(self.clone(), shared.clone()).await);
        }
        let mut stanza = Arc::unwrap_or_clone(shared);
        for child in added {
            // It replaces the client's element of the same name, if any.
            while stanza.el.remove_child(child.name(), child.ns().as_str()).is_some() {}
            stanza.el.append_child(child);
        }
        stanza
    }

    /// Routes a stanza sent by a local session (`from` already stamped with
    /// its full JID): the outbound hooks first, then delivery. Presence
    /// without `to` is a broadcast: hooks send it to contacts, the core to
    /// the account's own available resources.
    pub async fn route(self: &Arc<Self>, stanza: Stanza) {
        let mut stanza = Arc::new(stanza);
        if self.run_hooks(HookPoint::Outbound(stanza.kind), &mut stanza).await == HookResult::Handled {
            return;
        }
        self.deliver_shared(stanza).await
    }

    /// Delivers a stanza to its `to` without the sender-side hooks: for
    /// stanzas the server sends on an account's behalf (subscription
    /// answers, probe replies) and for those already past `route`.
    pub async fn deliver(self: &Arc<Self>, stanza: Stanza) {
        self.deliver_shared(Arc::new(stanza)).await
    }

    /// `deliver` for a stanza the hooks share: one allocation per routed
    /// stanza for both hook passes.
    async fn deliver_shared(self: &Arc<Self>, mut stanza: Arc<Stanza>) {
        if let Some(waiter) = self.take_pending(&stanza) {
            let (handled, done) = oneshot::channel();
            if waiter.send(IqAnswer { stanza: Arc::unwrap_or_clone(stanza), _handled: handled }).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
            }
            return;
        }
        let to = match &stanza.to {
            Some(to) => to.clone(),
            // RFC 6120 §10.3: no `to` means the sender's own account.
            None => match &stanza.from {
                Some(from) => Jid::from(from.to_bare()),
                None => return,
            },
        };
        match self.resolve(to.domain().as_str()) {
            Route::Host => {}
            Route::Service(Some(serve)) => return serve(self.clone(), Arc::unwrap_or_clone(stanza)).await,
            Route::Component(Some(link)) => return self.to_component(Arc::unwrap_or_clone(stanza), &link),
            // RFC 6120 §8.3.3.19: the service is there but not serving now.
            Route::Service(None) | Route::Component(None) => {
                return self.bounce(&stanza, StanzaError::service_unavailable())
            }
            Route::Remote(Some(remote)) => {
                if let Err(failed) = remote.send(Arc::unwrap_or_clone(stanza)) {
                    self.bounce(&failed.0, failed.1);
                }
                return;
            }
            // Federation is off: RFC 6120 §10.4.2.
            Route::Remote(None) => return self.bounce(&stanza, StanzaError::remote_server_not_found()),
        }
        let addressed = match (to.node().is_some(), to.resource().is_some()) {
            (false, false) => Addressed::Host,
            (false, true) => return self.bounce(&stanza, StanzaError::service_unavailable()),
            (true, false) => Addressed::Bare,
            (true, true) => Addressed::Full,
        };
        if addressed != Addressed::Host
            && self.run_hooks(HookPoint::Inbound(stanza.kind), &mut stanza).await == HookResult::Handled
        {
            return;
        }
        if self.run_hooks(HookPoint::To(stanza.kind, addressed), &mut stanza).await == HookResult::Handled {
            return;
        }
        if addressed == Addressed::Host {
            return self.to_host(Arc::unwrap_or_clone(stanza)).await;
        }
        // Hooks are done with it: usually no copy is made here.
        let mut stanza = Arc::unwrap_or_clone(stanza);
        match to.try_into_full() {
            Ok(full) => self.to_full(stanza, full).await,
            Err(bare) => {
                if stanza.to.is_none() && stanza.kind == StanzaKind::Message {
                    stanza.set_to(Jid::from(bare.clone()));
                }
                self.to_bare(stanza, bare).await
            }
        }
    }

    fn to_component(&self, stanza: Stanza, link: &ComponentLink) {
        if let Some(stanza) = self.queue_with(stanza, |el| link.queue(el)) {
            self.bounce(&stanza, StanzaError::service_unavailable());
        }
    }

    /// A message queued to a session that ended before writing it (RFC 6121
    /// §8.5.3.2.1: a chat message goes to another resource, else offline
    /// storage; other types to a full JID bounce). While the server
    /// shuts down every session is ending, so it goes straight to the
    /// undeliverable hooks (offline storage) instead of another queue.
    pub async fn redeliver(self: &Arc<Self>, stanza: Stanza) {
        if !*self.shutdown.borrow() {
            return self.deliver(stanza).await;
        }
        let mut stanza = Arc::new(stanza);
        if self.run_hooks(HookPoint::MessageUndeliverable, &mut stanza).await == HookResult::Continue {
            tracing::debug!(to = ?stanza.to, "message not stored at shutdown");
        }
    }

    async fn to_host(self: &Arc<Self>, stanza: Stanza) {
        if stanza.kind == StanzaKind::Iq {
            self.handle_iq(stanza, IqTarget::Host).await;
        }
        // Messages and presence to the server itself have no handler yet.
    }

    async fn to_bare(self: &Arc<Self>, stanza: Stanza, bare: BareJid) {
        match stanza.kind {
            StanzaKind::Iq => self.handle_iq(stanza, IqTarget::Account).await,
            StanzaKind::Message => self.message_to_bare(stanza, &bare).await,
            StanzaKind::Presence => {
                // Directed presence to an account reaches its available resources.
                for handle in self.router.available(&bare) {
                    let _ = handle.send(Outbound::stanza(stanza.el.clone()));
                }
            }
        }
    }

    async fn message_to_bare(self: &Arc<Self>, stanza: Stanza, bare: &BareJid) {
        let targets = self.router.message_targets(bare);
        if let Some((last, rest)) = targets.split_last() {
            for handle in rest {
                self.check_delivery(&stanza, handle.send(Outbound::stanza(stanza.el.clone())));
            }
            // The last one gets the element itself.
            self.queue_with(stanza, |el| last.queue(el));
            return;
        }
        // RFC 6121 §8.5.2.2: no available resource.
        match stanza.type_.as_deref() {
            Some("error") | Some("headline") => {}
            Some("groupchat") => self.bounce(&stanza, StanzaError::service_unavailable()),
            _ => {
                let mut stanza = Arc::new(stanza);
                if self.run_hooks(HookPoint::MessageUndeliverable, &mut stanza).await == HookResult::Continue {
                    self.bounce(&stanza, StanzaError::service_unavailable());
                }
            }
        }
    }

    async fn to_full(self: &Arc<Self>, stanza: Stanza, full: FullJid) {
        let Some(stanza) = self.queue_with(stanza, |el| self.router.queue_stanza(&full, el)) else {
            return;
        };
        // RFC 6121 §8.5.3.2: the resource is not connected.
        match stanza.kind {
            StanzaKind::Iq => {
                if stanza.iq_type().is_some_and(|t| t.is_request()) {
                    self.bounce(&stanza, StanzaError::service_unavailable());
                }
            }
            // §8.5.3.2.1: only chat messages go on as if to the bare JID.
            // Normal (no type), groupchat and headline ones are ignored or
            // bounced; headlines are not worth an error, and errors never are.
            StanzaKind::Message => match stanza.type_.as_deref() {
                Some("chat") => Box::pin(self.message_to_bare(stanza, &full.to_bare())).await,
                Some("error") | Some("headline") => {}
                _ => self.bounce(&stanza, StanzaError::service_unavailable()),
            },
            StanzaKind::Presence => {}
        }
    }

    /// Moves the stanza's element into a session queue with `queue`, so a
    /// delivered stanza is never copied. Gives the stanza back when there is
    /// no such session; a full or closed queue bounces it.
    fn queue_with(
        &self,
        stanza: Stanza,
        queue: impl FnOnce(Element) -> Result<(), (DeliveryError, Element)>,
    ) -> Option<Stanza> {
        let Stanza { kind, from, to, id, type_, el } = stanza;
        let (err, el) = queue(el).err()?;
        let stanza = Stanza { kind, from, to, id, type_, el };
        if err == DeliveryError::NotBound {
            return Some(stanza);
        }
        self.check_delivery(&stanza, Err(err));
        None
    }

    fn check_delivery(&self, stanza: &Stanza, result: Result<(), DeliveryError>) {
        match result {
            Ok(()) => {}
            Err(DeliveryError::QueueFull) => {
                tracing::debug!(to = ?stanza.to, "recipient queue full, bouncing");
                self.bounce(stanza, StanzaError::resource_constraint().with_text("recipient is not reading"));
            }
            Err(DeliveryError::Gone | DeliveryError::NotBound) => {
                self.bounce(stanza, StanzaError::recipient_unavailable())
            }
        }
    }

    async fn handle_iq(self: &Arc<Self>, stanza: Stanza, target: IqTarget) {
        if !stanza.iq_type().is_some_and(|t| t.is_request()) {
            return; // results and errors addressed to the server: nothing waits for them yet
        }
        let result = self.run_iq_handler(&stanza, target).await;
        self.answer_iq(&stanza, result);
    }

    /// Sends the result or error answering the IQ request `stanza` (for
    /// services that handle their IQs themselves).
    pub fn answer_iq(&self, stanza: &Stanza, result: IqResult) {
        let reply = match result {
            Ok(payload) => stanza.iq_result(payload),
            Err(err) => match stanza.error_reply(&err) {
                Some(el) => el,
                None => return,
            },
        };
        self.send_to_local(reply);
    }

    async fn run_iq_handler(self: &Arc<Self>, stanza: &Stanza, target: IqTarget) -> IqResult {
        let type_ = stanza.iq_type().filter(|t| t.is_request()).ok_or_else(StanzaError::bad_request)?;
        let namespace = stanza.payload().map(Element::ns).unwrap_or_default();
        let handler =
            self.modules.iq_handler(target, type_, &namespace).ok_or_else(StanzaError::service_unavailable)?;
        handler(IqRequest { server: self.clone(), stanza: stanza.clone(), stream: None }).await
    }

    /// Runs the handler an IQ would reach at `target` and returns its
    /// outcome instead of sending a reply: for a session being set up
    /// (XEP-0386 Bind 2 inline features, e.g. enabling carbons) and for a
    /// module asking another on an account's behalf (XEP-0049 bookmarks kept
    /// in PEP).
    pub async fn inline_iq(self: &Arc<Self>, stanza: Stanza, target: IqTarget) -> IqResult {
        self.run_iq_handler(&stanza, target).await
    }

    /// Answers an IQ a client sent before authenticating (XEP-0077
    /// registration) with a module's [`IqTarget::Stream`] handler, and returns
    /// the reply for the stream to write (the stream is not in the router).
    /// `None` when no such handler takes it (or it is not a request to the
    /// stream's host): the stream then refuses it like any stanza before auth.
    pub async fn handle_stream_iq(self: &Arc<Self>, mut stanza: Stanza, stream: StreamInfo) -> Option<Element> {
        if stanza.to.as_ref().is_some_and(|to| to.as_str() != stream.host) {
            return None;
        }
        let type_ = stanza.iq_type().filter(|t| t.is_request())?;
        let namespace = stanza.payload().map(Element::ns).unwrap_or_default();
        let handler = self.modules.iq_handler(IqTarget::Stream, type_, &namespace)?;
        // The client has no address yet: whatever `from` it states is ignored.
        starling_proto::xml::remove_attr(&mut stanza.el, "from");
        stanza.from = None;
        let request = IqRequest { server: self.clone(), stanza: stanza.clone(), stream: Some(stream) };
        match handler(request).await {
            Ok(payload) => Some(stanza.iq_result(payload)),
            Err(err) => stanza.error_reply(&err),
        }
    }

    /// Sends a stanza error back to the sender of `stanza` (a local
    /// session, a component or another server).
    pub fn bounce(&self, stanza: &Stanza, err: StanzaError) {
        if let Some(reply) = stanza.error_reply(&err) {
            self.send_to_local(reply);
        }
    }

    /// Delivers a server-generated stanza to the local full JID in its
    /// `to`, to the module service or the component serving its domain, or
    /// to another server (answers to what came from there). Nothing is
    /// bounced: these are answers and errors already.
    pub fn send_to_local(&self, el: Element) {
        let Some(to) = el.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return;
        };
        if let (DomainKind::Remote, Some(remote)) = (self.domains.kind(to.domain().as_str()), self.domains.remote()) {
            if let Ok(stanza) = Stanza::from_element(el, starling_proto::ns::CLIENT) {
                if let Err(failed) = remote.send(stanza) {
                    tracing::debug!(%to, error = %failed.1, "dropping server reply to another server");
                }
            }
            return;
        }
        if let Route::Service(Some(serve)) = self.resolve(to.domain().as_str()) {
            // E.g. a vCard answered for an account to a room that forwarded
            // the request (XEP-0045 §17.4).
            if let (Some(server), Ok(stanza)) =
                (self.me.upgrade(), Stanza::from_element(el, starling_proto::ns::CLIENT))
            {
                tokio::spawn(serve(server, stanza));
            }
            return;
        }
        if !self.domains.is_host(to.domain().as_str()) {
            if let Some(link) = self.domains.component(to.domain().as_str()) {
                if let Err((e, _)) = link.queue(el) {
                    tracing::debug!(%to, error = %e, "dropping server reply to a component");
                }
            }
            return;
        }
        let Ok(to) = to.try_into_full() else { return };
        if let Some(handle) = self.router.session(&to) {
            if let Err(e) = handle.send(Outbound::stanza(el)) {
                tracing::debug!(%to, error = %e, "dropping server reply");
            }
        }
    }
}

/// Resolves once shutdown has started (the watch guard is not held across
/// awaits, so callers stay `Send`).
pub async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
