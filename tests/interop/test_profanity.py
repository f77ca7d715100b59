"""A person's terminal client in a room: profanity (Debian's console XMPP
client) runs in tmux, is typed at with `tmux send-keys` and read with
`tmux capture-pane`, as someone at the keyboard would use it. It logs in as
bob over STARTTLS (trusting the server's self-signed certificate with
`tls trust`), joins a room a slixmpp user (alice) created on
conference.localhost, and the two talk.

profanity gets a HOME and XDG dirs of its own in the server's temp dir, and
tmux a socket of its own there, so neither touches the real user's config
or tmux server.

Specs checked:
- RFC 6120 §5, §6, §7: STARTTLS, SASL and resource binding as profanity
  (libstrophe) does them.
- XEP-0045 §7.2: profanity's join is answered (it shows the room as joined)
  and alice sees the new occupant; §7.4: its groupchat message reaches
  alice from room/Prof, alice's reply is shown in profanity's room window;
  §7.14: /quit makes it leave the room (unavailable presence from room/Prof).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import STEP_TIMEOUT, Client, Server, close_all, run

ROOM = "tea@conference.localhost"
NICK = "Prof"
PLUGINS = ("xep_0004", "xep_0030", "xep_0045")
PROFANITY_MESSAGE = "hello from profanity"
ALICE_REPLY = "welcome Prof, tea is served"

pytestmark = pytest.mark.skipif(
    not (shutil.which("profanity") and shutil.which("tmux")),
    reason="profanity and tmux are not installed (apt-get install profanity tmux)",
)


class Profanity:
    """profanity in a detached tmux session of its own (own socket, own
    HOME and XDG dirs under `root`), driven by keystrokes."""

    def __init__(self, root: Path, width: int = 200, height: int = 50):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.socket = root / "tmux.sock"
        self.session = "profanity"
        self.home = root / "home"
        dirs = {"XDG_CONFIG_HOME": root / "config", "XDG_DATA_HOME": root / "data",
                "XDG_CACHE_HOME": root / "cache", "XDG_STATE_HOME": root / "state",
                "XDG_RUNTIME_DIR": root / "runtime"}
        for d in (self.home, *dirs.values()):
            d.mkdir(mode=0o700, exist_ok=True)
        # The pane stays after profanity exits, so its last screen can still
        # be read.
        tmux_conf = root / "tmux.conf"
        tmux_conf.write_text("set -g remain-on-exit on\nset -g status off\n")
        # A clean environment: no DISPLAY, D-Bus or the real HOME.
        env = {"HOME": str(self.home), "TERM": "tmux-256color", "LANG": "C.UTF-8",
               "PATH": "/usr/local/bin:/usr/bin:/bin",
               **{k: str(v) for k, v in dirs.items()}}
        self.log_path = dirs["XDG_DATA_HOME"] / "profanity" / "logs" / "profanity.log"
        # profanity's exit status goes to a file (tmux 3.3a left
        # #{pane_dead_status} empty for it).
        self.status_path = root / "exit-status"
        self._tmux("-f", str(tmux_conf), "new-session", "-d", "-s", self.session,
                   "-x", str(width), "-y", str(height),
                   "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                   "sh", "-c", 'profanity; echo $? >"$1"', "sh", str(self.status_path))
        self.pid = int(self._tmux("display-message", "-p", "-t", self.session, "#{pane_pid}"))

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-S", str(self.socket), *args],
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout.strip()

    # -- the person's side ----------------------------------------------

    async def type(self, line: str) -> None:
        """Type `line` (literally, no key names) and press Enter."""
        await asyncio.to_thread(self._tmux, "send-keys", "-t", self.session, "-l", line)
        await asyncio.to_thread(self._tmux, "send-keys", "-t", self.session, "Enter")

    def screen(self) -> str:
        try:
            return self._tmux("capture-pane", "-p", "-t", self.session)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            return f"(no pane: {e})"

    def dead(self) -> int | None:
        """profanity's exit status once it has exited, else None."""
        try:
            status = self.status_path.read_text().strip()
        except FileNotFoundError:
            status = ""
        if status:
            return int(status)
        if self._tmux("display-message", "-p", "-t", self.session, "#{pane_dead}") == "1":
            return -1  # the shell around it died too
        return None

    async def wait_for(self, text: str, what: str, *, fail_on: tuple[str, ...] = (),
                       timeout: float = STEP_TIMEOUT) -> str:
        """Poll the screen until `text` shows; fail with the screen after
        `timeout`, or at once when one of `fail_on` shows or profanity exits."""
        deadline = time.monotonic() + timeout
        while True:
            screen = await asyncio.to_thread(self.screen)
            if text in screen:
                return screen
            bad = next((f for f in fail_on if f in screen), None)
            status = await asyncio.to_thread(self.dead)
            if bad is not None or status is not None or time.monotonic() > deadline:
                why = (f"profanity showed {bad!r}" if bad is not None
                       else f"profanity exited with {status}" if status is not None
                       else f"not within {timeout}s")
                pytest.fail(f"waiting for {what} ({text!r}): {why}; its screen:\n{screen}\n"
                            f"(profanity's log: {self.log_path})")
            await asyncio.sleep(0.1)

    async def wait_exit(self, timeout: float = STEP_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while (status := await asyncio.to_thread(self.dead)) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"profanity still running {timeout}s after /quit; its screen:\n{self.screen()}")
            await asyncio.sleep(0.1)
        return status

    def close(self) -> None:
        """Kill the tmux server, and profanity's process group (the pane's,
        led by its first process) if it was still running."""
        try:
            running = self.dead() is None
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            running = True
        try:
            self._tmux("kill-server")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        if running:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def profanity(server: Server):
    prof = Profanity(server.dir / "profanity")
    try:
        yield prof
    finally:
        prof.close()


