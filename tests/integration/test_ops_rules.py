"""The Prometheus setup in deploy/prometheus (docs/OPERATIONS.md), checked with the real
Prometheus tools and real servers:

- promtool accepts the example config and the rules, and the golden scenarios of
  tests/ops/joule-alerts.test.yml pass. Every alert has a scenario where it fires and one
  where it must not: the scenarios are run once more against rules that never fire and
  rules that always fire, and each alert must then fail a scenario of its own.
- Every joule_* metric the rules name is exposed by a real server: one with the Redis latest
  store and an MQTT bridge subscribed to a real Mosquitto (their metrics exist only then).
  The metrics a default server lacks are exactly the ones listed here, and the guide lists
  them.
- A real Prometheus scraping a default server and the one with Redis and the bridge loads
  the rules with health "ok", and no alert is pending or firing on these healthy idle
  servers; then, with Redis stopped and the default server stopped, JouleLatestStoreDown
  and JouleDown become pending for the right instance.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request
import uuid

from joule_harness import JouleServer, PrivateRedis, free_port, parse_prometheus, poll
from mosquitto_broker import MosquittoBroker, find_program

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "joule-alerts.yml"
CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
SCENARIOS = REPO / "tests" / "ops" / "joule-alerts.test.yml"
GUIDE = REPO / "docs" / "OPERATIONS.md"

# Metrics the rules use that a server with the default configuration does not expose, and
# why. docs/OPERATIONS.md lists each in "Metrics that are not always there".
FEATURE_ONLY = {
    "joule_latest_up": "latest.backend = redis",
    "joule_mqtt_bridge_connected": "ingest.mqtt_bridge_url set",
    "joule_mqtt_bridge_connects_total": "ingest.mqtt_bridge_url set",
}

# Named in the guide, registered only with TLS on (server.tls_cert_file), which the servers
# here do not have.
TLS_ONLY = {"joule_tls_handshake_failures_total"}

PROMTOOL_TIMEOUT_S = 60


def promtool(*args):
    return subprocess.run([find_program("promtool"), *args], capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT_S)


def alert_names(rules_text):
    return re.findall(r"^\s*- alert: (\w+)\s*$", rules_text, re.M)


def referenced_metrics(rules_text):
    """The joule_* and process_* names in the rules (expressions and annotations), comments
    left out."""
    text = "\n".join(line for line in rules_text.splitlines()
                     if not line.lstrip().startswith("#"))
    return set(re.findall(r"(?<![a-z0-9_])(?:joule|process)_[a-z0-9_]+", text))


def exposed_families(metrics_text):
    """{name: type} of the `# TYPE` lines."""
    return dict(re.findall(r"^# TYPE ((?:joule|process)_[a-z0-9_]+) (\w+)$", metrics_text, re.M))


def family_of(name, families):
    """The family a sample name belongs to: a histogram's _bucket/_sum/_count are its own."""
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and families.get(base) == "histogram":
            return base
    return None


def guide_section(title):
    """The text of the guide's section `## title` / `### title` up to the next heading of the
    same or a higher level."""
    text = GUIDE.read_text(encoding="utf-8")
    m = re.search(r"^(#+) " + re.escape(title) + r"\s*$", text, re.M)
    if not m:
        raise AssertionError(f"docs/OPERATIONS.md has no section {title!r}")
    level = len(m.group(1))
    rest = text[m.end():]
    end = re.search(r"^#{1,%d} " % level, rest, re.M)
    return rest[: end.start()] if end else rest


