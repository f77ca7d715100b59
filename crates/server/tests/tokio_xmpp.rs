//! Interoperability with an independent client library: tokio-xmpp 6 (the
//! xmpp-rs project) against the real `starling` binary.
//!
//! tokio-xmpp builds its rustls root store from `rustls-native-certs`, which
//! honours `SSL_CERT_FILE`. Every test server's self-signed certificate is
//! added to one process-wide bundle that `SSL_CERT_FILE` points at, so the
//! stock `StartTlsServerConnector` / `DirectTlsServerConnector` verify the
//! server exactly as they would in production (name `localhost`, real chain
//! check), only with a different trust anchor.
//!
//! tokio-xmpp picks its SASL mechanism itself: SCRAM-SHA-256, then
//! SCRAM-SHA-1, PLAIN, ANONYMOUS, each as `-PLUS` when its TLS layer produced
//! channel binding data (tls-exporter under TLS 1.3). To force a particular
//! mechanism the lower-level public `tokio_xmpp::client_login` (its `auth`)
//! is called with a filtered mechanism list, then resource binding is done
//! by hand on the same `XmppStream`.

use futures::{SinkExt, StreamExt};
use sasl::common::{ChannelBinding, Credentials};
use starling_testkit::TestServer;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::time::timeout;
use tokio_xmpp::connect::{DirectTlsServerConnector, DnsConfig, ServerConnector, StartTlsServerConnector};
use tokio_xmpp::error::AuthError;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::{
    bind::{BindQuery, BindResponse},
    iq::Iq,
    message::{Lang, Message, MessageType},
    ns,
    ping::Ping,
    presence::Presence,
    roster::{Ask, Group, Item, Roster, Subscription},
    sasl::DefinedCondition,
    stanza::Stanza,
    stream_features::StreamFeatures,
};
use tokio_xmpp::stanzastream::{Event, StanzaStage, StanzaState, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::{ReadError, StreamHeader, Timeouts, XmppStream, XmppStreamElement};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
/// Per-test budget, so a hang fails instead of blocking the run.
const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- harness

/// The process-wide CA bundle `SSL_CERT_FILE` names. Rewritten atomically
/// (write + rename) each time a server's certificate is added, so a
/// concurrent TLS handshake in another test reads either the old or the new
/// bundle, never half of one.
struct Trust {
    dir: tempfile::TempDir,
    pem: String,
}

static TRUST: OnceLock<Mutex<Trust>> = OnceLock::new();

fn trust(cert: &Path) {
    let lock = TRUST.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, "").unwrap();
        // Set once, before the first client of this process exists.
        std::env::set_var("SSL_CERT_FILE", &bundle);
        std::env::remove_var("SSL_CERT_DIR");
        Mutex::new(Trust { dir, pem: String::new() })
    });
    let mut t = lock.lock().unwrap();
    let pem = std::fs::read_to_string(cert).expect("server certificate");
    t.pem.push_str(&pem);
    if !t.pem.ends_with('\n') {
        t.pem.push('\n');
    }
    let tmp = t.dir.path().join("bundle.tmp");
    std::fs::write(&tmp, &t.pem).unwrap();
    std::fs::rename(&tmp, t.dir.path().join("bundle.pem")).unwrap();
}

fn server() -> TestServer {
    let server = TestServer::builder(BIN).start().expect("server starts");
    server.add_user("alice", "secret").unwrap();
    server.add_user("bob", "secret").unwrap();
    trust(&server.certificate());
    server
}

/// tokio-xmpp's `StanzaStream` (login, binding, reconnects: all tokio-xmpp's
/// own), used whole instead of through `tokio_xmpp::Client`.
///
/// `Client` splits the stream into a sender and a receiver sharing one
/// `tokio::sync::Mutex`, and its background worker polls the receiver, whose
/// `poll_next` (tokio-xmpp 6.0.0, `StanzaReceiver`) answers `Pending` without
/// registering a waker when `try_lock` fails. If the worker polls while the
/// test's task is inside `send_stanza`/`send_iq` (holding that lock), the
/// wakeup for the next incoming stanza is lost: the server's answer sits in
/// the client's queue and nobody reads it. That was the "stall after bind"
/// of these tests run in parallel (the client log shows the answer received
/// by the stream worker and never handed on).
struct Client {
    stream: StanzaStream,
    bound: Option<FullJid>,
    /// Stanzas read while waiting for an IQ response, in order.
    stashed: std::collections::VecDeque<Stanza>,
    next_id: u32,
}

