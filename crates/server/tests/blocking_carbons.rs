//! Scripted raw-XML conversations for XEP-0191 (Blocking Command) and
//! XEP-0280 (Message Carbons) against the real server binary, following the
//! XEPs' examples.
//!
//! Ordering: each session's stanzas are handled in order, and whatever the
//! server sends to another session because of them is queued before the
//! answer to a later ping. So `sync(actor)` then `sync(observer)` returns
//! everything the observer got because of the actor's earlier stanzas,
//! which is how the "nothing arrives" checks below are made without sleeping.

use starling_testkit::{TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const USERS: &[(&str, &str)] = &[("alice", "secret"), ("bob", "secret"), ("carol", "secret")];

fn server() -> TestServer {
    TestServer::builder(BIN).with_users(USERS).expect("server starts")
}

/// A bound session that sent initial presence with `priority` (and got
/// everything that causes before a ping's answer).
async fn available(server: &TestServer, user: &str, resource: &str, priority: i8) -> XmlClient {
    let mut c = server.login(user, resource).await.unwrap();
    c.send(&format!("<presence><priority>{priority}</priority></presence>")).await.unwrap();
    c.barrier().await.unwrap();
    c
}

const BLOCKLIST_GET: &str = "<iq type='get' id='bl1'><blocklist xmlns='urn:xmpp:blocking'/></iq>";

/// Sends a block (or unblock) command; returns everything received up to
/// the end of its answer (the push to this resource comes before it).
async fn command(c: &mut XmlClient, id: &str, command: &str, jids: &[&str]) -> String {
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    c.send(&format!("<iq type='set' id='{id}'><{command} xmlns='urn:xmpp:blocking'>{items}</{command}></iq>"))
        .await
        .unwrap();
    let (before, answer) = c.take_stanza(&format!("id='{id}'")).await.unwrap();
    before + &answer
}

async fn block(c: &mut XmlClient, id: &str, jids: &[&str]) -> String {
    command(c, id, "block", jids).await
}

async fn unblock(c: &mut XmlClient, id: &str, jids: &[&str]) -> String {
    command(c, id, "unblock", jids).await
}

#[tokio::test]
async fn xep0191_discovery_blocklist_block_unblock_and_pushes() {
    let server = TestServer::builder(BIN).config("[modules.blocking]\nmax_items = 3\n").with_users(USERS).unwrap();
    let mut chamber = server.login("alice", "chamber").await.unwrap();
    let mut balcony = server.login("alice", "balcony").await.unwrap();
    let mut nosy = server.login("alice", "nosy").await.unwrap(); // never asks for the list

    // §3.1: the server advertises urn:xmpp:blocking.
    let out = chamber
        .request(
            "<iq type='get' id='disco1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "disco1",
        )
        .await
        .unwrap();
    assert!(out.contains("<feature var='urn:xmpp:blocking'/>"), "{out}");

    // §3.2: an empty list is an empty <blocklist/>.
    let out = chamber.request(BLOCKLIST_GET, "bl1").await.unwrap();
    assert!(out.contains("type='result'") && out.contains("<blocklist xmlns='urn:xmpp:blocking'/>"), "{out}");
    balcony.request(BLOCKLIST_GET, "bl1").await.unwrap();

    // §3.3: block; the result, and a push to every resource that asked for the list.
    let out = block(&mut chamber, "block1", &["bob@localhost", "iago@shakespeare.lit"]).await;
    assert!(out.contains("type='result'"), "{out}");
    for (who, c) in [("chamber", &mut chamber), ("balcony", &mut balcony)] {
        let push = if who == "chamber" { out.clone() } else { c.barrier().await.unwrap() };
        assert!(push.contains("type='set'") && push.contains("<block xmlns='urn:xmpp:blocking'>"), "{who}: {push}");
        assert!(push.contains("<item jid='bob@localhost'/><item jid='iago@shakespeare.lit'/>"), "{who}: {push}");
        assert!(push.contains(&format!("to='alice@localhost/{who}'")), "{who}: {push}");
    }
    // A resource that never requested the blocklist gets no push.
    let out = nosy.barrier().await.unwrap();
    assert!(!out.contains("urn:xmpp:blocking"), "{out}");

    // §3.2: the list with its items.
    let out = balcony.request(BLOCKLIST_GET, "bl1").await.unwrap();
    assert!(out.contains("<item jid='bob@localhost'/>") && out.contains("<item jid='iago@shakespeare.lit'/>"), "{out}");

    // §3.3: a block without items is a bad request; an invalid JID is malformed.
    let out =
        chamber.request("<iq type='set' id='block2'><block xmlns='urn:xmpp:blocking'/></iq>", "block2").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("<bad-request "), "{out}");
    let out = chamber
        .request("<iq type='set' id='block3'><block xmlns='urn:xmpp:blocking'><item jid='@x'/></block></iq>", "block3")
        .await
        .unwrap();
    assert!(out.contains("<jid-malformed "), "{out}");
    // The list size limit (max_items = 3 here): nothing of a too large block is kept.
    let out = chamber.request("<iq type='set' id='block4'><block xmlns='urn:xmpp:blocking'><item jid='x@localhost'/><item jid='y@localhost'/></block></iq>", "block4").await.unwrap();
    assert!(out.contains("<policy-violation ") && out.contains("at most 3"), "{out}");
    // Someone else's blocklist is not ours to read.
    let out = chamber
        .request("<iq type='get' id='other' to='bob@localhost'><blocklist xmlns='urn:xmpp:blocking'/></iq>", "other")
        .await
        .unwrap();
    assert!(out.contains("type='error'"), "{out}");
    let out = balcony.barrier().await.unwrap();
    assert!(!out.contains("<block "), "failed commands push nothing: {out}");

    // §3.4: unblock one JID, pushed to both interested resources.
    let out = unblock(&mut chamber, "unblock1", &["bob@localhost"]).await;
    assert!(out.contains("<unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock>"), "{out}");
    assert!(out.contains("type='result'"), "{out}");
    let out = balcony.barrier().await.unwrap();
    assert!(out.contains("<unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock>"), "{out}");
    let out = chamber.request(BLOCKLIST_GET, "bl1").await.unwrap();
    assert!(!out.contains("bob@localhost") && out.contains("iago@shakespeare.lit"), "{out}");

    // §3.5: unblock all, pushed as an empty <unblock/>.
    block(&mut chamber, "block5", &["carol@localhost"]).await;
    balcony.barrier().await.unwrap();
    let out = unblock(&mut chamber, "unblock2", &[]).await;
    assert!(out.contains("<unblock xmlns='urn:xmpp:blocking'/>") && out.contains("type='result'"), "{out}");
    let out = balcony.barrier().await.unwrap();
    assert!(out.contains("<unblock xmlns='urn:xmpp:blocking'/>"), "{out}");
    let out = chamber.request(BLOCKLIST_GET, "bl1").await.unwrap();
    assert!(out.contains("<blocklist xmlns='urn:xmpp:blocking'/>"), "{out}");
}

