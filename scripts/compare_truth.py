#!/usr/bin/env python3
"""Compare a `joule simulate --ground-truth FILE` with a running server's history.

    scripts/compare_truth.py --url http://127.0.0.1:8080 --token "$ADMIN" truth.jsonl
    scripts/compare_truth.py --url https://127.0.0.1:8443 --cacert ca.pem --token "$ADMIN" t.jsonl

For every device of the truth file it reads /v1/devices/{id}/metrics/history at 1m, 1h and
1d (admin token, or an owner key of those devices), waits up to --wait seconds until every
1m window of the truth is final, then compares every record and prints the mismatches:

- exact: count, and per metric count, min, max, first, last, resets; 1d local_date and
  timezone; max_power_w.
- to --rel (default 1e-6) relative: sum, avg, energy_wh, coverage, twa, delta and the flat
  avg_power_w, sum_energy_wh, coverage (the server sums in another order).
- tolerated: a counter may omit avg/sum, and a sample-less counter entry `resets: 0`.
- a server record with count > 0 in a window the truth does not have is a mismatch.

1h and 1d records are compared in whatever version the server holds once the 1m windows
are final: their content is complete then, only `final` may wait for the hour or the
(local) day to end. The server must run with the `stream.max_gap` the simulator was given
(`--max-gap`, default 300s), and the run must not have used --jitter beyond
`stream.allowed_lateness` (the simulator refuses that with --ground-truth).

Exit status: 0 no mismatch, 1 mismatches or windows not final in time, 2 usage or I/O error.
Standard library only; tests/e2e/test_ground_truth.py uses it as a module.
"""

import argparse
import datetime
import json
import math
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

EXACT = {"count", "min", "max", "first", "last", "resets"}
FLAT = {"avg_power_w", "max_power_w", "sum_energy_wh", "coverage"}
RESOLUTIONS = ("1m", "1h", "1d")


def close(a, b, rel=1e-6, abs_tol=1e-9):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)


def diff(got, exp, label, rel=1e-6):
    """The differences between a server record `got` and a truth record `exp`."""
    out = []
    if got is None:
        return [f"{label}: missing"]
    if got.get("count") != exp["count"]:
        out.append(f"{label}.count: got {got.get('count')!r}, expected {exp['count']}")
    for key in FLAT:
        if key in exp:
            g, e = got.get(key), exp[key]
            ok = g == e if key == "max_power_w" else close(g, e, rel)
            if not ok:
                out.append(f"{label}.{key}: got {g!r}, expected {e!r}")
    if exp["resolution"] == "1d":
        for key in ("local_date", "timezone"):
            if got.get(key) != exp.get(key):
                out.append(f"{label}.{key}: got {got.get(key)!r}, expected {exp.get(key)!r}")
    gm = got.get("metrics") or {}
    for name, em in exp["metrics"].items():
        g = gm.get(name)
        if not isinstance(g, dict):
            out.append(f"{label}.metrics.{name}: missing")
            continue
        for key, ev in em.items():
            gv = g.get(key)
            if key in EXACT:
                # A sample-less counter entry may omit resets: 0.
                if gv is None and key == "resets" and ev == 0:
                    continue
                ok = gv == ev
            else:
                ok = close(gv, ev, rel)
            if not ok and key in ("avg", "sum") and gv is None and name.endswith("_wh"):
                ok = True  # counters may omit avg/sum (the contract's example does)
            if not ok:
                out.append(f"{label}.metrics.{name}.{key}: got {gv!r}, expected {ev!r}")
    return out


