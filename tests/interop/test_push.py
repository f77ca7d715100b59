"""XEP-0357 push notifications with a slixmpp component (XEP-0114) as the
app server: a slixmpp user registers it, and while the user has no session
every message gives exactly one notification; none while the user is
online.

Specs checked:
- XEP-0357 §5: enable with jid, node and publish-options; the server
  publishes to that node, from the user's bare JID, an
  urn:xmpp:push:summary form with message-count and last-message-sender,
  with the publish-options of the registration.
- XEP-0357 §3: the user's server notifies only when no client is there.
"""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness import STEP_TIMEOUT, Client, Component, close_all, run

APP_SERVER = "push.localhost"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"


def fields(form) -> dict:
    return {f.get("var"): f.findtext(f"{{{NS_DATA}}}value") for f in form.findall(f"{{{NS_DATA}}}field")}


@pytest.mark.parametrize("server", [{"components": {APP_SERVER: "push-secret"}}], indirect=True)
def test_one_notification_per_message_while_offline_none_while_online(server):
    async def scenario():
        app = Component(server, APP_SERVER, "push-secret")
        notifications: asyncio.Queue = asyncio.Queue()

        def on_publish(iq):
            notifications.put_nowait(iq)
            iq.reply().send()

        app.register_handler(Callback(
            "push publish", MatchXPath(f"{{jabber:component:accept}}iq/{{{NS_PUBSUB}}}pubsub"), on_publish))
        desk = Client(server, "alice@localhost/desk", "alice-secret")
        phone = Client(server, "alice@localhost/phone", "alice-secret")
        bob = Client(server, "bob@localhost/phone", "bob-secret")
        try:
            await app.login()
            await desk.login()
            await phone.login()
            await bob.login()
            bob.send_presence()
            iq = bob.make_iq_set()
            iq.append(ET.fromstring(
                f"<enable xmlns='urn:xmpp:push:0' jid='{APP_SERVER}' node='device-1'>"
                f"<x xmlns='{NS_DATA}' type='submit'>"
                f"<field var='FORM_TYPE'><value>{NS_PUBSUB}#publish-options</value></field>"
                "<field var='secret'><value>s3cr3t</value></field></x></enable>"))
            await iq.send(timeout=STEP_TIMEOUT)

            # Online: delivered, and no notification (checked below: the
            # first notification is for the message sent from the phone).
            desk.send_message(mto="bob@localhost", mbody="while online", mtype="chat")
            assert (await bob.next_message())["body"] == "while online"
            await bob.close()

            for body in ("one", "two"):
                phone.send_message(mto="bob@localhost", mbody=body, mtype="chat")
            for count in ("1", "2"):
                iq = await asyncio.wait_for(notifications.get(), STEP_TIMEOUT)
                assert iq["from"].full == "bob@localhost", iq
                pubsub = iq.xml.find(f"{{{NS_PUBSUB}}}pubsub")
                assert pubsub.find(f"{{{NS_PUBSUB}}}publish").get("node") == "device-1"
                summary = pubsub.find(f".//{{urn:xmpp:push:0}}notification/{{{NS_DATA}}}x")
                got = fields(summary)
                assert got["FORM_TYPE"] == "urn:xmpp:push:summary", got
                assert got["message-count"] == count, got
                assert got["last-message-sender"] == "alice@localhost/phone", got
                assert "last-message-body" not in got, "bodies stay out by default"
                options = fields(pubsub.find(f"{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x"))
                assert options["secret"] == "s3cr3t", options
            # Exactly one per message: the next notification is the next message's.
            desk.send_message(mto="bob@localhost", mbody="three", mtype="chat")
            iq = await asyncio.wait_for(notifications.get(), STEP_TIMEOUT)
            last = fields(iq.xml.find(f".//{{urn:xmpp:push:0}}notification/{{{NS_DATA}}}x"))
            assert (last["message-count"], last["last-message-sender"]) == ("3", "alice@localhost/desk"), last
        finally:
            await close_all(desk, phone, bob, app)

    run(scenario())
