//! XEP-0124 BOSH carrying XEP-0206 XMPP: each session is a client stream
//! run by `ClientService` over a [`BoshFraming`]; HTTP requests feed it
//! through a channel and take what it wrote from the session's outbox,
//! answering in request-id order.

use crate::{cors, AppState};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use starling_c2s::{parser_limits, End, Flow, Framing, Sink};
use starling_core::config::LimitsConfig;
use starling_proto::minidom::Node;
use starling_proto::{ns, Element};
use starling_xmlstream::{escape_attr, write_element, StreamEvent, StreamHeader, StreamParser, NS_STREAMS};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// XEP-0206 §3.
const NS_XBOSH: &str = "urn:xmpp:xbosh";
/// Seconds a client should leave between polls when nothing is held (XEP-0124 §7.1 `polling`).
const POLLING_SECS: u64 = 2;
/// Stream events queued towards a session task.
const EVENT_QUEUE: usize = 256;

/// The largest request body: one stanza at the limit plus its `<body/>`.
pub(crate) fn max_body_bytes(limits: &LimitsConfig) -> usize {
    limits.max_stanza_bytes + 16 * 1024
}

/// Live BOSH sessions by sid.
#[derive(Default)]
pub(crate) struct Registry {
    sessions: DashMap<String, Arc<Session>>,
}

struct Session {
    sid: String,
    /// The host this session is for (`to` of the creation request).
    host: String,
    wait: Duration,
    hold: usize,
    /// Size of the request-id window (XEP-0124 §14.2: `requests`).
    window: u64,
    inactivity: Duration,
    events: mpsc::Sender<Flow<StreamEvent>>,
    state: Mutex<SessionState>,
    /// Woken when `next_rid` moves, for requests that came out of order.
    rid_moved: Notify,
}

struct SessionState {
    next_rid: u64,
    /// Requests waiting for something to send, oldest first.
    held: VecDeque<Held>,
    /// Serialised elements not yet sent.
    outbox: Vec<u8>,
    /// The session is over: `Some(condition)` of the terminating body.
    ended: Option<Option<&'static str>>,
    /// Recent responses by rid, for a client that sends a request again
    /// after losing its response (XEP-0124 §14.3).
    answered: BTreeMap<u64, String>,
    /// When the last request was answered or received: the session is
    /// idle from then on if nothing is held.
    last_activity: Instant,
    /// The first response carries the session attributes (XEP-0124 §7.1).
    created: Option<String>,
}

