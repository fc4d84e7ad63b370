"""fastsoftmax against scipy.special on a generated grid of dtypes, shapes, axes, layouts and
special values, on every backend.  scipy runs on the float64 copy of the input (the exact-er
answer); results must match it to the result dtype's tolerance, NaN for NaN and inf for inf."""
import warnings

import numpy as np
import pytest
import scipy.special as sp

import fastsoftmax as fs
from conftest import apply_layout, assert_close, stable_seed
from fastsoftmax import _registry

FUNCS = {"softmax": (fs.softmax, sp.softmax), "log_softmax": (fs.log_softmax, sp.log_softmax),
         "logsumexp": (fs.logsumexp, sp.logsumexp)}

SHAPE_AXES = _registry.OPS["softmax"].grid.cases
LAYOUTS = _registry.LAYOUTS
VALUES = _registry.VALUES


def make(shape, dtype, values, seed):
    return _registry.values(shape, dtype, np.random.default_rng(seed), values)


def call_quiet(f, *args, **kw):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return f(*args, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("values", VALUES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,axis", SHAPE_AXES)
def test_grid_matches_scipy(backend, shape, axis, layout, values, dtype):
    base = make(shape, dtype, values, seed=stable_seed(shape, axis, values))
    x = apply_layout(base, layout)
    before = x.copy()
    scale = float(np.max(np.abs(base[np.isfinite(base)]), initial=1.0))
    for name, (ours, theirs) in FUNCS.items():
        got = call_quiet(ours, x, axis=axis, backend=backend)
        want = call_quiet(theirs, base.astype(np.float64), axis=axis)
        assert np.asarray(got).dtype == np.dtype(dtype), name
        assert np.shape(got) == np.shape(want), name
        assert_close(got, want, dtype, atol_scale=0 if name == "softmax" else scale)
    np.testing.assert_array_equal(x, before)  # input untouched


@pytest.mark.parametrize(
    "dtype", [bool, np.int8, np.uint8, np.int16, np.int32, np.int64, np.float16, np.float32,
              np.float64, np.longdouble, np.complex64, np.complex128],
)
def test_result_dtypes_match_scipy(backend, dtype):
    x = (np.arange(12).reshape(3, 4) % 5).astype(dtype)
    for name, (ours, theirs) in FUNCS.items():
        try:
            want = call_quiet(theirs, x, axis=1)
        except TypeError:
            with pytest.raises(TypeError):
                ours(x, axis=1, backend=backend)
            continue
        got = call_quiet(ours, x, axis=1, backend=backend)
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        assert_close(got, call_quiet(theirs, x.astype(np.result_type(x, np.float64)), axis=1),
                     got.dtype, atol_scale=4)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.complex128, np.complex64])
@pytest.mark.parametrize("values", ["normal", "special"])
def test_fallback_dtypes_match_scipy(backend, dtype, values):
    base = make((4, 9), np.float64, values, seed=3)
    x = base.astype(dtype)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * make((4, 9), np.float64, "normal", seed=4).astype(dtype)
    for name, (ours, theirs) in FUNCS.items():
        for axis in (None, 0, 1):
            got = call_quiet(ours, x, axis=axis, backend=backend)
            want = call_quiet(theirs, x, axis=axis)
            assert np.asarray(got).dtype == np.asarray(want).dtype
            assert_close(got, want, got.dtype, atol_scale=0 if name == "softmax" else 10)


@pytest.mark.parametrize("value", [3.0, np.float32(-2.5), np.array(1.5), 7, [1.0, 2.0, 3.0],
                                   [[1, 2], [3, 4]], np.array([np.inf]), np.array([np.nan])])
def test_scalars_lists_and_0d(backend, value):
    for name, (ours, theirs) in FUNCS.items():
        got = call_quiet(ours, value, backend=backend)
        want = call_quiet(theirs, value)
        assert type(got) is type(want), (name, type(got), type(want))
        assert np.shape(got) == np.shape(want)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert_close(got, want, np.asarray(want).dtype, atol_scale=4)


@pytest.mark.parametrize("shape,axis", [((0,), None), ((0, 3), 1), ((0, 3), 0), ((3, 0), 1),
                                        ((3, 0), 0), ((2, 0, 3), (0, 1)), ((0, 0), 1)])
def test_empty_arrays(backend, shape, axis):
    x = np.ones(shape)
    for name in ("softmax", "log_softmax"):
        ours, theirs = FUNCS[name]
        try:
            want = call_quiet(theirs, x, axis=axis)
        except ValueError:
            with pytest.raises(ValueError, match="empty"):
                ours(x, axis=axis, backend=backend)
            continue
        got = ours(x, axis=axis, backend=backend)
        assert got.shape == want.shape
    # the log of an empty sum is -inf, with scipy's sign(-inf) = -1 (scipy itself fails on a
    # tuple axis here, so the expectation is written out: numpy's sum gives the result's shape)
    want = np.full(np.sum(x, axis=axis).shape, -np.inf)[()]
    got, sgn = fs.logsumexp(x, axis=axis, return_sign=True, backend=backend)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(sgn, np.sign(want))
    assert np.shape(got) == np.shape(want) == np.shape(fs.logsumexp(x, axis=axis))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bkind", ["positive", "signed", "zeros", "broadcast_row", "scalar",
                                   "cancel"])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
