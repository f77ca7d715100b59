//! One client connection over any framing: stream negotiation (RFC 6120
//! §4–§7: TLS, SASL, resource binding or XEP-0198 resumption), then the
//! bound session (`bound.rs`), then — if the connection was lost and the
//! session is resumable — hibernation until another connection resumes it.

use crate::bound::{end_session, Bound, Exit};
use crate::fast::FastTokens;
use crate::features;
use crate::framing::{End, Flow, Framing};
use crate::sm::{self, Resumptions, SmSettings, Wake};
use crate::throttle::AuthThrottle;
use crate::{bound, random_id, sasl2};
use anyhow::Context;
use starling_core::config::ResourceConflict;
use starling_core::module::{HookPoint, StreamInfo};
use starling_core::router::HIBERNATING;
use starling_core::{Outbound, Server};
use starling_proto::xml::{element, set_attr, text_element};
use starling_proto::{ns, BareJid, Element, FullJid, Stanza, StanzaError};
use starling_sasl::ht::HtMechanism;
use starling_sasl::{decode_base64, encode_base64, ChannelBindings, Failure, HashAlg, Mechanism, ServerSession, Step};
use starling_xmlstream::StreamEvent;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What every client connection shares, whatever its framing.
pub struct ClientService {
    pub server: Arc<Server>,
    pub(crate) throttle: AuthThrottle,
    pub(crate) resumptions: Arc<Resumptions>,
    pub(crate) sm: SmSettings,
    pub(crate) csi_max_held: usize,
    pub(crate) fast: FastTokens,
}

impl ClientService {
    /// Fails when the FAST token key in the data directory cannot be read
    /// or made.
    pub fn new(server: Arc<Server>) -> anyhow::Result<Arc<Self>> {
        let auth = &server.config.auth;
        let throttle = AuthThrottle::new(
            auth.throttle_after,
            Duration::from_secs(auth.throttle_window_secs),
            Duration::from_millis(auth.throttle_delay_ms),
        );
        let c2s = &server.config.c2s;
        let sm = SmSettings {
            resume_timeout: Duration::from_secs(c2s.resume_timeout_secs),
            max_unacked: c2s.max_unacked_stanzas,
        };
        let csi_max_held = c2s.csi_max_held;
        let key = server.config.server.data_dir.join("fast.key");
        let fast = FastTokens::open(&key, Duration::from_secs(c2s.fast_token_lifetime_secs))
            .with_context(|| format!("FAST token key {}", key.display()))?;
        Ok(Arc::new(ClientService { server, throttle, resumptions: Arc::default(), sm, csi_max_held, fast }))
    }

    /// Runs one client connection to its end (and its session's, unless
    /// another connection resumes it).
    ///
    /// Not an `async fn`: its future would keep the `Conn` it builds beside
    /// the one moved into `conn.run()` (rustc#62958), in every idle
    /// session's task.
    pub fn run<F: Framing>(self: &Arc<Self>, framing: F) -> impl Future<Output = ()> + use<F> {
        let conn = Conn { service: self.clone(), framing, host: None, password_checked: false };
        conn.run()
    }
}

/// Which SASL profile an exchange uses: RFC 6120 §6, or XEP-0388 (SASL2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    Sasl1,
    Sasl2,
}

impl Profile {
    fn ns(self) -> &'static str {
        match self {
            Profile::Sasl1 => ns::SASL,
            Profile::Sasl2 => ns::SASL2,
        }
    }
}

/// A finished SASL exchange.
pub(crate) struct SaslSuccess {
    pub username: String,
    pub additional_data: Vec<u8>,
    /// Set when a FAST token was used: whether it is due for rotation.
    pub fast: Option<bool>,
}

enum Authenticated {
    /// `<success/>` was sent; the stream restarts.
    Sasl1(String),
    /// The SASL2 `<success/>` is still to be sent, with the results of the
    /// request's inline features.
    Sasl2(Sasl2Done),
}

/// A successful SASL2 exchange and the `<authenticate/>` that started it.
pub(crate) struct Sasl2Done {
    pub success: SaslSuccess,
    pub request: Element,
}

