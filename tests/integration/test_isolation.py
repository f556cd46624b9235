"""Owner isolation (CONTRACT section 3: "Another owner's device is 404, never 403"): for
every route that takes a device id, owner A's key on owner B's device answers exactly like
a device that does not exist — 404 with error code not_found — and changes nothing; lists
exclude B's devices; an owner cannot move a device with PATCH owner_id (mass assignment)."""

import time
import unittest
import urllib.parse
import uuid

from joule_harness import JouleTestCase, fmt_ts, poll

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def uid():
    return uuid.uuid4().hex[:10]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


class IsolationTest(JouleTestCase):
    server_env = {"JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.server
        cls.owner_a, cls.owner_b = f"iso-a-{uid()}", f"iso-b-{uid()}"
        cls.dev_a, cls.dev_b = f"iso-a-dev-{uid()}", f"iso-b-dev-{uid()}"
        cls.tokens = {}
        for dev, owner in [(cls.dev_a, cls.owner_a), (cls.dev_b, cls.owner_b)]:
            status, _, body = s.request("POST", "/v1/devices",
                                        {"device_id": dev, "owner_id": owner,
                                         "name": f"{owner}'s plug"}, headers=ADMIN)
            if status != 201:
                raise AssertionError(f"register {dev}: {status} {body!r}" + s.diag())
            cls.tokens[dev] = body["token"]
        cls.keys = {}
        for owner in (cls.owner_a, cls.owner_b):
            status, _, body = s.request("POST", f"/v1/owners/{owner}/keys", headers=ADMIN)
            if status != 201:
                raise AssertionError(f"owner key {owner}: {status} {body!r}" + s.diag())
            cls.keys[owner] = body["key"]
        # Both devices have data, so a 404 cannot be explained by "nothing stored yet".
        now = time.time()
        for dev in (cls.dev_a, cls.dev_b):
            events = [{"device_id": dev, "timestamp": fmt_ts(now - 150 + 10 * i),
                       "metrics": {"power_w": 50.0 + i}, "event_id": f"{dev}-{i}"}
                      for i in range(10)]
            status, _, body = s.post_events(events, headers=bearer(cls.tokens[dev]))
            if status != 202:
                raise AssertionError(f"ingest {dev}: {status} {body!r}" + s.diag())
        for dev in (cls.dev_a, cls.dev_b):
            ok = poll(lambda: (lambda r: r[0] == 200 and r[2].get("data"))(
                s.realtime(dev, headers=ADMIN)), timeout=15)
            if not ok:
                raise AssertionError(f"no realtime data for {dev}" + s.diag())

    def key_a(self):
        return bearer(self.keys[self.owner_a])

    def device_routes(self, dev):
        q = urllib.parse.quote(dev, safe="")
        now = time.time()
        span = f"from={fmt_ts(now - 3600)}&to={fmt_ts(now + 60)}"
        return [
            ("realtime", "GET", f"/v1/devices/{q}/metrics/realtime?windows=10", None),
            ("history json", "GET", f"/v1/devices/{q}/metrics/history?{span}&resolution=1m",
             None),
            ("history csv", "GET",
             f"/v1/devices/{q}/metrics/history?{span}&resolution=1m&format=csv", None),
            ("health", "GET", f"/v1/devices/{q}/health", None),
            ("device get", "GET", f"/v1/devices/{q}", None),
            ("device patch", "PATCH", f"/v1/devices/{q}", {"name": "pwned"}),
            ("device delete", "DELETE", f"/v1/devices/{q}", None),
            ("token rotation", "POST", f"/v1/devices/{q}/token", None),
        ]

    def assertNotFound(self, resp, what):
        status, _, body = resp
        self.assertEqual(status, 404, f"{what}: expected 404, got {status} {body!r}" + self.diag())
        self.assertIsInstance(body, dict, f"{what}: {body!r}")
        self.assertEqual(body.get("error", {}).get("code"), "not_found", f"{what}: {body!r}")

    def test_own_device_is_readable(self):
        """The control: A's key does reach A's device on the read routes."""
        for what, method, path, body in self.device_routes(self.dev_a):
            if method != "GET":
                continue
            with self.subTest(route=what):
                status, _, got = self.server.request(method, path, body, headers=self.key_a())
                self.assertEqual(status, 200, f"{what}: {got!r}" + self.diag())

    def test_other_owners_device_is_404_on_every_route(self):
        for what, method, path, body in self.device_routes(self.dev_b):
            with self.subTest(route=what):
                resp = self.server.request(method, path, body, headers=self.key_a())
                self.assertNotFound(resp, f"A's key on B's device: {what}")
        # Same answer as a device that does not exist: nothing leaks.
        for what, method, path, body in self.device_routes(f"iso-missing-{uid()}"):
            with self.subTest(route=what, device="missing"):
                resp = self.server.request(method, path, body, headers=self.key_a())
                self.assertNotFound(resp, f"A's key on a missing device: {what}")
        # Nothing changed: B's device, name and token are intact.
        status, _, got = self.server.request("GET", f"/v1/devices/{self.dev_b}", headers=ADMIN)
        self.assertEqual(status, 200, got)
        self.assertEqual(got["device"]["name"], f"{self.owner_b}'s plug")
        self.assertEqual(got["device"]["owner_id"], self.owner_b)
        ev = {"device_id": self.dev_b, "timestamp": fmt_ts(time.time() - 5),
              "metrics": {"power_w": 1.0}, "event_id": uid()}
        self.assertStatus(self.server.post_events([ev], headers=bearer(self.tokens[self.dev_b])),
                          202, "B's token still works")

    def test_device_token_sees_only_itself(self):
        token_a = bearer(self.tokens[self.dev_a])
        for what, method, path, body in self.device_routes(self.dev_b):
            with self.subTest(route=what):
                self.assertNotFound(self.server.request(method, path, body, headers=token_a),
                                    f"A's device token on B's device: {what}")

    def test_device_token_reads_nothing(self):
        """Device tokens only ingest (CONTRACT section 3): even their own device's metadata and
        data answer 403 forbidden, the error every other refused route gives them (found by a
        black-box test: they read their own device, metrics and health)."""
        token_a = bearer(self.tokens[self.dev_a])
        for what, method, path, body in self.device_routes(self.dev_a):
            with self.subTest(route=what):
                status, _, got = self.server.request(method, path, body, headers=token_a)
                self.assertEqual(status, 403, f"{what}: {got!r}")
                self.assertEqual(got.get("error", {}).get("code"), "forbidden", f"{what}: {got!r}")
        # The owner routes too, for its own owner as for another (found by a black-box test:
        # owner energy answered 404 "no such owner").
        for owner in (self.owner_a, self.owner_b, f"iso-missing-{uid()}"):
            for what, method, path in [
                    ("owner energy", "GET", f"/v1/owners/{owner}/energy"),
                    ("owner keys", "GET", f"/v1/owners/{owner}/keys"),
                    ("new owner key", "POST", f"/v1/owners/{owner}/keys"),
                    ("revoke owner key", "DELETE", f"/v1/owners/{owner}/keys/k-{uid()}"),
                    ("owner stream", "GET", f"/v1/stream?owner_id={owner}"),
                    ("alerts", "GET", f"/v1/alerts?owner_id={owner}"),
                    ("rules", "GET", f"/v1/rules?owner_id={owner}")]:
                with self.subTest(route=what, owner=owner):
                    status, _, got = self.server.request(method, path, headers=token_a)
                    self.assertEqual(status, 403, f"{what}: {got!r}")
                    self.assertEqual(got.get("error", {}).get("code"), "forbidden",
                                     f"{what}: {got!r}")

    def test_lists_exclude_other_owners_devices(self):
        for owner, own in [(self.owner_a, self.dev_a), (self.owner_b, self.dev_b)]:
            status, _, body = self.server.request("GET", "/v1/devices?limit=1000",
                                                  headers=bearer(self.keys[owner]))
            self.assertEqual(status, 200, body)
            self.assertEqual([d["device_id"] for d in body["devices"]], [own])
            self.assertIsNone(body["next_cursor"])
        # ?owner_id= is ignored for an owner key, as on /v1/rules and /v1/alerts: A still
        # sees its own devices and only those (found by a black-box test: another owner's
        # id gave an empty list here only), whatever the id, even one outside the syntax.
        for other in (self.owner_b, self.owner_a, "a%20b"):
            with self.subTest(owner_id=other):
                status, _, body = self.server.request("GET", f"/v1/devices?owner_id={other}",
                                                      headers=self.key_a())
                self.assertEqual(status, 200, body)
                self.assertEqual([d["device_id"] for d in body["devices"]], [self.dev_a])
        status, _, body = self.server.request(
            "GET", f"/v1/devices?cursor=iso-a&limit=1000", headers=self.key_a())
        self.assertEqual([d["device_id"] for d in body["devices"]], [self.dev_a])

    def test_owner_cannot_reassign_owner(self):
        for new_owner in (self.owner_b, f"iso-c-{uid()}"):
            with self.subTest(owner_id=new_owner):
                resp = self.server.request("PATCH", f"/v1/devices/{self.dev_a}",
                                           {"owner_id": new_owner, "name": "moved"},
                                           headers=self.key_a())
                self.assertStatus(resp, 400, "PATCH owner_id with an owner key")
                self.assertEqual(resp[2]["error"]["code"], "invalid_argument", resp[2])
                self.assertIn("owner_id", resp[2]["error"]["message"])
        status, _, got = self.server.request("GET", f"/v1/devices/{self.dev_a}",
                                             headers=self.key_a())
        self.assertEqual(status, 200, got)
        self.assertEqual(got["device"]["owner_id"], self.owner_a)
        self.assertNotEqual(got["device"]["name"], "moved", "the whole PATCH was refused")

    def test_deleted_device_id_stays_with_its_owner(self):
        """A deleted device's history is kept under its id (CONTRACT section 3), so the id
        cannot be registered for another owner, who would then read that history."""
        s = self.server
        dev = f"iso-del-{uid()}"
        status, _, body = s.request("POST", "/v1/devices", {"device_id": dev,
                                                            "owner_id": self.owner_a},
                                    headers=ADMIN)
        self.assertEqual(status, 201, body)
        ev = [{"device_id": dev, "timestamp": fmt_ts(time.time() - 30 + i),
               "metrics": {"power_w": 7.0}} for i in range(3)]
        self.assertStatus(s.post_events(ev, headers=bearer(body["token"])), 202, "ingest")
        self.assertTrue(poll(lambda: s.realtime(dev, headers=self.key_a())[2].get("data"),
                             timeout=15), "A's data" + self.diag())
        self.assertStatus(s.request("DELETE", f"/v1/devices/{dev}", headers=self.key_a()),
                          204, "A deletes its device")
        resp = s.request("POST", "/v1/devices", {"device_id": dev, "owner_id": self.owner_b},
                         headers=ADMIN)
        self.assertStatus(resp, 409, "the id registered for B")
        self.assertEqual(resp[2]["error"]["code"], "already_exists", resp[2])
        self.assertIn("deleted", resp[2]["error"]["message"])
        key_b = bearer(self.keys[self.owner_b])
        self.assertNotFound(s.realtime(dev, headers=key_b), "B reads the deleted id")
        # Its owner registers it again and finds its history.
        resp = s.request("POST", "/v1/devices", {"device_id": dev, "owner_id": self.owner_a},
                         headers=ADMIN)
        self.assertStatus(resp, 201, "A registers the id again")
        status, _, got = s.realtime(dev, headers=self.key_a())
        self.assertEqual(status, 200, got)
        self.assertTrue(got.get("data"), got)
        # (Gone again: the other tests list A's devices.)
        self.assertStatus(s.request("DELETE", f"/v1/devices/{dev}", headers=ADMIN), 204, "")

    def test_admin_only_routes_refuse_owner_keys(self):
        resp = self.server.request("POST", "/v1/devices",
                                   {"device_id": f"iso-new-{uid()}", "owner_id": self.owner_a},
                                   headers=self.key_a())
        self.assertStatus(resp, 403, "owner registers a device")
        resp = self.server.request("POST", f"/v1/owners/{self.owner_b}/keys", headers=self.key_a())
        self.assertStatus(resp, 403, "owner creates a key for another owner")
        resp = self.server.request("POST", f"/v1/owners/{self.owner_a}/keys", headers=self.key_a())
        self.assertStatus(resp, 403, "owner creates a key for itself")


if __name__ == "__main__":
    unittest.main()
