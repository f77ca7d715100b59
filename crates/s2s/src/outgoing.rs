//! Outgoing streams: connect to the remote domain's server, negotiate TLS,
//! authenticate our domain (SASL EXTERNAL, else dialback), then write what
//! is queued for the pair until the stream has been idle for a while.

use crate::stream::{stream_error, stream_error_text, End, Flow, XmlStream, NS_DIALBACK, NS_DIALBACK_FEATURE};
use crate::{Permit, S2s};
use base64::Engine;
use starling_proto::xml::{element, move_namespace};
use starling_proto::{ns, Element, StanzaError};
use starling_xmlstream::{StreamEvent, StreamHeader};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Queued stanzas written per socket write when a burst arrives.
const WRITE_BATCH: usize = 64;

/// Why a stream could not be set up: what the queued stanzas' senders get.
pub(crate) struct Failure {
    pub error: StanzaError,
    /// The stream to close, when there was one.
    pub stream: Option<(XmlStream, End)>,
}

fn not_found(why: impl Into<String>) -> Failure {
    Failure { error: StanzaError::remote_server_not_found().with_text(why), stream: None }
}

/// A stream that failed during negotiation: closed with `end`.
fn failed(stream: XmlStream, end: End, why: impl Into<String>) -> Failure {
    Failure { error: StanzaError::remote_server_not_found().with_text(why), stream: Some((stream, end)) }
}

/// A connected stream past TLS: the peer's header and features.
pub(crate) struct Opened {
    pub stream: XmlStream,
    pub header: StreamHeader,
    pub features: Element,
}

/// Connects to `remote`'s server as `local` and negotiates TLS (required
/// unless `s2s.require_encryption` is off).
pub(crate) async fn open(s2s: &S2s, local: &str, remote: &str) -> Result<Opened, Failure> {
    let targets = s2s.resolver.resolve(remote).await;
    if targets.is_empty() {
        return Err(not_found(format!("{remote} does not resolve")));
    }
    let mut connected = None;
    for target in targets {
        match TcpStream::connect(target.addr).await {
            Ok(tcp) => {
                connected = Some((tcp, target));
                break;
            }
            Err(e) => tracing::debug!(%remote, addr = %target.addr, error = %e, "s2s connect failed"),
        }
    }
    let Some((tcp, target)) = connected else {
        return Err(not_found(format!("no server of {remote} could be reached")));
    };
    let mut stream = XmlStream::new(tcp, target.addr, s2s.limits.clone());
    if target.direct_tls {
        if let Err(end) = stream.tls_client(s2s.tls.client_for(local, true), remote).await {
            return Err(failed(stream, end, "TLS failed"));
        }
    }
    loop {
        let (header, features) = match exchange_headers(&mut stream, local, remote).await {
            Ok(opened) => opened,
            Err(end) => return Err(failed(stream, end, "stream negotiation failed")),
        };
        if stream.is_tls() {
            return Ok(Opened { stream, header, features });
        }
        if features.get_child("starttls", ns::TLS).is_none() {
            if s2s.config.require_encryption {
                let end = stream_error_text("policy-violation", "encryption required");
                return Err(failed(stream, end, format!("{remote} offers no TLS")));
            }
            return Ok(Opened { stream, header, features });
        }
        stream.queue(&Element::bare("starttls", ns::TLS));
        let proceed = match flush_and_next(&mut stream).await {
            Ok(el) => el,
            Err(end) => return Err(failed(stream, end, "STARTTLS failed")),
        };
        if !proceed.is("proceed", ns::TLS) {
            return Err(failed(stream, End::Done, format!("{remote} refused STARTTLS")));
        }
        if let Err(end) = stream.tls_client(s2s.tls.client_for(local, false), remote).await {
            return Err(failed(stream, end, "TLS failed"));
        }
    }
}

async fn flush_and_next(stream: &mut XmlStream) -> Flow<Element> {
    stream.flush().await?;
    stream.next_element().await
}