#[tokio::test]
async fn xep0191_stanzas_from_a_blocked_jid_are_not_delivered() {
    let server = server();
    let mut alice = available(&server, "alice", "chamber", 0).await;
    let mut bob = available(&server, "bob", "orchard", 0).await;
    block(&mut alice, "b1", &["bob@localhost"]).await;

    // §3.3: a message gets service-unavailable, as if alice were offline.
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>Can you hear me?</body></message>")
        .await
        .unwrap();
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("id='m1'") && out.contains("type='error'") && out.contains("<service-unavailable "), "{out}");
    assert!(!out.contains("urn:xmpp:blocking:errors"), "the sender must not learn of the block: {out}");
    // To a full JID too.
    bob.send("<message to='alice@localhost/chamber' type='chat' id='m2'><body>Hello?</body></message>").await.unwrap();
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("id='m2'") && out.contains("<service-unavailable "), "{out}");

    // §3.3: an IQ get or set gets service-unavailable too.
    let out = bob
        .request("<iq type='get' id='v1' to='alice@localhost/chamber'><query xmlns='jabber:iq:version'/></iq>", "v1")
        .await
        .unwrap();
    assert!(out.contains("type='error'") && out.contains("<service-unavailable "), "{out}");

    // §3.3: presence of any kind (directed, subscription, probe) and IQ
    // results vanish without an error.
    for xml in [
        "<presence to='alice@localhost'/>",
        "<presence to='alice@localhost/chamber'><show>chat</show></presence>",
        "<presence to='alice@localhost' type='subscribe'/>",
        "<presence to='alice@localhost' type='probe'/>",
        "<iq type='result' id='r1' to='alice@localhost/chamber'/>",
        "<message to='alice@localhost' type='error' id='e1'/>",
    ] {
        bob.send(xml).await.unwrap();
    }
    let out = bob.barrier().await.unwrap();
    assert!(!out.contains("type='error'") && !out.contains("from='alice@localhost"), "{out}");
    let out = alice.barrier().await.unwrap();
    assert!(!out.contains("bob@localhost"), "nothing from bob reaches alice: {out}");

    // §5: a full-JID entry blocks that resource only.
    let mut carol_work = available(&server, "carol", "work", 0).await;
    let mut carol_home = available(&server, "carol", "home", 0).await;
    block(&mut alice, "b2", &["carol@localhost/work"]).await;
    carol_work
        .send("<message to='alice@localhost/chamber' type='chat' id='w1'><body>from work</body></message>")
        .await
        .unwrap();
    let out = carol_work.expect("</message>").await.unwrap();
    assert!(out.contains("<service-unavailable "), "{out}");
    carol_home
        .send("<message to='alice@localhost/chamber' type='chat' id='h1'><body>from home</body></message>")
        .await
        .unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("from home") && !out.contains("from work"), "{out}");

    // §5: a domain entry blocks everyone at the domain, but never the
    // user's own resources (§6, note).
    let mut own = available(&server, "alice", "other", 0).await;
    alice.received.clear();
    block(&mut alice, "b3", &["localhost"]).await;
    carol_home
        .send("<message to='alice@localhost/chamber' type='chat' id='h2'><body>x</body></message>")
        .await
        .unwrap();
    let out = carol_home.expect("</message>").await.unwrap();
    assert!(out.contains("<service-unavailable "), "{out}");
    own.send("<message to='alice@localhost/chamber' type='chat' id='o1'><body>note to self</body></message>")
        .await
        .unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("note to self"), "{out}");
    // The server itself stays reachable.
    let out = alice
        .request("<iq type='get' id='ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "ping")
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");

    // §3.4: after unblocking, bob's stanzas are delivered again.
    unblock(&mut alice, "u1", &[]).await;
    bob.send("<message to='alice@localhost' type='chat' id='m3'><body>Finally</body></message>").await.unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("Finally") && out.contains("from='bob@localhost/orchard'"), "{out}");
}

