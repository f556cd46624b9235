"""Every metric a fresh server exposes on /metrics is documented in the READMEs/docs, with
the label values it carries (a black-box test found joule_ingest_backpressure_total,
joule_windows_emitted_total, joule_sse_subscribers and kind="owner_devices" undocumented),
and the documented joule_audit_write_errors_total is there from start, at 0 (it appeared
only with the first failure)."""

import pathlib
import re
import unittest

from joule_harness import JouleTestCase, parse_prometheus

REPO = pathlib.Path(__file__).resolve().parents[2]


def documentation():
    """The text of README.md, docs/**/*.md and src/**/README.md, plus the names that
    `a_{b,c}_d` forms stand for (`a_b_d a_c_d`), so that each metric name occurs whole."""
    files = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md")) + sorted(
        (REPO / "src").rglob("README.md"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in files)
    # `joule_x_{a,b}_total` is a name pattern; `joule_x_total{a,b}` lists labels.
    brace = re.compile(r"(joule_[a-z0-9_]*)\{([a-z0-9_,]+)\}([a-z0-9_]*)")
    expanded = [m.group(1) + alt + m.group(3)
                for m in brace.finditer(text) if m.group(1).endswith("_") or m.group(3)
                for alt in m.group(2).split(",")]
    return text + "\n" + " ".join(expanded)


class MetricsDocumentedTest(JouleTestCase):
    def test_every_exposed_metric_is_documented(self):
        text = self.server.metrics_text()
        families = re.findall(r"^# TYPE (joule_[a-z0-9_]+) ", text, re.M)
        self.assertGreater(len(families), 50, text[:2000])
        docs = documentation()
        missing = [name for name in families
                   if not re.search(r"(?<![a-z0-9_])" + re.escape(name) + r"(?![a-z0-9_])", docs)]
        self.assertEqual(missing, [], "exposed on /metrics but in no README or doc")

    def test_label_values_are_documented(self):
        store = (REPO / "src/store/README.md").read_text(encoding="utf-8")
        app = (REPO / "src/app/README.md").read_text(encoding="utf-8")
        parsed = parse_prometheus(self.server.metrics_text())
        kinds = {labels.get("kind") for labels, _ in parsed["joule_metadata_cache_hits_total"]}
        self.assertEqual(kinds, {"device", "token", "owner_devices"})
        for kind in kinds:
            self.assertIn(f'kind="{kind}"', store)
        emitted = {labels.get("resolution") for labels, _ in parsed["joule_windows_emitted_total"]}
        self.assertEqual(emitted, {"base", "1h", "1d"})
        self.assertIn('`"base"` (the `stream.window` records, 1m by default), `"1h"` or `"1d"`', app)
        sst = {labels.get("resolution") for labels, _ in parsed["joule_history_sst_bytes"]}
        self.assertEqual(sst, {"base", "hour", "day"})
        self.assertIn('resolution="base"|"hour"|"day"', store)

    def test_audit_write_errors_counter_is_there_from_start(self):
        parsed = parse_prometheus(self.server.metrics_text())
        self.assertIn("joule_audit_write_errors_total", parsed, "not registered at start")
        self.assertEqual(parsed["joule_audit_write_errors_total"], [({}, 0.0)])

    def test_process_metrics_and_build_info(self):
        """The process's own resources under the client libraries' names (found by the
        operator metrics' black-box test: none were exposed), and the version running."""
        text = self.server.metrics_text()
        parsed = parse_prometheus(text)
        self.assertIn("# TYPE process_cpu_seconds_total counter", text)
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                     "process_start_time_seconds"):
            self.assertIn(name, parsed, name)
            self.assertGreater(parsed[name][0][1], 0, name)
        self.assertGreater(parsed["process_virtual_memory_bytes"][0][1],
                           parsed["process_resident_memory_bytes"][0][1])
        self.assertLessEqual(parsed["process_open_fds"][0][1], parsed["process_max_fds"][0][1])
        [(labels, value)] = parsed["joule_build_info"]
        self.assertEqual(value, 1)
        self.assertRegex(labels.get("version", ""), r"^\d+\.\d+\.\d+")
        app = (REPO / "src/app/README.md").read_text(encoding="utf-8")
        for name in parsed:
            if name.startswith("process_"):
                self.assertIn(f"`{name}`", app, name)


if __name__ == "__main__":
    unittest.main()
