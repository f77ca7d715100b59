#!/usr/bin/env python3
"""Starling (SQLite): write the ring rosters straight into the server's database.

    starling_sqlite.py provision|clear|check DB_PATH N CONTACTS DOMAIN

Starling must be stopped (the script refuses if any process has the DB open).
Tables come from crates/storage/migrations/sqlite/0002_im.sql; they exist only once a
Starling built from a tree containing that migration has started once against this DB
(sqlx applies pending migrations at startup). This script never creates them.

provision: deletes the roster rows / versions / pending subscription requests of
user1..userN, then inserts N*CONTACTS items (subscription 'both', ask 0, approved 0,
name NULL, groups '[]') and roster_versions.version = CONTACTS (as if each item had been
added one by one) in one transaction.  clear: the delete step only.  check: counts.
"""
import os, sqlite3, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import topology  # noqa: E402

EXIT_NO_TABLE = 3


def holders(path):
    """PIDs that have the DB (or its -wal/-shm) open."""
    targets = {os.path.realpath(path + s) for s in ("", "-wal", "-shm")}
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            for fd in os.listdir("/proc/%s/fd" % p):
                try:
                    if os.readlink("/proc/%s/fd/%s" % (p, fd)) in targets:
                        pids.append(int(p))
                        break
                except OSError:
                    pass
        except OSError:
            pass
    return pids


def main():
    if len(sys.argv) != 6 or sys.argv[1] not in ("provision", "clear", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    action, db, n, k, dom = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    if not os.path.exists(db):
        print("[starling] no database at %s" % db, file=sys.stderr)
        return 1
    if action != "check":
        busy = holders(db)
        if busy:
            print("[starling] %s is open by pid(s) %s: stop Starling first" % (db, busy), file=sys.stderr)
            return 1
    con = sqlite3.connect(db, timeout=5)
    have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = [t for t in ("roster_items", "roster_versions", "subscription_requests") if t not in have]
    if missing:
        migs = []
        if "_sqlx_migrations" in have:
            migs = [r[0] for r in con.execute("SELECT description FROM _sqlx_migrations ORDER BY version")]
        print(
            "[starling] %s has no table(s) %s (applied migrations: %s).\n"
            "  The IM schema (migration 0002_im) is created by Starling itself at startup. Start a\n"
            "  Starling built from current /work/main once against this database, then stop it, e.g.:\n"
            "    /work/main/target/release/starling --config /work/bench/starling.toml serve --pidfile /tmp/starling-bench/starling.pid &\n"
            "    sleep 2; kill -TERM \"$(cat /tmp/starling-bench/starling.pid)\"\n"
            "  and run this again. (Nothing was changed.)" % (db, ", ".join(missing), ", ".join(migs) or "none"),
            file=sys.stderr,
        )
        return EXIT_NO_TABLE
    users = ["user%d" % i for i in range(1, n + 1)]
    if action == "check":
        cur = con.execute("SELECT COUNT(*), COUNT(DISTINCT username) FROM roster_items WHERE host=? "
                          "AND subscription='both' AND CAST(substr(username,5) AS INTEGER) BETWEEN 1 AND ?", (dom, n))
        items, owners = cur.fetchone()
        sample = [r[0] for r in con.execute("SELECT contact FROM roster_items WHERE host=? AND username='user1' ORDER BY contact", (dom,))]
        ver = con.execute("SELECT version FROM roster_versions WHERE host=? AND username='user1'", (dom,)).fetchone()
        print("[starling] %d 'both' items over %d of user1..user%d; user1 has %d contacts, version %s" %
              (items, owners, n, len(sample), ver[0] if ver else None))
        return 0
    acc = con.execute("SELECT COUNT(*) FROM accounts WHERE host=? AND CAST(substr(username,5) AS INTEGER) BETWEEN 1 AND ? "
                      "AND username LIKE 'user%'", (dom, n)).fetchone()[0]
    if acc < n:
        print("[starling] warning: only %d of user1..user%d exist in accounts" % (acc, n), file=sys.stderr)
    t0 = time.monotonic()
    with con:  # one transaction
        for table in ("roster_items", "roster_versions", "subscription_requests"):
            con.executemany("DELETE FROM %s WHERE host=? AND username=?" % table, ((dom, u) for u in users))
        if action == "provision":
            con.executemany(
                "INSERT INTO roster_items (host, username, contact, name, subscription, ask, approved, groups) "
                "VALUES (?, ?, ?, NULL, 'both', 0, 0, '[]')",
                ((dom, "user%d" % i, "user%d@%s" % (j, dom)) for i, j in topology.pairs(n, k)))
            con.executemany("INSERT INTO roster_versions (host, username, version) VALUES (?, ?, ?)",
                            ((dom, u, k) for u in users))
    dt = time.monotonic() - t0
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    what = "%d items for %d users" % (n * k, n) if action == "provision" else "rosters of %d users cleared" % n
    print("[starling] %s in %.2f s (%s)" % (what, dt, db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
