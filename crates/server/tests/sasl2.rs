//! SASL2 (XEP-0388) with Bind 2 (XEP-0386), inline stream management, FAST
//! tokens (XEP-0484) and SCRAM downgrade protection (XEP-0474), as raw-XML
//! conversations against the real server.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use starling_testkit::{Script, TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";

fn server() -> TestServer {
    TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).expect("server starts")
}

fn attr(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!(" {name}='"))? + name.len() + 3;
    let len = xml[start..].find('\'')?;
    Some(xml[start..start + len].to_owned())
}

/// A TLS stream whose features were read.
async fn tls(server: &TestServer) -> (XmlClient, String) {
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    let features = c.starttls().await.unwrap();
    (c, features)
}

fn plain(user: &str, password: &str) -> String {
    B64.encode(format!("\0{user}\0{password}"))
}

/// HT-SHA-256-NONE initial response (draft-schmaus-kitten-sasl-ht §3).
fn ht_none(user: &str, token: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(b"Initiator");
    let mut data = format!("{user}\0").into_bytes();
    data.extend(mac.finalize().into_bytes());
    B64.encode(data)
}

fn authenticate(mechanism: &str, initial: &str, inline: &str) -> String {
    format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mechanism}'><initial-response>{initial}</initial-response>\
         <user-agent id='{UA}'><software>Test</software></user-agent>{inline}</authenticate>"
    )
}

const BIND2_SM: &str = "<bind xmlns='urn:xmpp:bind:0'><tag>Test</tag>\
    <enable xmlns='urn:xmpp:sm:3' resume='true'/><enable xmlns='urn:xmpp:carbons:2'/></bind>";