#[tokio::test]
async fn xep0191_sending_to_a_blocked_jid_is_refused_with_blocked() {
    let server = server();
    let mut alice = available(&server, "alice", "chamber", 0).await;
    let mut bob = available(&server, "bob", "orchard", 0).await;
    block(&mut alice, "b1", &["bob@localhost"]).await;

    // §3.3, example "Error: JID is blocked".
    alice.send("<message to='bob@localhost' id='m1'><body>Can you hear me now?</body></message>").await.unwrap();
    let out = alice.expect("</message>").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("from='bob@localhost'"), "{out}");
    assert!(out.contains("<body>Can you hear me now?</body>"), "{out}");
    assert!(
        out.contains(
            "<error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <blocked xmlns='urn:xmpp:blocking:errors'/></error>"
        ),
        "{out}"
    );
    // An IQ request to a blocked full JID.
    let out = alice
        .request("<iq type='get' id='v1' to='bob@localhost/orchard'><query xmlns='jabber:iq:version'/></iq>", "v1")
        .await
        .unwrap();
    assert!(out.contains("<not-acceptable ") && out.contains("<blocked xmlns='urn:xmpp:blocking:errors'/>"), "{out}");
    // Presence to a blocked JID is dropped, without an error.
    alice.send("<presence to='bob@localhost/orchard'/>").await.unwrap();
    alice.send("<presence to='bob@localhost' type='subscribe'/>").await.unwrap();
    let out = alice.barrier().await.unwrap();
    assert!(!out.contains("type='error'"), "{out}");
    let out = bob.barrier().await.unwrap();
    assert!(!out.contains("alice@localhost"), "nothing reaches bob: {out}");

    // Unblocked, the same message goes through.
    unblock(&mut alice, "u1", &["bob@localhost"]).await;
    alice.send("<message to='bob@localhost' id='m2' type='chat'><body>now?</body></message>").await.unwrap();
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("now?"), "{out}");
}

