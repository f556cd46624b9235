"""GET /v1/devices/{id}/metrics/realtime against the real binary: CONTRACT section 2
records checked value by value against joule_reference, finality by watermark and by idle
timeout, late updates (version + 1), de-duplication, "latest", 404, graceful SIGTERM and
restart (log replay keeps the aggregates)."""

import signal
import time
import unittest
import uuid

from joule_harness import (JouleTestCase, JouleServer, fmt_ts, fmt_ts_offset, minute_base,
                           parse_ts, poll)
from joule_reference import diff_record, expected_records

META = {"firmware": "1.0.3", "location": "kitchen"}

# (seconds after base, power_w, voltage_v, energy_wh). Intervals 55->70 and 115->130 cross a
# minute boundary (energy and counter increments split by linear interpolation); 10->25 is
# counter noise (1001 < 1002, within 10%: increment 0, baseline stays 1002); 70->90 is a
# counter reset (5 < 0.9 * 1011: increment 5, resets 1).
SCENARIO = [
    (0, 100.0, 229.0, 1000.0),
    (10, 120.0, 230.0, 1002.0),
    (25, 80.0, 231.0, 1001.0),
    (40, 200.0, 229.5, 1004.0),
    (55, 150.0, 230.5, 1005.0),
    (70, 60.0, 228.0, 1011.0),
    (90, 0.0, 232.0, 5.0),
    (115, 300.0, 230.0, 7.0),
    (130, 240.0, 229.0, 10.0),
    (150, 100.0, 231.0, 12.0),
]
# Moves the watermark (out_of_orderness 1s) past the end of the window [120, 180).
LATER = (182, 50.0, 230.0, 13.0)
# Moves the watermark past LATER itself. A window is final once the watermark has passed
# its end AND the power/counter interval across its end is known (its next sample is
# sealed, or max_gap has passed) — src/stream/README.md "When is a window final?". So
# [120, 180) becomes final once the sample at +182 is sealed, i.e. after this event.
NUDGE = (184, 55.0, 230.5, 13.1)


def uid():
    return uuid.uuid4().hex[:10]


def make_event(device, base, row, i):
    off, p, v, e = row
    t = base + off
    style = i % 3
    if style == 0:
        ts = fmt_ts(t)
    elif style == 1:
        ts = fmt_ts_offset(t, 60)
    else:
        ts = int(round(t * 1000))
    ev = {"device_id": device, "timestamp": ts,
          "metrics": {"power_w": p, "voltage_v": v, "energy_wh": e}, "meta": META}
    if i % 4 != 3:  # some events rely on (device_id, timestamp) identity
        ev["event_id"] = f"{device}-{off}"
    return ev


def samples_of(base, rows):
    return [(base + off, {"power_w": p, "voltage_v": v, "energy_wh": e})
            for off, p, v, e in rows]


