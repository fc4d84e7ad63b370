"""Hypothesis properties (seeded and derandomized under the CI profile, see conftest)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs

FLOATS = {np.float32: st.floats(-60, 60, width=32), np.float64: st.floats(-600, 600)}


def arrays(dtype):
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
                      elements=FLOATS[dtype])


def _tol(dtype, n):
    return 8 * np.finfo(dtype).eps * max(1.0, np.log2(n + 1))


@given(x=arrays(np.float64) | arrays(np.float32), data=st.data())
def test_softmax_properties(backend, x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    tol = _tol(x.dtype, n)
    p = fs.softmax(x, axis=axis, backend=backend)
    assert p.dtype == x.dtype and p.shape == x.shape
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=axis, dtype=np.float64), 1.0, rtol=n * tol)
    # shift invariance, with a shift that keeps every element exact in the dtype
    c = data.draw(st.integers(-8, 8)) * 0.5
    q = fs.softmax(x + x.dtype.type(c), axis=axis, backend=backend)
    np.testing.assert_allclose(q, p, rtol=100 * tol, atol=100 * tol * p.max())


@given(x=arrays(np.float64) | arrays(np.float32), data=st.data())
def test_log_softmax_and_logsumexp_properties(backend, x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    tol = _tol(x.dtype, n)
    scale = 1.0 + float(np.abs(x).max())
    lse = fs.logsumexp(x, axis=axis, keepdims=True, backend=backend)
    mx = x.max(axis=axis, keepdims=True).astype(np.float64)
    assert np.all(lse >= mx - tol * scale)
    assert np.all(lse <= mx + np.log(n) + tol * scale)
    ls = fs.log_softmax(x, axis=axis, backend=backend)
    np.testing.assert_allclose(ls, x - lse, rtol=0, atol=4 * tol * scale)
    assert np.all(ls <= tol * scale)
