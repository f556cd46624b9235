"""Redis and PostgreSQL stopped for 30 s each, overlapping, under continuous ingest
(issue 10.5: "nothing lost, lag recovers").

Joule runs with PostgreSQL metadata (device tokens) and the Redis latest store, both
private servers this test owns. Two client threads post telemetry with device tokens
continuously and keep an oracle of every acknowledged event (a request that fails is
re-sent with the same event_ids until it is acknowledged). Timeline:

    t = 0 s    redis-server SIGSTOPped (answers nothing: every call times out)
    t = 10 s   PostgreSQL stopped (pg_ctl stop -m fast: the server is gone)
    t = 30 s   redis-server SIGCONT
    t = 40 s   PostgreSQL started again

During the outage /readyz answers 200 "degraded" (latest down, metadata down), ingest
goes on (tokens from the metadata cache), realtime reads come from history, cached device
reads are served, and requests that need the database fail cleanly with 503
"unavailable" + Retry-After — also telemetry with a token the cache has never seen (it
cannot be checked; not a 401). After it, lag returns to 0, /readyz is "ready" again, and every 1m window
of history, the Redis latest hash and window keys and the latest reading equal what the
oracle of acknowledged events says: nothing lost, nothing counted twice.

The numbers (events acknowledged during each outage, catch-up times) are printed on a
line `faults: store_outage: …` and recorded in docs/RELIABILITY.md.
"""

import json
import pathlib
import sys
import threading
import time
import unittest
import urllib.parse
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from joule_harness import (JouleServer, PrivateRedis, ServerError, fmt_ts,  # noqa: E402
                           metric_sum, minute_base, parse_prometheus, parse_ts, poll)
from joule_reference import diff_record, expected_records  # noqa: E402
from test_outages import PrivatePostgres, history_1m, register_cached_devices  # noqa: E402

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OUTAGE_S = 30.0
PG_OFFSET_S = 10.0          # PostgreSQL goes down this long after Redis
EVENT_SECONDS_PER_S = 30.0  # event time advances 30x faster than wall time
DEVICES = 4
EVENTS_PER_POST = 4


def q(v):
    return urllib.parse.quote(v, safe="")


