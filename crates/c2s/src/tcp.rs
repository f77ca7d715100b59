//! The TCP framing (RFC 6120 §4): one XML stream per direction over a
//! socket, plain until STARTTLS or TLS from the first byte (XEP-0368).

use crate::framing::{End, Flow, Framing, Sink};
use crate::tls::TlsContext;
use crate::transport::Transport;
use starling_core::config::LimitsConfig;
use starling_proto::{ns, Element};
use starling_sasl::ChannelBindings;
use starling_xmlstream::{stream_header, write_element, Limits, StreamEvent, StreamParser};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

const READ_BUFFER: usize = 4096;

thread_local! {
    /// One read buffer per runtime thread, shared by the connections polled
    /// on it: what a read returns is parsed within the same poll, so the
    /// buffer holds nothing between polls and an idle connection — almost
    /// every connection, almost all the time — needs none of its own.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUFFER].into_boxed_slice());
}

pub(crate) struct TcpFraming {
    tls: Arc<TlsContext>,
    io: Transport,
    peer: SocketAddr,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
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
            write_buf: Vec::new(),
            header_sent: false,
        }
    }
}

impl TcpFraming {
    /// Reads once into the thread's buffer and parses what came. Bytes are
    /// consumed only when the read completes, in this poll: cancel-safe.
    fn poll_read_events(&mut self, cx: &mut Context<'_>) -> Poll<Flow<()>> {
        READ_BUF.with_borrow_mut(|buf| {
            let mut read = ReadBuf::new(buf);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(_)) => Poll::Ready(Err(End::Gone)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Err(End::Gone)),
                Poll::Ready(Ok(())) => {
                    let events = self.parser.feed(read.filled()).map_err(|e| parse_failure(self.peer, e))?;
                    // Reuses the Vec's allocation; freed in pop_event once drained.
                    self.events = events.into();
                    // The next read may be minutes away: rxml's token buffer
                    // (4 KiB reserved) is taken again by the next token.
                    self.parser.release_buffers();
                    Poll::Ready(Ok(()))
                }
            }
        })
    }

    /// The next parsed event; the queue's allocation goes with the last one.
    fn pop_event(&mut self) -> Option<StreamEvent> {
        let event = self.events.pop_front();
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        event
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
            if let Some(event) = self.pop_event() {
                return Ok(event);
            }
            std::future::poll_fn(|cx| self.poll_read_events(cx)).await?;
        }
    }

    fn buffered_event(&mut self) -> Option<StreamEvent> {
        self.pop_event()
    }

    async fn flush(&mut self) -> Flow<()> {
        if !self.write_buf.is_empty() {
            self.io.write_all(&self.write_buf).await.map_err(|_| End::Gone)?;
            // Freed, not kept: most connections are idle after a write, and
            // an allocation per write costs little next to the syscall.
            self.write_buf = Vec::new();
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
        self.events = VecDeque::new();
        self.restart();
        self.header_sent = false;
        Ok(())
    }
}
