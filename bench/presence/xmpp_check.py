#!/usr/bin/env python3
"""Minimal raw-socket XMPP client (plain TCP, SASL PLAIN, loopback only) used to
(a) make a server write a real subscription, so the provisioned format can be compared with
what the server itself stores, and (b) check that a login really triggers roster load and
presence (probes answered / broadcasts received).

  xmpp_check.py dance    --port P USER_A USER_B     mutual subscribe/subscribed -> 'both'
  xmpp_check.py presence --port P --user U [--expect K] [--timeout S] [--hold S]
        logs in (resource 'check'), gets the roster, sends initial presence, then counts
        presence stanzas until available presence from K distinct contacts arrived or
        S seconds passed; prints one JSON line.
"""
import argparse, base64, json, socket, sys, time
import xml.parsers.expat
import xml.etree.ElementTree as ET

NS_CLIENT = "jabber:client"


class Client:
    def __init__(self, host, port, domain, user, password, resource="check"):
        if not host.startswith("127."):
            raise SystemExit("loopback only")
        self.domain, self.user = domain, user
        self.sock = socket.create_connection((host, port), timeout=30)
        self.queue = []
        self._open()
        feats = self.wait(lambda e: e.tag.endswith("}features"))
        cred = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>" % cred)
        r = self.wait(lambda e: e.tag.endswith("}success") or e.tag.endswith("}failure"))
        if r.tag.endswith("failure"):
            raise SystemExit("auth failed for %s" % user)
        self._open()
        feats = self.wait(lambda e: e.tag.endswith("}features"))
        self.iq("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>%s</resource></bind></iq>" % resource, "b1")
        sess = feats.find("{urn:ietf:params:xml:ns:xmpp-session}session")
        if sess is not None and sess.find("{urn:ietf:params:xml:ns:xmpp-session}optional") is None:
            self.iq("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>", "s1")
        self.jid = "%s@%s" % (user, domain)

    # ---- stream plumbing
    def _open(self):
        self.depth, self.stack = 0, []
        self.p = xml.parsers.expat.ParserCreate(namespace_separator="}")
        self.p.StartElementHandler, self.p.EndElementHandler, self.p.CharacterDataHandler = self._start, self._end, self._chars
        self.send("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % self.domain)

    def _name(self, n):
        return "{" + n if "}" in n else n

    def _start(self, name, attrs):
        self.depth += 1
        if self.depth == 1:
            return
        a = {self._name(k): v for k, v in attrs.items()}
        el = ET.Element(self._name(name), a) if not self.stack else ET.SubElement(self.stack[-1], self._name(name), a)
        self.stack.append(el)

    def _end(self, name):
        self.depth -= 1
        if self.depth == 0:
            raise SystemExit("stream closed by server")
        el = self.stack.pop()
        if not self.stack:
            self.queue.append(el)

    def _chars(self, data):
        if self.stack:
            el = self.stack[-1]
            if len(el):
                el[-1].tail = (el[-1].tail or "") + data
            else:
                el.text = (el.text or "") + data

    def send(self, s):
        self.sock.sendall(s.encode())

    def pump(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        if not data:
            raise SystemExit("connection closed")
        self.p.Parse(data, False)
        return True

    def next(self, timeout):
        """next stanza or None after timeout"""
        end = time.monotonic() + timeout
        while not self.queue:
            left = end - time.monotonic()
            if left <= 0 or not self.pump(left):
                return None
        return self.queue.pop(0)

    def wait(self, pred, timeout=30, keep=None):
        end = time.monotonic() + timeout
        while True:
            el = self.next(max(0.0, end - time.monotonic()))
            if el is None:
                raise SystemExit("timeout waiting")
            if el.tag.endswith("}error") and el.tag.startswith("{http://etherx"):
                raise SystemExit("stream error: %s" % ET.tostring(el))
            if pred(el):
                return el
            if keep is not None:
                keep.append(el)

    def iq(self, xml, id_, keep=None):
        """send an iq and wait for the answer with that id (stanzas before it go to keep)"""
        self.send(xml)
        return self.wait(lambda e: e.tag == "{%s}iq" % NS_CLIENT and e.get("id") == id_, keep=keep)

    def close(self):
        try:
            self.send("</stream:stream>")
            self.sock.close()
        except OSError:
            pass


def roster(c, keep=None):
    r = c.iq("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>", "r1", keep)
    q = r.find("{jabber:iq:roster}query")
    return [] if q is None else [(i.get("jid"), i.get("subscription"), i.get("ask")) for i in q]


def drain(cs, secs):
    end = time.monotonic() + secs
    for c in cs:
        while c.next(max(0.0, min(0.2, end - time.monotonic()))) is not None:
            pass


def cmd_dance(a):
    A = Client(a.host, a.port, a.domain, a.users[0], a.password)
    B = Client(a.host, a.port, a.domain, a.users[1], a.password)
    for c in (A, B):
        roster(c)
        c.send("<presence/>")
    drain([A, B], 1)
    for x, y in ((A, B), (B, A)):
        x.send("<presence to='%s' type='subscribe'/>" % y.jid)
        y.wait(lambda e: e.tag.endswith("}presence") and e.get("type") == "subscribe")
        y.send("<presence to='%s' type='subscribed'/>" % x.jid)
        drain([A, B], 1)
    print(json.dumps({A.user: roster(A), B.user: roster(B)}))
    A.close(); B.close()


def cmd_presence(a):
    t0 = time.monotonic()
    c = Client(a.host, a.port, a.domain, a.user, a.password)
    t_login = time.monotonic() - t0
    early = []
    items = roster(c, early)
    c.send("<presence/>")
    avail, unavail, stanzas, other, n_unavail = set(), set(), 0, 0, 0
    own = c.jid
    end = time.monotonic() + a.timeout
    pending = early
    while time.monotonic() < end and len(avail) < a.expect:
        el = pending.pop(0) if pending else c.next(max(0.0, end - time.monotonic()))
        if el is None:
            break
        if el.tag != "{%s}presence" % NS_CLIENT:
            other += 1
            continue
        stanzas += 1
        frm = (el.get("from") or "").split("/")[0]
        if frm == own:
            continue
        if el.get("type") in (None, "available"):
            avail.add(frm); unavail.discard(frm)
        elif el.get("type") == "unavailable":
            unavail.add(frm); n_unavail += 1
    if a.hold:
        time.sleep(a.hold)
    out = {"user": a.user, "port": a.port, "login_s": round(t_login, 3), "roster_items": len(items),
           "roster_both": sum(1 for i in items if i[1] == "both"), "presence_stanzas": stanzas,
           "available_from": len(avail), "unavailable_stanzas": n_unavail, "still_unavailable": len(unavail), "other_stanzas": other,
           "seconds": round(time.monotonic() - t0, 2)}
    print(json.dumps(out))
    sys.stdout.flush()
    c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["dance", "presence"])
    ap.add_argument("users", nargs="*")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--domain", default="bench.local")
    ap.add_argument("--password", default="benchpass")
    ap.add_argument("--user")
    ap.add_argument("--expect", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--hold", type=float, default=0)
    a = ap.parse_intermixed_args()
    if a.cmd == "dance":
        if len(a.users) != 2:
            ap.error("dance needs two users")
        cmd_dance(a)
    else:
        if not a.user:
            ap.error("--user")
        cmd_presence(a)


if __name__ == "__main__":
    main()