class RealtimeChecks:
    """Mixin with polling comparison helpers; needs self.server."""

    def fetch(self, device, windows=200):
        status, _, body = self.server.realtime(device, windows)
        return status, body

    def record_problems(self, device, body, expected, finals=None, versions=None,
                        exact_set=True):
        """expected: {window_start_epoch: reference record}; finals/versions: {ws: value}."""
        problems = []
        if not isinstance(body, dict):
            return [f"body is not an object: {body!r}"]
        if body.get("device_id") != device:
            problems.append(f"device_id {body.get('device_id')!r}")
        # The latest store ("memory", or "redis" with JOULE_IT_STORES=postgres+redis)
        # normally; "history" right after a restart, when the in-memory latest store is
        # empty and the realtime API answers from history (CONTRACT §3, issue 4).
        expected_sources = (self.server.latest_backend, "history")
        if body.get("source") not in expected_sources:
            problems.append(f"source {body.get('source')!r} (expected one of "
                            f"{expected_sources})")
        if not isinstance(body.get("device"), dict):
            problems.append(f"device {body.get('device')!r} is not an object")
        data = body.get("data")
        if not isinstance(data, list):
            return problems + [f"data is not a list: {data!r}"]
        by_ws = {}
        starts = []
        for r in data:
            try:
                ws = parse_ts(r.get("window_start"))
                we = parse_ts(r.get("window_end"))
            except (ValueError, AttributeError) as e:
                problems.append(f"bad window bounds in {r!r}: {e}")
                continue
            starts.append(ws)
            if ws in by_ws:
                problems.append(f"window {r.get('window_start')} listed twice")
            by_ws[ws] = r
            if we - ws != 60:
                problems.append(f"{r.get('window_start')}: window_end {r.get('window_end')}")
            if r.get("resolution") != "1m":
                problems.append(f"{r.get('window_start')}: resolution {r.get('resolution')!r}")
            if r.get("device_id") != device:
                problems.append(f"{r.get('window_start')}: device_id {r.get('device_id')!r}")
        if starts != sorted(starts, reverse=True):
            problems.append(f"data not newest first: {[fmt_ts(s) for s in starts]}")
        if exact_set and set(by_ws) != set(expected):
            problems.append(f"windows: got {sorted(fmt_ts(s) for s in by_ws)}, expected "
                            f"{sorted(fmt_ts(s) for s in expected)}")
        for ws, exp in sorted(expected.items()):
            label = fmt_ts(ws)
            got = by_ws.get(ws)
            problems += diff_record(got, exp, label)
            if got is None:
                continue
            if finals and ws in finals and got.get("final") is not finals[ws]:
                problems.append(f"{label}.final: got {got.get('final')!r}, expected "
                                f"{finals[ws]}")
            if versions and ws in versions and got.get("version") != versions[ws]:
                problems.append(f"{label}.version: got {got.get('version')!r}, expected "
                                f"{versions[ws]}")
        return problems

    def await_records(self, device, expected, finals=None, versions=None, timeout=10,
                      exact_set=True, what=""):
        state = {}

        def attempt():
            status, body = self.fetch(device)
            if status != 200:
                state["problems"] = [f"HTTP {status}: {body!r}"]
                return False
            state["body"] = body
            state["problems"] = self.record_problems(device, body, expected, finals, versions,
                                                     exact_set)
            return not state["problems"]

        ok = poll(attempt, timeout=timeout, interval=0.2)
        # A soft check: the failure is recorded and the scenario goes on, so one bug does not
        # hide the results of the later stages.
        with self.subTest(check=what):
            if not ok:
                self.fail(f"{what}: realtime records differ after {timeout}s:\n  " +
                          "\n  ".join(state.get("problems", [])) + self.diag())
        return state.get("body") or {}

    @staticmethod
    def final_versions(body):
        """{window_start: version} of the windows that are final in a realtime body."""
        out = {}
        for r in (body or {}).get("data", []):
            if r.get("final") is True:
                out[parse_ts(r["window_start"])] = r.get("version")
        return out

    def post_ok(self, events, what="post"):
        status, _, body = self.server.post_events(events)
        self.assertEqual(status, 202, f"{what}: {body!r}" + self.diag())
        self.assertEqual(body.get("rejected"), 0, f"{what}: {body!r}")
        return body


class ReferenceSelfTest(unittest.TestCase):
    def test_reference_self_check(self):
        """The reference implementation agrees with values computed by hand."""
        exp = expected_records(samples_of(0, SCENARIO + [LATER]))
        w0, w1, w2 = exp[0], exp[60], exp[120]
        # W0 energy: 1100 + 1500 + 2100 + 2625 + (150 + 120) / 2 * 5 = 8000 W*s.
        self.assertAlmostEqual(w0["metrics"]["power_w"]["energy_wh"], 8000 / 3600)
        self.assertAlmostEqual(w0["metrics"]["power_w"]["coverage"], 1.0)
        self.assertAlmostEqual(w0["metrics"]["energy_wh"]["delta"], 7.0)  # 2+0+2+1 + 6*5/15
        self.assertAlmostEqual(w1["metrics"]["energy_wh"]["delta"], 12.0)  # 4+5+2+3*5/15
        self.assertEqual(w1["metrics"]["energy_wh"]["resets"], 1)
        self.assertAlmostEqual(w2["metrics"]["energy_wh"]["delta"], 4.0 + 1 * 30 / 32)
        self.assertEqual(w2["count"], 2)


