//! External components (XEP-0114) and the domain routing table, as scripted
//! raw-XML conversations against the real binary: the handshake and its
//! errors, routing both ways, bounces while a component is away, service
//! domains in disco#items (XEP-0030 §4), and RFC 6121 §8.5.3.2.1.

use starling_testkit::{TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const GATEWAY: &str = "gw.localhost";
const SECRET: &str = "s3cret";

fn server() -> TestServer {
    let server = TestServer::builder(BIN)
        .component(GATEWAY, SECRET)
        .config("[[services]]\ndomain = \"irc.localhost\"\nname = \"IRC bridge\"\nsecret = \"other\"\n")
        .start()
        .expect("server starts");
    server.add_user("alice", "secret").unwrap();
    server.add_user("bob", "secret").unwrap();
    server
}

async fn component(server: &TestServer) -> XmlClient {
    XmlClient::component(server.component_port, GATEWAY, SECRET).await.unwrap()
}

async fn bound(server: &TestServer, user: &str, resource: &str) -> (XmlClient, String) {
    XmlClient::logged_in(server.port, "localhost", user, "secret", resource).await.unwrap()
}

/// A ping round trip from the component to the server: the component's
/// stream works (and everything sent before it has been processed).
async fn component_pings(component: &mut XmlClient, id: &str) {
    component
        .send(&format!("<iq type='get' id='{id}' from='{GATEWAY}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"))
        .await
        .unwrap();
    let mut out = component.expect(&format!("id='{id}'")).await.unwrap();
    out += &component.expect(">").await.unwrap();
    assert!(out.contains(&format!("id='{id}'")) && out.contains("type='result'"), "{out}");
}

#[tokio::test]
async fn handshake_errors_close_only_that_stream() {
    let server = server();
    let mut gateway = component(&server).await;

    // XEP-0114 §3: a wrong secret is `not-authorized`, and closes the stream.
    let mut c = XmlClient::connect(server.component_port, GATEWAY).await.unwrap();
    let id = c.open_component_stream().await.unwrap();
    c.send_component_handshake(&id, "wrong").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{out}");
    assert!(!out.contains("<handshake"), "{out}");

    // §3: a domain the server does not serve as a component: `host-unknown`.
    let mut c = XmlClient::connect(server.component_port, "nothere.localhost").await.unwrap();
    c.open_component_stream().await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<host-unknown "), "{out}");

    // §3: a stream in another namespace: `invalid-namespace`.
    let mut c = XmlClient::connect(server.component_port, GATEWAY).await.unwrap();
    c.send(&format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{GATEWAY}'>"
    ))
    .await
    .unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<invalid-namespace "), "{out}");

    // §3: the domain is already served by a connected component: `conflict`
    // (even with the right secret), and the first one is unharmed.
    let mut c = XmlClient::connect(server.component_port, GATEWAY).await.unwrap();
    let id = c.open_component_stream().await.unwrap();
    c.send_component_handshake(&id, SECRET).await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<conflict "), "{out}");
    component_pings(&mut gateway, "alive").await;

    // §3: `from` must be at the component's domain; RFC 6120 §4.9.3.9.
    gateway.send("<message from='eve@localhost' to='alice@localhost'><body>spoof</body></message>").await.unwrap();
    let out = gateway.expect_closed().await.unwrap();
    assert!(out.contains("<invalid-from "), "{out}");
    // Its domain is free again: the component reconnects.
    let mut again = component(&server).await;
    component_pings(&mut again, "back").await;

    // RFC 6120 §4.9.3.14: stanzas between servers carry `from` and `to`.
    again.send("<message to='alice@localhost'><body>who?</body></message>").await.unwrap();
    let out = again.expect_closed().await.unwrap();
    assert!(out.contains("<improper-addressing "), "{out}");
}

