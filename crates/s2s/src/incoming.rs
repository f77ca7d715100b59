//! Incoming streams: another server connects, negotiates TLS, proves the
//! domains it speaks for (SASL EXTERNAL with its certificate, or dialback),
//! and sends stanzas from those domains to ours. Our authoritative-server
//! side of dialback (answering `<db:verify/>`) is here too.

use crate::rate::Rate;
use crate::stream::{stream_error, stream_error_text, End, Flow, XmlStream, NS_DIALBACK, NS_DIALBACK_FEATURE};
use crate::{dialback, Permit, S2s};
use base64::Engine;
use starling_proto::stanza::EnvelopeError;
use starling_proto::xml::{element, move_namespace, text_element};
use starling_proto::{ns, Element, Stanza};
use starling_xmlstream::{StreamEvent, StreamHeader};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Incoming {
    s2s: Arc<S2s>,
    stream: XmlStream,
    /// The domain of ours the peer opened the stream to.
    local: String,
    /// The domain the peer named in its header.
    peer_domain: Option<String>,
    /// The id of our header: dialback keys are bound to it.
    id: String,
    /// The peer's domains it proved (RFC 6120 §13.7 / XEP-0220 §2.6: more
    /// than one with dialback).
    authenticated: HashSet<String>,
    /// SASL succeeded: no second authentication on this stream.
    sasl_done: bool,
    /// `s2s.max_stanzas_per_second`, when set.
    rate: Option<Rate>,
}

pub(crate) async fn run(s2s: Arc<S2s>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool, _permit: Permit) {
    let host = s2s.server.config.server.hosts[0].clone();
    let mut incoming = Incoming {
        stream: XmlStream::new(tcp, peer, s2s.limits.clone()),
        local: host,
        peer_domain: None,
        id: String::new(),
        authenticated: HashSet::new(),
        sasl_done: false,
        rate: match s2s.config.max_stanzas_per_second {
            0 => None,
            n => Some(Rate::new(n, std::time::Instant::now())),
        },
        s2s,
    };
    let end = incoming.serve(direct_tls).await.unwrap_err();
    if !incoming.authenticated.is_empty() {
        tracing::info!(%peer, domains = ?incoming.authenticated, "incoming s2s stream closed");
    }
    let Incoming { stream, local, .. } = incoming;
    stream.close(end, &local).await;
}

impl Incoming {
    async fn serve(&mut self, direct_tls: bool) -> Flow<()> {
        let mut shutdown = self.s2s.server.shutdown.subscribe();
        if direct_tls {
            let config = self.s2s.tls.direct.clone();
            let handshake = tokio::time::timeout(self.s2s.handshake_timeout(), self.stream.tls_server(config));
            handshake.await.map_err(|_| End::Gone)??;
        }
        // Until a domain is authenticated the peer has the handshake timeout
        // (a peer that says nothing is dropped); after it, the idle timeout.
        let mut deadline = Instant::now() + self.s2s.handshake_timeout();
        loop {
            let event = tokio::select! {
                event = self.stream.next() => event?,
                _ = tokio::time::sleep_until(deadline) => return Err(stream_error("connection-timeout")),
                _ = starling_core::server::shutting_down(&mut shutdown) => return Err(stream_error("system-shutdown")),
            };
            // The same deadline for what the event starts (a TLS handshake
            // the peer stalls, a dialback check).
            let handled = tokio::time::timeout_at(deadline, async {
                match event {
                    StreamEvent::Open(header) => self.on_header(header).await,
                    StreamEvent::Stanza(el) => self.on_element(el).await,
                    StreamEvent::Close => Err(End::PeerClosed),
                }
            });
            handled.await.map_err(|_| stream_error("connection-timeout"))??;
            if !self.authenticated.is_empty() {
                deadline = Instant::now() + self.s2s.idle_timeout();
            }
        }
    }

