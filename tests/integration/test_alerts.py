"""Alerts end to end (CONTRACT section 4, issue 8) against the real binary: rules API
validation, a threshold rule firing a signed webhook to a receiver on loopback (every
signature verified here with Python's hmac), retries of a failing receiver with the same
webhook-id, dead letters in the API and metrics, a snooze-end reminder, a receiver that
hangs (past the delivery timeout) does not delay another, https delivery to a test-owned
receiver with a self-signed CA (alerts.webhook_ca_file) and refusal of an untrusted one,
the bounded outbox (alerts.outbox_capacity: overflow counted, never silent), SIGKILL with
deliveries of several alerts pending (each delivered after restart with one webhook-id), a
firing energy budget across a SIGKILL (no false retraction or reopening), one crossing
staying one alert after a SIGKILL with the checkpoint inside its episode, the bounds of
rule and snooze durations,
the SSRF guard at rule creation, owner isolation of rules and alerts, and the first absence
rule created while a device reports (no false firing)."""

import base64
import gzip
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

from joule_harness import JouleServer, JouleTestCase, fmt_ts, poll, psql, read_stream

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
    "JOULE_ALERTS_DELIVERY_MAX_ATTEMPTS": "4",
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
    (popped per request; 200 when empty), or `status_for(body)` when that is not None;
    `hang` makes it sleep before answering."""

    def __init__(self, statuses=(), hang=0.0, tls_cert=None, status_for=None):
        self.requests = []
        self.statuses = list(statuses)
        self.status_for = status_for  # body -> status, or None for the default
        self.hang = hang
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    if outer.status_for:
                        status = outer.status_for(body) or status
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
        self.scheme = "http"
        if tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls_cert)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def metric_value(text, name, labels=""):
    """The value of one sample `name{labels}` in Prometheus text, or None."""
    m = re.search(r"^" + re.escape(name + (("{" + labels + "}") if labels else "")) +
                  r" ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def make_certs(directory):
    """A test CA and a server certificate it signs for IP 127.0.0.1, plus an unrelated
    self-signed certificate for 127.0.0.1 (not trusted). Returns paths."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    p = lambda name: os.path.join(directory, name)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=joule test CA", "-keyout", p("ca.key"), "-out", p("ca.pem"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
        p("server.key"), "-out", p("server.csr"))
    with open(p("ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", p("server.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
        "-CAcreateserial", "-days", "2", "-extfile", p("ext.cnf"), "-out", p("server.pem"))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
        p("rogue.key"), "-out", p("rogue.pem"))
    return {"ca": p("ca.pem"), "server": (p("server.pem"), p("server.key")),
            "rogue": (p("rogue.pem"), p("rogue.key"))}


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

    def device_with_rule(self):
        """A webhook receiver, a new owner's device and an admin threshold rule on it that
        posts to the receiver: (receiver, device id, device token, rule)."""
        receiver = Receiver()
        self.addCleanup(receiver.close)
        dev, token = self.register(f"own-{uid()}")
        status, _, rule = self.server.request(
            "POST", "/v1/rules", self.threshold_rule(dev, receiver.url), headers=ADMIN)
        self.assertEqual(status, 201, rule)
        return receiver, dev, token, rule

    def threshold_rule(self, dev, url, secret=SECRET, **extra):
        rule = {"name": "too much power", "scope": {"device_id": dev}, "kind": "threshold",
                "metric": "power_w", "aggregate": "max", "op": ">", "threshold": 1000,
                "clear_threshold": 900, "for_windows": 1, "resolution": "1m",
                "severity": "critical",
                "channels": [{"type": "webhook", "url": url, "secret": secret}]}
        rule.update(extra)
        return rule

    def alerts_of(self, dev):
        status, _, listed = self.server.request("GET", f"/v1/alerts?device_id={dev}",
                                                headers=ADMIN)
        self.assertEqual(status, 200, listed)
        return listed["alerts"]

    def ingest_breach(self, dev, token, recover=True):
        # One minute of 1500 W three minutes ago, then a normal minute (recover) or another
        # 1500 W one (the alert stays firing): the first window is final (watermark past
        # it), so the rule judges it.
        base = (int(time.time()) // 60 - 3) * 60
        events = [{"device_id": dev, "timestamp": fmt_ts(base + 10 * i),
                   "metrics": {"power_w": 1500.0 if i < 6 or not recover else 100.0}}
                  for i in range(12)]
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
            # Durations carry a unit and are at most 3650d (black-box test: a cooldown of
            # 100000d overflowed and did nothing; "5" was read as 5s).
            ({"scope": {"device_id": dev}, "kind": "absence", "absent_for": "10m",
              "cooldown": "100000d"}, "cooldown must be at most 3650d"),
            ({"scope": {"device_id": dev}, "kind": "absence", "absent_for": "3651d"},
             "absent_for must be at most 3650d"),
            ({"scope": {"device_id": dev}, "kind": "absence", "absent_for": "10m",
              "cooldown": "5"}, "cooldown must be a duration with a unit"),
            ({"scope": {"device_id": dev}, "kind": "absence", "absent_for": "10m",
              "channels": [{"type": "webhook", "url": "gopher://x", "secret": "s"}]}, "url"),
            # The same url twice would deliver every transition twice (black-box test).
            ({"scope": {"device_id": dev}, "kind": "absence", "absent_for": "10m",
              "channels": [{"type": "webhook", "url": "https://hooks.example.com/x",
                            "secret": "s"}] * 2}, "channels[1].url duplicates channels[0]"),
        ]
        for body, word in bad:
            status, _, resp = self.server.request("POST", "/v1/rules", body, headers=ADMIN)
            self.assertEqual(status, 400, f"{body}: {resp!r}")
            self.assertEqual(resp["error"]["code"], "invalid_argument")
            self.assertIn(word, resp["error"]["message"], body)

    def test_list_cursor_must_be_a_next_cursor(self):
        """Found by a black-box test (on the audit log, the same here): a cursor with a sign
        was taken ("-1:x" read as opened_at −1 µs). Only next_cursor's form
        "<digits>:<alert id>" is; anything else is 400 invalid_argument."""
        status, _, body = self.server.request("GET", "/v1/alerts?cursor=1700000000000000:a1",
                                              headers=ADMIN)
        self.assertEqual(status, 200, body)
        for cursor in ("-1:a1", "%2B5:a1", "%205:a1", "abc", "5", "5:", ":a1", "0x5:a1",
                       "99999999999999999999:a1"):
            with self.subTest(cursor=cursor):
                status, _, resp = self.server.request("GET", f"/v1/alerts?cursor={cursor}",
                                                      headers=ADMIN)
                self.assertEqual((status, resp["error"]["code"]), (400, "invalid_argument"),
                                 resp)
                self.assertIn("next_cursor", resp["error"]["message"])

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
        # A PUT with a channel twice (the secret redacted, as a GET returns it): 400.
        twice = dict(got, channels=got["channels"] * 2)
        status, _, resp = self.server.request("PUT", f"/v1/rules/{rid}", twice, headers=ADMIN)
        self.assertEqual(status, 400, resp)
        self.assertIn("channels[1].url duplicates channels[0]", resp["error"]["message"])
        # "<redacted>" with a url the stored rule has not: 400 naming the channel (found by
        # a black-box test: "channels[].secret is required").
        moved = dict(got, channels=[dict(got["channels"][0], url="https://hooks.example.com/y")])
        status, _, resp = self.server.request("PUT", f"/v1/rules/{rid}", moved, headers=ADMIN)
        self.assertEqual((status, resp["error"]["code"]), (400, "invalid_argument"), resp)
        self.assertIn("channels[0].secret is required", resp["error"]["message"])
        # The same GET posted as a new rule (a copy): no stored secret to keep, 400 (found by
        # a black-box test: "<redacted>" was stored as the secret and signed the webhooks).
        status, _, resp = self.server.request("POST", "/v1/rules", dict(got, name="copy"),
                                              headers=ADMIN)
        self.assertEqual((status, resp["error"]["code"]), (400, "invalid_argument"), resp)
        self.assertIn("channels[0].secret is required", resp["error"]["message"])
        status, _, put = self.server.request("PUT", f"/v1/rules/{rid}", got, headers=ADMIN)
        self.assertEqual(status, 200, put)
        self.assertEqual(put["threshold"], 2000)
        status, _, listed = self.server.request("GET", "/v1/rules", headers=ADMIN)
        self.assertIn(rid, [r["id"] for r in listed["rules"]])
        status, _, _ = self.server.request("DELETE", f"/v1/rules/{rid}", headers=ADMIN)
        self.assertEqual(status, 204)
        status, _, _ = self.server.request("GET", f"/v1/rules/{rid}", headers=ADMIN)
        self.assertEqual(status, 404)

    def test_put_that_changes_nothing_writes_nothing(self):
        """Found by a black-box test: a rule's GET body PUT back unchanged moved updated_at
        (and was audited as rule.updated). A PUT that changes nothing writes nothing: 200
        with the rule as it is."""
        dev, _ = self.register(f"own-{uid()}")
        rule = self.threshold_rule(dev, "https://hooks.example.com/same", secret="plain-secret")
        status, _, created = self.server.request("POST", "/v1/rules", rule, headers=ADMIN)
        self.assertEqual(status, 201, created)
        rid = created["id"]
        status, _, got = self.server.request("GET", f"/v1/rules/{rid}", headers=ADMIN)
        self.assertEqual(status, 200, got)
        time.sleep(0.05)  # updated_at has millisecond resolution
        # The GET's body as it is (secrets redacted), and the rule as first sent (its
        # secret, no defaults, another key order).
        for body in (got, dict(reversed(list(rule.items())))):
            status, _, put = self.server.request("PUT", f"/v1/rules/{rid}", body, headers=ADMIN)
            self.assertEqual(status, 200, put)
            self.assertEqual(put, got)
            self.assertEqual(self.server.request("GET", f"/v1/rules/{rid}", headers=ADMIN)[2],
                             got)
        status, _, audit = self.server.request("GET", f"/v1/admin/audit?target_id={rid}",
                                               headers=ADMIN)
        self.assertEqual(status, 200, audit)
        self.assertEqual([e["action"] for e in audit["entries"]], ["rule.created"])
        # A real change still moves it.
        status, _, put = self.server.request("PUT", f"/v1/rules/{rid}",
                                             dict(got, threshold=2000), headers=ADMIN)
        self.assertEqual(status, 200, put)
        self.assertGreater(put["updated_at"], got["updated_at"])

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
        # A snooze ends at most 3650d from now (found by a black-box test: "100000d"
        # overflowed — 200 with snoozed_until null and an at once "snooze ended in 1716"
        # reminder — and a time after 2262 was "not an RFC 3339 time").
        for body, message in (
                ({"for": "100000d"}, "for must be at most 3650d"),
                ({"for": "3651d"}, "for must be at most 3650d"),
                ({"for": "5"}, "for must be a duration with a unit"),
                ({"until": "2300-01-01T00:00:00Z"}, "until must be at most 3650d"),
                ({"until": "9999-12-31T23:59:59Z"}, "until must be at most 3650d"),
                ({"until": "1600-01-01T00:00:00Z"}, "until must be in the future"),
                ({"until": "2300-13-01T00:00:00Z"}, "until must be an RFC 3339 time")):
            status, _, err = self.server.request(
                "POST", f"/v1/alerts/{alert['id']}/snooze", body, headers=ADMIN)
            self.assertEqual((status, err["error"]["code"]), (400, "invalid_argument"), body)
            self.assertIn(message, err["error"]["message"], body)
        for body in ({"for": "3650d"}, {"until": fmt_ts(int(time.time()) + 3649 * 86400)}):
            status, _, snoozed = self.server.request(
                "POST", f"/v1/alerts/{alert['id']}/snooze", body, headers=ADMIN)
            self.assertEqual(status, 200, snoozed)
            self.assertGreater(snoozed["snoozed_until"], fmt_ts(int(time.time()) + 3648 * 86400))
        status, _, snoozed = self.server.request(
            "POST", f"/v1/alerts/{alert['id']}/snooze", {"for": "1h"}, headers=ADMIN)
        self.assertEqual(status, 200, snoozed)
        # Unknown fields are refused as for rules (found by a black-box test: {"ackd": false}
        # answered 200 and acked; a snooze ignored them too).
        for action, body in (("ack", {"ackd": False}), ("snooze", {"for": "1h", "unitl": None})):
            status, _, err = self.server.request(
                "POST", f"/v1/alerts/{alert['id']}/{action}", body, headers=ADMIN)
            self.assertEqual((status, err["error"]["code"]), (400, "invalid_argument"), err)
            self.assertIn("unknown field", err["error"]["message"])
        status, _, unacked = self.server.request(
            "POST", f"/v1/alerts/{alert['id']}/ack", {"acked": False}, headers=ADMIN)
        self.assertEqual(status, 200, unacked)
        self.assertFalse(unacked["acked"])
        # Bodies as on every JSON route: another Content-Type 415, over 4 KiB 413.
        for action, body in (("ack", '{"acked": true}'), ("snooze", '{"for": "1h"}')):
            status, _, err = self.server.request(
                "POST", f"/v1/alerts/{alert['id']}/{action}", body, headers=ADMIN,
                content_type="text/plain")
            self.assertEqual((status, err["error"]["code"]), (415, "unsupported_media_type"))
            # A content coding too (a gzip body was parsed as sent: 400; found by a
            # black-box test), with or without a body.
            for data in (gzip.compress(body.encode()), b""):
                status, hdrs, err = self.server.request(
                    "POST", f"/v1/alerts/{alert['id']}/{action}", data,
                    headers=dict(ADMIN, **{"Content-Encoding": "gzip"}))
                self.assertEqual((status, err["error"]["code"]), (415, "unsupported_media_type"))
                self.assertEqual(hdrs.get("accept-encoding"), "identity", hdrs)
            status, _, err = self.server.request(
                "POST", f"/v1/alerts/{alert['id']}/{action}", body[:-1] + " " * 5000 + "}",
                headers=ADMIN)
            self.assertEqual((status, err["error"]["code"]), (413, "payload_too_large"))
        metrics = self.server.metrics_text()
        self.assertIn("joule_alert_delivery_retries_total", metrics)
        self.assertIn("joule_alert_delivery_latency_seconds", metrics)

    def test_hanging_receiver_does_not_delay_another(self):
        slow = Receiver(hang=30)  # hangs past the 2 s delivery timeout on every attempt
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
        # The hanging receiver costs its worker ≥ 3 × 2 s (three alerts, each attempt cut
        # at the timeout), serially; the fast one must not wait behind them.
        self.assertLess(fast_at, 5.0, f"fast receiver waited {fast_at:.1f}s")
        # The hanging target's deliveries time out and are retried, not lost.
        self.assertTrue(poll(lambda: len(slow.snapshot()) >= 4, timeout=30),
                        f"hanging receiver saw {len(slow.snapshot())} attempts")
        alerts = [a for dev, _ in devs for a in self.alerts_of(dev)]
        self.assertEqual(len(alerts), 3, alerts)
        errors = [a["delivery"]["last_error"] or "" for a in alerts]
        self.assertTrue(any("timeout" in e for e in errors), errors)

    def test_sse_alert_event_on_stream(self):
        receiver, dev, token, rule = self.device_with_rule()
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", f"/v1/stream?device_id={dev}", headers=ADMIN)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertIn("text/event-stream", resp.getheader("Content-Type", ""))
        self.ingest_breach(dev, token, recover=False)

        def firing(seen):
            # Complete events only (each ends with a blank line): a read may end mid-event.
            for block in seen.decode(errors="replace").split("\n\n")[:-1]:
                lines = block.split("\n")
                if "event: alert" in lines:
                    data = "".join(l[len("data: "):] for l in lines if l.startswith("data: "))
                    a = json.loads(data)
                    if a.get("event") == "firing":
                        return a
            return None
        seen = read_stream(conn, resp, firing, timeout=30)
        alert = firing(seen)
        self.assertIsNotNone(alert, f"no SSE alert event; got {seen[-500:]!r}")
        self.assertEqual(alert["device_id"], dev)
        self.assertEqual(alert["rule_id"], rule["id"])
        self.assertEqual(alert["state"], "firing")

    def test_dead_letter_in_api_and_metrics(self):
        receiver = Receiver(statuses=[503] * 100)
        self.addCleanup(receiver.close)
        dev, token = self.register(f"own-{uid()}")
        status, _, _ = self.server.request(
            "POST", "/v1/rules", self.threshold_rule(dev, receiver.url), headers=ADMIN)
        self.assertEqual(status, 201)
        before = metric_value(self.server.metrics_text(), "joule_alert_dead_letters_total") or 0
        self.ingest_breach(dev, token, recover=False)
        dead = poll(lambda: [a for a in self.alerts_of(dev) if a["delivery"]["dead_letter"]],
                    timeout=30)
        self.assertTrue(dead, f"no dead letter; {len(receiver.snapshot())} attempts" +
                        self.diag())
        d = dead[0]["delivery"]
        self.assertEqual(d["attempts"], 4, d)  # alerts.delivery_max_attempts
        self.assertEqual(d["dead_letters"], 1, d)
        self.assertEqual(d["pending"], 0, d)
        self.assertEqual(d["last_error"], "HTTP 503", d)
        self.assertEqual(len(receiver.snapshot()), 4)
        self.assertEqual(len({h["webhook-id"] for h, _, _, _ in receiver.snapshot()}), 1)
        text = self.server.metrics_text()
        self.assertEqual(metric_value(text, "joule_alert_dead_letters_total"), before + 1)
        self.assertGreaterEqual(metric_value(text, "joule_alert_delivery_retries_total"), 3)
        self.assertGreaterEqual(metric_value(text, "joule_alerts", 'state="firing"'), 1)
        self.assertIsNotNone(metric_value(text, "joule_alerts", 'state="pending"'))
        self.assertGreaterEqual(
            metric_value(text, "joule_alert_delivery_latency_seconds_count"), 1)
        self.assertGreaterEqual(
            metric_value(text, "joule_alert_transitions_total", 'event="firing"'), 1)

    def test_snooze_end_reminds_a_still_firing_alert(self):
        receiver, dev, token, _ = self.device_with_rule()
        self.ingest_breach(dev, token, recover=False)
        self.assertTrue(poll(lambda: receiver.snapshot(), timeout=30), self.diag())
        first = receiver.snapshot()[0]
        alert = json.loads(first[1])
        self.assertEqual(alert["event"], "firing")
        # A snooze that has already ended is refused (it was accepted and sent an immediate
        # reminder; found by a black-box test).
        for until in ("2020-01-01T00:00:00Z", fmt_ts(time.time() - 1)):
            status, _, resp = self.server.request(
                "POST", f"/v1/alerts/{alert['id']}/snooze", {"until": until}, headers=ADMIN)
            self.assertEqual(status, 400, resp)
            self.assertEqual(resp["error"]["code"], "invalid_argument")
            self.assertIn("future", resp["error"]["message"])
        time.sleep(1.5)  # a reminder would be sent within a tick (1 s)
        self.assertEqual(len(receiver.snapshot()), 1, "no reminder for a refused snooze")
        status, _, snoozed = self.server.request(
            "POST", f"/v1/alerts/{alert['id']}/snooze", {"for": "2s"}, headers=ADMIN)
        self.assertEqual(status, 200, snoozed)
        self.assertTrue(poll(lambda: len(receiver.snapshot()) >= 2, timeout=20),
                        "no reminder after the snooze ended" + self.diag())
        headers, body, _, _ = receiver.snapshot()[1]
        reminder = json.loads(body)
        self.assertEqual(reminder["id"], alert["id"])
        self.assertEqual(reminder["event"], "firing")
        self.assertIs(reminder["reminder"], True)
        self.assertIn("snooze", reminder["annotation"])
        self.assertNotEqual(headers["webhook-id"], first[0]["webhook-id"])
        self.assertTrue(verify_signature(SECRET, headers, body))
        time.sleep(2)  # exactly one reminder per snooze
        self.assertEqual(len(receiver.snapshot()), 2)
        self.assertGreaterEqual(metric_value(self.server.metrics_text(),
                                             "joule_alert_snooze_reminders_total"), 1)
        # The snooze is over: the API shows none (found by a black-box test: the past time
        # stayed in snoozed_until).
        status, _, listed = self.server.request("GET", f"/v1/alerts?device_id={dev}",
                                                headers=ADMIN)
        mine = [a for a in listed["alerts"] if a["id"] == alert["id"]]
        self.assertEqual(len(mine), 1, listed)
        self.assertIsNone(mine[0]["snoozed_until"], mine[0])


    def test_deleting_a_rule_sends_resolved_through_its_channels(self):
        # Found by a black-box test: the alert resolved ("the rule was deleted") but no
        # webhook went out (the deleted rule's channels were looked up among the rules).
        receiver, dev, token, rule = self.device_with_rule()
        self.ingest_breach(dev, token, recover=False)
        self.assertTrue(poll(lambda: receiver.snapshot(), timeout=30), self.diag())
        firing = receiver.snapshot()[0]
        self.assertEqual(json.loads(firing[1])["event"], "firing")
        status, _, _ = self.server.request("DELETE", f"/v1/rules/{rule['id']}", headers=ADMIN)
        self.assertEqual(status, 204)
        self.assertTrue(poll(lambda: len(receiver.snapshot()) >= 2, timeout=20),
                        "no resolved webhook after the rule was deleted" + self.diag())
        headers, body, _, _ = receiver.snapshot()[1]
        resolved = json.loads(body)
        self.assertEqual(resolved["event"], "resolved")
        self.assertEqual(resolved["id"], json.loads(firing[1])["id"])
        self.assertIn("rule was deleted", resolved["annotation"])
        self.assertNotEqual(headers["webhook-id"], firing[0]["webhook-id"])
        self.assertTrue(verify_signature(SECRET, headers, body))
        self.assertEqual([a["state"] for a in self.alerts_of(dev)], ["resolved"])


class DeliveryOrderTest(AlertServerMixin, JouleTestCase):
    server_env = dict(ALERT_ENV, JOULE_ALERTS_DELIVERY_MAX_ATTEMPTS="1000")

    def test_one_alerts_webhooks_arrive_in_order_across_retries(self):
        # While the receiver refuses "firing", the alert's "resolved" waits for it: it was
        # delivered first and "firing" after it, so the receiver's last word was "firing".
        failing = [True]
        receiver = Receiver(status_for=lambda body: 500 if failing[0] and
                            json.loads(body)["event"] == "firing" else None)
        self.addCleanup(receiver.close)
        dev, token = self.register(f"own-{uid()}")
        status, _, _ = self.server.request(
            "POST", "/v1/rules", self.threshold_rule(dev, receiver.url), headers=ADMIN)
        self.assertEqual(status, 201)
        base = (int(time.time()) // 60 - 10) * 60
        events = [{"device_id": dev, "timestamp": fmt_ts(base + 60 * m + 30),
                   "metrics": {"power_w": 1500.0 if m == 0 else 100.0}} for m in range(3)]
        status, _, body = self.server.post_events(events, headers=bearer(token))
        self.assertEqual(status, 202, body)
        self.assertTrue(poll(lambda: [a["state"] for a in self.alerts_of(dev)] == ["resolved"],
                             timeout=30), self.diag())
        time.sleep(2)  # time enough to deliver "resolved" if it did not wait
        self.assertNotIn("resolved", [json.loads(b)["event"] for _, b, _, _ in
                                      receiver.snapshot()])
        failing[0] = False
        delivered = lambda: [json.loads(b)["event"] for _, b, st, _ in receiver.snapshot()
                             if st == 200]
        self.assertTrue(poll(lambda: len(delivered()) >= 2, timeout=30), self.diag())
        self.assertEqual(delivered(), ["firing", "resolved"])

class HttpsWebhookTest(AlertServerMixin, unittest.TestCase):
    """https delivery through Joule's OpenSSL client to test-owned receivers on loopback:
    one with a certificate from a test CA given in alerts.webhook_ca_file (delivered,
    signatures verified), one self-signed and untrusted (refused at the handshake)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="joule-tls-")
        cls.certs = make_certs(cls.tmp)
        cls.server = JouleServer(env=dict(ALERT_ENV, JOULE_ALERTS_WEBHOOK_CA_FILE=cls.certs["ca"]),
                                 name="alerts-https")
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_https_delivery_with_configured_ca(self):
        good = Receiver(tls_cert=self.certs["server"])
        rogue = Receiver(tls_cert=self.certs["rogue"])
        self.addCleanup(good.close)
        self.addCleanup(rogue.close)
        self.assertTrue(good.url.startswith("https://127.0.0.1:"))
        owner = f"own-{uid()}"
        dev_good, token_good = self.register(owner)
        dev_rogue, token_rogue = self.register(owner)
        for dev, r in ((dev_good, good), (dev_rogue, rogue)):
            status, _, body = self.server.request(
                "POST", "/v1/rules", self.threshold_rule(dev, r.url), headers=ADMIN)
            self.assertEqual(status, 201, body)
        self.ingest_breach(dev_good, token_good, recover=False)
        self.ingest_breach(dev_rogue, token_rogue, recover=False)
        self.assertTrue(poll(lambda: good.snapshot(), timeout=30),
                        "nothing delivered over https" + self.server.diag())
        headers, body, _, _ = good.snapshot()[0]
        self.assertTrue(verify_signature(SECRET, headers, body), headers)
        self.assertEqual(json.loads(body)["device_id"], dev_good)
        # The untrusted receiver never gets a request: the handshake fails verification.
        failed = poll(lambda: [a for a in self.alerts_of(dev_rogue)
                               if a["delivery"]["attempts"] >= 1], timeout=30)
        self.assertTrue(failed, self.server.diag())
        self.assertIn("certificate verify failed", failed[0]["delivery"]["last_error"])
        self.assertEqual(rogue.snapshot(), [])
        delivered = poll(lambda: [a for a in self.alerts_of(dev_good)
                                  if a["delivery"]["delivered"] == 1], timeout=10)
        self.assertTrue(delivered, self.alerts_of(dev_good))

    def test_bad_ca_file_fails_start(self):
        bad = os.path.join(self.tmp, "not-a-cert.pem")
        with open(bad, "w") as f:
            f.write("not a certificate\n")
        server = JouleServer(env=dict(ALERT_ENV, JOULE_ALERTS_WEBHOOK_CA_FILE=bad),
                             name="alerts-bad-ca")
        self.addCleanup(server.cleanup)
        with self.assertRaises(Exception):
            server.start()
        self.assertIn("webhook_ca_file", server.diag())


class OutboxBoundTest(AlertServerMixin, JouleTestCase):
    """alerts.outbox_capacity = 2 and a receiver that keeps failing: two deliveries stay
    pending, the others are refused — counted in joule_alert_deliveries_dropped_total and
    in each alert's delivery.dropped, while every alert is still stored and firing."""
    server_env = dict(ALERT_ENV, JOULE_ALERTS_OUTBOX_CAPACITY="2",
                      JOULE_ALERTS_DELIVERY_MAX_ATTEMPTS="1000",
                      JOULE_ALERTS_RETRY_INITIAL_BACKOFF="30s",
                      JOULE_ALERTS_RETRY_MAX_BACKOFF="30s")

    def test_overflow_is_counted_not_silent(self):
        receiver = Receiver(statuses=[500] * 1000)
        self.addCleanup(receiver.close)
        owner = f"own-{uid()}"
        devs = []
        for _ in range(4):
            dev, token = self.register(owner)
            status, _, _ = self.server.request(
                "POST", "/v1/rules", self.threshold_rule(dev, receiver.url), headers=ADMIN)
            self.assertEqual(status, 201)
            devs.append((dev, token))
        for dev, token in devs:
            self.ingest_breach(dev, token, recover=False)
        firing = lambda: [a for dev, _ in devs for a in self.alerts_of(dev)
                          if a["state"] == "firing"]
        self.assertTrue(poll(lambda: len(firing()) == 4, timeout=30),
                        f"{len(firing())} alerts firing" + self.diag())
        text = self.server.metrics_text()
        self.assertEqual(metric_value(text, "joule_alert_outbox_capacity"), 2)
        self.assertEqual(metric_value(text, "joule_alert_outbox_pending"), 2)
        self.assertEqual(metric_value(text, "joule_alert_deliveries_dropped_total"), 2)
        deliveries = sorted((a["delivery"]["pending"], a["delivery"]["dropped"])
                            for a in firing())
        self.assertEqual(deliveries, [(0, 1), (0, 1), (1, 0), (1, 0)])
        self.assertIn("outbox full", self.server.diag(400))


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


    def test_rule_ids_of_other_owners_do_not_leak_through_create(self):
        # Rule ids are one namespace for all owners. An owner key that chose an id learned
        # from the 409 "rule already exists: <id>" that another owner held it (found by a
        # black-box test). Owner keys get server-assigned ids; a chosen one is refused the
        # same way whether or not it exists.
        a, b = f"own-a-{uid()}", f"own-b-{uid()}"
        dev_a, _ = self.register(a)
        dev_b, _ = self.register(b)
        key_a, key_b = self.owner_key(a), self.owner_key(b)
        taken = f"secret-rule-{uid()}"
        status, _, rule = self.server.request(
            "POST", "/v1/rules", dict(self.threshold_rule(dev_a, "https://hooks.example.com/a"),
                                      id=taken), headers=ADMIN)
        self.assertEqual(status, 201, rule)
        self.assertEqual((rule["id"], rule["owner_id"]), (taken, a))
        answers = []
        for rid in (taken, f"free-rule-{uid()}"):
            status, _, resp = self.server.request(
                "POST", "/v1/rules", dict(self.threshold_rule(dev_b, "https://hooks.example.com/b"),
                                          id=rid), headers=bearer(key_b))
            answers.append((status, resp))
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(answers[0][0], 400, answers)
        self.assertEqual(answers[0][1]["error"]["code"], "invalid_argument")
        self.assertNotIn(taken, json.dumps(answers[0][1]))
        # Without an id the owner's rule gets a server-assigned one.
        status, _, mine = self.server.request(
            "POST", "/v1/rules", self.threshold_rule(dev_b, "https://hooks.example.com/b"),
            headers=bearer(key_b))
        self.assertEqual(status, 201, mine)
        self.assertTrue(mine["id"].startswith("rule_"), mine)
        # The admin still chooses ids; its conflict names the id (it sees every rule).
        status, _, resp = self.server.request(
            "POST", "/v1/rules", dict(self.threshold_rule(dev_a, "https://hooks.example.com/a"),
                                      id=taken), headers=ADMIN)
        self.assertEqual(status, 409, resp)


class KillTest(AlertServerMixin, unittest.TestCase):
    def test_pending_deliveries_survive_sigkill(self):
        receiver = Receiver(statuses=[500] * 1000)  # failing until we say so
        self.addCleanup(receiver.close)
        self.server = JouleServer(env=dict(ALERT_ENV, JOULE_ALERTS_RETRY_INITIAL_BACKOFF="1s",
                                           JOULE_ALERTS_RETRY_MAX_BACKOFF="1s",
                                           JOULE_ALERTS_DELIVERY_MAX_ATTEMPTS="1000"),
                                  name="alerts-kill")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        owner = f"own-{uid()}"
        devs = []
        for _ in range(3):
            dev, token = self.register(owner)
            status, _, _ = self.server.request(
                "POST", "/v1/rules", self.threshold_rule(dev, receiver.url), headers=ADMIN)
            self.assertEqual(status, 201)
            devs.append((dev, token))
        for dev, token in devs:
            self.ingest_breach(dev, token, recover=False)
        attempted = lambda: {json.loads(b)["device_id"] for _, b, _, _ in receiver.snapshot()}
        self.assertTrue(poll(lambda: len(attempted()) == 3, timeout=30),
                        f"attempts before the kill for {attempted()}" + self.server.diag())
        self.server.kill9()
        with receiver.lock:
            receiver.statuses = []  # the receiver recovers while Joule is down
        self.server.start()
        delivered = lambda: {json.loads(b)["id"] for _, b, st, _ in receiver.snapshot()
                             if st == 200}
        ok = poll(lambda: len(delivered()) == 3, timeout=30)
        self.assertTrue(ok, f"delivered after restart: {delivered()}" + self.server.diag())
        # Every alert: delivered at least once, one webhook-id on every attempt before and
        # after the kill, every signature valid.
        ids = {}
        for headers, body, _, _ in receiver.snapshot():
            self.assertTrue(verify_signature(SECRET, headers, body))
            alert = json.loads(body)
            ids.setdefault((alert["id"], alert["event"]), set()).add(headers["webhook-id"])
        self.assertEqual(len(ids), 3, ids)  # the three alerts' firing deliveries
        for alert_id, webhook_ids in ids.items():
            self.assertEqual(len(webhook_ids), 1, f"{alert_id}: {webhook_ids}")
        # Each is still one alert, firing, after the restart.
        for dev, _ in devs:
            firing = [a for a in self.alerts_of(dev) if a["state"] == "firing"]
            self.assertEqual(len(firing), 1, firing)


    def test_firing_alert_continues_after_sigkill(self):
        # Found by a black-box test: kill -9 right after the firing webhook; after the
        # restart the processors replayed the window before the alert's opening window,
        # which "resolved" it (a body resolving at a window before its start), and the
        # alert fired again under the same webhook-id (dropped by the outbox): the
        # receiver's last word was "resolved" while Joule said "firing".
        self.server = JouleServer(env=ALERT_ENV, name="alerts-kill-firing")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        receiver, dev, token, _ = self.device_with_rule()
        # 100 W for a minute, then 1500 W for five: the alert opens at the second minute.
        base = (int(time.time()) // 60 - 20) * 60
        events = [{"device_id": dev, "timestamp": fmt_ts(base + 60 * m + 30),
                   "metrics": {"power_w": 100.0 if m == 0 else 1500.0}} for m in range(6)]
        for e in events:
            status, _, body = self.server.post_events([e], headers=bearer(token))
            self.assertEqual(status, 202, body)
        self.assertTrue(poll(lambda: receiver.snapshot(), timeout=30), self.server.diag())
        self.server.kill9()
        firing = json.loads(receiver.snapshot()[0][1])
        self.assertEqual(firing["event"], "firing")
        self.assertEqual(firing["window_start"], fmt_ts(base + 60))
        self.server.start()

        def distinct():
            # Delivery is at-least-once: the kill may come before the outbox recorded the
            # firing as delivered, which is then sent again with its webhook-id.
            seen = {}
            for headers, body, _, _ in receiver.snapshot():
                seen.setdefault(headers["webhook-id"], json.loads(body))
            return list(seen.values())

        # The replay after the restart happens at once; give it time to do harm.
        poll(lambda: len(distinct()) > 1, timeout=10)
        self.assertEqual([b["event"] for b in distinct()], ["firing"], distinct()[1:])
        alerts = self.alerts_of(dev)
        self.assertEqual([(a["id"], a["state"], a["opened_at"]) for a in alerts],
                         [(firing["id"], "firing", firing["opened_at"])])
        # The episode continues: a normal minute resolves it, at that window, once.
        status, _, body = self.server.post_events(
            [{"device_id": dev, "timestamp": fmt_ts(base + 60 * 6 + 30),
              "metrics": {"power_w": 100.0}},
             {"device_id": dev, "timestamp": fmt_ts(base + 60 * 8 + 30),
              "metrics": {"power_w": 100.0}}], headers=bearer(token))
        self.assertEqual(status, 202, body)
        self.assertTrue(poll(lambda: len(distinct()) > 1, timeout=30), self.server.diag())
        resolved = distinct()[1]
        self.assertEqual((resolved["event"], resolved["id"]), ("resolved", firing["id"]))
        self.assertEqual(resolved["window_start"], firing["window_start"])
        self.assertEqual(resolved["fired_window_start"], firing["window_start"])
        self.assertEqual(resolved["resolved_window_start"], fmt_ts(base + 60 * 6))

    def test_firing_energy_budget_continues_after_sigkill(self):
        # Found by a black-box test: a kill -9 while an energy budget fired, with the last
        # checkpoint taken before the day total passed the budget. The restored processors
        # replayed the day's running totals from the checkpoint's (under the budget): the
        # alert was "retracted" (a webhook), then "firing" again, reopened 1 (another).
        env = dict(ALERT_ENV, JOULE_STREAM_CHECKPOINT_INTERVAL="1s")
        self.server = JouleServer(env=env, name="alerts-kill-budget")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        receiver = Receiver()
        self.addCleanup(receiver.close)
        # A zone where it is about noon: the hour of data below lies in today's local day.
        offset = 12 - time.gmtime().tm_hour
        tz = "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
        dev = f"al-{uid()}"
        status, _, body = self.server.request(
            "POST", "/v1/devices", {"device_id": dev, "owner_id": f"own-{uid()}", "timezone": tz},
            headers=ADMIN)
        self.assertEqual(status, 201, f"{body!r}" + self.server.diag())
        token = body["token"]
        status, _, rule = self.server.request(
            "POST", "/v1/rules",
            {"scope": {"device_id": dev}, "kind": "energy_budget", "budget_wh": 900,
             "channels": [{"url": receiver.url, "secret": SECRET}]}, headers=ADMIN)
        self.assertEqual(status, 201, rule)
        base = int(time.time()) - 3600

        def send(frm, to):  # 1000 W every 10 s
            events = [{"device_id": dev, "timestamp": fmt_ts(t), "metrics": {"power_w": 1000.0}}
                      for t in range(frm, to + 1, 10)]
            status, _, body = self.server.post_events(events, headers=bearer(token))
            self.assertEqual(status, 202, f"{body!r}" + self.server.diag())

        send(base, base + 1800)  # 500 Wh: under the budget
        time.sleep(3)  # checkpoints with it
        self.server.stop()
        # No checkpoint after this one until the kill.
        self.server.overrides["JOULE_STREAM_CHECKPOINT_INTERVAL"] = "1h"
        self.server.start()
        send(base + 1810, base + 3360)  # about 933 Wh: over it
        self.assertTrue(poll(lambda: receiver.snapshot(), timeout=30), self.server.diag())
        firing = json.loads(receiver.snapshot()[0][1])
        self.assertEqual(firing["event"], "firing", firing)
        self.server.kill9()
        self.server.start()

        def distinct():
            seen = {}  # (at-least-once: a repeat has the same webhook-id)
            for headers, body, _, _ in receiver.snapshot():
                seen.setdefault(headers["webhook-id"], json.loads(body))
            return list(seen.values())

        # The replay after the restart happens at once, its totals published within an
        # early-firing interval (5 s); give it time to do harm.
        poll(lambda: len(distinct()) > 1, timeout=12)
        self.assertEqual([(b["event"], b.get("reopened")) for b in distinct()],
                         [("firing", None)], distinct()[1:])
        alerts = self.alerts_of(dev)
        self.assertEqual([(a["id"], a["state"], a.get("reopened")) for a in alerts],
                         [(firing["id"], "firing", None)])
        self.assertGreaterEqual(alerts[0]["value"], firing["value"])

    def test_one_crossing_stays_one_alert_when_the_checkpoint_is_inside_it(self):
        # Found by a black-box test: the alert fired and resolved, then a kill -9 with the
        # processors' last checkpoint inside the episode (after its first window). The
        # replay started in the middle of the episode and opened a second alert one window
        # later (two rows in GET /v1/alerts, a second firing and resolved webhook pair).
        env = dict(ALERT_ENV, JOULE_STREAM_CHECKPOINT_INTERVAL="1s")
        self.server = JouleServer(env=env, name="alerts-kill-mid-episode")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        receiver, dev, token, _ = self.device_with_rule()
        base = (int(time.time()) // 3600 - 2) * 3600  # an hour two hours ago

        def send(frm, to):  # a sample every 10 s: minutes 10..13 at 1500 W, else 100 W
            events = [{"device_id": dev, "timestamp": fmt_ts(base + 10 * i),
                       "metrics": {"power_w": 1500.0 if 60 <= i < 84 else 100.0}}
                      for i in range(frm, to)]
            status, _, body = self.server.post_events(events, headers=bearer(token))
            self.assertEqual(status, 202, f"{body!r}" + self.server.diag())

        def distinct():
            seen = {}  # (at-least-once: a repeat has the same webhook-id)
            for headers, body, _, _ in receiver.snapshot():
                seen.setdefault(headers["webhook-id"], json.loads(body))
            return [(b["id"], b["event"]) for b in seen.values()]

        send(0, 69)  # to minute 11 + 20 s: minute 10 is final, the alert fires
        self.assertTrue(poll(lambda: distinct(), timeout=30), self.server.diag())
        time.sleep(3)  # checkpoints with it
        self.server.stop()
        # No checkpoint after this one until the kill: it lies inside the episode.
        self.server.overrides["JOULE_STREAM_CHECKPOINT_INTERVAL"] = "1h"
        self.server.start()
        send(69, 100)  # minutes 11..13 still over, then 100 W: resolved at minute 14
        self.assertTrue(poll(lambda: len(distinct()) == 2, timeout=30), self.server.diag())
        alert_id = distinct()[0][0]
        self.assertEqual(distinct(), [(alert_id, "firing"), (alert_id, "resolved")])
        before = self.alerts_of(dev)
        self.server.kill9()
        self.server.start()
        # The replay after the restart happens at once; give it time to do harm.
        poll(lambda: len(distinct()) > 2 or self.alerts_of(dev) != before, timeout=8)
        self.assertEqual(distinct(), [(alert_id, "firing"), (alert_id, "resolved")])
        after = self.alerts_of(dev)
        self.assertEqual([(a["id"], a["state"], a["opened_at"], a["updated_at"],
                           a["fired_window_start"], a["resolved_window_start"]) for a in after],
                         [(alert_id, "resolved", before[0]["opened_at"], before[0]["updated_at"],
                           fmt_ts(base + 600), fmt_ts(base + 840))])

    def test_resolved_alert_unchanged_after_sigkill(self):
        # Found by a black-box test: after a kill -9 the replay re-derived an alert that
        # had fired and resolved, and the store's upsert rewrote its opened_at/updated_at
        # with the restart time (while from/to still selected by the stored opened_at):
        # an updated_since poller saw old alerts change at every restart.
        self.server = JouleServer(env=ALERT_ENV, name="alerts-kill-resolved")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        receiver, dev, token, _ = self.device_with_rule()
        self.ingest_breach(dev, token, recover=True)
        resolved = lambda: [a for a in self.alerts_of(dev) if a["state"] == "resolved"]
        self.assertTrue(poll(resolved, timeout=30), f"{self.alerts_of(dev)}" + self.server.diag())
        before = self.alerts_of(dev)
        self.assertEqual(len(before), 1, before)
        self.server.kill9()
        self.server.start()
        # The replay after the restart happens at once; give it time to do harm.
        poll(lambda: self.alerts_of(dev) != before, timeout=8)
        after = self.alerts_of(dev)
        self.assertEqual([(a["id"], a["state"], a["opened_at"], a["updated_at"]) for a in after],
                         [(a["id"], a["state"], a["opened_at"], a["updated_at"])
                          for a in before])
        # from/to select by the opened_at the alert shows.
        status, _, listed = self.server.request(
            "GET", f"/v1/alerts?device_id={dev}&from={before[0]['opened_at']}", headers=ADMIN)
        self.assertEqual(status, 200, listed)
        self.assertEqual([a["id"] for a in listed["alerts"]], [before[0]["id"]])
        status, _, listed = self.server.request(
            "GET", f"/v1/alerts?device_id={dev}&updated_since={before[0]['updated_at']}",
            headers=ADMIN)
        self.assertEqual(status, 200, listed)
        self.assertEqual([a["updated_at"] for a in listed["alerts"]], [before[0]["updated_at"]])
        # from after to is an error, as in history (also when both clamp to 2170).
        for frm, to in (("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"),
                        ("2200-01-01T00:00:00Z", "2180-01-01T00:00:00Z")):
            status, _, resp = self.server.request(
                "GET", f"/v1/alerts?device_id={dev}&from={frm}&to={to}", headers=ADMIN)
            self.assertEqual((status, resp["error"]["code"]), (400, "invalid_argument"), resp)
            self.assertIn("from must not be after to", resp["error"]["message"])


class DeviceLeavesScopeTest(AlertServerMixin, JouleTestCase):
    server_env = ALERT_ENV

    def test_alerts_resolve_when_the_device_leaves_the_rule_scope(self):
        # Found by a black-box test: an absence alert stayed firing for ever once its
        # device's model changed or the device was deleted, even when it reported again.
        receiver = Receiver()
        self.addCleanup(receiver.close)
        owner, model = f"own-{uid()}", f"model-{uid()}"
        devs = {}
        for name in ("moved", "deleted"):
            dev = f"al-{uid()}"
            status, _, body = self.server.request(
                "POST", "/v1/devices", {"device_id": dev, "owner_id": owner, "name": name,
                                        "model": model}, headers=ADMIN)
            self.assertEqual(status, 201, f"{body!r}" + self.server.diag())
            devs[name] = (dev, body["token"])
        status, _, rule = self.server.request(
            "POST", "/v1/rules",
            {"name": "silent", "scope": {"model": model}, "kind": "absence", "absent_for": "2s",
             "channels": [{"type": "webhook", "url": receiver.url, "secret": SECRET}]},
            headers=ADMIN)
        self.assertEqual(status, 201, f"{rule!r}" + self.server.diag())
        state = lambda d: [a["state"] for a in self.alerts_of(d)]
        ok = poll(lambda: all(state(d) == ["firing"] for d, _ in devs.values()), timeout=30)
        self.assertTrue(ok, f"{[self.alerts_of(d) for d, _ in devs.values()]}"
                        + self.server.diag())
        moved, token = devs["moved"]
        deleted, _ = devs["deleted"]
        status, _, body = self.server.request("PATCH", f"/v1/devices/{moved}",
                                              {"model": f"other-{uid()}"}, headers=ADMIN)
        self.assertEqual(status, 200, body)
        status, _, body = self.server.request("DELETE", f"/v1/devices/{deleted}", headers=ADMIN)
        self.assertEqual(status, 204, body)
        ok = poll(lambda: state(moved) == ["resolved"] and state(deleted) == ["resolved"],
                  timeout=30)
        self.assertTrue(ok, f"{self.alerts_of(moved)} {self.alerts_of(deleted)}"
                        + self.server.diag())
        self.assertIn("left the rule's scope", self.alerts_of(moved)[0]["annotation"])
        self.assertIn("device was deleted", self.alerts_of(deleted)[0]["annotation"])
        for dev, _ in devs.values():
            self.assertEqual(self.alerts_of(dev)[0]["owner_id"], owner)
        # The resolutions went out as webhooks, signed.
        hooks = lambda: [(json.loads(b)["device_id"], json.loads(b)["event"])
                         for _, b, _, _ in receiver.snapshot()]
        self.assertTrue(poll(lambda: {(moved, "resolved"), (deleted, "resolved")} <= set(hooks()),
                             timeout=30), hooks())
        # The moved device reports again, out of scope: nothing opens.
        status, _, body = self.server.post_events(
            [{"device_id": moved, "timestamp": fmt_ts(time.time()), "metrics": {"power_w": 1.0}}],
            headers=bearer(token))
        self.assertEqual(status, 202, body)
        poll(lambda: state(moved) != ["resolved"], timeout=5)
        self.assertEqual(state(moved), ["resolved"])

    def test_energy_budget_fires_again_the_same_day_after_the_device_is_back_in_scope(self):
        # Found by a black-box test: an owner's energy budget fired, the device moved to
        # another owner (resolved: it left the rule's scope) and back, and its day total
        # grew further over the budget: nothing fired again that day (the day's alert id
        # was taken for a re-derivation of the stored resolved row). Now the next record
        # over budget reopens the day's alert as a new cycle (reopened 1, new webhook-ids).
        receiver = Receiver()
        self.addCleanup(receiver.close)
        # A zone where it is about noon: the data below lies in today's local day.
        offset = 12 - time.gmtime().tm_hour
        tz = "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
        owner, other = f"own-{uid()}", f"own-{uid()}"
        dev = f"al-{uid()}"
        status, _, body = self.server.request(
            "POST", "/v1/devices", {"device_id": dev, "owner_id": owner, "timezone": tz},
            headers=ADMIN)
        self.assertEqual(status, 201, f"{body!r}" + self.server.diag())
        token = body["token"]
        status, _, rule = self.server.request(
            "POST", "/v1/rules",
            {"name": "budget", "scope": {"owner_id": owner}, "kind": "energy_budget",
             "budget_wh": 500, "channels": [{"url": receiver.url, "secret": SECRET}]},
            headers=ADMIN)
        self.assertEqual(status, 201, f"{rule!r}" + self.server.diag())
        base = int(time.time()) - 3 * 3600

        def send(frm, to):  # 1000 W every 10 s
            events = [{"device_id": dev, "timestamp": fmt_ts(t), "metrics": {"power_w": 1000.0}}
                      for t in range(frm, to, 10)]
            status, _, body = self.server.post_events(events, headers=bearer(token))
            self.assertEqual(status, 202, f"{body!r}" + self.server.diag())

        def hooks():
            seen = {}  # (at-least-once: a repeat has the same webhook-id)
            for headers, body, _, _ in receiver.snapshot():
                seen.setdefault(headers["webhook-id"], json.loads(body))
            return [(b["event"], b.get("reopened")) for b in seen.values()]

        send(base, base + 2400)  # about 667 Wh: over the budget
        self.assertTrue(poll(lambda: hooks() == [("firing", None)], timeout=30),
                        f"{hooks()}" + self.server.diag())
        for owner_id in (other, owner):
            status, _, body = self.server.request("PATCH", f"/v1/devices/{dev}",
                                                  {"owner_id": owner_id}, headers=ADMIN)
            self.assertEqual(status, 200, body)
        self.assertTrue(poll(lambda: hooks() == [("firing", None), ("resolved", None)],
                             timeout=30), f"{hooks()}" + self.server.diag())
        resolved = self.alerts_of(dev)[0]
        self.assertIn("left the rule's scope", resolved["annotation"])
        send(base + 2400, base + 3600)  # about 1000 Wh
        self.assertTrue(poll(lambda: len(hooks()) > 2, timeout=30),
                        f"{hooks()}" + self.server.diag())
        self.assertEqual(hooks()[2], ("firing", 1))
        alerts = self.alerts_of(dev)
        self.assertEqual([(a["id"], a["state"], a.get("reopened")) for a in alerts],
                         [(resolved["id"], "firing", 1)])
        self.assertIn("back in the rule's scope", alerts[0]["annotation"])
        self.assertGreater(alerts[0]["value"], resolved["value"])


class DeviceMovedWhileDownTest(AlertServerMixin, unittest.TestCase):
    def test_open_alert_of_a_device_moved_while_down_resolves_at_start(self):
        # A device that left the rule's scope while Joule was down (plain SQL here): no
        # change notification will ever come, so the engine checks the devices of the
        # open alerts at start.
        self.server = JouleServer(env=ALERT_ENV, name="alerts-moved-while-down")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        model = f"model-{uid()}"
        dev = f"al-{uid()}"
        status, _, body = self.server.request(
            "POST", "/v1/devices", {"device_id": dev, "owner_id": f"own-{uid()}",
                                    "name": "meter", "model": model}, headers=ADMIN)
        self.assertEqual(status, 201, f"{body!r}" + self.server.diag())
        status, _, rule = self.server.request(
            "POST", "/v1/rules", {"name": "silent", "scope": {"model": model},
                                  "kind": "absence", "absent_for": "2s"}, headers=ADMIN)
        self.assertEqual(status, 201, f"{rule!r}" + self.server.diag())
        state = lambda: [a["state"] for a in self.alerts_of(dev)]
        self.assertTrue(poll(lambda: state() == ["firing"], timeout=30),
                        f"{self.alerts_of(dev)}" + self.server.diag())
        self.server.stop()
        other = f"other-{uid()}"
        if self.server.metadata_backend == "postgres":
            psql(self.server.database.url,
                 f"UPDATE devices SET model = '{other}' WHERE device_id = '{dev}'")
        else:
            db = sqlite3.connect(os.path.join(self.server.data_dir, "metadata.db"))
            with db:
                db.execute("UPDATE devices SET model = ? WHERE device_id = ?", (other, dev))
            db.close()
        self.server.start()
        self.assertTrue(poll(lambda: state() == ["resolved"], timeout=30),
                        f"{self.alerts_of(dev)}" + self.server.diag())
        self.assertIn("left the rule's scope", self.alerts_of(dev)[0]["annotation"])

    def test_open_alerts_of_rules_disabled_or_deleted_while_down_resolve_at_start(self):
        # Rules changed in plain SQL while Joule was down: no notification comes, so the
        # engine judges the restored open alerts against the rules it reads at start
        # (until session 31 both alerts stayed firing for ever).
        self.server = JouleServer(env=ALERT_ENV, name="alerts-rules-while-down")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        owner = f"own-{uid()}"
        devs, rules = [], []
        for _ in range(2):
            dev, _ = self.register(owner)
            status, _, rule = self.server.request(
                "POST", "/v1/rules", {"name": "silent", "scope": {"device_id": dev},
                                      "kind": "absence", "absent_for": "2s"}, headers=ADMIN)
            self.assertEqual(status, 201, f"{rule!r}" + self.server.diag())
            devs.append(dev)
            rules.append(rule["id"])
        states = lambda: [[a["state"] for a in self.alerts_of(d)] for d in devs]
        self.assertTrue(poll(lambda: states() == [["firing"], ["firing"]], timeout=30),
                        f"{states()}" + self.server.diag())
        self.server.stop()
        disable = ("UPDATE rules SET body = replace(body{cast}, '\"enabled\":true', "
                   "'\"enabled\":false'){back} WHERE rule_id = '{id}'")
        delete = f"DELETE FROM rules WHERE rule_id = '{rules[1]}'"
        if self.server.metadata_backend == "postgres":
            psql(self.server.database.url, disable.format(cast="::text", back="::json", id=rules[0]))
            psql(self.server.database.url, delete)
        else:
            db = sqlite3.connect(os.path.join(self.server.data_dir, "metadata.db"))
            with db:
                db.execute(disable.format(cast="", back="", id=rules[0]))
                db.execute(delete)
            db.close()
        self.server.start()
        self.assertTrue(poll(lambda: states() == [["resolved"], ["resolved"]], timeout=30),
                        f"{states()}" + self.server.diag())
        disabled, deleted = (self.alerts_of(d)[0] for d in devs)
        self.assertIn("the rule was disabled", disabled["annotation"])
        self.assertIn("the rule was deleted", deleted["annotation"])
        self.assertEqual(disabled["kind"], "absence")


class AbsenceAfterRestartTest(AlertServerMixin, unittest.TestCase):
    """Absence rules scoped to an owner or a model cover registered devices that never
    report, also after a restart (the engine seeds them from the metadata store)."""

    def test_owner_and_model_scoped_absence_fire_for_silent_devices_after_restart(self):
        receiver = Receiver()
        self.addCleanup(receiver.close)
        self.server = JouleServer(env=ALERT_ENV, name="alerts-absence-restart")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        owner, model = f"own-{uid()}", f"model-{uid()}"
        dev, _ = self.register(owner)
        dev_model = f"al-{uid()}"
        status, _, body = self.server.request(
            "POST", "/v1/devices", {"device_id": dev_model, "owner_id": f"own-{uid()}",
                                    "name": "meter", "model": model}, headers=ADMIN)
        self.assertEqual(status, 201, f"{body!r}" + self.server.diag())
        rule_ids = []
        # A long enough absent_for that neither fires before the restart below.
        for scope in ({"owner_id": owner}, {"model": model}):
            status, _, rule = self.server.request(
                "POST", "/v1/rules",
                {"name": "silent", "scope": scope, "kind": "absence", "absent_for": "20s",
                 "channels": [{"type": "webhook", "url": receiver.url, "secret": SECRET}]},
                headers=ADMIN)
            self.assertEqual(status, 201, f"{rule!r}" + self.server.diag())
            rule_ids.append(rule["id"])
        self.assertEqual(self.alerts_of(dev), [], "fired before the restart")
        self.assertEqual(self.alerts_of(dev_model), [], "fired before the restart")
        self.server.stop()
        self.server.start()
        # Neither device ever reports; both alerts fire absent_for after the restart.
        firing = lambda d: [a for a in self.alerts_of(d) if a["state"] == "firing"]
        ok = poll(lambda: firing(dev) and firing(dev_model), timeout=90)
        self.assertTrue(ok, f"{self.alerts_of(dev)} {self.alerts_of(dev_model)}"
                        + self.server.diag())
        self.assertEqual([a["rule_id"] for a in firing(dev)], [rule_ids[0]])
        self.assertEqual([a["rule_id"] for a in firing(dev_model)], [rule_ids[1]])
        # And the webhooks went out, signed.
        self.assertTrue(poll(lambda: {json.loads(b)["device_id"] for _, b, _, _ in
                                      receiver.snapshot()} >= {dev, dev_model}, timeout=30),
                        receiver.snapshot())
        for headers, body, _, _ in receiver.snapshot():
            self.assertTrue(verify_signature(SECRET, headers, body))


class FirstAbsenceRuleTest(AlertServerMixin, unittest.TestCase):
    """Found by a black-box test: while no rule exists the engine evaluates no records, so
    the first absence rule — or one created after every rule was deleted — judged a device
    that kept reporting as silent since its registration ("it has never reported") or since
    the deletion, and fired at once (resolved again a few seconds later). The engine now
    notes each device's activity while there is no rule and hands it to the rules that
    appear."""

    def test_an_absence_rule_created_while_the_device_reports_does_not_fire(self):
        receiver = Receiver()
        self.addCleanup(receiver.close)
        self.server = JouleServer(env=ALERT_ENV, name="alerts-first-absence")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        owner, model = f"own-{uid()}", f"model-{uid()}"
        dev = f"al-{uid()}"
        status, _, body = self.server.request(
            "POST", "/v1/devices", {"device_id": dev, "owner_id": owner, "name": "plug",
                                    "model": model}, headers=ADMIN)
        self.assertEqual(status, 201, f"{body!r}" + self.server.diag())
        token = body["token"]

        def send_for(seconds):
            # An event every 3 s, well within absent_for (8 s).
            end = time.time() + seconds
            while True:
                status, _, resp = self.server.post_events(
                    [{"device_id": dev, "timestamp": fmt_ts(time.time()),
                      "metrics": {"power_w": 100.0}}], headers=bearer(token))
                self.assertEqual(status, 202, f"{resp!r}" + self.server.diag())
                if time.time() + 3 > end:
                    time.sleep(2)  # its records published (early firing: 1 s)
                    return
                time.sleep(3)

        def create(scope):
            status, _, rule = self.server.request(
                "POST", "/v1/rules",
                {"name": "offline", "scope": scope, "kind": "absence", "absent_for": "8s",
                 "channels": [{"type": "webhook", "url": receiver.url, "secret": SECRET}]},
                headers=ADMIN)
            self.assertEqual(status, 201, f"{rule!r}" + self.server.diag())
            return rule["id"]

        # Longer than absent_for since the registration, with no rule at all.
        send_for(12)
        rules = [create({"device_id": dev}), create({"model": model})]
        time.sleep(2)  # the engine ticks before the next record (it fired then)
        send_for(6)
        self.assertEqual(self.alerts_of(dev), [], "fired for a device that reports")
        self.assertEqual(receiver.snapshot(), [])
        # Every rule deleted; the device keeps reporting; a new rule is not told it has
        # been silent since the deletion.
        for rule_id in rules:
            status, _, body = self.server.request("DELETE", f"/v1/rules/{rule_id}",
                                                  headers=ADMIN)
            self.assertEqual(status, 204, body)
        send_for(12)
        rule_id = create({"model": model})
        time.sleep(2)
        send_for(6)
        self.assertEqual(self.alerts_of(dev), [], "fired for a device that reports")
        self.assertEqual(receiver.snapshot(), [])
        # The device stops: the rule fires absent_for after its last activity.
        stopped = time.time()
        firing = lambda: [a for a in self.alerts_of(dev) if a["state"] == "firing"]
        self.assertTrue(poll(firing, timeout=30), self.alerts_of(dev) + [self.server.diag()])
        self.assertGreaterEqual(time.time() - stopped, 6)
        alert = firing()[0]
        self.assertEqual(alert["rule_id"], rule_id)
        self.assertIn("no activity seen since", alert["annotation"])
        self.assertTrue(poll(lambda: receiver.snapshot(), timeout=15))


if __name__ == "__main__":
    unittest.main()