class RealtimeTest(RealtimeChecks, JouleTestCase):
    # Finality must come from the watermark here, not from the idle timer.
    server_env = {"JOULE_STREAM_IDLE_TIMEOUT": "120s"}

    def test_unknown_device_is_404(self):
        status, body = self.fetch(f"never-seen-{uid()}")
        self.assertEqual(status, 404, f"{body!r}" + self.diag())
        self.assertEqual(body.get("error", {}).get("code"), "not_found", body)
        self.assertIsInstance(body["error"].get("message"), str, body)

    def test_windows_value_by_value(self):
        dev = f"rt-{uid()}"
        base = minute_base(4)
        rows = SCENARIO
        events = [make_event(dev, base, r, i) for i, r in enumerate(rows)]
        # Three requests, one per minute, in event-time order.
        self.post_ok(events[:5], "minute 0")
        self.post_ok(events[5:8], "minute 1")
        self.post_ok(events[8:], "minute 2")
        w0, w1, w2, w3 = base, base + 60, base + 120, base + 180

        # Stage 1: watermark = base+149 s: [w0, w1) final, w2 open (partial, final false).
        exp = expected_records(samples_of(base, rows))
        self.assertEqual(sorted(exp), [w0, w1, w2])
        body = self.await_records(dev, exp, finals={w0: True, w1: True, w2: False},
                                  what="stage 1")
        if body.get("data"):
            self.assertIs(body["data"][0].get("final"), False,
                          "the open window is listed first")

        # Stage 2: events at +182 s and +184 s move the watermark to +183 s: past w2's end,
        # and past the sample at +182 s that settles the interval across it.
        later = make_event(dev, base, NUDGE, 0)
        self.post_ok([make_event(dev, base, LATER, 1), later], "later events")
        exp = expected_records(samples_of(base, rows + [LATER, NUDGE]))
        self.assertEqual(sorted(exp), [w0, w1, w2, w3])
        body = self.await_records(dev, exp, finals={w0: True, w1: True, w2: True, w3: False},
                                  what="stage 2 (watermark past the end of w2)")

        # "latest" is the last reading, timestamps normalised to UTC milliseconds.
        with self.subTest(check="latest"):
            latest = body.get("latest") or {}
            self.assertEqual(latest.get("timestamp"), fmt_ts(base + NUDGE[0]), latest)
            self.assertEqual(latest.get("metrics"), later["metrics"], latest)
            self.assertEqual(latest.get("meta"), META, latest)
            received = parse_ts(latest.get("received_at"))
            self.assertLess(abs(received - time.time()), 60, latest)

        # windows=N returns the N newest windows.
        with self.subTest(check="windows=2"):
            status, small = self.fetch(dev, windows=2)
            self.assertEqual(status, 200, small)
            self.assertEqual([parse_ts(r["window_start"]) for r in small["data"]], [w3, w2],
                             small)

        # Stage 3: a late event (within allowed_lateness) updates final w0: it is re-emitted
        # with version + 1; the other final windows are untouched.
        before = self.final_versions(body)
        late = {"device_id": dev, "timestamp": fmt_ts(base + 30),
                "metrics": {"voltage_v": 240.0}, "event_id": f"{dev}-late"}
        self.post_ok([late], "late event")
        all_samples = (samples_of(base, rows + [LATER, NUDGE]) +
                       [(base + 30, {"voltage_v": 240.0})])
        exp = expected_records(all_samples)
        self.assertEqual(exp[w0]["count"], 6)
        versions = dict(before)
        if w0 in before:
            versions[w0] = before[w0] + 1
        body = self.await_records(dev, exp, finals={w0: True, w1: True, w2: True, w3: False},
                                  versions=versions, what="stage 3 (late update)")

        # Stage 4: re-sent copies (same event_id, or same timestamp without event_id) are
        # dropped: no count changes and no re-emission of final windows. A fresh event in w3
        # afterwards is the sync point.
        before = self.final_versions(body)
        status, _, resp = self.server.post_events(
            events + [make_event(dev, base, LATER, 1), later, late])
        self.assertIn(status, (202, 400), f"duplicates: {resp!r}" + self.diag())
        marker = {"device_id": dev, "timestamp": fmt_ts(base + 190),
                  "metrics": {"voltage_v": 225.0}, "event_id": f"{dev}-marker"}
        self.post_ok([marker], "marker")
        exp = expected_records(all_samples + [(base + 190, {"voltage_v": 225.0})])
        self.await_records(dev, exp, finals={w0: True, w1: True, w2: True, w3: False},
                           versions={w: v for w, v in before.items() if w != w3},
                           what="stage 4 (duplicates dropped)")

    def test_final_once_the_interval_across_the_end_is_known(self):
        """A window is final when the watermark has passed its end and the power/counter
        interval across its end is known (src/stream/README.md). A gauge-only event past
        the end moves the watermark but does not settle the power interval, so [120, 180)
        stays open; a power sample after the end, once sealed, makes it final."""
        dev = f"wm-{uid()}"
        base = minute_base(4)
        rows = SCENARIO
        self.post_ok([make_event(dev, base, r, i) for i, r in enumerate(rows)], "scenario")
        gauge = {"device_id": dev, "timestamp": fmt_ts(base + 182),
                 "metrics": {"voltage_v": 226.0}, "event_id": f"{dev}-gauge"}
        self.post_ok([gauge], "gauge-only event at +182 s")
        samples = samples_of(base, rows) + [(base + 182, {"voltage_v": 226.0})]
        self.await_records(dev, expected_records(samples),
                           finals={base: True, base + 60: True, base + 120: False,
                                   base + 180: False},
                           what="power interval across 180 s not yet known")
        power = (186, 90.0, 230.0, 13.0)
        marker = {"device_id": dev, "timestamp": fmt_ts(base + 190),
                  "metrics": {"voltage_v": 227.0}, "event_id": f"{dev}-marker"}
        self.post_ok([make_event(dev, base, power, 99), marker], "power at +186 s, gauge +190 s")
        samples += samples_of(base, [power]) + [(base + 190, {"voltage_v": 227.0})]
        self.await_records(dev, expected_records(samples),
                           finals={base: True, base + 60: True, base + 120: True,
                                   base + 180: False},
                           what="watermark +189 s past the sealed sample at +186 s")

    def test_duplicate_response_is_202(self):
        """A retried request whose events are all already stored is still a success."""
        dev = f"dup-{uid()}"
        base = minute_base(3)
        events = [make_event(dev, base, r, i) for i, r in enumerate(SCENARIO[:3])]
        self.post_ok(events, "first copy")
        status, _, body = self.server.post_events(events)
        self.assertEqual(status, 202, f"retry of an acknowledged batch: {body!r}" + self.diag())

    def test_a_dropped_duplicate_is_not_the_latest_reading(self):
        """The first copy of an event wins (CONTRACT §1): a later copy with the same
        event_id (other time, other value) or the same time (no event_id) is dropped by the
        engine, and does not become the latest reading either (found by black-box tests)."""
        for with_id in (True, False):
            dev = f"dupr-{uid()}"
            t = time.time() - 5
            first = {"device_id": dev, "timestamp": fmt_ts(t), "metrics": {"power_w": 1111.0}}
            later = dict(first, metrics={"power_w": 2222.0})
            if with_id:
                first["event_id"] = later["event_id"] = f"x-{uid()}"
                later["timestamp"] = fmt_ts(t + 1)
            self.post_ok([first], "first copy")
            self.post_ok([later], "later copy")
            got = poll(lambda: (lambda b: b if b.get("latest") and
                                b["data"] and b["data"][0]["count"] >= 1 else None)(
                self.fetch(dev)[1]), timeout=10)
            self.assertTrue(got, self.diag())
            # both processed: the engine counted the later copy as a duplicate
            self.assertTrue(poll(lambda: self.server.request(
                "GET", f"/v1/devices/{dev}/health")[2].get("duplicates") == 1, timeout=10),
                self.diag())
            st, body = self.fetch(dev)
            self.assertEqual(body["latest"]["metrics"], {"power_w": 1111.0},
                             f"event_id={with_id}: {body['latest']}")
            self.assertEqual(body["latest"]["timestamp"], first["timestamp"])

    def test_gaps_and_empty_windows(self):
        """Power intervals longer than max_gap (300s) count nothing; counters bridge the gap
        into the later sample's window; a window inside a counted interval with no sample
        gets a count-0 record with its share of energy."""
        dev = f"gap-{uid()}"
        base = minute_base(15)
        rows = [
            (0, 100.0, 230.0, 500.0),
            (30, 200.0, 230.0, 501.0),
            (430, 300.0, 230.0, 510.0),   # 400 s gap: no energy, counter +9 in [420, 480)
            (450, 100.0, 230.0, 512.0),
            (600, 50.0, 230.0, 515.0),    # 150 s: [480, 540) has no sample, coverage 1
            (700, 50.0, 230.0, 516.0),
            (705, 50.0, 230.0, 516.1),    # seals +700 s: the interval across 660 s is known
        ]
        self.post_ok([make_event(dev, base, r, i) for i, r in enumerate(rows)], "gap rows")
        exp = expected_records(samples_of(base, rows))
        self.assertEqual(sorted(w - base for w in exp), [0, 420, 480, 540, 600, 660])
        self.assertEqual(exp[base + 480]["count"], 0)
        self.assertAlmostEqual(exp[base + 480]["metrics"]["power_w"]["coverage"], 1.0)
        self.assertAlmostEqual(exp[base + 420]["metrics"]["energy_wh"]["delta"], 9 + 2 + 0.6)
        self.assertAlmostEqual(exp[base]["metrics"]["power_w"]["coverage"], 0.5)
        finals = {w: True for w in exp if w < base + 660}
        finals[base + 660] = False
        self.await_records(dev, exp, finals=finals, what="gap scenario")


