"""log_softmax within a few ulp of the exact value, element by element, on dominant-logit rows --
where scipy.special is not (scipy issue 19521): the dominant entry of a row is
``-log1p(sum of the other terms)``, a tiny number that ``t - log(s)`` with ``s`` rounded near 1
loses.  The bound is ULPS ulp of the exact value, plus sqrt(n) ulp for the rounding of a sum of n
terms (its typical growth), plus, for rows whose maximum is not 0, what
the one rounding of ``x_j - m`` costs through exp's condition number (``_conditioning``).  Every
softmax-family op of the registry with ``log=True`` kernels (log_softmax), on every
backend and ISA path and every method of the registry's log_softmax row, against mpmath at 60
digits.

The rows: a maximum ``m`` and the other entries at ``m - gap - u`` (``u`` >= 0 random), for gaps
1..700 in float64 and 1..85 in float32 (up to where exp(-gap) leaves the normal range), ties of
the maximum (two or three equal maxima), one-other-entry rows ([0, -30] is -9.35762296883974e-14
exactly, [0, -60] is -8.75651076269652e-27), short and long rows (the kernels' small-row and
long-row paths), along the last axis and along axis 0 (the inner-loop kernels).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _registry

mpmath = pytest.importorskip("mpmath")
mp = mpmath.mp

ULPS = 4  # "a few ulp", relative to the exact value
GAPS = {
    np.float64: np.unique(np.r_[np.arange(1, 41), np.geomspace(40, 700, 24).round(3), 700.0]),
    np.float32: np.unique(np.r_[np.arange(1, 41), np.geomspace(40, 85, 12).round(3), 85.0]),
}
LENGTHS = (2, 3, 17, 300, 3000)
METHODS = _registry.OPS["log_softmax"].methods
_EXACT: dict = {}


def exact_log_softmax(row):
    """mpmath, 60 digits: (x_j - m) - log1p(sum over k != argmax of exp(x_k - m))."""
    with mp.workdps(60):
        xs = [mp.mpf(float(v)) for v in row]
        i = int(np.argmax(row))
        m = xs[i]
        rest = mp.fsum(mp.exp(v - m) for k, v in enumerate(xs) if k != i)
        l1p = mp.log1p(rest)
        return np.array([float((v - m) - l1p) for v in xs])


def dominant_rows(dtype, n, rng):
    """Rows of length ``n`` with one (or tied) dominant maxima over every gap of GAPS."""
    rows = []
    for gap in GAPS[dtype]:
        m = rng.choice([0.0, 0.0, 12.5, -7.25])
        row = m - gap - rng.exponential(3.0, n)
        row[rng.integers(n)] = m
        rows.append(row)
        if n >= 3:                       # a tie of the maximum
            tied = row.copy()
            tied[tied.argmax() - 1] = m
            rows.append(tied)
        if n == 2:                       # exactly [m, m - gap]
            rows.append(np.array([m, m - gap]))
    return np.array(rows).astype(dtype)


def _conditioning(row, eps):
    """What rounding ``t_j = x_j - m`` once (every algorithm does) costs the dominant entry:
    exp amplifies the error of t_j by |t_j|, so -log1p(rest) moves by up to
    sum_j exp(t_j) |t_j| eps / 2.  Zero when m == 0 (t_j = x_j exactly): those rows, the
    issue's [0, -30] and [0, -60] among them, are held to ULPS alone."""
    r = row.astype(np.float64)
    m = r.max()
    if m == 0:
        return 0.0
    t = r[r != m] - m
    return float(np.sum(np.exp(t) * np.abs(t)) * eps / 2)


def check_rows(got, x, dtype):
    eps = np.finfo(dtype).eps
    tiny = np.finfo(dtype).tiny
    for i, row in enumerate(x):
        key = row.tobytes() + row.dtype.str.encode()
        if key not in _EXACT:
            _EXACT[key] = exact_log_softmax(row)
        want = _EXACT[key]
        err = np.abs(got[i].astype(np.float64) - want)
        bound = (ULPS + np.sqrt(row.size)) * eps * np.abs(want) + tiny + _conditioning(row, eps)
        bad = np.flatnonzero(err > bound)
        if bad.size:
            j = bad[0]
            k = int(np.argmax(row))
            raise AssertionError(
                f"{np.dtype(dtype).name} row {i} (n={row.size}, gap "
                f"{float(row[k]) - float(np.sort(row)[-2]):.4g}): element {j} is {got[i][j]!r}, "
                f"exact {want[j]!r}: {err[j] / (eps * abs(want[j])):.3g} ulp off")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_softmax_dominant_rows_last_axis(backend, dtype, n, method):
    rng = np.random.default_rng(n)
    x = dominant_rows(dtype, n, rng)
    if n >= 300:
        x = x[:: max(1, len(x) // 12)]   # the long rows: every gap class, fewer of each
    got = fs.log_softmax(x, axis=-1, backend=backend, method=method)
    check_rows(got, x, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_softmax_dominant_rows_inner_axis(backend, dtype):
    rng = np.random.default_rng(5)
    x = dominant_rows(dtype, 17, rng)
    got = fs.log_softmax(np.ascontiguousarray(x.T), axis=0, backend=backend)
    check_rows(np.ascontiguousarray(got.T), x, dtype)


@pytest.mark.parametrize("method", METHODS)
def test_log_softmax_two_terms_exact(backend, method):
    """The issue's figures: scipy gives -9.348e-14 and 0 here."""
    for dtype in (np.float64, np.float32):
        for gap in (30.0, 60.0):
            x = np.array([0.0, -gap], dtype)
            got = fs.log_softmax(x, backend=backend, method=method)
            check_rows(got[None], x[None], dtype)
    got = fs.log_softmax(np.array([0.0, -60.0]), backend=backend, method=method)
    assert got[0] == pytest.approx(-8.75651076269652e-27, rel=4 * 2.0**-52)


def test_the_exact_values_themselves():
    """The oracle against closed forms: log1p(e^-30) = e^-30 - e^-60 / 2 + ..."""
    y = exact_log_softmax(np.array([0.0, -30.0]))[0]
    assert y == pytest.approx(-(np.exp(-30.0) - np.exp(-60.0) / 2), rel=1e-15)
    assert exact_log_softmax(np.array([0.0, 0.0]))[0] == pytest.approx(-np.log(2.0), rel=1e-16)
