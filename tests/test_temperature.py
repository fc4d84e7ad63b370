"""temperature= and base= of softmax, log_softmax, logsumexp and cross_entropy (issue 10, item 2;
docs/training.md, "Temperature and base"), on every backend and ISA path, against independent
references: scipy.special on x / T in float64, b**x / sum(b**x) in float64 and mpmath, torch's
autograd of F.cross_entropy(x / T) when torch is importable and a NumPy formula always."""
import importlib.util

import mpmath
import numpy as np
import pytest
import scipy.special as sp

import fastsoftmax as fs
from conftest import assert_close, rtol_for, stable_seed

HAVE_TORCH = importlib.util.find_spec("torch") is not None
DTYPES = [np.float32, np.float64]


def _x(shape, dtype, *parts, scale=3.0):
    rng = np.random.default_rng(stable_seed("temperature", shape, *parts))
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _check_family(x, axis, backend, T, dtype, **kw):
    """softmax, log_softmax and logsumexp of x with ``kw`` (temperature= or base=) against scipy
    on x / T (T: the temperature, broadcast against x as keepdims)."""
    xd = x.astype(np.float64)
    z = xd / T
    ax = tuple(range(x.ndim)) if axis is None else axis
    spread = float(np.max(np.abs(z))) if z.size else 1.0
    y = fs.softmax(x, axis=axis, backend=backend, **kw)
    assert y.dtype == dtype
    # the exponent (x - m) / T is rounded in the dtype: ~spread ulps of relative error
    np.testing.assert_allclose(y, sp.softmax(z, axis=ax), atol=1e-30,
                               rtol=rtol_for(dtype) * max(1.0, spread / 10))
    assert_close(fs.log_softmax(x, axis=axis, backend=backend, **kw), sp.log_softmax(z, axis=ax),
                 dtype, atol_scale=spread)
    want = sp.logsumexp(z, axis=ax, keepdims=True)
    Tr = np.broadcast_to(T, want.shape) * want
    assert_close(fs.logsumexp(x, axis=axis, backend=backend, **kw), np.squeeze(Tr, axis=ax),
                 dtype, atol_scale=float(np.max(np.abs(xd))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_temperature(backend, dtype):
    for shape, axis in (((7, 300), -1), ((9, 20), -1), ((3, 2500), 1), ((5, 6, 7), 1),
                        ((4, 5, 6), (0, 2)), ((4, 9), None), ((6, 5), 0)):
        x = _x(shape, dtype, axis)
        for T in (0.7, 5.0):
            _check_family(x, axis, backend, T, dtype, temperature=T)
    # a layout that is not C-contiguous, and a NumPy scalar temperature
    x = np.asfortranarray(_x((6, 40), dtype, "F"))
    _check_family(x, -1, backend, 0.25, dtype, temperature=np.float32(0.25))


@pytest.mark.parametrize("dtype", DTYPES)
def test_base(backend, dtype):
    """softmax in base b is b**x / sum(b**x); logsumexp in base b is log_b(sum(b**x))."""
    x = _x((5, 33), dtype, "base", scale=2.0)
    xd = x.astype(np.float64)
    for b in (2.0, 10.0, 0.3, 0.9):
        p = b ** xd
        assert_close(fs.softmax(x, axis=-1, base=b, backend=backend), p / p.sum(-1, keepdims=True),
                     dtype)
        assert_close(fs.log_softmax(x, axis=-1, base=b, backend=backend),
                     np.log(p / p.sum(-1, keepdims=True)), dtype, atol_scale=10)
        assert_close(fs.logsumexp(x, axis=-1, base=b, backend=backend),
                     np.log(p.sum(-1)) / np.log(b), dtype, atol_scale=10)
        _check_family(x, 0, backend, 1 / np.log(b), dtype, base=b)
    # one small row in mpmath (50 digits): base 3 and base 1/3
    row = np.array([0.5, -1.25, 2.0, 2.0, -7.5], dtype)
    for b in (3.0, 1 / 3):
        mpmath.mp.dps = 50
        B = mpmath.mpf(b)
        terms = [B ** mpmath.mpf(float(v)) for v in row]
        tot = sum(terms)
        want = np.array([float(t / tot) for t in terms])
        assert_close(fs.softmax(row, base=b, backend=backend), want, dtype)
        assert_close(fs.logsumexp(row, base=b, backend=backend),
                     float(mpmath.log(tot) / mpmath.log(B)), dtype, atol_scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_row(backend, dtype):
    """One temperature per row: the reduced shape, the keepdims shape, broadcasting, bases."""
    x = _x((6, 50), dtype, "rows")
    T = np.linspace(0.3, 4.0, 6)
    for t in (T, T[:, None], T.astype(np.float32), [0.5]):
        Tk = np.reshape(np.asarray(t, np.float64), (-1, 1))
        _check_family(x, -1, backend, Tk, dtype, temperature=t)
    _check_family(x, 0, backend, np.linspace(0.5, 2, 50), dtype,
                  temperature=np.linspace(0.5, 2, 50))
    x3 = _x((3, 4, 20), dtype, "rows3")
    T3 = np.linspace(0.2, 3.0, 12).reshape(3, 4)
    _check_family(x3, -1, backend, T3[..., None], dtype, temperature=T3)
    T3m = np.linspace(0.2, 3.0, 60).reshape(3, 1, 20)          # axis 1: keepdims shape
    _check_family(x3, 1, backend, T3m, dtype, temperature=T3m)
    _check_family(x3, (0, 2), backend, np.array([0.5, 1, 2, 4])[None, :, None], dtype,
                  temperature=[0.5, 1, 2, 4])
    bases = np.array([2.0, 0.5, 10.0, 0.1, 1.5, 3.0])            # signs of ln(b) mixed
    _check_family(x, -1, backend, 1 / np.log(bases)[:, None], dtype, base=bases)
    _check_family(x3, 1, backend, 1 / np.log(np.linspace(0.2, 5, 60).reshape(3, 1, 20)), dtype,
                  base=np.linspace(0.2, 5, 60).reshape(3, 1, 20))


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_temperatures(backend, dtype):
    """T -> 0: softmax -> the one-hot of the max (ties share), logsumexp -> the max; T huge:
    softmax -> uniform, logsumexp -> T log(n) + mean, as scipy on x / T in float64."""
    x = np.array([[0.5, 2.0, -1.0, 2.0], [3.0, -4.0, 1.0, 0.0]], dtype)
    for T in (1e-30, 1e-200 if dtype == np.float64 else 1e-38):
        assert_close(fs.softmax(x, axis=-1, temperature=T, backend=backend),
                     [[0, 0.5, 0, 0.5], [1, 0, 0, 0]], dtype)
        assert_close(fs.logsumexp(x, axis=-1, temperature=T, backend=backend), [2.0, 3.0], dtype)
        assert_close(fs.log_softmax(x, axis=-1, temperature=T, backend=backend)[1, 0], 0.0, dtype)
        assert_close(fs.softmax(x, axis=-1, base=1e300, backend=backend)[1], [1, 0, 0, 0], dtype)
    xd = x.astype(np.float64)
    for T in (1e6, 1e30):
        assert_close(fs.softmax(x, axis=-1, temperature=T, backend=backend),
                     sp.softmax(xd / T, axis=-1), dtype)
        assert_close(fs.logsumexp(x, axis=-1, temperature=T, backend=backend),
                     T * sp.logsumexp(xd / T, axis=-1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_and_in_place(backend, dtype):
    x = _x((8, 70), dtype, "out")
    keep = x.copy()
    want = sp.softmax(x.astype(np.float64) / 0.6, axis=-1)
    out = np.empty_like(x)
    assert fs.softmax(x, axis=-1, temperature=0.6, out=out, backend=backend) is out
    assert_close(out, want, dtype)
    np.testing.assert_array_equal(x, keep)                     # the input is not modified
    y = x.copy()
    fs.softmax(y, axis=-1, temperature=0.6, out=y, backend=backend)
    assert_close(y, want, dtype)
    y = x.copy()
    fs.log_softmax(y, axis=-1, base=0.5, out=y, backend=backend)
    assert_close(y, sp.log_softmax(-x.astype(np.float64) * np.log(2), axis=-1), dtype,
                 atol_scale=30)
    y3 = _x((4, 9, 5), dtype, "out3")
    w3 = sp.log_softmax(y3.astype(np.float64) * 2.0, axis=1)
    fs.log_softmax(y3, axis=1, temperature=0.5, out=y3, backend=backend)  # in place, inner > 1
    assert_close(y3, w3, dtype, atol_scale=30)


def test_special_values(backend):
    """inf / -inf / NaN rows give what the plain op gives on x / T (scipy on x / T)."""
    inf, nan = np.inf, np.nan
    x = np.array([[1.0, -inf, 2.0, 0.5], [inf, 1.0, 2.0, 0.0], [-inf, -inf, -inf, -inf],
                  [nan, 1.0, 2.0, 3.0], [inf, -inf, 0.0, 1.0], [1.0, 2.0, -3.0, 0.25]])
    for dtype in DTYPES:
        xs = x.astype(dtype)
        for kw, c in ((dict(temperature=0.5), 2.0), (dict(base=0.5), -np.log(2.0)),
                      (dict(temperature=np.array([0.5, 2, 3, 4, 0.25, 1.5])),
                       1 / np.array([0.5, 2, 3, 4, 0.25, 1.5])[:, None])):
            with np.errstate(all="ignore"):
                z = x * c
                want = (sp.softmax(z, axis=-1), sp.log_softmax(z, axis=-1),
                        sp.logsumexp(z, axis=-1) / np.ravel(c))
            assert_close(fs.softmax(xs, axis=-1, backend=backend, **kw), want[0], dtype)
            assert_close(fs.log_softmax(xs, axis=-1, backend=backend, **kw), want[1], dtype,
                         atol_scale=10)
            assert_close(fs.logsumexp(xs, axis=-1, backend=backend, **kw), want[2], dtype,
                         atol_scale=10)
            xt = np.ascontiguousarray(xs.T)                    # the same along axis 0 (inner > 1)
            assert_close(fs.softmax(xt, axis=0, backend=backend, **kw), want[0].T, dtype)
            assert_close(fs.logsumexp(xt, axis=0, backend=backend, **kw), want[2], dtype,
                         atol_scale=10)
    # logsumexp's weights with a temperature: T log(sum b exp(x / T)), and its sign
    a = np.array([[0.5, 2.0, -1.0], [1.0, 1.0, 3.0]])
    b = np.array([[1.0, -0.5, 2.0], [0.0, 1.0, -1.0]])
    r, s = fs.logsumexp(a, axis=-1, b=b, temperature=0.5, return_sign=True, backend=backend)
    S = np.sum(b * np.exp(a / 0.5), axis=-1)
    assert_close(r, 0.5 * np.log(np.abs(S)), np.float64)
    np.testing.assert_array_equal(s, np.sign(S))
    assert_close(fs.logsumexp(a, axis=-1, b=np.abs(b), base=0.2, backend=backend),
                 np.log(np.sum(np.abs(b) * 0.2 ** a, axis=-1)) / np.log(0.2), np.float64)


def _ce_numpy(x, target, T, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    """F.cross_entropy(x / T) and its gradient with respect to x, written from torch's
    documentation in float64 (T broadcast against the rows)."""
    x = x.astype(np.float64)
    T = np.reshape(np.asarray(T, np.float64), (-1, 1)) if np.ndim(T) else T
    N, C = x.shape
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    logp = sp.log_softmax(x / T, axis=-1)
    if target.dtype.kind == "f":
        q = w * ((1 - smoothing) * target + smoothing / C)
        denom = N
    else:
        valid = target != ignore_index
        t = np.where(valid, target, 0)
        q = np.tile(smoothing / C * w, (N, 1))
        q[np.arange(N), t] += (1 - smoothing) * w[t]
        q[~valid] = 0
        denom = np.sum(w[t][valid])
    loss = -np.sum(q * logp, axis=-1)
    grad = (np.exp(logp) * q.sum(-1, keepdims=True) - q) / T
    if reduction == "mean":
        return loss.sum() / denom, grad / denom
    return (loss.sum() if reduction == "sum" else loss), grad


def _ce_torch(x, target, T, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    import torch
    import torch.nn.functional as F
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    Tt = torch.tensor(np.reshape(np.asarray(T, np.float64), (-1, 1))) if np.ndim(T) else T
    tt = torch.tensor(target)
    wt = None if weight is None else torch.tensor(np.asarray(weight, np.float64))
    loss = F.cross_entropy(xt / Tt, tt, weight=wt, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=smoothing)
    (gx,) = torch.autograd.grad(loss.sum(), xt)
    return loss.detach().numpy(), gx.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(backend, dtype):
    N, C = 12, 37
    x = _x((N, C), dtype, "ce")
    rng = np.random.default_rng(stable_seed("ce-target"))
    t = rng.integers(0, C, N)
    t[[2, 7]] = -100
    P = sp.softmax(rng.standard_normal((N, C)), axis=-1)
    w = rng.uniform(0.5, 2.0, C)
    Trow = np.linspace(0.3, 3.0, N)
    cases = [(t, 0.7, {}, {}), (t, 2.5, {}, dict(reduction="sum", smoothing=0.1)),
             (t, Trow, {}, dict(weight=w, reduction="none")),
             (t, Trow, {}, dict(weight=w, smoothing=0.2)), (P, 0.7, {}, {}),
             (P, Trow, {}, dict(weight=w, smoothing=0.1, reduction="sum")),
             (t, 1 / np.log(0.5), dict(base=0.5), dict(reduction="none")),
             (t, 1 / np.log(3.0), dict(base=3.0), dict(weight=w))]
    for target, T, kw, o in cases:
        kw = kw or dict(temperature=T)
        got_l, got_g = fs.cross_entropy(
            x, target, weight=o.get("weight"), reduction=o.get("reduction", "mean"),
            label_smoothing=o.get("smoothing", 0.0), return_grad=True, backend=backend, **kw)
        refs = [_ce_numpy(x, target, T, **o)]
        if HAVE_TORCH:
            refs.append(_ce_torch(x, target, T, **o))
        for want_l, want_g in refs:
            assert_close(got_l, want_l, dtype, atol_scale=10)
            assert_close(got_g, want_g, dtype, atol_scale=1)
        assert got_g.dtype == dtype
    # the gradient written over the logits (grad_out=logits), classes along axis 0
    xg = np.ascontiguousarray(x.T)
    want_l, want_g = _ce_numpy(x, t, Trow)
    loss, g = fs.cross_entropy(xg, t, axis=0, temperature=Trow, grad_out=xg, backend=backend)
    assert g is xg
    assert_close(loss, want_l, dtype, atol_scale=10)
    assert_close(g.T, want_g, dtype, atol_scale=1)


def test_plain_defaults(backend):
    """temperature=1 and base=e are the plain op, bit for bit."""
    x = _x((5, 40), np.float32, "plain")
    for f in (fs.softmax, fs.log_softmax, fs.logsumexp):
        plain = f(x, axis=-1, backend=backend)
        np.testing.assert_array_equal(f(x, axis=-1, temperature=1.0, backend=backend), plain)
        np.testing.assert_array_equal(f(x, axis=-1, temperature=1, backend=backend), plain)
        np.testing.assert_array_equal(f(x, axis=-1, base=np.e, backend=backend), plain)
    t = np.arange(5) % 40
    assert fs.cross_entropy(x, t, temperature=1.0, backend=backend) == \
        fs.cross_entropy(x, t, backend=backend)


def test_bad_input(backend):
    x = _x((4, 6), np.float64, "bad")
    keep = x.copy()
    for f in (fs.softmax, fs.log_softmax, fs.logsumexp,
              lambda x, **kw: fs.cross_entropy(x, np.zeros(4, np.int64), **kw)):
        for T in (0.0, -1.0, np.nan, np.inf, -np.inf, [1.0, 0.0, 1.0, 1.0], 1e-320):
            with pytest.raises(ValueError, match="temperature"):
                f(x, axis=-1, temperature=T, backend=backend)
        for b in (0.0, -2.0, 1.0, np.nan, np.inf, [2.0, 1.0, 2.0, 2.0]):
            with pytest.raises(ValueError, match="base"):
                f(x, axis=-1, base=b, backend=backend)
        with pytest.raises(TypeError, match="not both"):
            f(x, axis=-1, temperature=0.5, base=2.0, backend=backend)
        for T in ("0.5", 1j, True, None, [[0.5, "a"]], {"T": 1}):
            with pytest.raises(TypeError, match="temperature"):
                f(x, axis=-1, temperature=T, backend=backend)
        for T in (np.ones(6), np.ones((4, 6)), np.ones((2, 1)), np.ones((1, 4, 1))):
            with pytest.raises(ValueError, match=r"shape .* does not broadcast.*\(4,\)"):
                f(x, axis=-1, temperature=T, backend=backend)
    np.testing.assert_array_equal(x, keep)
