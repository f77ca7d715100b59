#!/usr/bin/env python3
"""Roster topology shared by every backend of provision.sh.

Ring (circulant graph C_N(1..K/2)): user i (1-based) has as contacts the K/2 users before
and the K/2 users after it, modulo N:

    contacts(i) = { user((i-1+d) mod N + 1) : d in -K/2..-1, 1..K/2 }

so for any N > K every user has exactly K contacts, the relation is symmetric (j is a
contact of i iff i is a contact of j), and every item has subscription "both".
With sequential logins (xmppload logs users in in index order, 50 in flight) about K/2
contacts are already online when a user logs in, i.e. ~K/2 presence broadcasts out plus
~K/2 available-presence answers to its probes, and ~K/2 probes to offline contacts.

CLI (for shell/psql use):
    topology.py pairs N K [DOMAIN]     tab-separated "userI<TAB>userJ@DOMAIN" lines
    topology.py check N K              asserts the properties above
"""
import sys


def contacts(i, n, k):
    """1-based indices of the contacts of user i."""
    if k % 2 or k < 2:
        raise ValueError("CONTACTS must be an even number >= 2, got %d" % k)
    if n <= k:
        raise ValueError("need N > CONTACTS (N=%d, CONTACTS=%d)" % (n, k))
    h = k // 2
    return [((i - 1 + d) % n) + 1 for d in list(range(-h, 0)) + list(range(1, h + 1))]


def pairs(n, k):
    """(owner index, contact index) for every roster item, owner-major."""
    for i in range(1, n + 1):
        for j in contacts(i, n, k):
            yield i, j


def check(n, k):
    s = set(pairs(n, k))
    assert len(s) == n * k, "duplicate items"
    assert all((j, i) in s for i, j in s), "not symmetric"
    assert all(i != j for i, j in s), "self contact"
    return len(s)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "pairs":
        n, k = int(sys.argv[2]), int(sys.argv[3])
        dom = sys.argv[4] if len(sys.argv) > 4 else "bench.local"
        out = sys.stdout
        for i, j in pairs(n, k):
            out.write("user%d\tuser%d@%s\n" % (i, j, dom))
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        print("ok: %d items, symmetric, %s contacts each" % (check(int(sys.argv[2]), int(sys.argv[3])), sys.argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
