//! RFC 7395: XMPP over WebSocket. Every text message is one complete
//! element; the stream is opened and closed with `<open/>` and `<close/>`
//! of the framing namespace instead of `<stream:stream>`.

use crate::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use starling_c2s::{parse_failure, parser_limits, End, Flow, Framing, Sink};
use starling_proto::{ns, Element};
use starling_xmlstream::{escape_attr, write_element, StreamEvent, StreamHeader, StreamParser, NS_STREAMS};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

/// RFC 7395 §3.3.1.
pub(crate) const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// RFC 7395 §3.1.
const SUBPROTOCOL: &str = "xmpp";
/// Bytes read from the socket at a time. tungstenite's default buffer
/// (128 KiB) is zeroed at the first read: 128 KiB of RSS per idle
/// connection (`bench/transports`); larger messages still grow it.
const READ_BUFFER: usize = 4096;

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    // RFC 7395 §3.2: without the "xmpp" subprotocol there is no XMPP session.
    let offered = ws
        .requested_protocols()
        .any(|p| p.to_str().is_ok_and(|list| list.split(',').any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL))));
    if !offered {
        return (StatusCode::BAD_REQUEST, "the WebSocket subprotocol \"xmpp\" is required (RFC 7395 §3.2)\n")
            .into_response();
    }
    let shared = state.shared.clone();
    let limits = &shared.service.server.config.limits;
    // The parser enforces the stanza limit with a policy-violation; the
    // socket only cuts off messages far past it.
    let max_message = 2 * limits.max_stanza_bytes + 4096;
    let ping = match shared.config().websocket_ping_secs {
        0 => None,
        secs => Some(Duration::from_secs(secs)),
    };
    let ws = ws.protocols([SUBPROTOCOL]).read_buffer_size(READ_BUFFER);
    ws.max_message_size(max_message).max_frame_size(max_message).on_upgrade(move |socket| {
        let token = shared.sessions.token();
        async move {
            let framing = WsFraming::new(socket, peer, state.secure, ping, &shared.service.server.config.limits);
            shared.service.run(framing).await;
            drop(token);
        }
    })
}

pub(crate) struct WsFraming {
    /// Only ever reached through `get_mut` (no locking): the Mutex makes
    /// the framing `Sync`, which the session's `&self` futures need and
    /// hyper's upgraded connection is not.
    socket: std::sync::Mutex<WebSocket>,
    peer: SocketAddr,
    secure: bool,
    ping: Option<Duration>,
    /// Fed a synthetic stream header once, then every message: so each
    /// element gets the stream limits and the content namespace.
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    out: Vec<String>,
    opened: bool,
}

impl WsFraming {
    fn new(
        socket: WebSocket,
        peer: SocketAddr,
        secure: bool,
        ping: Option<Duration>,
        limits: &starling_core::config::LimitsConfig,
    ) -> Self {
        let mut parser = StreamParser::new(parser_limits(limits));
        let header = format!("<stream:stream xmlns='{}' xmlns:stream='{NS_STREAMS}'>", ns::CLIENT);
        let opened = parser.feed(header.as_bytes()).expect("the synthetic header parses");
        debug_assert!(matches!(opened.as_slice(), [StreamEvent::Open(_)]));
        WsFraming {
            socket: std::sync::Mutex::new(socket),
            peer,
            secure,
            ping,
            parser,
            events: VecDeque::new(),
            out: Vec::new(),
            opened: false,
        }
    }

    /// One text message: exactly one complete element (RFC 7395 §3.3.3).
    fn message(&mut self, text: &str) -> Flow<()> {
        if text.trim().is_empty() {
            // Not an element, but harmless (some clients send keepalives).
            return Ok(());
        }
        if !text.trim_start().starts_with('<') {
            return Err(End::error_text("not-well-formed", "a message must be one XML element (RFC 7395 §3.3.3)"));
        }
        let mut events = self.parser.feed(text.as_bytes()).map_err(|e| parse_failure(self.peer, e))?;
        let Some(StreamEvent::Stanza(el)) = events.pop().filter(|_| events.is_empty()) else {
            return Err(End::error_text(
                "not-well-formed",
                "a message must be exactly one complete element (RFC 7395 §3.3.3)",
            ));
        };
        self.events.push_back(framing_event(el));
        Ok(())
    }
}

