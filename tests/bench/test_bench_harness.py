"""bench/run.sh and bench/harness/bench.py: argument checks and a server that fails to start
(a black-box report: an unknown --only ran nothing and exited 0, --runs 0 crashed later,
a failed start said only "joule did not start" after 60 s)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import unittest
import unittest.mock

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
RUN_SH = os.path.join(ROOT, "bench", "run.sh")
sys.path.insert(0, os.path.join(ROOT, "bench", "harness"))
import bench  # noqa: E402
import gen_data  # noqa: E402
import http_load  # noqa: E402


def run_sh(*args):
    # Every refusal comes before anything is installed, built or run.
    return subprocess.run(["bash", RUN_SH, *args], capture_output=True, text=True, timeout=30)


class RunShArgumentsTest(unittest.TestCase):
    def test_unknown_only_name_is_refused_with_the_valid_ones(self):
        r = run_sh("--only", "ingset")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("unknown comparison 'ingset'", r.stderr)
        self.assertIn("ingest,fsync,postgres,fio,core,api,history,mqtt,state", r.stderr)
        r = run_sh("--only", "ingest,,core")
        self.assertEqual(r.returncode, 2, r.stderr)
        # A trailing or leading comma passed run.sh's check and failed in bench.py, after
        # the install, build and data generation (found by a black-box test, session 29).
        for value in ("core,", ",core"):
            r = run_sh("--only", value)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("an empty name", r.stderr)

    def test_runs_must_be_a_positive_whole_number(self):
        for value in ("0", "-1", "abc", "1.5", "", "1000", "99999999999999999999"):
            r = run_sh("--runs", value)
            self.assertEqual(r.returncode, 2, f"--runs {value!r}: {r.stderr}")
            self.assertIn("--runs", r.stderr)
            self.assertNotIn("unbound variable", r.stderr)

    def test_an_option_without_its_value(self):
        for opt in ("--runs", "--only"):
            r = run_sh(opt)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(f"{opt} needs a value", r.stderr)
            self.assertNotIn("unbound variable", r.stderr)
        r = run_sh("--runs", "--quick")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--runs needs a value", r.stderr)

    def test_publish_is_not_for_a_subset(self):
        r = run_sh("--only", "api", "--publish")
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_help_names_publish(self):
        r = run_sh("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--publish", r.stdout)
        self.assertNotIn("set -euo", r.stdout)


class BenchPyArgumentsTest(unittest.TestCase):
    def bench_py(self, *args):
        return subprocess.run([sys.executable, bench.__file__, "--data", "x", "--bin-dir", "x",
                               "--joule", "x", "--out", "x", *args],
                              capture_output=True, text=True, timeout=30)

    def test_only_and_runs(self):
        r = self.bench_py("--only", "ingset")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown comparison 'ingset'", r.stderr)
        r = self.bench_py("--runs", "0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--runs", r.stderr)


class ServerStartTest(unittest.TestCase):
    def start(self, script):
        d = tempfile.mkdtemp(prefix="bench-harness-test-")
        self.addCleanup(shutil.rmtree, d, True)
        log_path = os.path.join(d, "joule.log")
        log = open(log_path, "w")
        self.addCleanup(log.close)
        proc = subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait()))
        return proc, log_path

    def test_a_server_that_exits_is_reported_at_once_with_status_and_log(self):
        proc, log_path = self.start(
            "echo 'joule: storage.data_dir: cannot create /nope: Permission denied' >&2; exit 3")
        t0 = time.monotonic()
        with self.assertRaises(RuntimeError) as cm:
            bench.wait_healthy(proc, bench.free_port(), log_path, timeout=30)
        self.assertLess(time.monotonic() - t0, 10)
        message = str(cm.exception)
        self.assertIn("status 3", message)
        self.assertIn(log_path, message)
        self.assertIn("cannot create /nope: Permission denied", message)

    def test_a_server_that_never_answers_is_reported_with_its_log(self):
        proc, log_path = self.start("echo 'still starting'; sleep 30")
        with self.assertRaises(RuntimeError) as cm:
            bench.wait_healthy(proc, bench.free_port(), log_path, timeout=1)
        message = str(cm.exception)
        self.assertIn("did not answer /healthz", message)
        self.assertIn("still starting", message)


class LoaderAffinityTest(unittest.TestCase):
    """http_load.py: with --affinity device every device's lines go over one connection, in
    file order (the loader used to deal batches round-robin, which reordered a device's
    events between racing connections); --affinity none keeps the round-robin shape."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.lines = []
        for sec in range(6):
            for dev in range(7):
                self.lines.append(b'{"device_id":"d-%d","timestamp":%d,"metrics":{"p":%d}}'
                                  % (dev, 1000 * sec, sec))
        self.ndjson = os.path.join(self.dir, "e.ndjson")
        with open(self.ndjson, "wb") as f:
            f.write(b"\n".join(self.lines) + b"\n")
        self.influx = os.path.join(self.dir, "e.lp")
        with open(self.influx, "wb") as f:
            for sec in range(6):
                for dev in range(7):
                    f.write(b"telemetry,device_id=d-%d p=%d %d\n" % (dev, sec, sec))

    def tearDown(self):
        shutil.rmtree(self.dir)

    @staticmethod
    def lines_of(body, fmt):
        if fmt == "json-array":
            return body[1:-1].split(b"},{")
        return body.rstrip(b"\n").split(b"\n")

    def test_each_device_over_one_connection_in_order(self):
        for path, fmt, key in ((self.ndjson, "json-array", rb'"device_id":"(d-\d)"'),
                               (self.influx, "lines", rb"device_id=(d-\d)")):
            per_conn, n = http_load.build_bodies(path, fmt, 4, 3, "device")
            self.assertEqual(n, 42)
            seen = {}
            total = 0
            for k, bodies in enumerate(per_conn):
                for body in bodies:
                    lines = self.lines_of(body, fmt)
                    self.assertLessEqual(len(lines), 4)
                    for line in lines:
                        total += 1
                        dev = http_load.re.search(key, line).group(1)
                        self.assertEqual(seen.setdefault(dev, [k, -1])[0], k, dev)
                        sec = int(http_load.re.search(rb"p[\"=:]+(\d+)", line).group(1))
                        self.assertGreater(sec, seen[dev][1], dev)  # in file order
                        seen[dev][1] = sec
            self.assertEqual(total, 42)
            self.assertEqual(len(seen), 7)
            self.assertGreater(sum(1 for b in per_conn if b), 1)  # spread over connections

    def test_round_robin_deals_the_file_batches(self):
        per_conn, n = http_load.build_bodies(self.ndjson, "json-array", 5, 3, "none")
        self.assertEqual(n, 42)
        batches = [b"[" + b",".join(self.lines[i:i + 5]) + b"]" for i in range(0, 42, 5)]
        for k in range(3):
            self.assertEqual(per_conn[k], batches[k::3])

    def test_a_line_without_a_device_is_refused(self):
        path = os.path.join(self.dir, "bad.ndjson")
        with open(path, "wb") as f:
            f.write(b'{"timestamp":1}\n')
        with self.assertRaises(SystemExit):
            http_load.build_bodies(path, "json-array", 4, 2, "device")


