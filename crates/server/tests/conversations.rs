//! Scripted raw-XML conversations against the real server binary, in the
//! spirit of Prosody's scansion tests: each sends exactly what a client (or
//! an attacker) would and checks the RFC 6120 answer, then that the server
//! still serves everyone else.

use starling_testkit::{Script, TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const PLAIN_ALICE: &str = "AGFsaWNlAHNlY3JldA=="; // base64("\0alice\0secret")

fn server() -> TestServer {
    TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).expect("server starts")
}

/// After an error on one connection, a fresh client still logs in and pings.
async fn still_serving(server: &TestServer) {
    let mut c = server.login("bob", "check").await.unwrap();
    c.barrier().await.unwrap();
}

/// A TLS stream ready for SASL.
async fn tls_client(server: &TestServer) -> XmlClient {
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    c.starttls().await.unwrap();
    c
}

#[tokio::test]
async fn stream_level_errors_close_only_the_offending_stream() {
    let server = server();
    // A bystander session stays up through all of this.
    let mut bystander = server.login("bob", "bystander").await.unwrap();

    // RFC 6120 §4.9.3.13 / §11.1: not well-formed XML.
    let mut c = tls_client(&server).await;
    c.send("<message><body>unclosed</message>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{out}");
    assert!(out.ends_with("</stream:stream>"), "{out}");

    // RFC 6120 §11.1: no DTDs or entity declarations (restricted XML).
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    c.send("<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY x 'lol'>]><stream:stream to='localhost'>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<restricted-xml "), "{out}");

    // Undeclared entity reference inside a stanza.
    let mut c = tls_client(&server).await;
    c.send("<message><body>&xxe;</body></message>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<restricted-xml ") || out.contains("<not-well-formed "), "{out}");

    // Processing instruction (RFC 6120 §11.1).
    let mut c = tls_client(&server).await;
    c.send("<?evil data?>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<restricted-xml ") || out.contains("<not-well-formed "), "{out}");

    // Invalid UTF-8 (RFC 6120 §11.6).
    let mut c = tls_client(&server).await;
    c.send_bytes(b"<message><body>\xff\xfe</body></message>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<not-well-formed "), "{out}");

    // RFC 6120 §4.9.3.6: a host we do not serve.
    let mut c = XmlClient::connect(server.port, "example.org").await.unwrap();
    c.send(&c.stream_header()).await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<stream:stream") && out.contains("<host-unknown "), "{out}");

    // RFC 6120 §4.9.3.10: wrong content namespace.
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    c.send("<stream:stream to='localhost' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<invalid-namespace "), "{out}");

    // RFC 6120 §4.9.3.25: unsupported version.
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    c.send("<stream:stream to='localhost' version='2.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<unsupported-version "), "{out}");

    bystander.barrier().await.unwrap();
    still_serving(&server).await;
}

#[tokio::test]
async fn oversized_stanza_is_cut_off_before_it_ends() {
    let server = server();
    let mut c = server.login("alice", "big").await.unwrap();
    // XEP-0478: the limit is advertised; RFC 6120 §4.9.3.18 policy-violation when exceeded.
    c.send("<message to='bob@localhost'><body>").await.unwrap();
    let chunk = "a".repeat(16 * 1024);
    let mut closed = false;
    for _ in 0..20 {
        // 320 KiB in all, never closing the element.
        if c.send(&chunk).await.is_err() {
            closed = true;
            break;
        }
    }
    let out = c.expect_closed().await.unwrap_or_default();
    assert!(closed || out.contains("<policy-violation "), "{out}");
    still_serving(&server).await;
}

#[tokio::test]
async fn stream_limits_are_advertised() {
    let server = server();
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    let features = c.starttls().await.unwrap();
    // XEP-0478 §3.
    assert!(features.contains("<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>262144</max-bytes>"), "{features}");
    // XEP-0440: channel-binding types; RFC 6120 §6: SCRAM with -PLUS over TLS.
    assert!(features.contains("<channel-binding type='tls-exporter'/>"), "{features}");
    assert!(features.contains("<mechanism>SCRAM-SHA-256-PLUS</mechanism>"), "{features}");
    assert!(features.contains("<mechanism>PLAIN</mechanism>"), "{features}");
}

