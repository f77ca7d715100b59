#!/usr/bin/env python3
"""Idle memory and chat CPU of the HTTP transports against one running server.

Phases (one JSON line each on stdout):
  idle_ws    N RFC 7395 WebSocket clients log in (PLAIN, bind, presence, ping)
             and stay: server KiB RSS per connection.
  idle_bosh  N XEP-0206 BOSH sessions log in the same way and each keeps one
             request held (wait 60 s, polling again when it returns), as an
             idle browser does: server KiB RSS per session.
  chat_tcp,  P pairs of clients, each sender with one message in flight to
  chat_ws    its partner (closed loop) for T seconds: server CPU µs per
             delivered message, over plain TCP and over WebSocket, the same
             client code on both.

Server CPU time and RSS come from /proc/PID, so they do not depend on how fast
this client is. Accounts user1..userN with one password (bench/starling.sh
imports them). Loopback only.
"""
import argparse, asyncio, base64, json, os, re, struct, sys, time

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_ms = (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    return cpu_ms, rss


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def login_steps(user, password, domain, resource):
    """What a client sends after the stream is open, each with what ends its answer."""
    auth = f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain(user, password)}</auth>"
    bind = (f"<iq type='set' id='b' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>")
    ready = (f"<presence xmlns='jabber:client'/><iq type='get' id='p' to='{domain}' xmlns='jabber:client'>"
             f"<ping xmlns='urn:xmpp:ping'/></iq>")
    return auth, bind, ready


class Tcp:
    """Plain TCP client (no TLS, PLAIN allowed by the benchmark config)."""

    def __init__(self, port, domain):
        self.port, self.domain, self.buf = port, domain, ""

    async def connect(self):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)

    def header(self):
        return (f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' "
                "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

    async def send(self, xml):
        self.w.write(xml.encode())

    async def until(self, needle):
        while needle not in self.buf:
            data = await self.r.read(65536)
            if not data:
                raise ConnectionError(f"closed waiting for {needle}")
            self.buf += data.decode()
        head, _, self.buf = self.buf.partition(needle)
        return head

    async def login(self, user, password, resource):
        await self.connect()
        auth, bind, ready = login_steps(user, password, self.domain, resource)
        await self.send(self.header())
        await self.until("</stream:features>")
        await self.send(auth)
        await self.until("<success")
        await self.send(self.header())
        await self.until("</stream:features>")
        await self.send(bind)
        await self.until("</iq>")
        await self.send(ready)
        await self.until("id='p'")


class Ws(Tcp):
    """RFC 7395 over a hand-rolled RFC 6455 client: one element per text frame."""

    async def connect(self):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        self.w.write((f"GET /xmpp-websocket HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Protocol: xmpp\r\n\r\n").encode())
        head = await self.r.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode())

    def header(self):
        return f"<open xmlns='{NS_FRAMING}' to='{self.domain}' version='1.0'/>"

    async def send(self, xml):
        # Clients mask their frames (RFC 6455 §5.3); one element per message.
        for element in split_elements(xml):
            data, mask = element.encode(), os.urandom(4)
            n = len(data)
            head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
            self.w.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    async def until(self, needle):
        while needle not in self.buf:
            b0, b1 = await self.r.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.r.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.r.readexactly(8))
            payload = await self.r.readexactly(n)
            if b0 & 0x0F == 0x8:
                raise ConnectionError(f"closed waiting for {needle}")
            if b0 & 0x0F == 0x1:
                self.buf += payload.decode()
        head, _, self.buf = self.buf.partition(needle)
        return head


def split_elements(xml):
    """Top-level elements of a short, flat-enough XML string (what this script sends)."""
    out, depth, start = [], 0, 0
    for m in re.finditer(r"<(/?)[^>]*?(/?)>", xml):
        closing, empty = m.group(1), m.group(2)
        if not closing and not empty:
            depth += 1
        elif closing:
            depth -= 1
        if depth == 0:
            out.append(xml[start:m.end()])
            start = m.end()
    return out