class IdleTimeoutTest(RealtimeChecks, JouleTestCase):
    server_env = {"JOULE_STREAM_IDLE_TIMEOUT": "2s"}

    def test_silent_device_is_finalized_by_idle_timeout(self):
        dev = f"idle-{uid()}"
        base = minute_base(3)
        rows = [(5, 10.0, 230.0, 100.0), (20, 20.0, 231.0, 101.0), (40, 30.0, 229.0, 103.0)]
        t_post = time.monotonic()
        self.post_ok([make_event(dev, base, r, i) for i, r in enumerate(rows)])
        exp = expected_records(samples_of(base, rows))
        # Watermark = base+39 s: the window is open until the idle timer fires. (The realtime
        # view is updated asynchronously after the 202, so wait for the device to appear.)
        got = poll(lambda: (lambda r: r if r[0] == 200 else None)(self.fetch(dev)), timeout=5,
                   interval=0.05)
        self.assertTrue(got, "device visible in realtime" + self.diag())
        status, body = got
        if time.monotonic() - t_post < 1.5 and body.get("data"):
            self.assertIs(body["data"][0].get("final"), False,
                          "finalized before idle_timeout with the watermark inside the window")
        self.await_records(dev, exp, finals={base: True}, timeout=10,
                           what="idle finalization")


    def test_lateness_after_idle_is_measured_from_the_own_watermark(self):
        """After idle_timeout of silence the device's watermark is still its latest event
        time − out_of_orderness (CONTRACT §2) and allowed_lateness (1h) is measured from it:
        an event in the out_of_orderness band just above the bound is applied (found by a
        black-box test: the idle finalization raised the watermark to the latest event, and
        such an event was dropped as too late)."""
        dev = f"idle-late-{uid()}"
        t0 = float(int(time.time()) - 3700)
        ev = lambda t, v: {"device_id": dev, "timestamp": fmt_ts(t), "metrics": {"temp_c": v}}
        self.post_ok([ev(t0, 1.0), ev(t0 + 3660, 1.0)])
        # Idle finalization: the latest event's window is final.
        last_ws = t0 + 3660 - (t0 + 3660) % 60
        self.assertTrue(poll(lambda: any(
            parse_ts(r["window_start"]) == last_ws and r.get("final") is True
            for r in (self.fetch(dev)[1] or {}).get("data") or []), timeout=10), self.diag())
        health = lambda: self.server.request("GET", f"/v1/devices/{dev}/health")[2]
        self.assertEqual(parse_ts(health()["watermark"]), t0 + 3659, self.diag())
        # Watermark − allowed_lateness = t0 + 59: t0 + 59.5 is in bound.
        self.post_ok([ev(t0 + 59.5, 100.0)])
        self.assertTrue(poll(lambda: health().get("late_updates") == 1, timeout=10),
                        f"{health()}" + self.diag())
        self.assertEqual(health().get("late_dropped"), 0)


