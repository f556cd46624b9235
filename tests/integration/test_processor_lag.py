"""joule_processor_lag_records / joule_processor_lag_seconds (src/app/README.md): what is
durable but not processed yet, in records and in the age of the oldest such record.

The processors are held (JOULE_TEST_HOLD=log.consumers:FILE, src/common/test_hold.h) after a
quiet spell, and one event is posted: the lag is that event's age, not the quiet spell
(until session 25 the age counted from the last record processed, so a record a few ms old
after 30 s of silence showed 31 s; found by the operator metrics' black-box test)."""

import os
import tempfile
import time
import unittest
import uuid

from joule_harness import JouleTestCase, fmt_ts, metric_sum, parse_prometheus, poll

HOLD_DIR = tempfile.mkdtemp(prefix="joule-lag-")
HOLD = os.path.join(HOLD_DIR, "hold")
QUIET_S = 6.0


def event(device_id):
    return {"device_id": device_id, "timestamp": fmt_ts(time.time() - 1),
            "metrics": {"power_w": 100.0}, "event_id": uuid.uuid4().hex}


class ProcessorLagTest(JouleTestCase):
    server_env = {"JOULE_TEST_HOLD": f"log.consumers:{HOLD}"}

    def lag(self):
        m = parse_prometheus(self.server.metrics_text())
        return (metric_sum(m, "joule_processor_lag_records"),
                max(v for _, v in m["joule_processor_lag_seconds"]))

    def tearDown(self):
        if os.path.exists(HOLD):
            os.remove(HOLD)

    def test_the_age_of_the_oldest_unprocessed_record(self):
        dev = "lag-" + uuid.uuid4().hex[:8]
        self.assertStatus(self.server.post_events([event(dev)]), 202, "first event")
        self.assertTrue(poll(lambda: self.lag() == (0, 0), timeout=30), self.diag())
        time.sleep(QUIET_S)  # nothing to process: the processors poll and find nothing
        open(HOLD, "w").close()
        held_at = time.time()
        time.sleep(0.2)  # the processors see the hold
        self.assertStatus(self.server.post_events([event(dev)]), 202, "second event")
        self.assertTrue(poll(lambda: self.lag()[0] >= 1, timeout=30), self.diag())
        records, seconds = self.lag()
        since_hold = time.time() - held_at
        self.assertEqual(records, 1, self.diag())
        # At most the time since the hold (the last empty read came just before it), with
        # room for a slow scheduler; the quiet spell before it is not lag.
        self.assertGreater(seconds, 0)
        self.assertLess(seconds, since_hold + 2.0,
                        f"lag {seconds} s, {since_hold:.2f} s after the hold, after a "
                        f"{QUIET_S} s quiet spell")
        os.remove(HOLD)
        self.assertTrue(poll(lambda: self.lag() == (0, 0), timeout=30), self.diag())


if __name__ == "__main__":
    unittest.main()
