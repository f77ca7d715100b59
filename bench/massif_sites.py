#!/usr/bin/env python3
"""Heap bytes per connection by what holds them, from a valgrind massif profile:
the peak snapshot minus a baseline snapshot (one taken before the connections),
divided by N. Each leaf of the allocation tree is labelled by the first pattern
below that matches its stack (ms_print's tree is too deep to read here).

  massif_sites.py massif.out[.gz] N [BASELINE_SNAPSHOT]
"""
import gzip, re, sys
path, n = sys.argv[1], int(sys.argv[2])
base_idx = int(sys.argv[3]) if len(sys.argv) > 3 else None
lines = (gzip.open(path, "rt") if path.endswith(".gz") else open(path)).read().split("\n")
snaps = []
i = 0
while i < len(lines):
    if lines[i].startswith("snapshot="):
        snap = {"idx": int(lines[i].split("=")[1])}
        i += 1
        while i < len(lines) and not lines[i].startswith("snapshot="):
            l = lines[i]
            if l.startswith("mem_heap_B="): snap["heap"] = int(l.split("=")[1])
            if l.startswith("heap_tree=") and l.split("=")[1] in ("detailed", "peak"):
                snap["kind"] = l.split("=")[1]
                # parse tree
                leaves = []
                stack = []
                i += 1
                while i < len(lines) and lines[i].strip().startswith("n"):
                    l = lines[i]
                    depth = (len(l) - len(l.lstrip())) 
                    m = re.match(r"\s*n(\d+): (\d+) (.*)", l)
                    kids, b, fn = int(m.group(1)), int(m.group(2)), m.group(3)
                    stack = stack[:depth]
                    stack.append(fn)
                    if kids == 0:
                        leaves.append((b, list(stack)))
                    i += 1
                snap["leaves"] = leaves
                continue
            i += 1
        snaps.append(snap)
        continue
    i += 1
LABELS = [
    ("sqlite", r"sqlite3"),
    ("rustls deframer buffer", r"deframer|DeframerVecBuffer|read_tls"),
    ("rustls record keys (ring)", r"ring::|aead|Tls13MessageDecrypter|Tls13MessageEncrypter|key_schedule|KeySchedule"),
    ("TlsStream box (Transport::Tls)", r"Transport::Tls|TlsStream|tokio_rustls::server::TlsStream|starttls"),
    ("rustls other", r"rustls"),
    ("task cell (spawned connection future)", r"task::core::Cell|RawTask::new|task::raw|spawn_inner|JoinSet.*spawn"),
    ("session queue (mpsc)", r"mpsc|sync::mpsc|chan::channel|list::Tx|block::Block"),
    ("rxml parser", r"rxml"),
    ("stream parser / events", r"starling_xmlstream|StreamParser"),
    ("router / session table", r"router|dashmap|DashMap"),
    ("tokio io registration", r"scheduled_io|ScheduledIo|registration|slab|Registration"),
    ("write buffer", r"write_element|TcpFraming.*flush|open_stream|stream_header|Sink.*queue"),
    ("minidom elements", r"minidom"),
]
def label(stack):
    s = " ".join(stack[1:])
    for name, pat in LABELS:
        if re.search(pat, s):
            return name
    # first starling/tokio frame
    for f in stack[1:]:
        m = re.search(r"(starling_\w+::[\w:<>]+|tokio::[\w:]+|std::[\w:]+|alloc::[\w:]+)", f)
        if m: return "other: " + m.group(1)[:80]
    return "other: " + stack[1][:80] if len(stack) > 1 else "?"
def agg(snap):
    d = {}
    for b, st in snap.get("leaves", []):
        k = label(st)
        d[k] = d.get(k, 0) + b
    return d
det = [s for s in snaps if "leaves" in s]
peak = max(det, key=lambda s: s["heap"])
base = next(s for s in det if s["idx"] == base_idx) if base_idx is not None else None
pa = agg(peak); ba = agg(base) if base else {}
print(f"peak snapshot {peak['idx']} heap {peak['heap']} B; baseline {base['idx'] if base else '-'} heap {base['heap'] if base else 0} B; per conn {(peak['heap'] - (base['heap'] if base else 0))/n:.0f} B")
rows = sorted(((pa.get(k,0)-ba.get(k,0))/n, k) for k in set(pa)|set(ba))
for v, k in reversed(rows):
    if abs(v) >= 20: print(f"{v:8.0f} B  {k}")