def test_profanity_joins_room_and_chats(server, profanity):
    async def scenario():
        alice = Client(server, "alice@localhost/desk", "alice-secret", plugins=PLUGINS)
        try:
            await alice.login()
            muc = alice.plugin["xep_0045"]

            # alice makes the room (owner) and names it.
            presence, *_ = await muc.join_muc_wait(ROOM, "Alice", maxstanzas=0, timeout=STEP_TIMEOUT)
            assert presence["muc"]["affiliation"] == "owner", presence
            form = alice.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
            form.add_field(var="muc#roomconfig_roomname", value="Tea time")
            await muc.set_room_config(ROOM, form)

            loop = asyncio.get_running_loop()
            prof_online, prof_offline = loop.create_future(), loop.create_future()

            def occupant(fut):
                def handler(pres):
                    if pres["from"].resource == NICK and not fut.done():
                        fut.set_result(pres)
                return handler

            alice.add_event_handler(f"muc::{ROOM}::got_online", occupant(prof_online))
            alice.add_event_handler(f"muc::{ROOM}::got_offline", occupant(prof_offline))

            # bob logs in with profanity: STARTTLS on the c2s port, the
            # self-signed certificate trusted, the password typed at its prompt.
            await profanity.wait_for("Type '/help' to show complete help.", "profanity's welcome screen")
            await profanity.type(f"/connect bob@localhost server 127.0.0.1 port {server.port} tls trust")
            await profanity.wait_for("Enter password:", "the password prompt")
            await profanity.type("bob-secret")
            await profanity.wait_for("logged in successfully", "bob's login",
                                     fail_on=("Login failed", "Lost connection", "Disconnected"))

            await profanity.type(f"/join {ROOM} nick {NICK}")
            await profanity.wait_for(f"joined the room as {NICK}", "the room joined")
            pres = await asyncio.wait_for(prof_online, STEP_TIMEOUT)
            assert pres["muc"]["jid"].bare == "bob@localhost", pres

            # profanity's line reaches alice as groupchat from room/Prof.
            await profanity.type(PROFANITY_MESSAGE)
            while True:
                msg = await alice.next_message()
                if msg["type"] == "groupchat" and msg["body"] == PROFANITY_MESSAGE:
                    break
            assert msg["from"].full == f"{ROOM}/{NICK}", msg

            # alice's reply shows on profanity's screen.
            alice.send_message(mto=ROOM, mbody=ALICE_REPLY, mtype="groupchat")
            await profanity.wait_for(f"Alice: {ALICE_REPLY}", "alice's reply in profanity's room window")

            # /quit: profanity leaves the room and exits cleanly.
            await profanity.type("/quit")
            status = await profanity.wait_exit()
            assert status == 0, f"profanity exited with {status}; its screen:\n{profanity.screen()}"
            await asyncio.wait_for(prof_offline, STEP_TIMEOUT)

            muc.leave_muc(ROOM, "Alice")
        except Exception as e:
            # pytest.fail's own failures (not Exceptions) already carry the screen.
            pytest.fail(f"{type(e).__name__}: {e}\nprofanity's screen:\n{profanity.screen()}")
        finally:
            await close_all(alice)

    run(scenario())
