#!/usr/bin/env python3
"""The soak run of benches/soak.sh (read its header): load, key rotation, config rewrites,
SIGHUPs, an upstream restart and (where supported) a Redis restart, all on 127.0.0.1, with a
report per 10 s window. Every process started here is stopped by its PID on exit."""

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

WINDOW_S = 10
CONNECTIONS = 8
UNIQUE_SHARE = 0.3  # of requests; the rest reuse the current key's repeated token
ISS = "https://soak.jwtgate.test/"
AUD = "soak"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


class Keys:
    """The JWKS provider's keys: `next` is published a second before it signs, old keys stay
    published for three rotations, so every token signed here stays verifiable."""

    def __init__(self):
        self.serial = 0
        self.published = []  # newest last: [..., current, next]
        for _ in range(2):
            self._add()
        self.repeated = self._mint(self.current())

    def _add(self):
        self.serial += 1
        key = ec.generate_private_key(ec.SECP256R1())
        self.published.append((f"soak-{self.serial}", key))
        self.published = self.published[-5:]

    def current(self):
        return self.published[-2]

    def rotate(self):
        self._add()
        self.repeated = self._mint(self.current())

    def _mint(self, kid_key) -> str:
        kid, key = kid_key
        now = int(time.time())
        header = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": kid}).encode())
        claims = {"iss": ISS, "aud": AUD, "sub": "soak", "iat": now, "exp": now + 600,
                  "jti": uuid.uuid4().hex}
        payload = b64(json.dumps(claims).encode())
        signing_input = f"{header}.{payload}".encode()
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return f"{header}.{payload}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def unique(self) -> str:
        return self._mint(self.current())

    def jwks(self) -> bytes:
        keys = []
        for kid, key in self.published:
            n = key.public_key().public_numbers()
            keys.append({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                         "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))})
        return json.dumps({"keys": keys}).encode()


async def jwks_server(keys: Keys, port: int):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                body = keys.jwks()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the gateway closed it, or the run is over
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def gateway_config(a, n: int) -> str:
    # Rewrite n adds or removes a second route; the issuer never changes (its keys are kept).
    extra = ""
    if n % 2 == 1:
        extra = (f'\n[[route]]\nname = "extra"\npath_prefix = "/extra{n}"\n'
                 f'upstream = "http://127.0.0.1:{a.backend}"\nauth = "none"\n')
    redis = f'\n[redis]\nurl = "redis://127.0.0.1:{a.redis}"\n' if a.redis else ""
    return f"""# benches/soak.sh, rewrite {n}
[listen]
addr = "127.0.0.1:{a.port}"

[admin]
addr = "127.0.0.1:{a.admin}"
{redis}
[[issuer]]
name = "soak"
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
jwks_url = "http://127.0.0.1:{a.jwks}/jwks.json"
refresh = "1m"

[[route]]
name = "api"
path_prefix = "/"
upstream = "http://127.0.0.1:{a.backend}"
auth = "required"
forward_token = false

[route.claim_headers]
"X-Auth-Sub" = "sub"
{extra}"""


def write_atomic(path: str, text: str):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Procs:
    """Every process started here, stopped by PID."""

    def __init__(self):
        self.procs = {}

    def start(self, name, cmd, work, **kw):
        out = open(os.path.join(work, f"{name}.log"), "ab")
        p = subprocess.Popen(cmd, stdout=kw.pop("stdout", out), stderr=out, **kw)
        self.procs[name] = p
        return p

    def stop(self, name, sig=signal.SIGTERM, timeout=10):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)


def nginx_conf(work: str, port: int) -> str:
    path = os.path.join(work, "nginx.conf")
    os.makedirs(os.path.join(work, "nginx-tmp"), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx.error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
""")
    return path


async def wait_ready(admin: int, limit_s: float = 15.0):
    """Until `/readyz` answers 200 (the issuer's keys are loaded)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", admin)
            w.write(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            line = await r.readline()
            w.close()
            if b" 200 " in line:
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"jwtgate was not ready after {limit_s} s")


def redis_cmd(a, work):
    return ["redis-server", "--port", str(a.redis), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", work]


async def wait_port(port: int, limit_s: float = 15.0):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {limit_s} s")


class Stats:
    def __init__(self, t0, duration_s):
        self.t0 = t0
        self.last = max(int(duration_s // WINDOW_S) - 1, 0)
        self.windows = {}  # index -> {"lat": [...], "ok": n, "failed": n, "gap": n}
        self.samples = []  # (t, rss_kib, fds)
        self.gaps = []  # (start, end) of the upstream restart
        self.failures = []  # first few failures, for the report

    def window(self, t):
        # The last few answers after the end count in the last whole window.
        i = min(int((t - self.t0) // WINDOW_S), self.last)
        return self.windows.setdefault(i,
                                       {"lat": [], "ok": 0, "failed": 0, "gap": 0})

    def record(self, t, latency_s, status):
        w = self.window(t)
        if status == 200:
            w["ok"] += 1
            w["lat"].append(latency_s)
        elif status == 502 and any(a <= t <= b for a, b in self.gaps):
            w["gap"] += 1
        else:
            w["failed"] += 1
            if len(self.failures) < 20:
                self.failures.append(f"{t - self.t0:.1f}s: {status}")


async def client(a, keys: Keys, stats: Stats, stop_at: float, per_conn_rate: float, seed: int):
    import random
    rnd = random.Random(seed)
    interval = 1.0 / per_conn_rate
    reader = writer = None
    next_at = time.monotonic()
    while time.monotonic() < stop_at:
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        token = keys.unique() if rnd.random() < UNIQUE_SHARE else keys.repeated
        req = (f"GET /api/soak HTTP/1.1\r\nHost: soak.test\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
        start = time.monotonic()
        status = 0
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
            writer.write(req)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if length:
                await reader.readexactly(length)
            if any(line.lower() == "connection: close" for line in lines):
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                IndexError):
            status = -1  # no answer: the connection failed
            if writer is not None:
                writer.close()
            writer = None
        end = time.monotonic()
        stats.record(end, end - start, status)
    if writer is not None:
        writer.close()


def proc_sample(pid: int):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def metrics_text(admin: int) -> str:
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode("utf-8", "replace").split("\r\n\r\n", 1)[-1]


def metric_sum(text: str, name: str, must_contain: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and must_contain in line:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def png(work):
    """The windows as one PNG with gnuplot (benches/soak/soak.gp); says where, or why not."""
    out = os.path.join(work, "soak.png")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak.gp")
    tsv = os.path.join(work, "windows.tsv")
    try:
        subprocess.run(["gnuplot", "-e", f"tsv='{tsv}'; png='{out}'", script], check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"soak.png not drawn ({e}): install gnuplot-nox"
    return f"plot: {out}"


def svg(rows, path):
    """p50/p99 (ms), RSS (MiB) and open fds per window, as three small line charts."""
    width, height, pad = 720, 170, 40
    charts = [("p50 / p99 latency (ms)", ["p50", "p99"], ["#1f77b4", "#d62728"]),
              ("RSS (MiB)", ["rss_mib"], ["#2ca02c"]),
              ("open file descriptors", ["fds"], ["#9467bd"])]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height * len(charts)}" font-family="sans-serif" font-size="11">',
           f'<rect width="100%" height="100%" fill="white"/>']
    n = max(len(rows), 2)
    for ci, (title, keys, colours) in enumerate(charts):
        top = ci * height
        vals = [r[k] for r in rows for k in keys if r[k] == r[k]]
        vmax = max(vals + [1e-9]) * 1.15
        out.append(f'<text x="{pad}" y="{top + 14}">{title} per {WINDOW_S} s window '
                   f'(max {max(vals + [0]):.3g})</text>')
        out.append(f'<line x1="{pad}" y1="{top + height - 20}" x2="{width - 10}" '
                   f'y2="{top + height - 20}" stroke="#888"/>')
        for k, colour in zip(keys, colours):
            pts = []
            for i, r in enumerate(rows):
                if r[k] != r[k]:
                    continue
                x = pad + i * (width - pad - 10) / (n - 1)
                y = top + height - 20 - (r[k] / vmax) * (height - 45)
                pts.append(f"{x:.1f},{y:.1f}")
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                       f'points="{" ".join(pts)}"/>')
        out.append(f'<text x="{width - 200}" y="{top + 14}">'
                   + " ".join(f'<tspan fill="{c}">{k}</tspan>' for k, c in zip(keys, colours))
                   + "</text>")
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--rate", type=float, default=400)
    a = p.parse_args()
    a.port, a.admin, a.jwks, a.backend = (free_port() for _ in range(4))
    a.redis = None
    duration = a.minutes * 60
    procs = Procs()
    work = os.path.abspath(a.work)
    cfg_path = os.path.join(work, "gateway.toml")
    keys = Keys()
    jwks = await jwks_server(keys, a.jwks)
    try:
        nginx = nginx_conf(work, a.backend)
        procs.start("nginx", ["nginx", "-p", work, "-c", nginx], work)
        await wait_port(a.backend)

        # Redis only when this build knows `[redis]` and redis-server is installed.
        redis_note = "skipped: redis-server is not installed"
        if subprocess.run(["sh", "-c", "command -v redis-server"],
                          capture_output=True).returncode == 0:
            a.redis = free_port()
            procs.start("redis", redis_cmd(a, work), work)
            await wait_port(a.redis)
            write_atomic(cfg_path, gateway_config(a, 0))
            check = await asyncio.create_subprocess_exec(
                a.binary, "--config", cfg_path, "check", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
            out = (await check.communicate())[0].decode("utf-8", "replace")
            if check.returncode != 0 and "redis" in out.lower():
                procs.stop("redis")
                a.redis = None
                redis_note = "skipped: this build has no [redis] section"
            else:
                redis_note = "restarted once at 60%"
        write_atomic(cfg_path, gateway_config(a, 0))
        env = dict(os.environ, JWTGATE_LOG_FORMAT="json")
        gw = procs.start("jwtgate", [a.binary, "--config", cfg_path, "run"], work,
                         stdout=subprocess.DEVNULL, env=env)
        await wait_port(a.port)
        await wait_port(a.admin)
        await wait_ready(a.admin)
        log(f"jwtgate pid {gw.pid} on 127.0.0.1:{a.port}; {a.minutes:g} min at about "
            f"{a.rate:g} requests/s; redis {redis_note}")

        t0 = time.monotonic()
        stats = Stats(t0, duration)
        stop_at = t0 + duration
        clients = [asyncio.create_task(client(a, keys, stats, stop_at,
                                              a.rate / CONNECTIONS, i))
                   for i in range(CONNECTIONS)]
        events = {"rotations": 0, "rewrites": 0, "sighups": 0}
        upstream_done = redis_done = False
        next_rotate, next_rewrite, next_hup = t0 + 1, t0 + 5, t0 + 7
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if now >= next_rotate:
                keys.rotate()
                events["rotations"] += 1
                next_rotate += 1
                stats.samples.append((now, *proc_sample(gw.pid)))
            if now >= next_rewrite:
                events["rewrites"] += 1
                write_atomic(cfg_path, gateway_config(a, events["rewrites"]))
                next_rewrite += 5
            if now >= next_hup:
                gw.send_signal(signal.SIGHUP)
                events["sighups"] += 1
                next_hup += 7
            if not upstream_done and now >= t0 + 0.4 * duration:
                upstream_done = True
                gap_start = time.monotonic()
                stats.gaps.append((gap_start, float("inf")))
                procs.stop("nginx", signal.SIGQUIT)
                procs.start("nginx", ["nginx", "-p", work, "-c", nginx], work)
                await wait_port(a.backend)
                # Answers still on their way when it is back are in the gap too.
                stats.gaps[-1] = (gap_start, time.monotonic() + 0.5)
                log(f"upstream restarted ({(time.monotonic() - gap_start) * 1e3:.0f} ms down)")
            if a.redis and not redis_done and now >= t0 + 0.6 * duration:
                redis_done = True
                procs.stop("redis")
                procs.start("redis", redis_cmd(a, work), work)
                await wait_port(a.redis)
                log("redis restarted")
        await asyncio.gather(*clients)
        if gw.poll() is not None:
            raise RuntimeError(f"jwtgate exited with {gw.returncode} during the run")
        metrics = metrics_text(a.admin)
    finally:
        jwks.close()
        procs.stop_all()

    # --- report -----------------------------------------------------------------------------
    rows = []
    for i in sorted(stats.windows):
        w = stats.windows[i]
        lo, hi = t0 + i * WINDOW_S, t0 + (i + 1) * WINDOW_S
        samples = [s for s in stats.samples if lo <= s[0] < hi] or [(0, float("nan"), float("nan"))]
        rows.append({"window": i, "start_s": i * WINDOW_S, "ok": w["ok"], "failed": w["failed"],
                     "gap": w["gap"], "p50": percentile(w["lat"], 0.5) * 1e3,
                     "p99": percentile(w["lat"], 0.99) * 1e3,
                     "rss_mib": max(s[1] for s in samples) / 1024,
                     "fds": max(s[2] for s in samples)})
    with open(os.path.join(work, "windows.tsv"), "w") as f:
        f.write("start_s\tok\tfailed\tduring_upstream_restart\tp50_ms\tp99_ms\trss_mib\tfds\n")
        for r in rows:
            f.write(f"{r['start_s']}\t{r['ok']}\t{r['failed']}\t{r['gap']}\t{r['p50']:.2f}\t"
                    f"{r['p99']:.2f}\t{r['rss_mib']:.1f}\t{r['fds']}\n")
    svg(rows, os.path.join(work, "soak.svg"))
    png_note = png(work)

    failed = sum(r["failed"] for r in rows)
    gap = sum(r["gap"] for r in rows)
    ok = sum(r["ok"] for r in rows)
    problems = []
    if failed:
        problems.append(f"{failed} valid requests failed: {', '.join(stats.failures)}")
    full = [r for r in rows if r["rss_mib"] == r["rss_mib"]]
    if len(full) >= 3:
        base, last = full[1], full[-1]
        if last["rss_mib"] > max(1.5 * base["rss_mib"], base["rss_mib"] + 32):
            problems.append(f"RSS grew from {base['rss_mib']:.1f} to {last['rss_mib']:.1f} MiB")
        if last["fds"] > max(1.5 * base["fds"], base["fds"] + 64):
            problems.append(f"open fds grew from {base['fds']} to {last['fds']}")
    reload_ok = metric_sum(metrics, "jwtgate_config_reloads_total", 'result="success"')
    reload_bad = metric_sum(metrics, "jwtgate_config_reloads_total", 'result="failure"')
    refresh_ok = metric_sum(metrics, "jwtgate_key_refresh_total", 'result="success"')
    lines = [
        f"soak: {a.minutes:g} min, {ok + failed + gap} requests ({ok} ok), "
        f"{CONNECTIONS} connections, {UNIQUE_SHARE:.0%} unique tokens, the rest repeated",
        f"events: {events['rotations']} key rotations, {events['rewrites']} config rewrites, "
        f"{events['sighups']} SIGHUPs, 1 upstream restart, redis {redis_note}",
        f"gateway: {reload_ok:.0f} reloads ok, {reload_bad:.0f} failed; "
        f"{refresh_ok:.0f} JWKS fetches ok",
        f"failed valid requests: {failed}; 502 while the upstream was down: {gap}",
        png_note,
        "",
        "window_s   ok  failed  gap   p50_ms   p99_ms  rss_MiB  fds",
    ]
    for r in rows:
        lines.append(f"{r['start_s']:>8} {r['ok']:>5} {r['failed']:>6} {r['gap']:>4} "
                     f"{r['p50']:>8.2f} {r['p99']:>8.2f} {r['rss_mib']:>8.1f} {r['fds']:>4}")
    lines.append("")
    lines.append("result: " + ("FAIL: " + "; ".join(problems) if problems else "pass"))
    report = "\n".join(lines)
    with open(os.path.join(work, "report.txt"), "w") as f:
        f.write(report + "\n")
    print(report)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