class PromtoolTest(unittest.TestCase):
    """promtool on the shipped files; the golden scenarios and that they can fail."""

    def test_example_config_and_its_rule_file_are_valid(self):
        r = promtool("check", "config", str(CONFIG))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("1 rule files found", r.stdout + r.stderr)

    def test_rules_are_valid(self):
        r = promtool("check", "rules", str(RULES))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        n = len(alert_names(RULES.read_text(encoding="utf-8")))
        self.assertGreaterEqual(n, 20)
        self.assertIn(f"SUCCESS: {n} rules found", r.stdout + r.stderr)

    def test_golden_scenarios_pass(self):
        r = promtool("test", "rules", str(SCENARIOS))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout + r.stderr)

    def test_every_alert_has_a_scenario_where_it_fires_and_one_where_it_must_not(self):
        names = alert_names(RULES.read_text(encoding="utf-8"))
        self.assertEqual(len(names), len(set(names)), "alert names are unique")
        scenarios = SCENARIOS.read_text(encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="joule-promtool-") as tmp:
            # The scenarios with their rule file swapped for one where every alert has the
            # same name and never fires (a firing scenario must fail), or always fires,
            # without labels (a quiet scenario must fail). Returns the alerts with a failed
            # case that expected alerts (firing) or none (quiet).
            def failing_alerts(expr, quiet):
                rules = pathlib.Path(tmp, "rules.yml")
                rules.write_text("groups:\n  - name: mutant\n    rules:\n" + "".join(
                    f"      - alert: {n}\n        expr: {expr}\n" for n in names))
                test = pathlib.Path(tmp, "test.yml")
                test.write_text(scenarios.replace("../../deploy/prometheus/joule-alerts.yml",
                                                  str(rules)))
                r = promtool("test", "rules", str(test))
                self.assertNotEqual(r.returncode, 0, f"expr {expr}: every scenario passed")
                expected = r"exp:\[\]," if quiet else r"exp:\[\n"
                return set(re.findall(r"alertname: (\w+), time: \w+, \n\s*" + expected,
                                      r.stdout + r.stderr))

            never = failing_alerts("vector(1) == 0", quiet=False)
            self.assertEqual(sorted(set(names) - never), [],
                             "alerts without a scenario where they fire")
            always = failing_alerts("vector(1)", quiet=True)
            self.assertEqual(sorted(set(names) - always), [],
                             "alerts without a scenario where they must not fire")

    def test_every_alert_has_a_section_in_the_guide_and_a_row_in_its_table(self):
        rules = RULES.read_text(encoding="utf-8")
        table = guide_section("Alerts")
        for name in alert_names(rules):
            with self.subTest(alert=name):
                self.assertIn(f"docs/OPERATIONS.md#{name.lower()}", rules)
                self.assertRegex(table, r"\n\| \[`?" + name + r"`?\]\(#" + name.lower() + r"\)")
                guide_section(name)  # raises if missing
                self.assertRegex(rules, r"- alert: " + name + r"\n(?:.*\n){1,12}?\s+severity: "
                                 r"(page|ticket)\n")


