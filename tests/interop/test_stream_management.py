"""Stream management (XEP-0198) with slixmpp's xep_0198 plugin: a phone-like
client loses its socket mid-conversation (no stream close) and resumes.

Specs checked:
- XEP-0198 §3: <enable resume='true'/> answered with an SM-ID and 'max'.
- XEP-0198 §4: acks both ways (slixmpp answers the server's <r/>).
- XEP-0198 §5: <resume/> after the connection was lost: every message sent
  meanwhile arrives exactly once, in order; a resume after the timeout gets
  <failed/> (item-not-found), and the messages come from offline storage
  (XEP-0160) once the client binds again.
- RFC 6121 §8.5.3.2.1: an IQ to the expired session is answered with an error.
"""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from harness import STEP_TIMEOUT, Client, close_all, run


def waiter(client: Client, event: str) -> asyncio.Future:
    """A future set by the next `event` of `client`."""
    fut = asyncio.get_running_loop().create_future()

    def handler(data=None):
        if not fut.done():
            fut.set_result(data)

    client.add_event_handler(event, handler, disposable=True)
    return fut


async def phone(server) -> tuple[Client, object]:
    """alice/phone with resumable stream management; returns the <enabled/>."""
    alice = Client(server, "alice@localhost/phone", "alice-secret", plugins=("xep_0198", "xep_0199", "xep_0203"))
    enabled = waiter(alice, "sm_enabled")
    await alice.login()
    stanza = await asyncio.wait_for(enabled, STEP_TIMEOUT)
    assert stanza["resume"], stanza
    assert stanza["id"], stanza
    return alice, stanza


async def lose_connection(client: Client) -> None:
    """Cut the socket without </stream:stream>, as a phone losing its network."""
    gone = waiter(client, "disconnected")
    client.transport.abort()
    await asyncio.wait_for(gone, STEP_TIMEOUT)


async def bodies_until(client: Client, last: str) -> list[str]:
    out = []
    while not out or out[-1] != last:
        msg = await client.next_message()
        out.append(msg["body"])
    return out


def test_lost_connection_resumes_with_nothing_lost_or_repeated(server):
    async def scenario():
        alice, _ = await phone(server)
        bob = Client(server, "bob@localhost/desk", "bob-secret", plugins=("xep_0199",))
        try:
            await bob.login()
            for i in (1, 2, 3):
                bob.send_message(mto="alice@localhost/phone", mbody=f"m{i}", mtype="chat")
            assert await bodies_until(alice, "m3") == ["m1", "m2", "m3"]

            await lose_connection(alice)
            for i in (4, 5, 6):
                bob.send_message(mto="alice@localhost/phone", mbody=f"m{i}", mtype="chat")
            # Barrier: bob's messages are queued for alice before this answer.
            await bob.plugin["xep_0199"].ping("localhost", timeout=10)

            resumed = waiter(alice, "session_resumed")
            alice.connect("127.0.0.1", server.port)
            await asyncio.wait_for(resumed, STEP_TIMEOUT)
            assert await bodies_until(alice, "m6") == ["m4", "m5", "m6"]
            # Nothing comes twice: the queue is empty after a round trip.
            await alice.plugin["xep_0199"].ping("localhost", timeout=10)
            assert alice.messages.empty(), alice.messages.get_nowait()["body"]

            # The resumed session is the same resource, and works both ways.
            alice.send_message(mto="bob@localhost/desk", mbody="back", mtype="chat")
            assert (await bob.next_message())["body"] == "back"
        finally:
            await close_all(alice, bob)

    run(scenario())


@pytest.mark.parametrize("server", [{"c2s_options": "resume_timeout_secs = 1"}], indirect=True)
def test_resume_after_the_timeout_fails_and_messages_wait_offline(server):
    async def scenario():
        alice, _ = await phone(server)
        bob = Client(server, "bob@localhost/desk", "bob-secret", plugins=("xep_0199",))
        try:
            await bob.login()
            alice.send_presence()
            await alice.plugin["xep_0199"].ping("localhost", timeout=10)
            await lose_connection(alice)
            bob.send_message(mto="alice@localhost", mbody="while away", mtype="chat")
            # The ping waits in the hibernated session; when the session
            # expires it is answered with an error: the barrier for expiry.
            with pytest.raises(IqError):
                await bob.plugin["xep_0199"].ping("alice@localhost/phone", timeout=10)

            failed = waiter(alice, "sm_failed")
            started = waiter(alice, "session_start")
            alice.connect("127.0.0.1", server.port)
            await asyncio.wait_for(failed, STEP_TIMEOUT)
            await asyncio.wait_for(started, STEP_TIMEOUT)
            alice.send_presence()
            msg = await alice.next_message()
            assert msg["body"] == "while away"
            assert msg["delay"]["stamp"] is not None, "XEP-0160: stamped with its delay"
            await alice.plugin["xep_0199"].ping("localhost", timeout=10)
            assert alice.messages.empty()
        finally:
            await close_all(alice, bob)

    run(scenario())
