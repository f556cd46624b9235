"""Crash test: exactly-once aggregates across `kill -9` (CONTRACT section 2, "Exactly-once").

Several client threads post batches of events (unique event_ids, their own devices) while
the server is SIGKILLed at a random moment; the server is restarted on the same data dir,
three times. The oracle is the set of batches that got a 202: each of those events must be
counted exactly once in the realtime 1m windows; events of a batch whose request failed (no
answer) may be counted 0 or 1 times, never more. Failed batches are re-sent unchanged (same
event_ids and timestamps) until acknowledged, as a well-behaved device would.

Set JOULE_CRASH_SEED to reproduce a run.
"""

import collections
import http.client
import json
import math
import os
import pathlib
import random
import signal
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from joule_harness import JouleServer, fmt_ts, parse_ts  # noqa: E402

CLIENTS = 3
DEVICES_PER_CLIENT = 2
BATCH = 20
STEP_S = 0.1             # event-time step per device
MAX_EVENTS_PER_DEVICE = 25000  # 2500 s of event time: stays inside 45 windows
CYCLES = 3


class Batch:
    def __init__(self, device, events, times):
        self.device = device
        self.events = events
        self.times = times
        self.acked = False
        self.attempts = 0
        self.failed_attempts = 0


class Client(threading.Thread):
    def __init__(self, idx, server, devices, base, run_gate):
        super().__init__(daemon=True, name=f"client-{idx}")
        self.server = server
        self.devices = devices
        self.base = base
        self.run_gate = run_gate          # set = may send
        self.idle = threading.Event()     # set = parked at the gate, nothing in flight
        self.stop_flag = False
        self.no_new_batches = False
        self.next_seq = {d: 0 for d in devices}
        self.counter = {d: 1000.0 for d in devices}
        self.batches = []
        self.pending = None
        self.turn = 0
        self.unexpected = []              # (status, body) other than 202/429/503
        self.requests = 0
        self.failures = 0

    def new_batch(self):
        for _ in range(len(self.devices)):
            dev = self.devices[self.turn % len(self.devices)]
            self.turn += 1
            seq = self.next_seq[dev]
            if seq + BATCH > MAX_EVENTS_PER_DEVICE:
                continue
            events, times = [], []
            for k in range(seq, seq + BATCH):
                t = self.base + k * STEP_S
                self.counter[dev] += 0.5
                events.append({"device_id": dev, "timestamp": fmt_ts(t),
                               "metrics": {"power_w": 100.0 + (k % 7),
                                           "energy_wh": self.counter[dev]},
                               "event_id": f"{dev}-{k}"})
                times.append(t)
            self.next_seq[dev] = seq + BATCH
            b = Batch(dev, json.dumps(events), times)
            self.batches.append(b)
            return b
        return None

    def done(self):
        return self.no_new_batches and self.pending is None

    def run(self):
        while not self.stop_flag:
            if not self.run_gate.is_set() or self.done():
                self.idle.set()
                self.run_gate.wait(0.05)
                if self.done():
                    time.sleep(0.02)
                continue
            self.idle.clear()
            if not self.run_gate.is_set():  # re-check after clearing idle (no race)
                continue
            if self.pending is None:
                if self.no_new_batches:
                    continue
                self.pending = self.new_batch()
                if self.pending is None:
                    self.no_new_batches = True
                    continue
            b = self.pending
            b.attempts += 1
            self.requests += 1
            port = self.server.port
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
                try:
                    conn.request("POST", "/v1/telemetry", body=b.events,
                                 headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    raw = resp.read()
                    status = resp.status
                    retry_after = resp.getheader("Retry-After")
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                b.failed_attempts += 1
                self.failures += 1
                time.sleep(0.05)
                continue
            if status == 202:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                if not isinstance(body, dict) or body.get("rejected", 0) != 0:
                    self.unexpected.append((status, raw[:300]))
                b.acked = True
                self.pending = None
            elif status in (429, 503):
                b.failed_attempts += 1
                try:
                    delay = min(float(retry_after or 0.1), 0.5)
                except ValueError:
                    delay = 0.1
                time.sleep(delay)
            else:
                # Not an acknowledgement; keep the batch "uncertain" and move on so a server
                # bug cannot wedge the client.
                self.unexpected.append((status, raw[:300]))
                b.failed_attempts += 1
                self.pending = None
        self.idle.set()


class Kill9Test(unittest.TestCase):

    def setUp(self):
        seed = int(os.environ.get("JOULE_CRASH_SEED", str(int(time.time() * 1000) % 100000)))
        self.rng = random.Random(seed)
        print(f"\n[kill9] seed={seed} (JOULE_CRASH_SEED to reproduce)", flush=True)
        self.server = JouleServer(env={"JOULE_STREAM_IDLE_TIMEOUT": "2s",
                                       "JOULE_STORAGE_DURABILITY": "fsync"}, name="kill9")
        self.addCleanup(self.server.cleanup)
        self.clients = []
        self.gate = threading.Event()
        self.addCleanup(self._stop_clients)

    def _stop_clients(self):
        for c in self.clients:
            c.stop_flag = True
        self.gate.set()
        for c in self.clients:
            c.join(timeout=20)

    def pause_clients(self, timeout=40):
        self.gate.clear()
        deadline = time.monotonic() + timeout
        for c in self.clients:
            if not c.idle.wait(max(0.0, deadline - time.monotonic())):
                self.fail(f"{c.name} did not become idle within {timeout}s" + self.server.diag())

    def resume_clients(self):
        for c in self.clients:
            c.idle.clear()
        self.gate.set()

    # ------------------------------------------------------------------ oracle

    def oracle(self):
        """{device: {window_start: [lo, hi]}}: lo = acknowledged events, hi = lo + events
        of batches that were sent but never acknowledged."""
        out = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))
        for c in self.clients:
            for b in c.batches:
                if not b.acked and b.attempts == 0:
                    continue
                for t in b.times:
                    ws = math.floor(t / 60) * 60
                    cell = out[b.device][ws]
                    if b.acked:
                        cell[0] += 1
                    cell[1] += 1
        return out

    def sums(self, device):
        """(sum of power_w energy_wh, sum of energy_wh delta) over all 1m windows."""
        status, _, body = self.server.realtime(device, windows=1000)
        self.assertEqual(status, 200, f"realtime {device}: {body!r}" + self.server.diag())
        energy = delta = 0.0
        for r in body.get("data", []):
            m = r.get("metrics") or {}
            energy += (m.get("power_w") or {}).get("energy_wh", 0.0) or 0.0
            delta += (m.get("energy_wh") or {}).get("delta", 0.0) or 0.0
        return energy, delta

    def expected_sums(self, device):
        """The whole-series trapezoid integral and counter increase of an acknowledged,
        gap-free series (all consecutive samples are STEP_S apart, well under max_gap)."""
        n = max(c.next_seq[device] for c in self.clients if device in c.devices)
        power = [100.0 + (k % 7) for k in range(n)]
        energy = sum((a + b) / 2 * STEP_S / 3600 for a, b in zip(power, power[1:]))
        return energy, 0.5 * (n - 1)

    def counted(self, device):
        status, _, body = self.server.realtime(device, windows=1000)
        if status == 404:
            return {}
        if status != 200 or not isinstance(body, dict):
            self.fail(f"realtime {device}: HTTP {status} {body!r}" + self.server.diag())
        got = {}
        for r in body.get("data", []):
            ws = parse_ts(r["window_start"])
            if ws in got:
                self.fail(f"{device}: window {r['window_start']} listed twice" +
                          self.server.diag())
            got[ws] = r.get("count", 0)
        return got

    def compare(self):
        oracle = self.oracle()
        stats = collections.Counter()
        problems = []
        for dev in self.devices:
            got = self.counted(dev)
            windows = set(got) | set(oracle.get(dev, {}))
            for ws in sorted(windows):
                lo, hi = oracle.get(dev, {}).get(ws, [0, 0])
                n = got.get(ws, 0)
                stats["acknowledged"] += lo
                stats["uncertain"] += hi - lo
                stats["counted"] += n
                if n < lo:
                    stats["lost"] += lo - n
                    problems.append(f"{dev} {fmt_ts(ws)}: counted {n} < acknowledged {lo}")
                if n > hi:
                    stats["duplicated"] += n - hi
                    problems.append(f"{dev} {fmt_ts(ws)}: counted {n} > sent {hi}")
                stats["uncertain_present"] += max(0, min(n, hi) - lo)
        return stats, problems

    def await_consistent(self, what, timeout=20):
        """Polls until no acknowledged event is missing (recovery may finish after /readyz),
        then requires that nothing is over-counted."""
        deadline = time.monotonic() + timeout
        while True:
            stats, problems = self.compare()
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(f"[kill9] {what}: acknowledged={stats['acknowledged']} "
              f"counted={stats['counted']} lost={stats['lost']} "
              f"duplicated={stats['duplicated']} uncertain={stats['uncertain']} "
              f"(present={stats['uncertain_present']})", flush=True)
        if problems:
            self.fail(f"{what}: exactly-once violated (lost={stats['lost']}, "
                      f"duplicated={stats['duplicated']}):\n  " + "\n  ".join(problems[:40])
                      + self.server.diag())
        return stats

    # -------------------------------------------------------------------- test

    def test_kill9_exactly_once(self):
        run = uuid.uuid4().hex[:6]
        now = time.time()
        base = (math.floor(now / 60) - 45) * 60
        self.server.start()
        self.devices = []
        for i in range(CLIENTS):
            devs = [f"crash-{run}-c{i}-d{j}" for j in range(DEVICES_PER_CLIENT)]
            self.devices += devs
            self.clients.append(Client(i, self.server, devs, base, self.gate))
        for c in self.clients:
            c.start()

        for cycle in range(1, CYCLES + 1):
            self.resume_clients()
            time.sleep(self.rng.uniform(1.5, 3.5))  # ingest under load, then crash
            code = self.server.kill9()
            self.assertEqual(code, -signal.SIGKILL, "killed by SIGKILL")
            self.pause_clients()
            acked = sum(b.acked for c in self.clients for b in c.batches)
            print(f"[kill9] cycle {cycle}: killed after {acked} acknowledged batches, "
                  f"{sum(c.failures for c in self.clients)} failed requests so far",
                  flush=True)
            self.server.start()
            self.await_consistent(f"after kill -9 #{cycle} and restart")
            self.assertEqual([u for c in self.clients for u in c.unexpected], [],
                             "unexpected responses" + self.server.diag())

        # Let every client finish (re-send) its last uncertain batch, then require exactness.
        for c in self.clients:
            c.no_new_batches = True
        self.resume_clients()
        deadline = time.monotonic() + 30
        while not all(c.done() for c in self.clients):
            if time.monotonic() > deadline:
                self.fail("clients could not get their last batches acknowledged" +
                          self.server.diag())
            time.sleep(0.05)
        self.pause_clients()
        total_acked = sum(b.acked for c in self.clients for b in c.batches)
        self.assertGreater(total_acked, CYCLES, "the clients made progress")
        stats = self.await_consistent("final")
        # Every batch was finally acknowledged, so the count must be exact.
        self.assertEqual(stats["uncertain"], 0, "all batches acknowledged at the end")
        self.assertEqual(stats["counted"], stats["acknowledged"])
        # Energy and counter increments are counted once too (the replay does not re-add
        # the trapezoids or increments of events that were already folded in).
        for dev in self.devices:
            with self.subTest(device=dev, check="energy and counter delta"):
                (e_got, d_got), (e_exp, d_exp) = self.sums(dev), self.expected_sums(dev)
                self.assertAlmostEqual(e_got, e_exp, delta=1e-6 * max(1.0, e_exp),
                                       msg=f"{dev}: sum of 1m power_w.energy_wh")
                self.assertAlmostEqual(d_got, d_exp, delta=1e-6 * max(1.0, d_exp),
                                       msg=f"{dev}: sum of 1m energy_wh.delta")
        never_acked = [b for c in self.clients for b in c.batches if not b.acked and b.attempts]
        print(f"[kill9] final: {total_acked} batches acknowledged, "
              f"{len(never_acked)} never acknowledged (non-202 answers)", flush=True)

        code = self.server.stop(signal.SIGTERM)
        self.assertEqual(code, 0, "graceful stop after the crash cycles" + self.server.diag())


if __name__ == "__main__":
    unittest.main()
