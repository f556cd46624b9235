"""bench/harness/report.py renders a results file into BENCHMARKS.md deterministically."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(HERE, "..", "..", "bench", "harness", "report.py")
FIXTURE = os.path.join(HERE, "fixture_results.json")


def render(md_path, results=FIXTURE):
    subprocess.run([sys.executable, REPORT, results, md_path], check=True)
    with open(md_path) as f:
        return f.read()


class ReportTest(unittest.TestCase):
    def test_table_keeps_hand_written_part_and_is_idempotent(self):
        with tempfile.TemporaryDirectory() as d:
            md = os.path.join(d, "BENCHMARKS.md")
            with open(md, "w") as f:
                f.write("# Benchmarks\n\nhand-written notes\n")
            first = render(md)
            second = render(md)
            self.assertEqual(first, second)
            self.assertTrue(first.startswith("# Benchmarks\n\nhand-written notes\n"))
            self.assertEqual(first.count("<!-- bench:begin"), 1)
            self.assertEqual(first.count("<!-- bench:end -->"), 1)

    def test_numbers_come_from_the_results(self):
        with tempfile.TemporaryDirectory() as d:
            text = render(os.path.join(d, "B.md"))
            self.assertIn("| `vs_victoriametrics` |", text)
            row = [l for l in text.splitlines() if l.startswith("| `vs_victoriametrics`")][0]
            self.assertIn("| 1.23 | ≥ 5 | no |", row)
            row = [l for l in text.splitlines() if l.startswith("| `vs_postgres`")][0]
            self.assertIn("| 6.5 | ≥ 5 | yes |", row)
            row = [l for l in text.splitlines() if l.startswith("| `mqtt_vs_mosquitto`")][0]
            self.assertIn("| — | ≥ 2 | — |", row)  # not measured: no number invented
            row = [l for l in text.splitlines() if l.startswith("| `api_p99_ms_half_load`")][0]
            self.assertIn("| 2.5 | ≤ 1 | no |", row)
            self.assertIn("250.0 k", text)
            self.assertIn("at most 9.25 during the run", text)
            self.assertIn("`mqtt`: RuntimeError('fixture failure')", text)

    def test_machine_is_stated_when_recorded(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertNotIn("CPU:", render(os.path.join(d, "A.md")))  # the fixture has none
            with open(FIXTURE) as f:
                res = json.load(f)
            res["machine"].update({"cpu_model": "Test CPU", "avx512": True, "hypervisor": True,
                                   "kernel_cmdline_memory": ["page_reporting.page_reporting_order=11"],
                                   "thp_enabled": "madvise", "thp_defrag": "madvise",
                                   "fresh_memory_gb_per_cpu_s": 0.5})
            results = os.path.join(d, "r.json")
            with open(results, "w") as f:
                json.dump(res, f)
            text = render(os.path.join(d, "B.md"), results)
            line = [l for l in text.splitlines() if l.startswith("CPU:")][0]
            self.assertIn("Test CPU with AVX-512 in a virtual machine", line)
            self.assertIn("page_reporting.page_reporting_order=11", line)
            self.assertIn("costs 0.5 GB per CPU-second", line)

    def test_out_of_order_events_are_stated_when_recorded(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertNotIn("out of order", render(os.path.join(d, "A.md")))  # none recorded
            with open(FIXTURE) as f:
                res = json.load(f)
            res["comparisons"]["ingest"]["joule_fsync"]["runs"] = [
                {"out_of_order_events": 166000.0}, {"out_of_order_events": 264000.0}]
            results = os.path.join(d, "r.json")
            with open(results, "w") as f:
                json.dump(res, f)
            text = render(os.path.join(d, "B.md"), results)
            self.assertIn("out of order in the fsync runs", text)
            self.assertIn("166,000, 264,000 of 1,200,000", text)

    def test_engine_state_is_stated_when_recorded(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertNotIn("engine's state grows", render(os.path.join(d, "A.md")))
            with open(FIXTURE) as f:
                res = json.load(f)
            res["comparisons"]["state"] = {
                "devices": 1000, "after_1_min_bytes_per_1k_devices": 8.9e6,
                "after_61_min_bytes_per_1k_devices": 223e6,
                "after_61_min_lateness_10m_bytes_per_1k_devices": 69e6,
                "after_61_min_one_event_per_minute_bytes_per_1k_devices": 42e6,
                "after_61_min_with_event_ids_bytes_per_1k_devices": 276e6}
            results = os.path.join(d, "r.json")
            with open(results, "w") as f:
                json.dump(res, f)
            text = render(os.path.join(d, "B.md"), results)
            line = [l for l in text.splitlines() if "engine's state grows" in l][0]
            self.assertIn("8.90 MB per 1k devices after 1 minute, 223.00 MB after 61 minutes",
                          line)
            self.assertIn("69.00 MB with `stream.allowed_lateness = 10m`", line)
            self.assertIn("42.00 MB when each device sends one event a minute, 276.00 MB with "
                          "an `event_id` on every event.", line)


    def test_memory_warmup_is_stated_when_recorded(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertNotIn("touches and frees", render(os.path.join(d, "A.md")))
            with open(FIXTURE) as f:
                res = json.load(f)
            res.setdefault("machine", {}).update({
                "cpu_model": "AMD EPYC", "fresh_memory_gb_per_cpu_s": 0.37,
                "warm_memory_gb_per_cpu_s": 18.5, "memory_warmup_mib": 2048})
            path = os.path.join(d, "warm.json")
            with open(path, "w") as f:
                json.dump(res, f)
            text = render(os.path.join(d, "B.md"), path)
            self.assertIn("costs 0.37 GB per CPU-second here", text)
            self.assertIn("18.5 for 256 MiB freed a moment before", text)
            self.assertIn("the harness touches and frees 2,048 MiB", text)

if __name__ == "__main__":
    unittest.main()
