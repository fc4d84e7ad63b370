"""where= (jax.nn.softmax's masks) on softmax, log_softmax, logsumexp and the two backward passes,
on every backend and ISA path (the ``backend`` fixture), against independent references:

* ``jax_def``: jax's definition written out in NumPy (float64): the max and the sum over the True
  entries (``initial=-inf``), ``where(mask, result, 0 / -inf)`` -- always run, so nothing skips;
* jax itself (``jax.nn.softmax(x, where=...)``) where importable, on finite inputs;
* scipy.special on the True entries of each row alone, for NaN / inf inside the mask (the
  documented semantics: the plain op on the masked-in entries; masked-out values never leak);
* backward passes: the NumPy formula and central finite differences of the forward formula.

Kernel level: the masked entries' per-row ``scale`` (softmax(x * scale[row]), for temperature)
against the reference backend and the formula.  Cheap by design: ~40 cases per backend.
"""
import numpy as np
import pytest
import scipy.special as sp

import fastsoftmax as fs
from fastsoftmax import _dispatch, _registry
from fastsoftmax.ops.masked import reduce_mask

from conftest import assert_close, stable_seed

try:
    import jax
    import jax.numpy as jnp
except ImportError:     # jax is an extra reference; the NumPy one always runs
    jax = None


# ------------------------------------------------------------------------------ references
def jax_def(x, w, axis, kind):
    """jax.nn.softmax / log_softmax / logsumexp's definition with where=, in float64 NumPy."""
    x = np.asarray(x, np.float64)
    w = np.broadcast_to(w, x.shape)
    with np.errstate(all="ignore"):
        xs = np.where(w, x, -np.inf)
        m = np.max(xs, axis=axis, keepdims=True)
        if kind == "softmax":
            u = np.exp(xs - m)
            return np.where(w, u / np.sum(np.where(w, u, 0), axis=axis, keepdims=True), 0)
        ms = np.where(np.isfinite(m), m, 0)
        sh = xs - ms
        lse = np.log(np.sum(np.where(w, np.exp(sh), 0), axis=axis, keepdims=True))
        if kind == "log_softmax":
            return np.where(w, sh - lse, -np.inf)
        return (lse + ms).squeeze(axis)


def subset_ref(x, w, kind):
    """scipy.special's op on the True entries of each row (last axis) alone."""
    x = np.asarray(x, np.float64)
    w = np.broadcast_to(w, x.shape)
    if kind == "logsumexp":
        r = np.empty(x.shape[:-1])
        s = np.empty(x.shape[:-1])
        for i in np.ndindex(x.shape[:-1]):
            sub = x[i][w[i]]
            r[i], s[i] = (-np.inf, 0.0) if sub.size == 0 else sp.logsumexp(sub, return_sign=True)
        return r, s
    out = np.full(x.shape, -np.inf if kind == "log_softmax" else 0.0)
    f = sp.log_softmax if kind == "log_softmax" else sp.softmax
    with np.errstate(all="ignore"):
        for i in np.ndindex(x.shape[:-1]):
            if w[i].any():
                out[i][w[i]] = f(x[i][w[i]])
    return out


def causal(n):
    return np.tril(np.ones((n, n), bool))


def _call(kind, x, axis, where, backend, **kw):
    if kind == "logsumexp":
        return fs.logsumexp(x, axis=axis, where=where, backend=backend, **kw)
    return getattr(fs, kind)(x, axis=axis, where=where, backend=backend, **kw)


# (shape, mask shape or "causal", axis, dtype)
CASES = [
    ((4, 37), (4, 37), -1, np.float32),            # random, one fully masked row
    ((3, 9, 9), "causal", -1, np.float64),         # (n, n) causal over a batch
    ((5, 40), (5, 1), -1, np.float32),             # row-only
    ((6, 70), (70,), -1, np.float64),              # class-only
    ((13, 6), (13, 1), 0, np.float32),             # axis not last
    ((3, 4, 5), (3, 1, 5), (0, 2), np.float64),    # an axis tuple
]


