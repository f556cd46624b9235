"""POST /v1/telemetry against the real binary: CONTRACT section 1 (validation codes and
their indexes, partial acceptance, 400/401/413/415, NDJSON) and the ingest counters in
/metrics."""

import gzip
import json
import os
import time
import unittest
import uuid
import zlib

from joule_harness import (JouleTestCase, fmt_ts, fmt_ts_offset, metric_sum, parse_prometheus,
                           poll)

MAX_BODY = 64 * 1024
MAX_EVENTS = 50


def uid():
    return uuid.uuid4().hex[:12]


def good_event(device=None, ts=None, **extra):
    ev = {"device_id": device if device is not None else f"ing-{uid()}",
          "timestamp": ts if ts is not None else fmt_ts(time.time() - 60),
          "metrics": {"power_w": 12.5, "voltage_v": 230.1},
          "event_id": uid()}
    ev.update(extra)
    return ev


def without(ev, key):
    ev = dict(ev)
    ev.pop(key, None)
    return ev


def raw_event(device_json, ts_json, metrics_json, meta_json=None, extra=""):
    """A JSON object text built by hand (for duplicate keys, huge numbers)."""
    parts = [f'"device_id": {device_json}', f'"timestamp": {ts_json}',
             f'"metrics": {metrics_json}', f'"event_id": "{uid()}"']
    if meta_json is not None:
        parts.append(f'"meta": {meta_json}')
    if extra:
        parts.append(extra)
    return "{" + ", ".join(parts) + "}"


