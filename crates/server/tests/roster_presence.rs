//! Scripted conversations for RFC 6121 rosters (§2, XEP-0237 versions),
//! subscriptions (§3) and presence (§4), and XEP-0160 offline messages
//! across restarts, against the real server binary.

use starling_testkit::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_starling");

#[tokio::test]
async fn roster_get_set_remove_with_pushes_and_versions() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut a1 = server.login("alice", "one").await.unwrap();
    let mut a2 = server.login("alice", "two").await.unwrap();

    // RFC 6121 §2.2 + XEP-0237 §3: an empty roster, version "0".
    a1.send("<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver=''/></iq>").await.unwrap();
    let out = a1.expect("</iq>").await.unwrap();
    assert!(out.contains("id='g1'") && out.contains("type='result'") && out.contains("ver='0'"), "{out}");
    a2.send("<iq type='get' id='g2'><query xmlns='jabber:iq:roster'/></iq>").await.unwrap();
    let out = a2.expect("</iq>").await.unwrap();
    assert!(out.contains("id='g2'") && !out.contains("ver="), "no ver without the client asking: {out}");

    // §2.3: a set, answered and pushed to every interested resource (§2.1.6).
    a1.send(
        "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>\
         <item jid='bob@localhost' name='Bob'><group>Friends</group></item></query></iq>",
    )
    .await
    .unwrap();
    for c in [&mut a1, &mut a2] {
        let out = c.expect("</iq>").await.unwrap();
        assert!(out.contains("type='set'") && out.contains("jid='bob@localhost'"), "{out}");
        assert!(out.contains("name='Bob'") && out.contains("<group>Friends</group>"), "{out}");
        assert!(out.contains("subscription='none'") && out.contains("ver='1'"), "{out}");
    }
    a1.expect("id='s1'").await.unwrap();

    // XEP-0237 §3: the current version gets an empty result, an old one the roster.
    a1.send("<iq type='get' id='g3'><query xmlns='jabber:iq:roster' ver='1'/></iq>").await.unwrap();
    a1.expect("id='g3'").await.unwrap();
    let out = a1.expect("/>").await.unwrap();
    assert!(out.contains("type='result'") && !out.contains("<query"), "{out}");
    a1.send("<iq type='get' id='g4'><query xmlns='jabber:iq:roster' ver='0'/></iq>").await.unwrap();
    let out = a1.expect("</iq>").await.unwrap();
    assert!(out.contains("ver='1'") && out.contains("jid='bob@localhost'"), "{out}");

    // §2.3.3 error cases.
    let cases = [
        ("<item jid='x@localhost'/><item jid='y@localhost'/>", "<bad-request "),
        ("<item jid='a@b@c'/>", "<jid-malformed "),
        ("<item jid='x@localhost'><group></group></item>", "<not-acceptable "),
        ("<item jid='x@localhost'><group>g</group><group>g</group></item>", "<bad-request "),
        ("<item jid='nobody@localhost' subscription='remove'/>", "<item-not-found "),
    ];
    for (i, (items, condition)) in cases.iter().enumerate() {
        a1.send(&format!("<iq type='set' id='e{i}'><query xmlns='jabber:iq:roster'>{items}</query></iq>"))
            .await
            .unwrap();
        let out = a1.expect("</iq>").await.unwrap();
        assert!(out.contains(&format!("id='e{i}'")) && out.contains(condition), "{items}: {out}");
    }
    // §2.1.5: another account's roster is not ours to read.
    a1.send("<iq type='get' id='f1' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>").await.unwrap();
    let out = a1.expect("</iq>").await.unwrap();
    assert!(out.contains("<forbidden "), "{out}");

    // §2.5: removal is pushed with subscription='remove'.
    a1.send("<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>")
        .await
        .unwrap();
    let out = a2.expect("</iq>").await.unwrap();
    assert!(out.contains("subscription='remove'") && out.contains("ver='2'"), "{out}");
}

