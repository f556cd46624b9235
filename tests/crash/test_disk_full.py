"""Disk full under the log: 503 with Retry-After, no crash, ingest resumes when space returns.

The log directory ({data_dir}/log) is a small tmpfs mounted by the test (the test runs as
root, like the CI); a filler file takes every free byte. The log's active segments were
pre-written with zeros before that (docs/formats/log.md, "Pre-written tail"), so batches
still fit there and are acknowledged, durably, until that room is used up; then ingest must
answer 503 with a Retry-After header and store nothing of the refused batches; the server
must stay up; once the filler is deleted, a client retrying every 100 ms must get a 202
within 5 s. At the end every acknowledged event — those of the pre-written room included —
is counted exactly once (acknowledged / lost / duplicated).
"""

import os
import pathlib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from joule_harness import JouleServer, fmt_ts, poll  # noqa: E402

TMPFS_SIZE = "4m"
DEVICE = "full-1"
BATCH = 50
# Batches that can still be acknowledged on the full disk, into the pre-written tail (at
# most one segment, 1 MiB here: ~4.5 KB per batch of 50 events gives ~230; with the few
# records written before the disk fills the tail is 64 KiB, ~15 batches).
MAX_PREWRITTEN_BATCHES = 1000


def fill(path):
    """Writes zeros into `path` until ENOSPC; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n = f.write(chunk)
            except OSError:
                break
            if not n:
                break
            written += n
    # The last partial chunk: fill byte by byte-ish until nothing fits.
    with open(path, "ab", buffering=0) as f:
        for size in (4096, 512, 64, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                    written += size
                except OSError:
                    break
    return written


class DiskFullTest(unittest.TestCase):
    def setUp(self):
        self.server = JouleServer(env={"JOULE_STORAGE_LOG_PARTITIONS": "2",
                                       "JOULE_STORAGE_LOG_SEGMENT_BYTES": "1048576",
                                       "JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "0"},
                                  name="diskfull")
        self.addCleanup(self.server.cleanup)
        self.logdir = pathlib.Path(self.server.data_dir) / "log"
        self.logdir.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                            str(self.logdir)], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, f"cannot mount a tmpfs (needs root): {r.stderr}")
        self.addCleanup(lambda: subprocess.run(["umount", "-l", str(self.logdir)]))
        self.addCleanup(lambda: self.server.stop() if self.server.running() else None)
        # 4 events per second of event time, from 3 h ago: room for the batches of the
        # pre-written tail (each 12.5 s of event time) without reaching the future.
        self.base = int(time.time()) - 3 * 3600
        self.seq = 0

    def batch(self):
        events = [{"device_id": DEVICE, "event_id": f"{DEVICE}-{k}",
                   "timestamp": fmt_ts(self.base + k * 0.25),
                   "metrics": {"power_w": 50.0 + k % 5}}
                  for k in range(self.seq, self.seq + BATCH)]
        return events

    def post(self):
        status, headers, body = self.server.post_events(self.batch())
        if status == 202:
            self.seq += BATCH
        return status, headers, body

    def counted(self):
        status, _, body = self.server.realtime(DEVICE, windows=1000)
        if status == 404:
            return 0
        self.assertEqual(status, 200, f"{body!r}" + self.server.diag())
        return sum(int(r.get("count", 0)) for r in body.get("data", []))

    def test_503_then_resumes_within_5s(self):
        self.server.start()
        for _ in range(10):
            status, _, body = self.post()
            self.assertEqual(status, 202, body)

        filler = self.logdir / "filler"
        filled = fill(filler)
        self.assertGreater(filled, 0)
        # The pre-written tail: acknowledged (and counted at the end) until it is used up.
        runway = 0
        while True:
            status, headers, body = self.post()
            if status != 202:
                break
            runway += 1
            self.assertLess(runway, MAX_PREWRITTEN_BATCHES,
                            "batches keep being acknowledged on a full disk" + self.server.diag())
        self.assertEqual(status, 503, f"expected 503 on a full disk, got {status} {body!r}")
        self.assertIn("retry-after", headers)
        refused = 1
        for _ in range(19):
            status, headers, body = self.post()
            self.assertEqual(status, 503, f"expected 503 on a full disk, got {status} {body!r}")
            self.assertIn("retry-after", headers)
            refused += 1
        self.assertTrue(self.server.running(), "the server died on a full disk" + self.server.diag())
        status, _, _ = self.server.request("GET", "/healthz")
        self.assertEqual(status, 200)

        filler.unlink()
        t0 = time.monotonic()
        resumed_after = None
        while time.monotonic() - t0 < 5.0:
            status, _, body = self.post()
            if status == 202:
                resumed_after = time.monotonic() - t0
                break
            self.assertEqual(status, 503, body)
            time.sleep(0.1)
        self.assertIsNotNone(resumed_after, "ingest did not resume within 5 s of space returning"
                             + self.server.diag())
        for _ in range(10):
            status, _, body = self.post()
            self.assertEqual(status, 202, body)

        acked = self.seq
        poll(lambda: self.counted() >= acked, timeout=60)
        counted = self.counted()
        print(f"faults: disk_full_http: acknowledged={acked} lost={max(0, acked - counted)} "
              f"duplicated={max(0, counted - acked)} refused_503={refused} "
              f"acked_into_prewritten_tail={runway} "
              f"resumed_after_s={resumed_after:.2f}", flush=True)
        self.assertEqual(counted, acked, self.server.diag())
        self.assertEqual(self.server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
