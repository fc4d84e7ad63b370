"""The C kernels' log_softmax (and softmax) on dominant-logit rows, against mpmath, on every ISA
path and every code path of the C backend (small-row groups, three-pass rows, online rows, tiles
of columns, one long row split over two threads, rows streamed out of cache).

The dominant entry's exact value is -log1p(sum of the other terms): for gaps of 37 and more in
float64 (17 in float32) the rounded sum 1 + rest keeps few or none of rest's digits, so log(s)
alone is 0.1% off at a gap of 30 and 0 at 60 (scipy issue 19521).  Every element must be within
a few ulp, relative, of the exact value.
"""
import math

import mpmath
import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _dispatch

mpmath.mp.dps = 60

C = _dispatch.load("cython")
ISAS = C.isa_paths()

GAPS = {np.float64: [1, 2, 5, 10, 17, 20, 30, 36.7, 37, 40, 50, 60, 100, 200, 300, 500, 700],
        np.float32: [1, 2, 5, 10, 16.6, 17, 20, 30, 40, 60, 80, 85]}
ULPS = 4        # the bound, in ulp of each exact element


@pytest.fixture(params=ISAS)
def isa(request):
    C.set_isa(request.param)
    yield request.param
    C.set_isa(ISAS[0])


def exact_log_softmax(row):
    """x_j - logsumexp(x), exact: 400 digits keep the rest of 1 + rest down to e^-700"""
    with mpmath.workdps(400):
        xs = [mpmath.mpf(float(v)) for v in row]
        m = max(xs)
        lse = m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in xs))
        return [+(v - lse) for v in xs]


def check_log(got, row, dtype, what):
    want = exact_log_softmax(np.asarray(row, dtype))     # of the values the kernel saw
    eps = float(np.finfo(dtype).eps)
    tiny = float(np.finfo(dtype).tiny)
    for j, (g, w) in enumerate(zip(got, want)):
        w = float(w)
        err = abs(float(g) - w) / max(abs(w), tiny)
        assert err <= ULPS * eps, f"{what}: element {j}: {float(g)!r} against {w!r} ({err / eps:.1f} ulp)"


def dominant_rows(dtype):
    """rows with one dominant entry (or ties of it) and gaps of 1 .. 700 (float64) / 85 (float32)"""
    rows = []
    for g in GAPS[dtype]:
        rows.append([0.0, -g])                       # the issue's example
        rows.append([3.5, 3.5 - g, 3.5 - g - 1.0])   # a non-zero max
        rows.append([-7.25, -7.25 - g] + [-7.25 - g - 2.0] * 5)
        rows.append([1.0, 1.0, 1.0 - g])             # ties of the max
        rows.append([2.0 - g, 2.0, 2.0 - 1.5 * g, 2.0 - g])
    return rows


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_issue_examples(isa, dtype):
    got = fs.log_softmax(np.array([0.0, -30.0], dtype), backend="cython")
    check_log(got, [0.0, -30.0], dtype, "[0, -30]")
    got = fs.log_softmax(np.array([0.0, -60.0], dtype), backend="cython")
    check_log(got, [0.0, -60.0], dtype, "[0, -60]")
    if dtype == np.float64:
        # the exact values, from mpmath: -log1p(exp(-30)), -log1p(exp(-60))
        assert got[0] == -8.75651076269652e-27
        assert fs.log_softmax(np.array([0.0, -30.0]), backend="cython")[0] == -9.357622968839737e-14


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_rows(isa, dtype):
    """short rows: the small-row groups (n <= 48), several rows per call"""
    rows = dominant_rows(dtype)
    for row in rows:
        x = np.array(row, dtype)
        check_log(fs.log_softmax(x, backend="cython"), row, dtype, f"small {row}")
    # several rows of one length in one call (one group)
    same = [r for r in rows if len(r) == 2]
    x = np.array(same, dtype)
    got = fs.log_softmax(x, axis=1, backend="cython")
    for i, row in enumerate(same):
        check_log(got[i], row, dtype, f"group {row}")


