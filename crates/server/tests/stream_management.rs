//! Stream management (XEP-0198) and client state indication (XEP-0352) as
//! raw-XML conversations against the real server: acks, resumption after a
//! lost connection with nothing lost or repeated, takeover of a live
//! session, expiry into offline storage, and the error cases.

use starling_testkit::{Script, TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const SM: &str = "urn:xmpp:sm:3";

fn server(c2s: &str) -> TestServer {
    TestServer::builder(BIN).c2s(c2s).with_users(&[("alice", "secret"), ("bob", "secret")]).expect("server starts")
}

async fn bound(server: &TestServer, user: &str, resource: &str) -> XmlClient {
    XmlClient::logged_in(server.port, "localhost", user, "secret", resource).await.expect("login").0
}

/// Binds alice/phone and enables resumable stream management; returns the SM-ID.
async fn phone_with_sm(server: &TestServer) -> (XmlClient, String) {
    let mut phone = bound(server, "alice", "phone").await;
    phone.send(&format!("<enable xmlns='{SM}' resume='true'/>")).await.unwrap();
    let enabled = phone.expect("/>").await.unwrap();
    assert!(enabled.contains("<enabled") && enabled.contains("resume='true'"), "{enabled}");
    assert!(enabled.contains("max='"), "XEP-0198 §5: the timeout is advertised: {enabled}");
    let id = attr(&enabled, "id").expect("an SM-ID");
    (phone, id)
}

fn attr(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!(" {name}='"))? + name.len() + 3;
    let len = xml[start..].find('\'')?;
    Some(xml[start..start + len].to_owned())
}

fn chat(to: &str, id: &str, body: &str) -> String {
    format!("<message to='{to}' type='chat' id='{id}'><body>{body}</body></message>")
}

#[tokio::test]
async fn acks_count_stanzas_both_ways() {
    let server = server("");
    let mut bob = bound(&server, "bob", "desk").await;
    let (mut phone, _) = phone_with_sm(&server).await;
    // XEP-0198 §2 and XEP-0352 §3: offered after authentication.
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    c.starttls().await.unwrap();
    let features = c.auth_plain("alice", "secret").await.unwrap();
    assert!(features.contains(&format!("<sm xmlns='{SM}'/>")), "{features}");
    assert!(features.contains("<csi xmlns='urn:xmpp:csi:0'/>"), "{features}");

    for i in 1..=3 {
        bob.send(&chat("alice@localhost/phone", &format!("m{i}"), "hi")).await.unwrap();
    }
    bob.sync("bob-sync").await.unwrap();
    let got = phone.expect("id='m3'").await.unwrap();
    assert!(got.contains("id='m1'") && got.contains("id='m2'"), "{got}");
    // §4: the server asks for an ack on its own (after the first batch of
    // stanzas written, which may be all three).
    let request = format!("<r xmlns='{SM}'/>");
    if !got.contains(&request) {
        phone.expect(&request).await.unwrap();
    }
    phone.send(&format!("<a xmlns='{SM}' h='3'/>")).await.unwrap();
    // Our own count: one stanza (the ping) handled before the <r/>.
    phone.sync("p1").await.unwrap();
    phone.send(&format!("<r xmlns='{SM}'/>")).await.unwrap();
    phone.expect(&format!("<a xmlns='{SM}' h='1'/>")).await.unwrap();
}

#[tokio::test]
async fn enable_twice_or_before_bind_fails() {
    let server = server("");
    let mut c = XmlClient::authenticated(server.port, "localhost", "alice", "secret").await.unwrap();
    // §3: <enable/> before binding a resource.
    c.send(&format!("<enable xmlns='{SM}'/>")).await.unwrap();
    c.expect("<unexpected-request").await.unwrap();
    c.bind("r").await.unwrap();
    c.send(&format!("<enable xmlns='{SM}'/>")).await.unwrap();
    c.expect("<enabled").await.unwrap();
    c.send(&format!("<enable xmlns='{SM}'/>")).await.unwrap();
    c.expect("<failed").await.unwrap();
    c.sync("alive").await.unwrap();
}

#[tokio::test]
async fn a_lost_connection_resumes_with_every_unacked_stanza_once_in_order() {
    let server = server("");
    let mut bob = bound(&server, "bob", "desk").await;
    let (mut phone, id) = phone_with_sm(&server).await;
    bob.send(&chat("alice@localhost/phone", "m1", "one")).await.unwrap();
    bob.send(&chat("alice@localhost/phone", "m2", "two")).await.unwrap();
    phone.expect("id='m2'").await.unwrap();
    // The phone handled m1 only, then its network went away without a close.
    drop(phone);
    bob.send(&chat("alice@localhost/phone", "m3", "three")).await.unwrap();
    bob.sync("bob-sync").await.unwrap();

    let mut phone = XmlClient::authenticated(server.port, "localhost", "alice", "secret").await.unwrap();
    phone.send(&format!("<resume xmlns='{SM}' previd='{id}' h='1'/>")).await.unwrap();
    let resumed = phone.expect("/>").await.unwrap();
    assert!(resumed.contains("<resumed") && resumed.contains(&format!("previd='{id}'")), "{resumed}");
    // §5: our h counts what the phone sent us: nothing.
    assert_eq!(attr(&resumed, "h").as_deref(), Some("0"), "{resumed}");
    let replay = phone.sync("after-resume").await.unwrap();
    assert!(!replay.contains("id='m1'"), "m1 was acknowledged: {replay}");
    let (m2, m3) = (replay.find("id='m2'").expect("m2 again"), replay.find("id='m3'").expect("m3"));
    assert!(m2 < m3, "in order: {replay}");
    assert_eq!(replay.matches("id='m2'").count(), 1, "{replay}");
    // The session kept its resource and presence state: bob still reaches it.
    bob.send(&chat("alice@localhost/phone", "m4", "four")).await.unwrap();
    phone.expect("id='m4'").await.unwrap();
}

