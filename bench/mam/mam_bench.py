#!/usr/bin/env python3
"""XEP-0313 archive benchmark: a big archive, and page queries on it.

  mam_bench.py provision --db URL [--users 100 --per-user 10000]
      Writes users × per-user archived messages straight into the `archive`
      table of a Starling database (sqlite:///path or postgres://…; the
      schema must exist: start the server once, or import users, first).
      User u's messages are with 10 peers in turn, one a minute, so a
      `with` + two-day window holds about 290 of them.

  mam_bench.py query --port P --pid PID [--users 100 --queries 500 --sessions 10]
      Logs in `sessions` users (STARTTLS, PLAIN, password benchpass) and
      runs `queries` page queries of 50 (`with` one peer + a two-day time
      range) spread over them, one at a time. Prints one JSON line: latency
      p50/p99 (send to the IQ result, all 50 results received before it),
      and server CPU ms per query from /proc/PID.

Loopback only. The raw XML client is bench/storm/storm.py's.
"""
import argparse, asyncio, json, os, random, ssl, subprocess, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "storm"))
from storm import Stream, proc_stat  # noqa: E402

DOMAIN = "bench.local"
BASE = 1_700_000_000  # first message, seconds
PEERS = 10
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()


def rows(users, per_user):
    rng = random.Random(42)
    for u in range(1, users + 1):
        owner = f"user{u}@{DOMAIN}"
        for k in range(per_user):
            peer = f"user{(u + k % PEERS) % users + 1}@{DOMAIN}"
            outgoing = k % 2
            body = " ".join(rng.choice(WORDS) for _ in range(8))
            frm, to = (owner, peer) if outgoing else (peer, owner)
            sid = f"{u:03d}{k:06d}{rng.getrandbits(40):010x}"
            stanza = (f"<message xmlns='jabber:client' from='{frm}/phone' to='{to}' type='chat' id='m{sid}'>"
                      f"<body>{body}</body><origin-id xmlns='urn:xmpp:sid:0' id='o{sid}'/>"
                      f"<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
            yield (owner, sid, peer, "phone", f"o{sid}", outgoing, (BASE + 60 * k) * 1_000_000, body, stanza)


COLUMNS = "archive, stanza_id, peer, peer_resource, origin_id, outgoing, stamp, body, stanza"


def provision(args):
    started = time.time()
    if args.db.startswith("sqlite://"):
        import sqlite3
        db = sqlite3.connect(args.db[len("sqlite://"):])
        db.execute("PRAGMA synchronous=OFF")
        db.executemany(f"INSERT INTO archive ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows(args.users, args.per_user))
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = db.execute("SELECT COUNT(*) FROM archive").fetchone()[0]
        db.close()
    else:
        import csv, io
        copy = subprocess.Popen(["psql", args.db, "-q", "-c", f"COPY archive ({COLUMNS}) FROM STDIN WITH (FORMAT csv)"],
                                stdin=subprocess.PIPE, text=True)
        out = csv.writer(copy.stdin)
        for row in rows(args.users, args.per_user):
            out.writerow(row)
        copy.stdin.close()
        if copy.wait() != 0:
            sys.exit("COPY failed")
        subprocess.run(["psql", args.db, "-q", "-c", "ANALYZE archive"], check=True)
        count = int(subprocess.run(["psql", args.db, "-Atc", "SELECT COUNT(*) FROM archive"],
                                   check=True, capture_output=True, text=True).stdout)
    print(json.dumps({"provisioned": count, "seconds": round(time.time() - started, 1)}))


async def query(args):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    args.host, args.domain = "127.0.0.1", DOMAIN
    sessions = []
    for i in range(args.sessions):
        user = 1 + i * max(1, args.users // args.sessions)
        s = Stream(args, "127.0.0.1")
        await s.connect()
        await s.starttls(ctx)
        await s.auth_plain(f"user{user}", "benchpass")
        await s.bind("bench")
        sessions.append((user, s))
    rng = random.Random(7)
    latencies = []
    cpu0 = proc_stat(args.pid)[0] if args.pid else 0
    for q in range(args.queries):
        user, s = sessions[q % len(sessions)]
        peer = f"user{(user + rng.randrange(PEERS)) % args.users + 1}@{DOMAIN}"
        start = BASE + rng.randrange(0, 60 * args.per_user - 2 * 86_400)
        fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        sent = time.perf_counter()
        s.send(f"<iq type='set' id='q{q}'><query xmlns='urn:xmpp:mam:2' queryid='q{q}'>"
               "<x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>"
               f"<field var='with'><value>{peer}</value></field>"
               f"<field var='start'><value>{fmt(start)}</value></field>"
               f"<field var='end'><value>{fmt(start + 2 * 86_400)}</value></field></x>"
               "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max></set></query></iq>")
        results = 0
        while True:
            name, attrs, _ = await s.element()
            if name == "message":
                results += 1
            elif name == "iq" and attrs.get("id") == f"q{q}":
                if attrs.get("type") != "result":
                    sys.exit(f"query failed: {attrs}")
                break
        latencies.append(time.perf_counter() - sent)
        if results != 50:
            sys.exit(f"expected a full page of 50, got {results}")
    cpu1 = proc_stat(args.pid)[0] if args.pid else 0
    latencies.sort()
    pct = lambda p: round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)
    print(json.dumps({
        "label": args.label, "queries": args.queries, "page": 50,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99),
        "server_cpu_ms_per_query": round((cpu1 - cpu0) / args.queries, 3) if args.pid else None,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("provision")
    p.add_argument("--db", required=True)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--per-user", type=int, default=10_000)
    q = sub.add_parser("query")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--pid", type=int)
    q.add_argument("--label", default="starling")
    q.add_argument("--users", type=int, default=100)
    q.add_argument("--per-user", type=int, default=10_000)
    q.add_argument("--queries", type=int, default=500)
    q.add_argument("--sessions", type=int, default=10)
    args = ap.parse_args()
    if args.cmd == "provision":
        provision(args)
    else:
        asyncio.run(query(args))


if __name__ == "__main__":
    main()
