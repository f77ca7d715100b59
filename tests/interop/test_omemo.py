"""OMEMO (XEP-0384) between two slixmpp-omemo clients through Starling's PEP.

Each client generates its identity, publishes its device lists and bundles
for both OMEMO versions to its own PEP service with publish-options
(access_model=open, max_items=max), fetches the other's device list and
bundle, and one sends the other an encrypted message that it decrypts.

Specs checked:
- XEP-0163 §3 (publishing to one's own bare JID, auto-create), §4 (items
  retrieval by others on an open node).
- XEP-0060 §7.1.5 (publish-options preconditions: slixmpp-omemo publishes
  with them and reconfigures the node on precondition-not-met), §6.5.7
  (max_items), §6.5.8 (items by id), §6.1 (slixmpp-omemo subscribes to the
  device list of a contact it shares no presence subscription with).
- XEP-0163 §4.2 with a mutual presence subscription: no explicit pubsub
  subscription, the device lists arrive as notifications filtered by the
  `+notify` features of each client's entity capabilities (XEP-0115).
- XEP-0384 with urn:xmpp:omemo:2 (twomemo, through the session manager) and
  eu.siacs.conversations.axolotl (oldmemo, through the plugin's message API).
"""

from __future__ import annotations

import asyncio
from typing import Any, FrozenSet, Optional

import oldmemo
import twomemo
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp import JID
from slixmpp.plugins import register_plugin
from slixmpp_omemo import TrustLevel, XEP_0384

from harness import Client, close_all, run

PLUGINS = ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0199", "xep_0280", "xep_0334", "xep_0384")
SETUP_TIMEOUT = 30.0


