//! XEP-0045 Multi-User Chat at `conference.localhost` against the real
//! binary, as raw-XML conversations: creating and joining a room, presence
//! with status codes, messages with the room's stanza and occupant ids,
//! history, nick rules, kick and ban, configuration and its refusals, voice
//! requests, IQs between occupants, the room's archive (XEP-0313), self-ping
//! (XEP-0410), and a persistent room across a restart.

use starling_testkit::{TestServer, XmlClient};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const ROOM: &str = "tea@conference.localhost";
const MUC: &str = "http://jabber.org/protocol/muc";

fn server() -> TestServer {
    TestServer::builder(BIN)
        .with_users(&[("alice", "secret"), ("bob", "secret"), ("carol", "secret")])
        .expect("server starts")
}

/// Joins `ROOM` as `nick` (with `extra` inside `<x xmlns=muc>`) and returns
/// everything up to and including the subject message that ends a join.
async fn join(client: &mut XmlClient, nick: &str, extra: &str) -> String {
    client.send(&format!("<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'>{extra}</x></presence>")).await.unwrap();
    let (before, subject) = client.take_stanza("type='groupchat'").await.unwrap();
    let mut all = before + &subject;
    // History messages are groupchat too: read on to the subject.
    while !all.rsplit("<message").next().unwrap().contains("<subject") {
        let (more, next) = client.take_stanza("type='groupchat'").await.unwrap();
        all = all + &more + &next;
    }
    all
}

async fn join_error(client: &mut XmlClient, nick: &str, extra: &str) -> String {
    client.send(&format!("<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'>{extra}</x></presence>")).await.unwrap();
    client.take_stanza("type='error'").await.unwrap().1
}

fn say(body: &str) -> String {
    format!("<message to='{ROOM}' type='groupchat'><body>{body}</body></message>")
}

async fn configure(client: &mut XmlClient, id: &str, fields: &[(&str, &str)]) -> String {
    let mut form = String::from(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>",
    );
    for (var, value) in fields {
        form.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
    }
    let xml = format!("<iq type='set' id='{id}' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>{form}</x></query></iq>");
    client.request(&xml, id).await.unwrap()
}

