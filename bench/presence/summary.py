#!/usr/bin/env python3
"""Medians per (server label, phase) of the presence benchmark lines (run.sh output), with
the extra fields run.sh adds. Usage: summary.py results.jsonl [...]"""
import json, statistics, sys
from collections import defaultdict

COLS = [("logins_per_s", "logins/s"), ("server_cpu_ms_per_login", "CPU ms/login"),
        ("login_latency_ms.p50", "p50 ms"), ("login_latency_ms.p99", "p99 ms"),
        ("server_cpu_ms_per_logout", "CPU ms/logout (2 s)"),
        ("server_cpu_ms_per_logout_incl_drain", "CPU ms/logout incl. drain"),
        ("drain_s", "drain s"), ("lo_bytes_per_login", "lo bytes/login"),
        ("other_cores_approx", "other cores"), ("logins_failed", "failed")]


def get(d, path):
    for p in path.split("."):
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


rows = defaultdict(list)
for fn in sys.argv[1:]:
    for line in open(fn):
        if line.startswith("{"):
            r = json.loads(line)
            rows[(r.get("phase"), r["server"])].append(r)
for phase in ("login", "login_tls", "login_plain"):
    keys = sorted(k for k in rows if k[0] == phase)
    if not keys:
        continue
    print(f"\n### {phase}\n")
    print("| server | runs | " + " | ".join(c[1] for c in COLS) + " |")
    print("|---|---|" + "---|" * len(COLS))
    for k in keys:
        cells = []
        for path, _ in COLS:
            vals = [v for v in (get(r, path) for r in rows[k]) if isinstance(v, (int, float))]
            if not vals:
                cells.append("-")
                continue
            med = statistics.median(vals)
            spread = f" ({min(vals):g}–{max(vals):g})" if len(vals) > 1 and min(vals) != max(vals) else ""
            cells.append(f"{med:.4g}{spread}")
        print(f"| {k[1]} | {len(rows[k])} | " + " | ".join(cells) + " |")