class MemoryStorage(Storage):
    """The OMEMO library's key/value storage, in memory for one scenario."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class Omemo(XEP_0384):
    """slixmpp-omemo's plugin with in-memory storage and blind trust before
    verification (BTBV), so new devices are trusted without a prompt."""

    default_config = {"fallback_message": "This message is OMEMO encrypted."}

    def plugin_init(self) -> None:
        self.memory = MemoryStorage()
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self.memory

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(self, blindly_trusted: FrozenSet[DeviceInformation],
                                       identifier: Optional[str]) -> None:
        pass

    async def _prompt_manual_trust(self, manually_trusted: FrozenSet[DeviceInformation],
                                   identifier: Optional[str]) -> None:
        manager = await self.get_session_manager()
        for device in manually_trusted:
            await manager.set_trust(device.bare_jid, device.identity_key, TrustLevel.TRUSTED.value)


register_plugin(Omemo)


async def online(server, jid: str, password: str) -> Client:
    """A client whose OMEMO data is generated and published (the plugin
    fires omemo_initialized once its device lists and bundles are uploaded)."""
    client = Client(server, jid, password, plugins=PLUGINS)
    ready = asyncio.Event()
    client.add_event_handler("omemo_initialized", lambda *_: ready.set())
    await client.login()
    client.send_presence()
    await asyncio.wait_for(ready.wait(), SETUP_TIMEOUT)
    return client


async def encrypted_message(client: Client, namespace: str) -> Any:
    """The next message carrying an <encrypted/> element of `namespace`
    (PEP notifications arrive on the same queue and are skipped)."""
    while True:
        msg = await client.next_message(SETUP_TIMEOUT)
        if msg.xml.find(f"{{{namespace}}}encrypted") is not None:
            return msg


def test_omemo_device_lists_bundles_and_encrypted_messages(server):
    async def scenario():
        alice = await online(server, "alice@localhost/desk", "alice-secret")
        bob = await online(server, "bob@localhost/phone", "bob-secret")
        try:
            pubsub = bob.plugin["xep_0060"]
            # XEP-0163: alice's device lists are on her PEP service, open to bob.
            for node, child in [("urn:xmpp:omemo:2:devices", "{urn:xmpp:omemo:2}devices"),
                                ("eu.siacs.conversations.axolotl.devicelist",
                                 "{eu.siacs.conversations.axolotl}list")]:
                iq = await pubsub.get_items(JID("alice@localhost"), node, max_items=1)
                items = list(iq["pubsub"]["items"])
                assert len(items) == 1 and items[0]["id"] == "current", node
                assert items[0].xml.find(f".//{child}") is not None, node
            alice_manager = await alice.plugin["xep_0384"].get_session_manager()
            alice_device = (await alice_manager.get_own_device_information())[0]
            # XEP-0060 §6.5.8: the twomemo bundle is an item named by the device id.
            iq = await pubsub.get_items(JID("alice@localhost"), "urn:xmpp:omemo:2:bundles",
                                        item_ids=[str(alice_device.device_id)])
            assert len(list(iq["pubsub"]["items"])) == 1

            # eu.siacs.conversations.axolotl through the plugin: alice encrypts
            # for bob (fetching his device list and bundle), bob decrypts.
            msg = alice.make_message(mto="bob@localhost", mbody="meet at noon", mtype="chat")
            encrypted, errors = await alice.plugin["xep_0384"].encrypt_message(msg, JID("bob@localhost"))
            assert encrypted is not None and not errors, errors
            encrypted.send()
            received = await encrypted_message(bob, oldmemo.oldmemo.NAMESPACE)
            assert "meet at noon" not in str(received)
            decrypted, device = await bob.plugin["xep_0384"].decrypt_message(received)
            assert decrypted["body"] == "meet at noon"
            assert device.bare_jid == "alice@localhost"

            # urn:xmpp:omemo:2 through the session manager (the plugin has no
            # SCE yet): bob answers alice.
            await bob.plugin["xep_0384"].refresh_device_lists({JID("alice@localhost")})
            bob_manager = await bob.plugin["xep_0384"].get_session_manager()
            messages, errors = await bob_manager.encrypt(
                frozenset({"alice@localhost"}),
                {twomemo.twomemo.NAMESPACE: b"<envelope xmlns='urn:xmpp:sce:1'>noon it is</envelope>"},
                backend_priority_order=[twomemo.twomemo.NAMESPACE])
            assert not errors, errors
            # A fallback body: slixmpp raises its "message" event only for messages with one.
            reply = bob.make_message(mto="alice@localhost", mbody="This message is OMEMO encrypted.", mtype="chat")
            for message in messages:
                assert message.namespace == twomemo.twomemo.NAMESPACE
                reply.append(twomemo.etree.serialize_message(message))
            reply.send()
            received = await encrypted_message(alice, twomemo.twomemo.NAMESPACE)
            element = received.xml.find(f"{{{twomemo.twomemo.NAMESPACE}}}encrypted")
            plaintext, device, _ = await alice_manager.decrypt(
                twomemo.etree.parse_message(element, "bob@localhost"))
            assert plaintext == b"<envelope xmlns='urn:xmpp:sce:1'>noon it is</envelope>"
            assert device.bare_jid == "bob@localhost"
        finally:
            await close_all(alice, bob)

    run(scenario(), timeout=120)


async def wait_for(predicate, timeout: float = SETUP_TIMEOUT, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_omemo_between_contacts_through_pep_notifications(server):
    async def scenario():
        alice = await online(server, "alice@localhost/desk", "alice-secret")
        bob = await online(server, "bob@localhost/phone", "bob-secret")
        try:
            # RFC 6121 §3.1: alice asks, bob's client approves and asks back.
            await alice.get_roster()
            await bob.get_roster()
            alice.send_presence_subscription(pto="bob@localhost")

            async def both() -> bool:
                return (alice.client_roster["bob@localhost"]["subscription"] == "both"
                        and bob.client_roster["alice@localhost"]["subscription"] == "both")
            await wait_for(both, what="a mutual presence subscription")

            # XEP-0163 §4.3.4: each learns the other's device lists from PEP
            # notifications alone (slixmpp-omemo neither subscribes nor
            # downloads while the subscription is mutual).
            bob_manager = await bob.plugin["xep_0384"].get_session_manager()

            async def bob_knows_alice() -> bool:
                return len(await bob_manager.get_device_information("alice@localhost")) > 0
            await wait_for(bob_knows_alice, what="bob to learn alice's devices by notification")

            msg = bob.make_message(mto="alice@localhost", mbody="hello, friend", mtype="chat")
            encrypted, errors = await bob.plugin["xep_0384"].encrypt_message(msg, JID("alice@localhost"))
            assert encrypted is not None and not errors, errors
            encrypted.send()
            received = await encrypted_message(alice, oldmemo.oldmemo.NAMESPACE)
            decrypted, device = await alice.plugin["xep_0384"].decrypt_message(received)
            assert decrypted["body"] == "hello, friend"
            assert device.bare_jid == "bob@localhost"
        finally:
            await close_all(alice, bob)

    run(scenario(), timeout=120)
