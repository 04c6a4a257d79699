#!/usr/bin/env python3
"""Opens N keep-alive connections to a proxy, sends one request on each, leaves them idle,
then reports the proxy's resident memory (VmRSS, summed over the given PIDs) as one JSON line.

Used by benches/load.sh for the "RSS with 10,000 idle keep-alive connections" target.
Standard library only.
"""
import argparse
import asyncio
import json
import resource
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


async def open_one(host, port, path, sem, conns, failures):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(reader.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            conns.append((reader, writer))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            failures.append(type(e).__name__)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--path", default="/open/idle")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--pids", required=True, help="comma-separated PIDs whose VmRSS is summed")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds idle before measuring")
    ap.add_argument("--concurrency", type=int, default=64,
                    help="connections being opened (and requests in flight) at once")
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.count + 1024)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    before = rss_kib(pids)
    conns, failures = [], []
    sem = asyncio.Semaphore(args.concurrency)
    start = time.monotonic()
    await asyncio.gather(
        *(open_one(args.host, args.port, args.path, sem, conns, failures) for _ in range(args.count))
    )
    opened = time.monotonic() - start
    await asyncio.sleep(args.settle)
    still_open = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    after = rss_kib(pids)
    print(json.dumps({
        "requested": args.count,
        "opened": len(conns),
        "still_open": still_open,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "rss_before_kib": before,
        "rss_idle_kib": after,
        "open_seconds": round(opened, 2),
        "concurrency": args.concurrency,
    }))
    for _, w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
