#!/usr/bin/env python3
"""Side-by-side comparison of Joule with its peers on one machine and one data set.

Run through bench/run.sh (which installs the peers and builds the binaries). Every
comparison starts each server fresh on free loopback ports with a temporary data dir,
measures the server's CPU time (utime + stime of its process tree, from /proc) and the
wall time of the load, repeats --runs times and keeps the median. The load generators run
on the same cores, so rates per server CPU-second are the fair number; wall rates are
reported next to them. Writes one JSON document (see bench/README.md for its fields).
"""
import argparse
import datetime
import glob
import http.client
import json
import mmap
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOG = sys.stderr


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=LOG, flush=True)


# ---------------------------------------------------------------- process accounting

def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    # fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return int(rest[1]), int(rest[11]), int(rest[12]), int(rest[13]), int(rest[14])


def tree_cpu_s(root, reaped_by_all=False):
    """utime+stime of root and all live descendants, plus root's reaped children (with
    reaped_by_all, the reaped children of every process of the tree: PostgreSQL's
    postmaster reaps the backend of a closed connection, and runuser, the root, does not
    see it)."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents[int(d)] = _stat(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total = 0
    todo = [root]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen or p not in parents:
            continue
        seen.add(p)
        _, ut, st, cut, cst = parents[p]
        total += ut + st + (cut + cst if p == root or reaped_by_all else 0)
        todo += [c for c, v in parents.items() if v[0] == p]
    return total / CLK_TCK


def tree_rss_bytes(root):
    total = 0
    pids = [root] + [int(d) for d in os.listdir("/proc") if d.isdigit() and _ppid_is(int(d), root)]
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _ppid_is(pid, parent):
    try:
        return _stat(pid)[0] == parent
    except (OSError, ValueError, IndexError):
        return False


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def machine_facts():
    """What makes one machine's numbers differ from another's: the CPU, whether it is a
    virtual machine that hands freed memory back to its host (free page reporting: every
    page a process touches for the first time is then faulted in by the host as well), the
    transparent huge page policy, and what touching fresh memory costs here (256 MiB of a
    new anonymous mapping, one write per 4 KiB page, CPU seconds of this process)."""
    facts = {}
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        m = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        facts["cpu_model"] = m.group(1).strip() if m else None
        flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
        flags = set(flags.group(1).split()) if flags else set()
        facts["hypervisor"] = "hypervisor" in flags
        facts["avx512"] = "avx512f" in flags
    except OSError:
        pass
    try:
        with open("/proc/cmdline") as f:
            cmdline = f.read().split()
        facts["kernel_cmdline_memory"] = [t for t in cmdline
                                          if t.startswith(("page_reporting", "nested_", "hugepages",
                                                           "transparent_hugepage"))]
    except OSError:
        pass
    for key in ("enabled", "defrag"):
        try:
            with open(f"/sys/kernel/mm/transparent_hugepage/{key}") as f:
                sel = re.search(r"\[(\w+)\]", f.read())
                facts[f"thp_{key}"] = sel.group(1) if sel else None
        except OSError:
            pass
    size = 256 << 20
    for key in ("fresh_memory_gb_per_cpu_s", "warm_memory_gb_per_cpu_s"):
        # The first mapping is memory the guest has not touched lately; the second, mapped
        # right after the first is unmapped, gets the pages just freed.
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        t0 = time.process_time()
        for off in range(0, size, 4096):
            buf[off] = 1
        cpu = time.process_time() - t0
        buf.close()
        facts[key] = (size / 2**30) / cpu if cpu > 0 else None
    facts["memory_warmup_mib"] = WARMUP_BYTES >> 20
    return facts


# Before every server start (Joule, VictoriaMetrics, PostgreSQL, h2o, Mosquitto) and every
# run of the core programs, the harness touches and frees this much memory. On a VM that reports free memory back to
# the hypervisor (free page reporting, `page_reporting.*` on the kernel command line), a
# page the guest gave back costs 25-60 times more to touch again than one freed a moment
# before (0.3-0.8 against 12-21 GB per CPU-second, session 32), and which kind a new server
# gets was left to chance: the same binary's CPU for the same 600k events was bimodal
# (processors 32-34 or 58-62 ticks), and the medians of 3 runs wandered with it. After the
# warm-up every server starts from the same state, the guest's memory backed — as on a
# machine without free page reporting. JOULE_BENCH_WARMUP_MIB=0 turns it off.
WARMUP_BYTES = int(os.environ.get("JOULE_BENCH_WARMUP_MIB", "2048")) << 20


def warm_host_memory():
    """Touches and frees WARMUP_BYTES of private anonymous memory, as a server's heap is.
    (Python's mmap.mmap(-1, n) is MAP_SHARED — shmem pages — and a warm-up with it made
    the next server slower, not faster: session 32.)"""
    if WARMUP_BYTES <= 0:
        return
    buf = mmap.mmap(-1, WARMUP_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)  # servers' large allocations come as huge pages
    except (AttributeError, OSError):
        pass
    for off in range(0, WARMUP_BYTES, 4096):
        buf[off] = 1
    buf.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


START_TIMEOUT_S = 60


def log_tail(path, lines=20):
    """The last lines of a log file, indented, for an error message."""
    try:
        with open(path, errors="replace") as f:
            tail = f.read().splitlines()[-lines:]
    except OSError as e:
        return f"  (cannot read {path}: {e})"
    return "\n".join("  " + line for line in tail) or "  (empty)"


def wait_healthy(proc, port, log_path, timeout):
    """Until GET /healthz answers 200; a server that exits or never answers raises with its
    exit status and the tail of its log (stdout and stderr)."""
    t = time.time() + timeout
    while time.time() < t:
        rc = proc.poll()
        if rc is not None:
            raise RuntimeError(f"joule exited with status {rc} while starting; log {log_path}, "
                               f"last lines:\n{log_tail(log_path)}")
        try:
            if http_get(port, "/healthz", timeout=2)[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"joule did not answer /healthz on 127.0.0.1:{port} within {timeout} s "
                       f"(still running); log {log_path}, last lines:\n{log_tail(log_path)}")


def wait_port(port, timeout=60):
    t = time.time() + timeout
    while time.time() < t:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def http_get(port, path, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def http_post(port, path, body, ctype="application/json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", path, body=body, headers={"Content-Type": ctype})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def du_bytes(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return total


def stop(proc, sig=signal.SIGTERM, timeout=60):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs, keys):
    out = {k: median([r.get(k) for r in runs]) for k in keys}
    out["runs"] = runs
    return out


def run_loader(args_list):
    out = subprocess.run([sys.executable, os.path.join(HERE, "http_load.py")] + args_list,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def prom(port):
    _, body = http_get(port, "/metrics")
    sums = {}
    for line in body.decode().splitlines():
        if not line or line[0] == "#":
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            try:
                sums[m.group(1)] = sums.get(m.group(1), 0.0) + float(m.group(3))
            except ValueError:
                pass
    return sums


# ---------------------------------------------------------------- servers

class Joule:
    def __init__(self, ctx, durability="fsync", mqtt=False, extra_env=None):
        self.dir = tempfile.mkdtemp(prefix="joule-", dir=ctx.tmp)
        self.port = free_port()
        self.mqtt_port = free_port() if mqtt else None
        env = dict(os.environ)
        env.update({
            "JOULE_SERVER_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            "JOULE_SERVER_MQTT_LISTEN": f"127.0.0.1:{self.mqtt_port}" if mqtt else "",
            "JOULE_STORAGE_DATA_DIR": self.dir,
            "JOULE_STORAGE_DURABILITY": durability,
            "JOULE_AUTH_MODE": "disabled",
            "JOULE_LIMITS_REQUESTS_PER_SECOND": "0",
            "JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "0",
            "JOULE_LIMITS_MAX_EVENT_AGE": "40d",
            "JOULE_STREAM_IDLE_TIMEOUT": "2s",
            "JOULE_LOG_LEVEL": "warn",
        })
        env.update(extra_env or {})
        self.log_path = os.path.normpath(
            os.path.join(self.dir, "..", os.path.basename(self.dir) + ".log"))
        self.log = open(self.log_path, "w")
        warm_host_memory()
        self.proc = subprocess.Popen([ctx.joule, "serve"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_healthy(self.proc, self.port, self.log_path, START_TIMEOUT_S)
            if mqtt:
                wait_port(self.mqtt_port)
        except BaseException:
            stop(self.proc)
            self.log.close()
            raise

    def cpu(self):
        return tree_cpu_s(self.proc.pid)

    def rss(self):
        return tree_rss_bytes(self.proc.pid)

    def wait_processed(self, expected, timeout=600):
        """Until every accepted event went through the window engine (lag 0)."""
        t = time.time() + timeout
        while time.time() < t:
            m = prom(self.port)
            if (m.get("joule_events_accepted_total", 0) >= expected
                    and m.get("joule_processor_events_total", 0) >= expected
                    and m.get("joule_processor_lag_records", 1) == 0):
                return m
            time.sleep(0.2)
        raise RuntimeError(f"joule did not process {expected} events: {prom(self.port)}")

    def close(self):
        stop(self.proc)
        self.log.close()


class Victoria:
    def __init__(self, ctx):
        self.dir = tempfile.mkdtemp(prefix="vm-", dir=ctx.tmp)
        self.port = free_port()
        self.log = open(self.dir + ".log", "w")
        warm_host_memory()
        self.proc = subprocess.Popen(
            ["victoria-metrics", f"-storageDataPath={self.dir}",
             f"-httpListenAddr=127.0.0.1:{self.port}", "-retentionPeriod=10y",
             "-loggerLevel=WARN", "-search.disableCache"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        t = time.time() + 30
        while http_get(self.port, "/health")[0] != 200 and time.time() < t:
            time.sleep(0.1)

    def flush(self):
        http_get(self.port, "/internal/force_flush")

    def cpu(self):
        return tree_cpu_s(self.proc.pid)

    def close(self):
        stop(self.proc, signal.SIGINT)
        self.log.close()


class Postgres:
    """A private PostgreSQL 15 cluster with fsync on and synchronous_commit on."""

    def __init__(self, ctx):
        self.dir = tempfile.mkdtemp(prefix="pg-", dir=ctx.tmp)
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        pgbin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        data = os.path.join(self.dir, "data")
        self.pgbin, self.data = pgbin, data
        subprocess.run(["runuser", "-u", "postgres", "--", f"{pgbin}/initdb", "-D", data,
                        "-U", "postgres", "-A", "trust", "--no-sync"],
                       check=True, capture_output=True)
        self.log = open(self.dir + ".log", "w")
        warm_host_memory()
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", f"{pgbin}/postgres", "-D", data,
             "-p", str(self.port), "-k", self.dir, "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on",
             "-c", "shared_buffers=512MB", "-c", "max_wal_size=4GB", "-c", "jit=off"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        import psycopg2  # noqa: F401  (fails early when missing)
        t = time.time() + 60
        while True:
            try:
                self.connect().close()
                break
            except Exception:
                if time.time() > t:
                    raise
                time.sleep(0.2)

    def connect(self):
        import psycopg2
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname="postgres")

    def server_pid(self):
        # runuser execs nothing: postgres is its child; account the whole tree of runuser.
        return self.proc.pid

    def cpu(self):
        # Backends and autovacuum workers that exit during a run are reaped by the
        # postmaster, not by runuser (the root): count every process's reaped children.
        return tree_cpu_s(self.proc.pid, reaped_by_all=True)

    def data_bytes(self):
        return du_bytes(os.path.join(self.dir, "data", "base"))

    def close(self):
        # A signal to runuser did not always reach the postmaster: runs left servers
        # running after their data dir was deleted. pg_ctl signals the postmaster itself
        # (fast shutdown) and waits for it.
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.pgbin}/pg_ctl", "stop",
                        "-D", self.data, "-m", "fast", "-w", "-t", "60"], capture_output=True)
        stop(self.proc, signal.SIGINT)
        self.log.close()


# ---------------------------------------------------------------- comparisons

def log_stats(m):
    """The log's own view of a run (src/log/README.md "Metrics"): the mean fdatasync, the
    mean Append → durable, records per fdatasync, and the bytes pre-written ahead of the
    active segments. Diagnostics next to the ack latency; not a ratio."""
    def mean_ms(name):
        n = m.get(name + "_count", 0)
        return m.get(name + "_sum", 0.0) / n * 1000 if n else None
    syncs = m.get("joule_log_records_per_fsync_count", 0)
    return {"log_fsync_mean_ms": mean_ms("joule_log_fsync_latency_seconds"),
            "log_fsyncs": m.get("joule_log_fsync_latency_seconds_count"),
            "log_append_to_durable_mean_ms": mean_ms("joule_log_append_latency_seconds"),
            "log_records_per_fsync": (m.get("joule_log_records_per_fsync_sum", 0.0) / syncs
                                      if syncs else None),
            "log_prewritten_bytes": m.get("joule_log_prewritten_bytes_total")}


def log_phases(port):
    """Mean ms of each phase of the log's group commit (joule_log_commit_phase_seconds
    {phase}: queue per batch; window, write, sync, callbacks per round)."""
    _, body = http_get(port, "/metrics")
    sums, counts = {}, {}
    for line in body.decode().splitlines():
        m = re.match(r'joule_log_commit_phase_seconds_(sum|count)\{phase="(\w+)"\}\s+(\S+)', line)
        if m:
            (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
    return {k: sums[k] / counts[k] * 1000 for k in sums if counts.get(k)}


def fsync_on_off_runs(ctx, runs):
    """Ingest runs with fsync and with durability none, alternating (on, off, on, off, ...):
    on a shared machine the load drifts over minutes, and back-to-back blocks of one mode
    would each see a different machine (fsync_on_vs_off compares the two medians)."""
    on, off = [], []
    for _ in range(runs):
        on.append(joule_ingest_run(ctx, "fsync"))
        off.append(joule_ingest_run(ctx, "none"))
    return on, off


def joule_ingest_run(ctx, durability, extra_env=None, affinity=None):
    j = Joule(ctx, durability, extra_env=extra_env)
    try:
        rss0 = j.rss()
        cpu0 = j.cpu()
        t0 = time.perf_counter()
        load = run_loader(["--port", str(j.port), "--path", "/v1/telemetry",
                           "--file", ctx.f("events.ndjson"), "--format", "json-array",
                           "--content-type", "application/json", "--batch", str(ctx.batch),
                           "--connections", str(ctx.connections),
                           "--affinity", affinity or ctx.affinity])
        m = j.wait_processed(ctx.meta["events"])
        t_done = time.perf_counter() - t0
        time.sleep(3)  # idle_timeout 2s: the last windows finalize into history
        cpu = j.cpu() - cpu0
        rss = j.rss()
        m2 = prom(j.port)
        phases = log_phases(j.port)
        events = ctx.meta["events"]
        return {"events": events, "cpu_s": cpu, "events_per_cpu_s": events / cpu,
                "wall_s": load["wall_s"], "events_per_wall_s": events / load["wall_s"],
                "wall_until_processed_s": t_done,
                "ack_p50_ms": load["ack_p50_ms"], "ack_p99_ms": load["ack_p99_ms"],
                "status": load["status"], "rss_bytes": rss,
                "rss_bytes_per_1k_devices": rss / (ctx.meta["devices"] / 1000.0),
                "rss_idle_bytes": rss0,
                "rss_growth_bytes_per_1k_devices": (rss - rss0) / (ctx.meta["devices"] / 1000.0),
                "windows_emitted": m2.get("joule_windows_emitted_total"),
                "out_of_order_events": m2.get("joule_events_out_of_order_total"),
                "history_put_records": m2.get("joule_history_put_records_total"),
                "accepted": m.get("joule_events_accepted_total"), **log_stats(m2),
                "log_phase_mean_ms": phases}
    finally:
        j.close()


def vm_ingest_run(ctx):
    v = Victoria(ctx)
    try:
        cpu0 = v.cpu()
        load = run_loader(["--port", str(v.port), "--path", "/write", "--file",
                           ctx.f("influx.lp"), "--format", "lines", "--batch", str(ctx.batch),
                           "--connections", str(ctx.connections), "--affinity", ctx.affinity])
        v.flush()
        cpu = v.cpu() - cpu0
        end_s = ctx.meta["start_ms"] // 1000 + ctx.meta["seconds"] + 60
        q = urllib.parse.quote(f"sum(count_over_time(telemetry_power_w[{ctx.meta['seconds'] + 120}s]))")
        _, body = http_get(v.port, f"/api/v1/query?query={q}&time={end_s}")
        res = json.loads(body)["data"]["result"]
        stored = float(res[0]["value"][1]) if res else 0
        events = ctx.meta["events"]
        return {"events": events, "cpu_s": cpu, "events_per_cpu_s": events / cpu,
                "wall_s": load["wall_s"], "events_per_wall_s": events / load["wall_s"],
                "ack_p50_ms": load["ack_p50_ms"], "ack_p99_ms": load["ack_p99_ms"],
                "status": load["status"], "power_samples_queryable": stored}
    finally:
        v.close()


PG_SCHEMA = """
CREATE TABLE telemetry (device_id text NOT NULL, ts timestamptz NOT NULL,
  power_w double precision, voltage_v double precision, current_a double precision,
  energy_wh double precision);
