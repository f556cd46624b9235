"""MQTT ingest under load with a client nobody here wrote (issue 6 point 4): a libmosquitto
device (tests/tools/mqtt_load_client.cc, `joule_mqtt_load`, path in JOULE_MQTT_LOAD_BIN)
publishes QoS 1 events with up to 256 in flight to the built-in listener.

- 100,000 events: every one acknowledged, and every one counted exactly once in the 1m
  history (count and sum of power_w per window against the known values).
- SIGKILL while the client publishes: the client reconnects and re-sends every event whose
  PUBACK it did not get (same event_id); after the restart every event is counted exactly
  once: nothing acknowledged is lost, and the re-sent copies are dropped as duplicates.
"""
import json
import os
import subprocess
import threading
import time
import unittest
import urllib.parse
import uuid

from joule_harness import JouleServer, fmt_ts, free_port, metric_sum, parse_prometheus, parse_ts, poll

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STEP_MS = 10


def uid():
    return uuid.uuid4().hex[:10]


def load_bin():
    path = os.environ.get("JOULE_MQTT_LOAD_BIN")
    if not path or not os.access(path, os.X_OK):
        raise AssertionError("JOULE_MQTT_LOAD_BIN must name the joule_mqtt_load binary "
                             "(built by tests/tools; run through ctest)")
    return path


