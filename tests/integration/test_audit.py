"""Audit log of administrative actions (issue 10, point 6): who, what, when, as JSON lines
in {data_dir}/audit/audit.jsonl, queryable by the admin at GET /v1/admin/audit; never a
token or secret; kept across restarts (also after kill -9: each entry is fdatasync'ed
before the API answers)."""

import json
import os
import time
import unittest
import uuid

from joule_harness import JouleTestCase

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


class AuditTest(JouleTestCase):
    server_env = {"JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN}

    def audit(self, query="", headers=ADMIN):
        status, _, body = self.server.request("GET", "/v1/admin/audit" + query, headers=headers)
        self.assertEqual(status, 200, f"{body!r}" + self.diag())
        return body

    def test_bounds_select_by_the_time_shown(self):
        """`from`/`to` are rounded up to the millisecond, so they select by an entry's time
        as it is shown (to the millisecond): an entry shown at T is before from=T+1ns and
        before to=T+1ns (was: compared with the entry's full-precision time while the server
        runs, and with the shown one after a restart)."""
        owner = f"au-bound-{uuid.uuid4().hex[:8]}"
        status, _, _ = self.server.request("POST", f"/v1/owners/{owner}/keys", headers=ADMIN)
        self.assertEqual(status, 201)
        entry = [e for e in self.audit(f"?target_id={owner}")["entries"]]
        self.assertEqual(len(entry), 1, entry)
        shown = entry[0]["time"]  # …:05.123Z
        self.assertRegex(shown, r"\.\d{3}Z$")
        just_after = shown[:-1] + "000001Z"  # …:05.123000001Z
        for query, found in [(f"from={shown}", True), (f"from={just_after}", False),
                             (f"to={shown}", False), (f"to={just_after}", True)]:
            with self.subTest(query=query):
                got = self.audit(f"?target_id={owner}&{query}")["entries"]
                self.assertEqual(len(got), 1 if found else 0, got)

    def test_fields_are_the_fields_changed(self):
        """`details.fields` lists the fields changed: an admin PATCH that sends the device's
        own owner_id does not list owner_id nor carry new_owner_id, a GET body sent back with
        one field edited lists that field only, and a PATCH that changes nothing is not
        recorded (found by a black-box test: {"fields":["owner_id"],"new_owner_id":"kim"} for
        a device already kim's)."""
        owner = f"au-kim-{uuid.uuid4().hex[:8]}"
        dev = f"au-k1-{uuid.uuid4().hex[:8]}"
        status, _, body = self.server.request(
            "POST", "/v1/devices", {"device_id": dev, "owner_id": owner}, headers=ADMIN)
        self.assertEqual(status, 201, body)
        status, _, body = self.server.request("PATCH", f"/v1/devices/{dev}",
                                              {"owner_id": owner}, headers=ADMIN)
        self.assertEqual((status, body["device"]["owner_id"]), (200, owner), body)
        status, _, body = self.server.request("PATCH", f"/v1/devices/{dev}",
                                              {"owner_id": owner, "name": "meter"},
                                              headers=ADMIN)
        self.assertEqual(status, 200, body)
        # The GET body sent back with one field edited: only that field changed.
        status, _, got = self.server.request("GET", f"/v1/devices/{dev}", headers=ADMIN)
        self.assertEqual(status, 200, got)
        got["device"]["timezone"] = "Europe/Berlin"
        status, _, body = self.server.request("PATCH", f"/v1/devices/{dev}", got["device"],
                                              headers=ADMIN)
        self.assertEqual((status, body["device"]["timezone"]), (200, "Europe/Berlin"), body)
        updated = [e["details"] for e in self.audit(f"?target_id={dev}")["entries"]
                   if e["action"] == "device.updated"]
        self.assertEqual(updated, [{"fields": ["name"]}, {"fields": ["timezone"]}])

    def test_actions_are_recorded_queryable_and_durable(self):
        s = self.server
        tag = uuid.uuid4().hex[:8]
        owner, dev = f"au-home-{tag}", f"au-plug-{tag}"
        started = time.time()
        status, _, created = s.request("POST", "/v1/devices",
                                       {"device_id": dev, "owner_id": owner, "name": "plug"},
                                       headers=ADMIN)
        self.assertEqual(status, 201, created)
        secrets = [created["token"]]
        status, _, key = s.request("POST", f"/v1/owners/{owner}/keys", headers=ADMIN)
        self.assertEqual(status, 201, key)
        secrets.append(key["key"])
        owner_h = bearer(key["key"])
        status, _, _ = s.request("PATCH", f"/v1/devices/{dev}",
                                 {"name": "kitchen", "timezone": "Europe/Berlin"},
                                 headers=owner_h)
        self.assertEqual(status, 200)
        status, _, rotated = s.request("POST", f"/v1/devices/{dev}/token", headers=ADMIN)
        self.assertEqual(status, 201, rotated)
        secrets.append(rotated["token"])
        rule = {"name": "hot", "scope": {"device_id": dev}, "kind": "threshold",
                "metric": "power_w", "aggregate": "max", "op": ">", "threshold": 10,
                "resolution": "1m",
                "channels": [{"type": "webhook", "url": "https://hooks.example.com/x",
                              "secret": "whsec_c2VjcmV0LXNob3VsZC1uZXZlci1sZWFr"}]}
        secrets.append("whsec_c2VjcmV0LXNob3VsZC1uZXZlci1sZWFr")
        status, _, rule_body = s.request("POST", "/v1/rules", rule, headers=owner_h)
        self.assertEqual(status, 201, rule_body)
        rule_id = rule_body["id"]
        rule["name"] = "hotter"
        status, _, _ = s.request("PUT", f"/v1/rules/{rule_id}", rule, headers=owner_h)
        self.assertEqual(status, 200)
        status, _, _ = s.request("DELETE", f"/v1/rules/{rule_id}", headers=owner_h)
        self.assertEqual(status, 204)
        status, _, _ = s.request("DELETE", f"/v1/devices/{dev}", headers=ADMIN)
        self.assertEqual(status, 204)
        # A refused request changes nothing and is not an administrative action.
        status, _, _ = s.request("DELETE", f"/v1/devices/{dev}", headers=ADMIN)
        self.assertEqual(status, 404)

        expected = [
            ("device.registered", "admin", dev),
            ("owner_key.created", "admin", owner),
            ("device.updated", f"owner:{owner}", dev),
            ("device.token_rotated", "admin", dev),
            ("rule.created", f"owner:{owner}", rule_id),
            ("rule.updated", f"owner:{owner}", rule_id),
            ("rule.deleted", f"owner:{owner}", rule_id),
            ("device.deleted", "admin", dev),
        ]

        def mine(entries):
            ids = {dev, owner, rule_id}
            return [(e["action"], e["actor"], e["target"]["id"]) for e in entries
                    if e["target"]["id"] in ids]

        body = self.audit("?limit=1000")
        self.assertEqual(mine(body["entries"]), expected)
        for e in body["entries"]:
            if e["target"]["id"] in (dev, owner, rule_id):
                self.assertEqual(e["remote_address"], "127.0.0.1")
                ts = time.mktime(time.strptime(e["time"][:19], "%Y-%m-%dT%H:%M:%S")) - \
                    time.timezone
                self.assertLess(abs(ts - started), 120, e)
        updated = [e for e in body["entries"] if e["action"] == "device.updated"
                   and e["target"]["id"] == dev][0]
        self.assertEqual(sorted(updated["details"]["fields"]), ["name", "timezone"])

        # Filters and paging.
        self.assertEqual(mine(self.audit(f"?action=rule.&limit=1000")["entries"]),
                         [x for x in expected if x[0].startswith("rule.")])
        self.assertEqual(mine(self.audit(f"?actor=owner:{owner}")["entries"]),
                         [x for x in expected if x[1] == f"owner:{owner}"])
        self.assertEqual(mine(self.audit(f"?target_id={dev}")["entries"]),
                         [x for x in expected if x[2] == dev])
        pages, cursor = [], ""
        for _ in range(20):
            page = self.audit(f"?target_id={dev}&limit=2" + (f"&cursor={cursor}" if cursor
                                                              else ""))
            pages += page["entries"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        self.assertEqual(mine(pages), [x for x in expected if x[2] == dev])
        status, _, err = s.request("GET", "/v1/admin/audit?limit=abc", headers=ADMIN)
        self.assertEqual(status, 400, err)
        status, _, err = s.request("GET", "/v1/admin/audit?cursor=x1", headers=ADMIN)
        self.assertEqual(status, 400, err)
        # Found by a black-box test: -1 (read as 2^64 - 1: an empty page) and +5 were taken.
        # Only next_cursor's form is: plain decimal digits, within 64 bits.
        for cursor in ("-1", "%2B5", "%205", "5%20", "0x5", "5.0", "18446744073709551616"):
            with self.subTest(cursor=cursor):
                status, _, err = s.request("GET", f"/v1/admin/audit?cursor={cursor}",
                                           headers=ADMIN)
                self.assertEqual((status, err["error"]["code"]), (400, "invalid_argument"), err)
                self.assertIn("next_cursor", err["error"]["message"])

        # Only the admin reads it.
        status, _, err = s.request("GET", "/v1/admin/audit", headers=owner_h)
        self.assertEqual(status, 403, err)
        status, _, err = s.request("GET", "/v1/admin/audit")
        self.assertEqual(status, 401, err)

        # JSON lines on disk, without any token, key or secret.
        path = os.path.join(s.data_dir, "audit", "audit.jsonl")
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        lines = raw.splitlines()
        self.assertTrue(raw.endswith("\n"))
        self.assertEqual([json.loads(x)["seq"] for x in lines], list(range(1, len(lines) + 1)))
        for secret in secrets:
            self.assertNotIn(secret, raw)

        # Durable: kill -9 and restart, the same entries are served.
        s.kill9()
        s.start()
        self.assertEqual(mine(self.audit("?limit=1000")["entries"]), expected)


if __name__ == "__main__":
    unittest.main()