    /// RFC 6120 §4.7: answer the header (also after each restart) with ours
    /// and the features for the stream's state.
    async fn on_header(&mut self, header: StreamHeader) -> Flow<()> {
        let Some(to) = header.to.filter(|to| self.s2s.is_local(to)) else {
            return Err(stream_error("host-unknown"));
        };
        self.local = to;
        self.id = crate::stream::stream_id();
        self.peer_domain = header.from.clone();
        self.stream.send_header(&self.local, header.from.as_deref(), Some(&self.id));
        if header.content_ns != ns::SERVER {
            return Err(stream_error("invalid-namespace"));
        }
        if let Some(from) = &header.from {
            if self.s2s.is_denied(from) {
                return Err(stream_error_text("not-authorized", "federation with this domain is not allowed"));
            }
        }
        let mut features = Element::bare("features", ns::STREAMS);
        let secure = self.stream.is_tls() || !self.s2s.config.require_encryption;
        if !self.stream.is_tls() {
            let mut starttls = Element::bare("starttls", ns::TLS);
            if self.s2s.config.require_encryption {
                starttls.append_child(Element::bare("required", ns::TLS));
            }
            features.append_child(starttls);
        }
        if secure && !self.sasl_done {
            if header.from.as_deref().is_some_and(|from| self.peer_certificate_valid(from)) {
                let mut mechanisms = Element::bare("mechanisms", ns::SASL);
                mechanisms.append_child(text_element("mechanism", ns::SASL, "EXTERNAL"));
                features.append_child(mechanisms);
            }
            let mut dialback = Element::bare("dialback", NS_DIALBACK_FEATURE);
            dialback.append_child(Element::bare("errors", NS_DIALBACK_FEATURE));
            features.append_child(dialback);
        }
        self.stream.queue(&features);
        self.stream.flush().await
    }

    fn peer_certificate_valid(&self, domain: &str) -> bool {
        self.stream.is_tls() && self.s2s.tls.valid_for(self.stream.peer_certificates(), domain)
    }

    async fn on_element(&mut self, el: Element) -> Flow<()> {
        if el.is("starttls", ns::TLS) && !self.stream.is_tls() {
            self.stream.queue(&Element::bare("proceed", ns::TLS));
            self.stream.flush().await?;
            let config = self.s2s.tls.starttls.clone();
            return self.stream.tls_server(config).await;
        }
        if el.is("auth", ns::SASL) {
            return self.sasl_external(&el).await;
        }
        if el.is("result", NS_DIALBACK) {
            return self.dialback_result(&el).await;
        }
        if el.is("verify", NS_DIALBACK) {
            return self.dialback_verify(&el).await;
        }
        if !el.has_ns(ns::SERVER) {
            return Err(stream_error("unsupported-stanza-type"));
        }
        if self.authenticated.is_empty() {
            return Err(stream_error("not-authorized"));
        }
        self.stanza(el).await
    }

    /// XEP-0178 §3: the peer authenticates as the domain of its header with
    /// the certificate it presented.
    async fn sasl_external(&mut self, auth: &Element) -> Flow<()> {
        let from = self.peer_domain.clone().filter(|from| {
            !self.sasl_done
                && auth.attr("mechanism") == Some("EXTERNAL")
                && (self.stream.is_tls() || !self.s2s.config.require_encryption)
                && !self.s2s.is_local(from)
                && self.peer_certificate_valid(from)
        });
        // RFC 6120 §6.4.6: an authorization identity, if given, must be the
        // domain the certificate was checked for.
        let text = auth.text();
        let authzid = match text.trim() {
            "" | "=" => None,
            encoded => base64::engine::general_purpose::STANDARD.decode(encoded).ok().map(String::from_utf8),
        };
        let condition = match (&from, authzid) {
            (None, _) => Some("not-authorized"),
            (Some(_), None) => None,
            (Some(from), Some(Ok(authzid))) if authzid == *from => None,
            (Some(_), Some(_)) => Some("invalid-authzid"),
        };
        if let Some(condition) = condition {
            let mut failure = Element::bare("failure", ns::SASL);
            failure.append_child(Element::bare(condition, ns::SASL));
            self.stream.queue(&failure);
            self.stream.flush().await?;
            return Err(stream_error("not-authorized"));
        }
        let from = from.expect("checked above");
        self.stream.queue(&Element::bare("success", ns::SASL));
        self.stream.flush().await?;
        tracing::info!(peer = %self.stream.peer, domain = %from, "incoming s2s stream authenticated (SASL EXTERNAL)");
        self.authenticated.insert(from);
        self.sasl_done = true;
        self.stream.restart();
        Ok(())
    }

