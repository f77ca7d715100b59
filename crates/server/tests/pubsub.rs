//! Scripted conversations for XEP-0060 publish-subscribe (the service at
//! `pubsub.localhost`, present without configuration) and XEP-0163 PEP on
//! every account, against the real binary: publish-options preconditions,
//! `+notify` interests from verified entity capabilities (XEP-0115), access
//! models, owner operations, notifications and limits.

use base64::Engine;
use starling_proto::xmpp_parsers::caps::{compute_disco, hash_caps};
use starling_proto::xmpp_parsers::disco::DiscoInfoResult;
use starling_proto::xmpp_parsers::hashes::Algo;
use starling_testkit::{TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NODE: &str = "urn:example:mood";

/// A client's disco#info with `+notify` for NODE, and its XEP-0115 §5.1 verification string.
fn client_caps() -> (String, String) {
    let info = format!(
        "<query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='client' type='pc' name='test'/>\
         <feature var='http://jabber.org/protocol/disco#info'/>\
         <feature var='{NODE}'/><feature var='{NODE}+notify'/></query>"
    );
    let parsed = DiscoInfoResult::try_from(info.parse::<starling_proto::Element>().unwrap()).unwrap();
    let hash = hash_caps(&compute_disco(&parsed), Algo::Sha_1).unwrap();
    (info, base64::engine::general_purpose::STANDARD.encode(hash.hash))
}

fn caps_presence(ver: &str) -> String {
    format!("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:example:client' ver='{ver}'/></presence>")
}

/// Answers the server's disco#info query for `ver` (XEP-0115 §6.1) with `info`.
async fn answer_caps_query(client: &mut XmlClient, ver: &str, info: &str) {
    let (_, query) = client.take_stanza(&format!("id='pep-caps:{ver}'")).await.unwrap();
    assert!(query.contains(&format!("node='urn:example:client#{ver}'")), "{query}");
    let from = attr(&query, "to");
    let info = info.replacen("<query ", &format!("<query node='urn:example:client#{ver}' "), 1);
    client
        .send(&format!("<iq type='result' id='pep-caps:{ver}' to='localhost' from='{from}'>{info}</iq>"))
        .await
        .unwrap();
}

/// The value of attribute `name` (quoted with ') of the first tag that has it.
fn attr(xml: &str, name: &str) -> String {
    let marker = format!(" {name}='");
    let Some(start) = xml.find(&marker).map(|at| at + marker.len()) else { return String::new() };
    xml[start..].split('\'').next().unwrap_or_default().to_owned()
}

/// `seen` if it has `needle` (in a start tag), else the stanza with it
/// once it arrives: for what the server sends from a task of its own,
/// before or after a barrier.
async fn arrived(client: &mut XmlClient, seen: String, needle: &str) -> String {
    if seen.contains(needle) {
        return seen;
    }
    client.take_stanza(needle).await.unwrap().1
}

/// `asker` subscribes to `asked`'s presence and `asked` approves (RFC 6121 §3.1).
async fn subscribe(asker: &mut XmlClient, asker_jid: &str, asked: &mut XmlClient, asked_jid: &str) {
    asker.send(&format!("<presence to='{asked_jid}' type='subscribe'/>")).await.unwrap();
    asker.barrier().await.unwrap();
    asked.send(&format!("<presence to='{asker_jid}' type='subscribed'/>")).await.unwrap();
    asked.barrier().await.unwrap();
}

/// Mutual presence subscription between two online sessions.
async fn befriend(a: &mut XmlClient, a_jid: &str, b: &mut XmlClient, b_jid: &str) {
    subscribe(a, a_jid, b, b_jid).await;
    subscribe(b, b_jid, a, a_jid).await;
    a.barrier().await.unwrap();
    b.barrier().await.unwrap();
}

fn publish(id: &str, item: &str, payload: &str, options: &[(&str, &str)]) -> String {
    let mut xml = format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{NODE}'><item id='{item}'>{payload}</item></publish>"
    );
    if !options.is_empty() {
        xml.push_str("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>");
        for (var, value) in options {
            xml.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
        }
        xml.push_str("</x></publish-options>");
    }
    xml.push_str("</pubsub></iq>");
    xml
}

fn items(id: &str, to: &str, node: &str, extra: &str) -> String {
    format!("<iq type='get' id='{id}' to='{to}'><pubsub xmlns='{PUBSUB}'><items node='{node}' {extra}/></pubsub></iq>")
}