#[tokio::test]
async fn create_join_talk_and_history() {
    let server = server();
    let mut alice = server.online("alice", "desk").await.unwrap();
    let mut bob = server.online("bob", "desk").await.unwrap();

    // §10.1: the first join creates the room: owner, moderator, 201 and 110.
    let created = join(&mut alice, "Alice", "").await;
    assert!(created.contains("affiliation='owner'") && created.contains("role='moderator'"), "{created}");
    assert!(created.contains("code='201'") && created.contains("code='110'"), "{created}");
    assert!(created.contains("<occupant-id xmlns='urn:xmpp:occupant-id:0'"), "XEP-0421: {created}");
    // §7.2.15: the join ends with the (empty) subject.
    assert!(created.contains("<subject/>") || created.contains("<subject></subject>"), "{created}");

    // §7.2.3: bob gets alice's presence (no real JID: semi-anonymous), then his own.
    let joined = join(&mut bob, "Bob", "").await;
    let (alice_at, bob_at) =
        (joined.find(&format!("from='{ROOM}/Alice'")).unwrap(), joined.find(&format!("from='{ROOM}/Bob'")).unwrap());
    assert!(alice_at < bob_at, "{joined}");
    assert!(!joined.contains("jid='alice@localhost/desk'"), "semi-anonymous: {joined}");
    assert!(
        joined.contains("role='participant'") && joined.contains("code='110'") && !joined.contains("code='201'"),
        "{joined}"
    );
    // Alice, a moderator, sees bob's real JID.
    let (_, bob_presence) = alice.take_stanza(&format!("from='{ROOM}/Bob'")).await.unwrap();
    assert!(bob_presence.contains("jid='bob@localhost/desk'"), "{bob_presence}");

    // §7.4: a message goes to every occupant from room/nick, stamped by the room.
    bob.send(&say("hello tea room")).await.unwrap();
    for client in [&mut alice, &mut bob] {
        let (_, message) = client.take_stanza(&format!("from='{ROOM}/Bob'")).await.unwrap();
        assert!(message.contains("hello tea room") && message.contains(&format!("by='{ROOM}'")), "{message}");
    }
    alice.send(&say("second")).await.unwrap();
    alice.take_stanza(&format!("from='{ROOM}/Alice'")).await.unwrap();

    // §7.2.14: history on join, as asked (the last one), with its delay; and
    // §7.2.9 a nick in use is a conflict.
    let mut carol = server.online("carol", "desk").await.unwrap();
    let refused = join_error(&mut carol, "Bob", "").await;
    assert!(refused.contains("<conflict "), "{refused}");
    let history = join(&mut carol, "Carol", "<history maxstanzas='1'/>").await;
    assert!(history.contains("second") && !history.contains("hello tea room"), "{history}");
    assert!(history.contains("<delay xmlns='urn:xmpp:delay'"), "{history}");

    // §8.1: only moderators change the subject by default.
    carol
        .send(&format!("<message to='{ROOM}' type='groupchat'><subject>carol's topic</subject></message>"))
        .await
        .unwrap();
    let (_, denied) = carol.take_stanza("type='error'").await.unwrap();
    assert!(denied.contains("<forbidden "), "{denied}");
    alice.send(&format!("<message to='{ROOM}' type='groupchat'><subject>Tea</subject></message>")).await.unwrap();
    let (_, topic) = carol.take_stanza(&format!("from='{ROOM}/Alice'")).await.unwrap();
    assert!(topic.contains("<subject>Tea</subject>"), "{topic}");

    // XEP-0313 on the room: the messages, from room/nick.
    bob.send(&format!("<iq type='set' id='mam' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='r'/></iq>"))
        .await
        .unwrap();
    let (results, fin) = bob.take_stanza("id='mam'").await.unwrap();
    assert!(
        fin.contains("<fin ") && results.contains("hello tea room") && results.contains(&format!("from='{ROOM}/Bob'")),
        "{results}{fin}"
    );

    // XEP-0410: a self-ping tells a joined client it still is.
    let pong = bob
        .request(&format!("<iq type='get' id='sp' to='{ROOM}/Bob'><ping xmlns='urn:xmpp:ping'/></iq>"), "sp")
        .await
        .unwrap();
    assert!(pong.contains("type='result'"), "{pong}");
    let mut bob_elsewhere = XmlClient::logged_in(server.port, "localhost", "bob", "secret", "other").await.unwrap().0;
    let not_joined = bob_elsewhere
        .request(&format!("<iq type='get' id='sp2' to='{ROOM}/Bob'><ping xmlns='urn:xmpp:ping'/></iq>"), "sp2")
        .await
        .unwrap();
    assert!(not_joined.contains("<not-acceptable "), "{not_joined}");

    // §7.5: private messages between occupants, through the room.
    bob.send(&format!("<message to='{ROOM}/Carol' type='chat'><body>psst</body></message>")).await.unwrap();
    let (_, private) = carol.take_stanza(&format!("from='{ROOM}/Bob'")).await.unwrap();
    assert!(private.contains("psst") && private.contains("type='chat'"), "{private}");
}