/// A client connection while it is being served.
pub(crate) struct Conn<F> {
    pub(crate) service: Arc<ClientService>,
    pub(crate) framing: F,
    /// The virtual host this stream is for (its `to`).
    pub(crate) host: Option<String>,
    /// The current SASL exchange got as far as checking a password: only
    /// such failures count as guesses (not, say, an unsupported channel
    /// binding a client retries without).
    password_checked: bool,
}

impl<F: Framing> Conn<F> {
    async fn run(mut self) {
        let service = self.service.clone();
        let server = service.server.clone();
        let mut shutdown = server.shutdown.subscribe();
        let handshake = Duration::from_secs(server.config.limits.handshake_timeout_secs);
        let negotiated = tokio::select! {
            // Boxed: negotiation state (SASL, TLS handshake) is freed once
            // bound instead of sizing every idle session's task.
            r = tokio::time::timeout(handshake, Box::pin(self.negotiate())) => match r {
                Ok(r) => r,
                Err(_) => Err(End::error("connection-timeout")),
            },
            _ = starling_core::server::shutting_down(&mut shutdown) => Err(End::error("system-shutdown")),
        };
        let mut bound = match negotiated {
            Ok(bound) => bound,
            Err(end) => return Box::pin(self.close(end)).await,
        };
        let exit = self.serve(&mut bound).await;
        // What follows the session is boxed (closing holds the connection
        // by value, hibernation the session): inline, those states would
        // size the task of every idle session serving above.
        let end = match exit {
            Exit::TakenOver(reply) => {
                let resumed = reply.send(Box::new(bound));
                // XEP-0198 §5: the old stream of a resumed session gets a conflict.
                Box::pin(self.close(End::error_text("conflict", "the session was resumed on another stream"))).await;
                if let Err(bound) = resumed {
                    // The resuming connection is gone too: the session waits again.
                    Box::pin(service.after_connection(*bound, End::Gone)).await;
                }
                return;
            }
            Exit::End(end) => end,
        };
        let lost = matches!(&end, End::Gone) || matches!(&end, End::Error(f) if f.condition == "connection-timeout");
        if lost {
            Box::pin(self.close(end)).await;
            Box::pin(service.after_connection(bound, End::Gone)).await;
        } else {
            // The session is over before the client sees our closing tag: a
            // client (or test) that got it knows the server is done with it.
            Box::pin(service.after_connection(bound, End::PeerClosed)).await;
            Box::pin(self.close(end)).await;
        }
    }

    /// Closes the connection: our header first if the client never got one
    /// (RFC 6120 §4.9.1.2), then the error and our closing.
    async fn close(mut self, end: End) {
        if !matches!(end, End::Gone) && !self.framing.stream_open() {
            self.send_header(None);
        }
        if let End::Error(failure) = &end {
            tracing::debug!(peer = %self.framing.peer(), condition = failure.condition, "closing stream with error");
        }
        self.framing.close(&end).await;
    }

    async fn send(&mut self, el: &Element) -> Flow<()> {
        self.framing.queue(el);
        self.framing.flush().await
    }

    fn send_header(&mut self, to: Option<&str>) {
        let server = &self.service.server;
        let from = self.host.clone().unwrap_or_else(|| server.config.server.hosts[0].clone());
        self.framing.open_stream(&from, to, &random_id());
    }

    async fn next_element(&mut self) -> Flow<Element> {
        match self.framing.next_event().await? {
            StreamEvent::Stanza(el) => Ok(el),
            StreamEvent::Close => Err(End::PeerClosed),
            StreamEvent::Open(_) => Err(End::error("invalid-xml")),
        }
    }

    // ---- negotiation ----------------------------------------------------

    /// Reads the client's stream header and answers with ours (RFC 6120 §4.2).
    async fn open_stream(&mut self) -> Flow<()> {
        let header = match self.framing.next_event().await? {
            StreamEvent::Open(header) => header,
            StreamEvent::Close => return Err(End::PeerClosed),
            StreamEvent::Stanza(_) => return Err(End::error("invalid-xml")),
        };
        if header.content_ns != ns::CLIENT {
            return Err(End::error("invalid-namespace"));
        }
        let server = &self.service.server;
        let host = match header.to.as_deref() {
            Some(to) if server.config.is_local_host(to) => to.to_owned(),
            _ => {
                self.send_header(header.from.as_deref());
                return Err(End::error("host-unknown"));
            }
        };
        if self.host.as_ref().is_some_and(|h| *h != host) {
            return Err(End::error("host-unknown"));
        }
        self.host = Some(host);
        // RFC 6120 §4.7.5: we speak 1.0; a client without version gets an error.
        let version_ok = header.version.as_deref().is_some_and(|v| v.split('.').next() == Some("1"));
        self.send_header(header.from.as_deref());
        if !version_ok {
            return Err(End::error("unsupported-version"));
        }
        Ok(())
    }

