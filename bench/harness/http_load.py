#!/usr/bin/env python3
"""Closed-loop HTTP POST loader: sends a data file as batches over keep-alive connections.

The bodies are built before the clock starts. Each of --connections worker processes sends
its batches in file order and waits for each answer before sending the next (what a device
gateway does). With --affinity device (the default) each device's lines go over one
connection (a hash of its device_id picks it), so every device's events arrive in the order
the file has them, as from a device or a gateway that sends its queue in order; each
connection's lines are batched on their own. With --affinity none the file is cut into
batches and connection k sends every Nth batch, so one device's consecutive batches travel
over different connections and arrive out of order whenever the connections drift apart. Prints one JSON object: requests, lines, wall seconds, latency
percentiles of the acknowledgements, and the status counts.
"""
import argparse
import http.client
import json
import multiprocessing as mp
import re
import sys
import time
import zlib

# The device of a line: NDJSON's "device_id" member, or Influx line protocol's device_id tag.
DEVICE = re.compile(rb'"device_id"\s*:\s*"([^"]*)"|[,]device_id=([^, ]*)')


def make_body(chunk, fmt):
    if fmt == "json-array":
        return b"[" + b",".join(chunk) + b"]"
    return b"\n".join(chunk) + b"\n"


def build_bodies(path, fmt, batch, connections, affinity):
    """Returns one list of bodies per connection, and the number of lines."""
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    per_conn = [[] for _ in range(connections)]
    if affinity == "none":
        for j, i in enumerate(range(0, len(lines), batch)):
            per_conn[j % connections].append(make_body(lines[i:i + batch], fmt))
        return per_conn, len(lines)
    groups = [[] for _ in range(connections)]
    for line in lines:
        m = DEVICE.search(line)
        if m is None:
            raise SystemExit(f"no device_id in line: {line[:80]!r}")
        groups[zlib.crc32(m.group(1) or m.group(2)) % connections].append(line)
    for k, g in enumerate(groups):
        for i in range(0, len(g), batch):
            per_conn[k].append(make_body(g[i:i + batch], fmt))
    return per_conn, len(lines)


def worker(host, port, path, ctype, bodies, barrier, q):
    conn = http.client.HTTPConnection(host, port, timeout=120)
    lat = []
    status = {}
    barrier.wait()
    for body in bodies:
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
    ap.add_argument("--affinity", choices=["device", "none"], default="device")
    args = ap.parse_args()
    per_conn, nlines = build_bodies(args.file, args.format, args.batch, args.connections,
                                    args.affinity)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.connections + 1)
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args.url_host, args.port, args.path,
                                               args.content_type, per_conn[k], barrier, q))
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
    json.dump({"requests": sum(len(b) for b in per_conn), "lines": nlines,
               "affinity": args.affinity, "wall_s": t_end - t0,
               "ack_p50_ms": pct(lat, 50) * 1e3, "ack_p99_ms": pct(lat, 99) * 1e3,
               "status": status}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