/// Sends our header, reads the peer's and its features.
async fn exchange_headers(stream: &mut XmlStream, local: &str, remote: &str) -> Flow<(StreamHeader, Element)> {
    stream.send_header(local, Some(remote), None);
    stream.flush().await?;
    let StreamEvent::Open(header) = stream.next().await? else {
        return Err(stream_error("invalid-xml"));
    };
    if header.content_ns != ns::SERVER {
        return Err(stream_error("invalid-namespace"));
    }
    let features = stream.next_element().await?;
    if !features.is("features", ns::STREAMS) {
        return Err(stream_error("invalid-xml"));
    }
    Ok((header, features))
}

/// Opens an authenticated stream from `local` to `remote`.
async fn connect(s2s: &S2s, local: &str, remote: &str) -> Result<XmlStream, Failure> {
    match authenticate(s2s, local, remote, true).await? {
        Some(stream) => Ok(stream),
        // Some peers (ejabberd) offer EXTERNAL whatever our certificate, and
        // take nothing else on a stream where it failed: dialback on a new one.
        None => authenticate(s2s, local, remote, false).await?.ok_or_else(|| not_found("authentication failed")),
    }
}

/// One attempt; `None` when SASL EXTERNAL failed and the peer offers
/// dialback too (only when `try_external`).
async fn authenticate(s2s: &S2s, local: &str, remote: &str, try_external: bool) -> Result<Option<XmlStream>, Failure> {
    let Opened { mut stream, header, features } = open(s2s, local, remote).await?;
    let peer_valid = stream.is_tls() && s2s.tls.valid_for(stream.peer_certificates(), remote);
    if !peer_valid && !s2s.dialback_allowed(remote) {
        let end = stream_error_text("policy-violation", "certificate not valid");
        return Err(failed(stream, end, format!("the certificate of {remote} is not valid")));
    }
    let dialback = features.get_child("dialback", NS_DIALBACK_FEATURE).is_some();
    // XEP-0178 §3: offered when the peer found our certificate valid
    // (though not every peer waits for that).
    let external = features
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| m.children().any(|c| c.is("mechanism", ns::SASL) && c.text() == "EXTERNAL"));
    if external && try_external {
        let authzid = base64::engine::general_purpose::STANDARD.encode(local);
        let mut auth = element("auth", ns::SASL, &[("mechanism", "EXTERNAL")]);
        auth.append_text(authzid);
        stream.queue(&auth);
        match flush_and_next(&mut stream).await {
            Ok(el) if el.is("success", ns::SASL) => {
                stream.restart();
                return match exchange_headers(&mut stream, local, remote).await {
                    Ok(_) => Ok(Some(stream)),
                    Err(end) => Err(failed(stream, end, "stream restart failed")),
                };
            }
            Ok(_) if dialback => {
                tracing::debug!(%remote, "SASL EXTERNAL refused; dialback on a new stream");
                stream.close(End::Done, local).await;
                return Ok(None);
            }
            Ok(_) => return Err(failed(stream, End::Done, format!("{remote} refused our certificate"))),
            Err(end) => return Err(failed(stream, end, "SASL EXTERNAL failed")),
        }
    }
    if !dialback {
        return Err(failed(stream, stream_error("not-authorized"), format!("cannot authenticate to {remote}")));
    }
    // XEP-0220 §2.1.1: the key proves to the receiving server, which asks
    // our authoritative server, that this stream comes from `local`.
    let key = s2s.dialback_key(remote, local, header.id.as_deref().unwrap_or_default());
    let mut result = element("result", NS_DIALBACK, &[("from", local), ("to", remote)]);
    result.append_text(key);
    stream.queue(&result);
    if let Err(end) = stream.flush().await {
        return Err(failed(stream, end, "dialback failed"));
    }
    loop {
        match stream.next_element().await {
            Ok(el) if el.is("result", NS_DIALBACK) => {
                return match el.attr("type") {
                    Some("valid") => Ok(Some(stream)),
                    _ => Err(failed(stream, End::Done, format!("{remote} refused our dialback key"))),
                };
            }
            Ok(el) => tracing::debug!(%remote, element = el.name(), "ignored during dialback"),
            Err(end) => return Err(failed(stream, end, "dialback failed")),
        }
    }
}

