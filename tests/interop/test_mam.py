"""slixmpp's XEP-0313 client against Starling's archive: 1,000 messages
paged through both ways, filtered by peer, time and id; a second device
that was offline syncs exactly the gap; full-text search finds a word.

Specs checked:
- XEP-0313 §4.1–4.3: queries with `with`, `start`, RSM `after`/`before`,
  results (with their XEP-0203 delay) before the `<fin/>`, iteration to the
  end (`complete`) forwards and backwards.
- XEP-0359: each delivered message carries the archive's stanza id, the id
  a later query pages from.
- XEP-0431: a full-text search field on the query form.
"""

from __future__ import annotations

from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness import STEP_TIMEOUT, Client, close_all, run

N = 1000


def stanza_id(msg) -> str:
    """The XEP-0359 id the recipient's archive gave a delivered message."""
    ids = [el.get("id") for el in msg.xml.findall("{urn:xmpp:sid:0}stanza-id") if el.get("by") == "bob@localhost"]
    assert len(ids) == 1, msg
    return ids[0]


async def bodies_until(client: Client, last: str) -> list:
    got = []
    while True:
        msg = await client.next_message()
        if msg["body"]:
            got.append(msg)
        if msg["body"] == last:
            return got


def test_thousand_messages_page_both_ways_and_a_second_device_syncs_the_gap(server):
    async def scenario():
        plugins = ("xep_0030", "xep_0059", "xep_0313")
        alice = Client(server, "alice@localhost/desk", "alice-secret", plugins=plugins)
        phone = Client(server, "bob@localhost/phone", "bob-secret", plugins=plugins)
        tablet = Client(server, "bob@localhost/tablet", "bob-secret", plugins=plugins)
        try:
            await alice.login()
            await phone.login()
            await tablet.login()
            for c in (phone, tablet):
                c.send_presence()
            # Both devices online: they see the first ten.
            for i in range(10):
                alice.send_message(mto="bob@localhost", mbody=f"early {i}", mtype="chat")
            seen_by_tablet = await bodies_until(tablet, "early 9")
            last_seen = stanza_id(seen_by_tablet[-1])
            await tablet.close()

            # The tablet is off while a thousand more arrive (and one with a rare word).
            for i in range(N):
                alice.send_message(mto="bob@localhost", mbody=f"message {i}", mtype="chat")
            alice.send_message(mto="bob@localhost", mbody="the zebra crossing", mtype="chat")
            received = await bodies_until(phone, "the zebra crossing")
            assert len(received) == 10 + N + 1

            # The phone pages through everything with alice, 100 at a time.
            forward = [m async for m in phone.plugin["xep_0313"].iterate(
                with_jid="alice@localhost", rsm={"max": 100})]
            bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in forward]
            assert bodies == [m["body"] for m in received], "all of it, in order"
            ids = [m["mam_result"]["id"] for m in forward]
            assert ids == [stanza_id(m) for m in received], "archive ids are the delivered stanza ids"
            backward = [m async for m in phone.plugin["xep_0313"].iterate(
                with_jid="alice@localhost", rsm={"max": 100}, reverse=True)]
            assert [m["mam_result"]["id"] for m in backward] == ids[::-1]
            none = [m async for m in phone.plugin["xep_0313"].iterate(with_jid="carol@localhost")]
            assert none == []

            # Time filter: from the stamp of message 500 on.
            stamp = forward[510]["mam_result"]["forwarded"]["delay"]["stamp"]
            later = [m async for m in phone.plugin["xep_0313"].iterate(start=stamp, rsm={"max": 250})]
            assert [m["mam_result"]["id"] for m in later] == ids[-len(later):]
            assert 1 <= len(later) <= len(ids) - 510

            # The tablet comes back and asks only for what came after the last
            # message it saw (RSM after = that stanza id).
            tablet = Client(server, "bob@localhost/tablet", "bob-secret", plugins=plugins)
            await tablet.login()
            gap = [m async for m in tablet.plugin["xep_0313"].iterate(rsm={"max": 200, "after": last_seen})]
            assert [m["mam_result"]["id"] for m in gap] == ids[10:], "exactly the gap"

            # XEP-0431 full-text search through the query form.
            found = []
            tablet.register_handler(Callback(
                "search results",
                MatchXPath("{jabber:client}message/{urn:xmpp:mam:2}result"),
                lambda msg: found.append(msg.xml.find("{urn:xmpp:mam:2}result")),
            ))
            iq = tablet.make_iq_set()
            iq.append(ET.fromstring(
                "<query xmlns='urn:xmpp:mam:2' queryid='search'>"
                "<x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>"
                "<field var='{urn:xmpp:fulltext:0}fulltext'><value>zebra</value></field>"
                "</x></query>"
            ))
            fin = await iq.send(timeout=STEP_TIMEOUT)
            assert fin.xml.find("{urn:xmpp:mam:2}fin").get("complete") == "true", fin
            # §4.2: the results came before the <fin/>.
            assert [(r.get("queryid"), r.get("id")) for r in found] == [("search", ids[-1])], found
        finally:
            await close_all(alice, phone, tablet)

    run(scenario(), timeout=120)
