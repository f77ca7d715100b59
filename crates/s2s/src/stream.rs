//! One server-to-server connection as XML: the byte stream (plain TCP, then
//! TLS as client or server), the incremental parser, and a write buffer.

use rustls_pki_types::{CertificateDer, ServerName};
use starling_proto::{ns, Element};
use starling_xmlstream::{escape_attr, write_element, Limits, StreamEvent, StreamParser};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

pub(crate) const NS_DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 §2.2: dialback offered as a stream feature.
pub(crate) const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

const READ_BUFFER: usize = 4096;

/// Why a stream ends.
#[derive(Debug)]
pub(crate) enum End {
    /// Send this RFC 6120 §4.9.3 stream error, then close.
    Error(&'static str, Option<String>),
    /// The peer closed its stream: answer with ours.
    PeerClosed,
    /// We close without an error (idle, done verifying).
    Done,
    /// The socket failed or hit EOF.
    Gone,
}

pub(crate) type Flow<T> = Result<T, End>;

pub(crate) fn stream_error(condition: &'static str) -> End {
    End::Error(condition, None)
}

pub(crate) fn stream_error_text(condition: &'static str, text: impl Into<String>) -> End {
    End::Error(condition, Some(text.into()))
}

enum Io {
    Plain(TcpStream),
    Client(Box<client::TlsStream<TcpStream>>),
    Server(Box<server::TlsStream<TcpStream>>),
    /// Only while STARTTLS swaps one for the other.
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "transport is being upgraded")
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Client(s) => Pin::new(s).poll_read(cx, buf),
            Io::Server(s) => Pin::new(s).poll_read(cx, buf),
            Io::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Client(s) => Pin::new(s).poll_write(cx, buf),
            Io::Server(s) => Pin::new(s).poll_write(cx, buf),
            Io::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Client(s) => Pin::new(s).poll_flush(cx),
            Io::Server(s) => Pin::new(s).poll_flush(cx),
            Io::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Client(s) => Pin::new(s).poll_shutdown(cx),
            Io::Server(s) => Pin::new(s).poll_shutdown(cx),
            Io::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

pub(crate) struct XmlStream {
    io: Io,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    read_buf: Box<[u8]>,
    write_buf: Vec<u8>,
    pub peer: SocketAddr,
    header_sent: bool,
}

impl XmlStream {
    pub fn new(tcp: TcpStream, peer: SocketAddr, limits: Limits) -> Self {
        let _ = tcp.set_nodelay(true);
        XmlStream {
            io: Io::Plain(tcp),
            parser: StreamParser::new(limits),
            events: VecDeque::new(),
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            write_buf: Vec::new(),
            peer,
            header_sent: false,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Client(_) | Io::Server(_))
    }

