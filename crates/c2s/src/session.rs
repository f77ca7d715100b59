//! One client connection: stream negotiation (RFC 6120 §4–§7), then the bound
//! session that moves stanzas between the socket and the router.
//!
//! A single task owns the socket: it reads and parses what the client sends,
//! and writes what other sessions queue for it. Other sessions never wait for
//! it: their stanzas go through its bounded queue or bounce.

use crate::features;
use crate::throttle::AuthThrottle;
use crate::tls::TlsContext;
use crate::transport::Transport;
use rand::Rng;
use starling_core::config::ResourceConflict;
use starling_core::module::{HookPoint, StreamInfo};
use starling_core::{Outbound, Server, SessionHandle};
use starling_proto::stanza::{error_reply_to_element, EnvelopeError};
use starling_proto::xml::{set_attr, text_element};
use starling_proto::{ns, BareJid, Element, FullJid, Jid, Stanza, StanzaError, StanzaKind};
use starling_sasl::{decode_base64, encode_base64, ChannelBindings, Failure, HashAlg, Mechanism, ServerSession, Step};
use starling_xmlstream::{stream_header, write_element, Limits, StreamEvent, StreamParser};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why a stream ends.
#[derive(Debug)]
enum End {
    /// Send this RFC 6120 §4.9.3 stream error, then close.
    Error(&'static str, Option<String>),
    /// The client closed its stream: answer with ours.
    PeerClosed,
    /// The socket failed or hit EOF: nothing more can be sent.
    Gone,
}

impl End {
    fn error(condition: &'static str) -> Self {
        End::Error(condition, None)
    }
}

type Flow<T> = Result<T, End>;

const READ_BUFFER: usize = 4096;
/// Write buffer capacity kept between flushes.
const WRITE_BUFFER_KEEP: usize = 16 * 1024;
/// Queued stanzas written per socket write when a burst arrives.
const WRITE_BATCH: usize = 64;

pub(crate) struct Conn {
    server: Arc<Server>,
    tls: Arc<TlsContext>,
    throttle: Arc<AuthThrottle>,
    io: Transport,
    peer: SocketAddr,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    read_buf: Box<[u8]>,
    write_buf: Vec<u8>,
    header_sent: bool,
    /// The virtual host this stream is for (its `to`).
    host: Option<String>,
    /// The current SASL exchange got as far as checking a password: only
    /// such failures count as guesses (not, say, an unsupported channel
    /// binding a client retries without).
    password_checked: bool,
}

/// A session after resource binding.
struct Bound {
    handle: SessionHandle,
    bare: BareJid,
    /// Sent available presence (RFC 6121 §4.2) and not yet unavailable.
    available: bool,
    /// Where directed presence went, to send unavailable there at the end (RFC 6121 §4.6).
    directed: HashSet<Jid>,
}

impl Conn {
    pub(crate) fn new(
        server: Arc<Server>,
        tls: Arc<TlsContext>,
        throttle: Arc<AuthThrottle>,
        io: Transport,
        peer: SocketAddr,
    ) -> Self {
        let limits = &server.config.limits;
        let parser = StreamParser::new(Limits {
            max_stanza_bytes: limits.max_stanza_bytes,
            max_depth: limits.max_depth,
            max_attributes: limits.max_attributes,
            ..Limits::default()
        });
        Conn {
            server,
            tls,
            throttle,
            io,
            peer,
            parser,
            events: VecDeque::new(),
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            write_buf: Vec::new(),
            header_sent: false,
            host: None,
            password_checked: false,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut shutdown = self.server.shutdown.subscribe();
        let handshake = Duration::from_secs(self.server.config.limits.handshake_timeout_secs);
        let negotiated = tokio::select! {
            // Boxed: negotiation state (SASL, TLS handshake) is freed once
            // bound instead of sizing every idle session's task.
            r = tokio::time::timeout(handshake, Box::pin(self.negotiate())) => match r {
                Ok(r) => r,
                Err(_) => Err(End::error("connection-timeout")),
            },
            _ = starling_core::server::shutting_down(&mut shutdown) => Err(End::error("system-shutdown")),
        };
        let end = match negotiated {
            Ok((bound, rx)) => self.serve(bound, rx, shutdown).await,
            Err(end) => end,
        };
        self.close(end).await;
    }

    // ---- reading and writing -------------------------------------------

    async fn read_event(&mut self) -> Flow<StreamEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return match event {
                    StreamEvent::Close => Err(End::PeerClosed),
                    event => Ok(event),
                };
            }
            let n = self.io.read(&mut self.read_buf).await.map_err(|_| End::Gone)?;
            if n == 0 {
                return Err(End::Gone);
            }
            self.feed(n)?;
        }
    }

    fn feed(&mut self, n: usize) -> Flow<()> {
        let events = self.parser.feed(&self.read_buf[..n]).map_err(|e| {
            tracing::debug!(peer = %self.peer, error = %e, "stream error from client input");
            End::Error(e.condition(), Some(e.to_string()))
        })?;
        self.events.extend(events);
        Ok(())
    }

    async fn next_element(&mut self) -> Flow<Element> {
        match self.read_event().await? {
            StreamEvent::Stanza(el) => Ok(el),
            _ => Err(End::error("invalid-xml")),
        }
    }

    fn queue(&mut self, el: &Element) {
        write_element(el, &mut self.write_buf);
    }

    async fn flush(&mut self) -> Flow<()> {
        if !self.write_buf.is_empty() {
            self.io.write_all(&self.write_buf).await.map_err(|_| End::Gone)?;
            self.write_buf.clear();
            // A burst must not pin its buffer to an idle connection.
            if self.write_buf.capacity() > WRITE_BUFFER_KEEP {
                self.write_buf = Vec::new();
            }
        }
        self.io.flush().await.map_err(|_| End::Gone)
    }

    async fn send(&mut self, el: &Element) -> Flow<()> {
        self.queue(el);
        self.flush().await
    }

    fn send_header(&mut self, to: Option<&str>) {
        let from = self.host.clone().unwrap_or_else(|| self.server.config.server.hosts[0].clone());
        let id = random_id();
        self.write_buf.extend_from_slice(stream_header(ns::CLIENT, &from, to, &id).as_bytes());
        self.header_sent = true;
    }

    /// Sends the stream error (if any) and our closing tag, then shuts the socket.
    async fn close(mut self, end: End) {
        if !matches!(end, End::Gone) {
            if !self.header_sent {
                // RFC 6120 §4.9.1.2: open a stream before sending the error.
                self.send_header(None);
            }
            if let End::Error(condition, text) = &end {
                tracing::debug!(peer = %self.peer, condition, "closing stream with error");
                let mut error = Element::bare("error", ns::STREAMS);
                error.append_child(Element::bare(*condition, ns::STREAM_ERRORS));
                if let Some(text) = text {
                    error.append_child(text_element("text", ns::STREAM_ERRORS, text.clone()));
                }
                self.queue(&error);
            }
            self.write_buf.extend_from_slice(b"</stream:stream>");
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = self.flush().await;
                let _ = self.io.shutdown().await;
            })
            .await;
        }
    }

    // ---- negotiation ----------------------------------------------------

    /// Reads the client's stream header and answers with ours (RFC 6120 §4.2).
    async fn open_stream(&mut self) -> Flow<()> {
        let StreamEvent::Open(header) = self.read_event().await? else {
            return Err(End::error("invalid-xml"));
        };
        if header.content_ns != ns::CLIENT {
            return Err(End::error("invalid-namespace"));
        }
        let host = match header.to.as_deref() {
            Some(to) if self.server.config.is_local_host(to) => to.to_owned(),
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

    async fn negotiate(&mut self) -> Flow<(Bound, mpsc::Receiver<Outbound>)> {
        let username = loop {
            self.open_stream().await?;
            let secure = self.io.is_tls();
            let bindings = self.io.tls().map(|c| self.tls.bindings(c)).unwrap_or_default();
            let features = features::pre_auth(&self.server, &self.stream_info(secure), &bindings);
            self.send(&features).await?;
            match self.authenticate(secure, &bindings).await? {
                Some(username) => break username,
                None => self.starttls().await?,
            }
        };
        self.parser.reset();
        self.open_stream().await?;
        let features = features::post_auth(&self.server);
        self.send(&features).await?;
        self.bind(&username).await
    }

    /// Upgrades to TLS after `<proceed/>` (RFC 6120 §5.4.3.3).
    async fn starttls(&mut self) -> Flow<()> {
        let Transport::Plain(tcp) = std::mem::replace(&mut self.io, Transport::Upgrading) else {
            return Err(End::Gone);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.starttls.clone());
        match acceptor.accept(tcp).await {
            Ok(stream) => self.io = Transport::Tls(Box::new(stream)),
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return Err(End::Gone);
            }
        }
        self.parser.reset();
        self.header_sent = false;
        Ok(())
    }

    /// Runs SASL until success (`Some(username)`), or until the client asks
    /// for STARTTLS and we answered `<proceed/>` (`None`).
    async fn authenticate(&mut self, secure: bool, bindings: &ChannelBindings) -> Flow<Option<String>> {
        let config = &self.server.config;
        let offered = features::mechanisms(config, secure, bindings);
        let must_encrypt = !secure && config.c2s.require_encryption;
        let max_failures = config.auth.max_failures_per_stream;
        let mut failures = 0;
        loop {
            let el = self.next_element().await?;
            if el.is("starttls", ns::TLS) && !secure {
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
            if !el.is("auth", ns::SASL) {
                // RFC 6120 §4.9.3.12: nothing but negotiation before auth.
                return Err(End::error("not-authorized"));
            }
            let outcome = if must_encrypt {
                Err(Failure::EncryptionRequired)
            } else {
                self.sasl_exchange(&el, &offered, bindings).await?
            };
            match outcome {
                Ok(username) => {
                    self.throttle.succeeded(self.peer.ip());
                    return Ok(Some(username));
                }
                Err(failure) => {
                    tracing::info!(peer = %self.peer, condition = failure.condition(), "authentication failed");
                    let mut f = Element::bare("failure", ns::SASL);
                    f.append_child(Element::bare(failure.condition(), ns::SASL));
                    self.send(&f).await?;
                    if self.password_checked {
                        self.throttle.failed(self.peer.ip());
                        failures += 1;
                    }
                    // RFC 6120 §6.4.5: a limited number of retries, then policy-violation.
                    if failures >= max_failures {
                        return Err(End::Error("policy-violation", Some("too many failed attempts".into())));
                    }
                }
            }
        }
    }

    /// This stream as pre-auth modules see it.
    fn stream_info(&self, secure: bool) -> StreamInfo {
        StreamInfo { peer: self.peer, host: self.host().to_owned(), secure }
    }

    /// An IQ before authentication: the reply of the module that handles it,
    /// or `None` (no handler, or not a valid IQ to the server) for the
    /// caller's not-authorized.
    async fn pre_auth_iq(&self, el: Element, secure: bool) -> Option<Element> {
        let stanza = Stanza::from_element(el, ns::CLIENT).ok()?;
        self.server.handle_stream_iq(stanza, self.stream_info(secure)).await
    }

    /// One SASL exchange from `<auth/>` to success or failure.
    async fn sasl_exchange(
        &mut self,
        auth: &Element,
        offered: &[Mechanism],
        bindings: &ChannelBindings,
    ) -> Flow<Result<String, Failure>> {
        self.password_checked = false;
        let delay = self.throttle.delay(self.peer.ip());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let Some(mech) = auth.attr("mechanism").and_then(Mechanism::from_name).filter(|m| offered.contains(m)) else {
            return Ok(Err(Failure::InvalidMechanism));
        };
        let initial = match decode_base64(auth.text().trim()) {
            Ok(data) => data,
            Err(f) => return Ok(Err(f)),
        };
        let plus_offered = offered.iter().any(Mechanism::is_plus);
        let mut sasl = ServerSession::new(mech, bindings.clone(), plus_offered);
        let mut step = sasl.step(&initial);
        loop {
            step = match step {
                Err(failure) => return Ok(Err(failure)),
                Ok(Step::Challenge(data)) => {
                    let challenge = text_element("challenge", ns::SASL, encode_base64(&data));
                    self.send(&challenge).await?;
                    let el = self.next_element().await?;
                    if el.is("abort", ns::SASL) {
                        return Ok(Err(Failure::Aborted));
                    }
                    if !el.is("response", ns::SASL) {
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
                    let mut success = Element::bare("success", ns::SASL);
                    if !additional_data.is_empty() {
                        success.append_text_node(encode_base64(&additional_data));
                    }
                    self.send(&success).await?;
                    tracing::info!(peer = %self.peer, %jid, mechanism = mech.name(), "authenticated");
                    return Ok(Ok(jid.node().expect("account JIDs have a node").to_string()));
                }
            };
        }
    }

    /// The account's bare JID, if `username` is a valid localpart (RFC 7622 §3.3).
    fn account_jid(&self, username: &str) -> Option<BareJid> {
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
        self.server.store.credentials(self.host(), node, hash).await.map_err(|e| {
            tracing::error!(error = %e, "credential lookup failed");
            Failure::TemporaryAuthFailure
        })
    }

    /// Resource binding (RFC 6120 §7): waits for the bind request and
    /// registers the session with the router.
    async fn bind(&mut self, username: &str) -> Flow<(Bound, mpsc::Receiver<Outbound>)> {
        loop {
            let el = self.next_element().await?;
            let request = el
                .is("iq", ns::CLIENT)
                .then(|| el.get_child("bind", ns::BIND))
                .flatten()
                .filter(|_| el.attr("type") == Some("set"));
            let Some(bind) = request else {
                return Err(End::error("not-authorized"));
            };
            let Some(id) = el.attr("id").map(str::to_owned) else {
                return Err(End::Error("invalid-xml", Some("iq without id".into())));
            };
            let requested = bind.get_child("resource", ns::BIND).map(|r| r.text()).filter(|r| !r.is_empty());
            let policy = self.server.config.c2s.resource_conflict;
            let mut resource = requested.clone().unwrap_or_else(random_id);
            let (tx, rx) = mpsc::channel(self.server.config.limits.session_queue);
            let result = loop {
                let Ok(jid) = FullJid::new(&format!("{username}@{}/{resource}", self.host())) else {
                    break Err(StanzaError::bad_request().with_text("invalid resource"));
                };
                let replace = policy == ResourceConflict::Replace;
                match self.server.router.bind(jid, tx.clone(), replace) {
                    Ok((handle, replaced)) => {
                        if let Some(old) = replaced {
                            let _ = old.send(Outbound::Close("conflict"));
                        }
                        break Ok(handle);
                    }
                    Err(_) if policy == ResourceConflict::Rename => resource = format!("{resource}.{}", random_id()),
                    Err(_) => break Err(StanzaError::conflict()),
                }
            };
            let mut reply = Element::bare("iq", ns::CLIENT);
            set_attr(&mut reply, "id", id);
            match result {
                Ok(handle) => {
                    set_attr(&mut reply, "type", "result");
                    let mut bound = Element::bare("bind", ns::BIND);
                    bound.append_child(text_element("jid", ns::BIND, handle.jid.as_str()));
                    reply.append_child(bound);
                    self.send(&reply).await?;
                    tracing::debug!(jid = %handle.jid, "resource bound");
                    let bare = handle.jid.to_bare();
                    let bound = Bound { handle, bare, available: false, directed: HashSet::new() };
                    return Ok((bound, rx));
                }
                Err(err) => {
                    set_attr(&mut reply, "type", "error");
                    reply.append_child(err.to_element());
                    self.send(&reply).await?;
                }
            }
        }
    }

    // ---- the bound session ------------------------------------------------

    async fn serve(
        &mut self,
        mut bound: Bound,
        mut rx: mpsc::Receiver<Outbound>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> End {
        let end = self.serve_loop(&mut bound, &mut rx, &mut shutdown).await.unwrap_err();
        self.server.router.unbind(&bound.handle);
        self.went_offline(&mut bound).await;
        // Stanzas already queued for us cannot be written any more. Messages
        // take the path of a message to a gone resource (RFC 6121 §8.5.3.2.1:
        // another resource, else offline storage); IQs are answered.
        rx.close();
        while let Ok(Outbound::Stanza(el)) = rx.try_recv() {
            let Ok(stanza) = Stanza::from_element(*el, ns::CLIENT) else { continue };
            match stanza.kind {
                StanzaKind::Message => self.server.deliver(stanza).await,
                _ => self.server.bounce(&stanza, StanzaError::recipient_unavailable()),
            }
        }
        end
    }

    async fn serve_loop(
        &mut self,
        bound: &mut Bound,
        rx: &mut mpsc::Receiver<Outbound>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Flow<()> {
        let idle_secs = self.server.config.limits.idle_timeout_secs;
        // Zero disables the idle timeout: a deadline a century away.
        let idle = Duration::from_secs(if idle_secs == 0 { 3_153_600_000 } else { idle_secs });
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        // Stanzas that arrived in the same read as the bind request.
        self.handle_events(bound).await?;
        self.flush().await?;
        loop {
            // Unbiased: a session flooded with incoming stanzas must still
            // read its own socket (a client's ping, its acks) between batches.
            tokio::select! {
                _ = starling_core::server::shutting_down(shutdown) => return Err(End::error("system-shutdown")),
                out = rx.recv() => {
                    let mut next = out;
                    let mut batched = 0;
                    loop {
                        match next {
                            Some(Outbound::Stanza(el)) => self.queue(&el),
                            Some(Outbound::Close(condition)) => return Err(End::error(condition)),
                            None => return Err(End::error("conflict")),
                        }
                        batched += 1;
                        // Take another only if it will be written in this batch:
                        // one taken and not written would be lost.
                        if batched == WRITE_BATCH {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(out) => next = Some(out),
                            Err(_) => break,
                        }
                    }
                    self.flush().await?;
                }
                read = self.io.read(&mut self.read_buf) => {
                    let n = read.map_err(|_| End::Gone)?;
                    if n == 0 {
                        return Err(End::Gone);
                    }
                    timer.as_mut().reset(Instant::now() + idle);
                    self.feed(n)?;
                    self.handle_events(bound).await?;
                    self.flush().await?;
                }
                _ = &mut timer => return Err(End::error("connection-timeout")),
            }
        }
    }

    async fn handle_events(&mut self, bound: &mut Bound) -> Flow<()> {
        while let Some(event) = self.events.pop_front() {
            match event {
                StreamEvent::Stanza(el) => self.handle_element(bound, el).await?,
                StreamEvent::Close => return Err(End::PeerClosed),
                StreamEvent::Open(_) => return Err(End::error("invalid-xml")),
            }
        }
        Ok(())
    }

    async fn handle_element(&mut self, bound: &mut Bound, el: Element) -> Flow<()> {
        let mut stanza = match Stanza::from_element(el, ns::CLIENT) {
            Ok(stanza) => stanza,
            Err(EnvelopeError::NotAStanza(what)) => {
                return Err(End::Error("unsupported-stanza-type", Some(what)));
            }
            Err(EnvelopeError::Bad(err, el)) => return self.reject(bound, err, *el),
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
            StanzaKind::Presence if stanza.to.is_none() => self.broadcast_presence(bound, stanza).await,
            StanzaKind::Presence => {
                match stanza.type_.as_deref() {
                    None => bound.directed.insert(stanza.to.clone().expect("has to")),
                    Some("unavailable") => bound.directed.remove(stanza.to.as_ref().expect("has to")),
                    Some(_) => false,
                };
                self.server.route(stanza).await;
            }
            StanzaKind::Iq if is_session_request(&stanza) => {
                // RFC 6121 Appendix E: legacy session establishment is a no-op.
                let reply = stanza.iq_result(None);
                self.queue(&reply);
            }
            _ => self.server.route(stanza).await,
        }
        Ok(())
    }

    /// A stanza too broken to route gets its error straight back.
    fn reject(&mut self, bound: &Bound, err: StanzaError, el: Element) -> Flow<()> {
        tracing::debug!(jid = %bound.handle.jid, error = %err, "rejected stanza");
        let sender = Jid::from(bound.handle.jid.clone());
        if let Some(reply) = error_reply_to_element(el, &err, &sender) {
            self.queue(&reply);
        }
        Ok(())
    }

    /// Presence without `to`: the session's own availability. The router
    /// records it first (so the sender's own resources, itself included, get
    /// it back, RFC 6121 §4.2.2), then it is routed as a broadcast.
    async fn broadcast_presence(&mut self, bound: &mut Bound, stanza: Stanza) {
        let router = &self.server.router;
        match stanza.type_.as_deref() {
            None => {
                // Module additions (XEP-0153's avatar hash) before it is recorded.
                let stanza = self.server.decorate_presence(stanza).await;
                let priority = stanza
                    .el
                    .get_child("priority", ns::CLIENT)
                    .and_then(|p| p.text().trim().parse::<i8>().ok())
                    .unwrap_or(0);
                let initial = !bound.available;
                router.set_presence(&bound.handle, Some(stanza.el.clone()), priority);
                bound.available = true;
                self.server.route(stanza.clone()).await;
                if initial {
                    self.server.run_hooks(HookPoint::SessionAvailable, &Arc::new(stanza)).await;
                }
            }
            Some("unavailable") => {
                self.server.route(stanza.clone()).await;
                self.server.router.set_presence(&bound.handle, None, 0);
                bound.available = false;
                self.directed_unavailable(bound, &stanza.el).await;
            }
            // Subscription management and probes need a `to`; errors are dropped.
            Some(_) => {}
        }
    }

    /// Unavailable presence to everyone we sent directed presence to.
    async fn directed_unavailable(&self, bound: &mut Bound, el: &Element) {
        for to in bound.directed.drain() {
            let mut el = el.clone();
            set_attr(&mut el, "to", to.as_str());
            if let Ok(stanza) = Stanza::from_element(el, ns::CLIENT) {
                self.server.route(stanza).await;
            }
        }
    }

    /// The session ended (it already left the router): whoever saw it
    /// available learns it is gone (RFC 6121 §4.6.3), then modules clean up.
    async fn went_offline(&self, bound: &mut Bound) {
        let mut el = Element::bare("presence", ns::CLIENT);
        set_attr(&mut el, "type", "unavailable");
        set_attr(&mut el, "from", bound.handle.jid.as_str());
        let Ok(unavailable) = Stanza::from_element(el, ns::CLIENT) else { return };
        if bound.available {
            self.server.route(unavailable.clone()).await;
        }
        self.directed_unavailable(bound, &unavailable.el).await;
        let unavailable = Arc::new(unavailable);
        self.server.run_hooks(HookPoint::SessionClosed, &unavailable).await;
        if !self.server.router.is_online(&bound.bare) {
            self.server.run_hooks(HookPoint::AccountOffline, &unavailable).await;
        }
    }
}

fn is_session_request(stanza: &Stanza) -> bool {
    stanza.is_type("set")
        && stanza.to.as_ref().is_none_or(|to| to.node().is_none())
        && stanza.payload().is_some_and(|p| p.is("session", ns::SESSION))
}

/// An unguessable identifier for stream ids and generated resources.
fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..16).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}