#[tokio::test]
async fn xep0191_block_sends_unavailable_and_unblock_current_presence() {
    let server = server();
    let mut alice = available(&server, "alice", "chamber", 0).await;
    let mut bob = available(&server, "bob", "orchard", 0).await;
    // Bob subscribes to alice's presence (RFC 6121 §3.1) and alice approves.
    bob.send("<presence to='alice@localhost' type='subscribe'/>").await.unwrap();
    alice.expect("type='subscribe'").await.unwrap();
    alice.send("<presence to='bob@localhost' type='subscribed'/>").await.unwrap();
    alice.barrier().await.unwrap();
    let out = bob.barrier().await.unwrap();
    assert!(out.contains("from='alice@localhost/chamber'"), "bob sees alice's presence: {out}");

    // §3.3: blocking sends unavailable presence to a contact allowed to see it.
    block(&mut alice, "b1", &["bob@localhost"]).await;
    let out = bob.barrier().await.unwrap();
    assert!(out.contains("from='alice@localhost/chamber'") && out.contains("type='unavailable'"), "{out}");
    // Later broadcasts do not reach the blocked contact.
    alice.send("<presence><show>away</show></presence>").await.unwrap();
    alice.barrier().await.unwrap();
    let out = bob.barrier().await.unwrap();
    assert!(!out.contains("alice@localhost"), "{out}");

    // §3.4: unblocking sends the current presence.
    unblock(&mut alice, "u1", &["bob@localhost"]).await;
    let out = bob.barrier().await.unwrap();
    assert!(out.contains("from='alice@localhost/chamber'") && out.contains("<show>away</show>"), "{out}");
    assert!(!out.contains("type='unavailable'"), "{out}");
}

#[tokio::test]
async fn xep0191_the_block_outlives_the_session() {
    let server = server();
    let mut alice = server.login("alice", "chamber").await.unwrap();
    block(&mut alice, "b1", &["bob@localhost"]).await;
    // A clean close: the server answers once the session is gone (its
    // cached blocklist with it).
    alice.send("</stream:stream>").await.unwrap();
    alice.expect_closed().await.unwrap();
    // Alice offline: the list is read from storage; bob's message is
    // refused, not kept for her (XEP-0160).
    let mut bob = available(&server, "bob", "orchard", 0).await;
    bob.send("<message to='alice@localhost' type='chat' id='m0'><body>kept?</body></message>").await.unwrap();
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("id='m0'") && out.contains("<service-unavailable "), "{out}");
    // "The block remains in force … across sessions" (§3.3).
    let mut alice = server.login("alice", "balcony").await.unwrap();
    alice.send("<presence/>").await.unwrap();
    let out = alice.barrier().await.unwrap();
    assert!(!out.contains("kept?"), "{out}");
    let out = alice.request(BLOCKLIST_GET, "bl1").await.unwrap();
    assert!(out.contains("<item jid='bob@localhost'/>"), "{out}");
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>hi</body></message>").await.unwrap();
    let out = bob.expect("</message>").await.unwrap();
    assert!(out.contains("<service-unavailable "), "{out}");
}

const ENABLE: &str = "<iq type='set' id='enable1'><enable xmlns='urn:xmpp:carbons:2'/></iq>";

