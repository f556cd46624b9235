"""A restart takes events while the processors restore their state.

Policy (docs/RELIABILITY.md, "Restarts"): the listeners open before the processors restore
their checkpoints (seconds for a large state), so ingest is refused only while the process
itself starts; /readyz answers 503 "starting" until the processors have restored and caught
up with the log, and what was acknowledged meanwhile is in the log like any other event —
processed once the state is back, and kept through a kill -9 during the restore.

The processors' start is held (JOULE_TEST_HOLD=processor.start:FILE, src/common/test_hold.h)
while the file exists, so the test sees the window however fast the restore is.
"""

import json
import os
import pathlib
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from joule_harness import (JouleServer, fmt_ts, minute_base, parse_prometheus,  # noqa: E402
                           poll, metric_sum)


class RestartAvailabilityTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="joule-hold-")
        self.hold = os.path.join(self.tmp, "hold")
        self.server = JouleServer(env={"JOULE_TEST_HOLD": f"processor.start:{self.hold}"},
                                  name="restart-availability")
        self.addCleanup(self.server.cleanup)
        self.addCleanup(lambda: os.path.exists(self.hold) and os.remove(self.hold))
        self.device = f"ra-{uuid.uuid4().hex[:8]}"
        self.base = minute_base(3)

    def events(self, first, n):
        return [{"device_id": self.device, "event_id": f"{self.device}-{k}",
                 "timestamp": fmt_ts(self.base + 2 * k), "metrics": {"power_w": 10.0 + k}}
                for k in range(first, first + n)]

    def counted(self):
        status, _, body = self.server.realtime(self.device, windows=10)
        if status != 200:
            return 0
        return sum(int(r.get("count", 0)) for r in body.get("data", [])
                   if r.get("window_start") == fmt_ts(self.base))

    def this_run(self):
        """The stderr lines of the server's current run."""
        lines = self.server.log_lines()
        starts = [i for i, line in enumerate(lines) if line.startswith("----- ") and " run " in line]
        return lines[starts[-1]:] if starts else lines

    def run_once_with(self, n):
        """A first run that processes n events and stops cleanly (the state to restore)."""
        s = self.server
        s.start()
        self.assertEqual(s.post_events(self.events(0, n))[0], 202)
        self.assertTrue(poll(lambda: self.counted() == n, timeout=20), s.diag())
        self.assertEqual(s.stop(), 0, s.diag())

    def start_held(self):
        pathlib.Path(self.hold).touch()
        self.server.start(wait_ready=False)
        status, _, body = self.server.request("GET", "/readyz")
        self.assertEqual(status, 503, body)
        self.assertEqual(body.get("status"), "starting", body)

    def test_events_are_taken_while_the_state_is_restored(self):
        s = self.server
        self.run_once_with(10)
        self.start_held()
        status, _, body = s.post_events(self.events(10, 10))
        self.assertEqual(status, 202, body)
        self.assertEqual(s.post_events(self.events(5, 1))[0], 202)  # a duplicate, as ever
        # Still held: nothing is processed, the log has it.
        m = parse_prometheus(s.metrics_text())
        self.assertEqual(metric_sum(m, "joule_processor_events_total"), 0, s.diag())
        # The lag counts from the checkpoints' offsets: the 11 events taken during the hold,
        # not the first run's 10 already processed (it counted the whole log).
        self.assertEqual(metric_sum(m, "joule_processor_lag_records"), 11, s.diag())
        self.assertEqual(s.request("GET", "/readyz")[0], 503)
        self.assertFalse(any("processors started" in line for line in self.this_run()))
        # Reads meanwhile: health is not known yet (503, not "no such device"); realtime
        # answers from history.
        status, headers, body = s.request("GET", f"/v1/devices/{self.device}/health")
        self.assertEqual(status, 503, body)
        self.assertEqual(body["error"]["code"], "unavailable", body)
        self.assertIn("retry-after", headers)
        status, _, body = s.realtime(self.device, windows=10)
        self.assertEqual(status, 200, body)
        self.assertEqual(self.counted(), 10, body)

        os.remove(self.hold)
        s.wait_ready(deadline=time.monotonic() + 60)
        self.assertTrue(poll(lambda: self.counted() == 20, timeout=20),
                        f"{self.counted()}" + s.diag())
        self.assertTrue(any("processors started" in line for line in self.this_run()), s.diag())
        status, _, body = s.request("GET", f"/v1/devices/{self.device}/health")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["events"], 20, body)
        self.assertEqual(s.stop(), 0, s.diag())

    def test_what_was_taken_during_the_restore_survives_a_kill(self):
        s = self.server
        self.run_once_with(6)
        self.start_held()
        self.assertEqual(s.post_events(self.events(6, 6))[0], 202)
        s.kill9()
        os.remove(self.hold)
        s.start()
        self.assertTrue(poll(lambda: self.counted() == 12, timeout=20),
                        f"{self.counted()}" + s.diag())
        self.assertEqual(s.stop(), 0, s.diag())

    def test_a_processor_that_cannot_start_stops_the_server(self):
        # Its checkpoint was written for other log partitions (processor_threads changed):
        # refused as before, after the listeners opened — the process exits 1 and says why.
        s = self.server
        s.overrides["JOULE_STREAM_PROCESSOR_THREADS"] = "2"
        s.start()
        self.assertEqual(s.post_events(self.events(0, 3))[0], 202)
        self.assertEqual(s.stop(), 0, s.diag())
        s.overrides["JOULE_STREAM_PROCESSOR_THREADS"] = "1"
        s.start(wait_ready=False)
        self.assertTrue(poll(lambda: not s.running(), timeout=30), s.diag())
        self.assertEqual(s.proc.returncode, 1, s.diag())
        self.assertTrue(any("cannot start processor" in line and "now reads [0, 1]" in line
                            for line in s.log_lines()), s.diag())
        # The last line says the stop was not clean, and why.
        stopped = [json.loads(line) for line in self.this_run() if '"msg":"stopped"' in line]
        self.assertEqual(len(stopped), 1, s.diag())
        self.assertEqual(stopped[0]["level"], "error", stopped)
        self.assertEqual(stopped[0]["clean"], "false", stopped)
        self.assertIn("now reads [0, 1]", stopped[0]["processors_start"])


if __name__ == "__main__":
    unittest.main()
