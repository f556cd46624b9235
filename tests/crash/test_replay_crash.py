"""A replay killed at any moment loses none of the differences it owes the open 1h/1d
rollups, and counts none twice (docs/formats/archive.md, "Replay journal").

A replay writes the minutes that fold in too-late events to history, and hands the
difference of each to the engine that still holds its hour and day (the checkpoints of a
stopped data dir, or a running server's processors). Before 2026-11-30 a kill between the
two lost the difference for good: the next replay found the minutes unchanged in history
and handed nothing over, so `1h count=18 | sum of its 1m: 19` (found by a black-box test,
which killed `joule replay` 10-40 ms after it printed `computing:`).

Each case kills the replay deterministically at one step, through the test-only hook
JOULE_TEST_CRASH_AT=name:N (src/common/crash_point.h):

  replay.after_journal    the batch's journal durable, history not written
  replay.after_history    history written and flushed, nothing handed over (the bug)
  checkpoint.after_rename the first checkpoint corrected, the other not (stopped data dir:
                          the 1st checkpoint write; running server: the 3rd, after the two
                          recovery checkpoints the processors write at start)
  replay.after_hand_over  every engine holds the difference, the journal still there

then finishes the work the way an operator would — `joule replay` again, or just starting
the server (`joule serve` after a stopped replay, or the restart of a killed server) — and
checks every device: its too-late minute counts the late event, every 1h and 1d record
equals the sum of its 1m records, and the hours and days together count every event
exactly once. No journal is left behind.
"""

import http.client
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from joule_harness import JouleServer, fmt_ts, joule_bin, minute_base, parse_ts, poll  # noqa: E402

ENV = {
    "JOULE_STREAM_ALLOWED_LATENESS": "10s",
    "JOULE_STREAM_OUT_OF_ORDERNESS": "1s",
    "JOULE_STREAM_MAX_GAP": "30s",
    "JOULE_ARCHIVE_MAX_FILE_AGE": "1s",
    # every partial record to history: the open hours and days are read back from it
    "JOULE_STREAM_HISTORY_PARTIAL_INTERVAL": "0s",
    # two processors, so that a kill can fall between their two checkpoints
    "JOULE_STORAGE_LOG_PARTITIONS": "4",
    "JOULE_STREAM_PROCESSOR_THREADS": "2",
    # no periodic checkpoint: only those the processors write at start and when they take
    # a replay's difference
    "JOULE_STREAM_CHECKPOINT_INTERVAL": "1h",
}
DEVICES = 6
ON_TIME, LATER = 6, 12  # events in minute 0, and in minutes 1..4
EVENTS = ON_TIME + LATER + 1  # and one too late, in minute 0