fn mood(text: &str) -> String {
    format!("<mood xmlns='{NODE}'><text>{text}</text></mood>")
}

#[tokio::test]
async fn pep_publish_options_notifications_and_items() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.online("alice", "home").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    befriend(&mut alice, "alice@localhost", &mut bob, "bob@localhost").await;

    // XEP-0163 §6.1: the account is a PEP service that takes publish-options.
    let out = alice
        .request(
            "<iq type='get' id='d1' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await
        .unwrap();
    assert!(out.contains("category='pubsub'") && out.contains("type='pep'"), "{out}");
    assert!(
        out.contains("http://jabber.org/protocol/pubsub#publish-options") && out.contains("type='registered'"),
        "{out}"
    );

    // XEP-0163 §4.2: bob's caps ask for NODE's notifications; the server
    // looks the hash up once (XEP-0115 §6.1) and verifies it (§5.4).
    let (info, ver) = client_caps();
    bob.send(&caps_presence(&ver)).await.unwrap();
    answer_caps_query(&mut bob, &ver, &info).await;
    bob.barrier().await.unwrap();

    // XEP-0060 §7.1.5: publish-options on a node that does not exist
    // auto-create it with those options (§7.1.4).
    let out = alice
        .request(&publish("p1", "current", &mood("happy"), &[("pubsub#access_model", "open")]), "p1")
        .await
        .unwrap();
    assert!(out.contains("type='result'") && out.contains("<item id='current'"), "{out}");
    // §7.1.2.1: bob's interested resource is notified, with the payload.
    let (_, event) = bob.take_stanza("type='headline'").await.unwrap();
    assert!(event.contains("from='alice@localhost'") && event.contains("<text>happy</text>"), "{event}");
    assert!(event.contains("node='urn:example:mood'") && event.contains("id='current'"), "{event}");
    // The publisher's own resource wants nothing (no caps): it gets nothing.
    let out = alice.barrier().await.unwrap();
    assert!(!out.contains("pubsub#event"), "{out}");

    // §7.1.5: a precondition the node does not meet → conflict + precondition-not-met.
    let out = alice
        .request(&publish("p2", "current", &mood("sad"), &[("pubsub#access_model", "presence")]), "p2")
        .await
        .unwrap();
    assert!(
        out.contains("type='error'") && out.contains("<conflict ") && out.contains("<precondition-not-met "),
        "{out}"
    );
    // Unknown fields are refused too.
    let out = alice.request(&publish("p3", "current", &mood("sad"), &[("pubsub#bogus", "1")]), "p3").await.unwrap();
    assert!(out.contains("<precondition-not-met "), "{out}");
    // A met precondition publishes; max_items = max is the service limit.
    let out = alice
        .request(
            &publish(
                "p4",
                "second",
                &mood("calm"),
                &[("pubsub#access_model", "open"), ("pubsub#persist_items", "true")],
            ),
            "p4",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");

    // §6.5.7: the newest item; the PEP default keeps one (XEP-0163 §5).
    let out = bob.request(&items("i1", "alice@localhost", NODE, "max_items='1'"), "i1").await.unwrap();
    assert!(out.contains("<text>calm</text>") && !out.contains("happy"), "{out}");
    // §6.5.8: by id; a missing node is item-not-found (§6.5.9.11).
    let out = alice.request(&format!("<iq type='get' id='i2'><pubsub xmlns='{PUBSUB}'><items node='{NODE}'><item id='second'/></items></pubsub></iq>"), "i2").await.unwrap();
    assert!(out.contains("id='second'") && out.contains("calm"), "{out}");
    let out = bob.request(&items("i3", "alice@localhost", "urn:example:none", ""), "i3").await.unwrap();
    assert!(out.contains("<item-not-found "), "{out}");

    // A second resource with the same hash is not queried again: the cache is shared.
    let mut bob2 = server.online("bob", "tablet").await.unwrap();
    bob2.send(&caps_presence(&ver)).await.unwrap();
    let out = bob2.barrier().await.unwrap();
    assert!(!out.contains("pep-caps:"), "{out}");
    // XEP-0163 §4.3.4: it gets the last item of what it wants on presence.
    let out = arrived(&mut bob2, out, "type='headline'").await;
    assert!(out.contains("pubsub#event") && out.contains("calm"), "{out}");
    bob.barrier().await.unwrap();

    // §7.2: retract with notify reaches every interested resource.
    let out = alice.request(&format!("<iq type='set' id='r1'><pubsub xmlns='{PUBSUB}'><retract node='{NODE}' notify='true'><item id='second'/></retract></pubsub></iq>"), "r1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    for client in [&mut bob, &mut bob2] {
        let (_, event) = client.take_stanza("type='headline'").await.unwrap();
        assert!(event.contains("<retract id='second'"), "{event}");
    }
}

#[tokio::test]
async fn pep_access_models_and_refusals() {
    let server =
        TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret"), ("carol", "secret")]).unwrap();
    let mut alice = server.online("alice", "home").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    let mut carol = server.online("carol", "desk").await.unwrap();
    befriend(&mut alice, "alice@localhost", &mut bob, "bob@localhost").await;

    // XEP-0163 §5: the default access model is presence.
    let out = alice.request(&publish("p1", "current", &mood("hi"), &[]), "p1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = bob.request(&items("i1", "alice@localhost", NODE, ""), "i1").await.unwrap();
    assert!(out.contains("<text>hi</text>"), "{out}");
    // XEP-0060 §6.5.9.6: a stranger without presence subscription.
    let out = carol.request(&items("i2", "alice@localhost", NODE, ""), "i2").await.unwrap();
    assert!(out.contains("<not-authorized ") && out.contains("<presence-subscription-required "), "{out}");
    // §6.1.3.2: neither may it subscribe.
    let out = carol.request(&format!("<iq type='set' id='s1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><subscribe node='{NODE}' jid='carol@localhost'/></pubsub></iq>"), "s1").await.unwrap();
    assert!(out.contains("<presence-subscription-required "), "{out}");
    // §8.2.3.2: only the owner configures; §7.1.3.1: only the owner publishes.
    let configure = format!("<iq type='get' id='c1' to='alice@localhost'><pubsub xmlns='{PUBSUB}#owner'><configure node='{NODE}'/></pubsub></iq>");
    let out = carol.request(&configure, "c1").await.unwrap();
    assert!(out.contains("<forbidden "), "{out}");
    let out = carol
        .request(&publish("p2", "x", &mood("mine"), &[]).replace("type='set'", "type='set' to='alice@localhost'"), "p2")
        .await
        .unwrap();
    assert!(out.contains("<forbidden "), "{out}");

    // §8.2: the owner reads and changes the configuration: roster model, group "friends".
    let out = alice
        .request(
            &format!("<iq type='get' id='c2'><pubsub xmlns='{PUBSUB}#owner'><configure node='{NODE}'/></pubsub></iq>"),
            "c2",
        )
        .await
        .unwrap();
    assert!(out.contains("pubsub#access_model") && out.contains("<value>presence</value>"), "{out}");
    let set = |id: &str, fields: &str| {
        format!("<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}#owner'><configure node='{NODE}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>{fields}</x></configure></pubsub></iq>")
    };
    let out = alice.request(&set("c3", "<field var='pubsub#access_model'><value>roster</value></field><field var='pubsub#roster_groups_allowed'><value>friends</value></field>"), "c3").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    // §6.5.9.7: bob is in no allowed group yet.
    let out = bob.request(&items("i3", "alice@localhost", NODE, ""), "i3").await.unwrap();
    assert!(out.contains("<not-authorized ") && out.contains("<not-in-roster-group "), "{out}");
    let out = alice.request("<iq type='set' id='g1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'><group>friends</group></item></query></iq>", "g1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = bob.request(&items("i4", "alice@localhost", NODE, ""), "i4").await.unwrap();
    assert!(out.contains("<text>hi</text>"), "{out}");

    // XEP-0163 §6.2: disco#items lists only the nodes the contact may read.
    let disco_items = |id: &str| {
        format!("<iq type='get' id='{id}' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    };
    let out = bob.request(&disco_items("d1"), "d1").await.unwrap();
    assert!(out.contains(&format!("node='{NODE}'")), "{out}");
    let out = carol.request(&disco_items("d2"), "d2").await.unwrap();
    assert!(out.contains("type='result'") && !out.contains(&format!("node='{NODE}'")), "{out}");

    // §6.5.9.8 whitelist: only affiliated JIDs.
    let out = alice
        .request(&set("c4", "<field var='pubsub#access_model'><value>whitelist</value></field>"), "c4")
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = bob.request(&items("i5", "alice@localhost", NODE, ""), "i5").await.unwrap();
    assert!(out.contains("<not-allowed ") && out.contains("<closed-node "), "{out}");
    // §8.9.2: the owner makes bob a member.
    let out = alice.request(&format!("<iq type='set' id='a1'><pubsub xmlns='{PUBSUB}#owner'><affiliations node='{NODE}'><affiliation jid='bob@localhost' affiliation='member'/></affiliations></pubsub></iq>"), "a1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = bob.request(&items("i6", "alice@localhost", NODE, ""), "i6").await.unwrap();
    assert!(out.contains("<text>hi</text>"), "{out}");
    let out = alice
        .request(
            &format!(
                "<iq type='get' id='a2'><pubsub xmlns='{PUBSUB}#owner'><affiliations node='{NODE}'/></pubsub></iq>"
            ),
            "a2",
        )
        .await
        .unwrap();
    assert!(out.contains("jid='bob@localhost'") && out.contains("affiliation='member'"), "{out}");

    // §6.1.2 authorize: bob's subscription waits for the owner (§8.6), who
    // approves it (§8.8.2); only then does he read.
    let out = alice.request(&format!("<iq type='set' id='a3'><pubsub xmlns='{PUBSUB}#owner'><affiliations node='{NODE}'><affiliation jid='bob@localhost' affiliation='none'/></affiliations></pubsub></iq>"), "a3").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = alice
        .request(&set("c6", "<field var='pubsub#access_model'><value>authorize</value></field>"), "c6")
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = bob.request(&format!("<iq type='set' id='s2' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><subscribe node='{NODE}' jid='bob@localhost'/></pubsub></iq>"), "s2").await.unwrap();
    assert!(out.contains("subscription='pending'"), "{out}");
    let out = bob.request(&items("i7", "alice@localhost", NODE, ""), "i7").await.unwrap();
    assert!(out.contains("<not-authorized ") && out.contains("<not-subscribed "), "{out}");
    let out = alice.request(&format!("<iq type='set' id='s3'><pubsub xmlns='{PUBSUB}#owner'><subscriptions node='{NODE}'><subscription jid='bob@localhost' subscription='subscribed'/></subscriptions></pubsub></iq>"), "s3").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = bob.request(&items("i8", "alice@localhost", NODE, ""), "i8").await.unwrap();
    assert!(out.contains("<text>hi</text>"), "{out}");

    // An unknown configuration field is refused and changes nothing.
    let out = alice.request(&set("c5", "<field var='pubsub#bogus'><value>1</value></field>"), "c5").await.unwrap();
    assert!(out.contains("type='error'"), "{out}");
}

#[tokio::test]
async fn pubsub_service_nodes_subscriptions_and_owner_operations() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.online("alice", "home").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    const SVC: &str = "pubsub.localhost";

    // XEP-0030: the service is listed by the host without any configuration.
    let out = bob
        .request(
            "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
            "d1",
        )
        .await
        .unwrap();
    assert!(out.contains("jid='pubsub.localhost'"), "{out}");
    // XEP-0060 §5.1: identity and features.
    let out = bob
        .request(
            &format!("<iq type='get' id='d2' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            "d2",
        )
        .await
        .unwrap();
    assert!(
        out.contains("category='pubsub'") && out.contains("type='service'") && out.contains("pubsub#publish-options"),
        "{out}"
    );

    // §8.1.3: create with a configuration; §8.1.1: a second create conflicts.
    let create = format!("<iq type='set' id='n1' to='{SVC}'><pubsub xmlns='{PUBSUB}'><create node='news'/><configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#max_items'><value>3</value></field></x></configure></pubsub></iq>");
    let out = alice.request(&create, "n1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = alice.request(&create.replace("'n1'", "'n2'"), "n2").await.unwrap();
    assert!(out.contains("<conflict "), "{out}");
    // §8.1.2: an instant node gets a name from the service.
    let out = alice
        .request(&format!("<iq type='set' id='n3' to='{SVC}'><pubsub xmlns='{PUBSUB}'><create/></pubsub></iq>"), "n3")
        .await
        .unwrap();
    assert!(out.contains("<create node='"), "{out}");
    // §5.2: nodes are disco items.
    let out = bob
        .request(
            &format!("<iq type='get' id='d3' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"),
            "d3",
        )
        .await
        .unwrap();
    assert!(out.contains("node='news'"), "{out}");

    // §6.1: bob subscribes; §8.2.3.2: he may not configure.
    let out = bob.request(&format!("<iq type='set' id='s1' to='{SVC}'><pubsub xmlns='{PUBSUB}'><subscribe node='news' jid='bob@localhost'/></pubsub></iq>"), "s1").await.unwrap();
    assert!(out.contains("subscription='subscribed'") && out.contains("node='news'"), "{out}");
    let out = bob.request(&format!("<iq type='get' id='c1' to='{SVC}'><pubsub xmlns='{PUBSUB}#owner'><configure node='news'/></pubsub></iq>"), "c1").await.unwrap();
    assert!(out.contains("<forbidden "), "{out}");
    // §7.1.3.1: nor publish (publishers model).
    let publish_news = |id: &str, item: &str| {
        format!("<iq type='set' id='{id}' to='{SVC}'><pubsub xmlns='{PUBSUB}'><publish node='news'><item id='{item}'><entry xmlns='urn:example:news'>{item}</entry></item></publish></pubsub></iq>")
    };
    let out = bob.request(&publish_news("p0", "x"), "p0").await.unwrap();
    assert!(out.contains("<forbidden "), "{out}");

    // §7.1.2.1: alice publishes five; the subscriber hears each; max_items keeps three.
    for n in 1..=5 {
        let id = format!("p{n}");
        let out = alice.request(&publish_news(&id, &format!("item{n}")), &id).await.unwrap();
        assert!(out.contains("type='result'"), "{out}");
        let (_, event) = bob.take_stanza("type='headline'").await.unwrap();
        assert!(event.contains(&format!("id='item{n}'")) && event.contains("from='pubsub.localhost'"), "{event}");
    }
    let out = bob
        .request(
            &format!("<iq type='get' id='i1' to='{SVC}'><pubsub xmlns='{PUBSUB}'><items node='news'/></pubsub></iq>"),
            "i1",
        )
        .await
        .unwrap();
    assert!(out.contains("item5") && out.contains("item3") && !out.contains("item2"), "{out}");
    // XEP-0059 paging over the items (newest first): two, then the rest.
    let page = |id: &str, set: &str| {
        format!("<iq type='get' id='{id}' to='{SVC}'><pubsub xmlns='{PUBSUB}'><items node='news'/><set xmlns='http://jabber.org/protocol/rsm'>{set}</set></pubsub></iq>")
    };
    let out = bob.request(&page("r1", "<max>2</max>"), "r1").await.unwrap();
    assert!(
        out.contains("item5") && out.contains("item4") && !out.contains("item3") && out.contains("<count>3</count>"),
        "{out}"
    );
    assert!(out.contains("<last>item4</last>"), "{out}");
    let out = bob.request(&page("r2", "<max>2</max><after>item4</after>"), "r2").await.unwrap();
    assert!(out.contains("item3") && !out.contains("item4<"), "{out}");

    // §6.3: bob pauses delivery with the pubsub#deliver option, then resumes.
    let options = |id: &str, form: &str| {
        let type_ = if form.is_empty() { "get" } else { "set" };
        format!("<iq type='{type_}' id='{id}' to='{SVC}'><pubsub xmlns='{PUBSUB}'><options node='news' jid='bob@localhost'>{form}</options></pubsub></iq>")
    };
    let deliver = |on: &str| {
        format!("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#subscribe_options</value></field><field var='pubsub#deliver'><value>{on}</value></field></x>")
    };
    let out = bob.request(&options("o1", ""), "o1").await.unwrap();
    assert!(out.contains("pubsub#subscribe_options") && out.contains("var='pubsub#deliver'"), "{out}");
    let out = bob.request(&options("o2", &deliver("0")), "o2").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = alice.request(&publish_news("p6", "quiet"), "p6").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    alice.barrier().await.unwrap();
    let out = bob.barrier().await.unwrap();
    assert!(!out.contains("quiet"), "paused: {out}");
    let out = bob.request(&options("o3", &deliver("1")), "o3").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = alice.request(&publish_news("p7", "loud"), "p7").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let (_, event) = bob.take_stanza("type='headline'").await.unwrap();
    assert!(event.contains("id='loud'"), "{event}");
    // §8.2 and §7.1.2.2: with pubsub#deliver_payloads off, notifications carry the item id only.
    let out = alice.request(&format!("<iq type='set' id='c2' to='{SVC}'><pubsub xmlns='{PUBSUB}#owner'><configure node='news'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#deliver_payloads'><value>0</value></field></x></configure></pubsub></iq>"), "c2").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let out = alice.request(&publish_news("p8", "bare"), "p8").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let (_, event) = bob.take_stanza("type='headline'").await.unwrap();
    assert!(event.contains("id='bare'") && !event.contains("<entry"), "{event}");

    // §6.3.6.2: unknown options; §6.3.4.2: alice has no subscription to configure.
    let out =
        bob.request(&options("o4", &deliver("1").replace("pubsub#deliver", "pubsub#digest")), "o4").await.unwrap();
    assert!(out.contains("<bad-request ") && out.contains("<invalid-options "), "{out}");
    let out = alice.request(&options("o5", "").replace("bob@", "alice@"), "o5").await.unwrap();
    assert!(out.contains("<not-subscribed "), "{out}");

    // §5.6 and §8.8: subscriptions as the subscriber and the owner see them.
    let out = bob
        .request(
            &format!("<iq type='get' id='s2' to='{SVC}'><pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub></iq>"),
            "s2",
        )
        .await
        .unwrap();
    assert!(out.contains("node='news'") && out.contains("jid='bob@localhost'"), "{out}");
    let out = alice.request(&format!("<iq type='get' id='s3' to='{SVC}'><pubsub xmlns='{PUBSUB}#owner'><subscriptions node='news'/></pubsub></iq>"), "s3").await.unwrap();
    assert!(out.contains("jid='bob@localhost'") && out.contains("subscription='subscribed'"), "{out}");
    // §5.7: alice owns the node.
    let out = alice
        .request(
            &format!("<iq type='get' id='a1' to='{SVC}'><pubsub xmlns='{PUBSUB}'><affiliations/></pubsub></iq>"),
            "a1",
        )
        .await
        .unwrap();
    assert!(out.contains("node='news'") && out.contains("affiliation='owner'"), "{out}");

    // §8.5: purge, notified; §8.4: delete, notified.
    let out = alice
        .request(
            &format!(
                "<iq type='set' id='o1' to='{SVC}'><pubsub xmlns='{PUBSUB}#owner'><purge node='news'/></pubsub></iq>"
            ),
            "o1",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let (_, event) = bob.take_stanza("type='headline'").await.unwrap();
    assert!(event.contains("<purge node='news'"), "{event}");
    let out = bob
        .request(
            &format!("<iq type='get' id='i2' to='{SVC}'><pubsub xmlns='{PUBSUB}'><items node='news'/></pubsub></iq>"),
            "i2",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'") && !out.contains("<item "), "{out}");
    let out = bob
        .request(
            &format!(
                "<iq type='set' id='o2' to='{SVC}'><pubsub xmlns='{PUBSUB}#owner'><delete node='news'/></pubsub></iq>"
            ),
            "o2",
        )
        .await
        .unwrap();
    assert!(out.contains("<forbidden "), "{out}");
    let out = alice
        .request(
            &format!(
                "<iq type='set' id='o3' to='{SVC}'><pubsub xmlns='{PUBSUB}#owner'><delete node='news'/></pubsub></iq>"
            ),
            "o3",
        )
        .await
        .unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let (_, event) = bob.take_stanza("type='headline'").await.unwrap();
    assert!(event.contains("<delete node='news'"), "{event}");
    // §6.2.3.4: unsubscribing from a node that is gone.
    let out = bob.request(&format!("<iq type='set' id='u1' to='{SVC}'><pubsub xmlns='{PUBSUB}'><unsubscribe node='news' jid='bob@localhost'/></pubsub></iq>"), "u1").await.unwrap();
    assert!(out.contains("<item-not-found "), "{out}");
}

#[tokio::test]
async fn limits_and_account_removal() {
    let server = TestServer::builder(BIN)
        .config("[modules.pubsub]\nmax_nodes_per_service = 2\nmax_payload_bytes = 1000\n")
        .with_users(&[("alice", "secret"), ("bob", "secret")])
        .unwrap();
    let mut alice = server.online("alice", "home").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();

    // The payload limit: §7.1.3.5 not-acceptable + payload-too-big.
    let out = alice.request(&publish("p1", "big", &mood(&"x".repeat(2000)), &[]), "p1").await.unwrap();
    assert!(out.contains("<not-acceptable ") && out.contains("<payload-too-big "), "{out}");
    // The node limit: not-allowed + max-nodes-exceeded (§18.2).
    for (id, node) in [("n1", "urn:a"), ("n2", "urn:b"), ("n3", "urn:c")] {
        let xml = publish(id, "i", &mood("m"), &[("pubsub#access_model", "open")]).replace(NODE, node);
        let out = alice.request(&xml, id).await.unwrap();
        if id == "n3" {
            assert!(out.contains("<not-allowed ") && out.contains("<max-nodes-exceeded "), "{out}");
        } else {
            assert!(out.contains("type='result'"), "{out}");
        }
    }
    // bob subscribes to one of alice's open nodes.
    bob.send(&format!("<iq type='set' id='s1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><subscribe node='urn:a' jid='bob@localhost'/></pubsub></iq>")).await.unwrap();
    // §6.1.7: the last item comes with the subscription.
    let (_, last) = bob.take_stanza("type='headline'").await.unwrap();
    assert!(last.contains("node='urn:a'"), "{last}");
    // Stamped with when it was published (XEP-0203).
    assert!(last.contains("<delay xmlns='urn:xmpp:delay'") && last.contains("from='alice@localhost'"), "{last}");
    let out = bob.reply("s1").await.unwrap();
    assert!(out.contains("subscription='subscribed'"), "{out}");

    // XEP-0077 §3.2: removing the account removes its PEP nodes.
    drop(alice);
    server.cli(&["user", "remove", "alice@localhost"]).unwrap();
    server.add_user("alice", "secret").unwrap();
    let out = bob.request(&items("i1", "alice@localhost", "urn:a", ""), "i1").await.unwrap();
    assert!(out.contains("<item-not-found "), "{out}");
}

#[tokio::test]
async fn pep_last_item_on_contact_presence() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.online("alice", "home").await.unwrap();
    let out = alice.request(&publish("p1", "current", &mood("early"), &[]), "p1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let mut bob = server.online("bob", "phone").await.unwrap();
    let (info, ver) = client_caps();
    bob.send(&caps_presence(&ver)).await.unwrap();
    answer_caps_query(&mut bob, &ver, &info).await;
    // Not alice's contact yet: her presence-model node stays closed to him.
    let out = bob.barrier().await.unwrap();
    assert!(!out.contains("pubsub#event"), "{out}");

    befriend(&mut alice, "alice@localhost", &mut bob, "bob@localhost").await;
    // XEP-0163 §4.3.4: bob's next presence reaches alice, her service sends
    // him the last item of what his caps want.
    // It is sent while his presence is routed, before his ping is answered.
    bob.send(&caps_presence(&ver)).await.unwrap();
    let out = bob.barrier().await.unwrap();
    assert!(out.contains("from='alice@localhost'") && out.contains("<text>early</text>"), "{out}");
}

#[tokio::test]
async fn unverified_caps_serve_the_asking_session_only() {
    let server = TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).unwrap();
    let mut alice = server.online("alice", "home").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    befriend(&mut alice, "alice@localhost", &mut bob, "bob@localhost").await;

    // XEP-0115 §5.4: an answer that does not hash to the advertised string
    // is not cached, but the session that gave it still gets what it asked for.
    let (info, _) = client_caps();
    let bogus = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    bob.send(&caps_presence(bogus)).await.unwrap();
    answer_caps_query(&mut bob, bogus, &info).await;
    bob.barrier().await.unwrap();
    let out = alice.request(&publish("p1", "current", &mood("unverified"), &[]), "p1").await.unwrap();
    assert!(out.contains("type='result'"), "{out}");
    let (_, event) = bob.take_stanza("type='headline'").await.unwrap();
    assert!(event.contains("<text>unverified</text>"), "{event}");

    // Another session with the same string is asked again: nothing was cached.
    let mut bob2 = server.online("bob", "tablet").await.unwrap();
    bob2.send(&caps_presence(bogus)).await.unwrap();
    answer_caps_query(&mut bob2, bogus, &info).await;
    let out = bob2.barrier().await.unwrap();
    let out = arrived(&mut bob2, out, "type='headline'").await;
    assert!(out.contains("<text>unverified</text>"), "its last item on presence: {out}");
}
