"""A real gateway plugs in as an external component: biboumi (Debian's
XMPP <-> IRC gateway) connects to Starling's component port, ngircd (Debian)
is the IRC server on loopback. A slixmpp user joins an IRC channel through
the gateway and exchanges messages with a plain IRC client.

Specs checked:
- XEP-0114 §3: biboumi authenticates as the component for its domain, and
  stanzas flow both ways between it and a local user (presence to join,
  groupchat messages, the room's presence and subject).
- XEP-0045 §7.2 (as biboumi maps IRC channels): the user's join is
  answered with its own presence (status 110), messages to the room reach
  the IRC channel and IRC messages come back as groupchat from room/nick.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import STEP_TIMEOUT, Client, close_all, run

GATEWAY = "irc.localhost"
SECRET = "biboumi-secret"
# biboumi's default plain-text IRC port (its TLS ports are refused here,
# then it falls back to this one).
IRC_PORT = 6667
CHANNEL = "#starling"

pytestmark = pytest.mark.skipif(
    not (shutil.which("biboumi") and shutil.which("ngircd")),
    reason="biboumi and ngircd are not installed (apt-get install biboumi ngircd)",
)


class Process:
    """A daemon in the foreground with its output in a log file."""

    def __init__(self, args: list[str], log: Path):
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def wait_for_port(port: int, proc: Process, timeout: float = STEP_TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if proc.proc.poll() is not None or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"port {port} did not open:\n{proc.log()}")
            await asyncio.sleep(0.05)


class IrcClient:
    """A minimal RFC 2812 client: registers, joins, reads PRIVMSGs."""

    def __init__(self, nick: str):
        self.nick = nick

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", IRC_PORT)
        self.send(f"NICK {self.nick}")
        self.send(f"USER {self.nick} 0 * :{self.nick}")
        await self.expect(lambda cmd, _args: cmd == "001")

    def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")

    async def expect(self, match, timeout: float = STEP_TIMEOUT) -> tuple[str, str, list[str]]:
        """Reads lines (answering PINGs) until `match(command, args)`; returns (prefix, command, args)."""
        async def read():
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionError("IRC server closed the connection")
                line = raw.decode(errors="replace").rstrip("\r\n")
                prefix = ""
                if line.startswith(":"):
                    prefix, line = line[1:].split(" ", 1)
                head, _, trailing = line.partition(" :")
                cmd, *args = head.split(" ")
                if trailing or " :" in line:
                    args.append(trailing)
                if cmd == "PING":
                    self.send(f"PONG :{args[-1] if args else ''}")
                    continue
                if match(cmd, args):
                    return prefix, cmd, args
        return await asyncio.wait_for(read(), timeout)

    def close(self) -> None:
        self.send("QUIT :bye")
        self.writer.close()


@pytest.mark.parametrize("server", [{"components": {GATEWAY: SECRET}}], indirect=True)
def test_user_chats_with_irc_through_biboumi(server):
    work = Path(tempfile.mkdtemp(prefix="starling-gateway-"))
    (work / "ngircd.conf").write_text(
        "[Global]\nName = irc.starling.test\nInfo = Starling test\nListen = 127.0.0.1\n"
        f"Ports = {IRC_PORT}\nMotdPhrase = test\nPidFile = {work}/ngircd.pid\n"
        "[Options]\nDNS = no\nIdent = no\nPAM = no\n"
    )
    (work / "biboumi.cfg").write_text(
        f"hostname={GATEWAY}\npassword={SECRET}\nxmpp_server_ip=127.0.0.1\n"
        f"port={server.component_port}\ndb_name={work}/biboumi.sqlite\n"
        "identd_port=0\nlog_level=1\nrealname_customization=true\n"
        f"policy_directory={work}\n"
    )
    ircd = Process(["ngircd", "--nodaemon", "--config", str(work / "ngircd.conf")], work / "ngircd.log")
    biboumi = None

    async def scenario():
        nonlocal biboumi
        await wait_for_port(IRC_PORT, ircd)
        irc = IrcClient("ircbob")
        await irc.connect()
        irc.send(f"JOIN {CHANNEL}")
        await irc.expect(lambda cmd, args: cmd == "JOIN" and args[0] == CHANNEL)

        alice = Client(server, "alice@localhost/interop", "alice-secret", plugins=("xep_0030", "xep_0045"))
        try:
            await alice.login()
            # XEP-0114: the gateway is up once its domain answers a disco query.
            biboumi = Process(["biboumi", str(work / "biboumi.cfg")], work / "biboumi.log")
            deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
            while True:
                try:
                    await alice.plugin["xep_0030"].get_info(jid=GATEWAY, local=False, timeout=2)
                    break
                except Exception:
                    if biboumi.proc.poll() is not None or asyncio.get_running_loop().time() > deadline:
                        raise RuntimeError(f"biboumi did not come up:\n{biboumi.log()}")

            room = f"{CHANNEL}%127.0.0.1@{GATEWAY}"
            joined = asyncio.get_running_loop().create_future()

            def on_presence(pres):
                # XEP-0045 §7.2.2: our own presence in the room carries status 110.
                if pres["from"].bare == room and pres["from"].resource == "alice" and not joined.done():
                    joined.set_result(pres)

            alice.add_event_handler("muc::%s::presence" % room, on_presence)
            alice.plugin["xep_0045"].join_muc(room, "alice")
            await asyncio.wait_for(joined, STEP_TIMEOUT)
            # The IRC side sees alice arrive.
            await irc.expect(lambda cmd, args: cmd == "JOIN" and args[0] == CHANNEL)

            # XMPP -> IRC.
            alice.send_message(mto=room, mbody="hello from XMPP", mtype="groupchat")
            prefix, _, args = await irc.expect(lambda cmd, args: cmd == "PRIVMSG" and args[0] == CHANNEL)
            assert args[-1] == "hello from XMPP", args
            assert prefix.startswith("alice!"), prefix

            # IRC -> XMPP: a groupchat message from room/ircbob.
            irc.send(f"PRIVMSG {CHANNEL} :hello from IRC")
            while True:
                msg = await alice.next_message()
                if msg["type"] == "groupchat" and msg["body"] == "hello from IRC":
                    break
            assert msg["from"].bare == room and msg["from"].resource == "ircbob", msg
        finally:
            irc.close()
            await close_all(alice)

    try:
        run(scenario())
    except BaseException:
        print("--- ngircd log ---\n" + ircd.log())
        if biboumi:
            print("--- biboumi log ---\n" + biboumi.log())
        raise
    finally:
        if biboumi:
            biboumi.stop()
        ircd.stop()
        shutil.rmtree(work, ignore_errors=True)
