#!/usr/bin/env python3
"""The archiver thread's CPU per event, binaries A/B interleaved (src/store/archive/README.md).

Each run: a fresh `joule serve` as the harness starts it (bench.py's Joule: fsync, auth off),
the data set's events.ndjson sent by http_load.py (JSON-array batches), then waits until the
archiver has written every event and the processors are caught up. Reports the CPU
(utime + stime) of the `joule-archiver` thread and of the whole server over that span, and
the archive's published bytes per event after the shutdown's seal. Binaries run in turn
(A, B, A, B, ...) so that the shared machine's drift hits both alike; the medians are
printed at the end as one JSON object.

  bench/harness/archiver_ab.py --data /var/tmp/joule-bench-data-full --runs 4 \\
      before=/path/to/old/joule after=build/ci/src/app/joule
"""
import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import bench


def thread_ticks(pid, comm):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            if open(f"/proc/{pid}/task/{t}/comm").read().strip() != comm:
                continue
            s = open(f"/proc/{pid}/task/{t}/stat").read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        total += int(rest[11]) + int(rest[12])
    return total


def archive_bytes(data_dir):
    size = 0
    for root, _, files in os.walk(os.path.join(data_dir, "archive")):
        if ".staging" in root:
            continue
        size += sum(os.path.getsize(os.path.join(root, f)) for f in files
                    if f.endswith(".ndjson.zst"))
    return size


def one_run(ctx, binary):
    ctx.joule = binary
    # joule_archive_events_total counts events when their round's files are published
    # (since session 31; before, when they were read): a 1 s max_file_age publishes the
    # last round right after the load instead of 5 minutes later.
    j = bench.Joule(ctx, "fsync", extra_env={"JOULE_ARCHIVE_MAX_FILE_AGE": "1s"})
    try:
        events = ctx.meta["events"]
        a0, s0 = thread_ticks(j.proc.pid, "joule-archiver"), j.cpu()
        load1 = os.getloadavg()[0]
        bench.run_loader(["--port", str(j.port), "--path", "/v1/telemetry",
                          "--file", ctx.f("events.ndjson"), "--format", "json-array",
                          "--content-type", "application/json", "--batch", str(ctx.batch),
                          "--connections", str(ctx.connections)])
        deadline = time.time() + 600
        while time.time() < deadline:
            m = bench.prom(j.port)
            if (m.get("joule_archive_events_total", 0) >= events
                    and m.get("joule_processor_lag_records", 1) == 0):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the archiver did not catch up")
        a1, s1 = thread_ticks(j.proc.pid, "joule-archiver"), j.cpu()
    finally:
        j.close()
    size = archive_bytes(j.dir)
    shutil.rmtree(j.dir, ignore_errors=True)
    arch = (a1 - a0) / bench.CLK_TCK
    return {"archiver_cpu_s": round(arch, 2),
            "archiver_us_per_event": round(arch / events * 1e6, 3),
            "server_cpu_s": round(s1 - s0, 2), "bytes_per_event": round(size / events, 2),
            "load1": round(load1, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("binaries", nargs="+", help="NAME=PATH of each joule binary")
    a = ap.parse_args()
    ctx = bench.Ctx()
    ctx.batch, ctx.connections = a.batch, a.connections
    ctx.tmp = tempfile.mkdtemp(prefix="joule-archiver-ab-", dir="/var/tmp")
    ctx.f = lambda n: os.path.join(a.data, n)
    ctx.meta = json.load(open(ctx.f("meta.json")))
    named = [b.split("=", 1) for b in a.binaries]
    runs = {name: [] for name, _ in named}
    try:
        for _ in range(a.runs):
            for name, path in named:
                r = one_run(ctx, os.path.abspath(path))
                runs[name].append(r)
                print(json.dumps({"binary": name, **r}), flush=True)
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(json.dumps({name: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
                      for name, rs in runs.items()}))


if __name__ == "__main__":
    main()
