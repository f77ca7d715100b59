"""Driver for the slixmpp interop scenarios: a real `starling serve` process per
scenario (own temp dir, data dir and free ports), accounts made with the admin
CLI, and slixmpp clients set up to talk to it.

Used by the test_*.py files through the fixtures in conftest.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import slixmpp

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "localhost"

# Seconds one scenario step (a login, a stanza awaited) may take.
STEP_TIMEOUT = float(os.environ.get("INTEROP_STEP_TIMEOUT", "15"))


def starling_bin() -> Path:
    """The server binary: $STARLING_BIN, else target/debug/starling."""
    env = os.environ.get("STARLING_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "debug" / "starling"
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


DATABASE_URL_VAR = "STARLING_DATABASE_URL"


def _psql(url: str, sql: str) -> None:
    """Run one statement with psql (outside a transaction, as CREATE/DROP
    DATABASE need)."""
    psql = shutil.which("psql")
    if psql is None:
        raise RuntimeError(f"{DATABASE_URL_VAR} is a PostgreSQL URL but psql is not installed "
                           "(Debian: apt-get install postgresql-client)")
    out = subprocess.run(
        [psql, "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed ({out.returncode}): {out.stderr.strip()}")


def with_database(url: str, name: str) -> str:
    """`url` with its database (the path) replaced by `name`, query kept
    (also for `postgres:///db?host=/socket/dir`, which urlunsplit mangles)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"database URL without scheme: {url!r}")
    rest, qmark, query = rest.partition("?")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}{qmark}{query}"


