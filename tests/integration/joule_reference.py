"""A deliberately simple reference implementation of CONTRACT section 2 for 1m windows,
used by the integration tests to compute the records Joule must report.

samples: list of (t_seconds, {metric: value}) for ONE device; t may be fractional.
"""

import collections
import math

WINDOW = 60.0
MAX_GAP = 300.0


def kind_of(name):
    if name.endswith("_w"):
        return "power"
    if name.endswith("_wh") or name.endswith("_total"):
        return "counter"
    return "gauge"


def window_of(t, window=WINDOW):
    return math.floor(t / window) * window


def _spread(t1, t2, amount_fn, window):
    """Splits [t1, t2] at window boundaries; yields (window_start, a, b) pieces."""
    a = t1
    while a < t2:
        ws = window_of(a, window)
        b = min(t2, ws + window)
        yield ws, a, b
        a = b


def expected_records(samples, window=WINDOW, max_gap=MAX_GAP):
    """Returns {window_start: expected record}; a record is
    {"count": n, "metrics": {name: {...}}} plus the flat power fields."""
    samples = sorted(samples, key=lambda s: s[0])
    recs = collections.defaultdict(lambda: {"count": 0, "metrics": {}})

    def mentry(ws, name):
        return recs[ws]["metrics"].setdefault(name, {})

    # Per-sample statistics (every kind).
    for t, metrics in samples:
        ws = window_of(t, window)
        recs[ws]["count"] += 1
        for name, v in metrics.items():
            m = mentry(ws, name)
            if "count" not in m:
                m.update(count=0, min=v, max=v, sum=0.0, first=v, last=v, _first_t=t, _last_t=t)
            m["count"] += 1
            m["min"] = min(m["min"], v)
            m["max"] = max(m["max"], v)
            m["sum"] += v
            if t < m["_first_t"]:
                m["first"], m["_first_t"] = v, t
            if t >= m["_last_t"]:
                m["last"], m["_last_t"] = v, t

    names = sorted({n for _, ms in samples for n in ms})
    for name in names:
        series = [(t, ms[name]) for t, ms in samples if name in ms]
        kind = kind_of(name)
        if kind == "power":
            for (t1, p1), (t2, p2) in zip(series, series[1:]):
                dt = t2 - t1
                if not (0 < dt <= max_gap):
                    continue

                def p_at(t, t1=t1, p1=p1, t2=t2, p2=p2):
                    return p1 + (p2 - p1) * (t - t1) / (t2 - t1)

                for ws, a, b in _spread(t1, t2, None, window):
                    m = mentry(ws, name)
                    m["energy_wh"] = m.get("energy_wh", 0.0) + (p_at(a) + p_at(b)) / 2 * (b - a) / 3600
                    m["_covered"] = m.get("_covered", 0.0) + (b - a)
        elif kind == "counter" and series:
            baseline = series[0][1]
            for (t1, _), (t2, v2) in zip(series, series[1:]):
                if v2 >= baseline:
                    inc = v2 - baseline
                    baseline = v2
                elif v2 >= 0.9 * baseline:
                    inc = 0.0
                else:
                    inc = v2
                    baseline = v2
                    m = mentry(window_of(t2, window), name)
                    m["resets"] = m.get("resets", 0) + 1
                dt = t2 - t1
                if dt <= 0:
                    continue
                if dt > max_gap:
                    m = mentry(window_of(t2, window), name)
                    m["delta"] = m.get("delta", 0.0) + inc
                    continue
                for ws, a, b in _spread(t1, t2, None, window):
                    m = mentry(ws, name)
                    m["delta"] = m.get("delta", 0.0) + inc * (b - a) / dt

    # Finish: averages, coverage, defaults, flat fields.
    for ws, rec in recs.items():
        for name, m in rec["metrics"].items():
            m.pop("_first_t", None)
            m.pop("_last_t", None)
            if m.get("count"):
                m["avg"] = m["sum"] / m["count"]
            kind = kind_of(name)
            if kind == "power":
                covered = m.pop("_covered", 0.0)
                m.setdefault("energy_wh", 0.0)
                m["coverage"] = covered / window
                if covered > 0:
                    m["twa"] = m["energy_wh"] * 3600 / covered
            elif kind == "counter":
                m.setdefault("delta", 0.0)
                m.setdefault("resets", 0)
        p = rec["metrics"].get("power_w")
        if p is not None:
            if p.get("count"):
                rec["avg_power_w"] = p["avg"]
                rec["max_power_w"] = p["max"]
            rec["sum_energy_wh"] = p["energy_wh"]
            rec["coverage"] = p["coverage"]
    return dict(recs)


def close(a, b, rel=1e-6, abs_tol=1e-6):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


# Keys of a metric entry whose presence depends on the implementation's reading of the
# contract's example (the counter example omits avg/sum): checked only when present.
OPTIONAL_WHEN_ABSENT = {("counter", "avg"), ("counter", "sum")}


def diff_record(got, exp, label=""):
    """Returns a list of human-readable mismatches between a Joule record and the reference."""
    out = []
    if got is None:
        return [f"{label}: record missing"]
    if got.get("count") != exp["count"]:
        out.append(f"{label}.count: got {got.get('count')!r}, expected {exp['count']}")
    for flat in ("avg_power_w", "max_power_w", "sum_energy_wh", "coverage"):
        if flat in exp:
            if not close(got.get(flat), exp[flat]):
                out.append(f"{label}.{flat}: got {got.get(flat)!r}, expected {exp[flat]!r}")
    gm = got.get("metrics") or {}
    for name, em in exp["metrics"].items():
        g = gm.get(name)
        if not isinstance(g, dict):
            out.append(f"{label}.metrics.{name}: missing (got metrics {sorted(gm)})")
            continue
        kind = kind_of(name)
        for key, ev in em.items():
            if key not in g and (kind, key) in OPTIONAL_WHEN_ABSENT:
                continue
            if key not in g and key == "resets" and ev == 0 and "count" not in em:
                continue  # a sample-less window's counter entry may omit resets: 0
            if not close(g.get(key), ev):
                out.append(f"{label}.metrics.{name}.{key}: got {g.get(key)!r}, expected {ev!r}")
    for name in gm:
        if name not in exp["metrics"] and (gm[name] or {}).get("count", 0):
            out.append(f"{label}.metrics.{name}: unexpected metric {gm[name]!r}")
    return out