    fn host(&self) -> &str {
        self.host.as_deref().expect("host is set when the stream opens")
    }

    async fn negotiate(&mut self) -> Flow<Bound> {
        let authenticated = loop {
            self.open_stream().await?;
            let secure = self.framing.is_secure();
            let bindings = self.framing.channel_bindings();
            let stream = self.stream_info(secure);
            let server = &self.service.server;
            let offered = features::mechanisms(&server.config, secure, &bindings);
            let sasl2 = sasl2::feature(server, &offered, &bindings, secure);
            let features = features::pre_auth(server, &stream, &bindings, self.framing.can_starttls(), sasl2);
            self.send(&features).await?;
            match self.authenticate(secure, &offered, &bindings).await? {
                Some(authenticated) => break authenticated,
                None => self.framing.starttls().await?,
            }
        };
        let username = match authenticated {
            Authenticated::Sasl1(username) => {
                self.framing.restart();
                self.open_stream().await?;
                username
            }
            // XEP-0388 §2.6.1: no stream restart; inline features may bind.
            Authenticated::Sasl2(done) => match self.sasl2_success(done).await? {
                (_, Some(bound)) => return Ok(bound),
                (username, None) => username,
            },
        };
        let features = features::post_auth(&self.service.server, bound::stream_features(None), true);
        self.send(&features).await?;
        self.bind_or_resume(&username).await
    }

    /// Runs SASL (RFC 6120 §6 or XEP-0388) until success, or until the
    /// client asks for STARTTLS and we answered `<proceed/>` (`None`).
    async fn authenticate(
        &mut self,
        secure: bool,
        offered: &[Mechanism],
        bindings: &ChannelBindings,
    ) -> Flow<Option<Authenticated>> {
        let service = self.service.clone();
        let config = &service.server.config;
        let must_encrypt = !secure && config.c2s.require_encryption;
        let max_failures = config.auth.max_failures_per_stream;
        let peer = self.framing.peer();
        let mut failures = 0;
        loop {
            let el = self.next_element().await?;
            if el.is("starttls", ns::TLS) && self.framing.can_starttls() {
                self.send(&Element::bare("proceed", ns::TLS)).await?;
                return Ok(None);
            }
            // Pre-auth IQs (XEP-0077 registration) go to the modules'
            // `IqTarget::Stream` handlers, but never before required TLS.
            if el.is("iq", ns::CLIENT) && !must_encrypt {
                if let Some(reply) = self.pre_auth_iq(el, secure).await {
                    self.send(&reply).await?;
                    continue;
                }
                return Err(End::error("not-authorized"));
            }
            let profile = if el.is("auth", ns::SASL) {
                Profile::Sasl1
            } else if el.is("authenticate", ns::SASL2) && !must_encrypt {
                Profile::Sasl2
            } else {
                // RFC 6120 §4.9.3.12: nothing but negotiation before auth.
                return Err(End::error("not-authorized"));
            };
            let outcome = if must_encrypt {
                Err(Failure::EncryptionRequired)
            } else {
                self.sasl_exchange(&el, profile, offered, bindings).await?
            };
            match outcome {
                Ok(success) => {
                    service.throttle.succeeded(peer.ip());
                    return Ok(Some(match profile {
                        Profile::Sasl1 => {
                            let mut el = Element::bare("success", ns::SASL);
                            if !success.additional_data.is_empty() {
                                el.append_text_node(encode_base64(&success.additional_data));
                            }
                            self.send(&el).await?;
                            Authenticated::Sasl1(success.username)
                        }
                        Profile::Sasl2 => Authenticated::Sasl2(Sasl2Done { success, request: el }),
                    }));
                }
                Err(failure) => {
                    tracing::info!(%peer, condition = failure.condition(), "authentication failed");
                    let mut f = Element::bare("failure", profile.ns());
                    f.append_child(Element::bare(failure.condition(), ns::SASL));
                    self.send(&f).await?;
                    if self.password_checked {
                        service.throttle.failed(peer.ip());
                        failures += 1;
                    }
                    // RFC 6120 §6.4.5: a limited number of retries, then policy-violation.
                    if failures >= max_failures {
                        return Err(End::error_text("policy-violation", "too many failed attempts"));
                    }
                }
            }
        }
    }

