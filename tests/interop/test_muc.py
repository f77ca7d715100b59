"""slixmpp's XEP-0045 client against Starling's MUC at conference.localhost:
create and configure a room, join with history, talk, change nick, kick,
ban, leave; the room's archive paged with XEP-0313; a self-ping.

Specs checked:
- XEP-0045 §10.1–10.2: the first join creates the room (owner), the owner
  reads and submits the configuration form.
- §7.2: join answers with occupants, self-presence, history, subject;
  §7.2.14 history limited by maxstanzas.
- §7.4: groupchat messages reach every occupant from room/nick.
- §7.6: nick change (303 then the new presence).
- §8.2 kick (307), §9.1 ban (301) and the outcast's refused rejoin.
- XEP-0313 on the room JID, XEP-0410 self-ping.
"""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError, PresenceError

from harness import STEP_TIMEOUT, Client, close_all, run

ROOM = "tea@conference.localhost"
PLUGINS = ("xep_0004", "xep_0030", "xep_0045", "xep_0059", "xep_0199", "xep_0313")


async def groupchat(client: Client, body: str):
    """The next groupchat message with `body` (others skipped)."""
    while True:
        msg = await client.next_message()
        if msg["type"] == "groupchat" and msg["body"] == body:
            return msg


def test_room_lifecycle_with_slixmpp(server):
    async def scenario():
        alice = Client(server, "alice@localhost/desk", "alice-secret", plugins=PLUGINS)
        bob = Client(server, "bob@localhost/desk", "bob-secret", plugins=PLUGINS)
        try:
            await alice.login()
            await bob.login()
            muc_a, muc_b = alice.plugin["xep_0045"], bob.plugin["xep_0045"]

            # Create, then configure: persistent, with a name.
            presence, _subject, _occupants, _history = await muc_a.join_muc_wait(ROOM, "Alice", maxstanzas=0, timeout=STEP_TIMEOUT)
            assert 201 in presence["muc"]["status_codes"] and presence["muc"]["affiliation"] == "owner"
            form = await muc_a.get_room_config(ROOM)
            assert "muc#roomconfig_persistentroom" in form.get_fields(), form
            submit = alice.plugin["xep_0004"].make_form(ftype="submit")
            submit.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
            submit.add_field(var="muc#roomconfig_roomname", value="Tea time")
            submit.add_field(var="muc#roomconfig_persistentroom", ftype="boolean", value=True)
            await muc_a.set_room_config(ROOM, submit)

            for i in range(5):
                alice.send_message(mto=ROOM, mbody=f"early {i}", mtype="groupchat")
            await groupchat(alice, "early 4")

            # Bob joins with the last two messages of history.
            presence, _subject, occupants, history = await muc_b.join_muc_wait(ROOM, "Bob", maxstanzas=2, timeout=STEP_TIMEOUT)
            assert presence["muc"]["role"] == "participant"
            assert [m["body"] for m in history] == ["early 3", "early 4"], history
            assert [p["from"].resource for p in occupants] == ["Alice", "Bob"], occupants

            bob.send_message(mto=ROOM, mbody="hi all", mtype="groupchat")
            got = await groupchat(alice, "hi all")
            assert got["from"].full == f"{ROOM}/Bob"

            # Nick change, then the new nick speaks.
            assert await muc_b.set_self_nick(ROOM, "Robert", timeout=STEP_TIMEOUT) == "Robert"
            bob.send_message(mto=ROOM, mbody="renamed", mtype="groupchat")
            assert (await groupchat(alice, "renamed"))["from"].resource == "Robert"

            # The room's archive, paged 3 at a time, is the whole conversation.
            pages = [m async for m in bob.plugin["xep_0313"].iterate(jid=ROOM, rsm={"max": 3})]
            bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in pages]
            assert bodies == [f"early {i}" for i in range(5)] + ["hi all", "renamed"], bodies

            # XEP-0410 self-ping while joined.
            await bob.plugin["xep_0199"].send_ping(f"{ROOM}/Robert", timeout=STEP_TIMEOUT)

            # Kick, then ban: the outcast cannot rejoin.
            await muc_a.set_role(ROOM, "Robert", "none", reason="cool down")
            await muc_b.join_muc_wait(ROOM, "Bob", maxstanzas=0, timeout=STEP_TIMEOUT)
            await muc_a.set_affiliation(ROOM, "outcast", jid="bob@localhost", reason="banned")
            with pytest.raises(PresenceError) as refused:
                await muc_b.join_muc_wait(ROOM, "Bob", maxstanzas=0, timeout=STEP_TIMEOUT)
            assert refused.value.condition == "forbidden"
            outcasts = await muc_a.get_affiliation_list(ROOM, "outcast")
            assert outcasts == ["bob@localhost"], outcasts
            # A non-owner cannot read the configuration.
            with pytest.raises(IqError) as denied:
                await muc_b.get_room_config(ROOM)
            assert denied.value.condition == "forbidden"

            muc_a.leave_muc(ROOM, "Alice")
        finally:
            await close_all(alice, bob)

    run(scenario())
