"""Bookmarks kept the old way (XEP-0048 in XEP-0049 private XML storage) and
the new way (XEP-0402 PEP native bookmarks) are one list: the account's
`urn:xmpp:bookmarks:1` PEP node (XEP-0402 §5.3 "#compat").

Two resources of alice play the two kinds of client: a "new" one (slixmpp's
xep_0402 stanzas, publishing to the node with xep_0060 and the XEP-0402 §3.3
publish-options, +notify for the node through xep_0115/xep_0163) and an
"old" one (slixmpp's xep_0048 plugin over xep_0049 private storage).

Specs checked:
- XEP-0402 §2 (one item per room, item id = room JID, <conference/>
  payload), §3.1 (+notify), §3.3 (publish with publish-options
  persist_items/max_items/send_last_published_item/access_model=whitelist),
  §4 (publish and retraction notifications), §5.3.1 (native items read as
  storage:bookmarks), §5.3.2 (a storage:bookmarks write becomes per-room
  publishes and retractions, none for unchanged rooms), §6 (the #compat
  feature on the account).
- XEP-0048 §2.1 (<conference jid name autojoin><nick/></conference>), §2.2
  (<url/> bookmarks, kept in the private copy only).
- XEP-0049 §2.3 (get/set of a fragment; another user's is forbidden).
- XEP-0223 §2 (whitelist access: nobody but the owner reads the node), §6
  (notifications come from the account itself).
- XEP-0060 §6.5.9.8 (items of a whitelist node refused to others), §7.2.2.1
  (retraction notifications); XEP-0163 §4.2/§4.3.1 (filtered notifications
  to the owner's resources and contacts).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import NamedTuple

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0048 import Bookmarks
from slixmpp.plugins.xep_0402.stanza import Conference
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from harness import STEP_TIMEOUT, Client, close_all, run

NODE = "urn:xmpp:bookmarks:1"
COMPAT = "urn:xmpp:bookmarks:1#compat"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
EVENT_NS = "http://jabber.org/protocol/pubsub#event"
# A second PEP node the clients are interested in: a notification from it
# shows that the server has learned the client's +notify features.
PROBE = "urn:example:starling-interop:probe"

NEW_PLUGINS = ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0199", "xep_0402")
OLD_PLUGINS = ("xep_0030", "xep_0048", "xep_0049", "xep_0199")
ALICE = "alice@localhost"


@dataclass(frozen=True)
class Room:
    jid: str
    name: str
    autojoin: bool = False
    nick: str | None = None

    def fields(self) -> tuple:
        return (self.name, self.autojoin, self.nick)


COUNCIL = Room("council@chat.example.org", "Council of Oberon", True, "Puck")
ORCHARD = Room("orchard@chat.example.org", "The Orchard")
THEPLAY = Room("theplay@chat.example.org", "The Play's the Thing", False, "JC")
BALCONY = Room("balcony@chat.example.org", "Balcony", False, "Romeo")
WORKS_URL = ("https://example.org/shakespeare/", "Complete Works")


# -- the two kinds of client ---------------------------------------------


class Event(NamedTuple):
    source: str  # the bare JID the notification came from
    node: str
    kind: str  # "publish" or "retract"
    item_id: str
    payload: ET.Element | None  # the <conference/> of a bookmark publish


class Events:
    """The pubsub notifications a client receives, in order, one Event per
    item or retraction."""

    def __init__(self, client: Client):
        self.client = client
        self.queue: asyncio.Queue = asyncio.Queue()
        client.register_handler(Callback(
            "interop pubsub events", StanzaPath("message/pubsub_event/items"), self._on_message))

    def _on_message(self, msg) -> None:
        # A notification without 'from' comes from the account itself.
        source = msg["from"].bare or self.client.boundjid.bare
        items = msg.xml.find(f"{{{EVENT_NS}}}event/{{{EVENT_NS}}}items")
        node = items.get("node")
        for child in items:
            if child.tag == f"{{{EVENT_NS}}}item":
                payload = child.find(f"{{{NODE}}}conference")
                self.queue.put_nowait(Event(source, node, "publish", child.get("id"), payload))
            elif child.tag == f"{{{EVENT_NS}}}retract":
                self.queue.put_nowait(Event(source, node, "retract", child.get("id"), None))

    async def next(self, node: str, timeout: float = STEP_TIMEOUT) -> Event:
        """The next event about `node` (others are skipped)."""
        while True:
            event = await asyncio.wait_for(self.queue.get(), timeout)
            if event.node == node:
                return event

    def pending(self, node: str) -> list[Event]:
        """The events about `node` received so far and not yet taken."""
        found = []
        while not self.queue.empty():
            event = self.queue.get_nowait()
            if event.node == node:
                found.append(event)
        return found


async def publish(client: Client, node: str, item_id: str, payload: ET.Element, options: bool = True):
    form = None
    if options:
        # XEP-0402 §3.3: the node must be private and keep every room.
        form = client.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
        form.add_field(var="pubsub#persist_items", value="true")
        form.add_field(var="pubsub#max_items", value="max")
        form.add_field(var="pubsub#send_last_published_item", value="never")
        form.add_field(var="pubsub#access_model", value="whitelist")
    return await client.plugin["xep_0060"].publish(
        None, node, id=item_id, payload=payload, options=form, timeout=STEP_TIMEOUT)


async def publish_room(client: Client, room: Room):
    """XEP-0402 §3.3: one item per room, the room JID as item id."""
    conference = Conference()
    conference["name"] = room.name
    if room.autojoin:
        conference["autojoin"] = True
    if room.nick is not None:
        conference["nick"] = room.nick
    return await publish(client, NODE, room.jid, conference.xml)


def probe_payload() -> ET.Element:
    return ET.Element(f"{{{PROBE}}}probe")


async def until_interests_known(client: Client, events: Events) -> None:
    """XEP-0163 §4.2: the server filters notifications by the +notify
    features of the session's entity capabilities, which it learns with a
    disco#info query some time after the presence. A notification from the
    probe node (its +notify is in the same caps) shows it has; until then
    the probe is published again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT
    while True:
        await publish(client, PROBE, "probe", probe_payload(), options=False)
        try:
            await events.next(PROBE, timeout=0.5)
            return
        except asyncio.TimeoutError:
            if loop.time() > deadline:
                raise AssertionError(f"{client.boundjid}: the server never sent a {PROBE} "
                                     "notification: it did not learn the +notify features")