/// `<open/>` and `<close/>` become the stream events a stream header and
/// `</stream:stream>` are on TCP.
fn framing_event(el: Element) -> StreamEvent {
    if el.is("open", NS_FRAMING) {
        let attr = |name: &str| el.attr(name).map(str::to_owned);
        StreamEvent::Open(StreamHeader {
            to: attr("to"),
            from: attr("from"),
            id: None,
            version: attr("version"),
            lang: None,
            content_ns: ns::CLIENT.to_owned(),
        })
    } else if el.is("close", NS_FRAMING) {
        StreamEvent::Close
    } else {
        StreamEvent::Stanza(el)
    }
}

impl WsFraming {
    fn socket(&mut self) -> &mut WebSocket {
        self.socket.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Sink for WsFraming {
    fn queue(&mut self, el: &Element) {
        // Self-contained: the top element declares its namespace
        // (`jabber:client` for stanzas), as RFC 7395 §3.3.3 requires.
        let mut bytes = Vec::with_capacity(256);
        write_element(el, &mut bytes);
        self.out.push(String::from_utf8(bytes).expect("the serialiser writes UTF-8"));
    }
}

impl Framing for WsFraming {
    async fn next_event(&mut self) -> Flow<StreamEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            let received = match self.ping {
                Some(every) => match tokio::time::timeout(every, self.socket().recv()).await {
                    Ok(received) => received,
                    Err(_) => {
                        // A quiet connection: our ping keeps proxies from
                        // dropping it and finds dead peers; the pong (or
                        // anything) counts as a sign of life below.
                        self.socket().send(Message::Ping(Default::default())).await.map_err(|_| End::Gone)?;
                        continue;
                    }
                },
                None => self.socket().recv().await,
            };
            match received {
                Some(Ok(Message::Text(text))) => self.message(text.as_str())?,
                Some(Ok(Message::Binary(_))) => {
                    return Err(End::error_text("unsupported-encoding", "binary messages are not XMPP (RFC 7395 §3.2)"))
                }
                // Pings are answered by the WebSocket layer.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // A close without <close/> is a lost connection (resumable).
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err(End::Gone),
            }
        }
    }

    fn buffered_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    async fn flush(&mut self) -> Flow<()> {
        for frame in std::mem::take(&mut self.out) {
            self.socket().feed(Message::Text(frame.into())).await.map_err(|_| End::Gone)?;
        }
        self.socket().flush().await.map_err(|_| End::Gone)
    }

    fn open_stream(&mut self, from: &str, to: Option<&str>, id: &str) {
        // RFC 7395 §3.3.2.
        let to = to.map(|to| format!(" to='{}'", escape_attr(to))).unwrap_or_default();
        self.out.push(format!(
            "<open xmlns='{NS_FRAMING}' from='{}'{to} id='{}' version='1.0' xml:lang='en'/>",
            escape_attr(from),
            escape_attr(id)
        ));
        self.opened = true;
    }

    fn stream_open(&self) -> bool {
        self.opened
    }

    async fn close(mut self, end: &End) {
        if matches!(end, End::Gone) {
            return;
        }
        if let Some(error) = end.to_element() {
            self.queue(&error);
        }
        // RFC 7395 §3.6: <close/>, then the WebSocket closing handshake.
        self.out.push(format!("<close xmlns='{NS_FRAMING}'/>"));
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.flush().await;
            let _ = self.socket().send(Message::Close(None)).await;
        })
        .await;
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn is_secure(&self) -> bool {
        self.secure
    }
}
