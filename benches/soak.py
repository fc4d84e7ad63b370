"""The long leak soak: 10^5 calls of every op of the registry on every backend (every ISA path
of the C extension), rejected calls included, with the process's RSS sampled along the way.

    python benches/soak.py [--calls 100000] [--samples 20] [--backends numba cython-avx2 ...]

The calls are tests/test_leaks.py's ``calls_for(op, backend)`` (each option set of the op's grid,
a preallocated output, a 2-thread call big enough for the thread pools, bad axes, bad targets,
bad ``out=``, bad options), cycled until ``--calls`` calls per op and backend.  Prints one line
per (backend, op): RSS at its start, at its end, its maximum, and the sampled curve (MiB); then
the whole run's start / end / max.  Exit status 1 if the RSS at the end of any (backend, op)
exceeds its start by more than --limit MiB.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from conftest import BACKEND_PARAMS, _activate  # noqa: E402
from test_leaks import calls_for, rss_bytes, run_calls  # noqa: E402

from fastsoftmax import _registry  # noqa: E402

MIB = 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000, help="calls per op and backend")
    ap.add_argument("--samples", type=int, default=20, help="RSS samples per op and backend")
    ap.add_argument("--limit", type=float, default=8.0, help="allowed growth per op (MiB)")
    ap.add_argument("--backends", nargs="*", default=BACKEND_PARAMS,
                    help=f"backends / ISA paths (default: all of {BACKEND_PARAMS})")
    args = ap.parse_args(argv)
    first = rss_bytes()
    peak = first
    ok = True
    t0 = time.perf_counter()
    for param in args.backends:
        backend = _activate(param)
        for op in _registry.OPS.values():
            calls = calls_for(op, backend)
            rounds = max(1, args.calls // len(calls))
            run_calls(calls, min(rounds, 50))          # warm-up
            gc.collect()
            start = rss_bytes()
            curve = []
            per = max(1, rounds // args.samples)
            done = 0
            while done < rounds:
                run_calls(calls, min(per, rounds - done))
                done += per
                gc.collect()
                curve.append(rss_bytes())
            end, top = curve[-1], max(curve)
            peak = max(peak, top)
            grew = (end - start) / MIB
            ok &= grew <= args.limit
            print(f"{param:16s} {op.name:14s} {rounds * len(calls):7d} calls  RSS start "
                  f"{start / MIB:7.1f}  end {end / MIB:7.1f}  max {top / MIB:7.1f} MiB  "
                  f"({grew:+.1f})  curve {[round(c / MIB, 1) for c in curve]}", flush=True)
    last = rss_bytes()
    print(f"whole run: RSS start {first / MIB:.1f} MiB, end {last / MIB:.1f} MiB, max "
          f"{peak / MIB:.1f} MiB, {time.perf_counter() - t0:.0f} s; "
          f"{'OK' if ok else f'FAILED: an op grew more than {args.limit} MiB'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