async def native_client(server, jid: str, password: str, interested: bool = True) -> tuple[Client, Events]:
    """A XEP-0402 client; with `interested`, available with +notify for
    the bookmarks node (XEP-0402 §3.1) and the probe node, and known by the
    server to be so."""
    client = Client(server, jid, password, plugins=NEW_PLUGINS)
    events = Events(client)
    await client.login()
    if interested:
        client.plugin["xep_0163"].add_interest([NODE, PROBE])
        await client.plugin["xep_0115"].update_caps(broadcast=False)
        client.send_presence()
        await until_interests_known(client, events)
    return client, events


async def legacy_client(server, jid: str, password: str) -> Client:
    """A XEP-0048 client storing bookmarks with XEP-0049 (it sends no
    presence, so it is no notification target)."""
    client = Client(server, jid, password, plugins=OLD_PLUGINS)
    await client.login()
    return client


async def read_legacy(client: Client):
    """XEP-0049 §2.3 get of <storage xmlns='storage:bookmarks'/>."""
    iq = await client.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=STEP_TIMEOUT)
    return iq["private"]["bookmarks"]


async def write_legacy(client: Client, rooms: list[Room], urls: list[tuple[str, str]] = ()):
    """XEP-0049 §2.3 set of the whole storage:bookmarks list."""
    storage = Bookmarks()
    for room in rooms:
        storage.add_conference(room.jid, room.nick, name=room.name, autojoin=room.autojoin)
    for url, name in urls:
        storage.add_url(url, name=name)
    return await client.plugin["xep_0048"].set_bookmarks(storage, method="xep_0049", timeout=STEP_TIMEOUT)