enum ClientEvent {
    Online(Jid),
    // Boxed: a stanza is large beside the other events.
    Stanza(Box<Stanza>),
    Suspended,
}

impl Client {
    fn new_with_connector<C: ServerConnector>(jid: BareJid, password: &str, connector: C, timeouts: Timeouts) -> Self {
        let stream = StanzaStream::new_c2s(connector, jid.into(), password.into(), timeouts, 16);
        Client { stream, bound: None, stashed: Default::default(), next_id: 0 }
    }

    fn bound_jid(&self) -> Option<&FullJid> {
        self.bound.as_ref()
    }

    async fn next(&mut self) -> Option<ClientEvent> {
        if let Some(s) = self.stashed.pop_front() {
            return Some(ClientEvent::Stanza(Box::new(s)));
        }
        match self.stream.next().await? {
            Event::Stream(StreamEvent::Reset { bound_jid, .. }) => {
                self.bound = bound_jid.clone().try_into_full().ok();
                Some(ClientEvent::Online(bound_jid))
            }
            Event::Stream(StreamEvent::Resumed) => self.bound.clone().map(|j| ClientEvent::Online(j.into())),
            Event::Stream(StreamEvent::Suspended) => Some(ClientEvent::Suspended),
            Event::Stanza(s) => Some(ClientEvent::Stanza(Box::new(s))),
        }
    }

    /// Queues `stanza` and waits until it has been written to the socket.
    async fn send_stanza(&mut self, stanza: Stanza) -> anyhow::Result<()> {
        let mut token = self.stream.send(Box::new(stanza)).await;
        match token.wait_for(StanzaStage::Sent).await {
            Some(StanzaState::Sent { .. }) | Some(StanzaState::Acked { .. }) => Ok(()),
            Some(StanzaState::Failed { error }) => Err(error.into_io_error().into()),
            other => anyhow::bail!("stanza not sent: {other:?}"),
        }
    }

    /// Sends an IQ request (its id replaced by ours) and returns that id.
    async fn send_iq(&mut self, mut iq: Iq) -> anyhow::Result<String> {
        self.next_id += 1;
        let id = format!("iq-{}", self.next_id);
        *iq.id_mut() = id.clone();
        self.send_stanza(iq.into()).await?;
        Ok(id)
    }

    /// The response to IQ `id`; other stanzas read meanwhile stay queued
    /// for `next` in their order.
    async fn response(&mut self, id: &str) -> anyhow::Result<Iq> {
        let mut seen = std::collections::VecDeque::new();
        let mut stashed = std::mem::take(&mut self.stashed);
        let found = loop {
            let stanza = match stashed.pop_front() {
                Some(s) => s,
                None => match self.stream.next().await {
                    Some(Event::Stanza(s)) => s,
                    Some(Event::Stream(e)) => anyhow::bail!("stream event while waiting for IQ {id}: {e:?}"),
                    None => anyhow::bail!("stream ended while waiting for IQ {id}"),
                },
            };
            match stanza {
                Stanza::Iq(iq @ (Iq::Result { .. } | Iq::Error { .. })) if iq.id() == id => break iq,
                other => seen.push_back(other),
            }
        };
        seen.extend(stashed);
        self.stashed = seen;
        Ok(found)
    }

    async fn request(&mut self, iq: Iq) -> anyhow::Result<Iq> {
        let id = self.send_iq(iq).await?;
        self.response(&id).await
    }

    async fn send_end(self) -> anyhow::Result<()> {
        self.stream.close().await;
        Ok(())
    }
}

/// tokio-xmpp's own STARTTLS connector, pointed at 127.0.0.1:PORT instead of
/// an SRV lookup; the TLS server name is still the JID's domain (localhost).
fn starttls(server: &TestServer) -> StartTlsServerConnector {
    StartTlsServerConnector(DnsConfig::addr(&format!("127.0.0.1:{}", server.port)))
}

fn bare(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

/// Runs `body` under [`LIMIT`]; on failure panics with the server log.
async fn run<F>(server: &TestServer, body: F)
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures::FutureExt;
    match timeout(LIMIT, std::panic::AssertUnwindSafe(body).catch_unwind()).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("{e:#}\n--- server log ---\n{}", server.log()),
        Ok(Err(panic)) => {
            eprintln!("--- server log ---\n{}", server.log());
            std::panic::resume_unwind(panic)
        }
        Err(_) => panic!("timed out after {LIMIT:?}\n--- server log ---\n{}", server.log()),
    }
}

