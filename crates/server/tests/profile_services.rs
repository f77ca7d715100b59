//! Scripted conversations for the profile and information services:
//! XEP-0054 vCards with XEP-0153 avatar hashes, XEP-0049 private storage
//! and its bookmarks as PEP native bookmarks (XEP-0402 `#compat`), PEP
//! avatars copied into vCards (XEP-0398),
//! XEP-0012 last activity, XEP-0157 contact addresses (an XEP-0128 disco
//! form) and XEP-0115 caps as a stream feature, against the real binary.

use starling_proto::xmpp_parsers::{caps, disco::DiscoInfoResult, hashes::Algo};
use starling_proto::Element;
use starling_testkit::{TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
/// base64("\0alice\0secret")
const PLAIN_ALICE: &str = "AGFsaWNlAHNlY3JldA==";
/// base64("hello") and the SHA-1 of "hello" (XEP-0153 §3.1 hashes the bytes).
const PHOTO: &str = "aGVsbG8=";
const PHOTO_SHA1: &str = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";

const CONTACT_ADDRESSES: &str = "[modules.contact_addresses]\n\
    admin = [\"mailto:xmpp@localhost\", \"xmpp:admin@localhost\"]\n\
    abuse = [\"mailto:abuse@localhost\"]\n";

/// `contact` subscribes to `user`'s presence and `user` approves (RFC 6121
/// §3.1): `user`'s roster then has `contact` with subscription "from".
async fn subscribe(contact: &mut XmlClient, user: &mut XmlClient, user_jid: &str, contact_jid: &str) {
    contact.send(&format!("<presence to='{user_jid}' type='subscribe'/>")).await.unwrap();
    contact.barrier().await.unwrap();
    user.send(&format!("<presence to='{contact_jid}' type='subscribed'/>")).await.unwrap();
    user.barrier().await.unwrap();
}

fn vcard_set(id: &str, inner: &str) -> String {
    format!("<iq type='set' id='{id}'><vCard xmlns='vcard-temp'>{inner}</vCard></iq>")
}

#[tokio::test]
async fn vcard_own_other_users_and_limits() {
    let server =
        TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret"), ("carol", "secret")]).unwrap();
    let mut alice = server.login("alice", "home").await.unwrap();
    let mut bob = server.login("bob", "phone").await.unwrap();

    // XEP-0054 §3.1: none stored yet → an IQ-result with an empty <vCard/>.
    let out = alice.request("<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>", "v1").await.unwrap();
    assert!(out.contains("type='result'") && out.contains("<vCard xmlns='vcard-temp'/>"), "{out}");

    // §3.2: the owner sets it (no 'to'), the server answers with an empty result.
    let inner = "<FN>Alice Liddell</FN><N><FAMILY>Liddell</FAMILY><GIVEN>Alice</GIVEN></N>\
                 <NICKNAME>alice</NICKNAME><DESC>Curiouser and curiouser</DESC>";
    let out = alice.request(&vcard_set("v2", inner), "v2").await.unwrap();
    assert!(out.contains("type='result'") && !out.contains("<error"), "{out}");
    let out = alice.request("<iq type='get' id='v1b'><vCard xmlns='vcard-temp'/></iq>", "v1b").await.unwrap();
    assert!(out.contains("<FN>Alice Liddell</FN>") && out.contains("<GIVEN>Alice</GIVEN>"), "{out}");

    // §3.3: another user reads it at the bare JID; the server answers for her.
    let out = bob
        .request("<iq type='get' id='v3' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>", "v3")
        .await
        .unwrap();
    assert!(out.contains("type='result'") && out.contains("from='alice@localhost'"), "{out}");
    assert!(out.contains("<FN>Alice Liddell</FN>") && out.contains("<DESC>Curiouser and curiouser</DESC>"), "{out}");
    // Answered by the server: the request never reaches her session.
    bob.barrier().await.unwrap();
    let out = alice.barrier().await.unwrap();
    assert!(!out.contains("id='v3'"), "{out}");

    // §3.3: no vCard and no such user get the same service-unavailable.
    for (id, to) in [("v4", "carol@localhost"), ("v5", "nobody@localhost")] {
        let out = bob
            .request(&format!("<iq type='get' id='{id}' to='{to}'><vCard xmlns='vcard-temp'/></iq>"), id)
            .await
            .unwrap();
        assert!(out.contains("type='error'") && out.contains("<service-unavailable "), "{out}");
    }

    // §3.2: setting someone else's vCard is forbidden.
    let out = bob
        .request(
            "<iq type='set' id='v6' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>Bob was here</FN></vCard></iq>",
            "v6",
        )
        .await
        .unwrap();
    assert!(out.contains("type='error'") && out.contains("<forbidden "), "{out}");

    // The configured limit (64 KiB by default): a larger vCard is refused
    // (RFC 6120 §8.3.3.9 not-acceptable) and the stored one is kept.
    let big = format!("<FN>Big</FN><DESC>{}</DESC>", "a".repeat(70 * 1024));
    let out = alice.request(&vcard_set("v7", &big), "v7").await.unwrap();
    let tail = &out[out.len().saturating_sub(400)..];
    assert!(out.contains("type='error'") && out.contains("<not-acceptable "), "{tail}");
    let out = bob
        .request("<iq type='get' id='v8' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>", "v8")
        .await
        .unwrap();
    assert!(out.contains("<FN>Alice Liddell</FN>"), "{out}");

    // §4: the feature is advertised.
    let out = bob
        .request(
            "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await
        .unwrap();
    assert!(out.contains("<feature var='vcard-temp'/>"), "{out}");
}

#[tokio::test]
async fn vcard_photo_hash_is_added_to_presence() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.login("alice", "home").await.unwrap();
    let mut bob = server.login("bob", "phone").await.unwrap();
    subscribe(&mut bob, &mut alice, "alice@localhost", "bob@localhost").await;
    bob.send("<presence/>").await.unwrap();
    // Its reflection and the probe answer for alice are queued before the pong.
    bob.barrier().await.unwrap();

    // XEP-0153 §3.1: the avatar goes into the vCard (base64 in PHOTO/BINVAL)...
    let photo = format!("<FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{PHOTO}</BINVAL></PHOTO>");
    let out = alice.request(&vcard_set("a1", &photo), "a1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");

    // ...and the SHA-1 of the image bytes, in hex, into every available
    // presence broadcast: the server adds it when the client does not.
    alice.send("<presence><show>chat</show></presence>").await.unwrap();
    let expected = format!("<x xmlns='vcard-temp:x:update'><photo>{PHOTO_SHA1}</photo></x>");
    let own = alice.expect("</presence>").await.unwrap();
    assert!(own.contains(&expected) && own.contains("<show>chat</show>"), "{own}");
    let seen = bob.expect("</presence>").await.unwrap();
    assert!(seen.contains("from='alice@localhost/home'") && seen.contains(&expected), "{seen}");

    // A client that sends its own photo element (empty: "not ready") is left
    // alone; an update element without one is overwritten (XEP-0398 §4).
    alice.send("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>").await.unwrap();
    alice.barrier().await.unwrap();
    let seen = bob.barrier().await.unwrap();
    assert!(seen.contains("from='alice@localhost/home'") && !seen.contains(PHOTO_SHA1), "{seen}");
    alice.send("<presence><x xmlns='vcard-temp:x:update'/></presence>").await.unwrap();
    let seen = bob.expect("</presence>").await.unwrap();
    assert!(seen.contains(&expected) && seen.matches("vcard-temp:x:update").count() == 1, "{seen}");
    // §4: directed presence (a MUC join) carries it too.
    alice.send("<presence to='bob@localhost/phone'/>").await.unwrap();
    let seen = bob.expect("</presence>").await.unwrap();
    assert!(seen.contains(&expected), "{seen}");

    // A vCard without a photo: an empty <photo/> says "no avatar" (§4.1).
    let out = alice.request(&vcard_set("a2", "<FN>Alice</FN>"), "a2").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    alice.send("<presence/>").await.unwrap();
    let seen = bob.expect("</presence>").await.unwrap();
    assert!(seen.contains("<x xmlns='vcard-temp:x:update'><photo/></x>"), "{seen}");

    // Image data that is not base64 is refused.
    let out = alice.request(&vcard_set("a3", "<PHOTO><BINVAL>not*base64</BINVAL></PHOTO>"), "a3").await.unwrap();
    assert!(out.contains("<bad-request "), "{out}");
}

/// A PEP publish of `payload` to `node` with `pubsub#access_model` = `access`.
fn pep_publish(id: &str, node: &str, item: &str, payload: &str, access: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='{node}'><item id='{item}'>{payload}</item></publish>\
         <publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='pubsub#access_model'><value>{access}</value></field></x></publish-options></pubsub></iq>"
    )
}