def load_truth(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fmt_ts(epoch_s):
    t = datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class Server:
    def __init__(self, url, token, cacert=None):
        """cacert: a PEM file of CAs trusted besides the system's (an https:// server with a
        self-signed certificate, as `joule simulate --cacert`); the host name is checked."""
        self.url = url.rstrip("/")
        self.token = token
        self.context = None
        if cacert:
            self.context = ssl.create_default_context()
            self.context.load_verify_locations(cafile=cacert)

    def get(self, path):
        req = urllib.request.Request(self.url + path)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.context) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"GET {path}: HTTP {e.code} {e.read()[:300]!r}") from None

    def history(self, device, resolution, from_s, to_s):
        """{window_start: record} of the device's history in [from_s, to_s)."""
        out, cursor = [], None
        while True:
            q = {"resolution": resolution, "limit": "10000",
                 "from": fmt_ts(from_s), "to": fmt_ts(to_s)}
            if cursor:
                q["cursor"] = cursor
            body = self.get(f"/v1/devices/{urllib.parse.quote(device, safe='')}"
                            f"/metrics/history?" + urllib.parse.urlencode(q))
            out.extend(body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                return {r["window_start"]: r for r in out}


def compare(server, expected, wait_s=120.0, rel=1e-6, poll_s=0.5):
    """Waits for the truth's 1m windows to be final, then compares. Returns a dict:
    problems (list of strings), pending (1m truth records not final in time), compared and
    final (per resolution), devices, events."""
    by_res = {r: [] for r in RESOLUTIONS}
    for rec in expected:
        by_res[rec["resolution"]].append(rec)
    devices = sorted({r["device_id"] for r in expected})
    starts = [parse_ts(r["window_start"]) for r in expected] or [0]
    ends = [parse_ts(r["window_end"]) for r in expected] or [0]
    from_s, to_s = min(starts) - 2 * 86400, max(ends) + 2 * 86400

    deadline = time.monotonic() + wait_s
    while True:
        got_1m = {d: server.history(d, "1m", from_s, to_s) for d in devices}
        pending = [r for r in by_res["1m"]
                   if not (got_1m[r["device_id"]].get(r["window_start"]) or {}).get("final")]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(poll_s)

    problems = []
    compared = {r: 0 for r in RESOLUTIONS}
    final = {r: 0 for r in RESOLUTIONS}
    for resolution in RESOLUTIONS:
        got = got_1m if resolution == "1m" else {
            d: server.history(d, resolution, from_s, to_s) for d in devices}
        for rec in by_res[resolution]:
            g = got[rec["device_id"]].get(rec["window_start"])
            label = f"{rec['device_id']}/{resolution}/{rec['window_start']}"
            problems += diff(g, rec, label, rel)
            compared[resolution] += 1
            if g and g.get("final"):
                final[resolution] += 1
        for device in devices:
            known = {r["window_start"] for r in by_res[resolution] if r["device_id"] == device}
            for ws in sorted(set(got[device]) - known):
                if got[device][ws].get("count", 0):
                    problems.append(f"{device}/{resolution}/{ws}: unexpected record "
                                    f"(count {got[device][ws]['count']})")
    return {"problems": problems, "pending": pending, "compared": compared, "final": final,
            "devices": devices, "events": sum(r["count"] for r in by_res["1m"])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("truth", help="the JSON lines file of joule simulate --ground-truth")
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="the server's base URL (default: %(default)s)")
    ap.add_argument("--token", default="",
                    help="admin token or an owner key (empty with auth disabled)")
    ap.add_argument("--cacert", default=None,
                    help="https: PEM CAs to trust besides the system's (e.g. a self-signed "
                    "server.tls_cert_file)")
    ap.add_argument("--wait", type=float, default=120.0,
                    help="seconds to wait for the 1m windows to become final (default 120)")
    ap.add_argument("--rel", type=float, default=1e-6,
                    help="relative tolerance of sums, averages, energies (default 1e-6)")
    ap.add_argument("--show", type=int, default=30, help="mismatches printed, at most")
    args = ap.parse_args(argv)
    if args.wait < 0 or args.rel < 0 or args.show < 0:
        ap.error("--wait, --rel and --show must not be negative")
    try:
        expected = load_truth(args.truth)
    except (OSError, ValueError) as e:
        print(f"compare_truth: cannot read {args.truth}: {e}", file=sys.stderr)
        return 2
    try:
        result = compare(Server(args.url, args.token, args.cacert), expected, args.wait,
                         args.rel)
    except (OSError, RuntimeError, ValueError, ssl.SSLError) as e:
        print(f"compare_truth: {args.url}: {e}", file=sys.stderr)
        return 2
    c, f = result["compared"], result["final"]
    for p in result["problems"][:args.show]:
        print(p)
    if len(result["problems"]) > args.show:
        print(f"… and {len(result['problems']) - args.show} more")
    print(f"compare_truth: {len(result['devices'])} devices, {result['events']} events; compared "
          f"{c['1m']} 1m ({f['1m']} final), {c['1h']} 1h ({f['1h']} final), {c['1d']} 1d "
          f"({f['1d']} final) records; {len(result['pending'])} 1m windows not final after "
          f"{args.wait:g}s; {len(result['problems'])} mismatches", file=sys.stderr)
    return 0 if not result["problems"] and not result["pending"] else 1


if __name__ == "__main__":
    sys.exit(main())