#[tokio::test]
async fn users_and_components_exchange_messages_and_iqs() {
    let server = server();
    let mut gateway = component(&server).await;
    let (mut alice, alice_jid) = bound(&server, "alice", "home").await;

    // User → component: the whole domain (any address at it) is the component's.
    alice
        .send("<message to='room@gw.localhost/nick' type='chat' id='m1'><body>to the bridge</body></message>")
        .await
        .unwrap();
    let out = gateway.expect("</message>").await.unwrap();
    assert!(out.contains("xmlns='jabber:component:accept'"), "in the component namespace (XEP-0114 §3): {out}");
    assert!(out.contains(&format!("from='{alice_jid}'")) && out.contains("to the bridge"), "{out}");

    // Component → user, from any address at its domain.
    gateway
        .send(&format!(
            "<message from='room@gw.localhost/nick' to='{alice_jid}' type='chat' id='m2'><body>from the bridge</body></message>"
        ))
        .await
        .unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("xmlns='jabber:client'") && out.contains("from the bridge"), "{out}");
    assert!(out.contains("from='room@gw.localhost/nick'"), "{out}");

    // IQ user → component and its result back (RFC 6120 §8.2.3).
    alice.send("<iq type='get' id='v1' to='gw.localhost'><query xmlns='jabber:iq:version'/></iq>").await.unwrap();
    let out = gateway.expect("</iq>").await.unwrap();
    assert!(out.contains("id='v1'") && out.contains(&format!("from='{alice_jid}'")), "{out}");
    gateway
        .send(&format!(
            "<iq type='result' id='v1' from='gw.localhost' to='{alice_jid}'>\
             <query xmlns='jabber:iq:version'><name>gw</name></query></iq>"
        ))
        .await
        .unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("type='result'") && out.contains("<name>gw</name>"), "{out}");

    // IQ component → user and back.
    gateway
        .send(&format!(
            "<iq type='get' id='p1' from='gw.localhost' to='{alice_jid}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await
        .unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("id='p1'") && out.contains("from='gw.localhost'"), "{out}");
    alice.send("<iq type='result' id='p1' to='gw.localhost'/>").await.unwrap();
    let mut out = gateway.expect("id='p1'").await.unwrap();
    out += &gateway.expect(">").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");

    // The component's IQs to the server are answered to it (XEP-0030 §3.1).
    gateway
        .send("<iq type='get' id='d1' from='gw.localhost' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await
        .unwrap();
    let out = gateway.expect("</iq>").await.unwrap();
    assert!(out.contains("id='d1'") && out.contains("type='result'") && out.contains("category='server'"), "{out}");

    // A stanza from the component to an account that does not exist comes back as an error.
    gateway
        .send("<message from='bot@gw.localhost' to='nobody@localhost' type='chat' id='m3'><body>x</body></message>")
        .await
        .unwrap();
    let out = gateway.expect("</message>").await.unwrap();
    assert!(out.contains("id='m3'") && out.contains("<service-unavailable "), "{out}");
}

#[tokio::test]
async fn stanzas_to_an_absent_component_bounce() {
    let server = server();
    let (mut alice, _) = bound(&server, "alice", "home").await;

    // Never connected: RFC 6120 §8.3.3.19 `service-unavailable`.
    alice.send("<message to='bot@gw.localhost' type='chat' id='m1'><body>anyone?</body></message>").await.unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("id='m1'") && out.contains("<service-unavailable "), "{out}");

    // Connected, then gone: the domain is unavailable again.
    let mut gateway = component(&server).await;
    alice.send("<iq type='get' id='i1' to='gw.localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await.unwrap();
    gateway.expect("id='i1'").await.unwrap();
    gateway.send("</stream:stream>").await.unwrap();
    gateway.expect_closed().await.unwrap();
    alice.send("<iq type='get' id='i2' to='gw.localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await.unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("id='i2'") && out.contains("<service-unavailable "), "{out}");
}

#[tokio::test]
async fn service_domains_are_items_of_their_host() {
    let server = server();
    let (mut alice, _) = bound(&server, "alice", "home").await;
    // XEP-0030 §4.1: the host's items are its services, configured or not connected.
    alice
        .send("<iq type='get' id='items' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
        .await
        .unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    assert!(out.contains("jid='gw.localhost'"), "{out}");
    assert!(out.contains("jid='irc.localhost'") && out.contains("name='IRC bridge'"), "{out}");
    // §4.2: a node of the host has no items here.
    alice
        .send("<iq type='get' id='node' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='x'/></iq>")
        .await
        .unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("id='node'") && !out.contains("<item "), "{out}");
}

#[tokio::test]
async fn only_chat_messages_to_a_gone_resource_reach_another() {
    let server = server();
    let (mut alice, _) = bound(&server, "alice", "home").await;
    let (mut bob, _) = bound(&server, "bob", "phone").await;
    bob.send("<presence/>").await.unwrap();
    bob.expect("<presence").await.unwrap(); // RFC 6121 §4.2.2: reflected, so available

    // RFC 6121 §8.5.3.2.1: normal (no type) and groupchat messages to a
    // resource that is not connected are bounced with service-unavailable…
    for (id, type_) in [("n1", ""), ("n2", " type='normal'"), ("g1", " type='groupchat'")] {
        alice
            .send(&format!("<message to='bob@localhost/gone' id='{id}'{type_}><body>not for phone</body></message>"))
            .await
            .unwrap();
        let out = alice.expect("</message>").await.unwrap();
        assert!(out.contains(&format!("id='{id}'")) && out.contains("<service-unavailable "), "{out}");
    }
    // …headline ones ignored…
    alice
        .send("<message to='bob@localhost/gone' id='h1' type='headline'><body>not for phone</body></message>")
        .await
        .unwrap();
    // …and chat ones handled as if to the bare JID: they reach bob's phone,
    // and are the first message it gets.
    alice
        .send("<message to='bob@localhost/gone' id='c1' type='chat'><body>chat for phone</body></message>")
        .await
        .unwrap();
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("chat for phone") && !out.contains("not for phone"), "{out}");
    // No bounce for the headline either: the next thing alice gets is the ping answer.
    alice.send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await.unwrap();
    let out = alice.expect("id='after'").await.unwrap();
    assert!(!out.contains("id='h1'"), "{out}");
}

#[tokio::test]
async fn users_subscribe_to_component_contacts() {
    let server = server();
    let mut gateway = component(&server).await;
    let (mut alice, _) = bound(&server, "alice", "home").await;

    // RFC 6121 §3.1.2: the subscription request leaves with alice's bare JID,
    // for the component's address (not bounced as remote).
    alice.send("<presence type='subscribe' to='bot@gw.localhost'/>").await.unwrap();
    let mut out = gateway.expect("type='subscribe'").await.unwrap();
    out += &gateway.expect(">").await.unwrap();
    assert!(out.contains("from='alice@localhost'") && out.contains("to='bot@gw.localhost'"), "{out}");
    // §3.1.5: the contact approves.
    gateway.send("<presence type='subscribed' from='bot@gw.localhost' to='alice@localhost'/>").await.unwrap();
    component_pings(&mut gateway, "approved").await;

    // §4.2.2: alice's initial presence probes the contacts she subscribes to,
    // the connected component's among them.
    alice.send("<presence/>").await.unwrap();
    let mut out = gateway.expect("type='probe'").await.unwrap();
    out += &gateway.expect(">").await.unwrap();
    assert!(out.contains("to='bot@gw.localhost'") && out.contains("from='alice@localhost/home'"), "{out}");
}

#[tokio::test]
async fn oversized_component_stanzas_end_only_that_stream() {
    let server = TestServer::builder(BIN)
        .component(GATEWAY, SECRET)
        .config("[limits]\nmax_stanza_bytes = 10000\n")
        .start()
        .expect("server starts");
    server.add_user("alice", "secret").unwrap();
    let (mut alice, alice_jid) = bound(&server, "alice", "home").await;
    let mut gateway = component(&server).await;
    // The client limit applies to components too: RFC 6120 §13.12 item 4,
    // `policy-violation` (§4.9.3.16) once the stanza passes it.
    let body = "x".repeat(12_000);
    gateway
        .send(&format!("<message from='bot@{GATEWAY}' to='{alice_jid}'><body>{body}</body></message>"))
        .await
        .unwrap();
    let out = gateway.expect_closed().await.unwrap();
    assert!(out.contains("<policy-violation "), "{out}");
    // Alice is unharmed; the domain is free for the component to come back.
    alice.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await.unwrap();
    alice.expect("id='alive'").await.unwrap();
    let mut again = component(&server).await;
    component_pings(&mut again, "back").await;
}