def _case(shape, mshape, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3)
    if mshape == "causal":
        w = causal(shape[-1])
    else:
        w = rng.random(mshape) < 0.6
        if len(mshape) > 1 and mshape[-1] > 1:
            w[0] = False                            # a row with no True entry
    return x, w


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,mshape,axis,dtype", CASES)
def test_softmax_where(backend, kind, shape, mshape, axis, dtype):
    x, w = _case(shape, mshape, stable_seed(kind, shape, mshape))
    x = x.astype(dtype)
    x0, w0 = x.copy(), w.copy()
    got = _call(kind, x, axis, w, backend)
    assert got.dtype == dtype and got.shape == x.shape
    exp = jax_def(x, w, axis, kind)
    assert_close(got, exp, dtype, atol_scale=10.0 if kind == "log_softmax" else 0.0)
    off = ~np.broadcast_to(w, x.shape)
    assert np.all(got[off] == (0 if kind == "softmax" else -np.inf))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)
    if jax is not None:
        jw = jnp.asarray(np.broadcast_to(w, x.shape))
        jx = jnp.asarray(x.astype(np.float32))
        ref = np.asarray(getattr(jax.nn, kind)(jx, axis=axis, where=jw))
        assert_close(got.astype(np.float32), ref, np.float32,
                     atol_scale=10.0 if kind == "log_softmax" else 0.0)


LSE_CASES = [
    ((4, 37), (4, 37), -1, np.float32, {}),
    ((3, 9, 9), "causal", -1, np.float64, {"return_sign": True}),
    ((6, 70), (70,), 1, np.float32, {"keepdims": True}),
    ((13, 6), (13, 1), 0, np.float64, {"return_sign": True, "keepdims": True}),
    ((3, 4, 5), (3, 1, 5), (0, 2), np.float32, {}),
    ((5, 40), (5, 40), -1, np.float64, {"b": "weights", "return_sign": True}),
]


