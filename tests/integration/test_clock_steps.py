"""The server's wall clock steps while it runs (NTP), faked with libfaketime (Debian package
`faketime`; the monotonic clock stays real, as under an NTP step). Processing time absorbs
the step (CONTRACT section 2 "Processing time"): a step back does not stall idle
finalization, a step forward does not finalize a sending device's hour (found by a
black-box test, session 21); the rate limiters count elapsed time, so a step back does not
refuse a device that waited for its tokens (found by a black-box test, session 22)."""

import os
import tempfile
import time
import unittest
import urllib.parse
import uuid

from joule_harness import JouleTestCase, fmt_ts, poll

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def faked_clock_env(start_offset):
    """Server env whose wall clock is the real one plus what the returned file says."""
    fd, path = tempfile.mkstemp(prefix="joule-it-clock-")
    os.write(fd, start_offset.encode())
    os.close(fd)
    return path, {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": path,
                  "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def set_clock(path, offset):
    with open(path + ".tmp", "w") as f:
        f.write(offset)
    os.replace(path + ".tmp", path)


def event(dev, i):
    return {"device_id": dev, "timestamp": fmt_ts(time.time()), "event_id": f"{dev}-{i}",
            "metrics": {"power_w": 100.0 + i}}


class ClockStepCase(JouleTestCase):
    clock_file = None

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.clock_file:
            os.unlink(cls.clock_file)

    def post_ok(self, events):
        status, _, body = self.server.post_events(events)
        self.assertEqual(status, 202, f"{body!r}" + self.diag())
        self.assertEqual(body.get("rejected"), 0, f"{body!r}")

    def base_windows(self, dev):
        status, _, body = self.server.realtime(dev, 10)
        return body.get("data", []) if status == 200 else []


@unittest.skipUnless(os.path.exists(LIBFAKETIME), "libfaketime not installed")
class StepBackTest(ClockStepCase):
    clock_file, server_env = faked_clock_env("+10m")
    server_env = dict(server_env, JOULE_STREAM_IDLE_TIMEOUT="2s")

    def test_a_step_back_does_not_stall_idle_finalization(self):
        dev = f"back-{uuid.uuid4().hex[:8]}"
        self.post_ok([event(dev, 0), event(dev, 1)])
        self.assertTrue(poll(lambda: self.base_windows(dev), timeout=5), self.diag())
        set_clock(self.clock_file, "+0")  # NTP steps the clock back 10 min
        time.sleep(0.5)
        self.post_ok([event(dev, 2), event(dev, 3)])
        # The device is silent from here: within idle_timeout (2 s) its windows are final
        # and hold all 4 events (before the fix: not for 10 min).
        def done():
            w = self.base_windows(dev)
            return w if w and all(r["final"] for r in w) and sum(
                r["count"] for r in w) == 4 else None
        self.assertTrue(poll(done, timeout=15),
                        f"windows {self.base_windows(dev)!r}" + self.diag())


@unittest.skipUnless(os.path.exists(LIBFAKETIME), "libfaketime not installed")
class StepForwardTest(ClockStepCase):
    clock_file, server_env = faked_clock_env("+0")
    server_env = dict(server_env, JOULE_STREAM_IDLE_TIMEOUT="60s")

    def test_a_step_forward_does_not_finalize_a_sending_devices_hour(self):
        dev = f"fwd-{uuid.uuid4().hex[:8]}"
        hour = int(time.time()) // 3600 * 3600
        self.post_ok([event(dev, 0)])
        self.assertTrue(poll(lambda: self.base_windows(dev), timeout=5), self.diag())
        set_clock(self.clock_file, "+3h")  # NTP steps the clock forward 3 h
        for i in range(1, 4):
            time.sleep(1)
            self.post_ok([event(dev, i)])
        time.sleep(2)  # several ticks
        query = urllib.parse.urlencode({"resolution": "1h", "from": fmt_ts(hour - 3600),
                                        "to": fmt_ts(hour + 7200)})
        status, _, body = self.server.request(
            "GET", f"/v1/devices/{dev}/metrics/history?{query}")
        self.assertEqual(status, 200, f"{body!r}")
        # Before the fix the device looked silent for 3 h: its hour in progress was final.
        if int(time.time()) // 3600 * 3600 == hour:  # (the hour did not really end meanwhile)
            self.assertFalse([r for r in body["data"] if r["final"]], f"{body!r}")


@unittest.skipUnless(os.path.exists(LIBFAKETIME), "libfaketime not installed")
class StepBackRateLimitTest(ClockStepCase):
    clock_file, server_env = faked_clock_env("+10m")
    # 5 events per second per device, a burst of 10.
    server_env = dict(server_env, JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND="5")

    def test_a_step_back_keeps_the_tokens_a_device_earned(self):
        dev = f"rate-{uuid.uuid4().hex[:8]}"
        self.post_ok([event(dev, i) for i in range(10)])  # the whole burst
        # The bucket is empty: another whole burst needs 2 s of refill. (One more event
        # needed 0.2 s, less than the fsync of the 202 before it can take on a busy disk.)
        status, _, body = self.server.post_events([event(dev, i) for i in range(10, 20)])
        self.assertEqual(status, 429, f"{body!r}")
        time.sleep(3)  # 15 tokens' worth: the bucket is full again
        set_clock(self.clock_file, "+0")  # NTP steps the clock back 10 min
        time.sleep(0.2)
        # Before the fix the bucket restarted empty at the step: 429 for 2 s.
        self.post_ok([event(dev, i) for i in range(20, 30)])


if __name__ == "__main__":
    unittest.main()
