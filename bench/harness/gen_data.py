#!/usr/bin/env python3
"""Generates the benchmark data set once, in every peer's input format.

N devices at 1 Hz for S seconds, each sample carrying power_w, voltage_v, current_a and a
cumulative energy_wh counter. The same samples are written as
  events.ndjson  one Joule telemetry event per line (epoch-millisecond timestamps); the HTTP
                 loader groups lines into JSON-array batches, MQTT publishes one line each
  influx.lp      Influx line protocol (nanosecond timestamps) for VictoriaMetrics /write
  rows.csv       CSV for PostgreSQL COPY
Lines are time-major (all devices for second 0, then second 1, ...), as a fleet sends them.
A separate, smaller history set (one owner's devices, one sample a minute over 31 days) is
written by --history: history.ndjson plus the expected 1m/1d aggregates for the peers.
"""
import argparse
import json
import math
import os
import random
import sys
import time


def fleet(args):
    rnd = random.Random(args.seed)
    n = args.devices
    base = [rnd.uniform(20, 900) for _ in range(n)]
    phase = [rnd.uniform(0, 6.28) for _ in range(n)]
    meter = [round(rnd.uniform(1000, 90000), 2) for _ in range(n)]
    ids = [f"dev-{i:05d}" for i in range(n)]
    start_ms = args.start_ms
    nd = open(os.path.join(args.out, "events.ndjson"), "w")
    lp = open(os.path.join(args.out, "influx.lp"), "w")
    csv = open(os.path.join(args.out, "rows.csv"), "w")
    for s in range(args.seconds):
        ts = start_ms + s * 1000
        iso = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(ts // 1000))
        nd_lines, lp_lines, csv_lines = [], [], []
        for i in range(n):
            p = round(base[i] * (1 + 0.3 * math.sin(phase[i] + s / 30.0)), 2)
            v = round(230 + 3 * math.sin(phase[i] + s / 97.0), 1)
            c = round(p / v, 3)
            meter[i] = round(meter[i] + p / 3600.0, 3)
            e = meter[i]
            d = ids[i]
            nd_lines.append(
                f'{{"device_id":"{d}","timestamp":{ts},"metrics":{{"power_w":{p},'
                f'"voltage_v":{v},"current_a":{c},"energy_wh":{e}}}}}\n')
            lp_lines.append(
                f"telemetry,device_id={d} power_w={p},voltage_v={v},current_a={c},"
                f"energy_wh={e} {ts}000000\n")
            csv_lines.append(f"{d},{iso},{p},{v},{c},{e}\n")
        nd.writelines(nd_lines)
        lp.writelines(lp_lines)
        csv.writelines(csv_lines)
    for f in (nd, lp, csv):
        f.close()
    return {"devices": n, "seconds": args.seconds, "events": n * args.seconds,
            "start_ms": start_ms, "metrics_per_event": 4,
            "bytes_ndjson": os.path.getsize(os.path.join(args.out, "events.ndjson")),
            "bytes_influx": os.path.getsize(os.path.join(args.out, "influx.lp")),
            "bytes_csv": os.path.getsize(os.path.join(args.out, "rows.csv"))}


def history(args):
    """One owner with H devices, one sample per device per minute over D days (UTC).

    The 1m aggregate of a window holding one sample is that sample; the peers get the same
    per-window values Joule computes for it (count, min, max, avg, last of each metric),
    and 1d energy per device (sum of power-derived energy is Joule-specific, so the peers
    store the counter delta, the same number for a meter).
    """
    rnd = random.Random(args.seed + 1)
    h = args.history_devices
    days = args.history_days
    end_ms = (args.start_ms // 86_400_000) * 86_400_000  # midnight UTC before the fleet data
    start_ms = end_ms - days * 86_400_000
    ids = [f"hist-{i:02d}" for i in range(h)]
    meter = [round(rnd.uniform(1000, 9000), 2) for _ in range(h)]
    nd = open(os.path.join(args.out, "history.ndjson"), "w")
    agg1m = open(os.path.join(args.out, "history_1m.csv"), "w")  # device,ts,metric,min,max,avg,last
    day_energy = {}
    minutes = days * 1440
    for m in range(minutes):
        ts = start_ms + m * 60_000
        lines = []
        for i in range(h):
            p = round(100 + 80 * math.sin(m / 240.0 + i), 2)
            v = round(230 + 2 * math.sin(m / 50.0 + i), 1)
            c = round(p / v, 3)
            meter[i] = round(meter[i] + p / 60.0, 3)
            lines.append(
                f'{{"device_id":"{ids[i]}","timestamp":{ts},"metrics":{{"power_w":{p},'
                f'"voltage_v":{v},"current_a":{c},"energy_wh":{meter[i]}}}}}\n')
            for name, val in (("power_w", p), ("voltage_v", v), ("current_a", c),
                              ("energy_wh", meter[i])):
                agg1m.write(f"{ids[i]},{ts},{name},{val},{val},{val},{val}\n")
            day = ts // 86_400_000
            first_last = day_energy.setdefault((ids[i], day), [meter[i], meter[i]])
            first_last[1] = meter[i]
        nd.writelines(lines)
    nd.close()
    agg1m.close()
    with open(os.path.join(args.out, "history_1d.csv"), "w") as f:
        for (d, day), (first, last) in sorted(day_energy.items()):
            f.write(f"{d},{day * 86_400_000},{round(last - first, 3)}\n")
    return {"history_devices": h, "history_days": days, "history_start_ms": start_ms,
            "history_end_ms": end_ms, "history_events": h * minutes,
            "history_device_ids": ids, "history_owner": "owner-bench"}


HOUR_S = 3600
# The ingest comparison runs within a few minutes of the data's generation (bench/run.sh).
OPEN_MARGIN_S = 300


def fresh_start_ms(seconds, margin_s=OPEN_MARGIN_S):
    """A first event time for `seconds` of data: in the past, and in the current UTC hour with
    at least margin_s of it left. Joule finalizes a silent device's 1h window once its hour has
    ended in processing time (CONTRACT §2), so data whose hour has ended by the ingest
    comparison makes Joule write one more final record per device (a device-hour's, once per
    hour live) into the measured minute: 20,000 history writes instead of 10,000 (session 18).
    Waits for the next hour when fewer than margin_s are left, and until the data lies in the
    past."""
    while True:
        now = time.time()
        hour = int(now // HOUR_S) * HOUR_S
        if hour + HOUR_S - now < margin_s:
            time.sleep(hour + HOUR_S + 1 - now)
            continue
        start = max(int(now) - seconds - 900, hour + 60) // 60 * 60
        if start + seconds + 5 > now:
            time.sleep(start + seconds + 5 - now)
            continue
        return start * 1000


# Every file this program writes into --out; --reuse-if-fresh removes these and nothing
# else before it generates again (until session 29 it removed the whole directory, whatever
# else it held).
GENERATED = ("events.ndjson", "influx.lp", "rows.csv", "history.ndjson", "history_1m.csv",
             "history_1d.csv", "meta.json")

# The settings the data depends on, recorded in meta.json: data made with other settings is
# not reused (until session 29 a directory of 10 devices was reused for a run asking 20).
SETTINGS = ("devices", "seconds", "seed", "history_devices", "history_days")


def still_fresh(out, args, margin_s=OPEN_MARGIN_S):
    """Whether the data in `out` was made with these settings by fresh_start_ms for the
    current hour, and the hour stays open for margin_s more (then it is reused)."""
    try:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
        start_s = meta["start_ms"] // 1000
        made_with = meta["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if made_with != {k: getattr(args, k) for k in SETTINGS}:
        return False
    now = time.time()
    hour = int(now // HOUR_S) * HOUR_S
    return start_s // HOUR_S * HOUR_S == hour and hour + HOUR_S - now >= margin_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--start-ms", type=int, default=0,
                    help="first event time (default: now - seconds - 15 min, minute-aligned, "
                         "but in the current hour with at least 5 min of it left: see "
                         "fresh_start_ms)")
    ap.add_argument("--reuse-if-fresh", action="store_true",
                    help="keep the data already in --out when it lies in the current hour "
                         "and the hour stays open for 5 more minutes")
    ap.add_argument("--history-devices", type=int, default=10)
    ap.add_argument("--history-days", type=int, default=31)
    args = ap.parse_args()
    if args.reuse_if_fresh and still_fresh(args.out, args):
        print(json.dumps({"reused": args.out}))
        return
    if args.reuse_if_fresh:
        for name in GENERATED:
            try:
                os.remove(os.path.join(args.out, name))
            except FileNotFoundError:
                pass
        print(f"generating data in {args.out}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    if not args.start_ms:
        args.start_ms = fresh_start_ms(args.seconds)
    meta = fleet(args)
    meta.update(history(args))
    meta["settings"] = {k: getattr(args, k) for k in SETTINGS}
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