CREATE INDEX telemetry_ts ON telemetry (ts);
CREATE TABLE agg_1m (device_id text NOT NULL, window_start timestamptz NOT NULL,
  count bigint, min_power_w double precision, max_power_w double precision,
  avg_power_w double precision, avg_voltage_v double precision, avg_current_a double precision,
  first_energy_wh double precision, last_energy_wh double precision,
  PRIMARY KEY (device_id, window_start));
"""

PG_AGGREGATE = """
INSERT INTO agg_1m
SELECT device_id, date_trunc('minute', ts), count(*), min(power_w), max(power_w), avg(power_w),
       avg(voltage_v), avg(current_a), min(energy_wh), max(energy_wh)
FROM telemetry WHERE ts >= %s AND ts < %s GROUP BY 1, 2
ON CONFLICT (device_id, window_start) DO UPDATE SET count = EXCLUDED.count,
  min_power_w = EXCLUDED.min_power_w, max_power_w = EXCLUDED.max_power_w,
  avg_power_w = EXCLUDED.avg_power_w, avg_voltage_v = EXCLUDED.avg_voltage_v,
  avg_current_a = EXCLUDED.avg_current_a, first_energy_wh = EXCLUDED.first_energy_wh,
  last_energy_wh = EXCLUDED.last_energy_wh