def env_for(mqtt_port):
    # A fixed MQTT port, so the client finds the restarted server; no per-device event rate
    # limit (the default 1,000/s would refuse most of a 100k burst).
    return {"JOULE_SERVER_MQTT_LISTEN": f"127.0.0.1:{mqtt_port}",
            "JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN,
            "JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "0"}


def minute_base(count):
    """Epoch ms of a minute boundary such that `count` events STEP_MS apart end > 2 min ago."""
    span_ms = count * STEP_MS
    now_ms = int(time.time() * 1000)
    return ((now_ms - span_ms - 180_000) // 60_000) * 60_000


class LoadRun:
    """One joule_mqtt_load process; its progress lines are read on a thread."""

    def __init__(self, port, device, token, count, start_ms, prefix):
        self.count = count
        self.proc = subprocess.Popen(
            [load_bin(), "--port", str(port), "--device", device, "--token", token,
             "--count", str(count), "--start-ms", str(start_ms), "--step-ms", str(STEP_MS),
             "--inflight", "256", "--prefix", prefix, "--deadline-s", "240"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.acked = 0
        self.final = None
        self.progress = threading.Condition()
        self.stderr = ""
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self.progress:
                if "count" in rec:
                    self.final = rec
                elif "acked" in rec:
                    self.acked = rec["acked"]
                self.progress.notify_all()

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def wait_acked(self, n, timeout=120):
        with self.progress:
            return self.progress.wait_for(lambda: self.acked >= n or self.proc.poll() is not None,
                                          timeout) and self.acked >= n

    def wait(self, timeout=250):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for t in self._threads:
            t.join(5)
        return rc


class MqttLoad(unittest.TestCase):
    def setUp(self):
        self.mqtt_port = free_port()
        self.server = JouleServer(env=env_for(self.mqtt_port), name="mqtt-load")
        self.server.start()

    def tearDown(self):
        self.server.cleanup()

    def diag(self):
        return self.server.diag()

    def register(self):
        device_id = f"load-{uid()}"
        st, _, body = self.server.request(
            "POST", "/v1/devices", {"device_id": device_id, "owner_id": f"own-{uid()}"},
            headers=ADMIN)
        self.assertEqual(st, 201, body)
        return device_id, body["token"]

    def history_windows(self, device, start_ms, count):
        """The final 1m windows covering the run, or None until they all are final."""
        first = start_ms // 60_000
        last = (start_ms + (count - 1) * STEP_MS) // 60_000
        want = last - first + 1
        params = urllib.parse.urlencode({"resolution": "1m", "limit": 1000,
                                         "from": fmt_ts(first * 60),
                                         "to": fmt_ts((last + 1) * 60)})
        st, _, body = self.server.request(
            "GET", f"/v1/devices/{device}/metrics/history?{params}", headers=ADMIN)
        if st != 200:
            return None
        data = body.get("data", [])
        if len(data) != want or not all(r.get("final") for r in data):
            return None
        return data

    def assertCountedOnce(self, device, start_ms, count):
        # The expected aggregates, from the client's formula (tests/tools/mqtt_load_client.cc).
        want_count, want_sum = {}, {}
        for seq in range(count):
            minute = (start_ms + seq * STEP_MS) // 60_000
            want_count[minute] = want_count.get(minute, 0) + 1
            want_sum[minute] = want_sum.get(minute, 0) + 100 + seq % 7
        windows = poll(lambda: self.history_windows(device, start_ms, count), timeout=60,
                       interval=0.5)
        self.assertTrue(windows, f"all {len(want_count)} 1m windows final in history"
                        + self.diag())
        got_count = {round(parse_ts(r["window_start"])) // 60: r["count"] for r in windows}
        self.assertEqual(sum(got_count.values()), count, "every event counted exactly once")
        self.assertEqual(got_count, want_count, "per-window counts")
        got_sum = {round(parse_ts(r["window_start"])) // 60: r["metrics"]["power_w"]["sum"]
                   for r in windows}
        self.assertEqual(got_sum, {k: float(v) for k, v in want_sum.items()},
                         "per-window power_w sums")

    def health(self, device):
        st, _, body = self.server.request("GET", f"/v1/devices/{device}/health", headers=ADMIN)
        self.assertEqual(st, 200, body)
        return body

    def test_100k_qos1_events_from_libmosquitto_counted_exactly_once(self):
        count = 100_000
        device, token = self.register()
        start_ms = minute_base(count)
        m0 = parse_prometheus(self.server.metrics_text())
        run = LoadRun(self.mqtt_port, device, token, count, start_ms, "e")
        rc = run.wait()
        self.assertEqual(rc, 0, f"joule_mqtt_load: {run.stderr}" + self.diag())
        self.assertIsNotNone(run.final, run.stderr)
        self.assertEqual(run.final["acked"], count)
        print(f"\n100k run: {run.final}", flush=True)
        self.assertCountedOnce(device, start_ms, count)
        m1 = parse_prometheus(self.server.metrics_text())
        publishes = run.final["publishes"]
        self.assertEqual(metric_sum(m1, "joule_mqtt_publishes_total", qos="1") -
                         metric_sum(m0, "joule_mqtt_publishes_total", qos="1"), publishes)
        # Every PUBLISH that was not refused was appended (re-sent copies included).
        self.assertEqual(metric_sum(m1, "joule_events_accepted_total") -
                         metric_sum(m0, "joule_events_accepted_total"),
                         publishes - run.final["refused"])
        # One PUBACK latency observation per acknowledged QoS 1 publish (issue 6 point 5).
        self.assertEqual(metric_sum(m1, "joule_mqtt_puback_latency_seconds_count") -
                         metric_sum(m0, "joule_mqtt_puback_latency_seconds_count"), publishes)
        self.assertIn("joule_mqtt_connections", self.server.metrics_text())
        h = self.health(device)
        self.assertEqual(h["events"], count, h)  # duplicates are counted apart

    def test_sigkill_while_publishing_then_resend(self):
        count = 30_000
        device, token = self.register()
        start_ms = minute_base(count)
        run = LoadRun(self.mqtt_port, device, token, count, start_ms, "k")
        for kill_at in (count // 3, 2 * count // 3):
            self.assertTrue(run.wait_acked(kill_at),
                            f"{kill_at} acknowledged before the kill: {run.stderr}" + self.diag())
            self.server.kill9()
            self.server.start()
        rc = run.wait()
        self.assertEqual(rc, 0, f"joule_mqtt_load: {run.stderr}" + self.diag())
        print(f"\nSIGKILL run: {run.final}", flush=True)
        self.assertGreaterEqual(run.final["reconnects"], 2, run.final)
        self.assertGreater(run.final["resent"], 0, "some events were re-sent after the kills")
        self.assertCountedOnce(device, start_ms, count)


if __name__ == "__main__":
    unittest.main()
