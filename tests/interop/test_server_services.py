"""IQ services answered by the server itself (to='localhost').

Specs checked:
- XEP-0030 §3.1: disco#info identity category 'server' type 'im' (registry),
  features list the supported namespaces.
- XEP-0199 §4.2: client-to-server ping gets an empty result.
- XEP-0092 §2: software version query returns <name/> (and <version/>).
- XEP-0202 §3: entity time advertised (urn:xmpp:time).
"""

from __future__ import annotations

import datetime as dt
import re

from harness import Client, run


async def with_alice(server, body, plugins):
    alice = Client(server, "alice@localhost/svc", "alice-secret", plugins=plugins)
    try:
        await alice.login()
        await body(alice)
    finally:
        await alice.close()


def test_disco_info(server):
    async def body(alice):
        iq = await alice.plugin["xep_0030"].get_info(jid="localhost", local=False,
                                              cached=False, timeout=10)
        info = iq["disco_info"]
        identities = {(cat, typ) for (cat, typ, _lang, _name) in info["identities"]}
        assert ("server", "im") in identities, identities  # XEP-0030 §3.1
        features = set(info["features"])
        for ns in ("http://jabber.org/protocol/disco#info",  # XEP-0030 §3.1
                   "urn:xmpp:ping",                          # XEP-0199 §6
                   "jabber:iq:version",                      # XEP-0092 §3
                   "urn:xmpp:time"):                         # XEP-0202 §4
            assert ns in features, f"{ns} missing from {sorted(features)}"

    run(with_alice(server, body, ("xep_0030",)))


def test_ping_server(server):
    async def body(alice):
        # XEP-0199 §4.2: the server answers with an empty <iq type='result'/>.
        iq = await alice.plugin["xep_0199"].send_ping("localhost", timeout=10)
        assert iq["type"] == "result", iq
        assert iq["from"].full in ("localhost", ""), iq
        rtt = await alice.plugin["xep_0199"].ping("localhost", timeout=10)
        assert rtt >= 0

    run(with_alice(server, body, ("xep_0199",)))


def test_software_version(server):
    async def body(alice):
        iq = await alice.plugin["xep_0092"].get_version("localhost", timeout=10)
        assert iq["type"] == "result", iq
        ver = iq["software_version"]
        assert ver["name"] == "Starling", iq  # XEP-0092 §2
        assert ver["version"], iq

    run(with_alice(server, body, ("xep_0092",)))


def test_entity_time(server):
    async def body(alice):
        # XEP-0202 §3: <time xmlns='urn:xmpp:time'><tzo/><utc/></time>.
        iq = await alice.plugin["xep_0202"].get_entity_time("localhost", timeout=10)
        assert iq["type"] == "result", iq
        # Read the raw fields: slixmpp 1.17's EntityTime.get_utc() appends a
        # second 'Z' to the (correct, XEP-0202 §3 example) "...Z" value and fails.
        tzo = iq["entity_time"]._get_sub_text("tzo")
        utc = iq["entity_time"]._get_sub_text("utc")
        assert re.fullmatch(r"Z|[+-]\d\d:\d\d", tzo), iq  # XEP-0082 §4 TZD
        # XEP-0082 §4 DateTime profile, in UTC ("Z").
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", utc), iq
        when = dt.datetime.fromisoformat(utc.replace("Z", "+00:00"))
        skew = abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds())
        assert skew < 60, f"server time {utc} is {skew}s off"

    run(with_alice(server, body, ("xep_0202",)))