/// Waits for `Event::Online` and returns the bound full JID.
///
/// A failed login never yields an event (tokio-xmpp logs and reconnects with
/// backoff), so a broken login shows up as the surrounding timeout.
async fn online(client: &mut Client) -> anyhow::Result<FullJid> {
    loop {
        match client.next().await {
            Some(ClientEvent::Online(bound_jid)) => {
                return bound_jid.try_into_full().map_err(|j| anyhow::anyhow!("bound JID {j} is not full"));
            }
            // Connection attempts that failed before binding.
            Some(ClientEvent::Suspended) => continue,
            Some(ClientEvent::Stanza(s)) => anyhow::bail!("stanza before online: {s:?}"),
            None => anyhow::bail!("client stream ended before online"),
        }
    }
}

async fn login(server: &TestServer, user: &str) -> anyhow::Result<(Client, FullJid)> {
    let jid = bare(&format!("{user}@localhost"));
    let mut client = Client::new_with_connector(jid, "secret", starttls(server), Timeouts::tight());
    let bound = online(&mut client).await?;
    Ok((client, bound))
}

async fn next_stanza(client: &mut Client) -> anyhow::Result<Stanza> {
    match client.next().await {
        Some(ClientEvent::Stanza(s)) => Ok(*s),
        Some(ClientEvent::Online(_)) => anyhow::bail!("unexpected reconnect"),
        Some(ClientEvent::Suspended) => anyhow::bail!("disconnected"),
        None => anyhow::bail!("client stream ended"),
    }
}

/// The next `<message/>` (skipping presence and anything else).
async fn next_message(client: &mut Client) -> anyhow::Result<Message> {
    loop {
        if let Stanza::Message(m) = next_stanza(client).await? {
            return Ok(m);
        }
    }
}

fn body(m: &Message) -> Option<String> {
    m.get_best_body_cloned(vec![]).map(|(_, b)| b)
}

/// Mechanisms named in the server's `authenticated` log lines for `jid`, in
/// order (the server logs `authenticated peer=… jid=… mechanism=…` at info).
fn logged_mechanisms(log: &str, jid: &str) -> Vec<String> {
    let jid_text = format!("jid={jid}");
    let jid_json = format!("\"jid\":\"{jid}\"");
    log.lines()
        .filter(|l| l.contains("authenticated"))
        .filter(|l| l.split_whitespace().any(|w| w == jid_text) || l.contains(&jid_json))
        .filter_map(|l| {
            let at = l.find("mechanism")? + "mechanism".len();
            let rest = l[at..].trim_start_matches(['=', '"', ':']);
            let end = rest.find(|c: char| c == '"' || c.is_whitespace() || c == ',' || c == '}').unwrap_or(rest.len());
            Some(rest[..end].to_string())
        })
        .collect()
}

/// The server's log line may trail the client's view by a moment.
async fn wait_for_mechanisms(server: &TestServer, jid: &str, n: usize) -> Vec<String> {
    let what = format!("{n} logins of {jid}");
    let log = server.log_until(&what, |log| logged_mechanisms(log, jid).len() >= n).await.unwrap();
    logged_mechanisms(&log, jid)
}

/// A TLS-secured, stream-restarted connection from tokio-xmpp's STARTTLS
/// connector, with the features the server offers before SASL and the
/// channel binding data tokio-xmpp computed.
async fn pre_auth(
    server: &TestServer,
    jid: &BareJid,
) -> anyhow::Result<(StreamFeatures, XmppStream<<StartTlsServerConnector as ServerConnector>::Stream>, ChannelBinding)>
{
    let (pending, cb) = starttls(server).connect(&Jid::from(jid.clone()), ns::JABBER_CLIENT, Timeouts::tight()).await?;
    let (features, stream) = pending.recv_features().await?;
    Ok((features, stream, cb))
}

