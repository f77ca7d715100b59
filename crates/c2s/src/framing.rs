//! How XML reaches a client session. A framing carries elements both ways:
//! a TCP stream with STARTTLS or direct TLS (`tcp.rs`), RFC 7395 WebSocket
//! or XEP-0206 BOSH (the `http` crate). Stream negotiation and the bound
//! session are written once against this trait, so every limit and error
//! rule holds the same on every transport.

use starling_proto::Element;
use starling_sasl::ChannelBindings;
use starling_xmlstream::StreamEvent;
use std::future::Future;
use std::net::SocketAddr;

/// Why a stream ends.
#[derive(Debug)]
pub enum End {
    /// Send this RFC 6120 §4.9.3 stream error, then close.
    Error(Box<StreamFailure>),
    /// The client closed its stream: answer with ours.
    PeerClosed,
    /// The connection failed or hit EOF: nothing more can be sent.
    Gone,
}

/// A stream error to send: the condition, an optional text and an optional
/// application-specific condition (XEP-0198's `<handled-count-too-high/>`).
#[derive(Debug)]
pub struct StreamFailure {
    pub condition: &'static str,
    pub text: Option<String>,
    pub app: Option<Element>,
}

impl End {
    pub fn error(condition: &'static str) -> Self {
        End::Error(Box::new(StreamFailure { condition, text: None, app: None }))
    }

    pub fn error_text(condition: &'static str, text: impl Into<String>) -> Self {
        End::Error(Box::new(StreamFailure { condition, text: Some(text.into()), app: None }))
    }

    /// The `<stream:error/>` element to send, if the stream ends with one.
    pub fn to_element(&self) -> Option<Element> {
        let End::Error(failure) = self else { return None };
        let mut error = starling_proto::xml::stream_error(failure.condition, failure.text.as_deref());
        if let Some(app) = &failure.app {
            error.append_child(app.clone());
        }
        Some(error)
    }
}

pub type Flow<T> = Result<T, End>;

/// The synchronous half of a framing: buffering elements for the client.
/// Handlers of stream-level elements (stream management, CSI) write through
/// it without knowing the transport.
pub trait Sink {
    fn queue(&mut self, el: &Element);
}

/// One client connection's transport. Events come in as
/// [`StreamEvent::Open`] (a stream header, a WebSocket `<open/>` or a BOSH
/// session start/restart), [`StreamEvent::Stanza`] (any top-level element)
/// and [`StreamEvent::Close`].
pub trait Framing: Sink + Send + 'static {
    /// The next event from the client. Cancel-safe: a bound session waits
    /// on it in a `select!` beside its queue.
    fn next_event(&mut self) -> impl Future<Output = Flow<StreamEvent>> + Send;
    /// An event already read and not yet taken, without waiting (so a burst
    /// read at once is answered with one write).
    fn buffered_event(&mut self) -> Option<StreamEvent>;
    /// Writes what was queued.
    fn flush(&mut self) -> impl Future<Output = Flow<()>> + Send;
    /// Our side of the stream opening (RFC 6120 §4.7, RFC 7395 §3.3.2).
    fn open_stream(&mut self, from: &str, to: Option<&str>, id: &str);
    /// Whether our side of the stream is open (a stream error needs one).
    fn stream_open(&self) -> bool;
    /// Sends the stream error of `end` (if any) and our closing, then
    /// closes the connection.
    fn close(self, end: &End) -> impl Future<Output = ()> + Send;
    /// Expects a new stream opening from the client (after STARTTLS or SASL
    /// success, RFC 6120 §4.3.3).
    /// Framings whose elements arrive whole (WebSocket, BOSH) keep no
    /// stream state to reset.
    fn restart(&mut self) {}
    fn peer(&self) -> SocketAddr;
    /// Confidentiality is in place (TLS here or at a trusted proxy).
    fn is_secure(&self) -> bool;
    /// What SCRAM-PLUS can bind to: nothing unless the framing terminates
    /// TLS itself (HTTP transports share hyper's or a proxy's).
    fn channel_bindings(&self) -> ChannelBindings {
        ChannelBindings::default()
    }
    /// Whether `<starttls/>` can be offered (plain TCP only).
    fn can_starttls(&self) -> bool {
        false
    }
    /// Upgrades to TLS after `<proceed/>` was sent (RFC 6120 §5.4.3.3).
    fn starttls(&mut self) -> impl Future<Output = Flow<()>> + Send {
        async { Err(End::Gone) }
    }
}