"""


def pg_ingest_run(ctx):
    """COPY batches of --batch rows (each its own committed transaction), and after each
    minute of data the per-minute GROUP BY into agg_1m (committed), on one connection."""
    import io
    pg = Postgres(ctx)
    try:
        conn = pg.connect()
        cur = conn.cursor()
        cur.execute(PG_SCHEMA)
        conn.commit()
        with open(ctx.f("rows.csv"), "rb") as f:
            lines = f.read().splitlines(keepends=True)
        n = ctx.meta["devices"]
        batches = [b"".join(lines[i:i + ctx.batch]) for i in range(0, len(lines), ctx.batch)]
        start = ctx.meta["start_ms"] // 1000
        cpu0 = pg.cpu()
        t0 = time.perf_counter()
        rows = 0
        next_minute = start + 60
        lat = []
        for b in batches:
            t1 = time.perf_counter()
            cur.copy_expert("COPY telemetry FROM STDIN WITH (FORMAT csv)", io.BytesIO(b))
            conn.commit()
            lat.append(time.perf_counter() - t1)
            rows += b.count(b"\n")
            sec = start + rows // n
            while sec >= next_minute:
                m0 = datetime.datetime.fromtimestamp(next_minute - 60, datetime.timezone.utc)
                m1 = datetime.datetime.fromtimestamp(next_minute, datetime.timezone.utc)
                cur.execute(PG_AGGREGATE, (m0, m1))
                conn.commit()
                next_minute += 60
        # the last, partial minute
        m0 = datetime.datetime.fromtimestamp(next_minute - 60, datetime.timezone.utc)
        cur.execute(PG_AGGREGATE, (m0, m0 + datetime.timedelta(seconds=60)))
        conn.commit()
        wall = time.perf_counter() - t0
        cpu = pg.cpu() - cpu0
        cur.execute("SELECT count(*), sum(count) FROM agg_1m")
        nagg, counted = cur.fetchone()
        conn.close()
        lat.sort()
        events = ctx.meta["events"]
        return {"events": events, "cpu_s": cpu, "events_per_cpu_s": events / cpu,
                "wall_s": wall, "events_per_wall_s": events / wall,
                "ack_p50_ms": lat[len(lat) // 2] * 1e3,
                "ack_p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
                "agg_rows": nagg, "agg_counted_events": int(counted)}
    finally:
        pg.close()


def core_runs(ctx):
    out = {}
    for name, cmd in (("joule_core", [ctx.bin("core_throughput"), ctx.f("events.ndjson"),
                                      "--batch", str(ctx.batch)]),
                      ("simdjson", [ctx.bin("simdjson_limit"), ctx.f("events.ndjson")])):
        runs = []
        for _ in range(ctx.runs):
            warm_host_memory()
            r = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs.append(json.loads(r.stdout))
        out[name] = summarize(runs, ["events_per_cpu_s", "cpu_s"])
    return out


def engine_state(ctx):
    """The window engine's state per 1k devices as it grows (not a ratio): the ingest runs
    measure the server after one minute of data, but the engine keeps the samples of power
    and counter metrics, the de-duplication timestamps and the final windows for
    stream.allowed_lateness (default 1 h) so that late events update their windows exactly.
    bench/engine_digest --profile runs the engine alone over the same shape (the data's
    devices at 1 Hz, power, voltage, current and an energy counter, batches of ctx.batch;
    its own values) and prints its state estimate; after 61 minutes it is in steady state.
    Also: with allowed_lateness 10 min, with one event per device a minute, and with an
    event_id on every event (de-duplication by id keeps a hash and a time per event)."""
    devices = ctx.meta["devices"]
    out = {"devices": devices}
    for name, seconds, opts in (("after_1_min", 61, []), ("after_61_min", 3660, []),
                                ("after_61_min_lateness_10m", 3660, ["lateness=600"]),
                                ("after_61_min_one_event_per_minute", 3660, ["every=60"]),
                                ("after_61_min_with_event_ids", 3660, ["ids"])):
        r = subprocess.run([ctx.bin("engine_digest"), "--profile", str(devices), str(ctx.batch),
                            str(seconds - 1), "1"] + opts,
                           check=True, capture_output=True, text=True)
        m = re.search(r"state_bytes (\d+)", r.stdout)
        if not m:
            raise RuntimeError(f"engine_digest printed no state_bytes: {r.stdout!r}")
        out[name + "_bytes_per_1k_devices"] = int(m.group(1)) / (devices / 1000.0)
    return out


def fio_fdatasync(ctx):
    d = tempfile.mkdtemp(prefix="fio-", dir=ctx.tmp)
    r = subprocess.run(["fio", "--name=fdatasync", f"--directory={d}", "--rw=write",
                        "--bs=4k", "--size=8m", "--fdatasync=1", "--ioengine=sync",
                        "--output-format=json"], check=True, capture_output=True, text=True)
    shutil.rmtree(d, ignore_errors=True)
    job = json.loads(r.stdout)["jobs"][0]
    sync = job.get("sync", {})
    lat = sync.get("lat_ns", sync)
    p = lat.get("percentile", {})

    def pick(key):
        for k, v in p.items():
            if abs(float(k) - key) < 1e-6:
                return v / 1e6
        return None
    return {"fdatasync_p50_ms": pick(50.0), "fdatasync_p99_ms": pick(99.0),
            "fdatasync_mean_ms": lat.get("mean", 0) / 1e6, "syncs": lat.get("N")}


# ---- realtime API vs h2o

# Each connection waits a random 0..2x the mean delay before each request (mean as asked),
# so that the connections do not fire in lockstep: with a fixed delay all of them send in
# the same millisecond and the latency measured is the time to drain that burst.
WRK_PACE = """
local mean = tonumber(os.getenv("WRK_DELAY_MS"))
function delay() return math.random(0, 2 * mean) end
"""


def wrk(url, seconds, conns, threads=1, delay_ms=None, tmp=None):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    env = dict(os.environ)
    if delay_ms is not None:
        script = os.path.join(tmp, "pace.lua")
        with open(script, "w") as f:
            f.write(WRK_PACE)
        cmd += ["-s", script]
        env["WRK_DELAY_MS"] = str(delay_ms)
    r = subprocess.run(cmd + [url], check=True, capture_output=True, text=True, env=env)
    out = r.stdout

    def ms(tok):
        v = float(re.match(r"([\d.]+)", tok).group(1))
        unit = tok[len(re.match(r"[\d.]+", tok).group(0)):]
        return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]
    lat = {}
    for line in out.splitlines():
        m = re.match(r"\s+(50|75|90|99)(?:\.000)?%\s+(\S+)", line)
        if m:
            lat[m.group(1)] = ms(m.group(2))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx and int(non2xx.group(1)) > 0:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx responses")
    done = re.search(r"(\d+) requests in [\d.]+\w+, ([\d.]+)([KMGT]?B) read", out)
    read_bytes = (float(done.group(2)) * {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30,
                                         "TB": 2**40}[done.group(3)]) if done else None
    return {"requests_per_s": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "requests": int(done.group(1)) if done else None, "read_bytes": read_bytes}


def _user_sys_s(pid):
    """(utime, stime) of one process (all its threads), in seconds."""
    _, ut, st, _, _ = _stat(pid)
    return ut / CLK_TCK, st / CLK_TCK


def api_vs_h2o(ctx):
    """Realtime API on a Joule holding the fleet data vs h2o serving a file of that size.
    Joule's server CPU per request is also split into user and system time (the kernel's
    loopback TCP and wake-ups are most of it since session 8, docs/benchmarks/HISTORY.md)."""
    j = Joule(ctx, "fsync")
    res = {}
    try:
        run_loader(["--port", str(j.port), "--path", "/v1/telemetry",
                    "--file", ctx.f("events.ndjson"), "--format", "json-array",
                    "--content-type", "application/json", "--batch", str(ctx.batch),
                    "--connections", str(ctx.connections)])
        j.wait_processed(ctx.meta["events"])
        time.sleep(3)
        path = "/v1/devices/dev-00001/metrics/realtime?windows=5"
        status, body = http_get(j.port, path)
        if status != 200:
            raise RuntimeError(f"realtime answered {status}: {body[:200]}")
        size = len(body)
        res["body_bytes"] = size
        url = f"http://127.0.0.1:{j.port}{path}"
        runs = []
        for _ in range(ctx.runs):
            c0, (u0, s0) = j.cpu(), _user_sys_s(j.proc.pid)
            w = wrk(url, ctx.wrk_seconds, 16)
            w["cpu_s"] = j.cpu() - c0
            # wrk's own count of completed requests (its rate × the nominal seconds was ~2 %
            # off: the run lasts a little longer than -d).
            n = w["requests"] or w["requests_per_s"] * ctx.wrk_seconds
            w["requests_per_cpu_s"] = n / w["cpu_s"]
            u1, s1 = _user_sys_s(j.proc.pid)
            w["server_user_us_per_request"] = (u1 - u0) * 1e6 / n
            w["server_sys_us_per_request"] = (s1 - s0) * 1e6 / n
            runs.append(w)
        res["joule"] = summarize(runs, ["requests_per_s", "requests_per_cpu_s", "p50_ms", "p99_ms",
                                        "server_user_us_per_request",
                                        "server_sys_us_per_request"])
        half = res["joule"]["requests_per_s"] / 2

        def paced(conns, delay):
            runs = []
            for _ in range(ctx.runs):
                c0, (u0, s0) = j.cpu(), _user_sys_s(j.proc.pid)
                w = wrk(url, ctx.wrk_seconds, conns, delay_ms=delay, tmp=ctx.tmp)
                n = w["requests"] or w["requests_per_s"] * ctx.wrk_seconds
                w["server_cpu_us_per_request"] = (j.cpu() - c0) * 1e6 / n
                u1, s1 = _user_sys_s(j.proc.pid)
                w["server_user_us_per_request"] = (u1 - u0) * 1e6 / n
                w["server_sys_us_per_request"] = (s1 - s0) * 1e6 / n
                runs.append(w)
            out = summarize(runs, ["requests_per_s", "p50_ms", "p99_ms",
                                   "server_cpu_us_per_request", "server_user_us_per_request",
                                   "server_sys_us_per_request"])
            out.update({"target_requests_per_s": half, "wrk_delay_ms": delay,
                        "connections": conns})
            return out
        # Half load (api_p99_ms_half_load): half the peak rate from a few keep-alive
        # connections, each waiting 0-2 ms (mean 1 ms, wrk's delay() is in whole ms) between
        # requests; their number is calibrated in two short runs so that the offered rate
        # is the target. (Hundreds of connections, each waiting ~25 ms, cost both servers an
        # epoll wake-up per request on two cores shared with wrk: kept below as
        # joule_half_load_many_connections, not the goal's figure.)
        conns = max(2, int(round(half * 1.2e-3)))
        for _ in range(2):
            w = wrk(url, 3, conns, delay_ms=1, tmp=ctx.tmp)
            conns = max(2, int(round(conns * half / max(w["requests_per_s"], 1.0))))
        res["joule_half_load"] = paced(conns, 1)
        many = max(4, int(round(half * 0.025)))
        res["joule_half_load_many_connections"] = paced(many, max(1, int(round(many / half * 1000))))
    finally:
        j.close()
    # h2o: the same bytes as a static file
    d = tempfile.mkdtemp(prefix="h2o-", dir=ctx.tmp)
    with open(os.path.join(d, "realtime.json"), "wb") as f:
        f.write(body)
    os.chmod(d, 0o755)  # h2o started as root serves as nobody
    os.chmod(os.path.join(d, "realtime.json"), 0o644)
    port = free_port()
    conf = os.path.join(d, "h2o.conf")
    with open(conf, "w") as f:
        f.write(f"""listen:
  host: 127.0.0.1
  port: {port}
