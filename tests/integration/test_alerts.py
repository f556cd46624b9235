"""Alerts end to end (CONTRACT section 4, issue 8) against the real binary: rules API
validation, a threshold rule firing a signed webhook to a receiver on loopback (every
signature verified here with Python's hmac), retries of a failing receiver with the same
webhook-id, a receiver that hangs does not delay another, SIGKILL with a delivery pending
(delivered after restart), the SSRF guard at rule creation, and owner isolation of rules
and alerts."""

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
import unittest
import uuid

from joule_harness import JouleServer, JouleTestCase, fmt_ts, poll

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "whsec_" + base64.b64encode(b"joule-test-key-0123456789").decode()

ALERT_ENV = {
    "JOULE_AUTH_MODE": "required",
    "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN,
    "JOULE_ALERTS_ALLOW_PRIVATE_TARGETS": "true",
    "JOULE_ALERTS_RETRY_INITIAL_BACKOFF": "200ms",
    "JOULE_ALERTS_RETRY_MAX_BACKOFF": "1s",
    "JOULE_ALERTS_DELIVERY_TIMEOUT": "2s",
}


def uid():
    return uuid.uuid4().hex[:10]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def verify_signature(secret, headers, body):
    """Standard Webhooks verification, independent of Joule's code."""
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else \
        secret.encode()
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split())