@pytest.mark.parametrize("values", ["normal", "special", "ties"])
def test_logsumexp_b_and_sign(backend, dtype, bkind, axis, values):
    a = make((6, 11), dtype, values, seed=5)
    rng = np.random.default_rng(6)
    if bkind == "positive":
        b = rng.uniform(0.1, 2, a.shape)
    elif bkind == "signed":
        b = rng.uniform(-1, 1, a.shape)
    elif bkind == "zeros":
        b = rng.uniform(0.1, 2, a.shape) * (rng.random(a.shape) < 0.5)
    elif bkind == "broadcast_row":
        b = rng.uniform(-1, 2, (1, 11))
    elif bkind == "scalar":
        b = 2.5
    else:  # terms that cancel exactly: a sum of zero
        a = np.tile(a[:, :1], (1, 2))
        b = np.tile(np.array([[1.0, -1.0]]), (6, 1))
    b_arr = np.asarray(b, dtype=dtype) if bkind != "scalar" else b
    a_copy = a.copy()
    for keepdims in (False, True):
        for rs in (False, True):
            got = call_quiet(fs.logsumexp, a, axis=axis, b=b_arr, keepdims=keepdims,
                             return_sign=rs, backend=backend)
            want = call_quiet(sp.logsumexp, a.astype(np.float64), axis=axis,
                              b=np.asarray(b, np.float64), keepdims=keepdims, return_sign=rs)
            scale = float(np.max(np.abs(a[np.isfinite(a)]), initial=1.0))
            if rs:
                assert_close(got[0], want[0], dtype, atol_scale=scale)
                np.testing.assert_array_equal(got[1], want[1])
                assert np.asarray(got[1]).dtype == np.dtype(dtype)
            else:
                assert_close(got, want, dtype, atol_scale=scale)
            assert np.asarray(got[0] if rs else got).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a, a_copy)


def test_logsumexp_b_broadcasts_to_larger_shape(backend):
    a = np.linspace(-2, 2, 6).reshape(2, 3)
    b = np.linspace(0.5, 2, 24).reshape(4, 2, 3)
    for axis in (None, 0, 1, 2, (1, 2)):
        assert_close(fs.logsumexp(a, axis=axis, b=b, backend=backend),
                     sp.logsumexp(a, axis=axis, b=b), np.float64, atol_scale=4)


def test_logsumexp_promotion_with_b(backend):
    for a_dt, b in [(np.float32, np.ones(3, np.float64)), (np.float32, 2.0),
                    (np.float32, [1, 1, 1]), (np.int16, np.ones(3, np.float32)),
                    (np.int64, np.ones(3, np.float32)), (np.float16, np.ones(3, np.float16)),
                    (bool, np.ones(3, np.float32)), (np.int32, None)]:
        a = np.array([1, 0, 1], dtype=a_dt)
        got = fs.logsumexp(a, b=b, backend=backend)
        want = sp.logsumexp(a, b=b)
        assert got.dtype == want.dtype, (a_dt, b)
        assert_close(got, want, got.dtype, atol_scale=2)


@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
@pytest.mark.parametrize("out_layout", ["C", "F", "strided"])
def test_out_argument(backend, func, out_layout):
    ours, theirs = FUNCS[func]
    x = make((6, 40), np.float32, "normal", seed=8)
    buf = apply_layout(np.zeros((6, 40), np.float32), out_layout)
    for axis in (0, 1, None):
        res = ours(x, axis=axis, out=buf, backend=backend)
        assert res is buf
        assert_close(buf, theirs(x.astype(np.float64), axis=axis), np.float32,
                     atol_scale=0 if func == "softmax" else 12)


@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
@pytest.mark.parametrize("layout", ["C", "F", "negstride"])
def test_in_place(backend, func, layout):
    ours, theirs = FUNCS[func]
    for axis in (0, 1, -1):
        x = apply_layout(make((9, 70), np.float64, "normal", seed=9), layout)
        want = theirs(x, axis=axis)
        res = ours(x, axis=axis, out=x, backend=backend)
        assert res is x
        assert_close(x, want, np.float64, atol_scale=12)


def test_out_overlapping_input_is_safe(backend):
    x = make((4, 64), np.float64, "normal", seed=10)
    want = sp.softmax(x[::-1], axis=1)
    fs.softmax(x[::-1], axis=1, out=x, backend=backend)  # out is x, the input x reversed
    assert_close(x, want, np.float64)