    /// This stream as pre-auth modules see it.
    fn stream_info(&self, secure: bool) -> StreamInfo {
        StreamInfo { peer: self.framing.peer(), host: self.host().to_owned(), secure }
    }

    /// An IQ before authentication: the reply of the module that handles it,
    /// or `None` (no handler, or not a valid IQ to the server) for the
    /// caller's not-authorized.
    async fn pre_auth_iq(&self, el: Element, secure: bool) -> Option<Element> {
        let stanza = Stanza::from_element(el, ns::CLIENT).ok()?;
        self.service.server.handle_stream_iq(stanza, self.stream_info(secure)).await
    }

    /// One SASL exchange from `<auth/>` (or SASL2 `<authenticate/>`) to
    /// success or failure; the success element is the caller's to send.
    async fn sasl_exchange(
        &mut self,
        auth: &Element,
        profile: Profile,
        offered: &[Mechanism],
        bindings: &ChannelBindings,
    ) -> Flow<Result<SaslSuccess, Failure>> {
        self.password_checked = false;
        let peer = self.framing.peer();
        let delay = self.service.throttle.delay(peer.ip());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let initial = match profile {
            Profile::Sasl1 => auth.text(),
            Profile::Sasl2 => auth.get_child("initial-response", ns::SASL2).map(Element::text).unwrap_or_default(),
        };
        let initial = match decode_base64(initial.trim()) {
            Ok(data) => data,
            Err(f) => return Ok(Err(f)),
        };
        let name = auth.attr("mechanism").unwrap_or_default();
        if profile == Profile::Sasl2 {
            if let Some(ht) = HtMechanism::from_name(name) {
                // XEP-0484: a token login, one round trip.
                self.password_checked = true;
                return Ok(self.fast_login(auth, ht, &initial, bindings).await);
            }
        }
        let Some(mech) = Mechanism::from_name(name).filter(|m| offered.contains(m)) else {
            return Ok(Err(Failure::InvalidMechanism));
        };
        let plus_offered = offered.iter().any(Mechanism::is_plus);
        let names: Vec<&str> = offered.iter().map(Mechanism::name).collect();
        let cb_types: Vec<_> = bindings.available.iter().map(|(ty, _)| *ty).collect();
        let mut sasl =
            ServerSession::new(mech, bindings.clone(), plus_offered).with_downgrade_protection(&names, &cb_types);
        let mut step = sasl.step(&initial);
        loop {
            step = match step {
                Err(failure) => return Ok(Err(failure)),
                Ok(Step::Challenge(data)) => {
                    let challenge = text_element("challenge", profile.ns(), encode_base64(&data));
                    self.send(&challenge).await?;
                    let el = self.next_element().await?;
                    if el.is("abort", profile.ns()) {
                        return Ok(Err(Failure::Aborted));
                    }
                    if !el.is("response", profile.ns()) {
                        return Ok(Err(Failure::MalformedRequest));
                    }
                    match decode_base64(el.text().trim()) {
                        Ok(data) => sasl.step(&data),
                        Err(f) => return Ok(Err(f)),
                    }
                }
                Ok(Step::NeedCredentials { username }) => {
                    self.password_checked = true;
                    let hash = mech.hash().expect("SCRAM mechanisms have a hash");
                    match self.credentials(&username, hash).await {
                        Ok(creds) => sasl.credentials(creds),
                        Err(f) => return Ok(Err(f)),
                    }
                }
                Ok(Step::NeedPasswordCheck { username, password }) => {
                    self.password_checked = true;
                    // Any stored hash will do; SHA-1 derives fastest.
                    match self.credentials(&username, HashAlg::Sha1).await {
                        Ok(creds) => sasl.plain_verified(creds.is_some_and(|c| c.verify_password(&password))),
                        Err(f) => return Ok(Err(f)),
                    }
                }
                Ok(Step::Success { username, authzid, additional_data }) => {
                    let Some(jid) = self.account_jid(&username) else {
                        return Ok(Err(Failure::NotAuthorized));
                    };
                    // RFC 6120 §6.3.8: we only let an account act as itself.
                    if authzid.is_some_and(|a| BareJid::new(&a).ok().as_ref() != Some(&jid)) {
                        return Ok(Err(Failure::InvalidAuthzid));
                    }
                    tracing::info!(%peer, %jid, mechanism = mech.name(), "authenticated");
                    let username = jid.node().expect("account JIDs have a node").to_string();
                    return Ok(Ok(SaslSuccess { username, additional_data, fast: None }));
                }
            };
        }
    }