class IngestValidationTest(JouleTestCase):
    server_env = {
        "JOULE_LIMITS_MAX_BODY_BYTES": str(MAX_BODY),
        "JOULE_LIMITS_MAX_EVENTS_PER_REQUEST": str(MAX_EVENTS),
    }

    # ------------------------------------------------------------ helpers

    def post(self, events, **kw):
        return self.server.post_events(events, **kw)

    def check_batch(self, cases, what):
        """cases: list of (label, event_or_raw_json_text, expected_code or None=accepted).

        Posts them as one JSON array and checks accepted/rejected counts and that every
        rejected index carries the expected code (and every accepted index has no error).
        """
        items = [c[1] if isinstance(c[1], str) else json.dumps(c[1]) for c in cases]
        body = "[" + ",\n".join(items) + "]"
        status, _, resp = self.server.request("POST", "/v1/telemetry", body)
        n_bad = sum(1 for c in cases if c[2] is not None)
        n_good = len(cases) - n_bad
        expected_status = 202 if n_good else 400
        self.assertEqual(status, expected_status,
                         f"{what}: status; body={resp!r}" + self.diag())
        self.assertIsInstance(resp, dict, f"{what}: body is not a JSON object: {resp!r}")
        self.assertEqual(resp.get("accepted"), n_good, f"{what}: accepted; body={resp!r}")
        self.assertEqual(resp.get("rejected"), n_bad, f"{what}: rejected; body={resp!r}")
        errors = resp.get("errors")
        self.assertIsInstance(errors, list, f"{what}: errors; body={resp!r}")
        by_index = {}
        for e in errors:
            self.assertIsInstance(e, dict, f"{what}: error entry {e!r}")
            self.assertIn("index", e, f"{what}: error entry without index {e!r}")
            self.assertIn("code", e, f"{what}: error entry without code {e!r}")
            self.assertIsInstance(e.get("message"), str, f"{what}: error without message {e!r}")
            self.assertNotIn(e["index"], by_index, f"{what}: index reported twice: {errors!r}")
            by_index[e["index"]] = e["code"]
        for i, (label, _, code) in enumerate(cases):
            with self.subTest(case=label, index=i):
                if code is None:
                    self.assertNotIn(i, by_index,
                                     f"{what}: valid case {label!r} (index {i}) was rejected: "
                                     f"{by_index.get(i)}")
                else:
                    self.assertEqual(by_index.get(i), code,
                                     f"{what}: case {label!r} at index {i}")
        self.assertEqual(len(errors), n_bad, f"{what}: one error per rejected event: {errors!r}")
        return resp

    # ------------------------------------------------------------- rules

    def test_device_id_rule(self):
        cases = [
            ("valid simple", good_event(), None),
            ("valid all allowed chars", good_event(device="Ab9._:-" + uid()), None),
            ("valid 128 chars", good_event(device=("d" + uid() + "x" * 128)[:128]), None),
            ("valid 1 char", good_event(device="q", ts=fmt_ts(time.time() - 61.123)), None),
            ("empty", good_event(device=""), "invalid_device_id"),
            ("129 chars", good_event(device="d" * 129), "invalid_device_id"),
            ("space", good_event(device="plug 42"), "invalid_device_id"),
            ("slash", good_event(device="plug/42"), "invalid_device_id"),
            ("non-ascii", good_event(device="plüg-42"), "invalid_device_id"),
            # Found by a black-box test: accepted (202), but no URL reaches them.
            ("dot", good_event(device="."), "invalid_device_id"),
            ("dot dot", good_event(device=".."), "invalid_device_id"),
            ("valid three dots", good_event(device="..." + uid()), None),
            ("number", good_event(device=None) | {"device_id": 42}, "invalid_device_id"),
            ("null", good_event() | {"device_id": None}, "invalid_device_id"),
            ("missing", without(good_event(), "device_id"), "invalid_device_id"),
        ]
        self.check_batch(cases, "device_id")

    def test_timestamp_rule(self):
        now = time.time()
        base = now - 120
        cases = [
            ("valid Z millis", good_event(ts=fmt_ts(base)), None),
            ("valid +01:00", good_event(ts=fmt_ts_offset(base, 60)), None),
            ("valid -05:30", good_event(ts=fmt_ts_offset(base, -330)), None),
            ("valid no fraction", good_event(ts=fmt_ts(int(base))[:19] + "Z"), None),
            ("valid 9-digit fraction", good_event(ts=fmt_ts(int(base))[:19] + ".123456789Z"),
             None),
            ("valid epoch ms integer", good_event(ts=int(base * 1000)), None),
            ("garbage", good_event(ts="yesterday"), "invalid_timestamp"),
            ("no offset", good_event(ts=fmt_ts(base)[:-1]), "invalid_timestamp"),
            ("10-digit fraction", good_event(ts=fmt_ts(int(base))[:19] + ".1234567890Z"),
             "invalid_timestamp"),
            ("offset without colon", good_event(ts=fmt_ts(int(base))[:19] + "+0100"),
             "invalid_timestamp"),
            ("month 13", good_event(ts="2026-13-01T00:00:00Z"), "invalid_timestamp"),
            ("february 30", good_event(ts="2026-02-30T00:00:00Z"), "invalid_timestamp"),
            ("date only", good_event(ts=fmt_ts(base)[:10]), "invalid_timestamp"),
            ("fractional epoch", good_event(ts=base * 1000 + 0.5), "invalid_timestamp"),
            ("epoch as string", good_event(ts=str(int(base * 1000))), "invalid_timestamp"),
            ("boolean", good_event(ts=True), "invalid_timestamp"),
            ("null", good_event() | {"timestamp": None}, "invalid_timestamp"),
            ("missing", without(good_event(), "timestamp"), "invalid_timestamp"),
        ]
        self.check_batch(cases, "timestamp")

    def test_timestamp_bounds(self):
        now = time.time()
        cases = [
            ("now + 4m", good_event(ts=fmt_ts(now + 240)), None),
            ("now - 6d", good_event(ts=fmt_ts(now - 6 * 86400)), None),
            ("now - 6d epoch ms", good_event(ts=int((now - 6 * 86400) * 1000)), None),
            ("now + 10m", good_event(ts=fmt_ts(now + 600)), "timestamp_out_of_range"),
            ("now + 10m epoch ms", good_event(ts=int((now + 600) * 1000)),
             "timestamp_out_of_range"),
            ("now + 1 year", good_event(ts=fmt_ts(now + 366 * 86400)), "timestamp_out_of_range"),
            ("now - 8d", good_event(ts=fmt_ts(now - 8 * 86400)), "timestamp_out_of_range"),
            ("now - 8d epoch ms", good_event(ts=int((now - 8 * 86400) * 1000)),
             "timestamp_out_of_range"),
            ("1970", good_event(ts="1970-01-01T00:00:00Z"), "timestamp_out_of_range"),
        ]
        self.check_batch(cases, "timestamp bounds")

    def test_metrics_rule(self):
        sixty_four = {f"m{i}": float(i) for i in range(64)}
        sixty_five = {f"m{i}": float(i) for i in range(65)}
        name64 = "a" + "b" * 63
        name65 = "a" + "b" * 64
        ts = fmt_ts(time.time() - 90)
        cases = [
            ("valid 64 entries", good_event(metrics=sixty_four), None),
            ("valid 64-char name", good_event(metrics={name64: 1}), None),
            ("valid names and numbers", good_event(
                metrics={"x": 0, "x9_": -3, "y_1": 1e100, "z": -1e100}), None),
            ("empty object", good_event(metrics={}), "invalid_metrics"),
            ("65 entries", good_event(metrics=sixty_five), "invalid_metrics"),
            ("upper case name", good_event(metrics={"Power_w": 1}), "invalid_metrics"),
            ("name starts with digit", good_event(metrics={"1w": 1}), "invalid_metrics"),
            ("name starts with underscore", good_event(metrics={"_w": 1}), "invalid_metrics"),
            ("name with dash", good_event(metrics={"a-b": 1}), "invalid_metrics"),
            ("empty name", good_event(metrics={"": 1}), "invalid_metrics"),
            ("65-char name", good_event(metrics={name65: 1}), "invalid_metrics"),
            ("string value", good_event(metrics={"power_w": "12"}), "invalid_metrics"),
            ("null value", good_event(metrics={"power_w": None}), "invalid_metrics"),
            ("bool value", good_event(metrics={"power_w": True}), "invalid_metrics"),
            ("object value", good_event(metrics={"power_w": {"v": 1}}), "invalid_metrics"),
            ("array value", good_event(metrics={"power_w": [1]}), "invalid_metrics"),
            ("not an object", good_event(metrics=[1, 2]), "invalid_metrics"),
            ("missing", without(good_event(), "metrics"), "invalid_metrics"),
            # Finite, but aggregates of it would overflow to null (found by a black-box test).
            ("magnitude above 1e100", good_event(metrics={"power_w": 1.5e300}),
             "invalid_metrics"),
            ("non-finite 1e999", raw_event(f'"ing-{uid()}"', f'"{ts}"', '{"power_w": 1e999}'),
             "invalid_metrics"),
        ]
        self.check_batch(cases, "metrics")

    def test_meta_rule(self):
        thirty_two = {f"k{i}": (i if i % 3 == 0 else (f"v{i}" if i % 3 == 1 else True))
                      for i in range(32)}
        thirty_three = {f"k{i}": "v" for i in range(33)}
        cases = [
            ("valid absent", good_event(), None),
            ("valid empty", good_event(meta={}), None),
            ("valid 32 entries", good_event(meta=thirty_two), None),
            ("valid 2 KiB", good_event(meta={"note": "n" * 2048}), None),
            ("33 entries", good_event(meta=thirty_three), "invalid_meta"),
            ("over 4 KiB", good_event(meta={"note": "n" * 5000}), "invalid_meta"),
            ("nested object", good_event(meta={"loc": {"room": "kitchen"}}), "invalid_meta"),
            ("array value", good_event(meta={"tags": ["a"]}), "invalid_meta"),
            ("null value", good_event(meta={"firmware": None}), "invalid_meta"),
            ("not an object", good_event(meta="kitchen"), "invalid_meta"),
            ("array meta", good_event(meta=[1]), "invalid_meta"),
        ]
        self.check_batch(cases, "meta")

    def test_event_id_rule(self):
        cases = [
            ("valid absent", without(good_event(), "event_id"), None),
            ("valid 128 chars", good_event(event_id=(uid() + "e" * 128)[:128]), None),
            ("129 chars", good_event(event_id="e" * 129), "invalid_event_id"),
            ("number", good_event(event_id=42), "invalid_event_id"),
            ("object", good_event(event_id={"id": "x"}), "invalid_event_id"),
        ]
        self.check_batch(cases, "event_id")

    def test_duplicate_keys_and_unknown_fields(self):
        ts = fmt_ts(time.time() - 75)
        dev = f'"ing-{uid()}"'
        cases = [
            ("valid unknown top-level field", good_event(firmware_hint="x", extra={"a": 1}),
             None),
            ("valid schema field", good_event(schema=1), None),
            ("duplicate top-level key",
             raw_event(dev, f'"{ts}"', '{"power_w": 1}', extra=f'"device_id": "ing-{uid()}"'),
             "invalid_json"),
            ("duplicate metric", raw_event(f'"ing-{uid()}"', f'"{ts}"',
                                           '{"power_w": 1, "power_w": 2}'), "invalid_json"),
            ("duplicate meta key", raw_event(f'"ing-{uid()}"', f'"{ts}"', '{"power_w": 1}',
                                             meta_json='{"a": "x", "a": "y"}'), "invalid_json"),
        ]
        self.check_batch(cases, "duplicate keys")

    # ------------------------------------------------- request-level behaviour

    def test_single_object_accepted(self):
        resp = self.post(good_event())
        self.assertStatus(resp, 202, "single object")
        body = resp[2]
        self.assertEqual(body.get("accepted"), 1, body)
        self.assertEqual(body.get("rejected"), 0, body)
        self.assertEqual(body.get("errors"), [], body)

    def test_single_object_rejected_is_400(self):
        resp = self.post(good_event(device="bad id"))
        self.assertStatus(resp, 400, "single invalid object")
        body = resp[2]
        self.assertEqual(body.get("accepted"), 0, body)
        self.assertEqual(body.get("rejected"), 1, body)
        self.assertEqual(body.get("errors", [{}])[0].get("index"), 0, body)
        self.assertEqual(body.get("errors", [{}])[0].get("code"), "invalid_device_id", body)

    def test_partial_acceptance(self):
        events = [good_event(), good_event(device="x" * 200), good_event(),
                  good_event(metrics={}), good_event()]
        resp = self.post(events)
        self.assertStatus(resp, 202, "partial")
        body = resp[2]
        self.assertEqual((body.get("accepted"), body.get("rejected")), (3, 2), body)
        got = sorted((e["index"], e["code"]) for e in body["errors"])
        self.assertEqual(got, [(1, "invalid_device_id"), (3, "invalid_metrics")])

    def test_all_rejected_is_400(self):
        events = [good_event(device=""), good_event(ts="nope"), good_event(metrics={"A": 1})]
        resp = self.post(events)
        self.assertStatus(resp, 400, "all rejected")
        body = resp[2]
        self.assertEqual((body.get("accepted"), body.get("rejected")), (0, 3), body)
        got = sorted((e["index"], e["code"]) for e in body["errors"])
        self.assertEqual(got, [(0, "invalid_device_id"), (1, "invalid_timestamp"),
                               (2, "invalid_metrics")])

    def test_unparseable_body_is_400(self):
        for label, body in [("truncated", '[{"device_id": "a", '), ("not json", "hello"),
                            ("trailing garbage", json.dumps(good_event()) + " }}"),
                            ("scalar", "42")]:
            with self.subTest(body=label):
                status, _, resp = self.server.request("POST", "/v1/telemetry", body)
                self.assertEqual(status, 400, f"{label}: {resp!r}" + self.diag())
                self.assertIsInstance(resp, dict, f"{label}: error body is JSON: {resp!r}")
                # CONTRACT section 1: the ingest result's shape, accepted 0; section 3's
                # error object says why.
                self.assertEqual((resp.get("accepted"), resp.get("rejected"), resp.get("errors")),
                                 (0, 0, []), resp)
                self.assertEqual(resp["error"]["code"], "invalid_json", resp)

    def test_content_types(self):
        ev = json.dumps(good_event())
        for ctype in ["text/plain", "application/xml", "application/x-www-form-urlencoded"]:
            with self.subTest(content_type=ctype):
                resp = self.server.request("POST", "/v1/telemetry", ev, content_type=ctype)
                self.assertStatus(resp, 415, ctype)
        resp = self.server.request("POST", "/v1/telemetry", json.dumps(good_event()),
                                   content_type="application/json; charset=utf-8")
        self.assertStatus(resp, 202, "application/json with charset parameter")

    def test_body_without_content_type_is_json(self):
        """Found by a black-box test: a body without a Content-Type was 415 here while every
        other JSON-body route takes it as JSON (CONTRACT §1's 415 row). An object or an
        array is accepted and counted; a wrong type is still 415, and NDJSON needs its."""
        def accepted():
            return metric_sum(parse_prometheus(self.server.metrics_text()),
                              "joule_events_accepted_total")

        before = accepted()
        one, two = good_event(), [good_event(), good_event()]
        for label, body, n in (("object", one, 1), ("array", two, 2)):
            with self.subTest(body=label):
                status, _, resp = self.server.request("POST", "/v1/telemetry", json.dumps(body),
                                                      content_type=False)
                self.assertEqual(status, 202, f"{resp!r}" + self.diag())
                self.assertEqual((resp["accepted"], resp["rejected"]), (n, 0), resp)
        self.assertTrue(poll(lambda: accepted() - before == 3, timeout=5),
                        f"{accepted() - before} counted" + self.diag())
        self.assertTrue(poll(lambda: self.server.realtime(one["device_id"])[0] == 200,
                             timeout=10), "stored" + self.diag())
        ndjson = json.dumps(good_event()) + "\n" + json.dumps(good_event()) + "\n"
        status, _, resp = self.server.request("POST", "/v1/telemetry", ndjson,
                                              content_type=False)
        self.assertEqual((status, resp["accepted"]), (400, 0), resp)
        status, _, resp = self.server.request("POST", "/v1/telemetry", json.dumps(one),
                                              content_type="text/plain")
        self.assertEqual((status, resp["error"]["code"]), (415, "unsupported_media_type"), resp)

    def test_content_encodings_other_than_identity_are_415(self):
        """Found by a black-box test (session 32): a gzip body was answered 400
        invalid_json ("not valid UTF-8"), as if the client had sent broken JSON. Only the
        identity coding is taken: any other is 415 unsupported_media_type naming it and
        identity, with Accept-Encoding: identity (RFC 9110 §15.5.16), counted in
        joule_events_rejected_total{code="unsupported_media_type"}, nothing stored."""
        def refused():
            return metric_sum(parse_prometheus(self.server.metrics_text()),
                              "joule_events_rejected_total", code="unsupported_media_type")

        before = refused()
        events = [good_event(), good_event()]
        plain = json.dumps(events).encode()
        cases = [("gzip", gzip.compress(plain)), ("GZIP", gzip.compress(plain)),
                 ("deflate", zlib.compress(plain)), ("br", plain), ("zstd", plain),
                 ("identity, gzip", gzip.compress(plain)), ("x-unknown", plain)]
        for coding, body in cases:
            with self.subTest(coding=coding):
                status, hdrs, resp = self.server.request(
                    "POST", "/v1/telemetry", body, headers={"Content-Encoding": coding})
                self.assertEqual(status, 415, f"{coding}: {resp!r}" + self.diag())
                self.assertEqual(resp["error"]["code"], "unsupported_media_type", resp)
                self.assertIn("identity", resp["error"]["message"], resp)
                self.assertIn(coding.split(", ")[-1], resp["error"]["message"], resp)
                self.assertEqual(hdrs.get("accept-encoding"), "identity", hdrs)
        # A request without a body is refused the same way (it skips the head check).
        status, hdrs, resp = self.server.request("POST", "/v1/telemetry",
                                                 headers={"Content-Encoding": "gzip"})
        self.assertEqual((status, resp["error"]["code"]), (415, "unsupported_media_type"), resp)
        self.assertTrue(poll(lambda: refused() - before == len(cases) + 1, timeout=5),
                        f"{refused() - before} counted" + self.diag())
        for device in (e["device_id"] for e in events):
            self.assertEqual(self.server.realtime(device)[0], 404, "nothing was stored")
        # identity (any case, also listed twice) is the body as sent.
        for coding in ("identity", "Identity", "identity, identity"):
            with self.subTest(coding=coding):
                resp = self.server.request("POST", "/v1/telemetry",
                                           json.dumps([good_event()]).encode(),
                                           headers={"Content-Encoding": coding})
                self.assertStatus(resp, 202, f"Content-Encoding: {coding}")

    def test_ndjson(self):
        lines = [json.dumps(good_event()), json.dumps(good_event()), '{"device_id": "x", bad',
                 json.dumps(good_event(device="no spaces allowed")), json.dumps(good_event())]
        body = "\n".join(lines) + "\n"
        status, _, resp = self.server.request("POST", "/v1/telemetry", body,
                                              content_type="application/x-ndjson")
        self.assertEqual(status, 202, f"{resp!r}" + self.diag())
        self.assertEqual((resp.get("accepted"), resp.get("rejected")), (3, 2), resp)
        got = sorted((e["index"], e["code"]) for e in resp["errors"])
        self.assertEqual(got, [(2, "invalid_json"), (3, "invalid_device_id")])

    def test_ndjson_without_trailing_newline(self):
        body = json.dumps(good_event()) + "\n" + json.dumps(good_event())
        resp = self.server.request("POST", "/v1/telemetry", body,
                                   content_type="application/x-ndjson")
        self.assertStatus(resp, 202, "ndjson no trailing newline")
        self.assertEqual(resp[2].get("accepted"), 2, resp[2])

    def test_body_too_large_is_413(self):
        # One array just over the byte limit (but under the event-count limit).
        pad = "p" * 1900
        events = [good_event(meta={"pad": pad}) for _ in range(MAX_EVENTS - 10)]
        body = json.dumps(events)
        self.assertGreater(len(body), MAX_BODY)
        self.assertLessEqual(len(events), MAX_EVENTS)

        def too_large():
            return metric_sum(parse_prometheus(self.server.metrics_text()),
                              "joule_events_rejected_total", code="payload_too_large")

        before = too_large()
        resp = self.server.request("POST", "/v1/telemetry", body)
        self.assertStatus(resp, 413, f"body of {len(body)} bytes > {MAX_BODY}")
        # Counted as one rejected request (found by a black-box test: the server's 413 before
        # the handler was counted nowhere but joule_http_requests_total).
        self.assertEqual(too_large(), before + 1)
        # Same kind of body under the limit is fine.
        small = json.dumps(events[:20])
        self.assertLess(len(small), MAX_BODY)
        self.assertStatus(self.server.request("POST", "/v1/telemetry", small), 202,
                          "body under the limit")

    def test_too_many_events_is_413(self):
        events = [good_event() for _ in range(MAX_EVENTS + 1)]
        self.assertLess(len(json.dumps(events)), MAX_BODY)
        self.assertStatus(self.post(events), 413, f"{MAX_EVENTS + 1} events")
        self.assertStatus(self.post(events, ndjson=True), 413,
                          f"{MAX_EVENTS + 1} events as NDJSON")
        ok = self.post(events[:MAX_EVENTS])
        self.assertStatus(ok, 202, f"exactly {MAX_EVENTS} events")
        self.assertEqual(ok[2].get("accepted"), MAX_EVENTS, ok[2])

    def test_counters_in_metrics(self):
        def snapshot():
            p = parse_prometheus(self.server.metrics_text())
            return {
                "accepted": metric_sum(p, "joule_events_accepted_total"),
                "invalid_device_id": metric_sum(p, "joule_events_rejected_total",
                                                code="invalid_device_id"),
                "invalid_metrics": metric_sum(p, "joule_events_rejected_total",
                                              code="invalid_metrics"),
                "invalid_timestamp": metric_sum(p, "joule_events_rejected_total",
                                                code="invalid_timestamp"),
                "timestamp_out_of_range": metric_sum(p, "joule_events_rejected_total",
                                                     code="timestamp_out_of_range"),
            }

        text = self.server.metrics_text()
        self.assertIn("joule_events_accepted_total", text, "metric exported" + self.diag())
        before = snapshot()
        events = ([good_event() for _ in range(4)] +
                  [good_event(device="") for _ in range(3)] +
                  [good_event(metrics={"Bad": 1}) for _ in range(2)] +
                  [good_event(ts="never")] +
                  [good_event(ts=fmt_ts(time.time() + 3600))])
        self.assertStatus(self.post(events), 202, "counter batch")
        # NDJSON request counts too; an all-rejected request still counts its rejections.
        self.assertStatus(self.post([good_event(), good_event()], ndjson=True), 202, "ndjson")
        self.assertStatus(self.post([good_event(device="a b")]), 400, "all rejected")
        expected = {"accepted": 6, "invalid_device_id": 4, "invalid_metrics": 2,
                    "invalid_timestamp": 1, "timestamp_out_of_range": 1}

        def deltas():
            now = snapshot()
            return {k: now[k] - before[k] for k in before}

        got = poll(lambda: (lambda d: d if d == expected else None)(deltas()), timeout=5)
        self.assertEqual(got or deltas(), expected, "counter deltas" + self.diag())

    def test_event_delay_in_metrics(self):
        """joule_event_delay_seconds: how long after their event time accepted events arrived
        (an outage's buffered upload, a clock behind); joule_events_ahead_total: events
        stamped more than a second after their arrival (a clock ahead). Found missing by the
        simulator's black-box test (session 29): its outages and skewed clocks showed in no
        fleet-wide metric."""
        def snapshot():
            p = parse_prometheus(self.server.metrics_text())
            return {
                "count": metric_sum(p, "joule_event_delay_seconds_count"),
                "le_10": metric_sum(p, "joule_event_delay_seconds_bucket", le="10"),
                "le_3600": metric_sum(p, "joule_event_delay_seconds_bucket", le="3600"),
                "le_21600": metric_sum(p, "joule_event_delay_seconds_bucket", le="21600"),
                "ahead": metric_sum(p, "joule_events_ahead_total"),
            }

        before = snapshot()
        now = time.time()
        events = ([good_event(ts=fmt_ts(now - 1)) for _ in range(3)] +    # on time
                  [good_event(ts=fmt_ts(now - 7200)) for _ in range(2)] +  # 2 h late
                  [good_event(ts=fmt_ts(now + 120))])                     # a clock 2 min ahead
        self.assertStatus(self.post(events), 202, "delay batch")
        # The ahead event counts as 0 s in the histogram (≤ 10 s with the on-time ones).
        expected = {"count": 6, "le_10": 4, "le_3600": 4, "le_21600": 6, "ahead": 1}

        def deltas():
            cur = snapshot()
            return {k: cur[k] - before[k] for k in before}

        got = poll(lambda: (lambda d: d if d == expected else None)(deltas()), timeout=5)
        self.assertEqual(got or deltas(), expected, "delay deltas" + self.diag())

    def test_engine_counters_in_metrics(self):
        """What the window engine drops or re-applies is counted in /metrics (CONTRACT §2:
        duplicates, late events within allowed lateness, later ones), and its state size
        (devices, open windows, bytes) is published."""
        def snapshot():
            p = parse_prometheus(self.server.metrics_text())
            return {k: metric_sum(p, f"joule_events_{k}_total")
                    for k in ("duplicate", "late", "late_dropped", "out_of_order")}

        before = snapshot()
        dev = f"eng-{uid()}"
        now = time.time()
        first = good_event(device=dev, ts=fmt_ts(now - 60))
        # One request, so the engine sees them in this order (the defaults: 10 s out of
        # order, 1 h allowed lateness).
        events = [first,
                  dict(first),  # the same event_id again: a duplicate
                  good_event(device=dev, ts=fmt_ts(now - 1800)),  # late, within 1 h
                  good_event(device=dev, ts=fmt_ts(now - 3 * 3600))]  # later than that
        self.assertStatus(self.post(events), 202, "engine counter batch")
        # The late event is also out of order; duplicates and too-late events are dropped
        # before that count.
        expected = {"duplicate": 1, "late": 1, "late_dropped": 1, "out_of_order": 1}

        def deltas():
            now_ = snapshot()
            return {k: now_[k] - before[k] for k in before}

        got = poll(lambda: (lambda d: d if d == expected else None)(deltas()), timeout=10)
        self.assertEqual(got or deltas(), expected, "engine counter deltas" + self.diag())
        # The state gauges, published every 10 s by each processor.

        def state():
            p = parse_prometheus(self.server.metrics_text())
            s = {k: metric_sum(p, f"joule_engine_{k}")
                 for k in ("devices", "open_windows", "state_bytes")}
            return s if s["devices"] >= 1 and s["open_windows"] >= 1 and s["state_bytes"] > 0 \
                else None

        self.assertIsNotNone(poll(state, timeout=25),
                             "joule_engine_{devices,open_windows,state_bytes}" + self.diag())

    def test_background_threads_run_at_background_nice(self):
        """server.background_nice (default 5): the processors and the archiver yield the CPU
        to the threads that acknowledge ingest; those stay at the server's own priority."""
        pid = self.server.proc.pid
        nice = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    comm = f.read().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue  # a thread that just ended
            nice.setdefault(comm, set()).add(int(fields[16]))  # field 19: nice
        own = os.getpriority(os.PRIO_PROCESS, pid)
        for comm in ("joule-proc-0", "joule-proc-1", "joule-archiver"):
            self.assertEqual(nice.get(comm), {min(19, own + 5)},
                             f"{comm}: {nice}")
        self.assertEqual(nice.get("joule-io-1"), {own}, str(nice))
        self.assertEqual(nice.get("joule"), {own}, str(nice))

    def test_metrics_format_and_probes(self):
        status, headers, body = self.server.request("GET", "/metrics")
        self.assertEqual(status, 200, self.diag())
        self.assertTrue(headers.get("content-type", "").startswith("text/plain"), headers)
        self.assertRegex(body, r"(?m)^joule_events_accepted_total[ {]")
        self.assertStatus(self.server.request("GET", "/healthz"), 200, "/healthz")
        self.assertStatus(self.server.request("GET", "/readyz"), 200, "/readyz")