@pytest.mark.parametrize("shape,mshape,axis,dtype,kw", LSE_CASES)
def test_logsumexp_where(backend, shape, mshape, axis, dtype, kw):
    x, w = _case(shape, mshape, stable_seed("lse", shape, mshape))
    x = x.astype(dtype)
    kw = dict(kw)
    b = None
    if kw.get("b") == "weights":
        rng = np.random.default_rng(1)
        b = rng.uniform(-1, 2, shape[-1:]).astype(dtype)     # negative weights: signs
        kw["b"] = b
    got = fs.logsumexp(x, axis=axis, where=w, backend=backend, **kw)
    # scipy with the mask folded into b on the True entries alone: a = -inf, b = 0 elsewhere
    wb = np.broadcast_to(w, x.shape)
    bb = np.ones(x.shape) if b is None else np.broadcast_to(b, x.shape).astype(np.float64)
    with np.errstate(all="ignore"):
        exp = sp.logsumexp(np.where(wb, x.astype(np.float64), -np.inf), axis=axis,
                           b=np.where(wb, bb, 0), keepdims=kw.get("keepdims", False),
                           return_sign=kw.get("return_sign", False))
    if b is None:   # and jax's definition
        jd = jax_def(x, w, axis, "logsumexp")
        ref = exp[0] if kw.get("return_sign") else exp
        assert_close(np.reshape(ref, jd.shape), jd, np.float64, atol_scale=10.0)
    if kw.get("return_sign"):
        assert got[0].dtype == dtype and got[1].dtype == dtype
        assert_close(got[0], exp[0], dtype, atol_scale=10.0)
        np.testing.assert_array_equal(got[1], exp[1])
    else:
        assert got.dtype == dtype
        assert_close(got, exp, dtype, atol_scale=10.0)
    if jax is not None and b is None:
        ref = jax.nn.logsumexp(jnp.asarray(x.astype(np.float32)), axis=axis,
                               where=jnp.asarray(wb), keepdims=kw.get("keepdims", False))
        r = got[0] if kw.get("return_sign") else got
        assert_close(np.asarray(r, np.float32), np.asarray(ref), np.float32, atol_scale=10.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(backend, dtype):
    """NaN / +-inf inside the mask follow the plain op on the True entries; outside it they
    never reach a result."""
    nan, inf = np.nan, np.inf
    x = np.array([[1.0, nan, 2.0, inf, -inf, 0.5],     # masked-out NaN / inf: a finite row
                  [1.0, nan, 2.0, 3.0, 0.0, 0.5],      # masked-in NaN
                  [1.0, inf, 2.0, -inf, 0.0, 0.5],     # masked-in +inf
                  [-inf, -inf, 5.0, nan, 0.0, 0.5],    # masked-in all -inf
                  [nan, inf, -inf, 1.0, 2.0, 3.0],     # nothing masked in
                  [0.0, -60.0, nan, inf, -inf, 7.0]],  # a dominant entry (log_softmax)
                 dtype)
    w = np.array([[1, 0, 1, 0, 0, 1],
                  [1, 1, 1, 0, 1, 0],
                  [1, 1, 1, 1, 0, 0],
                  [1, 1, 0, 0, 0, 0],
                  [0, 0, 0, 0, 0, 0],
                  [1, 1, 0, 0, 0, 0]], bool)
    x0 = x.copy()
    for kind in ("softmax", "log_softmax"):
        got = _call(kind, x, -1, w, backend)
        assert_close(got, subset_ref(x, w, kind), dtype, atol_scale=60.0 * (kind != "softmax"))
        if kind == "log_softmax":     # the dominant entry to its own precision, not to 0
            assert_close(got[5, 0], -np.exp(-60.0), dtype)
    r, s = fs.logsumexp(x, axis=-1, where=w, return_sign=True, backend=backend)
    er, es = subset_ref(x, w, "logsumexp")
    assert_close(r, er, dtype, atol_scale=10.0)
    np.testing.assert_array_equal(s, es.astype(dtype))
    assert r[4] == -np.inf and s[4] == 0
    # on finite masked-in values (masked-out NaN / inf), jax's definition agrees
    assert_close(fs.softmax(x[:1], axis=-1, where=w[:1], backend=backend),
                 jax_def(x[:1], w[:1], -1, "softmax"), dtype)
    np.testing.assert_array_equal(x, x0)


def _fd_grad(f, x, g, eps=1e-6):
    """d sum(g * f(x)) / dx by central differences, float64."""
    d = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        d[i] = (np.sum(g * f(xp)) - np.sum(g * f(xm))) / (2 * eps)
    return d


@pytest.mark.parametrize("log", [False, True])
def test_backward_where(backend, log):
    rng = np.random.default_rng(stable_seed("bwd", log))
    B, n = 2, 7
    x = rng.standard_normal((B, n, n))
    w = causal(n)
    w[0, :] = False      # the first query sees nothing: all-0 output, all-0 gradient
    kind = "log_softmax" if log else "softmax"
    y = jax_def(x, w, -1, kind)
    g = rng.standard_normal(x.shape)
    g[:, ~w] = np.nan                                   # masked-out gradients are ignored
    fn = fs.log_softmax_backward if log else fs.softmax_backward
    g0 = g.copy()
    got = fn(g, y, axis=-1, where=w, backend=backend)
    np.testing.assert_array_equal(g, g0)
    wb = np.broadcast_to(w, x.shape)
    gm = np.where(wb, g, 0)
    if log:
        formula = gm - np.exp(y) * gm.sum(-1, keepdims=True)
    else:
        formula = y * (gm - (gm * y).sum(-1, keepdims=True))
    formula = np.where(wb, formula, 0)
    assert_close(got, formula, np.float64)
    fd = _fd_grad(lambda v: np.where(wb, jax_def(v, w, -1, kind), 0), x, gm)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7)
    # float32, in place (out=grad), a class-only mask along axis 0
    g32 = rng.standard_normal((9, 5)).astype(np.float32)
    w32 = rng.random((9, 1)) < 0.7
    y32 = jax_def(rng.standard_normal((9, 5)), w32, 0, kind).astype(np.float32)
    gw = np.where(w32, g32.astype(np.float64), 0)
    e = gw - np.exp(y32.astype(np.float64)) * gw.sum(0) if log else \
        y32 * (gw - (gw * y32).sum(0))
    exp32 = np.where(w32, e, 0)
    res = fn(g32, y32, axis=0, where=w32, out=g32, backend=backend)
    assert res is g32
    assert_close(g32, exp32, np.float32, atol_scale=1.0)


