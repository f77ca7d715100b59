//! XMPP over WebSocket (RFC 7395) against the real server: login, binding
//! and messages with a TCP client, stream management across transports,
//! and the framing's error rules — each leaving other sessions unharmed.

use starling_testkit::{Script, TestServer, WsClient, WsMessage, XmlClient, NS_FRAMING};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const SM: &str = "urn:xmpp:sm:3";

fn server(extra: &str) -> TestServer {
    TestServer::builder(BIN).config(extra).with_users(&[("alice", "secret"), ("bob", "secret")]).expect("server starts")
}

async fn ws_bound(server: &TestServer, resource: &str) -> WsClient {
    let mut ws = WsClient::connect(server.http_port, "localhost").await.unwrap();
    ws.open().await.unwrap();
    ws.login_plain("alice", "secret", resource).await.unwrap();
    ws
}

async fn tcp_bob(server: &TestServer) -> XmlClient {
    XmlClient::logged_in(server.port, "localhost", "bob", "secret", "desk").await.unwrap().0
}

#[tokio::test]
async fn login_bind_and_chat_with_a_tcp_client() {
    let server = server("");
    let mut ws = WsClient::connect(server.http_port, "localhost").await.unwrap();
    let features = ws.open().await.unwrap();
    // RFC 7395 §3.3.2: our <open/> in the framing namespace, version 1.0.
    assert!(features.contains(&format!("<open xmlns='{NS_FRAMING}' from='localhost'")), "{features}");
    assert!(features.contains("version='1.0'"), "{features}");
    // The plain listener is trusted (behind a TLS proxy): PLAIN offered,
    // no STARTTLS on a WebSocket, no -PLUS without channel bindings.
    assert!(features.contains("<mechanism>PLAIN</mechanism>"), "{features}");
    assert!(!features.contains("starttls") && !features.contains("-PLUS"), "{features}");
    let jid = ws.login_plain("alice", "secret", "web").await.unwrap();
    assert_eq!(jid, "alice@localhost/web");

    let mut bob = tcp_bob(&server).await;
    ws.send("<message to='bob@localhost/desk' type='chat' id='w1'><body>from the web</body></message>").await.unwrap();
    let got = bob.expect("</message>").await.unwrap();
    assert!(got.contains("from='alice@localhost/web'") && got.contains("from the web"), "{got}");
    bob.send("<message to='alice@localhost/web' type='chat' id='t1'><body>from tcp</body></message>").await.unwrap();
    // RFC 7395 §3.3.3: every message one element, in the jabber:client namespace.
    let got = ws.expect("</message>").await.unwrap();
    assert!(got.starts_with("<message xmlns='jabber:client'"), "{got}");

    // RFC 7395 §3.6: <close/> is answered with <close/> and the socket closes.
    ws.send(&format!("<close xmlns='{NS_FRAMING}'/>")).await.unwrap();
    let rest = ws.expect_closed().await.unwrap();
    assert!(rest.contains(&format!("<close xmlns='{NS_FRAMING}'/>")), "{rest}");
    bob.sync("after").await.unwrap();
}

#[tokio::test]
async fn invalid_from_is_a_stream_error_as_on_tcp() {
    let server = server("");
    let mut ws = ws_bound(&server, "web").await;
    // RFC 6120 §8.1.2.1 / §4.9.3.9: another account's address.
    ws.send("<message from='bob@localhost/desk' to='bob@localhost'><body>x</body></message>").await.unwrap();
    let closed = ws.expect_closed().await.unwrap();
    assert!(closed.contains("<invalid-from"), "{closed}");
    assert!(closed.contains(&format!("<close xmlns='{NS_FRAMING}'/>")), "{closed}");
}

#[tokio::test]
async fn the_xmpp_subprotocol_is_required() {
    let server = server("");
    let mut bob = tcp_bob(&server).await;
    // RFC 7395 §3.2: no session without the "xmpp" subprotocol.
    for protocols in ["", "mqtt"] {
        let refused = WsClient::connect_with(server.http_port, "localhost", protocols).await.unwrap();
        assert_eq!(refused.err(), Some(400), "protocols {protocols:?}");
    }
    let accepted = WsClient::connect_with(server.http_port, "localhost", "mqtt, xmpp").await.unwrap();
    assert!(accepted.is_ok());
    bob.sync("unharmed").await.unwrap();
}

#[tokio::test]
async fn oversized_message_is_a_policy_violation() {
    let server = server("[limits]\nmax_stanza_bytes = 10000\n");
    let mut bob = tcp_bob(&server).await;
    let mut ws = ws_bound(&server, "web").await;
    let body = "x".repeat(20_000);
    ws.send(&format!("<message to='bob@localhost'><body>{body}</body></message>")).await.unwrap();
    // RFC 6120 §4.9.3.14, the same limit as on TCP.
    let closed = ws.expect_closed().await.unwrap();
    assert!(closed.contains("<policy-violation"), "{closed}");
    bob.sync("unharmed").await.unwrap();
}

#[tokio::test]
async fn a_message_past_the_socket_limit_closes_only_its_connection() {
    let server = server("[limits]\nmax_stanza_bytes = 10000\n");
    let mut bob = tcp_bob(&server).await;
    let mut other = ws_bound(&server, "other").await;
    let mut ws = ws_bound(&server, "web").await;
    // Far past the stanza limit (the socket takes up to twice it): the
    // WebSocket layer drops the connection (RFC 6455 §7.4.1, 1009) before
    // any XML is parsed.
    let body = "x".repeat(40_000);
    ws.send(&format!("<message to='bob@localhost'><body>{body}</body></message>")).await.unwrap();
    let closed = ws.expect_closed().await.unwrap();
    assert!(!closed.contains("<message"), "{closed}");
    other.sync("unharmed").await.unwrap();
    bob.sync("unharmed").await.unwrap();
}

