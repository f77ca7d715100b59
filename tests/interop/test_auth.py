"""SASL authentication with slixmpp.

Specs checked:
- RFC 6120 §6.4.5 / §6.5.10: wrong credentials get <failure><not-authorized/>;
  the server keeps serving (a correct login afterwards succeeds).
- RFC 5802 (SCRAM) and RFC 7677 (SCRAM-SHA-256), as the SASL mechanisms of
  RFC 6120 §6.3.3; RFC 6120 §6.4.6: <success/> carries the server's final
  message, checked by slixmpp (mutual authentication).
- RFC 5802 §6 / RFC 9266: slixmpp's default choice; Python's ssl has no
  tls-exporter, so over TLS 1.3 it takes the best non-PLUS SCRAM with gs2 flag 'n'.
"""

from __future__ import annotations

import ssl

import pytest

from harness import Client, LoginFailed, run


def test_bad_password_then_good_login(server):
    async def scenario():
        # A session that is up while someone fails to log in.
        bob = Client(server, "bob@localhost/watch", "bob-secret", plugins=("xep_0199",))
        await bob.login()
        try:
            mallory = Client(server, "alice@localhost/bad", "wrong-password")
            with pytest.raises(LoginFailed) as err:
                await mallory.login()
            await mallory.close()
            # slixmpp emits failed_auth per <failure/> and then tries the
            # next mechanism on the same stream (RFC 6120 §6.4.5 retries).
            assert mallory.auth_failures, f"no failed_auth event ({err.value})"
            for failure in mallory.auth_failures:
                assert failure["condition"] == "not-authorized", failure  # §6.5.10
            assert mallory.mech_used is None
            # §6.4.5: past its retry limit the server closes the stream with
            # a stream error, which SHOULD be <policy-violation/> though
            # <not-authorized/> is allowed ("some existing implementations").
            for e in mallory.stream_errors:
                assert e["condition"] in ("policy-violation", "not-authorized"), e
            print(f"bad password: {len(mallory.auth_failures)} <failure/>s, stream errors "
                  f"{[e['condition'] for e in mallory.stream_errors]}, ended by {err.value}")

            # The server still serves: the open session answers, a new login works.
            await bob.plugin["xep_0199"].ping("localhost", timeout=10)
            alice = Client(server, "alice@localhost/good", "alice-secret")
            try:
                await alice.login()
                assert alice.boundjid.full == "alice@localhost/good"
                assert not alice.auth_failures
            finally:
                await alice.close()
        finally:
            await bob.close()

    run(scenario())


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_forced_mechanism(server, mech):
    async def scenario():
        bob = Client(server, "bob@localhost/mech", "bob-secret", mech=mech)
        try:
            await bob.login()
            assert bob.mech_used == mech
            assert not bob.auth_failures
        finally:
            await bob.close()

    run(scenario())


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct_tls"])
def test_default_mechanism(server, direct_tls):
    async def scenario():
        bob = Client(server, "bob@localhost/default", "bob-secret", direct_tls=direct_tls)
        try:
            await bob.login()
            assert not bob.auth_failures
            assert bob.mech_used and bob.mech_used.startswith("SCRAM-"), bob.mech_used
            print(f"default mechanism: {bob.mech_used} over {bob.tls_version}")
        finally:
            await bob.close()

    run(scenario())


def tls12_client(server, resource, **kw) -> Client:
    bob = Client(server, f"bob@localhost/{resource}", "bob-secret", direct_tls=True, **kw)
    bob.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
    return bob


def test_tls12_forced_scram(server):
    """TLS 1.2 (allowed by the server) with a non-PLUS SCRAM: RFC 5802, RFC 7677."""
    async def scenario():
        bob = tls12_client(server, "tls12", mech="SCRAM-SHA-256")
        try:
            await bob.login()
            assert bob.tls_version == "TLSv1.2", bob.tls_version
            assert bob.mech_used == "SCRAM-SHA-256"
        finally:
            await bob.close()

    run(scenario())


# Over TLS 1.2 slixmpp tries SCRAM-*-PLUS with p=tls-unique (the only binding
# Python's ssl has), which starling does not offer; those failures must not use
# up the RFC 6120 §6.4.5 retry budget, so slixmpp falls back to plain SCRAM.
def test_tls12_default_mechanism(server):
    async def scenario():
        bob = tls12_client(server, "tls12default")
        try:
            await bob.login()
            assert bob.tls_version == "TLSv1.2", bob.tls_version
        finally:
            await bob.close()

    run(scenario())
