"""Tenant isolation probes generated from the route table (issue 10, point 3).

The routes are read from the server's own sources (every `router.Add("METHOD", "/path")`
under src/), so a route added later is probed without anyone remembering to list it: a
route whose path parameter the generator does not know, or an id-less route it has not
classified, fails the test until the generator is taught about it.

For every route that takes an id, owner A's key (and A's device token) is used on owner B's
device, rule, alert and owner id. The answer must be exactly the answer for an id that does
not exist (status and error code: nothing leaks), a 404 unless the route is admin-only (then
403, the same as on A's own ids), and nothing of B's may change. Lists, filters, CSV
exports, owner energy and the SSE stream must exclude B's data. Mass assignment (moving a
device or a rule to another owner) is refused.
"""

import http.client
import json
import pathlib
import re
import threading
import time
import unittest
import urllib.parse
import uuid

from joule_harness import JouleTestCase, fmt_ts, poll, read_stream

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
ROUTE_RE = re.compile(r'router\.Add\(\s*"([A-Z]+)"\s*,\s*"([^"]+)"')

# Routes without an id in the path, and how the generator treats them. A new id-less route
# must be added here (the test fails until it is), so nobody forgets to probe it.
IDLESS = {
    ("POST", "/v1/telemetry"): "ingest",
    ("POST", "/v1/devices"): "admin",
    ("GET", "/v1/devices"): "list",
    ("GET", "/v1/rules"): "list",
    ("POST", "/v1/rules"): "create-rule",
    ("GET", "/v1/alerts"): "list",
    ("GET", "/v1/stream"): "stream",
    ("GET", "/metrics"): "public",
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/"): "public",
}
# Which object a path parameter names, by the path prefix it follows.
PARAM_KINDS = [
    ("/v1/devices/{id}", "device"),
    ("/v1/rules/{id}", "rule"),
    ("/v1/alerts/{id}", "alert"),
    ("/v1/owners/{owner_id}/keys", "admin"),  # owner keys: admin only (create, list, revoke)
    ("/v1/owners/{owner_id}", "owner"),
    ("/assets/{path*}", "asset"),
    ("/v1/admin/", "admin"),  # admin-only operations: owner keys and device tokens get 403
]


def uid():
    return uuid.uuid4().hex[:10]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def source_routes():
    routes = set()
    for path in SRC.rglob("*.cc"):
        if "tests" in path.parts:
            continue
        for method, route in ROUTE_RE.findall(path.read_text(encoding="utf-8")):
            routes.add((method, route))
    return sorted(routes)


def param_kind(route):
    if "{" not in route and not route.startswith("/v1/admin/"):
        return None
    for prefix, kind in PARAM_KINDS:
        if route.startswith(prefix):
            return kind
    return None


def error_code(body):
    return body.get("error", {}).get("code") if isinstance(body, dict) else None