def long_row(dtype, n, g, ties, seed):
    """a row of n: the max at 0 (ties times), the rest below -g (uniform in [-g - 30, -g])"""
    rng = np.random.default_rng(seed)
    x = (-g - 30.0 * rng.random(n)).astype(dtype)
    idx = rng.choice(n, ties, replace=False)
    x[idx] = 0
    return x


@pytest.mark.parametrize("method", ["three_pass", "online", "auto"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_long_rows(isa, dtype, method):
    for g in GAPS[dtype][::3]:
        for ties in (1, 2):
            x = long_row(dtype, 1000, g, ties, seed=int(g * 10) + ties)
            got = fs.log_softmax(x, backend="cython", method=method)
            check_log(got, x, dtype, f"n=1000 gap {g} ties {ties} {method}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_columns(isa, dtype):
    """inner > 1: tiles of columns (the reduced axis is not the last)"""
    rows = [r for r in dominant_rows(dtype) if len(r) == 3]
    x = np.array(rows, dtype).T.copy()          # (3, k): reduce along axis 0
    got = fs.log_softmax(x, axis=0, backend="cython")
    for j, row in enumerate(rows):
        check_log(got[:, j], row, dtype, f"column {row}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_long_row_two_threads(isa, dtype):
    """one row long enough to be split over two threads (merged (m, s) per block).  The bound is
    wider here: 2^19 terms carry the summation's own rounding (measured up to 8 ulp of log1p in
    float64 at a gap of 10); the dominant-entry failure this checks for is off by 1e11 ulp."""
    old = fs.get_num_threads()
    fs.set_num_threads(2)
    try:
        for g in (GAPS[dtype][3], GAPS[dtype][-1]):
            x = long_row(dtype, 1 << 19, g, 1, seed=3)
            got = fs.log_softmax(x, backend="cython")
            x64 = x.astype(np.float64)
            rest = math.fsum(np.exp(x64[x64 != 0]))           # correctly rounded sum of the terms
            want0 = -math.log1p(rest)
            i0 = int(np.flatnonzero(x == 0)[0])
            eps = float(np.finfo(dtype).eps)
            assert abs(float(got[i0]) - want0) <= 64 * eps * abs(want0), (g, got[i0], want0)
            for i in (0, 1, 12345, len(x) - 1):
                w = x64[i] + want0 if i != i0 else want0
                assert abs(float(got[i]) - w) <= 64 * eps * abs(w)
    finally:
        fs.set_num_threads(old)


def test_streamed_rows(isa):
    """16 MB of output: the rows go through a scratch row and are streamed (non-temporal)"""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4096, 1024)) * 4).astype(np.float32)
    x[7, :] = -80.0
    x[7, 3] = 0.0                                  # a dominant row among ordinary ones
    got = fs.log_softmax(x, axis=1, backend="cython")
    for i in (0, 7, 4095):
        check_log(got[i], x[i], np.float32, f"streamed row {i}")
    sm = fs.softmax(x, axis=1, backend="cython")
    x64 = x[:64].astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    assert np.all(np.abs(sm[:64] - want) <= 4 * np.finfo(np.float32).eps * want + 1e-45)
    assert np.abs(sm.sum(axis=1, dtype=np.float64) - 1).max() <= 1e-5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_dominant_rows(isa, dtype):
    """softmax on the same rows: every element within a few ulp relative (the tiny ones too,
    down to the subnormal range)"""
    tiny = float(np.finfo(dtype).tiny)
    eps = float(np.finfo(dtype).eps)
    for row in dominant_rows(dtype):
        x = np.array(row, dtype)
        got = fs.softmax(x, backend="cython")
        want = [mpmath.exp(v) for v in exact_log_softmax(x)]
        for g, w in zip(got, want):
            w = float(w)
            if abs(w) < tiny:                 # subnormal results: within one subnormal step or two
                assert abs(float(g) - w) <= 2 * float(np.finfo(dtype).smallest_subnormal)
            else:
                assert abs(float(g) - w) <= ULPS * eps * w, (row, g, w)
