#!/usr/bin/env python3
"""Reconnect storm (XEP-0198 resumption) against one running XMPP server.

N clients log in (STARTTLS, SASL PLAIN, bind, <enable resume='true'/>, initial
presence). A sender (plain TCP) delivers K messages to each client; each client
acknowledges the first K_ACK of them (one unsolicited <a/>) and then stops
answering <r/>, so K - K_ACK stay unacknowledged. All client sockets are then cut
at once (RST, no </stream:stream>); the sender delivers M more messages to each
while they are down; then every client reconnects (STARTTLS, PLAIN) and sends
<resume previd h/> with the count of stanzas it handled. Every message carries
a unique id: each must arrive exactly once across both connections.

Figures (one JSON line on stdout): server CPU ms per login and per resume, wall
seconds until all are resumed, messages lost / duplicated, KiB RSS per
connected and per hibernated session. Server CPU time and RSS are read from
/proc/PID, so they do not depend on how fast this client is.

Python asyncio with the ssl module (OpenSSL does the TLS work in C): the whole
scenario is a sequence of barriers over 5,000 clients, easier to state and to
check exactly-once in one process than in a Rust tool, and the figures that
matter are read from the server's /proc. Its own speed only bounds the
wall-clock figure (reported with the client's CPU time to show that).

Loopback only.
"""
import argparse, asyncio, base64, json, os, resource, socket, ssl, struct, sys, time
import xml.parsers.expat

