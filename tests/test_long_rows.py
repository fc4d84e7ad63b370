"""Accuracy that does not depend on the row length: a 10,000,000-long float32 row."""
import numpy as np
import pytest

import fastsoftmax as fs


@pytest.fixture(scope="module")
def long_row():
    rng = np.random.default_rng(11)
    return (rng.standard_normal(10_000_000) * 4).astype(np.float32)


def test_long_float32_row(compiled_backend, long_row):
    x64 = long_row.astype(np.float64)
    m = x64.max()
    e = np.exp(x64 - m)
    s = e.sum()
    want_lse = m + np.log(s)
    got_lse = fs.logsumexp(long_row, backend=compiled_backend)
    assert abs(float(got_lse) - want_lse) <= 1e-6 * abs(want_lse)
    for method in ("three_pass", "online", "auto"):
        got = fs.softmax(long_row, backend=compiled_backend, method=method)
        rel = np.abs(got.astype(np.float64) - e / s) / (e / s)
        assert rel.max() <= 1e-6, (method, rel.max())
    got_ls = fs.log_softmax(long_row, backend=compiled_backend)
    want_ls = x64 - want_lse
    assert np.abs(got_ls - want_ls).max() <= 1e-6 * np.abs(want_ls).max()
    # sum in float32 from many blocks, as a user would check it
    assert abs(float(got.sum(dtype=np.float64)) - 1.0) <= 1e-6