#[tokio::test]
async fn pep_avatar_becomes_the_vcard_photo() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.login("alice", "home").await.unwrap();
    let mut bob = server.login("bob", "phone").await.unwrap();
    let vcard_of_alice = "<iq type='get' id='v' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>";

    // XEP-0398 §2: announced on the account.
    let info = alice
        .request(
            "<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d",
        )
        .await
        .unwrap();
    assert!(info.contains("var='urn:xmpp:pep-vcard-conversion:0'"), "{info}");
    assert!(alice.request(&vcard_set("n", "<FN>Alice</FN>"), "n").await.unwrap().contains("type='result'"));

    // XEP-0084 §4.1: data, then metadata; §7 of XEP-0398: only a world-readable
    // avatar is copied, so one with the default (presence) access is not.
    let data = format!("<data xmlns='urn:xmpp:avatar:data'>{PHOTO}</data>");
    let metadata = format!(
        "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='5' id='{PHOTO_SHA1}' type='image/png'/></metadata>"
    );
    let publish_data = pep_publish("p1", "urn:xmpp:avatar:data", PHOTO_SHA1, &data, "presence");
    assert!(alice.request(&publish_data, "p1").await.unwrap().contains("type='result'"));
    let publish_metadata = pep_publish("p2", "urn:xmpp:avatar:metadata", PHOTO_SHA1, &metadata, "presence");
    assert!(alice.request(&publish_metadata, "p2").await.unwrap().contains("type='result'"));
    let vcard = bob.request(vcard_of_alice, "v").await.unwrap();
    assert!(vcard.contains("<FN>Alice</FN>") && !vcard.contains("<PHOTO"), "{vcard}");

    // §3: an open avatar becomes the PHOTO (the rest of the vCard kept), and
    // its hash goes into alice's presence (XEP-0153).
    let open = |id: &str, node: &str, payload: &str| pep_publish(id, node, PHOTO_SHA1, payload, "open");
    let reconfigure = |id: &str, node: &str| {
        format!(
            "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{node}'>\
             <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
             <field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub></iq>"
        )
    };
    for (id, node) in [("c1", "urn:xmpp:avatar:data"), ("c2", "urn:xmpp:avatar:metadata")] {
        assert!(alice.request(&reconfigure(id, node), id).await.unwrap().contains("type='result'"));
    }
    assert!(alice
        .request(&open("p3", "urn:xmpp:avatar:metadata", &metadata), "p3")
        .await
        .unwrap()
        .contains("type='result'"));
    let vcard = bob.request(&vcard_of_alice.replace("'v'", "'v2'"), "v2").await.unwrap();
    assert!(
        vcard.contains("<FN>Alice</FN>")
            && vcard.contains(&format!("<BINVAL>{PHOTO}</BINVAL>"))
            && vcard.contains("<TYPE>image/png</TYPE>"),
        "{vcard}"
    );
    alice.send("<presence/>").await.unwrap();
    let own = alice.expect("</presence>").await.unwrap();
    assert!(own.contains(&format!("<photo>{PHOTO_SHA1}</photo>")), "{own}");

    // A metadata item whose id is not the image's hash is not copied; empty
    // metadata (avatar disabled, XEP-0084 §4.2) removes the PHOTO.
    let wrong = metadata.replace(PHOTO_SHA1, "0000000000000000000000000000000000000000");
    assert!(alice
        .request(&open("p4", "urn:xmpp:avatar:metadata", &wrong), "p4")
        .await
        .unwrap()
        .contains("type='result'"));
    let vcard = bob.request(&vcard_of_alice.replace("'v'", "'v3'"), "v3").await.unwrap();
    assert!(vcard.contains(&format!("<BINVAL>{PHOTO}</BINVAL>")), "{vcard}");
    let disabled = "<metadata xmlns='urn:xmpp:avatar:metadata'/>";
    assert!(alice
        .request(&open("p5", "urn:xmpp:avatar:metadata", disabled), "p5")
        .await
        .unwrap()
        .contains("type='result'"));
    let vcard = bob.request(&vcard_of_alice.replace("'v'", "'v4'"), "v4").await.unwrap();
    assert!(vcard.contains("<FN>Alice</FN>") && !vcard.contains("<PHOTO"), "{vcard}");
}

