"""Arrays over 2^31 elements: 64-bit indexing in every compiled backend (the C extension on its
best ISA path), on every change, where the machine has the memory (about 9 GiB for the array; CI
machines have 24 GiB).
Skipped, with the reason shown, when it has not.  (benches/check_64bit.py is the same check by
hand, with timings.)

A float32 array of shape (2, 2^30 + 3): every offset into the second row passes 2^31.  Its rows
repeat a known pattern, so logsumexp, the cross-entropy loss and softmax (in place: no second
9 GiB) have closed forms computed in float64 over one period.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastsoftmax as fs
from conftest import COMPILED, _activate
from fastsoftmax import _dispatch

N = 2**30 + 3
PERIOD = 1000
NEED = 2 * N * 4 + 3 * 2**30        # the array, and headroom for the rest of the process


def available_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:  # Linux without psutil
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024


def _skip_reason():
    if os.environ.get("FASTSOFTMAX_SKIP_HUGE") == "1":
        return "FASTSOFTMAX_SKIP_HUGE=1"
    have = available_bytes()
    if have < NEED:
        return (f"arrays over 2^31 elements need {NEED / 2**30:.1f} GiB of available memory, "
                f"this machine has {have / 2**30:.1f} GiB")
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

BASE = np.arange(PERIOD, dtype=np.float64) / PERIOD   # x[r, j] = (j % PERIOD) / PERIOD + r


def _fill(x):
    reps, rest = divmod(N, PERIOD)
    for r in range(2):
        x[r, : reps * PERIOD].reshape(reps, PERIOD)[:] = (BASE + r).astype(np.float32)
        x[r, reps * PERIOD:] = (BASE[:rest] + r).astype(np.float32)


def _closed_forms():
    reps, rest = divmod(N, PERIOD)
    b32 = BASE.astype(np.float32).astype(np.float64)      # the values as stored
    lse = []
    for r in range(2):
        v = b32 + r
        m = v.max()
        s = reps * np.exp(v - m).sum() + np.exp(v[:rest] - m).sum()
        lse.append(np.log(s) + m)
    return b32, np.array(lse)


# the compiled backends, the C extension on its best ISA path only: the index arithmetic is one
# C source for every path (only the vector width differs), so the best path proves it and the
# run stays under a minute
HUGE_PARAMS = [p for p in COMPILED if not p.startswith("cython-")]
HUGE_PARAMS += [p for p in COMPILED if p.startswith("cython-")][:1]


def test_over_2_31_elements():
    """One test over the backends, not one per backend: the 8 GiB array is made once, and two
    test processes (./dev test runs pytest-xdist workers) never hold one each at once."""
    if not HUGE_PARAMS:
        pytest.skip("no compiled backend is built: the reference would need 17 GiB (float64)")
    x = np.empty((2, N), np.float32)
    b32, lse = _closed_forms()
    threads = fs.get_num_threads()
    fs.set_num_threads(2)   # both cores: the run stays under a minute on CI's 2-core machines
    try:
        for param in HUGE_PARAMS:
            _fill(x)
            _check(x, _activate(param), b32, lse)
    finally:
        fs.set_num_threads(threads)
        if any(p.startswith("cython-") for p in HUGE_PARAMS):
            cext = _dispatch.load("cython")
            cext.set_isa(cext.isa_paths()[0])
        del x


def _check(x, backend, b32, lse):
    got = fs.logsumexp(x, axis=1, backend=backend)
    np.testing.assert_allclose(got, lse, rtol=1e-6, err_msg=backend)
    target = np.array([5, N - 1])
    loss = fs.cross_entropy(x, target, reduction="none", backend=backend)
    want_ce = lse - np.array([b32[5], b32[(N - 1) % PERIOD] + 1])
    np.testing.assert_allclose(loss, want_ce, rtol=1e-5, err_msg=backend)
    fs.softmax(x, axis=1, out=x, backend=backend)
    for r in range(2):
        for j in (0, 1, PERIOD - 1, 2**31 - N + 1 if r else N // 2, N - 2, N - 1):
            want = np.exp(b32[j % PERIOD] + r - lse[r])
            assert abs(x[r, j] - want) / want < 1e-5, (backend, r, j, x[r, j], want)
    # the last period of row 1 (offsets past 2^31) against the closed form
    tail = x[1, -PERIOD:].astype(np.float64)
    want_tail = np.exp(b32[(np.arange(N - PERIOD, N)) % PERIOD] + 1 - lse[1])
    np.testing.assert_allclose(tail, want_tail, rtol=1e-5, err_msg=backend)
