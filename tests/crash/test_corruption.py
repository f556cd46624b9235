"""Bit flips in what a restart trusts: sealed log segments and processor checkpoints.

Policy (docs/RELIABILITY.md): a damaged sealed segment or checkpoint is detected on start
(CRCs) and the server refuses to start, naming the file; it never serves around it. Moving
the damaged checkpoint away makes the server rebuild from the log. This test ingests
events, stops the server cleanly, then flips one random bit at a time in a sealed segment
or a checkpoint and checks that every flip is refused, and that the undamaged data dir
starts again with every acknowledged event counted once.

Set JOULE_CRASH_SEED to reproduce a run.
"""

import os
import pathlib
import random
import sys
import time
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from joule_harness import JouleServer, ServerError, fmt_ts, poll  # noqa: E402

DEVICES = 6
EVENTS_PER_DEVICE = 300
FLIPS_PER_KIND = 6


def flip_bit(path, rng):
    data = bytearray(pathlib.Path(path).read_bytes())
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data), bit


class CorruptionTest(unittest.TestCase):
    def setUp(self):
        seed = int(os.environ.get("JOULE_CRASH_SEED", random.randrange(1 << 30)))
        print(f"\n[corruption] seed={seed} (JOULE_CRASH_SEED to reproduce)", flush=True)
        self.rng = random.Random(seed)
        self.server = JouleServer(env={"JOULE_STORAGE_LOG_SEGMENT_BYTES": "16384",
                                       "JOULE_STORAGE_LOG_PARTITIONS": "2",
                                       "JOULE_STREAM_PROCESSOR_THREADS": "1",
                                       "JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "0"},
                                  name="corruption")
        self.addCleanup(self.server.cleanup)

    def ingest(self):
        base = int(time.time()) - 600
        acked = 0
        for d in range(DEVICES):
            dev = f"flip-{d}"
            for start in range(0, EVENTS_PER_DEVICE, 50):
                events = [{"device_id": dev, "event_id": f"{dev}-{k}",
                           "timestamp": fmt_ts(base + k * 0.5),
                           "metrics": {"power_w": 100.0 + k % 7}}
                          for k in range(start, start + 50)]
                status, _, body = self.server.post_events(events)
                self.assertEqual(status, 202, body)
                acked += len(events)
        return acked

    def counted(self):
        total = 0
        for d in range(DEVICES):
            status, _, body = self.server.realtime(f"flip-{d}", windows=1000)
            if status == 404:
                continue
            self.assertEqual(status, 200, f"{body!r}" + self.server.diag())
            total += sum(int(r.get("count", 0)) for r in body.get("data", []))
        return total

    def assert_refused(self, what, path, bit):
        try:
            self.server.start()
        except ServerError:
            self.assertNotEqual(self.server.proc.returncode, 0)
            tail = self.server.log_lines()[-40:]
            self.assertTrue(any("corruption" in line.lower() for line in tail),
                            f"refused, but not for corruption ({what} {path}, bit {bit})"
                            + self.server.diag())
            return 1
        self.server.stop()
        self.fail(f"the server started with a bit flipped in {what} {path} (bit {bit})"
                  + self.server.diag())

    def test_flips_are_refused_never_served(self):
        self.server.start()
        acked = self.ingest()
        self.assertEqual(poll(lambda: self.counted() == acked, timeout=60), True,
                         f"counted {self.counted()} of {acked}" + self.server.diag())
        self.assertEqual(self.server.stop(), 0)
        data = pathlib.Path(self.server.data_dir)

        sealed = []
        for pdir in sorted((data / "log").glob("p-*")):
            segs = sorted(pdir.glob("*.seg"))
            sealed += segs[:-1]  # the last is active: a flip there is a torn tail
        checkpoints = sorted(p for p in (data / "checkpoints").iterdir()
                             if p.is_file() and not p.name.endswith(".tmp"))
        self.assertTrue(sealed, "no sealed segment: raise EVENTS_PER_DEVICE")
        self.assertTrue(checkpoints, "no checkpoint written on SIGTERM")

        refused = flips = 0
        for what, files in (("sealed segment", sealed), ("checkpoint", checkpoints)):
            for _ in range(FLIPS_PER_KIND):
                path = self.rng.choice(files)
                good = path.read_bytes()
                bad, bit = flip_bit(path, self.rng)
                path.write_bytes(bad)
                flips += 1
                try:
                    refused += self.assert_refused(what, path, bit)
                finally:
                    path.write_bytes(good)
        served_silently = flips - refused
        print(f"faults: bit_flip_server: flips={flips} refused_start={refused} "
              f"served_silently={served_silently}", flush=True)
        self.assertEqual(served_silently, 0)

        # Undamaged again: starts, and every acknowledged event is counted exactly once.
        self.server.start()
        self.assertTrue(poll(lambda: self.counted() == acked, timeout=60),
                        f"counted {self.counted()} of {acked}" + self.server.diag())
        counted = self.counted()
        print(f"faults: bit_flip_server_restart: acknowledged={acked} "
              f"lost={max(0, acked - counted)} duplicated={max(0, counted - acked)}", flush=True)
        self.assertEqual(self.server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