class IngestAuthTest(JouleTestCase):
    server_env = {"JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": "secret"}

    def test_missing_and_unknown_token_are_401(self):
        ev = good_event()
        # The message says what to fix (found by a black-box test: all read "missing or
        # unknown token"), on ingest and on the read API alike.
        for label, headers, says in [
                ("missing", {}, "missing token: send 'Authorization: Bearer <token>'"),
                ("unknown", {"Authorization": "Bearer nope"}, "unknown token"),
                ("wrong scheme", {"Authorization": "Basic c2VjcmV0"}, "not a Bearer token"),
                ("no scheme", {"Authorization": "secret"}, "not a Bearer token"),
                ("empty bearer", {"Authorization": "Bearer "}, "not a Bearer token")]:
            with self.subTest(token=label):
                resp = self.server.post_events([ev], headers=headers)
                self.assertStatus(resp, 401, f"ingest with {label} token")
                body = resp[2]
                self.assertIsInstance(body, dict, f"401 body is a JSON error: {body!r}")
                self.assertIsInstance(body.get("error", {}).get("code"), str, body)
                self.assertIn(says, body["error"].get("message", ""), body)
                status, _, read = self.server.request("GET", "/v1/devices", headers=headers)
                self.assertEqual(status, 401, read)
                self.assertIn(says, read["error"].get("message", ""), read)

    def test_admin_token_can_ingest_and_read(self):
        auth = {"Authorization": "Bearer secret"}
        ev = good_event()
        # With auth required, an unregistered device is rejected per event (a deliberate
        # choice: only registered devices are ingested).
        resp = self.server.post_events([ev], headers=auth)
        self.assertStatus(resp, 400, "ingest for an unregistered device")
        self.assertEqual([e.get("code") for e in resp[2].get("errors", [])],
                         ["unknown_device"], resp[2])
        self.assertEqual(resp[2].get("accepted"), 0, resp[2])
        reg = self.server.request("POST", "/v1/devices",
                                  {"device_id": ev["device_id"], "owner_id": "ingest-owner"},
                                  headers=auth)
        self.assertStatus(reg, 201, "register the device")
        resp = self.server.post_events([ev], headers=auth)
        self.assertStatus(resp, 202, "ingest with admin token")
        self.assertEqual(resp[2].get("accepted"), 1, resp[2])
        self.assertStatus(self.server.realtime(ev["device_id"]), 401, "read without token")
        self.assertStatus(self.server.realtime(ev["device_id"],
                                               headers={"Authorization": "Bearer bad"}),
                          401, "read with unknown token")
        # The accepted event is processed (not just acknowledged): its window shows up.
        got = poll(lambda: (lambda r: r if r[0] == 200 and r[2].get("data") else None)(
            self.server.realtime(ev["device_id"], headers=auth)), timeout=5)
        self.assertTrue(got, "read with admin token" + self.diag())

    def test_admin_batch_of_unknown_devices_is_one_metadata_read(self):
        """Found by a black-box test: with PostgreSQL metadata, an admin batch naming
        thousands of unregistered device ids cost one query per id on the I/O thread (10,000
        ids: 1.2-1.4 s against a local server). The batch's devices are now asked together:
        the ids the metadata cache does not hold are one read (one PostgreSQL query),
        counted in joule_metadata_cache_device_reads_total; a device registered a moment
        later is accepted at once."""
        auth = {"Authorization": "Bearer secret"}

        def reads():
            return metric_sum(parse_prometheus(self.server.metrics_text()),
                              "joule_metadata_cache_device_reads_total")

        self.assertIn("joule_metadata_cache_device_reads_total", self.server.metrics_text())
        known = f"ing-{uid()}"
        self.assertStatus(self.server.request("POST", "/v1/devices",
                                              {"device_id": known, "owner_id": "o"},
                                              headers=auth), 201, "register a device")
        unknown = [f"unk-{uid()}-{i}" for i in range(3000)]
        body = [good_event(d) for d in unknown[:1500]] + [good_event(known)] + \
            [good_event(d) for d in unknown[1500:]] + [good_event(unknown[0])]
        before = reads()
        resp = self.server.post_events(body, headers=auth)
        self.assertStatus(resp, 202, "one registered device among 3000 unknown")
        self.assertEqual((resp[2]["accepted"], resp[2]["rejected"]), (1, 3001), resp[2]["errors"][:3])
        self.assertEqual({e["code"] for e in resp[2]["errors"]}, {"unknown_device"})
        self.assertEqual([e["index"] for e in resp[2]["errors"]],
                         [i for i in range(len(body)) if i != 1500])
        self.assertEqual(reads() - before, 1, "the batch's devices, read together")
        # Registered a moment later (within the cache's 2 s for "not found"): accepted.
        self.assertStatus(self.server.request("POST", "/v1/devices",
                                              {"device_id": unknown[7], "owner_id": "o"},
                                              headers=auth), 201, "register a device")
        resp = self.server.post_events([good_event(d) for d in unknown[:10]],
                                       headers=auth)
        self.assertStatus(resp, 202, "the device registered since")
        self.assertEqual(resp[2]["accepted"], 1, resp[2])
        self.assertEqual([e["index"] for e in resp[2]["errors"]],
                         [i for i in range(10) if i != 7])

    def test_rejections_by_authorization_keep_input_order_across_requests(self):
        # A body mixing accepted events, parse rejections and authorization rejections
        # (unknown device, another device's events for a device token): indices stay in input
        # order; the next request on the same connection/thread (the server reuses its parsed
        # events between requests) is answered for its own events only.
        auth = {"Authorization": "Bearer secret"}
        dev = f"ing-{uid()}"
        reg = self.server.request("POST", "/v1/devices", {"device_id": dev, "owner_id": "o"},
                                  headers=auth)
        self.assertStatus(reg, 201, "register the device")
        token = {"Authorization": "Bearer " + reg[2]["token"]}
        other = f"ing-{uid()}"
        body = [good_event(dev), good_event(other), without(good_event(dev), "metrics"),
                good_event(dev), good_event(f"ing-{uid()}"), good_event(dev)]
        resp = self.server.post_events(body, headers=auth)
        self.assertStatus(resp, 202, "mixed body, admin token")
        self.assertEqual(resp[2].get("accepted"), 3, resp[2])
        self.assertEqual([(e.get("index"), e.get("code")) for e in resp[2].get("errors", [])],
                         [(1, "unknown_device"), (2, "invalid_metrics"), (4, "unknown_device")],
                         resp[2])
        resp = self.server.post_events([good_event(other), good_event(dev)], headers=token)
        self.assertStatus(resp, 202, "device token, one foreign event")
        self.assertEqual(resp[2].get("accepted"), 1, resp[2])
        self.assertEqual([(e.get("index"), e.get("code")) for e in resp[2].get("errors", [])],
                         [(0, "forbidden")], resp[2])
        resp = self.server.post_events([good_event(other)], headers=token)
        self.assertStatus(resp, 403, "device token, only a foreign event")
        resp = self.server.post_events([good_event(dev)], headers=token)
        self.assertStatus(resp, 202, "device token, own event")
        self.assertEqual((resp[2].get("accepted"), resp[2].get("rejected")), (1, 0), resp[2])

    def test_refused_requests_are_counted(self):
        """Found by a black-box test (session 32): an owner key's ingest (403) was counted in
        no joule_events_rejected_total code. Every refusal of an ingest request is counted
        now, one per request refused as a whole: an owner key as `forbidden`, a missing or
        unknown token as `unauthorized` — with a body (refused before it is read) or
        without one."""
        auth = {"Authorization": "Bearer secret"}
        st, _, key = self.server.request("POST", f"/v1/owners/own-{uid()}/keys", {}, headers=auth)
        self.assertEqual(st, 201, key)
        owner = {"Authorization": "Bearer " + key["key"]}

        def counts():
            p = parse_prometheus(self.server.metrics_text())
            return {code: metric_sum(p, "joule_events_rejected_total", code=code)
                    for code in ("forbidden", "unauthorized")}

        before = counts()
        self.assertStatus(self.server.post_events([good_event(), good_event()], headers=owner),
                          403, "owner key with a body")
        self.assertStatus(self.server.request("POST", "/v1/telemetry", headers=owner), 403,
                          "owner key without a body")
        self.assertStatus(self.server.post_events([good_event()]), 401, "no token, a body")
        self.assertStatus(self.server.request("POST", "/v1/telemetry",
                                              headers={"Authorization": "Bearer nope"}),
                          401, "unknown token, no body")
        after = counts()
        self.assertEqual({k: after[k] - before[k] for k in before},
                         {"forbidden": 2, "unauthorized": 2}, self.diag())

    def test_probes_need_no_token(self):
        self.assertStatus(self.server.request("GET", "/healthz"), 200, "/healthz")
        self.assertStatus(self.server.request("GET", "/readyz"), 200, "/readyz")


if __name__ == "__main__":
    unittest.main()