class LiveServersTest(unittest.TestCase):
    """Two real servers (default; Redis latest store + MQTT bridge) and a real Prometheus."""

    @classmethod
    def setUpClass(cls):
        cls.redis = cls.broker = cls.full = cls.default = None
        try:
            cls.redis = PrivateRedis().start()
            port = free_port()
            cls.broker = MosquittoBroker("joule-ops-mosquitto-",
                                         lambda d: f"listener {port} 127.0.0.1\n",
                                         ports=[port], publish_port=port)
            cls.full = JouleServer(name="ops-full", env={
                "JOULE_METADATA_BACKEND": "sqlite",
                "JOULE_LATEST_BACKEND": "redis",
                "JOULE_LATEST_URL": cls.redis.url,
                "JOULE_INGEST_MQTT_BRIDGE_URL": f"mqtt://127.0.0.1:{port}",
                "JOULE_INGEST_MQTT_BRIDGE_CLIENT_ID": f"joule-ops-{uuid.uuid4().hex[:8]}",
                "JOULE_SERVER_MQTT_LISTEN": "127.0.0.1:0",
            }).start()
            cls.default = JouleServer(name="ops-default", env={
                "JOULE_METADATA_BACKEND": "sqlite", "JOULE_LATEST_BACKEND": "memory"}).start()
            connected = poll(lambda: parse_prometheus(cls.full.metrics_text()).get(
                "joule_mqtt_bridge_connected") == [({}, 1.0)], timeout=20)
            if not connected:
                raise AssertionError("the bridge did not connect" + cls.full.diag()
                                     + cls.broker.log_text())
            # An administrative action, so that joule_audit_entries_total (one series per
            # action, from its first entry) exists for the guide's check.
            st, _, body = cls.full.request("POST", "/v1/devices",
                                           {"device_id": "ops-1", "owner_id": "ops"})
            if st != 201:
                raise AssertionError(f"register: {st} {body}" + cls.full.diag())
            cls.default_text = cls.default.metrics_text()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for s in (cls.full, cls.default):
            if s is not None:
                s.cleanup()
        if cls.broker is not None:
            cls.broker.stop()
        if cls.redis is not None:
            cls.redis.cleanup()

    def diag(self):
        return self.full.diag() + self.default.diag()

    def test_every_metric_the_rules_use_is_exposed(self):
        used = referenced_metrics(RULES.read_text(encoding="utf-8"))
        self.assertGreater(len(used), 25, sorted(used))
        full = exposed_families(self.full.metrics_text())
        default = exposed_families(self.default_text)
        missing = sorted(n for n in used if family_of(n, full) is None)
        self.assertEqual(missing, [], "named in the rules, not exposed" + self.diag())
        # Histograms are used through their series, never by the family name alone.
        for n in used:
            if full.get(n) == "histogram":
                self.fail(f"{n} is a histogram: use {n}_bucket, _sum or _count")
        conditional = sorted(n for n in used if family_of(n, default) is None)
        self.assertEqual(conditional, sorted(FEATURE_ONLY),
                         "metrics of the rules a default server does not expose")
        listed = guide_section("Metrics that are not always there")
        for n in conditional:
            self.assertIn(f"`{n}`", listed, f"{n} is not in the guide's list")

    def test_every_metric_the_guide_names_exists(self):
        text = GUIDE.read_text(encoding="utf-8")
        # Whole names only: `joule_log_*` is a prefix, `joule_redis_*` too.
        names = set(re.findall(r"(?<![a-z0-9_])joule_[a-z0-9_]*[a-z0-9](?![a-z0-9_]|\*)", text))
        self.assertGreater(len(names), 60, sorted(names))
        full = exposed_families(self.full.metrics_text())
        unknown = sorted(n for n in names - TLS_ONLY if family_of(n, full) is None)
        self.assertEqual(unknown, [], "named in docs/OPERATIONS.md, exposed by no server")
        prefixes = set(re.findall(r"(?<![a-z0-9_])(joule_[a-z0-9_]*_)\*", text))
        self.assertGreater(len(prefixes), 5, sorted(prefixes))
        for p in sorted(prefixes):
            self.assertTrue(any(n.startswith(p) for n in full), f"{p}* matches no metric")

    def test_prometheus_loads_the_rules_nothing_fires_and_real_failures_are_seen(self):
        prom = Prometheus([self.full, self.default])
        self.addCleanup(prom.stop)
        full_target = f"127.0.0.1:{self.full.port}"
        default_target = f"127.0.0.1:{self.default.port}"

        def scraped():
            up = prom.query('up{job="joule"}')
            lags = prom.query("joule_processor_lag_seconds")
            return (sorted((r["metric"]["instance"], r["value"][1]) for r in up)
                    == sorted([(full_target, "1"), (default_target, "1")])
                    and len(lags) == 4)
        self.assertTrue(poll(scraped, timeout=20, interval=0.25),
                        "Prometheus scrapes both servers" + prom.diag())
        self.assertEqual(prom.value("joule_latest_up"), 1.0)
        self.assertEqual(prom.value("joule_mqtt_bridge_connected"), 1.0)

        # Every rule evaluated at least twice after both servers' first scrape.
        since = time.time()

        def evaluated():
            groups = prom.api("/api/v1/rules")["groups"]
            return groups and all(parse_time(g["lastEvaluation"]) > since + 1.5 for g in groups)
        self.assertTrue(poll(evaluated, timeout=15, interval=0.25), prom.diag())
        groups = prom.api("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        self.assertEqual(sorted(r["name"] for r in rules),
                         sorted(alert_names(RULES.read_text(encoding="utf-8"))))
        for r in rules:
            self.assertEqual((r["name"], r["health"], r.get("lastError", "")),
                             (r["name"], "ok", ""))
        self.assertEqual(prom.api("/api/v1/alerts")["alerts"], [],
                         "alerts on healthy idle servers" + prom.diag() + self.diag())

        # A real failure of each kind is seen through the same pipeline.
        self.redis.stop()

        def alert(name, instance):
            for a in prom.api("/api/v1/alerts")["alerts"]:
                if a["labels"].get("alertname") == name and a["labels"].get("instance") == instance:
                    return a
            return None
        latest = poll(lambda: alert("JouleLatestStoreDown", full_target), timeout=20,
                      interval=0.25)
        self.assertIsNotNone(latest, "Redis stopped: JouleLatestStoreDown" + prom.diag())
        self.assertEqual((latest["state"], latest["labels"]["severity"]), ("pending", "ticket"))
        self.default.stop()
        down = poll(lambda: alert("JouleDown", default_target), timeout=20, interval=0.25)
        self.assertIsNotNone(down, "server stopped: JouleDown" + prom.diag())
        self.assertEqual((down["state"], down["labels"]["severity"]), ("pending", "page"))
        others = sorted({a["labels"]["alertname"] for a in prom.api("/api/v1/alerts")["alerts"]}
                        - {"JouleLatestStoreDown", "JouleDown"})
        self.assertEqual(others, [], prom.diag())


