"""The raw archive (issue 7, docs/formats/archive.md) against the real binary: every
accepted event is archived exactly once (an oracle of acknowledged events), also across
SIGKILL; files are complete zstd streams readable by the `zstd` CLI with one JSON object
per line; an event later than allowed_lateness is archived but not in the windows until
`joule replay` (server stopped) folds it in, equal to a from-scratch computation; a second
replay changes nothing; `joule export` round trip (NDJSON and CSV)."""

import glob
import json
import os
import shutil
import subprocess
import threading
import time
import unittest
import uuid

from joule_harness import JouleServer, fmt_ts, joule_bin, minute_base, poll

ENV = {
    "JOULE_STREAM_ALLOWED_LATENESS": "10s",
    "JOULE_STREAM_OUT_OF_ORDERNESS": "1s",
    "JOULE_ARCHIVE_MAX_FILE_AGE": "1s",
}


def uid():
    return uuid.uuid4().hex[:8]


def archive_rows(data_dir):
    """Every row of every published archive file, decompressed with the zstd CLI."""
    rows = []
    for path in sorted(glob.glob(os.path.join(data_dir, "archive", "dt=*", "hour=*", "*"))):
        name = os.path.basename(path)
        if not name.endswith(".ndjson.zst") or name.startswith("."):
            continue
        out = subprocess.run(["zstd", "-dcq", path], check=True, capture_output=True).stdout
        text = out.decode("utf-8")
        assert text.endswith("\n"), f"{path}: last row without newline"
        for line in text.splitlines():
            rows.append(json.loads(line))
    return rows


def identity(row):
    return (row["device_id"], row["timestamp"], row.get("event_id"))


def run_cli(server, *args, check=True):
    env = server.environment()
    proc = subprocess.run([joule_bin(), *args], env=env, capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"joule {' '.join(args)} -> {proc.returncode}\n"
                             f"stdout: {proc.stdout.decode()}\nstderr: {proc.stderr.decode()}")
    return proc


