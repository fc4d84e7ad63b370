"""Real clients of scipy.special fit the same models, with the same predictions, with and
without fastsoftmax.patch_scipy() (the unpatched scipy run is the reference)."""
import os

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax.tools import realworld

_IMPORT = {"hmmlearn": "hmmlearn.hmm", "statsmodels": "statsmodels.api",
           "scikit-learn": "sklearn.decomposition"}


def _need(library):
    if os.environ.get("FASTSOFTMAX_REQUIRE_EXTRAS"):  # CI: the extra must be installed
        __import__(_IMPORT[library])
    else:
        pytest.importorskip(_IMPORT[library], reason="needs the extra fastsoftmax[clients]")


@pytest.mark.parametrize("name", list(realworld.CASES))
def test_same_fit_with_and_without_patch(name):
    case = realworld.CASES[name]
    _need(case.library)
    import scipy.special
    original = scipy.special.logsumexp
    data = case.data(case.n_test, np.random.default_rng(1))
    ref = case.summary(case.fit(data), data)
    with fastsoftmax.patched_scipy():
        assert scipy.special.logsumexp is not original
        got = case.summary(case.fit(data), data)
    assert scipy.special.logsumexp is original
    assert got.keys() == ref.keys()
    for key in ref:
        if ref[key].dtype.kind in "iu":
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{name}: {key}")
        else:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, atol=1e-9,
                                       err_msg=f"{name}: {key}")


def test_patch_reaches_the_clients_bindings():
    """statsmodels and scikit-learn bind scipy's logsumexp at import; the patch rebinds them."""
    _need("statsmodels")
    _need("scikit-learn")
    import scipy.special
    from sklearn.decomposition import _lda
    from statsmodels.tsa.regime_switching import markov_switching as ms
    original = scipy.special.logsumexp
    assert ms.logsumexp is original and _lda.logsumexp is original
    with fastsoftmax.patched_scipy():
        assert ms.logsumexp is scipy.special.logsumexp is _lda.logsumexp
        assert ms.logsumexp.__wrapped__ is original
    assert ms.logsumexp is original and _lda.logsumexp is original


def test_bench_worker_runs_in_a_fresh_process():
    _need("statsmodels")
    out = realworld.measure("MarkovRegression(k=3)", 200, True, 1)
    assert out["patched"] is True and len(out["times"]) == 1 and out["times"][0] > 0
