"""An external component (slixmpp's ComponentXMPP) and a slixmpp user
exchange a message and IQs through the server.

Specs checked:
- XEP-0114 §3: stream in 'jabber:component:accept', handshake
  hex(SHA-1(stream id + secret)), accepted with an empty <handshake/>.
- XEP-0114 §3: the component's stanzas carry 'from' at its domain (any
  address there) and reach users; users' stanzas to any address at the
  domain reach the component.
- RFC 6120 §8.2.3: an IQ request and its result, both ways (XEP-0199 pings).
- XEP-0030 §4.1: the component's domain is an item of its host.
"""

from __future__ import annotations

import pytest

from harness import Client, Component, close_all, run

GATEWAY = "gw.localhost"


@pytest.mark.parametrize("server", [{"components": {GATEWAY: "gw-secret"}}], indirect=True)
def test_component_and_user_exchange_message_and_iq(server):
    async def scenario():
        gateway = Component(server, GATEWAY, "gw-secret", plugins=("xep_0030", "xep_0199"))
        alice = Client(server, "alice@localhost/interop", "alice-secret", plugins=("xep_0030", "xep_0199"))
        try:
            await gateway.login()
            await alice.login()

            # XEP-0030 §4.1: the component is listed under its host.
            items = await alice.plugin["xep_0030"].get_items(jid="localhost", local=False, timeout=10)
            assert GATEWAY in {jid for (jid, _node, _name) in items["disco_items"]["items"]}, items

            # User → an address at the component's domain.
            alice.send_message(mto=f"echo@{GATEWAY}", mbody="ping the bridge", mtype="chat")
            msg = await gateway.next_message()
            assert msg["body"] == "ping the bridge"
            assert msg["from"].full == alice.boundjid.full, msg
            assert msg["to"].bare == f"echo@{GATEWAY}", msg

            # Component → user, from that address.
            msg.reply("pong from the bridge").send()
            reply = await alice.next_message()
            assert reply["body"] == "pong from the bridge"
            assert reply["from"].bare == f"echo@{GATEWAY}", reply

            # IQs both ways: the component answers the user's ping, the user the component's.
            await alice.plugin["xep_0199"].ping(GATEWAY, timeout=10)
            await gateway.plugin["xep_0199"].ping(alice.boundjid.full, ifrom=GATEWAY, timeout=10)
        finally:
            await close_all(alice, gateway)

    run(scenario())