/// The task of one outgoing link: sets its stream up, serves it, and
/// bounces (or, after an idle close, sends again) what is left in its queue.
pub(crate) async fn run(
    s2s: Arc<S2s>,
    key: (String, String),
    id: u64,
    mut rx: mpsc::Receiver<Element>,
    _permit: Permit,
) {
    let (local, remote) = (&key.0, &key.1);
    let setup = tokio::time::timeout(s2s.handshake_timeout(), connect(&s2s, local, remote)).await;
    let leftover_error = match setup {
        Ok(Ok(mut stream)) => {
            tracing::info!(%local, %remote, peer = %stream.peer, "outgoing s2s stream ready");
            let end = serve(&s2s, &mut stream, &mut rx).await;
            let idle = matches!(end, End::Done);
            stream.close(end, local).await;
            tracing::info!(%local, %remote, "outgoing s2s stream closed");
            // Closed for idleness: what raced in goes out on a new stream.
            (!idle).then(|| StanzaError::remote_server_timeout().with_text("the connection to that server was lost"))
        }
        Ok(Err(Failure { error, stream })) => {
            tracing::info!(%local, %remote, error = ?error.text, "outgoing s2s stream failed");
            if let Some((stream, end)) = stream {
                stream.close(end, local).await;
            }
            Some(error)
        }
        Err(_) => {
            tracing::info!(%local, %remote, "outgoing s2s stream timed out");
            Some(StanzaError::remote_server_timeout())
        }
    };
    s2s.links.remove_if(&key, |_, l| l.id == id);
    rx.close();
    while let Ok(el) = rx.try_recv() {
        match &leftover_error {
            Some(err) => s2s.bounce(el, err.clone()),
            None => {
                use starling_core::domains::RemoteRoute;
                if let Ok(stanza) = starling_proto::Stanza::from_element(el, ns::CLIENT) {
                    if let Err(failed) = s2s.send(stanza) {
                        s2s.server.bounce(&failed.0, failed.1);
                    }
                }
            }
        }
    }
}

/// Writes queued stanzas until the stream fails, the peer closes it, it is
/// idle (`End::Done`) or the server shuts down.
async fn serve(s2s: &S2s, stream: &mut XmlStream, rx: &mut mpsc::Receiver<Element>) -> End {
    let mut shutdown = s2s.server.shutdown.subscribe();
    let idle = s2s.idle_timeout();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = starling_core::server::shutting_down(&mut shutdown) => return stream_error("system-shutdown"),
            out = rx.recv() => {
                let Some(el) = out else { return End::Done };
                stream.queue(&move_namespace(el, ns::CLIENT, ns::SERVER));
                // A burst goes out in batches so the peer's input is read in between.
                for _ in 1..WRITE_BATCH {
                    let Ok(el) = rx.try_recv() else { break };
                    stream.queue(&move_namespace(el, ns::CLIENT, ns::SERVER));
                }
                // A peer that stops reading must not hold the link (and
                // its queue) forever: it gets the handshake time to take a batch.
                match tokio::time::timeout(s2s.handshake_timeout(), stream.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(end)) => return end,
                    Err(_) => return End::Gone,
                }
                timer.as_mut().reset(Instant::now() + idle);
            }
            read = stream.read() => {
                if let Err(end) = read {
                    return end;
                }
                while let Some(event) = stream.buffered() {
                    match event {
                        StreamEvent::Close => return End::PeerClosed,
                        // Without bidirectional streams (XEP-0288) the peer
                        // sends its stanzas on its own stream.
                        StreamEvent::Stanza(el) => {
                            tracing::debug!(peer = %stream.peer, element = el.name(), "ignored on an outgoing stream");
                        }
                        StreamEvent::Open(_) => return stream_error("invalid-xml"),
                    }
                }
            }
            _ = &mut timer => return End::Done,
        }
    }
}
