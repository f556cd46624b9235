"""Bit flips in what a restart trusts: sealed log segments and processor checkpoints.

Policy (docs/RELIABILITY.md): a damaged sealed segment or checkpoint is detected on start
(CRCs) and the server refuses to start, naming the file; it never serves around it. Moving
the damaged checkpoint away makes the server rebuild from the log. This test ingests
events, stops the server cleanly, then flips one random bit at a time in a sealed segment
or a checkpoint and checks that every flip is refused, and that the undamaged data dir
starts again with every acknowledged event counted once.

RuntimeCorruptionTest: the same damage met by a running server. The log consumers are
held (JOULE_TEST_HOLD, src/common/test_hold.h) while events are ingested, a bit is flipped
in a sealed segment they have not read yet, and they are released. Policy (docs/
RELIABILITY.md, "Run-time corruption"): the damaged record is reported once
(joule_log_corrupt_records_total, an error log line, /readyz "degraded" with the report),
its segment is copied to {data_dir}/quarantine/ with a JSON report beside it, and the
partition stops there: the aggregates served are exactly those of the records before the
damage — nothing after it, nothing guessed. Ingest goes on (acknowledged, not processed:
lag). A restart refuses to start on the damaged file; once the segment is restored (here:
the undamaged bytes, as from a backup) every acknowledged event is counted exactly once.

ActiveSegmentDamageTest: damage to acknowledged records in the newest (active) segment,
which recovery used to cut as a "torn tail" with every acknowledged record after it (found
by a black-box test). Policy (docs/formats/log.md, "Recovery"): a torn tail holds only
unacknowledged records and is cut (copied to quarantine first); damage below an offset a
durable checkpoint passed, or an invalid record followed by valid ones that no torn write
explains, refuses the start naming the segment, byte and offset, and changes nothing;
`storage.log_damage = "cut"` cuts it on purpose (copy in quarantine, the checkpoint's
offsets filled) and nothing acknowledged is lost from what the consumers already hold.

Set JOULE_CRASH_SEED to reproduce a run.
"""

import collections
import json
import os
import pathlib
import random
import struct
import sys
import tempfile
import time
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from joule_harness import (JouleServer, ServerError, fmt_ts, metric_sum,  # noqa: E402
                           parse_prometheus, poll)

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
            sealed += segs[:-1]  # the last is active: ActiveSegmentDamageTest
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