class RestartTest(RealtimeChecks, JouleTestCase):
    server_env = {"JOULE_STREAM_IDLE_TIMEOUT": "2s"}

    def test_sigterm_exit_code_and_restart_keeps_aggregates(self):
        dev = f"restart-{uid()}"
        base = minute_base(5)
        rows = SCENARIO + [LATER]
        events = [make_event(dev, base, r, i) for i, r in enumerate(rows)]
        # Live, the open window [120 s, 180 s) is published, then updated by the event at
        # +182 s, then finalized: its version moves on before the restart.
        self.post_ok(events[:5], "before restart, minute 0")
        self.post_ok(events[5:8], "before restart, minute 1")
        self.post_ok(events[8:10], "before restart, minute 2")
        self.await_records(dev, expected_records(samples_of(base, SCENARIO)),
                           finals={base: True, base + 60: True}, what="before restart, open w2")
        self.post_ok(events[10:], "before restart, +182 s")
        exp = expected_records(samples_of(base, rows))
        # Windows that end before the last event are final by the watermark (the last one,
        # [180 s, 240 s), is left to the idle timer and not checked here).
        finals = {w: True for w in exp if w + 60 <= base + LATER[0]}
        before = self.await_records(dev, exp, finals=finals, what="before restart")
        before_versions = {parse_ts(r["window_start"]): r.get("version")
                           for r in before.get("data", [])}

        code = self.server.stop(signal.SIGTERM)
        self.assertEqual(code, 0, "graceful SIGTERM exit code" + self.diag())
        self.server.start()

        after = self.await_records(dev, exp, finals=finals, what="after SIGTERM + restart")
        with self.subTest(check="versions never go back (sinks keep the highest version)"):
            after_versions = {parse_ts(r["window_start"]): r.get("version")
                              for r in after.get("data", [])}
            regressed = {fmt_ts(w): (v, after_versions.get(w))
                         for w, v in before_versions.items()
                         if isinstance(v, int) and (after_versions.get(w) or 0) < v}
            self.assertEqual(regressed, {}, "window: (version before, version after restart)")
        with self.subTest(check="latest after restart"):
            self.assertEqual(after.get("latest", {}).get("timestamp"),
                             before.get("latest", {}).get("timestamp"), "latest after restart")
            self.assertEqual(after.get("latest", {}).get("metrics"), events[-1]["metrics"],
                             "latest after restart")

        # The stream continues across the restart: the interval 182 s -> 250 s spans the
        # windows [180, 240) and [240, 300), so energy is counted in both.
        nxt = (250, 80.0, 231.0, 15.0)
        self.post_ok([make_event(dev, base, nxt, 0)], "after restart")
        exp2 = expected_records(samples_of(base, rows + [nxt]))
        self.await_records(dev, exp2, what="event after restart")

        code = self.server.stop(signal.SIGINT)
        self.assertEqual(code, 0, "graceful SIGINT exit code" + self.diag())


if __name__ == "__main__":
    unittest.main()
