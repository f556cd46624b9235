"""docs/openapi.yaml against the real binary: a walk over the API (devices, tokens, owner
keys, ingest, realtime, history, health, owner energy, rules, alerts, audit, replay, the SSE
`reading` event, error bodies) checks every answer's status is one the spec lists for the
route, and its body validates against the route's schema twice, with a standard JSON-Schema
validator as a generated client would use it:

- as written (OpenAPI 3.0 `nullable` and boolean `exclusiveMinimum` translated) — found by
  a black-box test: every rule failed `Rule`, whose `allOf` included RuleInput's
  `additionalProperties: false` without `created_at`/`updated_at`;
- closed: every object schema that names its properties refuses others (allOf flattened
  first), so a field the server sends and the spec does not name fails — found by a
  black-box test: health's `device_id`/`device`, owner energy's `metric`/`from`/`to`, an
  owner key's `owner_id`/`created_at`, token rotation's `device_id`, SSE `reading`'s
  `device_id`.

Needs PyYAML and jsonschema (Debian python3-yaml, python3-jsonschema: scripts/install-deps.sh --test
installs them); fails without."""

import copy
import gzip
import http.client
import json
import os
import time
import unittest
import uuid

from joule_harness import JouleTestCase, fmt_ts, poll, read_stream

import jsonschema
import yaml

SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openapi.yaml")
ADMIN_TOKEN = "admin-openapi-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def uid():
    return uuid.uuid4().hex[:8]


