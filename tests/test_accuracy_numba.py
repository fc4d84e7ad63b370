"""The Numba backend, accurate where scipy is not (issue 14, item 8; scipy issue 19521):
log_softmax of rows with one dominant logit, every element within a few ulp, relative, of the
exact value (mpmath), the dominant entry -log1p(sum of the others) included, on every path of
the backend: rows, short rows, inner > 1, online, one long row split over threads, in place.
And the kernels' own exp of x - max (the hot loops' exp, not the exp() of test_elementary.py)
within 2 ULP over its whole range, with its special values."""
import mpmath
import numpy as np
import pytest

import fastsoftmax as fs

numba = pytest.importorskip("numba")

from fastsoftmax.backends.numba import explog  # noqa: E402

ULPS = 4      # "a few ulp"
FILL = -1e4   # filler far below the max: exp(FILL - m) is 0 in both float types

# gaps between the max and the next logit (float32 results stay normal up to 85)
GAPS = {np.float64: [1, 2, 5, 10, 20, 30, 37, 60, 100, 300, 700],
        np.float32: [1, 2, 5, 10, 17, 30, 60, 85]}


def _exact_log_softmax(values, counts):
    """Exact log_softmax of a row holding ``values[i]`` ``counts[i]`` times: one per value."""
    with mpmath.workdps(60):
        vs = [mpmath.mpf(float(v)) for v in values]
        m = max(vs)
        k = sum(c for v, c in zip(vs, counts) if v == m)
        rest = mpmath.fsum(c * mpmath.exp(v - m) for v, c in zip(vs, counts) if v != m)
        ls = mpmath.log(k) + mpmath.log1p(rest / k)   # 1 + rest would round at any precision
        return [float((v - m) - ls) for v in vs]


def _ulps(got, want, dtype):
    want = np.asarray(want, np.float64)
    sp = np.spacing(np.abs(want.astype(dtype))).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / sp


def _dominant_row(dtype, gap, ties, n, rng):
    """A row of n: the max (a non-integer value, so x - m is inexact in the float type) ``ties``
    times, a few logits ``gap`` (and a little more) below it, the rest FILL."""
    m = dtype(rng.uniform(-3, 3))
    others = (np.float64(m) - gap - rng.uniform(0, 0.75, 3)).astype(dtype)
    others[0] = dtype(np.float64(m) - gap)
    row = np.full(n, FILL, dtype)
    pos = rng.permutation(n)
    row[pos[:ties]] = m
    row[pos[ties:ties + 3]] = others
    return row, m, others


def _check_row(got, row, dtype):
    vals, inv, counts = np.unique(row, return_inverse=True, return_counts=True)
    want = np.asarray(_exact_log_softmax(vals, counts))[inv]
    err = _ulps(got, want, dtype)
    i = int(np.argmax(err))
    assert err[i] <= ULPS, (f"{err[i]:.1f} ulp at x={row[i]!r} (max {row.max()!r}): "
                            f"got {got[i]!r}, exact {want[i]!r}")


