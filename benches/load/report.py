#!/usr/bin/env python3
"""Prints the tables and target checks of benches/load.sh from its results.tsv (and idle.json).

usage: report.py WORK_DIR
Standard library only.
"""
import csv
import json
import os
import sys

work = sys.argv[1]
meta = {}
with open(os.path.join(work, "meta.txt")) as f:
    for line in f:
        k, _, v = line.rstrip("\n").partition("=")
        meta[k] = v

rows = []
with open(os.path.join(work, "results.tsv")) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        for k in ("rps", "p50_us", "p99_us", "cpu_us", "cpu_pct"):
            r[k] = float(r[k])
        for k in ("requests", "non2xx", "errors"):
            r[k] = int(r[k])
        rows.append(r)


def find(kind, tls, server, auth, tokens):
    for r in rows:
        if (r["kind"], r["tls"], r["server"], r["auth"], r["tokens"]) == (kind, tls, server, auth, tokens):
            return r
    return None


def ms(us):
    return f"{us / 1000:.2f}"


def cell(r):
    if r is None:
        return f"{'(not run)':>42}"
    return f"{r['rps']:>8.0f} {ms(r['p50_us']):>6} {ms(r['p99_us']):>6} {r['cpu_us']:>6.1f} {r['cpu_pct']:>4.0f}%"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def bad(r):
    """Marks a run whose answers were not all 2xx: its figures measure errors, not proxying."""
    if r and (r["non2xx"] or r["errors"]):
        return f"  !! {r['non2xx']} non-2xx, {r['errors']} socket errors of {r['requests']}"
    return ""


print()
print(f"jwtgate load benchmark: {meta.get('cpus')} CPUs; {meta.get('pinning')}")
print(f"  {meta.get('versions')}")
print(f"  throughput runs: wrk -t{meta.get('threads')} -c{meta.get('conns')} for {meta.get('duration')} s each "
      f"(after a 1 s warm-up); latency runs: wrk -t1 -c1 for {meta.get('lat_duration')} s; "
      f"unique-token lists: {meta.get('tokens')} tokens per algorithm")
print(f"  jwtgate access log: {meta.get('access_log')}; HAProxy and nginx: no logging")
print("  unique tokens: each wrk thread walks its share of the list in order; jwtgate's unique-token rows run on")
print("  instances with token_cache_entries = 1000 (far below the list), so a token is evicted long before it comes")
print("  round again: every request pays a full verification (hit% ~ 0 shows it)")
print("  columns: rps, p50 and p99 latency (ms), proxy CPU time per request (us/req, from /proc utime+stime),")
print("  proxy CPU use (% of one core; ~100% = the proxy was the bottleneck, less = wrk/backend on CPU 0 was);")
print("  hit% = jwtgate_token_cache_total hits (when the metric exists). Ratios: jwtgate / peer.")

hdr_j = f"{'rps':>8} {'p50':>6} {'p99':>6} {'us/req':>6} {'cpu':>5}"
print()
print("== Throughput ==")
print(f"{'mode':5} {'alg':5} {'tokens':8} | {'jwtgate ' + hdr_j:>42} {'hit%':>5} | {'peer':13} {hdr_j} | {'rps':>6} {'us/req':>6}")
for tls in ("plain", "tls"):
    d = find("tp", tls, "direct", "none", "-")
    if d:
        print(f"{tls:5} {'-':5} {'-':8} | {'(backend direct) ' + cell(d):>48} |{bad(d)}")
    j = find("tp", tls, "jwtgate", "none", "-")
    for peer in ("nginx", "haproxy"):
        p = find("tp", tls, peer, "none", "-")
        print(f"{tls:5} {'none':5} {'-':8} | {cell(j)} {'':>5} | {peer:13} {cell(p)} | "
              f"{ratio(j and j['rps'], p and p['rps']):>6} {ratio(j and j['cpu_us'], p and p['cpu_us']):>6}{bad(j) or bad(p)}")
    for tokens in ("repeated", "unique"):
        for alg in ("HS256", "RS256", "ES256"):
            j = find("tp", tls, "jwtgate", alg, tokens)
            p = find("tp", tls, "haproxy", alg, tokens)
            hit = j["cache_hit"] if j else "-"
            print(f"{tls:5} {alg:5} {tokens:8} | {cell(j)} {hit:>5} | {'haproxy-jwt':13} {cell(p)} | "
                  f"{ratio(j and j['rps'], p and p['rps']):>6} {ratio(j and j['cpu_us'], p and p['cpu_us']):>6}{bad(j) or bad(p)}")