def to_json_schema(node):
    """OpenAPI 3.0 schema → JSON Schema 2020-12 (nullable, exclusiveMinimum, $ref)."""
    if isinstance(node, list):
        return [to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    s = {k: to_json_schema(v) for k, v in node.items()}
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    if s.get("exclusiveMinimum") is True:
        s["exclusiveMinimum"] = s.pop("minimum")
    elif s.get("exclusiveMinimum") is False:
        del s["exclusiveMinimum"]
    if "$ref" in s:
        s["$ref"] = s["$ref"].replace("#/components/schemas/", "#/$defs/")
    return s


def closed(node, defs):
    """The schema with allOf flattened and every object that names properties closed."""
    if isinstance(node, list):
        return [closed(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return closed(defs[node["$ref"].split("/")[-1]], defs)
    s = dict(node)
    if "allOf" in s:
        parts = [closed(p, defs) for p in s.pop("allOf")]
        merged = {"properties": {}, "required": []}
        for p in parts + [s]:
            merged["properties"].update(p.get("properties", {}))
            merged["required"] += [r for r in p.get("required", []) if r not in merged["required"]]
            for k, v in p.items():
                if k not in ("properties", "required", "additionalProperties"):
                    merged[k] = v
        s = merged
    s = {k: (closed(v, defs) if k not in ("properties",) else
             {n: closed(ps, defs) for n, ps in v.items()}) for k, v in s.items()}
    if s.get("properties") and "additionalProperties" not in s:
        s["additionalProperties"] = False
    return s


class OpenApiTest(JouleTestCase):
    server_env = {"JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN,
                  "JOULE_LIMITS_REQUESTS_PER_SECOND": "0"}

    @classmethod
    def setUpClass(cls):
        with open(SPEC_PATH, encoding="utf-8") as f:
            cls.spec = yaml.safe_load(f)
        cls.defs = to_json_schema(cls.spec["components"]["schemas"])
        super().setUpClass()

    def assertValid(self, schema, body, what):
        """`body` validates against `schema` as written and closed."""
        as_written = {"$defs": self.defs, **copy.deepcopy(schema)}
        errors = [e.message for e in
                  jsonschema.Draft202012Validator(as_written).iter_errors(body)]
        self.assertFalse(errors, f"{what}: not valid as written: {errors[:3]}\n{body!r}"[:2000])
        strict = {"$defs": self.defs, **closed(schema, self.defs)}
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in
                  jsonschema.Draft202012Validator(strict).iter_errors(body)]
        self.assertFalse(errors, f"{what}: fields the spec does not name: {errors[:5]}"[:2000])

    def call(self, method, template, status, body=None, headers=ADMIN, query="",
             content_type=None, **params):
        """Requests `template` with `params` filled in; checks the status is `status` and
        listed for the route, and the body validates against the listed schema."""
        path = template.format(**params) + query
        got, response_headers, answer = self.server.request(method, path, body, headers=headers,
                                                            content_type=content_type)
        what = f"{method} {path}"
        self.assertEqual(got, status, f"{what}: {answer!r}")
        operation = self.spec["paths"][template.replace("{owner}", "{owner_id}")][method.lower()]
        self.assertIn(str(status), operation["responses"], f"{what}: {status} not in the spec")
        response = operation["responses"][str(status)]
        if "$ref" in response:
            response = self.spec["components"]["responses"][response["$ref"].split("/")[-1]]
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None and answer != "":
            with self.subTest(what):
                self.assertValid(to_json_schema(schema), answer, what)
        return answer, response_headers

    def test_walk(self):
        owner, device = f"own-{uid()}", f"dev-{uid()}"
        created, _ = self.call("POST", "/v1/devices", 201,
                               {"device_id": device, "owner_id": owner, "name": "plug",
                                "timezone": "Europe/Berlin", "config": {"a": 1}})
        self.call("GET", "/v1/devices", 200)
        self.call("GET", "/v1/devices/{id}", 200, id=device)
        self.call("PATCH", "/v1/devices/{id}", 200, {"location": "kitchen"}, id=device)
        rotated, _ = self.call("POST", "/v1/devices/{id}/token", 201, id=device)
        self.assertNotEqual(rotated["token"], created["token"])
        device_auth = {"Authorization": f"Bearer {rotated['token']}"}
        key, _ = self.call("POST", "/v1/owners/{owner_id}/keys", 201, owner_id=owner)
        owner_auth = {"Authorization": f"Bearer {key['key']}"}
        self.call("GET", "/v1/owners/{owner_id}/keys", 200, owner_id=owner)

        now = time.time()
        events = [{"device_id": device, "timestamp": fmt_ts(now - 120 + 10 * i),
                   "metrics": {"power_w": 100 + i, "energy_wh": 1000 + i}} for i in range(10)]
        self.call("POST", "/v1/telemetry", 202, events, headers=device_auth)
        self.assertTrue(poll(lambda: self.server.request(
            "GET", f"/v1/devices/{device}/health", headers=ADMIN)[2]["events"] == 10), "ingest")
        self.call("GET", "/v1/devices/{id}/metrics/realtime", 200, headers=owner_auth, id=device)
        self.call("GET", "/v1/devices/{id}/metrics/history", 200, headers=owner_auth,
                  query="?resolution=1m", id=device)
        self.call("GET", "/v1/devices/{id}/health", 200, headers=owner_auth, id=device)
        self.call("GET", "/v1/owners/{owner_id}/energy", 200, headers=owner_auth,
                  query="?resolution=1h", owner_id=owner)

        rule, _ = self.call("POST", "/v1/rules", 201,
                            {"scope": {"device_id": device}, "kind": "threshold",
                             "metric": "power_w", "aggregate": "max", "op": ">",
                             "threshold": 5000,
                             "channels": [{"url": "https://example.com/hook", "secret": "s"}]},
                            headers=owner_auth)
        self.call("POST", "/v1/rules", 201, {"scope": {"model": "m"}, "kind": "absence",
                                             "absent_for": "10m"})
        self.call("GET", "/v1/rules", 200)
        self.call("GET", "/v1/rules/{id}", 200, headers=owner_auth, id=rule["id"])
        # A rule read back is a valid input (created_at/updated_at are read-only, ignored).
        with self.subTest("a rule as RuleInput"):
            self.assertValid(to_json_schema({"$ref": "#/components/schemas/RuleInput"}), rule,
                             "a rule as RuleInput")
        self.call("PUT", "/v1/rules/{id}", 200, rule, headers=owner_auth, id=rule["id"])
        self.call("GET", "/v1/alerts", 200, headers=owner_auth)
        self.call("GET", "/v1/admin/audit", 200)
        job, _ = self.call("POST", "/v1/admin/replay", 202,
                           {"from": fmt_ts(now - 3600), "to": fmt_ts(now), "dry_run": True})
        self.call("GET", "/v1/admin/replay/{id}", 200, id=job["id"])

        # Error bodies.
        self.call("GET", "/v1/devices/{id}", 404, id=f"nope-{uid()}")
        self.call("GET", "/v1/devices/{id}/metrics/history", 400, query="?from=yesterday",
                  id=device)
        self.call("POST", "/v1/rules", 400, {"kind": "threshold"}, headers=owner_auth)
        self.call("GET", "/v1/devices/{id}", 403, headers=device_auth, id=device)
        self.call("GET", "/v1/owners/{owner_id}/energy", 403, headers=device_auth, owner_id=owner)

        # SSE: a `reading` event's data.
        reading = self.first_sse_reading(device, owner_auth, device_auth)
        schema = self.spec["paths"]["/v1/stream"]["get"]["responses"]["200"]["x-sse-events"]
        with self.subTest("SSE reading"):
            self.assertValid(to_json_schema(schema["reading"]), reading, "SSE reading")

    def test_json_bodies_refused_alike(self):
        """Every route that takes a JSON body answers another Content-Type 415
        unsupported_media_type and a body over its limit 413 payload_too_large, as POST
        /v1/telemetry does, and the spec lists both (found by a black-box test: 400 on the
        rules and replay routes, and 413 on the device routes was not in the spec)."""
        owner, device = f"own-{uid()}", f"dev-{uid()}"
        self.call("POST", "/v1/devices", 201, {"device_id": device, "owner_id": owner})
        rule, _ = self.call("POST", "/v1/rules", 201, {"scope": {"device_id": device},
                                                       "kind": "absence", "absent_for": "10m"})
        now = time.time()
        routes = [("POST", "/v1/devices", {}, {"device_id": f"dev-{uid()}", "owner_id": owner}),
                  ("PATCH", "/v1/devices/{id}", {"id": device}, {"name": "n"}),
                  ("POST", "/v1/rules", {}, {"scope": {"device_id": device}, "kind": "absence",
                                             "absent_for": "10m"}),
                  ("PUT", "/v1/rules/{id}", {"id": rule["id"]}, rule),
                  ("POST", "/v1/admin/replay", {}, {"from": fmt_ts(now - 60), "to": fmt_ts(now),
                                                    "dry_run": True})]
        for method, template, params, body in routes:
            with self.subTest(f"{method} {template}"):
                for content_type in ("text/plain", "application/x-www-form-urlencoded",
                                     "application/json; charset=latin1"):
                    path = template.format(**params)
                    got, _, answer = self.server.request(method, path, json.dumps(body),
                                                         headers=ADMIN, content_type=content_type)
                    self.assertEqual((got, answer["error"]["code"]),
                                     (415, "unsupported_media_type"), content_type)
                self.call(method, template, 415, json.dumps(body), content_type="text/plain",
                          **params)
                big = dict(body, name="n" * 70_000)
                answer, _ = self.call(method, template, 413, big, **params)
                self.assertEqual(answer["error"]["code"], "payload_too_large")

    def test_every_route_lists_its_head_refusals(self):
        """Every route of the spec answers a query parameter given twice 400 invalid_argument
        (CONTRACT §3), and one that takes no body a Content-Length over 4 KiB 413
        payload_too_large (SECURITY.md "Limits"), and lists them (found by a black-box test:
        eight routes listed no 400, no GET route a 413)."""
        owner, device = f"own-{uid()}", f"dev-{uid()}"
        self.call("POST", "/v1/devices", 201, {"device_id": device, "owner_id": owner})
        values = {"id": device, "owner_id": owner, "key_id": "k-1", "path": "app.js"}
        for template, item in self.spec["paths"].items():
            for method, operation in item.items():
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                path = template.format(**values)
                with self.subTest(f"{method.upper()} {template}"):
                    got, _, answer = self.server.request(method.upper(), path + "?x=1&x=2",
                                                         headers=ADMIN)
                    self.assertEqual((got, answer["error"]["code"]), (400, "invalid_argument"),
                                     answer)
                    self.assertIn("400", operation["responses"], "400 not in the spec")
                    if "requestBody" in operation:
                        continue
                    got, _, answer = self.server.request(method.upper(), path, b"x" * 5000,
                                                         headers=ADMIN, content_type=False)
                    self.assertEqual((got, answer["error"]["code"]), (413, "payload_too_large"),
                                     answer)
                    self.assertIn("413", operation["responses"], "413 not in the spec")

    def test_json_bodies_refuse_content_codings(self):
        """Every route that takes a JSON body refuses a Content-Encoding other than identity
        as POST /v1/telemetry does: 415 unsupported_media_type naming the coding and
        identity, Accept-Encoding: identity, nothing changed; and the spec's 415 says so.
        Found by a black-box test: a gzip body was parsed as sent and answered 400, and a
        br header over a plain body was taken (only ingest refused codings)."""
        owner, device = f"own-{uid()}", f"dev-{uid()}"
        self.call("POST", "/v1/devices", 201, {"device_id": device, "owner_id": owner})
        rule, _ = self.call("POST", "/v1/rules", 201, {"scope": {"device_id": device},
                                                       "kind": "absence", "absent_for": "10m"})
        now = time.time()
        new_device = f"dev-{uid()}"
        routes = [("POST", "/v1/devices", {}, {"device_id": new_device, "owner_id": owner}),
                  ("PATCH", "/v1/devices/{id}", {"id": device}, {"name": "renamed"}),
                  ("POST", "/v1/rules", {}, {"scope": {"device_id": device}, "kind": "absence",
                                             "absent_for": "10m"}),
                  ("PUT", "/v1/rules/{id}", {"id": rule["id"]}, dict(rule, absent_for="20m")),
                  ("POST", "/v1/admin/replay", {}, {"from": fmt_ts(now - 60), "to": fmt_ts(now),
                                                    "dry_run": True})]
        for method, template, params, body in routes:
            plain = json.dumps(body).encode()
            for coding, data in (("gzip", gzip.compress(plain)), ("br", plain),
                                 ("identity, deflate", plain)):
                with self.subTest(f"{method} {template} {coding}"):
                    answer, headers = self.call(method, template, 415, data,
                                                headers=dict(ADMIN, **{"Content-Encoding": coding}),
                                                **params)
                    self.assertEqual(answer["error"]["code"], "unsupported_media_type")
                    self.assertIn("identity", answer["error"]["message"])
                    self.assertIn(coding.split(", ")[-1], answer["error"]["message"])
                    self.assertEqual(headers.get("accept-encoding"), "identity", headers)
        # Nothing was changed.
        self.call("GET", "/v1/devices/{id}", 404, id=new_device)
        got, _ = self.call("GET", "/v1/devices/{id}", 200, id=device)
        self.assertNotEqual(got["device"].get("name"), "renamed")
        got, _ = self.call("GET", "/v1/rules/{id}", 200, id=rule["id"])
        self.assertEqual(got["absent_for"], rule["absent_for"])
        # identity is the body as sent.
        self.call("PATCH", "/v1/devices/{id}", 200, json.dumps({"name": "n"}),
                  headers=dict(ADMIN, **{"Content-Encoding": "Identity"}), id=device)
        # The spec's 415 names the header.
        refusal = self.spec["components"]["responses"]["UnsupportedMediaType"]
        self.assertIn("Content-Encoding", refusal["description"])
        self.assertIn("Accept-Encoding", refusal.get("headers", {}))

    def first_sse_reading(self, device, owner_auth, device_auth):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", f"/v1/stream?device_id={device}", headers=owner_auth)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        event = {"device_id": device, "timestamp": fmt_ts(time.time()),
                 "metrics": {"power_w": 7}}
        status, _, body = self.server.request("POST", "/v1/telemetry", event, headers=device_auth)
        self.assertEqual(status, 202, body)

        def reading(seen):
            # Complete events only (each ends with a blank line): a read may end mid-event.
            for block in seen.decode(errors="replace").split("\n\n")[:-1]:
                lines = block.split("\n")
                if "event: reading" in lines:
                    return json.loads("".join(l[len("data: "):] for l in lines
                                              if l.startswith("data: ")))
            return None
        seen = read_stream(conn, resp, reading, timeout=20)
        if reading(seen) is None:
            self.fail(f"no SSE reading event; got {seen[-500:]!r}")
        return reading(seen)


if __name__ == "__main__":
    unittest.main()