def _paths(dtype):
    """(name, n, call) for each path of the backend; call(rows (R, n)) -> log_softmax rows."""
    def rows(a):
        return fs.log_softmax(a, axis=-1, backend="numba")

    def inplace(a):
        b = a.copy()
        fs.log_softmax(b, axis=-1, out=b, backend="numba")
        return b

    def inner(a):   # the rows as columns: reduced along axis 0, inner > 1
        return np.ascontiguousarray(fs.log_softmax(np.ascontiguousarray(a.T), axis=0,
                                                   backend="numba").T)

    def online(a):
        return fs.log_softmax(a, axis=-1, backend="numba", method="online")

    return [("rows", 300, rows), ("rows in place", 300, inplace), ("short rows", 12, rows),
            ("short rows in place", 12, inplace), ("inner > 1", 40, inner),
            ("online", 5000, online), ("online in place", 5000, inplace)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ties", [1, 2])
def test_dominant_logit_rows(dtype, ties):
    rng = np.random.default_rng(19521 + ties)
    for name, n, call in _paths(dtype):
        made = [_dominant_row(dtype, g, ties, n, rng) for g in GAPS[dtype]]
        a = np.stack([r for r, _, _ in made])
        got = call(a)
        for row, g in zip(range(a.shape[0]), GAPS[dtype]):
            try:
                _check_row(got[row], a[row], dtype)
            except AssertionError as exc:
                raise AssertionError(f"{name}, gap {g}: {exc}") from None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dominant_logit_long_row_threads(dtype):
    """One row long enough to be split over two threads (blocks merged online)."""
    rng = np.random.default_rng(7)
    old = fs.get_num_threads()
    fs.set_num_threads(2)
    try:
        for gap in (GAPS[dtype][2], GAPS[dtype][-1]):
            row, _, _ = _dominant_row(dtype, gap, 1, 1 << 20, rng)
            _check_row(fs.log_softmax(row, backend="numba"), row, dtype)
    finally:
        fs.set_num_threads(old)


def test_issue_examples():
    # exact values (mpmath): -log1p(exp(-30)), -log1p(exp(-60))
    got = fs.log_softmax(np.array([0.0, -30.0]), backend="numba")
    assert got[0] == pytest.approx(-9.3576229688397368e-14, rel=4e-16)
    got = fs.log_softmax(np.array([0.0, -60.0]), backend="numba")
    assert got[0] == pytest.approx(-8.7565107626965203e-27, rel=4e-16)
    got = fs.log_softmax(np.array([0.0, -60.0], np.float32), backend="numba")
    assert got[0] == pytest.approx(-8.7565107626965203e-27, rel=2e-7)


def test_not_dominant_rows_unchanged():
    """Rows with no dominant entry (sum >= 2) and the non-finite rows keep their results."""
    x = np.array([[0.0, 0.0, -1.0], [0.5, -np.inf, -np.inf], [-np.inf, -np.inf, -np.inf],
                  [np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0]])
    with np.errstate(all="ignore"):
        m = x.max(axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        want = (x - m) - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    got = fs.log_softmax(x, axis=1, backend="numba")
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)


# ------------------------------------------------------------------- the kernels' exp of x - max
def _exp_ulps(got, x, dtype):
    wide = np.float64 if dtype == np.float32 else np.longdouble
    exact = np.exp(x.astype(wide))
    sp = np.spacing(np.abs(exact.astype(dtype))).astype(wide)
    return np.abs(got.astype(wide) - exact) / sp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_of_nonpositive_within_2_ulp(dtype):
    """fexpn (every exp(x - max) of the sums, unscaled from the hot loops' 2^64-scaled exp)
    over [lo, 0]: uniform values and uniform bit patterns, subnormal results included."""
    rng = np.random.default_rng(3)
    lo = -104.0 if dtype == np.float32 else -746.0
    ut = np.uint32 if dtype == np.float32 else np.uint64
    top = int(np.array(lo, dtype).view(ut))
    sign = 1 << (8 * np.dtype(dtype).itemsize - 1)
    bits = rng.integers(sign, top, 2_000_000, dtype=np.uint64, endpoint=True).astype(ut)
    x = np.concatenate([bits.view(dtype), -rng.uniform(0, -lo, 1_000_000).astype(dtype)])
    out = np.empty_like(x)
    explog.expn_apply(x, out)
    err = _exp_ulps(out, x, dtype)
    assert err.max() <= 2.0, f"{float(err.max()):.3f} ULP at {x[np.argmax(err)]!r}"


@pytest.mark.parametrize("m", [0.0, 1.0, -7.25, 21.3, 80.0, 3e4])
def test_exp_of_difference_float32_within_2_ulp(m):
    """fexpd (softmax's stored exp(x - m), float32, the subtraction's error recovered) against
    the exact exp(x - m)."""
    rng = np.random.default_rng(int(abs(m) * 100) + 1)
    m = np.float32(m)
    x = (np.float64(m) - rng.uniform(0, 104, 1_000_000)).astype(np.float32)
    x = x[x <= m]
    out = np.empty_like(x)
    explog.expd_apply(x, m, out)
    exact = np.exp(x.astype(np.float64) - np.float64(m))
    err = np.abs(out - exact) / np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    assert err.max() <= 2.0, f"{float(err.max()):.3f} ULP at {x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_of_nonpositive_special_values(dtype):
    fi = np.finfo(dtype)
    x = np.array([0.0, -0.0, -np.inf, np.nan, np.log(fi.tiny), np.log(fi.smallest_subnormal),
                  np.log(fi.smallest_subnormal) - 1.0, -1e-30, -fi.max], dtype)
    out = np.empty_like(x)
    explog.expn_apply(x, out)
    with np.errstate(all="ignore"):
        want = np.exp(x.astype(np.float64 if dtype == np.float32 else np.longdouble))
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == 0.0 and np.isnan(out[3])
    assert out[7] == 1.0 and out[8] == 0.0 and out[6] == 0.0
    assert abs(float(out[4]) - float(want[4])) <= 2 * float(np.spacing(dtype(want[4])))
    assert out[5] > 0.0   # the smallest subnormal result is not flushed to 0