class RuntimeCorruptionTest(unittest.TestCase):
    def setUp(self):
        seed = int(os.environ.get("JOULE_CRASH_SEED", random.randrange(1 << 30)))
        print(f"\n[runtime corruption] seed={seed} (JOULE_CRASH_SEED to reproduce)", flush=True)
        self.rng = random.Random(seed)
        fd, self.hold = tempfile.mkstemp(prefix="joule-hold-")
        os.close(fd)
        self.addCleanup(lambda: os.path.exists(self.hold) and os.unlink(self.hold))
        # One partition: log offsets are the order in which this test posts the events.
        self.server = JouleServer(env={"JOULE_STORAGE_LOG_SEGMENT_BYTES": "16384",
                                       "JOULE_STORAGE_LOG_PARTITIONS": "1",
                                       "JOULE_STREAM_PROCESSOR_THREADS": "1",
                                       "JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "0",
                                       "JOULE_TEST_HOLD": f"log.consumers:{self.hold}"},
                                  name="runtime-corruption")
        self.addCleanup(self.server.cleanup)

    def post(self, events):
        status, _, body = self.server.post_events(events)
        self.assertEqual(status, 202, body)
        self.assertEqual(body["accepted"], len(events), body)

    def served_counts(self, dev):
        """{window_start: count} of the realtime windows of dev (memory latest store)."""
        status, _, body = self.server.realtime(dev, windows=1000)
        if status == 404:
            return {}
        self.assertEqual(status, 200, f"{body!r}" + self.server.diag())
        return {r["window_start"]: r["count"] for r in body.get("data", []) if r.get("count")}

    @staticmethod
    def window_counts(events):
        out = collections.defaultdict(lambda: collections.Counter())
        for e in events:
            t = int(e["_t"])
            out[e["device_id"]][fmt_ts(t - t % 60)] += 1
        return {d: dict(c) for d, c in out.items()}

    def test_flip_while_running_is_quarantined_and_never_served(self):
        server = self.server
        server.start()
        base = int(time.time()) - 3600
        devices = [f"rt-{d}" for d in range(6)]
        order = []  # every acknowledged event, in log (offset) order
        for start in range(0, 300, 50):
            for dev in devices:
                events = [{"device_id": dev, "event_id": f"{dev}-{k}",
                           "timestamp": fmt_ts(base + k * 2),
                           "metrics": {"power_w": 100.0 + k % 7}, "_t": base + k * 2}
                          for k in range(start, start + 50)]
                self.post([{k: v for k, v in e.items() if k != "_t"} for e in events])
                order += events
        data = pathlib.Path(server.data_dir)
        segs = sorted((data / "log" / "p-000").glob("*.seg"))
        self.assertGreaterEqual(len(segs), 4, "raise the number of events")
        damaged = segs[len(segs) // 2]  # sealed, not read by anyone yet
        good = damaged.read_bytes()
        bad = bytearray(good)
        bit = self.rng.randrange(len(bad) * 8)
        bad[bit // 8] ^= 1 << (bit % 8)
        damaged.write_bytes(bytes(bad))
        first_of_segment = int(damaged.stem)
        next_base = int(segs[len(segs) // 2 + 1].stem)
        print(f"[runtime corruption] flipped bit {bit} of {damaged.name} "
              f"(offsets {first_of_segment}..{next_base - 1})", flush=True)

        os.unlink(self.hold)  # the consumers read on, up to the damage

        def damage_reported():
            st, _, body = server.request("GET", "/readyz")
            return body if st == 200 and body.get("log", {}).get("damaged") else None
        ready = poll(damage_reported, timeout=60, interval=0.2)
        self.assertTrue(ready, "/readyz reports the damage" + server.diag())
        self.assertEqual(ready["status"], "degraded", ready)
        reports = ready["log"]["damaged"]
        self.assertEqual(len(reports), 1, reports)
        report = reports[0]
        x = report["offset"]
        self.assertEqual(report["partition"], 0, report)
        self.assertEqual(report["segment"], str(damaged), report)
        self.assertTrue(first_of_segment <= x < next_base, report)
        self.assertEqual(report["records_unreadable"], next_base - x, report)

        # The quarantine: the segment as found, and its report.
        quarantined = pathlib.Path(report["quarantined"])
        self.assertEqual(quarantined.parent, data / "quarantine", report)
        self.assertEqual(quarantined.read_bytes(), bytes(bad))
        sidecar = json.loads(quarantined.with_suffix(".json").read_text())
        self.assertEqual(sidecar, report, "the quarantine's report is the one /readyz shows")
        self.assertEqual(sorted(p.suffix for p in (data / "quarantine").iterdir()),
                         [".json", ".seg"])
        m = parse_prometheus(server.metrics_text())
        self.assertEqual(metric_sum(m, "joule_log_corrupt_records_total"), 1)
        self.assertEqual(metric_sum(m, "joule_quarantined_segments_total"), 1)
        self.assertTrue(server.logged("log corruption"), "an error log line" + server.diag())

        # Served: exactly the records before the damage, for every device — and it stays so.
        expected = self.window_counts(order[:x])
        for dev in devices:
            want = expected.get(dev, {})
            self.assertTrue(poll(lambda dev=dev, want=want: self.served_counts(dev) == want,
                                 timeout=30),
                            f"{dev}: served {self.served_counts(dev)} != prefix {want}"
                            + server.diag())
        # Ingest goes on: acknowledged, not processed (lag), never silently dropped.
        extra = [{"device_id": devices[0], "event_id": f"{devices[0]}-late-{k}",
                  "timestamp": fmt_ts(base + 700 + k), "metrics": {"power_w": 5.0},
                  "_t": base + 700 + k} for k in range(20)]
        self.post([{k: v for k, v in e.items() if k != "_t"} for e in extra])
        order += extra
        time.sleep(1.0)  # give a wrong implementation the chance to serve past the damage
        for dev in devices:
            self.assertEqual(self.served_counts(dev), expected.get(dev, {}), dev)
        m = parse_prometheus(server.metrics_text())
        lag = metric_sum(m, "joule_processor_lag_records")
        self.assertEqual(lag, len(order) - x, "lag = acknowledged records after the damage")
        print(f"faults: bit_flip_runtime: acknowledged={len(order)} processed={x} "
              f"stopped_at_offset={x} unreadable_in_segment={report['records_unreadable']} "
              f"lag={lag:.0f} served_wrong=0", flush=True)
        self.assertEqual(server.stop(), 0)

        # A restart refuses the damaged segment, naming it.
        with self.assertRaises(ServerError):
            server.start()
        self.assertTrue(any("corruption" in line.lower() and damaged.name in line
                            for line in server.log_lines()[-40:]), server.diag())

        # Restored (as from a backup): everything acknowledged is counted exactly once.
        damaged.write_bytes(good)
        server.start()
        want_all = self.window_counts(order)
        for dev in devices:
            self.assertTrue(poll(lambda dev=dev: self.served_counts(dev) == want_all[dev],
                                 timeout=60),
                            f"{dev}: {self.served_counts(dev)} != {want_all[dev]}"
                            + server.diag())
        print(f"faults: bit_flip_runtime_restored: acknowledged={len(order)} lost=0 "
              "duplicated=0", flush=True)
        self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()


def log_records(seg):
    """(byte position, framed size, offset) of each record of a segment, up to its data's end."""
    data = pathlib.Path(seg).read_bytes()
    pos, out = 0, []
    while pos + 24 <= len(data) and data[pos:pos + 24] != bytes(24):
        _, length, offset, _ = struct.unpack_from("<IIQq", data, pos)
        out.append((pos, 24 + length, offset))
        pos += 24 + length
    return out


class ActiveSegmentDamageTest(unittest.TestCase):
    EVENTS = 40

    def setUp(self):
        self.server = JouleServer(env={"JOULE_STORAGE_LOG_PARTITIONS": "1",
                                       "JOULE_STREAM_PROCESSOR_THREADS": "1",
                                       "JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "0"},
                                  name="active-damage")
        self.addCleanup(self.server.cleanup)

    def ingest(self):
        base = int(time.time()) - 600
        for k in range(self.EVENTS):  # one request, one record each
            status, _, body = self.server.post_events(
                [{"device_id": "dmg-0", "event_id": f"e-{k}", "timestamp": fmt_ts(base + k),
                  "metrics": {"power_w": 100.0 + k}}])
            self.assertEqual(status, 202, body)

    def counted(self):
        status, _, body = self.server.realtime("dmg-0", windows=1000)
        if status == 404:
            return 0
        self.assertEqual(status, 200, f"{body!r}" + self.server.diag())
        return sum(int(r.get("count", 0)) for r in body.get("data", []))

    def damage(self, index):
        """Flips 3 payload bytes of record `index` of the active segment; returns (segment,
        its bytes before, its bytes after, the damaged record's byte position)."""
        seg = sorted((pathlib.Path(self.server.data_dir) / "log" / "p-000").glob("*.seg"))[-1]
        good = seg.read_bytes()
        pos, _, offset = log_records(seg)[index]
        self.assertEqual(offset, index)
        bad = bytearray(good)
        for i in range(pos + 30, pos + 33):
            bad[i] ^= 0x5A
        seg.write_bytes(bytes(bad))
        return seg, good, bytes(bad), pos

    def assert_refused(self, seg, bad, pos, index):
        with self.assertRaises(ServerError):
            self.server.start()
        self.assertEqual(self.server.proc.returncode, 1)
        refusal = [r for r in self.server.log_records() if r.get("msg") == "cannot open log"]
        self.assertTrue(refusal, "refused, but not by the log" + self.server.diag())
        error = refusal[-1]["error"]
        for expected in (str(seg), f"byte {pos}", f"offset {index}", "Nothing was changed"):
            self.assertIn(expected, error)
        self.assertIn("storage.log_damage", refusal[-1].get("what_to_do", ""))
        self.assertEqual(seg.read_bytes(), bad, "the segment was changed")
        self.assertFalse((pathlib.Path(self.server.data_dir) / "quarantine").exists())

    def cut_on_purpose(self, expect_counted):
        self.server.overrides["JOULE_STORAGE_LOG_DAMAGE"] = "cut"
        self.server.start()
        quarantine = pathlib.Path(self.server.data_dir) / "quarantine"
        names = sorted(p.name for p in quarantine.iterdir())
        self.assertEqual(len(names), 2, names)
        self.assertTrue(names[0].endswith(".bin") and names[1].endswith(".json"), names)
        self.assertTrue(poll(lambda: self.counted() == expect_counted, timeout=30),
                        f"counted {self.counted()} of {expect_counted}" + self.server.diag())
        # Appends go on, and reach the processor.
        status, _, body = self.server.post_events(
            [{"device_id": "dmg-0", "event_id": "after", "timestamp": fmt_ts(time.time() - 1),
              "metrics": {"power_w": 1.0}}])
        self.assertEqual(status, 202, body)
        self.assertTrue(poll(lambda: self.counted() == expect_counted + 1, timeout=30),
                        f"counted {self.counted()}" + self.server.diag())
        self.assertEqual(self.server.stop(), 0)

    def test_damage_below_a_checkpoint_is_refused_then_cut_on_purpose(self):
        # SIGTERM: the processor's checkpoint and the archiver's pass every record.
        self.server.start()
        self.ingest()
        self.assertTrue(poll(lambda: self.counted() == self.EVENTS, timeout=30))
        self.assertEqual(self.server.stop(), 0)
        seg, _, bad, pos = self.damage(20)
        self.assert_refused(seg, bad, pos, 20)
        # The operator cannot restore it: cut on purpose. The processor resumes at its
        # checkpoint (the offsets it passed are filled), so nothing it counted is lost.
        self.cut_on_purpose(self.EVENTS)

    def test_damage_followed_by_acknowledged_records_is_refused_after_a_kill(self):
        # SIGKILL before any checkpoint: only the records after the damaged one tell that it
        # was acknowledged (recovery cut all 40 acknowledged events; found by a black-box
        # test).
        self.server.overrides["JOULE_STREAM_CHECKPOINT_INTERVAL"] = "1h"
        self.server.start()
        self.ingest()
        self.server.kill9()
        seg, good, bad, pos = self.damage(0)
        self.assert_refused(seg, bad, pos, 0)
        # Restored (here: the undamaged bytes, as from a backup): every event is there.
        seg.write_bytes(good)
        self.server.start()
        self.assertTrue(poll(lambda: self.counted() == self.EVENTS, timeout=30),
                        f"counted {self.counted()} of {self.EVENTS}" + self.server.diag())
        self.assertEqual(self.server.stop(), 0)