class StoreOutageTest(unittest.TestCase):

    def test_redis_and_postgres_down_30s_each_nothing_lost(self):
        self.pg = PrivatePostgres()
        self.addCleanup(self.pg.cleanup)
        self.redis = PrivateRedis().start()
        self.addCleanup(self.redis.cleanup)
        self.server = JouleServer(env={
            "JOULE_STREAM_OUT_OF_ORDERNESS": "1s", "JOULE_STREAM_IDLE_TIMEOUT": "2s",
            "JOULE_STREAM_EARLY_FIRE_INTERVAL": "1s",
            "JOULE_AUTH_MODE": "required", "JOULE_AUTH_ADMIN_TOKEN": ADMIN_TOKEN,
            "JOULE_METADATA_BACKEND": "postgres", "JOULE_METADATA_URL": self.pg.url,
            "JOULE_LATEST_BACKEND": "redis", "JOULE_LATEST_URL": self.redis.url,
            "JOULE_LIMITS_REQUESTS_PER_SECOND": "0",
            "JOULE_LIMITS_DEVICE_EVENTS_PER_SECOND": "0"}, name="store-outage")
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.run_outages()

    # ------------------------------------------------------------------ helpers

    def readyz(self):
        st, _, body = self.server.request("GET", "/readyz")
        self.assertEqual(st, 200, f"{body!r}" + self.server.diag())
        return body

    def lag(self):
        return metric_sum(parse_prometheus(self.server.metrics_text()),
                          "joule_processor_lag_records")

    # ------------------------------------------------------------------ the run

    def run_outages(self):
        server = self.server
        owner = f"home-{uuid.uuid4().hex[:8]}"
        tokens = register_cached_devices(self, server, owner, "so", DEVICES, ADMIN)
        devices = list(tokens)
        # A device whose token is never used before the outage: the cache does not hold it.
        spare = f"spare-{uuid.uuid4().hex[:8]}"
        st, _, body = server.request("POST", "/v1/devices",
                                     {"device_id": spare, "owner_id": owner}, ADMIN)
        self.assertEqual(st, 201, body)
        spare_auth = {"Authorization": f"Bearer {body['token']}"}
        base = minute_base(60)
        t0 = time.monotonic()
        acked = {d: {} for d in devices}   # device → {event time: metrics}
        lock = threading.Lock()
        phase = ["before"]                 # which outage an acknowledgement fell into
        acked_in = {}                      # phase → events acknowledged
        sends = [0]
        resends = [0]
        stop = threading.Event()
        errors = []

        def client(devs):
            last_t = {d: base for d in devs}
            seq = {d: 0 for d in devs}
            try:
                while not stop.is_set():
                    for d in devs:
                        events = []
                        for _ in range(EVENTS_PER_POST):
                            t = max(last_t[d] + 0.25,
                                    base + (time.monotonic() - t0) * EVENT_SECONDS_PER_S)
                            t = round(t, 3)
                            last_t[d] = t
                            seq[d] += 1
                            events.append({"device_id": d, "event_id": f"{d}-{seq[d]}",
                                           "timestamp": fmt_ts(t),
                                           "metrics": {"power_w": 40.0 + seq[d] % 23,
                                                       "voltage_v": 228.0 + seq[d] % 5}})
                        for attempt in range(200):
                            if attempt:
                                with lock:
                                    resends[0] += 1
                                time.sleep(0.2)
                            with lock:
                                sends[0] += 1
                            try:
                                st, _, body = server.post_events(
                                    events, {"Authorization": f"Bearer {tokens[d]}"})
                            except ServerError:
                                continue
                            if st == 202 and body.get("accepted") == len(events):
                                with lock:
                                    for e in events:
                                        acked[d][parse_ts(e["timestamp"])] = e["metrics"]
                                    acked_in[phase[0]] = acked_in.get(phase[0], 0) + len(events)
                                break
                        else:
                            errors.append(f"{d}: not acknowledged after 200 sends")
                            return
                    time.sleep(0.02)
            except Exception as e:  # noqa: BLE001 — reported by the main thread
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(devices[i::2],), daemon=True)
                   for i in range(2)]
        for th in threads:
            th.start()
        try:
            self.assertTrue(poll(lambda: min(len(a) for a in acked.values()) >= 40,
                                 timeout=30), f"warm-up ingest {errors}" + server.diag())
            self.assertTrue(poll(lambda: self.lag() == 0, timeout=30), server.diag())
            self.assertEqual(self.readyz()["status"], "ready")

            # --- t = 0: Redis stops answering.
            self.redis.pause()
            t_out = time.monotonic()
            phase[0] = "redis_only"
            self.assertTrue(poll(lambda: self.readyz()["latest"]["state"] == "down",
                                 timeout=15), "Redis outage seen" + server.diag())
            body = self.readyz()
            self.assertEqual(body["status"], "degraded", body)
            self.assertEqual(body["metadata"]["state"], "up", body)

            # --- t = 10 s: PostgreSQL goes away too.
            time.sleep(max(0.0, t_out + PG_OFFSET_S - time.monotonic()))
            self.pg.stop()
            phase[0] = "both"
            self.assertTrue(poll(lambda: self.readyz()["metadata"]["state"] == "down",
                                 timeout=10), "PostgreSQL outage seen" + server.diag())
            body = self.readyz()
            self.assertEqual(body["status"], "degraded", body)
            self.assertEqual(body["latest"]["state"], "down", body)
            # What needs metadata while the database is down (docs/RELIABILITY.md):
            # cached device reads are served, anything the cache does not hold is 503.
            st, _, body = server.request("GET", f"/v1/devices/{q(devices[0])}", headers=ADMIN)
            self.assertEqual(st, 200, body)
            self.assertEqual(body["device"]["owner_id"], owner)
            for method, path, payload in (
                    ("POST", "/v1/devices", {"device_id": "late-dev", "owner_id": owner}),
                    ("GET", "/v1/devices/not-cached-dev", None),
                    ("GET", f"/v1/devices?owner_id={q(owner)}", None)):
                st, hdrs, body = server.request(method, path, payload, ADMIN)
                self.assertEqual(st, 503, f"{method} {path}: {body!r}")
                self.assertEqual(body["error"]["code"], "unavailable", body)
            # A token the cache never saw cannot be checked: 503 (retry), not 401.
            spare_event = [{"device_id": spare, "timestamp": fmt_ts(base + 5),
                            "metrics": {"power_w": 1.0}}]
            st, hdrs, body = server.post_events(spare_event, spare_auth)
            self.assertEqual((st, body["error"]["code"]), (503, "unavailable"), body)
            self.assertIn("retry-after", hdrs)
            st, _, rt = server.realtime(devices[0], headers=ADMIN)
            self.assertEqual(st, 200, rt)
            self.assertEqual(rt["source"], "history", rt)
            before = sum(len(a) for a in acked.values())
            self.assertTrue(poll(lambda: sum(len(a) for a in acked.values()) > before + 50,
                                 timeout=15), "ingest goes on with both stores down"
                            + server.diag())

            # --- t = 30 s: Redis back.
            time.sleep(max(0.0, t_out + OUTAGE_S - time.monotonic()))
            self.redis.resume()
            t_redis_back = time.monotonic()
            phase[0] = "pg_only"
            self.assertTrue(poll(lambda: self.readyz()["latest"]["state"] == "up",
                                 timeout=60, interval=0.1), "Redis caught up" + server.diag())
            redis_catchup_s = time.monotonic() - t_redis_back
            self.assertEqual(self.readyz()["status"], "degraded", "PostgreSQL is still down")

            # --- t = 40 s: PostgreSQL back.
            time.sleep(max(0.0, t_out + PG_OFFSET_S + OUTAGE_S - time.monotonic()))
            self.pg.start()
            t_pg_back = time.monotonic()
            phase[0] = "after"
            self.assertTrue(poll(lambda: self.readyz()["metadata"]["state"] == "up",
                                 timeout=30, interval=0.1), "PostgreSQL seen back" + server.diag())
            pg_back_s = time.monotonic() - t_pg_back
            new_dev = f"new-{uuid.uuid4().hex[:8]}"
            self.assertTrue(poll(lambda: server.request(
                "POST", "/v1/devices", {"device_id": new_dev, "owner_id": owner},
                ADMIN)[0] == 201, timeout=30, interval=0.2), "register after" + server.diag())
            st, _, body = server.post_events(spare_event, spare_auth)
            self.assertEqual(st, 202, body)
            after = sum(len(a) for a in acked.values())
            self.assertTrue(poll(lambda: sum(len(a) for a in acked.values()) > after + 50,
                                 timeout=15), server.diag())
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=60)
        self.assertEqual(errors, [], "every batch was acknowledged in the end")

        t_stop = time.monotonic()
        self.assertTrue(poll(lambda: self.lag() == 0 and self.readyz()["status"] == "ready",
                             timeout=60, interval=0.1), "lag 0 and ready" + server.diag())
        drain_s = time.monotonic() - t_stop

        # Every acknowledged event counted exactly once: history equals the oracle, window
        # by window, and Redis holds exactly the final history records.
        lost = duplicated = 0
        total = sum(len(a) for a in acked.values())
        problems = []
        for d in devices:
            last_t = max(acked[d])
            ok = poll(lambda d=d, last_t=last_t: (lambda h: h and all(r["final"] for r in h)
                                                  and parse_ts(h[-1]["window_end"]) > last_t)(
                history_1m(server, d, base, last_t + 60, ADMIN)), timeout=60, interval=0.3)
            self.assertTrue(ok, f"{d}: every window final" + server.diag())
            records = history_1m(server, d, base, last_t + 60, ADMIN)
            got = {parse_ts(r["window_start"]): r for r in records}
            ref = expected_records(sorted(acked[d].items()))
            counted = sum(r["count"] for r in records)
            lost += max(0, len(acked[d]) - counted)
            duplicated += max(0, counted - len(acked[d]))
            for ws, exp in sorted(ref.items()):
                problems += diff_record(got.get(ws), exp, f"{d}@{fmt_ts(ws)}")
            extra = sorted(set(got) - set(ref))
            if extra:
                problems.append(f"{d}: windows without events: {extra[:5]}")
            expected = {r["window_start"]: r for r in records}

            def redis_equals(d=d, expected=expected):
                flat = self.redis.cli("HGETALL", f"agg:device:{d}:latest").split("\n")
                return {k: json.loads(v) for k, v in zip(flat[0::2], flat[1::2])
                        if k} == expected
            if not poll(redis_equals, timeout=20, interval=0.3):
                problems.append(f"{d}: Redis latest hash differs from history")
            for ws, r in expected.items():
                if json.loads(self.redis.cli("GET", f"agg:device:{d}:window:{ws}")) != r:
                    problems.append(f"{d}: Redis window {ws} differs from history")
            reading = json.loads(self.redis.cli("GET", f"agg:device:{d}:reading"))
            if (parse_ts(reading["timestamp"]), reading["metrics"]) != (last_t, acked[d][last_t]):
                problems.append(f"{d}: Redis reading {reading} is not the last event")
        m = parse_prometheus(server.metrics_text())
        print(f"faults: store_outage: acknowledged={total} lost={lost} duplicated={duplicated} "
              f"acked_redis_only={acked_in.get('redis_only', 0)} "
              f"acked_both_down={acked_in.get('both', 0)} "
              f"acked_pg_only={acked_in.get('pg_only', 0)} sends={sends[0]} "
              f"resends={resends[0]} redis_catchup_s={redis_catchup_s:.2f} "
              f"pg_seen_back_s={pg_back_s:.2f} drain_after_ingest_s={drain_s:.2f} "
              f"deferred={metric_sum(m, 'joule_latest_deferred_total'):.0f} "
              f"catchup_written={metric_sum(m, 'joule_latest_catchup_written_total'):.0f}",
              flush=True)
        self.assertEqual((lost, duplicated), (0, 0))
        self.assertFalse(problems, "\n".join(problems[:20]) + server.diag())
        self.assertGreater(acked_in.get("redis_only", 0), 0)
        self.assertGreater(acked_in.get("both", 0), 0)
        self.assertGreater(acked_in.get("pg_only", 0), 0)
        self.assertGreaterEqual(metric_sum(m, "joule_latest_outages_total"), 1)
        self.assertGreater(metric_sum(m, "joule_latest_deferred_total"), 0)


if __name__ == "__main__":
    unittest.main()