    /// XEP-0220 §2.1.2 / §2.3: the peer claims `from` with a key; a valid
    /// certificate for `from` settles it, else (where allowed) `from`'s
    /// authoritative server is asked.
    async fn dialback_result(&mut self, el: &Element) -> Flow<()> {
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            return Err(stream_error("improper-addressing"));
        };
        let reply = |type_: &str| element("result", NS_DIALBACK, &[("from", to), ("to", from), ("type", type_)]);
        if !self.s2s.is_local(to) {
            // XEP-0220 §2.4: we do not serve the domain the key is for.
            let mut error = reply("error");
            let mut condition = Element::bare("error", ns::SERVER);
            starling_proto::xml::set_attr(&mut condition, "type", "cancel");
            condition.append_child(Element::bare("item-not-found", ns::STANZAS));
            error.append_child(condition);
            self.stream.queue(&error);
            return self.stream.flush().await;
        }
        let secure = self.stream.is_tls() || !self.s2s.config.require_encryption;
        // Nobody else speaks for our own domains.
        let valid = if !secure || self.s2s.is_denied(from) || self.s2s.is_local(from) {
            false
        } else if self.peer_certificate_valid(from) {
            true
        } else if self.s2s.dialback_allowed(from) {
            dialback::verify(&self.s2s, to, from, &self.id, &el.text()).await
        } else {
            false
        };
        self.stream.queue(&reply(if valid { "valid" } else { "invalid" }));
        self.stream.flush().await?;
        if !valid {
            tracing::info!(peer = %self.stream.peer, domain = %from, "incoming s2s dialback refused");
            if self.authenticated.is_empty() {
                return Err(stream_error_text("not-authorized", format!("not authenticated as {from}")));
            }
            return Ok(());
        }
        tracing::info!(peer = %self.stream.peer, domain = %from, "incoming s2s stream authenticated (dialback)");
        self.authenticated.insert(from.to_owned());
        Ok(())
    }

    /// XEP-0220 §2.1.3: as `to`'s authoritative server, whether we made `key`
    /// for a stream from `to` to `from` with that id.
    async fn dialback_verify(&mut self, el: &Element) -> Flow<()> {
        let (Some(from), Some(to), Some(id)) = (el.attr("from"), el.attr("to"), el.attr("id")) else {
            return Err(stream_error("improper-addressing"));
        };
        if !self.s2s.is_local(to) {
            return Err(stream_error("host-unknown"));
        }
        let expected = self.s2s.dialback_key(from, to, id);
        let valid: bool = expected.as_bytes().ct_eq(el.text().trim().as_bytes()).into();
        let type_ = if valid { "valid" } else { "invalid" };
        self.stream.queue(&element("verify", NS_DIALBACK, &[("from", to), ("to", from), ("id", id), ("type", type_)]));
        self.stream.flush().await
    }

    /// RFC 6120 §8.1.1.1 / §13.7: both addresses are required between
    /// servers, `from` at a domain this stream proved and `to` at one of ours.
    async fn stanza(&mut self, el: Element) -> Flow<()> {
        let el = move_namespace(el, ns::SERVER, ns::CLIENT);
        let stanza = match Stanza::from_element(el, ns::CLIENT) {
            Ok(stanza) => stanza,
            Err(EnvelopeError::NotAStanza(what)) => return Err(stream_error_text("unsupported-stanza-type", what)),
            Err(EnvelopeError::Bad(..)) => return Err(stream_error("improper-addressing")),
        };
        match (&stanza.from, &stanza.to) {
            (Some(from), Some(_)) if !self.authenticated.contains(from.domain().as_str()) => {
                return Err(stream_error("invalid-from"));
            }
            (Some(_), Some(to)) if !self.s2s.is_local(to.domain().as_str()) => {
                return Err(stream_error("host-unknown"));
            }
            (Some(_), Some(_)) => {}
            _ => return Err(stream_error("improper-addressing")),
        }
        if let Some(rate) = &mut self.rate {
            let wait = rate.take(std::time::Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        self.s2s.server.deliver(stanza).await;
        Ok(())
    }
}