#[tokio::test]
async fn sasl_failures() {
    let server = server();

    // RFC 6120 §5.3.1: STARTTLS required, so the plain stream offers only it.
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    let features = c.open().await.unwrap();
    assert!(features.contains("<required/>") && !features.contains("<mechanisms"), "{features}");
    // RFC 6120 §6.4.2 / §13.8: PLAIN over an unencrypted stream is refused.
    c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{PLAIN_ALICE}</auth>"))
        .await
        .unwrap();
    let out = c.expect("</failure>").await.unwrap();
    assert!(out.contains("<encryption-required/>"), "{out}");

    // RFC 6120 §6.5.5: unknown mechanism.
    let mut c = tls_client(&server).await;
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-UNKNOWN'>AAAA</auth>").await.unwrap();
    let out = c.expect("</failure>").await.unwrap();
    assert!(out.contains("<invalid-mechanism/>"), "{out}");

    // RFC 6120 §6.5.10: wrong password.
    let wrong = "AGFsaWNlAHdyb25n"; // "\0alice\0wrong"
    c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{wrong}</auth>")).await.unwrap();
    let out = c.expect("</failure>").await.unwrap();
    assert!(out.contains("<not-authorized/>"), "{out}");

    // RFC 6120 §6.5.3: not base64 (not a password guess, so not counted).
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>").await.unwrap();
    let out = c.expect("</failure>").await.unwrap();
    assert!(out.contains("<incorrect-encoding/>"), "{out}");
    // RFC 6120 §6.4.5: the retries are limited (3 wrong passwords by default),
    // then the stream is closed with policy-violation.
    for _ in 0..2 {
        c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{wrong}</auth>"))
            .await
            .unwrap();
        c.expect("</failure>").await.unwrap();
    }
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{out}");

    // Stanzas before authentication: RFC 6120 §4.9.3.12.
    let mut c = tls_client(&server).await;
    c.send("<message to='bob@localhost'><body>hi</body></message>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<not-authorized "), "{out}");

    still_serving(&server).await;
}

