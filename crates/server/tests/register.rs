//! Scripted conversations for XEP-0077 in-band registration against the
//! real server binary: registration before authentication (§3.1, §3.1.1,
//! the §8 stream feature), its errors and limits, password change (§3.3)
//! and account removal (§3.2).

use starling_testkit::{Script, TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const OPEN: &str = "[modules.register]\nallow_registration = true\n";
const FEATURE: &str = "<register xmlns='http://jabber.org/features/iq-register'/>";

fn register_set(id: &str, fields: &str) -> String {
    format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>{fields}</query></iq>")
}

fn credentials(user: &str, password: &str) -> String {
    format!("<username>{user}</username><password>{password}</password>")
}

/// A TLS stream ready for SASL (or registration); returns it and its features.
async fn tls(server: &TestServer) -> (XmlClient, String) {
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    let features = c.starttls().await.unwrap();
    (c, features)
}

/// SASL PLAIN on a fresh TLS stream: the `<success/>` or `<failure/>`.
async fn sasl_outcome(server: &TestServer, user: &str, password: &str) -> String {
    let (mut c, _) = tls(server).await;
    let creds = starling_sasl::encode_base64(format!("\0{user}\0{password}").as_bytes());
    c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")).await.unwrap();
    let mut out = c.expect("xmlns='urn:ietf:params:xml:ns:xmpp-sasl'").await.unwrap();
    out.push_str(&c.expect(">").await.unwrap());
    out
}

async fn can_log_in(server: &TestServer, user: &str, password: &str) -> bool {
    let outcome = sasl_outcome(server, user, password).await;
    assert!(outcome.contains("<success") || outcome.contains("<failure"), "{outcome}");
    outcome.contains("<success")
}

#[tokio::test]
async fn fields_then_registration_then_login_on_the_same_stream() {
    let server = TestServer::builder(BIN).config(OPEN).start().unwrap();

    // §8 + RFC 6120 §5.3.1: with TLS required, nothing but STARTTLS before it.
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    let features = c.open().await.unwrap();
    assert!(features.contains("<starttls") && !features.contains(FEATURE), "{features}");
    // §3.1 before TLS: not answered, the stream ends as before authentication.
    c.send("<iq type='get' id='early'><query xmlns='jabber:iq:register'/></iq>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{out}");

    // §8: the stream feature once TLS is up, next to SASL.
    let (mut c, features) = tls(&server).await;
    assert!(features.contains(FEATURE) && features.contains("<mechanisms"), "{features}");

    // §3.1: the entity asks for the fields; the host lists username and password.
    let out = c
        .request("<iq type='get' id='reg1' to='localhost'><query xmlns='jabber:iq:register'/></iq>", "reg1")
        .await
        .unwrap();
    assert!(out.contains("type='result'") && out.contains("<instructions>"), "{out}");
    assert!(out.contains("<username/>") && out.contains("<password/>"), "{out}");
    assert!(!out.contains("<registered/>"), "§3.1.1: unauthenticated means unregistered: {out}");

    // §3.1: it provides them; an empty result means success.
    let out = c.request(&register_set("reg2", &credentials("romeo", "montague-1597")), "reg2").await.unwrap();
    assert!(out.contains("type='result'") && !out.contains("<error"), "{out}");

    // §3.1.1: the new identity then authenticates on the same stream.
    let jid = c.login_plain("romeo", "montague-1597", "balcony").await.unwrap();
    assert_eq!(jid, "romeo@localhost/balcony");
    // §10: the disco feature, and §3.1: a registered entity gets <registered/>.
    let out = c
        .request(
            "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await
        .unwrap();
    assert!(out.contains("<feature var='jabber:iq:register'/>"), "{out}");
    let out = c.request("<iq type='get' id='reg3'><query xmlns='jabber:iq:register'/></iq>", "reg3").await.unwrap();
    assert!(out.contains("<registered/>") && out.contains("<username>romeo</username>"), "{out}");

    // And on a stream of its own, with SCRAM keys stored for every hash.
    assert!(can_log_in(&server, "romeo", "montague-1597").await);
}

#[tokio::test]
async fn registration_errors_follow_the_xep() {
    let server = TestServer::builder(BIN).config(OPEN).with_users(&[("alice", "secret")]).unwrap();
    let (mut c, _) = tls(&server).await;
    let cases = [
        // §3.1: the desired username is taken.
        (credentials("alice", "long-enough-1"), "<conflict "),
        // §3.1: every field is required, and a password may not be empty.
        ("<username>newbie</username>".to_owned(), "<not-acceptable "),
        ("<username>newbie</username><password/>".to_owned(), "<not-acceptable "),
        ("<username/><password>long-enough-1</password>".to_owned(), "<not-acceptable "),
        // Not a valid localpart (RFC 7622 §3.3).
        (credentials("bad@name", "long-enough-1"), "<jid-malformed "),
        (credentials("no:colons", "long-enough-1"), "<jid-malformed "),
        // Deployment policy: a minimum password length (8 by default).
        (credentials("newbie", "short"), "<not-acceptable "),
        // §3.2: nothing to cancel on an unauthenticated stream.
        ("<remove/>".to_owned(), "<unexpected-request "),
    ];
    for (i, (fields, condition)) in cases.iter().enumerate() {
        let id = format!("e{i}");
        let out = c.request(&register_set(&id, fields), &id).await.unwrap();
        assert!(out.contains("type='error'") && out.contains(condition), "{fields}: {out}");
    }
    // The conflict left alice's password alone, and nothing was created.
    assert!(can_log_in(&server, "alice", "secret").await);
    assert!(!can_log_in(&server, "newbie", "long-enough-1").await);
    // The stream survived every error: it still registers and authenticates.
    let out = c.request(&register_set("ok", &credentials("newbie", "long-enough-1")), "ok").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    c.login_plain("newbie", "long-enough-1", "r").await.unwrap();

    // Only registration is answered before authentication: any other IQ
    // still ends the stream (RFC 6120 §4.9.3.12).
    let (mut c, _) = tls(&server).await;
    c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>").await.unwrap();
    let out = c.expect_closed().await.unwrap();
    assert!(out.contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{out}");
}

#[tokio::test]
async fn registrations_are_limited_per_address() {
    let server =
        TestServer::builder(BIN).config(&format!("{OPEN}max_per_ip = 2\n")).with_users(&[("taken", "secret")]).unwrap();
    let (mut c, _) = tls(&server).await;
    let out = c.request(&register_set("r1", &credentials("first", "long-enough-1")), "r1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    // A failed attempt does not use up the allowance.
    let out = c.request(&register_set("r2", &credentials("taken", "long-enough-1")), "r2").await.unwrap();
    assert!(out.contains("<conflict "), "{out}");
    // Streams share the count: it is per IP address.
    let (mut c, _) = tls(&server).await;
    let out = c.request(&register_set("r3", &credentials("second", "long-enough-1")), "r3").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    // §3.1.1: too many registrations: not-acceptable.
    let out = c.request(&register_set("r4", &credentials("third", "long-enough-1")), "r4").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("<not-acceptable "), "{out}");
    assert!(!can_log_in(&server, "third", "long-enough-1").await);
    assert!(can_log_in(&server, "second", "long-enough-1").await);
}

#[tokio::test]
async fn registration_is_refused_when_disabled() {
    // The module is loaded by default with allow_registration = false.
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret")]).unwrap();
    let (mut c, features) = tls(&server).await;
    // §8: no stream feature.
    assert!(!features.contains("iq-register"), "{features}");
    // §3.1: a host without in-band registration answers service-unavailable…
    let out = c.request("<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>", "g").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("<service-unavailable "), "{out}");
    // …and a registration attempt is not allowed.
    let out = c.request(&register_set("s", &credentials("mallory", "long-enough-1")), "s").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("<not-allowed "), "{out}");
    assert!(!can_log_in(&server, "mallory", "long-enough-1").await);
    // §10: password changes still work in-band, so the feature is advertised.
    let mut a = server.login("alice", "r").await.unwrap();
    let out = a
        .request(
            "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await
        .unwrap();
    assert!(out.contains("<feature var='jabber:iq:register'/>"), "{out}");
}

#[tokio::test]
async fn password_change_then_login_with_the_new_password() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut a = server.login("alice", "r").await.unwrap();
    let set = |id: &str, fields: &str| {
        format!("<iq type='set' id='{id}' to='localhost'><query xmlns='jabber:iq:register'>{fields}</query></iq>")
    };
    // §3.3: an empty password never replaces the current one.
    let out = a.request(&set("c1", "<username>alice</username><password/>"), "c1").await.unwrap();
    assert!(out.contains("<bad-request "), "{out}");
    // Someone else's password is not ours to change.
    let out = a.request(&set("c2", &credentials("bob", "long-enough-1")), "c2").await.unwrap();
    assert!(out.contains("<forbidden "), "{out}");
    let out = a.request(&set("c3", &credentials("alice", "short")), "c3").await.unwrap();
    assert!(out.contains("<not-acceptable "), "{out}");
    assert!(can_log_in(&server, "alice", "secret").await, "failed changes keep the password");
    assert!(can_log_in(&server, "bob", "secret").await);

    // §3.3: the change, answered with an empty result.
    let out = a.request(&set("c4", &credentials("alice", "juliet-loves-1")), "c4").await.unwrap();
    assert!(out.contains("type='result'") && !out.contains("<error"), "{out}");
    assert!(!can_log_in(&server, "alice", "secret").await);
    let mut again = XmlClient::logged_in(server.port, "localhost", "alice", "juliet-loves-1", "new").await.unwrap().0;
    // Without `to` it is handled for the account (RFC 6120 §10.3) the same way.
    let out = again
        .request(
            "<iq type='set' id='c5'><query xmlns='jabber:iq:register'><password>third-password</password></query></iq>",
            "c5",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");
    assert!(can_log_in(&server, "alice", "third-password").await);
}

#[tokio::test]
async fn account_removal_cancels_subscriptions_and_ends_sessions() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.online("alice", "home").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    // A mutual subscription (RFC 6121 §3.1), approved both ways.
    alice.send("<presence to='bob@localhost' type='subscribe'/>").await.unwrap();
    bob.expect("type='subscribe'").await.unwrap();
    bob.send("<presence to='alice@localhost' type='subscribed'/>").await.unwrap();
    alice.expect("subscription='to'").await.unwrap();
    bob.send("<presence to='alice@localhost' type='subscribe'/>").await.unwrap();
    alice.expect("type='subscribe'").await.unwrap();
    alice.send("<presence to='bob@localhost' type='subscribed'/>").await.unwrap();
    alice.expect("subscription='both'").await.unwrap();
    bob.expect("subscription='both'").await.unwrap();
    let out = bob.request("<iq type='get' id='b1'><query xmlns='jabber:iq:roster'/></iq>", "b1").await.unwrap();
    assert!(out.contains("jid='alice@localhost'") && out.contains("subscription='both'"), "{out}");
    let mut alice2 = server.login("alice", "work").await.unwrap();

    // §3.2: the remove request, without from or to.
    alice.send("<iq type='set' id='unreg1'><query xmlns='jabber:iq:register'><remove/></query></iq>").await.unwrap();
    // The requester gets its result, then the not-authorized stream error;
    // every other session of the account is ended too.
    let out = alice.expect_closed().await.unwrap();
    let result = out.find("id='unreg1'").unwrap_or_else(|| panic!("no result: {out}"));
    let error = out.find("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
    assert!(error.is_some_and(|e| e > result), "{out}");
    assert!(!out[result..].contains("type='error'"), "{out}");
    let out = alice2.expect_closed().await.unwrap();
    assert!(out.contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"), "{out}");

    // The contact's item drops to subscription none, with a push (RFC 6121
    // §3.2 and §3.3 as if alice had cancelled both ways), and she is seen leave.
    let out = bob.expect("subscription='none'").await.unwrap();
    assert!(out.contains("jid='alice@localhost'"), "{out}");
    let out = bob.request("<iq type='get' id='b2'><query xmlns='jabber:iq:roster'/></iq>", "b2").await.unwrap();
    assert!(out.contains("jid='alice@localhost'") && out.contains("subscription='none'"), "{out}");
    assert!(!out.contains("ask="), "{out}");

    // The account is gone: no login with it any more.
    assert!(!can_log_in(&server, "alice", "secret").await);
    assert!(can_log_in(&server, "bob", "secret").await);
    let out = bob.request(&register_set("again", &credentials("alice", "long-enough-1")), "again").await.unwrap();
    assert!(out.contains("<forbidden "), "a logged-in user cannot take over the name: {out}");
}