class Bosh:
    """XEP-0206 session on one keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, port, domain):
        self.port, self.domain, self.rid, self.sid = port, domain, 1_000_000, None

    async def post(self, attrs, payload=""):
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = f"<body xmlns='{NS_HTTPBIND}' rid='{self.rid}'{sid} {attrs}>{payload}</body>".encode()
        self.rid += 1
        self.w.write((f"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                      f"Content-Type: text/xml; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        head = (await self.r.readuntil(b"\r\n\r\n")).decode()
        length = int(re.search(r"(?i)content-length:\s*(\d+)", head).group(1))
        return (await self.r.readexactly(length)).decode()

    async def login(self, user, password, resource):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        xbosh = "xmlns:xmpp='urn:xmpp:xbosh'"
        created = await self.post(f"to='{self.domain}' wait='60' hold='1' ver='1.11' xmpp:version='1.0' {xbosh}")
        self.sid = re.search(r"sid='([^']+)'", created).group(1)
        auth, bind, ready = login_steps(user, password, self.domain, resource)
        for attrs, payload in (("", auth), (f"xmpp:restart='true' {xbosh}", ""), ("", bind), ("", ready)):
            await self.post(attrs, payload)

    async def idle(self):
        """Keeps one request held, polling again when it returns."""
        while True:
            await self.post("")


async def gather_limited(factories, limit):
    sem = asyncio.Semaphore(limit)

    async def one(f):
        async with sem:
            return await f()

    return await asyncio.gather(*(one(f) for f in factories))


async def idle_phase(name, make, args):
    cpu0, rss0 = proc_stat(args.server_pid)
    clients = [make() for _ in range(args.n)]
    t0 = time.monotonic()
    await gather_limited([lambda c=c, i=i: c.login(f"user{i + 1}", args.password, "idle")
                          for i, c in enumerate(clients)], 50)
    login_s = time.monotonic() - t0
    pollers = [asyncio.ensure_future(c.idle()) for c in clients if isinstance(c, Bosh)]
    await asyncio.sleep(args.hold)  # let the server settle: a measuring window, not a barrier
    cpu1, rss1 = proc_stat(args.server_pid)
    for p in pollers:
        p.cancel()
    for c in clients:
        c.w.close()
    return {"phase": name, "n": args.n, "kib_per_conn": round((rss1 - rss0) / args.n, 1),
            "rss_before_kib": rss0, "rss_after_kib": rss1, "logins_per_s": round(args.n / login_s),
            "server_cpu_ms_per_login": round((cpu1 - cpu0) / args.n, 2)}


async def chat_phase(name, make, args):
    # Senders user1..P, receivers userP+1..2P (fresh accounts per phase: offset).
    base = args.n + (0 if name == "chat_tcp" else 2 * args.pairs)
    senders = [make() for _ in range(args.pairs)]
    receivers = [make() for _ in range(args.pairs)]
    await gather_limited([lambda c=c, i=i: c.login(f"user{base + i + 1}", args.password, "chat")
                          for i, c in enumerate(senders + receivers)], 50)
    delivered = 0
    stop = time.monotonic() + args.seconds

    async def pair(i):
        nonlocal delivered
        s, r = senders[i], receivers[i]
        to = f"user{base + args.pairs + i + 1}@{args.domain}/chat"
        while time.monotonic() < stop:
            await s.send(f"<message to='{to}' type='chat' xmlns='jabber:client'><body>m</body></message>")
            await r.until("</message>")
            delivered += 1

    cpu0, _ = proc_stat(args.server_pid)
    t0 = time.monotonic()
    await asyncio.gather(*(pair(i) for i in range(args.pairs)))
    wall = time.monotonic() - t0
    cpu1, _ = proc_stat(args.server_pid)
    for c in senders + receivers:
        c.w.close()
    return {"phase": name, "pairs": args.pairs, "delivered": delivered, "msgs_per_s": round(delivered / wall),
            "server_cpu_us_per_msg": round((cpu1 - cpu0) * 1000 / delivered, 1)}


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tcp-port", type=int, default=5224)
    ap.add_argument("--http-port", type=int, default=5280)
    ap.add_argument("--domain", default="bench.local")
    ap.add_argument("--password", default="benchpass")
    ap.add_argument("--server-pid", required=True, help="a pid or a pidfile")
    ap.add_argument("-n", type=int, default=2000, help="idle clients per phase")
    ap.add_argument("--hold", type=float, default=5, help="seconds idle before RSS is read")
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--phases", default="idle_ws idle_bosh chat_tcp chat_ws")
    ap.add_argument("--label", default="starling")
    args = ap.parse_args()
    if os.path.exists(args.server_pid):
        args.server_pid = open(args.server_pid).read().strip()
    make = {"idle_ws": lambda: Ws(args.http_port, args.domain),
            "idle_bosh": lambda: Bosh(args.http_port, args.domain),
            "chat_tcp": lambda: Tcp(args.tcp_port, args.domain),
            "chat_ws": lambda: Ws(args.http_port, args.domain)}
    for phase in args.phases.split():
        run = idle_phase if phase.startswith("idle") else chat_phase
        result = await run(phase, make[phase], args)
        print(json.dumps({"label": args.label, **result}), flush=True)
        await asyncio.sleep(1)  # let closed connections go before the next phase reads RSS


if __name__ == "__main__":
    asyncio.run(main())
