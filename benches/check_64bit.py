"""Arrays over 2**31 elements: a manual check, too big for the test suite (about 9 GB of memory).

    python benches/check_64bit.py [backend ...]

Builds a float32 array of shape (2, 2**30 + 3) -- 2**31 + 6 elements, so every offset into the
second row passes 2**31 -- with a known pattern, and checks logsumexp, softmax in place and the
cross-entropy loss of each compiled backend against closed forms computed in float64.
"""
import sys
import time

import numpy as np

import fastsoftmax as fs


def main(backends):
    n = 2**30 + 3
    period = 1000  # x[r, j] = (j % period) / period + r: each row repeats one period
    base = (np.arange(period, dtype=np.float64) / period)
    reps, rest = divmod(n, period)
    x = np.empty((2, n), np.float32)
    for r in range(2):
        x[r, : reps * period].reshape(reps, period)[:] = (base + r).astype(np.float32)
        x[r, reps * period:] = (base[:rest] + r).astype(np.float32)
    b32 = base.astype(np.float32).astype(np.float64)  # the values exactly as stored, per row
    # closed forms per row in float64: sums over the repeated pattern
    want = []
    for r in range(2):
        v = b32 + r
        m = v.max()  # every row holds whole periods (reps > 0), so its max is the period's
        s = reps * np.exp(v - m).sum() + np.exp(v[:rest] - m).sum()
        want.append(np.log(s) + m)
    want = np.array(want)
    want_ce = want - np.array([b32[5], b32[(n - 1) % period] + 1])
    ok = True
    for backend in backends:
        t = time.perf_counter()
        got = fs.logsumexp(x, axis=1, backend=backend)
        dt = time.perf_counter() - t
        err = np.max(np.abs(got - want) / np.abs(want))
        print(f"{backend:7s} logsumexp   rel err {err:.2e}  ({dt:.1f} s)")
        ok &= err < 1e-6
        t = time.perf_counter()
        loss = fs.cross_entropy(x, np.array([5, n - 1]), reduction="none", backend=backend)
        dt = time.perf_counter() - t
        err = np.max(np.abs(loss - want_ce) / np.abs(want_ce))
        print(f"{backend:7s} cross_entropy rel err {err:.2e}  ({dt:.1f} s)")
        ok &= err < 1e-5
    # softmax in place, last backend only (it overwrites x): check both rows' ends
    backend = backends[-1]
    t = time.perf_counter()
    fs.softmax(x, axis=1, out=x, backend=backend)
    dt = time.perf_counter() - t
    for r in range(2):
        v = b32 + r
        lse = want[r]
        for j in (0, 1, period - 1, n - 2, n - 1):
            w = np.exp(v[j % period] - lse)
            e = abs(x[r, j] - w) / w
            ok &= e < 1e-5
    print(f"{backend:7s} softmax in place: both rows' last elements within 1e-5 ({dt:.1f} s)")
    total = float(x[1].sum(dtype=np.float64))
    print(f"{backend:7s} softmax row 1 sums to {total:.7f}")
    ok &= abs(total - 1) < 1e-4
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or [b for b in fs.available_backends() if b != "numpy"]))
