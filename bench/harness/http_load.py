#!/usr/bin/env python3
"""Closed-loop HTTP POST loader: sends a data file as batches over keep-alive connections.

The bodies are built before the clock starts. Each of --connections worker processes sends
every Nth batch in file order and waits for each answer before sending the next (what a
device gateway does). Prints one JSON object: requests, lines, wall seconds, latency
percentiles of the acknowledgements, and the status counts.
"""
import argparse
import http.client
import json
import multiprocessing as mp
import sys
import time


def build_bodies(path, fmt, batch):
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    bodies = []
    for i in range(0, len(lines), batch):
        chunk = lines[i:i + batch]
        if fmt == "json-array":
            bodies.append(b"[" + b",".join(chunk) + b"]")
        else:
            bodies.append(b"\n".join(chunk) + b"\n")
    return bodies, len(lines)


def worker(k, n, host, port, path, ctype, bodies, barrier, q):
    conn = http.client.HTTPConnection(host, port, timeout=120)
    lat = []
    status = {}
    barrier.wait()
    for i in range(k, len(bodies), n):
        body = bodies[i]
        while True:
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": ctype})
            r = conn.getresponse()
            r.read()
            t1 = time.perf_counter()
            status[r.status] = status.get(r.status, 0) + 1
            if r.status in (429, 503):  # backpressure: retry the same batch
                time.sleep(0.01)
                continue
            break
        lat.append(t1 - t0)
    q.put((lat, status, time.perf_counter()))


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, int(round(p / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url-host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--format", choices=["json-array", "lines"], default="lines")
    ap.add_argument("--content-type", default="text/plain")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=4)
    args = ap.parse_args()
    bodies, nlines = build_bodies(args.file, args.format, args.batch)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.connections + 1)
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(k, args.connections, args.url_host, args.port,
                                               args.path, args.content_type, bodies, barrier, q))
             for k in range(args.connections)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    lat, status, t_end = [], {}, t0
    for _ in procs:
        l, s, te = q.get()
        lat += l
        for k, v in s.items():
            status[str(k)] = status.get(str(k), 0) + v
        t_end = max(t_end, te)
    for p in procs:
        p.join()
    lat.sort()
    json.dump({"requests": len(bodies), "lines": nlines, "wall_s": t_end - t0,
               "ack_p50_ms": pct(lat, 50) * 1e3, "ack_p99_ms": pct(lat, 99) * 1e3,
               "status": status}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
