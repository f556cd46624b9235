"""End to end: `joule simulate --ground-truth` against the real server's history.

Starts `joule serve` (auth required, an admin token), runs a deterministic simulation —
5 homes × 4 devices at 1 Hz, a simulated 15 minutes from a few hours ago at high speed,
duplicates and jitter within `stream.out_of_orderness` — then waits until every 1m window
of the ground truth is final in /v1/devices/{id}/metrics/history and compares:
counts, min, max, first, last exact; sums, averages, energies, deltas, coverage, twa to
1e-6 relative. 1h and 1d records are compared in whatever version the server holds once
all 1m windows are final (their content is complete then; only finality may wait for the
hour/day to end). Prints a summary.

Environment: JOULE_BIN (the binary), JOULE_E2E_KEEP=1 keeps the ground-truth file.
"""

import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
import joule_harness  # noqa: E402

ADMIN = "e2e-admin-token"
HOMES, PER_HOME, RATE = 5, 4, 1
SPAN_S = 15 * 60
DEADLINE_S = 180

EXACT = {"count", "min", "max", "first", "last", "resets"}
CLOSE = {"sum", "avg", "energy_wh", "coverage", "twa", "delta"}
FLAT = {"avg_power_w", "max_power_w", "sum_energy_wh", "coverage"}


def close(a, b, rel=1e-6, abs_tol=1e-9):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def diff(got, exp, label):
    out = []
    if got is None:
        return [f"{label}: missing"]
    if got.get("count") != exp["count"]:
        out.append(f"{label}.count: got {got.get('count')!r}, expected {exp['count']}")
    for key in FLAT:
        if key in exp:
            g, e = got.get(key), exp[key]
            ok = g == e if key == "max_power_w" else close(g, e)
            if not ok:
                out.append(f"{label}.{key}: got {g!r}, expected {e!r}")
    if exp["resolution"] == "1d":
        for key in ("local_date", "timezone"):
            if got.get(key) != exp.get(key):
                out.append(f"{label}.{key}: got {got.get(key)!r}, expected {exp.get(key)!r}")
    gm = got.get("metrics") or {}
    for name, em in exp["metrics"].items():
        g = gm.get(name)
        if not isinstance(g, dict):
            out.append(f"{label}.metrics.{name}: missing")
            continue
        for key, ev in em.items():
            gv = g.get(key)
            if key in EXACT:
                # A sample-less counter entry may omit resets: 0.
                if gv is None and key == "resets" and ev == 0:
                    continue
                ok = gv == ev
            else:
                ok = close(gv, ev)
            if not ok and key in ("avg", "sum") and gv is None and name.endswith("_wh"):
                ok = True  # counters may omit avg/sum (the contract's example does)
            if not ok:
                out.append(f"{label}.metrics.{name}.{key}: got {gv!r}, expected {ev!r}")
    return out


