//! The TCP framing (RFC 6120 §4): one XML stream per direction over a
//! socket, plain until STARTTLS or TLS from the first byte (XEP-0368).

use crate::framing::{End, Flow, Framing, Sink};
use crate::tls::TlsContext;
use crate::transport::Transport;
use starling_core::config::LimitsConfig;
use starling_proto::{ns, Element};
use starling_sasl::ChannelBindings;
use starling_xmlstream::{stream_header, write_element, Limits, StreamEvent, StreamParser};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READ_BUFFER: usize = 4096;
/// Write buffer capacity kept between flushes.
const WRITE_BUFFER_KEEP: usize = 16 * 1024;

pub(crate) struct TcpFraming {
    tls: Arc<TlsContext>,
    io: Transport,
    peer: SocketAddr,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    read_buf: Box<[u8]>,
    write_buf: Vec<u8>,
    header_sent: bool,
}

/// The stream parser limits of client streams, whatever their framing.
pub fn parser_limits(limits: &LimitsConfig) -> Limits {
    Limits {
        max_stanza_bytes: limits.max_stanza_bytes,
        max_depth: limits.max_depth,
        max_attributes: limits.max_attributes,
        ..Limits::default()
    }
}

/// The stream error for input the parser refused (RFC 6120 §4.9.3).
pub fn parse_failure(peer: SocketAddr, e: starling_xmlstream::StreamError) -> End {
    tracing::debug!(%peer, error = %e, "stream error from client input");
    End::error_text(e.condition(), e.to_string())
}

impl TcpFraming {
    pub(crate) fn new(tls: Arc<TlsContext>, io: Transport, peer: SocketAddr, limits: &LimitsConfig) -> Self {
        TcpFraming {
            tls,
            io,
            peer,
            parser: StreamParser::new(parser_limits(limits)),
            events: VecDeque::new(),
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            write_buf: Vec::new(),
            header_sent: false,
        }
    }
}

impl Sink for TcpFraming {
    fn queue(&mut self, el: &Element) {
        write_element(el, &mut self.write_buf);
    }
}

impl Framing for TcpFraming {
    async fn next_event(&mut self) -> Flow<StreamEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            // Cancel-safe: bytes are only consumed once read returns.
            let n = self.io.read(&mut self.read_buf).await.map_err(|_| End::Gone)?;
            if n == 0 {
                return Err(End::Gone);
            }
            let events = self.parser.feed(&self.read_buf[..n]).map_err(|e| parse_failure(self.peer, e))?;
            self.events.extend(events);
        }
    }

    fn buffered_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
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

    fn open_stream(&mut self, from: &str, to: Option<&str>, id: &str) {
        self.write_buf.extend_from_slice(stream_header(ns::CLIENT, from, to, id).as_bytes());
        self.header_sent = true;
    }

    fn stream_open(&self) -> bool {
        self.header_sent
    }

    async fn close(mut self, end: &End) {
        if matches!(end, End::Gone) {
            return;
        }
        if let Some(error) = end.to_element() {
            self.queue(&error);
        }
        self.write_buf.extend_from_slice(b"</stream:stream>");
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.flush().await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    fn restart(&mut self) {
        self.parser.reset();
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn is_secure(&self) -> bool {
        self.io.is_tls()
    }

    fn channel_bindings(&self) -> ChannelBindings {
        self.io.tls().map(|c| self.tls.bindings(c)).unwrap_or_default()
    }

    fn can_starttls(&self) -> bool {
        !self.io.is_tls()
    }

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
        // Anything sent in the clear after <starttls/> is discarded (an
        // injection would otherwise pass as encrypted, RFC 6120 §5.4.3.3).
        self.events.clear();
        self.restart();
        self.header_sent = false;
        Ok(())
    }
}
