"""patch_scipy / unpatch_scipy / patched_scipy: scipy.special's names replaced and restored, the
bound-at-import case, values against the unpatched scipy, and the messages."""
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.special

import fastsoftmax
from conftest import assert_close

NAMES = ("softmax", "log_softmax", "logsumexp")


@pytest.fixture(autouse=True)
def _always_unpatched():
    fastsoftmax.unpatch_scipy()
    yield
    fastsoftmax.unpatch_scipy()


def _originals():
    return {n: getattr(scipy.special, n) for n in NAMES}


def test_patch_replaces_and_unpatch_restores():
    orig = _originals()
    fastsoftmax.patch_scipy()
    fastsoftmax.patch_scipy()  # idempotent
    for n in NAMES:
        assert getattr(scipy.special, n) is not orig[n]
        assert getattr(scipy.special, n).__wrapped__ is orig[n]
    fastsoftmax.unpatch_scipy()
    fastsoftmax.unpatch_scipy()
    assert _originals() == orig


def test_patched_values_equal_unpatched_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 70)) * 4
    x[3, 4] = np.nan
    x[5] = -np.inf
    x[7, 1] = np.inf
    b = rng.standard_normal((50, 70))
    orig = _originals()
    with fastsoftmax.patched_scipy():
        for axis in (None, 0, 1, (0, 1)):
            for n in ("softmax", "log_softmax"):
                assert_close(getattr(scipy.special, n)(x, axis=axis), orig[n](x, axis=axis),
                             np.float64, atol_scale=20)
            got = scipy.special.logsumexp(x, axis=axis, b=b, keepdims=True, return_sign=True)
            exp = orig["logsumexp"](x, axis=axis, b=b, keepdims=True, return_sign=True)
            assert_close(got[0], exp[0], np.float64, atol_scale=20)
            np.testing.assert_array_equal(got[1], exp[1])
        assert scipy.special.logsumexp([1.0, 2.0]) == pytest.approx(orig["logsumexp"]([1, 2.]))
        # a masked array is not plain NumPy input: scipy's own function runs it
        m = np.ma.masked_array(x[:2], mask=np.zeros_like(x[:2], bool))
        assert_close(np.asarray(scipy.special.logsumexp(m, axis=1)),
                     np.asarray(orig["logsumexp"](m, axis=1)), np.float64, atol_scale=20)


def test_names_bound_at_import_are_rebound_and_restored():
    orig = _originals()
    before = types.ModuleType("fsm_client_before")
    exec("from scipy.special import logsumexp, softmax as sm", before.__dict__)
    sys.modules[before.__name__] = before
    try:
        with fastsoftmax.patched_scipy():
            assert before.logsumexp is scipy.special.logsumexp is not orig["logsumexp"]
            assert before.sm is scipy.special.softmax
            during = types.ModuleType("fsm_client_during")
            exec("from scipy.special import logsumexp", during.__dict__)
            sys.modules[during.__name__] = during
            assert during.logsumexp is scipy.special.logsumexp
        assert before.logsumexp is orig["logsumexp"] and before.sm is orig["softmax"]
        assert during.logsumexp is orig["logsumexp"]
        # opting out of the rebinding leaves bound names alone
        with fastsoftmax.patched_scipy(rebind_imported=False):
            assert before.logsumexp is orig["logsumexp"]
    finally:
        sys.modules.pop("fsm_client_before", None)
        sys.modules.pop("fsm_client_during", None)


def test_nested_context_keeps_an_outer_patch():
    fastsoftmax.patch_scipy()
    patched = scipy.special.logsumexp
    with fastsoftmax.patched_scipy():
        assert scipy.special.logsumexp is patched
    assert scipy.special.logsumexp is patched
    fastsoftmax.unpatch_scipy()


def test_without_scipy_is_an_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.special", None)
    with pytest.raises(ImportError, match="scipy is not installed"):
        fastsoftmax.patch_scipy()


def test_import_fastsoftmax_imports_neither_scipy_nor_dask():
    code = ("import sys, fastsoftmax; "
            "print(sorted(m for m in ('scipy', 'dask', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