#[tokio::test]
async fn stanza_errors_and_routing() {
    let server = server();
    let (mut alice, alice_jid) =
        XmlClient::logged_in(server.port, "localhost", "alice", "secret", "home").await.unwrap();
    let (mut bob, bob_jid) = XmlClient::logged_in(server.port, "localhost", "bob", "secret", "phone").await.unwrap();
    assert_eq!(alice_jid, "alice@localhost/home");

    // RFC 6120 §8.2.3: an IQ without id is a bad request.
    alice.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await.unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("<bad-request "), "{out}");

    // RFC 6120 §8.4: an IQ in an unknown namespace gets service-unavailable.
    alice.send("<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:unknown'/></iq>").await.unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("id='u1'") && out.contains("<service-unavailable "), "{out}");

    // RFC 7622 §3: an invalid address is jid-malformed.
    alice.send("<message to='a@b@c' id='bad'><body>x</body></message>").await.unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("<jid-malformed "), "{out}");

    // RFC 6120 §8.1.2.1: the server stamps `from`; messages reach the full JID.
    alice.send(&format!("<message to='{bob_jid}' type='chat' id='m1'><body>hello bob</body></message>")).await.unwrap();
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("from='alice@localhost/home'") && out.contains("hello bob"), "{out}");

    // RFC 6121 §8.5.2.1.1: bare JID messages go to available resources only;
    // with none available, RFC 6121 §8.5.2.2: kept offline (XEP-0160) and
    // delivered with a delay stamp after initial presence.
    alice.send("<message to='bob@localhost' type='chat' id='m2'><body>where are you</body></message>").await.unwrap();
    // Alice's stanzas are handled in order: once the ping is answered, m2 is stored.
    alice.barrier().await.unwrap();
    bob.send("<presence/>").await.unwrap();
    bob.expect("<presence").await.unwrap(); // RFC 6121 §4.2.2: own presence is reflected
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("where are you") && out.contains("urn:xmpp:delay"), "{out}");
    // To an account that does not exist: service-unavailable.
    alice.send("<message to='nobody@localhost' type='chat' id='m4'><body>hi</body></message>").await.unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("id='m4'") && out.contains("<service-unavailable "), "{out}");
    alice.send("<message to='bob@localhost' type='chat' id='m3'><body>now?</body></message>").await.unwrap();
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("now?"), "{out}");

    // IQ between clients by full JID, and the answer back (RFC 6120 §10.5.3).
    alice
        .send(&format!("<iq type='get' id='v1' to='{bob_jid}'><query xmlns='jabber:iq:version'/></iq>"))
        .await
        .unwrap();
    let out = bob.expect("</iq>").await.unwrap();
    assert!(out.contains("from='alice@localhost/home'"), "{out}");
    bob.send("<iq type='result' id='v1' to='alice@localhost/home'/>").await.unwrap();
    let out = alice.expect("type='result'").await.unwrap();
    assert!(out.contains("id='v1'") && out.contains("from='bob@localhost/phone'"), "{out}");

    // An IQ to an offline full JID: service-unavailable (RFC 6121 §8.5.3.2.3... via §8.5.2).
    alice.send("<iq type='get' id='gone' to='bob@localhost/nowhere'><ping xmlns='urn:xmpp:ping'/></iq>").await.unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("<service-unavailable "), "{out}");

    // A remote domain with no server (RFC 6120 §10.4.3; `.invalid` never
    // resolves, RFC 6761 §6.4).
    alice.send("<message to='juliet@example.invalid' id='r1'><body>hi</body></message>").await.unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("<remote-server-not-found "), "{out}");

    // RFC 6120 §4.9.3.9: a spoofed `from` closes the stream.
    alice.send("<message to='bob@localhost/phone' from='eve@localhost'><body>spoof</body></message>").await.unwrap();
    let out = alice.expect_closed().await.unwrap();
    assert!(out.contains("<invalid-from "), "{out}");
    // The stream is closed once the server is done with the session.
    let out = bob.barrier().await.unwrap();
    assert!(!out.contains("spoof"), "{out}");
}