struct Held {
    rid: u64,
    reply: oneshot::Sender<String>,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionState {
    /// Answers the oldest held request with everything pending.
    fn answer_oldest(&mut self, window: u64) {
        let Some(held) = self.held.pop_front() else { return };
        let mut body = String::from("<body xmlns='");
        body.push_str(NS_HTTPBIND);
        body.push_str("' xmlns:stream='");
        body.push_str(NS_STREAMS);
        body.push('\'');
        if let Some(attrs) = self.created.take() {
            body.push_str(&attrs);
        }
        if let Some(ended) = self.ended {
            body.push_str(" type='terminate'");
            if let Some(condition) = ended {
                body.push_str(" condition='");
                body.push_str(condition);
                body.push('\'');
            }
        }
        if self.outbox.is_empty() {
            body.push_str("/>");
        } else {
            body.push('>');
            body.push_str(std::str::from_utf8(&self.outbox).expect("the serialiser writes UTF-8"));
            body.push_str("</body>");
            self.outbox.clear();
        }
        self.answered.insert(held.rid, body.clone());
        while self.answered.len() as u64 > window {
            self.answered.pop_first();
        }
        self.last_activity = Instant::now();
        let _ = held.reply.send(body);
    }

    /// Answers held requests while there is something to send or too many
    /// are held (XEP-0124 §11: at most `hold`).
    fn pump(&mut self, hold: usize, window: u64) {
        while !self.held.is_empty() && (!self.outbox.is_empty() || self.ended.is_some()) {
            self.answer_oldest(window);
        }
        while self.held.len() > hold {
            self.answer_oldest(window);
        }
    }
}

/// A `<body/>` parsed with the stream limits (one level deeper for the
/// wrapper), or `None` for anything else.
fn parse_body(data: &[u8], limits: &LimitsConfig) -> Option<Element> {
    let mut body_limits = parser_limits(limits);
    body_limits.max_stanza_bytes = max_body_bytes(limits);
    body_limits.max_depth += 1;
    let mut parser = StreamParser::new(body_limits);
    let header = format!("<stream:stream xmlns='{NS_HTTPBIND}' xmlns:stream='{NS_STREAMS}'>");
    parser.feed(header.as_bytes()).ok()?;
    let mut events = parser.feed(data).ok()?;
    match events.pop() {
        Some(StreamEvent::Stanza(el)) if events.is_empty() && el.is("body", NS_HTTPBIND) => Some(el),
        _ => None,
    }
}

/// XEP-0206 §6 wants stanzas qualified by `jabber:client`; one that is not
/// inherits the wrapper's namespace, which (like other servers) we read as
/// the content namespace it would have on a stream.
fn client_ns(el: Element) -> Element {
    if !el.has_ns(NS_HTTPBIND) {
        return el;
    }
    let mut out = Element::bare(el.name(), ns::CLIENT);
    for ((attr_ns, name), value) in el.attrs().iter() {
        out.attrs_mut().insert(attr_ns.clone(), name.clone(), value.clone());
    }
    for node in el.nodes() {
        match node {
            Node::Element(child) => {
                out.append_child(client_ns(child.clone()));
            }
            Node::Text(text) => out.append_text_node(text.clone()),
        }
    }
    out
}

/// A terminating body that belongs to no session (XEP-0124 §17: HTTP 200,
/// the condition says what went wrong).
fn terminate(condition: &str) -> String {
    format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='{condition}'/>")
}

fn respond(state: &AppState, headers: &HeaderMap, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
    response.headers_mut().extend(cors(state.shared.config(), headers));
    response
}

/// CORS preflight for browser clients (XEP-0124 §4 allows cross-domain use).
pub(crate) async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().extend(cors(state.shared.config(), &headers));
    response
}

pub(crate) async fn request(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    data: Bytes,
) -> Response {
    let body = handle(&state, peer, &data).await;
    respond(&state, &headers, body)
}

async fn handle(state: &AppState, peer: SocketAddr, data: &[u8]) -> String {
    let shared = &state.shared;
    let limits = &shared.service.server.config.limits;
    if data.len() > max_body_bytes(limits) {
        return terminate("policy-violation");
    }
    let Some(body) = parse_body(data, limits) else {
        return terminate("bad-request");
    };
    let Some(rid) = body.attr("rid").and_then(|r| r.parse::<u64>().ok()) else {
        return terminate("bad-request");
    };
    let Some(sid) = body.attr("sid") else {
        return create(state, peer, rid, &body).await;
    };
    // Cloned out of the map: no shard lock is held while waiting.
    let Some(session) = shared.bosh.sessions.get(sid).map(|s| s.clone()) else {
        return terminate("item-not-found");
    };
    match session_request(&session, rid, body).await {
        Ok(reply) => reply,
        Err(condition) => {
            end(&shared.bosh, &session, condition);
            terminate(condition)
        }
    }
}

/// Ends a session from the HTTP side: held requests get the terminating
/// body and the session task sees its connection lost.
fn end(registry: &Registry, session: &Session, condition: &'static str) {
    registry.sessions.remove(&session.sid);
    let mut state = session.lock();
    state.ended.get_or_insert(Some(condition));
    state.pump(session.hold, session.window);
    drop(state);
    // If the queue is full the session is busy; inactivity ends it then.
    let _ = session.events.try_send(Err(End::Gone));
}

