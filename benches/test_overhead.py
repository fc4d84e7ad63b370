"""Per-call overhead: a tiny array, where validation and dispatch cost more than the maths.

Every call with backend="auto" goes through ``_dispatch.resolve``, which asks the policy in force
(``_dispatch.policy().choose``, memoized per op, dtype, shape and thread class); both must stay far
below a call's cost.
"""
import numpy as np
import pytest
import scipy.special

import fastsoftmax
from fastsoftmax import _dispatch, _registry

X = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
SOFTMAX = _registry.OPS["softmax"]


@pytest.mark.parametrize("who", ["fastsoftmax-auto", "fastsoftmax-cython", "scipy", "numpy"])
def test_softmax_tiny(benchmark, who):
    benchmark.group = "overhead softmax float32 4x8"
    if who.startswith("fastsoftmax-"):
        backend = who.split("-", 1)[1]
        if backend != "auto":
            try:
                _dispatch.load(backend)
            except _dispatch.BackendUnavailableError as exc:
                pytest.skip(str(exc))
        kw = {"axis": -1} if backend == "auto" else {"axis": -1, "backend": backend}
        fastsoftmax.softmax(X, **kw)
        benchmark(fastsoftmax.softmax, X, **kw)
    elif who == "scipy":
        benchmark(scipy.special.softmax, X, axis=-1)
    else:
        def np_softmax(x):
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            e /= e.sum(axis=-1, keepdims=True)
            return e
        benchmark(np_softmax, X)


def test_policy_choose(benchmark):
    benchmark.group = "overhead dispatch"
    dt = np.dtype(np.float32)
    pol = _dispatch.policy()
    nthreads = fastsoftmax.get_num_threads()
    first = pol.choose(SOFTMAX.name, SOFTMAX.scheme, dt, (4, 8, 1), nthreads)
    got = benchmark(pol.choose, SOFTMAX.name, SOFTMAX.scheme, dt, (4, 8, 1), nthreads)
    assert got == first


def test_resolve(benchmark):
    benchmark.group = "overhead dispatch"
    dt = np.dtype(np.float32)
    name, _, method = _dispatch.resolve(None, SOFTMAX, dt, (4, 8, 1))
    got = benchmark(_dispatch.resolve, None, SOFTMAX, dt, (4, 8, 1))
    assert (got[0], got[2]) == (name, method)
    assert name in fastsoftmax.available_backends()