#[tokio::test]
async fn resuming_a_live_session_takes_it_over() {
    let server = server("");
    let (mut old, id) = phone_with_sm(&server).await;
    let mut new = XmlClient::authenticated(server.port, "localhost", "alice", "secret").await.unwrap();
    new.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>")).await.unwrap();
    new.expect("<resumed").await.unwrap();
    // §5: the old stream gets a conflict stream error.
    let out = old.expect_closed().await.unwrap();
    assert!(out.contains("<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{out}");
    new.sync("alive").await.unwrap();
}

#[tokio::test]
async fn another_accounts_session_cannot_be_resumed() {
    let server = server("");
    let (_phone, id) = phone_with_sm(&server).await;
    let mut bob = XmlClient::authenticated(server.port, "localhost", "bob", "secret").await.unwrap();
    bob.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>")).await.unwrap();
    // §5: unknown to this account — item-not-found, and binding still works.
    bob.expect("<item-not-found").await.unwrap();
    bob.send(&format!("<resume xmlns='{SM}' previd='no-such-session' h='0'/>")).await.unwrap();
    bob.expect("<item-not-found").await.unwrap();
    assert_eq!(bob.bind("desk").await.unwrap(), "bob@localhost/desk");
}

#[tokio::test]
async fn acknowledging_more_than_was_sent_ends_the_stream() {
    let server = server("");
    let (mut phone, _) = phone_with_sm(&server).await;
    phone.send(&format!("<a xmlns='{SM}' h='5'/>")).await.unwrap();
    // XEP-0198 §5 (Error Handling).
    let out = phone.expect_closed().await.unwrap();
    assert!(out.contains("<undefined-condition"), "{out}");
    assert!(out.contains("<handled-count-too-high xmlns='urn:xmpp:sm:3' h='5' send-count='0'/>"), "{out}");
}

#[tokio::test]
async fn an_expired_session_answers_its_iqs_and_stores_its_messages_offline() {
    let server = server("resume_timeout_secs = 1");
    let mut bob = bound(&server, "bob", "desk").await;
    let (mut phone, id) = phone_with_sm(&server).await;
    phone.send("<presence/>").await.unwrap();
    phone.sync("p").await.unwrap();
    drop(phone);
    bob.send(&chat("alice@localhost", "m1", "while away")).await.unwrap();
    // The IQ waits in the hibernated session; at expiry it is answered.
    bob.send("<iq type='get' id='q1' to='alice@localhost/phone'><ping xmlns='urn:xmpp:ping'/></iq>").await.unwrap();
    let answer = bob.expect("id='q1'").await.unwrap();
    let answer = answer + &bob.expect("</iq>").await.unwrap();
    assert!(answer.contains("type='error'"), "{answer}");

    let mut phone = XmlClient::authenticated(server.port, "localhost", "alice", "secret").await.unwrap();
    phone.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>")).await.unwrap();
    phone.expect("<item-not-found").await.unwrap();
    phone.bind("phone").await.unwrap();
    phone.send("<presence/>").await.unwrap();
    // XEP-0160: the message comes from offline storage, once.
    let out = phone.expect("id='m1'").await.unwrap();
    let out = out + &phone.sync("s").await.unwrap();
    assert_eq!(out.matches("while away").count(), 1, "{out}");
}

#[tokio::test]
async fn an_inactive_client_gets_presence_and_chat_states_with_the_next_message() {
    let server = server("");
    let mut bob = bound(&server, "bob", "desk").await;
    let mut phone = bound(&server, "alice", "phone").await;
    phone.send("<inactive xmlns='urn:xmpp:csi:0'/>").await.unwrap();
    phone.sync("s0").await.unwrap();
    bob.send("<presence to='alice@localhost/phone' id='pr1'/>").await.unwrap();
    bob.send("<presence to='alice@localhost/phone' id='pr2'><show>away</show></presence>").await.unwrap();
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='cs1'>\
         <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    .await
    .unwrap();
    bob.sync("b1").await.unwrap();
    // XEP-0352 §1: held while inactive.
    let quiet = phone.sync("s1").await.unwrap();
    assert!(!quiet.contains("pr") && !quiet.contains("cs1"), "{quiet}");
    bob.send(&chat("alice@localhost/phone", "m1", "hello")).await.unwrap();
    let out = phone.expect("id='m1'").await.unwrap();
    assert!(!out.contains("id='pr1'"), "only the newest presence per contact: {out}");
    let (pr2, cs1, m1) = (out.find("id='pr2'").unwrap(), out.find("id='cs1'").unwrap(), out.find("id='m1'").unwrap());
    assert!(pr2 < cs1 && cs1 < m1, "held stanzas first, in order: {out}");
    // <active/> flushes what is held.
    bob.send("<presence to='alice@localhost/phone' id='pr3'/>").await.unwrap();
    bob.sync("b2").await.unwrap();
    phone.send("<active xmlns='urn:xmpp:csi:0'/>").await.unwrap();
    phone.expect("id='pr3'").await.unwrap();
}