/// Session creation (XEP-0124 §7.1, XEP-0206 §4).
async fn create(state: &AppState, peer: SocketAddr, rid: u64, body: &Element) -> String {
    let shared = &state.shared;
    let config = shared.config();
    let server = &shared.service.server;
    let Some(host) = body.attr("to").filter(|to| server.config.is_local_host(to)) else {
        return terminate("host-unknown");
    };
    if shared.bosh.sessions.len() >= config.bosh_max_sessions {
        tracing::warn!(%peer, "BOSH session limit reached");
        return terminate("policy-violation");
    }
    let wait = body.attr("wait").and_then(|w| w.parse().ok()).unwrap_or(u64::MAX).min(config.bosh_max_wait_secs);
    let hold = body.attr("hold").and_then(|h| h.parse().ok()).unwrap_or(1).min(config.bosh_max_hold);
    let inactivity = config.bosh_inactivity_secs;
    let sid = random_sid();
    let attrs = format!(
        " sid='{sid}' wait='{wait}' requests='{requests}' hold='{hold}' inactivity='{inactivity}' \
         polling='{POLLING_SECS}' ver='1.11' from='{from}' secure='{secure}' xmlns:xmpp='{NS_XBOSH}' \
         xmpp:version='1.0' xmpp:restartlogic='true'",
        requests = hold + 1,
        from = escape_attr(host),
        secure = state.secure,
    );
    let (events, rx) = mpsc::channel(EVENT_QUEUE);
    let session = Arc::new(Session {
        sid: sid.clone(),
        host: host.to_owned(),
        wait: Duration::from_secs(wait),
        hold: hold as usize,
        window: u64::from(hold) + 1,
        inactivity: Duration::from_secs(inactivity),
        events,
        state: Mutex::new(SessionState {
            next_rid: rid.wrapping_add(1),
            held: VecDeque::new(),
            outbox: Vec::new(),
            ended: None,
            answered: BTreeMap::new(),
            last_activity: Instant::now(),
            created: Some(attrs),
        }),
        rid_moved: Notify::new(),
    });
    shared.bosh.sessions.insert(sid.clone(), session.clone());
    tracing::debug!(%peer, %sid, "BOSH session created");
    let framing = BoshFraming {
        session: session.clone(),
        registry: shared.bosh.clone(),
        events: rx,
        pending_end: None,
        out: Vec::new(),
        opened: false,
        peer,
        secure: state.secure,
    };
    let service = shared.service.clone();
    shared.sessions.spawn(async move { service.run(framing).await });
    // XEP-0206 §4: the creation request opens the stream; its response
    // carries the stream features.
    let open = StreamEvent::Open(header(&session));
    if session.events.send(Ok(open)).await.is_err() {
        return terminate("undefined-condition");
    }
    wait_for_answer(&session, rid).await
}

fn header(session: &Session) -> StreamHeader {
    StreamHeader {
        to: Some(session.host.clone()),
        version: Some("1.0".into()),
        content_ns: ns::CLIENT.to_owned(),
        ..StreamHeader::default()
    }
}

fn random_sid() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..32).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// A request of an existing session; `Err(condition)` ends the session.
async fn session_request(session: &Arc<Session>, rid: u64, mut body: Element) -> Result<String, &'static str> {
    let deadline = Instant::now() + session.wait;
    // XEP-0124 §14: requests are handled in rid order, within the window.
    loop {
        let notified = session.rid_moved.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = session.lock();
            let next = state.next_rid;
            if rid == next {
                state.next_rid = next.wrapping_add(1);
                state.last_activity = Instant::now();
                break;
            }
            if rid < next {
                // §14.3: a request sent again gets its response again.
                if let Some(answer) = state.answered.get(&rid) {
                    return Ok(answer.clone());
                }
                return Err("item-not-found");
            }
            if rid - next >= session.window {
                return Err("item-not-found");
            }
        }
        // An earlier request is still on its way.
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err("item-not-found");
        }
    }
    session.rid_moved.notify_waiters();
    let restart = body.attr_ns(NS_XBOSH, "restart") == Some("true");
    let terminating = body.attr("type") == Some("terminate");
    let mut events: Vec<StreamEvent> =
        body.take_contents_as_children().map(|el| StreamEvent::Stanza(client_ns(el))).collect();
    // XEP-0206 §5: a restart request replaces the stream header.
    if restart {
        events.insert(0, StreamEvent::Open(header(session)));
    }
    // XEP-0124 §12: payloads of a terminating request are processed first.
    if terminating {
        events.push(StreamEvent::Close);
    }
    for event in events {
        if session.events.send(Ok(event)).await.is_err() {
            return Err("item-not-found");
        }
    }
    Ok(wait_for_answer(session, rid).await)
}

