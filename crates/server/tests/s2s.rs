//! Federation (RFC 6120 server-to-server streams): two Starling servers in
//! this test process, `a.test` and `b.test`, on loopback, each told where
//! the other is with `s2s.hosts`. Once with certificates from a test CA that
//! both trust (SASL EXTERNAL, XEP-0178), once with self-signed ones and each
//! other in `insecure_domains` (dialback, XEP-0220); then hostile and
//! unreachable peers.

use starling_testkit::{free_port, TestCa, TestServer, XmlClient};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const A: &str = "a.test";
const B: &str = "b.test";
const PASSWORD: &str = "secret";

/// Where the test CA's files go: it outlives both servers.
struct Certs {
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Certs {
    fn new() -> Self {
        let certs = Certs { dir: tempfile::tempdir().unwrap(), ca: TestCa::new().unwrap() };
        certs.ca.write_root(&certs.root()).unwrap();
        certs
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `[tls.certificates]` for `domain` with a certificate for `names`.
    fn config_for(&self, domain: &str, names: &[&str]) -> String {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let issued = self.ca.issue_for(domain, &names, self.dir.path()).unwrap();
        format!(
            "[tls.certificates.\"{domain}\"]\ncert = \"{}\"\nkey = \"{}\"\n",
            issued.cert.display(),
            issued.key.display()
        )
    }
}

fn toml_path(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// A server for `domain` with the user `user`, on `port`, reaching `peer`
/// and its rooms (at `peer_port`) without DNS.
fn server(domain: &str, user: &str, port: u16, peer: &str, peer_port: u16, s2s: &str, extra: &str) -> TestServer {
    TestServer::builder(BIN)
        .domain(domain)
        .s2s_port(port)
        // The peer's rooms are served by the same process.
        .s2s(&format!(
            "hosts = {{ \"{peer}\" = \"127.0.0.1:{peer_port}\", \"conference.{peer}\" = \"127.0.0.1:{peer_port}\" }}\n{s2s}"
        ))
        .config(extra)
        .with_users(&[(user, PASSWORD), ("carol", PASSWORD)])
        .expect("server starts")
}

/// `a.test` and `b.test` pointed at each other.
fn pair(s2s_a: &str, extra_a: &str, s2s_b: &str, extra_b: &str) -> (TestServer, TestServer) {
    let (port_a, port_b) = (free_port(), free_port());
    let a = server(A, "alice", port_a, B, port_b, s2s_a, extra_a);
    let b = server(B, "bob", port_b, A, port_a, s2s_b, extra_b);
    (a, b)
}

/// Alice and Bob subscribe to each other across the servers, see each
/// other's presence (approval, probes at login, broadcast), chat both ways
/// and query the other server.
async fn federate(a: &TestServer, b: &TestServer) {
    let mut alice = a.online("alice", "phone").await.unwrap();
    let mut bob = b.online("bob", "desk").await.unwrap();

    // RFC 6121 §3.1: Alice asks, Bob (on the other server) approves; Alice
    // gets the approval and Bob's presence (§3.1.5).
    alice.send("<presence to='bob@b.test' type='subscribe'/>").await.unwrap();
    let (_, request) = bob.take_stanza("type='subscribe'").await.unwrap();
    assert!(request.contains("from='alice@a.test'"), "{request}");
    bob.send("<presence to='alice@a.test' type='subscribed'/>").await.unwrap();
    let (_, approval) = alice.take_stanza("type='subscribed'").await.unwrap();
    assert!(approval.contains("from='bob@b.test'"), "{approval}");
    alice.expect("from='bob@b.test/desk'").await.unwrap();

    // And the other way round.
    bob.send("<presence to='alice@a.test' type='subscribe'/>").await.unwrap();
    let (_, request) = alice.take_stanza("type='subscribe'").await.unwrap();
    assert!(request.contains("from='bob@b.test'"), "{request}");
    alice.send("<presence to='bob@b.test' type='subscribed'/>").await.unwrap();
    bob.take_stanza("type='subscribed'").await.unwrap();
    bob.expect("from='alice@a.test/phone'").await.unwrap();

    // §4.2.2: a new session of Alice's probes Bob's server and gets his presence.
    let mut laptop = a.online("alice", "laptop").await.unwrap();
    laptop.expect("from='bob@b.test/desk'").await.unwrap();
    // Bob sees the new resource come online (broadcast to a remote subscriber).
    bob.expect("from='alice@a.test/laptop'").await.unwrap();
    // §4.4: a presence change is broadcast across.
    bob.send("<presence><show>away</show></presence>").await.unwrap();
    let (_, away) = alice.take_stanza("from='bob@b.test/desk'").await.unwrap();
    assert!(away.contains("<show>away</show>"), "{away}");

    // Messages both ways.
    alice.send("<message to='bob@b.test' type='chat' id='m1'><body>hello from a</body></message>").await.unwrap();
    let (_, message) = bob.take_stanza("id='m1'").await.unwrap();
    assert!(message.contains("from='alice@a.test/phone'") && message.contains("hello from a"), "{message}");
    bob.send("<message to='alice@a.test/phone' type='chat' id='m2'><body>hello from b</body></message>").await.unwrap();
    let (_, message) = alice.take_stanza("id='m2'").await.unwrap();
    assert!(message.contains("from='bob@b.test/desk'") && message.contains("hello from b"), "{message}");

    // IQs to the other server and its answers (XEP-0092, XEP-0030).
    let version = alice
        .request("<iq type='get' id='v1' to='b.test'><query xmlns='jabber:iq:version'/></iq>", "v1")
        .await
        .unwrap();
    assert!(version.contains("type='result'") && version.contains("<name>"), "{version}");
    let disco = bob
        .request("<iq type='get' id='d1' to='a.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "d1")
        .await
        .unwrap();
    assert!(disco.contains("type='result'") && disco.contains("<identity"), "{disco}");
    // An IQ to a remote account nobody answers for bounces back across.
    let error = alice
        .request("<iq type='get' id='p1' to='bob@b.test/nowhere'><ping xmlns='urn:xmpp:ping'/></iq>", "p1")
        .await
        .unwrap();
    assert!(error.contains("type='error'") && error.contains("service-unavailable"), "{error}");

    // XEP-0054: a vCard is fetched from the other server.
    let set = bob.request("<iq type='set' id='vs1'><vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></iq>", "vs1").await;
    assert!(set.unwrap().contains("type='result'"));
    let vcard =
        alice.request("<iq type='get' id='vc1' to='bob@b.test'><vCard xmlns='vcard-temp'/></iq>", "vc1").await.unwrap();
    assert!(vcard.contains("type='result'") && vcard.contains("<FN>Bob</FN>"), "{vcard}");

    // XEP-0160: a message from the other server to an offline account waits for it.
    bob.send("<message to='carol@a.test' type='chat' id='off1'><body>for later</body></message>").await.unwrap();
    // A barrier across: a.test answers the ping after it took the message
    // (one stream from b.test, read in order).
    let pong =
        bob.request("<iq type='get' id='bp1' to='a.test'><ping xmlns='urn:xmpp:ping'/></iq>", "bp1").await.unwrap();
    assert!(pong.contains("type='result'"), "{pong}");
    let mut carol = a.login("carol", "phone").await.unwrap();
    carol.send("<presence/>").await.unwrap();
    let (_, stored) = carol.take_stanza("id='off1'").await.unwrap();
    assert!(stored.contains("from='bob@b.test/desk'") && stored.contains("for later"), "{stored}");

    // XEP-0045: Bob joins a room on a.test (its service domain federates too).
    let muc = "<x xmlns='http://jabber.org/protocol/muc'/>";
    alice.send(&format!("<presence to='tea@conference.a.test/Alice'>{muc}</presence>")).await.unwrap();
    alice.expect("<subject").await.unwrap();
    bob.send(&format!("<presence to='tea@conference.a.test/Bob'>{muc}</presence>")).await.unwrap();
    let joined = bob.expect("<subject").await.unwrap();
    assert!(joined.contains("from='tea@conference.a.test/Alice'"), "{joined}");
    alice.expect("from='tea@conference.a.test/Bob'").await.unwrap();
    bob.send("<message to='tea@conference.a.test' type='groupchat' id='g1'><body>from b in the room</body></message>")
        .await
        .unwrap();
    let (_, message) = alice.take_stanza("from='tea@conference.a.test/Bob'").await.unwrap();
    assert!(message.contains("from b in the room"), "{message}");
    let (_, echo) = bob.take_stanza("id='g1'").await.unwrap();
    assert!(echo.contains("from b in the room"), "{echo}");
}

#[tokio::test]
async fn certificates_valid_for_both_domains_authenticate_with_sasl_external() {
    let certs = Certs::new();
    let s2s = format!("ca_file = {}\n", toml_path(&certs.root()));
    let (mut a, mut b) =
        pair(&s2s, &certs.config_for(A, &[A, "*.a.test"]), &s2s, &certs.config_for(B, &[B, "*.b.test"]));
    federate(&a, &b).await;
    for server in [&a, &b] {
        let log = server.log();
        assert!(log.contains("authenticated (SASL EXTERNAL)"), "{log}");
        assert!(!log.contains("authenticated (dialback)"), "{log}");
    }
    // Both shut down cleanly with their streams to each other open.
    for server in [&mut a, &mut b] {
        let status = server.terminate().unwrap();
        assert!(status.success(), "{status}: {}", server.log());
    }
}

#[tokio::test]
async fn self_signed_certificates_authenticate_with_dialback_where_allowed() {
    let (a, b) =
        pair("insecure_domains = [\"b.test\"]\n", "", "insecure_domains = [\"a.test\", \"conference.a.test\"]\n", "");
    federate(&a, &b).await;
    for server in [&a, &b] {
        let log = server.log();
        assert!(log.contains("authenticated (dialback)"), "{log}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let certs = Certs::new();
    let s2s = format!("ca_file = {}\n", toml_path(&certs.root()));
    // a.test presents a certificate the CA issued for another name.
    let (a, b) = pair(&s2s, &certs.config_for(A, &["wrong.test"]), &s2s, &certs.config_for(B, &[B]));
    let mut alice = a.online("alice", "phone").await.unwrap();
    alice.send("<message to='bob@b.test' type='chat' id='w1'><body>hi</body></message>").await.unwrap();
    let (_, error) = alice.take_stanza("id='w1'").await.unwrap();
    assert!(error.contains("type='error'") && error.contains("<remote-server-not-found"), "{error}");
    b.log_until("the refusal", |log| log.contains("dialback refused")).await.unwrap();
}

#[tokio::test]
async fn a_destination_that_does_not_resolve_bounces_to_the_sender() {
    let a = TestServer::builder(BIN).domain(A).with_users(&[("alice", PASSWORD)]).unwrap();
    let mut alice = a.online("alice", "phone").await.unwrap();
    alice.send("<message to='someone@nowhere.invalid' type='chat' id='n1'><body>hi</body></message>").await.unwrap();
    let (_, error) = alice.take_stanza("id='n1'").await.unwrap();
    assert!(error.contains("type='error'") && error.contains("<remote-server-not-found"), "{error}");
    assert!(error.contains("from='someone@nowhere.invalid'"), "{error}");
}

#[tokio::test]
async fn a_peer_that_says_nothing_is_timed_out() {
    let b = TestServer::builder(BIN).domain(B).s2s("handshake_timeout_secs = 1\n").start().unwrap();
    let mut silent = XmlClient::connect(b.s2s_port, B).await.unwrap();
    let out = silent.expect_closed().await.unwrap();
    assert!(out.contains("<connection-timeout"), "{out}");
}

/// Reads from `tcp` until `done` holds for everything read; returns that.
async fn read_while(tcp: &mut tokio::net::TcpStream, what: &str, done: impl Fn(&str) -> bool) -> String {
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; got {got:?}"))
            .unwrap();
        assert!(n > 0, "closed while waiting for {what}; got {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

async fn read_until(tcp: &mut tokio::net::TcpStream, needle: &str) -> String {
    read_while(tcp, needle, |got| got.contains(needle)).await
}

/// Reads until the start tag of an element `<name` is complete; returns it.
async fn read_tag(tcp: &mut tokio::net::TcpStream, name: &str) -> String {
    let start = format!("<{name}");
    let got = read_while(tcp, &start, |got| got.find(&start).is_some_and(|i| got[i..].contains('>'))).await;
    let i = got.find(&start).unwrap();
    got[i..i + got[i..].find('>').unwrap() + 1].to_owned()
}

fn attr<'a>(xml: &'a str, element: &str, name: &str) -> &'a str {
    let start = xml.find(element).unwrap_or_else(|| panic!("{element} in {xml}"));
    let rest = &xml[start..];
    let value = rest.find(&format!("{name}='")).unwrap_or_else(|| panic!("{name} in {rest}")) + name.len() + 2;
    &rest[value..value + rest[value..].find('\'').unwrap()]
}

const SERVER_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
     xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' version='1.0'";

/// A hand-written peer: it is the authoritative server of `evil.test` (it
/// confirms any dialback key), so b.test authenticates its stream as
/// `evil.test`; it may send from there, not from a.test (`invalid-from`),
/// and it cannot claim a.test, whose real server denies the key.
#[tokio::test]
async fn a_peer_is_held_to_the_domains_it_proved() {
    let authority = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority_port = authority.local_addr().unwrap().port();
    let a = TestServer::builder(BIN).domain(A).with_users(&[("alice", PASSWORD)]).unwrap();
    // Plaintext keeps the hand-written peer short; a.test's own streams use TLS.
    let b = TestServer::builder(BIN)
        .domain(B)
        .s2s(&format!(
            "require_encryption = false\ninsecure_domains = [\"evil.test\", \"a.test\"]\n\
             hosts = {{ \"evil.test\" = \"127.0.0.1:{authority_port}\", \"a.test\" = \"127.0.0.1:{}\" }}",
            a.s2s_port
        ))
        .with_users(&[("bob", PASSWORD)])
        .unwrap();
    let mut bob = b.online("bob", "desk").await.unwrap();

    // b.test asks evil.test's authoritative server (this task) about the key.
    let answering = tokio::spawn(async move {
        let (mut tcp, _) = authority.accept().await.unwrap();
        read_until(&mut tcp, "<stream:stream").await;
        let header = format!("{SERVER_HEADER} from='evil.test' id='auth1'><stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>");
        tcp.write_all(header.as_bytes()).await.unwrap();
        let verify = read_until(&mut tcp, "</db:verify>").await;
        let id = attr(&verify, "<db:verify", "id").to_owned();
        let answer = format!("<db:verify from='evil.test' to='b.test' id='{id}' type='valid'/>");
        tcp.write_all(answer.as_bytes()).await.unwrap();
        read_until(&mut tcp, "</stream:stream>").await;
    });

    let mut peer = tokio::net::TcpStream::connect(("127.0.0.1", b.s2s_port)).await.unwrap();
    peer.write_all(format!("{SERVER_HEADER} from='evil.test' to='b.test'>").as_bytes()).await.unwrap();
    read_until(&mut peer, "</stream:features>").await;
    peer.write_all(b"<db:result from='evil.test' to='b.test'>any-key</db:result>").await.unwrap();
    let result = read_tag(&mut peer, "db:result").await;
    assert!(result.contains("type='valid'"), "{result}");
    answering.await.unwrap();

    // From the domain it proved: delivered.
    peer.write_all(
        b"<message from='mallory@evil.test/x' to='bob@b.test' type='chat' id='e1'><body>hi</body></message>",
    )
    .await
    .unwrap();
    let (_, message) = bob.take_stanza("id='e1'").await.unwrap();
    assert!(message.contains("from='mallory@evil.test/x'"), "{message}");

    // Claiming a.test: a.test's server does not know the key.
    peer.write_all(b"<db:result from='a.test' to='b.test'>forged</db:result>").await.unwrap();
    let result = read_tag(&mut peer, "db:result").await;
    assert!(result.contains("type='invalid'"), "{result}");

    // Sending from a.test anyway: the stream ends with invalid-from.
    peer.write_all(b"<message from='alice@a.test/x' to='bob@b.test' type='chat' id='e2'><body>hi</body></message>")
        .await
        .unwrap();
    let closing = read_until(&mut peer, "</stream:stream>").await;
    assert!(closing.contains("<invalid-from"), "{closing}");
    let after = bob.barrier().await.unwrap();
    assert!(!after.contains("id='e2'"), "{after}");
}

#[tokio::test]
async fn with_federation_off_remote_addresses_bounce() {
    let a = TestServer::builder(BIN).domain(A).s2s("enabled = false").with_users(&[("alice", PASSWORD)]).unwrap();
    let mut alice = a.online("alice", "phone").await.unwrap();
    alice.send("<message to='bob@b.test' type='chat' id='o1'><body>hi</body></message>").await.unwrap();
    let (_, error) = alice.take_stanza("id='o1'").await.unwrap();
    assert!(error.contains("<remote-server-not-found"), "{error}");
    // RFC 6121 §3.1.1: the request fails before the roster changes.
    alice.send("<presence to='bob@b.test' type='subscribe' id='o2'/>").await.unwrap();
    let (before, error) = alice.take_stanza("id='o2'").await.unwrap();
    assert!(error.contains("<remote-server-not-found"), "{error}");
    assert!(!before.contains("jabber:iq:roster"), "no roster push: {before}");
    // Nothing listens for servers.
    assert!(!a.log().contains("listening for servers"), "{}", a.log());
}

/// RFC 6120 §13.12: a peer that floods a stanza past the limit is cut off
/// while it is still sending it (the xmlstream limits of client streams).
#[tokio::test]
async fn an_oversized_stanza_ends_the_stream() {
    let b = TestServer::builder(BIN).domain(B).s2s("require_encryption = false\n").start().unwrap();
    let mut peer = tokio::net::TcpStream::connect(("127.0.0.1", b.s2s_port)).await.unwrap();
    peer.write_all(format!("{SERVER_HEADER} from='evil.test' to='b.test'>").as_bytes()).await.unwrap();
    read_until(&mut peer, "</stream:features>").await;
    let flood = format!("<message from='x@evil.test' to='bob@b.test'><body>{}</body></message>", "a".repeat(300_000));
    // The server may close before it has read it all.
    let _ = peer.write_all(flood.as_bytes()).await;
    let closing = read_until(&mut peer, "</stream:stream>").await;
    assert!(closing.contains("<policy-violation"), "{closing}");
}