#[tokio::test]
async fn server_modules_answer() {
    let server = server();
    let mut c = server.login("alice", "r").await.unwrap();
    // XEP-0199 §4.2.
    let out = c.request("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "p").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    // XEP-0030 §3.1.
    c.send("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await
        .unwrap();
    let out = c.expect("</iq>").await.unwrap();
    for needle in
        ["category='server'", "type='im'", "var='urn:xmpp:ping'", "var='jabber:iq:version'", "var='urn:xmpp:time'"]
    {
        assert!(out.contains(needle), "{needle} in {out}");
    }
    // XEP-0092 §2.
    c.send("<iq type='get' id='v' to='localhost'><query xmlns='jabber:iq:version'/></iq>").await.unwrap();
    let out = c.expect("</iq>").await.unwrap();
    assert!(out.contains("<name>Starling</name>"), "{out}");
    // XEP-0202 §3.
    c.send("<iq type='get' id='t' to='localhost'><time xmlns='urn:xmpp:time'/></iq>").await.unwrap();
    let out = c.expect("</iq>").await.unwrap();
    assert!(out.contains("<tzo>+00:00</tzo>") && out.contains("Z</utc>"), "{out}");
    // RFC 6121 Appendix E: legacy session establishment still answers.
    let out = c
        .request("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>", "s")
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");
}

#[tokio::test]
async fn presence_broadcast_directed_and_unavailable_on_disconnect() {
    let server = server();
    let mut a1 = server.login("alice", "one").await.unwrap();
    let mut a2 = server.login("alice", "two").await.unwrap();
    let mut bob = server.login("bob", "b").await.unwrap();
    a1.send("<presence/>").await.unwrap();
    a1.expect("<presence").await.unwrap();
    // RFC 6121 §4.2.2: other available resources see it once they are available.
    a2.send("<presence><priority>5</priority></presence>").await.unwrap();
    let out = a1.expect("</presence>").await.unwrap();
    assert!(out.contains("from='alice@localhost/two'"), "{out}");
    // RFC 6121 §4.6: directed presence to bob, then an abrupt disconnect.
    a2.send("<presence to='bob@localhost/b'/>").await.unwrap();
    bob.expect("from='alice@localhost/two'").await.unwrap();
    drop(a2);
    // RFC 6121 §4.6.3 / §4.5.2: unavailable goes to the directed recipient and own resources.
    let out = bob.expect("type='unavailable'").await.unwrap();
    assert!(out.contains("from='alice@localhost/two'"), "{out}");
    let out = a1.expect("type='unavailable'").await.unwrap();
    assert!(out.contains("from='alice@localhost/two'"), "{out}");
}

#[tokio::test]
async fn resource_conflict_replaces_old_session_by_default() {
    let server = server();
    let mut first = server.login("alice", "same").await.unwrap();
    let (mut second, jid) = XmlClient::logged_in(server.port, "localhost", "alice", "secret", "same").await.unwrap();
    assert_eq!(jid, "alice@localhost/same");
    // RFC 6120 §7.7.2.2: the old session gets a conflict stream error.
    let out = first.expect_closed().await.unwrap();
    assert!(out.contains("<conflict "), "{out}");
    second.barrier().await.unwrap();
    // RFC 6120 §7.6: an empty resource gets a server-generated one.
    let mut c = tls_client(&server).await;
    c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{PLAIN_ALICE}</auth>"))
        .await
        .unwrap();
    c.expect("<success").await.unwrap();
    c.open().await.unwrap();
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>").await.unwrap();
    let out = c.expect("</iq>").await.unwrap();
    assert!(out.contains("<jid>alice@localhost/"), "{out}");
}

#[tokio::test]
async fn direct_tls_login() {
    let server = server();
    // XEP-0368: TLS from the first byte with ALPN xmpp-client.
    let mut c = XmlClient::connect_direct_tls(server.tls_port, "localhost").await.unwrap();
    let features = c.open().await.unwrap();
    assert!(!features.contains("<starttls"), "{features}");
    let jid = c.login_plain("alice", "secret", "tls").await.unwrap();
    assert_eq!(jid, "alice@localhost/tls");
}

#[tokio::test]
async fn sigterm_closes_streams_and_exits_zero() {
    let mut server = server();
    let mut c = server.login("alice", "r").await.unwrap();
    let status = server.terminate().unwrap();
    assert!(status.success(), "{status}");
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<system-shutdown ") && out.ends_with("</stream:stream>"), "{out}");
}

/// A burst larger than one write batch reaches the recipient whole: every
/// stanza taken from a session's queue is written (nothing acknowledged by
/// the router is lost between queue and socket).
#[tokio::test]
async fn a_burst_of_messages_arrives_complete_and_in_order() {
    let server = server();
    let mut alice = server.login("alice", "home").await.unwrap();
    let (mut bob, bob_jid) = XmlClient::logged_in(server.port, "localhost", "bob", "secret", "phone").await.unwrap();
    let burst: String = (0..500)
        .map(|i| format!("<message to='{bob_jid}' type='chat' id='b{i}'><body>n{i}.</body></message>"))
        .collect();
    alice.send(&burst).await.unwrap();
    let out = bob.expect("<body>n499.</body>").await.unwrap();
    let mut last = None;
    for i in 0..500 {
        let pos = out.find(&format!("<body>n{i}.</body>")).unwrap_or_else(|| panic!("message {i} lost"));
        assert!(last.is_none_or(|l| l < pos), "message {i} out of order");
        last = Some(pos);
    }
}
