//! XEP-0313 message archives against the real binary, as raw-XML
//! conversations: what is archived (once per account, stamped with an
//! XEP-0359 stanza id), queries with every filter, XEP-0059 paging both ways,
//! preferences (XEP-0441), retraction tombstones (XEP-0424), and the errors.

use starling_testkit::{TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");

fn server() -> TestServer {
    TestServer::builder(BIN).with_users(&[("alice", "secret"), ("bob", "secret")]).expect("server starts")
}

/// A page of a query: the ids of the results in order, their XML, and the `<fin/>`.
struct Page {
    ids: Vec<String>,
    results: String,
    fin: String,
}

/// Runs a query (`form` fields and `rsm` inside `<query/>`) and collects its results.
async fn query(client: &mut XmlClient, id: &str, inner: &str) -> Page {
    let xml = format!("<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='q-{id}'>{inner}</query></iq>");
    client.send(&xml).await.unwrap();
    let (results, fin) = client.take_stanza(&format!("id='{id}'")).await.unwrap();
    let ids = results
        .split("<result ")
        .skip(1)
        .map(|r| {
            assert!(r.contains(&format!("queryid='q-{id}'")), "§4.2: results carry the queryid: {r}");
            let id = r.split(" id='").nth(1).unwrap();
            id[..id.find('\'').unwrap()].to_owned()
        })
        .collect();
    Page { ids, results, fin }
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut x = String::from(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>",
    );
    for (var, value) in fields {
        x.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
    }
    x + "</x>"
}

fn rsm(inner: &str) -> String {
    format!("<set xmlns='http://jabber.org/protocol/rsm'>{inner}</set>")
}

fn count(fin: &str) -> usize {
    fin.split("<count>").nth(1).and_then(|c| c.split('<').next()).unwrap().parse().unwrap()
}

/// Alice sends bob `n` chat messages "message {i}" and bob receives them all.
async fn converse(alice: &mut XmlClient, bob: &mut XmlClient, n: usize) {
    for i in 0..n {
        alice
            .send(&format!("<message to='bob@localhost' type='chat' id='m{i}'><body>message {i}</body></message>"))
            .await
            .unwrap();
    }
    alice.barrier().await.unwrap();
    for i in 0..n {
        bob.expect(&format!("message {i}</body>")).await.unwrap();
    }
}

#[tokio::test]
async fn messages_are_archived_once_per_account_and_stamped() {
    let server = server();
    let mut alice = server.online("alice", "phone").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    let mut bob2 = server.online("bob", "laptop").await.unwrap();
    bob2.request("<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>", "c").await.unwrap();

    // §7: the account advertises the archive.
    let info = alice
        .request(
            "<iq type='get' id='i' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "i",
        )
        .await
        .unwrap();
    assert!(info.contains("var='urn:xmpp:mam:2'") && info.contains("var='urn:xmpp:mam:2#extended'"), "{info}");

    // A chat message, a chat state alone (not archived, §5.1.1), and one
    // with a stanza id forged in bob's archive's name (XEP-0359 §4: removed).
    alice
        .send(
            "<message to='bob@localhost/phone' type='chat' id='a1'><body>hello bob</body>\
             <origin-id xmlns='urn:xmpp:sid:0' id='origin-1'/></message>\
             <message to='bob@localhost' type='chat' id='a2'><active xmlns='http://jabber.org/protocol/chatstates'/></message>\
             <message to='bob@localhost/phone' type='chat' id='a3'><body>second</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='bob@localhost'/></message>",
        )
        .await
        .unwrap();
    alice.barrier().await.unwrap();
    let (_, first) = bob.take_stanza("id='a1'").await.unwrap();
    assert!(first.contains("<stanza-id xmlns='urn:xmpp:sid:0'") && first.contains("by='bob@localhost'"), "{first}");
    let (_, third) = bob.take_stanza("id='a3'").await.unwrap();
    assert!(!third.contains("id='forged'"), "{third}");
    // XEP-0280 copies carry the stanza id too.
    let carbon = bob2.barrier().await.unwrap();
    assert!(
        carbon.contains("<received xmlns='urn:xmpp:carbons:2'>") && carbon.contains("by='bob@localhost'"),
        "{carbon}"
    );

    // Bob's archive: two messages however many resources got them; the
    // ids are the ones stamped on delivery.
    let page = query(&mut bob, "all", "").await;
    assert_eq!(page.ids.len(), 2, "{}", page.results);
    assert!(first.contains(&format!("id='{}'", page.ids[0])), "{first}");
    assert!(page.fin.contains("<fin xmlns='urn:xmpp:mam:2' complete='true'>"), "{}", page.fin);
    assert_eq!(count(&page.fin), 2);
    assert!(page.results.contains("hello bob") && page.results.contains("<delay xmlns='urn:xmpp:delay' stamp="));
    // Alice's archive has her side.
    let sent = query(&mut alice, "mine", "").await;
    assert_eq!(sent.ids.len(), 2, "{}", sent.results);
    assert!(sent.results.contains("to='bob@localhost/phone'"), "{}", sent.results);

    // §4: nobody queries another account's archive.
    let refused = alice
        .request("<iq type='set' id='x' to='bob@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>", "x")
        .await
        .unwrap();
    assert!(refused.contains("<forbidden "), "{refused}");
}

#[tokio::test]
async fn paging_both_ways_with_filters() {
    let server = server();
    let mut alice = server.online("alice", "phone").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    converse(&mut alice, &mut bob, 10).await;
    bob.send("<message to='alice@localhost' type='chat'><body>a banana split</body></message>").await.unwrap();
    bob.barrier().await.unwrap();
    alice.expect("banana split").await.unwrap();
    let all = query(&mut bob, "all", "").await.ids;
    assert_eq!(all.len(), 11);

    // XEP-0059 §2.2: forward pages of 4, chained by <after/>.
    let first = query(&mut bob, "p1", &rsm("<max>4</max>")).await;
    assert_eq!(first.ids, all[..4]);
    assert!(first.fin.contains("complete='false'") || !first.fin.contains("complete='true'"), "{}", first.fin);
    assert_eq!(count(&first.fin), 11, "count is the whole result set");
    let second = query(&mut bob, "p2", &rsm(&format!("<max>4</max><after>{}</after>", all[3]))).await;
    assert_eq!(second.ids, all[4..8]);
    let last = query(&mut bob, "p3", &rsm(&format!("<max>4</max><after>{}</after>", all[7]))).await;
    assert_eq!(last.ids, all[8..]);
    assert!(last.fin.contains("complete='true'"), "{}", last.fin);

    // §2.5: an empty <before/> is the last page; <before>id</before> the one before.
    let end = query(&mut bob, "b1", &rsm("<max>4</max><before/>")).await;
    assert_eq!(end.ids, all[7..]);
    assert!(!end.fin.contains("complete='true'"), "{}", end.fin);
    let earlier = query(&mut bob, "b2", &rsm(&format!("<max>4</max><before>{}</before>", all[1]))).await;
    assert_eq!(earlier.ids, all[..1]);
    assert!(earlier.fin.contains("complete='true'"), "the start of the archive: {}", earlier.fin);
    // XEP-0313 §4.3.5 flip-page: the same page, newest first.
    let flipped = query(&mut bob, "f", &(rsm("<max>4</max><before/>") + "<flip-page/>")).await;
    assert_eq!(flipped.ids, all[7..].iter().rev().cloned().collect::<Vec<_>>());

    // §4.1.1 `with`, and the #extended ids, after-id, before-id.
    let from_bob = query(&mut bob, "w", &form(&[("with", "alice@localhost")])).await;
    assert_eq!(from_bob.ids.len(), 11, "every message was with alice");
    let none = query(&mut bob, "w2", &form(&[("with", "someone@localhost")])).await;
    assert!(none.ids.is_empty() && none.fin.contains("complete='true'"), "{}", none.fin);
    let between = query(&mut bob, "ab", &form(&[("after-id", &all[2]), ("before-id", &all[6])])).await;
    assert_eq!(between.ids, all[3..6]);
    let picked = query(
        &mut bob,
        "ids",
        &format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='ids'><value>{}</value><value>{}</value></field></x>",
            all[1], all[9]
        ),
    )
    .await;
    assert_eq!(picked.ids, [all[1].clone(), all[9].clone()]);
    // Time bounds: everything ends before the far future and starts after the past.
    let timed =
        query(&mut bob, "t", &form(&[("start", "2020-01-01T00:00:00Z"), ("end", "2999-01-01T00:00:00Z")])).await;
    assert_eq!(timed.ids, all);
    let future = query(&mut bob, "t2", &form(&[("start", "2999-01-01T00:00:00Z")])).await;
    assert!(future.ids.is_empty());

    // XEP-0431 full-text search on the body.
    let found = query(&mut bob, "s", &form(&[("{urn:xmpp:fulltext:0}fulltext", "banana")])).await;
    assert_eq!(found.ids, [all[10].clone()], "{}", found.results);

    // Errors: an id the archive does not have, an unknown field.
    for (id, inner, condition) in [
        ("e1", rsm("<after>no-such-id</after>"), "<item-not-found "),
        ("e2", form(&[("after-id", "no-such-id")]), "<item-not-found "),
        ("e3", form(&[("colour", "blue")]), "<bad-request "),
    ] {
        let xml = format!("<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2'>{inner}</query></iq>");
        let reply = bob.request(&xml, id).await.unwrap();
        assert!(reply.contains(condition), "{id}: {reply}");
    }

    // §5.1 metadata: the first and the last message.
    let meta = bob.request("<iq type='get' id='md'><metadata xmlns='urn:xmpp:mam:2'/></iq>", "md").await.unwrap();
    assert!(
        meta.contains(&format!("<start id='{}'", all[0])) && meta.contains(&format!("<end id='{}'", all[10])),
        "{meta}"
    );
}