/// SASL with tokio-xmpp's `auth`, offering it only `mechanism`; then the
/// stream restart (RFC 6120 §6.4.6) and resource binding (RFC 6120 §7)
/// done by hand. Returns the bound JID and the bound stream.
async fn auth_with<S>(
    stream: XmppStream<S>,
    mechanism: &str,
    creds: Credentials,
    resource: &str,
) -> Result<(FullJid, XmppStream<S>), tokio_xmpp::Error>
where
    S: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let only: BTreeSet<String> = [mechanism.to_string()].into();
    let stream = tokio_xmpp::client_login(stream, only, creds).await?;
    let stream = stream.send_header(StreamHeader { to: Some("localhost".into()), from: None, id: None }).await?;
    let (features, mut stream): (StreamFeatures, XmppStream<S>) = stream.recv_features().await?;
    assert!(features.can_bind(), "no <bind/> after SASL: {features:?}");
    let iq = Iq::from_set("bind-1", BindQuery::new(Some(resource.to_string())));
    stream.send(&XmppStreamElement::Stanza(Stanza::Iq(iq))).await?;
    let reply = next_element(&mut stream).await?;
    match reply {
        XmppStreamElement::Stanza(Stanza::Iq(Iq::Result { id, payload: Some(payload), .. })) if id == "bind-1" => {
            let bound = BindResponse::try_from(payload)
                .map_err(|e| tokio_xmpp::Error::Io(std::io::Error::other(format!("{e:?}"))))?;
            Ok((bound.jid, stream))
        }
        other => Err(tokio_xmpp::Error::Io(std::io::Error::other(format!("unexpected reply to bind: {other:?}")))),
    }
}

async fn next_element<S>(stream: &mut XmppStream<S>) -> Result<XmppStreamElement, tokio_xmpp::Error>
where
    S: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match stream.next().await.map(|r| r.and_then(|e| e.into_read_error())) {
            Some(Ok(el)) => return Ok(el),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::HardError(e))) => return Err(e.into()),
            Some(Err(e)) => return Err(tokio_xmpp::Error::Io(std::io::Error::other(format!("{e}")))),
            None => return Err(tokio_xmpp::Error::Disconnected),
        }
    }
}

/// Pings the server over a hand-bound stream (XEP-0199 §4.2).
async fn ping_on<S>(stream: &mut XmppStream<S>) -> anyhow::Result<()>
where
    S: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let iq = Iq::from_get("ping-1", Ping).with_to(Jid::new("localhost")?);
    stream.send(&XmppStreamElement::Stanza(Stanza::Iq(iq))).await?;
    match next_element(stream).await? {
        XmppStreamElement::Stanza(Stanza::Iq(Iq::Result { id, .. })) if id == "ping-1" => Ok(()),
        other => anyhow::bail!("unexpected reply to ping: {other:?}"),
    }
}

fn creds(user: &str, cb: ChannelBinding) -> Credentials {
    Credentials::default().with_username(user).with_password("secret").with_channel_binding(cb)
}

// ---------------------------------------------------------------- tests

/// RFC 6120 §5 (STARTTLS), §6 (SASL), §7 (resource binding); RFC 5802 /
/// RFC 7677 SCRAM with RFC 9266 tls-exporter channel binding.
///
/// The stock tokio-xmpp client logs in over STARTTLS with no help; it must
/// end up with a full JID under alice's bare JID, and (TLS 1.3 gives it
/// tls-exporter data, and it prefers SHA-256) the server must have seen
/// SCRAM-SHA-256-PLUS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_login_uses_scram_sha_256_plus() {
    let server = server();
    run(&server, async {
        let (client, bound) = login(&server, "alice").await?;
        // RFC 6120 §7.6.1: server-generated resourcepart, full JID.
        assert_eq!(bound.to_bare(), bare("alice@localhost"));
        assert!(!bound.resource().as_str().is_empty());
        assert_eq!(client.bound_jid(), Some(&bound));
        let mechs = wait_for_mechanisms(&server, "alice@localhost", 1).await;
        assert_eq!(mechs, ["SCRAM-SHA-256-PLUS"], "mechanisms logged by the server");

        // And tokio-xmpp really computed tls-exporter data (RFC 9266 §2:
        // 32 bytes of EXPORTER-Channel-Binding) on this server's TLS 1.3.
        let (features, _stream, cb) = pre_auth(&server, &bare("alice@localhost")).await?;
        match cb {
            ChannelBinding::TlsExporter(ref data) => assert_eq!(data.len(), 32),
            other => anyhow::bail!("expected tls-exporter channel binding, got {other:?}"),
        }
        for m in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"] {
            assert!(features.sasl_mechanisms.contains(m), "{m} not offered: {features:?}");
        }
        client.send_end().await?;
        Ok(())
    })
    .await;
}

