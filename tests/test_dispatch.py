"""Backend selection, environment variables, threads and info()."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _dispatch


def test_available_backends_always_has_numpy():
    av = fs.available_backends()
    assert "numpy" in av and set(av) <= {"numpy", "numba", "cython"}


def test_required_backends_are_built():
    """`./dev test` (and so CI) demands every compiled backend, so none is silently untested."""
    required = [b for b in os.environ.get("FASTSOFTMAX_REQUIRE_BACKENDS", "").split(",") if b]
    info = fs.info()["backends"]
    for name in required:
        assert info[name]["available"], f"{name}: {info[name].get('reason')}"


def test_every_backend_gives_the_reference_answer(backend):
    x = np.random.default_rng(1).standard_normal((33, 17))
    want = fs.softmax(x, axis=1, backend="numpy")
    np.testing.assert_allclose(fs.softmax(x, axis=1, backend=backend), want, rtol=1e-13)
    with fs.use_backend(backend):
        np.testing.assert_allclose(fs.softmax(x, axis=1), want, rtol=1e-13)


def test_use_backend_nests_and_restores():
    assert _dispatch.requested() in ("auto",) + _dispatch.BACKENDS
    with fs.use_backend("numpy"):
        assert _dispatch.requested() == "numpy"
        with fs.use_backend("auto"):
            assert _dispatch.requested() == "auto"
        assert _dispatch.requested() == "numpy"
    with pytest.raises(ValueError, match="use_backend"):
        with fs.use_backend("fortran"):
            pass


def test_env_backend(monkeypatch):
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "numpy")
    assert _dispatch.requested() == "numpy"
    assert _dispatch.resolve(None, "softmax", np.dtype(np.float64), (1, 4, 1))[:1] == ("numpy",)
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "gpu")
    with pytest.raises(ValueError, match="FASTSOFTMAX_BACKEND"):
        fs.softmax(np.ones(3))


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.setitem(_dispatch._MODULES, "numba", "fastsoftmax._no_such_module")
    monkeypatch.setattr(_dispatch, "_loaded", {k: v for k, v in _dispatch._loaded.items()
                                               if k != "numba"})
    monkeypatch.setattr(_dispatch, "_failed", {})
    with pytest.raises(fs.BackendUnavailableError, match="numba"):
        fs.softmax(np.ones(3), backend="numba")
    # auto never fails because a backend is missing
    np.testing.assert_allclose(fs.softmax(np.zeros(4)), 0.25)
    assert "numba" not in fs.available_backends()
    assert "reason" in fs.info()["backends"]["numba"]


def test_threads(monkeypatch):
    old = fs.get_num_threads()
    try:
        fs.set_num_threads(1)
        assert fs.get_num_threads() == 1
        for bad in (0, -2):
            with pytest.raises(ValueError):
                fs.set_num_threads(bad)
        for bad in (1.5, "2", True):
            with pytest.raises(TypeError):
                fs.set_num_threads(bad)
    finally:
        fs.set_num_threads(old)
    monkeypatch.setattr(_dispatch, "_num_threads", None)
    monkeypatch.setenv("FASTSOFTMAX_NUM_THREADS", "3")
    assert fs.get_num_threads() == 3
    monkeypatch.setattr(_dispatch, "_num_threads", None)
    monkeypatch.setenv("FASTSOFTMAX_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="FASTSOFTMAX_NUM_THREADS"):
        fs.get_num_threads()
    monkeypatch.setattr(_dispatch, "_num_threads", old)


def test_info():
    i = fs.info()
    assert i["version"] == fs.__version__
    assert set(i["backends"]) == {"numpy", "numba", "cython"}
    assert i["threads"] >= 1
    if i["backends"]["cython"]["available"]:
        assert i["simd"] in i["backends"]["cython"]["isa_paths"]


def test_import_is_lazy():
    """import fastsoftmax loads no compiler (its time is measured by `fastsoftmax bench`)."""
    code = ("import sys, fastsoftmax; fastsoftmax.softmax([1.0, 2.0], backend='numpy'); "
            "fastsoftmax.available_backends(); print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_auto_calls_load_no_compiler():
    """The common calls under "auto" (the fast path, and the general path's odd layouts) leave
    Numba unimported when no table sends them to it, and import no package metadata."""
    code = ("import sys, numpy as np, fastsoftmax as fs; x = np.ones((4, 5)); "
            "fs.softmax(x, axis=1); fs.log_softmax(x.T, axis=0); fs.logsumexp(x); "
            "fs.cross_entropy(x, np.zeros(4, np.int64)); "
            "print('numba' in sys.modules, 'importlib.metadata' in sys.modules)")
    env = dict(os.environ, FASTSOFTMAX_NUMBA_BACKGROUND="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    if fs.info()["dispatch_table"]["builtin_match"] == "none":
        assert out.stdout.split() == ["False", "False"]
    else:  # a table of this CPU's class may send a class to Numba (compiled in the background)
        assert out.stdout.split()[1] == "False"


def test_concurrent_python_threads(backend):
    """Many Python threads calling at once get the right answers."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((64, 300 + 7 * i)).astype(np.float32) for i in range(16)]
    want = [fs.softmax(x, axis=1, backend="numpy") for x in xs]

    def work(i):
        out = None
        for _ in range(5):
            out = fs.softmax(xs[i], axis=1, backend=backend)
            lse = fs.logsumexp(xs[i], axis=1, backend=backend)
        return out, lse

    with ThreadPoolExecutor(8) as ex:
        res = list(ex.map(work, range(16)))
    for (got, lse), w, x in zip(res, want, xs):
        np.testing.assert_allclose(got, w, rtol=4e-6, atol=1e-30)
        np.testing.assert_allclose(lse, fs.logsumexp(x, axis=1, backend="numpy"), rtol=4e-6)


_BESIDE_OTHER_POOLS = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import numpy.testing  # imported up front: numpy's lazy np.testing import races between threads
import numba
import fastsoftmax as fs

backend = sys.argv[1]
try:  # torch's OpenMP pool is the other runtime a training script has loaded
    import torch
    torch.set_num_threads(2)
except ImportError:
    torch = None


@numba.njit(parallel=True, cache=False)
def numba_pool_sum(x):  # starts Numba's own threading layer
    s = np.zeros(x.shape[0])
    for i in numba.prange(x.shape[0]):
        s[i] = x[i].sum()
    return s


fs.set_num_threads(2)
rng = np.random.default_rng(3)
x = rng.standard_normal((1024, 1500)).astype(np.float32)  # large enough to use both threads
x64 = x.astype(np.float64)
m = x64.max(axis=1, keepdims=True)
want = np.exp(x64 - m) / np.exp(x64 - m).sum(axis=1, keepdims=True)
want_lse = np.log(np.exp(x64 - m).sum(axis=1)) + m[:, 0]


def work(i):
    for _ in range(4):
        if i % 3 == 0:
            assert np.allclose(numba_pool_sum(x64), x64.sum(axis=1))
        elif i % 3 == 1 and torch is not None:
            torch.softmax(torch.from_numpy(x), dim=1)
        p = fs.softmax(x, axis=1, backend=backend)
        lse = fs.logsumexp(x, axis=1, backend=backend)
        np.testing.assert_allclose(p, want, rtol=4e-6, atol=1e-30)
        np.testing.assert_allclose(lse, want_lse, rtol=4e-6)


with ThreadPoolExecutor(6) as ex:
    list(ex.map(work, range(12)))
print("ok", torch is not None)
"""


def test_beside_numba_and_torch_thread_pools(compiled_backend):
    """The kernels' threads coexist with Numba's threading layer and torch's OpenMP pool in one
    process, with several Python threads calling at once (torch joins in when installed)."""
    if compiled_backend == "cython":
        isa = _dispatch.load("cython").get_isa()
        env = dict(os.environ, FASTSOFTMAX_ISA=isa)
    else:
        env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", _BESIDE_OTHER_POOLS, compiled_backend],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0] == "ok"