#[tokio::test]
async fn xep0280_enable_and_sent_and_received_copies() {
    let server = server();
    // Romeo's desktop (garden) has the highest priority; home and legacy are other devices.
    let mut garden = available(&server, "alice", "garden", 5).await;
    let mut home = available(&server, "alice", "home", 0).await;
    let mut legacy = available(&server, "alice", "legacy", 0).await;
    let mut juliet = available(&server, "bob", "balcony", 0).await;
    for c in [&mut garden, &mut home, &mut legacy, &mut juliet] {
        c.barrier().await.unwrap(); // presence of the others
    }

    // §3: the feature is advertised.
    let out = garden
        .request(
            "<iq type='get' id='info1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "info1",
        )
        .await
        .unwrap();
    assert!(out.contains("<feature var='urn:xmpp:carbons:2'/>"), "{out}");

    // §4: enabling is acknowledged with a result; enabling twice too (§10.1).
    for c in [&mut garden, &mut home] {
        for _ in 0..2 {
            let out = c.request(ENABLE, "enable1").await.unwrap();
            assert!(out.contains("type='result'"), "{out}");
        }
    }

    // §7: Juliet sends a directed message to garden; home gets a <received/> copy.
    juliet
        .send(
            "<message to='alice@localhost/garden' type='chat' id='j1'><body>What man art thou?</body>\
             <thread>0e3141cd</thread></message>",
        )
        .await
        .unwrap();
    let out = garden.expect("</message>").await.unwrap();
    assert!(out.contains("What man art thou?") && !out.contains("urn:xmpp:carbons:2"), "the original: {out}");
    juliet.barrier().await.unwrap();
    let out = home.barrier().await.unwrap();
    assert!(out.contains("from='alice@localhost' ") || out.contains("from='alice@localhost'>"), "{out}");
    assert!(out.contains("to='alice@localhost/home'") && out.contains("type='chat'"), "{out}");
    assert!(
        out.contains(
            "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'"
        ),
        "{out}"
    );
    assert!(out.contains("from='bob@localhost/balcony'") && out.contains("What man art thou?"), "{out}");
    let out = garden.barrier().await.unwrap();
    assert!(!out.contains("<received "), "no copy to the addressed resource: {out}");
    let out = legacy.barrier().await.unwrap();
    assert!(!out.contains("What man"), "no copy without carbons enabled: {out}");

    // §7: to the bare JID: garden (priority 5) gets the original, home a copy.
    juliet.send("<message to='alice@localhost' type='chat' id='j2'><body>Wherefore?</body></message>").await.unwrap();
    let out = garden.expect("</message>").await.unwrap();
    assert!(out.contains("Wherefore?") && !out.contains("<received "), "{out}");
    juliet.barrier().await.unwrap();
    let out = home.barrier().await.unwrap();
    assert!(out.contains("<received xmlns='urn:xmpp:carbons:2'>") && out.contains("Wherefore?"), "{out}");

    // §8: garden replies; home gets a <sent/> copy, garden itself none.
    garden
        .send("<message to='bob@localhost/balcony' type='chat' id='r1'><body>Neither, fair saint</body></message>")
        .await
        .unwrap();
    let out = juliet.expect("</message>").await.unwrap();
    assert!(out.contains("Neither, fair saint") && !out.contains("carbons"), "{out}");
    let out = garden.barrier().await.unwrap();
    assert!(!out.contains("<sent "), "{out}");
    let out = home.barrier().await.unwrap();
    assert!(out.contains("<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"), "{out}");
    assert!(out.contains("to='alice@localhost/home'") && out.contains("from='alice@localhost/garden'"), "{out}");
    assert!(out.contains("to='bob@localhost/balcony'") && out.contains("Neither, fair saint"), "{out}");

    // §8: a copy is made whether or not the sender enabled carbons.
    legacy.send("<message to='bob@localhost' type='chat' id='r2'><body>from legacy</body></message>").await.unwrap();
    juliet.expect("from legacy").await.unwrap();
    for c in [&mut garden, &mut home] {
        let out = c.barrier().await.unwrap();
        assert!(out.contains("<sent xmlns='urn:xmpp:carbons:2'>") && out.contains("from legacy"), "{out}");
    }

    // §5: after disabling, home gets no more copies.
    let out = home
        .request("<iq type='set' id='disable1'><disable xmlns='urn:xmpp:carbons:2'/></iq>", "disable1")
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");
    juliet
        .send("<message to='alice@localhost/garden' type='chat' id='j3'><body>still there?</body></message>")
        .await
        .unwrap();
    garden.expect("still there?").await.unwrap();
    juliet.barrier().await.unwrap();
    let out = home.barrier().await.unwrap();
    assert!(!out.contains("still there?"), "{out}");
}