def test_out_and_in_place(backend):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 50)) * 3).astype(np.float32)
    w = rng.random(50) < 0.5
    exp = jax_def(x, w, -1, "softmax")
    out = np.empty((6, 50), np.float32, order="F")          # a non-contiguous out: a temporary
    assert fs.softmax(x, axis=-1, where=w, out=out, backend=backend) is out
    assert_close(out, exp, np.float32)
    xi = x.copy()
    assert fs.log_softmax(xi, axis=-1, where=w, out=xi, backend=backend) is xi   # in place
    assert_close(xi, jax_def(x, w, -1, "log_softmax"), np.float32, atol_scale=10.0)
    xc = (rng.standard_normal((2, 8, 8)) * 3)                # causal rows (one range each)
    for log in (False, True):                                # in place
        kind = "log_softmax" if log else "softmax"
        xi = xc.copy()
        assert getattr(fs, kind)(xi, axis=-1, where=causal(8), out=xi, backend=backend) is xi
        assert_close(xi, jax_def(xc, causal(8), -1, kind), np.float64, atol_scale=10.0)
    xs = x[:, ::2]                                           # strided input: copied to rows
    assert_close(fs.softmax(xs, axis=-1, where=w[::2], backend=backend),
                 jax_def(xs, w[::2], -1, "softmax"), np.float32)


def test_other_dtypes(backend):
    """float16 / int inputs: the plain op's result dtype (scipy's)."""
    w = np.array([True, False, True, True])
    for x in (np.array([1.0, 2.0, 3.0, 0.5], np.float16), np.arange(4)):
        got = fs.softmax(x, where=w, backend=backend)
        assert got.dtype == fs.softmax(x, backend=backend).dtype
        assert_close(got, jax_def(x, w, -1, "softmax"), got.dtype)
        r = fs.logsumexp(x, where=w, backend=backend)
        assert np.asarray(r).dtype == np.asarray(fs.logsumexp(x, backend=backend)).dtype
        assert_close(r, jax_def(x, w, -1, "logsumexp"), np.asarray(r).dtype, atol_scale=4.0)
    assert fs.softmax(np.float64(2.0), where=np.bool_(False), backend=backend) == 0.0


# -------------------------------------------------------------------------- kernel level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_scale(backend, dtype):
    """The masked entries' per-row scale: softmax(x * scale[row]) (temperature), against the
    reference backend and the formula; 1 and 2 threads (a call big enough for two)."""
    mod, ref = _dispatch.load(backend), _dispatch.load("numpy")
    rng = np.random.default_rng(stable_seed("scale", dtype))
    n = 40
    mask = np.ascontiguousarray(causal(n)).view(np.uint8)
    for outer, nt in ((8, 1), (16384, 2)):
        x = (rng.standard_normal((outer, n)) * 3).astype(dtype)
        rowmap = (np.arange(outer) % n).astype(np.int64)
        scale = rng.uniform(0.2, 3.0, outer)
        wb = mask[rowmap] != 0
        v = x.astype(np.float64) * scale[:, None]
        for log in (False, True):
            kind = "log_softmax" if log else "softmax"
            out = np.empty_like(x)
            mod.softmax_masked(x, mask, rowmap, out, log, scale, nt)
            exp = jax_def(v, wb, -1, kind)
            assert_close(out, exp, dtype, atol_scale=30.0 if log else 0.0)
            if outer < 100:
                r2 = np.empty_like(x)
                ref.softmax_masked(x, mask, rowmap, r2, log, scale, 1)
                assert_close(out, r2, dtype, atol_scale=30.0 if log else 0.0)
        r, s = np.empty(outer, dtype), np.empty(outer, dtype)
        mod.logsumexp_masked(x, mask, rowmap, r, s, scale, nt)
        assert_close(r, jax_def(v, wb, -1, "logsumexp"), dtype, atol_scale=30.0)
        assert np.all(s == 1)


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("opt", ["T=0.4", "T per row", "base=0.5"])
def test_where_with_temperature(backend, kind, opt):
    """where= and temperature= / base= in one call: jax's definition on x * c (c = 1/T, or
    ln(base): negative below 1, so the smooth min), logsumexp times T, float64 NumPy."""
    x, w = _case((3, 9, 9), "causal", stable_seed("wt", kind, opt))
    w = w.copy()
    w[4] = False                                    # one row with no True entry
    if opt == "T=0.4":
        kw, c = {"temperature": 0.4}, np.full((3, 9, 1), 1 / 0.4)
    elif opt == "T per row":
        t = np.random.default_rng(1).uniform(0.3, 3.0, (3, 9))
        kw, c = {"temperature": t}, 1 / t[..., None]
    else:
        kw, c = {"base": 0.5}, np.full((3, 9, 1), np.log(0.5))
    got = _call(kind, x, -1, w, backend, **kw)
    want = jax_def(x * c, w, -1, kind)
    if kind == "logsumexp":
        want = want / c[..., 0]
    assert_close(got, want, np.float64, atol_scale=10)


