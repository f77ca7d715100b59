//! XEP-0357 push notifications against the real binary, with a raw
//! component (XEP-0114) as the app server: exactly one notification per
//! message while the account's only session hibernates (XEP-0198) or is
//! gone, none while it is attached, and an app server's error ends the
//! registration (§5).

use starling_testkit::{TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const APP_SERVER: &str = "push.localhost";
const SECRET: &str = "app-secret";
const SM: &str = "urn:xmpp:sm:3";

fn server() -> TestServer {
    TestServer::builder(BIN)
        .component(APP_SERVER, SECRET)
        .config("[modules.push]\ninclude_body = true\n")
        .with_users(&[("alice", "secret"), ("bob", "secret")])
        .expect("server starts")
}

/// §5 example 9: enable with a node and publish-options (a secret).
fn enable(node: &str) -> String {
    format!(
        "<iq type='set' id='enable-{node}'><enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='{node}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='secret'><value>{node}-secret</value></field></x></enable></iq>"
    )
}

/// The next notification the app server gets: its body field, node and
/// message count; answered with a result, or an error when `refuse(node)`.
async fn next_notification(app: &mut XmlClient, refuse: impl Fn(&str) -> bool) -> (String, String, String) {
    let (_, iq) = app.take_stanza("<iq ").await.unwrap();
    assert!(iq.contains("from='bob@localhost'") && iq.contains(&format!("to='{APP_SERVER}'")), "{iq}");
    assert!(iq.contains("<value>urn:xmpp:push:summary</value>"), "{iq}");
    let field = |var: &str| {
        let after = iq.split(&format!("var='{var}'")).nth(1).unwrap_or_else(|| panic!("no {var} in {iq}"));
        after.split("<value>").nth(1).unwrap().split("</value>").next().unwrap().to_owned()
    };
    let node = iq.split("<publish node='").nth(1).unwrap().split('\'').next().unwrap().to_owned();
    assert_eq!(field("secret"), format!("{node}-secret"), "the registration's publish-options: {iq}");
    assert_eq!(field("last-message-sender").split('/').next(), Some("alice@localhost"));
    let id = iq.split(" id='").nth(1).unwrap().split('\'').next().unwrap();
    let reply = if refuse(&node) {
        format!(
            "<iq type='error' id='{id}' from='{APP_SERVER}' to='bob@localhost'><error type='cancel'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
    } else {
        format!("<iq type='result' id='{id}' from='{APP_SERVER}' to='bob@localhost'/>")
    };
    app.send(&reply).await.unwrap();
    (field("last-message-body"), node, field("message-count"))
}

/// Waits until the server has handled everything the app server sent.
async fn app_barrier(app: &mut XmlClient) {
    app.send(&format!(
        "<iq type='get' id='app-ping' from='{APP_SERVER}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await
    .unwrap();
    app.take_stanza("id='app-ping'").await.unwrap();
}

const ACCEPT: fn(&str) -> bool = |_| false;

async fn chat(alice: &mut XmlClient, body: &str) {
    alice.send(&format!("<message to='bob@localhost' type='chat'><body>{body}</body></message>")).await.unwrap();
    alice.barrier().await.unwrap();
}

#[tokio::test]
async fn a_sleeping_phone_gets_one_notification_per_message_and_none_while_awake() {
    let server = server();
    let mut app = XmlClient::component(server.component_port, APP_SERVER, SECRET).await.unwrap();
    let mut alice = server.online("alice", "desk").await.unwrap();
    let (mut phone, _) = XmlClient::logged_in(server.port, "localhost", "bob", "secret", "phone").await.unwrap();
    phone.send(&format!("<enable xmlns='{SM}' resume='true'/>")).await.unwrap();
    phone.expect("<enabled").await.unwrap();
    let enabled = phone.request(&enable("n1"), "enable-n1").await.unwrap();
    assert!(enabled.contains("type='result'"), "{enabled}");

    phone.send("<presence/>").await.unwrap();
    phone.barrier().await.unwrap();

    // Awake: the message is delivered, no notification. The phone
    // acknowledges the four stanzas it got (XEP-0198 §4: the enable
    // result, its own presence, the ping answer, the message), so nothing is left
    // unacknowledged when it falls asleep.
    chat(&mut alice, "while awake").await;
    phone.expect("while awake").await.unwrap();
    phone.send(&format!("<a xmlns='{SM}' h='4'/>")).await.unwrap();
    phone.barrier().await.unwrap();

    // Asleep: the connection is gone, the session hibernates.
    drop(phone);
    chat(&mut alice, "asleep one").await;
    chat(&mut alice, "asleep two").await;
    // §5: one notification per message, in order, counting what waits.
    assert_eq!(next_notification(&mut app, ACCEPT).await, ("asleep one".into(), "n1".into(), "1".into()));
    assert_eq!(next_notification(&mut app, ACCEPT).await, ("asleep two".into(), "n1".into(), "2".into()));
    // And nothing else in between: the next one is for the next message.
    chat(&mut alice, "asleep three").await;
    assert_eq!(next_notification(&mut app, ACCEPT).await.0, "asleep three");
}

#[tokio::test]
async fn an_offline_account_is_notified_and_an_app_server_error_ends_a_registration() {
    let server = server();
    let mut app = XmlClient::component(server.component_port, APP_SERVER, SECRET).await.unwrap();
    let mut alice = server.online("alice", "desk").await.unwrap();
    {
        let mut bob = server.online("bob", "phone").await.unwrap();
        for node in ["gone", "kept"] {
            let reply = bob.request(&enable(node), &format!("enable-{node}")).await.unwrap();
            assert!(reply.contains("type='result'"), "{reply}");
        }
        // A disable for an unknown node changes nothing.
        let reply = bob
            .request(
                &format!(
                    "<iq type='set' id='d'><disable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='other'/></iq>"
                ),
                "d",
            )
            .await
            .unwrap();
        assert!(reply.contains("type='result'"), "{reply}");
        bob.send("</stream:stream>").await.unwrap();
        bob.expect_closed().await.unwrap();
    }

    // Offline: both registrations are notified; the "gone" one refuses.
    chat(&mut alice, "first").await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let (body, node, _) = next_notification(&mut app, |node| node == "gone").await;
        assert_eq!(body, "first");
        nodes.push(node);
    }
    nodes.sort();
    assert_eq!(nodes, ["gone", "kept"]);
    app_barrier(&mut app).await;

    // §5: after its error "gone" is no longer notified: the next two
    // notifications are "kept"'s, for the next two messages.
    chat(&mut alice, "second").await;
    chat(&mut alice, "third").await;
    for expected in ["second", "third"] {
        let (body, node, _) = next_notification(&mut app, ACCEPT).await;
        assert_eq!((body.as_str(), node.as_str()), (expected, "kept"));
    }
}
