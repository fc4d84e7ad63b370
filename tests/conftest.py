"""Shared fixtures: every test that takes ``backend`` runs on every available backend (and on
every SIMD path of the C extension this CPU supports); tolerances per dtype live here."""
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastsoftmax
from fastsoftmax import _dispatch

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("dev", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
# ./dev fuzz (tests/test_fuzz.py): random (not derandomized) runs of a fixed size, repeated with
# new seeds until the time budget is spent
settings.register_profile(
    "fuzz", deadline=None, derandomize=False, print_blob=True,
    max_examples=int(os.environ.get("FASTSOFTMAX_FUZZ_EXAMPLES", "1000")),
    suppress_health_check=list(HealthCheck),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _no_user_tuning(tmp_path_factory):
    """A tuning file in the user's cache must not steer what "auto" runs in the tests."""
    old = os.environ.get("FASTSOFTMAX_TUNE_FILE")
    os.environ["FASTSOFTMAX_TUNE_FILE"] = str(tmp_path_factory.mktemp("tune") / "tune.json")
    _dispatch.invalidate()
    yield
    if old is None:
        os.environ.pop("FASTSOFTMAX_TUNE_FILE", None)
    else:
        os.environ["FASTSOFTMAX_TUNE_FILE"] = old
    _dispatch.invalidate()


def _backend_params():
    params = []
    for name in fastsoftmax.available_backends():
        if name == "cython":
            for isa in _dispatch.load("cython").isa_paths():
                params.append(f"cython-{isa}")
        else:
            params.append(name)
    return params


BACKEND_PARAMS = _backend_params()
COMPILED = [p for p in BACKEND_PARAMS if p != "numpy"]


def _activate(param):
    """Return the backend name for ``param``, switching the C extension's SIMD path if needed."""
    if param.startswith("cython-"):
        _dispatch.load("cython").set_isa(param.split("-", 1)[1])
        return "cython"
    return param


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    name = _activate(request.param)
    yield name
    if name == "cython":
        cext = _dispatch.load("cython")
        cext.set_isa(cext.isa_paths()[0])


@pytest.fixture(params=COMPILED or ["numpy"])
def compiled_backend(request):
    """The compiled backends (the reference alone when none is built, so nothing is skipped)."""
    name = _activate(request.param)
    yield name
    if name == "cython":
        cext = _dispatch.load("cython")
        cext.set_isa(cext.isa_paths()[0])


# relative tolerance of a result computed in each dtype, against an exact reference
RTOL = {np.float16: 4e-3, np.float32: 4e-6, np.float64: 2e-14}


def rtol_for(dtype):
    dt = np.dtype(dtype)
    if dt.kind == "c":
        dt = np.finfo(dt).dtype
    return RTOL.get(dt.type, RTOL[np.float64])


def assert_close(actual, expected, dtype, atol_scale=0.0):
    """Elementwise closeness with NaN matching NaN and infinities matching exactly.

    ``atol_scale`` is the magnitude of the inputs for results that are differences of inputs
    (log_softmax, logsumexp): their absolute error scales with it, not with the result.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if np.iscomplexobj(actual) or np.iscomplexobj(expected):
        assert_close(actual.real, expected.real, dtype, atol_scale)
        assert_close(actual.imag, expected.imag, dtype, max(atol_scale, 1.0))
        return
    rtol = rtol_for(dtype)
    atol = 4 * rtol * max(1.0, atol_scale) if atol_scale else np.finfo(dtype).tiny * 8
    np.testing.assert_allclose(
        actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol,
        equal_nan=True,
    )


def stable_seed(*parts) -> int:
    """A seed derived from a test's parameters, the same in every process (``hash()`` of a string
    is salted per process, so a failing case could not be replayed)."""
    return zlib.crc32(repr(parts).encode())


def apply_layout(x, layout):
    """``x`` (same values) in one of ``fastsoftmax._registry.LAYOUTS``."""
    if layout == "C":
        return np.ascontiguousarray(x)
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        big = np.repeat(x, 2, axis=-1)
        return big[..., ::2]
    if layout == "negstride":
        return np.ascontiguousarray(x[::-1])[::-1]
    if layout == "readonly":
        y = x.copy()
        y.flags.writeable = False
        return y
    if layout == "byteswapped":
        return x.astype(x.dtype.newbyteorder(">" if np.little_endian else "<"))
    raise AssertionError(layout)