#[tokio::test]
async fn private_storage_set_get_and_refusals() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.login("alice", "home").await.unwrap();
    let mut bob = server.login("bob", "phone").await.unwrap();

    // XEP-0049 §2.3 example 1: store a fragment in its own namespace.
    let out = alice
        .request(
            "<iq type='set' id='1001'><query xmlns='jabber:iq:private'>\
         <exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus></query></iq>",
            "1001",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'") && !out.contains("<error"), "{out}");

    // §2.3 example 2: get it back by element name and namespace.
    let out = alice
        .request(
            "<iq type='get' id='1002'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>",
            "1002",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'") && out.contains("<defaultnick>Hamlet</defaultnick>"), "{out}");

    // Nothing stored under another key: the empty element comes back.
    let out = alice
        .request(
            "<iq type='get' id='g2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
            "g2",
        )
        .await
        .unwrap();
    assert!(out.contains("<storage xmlns='storage:bookmarks'/>") && !out.contains("Hamlet"), "{out}");

    // Each user has their own storage.
    let out = bob
        .request(
            "<iq type='get' id='g3'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>",
            "g3",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'") && !out.contains("Hamlet"), "{out}");

    // §2.3 example 3 / §3: another user's data is forbidden, for get and set.
    let out = bob
        .request(
            "<iq type='set' id='1003' to='alice@localhost'><query xmlns='jabber:iq:private'>\
         <exodus xmlns='exodus:prefs'><defaultnick>Macbeth</defaultnick></exodus></query></iq>",
            "1003",
        )
        .await
        .unwrap();
    assert!(out.contains("type='error'") && out.contains("<forbidden "), "{out}");
    let out = bob
        .request(
            "<iq type='get' id='1003b' to='alice@localhost'><query xmlns='jabber:iq:private'>\
         <exodus xmlns='exodus:prefs'/></query></iq>",
            "1003b",
        )
        .await
        .unwrap();
    assert!(out.contains("<forbidden ") && !out.contains("Hamlet"), "{out}");

    // §2.3: a query without a child element is not acceptable.
    let out = alice.request("<iq type='get' id='1004'><query xmlns='jabber:iq:private'/></iq>", "1004").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("<not-acceptable "), "{out}");

    // §2.3 example 5 / §3: reserved namespaces (jabber:*, http://jabber.org/*, vcard-temp).
    for (id, ns) in [("1005", "jabber:iq:roster"), ("1006", "http://jabber.org/protocol/muc"), ("1007", "vcard-temp")] {
        let out = alice
            .request(
                &format!(
                    "<iq type='set' id='{id}'><query xmlns='jabber:iq:private'>\
                 <foo xmlns='{ns}'><bar>Hamlet</bar></foo></query></iq>"
                ),
                id,
            )
            .await
            .unwrap();
        assert!(out.contains("type='error'") && out.contains("<not-acceptable "), "{ns}: {out}");
    }
    // A child without its own namespace inherits jabber:iq:private: reserved too.
    let out = alice
        .request("<iq type='set' id='1008'><query xmlns='jabber:iq:private'><foo>x</foo></query></iq>", "1008")
        .await
        .unwrap();
    assert!(out.contains("<not-acceptable "), "{out}");
    // The stored fragment is untouched by the refused requests.
    let out = alice
        .request(
            "<iq type='get' id='1009'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>",
            "1009",
        )
        .await
        .unwrap();
    assert!(out.contains("<defaultnick>Hamlet</defaultnick>"), "{out}");
}

fn private_bookmarks(id: &str, inner: &str) -> String {
    format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>{inner}</storage></query></iq>")
}

const BOOKMARK_ITEMS: &str =
    "<iq type='get' id='items'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>";

#[tokio::test]
async fn bookmarks_in_private_storage_and_pep_are_one_list() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut native = server.login("alice", "new").await.unwrap();
    let mut legacy = server.login("alice", "old").await.unwrap();

    // XEP-0402 §6: the account says it unifies both.
    let info = native
        .request(
            "<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d",
        )
        .await
        .unwrap();
    assert!(info.contains("var='urn:xmpp:bookmarks:1#compat'"), "{info}");

    // §3.3: a native client adds a room (with a payload extension of its own).
    let publish = "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
        <publish node='urn:xmpp:bookmarks:1'><item id='tea@conference.localhost'>\
        <conference xmlns='urn:xmpp:bookmarks:1' name='Tea' autojoin='true'><nick>Al</nick>\
        <extensions><state xmlns='urn:example:client'/></extensions></conference></item></publish>\
        <publish-options><x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
        <field var='pubsub#persist_items'><value>true</value></field>\
        <field var='pubsub#max_items'><value>max</value></field>\
        <field var='pubsub#send_last_published_item'><value>never</value></field>\
        <field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options></pubsub></iq>";
    assert!(native.request(publish, "p").await.unwrap().contains("type='result'"));

    // §5.3: a XEP-0049 client reads it as XEP-0048 storage.
    let get =
        "<iq type='get' id='g'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>";
    let read = legacy.request(get, "g").await.unwrap();
    assert!(
        read.contains("jid='tea@conference.localhost'")
            && read.contains("name='Tea'")
            && read.contains("autojoin='true'")
            && read.contains("<nick>Al</nick>"),
        "{read}"
    );

    // §5.3.2: its write becomes the node's items: tea unchanged (so its
    // extension stays), coffee added; a web page is kept in private storage.
    let write = private_bookmarks(
        "w1",
        "<conference jid='tea@conference.localhost' name='Tea' autojoin='true'><nick>Al</nick></conference>\
         <conference jid='coffee@conference.localhost' name='Coffee'/><url name='Home' url='https://example.org/'/>",
    );
    assert!(legacy.request(&write, "w1").await.unwrap().contains("type='result'"));
    let items = native.request(BOOKMARK_ITEMS, "items").await.unwrap();
    assert!(
        items.contains("id='coffee@conference.localhost'") && items.contains("<state xmlns='urn:example:client'"),
        "{items}"
    );
    // Dropping tea from the list retracts it.
    let write = private_bookmarks(
        "w2",
        "<conference jid='coffee@conference.localhost' name='Coffee'/><url name='Home' url='https://example.org/'/>",
    );
    assert!(legacy.request(&write, "w2").await.unwrap().contains("type='result'"));
    let items = native.request(&BOOKMARK_ITEMS.replace("'items'", "'items2'"), "items2").await.unwrap();
    assert!(items.contains("id='coffee@conference.localhost'") && !items.contains("tea@"), "{items}");
    let read = legacy.request(&get.replace("'g'", "'g2'"), "g2").await.unwrap();
    assert!(
        read.contains("coffee@") && !read.contains("tea@") && read.contains("url='https://example.org/'"),
        "{read}"
    );

    // XEP-0223: the node is private to its owner.
    let mut bob = server.login("bob", "phone").await.unwrap();
    let stranger =
        bob.request(&BOOKMARK_ITEMS.replace("id='items'", "id='b' to='alice@localhost'"), "b").await.unwrap();
    assert!(stranger.contains("type='error'") && !stranger.contains("coffee@"), "{stranger}");
}