def legacy_rooms(storage) -> dict[str, tuple]:
    """XEP-0048 §2.1: room JID → (name, autojoin, nick)."""
    rooms = {}
    for conf in storage["conferences"]:
        assert conf["jid"] not in rooms, f"room {conf['jid']} listed twice: {storage}"
        rooms[conf["jid"]] = (conf["name"], conf["autojoin"], conf["nick"] or None)
    return rooms


def legacy_urls(storage) -> set[tuple[str, str]]:
    return {(u["url"], u["name"]) for u in storage["urls"]}


def conference_fields(conference: ET.Element | None) -> tuple:
    """XEP-0402 §2: (name, autojoin, nick) of a <conference/> payload."""
    assert conference is not None, "an item without a <conference xmlns='urn:xmpp:bookmarks:1'/> payload"
    nick = conference.find(f"{{{NODE}}}nick")
    return (conference.get("name"), conference.get("autojoin", "false") in ("true", "1"),
            nick.text if nick is not None else None)


async def native_rooms(client: Client, owner: str | None = None) -> dict[str, tuple]:
    """XEP-0402 §3.2: all items of the node, room JID → (name, autojoin, nick)."""
    iq = await client.plugin["xep_0060"].get_items(owner and JID(owner), NODE, timeout=STEP_TIMEOUT)
    rooms = {}
    for item in iq["pubsub"]["items"]:
        rooms[item["id"]] = conference_fields(item.xml.find(f"{{{NODE}}}conference"))
    return rooms


async def barrier(client: Client) -> None:
    """A ping round trip: what the server sent this session before its
    answer has arrived."""
    await client.plugin["xep_0199"].send_ping("localhost", timeout=STEP_TIMEOUT)


# -- scenarios -----------------------------------------------------------


def test_bookmarks_published_natively_are_read_through_private_xml(server):
    """XEP-0402 §3.3 publishes (with the §3.3 publish-options) by a new
    client are what an old client reads as XEP-0048 §2.1 conferences with
    XEP-0049 §2.3 (XEP-0402 §5.3.1): jid from the item id, name, autojoin
    and nick from the payload."""
    async def scenario():
        new, _ = await native_client(server, f"{ALICE}/new", "alice-secret", interested=False)
        old = await legacy_client(server, f"{ALICE}/old", "alice-secret")
        try:
            # No bookmarks yet: an empty list (XEP-0049 §2.3, example 2).
            storage = await read_legacy(old)
            assert legacy_rooms(storage) == {} and legacy_urls(storage) == set(), storage

            for room in (COUNCIL, ORCHARD):
                await publish_room(new, room)
            assert await native_rooms(new) == {COUNCIL.jid: COUNCIL.fields(), ORCHARD.jid: ORCHARD.fields()}

            storage = await read_legacy(old)
            assert legacy_rooms(storage) == {
                COUNCIL.jid: ("Council of Oberon", True, "Puck"),
                ORCHARD.jid: ("The Orchard", False, None),
            }, storage
            assert legacy_urls(storage) == set(), storage
        finally:
            await close_all(new, old)

    run(scenario())