/// Holds request `rid` until there is something to send, a newer request
/// takes its place, or `wait` passes (then it is answered empty).
async fn wait_for_answer(session: &Session, rid: u64) -> String {
    let (reply, mut answer) = oneshot::channel();
    {
        let mut state = session.lock();
        state.held.push_back(Held { rid, reply });
        state.pump(session.hold, session.window);
    }
    if let Ok(Ok(body)) = tokio::time::timeout(session.wait, &mut answer).await {
        return body;
    }
    let mut state = session.lock();
    if let Some(at) = state.held.iter().position(|h| h.rid == rid) {
        // Answer this one (empty unless something is pending) in place.
        let held = state.held.remove(at).expect("position is in range");
        state.held.push_front(held);
        state.answer_oldest(session.window);
    }
    drop(state);
    answer.try_recv().unwrap_or_else(|_| terminate("item-not-found"))
}

/// The session side of a BOSH session.
pub(crate) struct BoshFraming {
    session: Arc<Session>,
    registry: Arc<Registry>,
    events: mpsc::Receiver<Flow<StreamEvent>>,
    /// An end taken from the channel by `buffered_event`, for the next read.
    pending_end: Option<End>,
    out: Vec<u8>,
    opened: bool,
    peer: SocketAddr,
    secure: bool,
}

impl BoshFraming {
    /// When the session counts as lost if no request comes (XEP-0124 §7.1
    /// `inactivity`: only while no request is held).
    fn idle_deadline(&self) -> Option<Instant> {
        let state = self.session.lock();
        state.held.is_empty().then(|| state.last_activity + self.session.inactivity)
    }
}

impl Sink for BoshFraming {
    fn queue(&mut self, el: &Element) {
        write_element(el, &mut self.out);
    }
}

impl Framing for BoshFraming {
    async fn next_event(&mut self) -> Flow<StreamEvent> {
        if let Some(end) = self.pending_end.take() {
            return Err(end);
        }
        loop {
            let check = self.idle_deadline().unwrap_or_else(|| Instant::now() + self.session.inactivity);
            tokio::select! {
                event = self.events.recv() => return event.unwrap_or(Err(End::Gone)),
                _ = tokio::time::sleep_until(check) => {
                    if self.idle_deadline().is_some_and(|idle| idle <= Instant::now()) {
                        tracing::debug!(sid = %self.session.sid, "BOSH session inactive");
                        return Err(End::Gone);
                    }
                }
            }
        }
    }

    fn buffered_event(&mut self) -> Option<StreamEvent> {
        match self.events.try_recv() {
            Ok(Ok(event)) => Some(event),
            Ok(Err(end)) => {
                self.pending_end = Some(end);
                None
            }
            Err(_) => None,
        }
    }

    async fn flush(&mut self) -> Flow<()> {
        let mut state = self.session.lock();
        state.outbox.append(&mut self.out);
        state.pump(self.session.hold, self.session.window);
        Ok(())
    }

    fn open_stream(&mut self, _from: &str, _to: Option<&str>, _id: &str) {
        // XEP-0206 §4: the session creation response stands for the header.
        self.opened = true;
    }

    fn stream_open(&self) -> bool {
        self.opened
    }

    async fn close(mut self, end: &End) {
        self.registry.sessions.remove(&self.session.sid);
        if let Some(error) = end.to_element() {
            self.queue(&error);
        }
        let mut state = self.session.lock();
        state.outbox.append(&mut self.out);
        // XEP-0206 §7: a stream error travels in a terminating body.
        let condition = match end {
            End::Error(_) => Some("remote-stream-error"),
            End::PeerClosed => None,
            End::Gone => Some("item-not-found"),
        };
        state.ended.get_or_insert(condition);
        state.pump(self.session.hold, self.session.window);
        // `live` lets tests and operators see abandoned sessions go.
        tracing::debug!(sid = %self.session.sid, live = self.registry.sessions.len(), "BOSH session ended");
    }

    fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn is_secure(&self) -> bool {
        self.secure
    }
}