/// RFC 6120 §6.3.3 (mechanism selection is the client's), RFC 5802 §5
/// (SCRAM-SHA-1, gs2 header "n,,": client without channel binding) and
/// §6 / RFC 9266 (SCRAM-SHA-1-PLUS with tls-exporter). tokio-xmpp's own
/// SCRAM implementation, restricted to one mechanism each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_1_and_sha_1_plus_login() {
    let server = server();
    run(&server, async {
        let alice = bare("alice@localhost");

        // Plain SCRAM-SHA-1, no channel binding.
        let (features, stream, _) = pre_auth(&server, &alice).await?;
        assert!(features.sasl_mechanisms.contains("SCRAM-SHA-1"), "{features:?}");
        let (bound, mut first) = auth_with(stream, "SCRAM-SHA-1", creds("alice", ChannelBinding::None), "sha1").await?;
        assert_eq!(bound.to_string(), "alice@localhost/sha1");
        ping_on(&mut first).await?;

        // SCRAM-SHA-1-PLUS with the tls-exporter data tokio-xmpp computed.
        let (features, stream, cb) = pre_auth(&server, &alice).await?;
        assert!(features.sasl_mechanisms.contains("SCRAM-SHA-1-PLUS"), "{features:?}");
        assert!(matches!(cb, ChannelBinding::TlsExporter(_)), "{cb:?}");
        let (bound, mut stream2) = auth_with(stream, "SCRAM-SHA-1-PLUS", creds("alice", cb), "sha1plus").await?;
        assert_eq!(bound.to_string(), "alice@localhost/sha1plus");
        ping_on(&mut stream2).await?;

        let mechs = wait_for_mechanisms(&server, "alice@localhost", 2).await;
        assert_eq!(mechs, ["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"], "mechanisms logged by the server");
        drop((first, stream2));
        Ok(())
    })
    .await;
}

/// RFC 5802 §6: a client that sends gs2 flag "y" (it supports channel
/// binding but thinks the server does not) while the server did advertise
/// -PLUS variants is being downgraded; the server must fail the exchange.
/// Also a wrong password must fail with not-authorized (RFC 6120 §6.5.10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_downgrade_and_bad_password_are_refused() {
    let server = server();
    run(&server, async {
        let alice = bare("alice@localhost");

        let (_, stream, _) = pre_auth(&server, &alice).await?;
        match auth_with(stream, "SCRAM-SHA-256", creds("alice", ChannelBinding::Unsupported), "y").await {
            Err(tokio_xmpp::Error::Auth(AuthError::Fail(_))) => {}
            Err(e) => anyhow::bail!("gs2 'y' with -PLUS offered: expected SASL failure, got {e}"),
            Ok((jid, _)) => anyhow::bail!("gs2 'y' with -PLUS offered was accepted as {jid}"),
        }

        let (_, stream, cb) = pre_auth(&server, &alice).await?;
        let bad = Credentials::default().with_username("alice").with_password("wrong").with_channel_binding(cb);
        match auth_with(stream, "SCRAM-SHA-256-PLUS", bad, "bad").await {
            Err(tokio_xmpp::Error::Auth(AuthError::Fail(DefinedCondition::NotAuthorized))) => {}
            Err(e) => anyhow::bail!("wrong password: expected not-authorized, got {e}"),
            Ok((jid, _)) => anyhow::bail!("wrong password accepted as {jid}"),
        }
        Ok(())
    })
    .await;
}

