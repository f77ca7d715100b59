"""Everyday IM with slixmpp: rosters and subscriptions both ways, presence,
offline messages, carbons on a second device, blocking.

Specs checked:
- RFC 6121 §2 (roster get, pushes), §3.1 (subscription request and approval;
  slixmpp's default auto_authorize/auto_subscribe answers and subscribes back),
  §4.2–§4.4 (initial presence, probes, broadcast to subscribers).
- XEP-0160 / XEP-0203: a message to an offline user is delivered at the next
  login with a delay stamp.
- XEP-0280 §5–§6: a second resource with carbons enabled sees sent and
  received copies.
- XEP-0191 §3: a blocked contact's message is refused; after unblock it flows.
"""

from __future__ import annotations

import asyncio

from harness import Client, close_all, run

PLUGINS = ("xep_0199", "xep_0203", "xep_0280", "xep_0191")


async def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def online(server, jid: str, password: str) -> Client:
    c = Client(server, jid, password, plugins=PLUGINS)
    await c.login()
    await c.get_roster()
    c.send_presence()
    await c.plugin["xep_0199"].ping("localhost", timeout=10)
    return c


def test_two_people_subscribe_see_presence_chat_offline_carbons_block(server):
    server.add_user("carol", "carol-secret")

    async def scenario():
        alice = await online(server, "alice@localhost/desk", "alice-secret")
        bob = await online(server, "bob@localhost/phone", "bob-secret")
        alice2 = None
        try:
            # RFC 6121 §3.1: alice asks, bob's client approves and asks back.
            alice.send_presence_subscription(pto="bob@localhost")
            await wait_for(lambda: alice.client_roster["bob@localhost"]["subscription"] == "both",
                           what="alice's roster item for bob to reach 'both'")
            await wait_for(lambda: bob.client_roster["alice@localhost"]["subscription"] == "both",
                           what="bob's roster item for alice to reach 'both'")
            # §4: each sees the other's available resource.
            await wait_for(lambda: "phone" in alice.client_roster["bob@localhost"].resources,
                           what="alice to see bob/phone available")
            await wait_for(lambda: "desk" in bob.client_roster["alice@localhost"].resources,
                           what="bob to see alice/desk available")
            # A fresh roster fetch has the item with the subscription (RFC 6121 §2.2).
            await alice.get_roster()
            assert alice.client_roster["bob@localhost"]["subscription"] == "both"

            # Chat.
            alice.send_message(mto="bob@localhost", mbody="hi bob", mtype="chat")
            msg = await bob.next_message()
            assert msg["body"] == "hi bob" and msg["from"].full == "alice@localhost/desk", msg

            # XEP-0160: bob goes offline, alice writes, bob logs in again.
            await bob.close()
            await wait_for(lambda: not alice.client_roster["bob@localhost"].resources,
                           what="alice to see bob go unavailable")
            alice.send_message(mto="bob@localhost", mbody="while you were out", mtype="chat")
            await alice.plugin["xep_0199"].ping("localhost", timeout=10)
            bob = await online(server, "bob@localhost/phone", "bob-secret")
            msg = await bob.next_message()
            assert msg["body"] == "while you were out", msg
            assert msg["delay"]["stamp"] is not None, msg  # XEP-0203

            # XEP-0280: alice's second device with carbons sees both directions.
            alice2 = await online(server, "alice@localhost/laptop", "alice-secret")
            await alice.plugin["xep_0280"].enable()
            await alice2.plugin["xep_0280"].enable()
            sent, received = asyncio.Queue(), asyncio.Queue()
            alice2.add_event_handler("carbon_sent", sent.put_nowait)
            alice2.add_event_handler("carbon_received", received.put_nowait)
            alice.send_message(mto="bob@localhost/phone", mbody="from my desk", mtype="chat")
            copy = await asyncio.wait_for(sent.get(), 10)
            assert copy["carbon_sent"]["body"] == "from my desk", copy
            bob.send_message(mto="alice@localhost/desk", mbody="to your desk", mtype="chat")
            copy = await asyncio.wait_for(received.get(), 10)
            assert copy["carbon_received"]["body"] == "to your desk", copy
            assert (await alice.next_message())["body"] == "to your desk"  # the original
            assert (await bob.next_message())["body"] == "from my desk"

            # XEP-0191: alice blocks bob; his message does not reach her.
            await alice.plugin["xep_0191"].block("bob@localhost")
            errors = asyncio.Queue()
            bob.add_event_handler("message_error", errors.put_nowait)
            bob.send_message(mto="alice@localhost/desk", mbody="blocked?", mtype="chat")
            err = await asyncio.wait_for(errors.get(), 10)
            assert err["error"]["condition"] == "service-unavailable", err
            await alice.plugin["xep_0191"].unblock("bob@localhost")
            bob.send_message(mto="alice@localhost/desk", mbody="unblocked", mtype="chat")
            while True:
                msg = await alice.next_message()
                if msg["body"]:
                    break
            assert msg["body"] == "unblocked", msg
        finally:
            await close_all(*(c for c in (alice, bob, alice2) if c is not None))

    run(scenario(), timeout=120)


def test_three_accounts_roster_presence_fanout(server):
    server.add_user("carol", "carol-secret")

    async def scenario():
        clients = [
            await online(server, f"{u}@localhost/r", f"{u}-secret") for u in ("alice", "bob", "carol")
        ]
        alice, bob, carol = clients
        try:
            alice.send_presence_subscription(pto="bob@localhost")
            alice.send_presence_subscription(pto="carol@localhost")
            for other in ("bob@localhost", "carol@localhost"):
                await wait_for(lambda o=other: alice.client_roster[o]["subscription"] == "both",
                               what=f"alice-{other} to reach both")
            # §4.4: one presence change reaches both subscribers.
            alice.send_presence(pshow="dnd", pstatus="busy")
            for c in (bob, carol):
                await wait_for(
                    lambda c=c: c.client_roster["alice@localhost"].resources.get("r", {}).get("show") == "dnd",
                    what="dnd presence at each contact")
            # RFC 6121 §2.5: removing the item cancels both subscriptions.
            alice.del_roster_item("carol@localhost")
            await wait_for(lambda: carol.client_roster["alice@localhost"]["subscription"] == "none",
                           what="carol's item for alice to drop to none")
        finally:
            await close_all(*clients)

    run(scenario(), timeout=120)
