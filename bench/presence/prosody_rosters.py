#!/usr/bin/env python3
"""Prosody (storage = "internal"): write the ring rosters as Prosody's own roster files.

    prosody_rosters.py provision|clear|check DATA_DIR N CONTACTS DOMAIN [OWNER]

DATA_DIR is Prosody's data_path (/tmp/xmppbench/prosody/data for the anchors). Each user's
roster is <DATA_DIR>/<host, %-encoded>/roster/<user>.dat, a Lua chunk in the format
util.serialization writes (checked against a file Prosody wrote after a real client
subscription, see README.md):

    return {
    	[false] = {
    		["pending"] = {};
    		["version"] = 50;
    	};
    	["user2@bench.local"] = {
    		["groups"] = {};
    		["subscription"] = "both";
    	};
    	...
    };

Prosody must be stopped (it keeps rosters of online users and an LRU cache of 1024
offline rosters in memory). provision (re)writes the files of user1..userN atomically;
clear removes them; check parses a few back. Files get OWNER (prosody:prosody) and mode 0640.
"""
import grp, os, pwd, re, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import topology  # noqa: E402


def enc(s):  # Prosody datamanager path encoding
    return re.sub(r"[^a-zA-Z0-9]", lambda m: "%%%02x" % ord(m.group(0)), s)


def lua_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(contacts, version):
    out = ["return {\n\t[false] = {\n\t\t[\"pending\"] = {};\n\t\t[\"version\"] = %d;\n\t};\n" % version]
    for jid in contacts:
        out.append("\t[%s] = {\n\t\t[\"groups\"] = {};\n\t\t[\"subscription\"] = \"both\";\n\t};\n" % lua_str(jid))
    out.append("};\n")
    return "".join(out)


def main():
    if len(sys.argv) not in (6, 7) or sys.argv[1] not in ("provision", "clear", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    action, data, n, k, dom = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    owner = sys.argv[6] if len(sys.argv) == 7 else "prosody:prosody"
    hostdir = os.path.join(data, enc(dom))
    if not os.path.isdir(os.path.join(hostdir, "accounts")):
        print("[prosody] %s/accounts not found: wrong data dir?" % hostdir, file=sys.stderr)
        return 1
    d = os.path.join(hostdir, "roster")
    if action == "check":
        files = [f for f in os.listdir(d) if f.endswith(".dat")] if os.path.isdir(d) else []
        sample = os.path.join(d, "user1.dat")
        items = 0
        if os.path.exists(sample):
            items = len(re.findall(r'\["subscription"\] = "both"', open(sample).read()))
        print("[prosody] %d roster files in %s; user1 has %d 'both' items" % (len(files), d, items))
        return 0
    uid, gid = pwd.getpwnam(owner.split(":")[0]).pw_uid, grp.getgrnam(owner.split(":")[1]).gr_gid
    t0 = time.monotonic()
    if not os.path.isdir(d):
        os.makedirs(d, mode=0o750)
        os.chown(d, uid, gid)
    missing = 0
    for i in range(1, n + 1):
        f = os.path.join(d, "user%d.dat" % i)
        if action == "clear":
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
            continue
        if not os.path.exists(os.path.join(hostdir, "accounts", "user%d.dat" % i)):
            missing += 1
        body = render(["user%d@%s" % (j, dom) for j in topology.contacts(i, n, k)], k)
        tmp = f + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(body)
        os.chmod(tmp, 0o640)
        os.chown(tmp, uid, gid)
        os.rename(tmp, f)
    dt = time.monotonic() - t0
    if missing:
        print("[prosody] warning: %d of user1..user%d have no account file" % (missing, n), file=sys.stderr)
    what = "%d items for %d users" % (n * k, n) if action == "provision" else "rosters of %d users removed" % n
    print("[prosody] %s in %.2f s (%s)" % (what, dt, d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