def parse_time(text):
    """RFC 3339 with up to 9 fraction digits (Go's) → epoch seconds."""
    import datetime
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        raise AssertionError(f"not an RFC 3339 time: {text!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    t = datetime.datetime.fromisoformat(m.group(1) + zone).timestamp()
    return t + float("0." + m.group(2)) if m.group(2) else t


class Prometheus:
    """A real `prometheus` scraping the servers every second in the job "joule", rules of
    deploy/prometheus/joule-alerts.yml evaluated every second; 127.0.0.1, a free port, a temp
    storage dir."""

    def __init__(self, servers):
        self.dir = tempfile.mkdtemp(prefix="joule-prometheus-")
        self.port = free_port()
        targets = ", ".join(f'"127.0.0.1:{s.port}"' for s in servers)
        config = pathlib.Path(self.dir, "prometheus.yml")
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {json.dumps(str(RULES))}\n"
            "scrape_configs:\n  - job_name: joule\n    scrape_timeout: 1s\n"
            f"    static_configs:\n      - targets: [{targets}]\n")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [find_program("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited" + self.diag())
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        if not poll(ready, timeout=30, interval=0.2):
            self.stop()
            raise AssertionError("prometheus not ready within 30 s" + self.diag())

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path):
        with urllib.request.urlopen(self.url(path), timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise AssertionError(f"{path}: {body}")
        return body["data"]

    def query(self, expr):
        return self.api("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))["result"]

    def value(self, expr):
        result = self.query(expr)
        if len(result) != 1:
            raise AssertionError(f"{expr}: {result}")
        return float(result[0]["value"][1])

    def diag(self):
        try:
            self.log.flush()
            with open(os.path.join(self.dir, "prometheus.log")) as f:
                tail = f.read()[-3000:]
        except (OSError, ValueError):
            tail = "(no log)"
        return f"\n--- prometheus log tail ---\n{tail}\n--- end ---"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
