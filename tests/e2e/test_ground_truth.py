"""End to end: `joule simulate --ground-truth` against the real server's history.

Starts `joule serve` (auth required, an admin token), runs a deterministic simulation —
5 homes × 4 devices at 1 Hz, a simulated 15 minutes from a few hours ago at high speed,
duplicates and jitter within `stream.out_of_orderness` — then waits until every 1m window
of the ground truth is final in /v1/devices/{id}/metrics/history and compares with
scripts/compare_truth.py (the procedure users run): counts, min, max, first, last exact;
sums, averages, energies, deltas, coverage, twa to 1e-6 relative. 1h and 1d records are compared in whatever version the server holds once
all 1m windows are final (their content is complete then; only finality may wait for the
hour/day to end). Prints a summary. Over HTTP and over MQTT (`--mqtt`, device tokens as
MQTT passwords), over MQTT across a graceful restart of the server mid-run (nothing may
fail: the DISCONNECT 0x8B is retried), and with clocks skewed beyond limits.max_future_skew
(the rejected events are left out of the ground truth).

SimulateMessagesTest: what simulate prints when nothing listens, a batch too large for the
server (HTTP 413, PUBACK 0x97 "split it": halved and resent), for events
older than limits.max_event_age, for an unknown token, and --jitter beyond
--allowed-lateness with a ground truth.

Environment: JOULE_BIN (the binary), JOULE_E2E_KEEP=1 keeps the ground-truth file.
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import compare_truth  # noqa: E402  (the user's procedure: scripts/compare_truth.py)
import joule_harness  # noqa: E402

ADMIN = "e2e-admin-token"
HOMES, PER_HOME, RATE = 5, 4, 1
SPAN_S = 15 * 60
DEADLINE_S = 180
SKEW_ARGS = ["--clock-skew", "15m", "--duplicates", "0.05", "--jitter", "5s"]


class GroundTruthTest(unittest.TestCase):
    def test_history_matches_ground_truth(self):
        server = self.run_case("duplicates+jitter", ["--duplicates", "0.05", "--jitter", "5s"])
        # The simulator registers each home's meter as its whole-home meter, so the owner's
        # energy total is the meter's, not meter + appliances (found by a black-box test:
        # the demo's home headline counted the appliances twice).
        day_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
        status, _, body = server.request(
            "GET", f"/v1/owners/sim-owner-0000/energy?resolution=1h&from={day_ago}",
            headers={"Authorization": f"Bearer {ADMIN}"})
        self.assertEqual(status, 200, f"{body!r}")
        self.assertEqual(body["whole_home"], ["sim-0000"], f"{body!r}")
        buckets = [b for b in body["data"] if b["total_of"] == "whole_home"]
        self.assertTrue(buckets, f"{body!r}")
        for b in buckets:
            self.assertAlmostEqual(b["total_energy_wh"], b["devices"]["sim-0000"], places=6)
            self.assertLess(b["total_energy_wh"], sum(b["devices"].values()), f"{b!r}")

    def test_history_matches_ground_truth_with_every_fault(self):
        # Outages (buffered, uploaded in order), skewed clocks, counter resets, malformed
        # events and bodies, wrong tokens: none of them may change a final record.
        self.run_case("all faults", [
            "--duplicates", "0.05", "--jitter", "5s", "--outages", "6", "--clock-skew", "90s",
            "--counter-resets", "8", "--malformed", "0.01", "--wrong-tokens", "0.05"],
            expect_rejections=True)

    def test_history_matches_ground_truth_over_mqtt_with_every_fault(self):
        # The same over MQTT: each device connects with its token as the password and
        # publishes its batches with QoS 1; wrong tokens are refused CONNACKs.
        self.run_case("mqtt, all faults", [
            "--duplicates", "0.05", "--jitter", "5s", "--outages", "6", "--clock-skew", "90s",
            "--counter-resets", "8", "--malformed", "0.01", "--wrong-tokens", "0.05"],
            expect_rejections=True, mqtt=True)

    def test_history_matches_ground_truth_over_mqtt_across_a_graceful_restart(self):
        # Found by a black-box test: the server's DISCONNECT 0x8B ("server shutting down")
        # on a graceful restart was taken for a PUBACK refusal, so every connected device
        # lost a batch (counted failed, exit 1) where HTTP retried. Every publish must be
        # resent to the restarted server: nothing failed, and the truth matches.
        self.run_case("mqtt, graceful restart", ["--duplicates", "0.05", "--jitter", "5s"],
                      mqtt=True, speed="60", restart_after_s=4)

    def test_clocks_beyond_max_future_skew_are_left_out_of_the_truth(self):
        # Devices up to 15 minutes ahead, the last minutes before now: the server rejects
        # events more than limits.max_future_skew (5m) ahead; the truth leaves them out.
        self.run_case("skew 15m", SKEW_ARGS, start_s=time.time() - 6 * 60, span_s=5 * 60,
                      speed="0", future_rejects=True)

    def test_clocks_beyond_max_future_skew_over_mqtt(self):
        # Over MQTT the PUBACK's reason string names the rejected events.
        self.run_case("mqtt, skew 15m", SKEW_ARGS, start_s=time.time() - 6 * 60,
                      span_s=5 * 60, speed="0", future_rejects=True, mqtt=True)

    def run_case(self, name, fault_args, expect_rejections=False, mqtt=False, start_s=None,
                 span_s=SPAN_S, speed="120", future_rejects=False, restart_after_s=None):
        env = {
            "JOULE_AUTH_MODE": "required",
            "JOULE_AUTH_ADMIN_TOKEN": ADMIN,
            "JOULE_STREAM_OUT_OF_ORDERNESS": "10s",
            "JOULE_STREAM_IDLE_TIMEOUT": "3s",
        }
        mqtt_args = []
        if mqtt:
            port = joule_harness.free_port()
            env["JOULE_SERVER_MQTT_LISTEN"] = f"127.0.0.1:{port}"
            mqtt_args = ["--mqtt", f"mqtt://127.0.0.1:{port}"]
        server = joule_harness.JouleServer(env=env, name="e2e")
        self.addCleanup(server.cleanup)
        server.start()

        # Cross an hour boundary so that at least one 1h window becomes final.
        now = time.time()
        start = (math.floor(now / 3600) - 3) * 3600 + 50 * 60 if start_s is None else start_s
        tmp = tempfile.mkdtemp(prefix="joule-e2e-")
        truth_path = os.path.join(tmp, "truth.jsonl")
        cmd = [joule_harness.joule_bin(), "simulate", "--url", server.url,
               "--admin-token", ADMIN, "--homes", str(HOMES),
               "--devices-per-home", str(PER_HOME), "--rate", str(RATE),
               "--start", str(int(start * 1000)), "--duration", f"{span_s}s",
               "--speed", speed, "--seed", "11", "--batch", "200", "--flush-interval", "200ms",
               "--ground-truth", truth_path, "--quiet"] + fault_args + mqtt_args
        t0 = time.monotonic()
        if restart_after_s is None:
            sim = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        else:  # SIGTERM (MQTT 5 clients get DISCONNECT 0x8B) and start again, mid-run
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            time.sleep(restart_after_s)
            self.assertIsNone(proc.poll(), "simulate ended before the restart")
            self.assertEqual(server.restart(), 0, server.diag())
            out, err = proc.communicate(timeout=300)
            sim = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        sim_s = time.monotonic() - t0
        self.assertEqual(sim.returncode, 0, f"simulate failed:\n{sim.stderr}" + server.diag())
        counts = simulate_counts(sim.stderr)
        self.assertEqual(counts["failed"], 0, sim.stderr)
        if restart_after_s is not None:
            # The restart reached the devices' connections; their publishes went out on new ones.
            self.assertGreater(counts["DISCONNECTs"], 0, sim.stderr)
            self.assertGreater(counts["connects"], HOMES * PER_HOME, sim.stderr)
        metrics = joule_harness.parse_prometheus(server.metrics_text())
        # The server's counters agree with the simulator's summary (a restarted server's
        # counters start again at 0).
        if restart_after_s is None:
            self.assertEqual(joule_harness.metric_sum(metrics, "joule_events_accepted_total"),
                             counts["accepted"], sim.stderr)
        out_of_range = joule_harness.metric_sum(metrics, "joule_events_rejected_total",
                                                code="timestamp_out_of_range")
        if future_rejects:
            self.assertGreater(out_of_range, 0, "no event was beyond max_future_skew")
        else:
            self.assertEqual(out_of_range, 0)
        if mqtt:
            self.assertGreater(counts["acknowledged"], 0, sim.stderr)
        if mqtt and restart_after_s is None:
            self.assertEqual(joule_harness.metric_sum(metrics, "joule_mqtt_messages_total",
                                                      result="accepted"),
                             counts["acknowledged"], sim.stderr)
            self.assertEqual(joule_harness.metric_sum(metrics, "joule_mqtt_auth_failures_total"),
                             counts["CONNACKs refused"], sim.stderr)
            self.assertEqual(
                joule_harness.metric_sum(metrics, "joule_http_requests_total",
                                         route="/v1/telemetry"), 0)

        expected = compare_truth.load_truth(truth_path)
        by_res = {"1m": [], "1h": [], "1d": []}
        for rec in expected:
            by_res[rec["resolution"]].append(rec)
        devices = sorted({r["device_id"] for r in expected})
        if not future_rejects:  # else a device may have had every event rejected
            self.assertEqual(len(devices), HOMES * PER_HOME)
        events = sum(r["count"] for r in by_res["1m"])

        result = compare_truth.compare(compare_truth.Server(server.url, ADMIN), expected,
                                       wait_s=DEADLINE_S)
        wait_s = time.monotonic() - t0 - sim_s
        pending = result["pending"]
        self.assertFalse(pending, f"{len(pending)} 1m windows not final after {DEADLINE_S}s, "
                         f"e.g. {pending[:2]}" + server.diag())
        problems, compared, final_counts = (result["problems"], result["compared"],
                                            result["final"])
        energy = sum(r.get("sum_energy_wh", 0) for r in by_res["1m"])
        summary = sim.stderr.strip().splitlines()[-1] if sim.stderr.strip() else ""
        if expect_rejections:
            self.assertNotIn(" 0 rejected", summary, "malformed events were not rejected")
            self.assertNotIn(" 0 wrong tokens", summary, "wrong tokens were not refused")
            if mqtt:
                self.assertGreater(counts["CONNACKs refused"], 0, "no wrong token was refused")
        print(f"\nground truth e2e ({name}): {len(devices)} devices, {events} events "
              f"(simulate {sim_s:.1f}s, windows final {wait_s:.1f}s later); compared "
              f"{compared['1m']} 1m ({final_counts['1m']} final), {compared['1h']} 1h "
              f"({final_counts['1h']} final), {compared['1d']} 1d ({final_counts['1d']} final) "
              f"records; total power_w energy {energy:.1f} Wh; {len(problems)} mismatches",
              file=sys.stderr)
        print(summary, file=sys.stderr)
        if start_s is None:
            self.assertGreaterEqual(final_counts["1h"], 1, "no final 1h record")
        self.assertEqual(problems, [], f"{len(problems)} mismatches, first 30:\n"
                         + "\n".join(problems[:30]))
        if os.environ.get("JOULE_E2E_KEEP") != "1":
            os.remove(truth_path)
            os.rmdir(tmp)
        return server


class SimulateMessagesTest(unittest.TestCase):
    """What simulate says when the server is missing or refuses (a black-box report)."""

    def simulate(self, *args):
        return subprocess.run([joule_harness.joule_bin(), "simulate", "--quiet", *args],
                              capture_output=True, text=True, timeout=120)

    def test_nothing_listening_is_named(self):
        url = f"http://127.0.0.1:{joule_harness.free_port()}"
        for auth in (["--token", "x"], ["--admin-token", "x"]):
            r = self.simulate("--url", url, *auth, "--duration", "5s", "--start", "-1m",
                              "--speed", "0")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(f"cannot connect to {url}: Connection refused", r.stderr)
            self.assertNotIn("-1", r.stderr)
            self.assertNotIn("--admin-token", r.stderr)
        # MQTT with auth disabled (no registration over HTTP): the broker address is named.
        mqtt = f"mqtt://127.0.0.1:{joule_harness.free_port()}"
        t0 = time.monotonic()
        r = self.simulate("--mqtt", mqtt, "--duration", "5s", "--start", "-1m", "--speed", "0")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"cannot connect to {mqtt}: Connection refused", r.stderr)
        self.assertLess(time.monotonic() - t0, 10, "not named at once")

    def test_server_errors_are_printed_not_an_auth_hint(self):
        server = joule_harness.JouleServer(env={"JOULE_AUTH_MODE": "required",
                                                "JOULE_AUTH_ADMIN_TOKEN": ADMIN}, name="msg")
        self.addCleanup(server.cleanup)
        server.start()
        common = ["--url", server.url, "--homes", "1", "--devices-per-home", "1", "--speed", "0"]
        # More events per request than limits.max_events_per_request (10,000) and than the
        # device's rate-limit burst (2,000): found by a black-box test, every request failed
        # 413 "split the request", exit 1. The simulator halves the batch until it fits.
        r = self.simulate(*common, "--admin-token", ADMIN, "--rate", "10", "--start", "-2h",
                          "--duration", "10m", "--batch", "20000")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("6000 accepted, 0 rejected, 0 failed", r.stderr)
        self.assertRegex(r.stderr, r" [1-9]\d* batches split")
        # Older than limits.max_event_age: the server's answer, not a client-side 7-day rule.
        r = self.simulate(*common, "--admin-token", ADMIN, "--prefix", "old", "--start", "-8d",
                          "--duration", "10m", "--rate", "0.1")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("timestamp_out_of_range", r.stderr)
        self.assertNotIn("7-day", r.stderr)
        # A token the server does not know: then the hint.
        r = self.simulate(*common, "--token", "not-a-token", "--start", "-2m", "--duration", "1m")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("refused the token", r.stderr)
        # Without --duration (live, open-ended) the refusals went on until the run was
        # killed (found by the simulator's black-box test, session 29): now the run stops
        # after --give-up-after of refusals with nothing accepted, exit 1.
        r = self.simulate("--url", server.url, "--homes", "1", "--devices-per-home", "1",
                          "--token", "not-a-token", "--give-up-after", "2s")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"giving up: the server has refused the token for \d+s")
        self.assertIn("gave up: the server refused the token", r.stderr)
        # --jitter beyond --allowed-lateness with a ground truth: refused before anything runs.
        r = self.simulate(*common, "--token", "x", "--jitter", "2h", "--ground-truth",
                          os.devnull, "--duration", "1m")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--allowed-lateness", r.stderr)


    def test_a_publish_too_large_for_the_rate_limit_is_split(self):
        # Over MQTT the same limit is a PUBACK 0x97 "…: split it" (final for that message):
        # the simulator halves the batch and publishes it again; the truth matches.
        port = joule_harness.free_port()
        server = joule_harness.JouleServer(env={"JOULE_AUTH_MODE": "required",
                                                "JOULE_AUTH_ADMIN_TOKEN": ADMIN,
                                                "JOULE_STREAM_IDLE_TIMEOUT": "3s",
                                                "JOULE_SERVER_MQTT_LISTEN": f"127.0.0.1:{port}"},
                                           name="split")
        self.addCleanup(server.cleanup)
        server.start()
        truth = os.path.join(tempfile.mkdtemp(prefix="joule-e2e-"), "truth.jsonl")
        r = self.simulate("--url", server.url, "--mqtt", f"mqtt://127.0.0.1:{port}",
                          "--admin-token", ADMIN, "--homes", "1", "--devices-per-home", "1",
                          "--speed", "0", "--rate", "10", "--start", "-2h", "--duration", "10m",
                          "--batch", "5000", "--flush-interval", "10s", "--ground-truth", truth)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("6000 accepted, 0 rejected, 0 failed", r.stderr)
        self.assertRegex(r.stderr, r" [1-9]\d* batches split")
        self.assertIn("publishes", r.stderr)
        result = compare_truth.compare(compare_truth.Server(server.url, ADMIN),
                                       compare_truth.load_truth(truth), wait_s=DEADLINE_S)
        self.assertFalse(result["pending"])
        self.assertEqual(result["problems"], [])


class SimulateRunsTest(unittest.TestCase):
    """A backfill and then a later run of the same devices: both runs' events count (found
    by a black-box test: event ids counted from 0 in every run, so the second run was
    dropped whole as duplicates while simulate reported it accepted); the same run twice
    sends the same events (duplicates)."""

    def test_a_later_run_is_new_data_the_same_run_is_not(self):
        server = joule_harness.JouleServer(env={"JOULE_AUTH_MODE": "required",
                                                "JOULE_AUTH_ADMIN_TOKEN": ADMIN}, name="runs")
        self.addCleanup(server.cleanup)
        server.start()
        t0 = int(time.time() // 60 * 60) - 600  # absolute starts: the same run is the same
        common = ["--url", server.url, "--admin-token", ADMIN, "--homes", "1",
                  "--devices-per-home", "1", "--speed", "0", "--rate", "1", "--quiet"]

        def run(start):
            r = subprocess.run([joule_harness.joule_bin(), "simulate", *common, "--start",
                                joule_harness.fmt_ts(start), "--duration", "2m"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)

        def health():
            st, _, body = server.request("GET", "/v1/devices/sim-0000/health",
                                         headers={"Authorization": f"Bearer {ADMIN}"})
            self.assertEqual(st, 200, body)
            return body
        run(t0)
        self.assertTrue(joule_harness.poll(lambda: health()["events"] == 120, timeout=30),
                        health())
        run(t0 + 120)  # the next two minutes
        self.assertTrue(joule_harness.poll(lambda: health()["events"] == 240, timeout=30),
                        health())
        self.assertEqual(health()["duplicates"], 0)
        run(t0)  # the first run again: the same events
        self.assertTrue(joule_harness.poll(lambda: health()["duplicates"] == 120, timeout=30),
                        health())
        self.assertEqual(health()["events"], 240)


def simulate_counts(stderr):
    """The numbers of the simulator's summary lines: {"accepted": n, "acknowledged": n, …}."""
    counts = {}
    for line in stderr.splitlines():
        if line.startswith("simulate: done in") or line.startswith("simulate: mqtt:"):
            for m in re.finditer(r"(\d+) ([A-Za-z]+(?: refused)?)", line):
                counts.setdefault(m.group(2), int(m.group(1)))
    return counts


if __name__ == "__main__":
    unittest.main()