/// RFC 6121 §4.2 (initial presence, broadcast to the user's own available
/// resources, §4.2.2), §5.2.2 / §8.5.3.1 (a chat message to a full JID is
/// delivered to that resource) and RFC 6120 §8.1.2.1 (the server stamps
/// `from` with the sender's full JID).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_round_trip_between_two_clients() {
    let server = server();
    run(&server, async {
        let (mut alice, alice_jid) = login(&server, "alice").await?;
        let (mut bob, bob_jid) = login(&server, "bob").await?;

        // Bob becomes available and sees his own presence come back.
        bob.send_stanza(Presence::available().into()).await?;
        match next_stanza(&mut bob).await? {
            Stanza::Presence(p) if p.from == Some(bob_jid.clone().into()) => {}
            other => anyhow::bail!("bob expected his own presence, got {other:?}"),
        }

        let hello =
            Message::chat(Some(bob_jid.clone().into())).with_body(Lang::default(), "Hello Bob, from tokio-xmpp".into());
        alice.send_stanza(hello.into()).await?;
        let got = next_message(&mut bob).await?;
        assert_eq!(got.from, Some(alice_jid.clone().into()), "{got:?}");
        assert_eq!(got.type_, MessageType::Chat);
        assert_eq!(body(&got).as_deref(), Some("Hello Bob, from tokio-xmpp"));

        let reply = Message::chat(Some(alice_jid.clone().into())).with_body(Lang::default(), "Hi Alice!".into());
        bob.send_stanza(reply.into()).await?;
        let got = next_message(&mut alice).await?;
        assert_eq!(got.from, Some(bob_jid.clone().into()), "{got:?}");
        assert_eq!(body(&got).as_deref(), Some("Hi Alice!"));

        alice.send_end().await?;
        bob.send_end().await?;
        Ok(())
    })
    .await;
}

/// XEP-0199 §4.2: client-to-server ping, answered with an empty result;
/// RFC 6120 §8.2.3 (iq get gets exactly one result or error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iq_ping_to_server() {
    let server = server();
    run(&server, async {
        let (mut alice, _) = login(&server, "alice").await?;
        match alice.request(Iq::from_get("", Ping).with_to(Jid::new("localhost")?)).await? {
            Iq::Result { .. } => {}
            other => anyhow::bail!("ping answered with {other:?}"),
        }
        alice.send_end().await?;
        Ok(())
    })
    .await;
}

/// XEP-0368 (direct TLS, port `tls_port`): tokio-xmpp's direct TLS connector
/// (which sets no ALPN) logs in, with tls-exporter channel binding as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_login() {
    let server = server();
    run(&server, async {
        let connector = DirectTlsServerConnector(DnsConfig::addr(&format!("127.0.0.1:{}", server.tls_port)));
        let mut client = Client::new_with_connector(bare("bob@localhost"), "secret", connector, Timeouts::tight());
        let bound = online(&mut client).await?;
        assert_eq!(bound.to_bare(), bare("bob@localhost"));
        let mechs = wait_for_mechanisms(&server, "bob@localhost", 1).await;
        assert_eq!(mechs, ["SCRAM-SHA-256-PLUS"], "mechanisms logged by the server");
        client.send_end().await?;
        Ok(())
    })
    .await;
}

/// RFC 6121 §2.2–§2.3 and XEP-0237 with tokio-xmpp's typed roster payloads:
/// an empty versioned roster, a set answered after its push (§2.1.6), and
/// the item in the next get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_set_push_and_get() {
    let server = server();
    run(&server, async {
        let (mut alice, _) = login(&server, "alice").await?;
        let get = Roster { ver: Some(String::new()), items: vec![] };
        let Iq::Result { payload: Some(el), .. } = alice.request(Iq::from_get("", get.clone())).await? else {
            anyhow::bail!("roster get without a roster");
        };
        let roster = Roster::try_from(el)?;
        assert_eq!((roster.ver.as_deref(), roster.items.len()), (Some("0"), 0));

        let bob = Item {
            jid: bare("bob@localhost"),
            name: Some("Bob".into()),
            subscription: Subscription::None,
            ask: Ask::None,
            groups: vec![Group("Friends".into())],
            approved: None,
        };
        let set = Roster { ver: None, items: vec![bob.clone()] };
        let token = alice.send_iq(Iq::from_set("", set)).await?;
        match next_stanza(&mut alice).await? {
            Stanza::Iq(Iq::Set { payload, .. }) => {
                let push = Roster::try_from(payload)?;
                assert_eq!(push.ver.as_deref(), Some("1"));
                assert_eq!(push.items, std::slice::from_ref(&bob));
            }
            other => anyhow::bail!("expected a roster push, got {other:?}"),
        }
        let result = alice.response(&token).await?;
        assert!(matches!(result, Iq::Result { payload: None, .. }), "{result:?}");

        let Iq::Result { payload: Some(el), .. } = alice.request(Iq::from_get("", get)).await? else {
            anyhow::bail!("roster get without a roster");
        };
        let roster = Roster::try_from(el)?;
        assert_eq!(roster.ver.as_deref(), Some("1"));
        assert_eq!(roster.items, [bob]);
        alice.send_end().await?;
        Ok(())
    })
    .await;
}