#[tokio::test]
async fn moderation_and_configuration() {
    let server = server();
    let mut alice = server.online("alice", "desk").await.unwrap();
    let mut bob = server.online("bob", "desk").await.unwrap();
    let mut carol = server.online("carol", "desk").await.unwrap();
    join(&mut alice, "Alice", "").await;
    join(&mut bob, "Bob", "").await;

    // §10.2: only owners configure.
    let refused = configure(&mut bob, "c1", &[("muc#roomconfig_moderatedroom", "1")]).await;
    assert!(refused.contains("<forbidden "), "{refused}");
    let done = configure(&mut alice, "c2", &[("muc#roomconfig_moderatedroom", "1")]).await;
    assert!(done.contains("type='result'"), "{done}");
    let info = alice
        .request(
            &format!("<iq type='get' id='i' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            "i",
        )
        .await
        .unwrap();
    assert!(info.contains("var='muc_moderated'") && info.contains("var='urn:xmpp:mam:2'"), "§6.4: {info}");

    // §7.4: a newcomer to a moderated room is a visitor without voice.
    let joined = join(&mut carol, "Carol", "").await;
    assert!(joined.contains("role='visitor'"), "{joined}");
    carol.send(&say("may I?")).await.unwrap();
    let (_, denied) = carol.take_stanza("type='error'").await.unwrap();
    assert!(denied.contains("<forbidden "), "{denied}");

    // §8.2: a moderator kicks: 307 to everyone, 110 to the kicked.
    let kick = format!(
        "<iq type='set' id='k' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item nick='Carol' role='none'><reason>be nice</reason></item></query></iq>"
    );
    assert!(alice.request(&kick, "k").await.unwrap().contains("type='result'"));
    let (_, kicked) = carol.take_stanza("type='unavailable'").await.unwrap();
    assert!(kicked.contains("code='307'") && kicked.contains("code='110'") && kicked.contains("be nice"), "{kicked}");
    // A participant may not kick.
    let by_bob = bob.request(&kick.replace("id='k'", "id='k2'").replace("Carol", "Alice"), "k2").await.unwrap();
    assert!(by_bob.contains("type='error'"), "{by_bob}");

    // §9.1: an admin bans; the outcast cannot come back.
    let ban = format!(
        "<iq type='set' id='b' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='carol@localhost' affiliation='outcast'/></query></iq>"
    );
    assert!(alice.request(&ban, "b").await.unwrap().contains("type='result'"));
    let banned = join_error(&mut carol, "Carol", "").await;
    assert!(banned.contains("<forbidden "), "{banned}");
    let outcasts = alice
        .request(
            &format!("<iq type='get' id='l' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query></iq>"),
            "l",
        )
        .await
        .unwrap();
    assert!(outcasts.contains("jid='carol@localhost'"), "{outcasts}");

    // §9.3 / §7.2.6: members-only keeps strangers out.
    configure(&mut alice, "c3", &[("muc#roomconfig_membersonly", "1")]).await;
    let mut dave = XmlClient::logged_in(server.port, "localhost", "carol", "secret", "other").await.unwrap().0;
    let unban = ban.replace("id='b'", "id='ub'").replace("outcast", "none");
    alice.request(&unban, "ub").await.unwrap();
    let stranger = join_error(&mut dave, "Dave", "").await;
    assert!(stranger.contains("<registration-required "), "{stranger}");

    // The last owner stays an owner.
    let demote =
        ban.replace("id='b'", "id='d'").replace("carol@localhost", "alice@localhost").replace("outcast", "member");
    assert!(alice.request(&demote, "d").await.unwrap().contains("<conflict "));
}

/// A `muc#request` form (XEP-0045 §7.13, §8.6) in a message to the room.
fn voice_form(fields: &str) -> String {
    format!(
        "<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>\
         <value>http://jabber.org/protocol/muc#request</value></field>{fields}</x></message>"
    )
}

#[tokio::test]
async fn voice_requests_and_iqs_between_occupants() {
    let server = server();
    let mut alice = server.online("alice", "desk").await.unwrap();
    let mut bob = server.online("bob", "desk").await.unwrap();
    let mut carol = server.online("carol", "desk").await.unwrap();
    join(&mut alice, "Alice", "").await;
    configure(&mut alice, "c", &[("muc#roomconfig_moderatedroom", "1")]).await;
    join(&mut bob, "Bob", "").await;
    join(&mut carol, "Carol", "").await;
    alice.take_stanza(&format!("from='{ROOM}/Carol'")).await.unwrap();

    // §7.13: a visitor asks for voice; §8.6: the moderator gets the approval form.
    let role = "<field var='muc#role'><value>participant</value></field>";
    carol.send(&voice_form(role)).await.unwrap();
    let form = loop {
        let (_, from_room) = alice.take_stanza(&format!("from='{ROOM}'")).await.unwrap();
        if from_room.contains("muc#request") {
            break from_room;
        }
    };
    assert!(
        form.contains(&format!("from='{ROOM}'"))
            && form.contains("<value>carol@localhost/desk</value>")
            && form.contains("var='muc#request_allow'"),
        "{form}"
    );
    let answer = |allow: &str| {
        voice_form(&format!(
            "{role}<field var='muc#roomnick'><value>Carol</value></field>\
             <field var='muc#request_allow'><value>{allow}</value></field>"
        ))
    };
    // Bob, a participant, may not answer it.
    bob.send(&answer("true")).await.unwrap();
    let (_, refused) = bob.take_stanza("type='error'").await.unwrap();
    assert!(refused.contains("<forbidden "), "{refused}");
    // §8.3: the moderator approves: carol is a participant, and speaks.
    alice.send(&answer("true")).await.unwrap();
    let (_, granted) = carol.take_stanza(&format!("from='{ROOM}/Carol'")).await.unwrap();
    assert!(granted.contains("role='participant'"), "{granted}");
    carol.send(&say("thank you")).await.unwrap();
    assert!(message_from(&mut bob, "Carol").await.contains("thank you"));
    carol.send(&voice_form(role)).await.unwrap();
    let (_, again) = carol.take_stanza("type='error'").await.unwrap();
    assert!(again.contains("<not-acceptable "), "she has voice already: {again}");

    // §17.4: an IQ to an occupant JID reaches the occupant from the sender's
    // occupant JID, and the answer comes back the same way; no real JIDs.
    bob.send(&format!("<iq type='get' id='v1' to='{ROOM}/Carol'><query xmlns='jabber:iq:version'/></iq>"))
        .await
        .unwrap();
    let (_, asked) = carol.take_stanza("id='v1'").await.unwrap();
    assert!(asked.contains(&format!("from='{ROOM}/Bob'")) && !asked.contains("bob@localhost"), "{asked}");
    carol
        .send(&format!(
            "<iq type='result' id='v1' to='{ROOM}/Bob'><query xmlns='jabber:iq:version'><name>raw</name></query></iq>"
        ))
        .await
        .unwrap();
    let (_, answered) = bob.take_stanza("id='v1'").await.unwrap();
    assert!(answered.contains(&format!("from='{ROOM}/Carol'")) && answered.contains("<name>raw</name>"), "{answered}");
    // A vCard request is answered for the occupant's account (XEP-0153 avatars).
    let set = "<iq type='set' id='vs'><vCard xmlns='vcard-temp'><NICKNAME>Al</NICKNAME></vCard></iq>";
    assert!(alice.request(set, "vs").await.unwrap().contains("type='result'"));
    let vcard = bob
        .request(&format!("<iq type='get' id='vc' to='{ROOM}/Alice'><vCard xmlns='vcard-temp'/></iq>"), "vc")
        .await
        .unwrap();
    assert!(vcard.contains("<NICKNAME>Al</NICKNAME>") && vcard.contains(&format!("from='{ROOM}/Alice'")), "{vcard}");
    // Someone outside the room, or a nick nobody has, gets an error.
    let mut outsider = XmlClient::logged_in(server.port, "localhost", "carol", "secret", "other").await.unwrap().0;
    let stranger = outsider
        .request(&format!("<iq type='get' id='s' to='{ROOM}/Bob'><query xmlns='jabber:iq:version'/></iq>"), "s")
        .await
        .unwrap();
    assert!(stranger.contains("<not-acceptable "), "{stranger}");
    let nobody = bob
        .request(&format!("<iq type='get' id='n' to='{ROOM}/Nobody'><query xmlns='jabber:iq:version'/></iq>"), "n")
        .await
        .unwrap();
    assert!(nobody.contains("<item-not-found "), "{nobody}");
}

#[tokio::test]
async fn a_persistent_room_survives_a_restart() {
    let mut server = server();
    let mut alice = server.online("alice", "desk").await.unwrap();
    join(&mut alice, "Alice", "").await;
    let done =
        configure(&mut alice, "p", &[("muc#roomconfig_persistentroom", "1"), ("muc#roomconfig_roomname", "Tea")]).await;
    assert!(done.contains("type='result'"), "{done}");
    drop(alice);
    server.terminate().unwrap();
    server.spawn().unwrap();

    let mut bob = server.online("bob", "desk").await.unwrap();
    // §6.3: listed by the service before anything started it again.
    let rooms = bob
        .request(
            "<iq type='get' id='r' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
            "r",
        )
        .await
        .unwrap();
    assert!(rooms.contains(&format!("jid='{ROOM}'")) && rooms.contains("name='Tea'"), "{rooms}");
    let info = bob
        .request(
            &format!("<iq type='get' id='i' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
            "i",
        )
        .await
        .unwrap();
    assert!(info.contains("name='Tea'") && info.contains("var='muc_persistent'"), "{info}");
    // Alice is still its owner: bob joins as a participant.
    let joined = join(&mut bob, "Bob", "").await;
    assert!(joined.contains("role='participant'") && !joined.contains("code='201'"), "{joined}");
    // A temporary room that does not exist is not found.
    let missing = bob
        .request("<iq type='get' id='m' to='nope@conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "m")
        .await
        .unwrap();
    assert!(missing.contains("<item-not-found "), "{missing}");
}

#[tokio::test]
async fn room_creation_is_limited_per_user() {
    let server = TestServer::builder(BIN)
        .config("[modules.muc]\nmax_rooms_per_owner = 1\n")
        .with_users(&[("alice", "secret")])
        .expect("server starts");
    let mut alice = server.online("alice", "desk").await.unwrap();
    join(&mut alice, "Alice", "").await;
    alice
        .send(&format!("<presence to='coffee@conference.localhost/Alice'><x xmlns='{MUC}'/></presence>"))
        .await
        .unwrap();
    let (_, refused) = alice.take_stanza("type='error'").await.unwrap();
    assert!(refused.contains("<not-allowed ") && refused.contains("at most 1 rooms"), "{refused}");
}

#[tokio::test]
async fn a_burst_of_joins_waits_for_a_busy_room() {
    let server = TestServer::builder(BIN)
        .config("[modules.muc]\nroom_queue = 1\n")
        .with_users(&[("alice", "secret"), ("bob", "secret"), ("carol", "secret")])
        .expect("server starts");
    let mut alice = server.online("alice", "desk").await.unwrap();
    join(&mut alice, "Alice", "").await;
    let mut joiners = Vec::new();
    for (user, resource) in [("bob", "a"), ("bob", "b"), ("bob", "c"), ("carol", "a"), ("carol", "b"), ("carol", "c")] {
        joiners.push((format!("{user}-{resource}"), server.online(user, resource).await.unwrap()));
    }
    // All at once: a queue of one stanza is full at once; the joins wait
    // for room in it instead of being refused (they used to bounce).
    for (nick, client) in &mut joiners {
        client.send(&format!("<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'/></presence>")).await.unwrap();
    }
    for (nick, client) in &mut joiners {
        // §7.2.3: its own presence (110), or the error, comes from room/nick.
        let (_, own) = client.take_stanza(&format!("from='{ROOM}/{nick}'")).await.unwrap();
        assert!(own.contains("code='110'") && !own.contains("type='error'"), "{nick}: {own}");
    }
}

/// The next message (presence skipped) from `nick` in the room.
async fn message_from(client: &mut XmlClient, nick: &str) -> String {
    loop {
        let (_, stanza) = client.take_stanza(&format!("from='{ROOM}/{nick}'")).await.unwrap();
        if stanza.starts_with("<message") {
            return stanza;
        }
    }
}

/// The room's stanza id on a message as delivered.
fn room_stanza_id(message: &str) -> String {
    let at = message.find(&format!("by='{ROOM}'")).unwrap_or_else(|| panic!("no room stanza id: {message}"));
    let tag = &message[message[..at].rfind('<').unwrap()..];
    tag.split(" id='").nth(1).unwrap().split('\'').next().unwrap().to_owned()
}

#[tokio::test]
async fn moderators_and_authors_retract_messages() {
    let server = server();
    let mut alice = server.online("alice", "desk").await.unwrap();
    let mut bob = server.online("bob", "desk").await.unwrap();
    join(&mut alice, "Alice", "").await;
    join(&mut bob, "Bob", "").await;
    bob.send(&say("buy cheap potions")).await.unwrap();
    let spam = message_from(&mut alice, "Bob").await;
    let spam_id = room_stanza_id(&spam);
    bob.send(&say("oops typo")).await.unwrap();
    let typo = message_from(&mut alice, "Bob").await;
    let typo_id = room_stanza_id(&typo);

    // XEP-0425 §3: a participant may not moderate.
    let moderate = |id: &str, iq: &str| {
        format!(
            "<iq type='set' id='{iq}' to='{ROOM}'><moderate id='{id}' xmlns='urn:xmpp:message-moderate:1'>\
             <retract xmlns='urn:xmpp:message-retract:1'/><reason>spam</reason></moderate></iq>"
        )
    };
    let refused = bob.request(&moderate(&spam_id, "m1"), "m1").await.unwrap();
    assert!(refused.contains("<forbidden "), "{refused}");
    // §3.1: a moderator may; everyone gets the retraction from the room.
    let done = alice.request(&moderate(&spam_id, "m2"), "m2").await.unwrap();
    assert!(done.contains("type='result'"), "{done}");
    let (_, notice) = bob.take_stanza(&format!("id='{spam_id}'")).await.unwrap();
    assert!(notice.contains(&format!("by='{ROOM}/Alice'")) && notice.contains("spam"), "{notice}");
    let missing = alice.request(&moderate("no-such-id", "m3"), "m3").await.unwrap();
    assert!(missing.contains("<item-not-found "), "{missing}");

    // XEP-0424: alice cannot retract bob's words; bob retracts his own typo.
    alice
        .send(&format!("<message to='{ROOM}' type='groupchat'><retract xmlns='urn:xmpp:message-retract:1' id='{typo_id}'/><body>/me retracted</body></message>"))
        .await
        .unwrap();
    message_from(&mut alice, "Alice").await;
    alice
        .send(&format!("<iq type='set' id='mam0' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='r0'/></iq>"))
        .await
        .unwrap();
    let (before, _) = alice.take_stanza("id='mam0'").await.unwrap();
    assert!(before.contains("oops typo"), "not alice's to retract: {before}");
    bob.send(&format!("<message to='{ROOM}' type='groupchat'><retract xmlns='urn:xmpp:message-retract:1' id='{typo_id}'/><body>/me retracted</body></message>"))
        .await
        .unwrap();
    // (alice's message came before it and is consumed with it)
    message_from(&mut bob, "Bob").await;

    // §4: the archive holds tombstones, not the words.
    bob.send(&format!("<iq type='set' id='mam' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='r'/></iq>"))
        .await
        .unwrap();
    let (results, _) = bob.take_stanza("id='mam'").await.unwrap();
    assert!(!results.contains("cheap potions") && !results.contains("oops typo"), "{results}");
    assert_eq!(results.matches("<retracted ").count(), 2, "{results}");
    assert!(results.contains("<moderated ") && results.contains("<occupant-id "), "{results}");
    // And a newcomer's history does not show them either.
    let mut carol = server.online("carol", "desk").await.unwrap();
    let history = join(&mut carol, "Carol", "").await;
    assert!(!history.contains("cheap potions") && !history.contains("oops typo"), "{history}");
}