def test_mask_reduced_to_its_rows():
    B, n = 4, 16
    m, rmap = reduce_mask(causal(n), (B, n, n), (2,))
    assert m.shape == (n, n) and m.dtype == np.uint8 and m.flags.c_contiguous
    np.testing.assert_array_equal(rmap, np.tile(np.arange(n), B))
    m, rmap = reduce_mask(np.ones(n, bool), (B * n, n), (1,))
    assert m.shape == (1, n) and rmap.shape == (B * n,) and not rmap.any()
    rows = np.array([[True], [False], [True], [True]])
    m, rmap = reduce_mask(rows, (B, n), (1,))
    assert m.shape == (2, n)
    np.testing.assert_array_equal(m[rmap] != 0, np.broadcast_to(rows, (B, n)))
    m, rmap = reduce_mask(np.ones((B, 1, n), bool), (B, 3, n), (0, 2))    # axes moved last
    assert m.shape == (1, B * n) and rmap.shape == (3,)


def test_registry_names_the_masked_entries():
    for op in _registry.OPS.values():
        if op.masked is not None:
            for name in fs.available_backends():
                assert callable(getattr(_dispatch.load(name), op.masked, None)), (name, op)
    assert {op.name for op in _registry.OPS.values() if op.masked} == {
        "softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward"}


def test_bad_where(backend):
    x = np.zeros((3, 4), np.float32)
    x0 = x.copy()
    with pytest.raises(TypeError, match="boolean"):
        fs.softmax(x, axis=-1, where=np.ones((3, 4), int), backend=backend)
    with pytest.raises(TypeError, match="boolean"):
        fs.logsumexp(x, axis=-1, where=np.ones(4, np.float32), backend=backend)
    with pytest.raises(ValueError, match=r"\(5,\).*\(3, 4\)"):
        fs.log_softmax(x, axis=-1, where=np.ones(5, bool), backend=backend)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(3, 4\)"):      # would grow x
        fs.softmax(x, axis=-1, where=np.ones((2, 3, 4), bool), backend=backend)
    with pytest.raises(ValueError, match="broadcast"):
        fs.softmax_backward(x, x, where=np.ones((4, 3), bool), backend=backend)
    with pytest.raises(TypeError, match="boolean"):
        fs.log_softmax_backward(x, x, where=[1, 0, 1, 1], backend=backend)
    with pytest.raises(ValueError, match="same shape"):
        fs.softmax_backward(x, x[:2], where=np.ones(4, bool), backend=backend)
    np.testing.assert_array_equal(x, x0)


def test_numba_warms_the_masked_entries():
    """"auto" compiles Numba's kernels in the background with backends.numba.warm(entry,
    signature): the masked entries' warm-up shapes fit their arguments (out in place too)."""
    if "numba" not in fs.available_backends():
        return      # nothing to warm (the other tests run the reference and C)
    nb = _dispatch.load("numba")
    x = np.zeros((3, 5), np.float32)
    mask, rowmap = np.ones((1, 5), np.uint8), np.zeros(3, np.int64)
    r = np.zeros(3, np.float32)
    # the signatures the tests above compile already (no compile of its own in this file)
    calls = {"softmax_masked": (x, mask, rowmap, x.copy(), True, np.ones(3), 1),
             "logsumexp_masked": (x, mask, rowmap, r, r.copy(), np.ones(3), 1),
             "softmax_backward_masked": (x, x.copy(), mask, rowmap, x, False, 1)}
    for entry, args in calls.items():
        nb.warm(entry, _dispatch.signature(args))