#[tokio::test]
async fn roster_size_limit_is_enforced() {
    let server = TestServer::builder(BIN)
        .config("[modules.roster]\nmax_items = 2\n")
        .with_users(&[("alice", "secret")])
        .unwrap();
    let mut a = server.login("alice", "r").await.unwrap();
    let set = |i: usize, contact: &str| {
        format!(
            "<iq type='set' id='s{i}'><query xmlns='jabber:iq:roster'><item jid='{contact}@localhost'/></query></iq>"
        )
    };
    for (i, contact) in ["x", "y"].iter().enumerate() {
        a.send(&set(i, contact)).await.unwrap();
        a.expect(&format!("id='s{i}'")).await.unwrap();
        let rest = a.expect("/>").await.unwrap();
        assert!(rest.contains("type='result'"), "{rest}");
    }
    // RFC 6121 §2.1.2: beyond the server's limit, not-allowed.
    a.send(&set(2, "z")).await.unwrap();
    let out = a.expect("</iq>").await.unwrap();
    assert!(out.contains("id='s2'") && out.contains("<not-allowed "), "{out}");
}

#[tokio::test]
async fn subscription_handshake_then_presence_both_ways() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.online("alice", "home").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();

    // §3.1.2: the request is stamped with the bare JID and the roster
    // shows it pending out (ask='subscribe').
    alice.send("<presence to='bob@localhost' type='subscribe'/>").await.unwrap();
    let out = alice.expect("</iq>").await.unwrap();
    assert!(out.contains("ask='subscribe'") && out.contains("subscription='none'"), "{out}");
    let out = bob.expect("type='subscribe'").await.unwrap();
    assert!(out.contains("from='alice@localhost'") && !out.contains("alice@localhost/"), "{out}");

    // §3.1.5: approval; both rosters change, and alice gets bob's presence.
    bob.send("<presence to='alice@localhost' type='subscribed'/>").await.unwrap();
    let out = bob.expect("</iq>").await.unwrap();
    assert!(out.contains("jid='alice@localhost'") && out.contains("subscription='from'"), "{out}");
    let out = alice.expect("subscription='to'").await.unwrap();
    assert!(!out.contains("ask="), "{out}");
    alice.expect("type='subscribed'").await.unwrap();
    alice.expect("from='bob@localhost/phone'").await.unwrap();

    // The other way round: both.
    bob.send("<presence to='alice@localhost' type='subscribe'/>").await.unwrap();
    alice.expect("type='subscribe'").await.unwrap();
    alice.send("<presence to='bob@localhost' type='subscribed'/>").await.unwrap();
    alice.expect("subscription='both'").await.unwrap();
    bob.expect("subscription='both'").await.unwrap();
    bob.expect("from='alice@localhost/home'").await.unwrap();

    // §4.4: presence updates reach subscribers.
    bob.send("<presence><show>away</show><status>lunch</status></presence>").await.unwrap();
    let out = alice.expect("</presence>").await.unwrap();
    assert!(out.contains("from='bob@localhost/phone'") && out.contains("<show>away</show>"), "{out}");

    // §4.6: an abrupt disconnect is broadcast as unavailable.
    drop(bob);
    let out = alice.expect("type='unavailable'").await.unwrap();
    assert!(out.contains("from='bob@localhost/phone'"), "{out}");

    // A new session of bob's gets alice's presence at login (§4.2.2 probes).
    let mut bob = server.online("bob", "laptop").await.unwrap();
    bob.expect("from='alice@localhost/home'").await.unwrap();
    // Subscribing to oneself is refused.
    alice.send("<presence to='alice@localhost' type='subscribe' id='self'/>").await.unwrap();
    let out = alice.expect("</presence>").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("<bad-request "), "{out}");
}