    /// The certificate chain the peer presented, leaf first.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.io {
            Io::Client(s) => s.get_ref().1.peer_certificates(),
            Io::Server(s) => s.get_ref().1.peer_certificates(),
            _ => None,
        }
    }

    /// The next event; the peer's `</stream:stream>` is [`End::PeerClosed`].
    pub async fn next(&mut self) -> Flow<StreamEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return match event {
                    StreamEvent::Close => Err(End::PeerClosed),
                    event => Ok(event),
                };
            }
            self.read().await?;
        }
    }

    /// The next top-level element, for negotiation steps.
    pub async fn next_element(&mut self) -> Flow<Element> {
        match self.next().await? {
            StreamEvent::Stanza(el) => Ok(el),
            StreamEvent::Open(_) => Err(stream_error("invalid-xml")),
            StreamEvent::Close => Err(End::PeerClosed),
        }
    }

    /// An event already parsed, without reading.
    pub fn buffered(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// Reads once and parses what came. Cancel-safe (one socket read).
    pub async fn read(&mut self) -> Flow<()> {
        let n = self.io.read(&mut self.read_buf).await.map_err(|_| End::Gone)?;
        if n == 0 {
            return Err(End::Gone);
        }
        let events = self.parser.feed(&self.read_buf[..n]).map_err(|e| {
            tracing::debug!(peer = %self.peer, error = %e, "stream error from server input");
            End::Error(e.condition(), Some(e.to_string()))
        })?;
        self.events.extend(events);
        Ok(())
    }

    /// Our stream header (RFC 6120 §4.7) in `jabber:server`, declaring the
    /// dialback prefix (XEP-0220 §2.1: how older peers learn we support it).
    pub fn send_header(&mut self, from: &str, to: Option<&str>, id: Option<&str>) {
        let mut header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' xmlns:db='{NS_DIALBACK}' from='{}'",
            ns::SERVER,
            ns::STREAMS,
            escape_attr(from)
        );
        for (name, value) in [("to", to), ("id", id)] {
            if let Some(value) = value {
                header.push_str(&format!(" {name}='{}'", escape_attr(value)));
            }
        }
        header.push_str(" version='1.0'>");
        self.write_buf.extend_from_slice(header.as_bytes());
        self.header_sent = true;
    }

    pub fn queue(&mut self, el: &Element) {
        if el.has_ns(NS_DIALBACK) {
            self.queue_dialback(el);
        } else {
            write_element(el, &mut self.write_buf);
        }
    }

    /// XEP-0220 elements, with the `db:` prefix our header declares: some
    /// peers (ejabberd) know them by that prefixed name, not by namespace.
    fn queue_dialback(&mut self, el: &Element) {
        let out = &mut self.write_buf;
        out.extend_from_slice(b"<db:");
        out.extend_from_slice(el.name().as_bytes());
        for name in ["from", "to", "id", "type"] {
            if let Some(value) = el.attr(name) {
                out.extend_from_slice(format!(" {name}='{}'", escape_attr(value)).as_bytes());
            }
        }
        out.push(b'>');
        // The key, or an error (XEP-0220 §2.4).
        out.extend_from_slice(escape_attr(&el.text()).as_bytes());
        for child in el.children() {
            write_element(child, out);
        }
        out.extend_from_slice(b"</db:");
        out.extend_from_slice(el.name().as_bytes());
        out.push(b'>');
    }

    pub async fn flush(&mut self) -> Flow<()> {
        if !self.write_buf.is_empty() {
            self.io.write_all(&self.write_buf).await.map_err(|_| End::Gone)?;
            self.io.flush().await.map_err(|_| End::Gone)?;
            self.write_buf.clear();
        }
        Ok(())
    }

    /// Expects a new stream header (after TLS or SASL, RFC 6120 §4.3.3).
    pub fn restart(&mut self) {
        self.parser.reset();
        self.events.clear();
    }

    pub async fn tls_client(&mut self, config: Arc<rustls::ClientConfig>, domain: &str) -> Flow<()> {
        let name = ServerName::try_from(domain.to_owned()).map_err(|_| stream_error("host-unknown"))?;
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Upgrading) else { return Err(End::Gone) };
        let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| {
            tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
            End::Gone
        })?;
        self.io = Io::Client(Box::new(tls));
        self.restart();
        Ok(())
    }

    pub async fn tls_server(&mut self, config: Arc<rustls::ServerConfig>) -> Flow<()> {
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Upgrading) else { return Err(End::Gone) };
        let tls = TlsAcceptor::from(config).accept(tcp).await.map_err(|e| {
            tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
            End::Gone
        })?;
        self.io = Io::Server(Box::new(tls));
        self.restart();
        Ok(())
    }

    /// Sends the stream error of `end` (opening our stream first if needed,
    /// RFC 6120 §4.9.1.2) and our closing, then closes the connection.
    pub async fn close(mut self, end: End, host: &str) {
        if matches!(end, End::Gone) {
            return;
        }
        if !self.header_sent {
            self.send_header(host, None, Some(&stream_id()));
        }
        if let End::Error(condition, text) = end {
            tracing::debug!(peer = %self.peer, condition, "closing server stream with error");
            write_element(&starling_proto::xml::stream_error(condition, text.as_deref()), &mut self.write_buf);
        }
        self.write_buf.extend_from_slice(b"</stream:stream>");
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.flush().await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }
}

/// An unguessable stream id: dialback keys are made from it.
pub(crate) fn stream_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