@unittest.skipUnless(shutil.which("zstd"), "the zstd CLI is needed (Debian package zstd)")
class ArchiveTest(unittest.TestCase):
    def server(self, **extra):
        env = dict(ENV)
        env.update(extra)
        s = JouleServer(env=env, name=self._testMethodName)
        self.addCleanup(s.cleanup)
        return s

    def wait_archived(self, server, expected_count, timeout=20):
        rows = poll(lambda: (lambda r: r if len(r) >= expected_count else None)(
            archive_rows(server.data_dir)), timeout=timeout)
        self.assertTrue(rows, f"archive did not reach {expected_count} rows: "
                        f"{len(archive_rows(server.data_dir))}" + server.diag())
        return rows

    def test_every_accepted_event_once_and_export_round_trip(self):
        s = self.server()
        s.start()
        base = time.time() - 600
        dev = [f"arch-{uid()}-{i}" for i in range(3)]
        sent = []
        for i in range(30):
            e = {"device_id": dev[i % 3], "timestamp": fmt_ts(base + i * 7),
                 "metrics": {"power_w": 10.0 + i, "energy_wh": 1000.0 + i}}
            if i % 4 == 0:
                e["event_id"] = f"id-{i}"
            if i % 5 == 0:
                e["meta"] = {"firmware": "1.0.3", "n": i}
            sent.append(e)
        # Sub-millisecond time: the archive keeps it (it is the event's identity).
        sent.append({"device_id": dev[0], "timestamp": "2020-01-01T00:00:00Z",
                     "metrics": {"x": 1}})  # rejected: older than max_event_age
        sub_ms = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(base) + 400)) + ".250123Z"
        sent.append({"device_id": dev[1], "timestamp": sub_ms, "metrics": {"power_w": 5}})
        status, _, body = s.post_events(sent)
        self.assertEqual(status, 202, body)
        self.assertEqual(body["accepted"], 31, body)
        accepted = [e for e in sent if not e["timestamp"].startswith("2020")]

        rows = self.wait_archived(s, len(accepted))
        time.sleep(1.5)  # nothing more appears
        rows = archive_rows(s.data_dir)
        self.assertEqual(len(rows), len(accepted), s.diag())
        by_id = {identity(r): r for r in rows}
        self.assertEqual(len(by_id), len(rows), "an event archived twice")
        for e in accepted:
            r = by_id.get((e["device_id"], e["timestamp"], e.get("event_id")))
            self.assertIsNotNone(r, f"not archived: {e}")
            self.assertEqual(r["metrics"], {k: float(v) for k, v in e["metrics"].items()})
            self.assertEqual(r.get("meta"), e.get("meta"))
            self.assertIn("received_at", r)
        # Layout: by event hour, nothing left in staging after publication.
        for path in glob.glob(os.path.join(s.data_dir, "archive", "dt=*", "hour=*", "*")):
            self.assertRegex(path, r"dt=\d{4}-\d\d-\d\d/hour=\d\d/part-\d+\.ndjson\.zst$")

        # Export (works while the server runs: it reads published files only).
        frm, to = fmt_ts(base - 60), fmt_ts(base + 3600)
        out = run_cli(s, "export", "--from", frm, "--to", to).stdout.decode()
        exported = [json.loads(l) for l in out.splitlines()]
        self.assertEqual(sorted(map(identity, exported)), sorted(map(identity, rows)))
        self.assertEqual(sorted(json.dumps(r, sort_keys=True) for r in exported),
                         sorted(json.dumps(r, sort_keys=True) for r in rows))
        times = [r["timestamp"] for r in exported]
        self.assertEqual(times, sorted(times), "export is in event-time order")
        out = run_cli(s, "export", "--from", frm, "--to", to, "--device", dev[2],
                      "--format", "csv").stdout.decode().splitlines()
        self.assertEqual(out[0], "device_id,timestamp,received_at,event_id,metric,value,meta")
        want = sum(len(e["metrics"]) for e in accepted if e["device_id"] == dev[2])
        self.assertEqual(len(out) - 1, want)
        self.assertTrue(all(line.startswith(dev[2] + ",") for line in out[1:]))

    def test_sigkill_during_ingest_neither_loses_nor_duplicates(self):
        s = self.server()
        s.start()
        dev = f"kill-{uid()}"
        acked, sent = [], []
        lock = threading.Lock()
        stop = threading.Event()
        counter = [0]

        def ingest():
            while not stop.is_set():
                batch = []
                with lock:
                    for _ in range(40):
                        n = counter[0]
                        counter[0] += 1
                        batch.append({"device_id": f"{dev}-{n % 4}", "event_id": f"e{n}",
                                      "timestamp": fmt_ts(time.time() - 30 + (n % 20) * 0.001),
                                      "metrics": {"power_w": float(n)}})
                    sent.extend(batch)
                try:
                    status, _, _ = s.request("POST", "/v1/telemetry", batch, timeout=5,
                                             raw_errors=True)
                except Exception:
                    time.sleep(0.05)
                    continue
                if status == 202:
                    with lock:
                        acked.extend(batch)

        for _ in range(2):
            stop.clear()
            t = threading.Thread(target=ingest)
            t.start()
            time.sleep(2.5)  # several archive rounds (max_file_age 1s)
            s.kill9()
            stop.set()
            t.join()
            s.start()
        t = threading.Thread(target=ingest)
        stop.clear()
        t.start()
        time.sleep(1.0)
        stop.set()
        t.join()
        self.assertEqual(s.stop(), 0, s.diag())  # graceful: everything sealed

        rows = archive_rows(s.data_dir)
        ids = [r["event_id"] for r in rows]
        dups = {i for i in ids if ids.count(i) > 1}
        self.assertFalse(dups, f"archived twice: {sorted(dups)[:10]}")
        sent_ids = {e["event_id"] for e in sent}
        self.assertTrue(set(ids) <= sent_ids, "archive holds events never sent")
        missing = {e["event_id"] for e in acked} - set(ids)
        self.assertFalse(missing, f"{len(missing)} acknowledged events not archived, e.g. "
                         f"{sorted(missing)[:5]}")
        self.assertGreater(len(acked), 100)
        staging = os.path.join(s.data_dir, "archive", ".staging")
        self.assertEqual(os.listdir(staging), [], "temp files left after a graceful stop")

    def history(self, server, device, frm, to, resolution="1m"):
        status, _, body = server.request(
            "GET", f"/v1/devices/{device}/metrics/history?from={fmt_ts(frm)}&to={fmt_ts(to)}"
            f"&resolution={resolution}")
        self.assertEqual(status, 200, body)
        return body["data"]

    def register(self, server, device):
        status, _, body = server.request("POST", "/v1/devices",
                                         {"device_id": device, "owner_id": "owner-archive"})
        self.assertEqual(status, 201, body)

    def test_replay_folds_in_too_late_events_and_is_idempotent(self):
        s = self.server()
        s.start()
        dev = f"late-{uid()}"
        self.register(s, dev)  # history is served for registered devices only
        base = minute_base(6)
        on_time = [(base + i * 10, 100.0 + i) for i in range(6)]          # minute 0
        later = [(base + 60 + i * 20, 50.0) for i in range(12)]           # minutes 1..4
        too_late = (base + 35.5, 1000.0)                                  # minute 0, late

        def ev(t, p):
            return {"device_id": dev, "timestamp": fmt_ts(t), "metrics": {"power_w": p}}

        status, _, body = s.post_events([ev(t, p) for t, p in on_time + later])
        self.assertEqual(status, 202, body)
        # Minute 0 is final once the watermark passed it; the late event is then beyond
        # allowed_lateness (10s) and dropped from the windows, but archived.
        final = poll(lambda: [r for r in self.history(s, dev, base, base + 60)
                              if r["final"]], timeout=20)
        self.assertTrue(final, s.diag())
        status, _, body = s.post_events([ev(*too_late)])
        self.assertEqual(status, 202, body)
        self.wait_archived(s, len(on_time) + len(later) + 1)
        time.sleep(1.0)
        before = self.history(s, dev, base, base + 60)[0]
        self.assertEqual(before["count"], 6, before)

        # Replay needs the server stopped: a running one is detected.
        frm, to = fmt_ts(base - 60), fmt_ts(base + 240)
        busy = run_cli(s, "replay", "--from", frm, "--to", to, check=False)
        self.assertEqual(busy.returncode, 3, busy.stderr)
        self.assertIn(b"stop", busy.stderr.lower())
        self.assertEqual(s.stop(), 0, s.diag())

        first = json.loads(run_cli(s, "replay", "--from", frm, "--to", to, "--device", dev)
                           .stdout)
        self.assertGreaterEqual(first["records_written"], 1, first)
        second = json.loads(run_cli(s, "replay", "--from", frm, "--to", to, "--device", dev)
                            .stdout)
        self.assertEqual(second["records_written"], 0, second)

        s.start()
        after = self.history(s, dev, base, base + 60)[0]
        self.assertEqual(after["count"], 7, after)
        self.assertGreater(after["version"], before["version"])
        self.assertEqual(after["max_power_w"], 1000.0)

        # From scratch: a fresh server given the same events in time order.
        fresh = self.server()
        fresh.start()
        self.register(fresh, dev)
        events = sorted(on_time + later + [too_late])
        status, _, body = fresh.post_events([ev(t, p) for t, p in events])
        self.assertEqual(status, 202, body)
        want = poll(lambda: (lambda d: d if d and d[0]["final"] else None)(
            self.history(fresh, dev, base, base + 60)), timeout=20)
        self.assertTrue(want, fresh.diag())
        got = self.history(s, dev, base, base + 180)
        ref = self.history(fresh, dev, base, base + 180)
        strip = lambda r: {k: v for k, v in r.items() if k != "version"}
        ref_by_start = {r["window_start"]: strip(r) for r in ref if r["final"]}
        for r in got:
            if r["window_start"] in ref_by_start:
                self.assertEqual(strip(r), ref_by_start[r["window_start"]])
        self.assertIn(fmt_ts(base), ref_by_start)


if __name__ == "__main__":
    unittest.main()
