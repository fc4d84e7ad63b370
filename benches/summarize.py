"""Summaries of a `fastsoftmax bench --json` file (the tables under "Full suite" in
docs/benchmarks.md): per dtype and thread count for our fastest backend, and per backend.

    python benches/summarize.py full.json

Only our contenders without a variant count (the in-place ones are listed by the bench itself).
Works on any subset the bench measured: a peer or a thread count that is missing is left out.
"""
import json
import math
import sys
from collections import defaultdict

PEERS = ("numpy", "scipy", "copyto")


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def backend_of(result):
    """'numba' for the contender 'fastsoftmax[numba]'."""
    return result["contender"].split("[", 1)[1].rstrip("]")


def collect(cases, key_of, pick):
    """(speedups, worst): peer ratios grouped by key_of(case, result), and per group the
    smallest ratio against torch with the case it came from."""
    speedups, worst = defaultdict(list), {}
    for case in cases:
        ours = [r for r in case["results"] if r["kind"] == "ours" and not r.get("variant")]
        for r in pick(ours):
            key = key_of(case, r)
            for peer, v in r["speedup"].items():
                speedups[key + (peer,)].append(v)
            v = r["speedup"].get("torch")
            if v is not None and (key not in worst or v < worst[key][0]):
                worst[key] = (v, f"{case['op']} {case['dtype']} {case['shape_name']} "
                                 f"({backend_of(r)})")
    return speedups, worst


def fmt(values, with_min=False):
    if not values:
        return "-"
    text = f"{geomean(values):.2f}x"
    return text + f" (min {min(values):.2f})" if with_min else text


def main(path):
    with open(path) as fh:
        cases = json.load(fh)["cases"]
    threads = sorted({c["threads"] for c in cases})

    fastest = lambda ours: [min(ours, key=lambda r: r["median_s"])] if ours else []
    sp, worst = collect(cases, lambda c, r: (c["dtype"], c["threads"]), fastest)
    print("Our fastest backend per case:\n")
    print("| dtype | threads | vs torch (geomean; min: case) | vs numpy | vs scipy | vs copyto |")
    print("|---|---|---|---|---|---|")
    for dtype in ("float32", "float64"):
        for t in threads:
            if not any(sp[(dtype, t, p)] for p in PEERS + ("torch",)):
                continue
            w = worst.get((dtype, t))
            torch = f"{fmt(sp[(dtype, t, 'torch')])}; {w[0]:.2f}x: {w[1]}" if w else "-"
            cells = " | ".join(fmt(sp[(dtype, t, p)], with_min=True) for p in PEERS)
            print(f"| {dtype} | {t} | {torch} | {cells} |")

    sp, worst = collect(cases, lambda c, r: (backend_of(r), c["threads"]), lambda ours: ours)
    print("\nPer backend (method auto), over every case of a thread count:\n")
    print("| backend | threads | vs torch geomean | vs torch min (case) | cases < 1x torch "
          "| vs numpy | vs scipy | vs copyto |")
    print("|---|---|---|---|---|---|---|---|")
    for backend in sorted({k[0] for k in sp}):  # every backend with a peer, torch or not
        for t in threads:
            if not any(sp.get((backend, t, p)) for p in PEERS + ("torch",)):
                continue
            w = worst.get((backend, t))
            vt = sp.get((backend, t, "torch"), [])
            slower = f"{sum(v < 1 for v in vt)} of {len(vt)}" if vt else "-"
            tmin = f"{w[0]:.2f}x ({w[1]})" if w else "-"
            cells = " | ".join(fmt(sp.get((backend, t, p), [])) for p in PEERS)
            print(f"| {backend} | {t} | {fmt(vt)} | {tmin} | {slower} | {cells} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benches/summarize.py BENCH.json")
    main(sys.argv[1])