class FreshDatabase:
    """A database of its own for one server, on the PostgreSQL server that
    $STARLING_DATABASE_URL reaches (its role needs CREATEDB)."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.name = f"starling_t_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        self.url = with_database(admin_url, self.name)
        _psql(admin_url, f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        # FORCE (PostgreSQL 13+) ends connections a killed server left.
        _psql(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def server_env(database: FreshDatabase | None) -> dict:
    """The environment for the server and its CLI: with a PostgreSQL
    $STARLING_DATABASE_URL, the server's own database; otherwise no database
    variable at all (SQLite in the server's data dir; a shared SQLite URL
    would mix the scenarios' accounts)."""
    env = dict(os.environ)
    env.pop(DATABASE_URL_VAR, None)
    if database is not None:
        env[DATABASE_URL_VAR] = database.url
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `starling serve` child process with its own config and data:
    SQLite in its temp dir, or, when $STARLING_DATABASE_URL is a PostgreSQL
    URL, a fresh database on that server, dropped by cleanup()."""

    def __init__(self, domain: str = DOMAIN, c2s_options: str = "",
                 components: dict[str, str] | None = None):
        """`c2s_options`: extra [c2s] lines; `components`: external components
        (XEP-0114) to configure, domain → secret."""
        self.binary = starling_bin()
        if not self.binary.is_file():
            raise RuntimeError(
                f"starling binary not found at {self.binary} "
                "(build it with `cargo build --bin starling` or set STARLING_BIN)"
            )
        self.domain = domain
        self.dir = Path(tempfile.mkdtemp(prefix="starling-interop-"))
        self.port = free_port()
        self.tls_port = free_port()
        self.component_port = free_port()
        while len({self.port, self.tls_port, self.component_port}) < 3:
            self.tls_port = free_port()
            self.component_port = free_port()
        self.config_path = self.dir / "starling.toml"
        self.pidfile = self.dir / "starling.pid"
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.database: FreshDatabase | None = None
        admin_url = os.environ.get(DATABASE_URL_VAR, "")
        if admin_url.startswith(("postgres://", "postgresql://")):
            try:
                self.database = FreshDatabase(admin_url)
            except BaseException:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise
        self.env = server_env(self.database)
        self.config_path.write_text(
            "[server]\n"
            f'hosts = ["{domain}"]\n'
            f'data_dir = "{self.dir / "data"}"\n'
            "\n[c2s]\n"
            f'listen = ["127.0.0.1:{self.port}"]\n'
            f'direct_tls_listen = ["127.0.0.1:{self.tls_port}"]\n'
            "require_encryption = true\n"
            f"{c2s_options}\n"
            # No HTTP listeners: their default ports would collide between
            # servers running side by side.
            "\n[http]\nlisten = []\ntls_listen = []\n"
            # Federation's default port would collide between servers too.
            "\n[s2s]\nlisten = []\n"
            "\n[component]\n"
            f'listen = ["127.0.0.1:{self.component_port}"]\n'
            + "".join(f'\n[[services]]\ndomain = "{d}"\nsecret = "{secret}"\n'
                      for d, secret in (components or {}).items())
        )

    # -- process -------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        env = dict(self.env)
        env.setdefault("RUST_LOG", "debug,sqlx=warn")
        env.setdefault("NO_COLOR", "1")
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(self.config_path), "serve",
             "--pidfile", str(self.pidfile)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.pidfile.exists():
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(f"starling exited with {rc} at start:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"starling did not start in {timeout}s:\n{self.log()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, and return the exit code (kills it after `timeout`)."""
        if self.proc is None:
            raise RuntimeError("server not running")
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"starling did not exit {timeout}s after SIGTERM")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.database is not None:
            database, self.database = self.database, None
            try:
                database.drop()
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"interop: could not drop test database {database.name}: {e}", file=sys.stderr)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- admin CLI -----------------------------------------------------

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(self.binary), "--config", str(self.config_path), *args],
            capture_output=True, text=True, timeout=60, env=self.env,
        )
        if out.returncode != 0:
            raise RuntimeError(f"starling {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out.stdout

    def add_user(self, user: str, password: str) -> str:
        jid = f"{user}@{self.domain}"
        self.cli("user", "add", jid, password)
        return jid

    @property
    def certificate(self) -> Path:
        return self.dir / "data" / "certs" / f"{self.domain}.crt"


# -- clients -------------------------------------------------------------


class LoginFailed(Exception):
    pass


class Client(slixmpp.ClientXMPP):
    """A slixmpp client pinned to one transport of the test server.

    `direct_tls=False`: STARTTLS on the plain port (RFC 6120 §5);
    `direct_tls=True`: TLS from the first byte on the direct TLS port (XEP-0368).
    The server's self-signed certificate is trusted as the CA, so hostname
    and chain are still verified.
    """

    def __init__(self, server: Server, jid: str, password: str, *,
                 direct_tls: bool = False, mech: str | None = None,
                 plugins: tuple[str, ...] = ()):
        super().__init__(jid, password, sasl_mech=mech)
        self.starling = server
        self.direct_tls = direct_tls
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.enable_plaintext = False
        self.use_ipv6 = False
        ctx = ssl.create_default_context(cafile=str(server.certificate))
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if direct_tls:
            # XEP-0368 §3: direct TLS client connections use ALPN "xmpp-client".
            ctx.set_alpn_protocols(["xmpp-client"])
        self.ssl_context = ctx
        for p in plugins:
            self.register_plugin(p)
        self.messages: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("message", self._on_message)
        self.auth_failures: list = []
        self.add_event_handler("failed_auth", self.auth_failures.append)
        self.stream_errors: list = []
        self.add_event_handler("stream_error", self.stream_errors.append)
        self.tls_version: str | None = None
        self.alpn: str | None = None
        self.add_event_handler("auth_success", self._on_auth_success)
        self.mech_used: str | None = None

    def _on_message(self, msg) -> None:
        self.messages.put_nowait(msg)

    def _on_auth_success(self, _stanza) -> None:
        self.mech_used = self.plugin["feature_mechanisms"].mech.name
        sock = self.socket
        if isinstance(sock, (ssl.SSLSocket, ssl.SSLObject)):
            self.tls_version = sock.version()
            self.alpn = sock.selected_alpn_protocol()

    async def login(self, timeout: float = STEP_TIMEOUT) -> None:
        """Connect and wait for session_start; LoginFailed on auth failure."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def finish(kind):
            def handler(data=None):
                if not done.done():
                    done.set_result((kind, data))
            return handler

        # slixmpp retries the next offered mechanism after each <failure/>
        # (failed_auth); it gives up with failed_all_auth once none is left.
        self.add_event_handler("session_start", finish("ok"), disposable=True)
        self.add_event_handler("failed_all_auth", finish("failed_all_auth"), disposable=True)
        self.add_event_handler("disconnected", finish("disconnected"), disposable=True)
        self.add_event_handler("no_auth", finish("no_auth"), disposable=True)
        self.add_event_handler("connection_failed", finish("connection_failed"), disposable=True)
        self.add_event_handler("ssl_invalid_chain", finish("ssl_invalid_chain"), disposable=True)
        port = self.starling.tls_port if self.direct_tls else self.starling.port
        self.connect("127.0.0.1", port)
        try:
            kind, data = await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise LoginFailed(f"{self.boundjid}: no session_start within {timeout}s")
        if kind != "ok":
            await self.close()
            raise LoginFailed(f"{self.boundjid}: {kind}: {data}")

    async def next_message(self, timeout: float = STEP_TIMEOUT):
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def close(self) -> None:
        """Close the stream (</stream:stream>) and wait for the server's close."""
        if self.transport is None:
            # Never connected or already gone: stop any reconnect attempts.
            self.cancel_connection_attempt()
            return
        await asyncio.wait_for(self.disconnect(wait=5.0), 10)


class Component(slixmpp.ComponentXMPP):
    """A slixmpp external component (XEP-0114) for `domain` on the test
    server's component port."""

    def __init__(self, server: Server, domain: str, secret: str, *, plugins: tuple[str, ...] = ()):
        super().__init__(domain, secret, "127.0.0.1", server.component_port)
        self.use_ipv6 = False
        for p in plugins:
            self.register_plugin(p)
        self.messages: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("message", self.messages.put_nowait)

    async def login(self, timeout: float = STEP_TIMEOUT) -> None:
        """Connect and wait for the accepted handshake (session_start)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def finish(kind):
            def handler(data=None):
                if not done.done():
                    done.set_result((kind, data))
            return handler

        self.add_event_handler("session_start", finish("ok"), disposable=True)
        self.add_event_handler("stream_error", finish("stream_error"), disposable=True)
        self.add_event_handler("disconnected", finish("disconnected"), disposable=True)
        self.add_event_handler("connection_failed", finish("connection_failed"), disposable=True)
        self.connect()
        kind, data = await asyncio.wait_for(done, timeout)
        if kind != "ok":
            raise LoginFailed(f"component {self.boundjid}: {kind}: {data}")

    async def next_message(self, timeout: float = STEP_TIMEOUT):
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def close(self) -> None:
        if self.transport is None:
            self.cancel_connection_attempt()
            return
        await asyncio.wait_for(self.disconnect(wait=5.0), 10)


def run(coro, timeout: float = 60.0):
    """Run one scenario coroutine on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def close_all(*clients: Client | Component) -> None:
    for c in clients:
        await c.close()
