//! External components (XEP-0114, `jabber:component:accept`): a trusted
//! process connects, proves it knows its domain's shared secret, and from
//! then on takes every stanza to that domain and sends stanzas from it.
//!
//! One task per connection, like a client session: it reads and parses what
//! the component sends and writes what the rest of the server queues for it.

use sha1::{Digest, Sha1};
use starling_core::domains::{AttachError, ComponentLink};
use starling_core::{Outbound, Server};
use starling_proto::stanza::{error_reply_to_element, EnvelopeError};
use starling_proto::xml::move_namespace;
use starling_proto::{ns, Element, Jid, Stanza, StanzaError};
use starling_xmlstream::{stream_header, write_element, Limits, StreamEvent, StreamParser};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Why a component stream ends.
#[derive(Debug)]
enum End {
    /// Send this RFC 6120 §4.9.3 stream error, then close.
    Error(&'static str, Option<String>),
    /// The component closed its stream: answer with ours.
    PeerClosed,
    /// The socket failed or hit EOF.
    Gone,
}

type Flow<T> = Result<T, End>;

fn stream_error(condition: &'static str) -> End {
    End::Error(condition, None)
}

const READ_BUFFER: usize = 4096;
/// Queued stanzas written per socket write when a burst arrives.
const WRITE_BATCH: usize = 64;

/// Accepts component connections on `listeners` until shutdown, then waits
/// for the open streams to close.
pub async fn serve(server: Arc<Server>, listeners: Vec<TcpListener>) {
    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        accept_loops.spawn(accept_loop(server.clone(), listener));
    }
    accept_loops.join_all().await;
}

async fn accept_loop(server: Arc<Server>, listener: TcpListener) {
    let mut shutdown = server.shutdown.subscribe();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = starling_core::server::shutting_down(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "component accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(Connection::new(server.clone(), tcp, peer).run());
        while connections.try_join_next().is_some() {}
    }
    let grace = Duration::from_secs(server.config.server.shutdown_grace_secs);
    let _ = tokio::time::timeout(grace, connections.join_all()).await;
}

struct Connection {
    server: Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    read_buf: Box<[u8]>,
    write_buf: Vec<u8>,
    header_sent: bool,
}