class RouteIsolationTest(JouleTestCase):
    server_env = {"JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN,
                  "JOULE_ALERTS_ALLOW_PRIVATE_TARGETS": "true"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.server
        tag = uid()
        cls.owner = {"a": f"rt-a-{tag}", "b": f"rt-b-{tag}"}
        cls.dev, cls.dev_token, cls.key, cls.rule, cls.alert = {}, {}, {}, {}, {}

        def must(resp, expected, what):
            if resp[0] != expected:
                raise AssertionError(f"{what}: {resp[0]} {resp[2]!r}" + s.diag())
            return resp[2]

        for side in ("a", "b"):
            owner = cls.owner[side]
            dev = f"rt-{side}-dev-{tag}"
            body = must(s.request("POST", "/v1/devices",
                                  {"device_id": dev, "owner_id": owner,
                                   "name": f"{side} plug", "model": f"model-{side}-{tag}",
                                   "timezone": "Europe/Berlin"}, headers=ADMIN),
                        201, f"register {dev}")
            cls.dev[side], cls.dev_token[side] = dev, body["token"]
            cls.key[side] = must(s.request("POST", f"/v1/owners/{owner}/keys", headers=ADMIN),
                                 201, f"key for {owner}")["key"]
            rule = {"name": f"{side} too much", "scope": {"device_id": dev},
                    "kind": "threshold", "metric": "power_w", "aggregate": "max", "op": ">",
                    "threshold": 1000, "clear_threshold": 900, "for_windows": 1,
                    "resolution": "1m", "severity": "warning"}
            cls.rule[side] = must(s.request("POST", "/v1/rules", rule,
                                            headers=bearer(cls.key[side])),
                                  201, f"rule of {side}")
        # Both devices breach their rule three minutes ago, so each owner has an alert and
        # history, realtime, energy and health data to leak.
        base = (int(time.time()) // 60 - 4) * 60
        for side in ("a", "b"):
            events = [{"device_id": cls.dev[side], "timestamp": fmt_ts(base + 10 * i),
                       "metrics": {"power_w": 1500.0 if i < 6 else 100.0,
                                   "energy_wh": 10.0 * i},
                       "event_id": f"{side}-{i}"} for i in range(24)]
            must(s.post_events(events, headers=bearer(cls.dev_token[side])), 202,
                 f"ingest {side}")
        for side in ("a", "b"):
            def alerts(side=side):
                st, _, body = s.request("GET", f"/v1/alerts?device_id={cls.dev[side]}",
                                        headers=ADMIN)
                return st == 200 and body.get("alerts")
            found = poll(alerts, timeout=30)
            if not found:
                raise AssertionError(f"no alert for {side}" + s.diag())
            cls.alert[side] = found[0]
        cls.span = f"from={fmt_ts(base - 3600)}&to={fmt_ts(time.time() + 120)}"

    # --- generation ------------------------------------------------------------------

    def ids(self, side):
        if side == "missing":
            return {"device": f"rt-missing-{uid()}", "rule": f"missing-{uid()}",
                    "alert": f"alert:rt-missing-{uid()}:r:0", "owner": f"rt-missing-{uid()}",
                    "admin": "1"}
        return {"device": self.dev[side], "rule": self.rule[side]["id"],
                "alert": self.alert[side]["id"], "owner": self.owner[side], "admin": "1"}

    def body_for(self, method, route):
        if method == "PATCH":
            return {"name": "pwned"}
        if method == "PUT" and route.startswith("/v1/rules/"):
            own = dict(self.rule["a"])
            own.pop("id", None)
            own["name"] = "pwned"
            return own
        if route.endswith("/snooze"):
            return {"for": "1h"}
        return None

    def query_variants(self, method, route):
        if method != "GET":
            return [""]
        if route.endswith("/metrics/history"):
            return [f"?{self.span}&resolution=1m", f"?{self.span}&resolution=1m&format=csv",
                    f"?{self.span}&resolution=1h", f"?{self.span}&resolution=1d&format=csv"]
        if route.endswith("/energy"):
            return [f"?{self.span}&resolution=1h", f"?{self.span}&resolution=1d"]
        if route.endswith("/metrics/realtime"):
            return ["?windows=60"]
        return [""]

    def requests_for(self, side, method, route):
        kind = param_kind(route)
        value = self.ids(side)[kind]
        path = re.sub(r"\{[^}]+\}", urllib.parse.quote(value, safe=""), route)
        return [(method, path + q, self.body_for(method, route))
                for q in self.query_variants(method, route)]

    def templated_routes(self):
        routes = [(m, r) for m, r in source_routes()
                  if "{" in r or r.startswith("/v1/admin/")]
        unknown = [(m, r) for m, r in routes if param_kind(r) is None]
        self.assertEqual(unknown, [], "routes with a path parameter the isolation generator "
                         "does not know: add them to PARAM_KINDS")
        return [(m, r) for m, r in routes if param_kind(r) != "asset"]

    # --- the probes ------------------------------------------------------------------

    def test_generator_covers_every_route(self):
        routes = source_routes()
        self.assertGreaterEqual(len(routes), 20, routes)
        idless = [(m, r) for m, r in routes
                  if "{" not in r and not r.startswith("/v1/admin/")]
        unclassified = [x for x in idless if x not in IDLESS]
        self.assertEqual(unclassified, [], "new id-less routes: classify them in IDLESS")
        self.assertTrue(self.templated_routes())

    def test_other_owners_ids_answer_like_missing_ids(self):
        s = self.server
        checked = 0
        for who, headers in [("owner key A", bearer(self.key["a"])),
                             ("device token A", bearer(self.dev_token["a"]))]:
            for method, route in self.templated_routes():
                theirs = self.requests_for("b", method, route)
                missing = self.requests_for("missing", method, route)
                own = self.requests_for("a", method, route)
                for (m, path, body), (_, mpath, mbody), (_, opath, _) in zip(theirs, missing,
                                                                             own):
                    with self.subTest(who=who, route=f"{m} {path}"):
                        st, _, got = s.request(m, path, body, headers=headers)
                        mst, _, mgot = s.request(m, mpath, mbody, headers=headers)
                        self.assertEqual((st, error_code(got)), (mst, error_code(mgot)),
                                         f"{who} on B's id vs a missing id: {m} {path}: "
                                         f"{got!r} / {mgot!r}")
                        self.assertIn(st, (403, 404), f"{who}: {m} {path}: {st} {got!r}")
                        if st == 403 and m == "GET":
                            ost, _, _ = s.request(m, opath, headers=headers)
                            self.assertEqual(ost, 403, f"403 on B's id but {ost} on A's own: "
                                             f"{m} {route} leaks existence")
                        checked += 1
        self.assertGreater(checked, 20)
        self.assert_b_untouched()

    def assert_b_untouched(self):
        s = self.server
        st, _, got = s.request("GET", f"/v1/devices/{self.dev['b']}", headers=ADMIN)
        self.assertEqual(st, 200, got)
        self.assertEqual(got["device"]["name"], "b plug")
        self.assertEqual(got["device"]["owner_id"], self.owner["b"])
        st, _, rule = s.request("GET", f"/v1/rules/{self.rule['b']['id']}", headers=ADMIN)
        self.assertEqual(st, 200, rule)
        self.assertEqual(rule["name"], "b too much")
        st, _, alerts = s.request("GET", f"/v1/alerts?device_id={self.dev['b']}",
                                  headers=ADMIN)
        self.assertEqual(st, 200, alerts)
        mine = [x for x in alerts["alerts"] if x["id"] == self.alert["b"]["id"]]
        self.assertEqual(len(mine), 1, alerts)
        self.assertFalse(mine[0].get("acked"), mine[0])
        self.assertFalse(mine[0].get("snoozed_until") or mine[0].get("snoozed"), mine[0])
        ev = {"device_id": self.dev["b"], "timestamp": fmt_ts(time.time() - 5),
              "metrics": {"power_w": 1.0}, "event_id": uid()}
        self.assertStatus(s.post_events([ev], headers=bearer(self.dev_token["b"])), 202,
                          "B's device token still works")

    def test_admin_routes_refuse_owner_keys_and_device_tokens(self):
        s = self.server
        for method, route in source_routes():
            if not route.startswith("/v1/admin/"):
                continue
            path = re.sub(r"\{[^}]+\}", "1", route)
            for who, headers in [("owner key", bearer(self.key["a"])),
                                 ("device token", bearer(self.dev_token["a"]))]:
                with self.subTest(route=f"{method} {path}", who=who):
                    st, _, got = s.request(method, path, {} if method != "GET" else None,
                                           headers=headers)
                    self.assertIn(st, (403, 404), f"{who}: {method} {path}: {got!r}")

    def test_own_ids_are_reachable(self):
        """The control: the same generated GET requests on A's own ids succeed."""
        s = self.server
        for method, route in self.templated_routes():
            if method != "GET" or param_kind(route) == "admin":
                continue
            for m, path, body in self.requests_for("a", method, route):
                with self.subTest(route=f"{m} {path}"):
                    st, _, got = s.request(m, path, body, headers=bearer(self.key["a"]))
                    self.assertEqual(st, 200, f"{m} {path}: {got!r}" + self.diag())
                    self.assertNotIn(self.dev["b"], json.dumps(got) if not isinstance(
                        got, str) else got)

    def test_lists_and_filters_exclude_b(self):
        s = self.server
        a = bearer(self.key["a"])
        b_ids = {self.dev["b"], self.rule["b"]["id"], self.alert["b"]["id"], self.owner["b"]}
        for m, r in source_routes():
            if IDLESS.get((m, r)) != "list":
                continue
            for q in ["", f"?owner_id={self.owner['b']}", f"?device_id={self.dev['b']}",
                      f"?model=model-b-{self.dev['b'][-10:]}", "?limit=1000",
                      f"?cursor={self.dev['b'][:6]}"]:
                with self.subTest(route=f"{m} {r}{q}"):
                    st, _, got = s.request(m, r + q, headers=a)
                    self.assertIn(st, (200, 400, 404), got)
                    text = json.dumps(got)
                    for x in b_ids:
                        self.assertNotIn(x, text, f"{m} {r}{q} shows B's {x}")
        # Control: A's own objects are listed.
        st, _, got = s.request("GET", "/v1/rules", headers=a)
        self.assertIn(self.rule["a"]["id"], json.dumps(got))
        st, _, got = s.request("GET", "/v1/alerts", headers=a)
        self.assertIn(self.alert["a"]["id"], json.dumps(got))

    def test_ingest_for_b_is_refused_and_stores_nothing(self):
        s = self.server
        ev = {"device_id": self.dev["b"], "timestamp": fmt_ts(time.time() - 2),
              "metrics": {"power_w": 77777.0}, "event_id": uid()}
        st, _, got = s.post_events([ev], headers=bearer(self.key["a"]))
        self.assertEqual(st, 403, f"owner keys cannot ingest: {got!r}")
        st, _, got = s.post_events([ev], headers=bearer(self.dev_token["a"]))
        self.assertIn(st, (207, 400, 403, 404), got)
        self.assertNotEqual(st, 202, f"A's device token ingested for B: {got!r}")
        time.sleep(1)
        st, _, rt = s.request("GET", f"/v1/devices/{self.dev['b']}/metrics/realtime",
                              headers=ADMIN)
        self.assertEqual(st, 200, rt)
        self.assertNotIn("77777", json.dumps(rt))

    def test_rules_cannot_target_or_move_to_b(self):
        s = self.server
        a = bearer(self.key["a"])
        template = dict(self.rule["a"])
        template.pop("id", None)
        template.pop("owner_id", None)
        for scope in [{"device_id": self.dev["b"]}, {"owner_id": self.owner["b"]}]:
            missing = {k: f"rt-missing-{uid()}" for k in scope}
            with self.subTest(scope=scope):
                st, _, got = s.request("POST", "/v1/rules", dict(template, scope=scope),
                                       headers=a)
                mst, _, mgot = s.request("POST", "/v1/rules", dict(template, scope=missing),
                                         headers=a)
                self.assertIn(st, (403, 404), got)
                self.assertEqual((st, error_code(got)), (mst, error_code(mgot)))
                # Moving A's own rule onto B's device (mass assignment through PUT).
                st, _, got = s.request("PUT", f"/v1/rules/{self.rule['a']['id']}",
                                       dict(template, scope=scope), headers=a)
                self.assertIn(st, (400, 403, 404), got)
        st, _, got = s.request("PUT", f"/v1/rules/{self.rule['a']['id']}",
                               dict(template, owner_id=self.owner["b"]), headers=a)
        st2, _, rule = s.request("GET", f"/v1/rules/{self.rule['a']['id']}", headers=ADMIN)
        self.assertEqual(st2, 200)
        self.assertEqual(rule["owner_id"], self.owner["a"], f"PUT owner_id moved it: {got!r}")
        self.assertEqual(rule["scope"], {"device_id": self.dev["a"]})
        st, _, got = s.request("PATCH", f"/v1/devices/{self.dev['a']}",
                               {"owner_id": self.owner["b"]}, headers=a)
        self.assertEqual(st, 400, got)
        st, _, dev = s.request("GET", f"/v1/devices/{self.dev['a']}", headers=ADMIN)
        self.assertEqual(dev["device"]["owner_id"], self.owner["a"])

    def test_sse_stream_excludes_b(self):
        s = self.server
        a = bearer(self.key["a"])
        for key, value in [("device_id", self.dev["b"]), ("owner_id", self.owner["b"])]:
            with self.subTest(filter=key):
                st, _, got = s.request("GET", f"/v1/stream?{key}={value}", headers=a)
                mst, _, mgot = s.request("GET", f"/v1/stream?{key}=rt-missing-{uid()}",
                                         headers=a)
                self.assertIn(st, (403, 404), got)
                self.assertEqual((st, error_code(got)), (mst, error_code(mgot)))
        # A device token may not subscribe, even to its own device: the stream carries
        # alerts, owner data (as GET /v1/alerts; found by a black-box test).
        st, _, got = s.request("GET", f"/v1/stream?device_id={self.dev['a']}",
                               headers=bearer(self.dev_token["a"]))
        self.assertEqual((st, error_code(got)), (403, "forbidden"), got)
        # A's own owner stream while both devices report: A's data arrives, B's never does.
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        conn.request("GET", f"/v1/stream?owner_id={self.owner['a']}", headers=a)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        stop = threading.Event()

        def feed():
            i = 0
            while not stop.is_set():
                for side in ("a", "b"):
                    ev = {"device_id": self.dev[side], "timestamp": fmt_ts(time.time() - 1),
                          "metrics": {"power_w": 50.0 + i}, "event_id": f"sse-{side}-{i}"}
                    s.post_events([ev], headers=bearer(self.dev_token[side]))
                i += 1
                time.sleep(0.3)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            seen = read_stream(conn, resp, lambda seen: False, timeout=8)  # all of 8 s
        finally:
            stop.set()
            feeder.join()
            conn.close()
        self.assertIn(self.dev["a"].encode(), seen, "A's own events reach A's stream")
        self.assertNotIn(self.dev["b"].encode(), seen, "B's events leaked into A's stream")


if __name__ == "__main__":
    unittest.main()