NS_SM = "urn:xmpp:sm:3"
STANZAS = ("message", "presence", "iq")


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_ms = (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    return cpu_ms, rss


def self_cpu_ms():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000


class Stream:
    """One connection: raw XML over TCP, STARTTLS, top-level elements as
    (name, attrs, text): the text of a nested <jid/> (bind result), else
    the name of the first child (a stream error's condition)."""

    def __init__(self, args, src):
        self.args, self.src = args, src
        self.pending = []

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection(
            self.args.host, self.args.port, local_addr=(self.src, 0), limit=1 << 16)
        self.open()

    def open(self):
        self.parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._chars
        self.depth, self.top, self.text = 0, None, None
        self.writer.write((f"<?xml version='1.0'?><stream:stream to='{self.args.domain}' xmlns='jabber:client' "
                           "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode())

    def _start(self, name, attrs):
        self.depth += 1
        local = name.rsplit("}", 1)[-1]
        if self.depth == 2:
            self.top = (local, attrs)
        elif local == "jid":
            self.text = ""
        elif self.depth == 3 and self.text is None:
            self.text = local

    def _chars(self, data):
        if self.text is not None and self.depth > 2:
            self.text += data

    def _end(self, name):
        self.depth -= 1
        if self.depth == 1:
            self.pending.append((self.top[0], self.top[1], self.text))
            self.top, self.text = None, None
        elif self.depth == 0:
            self.pending.append(("/stream", {}, None))

    async def element(self):
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed by server")
            self.parser.Parse(data)
        return self.pending.pop(0)

    async def expect(self, *names):
        el = await self.element()
        if el[0] not in names:
            raise RuntimeError(f"expected {names}, got {el[0]} {el[1]} {el[2]}")
        return el

    def send(self, s):
        self.writer.write(s.encode())

    async def starttls(self, ctx):
        await self.expect("features")
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.expect("proceed")
        await self.writer.start_tls(ctx)
        self.open()

    async def auth_plain(self, user, password):
        await self.expect("features")
        cred = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{cred}</auth>")
        await self.expect("success")
        self.open()
        await self.expect("features")

    async def bind(self, resource):
        self.send(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        el = await self.expect("iq")
        if el[1].get("type") != "result" or not el[2]:
            raise RuntimeError(f"bind failed: {el}")
        return el[2].strip()

    def cut(self):
        """Drops the connection as a lost network would: RST, nothing more."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class Client:
    def __init__(self, i, args, src):
        self.i, self.args, self.src = i, args, src
        self.user = f"user{args.first_user + i}"
        self.h = 0              # stanzas handled from the server since <enable/>
        self.seen = {}          # message id -> times received
        self.acked_sent = False
        self.answer_r = True    # before the cut: until K_ACK messages arrived
        self.smid = None
        self.resumed = None     # None, True (resumed) or the <failed/> attrs
        self.resumed_h = None
        self.messages = 0
        self.prefix = args.resource + "-"
        self.step = None
        self.reader_task = None
        self.done = asyncio.Event()  # all expected messages seen

    async def login(self, ctx):
        s = self.stream = Stream(self.args, self.src)
        self.step = "connect"
        await s.connect()
        self.step = "starttls"
        await s.starttls(ctx)
        self.step = "auth"
        await s.auth_plain(self.user, self.args.password)
        self.step = "bind"
        self.jid = await s.bind(self.args.resource)
        s.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        el = await s.expect("enabled")
        self.smid = el[1].get("id")
        if not self.smid:
            raise RuntimeError(f"{self.user}: resumption not offered: {el}")
        s.send("<presence/>")
        self.reader_task = asyncio.create_task(self.read_loop())

    async def resume(self, ctx):
        s = self.stream = Stream(self.args, self.src)
        self.step = "reconnect"
        await s.connect()
        self.step = "starttls again"
        await s.starttls(ctx)
        self.step = "auth again"
        await s.auth_plain(self.user, self.args.password)
        self.step = "resume"
        s.send(f"<resume xmlns='{NS_SM}' previd='{self.smid}' h='{self.h}'/>")
        el = await s.expect("resumed", "failed")
        if el[0] == "failed":
            self.resumed = dict(el[1])
            return
        self.resumed, self.resumed_h = True, el[1].get("h")
        # Answer acks from now on: a healthy client after reconnecting.
        self.answer_r = True
        self.reader_task = asyncio.create_task(self.read_loop())

    async def read_loop(self):
        s = self.stream
        try:
            while True:
                name, attrs, _ = await s.element()
                if name in STANZAS:
                    self.h = (self.h + 1) & 0xFFFFFFFF
                    mid = attrs.get("id", "")
                    # Only this run's messages: an offline store may hold earlier runs'.
                    if name == "message" and mid.startswith(self.prefix):
                        self.seen[mid] = self.seen.get(mid, 0) + 1
                        self.messages += 1
                        if self.messages == self.args.k_ack and not self.acked_sent:
                            # Acknowledge what arrived so far, then go quiet.
                            s.send(f"<a xmlns='{NS_SM}' h='{self.h}'/>")
                            self.acked_sent, self.answer_r = True, False
                        if len(self.seen) >= self.expected:
                            self.done.set()
                elif name == "r" and self.answer_r:
                    s.send(f"<a xmlns='{NS_SM}' h='{self.h}'/>")
                elif name == "/stream":
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError, xml.parsers.expat.ExpatError):
            return

    expected = 0


class Sender:
    """Plain-TCP sessions that address the clients' full JIDs; a ping round
    trip after each batch proves the server has routed all of it."""

    def __init__(self, args, n):
        self.args, self.n = args, n
        self.seq = 0

    async def login(self):
        self.streams = []
        for j in range(self.args.senders):
            s = Stream(self.args, "127.0.0.1")
            await s.connect()
            await s.auth_plain(f"user{self.args.first_user + self.n + j}", self.args.password)
            await s.bind(f"sender{j}")
            self.streams.append(s)

    async def batch(self, clients, per_client, tag):
        """per_client messages to each client, interleaved across clients."""
        for r in range(per_client):
            for c in clients:
                s = self.streams[c.i % len(self.streams)]
                s.send(f"<message to='{c.jid}' id='{self.args.resource}-{tag}{r}-{c.i}' type='chat'><body>storm {tag}{r}</body></message>")
            for s in self.streams:
                await s.writer.drain()
        for j, s in enumerate(self.streams):
            self.seq += 1
            s.send(f"<iq type='get' id='ping{self.seq}' to='{self.args.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
        for s in self.streams:
            while True:
                name, attrs, _ = await s.element()
                if name == "iq" and attrs.get("id", "").startswith("ping"):
                    break
                if name == "message" and attrs.get("type") == "error":
                    print(f"sender got an error bounce: {attrs}", file=sys.stderr)


def expected_of(c, args):
    return [f"{args.resource}-{tag}{r}-{c.i}" for tag, n in (("a", args.k), ("b", args.m)) for r in range(n)]


async def in_batches(coros_of, items, limit):
    sem = asyncio.Semaphore(limit)
    errors = []

    async def one(x):
        async with sem:
            try:
                await asyncio.wait_for(coros_of(x), 120)
            except Exception as e:  # one failed client must not stop the storm; it is reported
                errors.append(f"{getattr(x, 'user', x)} at {getattr(x, 'step', '?')}: {type(e).__name__} {e}")
    await asyncio.gather(*(one(x) for x in items))
    return errors


async def main(args):
    if not args.host.startswith("127."):
        raise SystemExit("loopback only")
    pid = int(open(args.server_pid).read()) if os.path.exists(args.server_pid) else int(args.server_pid)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    srcs = [f"127.0.0.{1 + k}" for k in range(args.src_addrs)]
    clients = [Client(i, args, srcs[i % len(srcs)]) for i in range(args.n)]
    Client.expected = args.k + args.m
    out = {"server": args.label, "n": args.n, "k": args.k, "k_ack": args.k_ack, "m": args.m,
           "concurrency": args.concurrency}
    log = lambda *a: print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)

    cpu0, rss0 = proc_stat(pid)
    t = time.monotonic()
    errors = await in_batches(lambda c: c.login(ctx), clients, args.concurrency)
    login_wall = time.monotonic() - t
    sender = Sender(args, args.n)
    await sender.login()
    await asyncio.sleep(args.settle)
    cpu1, rss1 = proc_stat(pid)
    live = [c for c in clients if c.reader_task]
    log(f"logged in {len(live)}/{args.n} in {login_wall:.1f}s; errors {len(errors)} {errors[:3]}")
    out.update(login_errors=len(errors), login_wall_s=round(login_wall, 2),
               cpu_ms_per_login=round((cpu1 - cpu0) / max(len(live), 1), 3),
               rss_before_kib=rss0, rss_connected_kib=rss1,
               kib_per_connected=round((rss1 - rss0) / max(len(live), 1), 2))

    # K messages each; the clients ack the first K_ACK.
    await sender.batch(live, args.k, "a")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and sum(c.messages >= args.k for c in live) < len(live):
        await asyncio.sleep(0.2)
    got = sum(c.messages for c in live)
    log(f"before the cut: {got} of {len(live) * args.k} messages received")
    await asyncio.sleep(1)  # the acks reach the server

    # The cut: every client socket at once.
    cpu2, _ = proc_stat(pid)
    for c in live:
        c.stream.cut()
    await asyncio.gather(*(c.reader_task for c in live))
    await asyncio.sleep(args.settle)
    # M more each while they are down (queued by the hibernated sessions).
    await sender.batch(live, args.m, "b")
    await asyncio.sleep(args.settle)
    cpu3, rss3 = proc_stat(pid)
    log(f"hibernated: RSS {rss3} KiB (connected {rss1}, before {rss0})")
    out.update(cpu_ms_per_cut=round((cpu3 - cpu2) / max(len(live), 1), 3), rss_hibernated_kib=rss3,
               kib_per_hibernated=round((rss3 - rss0) / max(len(live), 1), 2))

    # The storm: everyone reconnects and resumes.
    my0 = self_cpu_ms()
    t = time.monotonic()
    errors = await in_batches(lambda c: c.resume(ctx), live, args.resume_concurrency)
    resumed = [c for c in live if c.resumed is True]
    resume_wall = time.monotonic() - t
    cpu4, _ = proc_stat(pid)
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in resumed)), args.timeout) if resumed else None
    all_wall = time.monotonic() - t
    my1 = self_cpu_ms()
    await asyncio.sleep(args.settle)
    cpu5, rss5 = proc_stat(pid)
    log(f"resumed {len(resumed)}/{len(live)} in {resume_wall:.1f}s, all messages in {all_wall:.1f}s; "
        f"errors {len(errors)} {errors[:3]}")

    run = args.resource
    expected = {f"{run}-{tag}{r}-{c.i}" for c in live for tag, n in (("a", args.k), ("b", args.m)) for r in range(n)}
    lost = dup = 0
    for c in resumed:
        for tag, n in (("a", args.k), ("b", args.m)):
            for r in range(n):
                times = c.seen.get(f"{run}-{tag}{r}-{c.i}", 0)
                lost += times == 0
                dup += max(times - 1, 0)
    stray = sum(1 for c in live for mid in c.seen if mid not in expected)
    # Clients that could not resume: their messages wait in the server
    # (redelivered or stored offline when the session times out).
    undelivered_unresumed = sum(1 for c in live if c.resumed is not True for mid in expected_of(c, args) if mid not in c.seen)
    failed = [c.resumed for c in live if isinstance(c.resumed, dict)]
    out.update(resumed=len(resumed), resume_failed=len(failed), resume_errors=len(errors),
               resume_wall_s=round(resume_wall, 2), all_delivered_wall_s=round(all_wall, 2),
               cpu_ms_per_resume=round((cpu4 - cpu3) / max(len(resumed), 1), 3),
               cpu_ms_per_resume_incl_redelivery=round((cpu5 - cpu3) / max(len(resumed), 1), 3),
               server_cores_during_resume=round((cpu4 - cpu3) / 1000 / max(resume_wall, 1e-9), 2),
               client_cpu_s_during_resume=round((my1 - my0) / 1000, 1),
               messages_sent=len(expected), messages_lost=lost,
               undelivered_to_unresumed=undelivered_unresumed, resume_error_samples=errors[:3], messages_duplicated=dup, stray=stray,
               resumed_h_values=sorted({c.resumed_h for c in resumed}), rss_after_resume_kib=rss5)

    # Clean end: close the streams so the sessions end instead of hibernating.
    for c in resumed:
        c.stream.send("</stream:stream>")
    for s in sender.streams:
        s.send("</stream:stream>")
    await asyncio.sleep(2)
    for c in live:
        c.stream.writer.transport.abort()
    for s in sender.streams:
        s.writer.transport.abort()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5224)
    ap.add_argument("--domain", default="bench.local")
    ap.add_argument("--password", default="benchpass")
    ap.add_argument("--server-pid", required=True, help="pidfile or PID of the server")
    ap.add_argument("--label", default="server")
    ap.add_argument("-n", type=int, default=5000, help="resumable clients")
    ap.add_argument("--first-user", type=int, default=1)
    ap.add_argument("-k", type=int, default=4, help="messages to each client before the cut")
    ap.add_argument("--k-ack", type=int, default=2, help="of which each client acknowledges this many")
    ap.add_argument("-m", type=int, default=2, help="messages to each client while it is down")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=100, help="logins in flight")
    ap.add_argument("--resume-concurrency", type=int, default=1000, help="resumptions in flight")
    ap.add_argument("--src-addrs", type=int, default=4)
    ap.add_argument("--resource", default=f"storm{os.getpid()}", help="the clients' resource")
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(20000, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),) * 2)
    asyncio.run(main(args))