/// XEP-0114 §3: the handshake is hex(SHA-1(stream id ‖ secret)), lowercase.
fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let digest = Sha1::new().chain_update(stream_id).chain_update(secret).finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Connection {
    fn new(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr) -> Self {
        let limits = &server.config.limits;
        // The same limits as client streams: a component is trusted with
        // addresses, not with the server's memory.
        let parser = StreamParser::new(Limits {
            max_stanza_bytes: limits.max_stanza_bytes,
            max_depth: limits.max_depth,
            max_attributes: limits.max_attributes,
            ..Limits::default()
        });
        Connection {
            server,
            tcp,
            peer,
            parser,
            events: VecDeque::new(),
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            write_buf: Vec::new(),
            header_sent: false,
        }
    }

    async fn run(mut self) {
        let mut shutdown = self.server.shutdown.subscribe();
        let handshake = Duration::from_secs(self.server.config.limits.handshake_timeout_secs);
        let (tx, rx) = mpsc::channel(self.server.config.limits.session_queue);
        let authenticated = tokio::select! {
            r = tokio::time::timeout(handshake, self.authenticate(tx)) => match r {
                Ok(r) => r,
                Err(_) => Err(stream_error("connection-timeout")),
            },
            _ = starling_core::server::shutting_down(&mut shutdown) => Err(stream_error("system-shutdown")),
        };
        let end = match authenticated {
            Ok(link) => {
                tracing::info!(domain = %link.domain, peer = %self.peer, "component connected");
                self.serve(link, rx, shutdown).await
            }
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
            let n = self.tcp.read(&mut self.read_buf).await.map_err(|_| End::Gone)?;
            self.feed(n)?;
        }
    }

    fn feed(&mut self, n: usize) -> Flow<()> {
        if n == 0 {
            return Err(End::Gone);
        }
        let events = self.parser.feed(&self.read_buf[..n]).map_err(|e| {
            tracing::debug!(peer = %self.peer, error = %e, "stream error from component input");
            End::Error(e.condition(), Some(e.to_string()))
        })?;
        self.events.extend(events);
        Ok(())
    }

    /// Writes a stanza of the server's (`jabber:client`) in the stream's namespace.
    fn queue_stanza(&mut self, el: Element) {
        write_element(&move_namespace(el, ns::CLIENT, ns::COMPONENT), &mut self.write_buf);
    }

    async fn flush(&mut self) -> Flow<()> {
        if !self.write_buf.is_empty() {
            self.tcp.write_all(&self.write_buf).await.map_err(|_| End::Gone)?;
            self.write_buf.clear();
        }
        Ok(())
    }

    fn send_header(&mut self, from: &str, id: &str) {
        self.write_buf.extend_from_slice(stream_header(ns::COMPONENT, from, None, id).as_bytes());
        self.header_sent = true;
    }

    async fn close(mut self, end: End) {
        if matches!(end, End::Gone) {
            return;
        }
        if !self.header_sent {
            // RFC 6120 §4.9.1.2 (XEP-0114 §3: errors about the header too):
            // open a stream before sending the error.
            let host = self.server.config.server.hosts[0].clone();
            self.send_header(&host, &stream_id());
        }
        if let End::Error(condition, text) = end {
            tracing::debug!(peer = %self.peer, condition, "closing component stream with error");
            write_element(&starling_proto::xml::stream_error(condition, text.as_deref()), &mut self.write_buf);
        }
        self.write_buf.extend_from_slice(b"</stream:stream>");
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.flush().await;
            let _ = self.tcp.shutdown().await;
        })
        .await;
    }

    // ---- XEP-0114 §3: header and handshake ------------------------------

    async fn authenticate(&mut self, tx: mpsc::Sender<Outbound>) -> Flow<ComponentLink> {
        let StreamEvent::Open(header) = self.read_event().await? else {
            return Err(stream_error("invalid-xml"));
        };
        let id = stream_id();
        let Some(domain) = header.to.filter(|to| self.server.domains.component_secret(to).is_some()) else {
            return Err(stream_error("host-unknown"));
        };
        self.send_header(&domain, &id);
        if header.content_ns != ns::COMPONENT {
            return Err(stream_error("invalid-namespace"));
        }
        self.flush().await?;
        let StreamEvent::Stanza(handshake) = self.read_event().await? else {
            return Err(stream_error("invalid-xml"));
        };
        if !handshake.is("handshake", ns::COMPONENT) {
            return Err(stream_error("not-authorized"));
        }
        let secret = self.server.domains.component_secret(&domain).expect("checked at the header");
        let expected = handshake_digest(&id, secret);
        let given = handshake.text().trim().to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            tracing::info!(%domain, peer = %self.peer, "component handshake failed");
            return Err(stream_error("not-authorized"));
        }
        let link = self.server.domains.attach_component(&domain, tx).map_err(|e| match e {
            AttachError::Conflict(_) => End::Error("conflict", Some(e.to_string())),
            AttachError::Unknown(_) => stream_error("host-unknown"),
        })?;
        write_element(&Element::bare("handshake", ns::COMPONENT), &mut self.write_buf);
        if let Err(end) = self.flush().await {
            self.server.domains.detach_component(&link);
            return Err(end);
        }
        Ok(link)
    }

    // ---- the authenticated stream ---------------------------------------

    async fn serve(
        &mut self,
        link: ComponentLink,
        mut rx: mpsc::Receiver<Outbound>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> End {
        let end = self.serve_loop(&link, &mut rx, &mut shutdown).await.unwrap_err();
        self.server.domains.detach_component(&link);
        tracing::info!(domain = %link.domain, "component disconnected");
        // What was queued for it cannot be written any more: its senders
        // learn the service is gone (RFC 6120 §8.3.3.19).
        rx.close();
        while let Ok(Outbound::Stanza(el)) = rx.try_recv() {
            if let Ok(stanza) = Stanza::from_element(*el, ns::CLIENT) {
                self.server.bounce(&stanza, StanzaError::service_unavailable());
            }
        }
        end
    }

    async fn serve_loop(
        &mut self,
        link: &ComponentLink,
        rx: &mut mpsc::Receiver<Outbound>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Flow<()> {
        let idle_secs = self.server.config.limits.idle_timeout_secs;
        // Zero disables the idle timeout: a deadline a century away.
        let idle = Duration::from_secs(if idle_secs == 0 { 3_153_600_000 } else { idle_secs });
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        // Stanzas that arrived in the same read as the handshake.
        self.handle_events(link).await?;
        loop {
            tokio::select! {
                _ = starling_core::server::shutting_down(shutdown) => return Err(stream_error("system-shutdown")),
                out = rx.recv() => {
                    let mut next = out;
                    let mut batched = 0;
                    loop {
                        match next {
                            Some(Outbound::Stanza(el)) => self.queue_stanza(*el),
                            Some(Outbound::Close(condition)) => return Err(stream_error(condition)),
                            None => return Err(stream_error("conflict")),
                        }
                        batched += 1;
                        // A burst is written in batches so the component's
                        // own stanzas are read in between.
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
                read = self.tcp.read(&mut self.read_buf) => {
                    let n = read.map_err(|_| End::Gone)?;
                    timer.as_mut().reset(Instant::now() + idle);
                    self.feed(n)?;
                    self.handle_events(link).await?;
                }
                _ = &mut timer => return Err(stream_error("connection-timeout")),
            }
        }
    }

    async fn handle_events(&mut self, link: &ComponentLink) -> Flow<()> {
        while let Some(event) = self.events.pop_front() {
            match event {
                StreamEvent::Stanza(el) => self.handle_element(link, el).await?,
                StreamEvent::Close => return Err(End::PeerClosed),
                StreamEvent::Open(_) => return Err(stream_error("invalid-xml")),
            }
        }
        self.flush().await
    }

    /// XEP-0114 §3: a component's stanzas state `from` (at its domain) and `to`.
    async fn handle_element(&mut self, link: &ComponentLink, el: Element) -> Flow<()> {
        let el = move_namespace(el, ns::COMPONENT, ns::CLIENT);
        let stanza = match Stanza::from_element(el, ns::CLIENT) {
            Ok(stanza) => stanza,
            Err(EnvelopeError::NotAStanza(what)) => return Err(End::Error("unsupported-stanza-type", Some(what))),
            Err(EnvelopeError::Bad(err, el)) => {
                // The error goes straight back: its `from` may not even parse.
                let sender = Jid::new(&link.domain).expect("a configured domain");
                if let Some(reply) = error_reply_to_element(*el, &err, &sender) {
                    self.queue_stanza(reply);
                }
                return Ok(());
            }
        };
        match (&stanza.from, &stanza.to) {
            (Some(from), Some(_)) if from.domain().as_str() == link.domain => {}
            (Some(_), Some(_)) => return Err(stream_error("invalid-from")),
            // RFC 6120 §4.9.3.14: both addresses are required between servers.
            _ => return Err(stream_error("improper-addressing")),
        }
        self.server.deliver(stanza).await;
        Ok(())
    }
}

/// An unguessable stream id: the handshake hashes it, so it must not repeat.
fn stream_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_digest_is_lowercase_hex_sha1_of_id_then_secret() {
        // XEP-0114 §3 algorithm; expected value from Python's
        // hashlib.sha1(b"3BF96D32secret").hexdigest().
        assert_eq!(handshake_digest("3BF96D32", "secret"), "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136");
    }
}