class ReplayCrashTest(unittest.TestCase):
    """One prepared data dir (a stopped server whose minute 0 lacks a too-late event per
    device), copied for every case."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="joule-replay-crash-")
        cls.template = os.path.join(cls.tmp, "template")
        os.mkdir(cls.template)
        s = JouleServer(env=ENV, data_dir=cls.template, name="prepare")
        try:
            s.start()
            tag = uuid.uuid4().hex[:6]
            cls.devs = [f"rc-{tag}-{i}" for i in range(DEVICES)]
            for d in cls.devs:
                status, _, body = s.request("POST", "/v1/devices",
                                            {"device_id": d, "owner_id": "owner-rc"})
                assert status == 201, body
            cls.base = base = minute_base(6)

            def ev(d, t, p):
                return {"device_id": d, "timestamp": fmt_ts(t), "metrics": {"power_w": p}}

            events = []
            for j, d in enumerate(cls.devs):
                events += [ev(d, base + i * 10, 100.0 + i + j) for i in range(ON_TIME)]
                events += [ev(d, base + 60 + i * 20, 50.0) for i in range(LATER)]
            status, _, body = s.post_events(events)
            assert status == 202, body

            def minute0_final():
                for d in cls.devs:
                    got = cls.history(s, d, base, base + 60)
                    if not got or not got[0]["final"]:
                        return False
                return True
            assert poll(minute0_final, timeout=30), s.diag()
            # Beyond allowed_lateness (10 s) now: archived, left out of the windows.
            status, _, body = s.post_events([ev(d, base + 35.5, 1000.0) for d in cls.devs])
            assert status == 202, body
            assert poll(lambda: all(cls.health(s, d)["late_dropped"] >= 1 for d in cls.devs),
                        timeout=30), s.diag()
            time.sleep(1.5)  # archived (max_file_age 1s)
            assert s.stop() == 0, s.diag()
        except BaseException:
            s.cleanup()
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("JOULE_KEEP_DATA") != "1":
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @staticmethod
    def history(server, device, frm, to, resolution="1m"):
        status, _, body = server.request(
            "GET", f"/v1/devices/{device}/metrics/history?from={fmt_ts(frm)}&to={fmt_ts(to)}"
            f"&resolution={resolution}")
        assert status == 200, body
        return body["data"]

    @staticmethod
    def health(server, device):
        status, _, body = server.request("GET", f"/v1/devices/{device}/health")
        assert status == 200, body
        return body

    def fresh_server(self, **extra):
        data_dir = os.path.join(self.tmp, self._testMethodName)
        shutil.copytree(self.template, data_dir, symlinks=True)
        env = dict(ENV)
        env.update(extra)
        s = JouleServer(env=env, data_dir=data_dir, name=self._testMethodName)
        self.addCleanup(s.cleanup)
        return s

    def replay(self, server, crash=None):
        env = server.environment()
        if crash:
            env["JOULE_TEST_CRASH_AT"] = crash
        return subprocess.run(
            [joule_bin(), "replay", "--from", fmt_ts(self.base - 60),
             "--to", fmt_ts(self.base + 300)], env=env, capture_output=True, timeout=120)

    def assertKilledAt(self, code, stderr, point):
        self.assertEqual(code, -9, stderr[-3000:])
        self.assertIn("test crash point reached", stderr)
        self.assertIn(point.split(":")[0], stderr)

    def assertConsistent(self, s, what):
        """Every device: minute 0 counts the too-late event; every 1h and 1d record is the
        sum of its minutes; hours and days count each event once."""
        day0 = self.base - self.base % 86400  # (UTC devices; history selects by start)
        to = self.base + 600
        for d in self.devs:
            def check():
                minutes = self.history(s, d, day0, to)
                if sum(m["count"] for m in minutes) != EVENTS:
                    return None
                if minutes[0]["count"] != ON_TIME + 1:
                    return None
                for res in ("1h", "1d"):
                    got = self.history(s, d, day0, to, resolution=res)
                    if sum(r["count"] for r in got) != EVENTS:
                        return None
                    for r in got:
                        lo, hi = parse_ts(r["window_start"]), parse_ts(r["window_end"])
                        if r["count"] != sum(m["count"] for m in minutes
                                             if lo <= parse_ts(m["window_start"]) < hi):
                            return None
                return True
            ok = poll(check, timeout=30, interval=0.25)
            self.assertTrue(ok, f"{what}: {d}\n1m: " + json.dumps(
                [(m["window_start"], m["count"]) for m in self.history(s, d, day0, to)]) +
                "\n1h: " + json.dumps(
                    [(r["window_start"], r["count"])
                     for r in self.history(s, d, day0, to, resolution="1h")]) +
                "\n1d: " + json.dumps(
                    [(r["window_start"], r["count"])
                     for r in self.history(s, d, day0, to, resolution="1d")]) + s.diag())

    def assertNoJournal(self, s):
        journal = os.path.join(s.data_dir, "replay_journal")
        left = poll(lambda: not [f for f in os.listdir(journal) if f.endswith(".journal")]
                    if os.path.isdir(journal) else True, timeout=30)
        self.assertTrue(left, os.listdir(journal))

    # ------------------------------------------------------------ stopped data dir

    def stopped_case(self, point, then):
        s = self.fresh_server()
        killed = self.replay(s, crash=point)
        self.assertKilledAt(killed.returncode, killed.stderr.decode(), point)
        if then == "replay":
            again = self.replay(s)
            err = again.stderr.decode()
            self.assertEqual(again.returncode, 0, err)
            self.assertIn("finishing 1 interrupted replay", err)
            self.assertNoJournal(s)
        s.start()
        self.assertConsistent(s, f"killed at {point}, then {then}")
        self.assertNoJournal(s)
        # Nothing is left to do: a further replay writes nothing.
        self.assertEqual(s.stop(), 0, s.diag())
        last = self.replay(s)
        self.assertEqual(last.returncode, 0, last.stderr.decode())
        self.assertEqual(json.loads(last.stdout)["records_written"], 0)
        self.assertNotIn(b"interrupted", last.stderr)

    def test_stopped_killed_after_journal_then_replay(self):
        self.stopped_case("replay.after_journal:1", "replay")

    def test_stopped_killed_after_history_then_replay(self):
        self.stopped_case("replay.after_history:1", "replay")

    def test_stopped_killed_after_history_then_serve(self):
        self.stopped_case("replay.after_history:1", "serve")

    def test_stopped_killed_between_checkpoints_then_replay(self):
        self.stopped_case("checkpoint.after_rename:1", "replay")

    def test_stopped_killed_after_hand_over_then_serve(self):
        self.stopped_case("replay.after_hand_over:1", "serve")

    # ------------------------------------------------------------ running server

    def server_case(self, point):
        s = self.fresh_server(JOULE_TEST_CRASH_AT=point)
        s.start()
        try:
            status, _, job = s.request(
                "POST", "/v1/admin/replay",
                {"from": fmt_ts(self.base - 60), "to": fmt_ts(self.base + 300)}, raw_errors=True)
            self.assertEqual(status, 202, job)
        except (OSError, http.client.HTTPException):
            # The job runs on its own thread once its audit entry is written; on a busy
            # machine it can reach its crash point before the 202 is sent, and the answer
            # dies with the server: no answer is then what a client sees. That the server
            # died at `point` (so the job ran) is checked below.
            pass
        self.assertTrue(poll(lambda: not s.running(), timeout=60), s.diag())
        code = s.stop()
        self.assertKilledAt(code, "\n".join(s.log_lines()), point)
        s.overrides.pop("JOULE_TEST_CRASH_AT")
        s.start()  # the restart finishes the replay
        self.assertConsistent(s, f"server killed at {point}")
        # The replay was audited before it ran, so the crash did not lose the entry.
        status, _, audit = s.request("GET", "/v1/admin/audit?action=replay.started")
        self.assertEqual(status, 200, audit)
        self.assertEqual([e["action"] for e in audit["entries"]], ["replay.started"], audit)
        self.assertNoJournal(s)
        # Again after a kill -9: the processors checkpointed what they took.
        s.kill9()
        s.start()
        self.assertConsistent(s, f"server killed at {point}, then kill -9")

    def test_server_killed_after_journal(self):
        self.server_case("replay.after_journal:1")

    def test_server_killed_after_history(self):
        self.server_case("replay.after_history:1")

    def test_server_killed_between_checkpoints(self):
        self.server_case("checkpoint.after_rename:3")


if __name__ == "__main__":
    unittest.main()