class Receiver:
    """A webhook receiver on 127.0.0.1: records every request; answers from `statuses`
    (popped per request; 200 when empty); `hang` makes it sleep before answering."""

    def __init__(self, statuses=(), hang=0.0):
        self.requests = []
        self.statuses = list(statuses)
        self.hang = hang
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                           body, status, time.monotonic()))
                if outer.hang:
                    time.sleep(outer.hang)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class AlertServerMixin:
    def register(self, owner):
        dev = f"al-{uid()}"
        status, _, body = self.server.request(
            "POST", "/v1/devices", {"device_id": dev, "owner_id": owner, "name": "plug"},
            headers=ADMIN)
        self.assertEqual(status, 201, f"{body!r}" + self.server.diag())
        return dev, body["token"]

    def owner_key(self, owner):
        status, _, body = self.server.request("POST", f"/v1/owners/{owner}/keys", headers=ADMIN)
        self.assertEqual(status, 201, f"{body!r}" + self.server.diag())
        return body["key"]

    def threshold_rule(self, dev, url, secret=SECRET, **extra):
        rule = {"name": "too much power", "scope": {"device_id": dev}, "kind": "threshold",
                "metric": "power_w", "aggregate": "max", "op": ">", "threshold": 1000,
                "clear_threshold": 900, "for_windows": 1, "resolution": "1m",
                "severity": "critical",
                "channels": [{"type": "webhook", "url": url, "secret": secret}]}
        rule.update(extra)
        return rule

    def ingest_breach(self, dev, token):
        # One minute of 1500 W two minutes ago, then a normal minute: the first window is
        # final (watermark past it), so the rule judges it.
        base = (int(time.time()) // 60 - 3) * 60
        events = [{"device_id": dev, "timestamp": fmt_ts(base + 10 * i),
                   "metrics": {"power_w": 1500.0 if i < 6 else 100.0}} for i in range(12)]
        status, _, body = self.server.post_events(events, headers=bearer(token))
        self.assertEqual(status, 202, f"{body!r}" + self.server.diag())
        return base


class AlertsTest(AlertServerMixin, JouleTestCase):
    server_env = ALERT_ENV

    def test_rule_validation_is_400_with_a_clear_message(self):
        dev, _ = self.register(f"own-{uid()}")
        bad = [
            ({"kind": "threshold"}, "scope"),
            ({"scope": {"device_id": dev}, "kind": "nope"}, "kind"),
            ({"scope": {"device_id": dev}, "kind": "threshold", "metric": "power_w",
              "aggregate": "max", "op": ">", "threshold": 1000, "clear_threshold": 1200},
             "clear_threshold"),
            ({"scope": {"device_id": dev}, "kind": "threshold", "metric": "power_w",
              "aggregate": "max", "op": ">", "threshold": 1, "for_windows": 0}, "for_windows"),
            ({"scope": {"device_id": dev}, "kind": "threshold", "metric": "power_w",
              "aggregate": "max", "op": ">", "threshold": 1, "resolution": "5m"}, "resolution"),
            ({"scope": {"device_id": dev}, "kind": "absence"}, "absent_for"),
            ({"scope": {"device_id": dev}, "kind": "energy_budget"}, "budget_wh"),
            ({"scope": {"device_id": dev}, "kind": "absence", "absent_for": "10m",
              "channels": [{"type": "webhook", "url": "gopher://x", "secret": "s"}]}, "url"),
        ]
        for body, word in bad:
            status, _, resp = self.server.request("POST", "/v1/rules", body, headers=ADMIN)
            self.assertEqual(status, 400, f"{body}: {resp!r}")
            self.assertEqual(resp["error"]["code"], "invalid_argument")
            self.assertIn(word, resp["error"]["message"], body)

    def test_crud_and_secret_redaction(self):
        dev, _ = self.register(f"own-{uid()}")
        rule = self.threshold_rule(dev, "https://hooks.example.com/x", secret="plain-secret")
        status, _, created = self.server.request("POST", "/v1/rules", rule, headers=ADMIN)
        self.assertEqual(status, 201, created)
        rid = created["id"]
        self.assertEqual(created["channels"][0]["secret"], "<redacted>")
        status, _, got = self.server.request("GET", f"/v1/rules/{rid}", headers=ADMIN)
        self.assertEqual(status, 200)
        self.assertEqual(got["threshold"], 1000)
        got["threshold"] = 2000
        for k in ("created_at", "updated_at", "owner_id"):
            got.pop(k)
        status, _, put = self.server.request("PUT", f"/v1/rules/{rid}", got, headers=ADMIN)
        self.assertEqual(status, 200, put)
        self.assertEqual(put["threshold"], 2000)
        status, _, listed = self.server.request("GET", "/v1/rules", headers=ADMIN)
        self.assertIn(rid, [r["id"] for r in listed["rules"]])
        status, _, _ = self.server.request("DELETE", f"/v1/rules/{rid}", headers=ADMIN)
        self.assertEqual(status, 204)
        status, _, _ = self.server.request("GET", f"/v1/rules/{rid}", headers=ADMIN)
        self.assertEqual(status, 404)

    def test_signed_webhook_retried_with_same_id(self):
        receiver = Receiver(statuses=[500, 500])
        self.addCleanup(receiver.close)
        owner = f"own-{uid()}"
        dev, token = self.register(owner)
        status, _, rule = self.server.request("POST", "/v1/rules",
                                              self.threshold_rule(dev, receiver.url),
                                              headers=ADMIN)
        self.assertEqual(status, 201, rule)
        self.ingest_breach(dev, token)
        ok = poll(lambda: any(r[2] == 200 for r in receiver.snapshot()), timeout=30)
        reqs = receiver.snapshot()
        self.assertTrue(ok, f"no successful delivery; got {len(reqs)} requests" + self.diag())
        firing = [r for r in reqs if json.loads(r[1])["event"] == "firing"]
        self.assertGreaterEqual(len(firing), 3, "two 500s, then 200")
        ids = {h["webhook-id"] for h, _, _, _ in firing}
        self.assertEqual(len(ids), 1, f"same webhook-id on every retry: {ids}")
        for headers, body, _, _ in reqs:
            self.assertTrue(verify_signature(SECRET, headers, body), headers)
            self.assertLess(abs(int(headers["webhook-timestamp"]) - time.time()), 60)
        alert = json.loads(firing[0][1])
        self.assertEqual(alert["device_id"], dev)
        self.assertEqual(alert["rule_id"], rule["id"])
        self.assertEqual(alert["state"], "firing")
        self.assertTrue(alert["id"].startswith(f"alert:{dev}:{rule['id']}:"), alert["id"])
        # The API shows it, delivered once, after two failed attempts.
        status, _, listed = self.server.request("GET", f"/v1/alerts?device_id={dev}",
                                                headers=ADMIN)
        self.assertEqual(status, 200)
        mine = [a for a in listed["alerts"] if a["id"] == alert["id"]]
        self.assertEqual(len(mine), 1, listed)
        self.assertEqual(mine[0]["delivery"]["delivered"], 1)
        self.assertFalse(mine[0]["delivery"]["dead_letter"])
        # ack and snooze
        status, _, acked = self.server.request(
            "POST", f"/v1/alerts/{alert['id']}/ack", headers=ADMIN)
        self.assertEqual(status, 200, acked)
        self.assertTrue(acked["acked"])
        status, _, snoozed = self.server.request(
            "POST", f"/v1/alerts/{alert['id']}/snooze", {"for": "1h"}, headers=ADMIN)
        self.assertEqual(status, 200, snoozed)
        self.assertIsNotNone(snoozed["snoozed_until"])
        status, _, _ = self.server.request(
            "POST", f"/v1/alerts/{alert['id']}/snooze", {"for": "soon"}, headers=ADMIN)
        self.assertEqual(status, 400)
        metrics = self.server.metrics_text()
        self.assertIn("joule_alert_delivery_retries_total", metrics)
        self.assertIn("joule_alert_delivery_latency_seconds", metrics)

    def test_hanging_receiver_does_not_delay_another(self):
        slow = Receiver(hang=1.8)  # longer than nothing, shorter than the 2 s timeout
        fast = Receiver()
        self.addCleanup(slow.close)
        self.addCleanup(fast.close)
        owner = f"own-{uid()}"
        devs = []
        for i in range(3):
            dev, token = self.register(owner)
            devs.append((dev, token))
            status, _, _ = self.server.request(
                "POST", "/v1/rules", self.threshold_rule(dev, slow.url), headers=ADMIN)
            self.assertEqual(status, 201)
        fast_dev, fast_token = self.register(owner)
        status, _, _ = self.server.request(
            "POST", "/v1/rules", self.threshold_rule(fast_dev, fast.url), headers=ADMIN)
        self.assertEqual(status, 201)
        start = time.monotonic()
        for dev, token in devs + [(fast_dev, fast_token)]:
            self.ingest_breach(dev, token)
        self.assertTrue(poll(lambda: fast.snapshot(), timeout=30), "fast receiver got nothing")
        fast_at = fast.snapshot()[0][3] - start
        # The slow receiver needs ≥ 3 × 1.8 s for its three alerts, serially; the fast one
        # must not wait behind them.
        self.assertLess(fast_at, 5.0, f"fast receiver waited {fast_at:.1f}s")


class SsrfGuardTest(AlertServerMixin, JouleTestCase):
    server_env = dict(ALERT_ENV, JOULE_ALERTS_ALLOW_PRIVATE_TARGETS="false")

    def test_private_targets_refused_at_creation(self):
        dev, _ = self.register(f"own-{uid()}")
        for url in ("http://127.0.0.1:9/hook", "http://localhost/x", "http://10.0.0.1/",
                    "http://169.254.169.254/latest/meta-data", "http://[::1]:80/"):
            status, _, resp = self.server.request(
                "POST", "/v1/rules", self.threshold_rule(dev, url), headers=ADMIN)
            self.assertEqual(status, 400, f"{url}: {resp!r}")
            self.assertIn("allow_private_targets", resp["error"]["message"])
        status, _, resp = self.server.request(
            "POST", "/v1/rules", self.threshold_rule(dev, "https://hooks.example.com/a"),
            headers=ADMIN)
        self.assertEqual(status, 201, resp)


class IsolationTest(AlertServerMixin, JouleTestCase):
    server_env = ALERT_ENV

    def test_owner_sees_only_own_rules_and_alerts(self):
        receiver = Receiver()
        self.addCleanup(receiver.close)
        a, b = f"own-a-{uid()}", f"own-b-{uid()}"
        dev_a, token_a = self.register(a)
        dev_b, _ = self.register(b)
        key_a, key_b = self.owner_key(a), self.owner_key(b)
        status, _, rule = self.server.request(
            "POST", "/v1/rules", self.threshold_rule(dev_a, receiver.url), headers=bearer(key_a))
        self.assertEqual(status, 201, rule)
        self.assertEqual(rule["owner_id"], a)
        # B cannot see, change or delete it, nor scope a rule to A's device or owner id.
        status, _, listed = self.server.request("GET", "/v1/rules", headers=bearer(key_b))
        self.assertEqual(status, 200)
        self.assertNotIn(rule["id"], [r["id"] for r in listed["rules"]])
        for method in ("GET", "DELETE"):
            status, _, _ = self.server.request(method, f"/v1/rules/{rule['id']}",
                                               headers=bearer(key_b))
            self.assertEqual(status, 404, method)
        status, _, _ = self.server.request(
            "POST", "/v1/rules", self.threshold_rule(dev_a, receiver.url), headers=bearer(key_b))
        self.assertEqual(status, 404)
        status, _, _ = self.server.request(
            "POST", "/v1/rules", dict(self.threshold_rule(dev_b, receiver.url),
                                      scope={"owner_id": a}), headers=bearer(key_b))
        self.assertEqual(status, 403)
        # A's alert fires; B sees no alert of A's and cannot ack it.
        self.ingest_breach(dev_a, token_a)
        self.assertTrue(poll(lambda: receiver.snapshot(), timeout=30), self.diag())
        status, _, mine = self.server.request("GET", "/v1/alerts", headers=bearer(key_a))
        self.assertEqual(status, 200)
        ids = [x["id"] for x in mine["alerts"]]
        self.assertTrue(ids, mine)
        status, _, theirs = self.server.request("GET", f"/v1/alerts?device_id={dev_a}",
                                                headers=bearer(key_b))
        self.assertEqual(status, 200)
        self.assertEqual(theirs["alerts"], [])
        status, _, _ = self.server.request("POST", f"/v1/alerts/{ids[0]}/ack",
                                           headers=bearer(key_b))
        self.assertEqual(status, 404)
        status, _, _ = self.server.request("POST", f"/v1/alerts/{ids[0]}/ack",
                                           headers=bearer(key_a))
        self.assertEqual(status, 200)


class KillTest(AlertServerMixin, unittest.TestCase):
    def test_pending_delivery_survives_sigkill(self):
        receiver = Receiver(statuses=[500] * 1000)  # failing until we say so
        self.addCleanup(receiver.close)
        self.server = JouleServer(env=dict(ALERT_ENV, JOULE_ALERTS_RETRY_INITIAL_BACKOFF="1s",
                                           JOULE_ALERTS_RETRY_MAX_BACKOFF="1s"),
                                  name="alerts-kill")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        dev, token = self.register(f"own-{uid()}")
        status, _, _ = self.server.request("POST", "/v1/rules",
                                           self.threshold_rule(dev, receiver.url), headers=ADMIN)
        self.assertEqual(status, 201)
        self.ingest_breach(dev, token)
        self.assertTrue(poll(lambda: receiver.snapshot(), timeout=30),
                        "no attempt before the kill" + self.server.diag())
        first_id = receiver.snapshot()[0][0]["webhook-id"]
        self.server.kill9()
        with receiver.lock:
            receiver.statuses = []  # the receiver recovers while Joule is down
        self.server.start()
        ok = poll(lambda: any(r[2] == 200 for r in receiver.snapshot()), timeout=30)
        self.assertTrue(ok, "not delivered after restart" + self.server.diag())
        delivered = [r for r in receiver.snapshot() if r[2] == 200]
        self.assertEqual(delivered[0][0]["webhook-id"], first_id)
        for headers, body, _, _ in receiver.snapshot():
            self.assertTrue(verify_signature(SECRET, headers, body))
        # The alert is still one alert, firing, after the restart.
        status, _, listed = self.server.request("GET", f"/v1/alerts?device_id={dev}",
                                                headers=ADMIN)
        self.assertEqual(status, 200)
        firing = [a for a in listed["alerts"] if a["state"] == "firing"]
        self.assertEqual(len(firing), 1, listed)


if __name__ == "__main__":
    unittest.main()