    /// The account's bare JID, if `username` is a valid localpart (RFC 7622 §3.3).
    pub(crate) fn account_jid(&self, username: &str) -> Option<BareJid> {
        BareJid::new(&format!("{username}@{}", self.host())).ok().filter(|j| j.node().is_some())
    }

    async fn credentials(
        &self,
        username: &str,
        hash: HashAlg,
    ) -> Result<Option<starling_sasl::ScramCredentials>, Failure> {
        let Some(jid) = self.account_jid(username) else {
            return Ok(None);
        };
        let node = jid.node().expect("checked").as_str();
        self.service.server.store.credentials(self.host(), node, hash).await.map_err(|e| {
            tracing::error!(error = %e, "credential lookup failed");
            Failure::TemporaryAuthFailure
        })
    }

    /// After authentication: resource binding (RFC 6120 §7) registers a new
    /// session with the router; `<resume/>` (XEP-0198 §5) takes over an
    /// earlier one instead.
    async fn bind_or_resume(&mut self, username: &str) -> Flow<Bound> {
        loop {
            let el = self.next_element().await?;
            if el.is("resume", ns::SM) {
                match self.resume(username, &el).await? {
                    Some(bound) => return Ok(bound),
                    None => continue,
                }
            }
            if el.is("enable", ns::SM) {
                // XEP-0198 §3: only after binding.
                self.send(&sm::failed(None, "unexpected-request")).await?;
                continue;
            }
            let request = el
                .is("iq", ns::CLIENT)
                .then(|| el.get_child("bind", ns::BIND))
                .flatten()
                .filter(|_| el.attr("type") == Some("set"));
            let Some(bind) = request else {
                return Err(End::error("not-authorized"));
            };
            let Some(id) = el.attr("id").map(str::to_owned) else {
                return Err(End::error_text("invalid-xml", "iq without id"));
            };
            let requested = bind.get_child("resource", ns::BIND).map(|r| r.text()).filter(|r| !r.is_empty());
            let mut reply = Element::bare("iq", ns::CLIENT);
            set_attr(&mut reply, "id", id);
            match self.bind(username, requested) {
                Ok(bound) => {
                    set_attr(&mut reply, "type", "result");
                    let mut result = Element::bare("bind", ns::BIND);
                    result.append_child(text_element("jid", ns::BIND, bound.handle.jid.as_str()));
                    reply.append_child(result);
                    self.send(&reply).await?;
                    tracing::debug!(jid = %bound.handle.jid, "resource bound");
                    return Ok(bound);
                }
                Err(err) => {
                    set_attr(&mut reply, "type", "error");
                    reply.append_child(err.to_element());
                    self.send(&reply).await?;
                }
            }
        }
    }

    /// Registers a session under the requested (or a generated) resource,
    /// following the configured conflict policy (RFC 6120 §7.7.2.2).
    pub(crate) fn bind(&self, username: &str, requested: Option<String>) -> Result<Bound, StanzaError> {
        let server = &self.service.server;
        let policy = server.config.c2s.resource_conflict;
        let mut resource = requested.unwrap_or_else(random_id);
        let (tx, rx) = mpsc::channel(server.config.limits.session_queue);
        loop {
            let Ok(jid) = FullJid::new(&format!("{username}@{}/{resource}", self.host())) else {
                return Err(StanzaError::bad_request().with_text("invalid resource"));
            };
            let replace = policy == ResourceConflict::Replace;
            match server.router.bind(jid, tx.clone(), replace) {
                Ok((handle, replaced)) => {
                    if let Some(old) = replaced {
                        let _ = old.send(Outbound::Close("conflict"));
                    }
                    return Ok(Bound::new(handle, rx));
                }
                Err(_) if policy == ResourceConflict::Rename => resource = format!("{resource}.{}", random_id()),
                Err(_) => return Err(StanzaError::conflict()),
            }
        }
    }