class FreshDataTest(unittest.TestCase):
    """gen_data.py: the ingest data lies in the current hour with 5 minutes of it left, so
    that Joule's 1h windows stay open through the ingest comparison (session 18: data whose
    hour had ended doubled Joule's history writes in the measured minute)."""

    def clock(self, t):
        self.now = t
        self.slept = 0.0

        def sleep(s):
            self.slept += s
            self.now += s
        return (unittest.mock.patch.object(gen_data.time, "time", lambda: self.now),
                unittest.mock.patch.object(gen_data.time, "sleep", sleep))

    def start(self, t, seconds=60):
        a, b = self.clock(t)
        with a, b:
            return gen_data.fresh_start_ms(seconds) // 1000

    def test_mid_hour_goes_back_fifteen_minutes(self):
        hour = 1796054400  # 16:00 UTC
        s = self.start(hour + 40 * 60 + 30)
        self.assertEqual(s, hour + 24 * 60)  # minute-aligned, 15 min + 60 s back
        self.assertEqual(self.slept, 0)

    def test_early_in_the_hour_stays_in_it(self):
        hour = 1796054400
        s = self.start(hour + 5 * 60)
        self.assertEqual(s, hour + 60)
        self.assertEqual(self.slept, 0)
        s = self.start(hour + 30)  # the data would end in the future: waits
        self.assertEqual(s, hour + 60)
        self.assertGreaterEqual(self.now, s + 60)

    def test_near_the_hours_end_waits_for_the_next(self):
        hour = 1796054400
        s = self.start(hour + 57 * 60)
        self.assertEqual(s // 3600 * 3600, hour + 3600)
        self.assertLessEqual(s + 60, self.now)

    def test_reuse_only_within_the_data_hour(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        hour = 1796054400
        settings = {"devices": 10, "seconds": 60, "seed": 7, "history_devices": 2,
                    "history_days": 31}
        args = types.SimpleNamespace(**settings)
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"start_ms": (hour + 600) * 1000, "settings": settings}, f)
        for t, fresh in ((hour + 1200, True), (hour + 3600 - 200, False), (hour + 3700, False)):
            a, b = self.clock(t)
            with a, b:
                self.assertEqual(gen_data.still_fresh(d, args), fresh, t - hour)
        self.assertFalse(gen_data.still_fresh(os.path.join(d, "missing"), args))
        # Made with other settings (found by the harness's black-box test, session 29: data
        # of 10 devices was reused for a run asking 20), or by an older generator that did
        # not record them: not reused.
        a, b = self.clock(hour + 1200)
        with a, b:
            other = types.SimpleNamespace(**dict(settings, devices=20))
            self.assertFalse(gen_data.still_fresh(d, other))
            with open(os.path.join(d, "meta.json"), "w") as f:
                json.dump({"start_ms": (hour + 600) * 1000}, f)
            self.assertFalse(gen_data.still_fresh(d, args))


if __name__ == "__main__":
    unittest.main()