#[tokio::test]
async fn sasl2_with_bind2_binds_enables_and_issues_a_token_in_one_round_trip() {
    let server = server();
    let (mut c, features) = tls(&server).await;
    // XEP-0388 §2.1 with its inline features.
    assert!(features.contains("<authentication xmlns='urn:xmpp:sasl:2'>"), "{features}");
    assert!(features.contains("<bind xmlns='urn:xmpp:bind:0'>"), "{features}");
    assert!(features.contains("<mechanism>HT-SHA-256-NONE</mechanism>"), "{features}");
    assert!(features.contains("<feature var='urn:xmpp:carbons:2'/>"), "{features}");
    let request_token = "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";
    c.send(&authenticate("PLAIN", &plain("alice", "secret"), &format!("{BIND2_SM}{request_token}"))).await.unwrap();
    let success = c.expect("</success>").await.unwrap();
    // XEP-0386 §3.2: a full JID from the tag; SM enabled inside <bound/>.
    let jid = success.split("<authorization-identifier>").nth(1).and_then(|s| s.split('<').next()).unwrap();
    assert!(jid.starts_with("alice@localhost/Test."), "{success}");
    assert!(success.contains("<bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3'"), "{success}");
    let token = attr(&success, "token").expect("XEP-0484 §4.2: a token");
    assert!(attr(&success, "expiry").is_some_and(|e| e.ends_with('Z')), "{success}");
    // XEP-0388 §2.6.1: features follow at once, without binding (no restart),
    // and without stream management, which is on already (XEP-0198 §3:
    // a client taking the offer would enable it twice; xmpp.js then
    // dropped its session state).
    let features = c.expect("</stream:features>").await.unwrap();
    assert!(!features.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{features}");
    assert!(!features.contains("urn:xmpp:sm:3") && features.contains("urn:xmpp:csi:0"), "{features}");
    c.sync("bound").await.unwrap();

    // The same installation logs in again with the token: the same resource.
    drop(c);
    let (mut c, _) = tls(&server).await;
    let fast = "<fast xmlns='urn:xmpp:fast:0' count='1'/>";
    let bind = "<bind xmlns='urn:xmpp:bind:0'><tag>Test</tag></bind>";
    c.send(&authenticate("HT-SHA-256-NONE", &ht_none("alice", &token), &format!("{bind}{fast}"))).await.unwrap();
    let success = c.expect("</success>").await.unwrap();
    assert!(success.contains(&format!("<authorization-identifier>{jid}</authorization-identifier>")), "{success}");
    assert!(success.contains("<additional-data>"), "the responder hash: {success}");
    c.sync("again").await.unwrap();

    // XEP-0484 §4.3: a count not above the last one is a replay.
    let (mut c, _) = tls(&server).await;
    c.send(&authenticate("HT-SHA-256-NONE", &ht_none("alice", &token), fast)).await.unwrap();
    c.expect("<failure xmlns='urn:xmpp:sasl:2'><not-authorized").await.unwrap();
    // A wrong token fails too.
    c.send(&authenticate("HT-SHA-256-NONE", &ht_none("alice", "forged"), "")).await.unwrap();
    c.expect("<not-authorized").await.unwrap();

    // §4.6: invalidate, then the token is gone.
    let (mut c, _) = tls(&server).await;
    let invalidate = "<fast xmlns='urn:xmpp:fast:0' count='2' invalidate='true'/>";
    c.send(&authenticate("HT-SHA-256-NONE", &ht_none("alice", &token), invalidate)).await.unwrap();
    c.expect("</success>").await.unwrap();
    let (mut c, _) = tls(&server).await;
    c.send(&authenticate("HT-SHA-256-NONE", &ht_none("alice", &token), "<fast xmlns='urn:xmpp:fast:0' count='3'/>"))
        .await
        .unwrap();
    c.expect("<not-authorized").await.unwrap();
}

#[tokio::test]
async fn a_password_change_revokes_fast_tokens() {
    let server = server();
    let (mut c, _) = tls(&server).await;
    let request_token = "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";
    c.send(&authenticate("PLAIN", &plain("alice", "secret"), request_token)).await.unwrap();
    let success = c.expect("</success>").await.unwrap();
    let token = attr(&success, "token").unwrap();
    server.cli(&["user", "passwd", "alice@localhost", "new-secret"]).unwrap();
    let (mut c, _) = tls(&server).await;
    c.send(&authenticate("HT-SHA-256-NONE", &ht_none("alice", &token), "")).await.unwrap();
    c.expect("<not-authorized").await.unwrap();
}

#[tokio::test]
async fn sasl2_without_bind2_continues_with_resource_binding_and_resumes_inline() {
    let server = server();
    let (mut c, _) = tls(&server).await;
    c.send(&authenticate("PLAIN", &plain("alice", "secret"), "")).await.unwrap();
    let success = c.expect("</success>").await.unwrap();
    assert!(success.contains("<authorization-identifier>alice@localhost</authorization-identifier>"), "{success}");
    let features = c.expect("</stream:features>").await.unwrap();
    assert!(features.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{features}");
    assert!(features.contains("<sm xmlns='urn:xmpp:sm:3'/>"), "not on yet: offered {features}");
    c.bind("phone").await.unwrap();
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>").await.unwrap();
    let enabled = c.expect("/>").await.unwrap();
    let id = attr(&enabled, "id").unwrap();
    let mut bob = XmlClient::logged_in(server.port, "localhost", "bob", "secret", "desk").await.unwrap().0;
    drop(c);
    bob.send("<message to='alice@localhost/phone' type='chat' id='m1'><body>hi</body></message>").await.unwrap();
    bob.sync("b").await.unwrap();

    // XEP-0198 §6.2: <resume/> inline in the SASL2 request.
    let (mut c, _) = tls(&server).await;
    let resume = format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>");
    c.send(&authenticate("PLAIN", &plain("alice", "secret"), &resume)).await.unwrap();
    let success = c.expect("</success>").await.unwrap();
    assert!(success.contains("<resumed xmlns='urn:xmpp:sm:3'"), "{success}");
    assert!(success.contains("alice@localhost/phone"), "{success}");
    let features = c.expect("</stream:features>").await.unwrap();
    assert!(!features.contains("urn:xmpp:sm:3"), "resumed, so on: {features}");
    c.expect("id='m1'").await.unwrap();
    c.sync("resumed").await.unwrap();
}

#[tokio::test]
async fn scram_server_first_carries_the_downgrade_protection_hash() {
    let server = server();
    let (mut c, _) = tls(&server).await;
    let client_first = B64.encode("n,,n=alice,r=abcdefghijklmnop");
    c.send(&authenticate("SCRAM-SHA-256", &client_first, "")).await.unwrap();
    let challenge = c.expect("</challenge>").await.unwrap();
    let data = challenge.split("'>").last().unwrap().trim_end_matches("</challenge>");
    let server_first = String::from_utf8(B64.decode(data.trim()).unwrap()).unwrap();
    // XEP-0474 §3.1: an 'h' attribute after r, s, i.
    assert!(server_first.split(',').any(|a| a.starts_with("h=") && a.len() > 20), "{server_first}");
}