def test_bookmarks_written_through_private_xml_become_pep_items(server):
    """An old client's XEP-0049 §2.3 write of a changed storage:bookmarks
    list (XEP-0048 §2.1, §2.2) becomes per-room publishes and retractions
    on the node (XEP-0402 §5.3.2): a new client with +notify (XEP-0402 §3.1,
    XEP-0163 §4.2) gets a publish notification for the added and the
    changed room and a retraction for the removed one (XEP-0402 §4,
    XEP-0060 §7.2.2.1), and none for the unchanged room (§5.3.2 "SHOULD
    NOT send notifications for unchanged items"). The node then holds
    exactly the new rooms (§3.2); the <url/> bookmark stays in the private
    copy only and is still read back through XEP-0049."""
    async def scenario():
        new, events = await native_client(server, f"{ALICE}/new", "alice-secret")
        old = await legacy_client(server, f"{ALICE}/old", "alice-secret")
        try:
            # The starting list, published natively; the new client hears
            # its own publishes (XEP-0163 §4.3.1: the owner's resources).
            for room in (COUNCIL, ORCHARD, THEPLAY):
                await publish_room(new, room)
            seen = {}
            for _ in range(3):
                event = await events.next(NODE)
                assert event.kind == "publish" and event.source == ALICE, event
                seen[event.item_id] = conference_fields(event.payload)
            assert seen == {r.jid: r.fields() for r in (COUNCIL, ORCHARD, THEPLAY)}, seen
            await barrier(new)
            assert events.pending(NODE) == []

            # The old client reads, edits and writes the whole list back:
            # COUNCIL unchanged, ORCHARD renamed and autojoined, THEPLAY
            # removed, BALCONY added, and a web page.
            storage = await read_legacy(old)
            assert legacy_rooms(storage) == {r.jid: r.fields() for r in (COUNCIL, ORCHARD, THEPLAY)}, storage
            read = {c["jid"]: c for c in storage["conferences"]}
            council = Room(COUNCIL.jid, read[COUNCIL.jid]["name"], read[COUNCIL.jid]["autojoin"],
                           read[COUNCIL.jid]["nick"] or None)
            assert council == COUNCIL
            orchard = Room(ORCHARD.jid, "The Orchard (evenings)", True, "Juliet")
            await write_legacy(old, [council, orchard, BALCONY], [WORKS_URL])

            # XEP-0402 §4 / §5.3.2: one notification per added or changed
            # room and a retraction for the removed one.
            expected = {
                ("publish", ORCHARD.jid): orchard.fields(),
                ("publish", BALCONY.jid): BALCONY.fields(),
                ("retract", THEPLAY.jid): None,
            }
            got = {}
            while len(got) < len(expected):
                event = await events.next(NODE)
                key = (event.kind, event.item_id)
                assert key in expected and key not in got, f"unexpected notification {event} (so far {got})"
                # XEP-0223 §6: from alice's own account.
                assert event.source == ALICE, event
                got[key] = conference_fields(event.payload) if event.kind == "publish" else None
            assert got == expected, got
            # Everything the server sent before the ping's answer is in:
            # nothing about the unchanged room, nothing twice.
            await barrier(new)
            extra = events.pending(NODE)
            assert extra == [], f"notifications beyond the changes (unchanged room republished?): {extra}"

            # A fresh items query: exactly the new rooms (XEP-0402 §3.2).
            assert await native_rooms(new) == {
                COUNCIL.jid: COUNCIL.fields(),
                ORCHARD.jid: ("The Orchard (evenings)", True, "Juliet"),
                BALCONY.jid: ("Balcony", False, "Romeo"),
            }
            # XEP-0049 read: the same rooms, and the <url/> (XEP-0048 §2.2).
            storage = await read_legacy(old)
            assert legacy_rooms(storage) == {r.jid: r.fields() for r in (council, orchard, BALCONY)}, storage
            assert legacy_urls(storage) == {WORKS_URL}, storage
        finally:
            await close_all(new, old)

    run(scenario())


def test_bookmarks_compat_feature_on_account(server):
    """XEP-0402 §5.3 and §6: the account (disco#info to the bare JID,
    XEP-0030 §3.1) announces urn:xmpp:bookmarks:1#compat, next to the
    publish-options feature XEP-0402 §8 / XEP-0223 §5 tell clients to
    check before storing bookmarks in PEP."""
    async def scenario():
        alice = Client(server, f"{ALICE}/disco", "alice-secret", plugins=("xep_0030",))
        try:
            await alice.login()
            iq = await alice.plugin["xep_0030"].get_info(jid=ALICE, local=False, cached=False,
                                                         timeout=STEP_TIMEOUT)
            features = set(iq["disco_info"]["features"])
            assert COMPAT in features, f"{COMPAT} missing from {sorted(features)}"
            assert PUBLISH_OPTIONS in features, f"{PUBLISH_OPTIONS} missing from {sorted(features)}"
        finally:
            await alice.close()

    run(scenario())