    /// `<resume previd h/>` after a SASL1 login (XEP-0198 §5): takes the
    /// session over, answers `<resumed/>` and sends everything
    /// unacknowledged again. `None` when there is no such session
    /// (`<failed/>` was sent and the client may bind instead).
    async fn resume(&mut self, username: &str, el: &Element) -> Flow<Option<Bound>> {
        match self.take_over(username, el).await? {
            Ok((mut bound, resumed)) => {
                self.framing.queue(&resumed);
                self.replay(&mut bound);
                self.framing.flush().await?;
                Ok(Some(bound))
            }
            Err(failed) => {
                self.send(&failed).await?;
                Ok(None)
            }
        }
    }

    /// Takes over the session `<resume/>` names and applies the client's
    /// `h`; gives the `<resumed/>` to send, or the `<failed/>` when the
    /// session is unknown, expired or not the account's.
    pub(crate) async fn take_over(&mut self, username: &str, el: &Element) -> Flow<Result<(Bound, Element), Element>> {
        let (Some(previd), Some(h)) = (el.attr("previd"), el.attr("h").and_then(|h| h.parse::<u32>().ok())) else {
            return Ok(Err(sm::failed(None, "bad-request")));
        };
        let owner = self.account_jid(username).expect("authenticated accounts have valid JIDs");
        let service = self.service.clone();
        let Ok(bound) = service.resumptions.take_over(previd, &owner).await else {
            return Ok(Err(sm::failed(None, "item-not-found")));
        };
        let mut bound = *bound;
        let sm = bound.sm.as_mut().expect("resumable sessions have stream management");
        if let Err(end) = sm.ack(h) {
            // The state is ours now: the session ends here.
            service.finish(bound).await;
            return Err(end);
        }
        tracing::debug!(jid = %bound.handle.jid, "session resumed");
        let resumed = element("resumed", ns::SM, &[("h", &sm.inbound.to_string()), ("previd", previd)]);
        Ok(Ok((bound, resumed)))
    }

    /// Sends again what a resumed session had not seen acknowledged.
    pub(crate) fn replay(&mut self, bound: &mut Bound) {
        let unacked = bound.sm.as_mut().map(|sm| sm.take_unacked()).unwrap_or_default();
        for el in unacked {
            bound.write(el, &mut self.framing);
        }
        if let Some(sm) = &mut bound.sm {
            sm.request_ack(&mut self.framing);
        }
    }
}

impl ClientService {
    /// A connection ended while its session was bound: a resumable session
    /// whose connection was lost (not closed) hibernates; any other ends.
    async fn after_connection(self: Arc<Self>, bound: Bound, end: End) {
        let server = self.server.clone();
        let resumable = matches!(end, End::Gone) && bound.resumption_id().is_some();
        if resumable && !*server.shutdown.borrow() {
            let mut shutdown = server.shutdown.subscribe();
            let limit = server.config.c2s.max_hibernated_per_account;
            // While it hibernates the session is bound but not attached (XEP-0357 pushes go out).
            let jid = bound.handle.jid.clone();
            server.router.set_flag(&jid, HIBERNATING, true);
            let held: Vec<Element> = bound
                .sm
                .iter()
                .flat_map(|sm| &sm.unacked)
                .filter(|el| el.name() == "message")
                .map(|el| (**el).clone())
                .collect();
            for el in held {
                if let Ok(stanza) = Stanza::from_element(el, ns::CLIENT) {
                    server.run_hooks(HookPoint::HeldForHibernated, &mut Arc::new(stanza)).await;
                }
            }
            match sm::hibernate(&self.resumptions, Box::new(bound), self.sm.resume_timeout, limit, &mut shutdown).await
            {
                Wake::Resumed => return server.router.set_flag(&jid, HIBERNATING, false),
                Wake::Ended(bound) => return self.finish(*bound).await,
            }
        }
        self.finish(bound).await
    }

    async fn finish(&self, bound: Bound) {
        if let Some(id) = bound.resumption_id() {
            self.resumptions.remove(id);
        }
        end_session(&self.server, bound).await;
    }
}