#[tokio::test]
async fn messages_that_are_not_one_element_are_not_well_formed() {
    let server = server("");
    let mut bob = tcp_bob(&server).await;
    // RFC 7395 §3.3.3: one complete element per message.
    for bad in ["hello", "<message to='bob@localhost'>", "<presence/><presence/>", "<a></b>"] {
        let mut ws = WsClient::connect(server.http_port, "localhost").await.unwrap();
        ws.open().await.unwrap();
        ws.send(bad).await.unwrap();
        let closed = ws.expect_closed().await.unwrap();
        assert!(closed.contains("<not-well-formed"), "{bad:?}: {closed}");
    }
    // RFC 7395 §3.2: XMPP travels in text messages only.
    let mut ws = WsClient::connect(server.http_port, "localhost").await.unwrap();
    ws.open().await.unwrap();
    ws.send_message(WsMessage::binary(b"<presence/>".to_vec())).await.unwrap();
    let closed = ws.expect_closed().await.unwrap();
    assert!(closed.contains("<unsupported-encoding"), "{closed}");
    bob.sync("unharmed").await.unwrap();
}

/// Binds alice/phone over WebSocket with resumable stream management and
/// has bob send her one message she gets; returns the SM-ID.
async fn phone_with_sm(server: &TestServer, bob: &mut XmlClient) -> (WsClient, String) {
    let mut phone = ws_bound(server, "phone").await;
    phone.send(&format!("<enable xmlns='{SM}' resume='true'/>")).await.unwrap();
    let enabled = phone.expect("/>").await.unwrap();
    let id = starling_testkit::attr(&enabled, "id").expect("an SM-ID");
    bob.send("<message to='alice@localhost/phone' type='chat' id='m1'><body>one</body></message>").await.unwrap();
    phone.expect("id='m1'").await.unwrap();
    (phone, id)
}

#[tokio::test]
async fn stream_management_resumes_over_websocket() {
    let server = server("");
    let mut bob = tcp_bob(&server).await;
    let (phone, id) = phone_with_sm(&server, &mut bob).await;
    // The connection is lost without <close/> (XEP-0198 §5).
    drop(phone);
    bob.send("<message to='alice@localhost/phone' type='chat' id='m2'><body>two</body></message>").await.unwrap();
    bob.sync("sent").await.unwrap();
    let mut phone = WsClient::connect(server.http_port, "localhost").await.unwrap();
    phone.open().await.unwrap();
    phone.auth_plain("alice", "secret").await.unwrap();
    phone.send(&format!("<resume xmlns='{SM}' previd='{id}' h='1'/>")).await.unwrap();
    let resumed = phone.expect("id='m2'").await.unwrap();
    assert!(resumed.contains("<resumed") && !resumed.contains("id='m1'"), "{resumed}");
    phone.sync("resumed").await.unwrap();
}

#[tokio::test]
async fn a_websocket_session_resumes_over_tcp() {
    let server = server("");
    let mut bob = tcp_bob(&server).await;
    let (_phone, id) = phone_with_sm(&server, &mut bob).await;
    // The old WebSocket is still open: resumption takes the session over.
    let mut tcp = XmlClient::authenticated(server.port, "localhost", "alice", "secret").await.unwrap();
    tcp.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>")).await.unwrap();
    let resumed = tcp.expect("id='m1'").await.unwrap();
    assert!(resumed.contains("<resumed"), "{resumed}");
    bob.send("<message to='alice@localhost/phone' type='chat' id='m3'><body>three</body></message>").await.unwrap();
    tcp.expect("id='m3'").await.unwrap();
}

#[tokio::test]
async fn stream_management_errors_over_websocket_leave_the_session_alone() {
    let server = server("");
    let mut bob = tcp_bob(&server).await;
    let (mut phone, id) = phone_with_sm(&server, &mut bob).await;
    // XEP-0198 §5: a session of another account is not found for bob.
    let mut thief = WsClient::connect(server.http_port, "localhost").await.unwrap();
    thief.open().await.unwrap();
    thief.auth_plain("bob", "secret").await.unwrap();
    thief.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>")).await.unwrap();
    let failed = thief.expect("</failed>").await.unwrap();
    assert!(failed.contains("<item-not-found"), "{failed}");
    assert_eq!(thief.bind("stolen").await.unwrap(), "bob@localhost/stolen");
    phone.sync("still-mine").await.unwrap();
    // XEP-0198 §4: acknowledging more than was sent (a message, a pong) is a
    // stream error with <handled-count-too-high/> (§6); only that stream ends.
    phone.send(&format!("<a xmlns='{SM}' h='5'/>")).await.unwrap();
    let closed = phone.expect_closed().await.unwrap();
    assert!(closed.contains("<undefined-condition"), "{closed}");
    assert!(closed.contains(&format!("<handled-count-too-high xmlns='{SM}' h='5' send-count='2'/>")), "{closed}");
    thief.sync("unharmed").await.unwrap();
    bob.sync("unharmed").await.unwrap();
}
