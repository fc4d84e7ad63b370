"""Small inputs against mpmath at 50 digits: the exact answer, rounded once."""
import mpmath
import numpy as np
import pytest

import fastsoftmax as fs

mpmath.mp.dps = 50

ROWS = [
    [0.0], [1.0, 2.0, 3.0], [0.0, -40.0], [-1e-3, 2e-3, 0.0], [700.0, 699.0, -700.0],
    [-745.0, -744.0], [1e-300, -1e-300], [30.0, 30.0, 30.0, -30.0], [-0.5] * 7 + [3.25],
    list(np.linspace(-20, 20, 41)), [88.0, 87.5, -103.0],
]


def exact(row):
    xs = [mpmath.mpf(float(v)) for v in row]
    lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
    return [mpmath.exp(v - lse) for v in xs], [v - lse for v in xs], lse


def _rel(got, want, floor=1e-300):
    """Relative error; below ``floor`` (the dtype's smallest normal) absolute, as it underflows."""
    want = float(want)
    return abs(float(got) - want) / max(abs(want), floor)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("i", range(len(ROWS)))
def test_against_mpmath(backend, i, dtype):
    row = np.array(ROWS[i], dtype)
    if not np.all(np.isfinite(row)):
        pytest.fail("bad test row")
    sm, lsm, lse = exact(row)
    eps = np.finfo(dtype).eps
    # softmax and logsumexp to a few ULP relative; log_softmax to a few ULP of the row's scale
    tol = (2e-15 if backend == "numpy" else 8e-15) if dtype == np.float64 else 4 * eps
    scale = max(1.0, float(np.abs(row).max()))
    got = fs.softmax(row, backend=backend)
    assert max(_rel(g, w, np.finfo(dtype).tiny) for g, w in zip(got, sm)) <= tol
    got = fs.log_softmax(row, backend=backend)
    assert max(abs(float(g) - float(w)) for g, w in zip(got, lsm)) <= tol * scale
    assert _rel(fs.logsumexp(row, backend=backend), lse) <= tol


def test_logsumexp_near_zero_keeps_digits(backend):
    """log(1 + e^-40) = 4.25e-18: the log1p form keeps it, log(sum) would give 0."""
    want = mpmath.log1p(mpmath.exp(-40))
    got = fs.logsumexp(np.array([0.0, -40.0]), backend=backend)
    assert _rel(got, want) <= 1e-14