num-threads: 2
access-log: /dev/null
error-log: {d}/error.log
hosts:
  default:
    paths:
      /:
        file.dir: {d}
""")
    warm_host_memory()
    h = subprocess.Popen(["h2o", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/realtime.json"
        runs = []
        for _ in range(ctx.runs):
            c0 = tree_cpu_s(h.pid)
            w = wrk(url, ctx.wrk_seconds, 16)
            w["cpu_s"] = tree_cpu_s(h.pid) - c0
            w["requests_per_cpu_s"] = (w["requests"] or w["requests_per_s"] * ctx.wrk_seconds) / w["cpu_s"]
            runs.append(w)
        res["h2o"] = summarize(runs, ["requests_per_s", "requests_per_cpu_s", "p50_ms", "p99_ms"])
        # The same half-load run against h2o: Joule's target rate, connections and pacing.
        # Not a goal; it shows what this machine and method give a server that only sends
        # a file (the load generator shares the two cores).
        for key in ("half_load", "half_load_many_connections"):
            if "joule_" + key not in res:
                continue
            hl = res["joule_" + key]
            runs = []
            for _ in range(ctx.runs):
                c0 = tree_cpu_s(h.pid)
                w = wrk(url, ctx.wrk_seconds, hl["connections"], delay_ms=hl["wrk_delay_ms"],
                        tmp=ctx.tmp)
                w["server_cpu_us_per_request"] = (tree_cpu_s(h.pid) - c0) * 1e6 / (
                    w["requests"] or w["requests_per_s"] * ctx.wrk_seconds)
                runs.append(w)
            res["h2o_" + key] = summarize(runs, ["requests_per_s", "p50_ms", "p99_ms",
                                                 "server_cpu_us_per_request"])
            res["h2o_" + key]["target_requests_per_s"] = hl["target_requests_per_s"]
            res["h2o_" + key]["connections"] = hl["connections"]
    finally:
        stop(h)
    return res


# ---- history queries
#
# Each server is timed by a native client on one keep-alive connection, the same way for
# all three: wrk -t1 -c1 (Joule, VictoriaMetrics: HTTP) and pgbench -c1 with a log of every
# transaction's latency (PostgreSQL). The ratio comes from those p50s: a measurement of the
# servers. The Python clients (http.client, psycopg2) are timed as well, as a second
# column (`*_python`): their own per-request cost (~0.1-0.2 ms here) is a floor under all
# three and hid the servers' differences in the sub-millisecond owner query.

def timed(fn, n):
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    lat.sort()
    return {"p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
            "n": n}


def pgbench(port, sql, seconds, tmp):
    """p50/p99 of one query on one connection, from pgbench's per-transaction log."""
    d = tempfile.mkdtemp(prefix="pgbench-", dir=tmp)
    script = os.path.join(d, "query.sql")
    with open(script, "w") as f:
        f.write(sql + ";\n")
    pgbin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    # -n: no vacuum of pgbench's own tables; simple query protocol (as psycopg2 sends it:
    # parsed and planned per query); one client, one thread; -l: one line per transaction,
    # its latency in µs in the third column.
    subprocess.run([f"{pgbin}/pgbench", "-n", "-c1", "-j1", f"-T{seconds}", "-f", script,
                    "-l", "--log-prefix", os.path.join(d, "lat"), "-h", "127.0.0.1",
                    "-p", str(port), "-U", "postgres", "postgres"],
                   check=True, capture_output=True, text=True, cwd=d)
    lat = []
    for name in glob.glob(os.path.join(d, "lat.*")):
        with open(name) as f:
            lat += [int(line.split()[2]) for line in f if line.strip()]
    if not lat:
        raise RuntimeError("pgbench logged no transactions")
    lat.sort()
    return {"p50_ms": lat[len(lat) // 2] / 1e3, "p99_ms": lat[int(len(lat) * 0.99)] / 1e3,
            "requests": len(lat), "requests_per_s": len(lat) / seconds}


def history_vs_peers(ctx):
    meta = ctx.meta
    end_ms = meta["history_end_ms"]
    day_from, day_to = end_ms - 86_400_000, end_ms
    month_from = end_ms - 30 * 86_400_000
    iso = lambda ms: datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    dev = meta["history_device_ids"][0]
    owner = meta["history_owner"]
    n_dev = len(meta["history_device_ids"])
    secs = ctx.history_seconds
    res = {"queries": {"device_1m_24h": f"{dev}, 1m, {iso(day_from)}..{iso(day_to)}",
                       "owner_1d_30d": f"{owner}, 1d, {iso(month_from)}..{iso(day_to)}"},
           "clients": {"native": f"wrk -t1 -c1 -d{secs}s (Joule, VictoriaMetrics), "
                                 f"pgbench -n -c1 -T{secs} -l (PostgreSQL); p50 of every "
                                 f"request of a run, median of {ctx.runs} runs, the systems "
                                 "taking turns",
                       "python": f"http.client / psycopg2, {ctx.queries} queries, one "
                                 "keep-alive connection"}}
    rows_1m = open(ctx.f("history_1m.csv")).read().splitlines()
    rows_1d = open(ctx.f("history_1d.csv")).read().splitlines()
    servers = []  # closed in reverse order at the end
    try:
        # Joule: register the owner's devices, ingest the raw minutes, query the API.
        j = Joule(ctx, "fsync")
        servers.append(j)
        for d in meta["history_device_ids"]:
            st, body = http_post(j.port, "/v1/devices", json.dumps(
                {"device_id": d, "owner_id": owner, "name": d, "timezone": "UTC"}))
            if st != 201:
                raise RuntimeError(f"register {d}: {st} {body[:200]}")
        run_loader(["--port", str(j.port), "--path", "/v1/telemetry",
                    "--file", ctx.f("history.ndjson"), "--format", "json-array",
                    "--content-type", "application/json", "--batch", str(ctx.batch),
                    "--connections", "1"])  # one connection: each device's minutes in order
        j.wait_processed(meta["history_events"])
        time.sleep(4)
        jp_dev = (f"/v1/devices/{dev}/metrics/history?from={iso(day_from)}&to={iso(day_to)}"
                  f"&resolution=1m")
        jp_own = (f"/v1/owners/{owner}/energy?from={iso(month_from)}&to={iso(day_to)}"
                  f"&resolution=1d")
        st, jb_dev = http_get(j.port, jp_dev)
        st2, jb_own = http_get(j.port, jp_own)
        if st != 200 or st2 != 200:
            raise RuntimeError(f"joule history {st} / owner {st2}")
        res["joule_device_records"] = len(json.loads(jb_dev)["data"])
        own = json.loads(jb_own)["data"]
        res["joule_owner_days"] = len(own)
        res["joule_owner_device_values"] = sum(len(b["devices"]) for b in own)
        res["joule_history_put_records"] = prom(j.port).get("joule_history_put_records_total")
        res["joule_values_per_1m_record"] = count_numbers(json.loads(jb_dev)["data"][0])

        # PostgreSQL: agg_1m long table, agg_1d per (owner, day, device)
        import io
        pg = Postgres(ctx)
        servers.append(pg)
        c = pg.connect()
        cur = c.cursor()
        cur.execute("""CREATE TABLE agg_1m (device_id text, window_start timestamptz, metric text,
            min double precision, max double precision, avg double precision,
            last double precision, PRIMARY KEY (device_id, window_start, metric));
            CREATE TABLE agg_1d (owner_id text, device_id text, day timestamptz,
            energy_wh double precision, PRIMARY KEY (owner_id, day, device_id));""")
        buf = io.StringIO()
        for r in rows_1m:
            d, ts, m, a, b_, av, la = r.split(",")
            buf.write(f"{d},{iso(int(ts))},{m},{a},{b_},{av},{la}\n")
        buf.seek(0)
        cur.copy_expert("COPY agg_1m FROM STDIN WITH (FORMAT csv)", buf)
        buf = io.StringIO()
        for r in rows_1d:
            d, ts, e = r.split(",")
            buf.write(f"{owner},{d},{iso(int(ts))},{e}\n")
        buf.seek(0)
        cur.copy_expert("COPY agg_1d FROM STDIN WITH (FORMAT csv)", buf)
        c.commit()
        cur.execute("ANALYZE")
        c.commit()
        q_dev = ("SELECT window_start, metric, min, max, avg, last FROM agg_1m WHERE device_id = %s"
                 " AND window_start >= %s AND window_start < %s ORDER BY window_start")
        q_own = ("SELECT day, sum(energy_wh), json_object_agg(device_id, energy_wh) FROM agg_1d"
                 " WHERE owner_id = %s AND day >= %s AND day < %s GROUP BY day ORDER BY day")
        a_dev = (dev, iso(day_from), iso(day_to))
        a_own = (owner, iso(month_from), iso(day_to))
        # pgbench runs the very text psycopg2 sends (psycopg2 interpolates on the client)
        sql_dev = cur.mogrify(q_dev, a_dev).decode()
        sql_own = cur.mogrify(q_own, a_own).decode()

        def run(q, a):
            cur.execute(q, a)
            return cur.fetchall()
        res["postgres_device_rows"] = len(run(q_dev, a_dev))
        own = run(q_own, a_own)
        res["postgres_owner_days"] = len(own)
        res["postgres_owner_device_values"] = sum(len(r[2]) for r in own)

        # VictoriaMetrics: one series per (device, metric, statistic)
        v = Victoria(ctx)
        servers.append(v)
        lines = []
        for r in rows_1m:
            d, ts, m, a, b_, av, la = r.split(",")
            for stat, val in (("min", a), ("max", b_), ("avg", av), ("last", la)):
                lines.append(f'agg_1m_{m}_{stat}{{device_id="{d}",owner_id="{owner}"}} {val} {ts}\n')
        for r in rows_1d:
            d, ts, e = r.split(",")
            lines.append(f'agg_1d_energy_wh{{device_id="{d}",owner_id="{owner}"}} {e} {ts}\n')
        res["vm_samples"] = len(lines)
        for i in range(0, len(lines), 50000):
            st, _ = http_post(v.port, "/api/v1/import/prometheus", "".join(lines[i:i + 50000]),
                              "text/plain")
            if st not in (200, 204):
                raise RuntimeError(f"vm import {st}")
        del lines
        v.flush()
        time.sleep(2)
        q1 = urllib.parse.quote(f'{{__name__=~"agg_1m_.*",device_id="{dev}"}}')
        vp_dev = (f"/api/v1/query_range?query={q1}&start={day_from / 1000}"
                  f"&end={(day_to - 60_000) / 1000}&step=60s")
        q2 = urllib.parse.quote(f'agg_1d_energy_wh{{owner_id="{owner}"}}')
        vp_own = (f"/api/v1/query_range?query={q2}&start={month_from / 1000}"
                  f"&end={(day_to - 86_400_000) / 1000}&step=1d")
        st, vb_dev = http_get(v.port, vp_dev)
        st2, vb_own = http_get(v.port, vp_own)
        if st != 200 or st2 != 200:
            raise RuntimeError(f"vm query_range {st} / {st2}")
        res["vm_device_points"] = sum(len(s["values"]) for s in json.loads(vb_dev)["data"]["result"])
        own = json.loads(vb_own)["data"]["result"]
        res["vm_owner_series"] = len(own)
        res["vm_owner_device_values"] = sum(len(s["values"]) for s in own)

        # The full answer from every system, before anything is timed: 1,440 minutes of
        # one device (Joule: records of 4 metrics; PostgreSQL: 4 rows per minute; VM: 16
        # series); 30 days × every device of the owner.
        want_dev, want_days = 1440, 30
        got = {"joule_device_records": want_dev, "postgres_device_rows": 4 * want_dev,
               "vm_device_points": 16 * want_dev, "joule_owner_days": want_days,
               "postgres_owner_days": want_days, "vm_owner_series": n_dev,
               "joule_owner_device_values": n_dev * want_days,
               "postgres_owner_device_values": n_dev * want_days,
               "vm_owner_device_values": n_dev * want_days}
        bad = {k: (res[k], w) for k, w in got.items() if res[k] != w}
        if bad:
            raise RuntimeError(f"incomplete answers (got, want): {bad}")

        # Native clients: the systems take turns, run by run, so a drift of the shared
        # machine's load reaches all three. Server CPU per request from /proc.
        def http_native(srv, path, body):
            c0 = srv.cpu()
            w = wrk(f"http://127.0.0.1:{srv.port}{path}", secs, 1)
            w["server_cpu_us_per_request"] = (srv.cpu() - c0) * 1e6 / w["requests"]
            # every response carried the whole answer (body + a few hundred bytes of head)
            per = w["read_bytes"] / w["requests"]
            w["bytes_per_response"] = per
            if not (len(body) * 0.99 <= per <= len(body) * 1.01 + 1024):
                raise RuntimeError(f"{path}: {per:.0f} bytes per response, body {len(body)}")
            return w

        def pg_native(sql):
            # pgbench's backend exits with its connection, reaped by the postmaster
            c0 = tree_cpu_s(pg.server_pid(), reaped_by_all=True)
            w = pgbench(pg.port, sql, secs, ctx.tmp)
            time.sleep(0.3)  # until the postmaster has reaped the backend
            w["server_cpu_us_per_request"] = ((tree_cpu_s(pg.server_pid(), reaped_by_all=True)
                                               - c0) * 1e6 / w["requests"])
            return w
        # Not a goal: each server's cheapest request on the same connection type (Joule
        # /healthz, VictoriaMetrics /health, PostgreSQL SELECT 1): the floor of this
        # machine's loopback round trip, client and server loop under the two queries.
        _, jb_h = http_get(j.port, "/healthz")
        _, vb_h = http_get(v.port, "/health")
        plan = {("joule", "floor"): lambda: http_native(j, "/healthz", jb_h),
                ("postgres", "floor"): lambda: pg_native("SELECT 1"),
                ("vm", "floor"): lambda: http_native(v, "/health", vb_h),
                ("joule", "device_1m_24h"): lambda: http_native(j, jp_dev, jb_dev),
                ("joule", "owner_1d_30d"): lambda: http_native(j, jp_own, jb_own),
                ("postgres", "device_1m_24h"): lambda: pg_native(sql_dev),
                ("postgres", "owner_1d_30d"): lambda: pg_native(sql_own),
                ("vm", "device_1m_24h"): lambda: http_native(v, vp_dev, vb_dev),
                ("vm", "owner_1d_30d"): lambda: http_native(v, vp_own, vb_own)}
        native = {k: [] for k in plan}
        for _ in range(ctx.runs):
            for k, fn in plan.items():
                native[k].append(fn())
        for (sysk, q), runs in native.items():
            out = summarize(runs, ["p50_ms", "p99_ms", "requests_per_s",
                                   "server_cpu_us_per_request"])
            out["runs"] = runs
            res[f"{sysk}_{q}"] = out

        # Python clients (the earlier method), one keep-alive connection each
        def http_getter(port, path):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

            def get():
                conn.request("GET", path)
                r = conn.getresponse()
                b = r.read()
                if r.status != 200:
                    raise RuntimeError(f"{path}: {r.status} {b[:200]}")
                return b
            return get, conn
        for sysk, srv, p_dev, p_own in (("joule", j, jp_dev, jp_own), ("vm", v, vp_dev, vp_own)):
            for q, p in (("device_1m_24h", p_dev), ("owner_1d_30d", p_own)):
                get, conn = http_getter(srv.port, p)
                res[f"{sysk}_{q}_python"] = timed(get, ctx.queries)
                conn.close()
        res["postgres_device_1m_24h_python"] = timed(lambda: run(q_dev, a_dev), ctx.queries)
        res["postgres_owner_1d_30d_python"] = timed(lambda: run(q_own, a_own), ctx.queries)
        c.close()

        # storage: stop cleanly (the history store flushes its memtables at close), then
        # measure what is on disk, and of what kind: SST files, WAL, the rest (MANIFEST,
        # OPTIONS); a WAL left after a clean stop would be every record uncompressed
        j.close()
        hist_dir = os.path.join(j.dir, "history")
        res["joule_history_bytes"] = du_bytes(hist_dir if os.path.isdir(hist_dir) else j.dir)
        kinds = {"sst": 0, "wal": 0, "other": 0}
        for f in (os.listdir(hist_dir) if os.path.isdir(hist_dir) else []):
            k = "sst" if f.endswith(".sst") else "wal" if f.endswith(".log") else "other"
            kinds[k] += os.path.getsize(os.path.join(hist_dir, f))
        res["joule_history_bytes_by_kind"] = kinds
        v.close()
        res["vm_bytes"] = du_bytes(v.dir)
    finally:
        for srv in reversed(servers):
            srv.close()
    # storage per stored aggregate value
    per_record = res["joule_values_per_1m_record"]
    recs = res["joule_history_put_records"] or 0
    res["joule_bytes_per_value"] = res["joule_history_bytes"] / (recs * per_record) if recs else None
    res["vm_bytes_per_value"] = res["vm_bytes"] / res["vm_samples"]
    return res


def count_numbers(obj):
    if isinstance(obj, bool):
        return 0
    if isinstance(obj, (int, float)):
        return 1
    if isinstance(obj, dict):
        return sum(count_numbers(v) for k, v in obj.items() if k not in ("version",))
    if isinstance(obj, list):
        return sum(count_numbers(v) for v in obj)
    return 0


# ---- MQTT

def mqtt_vs_mosquitto(ctx):
    devices = min(ctx.mqtt_devices, ctx.meta["devices"])
    # The first `devices` device ids of the same events file, every event of theirs, one
    # connection each (mqtt_load): fewer devices than the HTTP comparisons, since each
    # holds a connection of its own.
    res = {"devices": devices, "events": devices * ctx.meta["seconds"],
           "inflight": ctx.mqtt_inflight}
    args = ["--file", ctx.f("events.ndjson"), "--devices", str(devices),
            "--inflight", str(ctx.mqtt_inflight)]
    runs = []
    for _ in range(ctx.runs):
        j = Joule(ctx, "fsync", mqtt=True)
        try:
            c0 = j.cpu()
            r = subprocess.run([ctx.bin("mqtt_load"), "--port", str(j.mqtt_port)] + args,
                               check=True, capture_output=True, text=True)
            out = json.loads(r.stdout)
            j.wait_processed(out["acked"])
            out["cpu_s"] = j.cpu() - c0
            out["events_per_cpu_s"] = out["acked"] / out["cpu_s"]
            out["events_per_wall_s"] = out["acked"] / out["wall_s"]
            runs.append(out)
        finally:
            j.close()
    res["joule"] = summarize(runs, ["events_per_cpu_s", "events_per_wall_s", "ack_p50_ms",
                                    "ack_p99_ms"])
    runs = []
    for _ in range(ctx.runs):
        d = tempfile.mkdtemp(prefix="mosq-", dir=ctx.tmp)
        port = free_port()
        conf = os.path.join(d, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_inflight_messages 0\nmax_queued_messages 0\nmax_queued_bytes 0\n"
                    "log_type error\n")
        warm_host_memory()
        m = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            c0 = tree_cpu_s(m.pid)
            r = subprocess.run([ctx.bin("mqtt_load"), "--port", str(port), "--subscribe"] + args,
                               check=True, capture_output=True, text=True)
            out = json.loads(r.stdout)
            out["cpu_s"] = tree_cpu_s(m.pid) - c0
            out["events_per_cpu_s"] = out["acked"] / out["cpu_s"]
            out["events_per_wall_s"] = out["acked"] / out["wall_s"]
            runs.append(out)
        finally:
            stop(m)
    res["mosquitto"] = summarize(runs, ["events_per_cpu_s", "events_per_wall_s", "ack_p50_ms",
                                        "ack_p99_ms"])
    return res


# ---------------------------------------------------------------- main

class Ctx:
    pass


COMPARISONS = ("ingest", "fsync", "postgres", "fio", "core", "api", "history", "mqtt", "state")


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--joule", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=positive_int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--affinity", choices=["device", "none"], default="device",
                    help="ingest loads: each device's events over one connection, in order "
                         "(device), or batches dealt round-robin over the connections (none)")
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--history-seconds", type=int, default=5,
                    help="length of each native-client run of a history query")
    ap.add_argument("--mqtt-devices", type=int, default=1000)
    ap.add_argument("--mqtt-inflight", type=int, default=20)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--only", default="", help="comma-separated comparisons to run: "
                    + ",".join(COMPARISONS))
    a = ap.parse_args()
    unknown = [n for n in a.only.split(",") if n not in COMPARISONS] if a.only else []
    if unknown:
        ap.error(f"--only: unknown comparison {unknown[0]!r}; valid: {','.join(COMPARISONS)}")
    ctx = Ctx()
    ctx.__dict__.update(vars(a))
    ctx.tmp = tempfile.mkdtemp(prefix="joule-bench-", dir="/var/tmp")
    os.chmod(ctx.tmp, 0o755)  # the postgres user must reach its cluster dir inside
    ctx.f = lambda n: os.path.join(a.data, n)
    ctx.bin = lambda n: os.path.join(a.bin_dir, n)
    ctx.meta = json.load(open(ctx.f("meta.json")))
    only = set(a.only.split(",")) if a.only else None
    want = lambda n: only is None or n in only

    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "mode": a.mode, "runs": a.runs,
           "machine": {"cpus": os.cpu_count(), "loadavg_start": loadavg(),
                       "kernel": os.uname().release, **machine_facts()},
           "data": ctx.meta, "batch_events": a.batch, "loader_connections": a.connections,
           "loader_affinity": a.affinity,
           "joule_binary": {"path": a.joule, "built": datetime.datetime.fromtimestamp(
               os.path.getmtime(a.joule), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
           "durability": {
               "joule": "storage.durability=fsync: every HTTP batch acknowledged after fdatasync "
                        "of the log (group commit); MQTT PUBACK likewise",
               "joule_fsync_off": "storage.durability=none (unsafe: acknowledged events can be "
                                  "lost on power failure or kernel crash)",
               "victoriametrics": "default: /write is acknowledged once parsed into memory "
                                  "buffers; flushed to disk about every second, no fsync per write",
               "postgres": "fsync=on, synchronous_commit=on, full_page_writes=on; each COPY batch "
                           "and each per-minute aggregation is its own committed transaction",
               "mosquitto": "persistence false (in-memory relay, nothing durable)"},
           "comparisons": {}, "ratios": {}, "errors": {}}
    cmp_ = res["comparisons"]
    loads = [loadavg()]

    def step(name, fn):
        if not want(name):
            return
        log("running", name)
        try:
            cmp_[name] = fn()
        except Exception as e:  # recorded, never a made-up number
            log(f"{name} failed: {type(e).__name__}: {e}")
            res["errors"][name] = repr(e)
        loads.append(loadavg())
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    keys = ["events_per_cpu_s", "events_per_wall_s", "cpu_s", "wall_s", "ack_p50_ms",
            "ack_p99_ms", "rss_bytes_per_1k_devices", "rss_growth_bytes_per_1k_devices"]

    log_keys = ["log_fsync_mean_ms", "log_append_to_durable_mean_ms", "log_records_per_fsync"]

    def ingest():
        out = {}
        on, off = fsync_on_off_runs(ctx, a.runs)
        out["joule_fsync"] = summarize(on, keys)
        out["joule_nofsync"] = summarize(off, keys)
        # not a goal: how much of the full path the raw archive (canonical JSON + zstd) costs
        out["joule_fsync_no_archive"] = summarize(
            [joule_ingest_run(ctx, "fsync", {"JOULE_ARCHIVE_ENABLED": "false"})], keys)
        # not a goal: the other load shape, batches dealt round-robin over the connections,
        # so that a device's consecutive batches race each other (out-of-order events)
        other = "none" if a.affinity == "device" else "device"
        out["joule_fsync_affinity_" + other] = summarize(
            [joule_ingest_run(ctx, "fsync", affinity=other)], keys + ["out_of_order_events"])
        out["victoriametrics"] = summarize([vm_ingest_run(ctx) for _ in range(a.runs)], keys)
        return out
    step("ingest", ingest)

    def fsync_only():
        # `--only fsync`: the fsync on/off pairs and fio, without the peers and the
        # archive-off run (the fsync_on_vs_off ratio alone, a few minutes). A full run
        # measures the same within "ingest" and "fio", so it runs only when asked for.
        on, off = fsync_on_off_runs(ctx, a.runs)
        return {"joule_fsync": summarize(on, keys + log_keys),
                "joule_nofsync": summarize(off, keys + log_keys), "fio": fio_fdatasync(ctx)}
    if only is not None and "fsync" in only:
        step("fsync", fsync_only)
    step("postgres", lambda: summarize([pg_ingest_run(ctx) for _ in range(a.runs)], keys))
    step("fio", lambda: fio_fdatasync(ctx))
    step("core", lambda: core_runs(ctx))
    step("api", lambda: api_vs_h2o(ctx))
    step("history", lambda: history_vs_peers(ctx))
    step("mqtt", lambda: mqtt_vs_mosquitto(ctx))
    step("state", lambda: engine_state(ctx))

    r = res["ratios"]
    g = lambda *p: _get(cmp_, *p)
    jf = g("ingest", "joule_fsync", "events_per_cpu_s")
    if jf and g("ingest", "victoriametrics", "events_per_cpu_s"):
        r["vs_victoriametrics"] = jf / g("ingest", "victoriametrics", "events_per_cpu_s")
    if jf and g("postgres", "events_per_cpu_s"):
        r["vs_postgres"] = jf / g("postgres", "events_per_cpu_s")
    if g("core", "joule_core", "events_per_cpu_s") and g("core", "simdjson", "events_per_cpu_s"):
        r["vs_simdjson_limit"] = (g("core", "joule_core", "events_per_cpu_s")
                                  / g("core", "simdjson", "events_per_cpu_s"))
    fs = "ingest" if g("ingest", "joule_nofsync", "events_per_wall_s") else "fsync"
    if g(fs, "joule_nofsync", "events_per_wall_s"):
        r["fsync_on_vs_off"] = (g(fs, "joule_fsync", "events_per_wall_s")
                                / g(fs, "joule_nofsync", "events_per_wall_s"))
        r["fsync_on_vs_off_cpu"] = (g(fs, "joule_fsync", "events_per_cpu_s")
                                    / g(fs, "joule_nofsync", "events_per_cpu_s"))
    if g("api", "h2o", "requests_per_s"):
        r["api_vs_h2o"] = g("api", "joule", "requests_per_s") / g("api", "h2o", "requests_per_s")
        r["api_vs_h2o_cpu"] = (g("api", "joule", "requests_per_cpu_s")
                               / g("api", "h2o", "requests_per_cpu_s"))
        res["api_p99_ms_half_load"] = g("api", "joule_half_load", "p99_ms")
        res["api_p50_ms_half_load"] = g("api", "joule_half_load", "p50_ms")
    h = cmp_.get("history")
    if h:
        ratios = []
        for q in ("device_1m_24h", "owner_1d_30d"):
            # native clients' p50s (the ratio); the Python clients' for comparison only
            best = min(h[f"postgres_{q}"]["p50_ms"], h[f"vm_{q}"]["p50_ms"])
            h[f"ratio_{q}"] = best / h[f"joule_{q}"]["p50_ms"]
            ratios.append(h[f"ratio_{q}"])
            if f"joule_{q}_python" in h:
                best = min(h[f"postgres_{q}_python"]["p50_ms"], h[f"vm_{q}_python"]["p50_ms"])
                h[f"ratio_{q}_python"] = best / h[f"joule_{q}_python"]["p50_ms"]
        r["history_vs_best_peer"] = min(ratios)
        res["storage_bytes_per_value"] = {"joule": h["joule_bytes_per_value"],
                                          "victoriametrics": h["vm_bytes_per_value"]}
    if g("mqtt", "mosquitto", "events_per_cpu_s"):
        r["mqtt_vs_mosquitto"] = (g("mqtt", "joule", "events_per_cpu_s")
                                  / g("mqtt", "mosquitto", "events_per_cpu_s"))
    if g("ingest", "joule_fsync", "rss_bytes_per_1k_devices"):
        res["rss_bytes_per_1k_devices"] = g("ingest", "joule_fsync", "rss_bytes_per_1k_devices")
        res["rss_growth_bytes_per_1k_devices"] = g("ingest", "joule_fsync",
                                                   "rss_growth_bytes_per_1k_devices")
    fio = cmp_.get("fio") or _get(cmp_, "fsync", "fio") or {}
    if fio.get("fdatasync_p50_ms") is not None:
        res["fsync_latency"] = {"joule_ack_p50_ms": g(fs, "joule_fsync", "ack_p50_ms"),
                                "joule_ack_p99_ms": g(fs, "joule_fsync", "ack_p99_ms"),
                                "fio_fdatasync_p50_ms": fio["fdatasync_p50_ms"],
                                "fio_fdatasync_p99_ms": fio["fdatasync_p99_ms"]}
    res["machine"]["loadavg_during"] = loads
    res["machine"]["loadavg_max"] = max(loads)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    shutil.rmtree(ctx.tmp, ignore_errors=True)
    log("wrote", a.out)


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


if __name__ == "__main__":
    main()