def test_bookmarks_are_private_to_their_owner(server):
    """Another user, even a contact with a mutual presence subscription and
    +notify for the node, cannot read alice's bookmarks: an items request
    to her bookmarks node is refused (XEP-0223 §2 whitelist access;
    XEP-0060 §6.5.9.8 not-allowed/closed-node, or item-not-found/forbidden
    that do not reveal the node), he gets no notification of her bookmark
    publishes (XEP-0163 §4.3.1), and her private XML storage is forbidden
    to him for get and set (XEP-0049 §2.3, §3)."""
    async def scenario():
        alice, alice_events = await native_client(server, f"{ALICE}/new", "alice-secret")
        bob, bob_events = await native_client(server, "bob@localhost/phone", "bob-secret")
        old = await legacy_client(server, f"{ALICE}/old", "alice-secret")
        try:
            # RFC 6121 §3.1: a mutual subscription (slixmpp approves and
            # subscribes back by default).
            await alice.get_roster()
            await bob.get_roster()
            alice.send_presence_subscription(pto="bob@localhost")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STEP_TIMEOUT
            while not (alice.client_roster["bob@localhost"]["subscription"] == "both"
                       and bob.client_roster[ALICE]["subscription"] == "both"):
                assert loop.time() < deadline, "no mutual presence subscription"
                await asyncio.sleep(0.05)

            await publish_room(alice, COUNCIL)
            # Control: a presence-access node of alice's does reach bob.
            await publish(alice, PROBE, "after-subscription", probe_payload(), options=False)
            # (alice's presence may also bring him her probe node's last item first.)
            while True:
                event = await bob_events.next(PROBE)
                if event.source == ALICE and event.item_id == "after-subscription":
                    break
            await barrier(bob)
            leaked = bob_events.pending(NODE)
            assert leaked == [], f"bob was sent alice's bookmarks: {leaked}"

            # XEP-0060 §6.5.9.8 / XEP-0223 §2: items refused to bob.
            with pytest.raises(IqError) as refused:
                await bob.plugin["xep_0060"].get_items(JID(ALICE), NODE, timeout=STEP_TIMEOUT)
            condition = refused.value.iq["error"]["condition"]
            assert condition in ("not-allowed", "forbidden", "item-not-found"), refused.value.iq
            assert COUNCIL.jid not in str(refused.value.iq), refused.value.iq
            with pytest.raises(IqError) as refused:
                await bob.plugin["xep_0060"].get_item(JID(ALICE), NODE, COUNCIL.jid, timeout=STEP_TIMEOUT)
            assert refused.value.iq["error"]["condition"] in ("not-allowed", "forbidden", "item-not-found")

            # XEP-0049 §2.3: alice's private storage, get and set, forbidden to bob.
            iq = bob.make_iq_get(ito=ALICE)
            iq.append(ET.fromstring("<query xmlns='jabber:iq:private'>"
                                    "<storage xmlns='storage:bookmarks'/></query>"))
            with pytest.raises(IqError) as refused:
                await iq.send(timeout=STEP_TIMEOUT)
            assert refused.value.iq["error"]["condition"] == "forbidden", refused.value.iq
            assert COUNCIL.jid not in str(refused.value.iq), refused.value.iq
            iq = bob.make_iq_set(ito=ALICE)
            iq.append(ET.fromstring("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
                                    "<conference jid='trap@chat.example.org' name='Trap'/>"
                                    "</storage></query>"))
            with pytest.raises(IqError) as refused:
                await iq.send(timeout=STEP_TIMEOUT)
            assert refused.value.iq["error"]["condition"] == "forbidden", refused.value.iq

            # Alice's list is as she left it, and his attempt caused no notification.
            storage = await read_legacy(old)
            assert legacy_rooms(storage) == {COUNCIL.jid: COUNCIL.fields()}, storage
            assert await native_rooms(alice) == {COUNCIL.jid: COUNCIL.fields()}
            seen = alice_events.pending(NODE)
            assert [(e.kind, e.item_id) for e in seen] == [("publish", COUNCIL.jid)], seen
            await barrier(alice)
            assert alice_events.pending(NODE) == []
        finally:
            await close_all(alice, bob, old)

    run(scenario())