class GroundTruthTest(unittest.TestCase):
    def test_history_matches_ground_truth(self):
        self.run_case("duplicates+jitter", ["--duplicates", "0.05", "--jitter", "5s"])

    def test_history_matches_ground_truth_with_every_fault(self):
        # Outages (buffered, uploaded in order), skewed clocks, counter resets, malformed
        # events and bodies, wrong tokens: none of them may change a final record.
        self.run_case("all faults", [
            "--duplicates", "0.05", "--jitter", "5s", "--outages", "6", "--clock-skew", "90s",
            "--counter-resets", "8", "--malformed", "0.01", "--wrong-tokens", "0.05"],
            expect_rejections=True)

    def run_case(self, name, fault_args, expect_rejections=False):
        env = {
            "JOULE_AUTH_MODE": "required",
            "JOULE_AUTH_ADMIN_TOKEN": ADMIN,
            "JOULE_STREAM_OUT_OF_ORDERNESS": "10s",
            "JOULE_STREAM_IDLE_TIMEOUT": "3s",
        }
        server = joule_harness.JouleServer(env=env, name="e2e")
        self.addCleanup(server.cleanup)
        server.start()
        admin = {"Authorization": f"Bearer {ADMIN}"}

        # Cross an hour boundary so that at least one 1h window becomes final.
        now = time.time()
        start = (math.floor(now / 3600) - 3) * 3600 + 50 * 60
        tmp = tempfile.mkdtemp(prefix="joule-e2e-")
        truth_path = os.path.join(tmp, "truth.jsonl")
        cmd = [joule_harness.joule_bin(), "simulate", "--url", server.url,
               "--admin-token", ADMIN, "--homes", str(HOMES),
               "--devices-per-home", str(PER_HOME), "--rate", str(RATE),
               "--start", str(int(start * 1000)), "--duration", f"{SPAN_S}s",
               "--speed", "120", "--seed", "11", "--batch", "200", "--flush-interval", "200ms",
               "--ground-truth", truth_path, "--quiet"] + fault_args
        t0 = time.monotonic()
        sim = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        sim_s = time.monotonic() - t0
        self.assertEqual(sim.returncode, 0, f"simulate failed:\n{sim.stderr}" + server.diag())

        with open(truth_path) as f:
            expected = [json.loads(line) for line in f]
        by_res = {"1m": [], "1h": [], "1d": []}
        for rec in expected:
            by_res[rec["resolution"]].append(rec)
        devices = sorted({r["device_id"] for r in expected})
        self.assertEqual(len(devices), HOMES * PER_HOME)
        events = sum(r["count"] for r in by_res["1m"])

        def history(device, resolution):
            out = []
            cursor = None
            while True:
                q = {"resolution": resolution, "limit": "10000",
                     "from": joule_harness.fmt_ts(start - 2 * 86400),
                     "to": joule_harness.fmt_ts(start + 2 * 86400)}
                if cursor:
                    q["cursor"] = cursor
                path = (f"/v1/devices/{urllib.parse.quote(device, safe='')}/metrics/history?"
                        + urllib.parse.urlencode(q))
                status, _, body = server.request("GET", path, headers=admin)
                self.assertEqual(status, 200, f"{path}: {body!r}" + server.diag())
                out.extend(body["data"])
                cursor = body.get("next_cursor")
                if not cursor:
                    return {r["window_start"]: r for r in out}

        # Wait until every expected 1m window is final.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            got_1m = {d: history(d, "1m") for d in devices}
            pending = [r for r in by_res["1m"]
                       if not (got_1m[r["device_id"]].get(r["window_start"]) or {}).get("final")]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        wait_s = time.monotonic() - t0 - sim_s
        self.assertFalse(pending, f"{len(pending)} 1m windows not final after {DEADLINE_S}s, "
                         f"e.g. {pending[:2]}" + server.diag())

        problems = []
        compared = {"1m": 0, "1h": 0, "1d": 0}
        final_counts = {"1m": 0, "1h": 0, "1d": 0}
        for resolution in ("1m", "1h", "1d"):
            got = got_1m if resolution == "1m" else {d: history(d, resolution) for d in devices}
            for rec in by_res[resolution]:
                g = got[rec["device_id"]].get(rec["window_start"])
                label = f"{rec['device_id']}/{resolution}/{rec['window_start']}"
                problems += diff(g, rec, label)
                compared[resolution] += 1
                if g and g.get("final"):
                    final_counts[resolution] += 1
            for device in devices:
                extra = set(got[device]) - {r["window_start"] for r in by_res[resolution]
                                            if r["device_id"] == device}
                for ws in sorted(extra):
                    if got[device][ws].get("count", 0):
                        problems.append(f"{device}/{resolution}/{ws}: unexpected record")
        energy = sum(r.get("sum_energy_wh", 0) for r in by_res["1m"])
        summary = sim.stderr.strip().splitlines()[-1] if sim.stderr.strip() else ""
        if expect_rejections:
            self.assertNotIn(" 0 rejected", summary, "malformed events were not rejected")
            self.assertNotIn(" 0 wrong tokens", summary, "wrong tokens were not refused")
        print(f"\nground truth e2e ({name}): {len(devices)} devices, {events} events "
              f"(simulate {sim_s:.1f}s, windows final {wait_s:.1f}s later); compared "
              f"{compared['1m']} 1m ({final_counts['1m']} final), {compared['1h']} 1h "
              f"({final_counts['1h']} final), {compared['1d']} 1d ({final_counts['1d']} final) "
              f"records; total power_w energy {energy:.1f} Wh; {len(problems)} mismatches",
              file=sys.stderr)
        print(summary, file=sys.stderr)
        self.assertGreaterEqual(final_counts["1h"], 1, "no final 1h record")
        self.assertEqual(problems, [], f"{len(problems)} mismatches, first 30:\n"
                         + "\n".join(problems[:30]))
        if os.environ.get("JOULE_E2E_KEEP") != "1":
            os.remove(truth_path)
            os.rmdir(tmp)


if __name__ == "__main__":
    unittest.main()