print()
print("== Latency, one connection (wrk -t1 -c1); jwtgate rows use unique tokens ==")
print(f"{'mode':5} {'server':12} {'alg':5} {'rps':>7} {'p50 us':>7} {'p99 us':>7} {'+p99 over direct':>17} {'us/req':>7}")
for tls in ("plain", "tls"):
    d = find("lat", tls, "direct", "none", "-")
    for server, alg, tokens in (
        ("direct", "none", "-"),
        ("nginx", "none", "-"),
        ("haproxy", "none", "-"),
        ("jwtgate", "none", "-"),
        ("haproxy", "HS256", "unique"), ("jwtgate", "HS256", "unique"),
        ("haproxy", "RS256", "unique"), ("jwtgate", "RS256", "unique"),
        ("haproxy", "ES256", "unique"), ("jwtgate", "ES256", "unique"),
    ):
        r = find("lat", tls, server, alg, tokens)
        if not r:
            continue
        added = f"{r['p99_us'] - d['p99_us']:+.0f}" if d and server != "direct" else "-"
        print(f"{tls:5} {server:12} {alg:5} {r['rps']:>7.0f} {r['p50_us']:>7.0f} {r['p99_us']:>7.0f} {added:>17} {r['cpu_us']:>7.1f}{bad(r)}")

idle = None
idle_path = os.path.join(work, "idle.json")
if os.path.exists(idle_path):
    with open(idle_path) as f:
        idle = {}
        for line in f:
            name, _, doc = line.partition(" ")
            idle[name] = json.loads(doc)
    print()
    print("== Idle keep-alive connections (one request each, then idle) ==")
    print(f"{'server':10} {'opened':>7} {'still open':>10} {'RSS before':>11} {'RSS idle':>10}")
    for name, r in idle.items():
        print(f"{name:10} {r['opened']:>7} {r['still_open']:>10} {r['rss_before_kib'] / 1024:>8.1f} MiB {r['rss_idle_kib'] / 1024:>6.1f} MiB"
              + (f"  ({r['failures']} failed: {r['first_failure']})" if r["failures"] else ""))

print()
print("== Targets (issue 6) ==")
results = []


def target(ok, text):
    results.append(ok)
    print(f"[{'PASS' if ok else 'FAIL' if ok is False else 'n/a '}] {text}")


for tls in ("plain", "tls"):
    base = find("tp", tls, "haproxy", "none", "-")
    for alg in ("RS256", "ES256"):
        j = find("tp", tls, "jwtgate", alg, "repeated")
        if j and base:
            target(j["cpu_us"] <= base["cpu_us"] and not bad(j),
                   f"repeated tokens, {tls}, {alg}: jwtgate {j['cpu_us']:.1f} us/req <= HAProxy no-auth proxy {base['cpu_us']:.1f} us/req")
for tls in ("plain", "tls"):
    for alg in ("HS256", "RS256", "ES256"):
        j = find("tp", tls, "jwtgate", alg, "unique")
        p = find("tp", tls, "haproxy", alg, "unique")
        if j and p:
            r = j["rps"] / p["rps"]
            note = ""
            if j["cpu_pct"] < 90:
                note = (f" (jwtgate used {j['cpu_pct']:.0f}% of its core: the client side was the bottleneck; "
                        f"per-core capacity ratio {p['cpu_us'] / j['cpu_us']:.2f}x)")
            if j["cache_hit"] not in ("-", "0"):
                note += f" (cache hits {j['cache_hit']}%: not every token was new to jwtgate)"
            target(r >= 1.5 and not bad(j),
                   f"unique tokens, {tls}, {alg}: jwtgate {j['rps']:.0f} rps = {r:.2f}x HAProxy jwt_verify {p['rps']:.0f} rps (>= 1.5x){note}")
for tls in ("plain", "tls"):
    d = find("lat", tls, "direct", "none", "-")
    n = find("lat", tls, "nginx", "none", "-")
    if not (d and n):
        continue
    n_add = n["p99_us"] - d["p99_us"]
    for alg in ("none", "HS256", "RS256", "ES256"):
        j = find("lat", tls, "jwtgate", alg, "-" if alg == "none" else "unique")
        if j:
            j_add = j["p99_us"] - d["p99_us"]
            target(j_add <= n_add and not bad(j),
                   f"added p99, {tls}, {alg}: jwtgate +{j_add:.0f} us over direct <= nginx plain proxy +{n_add:.0f} us")
if idle and "jwtgate" in idle:
    r = idle["jwtgate"]
    mib = r["rss_idle_kib"] / 1024
    target(mib < 64 and r["still_open"] >= r["requested"],
           f"RSS with {r['still_open']} idle keep-alive connections: jwtgate {mib:.1f} MiB < 64 MiB")
else:
    target(None, "RSS with 10,000 idle keep-alive connections: not measured")
print()
print(f"{sum(1 for x in results if x)} of {len(results)} targets met. Raw figures: {os.path.join(work, 'results.tsv')}")
