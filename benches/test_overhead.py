"""Per-call overhead: a tiny array, where validation and dispatch cost more than the maths.

``_tune.choose`` runs on every call with backend="auto"; it must stay far below a call's cost.
"""
import numpy as np
import pytest
import scipy.special

import fastsoftmax
from fastsoftmax import _tune

X = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)


@pytest.mark.parametrize("who", ["fastsoftmax-auto", "scipy", "numpy"])
def test_softmax_tiny(benchmark, who):
    benchmark.group = "overhead softmax float32 4x8"
    if who == "fastsoftmax-auto":
        fastsoftmax.softmax(X, axis=-1)
        benchmark(fastsoftmax.softmax, X, axis=-1)
    elif who == "scipy":
        benchmark(scipy.special.softmax, X, axis=-1)
    else:
        def np_softmax(x):
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            e /= e.sum(axis=-1, keepdims=True)
            return e
        benchmark(np_softmax, X)


def test_tune_choose(benchmark):
    benchmark.group = "overhead dispatch"
    dt = np.dtype(np.float32)
    _tune.choose("softmax", dt, (4, 8, 1))
    benchmark(_tune.choose, "softmax", dt, (4, 8, 1))
