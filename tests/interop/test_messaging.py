"""Login over each transport and a message round trip between alice and bob.

Specs checked:
- RFC 6120 §5.4 (STARTTLS negotiation), §6 (SASL), §7 (resource binding).
- XEP-0368 §3 / RFC 7590 §3: direct TLS on its own port, ALPN "xmpp-client".
- RFC 6120 §8.1.2.1: the server stamps 'from' with the sender's full JID.
- RFC 6120 §10.5.4: a message to a connected full JID is delivered to that resource.
- RFC 6120 §8.2.3 / RFC 6121 §4.6: an IQ and directed presence between them.
- RFC 6121 §8.5.2.1.1: a chat message to a bare JID goes to an available
  resource with non-negative priority (bob after sending initial presence, §4.2).
"""

from __future__ import annotations

import asyncio

import pytest

from harness import Client, close_all, run


async def round_trip(server, direct_tls: bool) -> None:
    alice = Client(server, "alice@localhost/interop", "alice-secret",
                   direct_tls=direct_tls, plugins=("xep_0199",))
    bob = Client(server, "bob@localhost/interop", "bob-secret",
                 direct_tls=direct_tls, plugins=("xep_0199",))
    try:
        await alice.login()
        await bob.login()
        for c in (alice, bob):
            assert c.tls_version is not None, "session is not over TLS"
            if direct_tls:
                # XEP-0368 §3: ALPN protocol "xmpp-client".
                assert c.alpn == "xmpp-client", f"ALPN negotiated: {c.alpn!r}"
        assert alice.boundjid.full == "alice@localhost/interop", alice.boundjid
        assert bob.boundjid.full == "bob@localhost/interop", bob.boundjid

        # RFC 6121 §4.2: initial presence makes bob available. The ping that
        # follows on the same stream ensures the server processed it.
        bob.send_presence()
        await bob.plugin["xep_0199"].ping("localhost", timeout=10)

        # To bob's full JID (RFC 6120 §10.5.4).
        alice.send_message(mto=bob.boundjid.full, mbody="hello full", mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == "hello full"
        assert msg["type"] == "chat"
        assert msg["from"].full == alice.boundjid.full, msg  # RFC 6120 §8.1.2.1

        # To bob's bare JID (RFC 6121 §8.5.2.1.1).
        alice.send_message(mto=bob.boundjid.bare, mbody="hello bare", mtype="chat")
        msg = await bob.next_message()
        assert msg["body"] == "hello bare"
        assert msg["from"].full == alice.boundjid.full, msg

        # Bob replies to the full JID he saw.
        bob.send_message(mto=msg["from"], mbody="hi alice", mtype="chat")
        reply = await alice.next_message()
        assert reply["body"] == "hi alice"
        assert reply["from"].full == bob.boundjid.full, reply

        # An IQ between the two clients (RFC 6120 §10.5.4, §8.2.3): bob's
        # slixmpp answers XEP-0199 pings itself.
        iq = await alice.plugin["xep_0199"].send_ping(bob.boundjid.full, timeout=10)
        assert iq["type"] == "result", iq
        assert iq["from"].full == bob.boundjid.full, iq

        # Directed presence to bob's full JID (RFC 6121 §4.6.2, §4.6.3).
        got = asyncio.get_running_loop().create_future()
        bob.add_event_handler(
            "presence_available",
            lambda p: got.done() or p["from"] != alice.boundjid or got.set_result(p))
        alice.send_presence(pto=bob.boundjid.full)
        pres = await asyncio.wait_for(got, 10)
        assert pres["from"].full == alice.boundjid.full, pres
    finally:
        await close_all(alice, bob)


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct_tls"])
def test_login_and_message_round_trip(server, direct_tls):
    run(round_trip(server, direct_tls))