#[tokio::test]
async fn xep0280_private_and_ineligible_messages_are_not_copied() {
    let server = server();
    let mut home = available(&server, "alice", "home", 0).await;
    let mut work = available(&server, "alice", "work", 0).await;
    let mut juliet = available(&server, "bob", "home", 0).await;
    for c in [&mut home, &mut work, &mut juliet] {
        c.barrier().await.unwrap();
    }
    for c in [&mut home, &mut work, &mut juliet] {
        c.request(ENABLE, "enable1").await.unwrap();
    }

    // §9, example "Romeo sends to Juliet, excluding Carbons": not copied to
    // the sender's other resources nor to the recipient's.
    home.send(
        "<message to='bob@localhost/home' type='chat' id='p1'><body>Neither, fair saint</body>\
         <private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>",
    )
    .await
    .unwrap();
    let out = juliet.expect("</message>").await.unwrap();
    assert!(out.contains("<private xmlns='urn:xmpp:carbons:2'/>"), "delivered as sent: {out}");
    // Juliet answers privately too (her other resource would be the one to
    // get a copy; here: Alice's work must not get a <received/> copy).
    juliet
        .send(
            "<message to='alice@localhost/home' type='chat' id='p2'><body>private answer</body>\
             <private xmlns='urn:xmpp:carbons:2'/></message>",
        )
        .await
        .unwrap();
    home.expect("private answer").await.unwrap();

    // §6.1: not eligible: headline, normal without body, groupchat.
    for xml in [
        "<message to='bob@localhost/home' type='headline' id='n1'><body>news</body></message>",
        "<message to='bob@localhost/home' id='n2'><subject>no body</subject></message>",
        "<message to='bob@localhost/home' type='groupchat' id='n3'><body>room</body></message>",
    ] {
        home.send(xml).await.unwrap();
    }
    // §6.1: eligible: normal with a body, and a chat state alone (XEP-0085).
    home.send("<message to='bob@localhost/home' id='e1'><body>normal with body</body></message>").await.unwrap();
    home.send(
        "<message to='bob@localhost/home' type='chat' id='e2'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    .await
    .unwrap();
    home.barrier().await.unwrap();
    juliet.barrier().await.unwrap();
    let out = work.barrier().await.unwrap();
    for private in ["Neither, fair saint", "private answer", "news", "no body", "room"] {
        assert!(!out.contains(private), "{private} copied: {out}");
    }
    assert!(out.contains("normal with body") && out.contains("<composing "), "{out}");
    assert_eq!(out.matches("<sent xmlns='urn:xmpp:carbons:2'>").count(), 2, "{out}");
}

#[tokio::test]
async fn xep0191_and_xep0280_a_blocked_message_is_not_copied() {
    let server = server();
    let mut home = available(&server, "alice", "home", 0).await;
    let mut work = available(&server, "alice", "work", 0).await;
    let mut bob = available(&server, "bob", "orchard", 0).await;
    for c in [&mut home, &mut work, &mut bob] {
        c.barrier().await.unwrap();
    }
    work.request(ENABLE, "enable1").await.unwrap();
    block(&mut home, "b1", &["bob@localhost"]).await;
    // Refused outbound: no <sent/> copy of a message that was never sent.
    home.send("<message to='bob@localhost' type='chat' id='m1'><body>blocked out</body></message>").await.unwrap();
    home.expect("<blocked ").await.unwrap();
    // Refused inbound: no <received/> copy either.
    bob.send("<message to='alice@localhost/home' type='chat' id='m2'><body>blocked in</body></message>").await.unwrap();
    bob.expect("<service-unavailable ").await.unwrap();
    bob.barrier().await.unwrap();
    let out = work.barrier().await.unwrap();
    assert!(!out.contains("blocked out") && !out.contains("blocked in"), "{out}");
}