#[tokio::test]
async fn requests_wait_for_offline_users_and_preapproval_answers_at_once() {
    let server =
        TestServer::builder(BIN).with_users(&[("carol", "secret"), ("dave", "secret"), ("erin", "secret")]).unwrap();
    let mut carol = server.online("carol", "c").await.unwrap();
    // §3.1.3: dave is offline; the request waits for his next login.
    carol.send("<presence to='dave@localhost' type='subscribe'><status>it is carol</status></presence>").await.unwrap();
    carol.barrier().await.unwrap();
    let mut dave = server.online("dave", "d").await.unwrap();
    // Delivered with his initial presence, so before the answer to a later ping.
    let out = dave.barrier().await.unwrap();
    assert!(out.contains("type='subscribe'") && out.contains("from='carol@localhost'"), "{out}");
    // §3.2: dave declines; carol's roster drops the pending request.
    dave.send("<presence to='carol@localhost' type='unsubscribed'/>").await.unwrap();
    let out = carol.expect("</iq>").await.unwrap();
    assert!(
        out.contains("jid='dave@localhost'") && out.contains("subscription='none'") && !out.contains("ask="),
        "{out}"
    );
    carol.expect("type='unsubscribed'").await.unwrap();
    // Once answered, the request is not delivered again.
    drop(dave);
    let mut dave = server.online("dave", "d2").await.unwrap();
    let out = dave.barrier().await.unwrap();
    assert!(!out.contains("type='subscribe'"), "{out}");

    // §3.4: pre-approval, then erin's request is approved without asking dave.
    dave.send("<presence to='erin@localhost' type='subscribed'/>").await.unwrap();
    let out = dave.expect("</iq>").await.unwrap();
    assert!(out.contains("approved='true'"), "{out}");
    let mut erin = server.online("erin", "e").await.unwrap();
    erin.send("<presence to='dave@localhost' type='subscribe'/>").await.unwrap();
    let out = erin.expect("type='subscribed'").await.unwrap();
    assert!(out.contains("from='dave@localhost'"), "{out}");
    erin.expect("from='dave@localhost/d2'").await.unwrap();
    let out = dave.expect("subscription='from'").await.unwrap();
    assert!(!out.contains("approved="), "{out}");
}

#[tokio::test]
async fn offline_limit_and_messages_survive_sigterm_and_sigkill() {
    let mut server = TestServer::builder(BIN)
        .config("[modules.offline]\nmax_messages = 3\n")
        .with_users(&[("alice", "secret"), ("bob", "secret")])
        .unwrap();
    let mut alice = server.online("alice", "a").await.unwrap();
    for i in 0..3 {
        alice
            .send(&format!("<message to='bob@localhost' type='chat' id='m{i}'><body>before term {i}</body></message>"))
            .await
            .unwrap();
    }
    // XEP-0160: beyond the limit the sender learns it was not stored.
    alice.send("<message to='bob@localhost' type='chat' id='over'><body>too many</body></message>").await.unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("id='over'") && out.contains("<service-unavailable "), "{out}");
    drop(alice);
    assert!(server.terminate().unwrap().success());
    server.spawn().unwrap();

    // Stored before SIGKILL: also survives.
    let mut bob = server.online("bob", "b").await.unwrap();
    for i in 0..3 {
        let out = bob.expect("</message>").await.unwrap();
        assert!(out.contains(&format!("before term {i}")) && out.contains("urn:xmpp:delay"), "{out}");
    }
    // Once the server has closed bob's stream, the session has left the
    // router: the next message for him is stored.
    bob.send("</stream:stream>").await.unwrap();
    bob.expect_closed().await.unwrap();
    let mut alice = server.online("alice", "a").await.unwrap();
    alice.send("<message to='bob@localhost' type='chat' id='k'><body>before kill</body></message>").await.unwrap();
    alice.barrier().await.unwrap();
    assert!(!server.kill().unwrap().success());
    server.spawn().unwrap();
    let mut bob = server.online("bob", "b").await.unwrap();
    // Offline messages come with initial presence, before a later ping's answer.
    let out = bob.barrier().await.unwrap();
    assert!(out.contains("before kill"), "{out}");
    // Delivered once: nothing more stored, nothing repeated at the next login.
    assert_eq!(out.matches("<message").count(), 1, "{out}");
    bob.send("</stream:stream>").await.unwrap();
    bob.expect_closed().await.unwrap();
    let mut bob = server.online("bob", "b2").await.unwrap();
    let out = bob.barrier().await.unwrap();
    assert!(!out.contains("<message"), "{out}");
}