#[tokio::test]
async fn last_activity_for_server_self_contact_and_stranger() {
    let server =
        TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret"), ("carol", "secret")]).unwrap();
    let mut alice = server.login("alice", "home").await.unwrap();
    let mut bob = server.login("bob", "phone").await.unwrap();
    let mut carol = server.login("carol", "pc").await.unwrap();
    subscribe(&mut bob, &mut alice, "alice@localhost", "bob@localhost").await;

    // XEP-0012 §5: to the server, its uptime and no text.
    let out = carol
        .request("<iq type='get' id='l1' to='localhost'><query xmlns='jabber:iq:last'/></iq>", "l1")
        .await
        .unwrap();
    assert!(out.contains("type='result'") && out.contains("<query xmlns='jabber:iq:last' seconds='"), "{out}");

    // §3: while the user has a session, 0 seconds — to herself and to a
    // subscribed contact.
    let out = alice.request("<iq type='get' id='l2'><query xmlns='jabber:iq:last'/></iq>", "l2").await.unwrap();
    assert!(out.contains("seconds='0'"), "{out}");
    let get = |id: &str| format!("<iq type='get' id='{id}' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>");
    let out = bob.request(&get("l3"), "l3").await.unwrap();
    assert!(out.contains("type='result'") && out.contains("seconds='0'"), "{out}");

    // §3 / §8: someone not subscribed to her presence gets forbidden.
    let out = carol.request(&get("l4"), "l4").await.unwrap();
    assert!(out.contains("type='error'") && out.contains("<forbidden ") && !out.contains("seconds="), "{out}");

    // §4: to a full JID, the server stops unauthorized queries itself...
    let out = carol
        .request("<iq type='get' id='l5' to='alice@localhost/home'><query xmlns='jabber:iq:last'/></iq>", "l5")
        .await
        .unwrap();
    assert!(out.contains("<forbidden "), "{out}");
    carol.barrier().await.unwrap();
    let out = alice.barrier().await.unwrap();
    assert!(!out.contains("id='l5'"), "{out}");
    // ...and delivers those from subscribed contacts to the client.
    bob.send("<iq type='get' id='l6' to='alice@localhost/home'><query xmlns='jabber:iq:last'/></iq>").await.unwrap();
    let out = alice.reply("l6").await.unwrap();
    assert!(out.contains("from='bob@localhost/phone'") && out.contains("jabber:iq:last"), "{out}");
    alice
        .send("<iq type='result' id='l6' to='bob@localhost/phone'><query xmlns='jabber:iq:last' seconds='123'/></iq>")
        .await
        .unwrap();
    let out = bob.reply("l6").await.unwrap();
    assert!(out.contains("seconds='123'"), "{out}");

    // §3: after logout, the seconds since and the status of her last
    // unavailable presence.
    alice.send("<presence/>").await.unwrap();
    alice.send("<presence type='unavailable'><status>Heading Home</status></presence>").await.unwrap();
    alice.barrier().await.unwrap();
    alice.send("</stream:stream>").await.unwrap();
    // The server closes the stream once it is done with the session (its
    // last activity stored).
    alice.expect_closed().await.unwrap();
    let out = bob.request(&get("l7"), "l7").await.unwrap();
    assert!(
        out.contains("type='result'") && out.contains("seconds='") && out.contains(">Heading Home</query>"),
        "{out}"
    );
    let out = carol.request(&get("l8"), "l8").await.unwrap();
    assert!(out.contains("<forbidden ") && !out.contains("Heading Home"), "{out}");

    // §6: the feature is advertised.
    let out = bob
        .request(
            "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await
        .unwrap();
    assert!(out.contains("<feature var='jabber:iq:last'/>"), "{out}");
}

/// The value of `attr` on the first element starting with `start` in `xml`.
fn attr_of<'a>(xml: &'a str, start: &str, attr: &str) -> Option<&'a str> {
    let tag = &xml[xml.find(start)?..];
    let tag = &tag[..tag.find('>')?];
    let value = &tag[tag.find(&format!(" {attr}='"))? + attr.len() + 3..];
    Some(&value[..value.find('\'')?])
}