#[tokio::test]
async fn preferences_decide_what_is_archived() {
    let server = server();
    let mut alice = server.online("alice", "phone").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();

    // XEP-0441 §2.2: default always, until bob says never except alice.
    let prefs = bob.request("<iq type='get' id='p'><prefs xmlns='urn:xmpp:mam:2'/></iq>", "p").await.unwrap();
    assert!(prefs.contains("default='always'"), "{prefs}");
    let set = bob
        .request(
            "<iq type='set' id='s'><prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>carol@localhost</jid></always><never/></prefs></iq>",
            "s",
        )
        .await
        .unwrap();
    assert!(set.contains("type='result'") && set.contains("default='never'"), "{set}");
    converse(&mut alice, &mut bob, 2).await;
    assert!(query(&mut bob, "q", "").await.ids.is_empty(), "bob archives nothing with alice");
    assert_eq!(query(&mut alice, "q", "").await.ids.len(), 2, "alice's archive follows her own preferences");
}

#[tokio::test]
async fn a_retraction_leaves_a_tombstone_in_both_archives() {
    let server = server();
    let mut alice = server.online("alice", "phone").await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='r1'><body>oops, wrong chat</body>\
             <origin-id xmlns='urn:xmpp:sid:0' id='oops-1'/></message>",
        )
        .await
        .unwrap();
    bob.expect("oops, wrong chat").await.unwrap();
    // Bob's own message with the same origin id is not alice's to retract.
    bob.send(
        "<message to='alice@localhost' type='chat' id='r2'><body>bob's words</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='oops-1'/></message>",
    )
    .await
    .unwrap();
    alice.expect("bob's words").await.unwrap();

    // XEP-0424 §4: retract by origin id.
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='r3'><retract xmlns='urn:xmpp:message-retract:1' id='oops-1'/>\
             <body>This person attempted to retract a previous message.</body><store xmlns='urn:xmpp:hints'/></message>",
        )
        .await
        .unwrap();
    bob.expect("attempted to retract").await.unwrap();
    bob.barrier().await.unwrap();
    for client in [&mut alice, &mut bob] {
        let page = query(client, "q", "").await;
        assert!(!page.results.contains("oops, wrong chat"), "{}", page.results);
        assert!(page.results.contains("<retracted xmlns='urn:xmpp:message-retract:1'"), "{}", page.results);
        assert!(page.results.contains("bob's words"), "{}", page.results);
        // Full-text search no longer finds the retracted words.
        let found = query(client, "s", &form(&[("{urn:xmpp:fulltext:0}fulltext", "wrong")])).await;
        assert!(found.ids.is_empty(), "{}", found.results);
    }
}

#[tokio::test]
async fn offline_messages_carry_the_archive_id_and_are_archived_once() {
    let server = server();
    let mut alice = server.online("alice", "phone").await.unwrap();
    alice
        .send("<message to='bob@localhost' type='chat' id='o1'><body>while you were out</body></message>")
        .await
        .unwrap();
    alice.barrier().await.unwrap();
    let mut bob = server.online("bob", "phone").await.unwrap();
    let (_, offline) = bob.take_stanza("id='o1'").await.unwrap();
    assert!(offline.contains("by='bob@localhost'"), "{offline}");
    let page = query(&mut bob, "q", "").await;
    assert_eq!(page.ids.len(), 1);
    assert!(offline.contains(&format!("id='{}'", page.ids[0])), "{offline}");
}