#[tokio::test]
async fn disco_has_serverinfo_form_and_caps_stream_feature() {
    let server = TestServer::builder(BIN).config(CONTACT_ADDRESSES).with_users(&[("alice", "secret")]).unwrap();
    let mut c = XmlClient::connect(server.port, "localhost").await.unwrap();
    c.starttls().await.unwrap();
    c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{PLAIN_ALICE}</auth>"))
        .await
        .unwrap();
    c.expect("<success").await.unwrap();
    // XEP-0115 §6.3: caps as a stream feature after authentication.
    let features = c.open().await.unwrap();
    let caps = "<c xmlns='http://jabber.org/protocol/caps'";
    assert_eq!(attr_of(&features, caps, "hash"), Some("sha-1"), "{features}");
    assert_eq!(attr_of(&features, caps, "node"), Some("https://starling.im"), "{features}");
    let ver = attr_of(&features, caps, "ver").expect("a ver").to_owned();
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>")
        .await
        .unwrap();
    c.reply("b").await.unwrap();

    // XEP-0157 §3 / XEP-0128 §2: the serverinfo form in the server's disco#info.
    let out = c
        .request(
            "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await
        .unwrap();
    assert!(out.contains("<x xmlns='jabber:x:data' type='result'>"), "{out}");
    assert!(out.contains("<value>http://jabber.org/network/serverinfo</value>"), "{out}");
    assert!(
        out.contains(
            "<field var='admin-addresses'><value>mailto:xmpp@localhost</value><value>xmpp:admin@localhost</value></field>"
        ),
        "{out}"
    );
    assert!(out.contains("<field var='abuse-addresses'><value>mailto:abuse@localhost</value></field>"), "{out}");
    assert!(!out.contains("sales-addresses"), "unconfigured fields are left out: {out}");
    // XEP-0115 §7: caps is a disco feature; §5.1: the ver is the hash of this answer.
    assert!(out.contains("<feature var='http://jabber.org/protocol/caps'/>"), "{out}");
    let query: Element = out[out.find("<query").unwrap()..out.rfind("</iq>").unwrap()].parse().unwrap();
    // Hashed by xmpp-parsers, not by our own code.
    let info = DiscoInfoResult::try_from(query).expect("a valid disco#info answer");
    let hash = caps::hash_caps(&caps::compute_disco(&info), Algo::Sha_1).unwrap();
    assert_eq!(hash.to_base64(), ver, "{out}");

    // §6.2: disco#info at node#ver is answered with the same information.
    let out = c
        .request(
            &format!(
                "<iq type='get' id='d2' to='localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='https://starling.im#{ver}'/></iq>"
            ),
            "d2",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'") && out.contains(&format!("node='https://starling.im#{ver}'")), "{out}");
    assert!(out.contains("<value>http://jabber.org/network/serverinfo</value>"), "{out}");
    let out = c
        .request(
            "<iq type='get' id='d3' to='localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info' node='https://starling.im#stale'/></iq>",
            "d3",
        )
        .await
        .unwrap();
    assert!(out.contains("<item-not-found "), "{out}");
}

#[tokio::test]
async fn contact_addresses_must_be_uris() {
    // XEP-0157 §3: values are URIs; a bare address is a config error at start.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starling.toml");
    std::fs::write(&config, "[modules.contact_addresses]\nadmin = [\"admin@localhost\"]\n").unwrap();
    let out = std::process::Command::new(BIN).arg("--config").arg(&config).arg("check-config").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("modules.contact_addresses"), "{stderr}");
}
