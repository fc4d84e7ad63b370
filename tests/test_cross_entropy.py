"""cross_entropy against an independent float64 NumPy formula written from torch's documentation
(per-sample loss, then the reduction), the gradient against finite differences, fused against
separate calls, and against PyTorch itself when it is installed."""
import importlib.util

import numpy as np
import pytest

import fastsoftmax as fs
from conftest import assert_close, rtol_for

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def oracle(x, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy on (N, C) float64 logits, written out with loops."""
    smoothing = label_smoothing
    x = np.asarray(x, np.float64)
    n, c = x.shape
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    losses, denom = [], 0.0
    for i in range(n):
        row = x[i]
        mx = row.max()
        logp = row - mx - np.log(np.exp(row - mx).sum())
        if target.ndim == 2:  # probabilities
            q = w * ((1 - smoothing) * target[i] + smoothing / c)
            losses.append(-(q * logp).sum())
            denom += 1
        else:
            t = int(target[i])
            if t == ignore_index:
                losses.append(0.0)
                continue
            li = -(1 - smoothing) * w[t] * logp[t]
            if smoothing:
                li -= smoothing / c * (w * logp).sum()
            losses.append(li)
            denom += w[t]
    losses = np.array(losses)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / denom if denom else np.nan


def case(n, c, kind, seed, dtype=np.float64, ignore_some=False):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    if kind == "index":
        t = rng.integers(0, c, n)
        if ignore_some:
            t[rng.random(n) < 0.3] = -100
    else:
        t = rng.random((n, c))
        t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    return x, t


OPTIONS = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.1),
    dict(label_smoothing=1.0, reduction="sum"),
    dict(weight="w"),
    dict(weight="w", label_smoothing=0.2),
    dict(weight="w", reduction="none", label_smoothing=0.05),
    dict(ignore="yes"),
    dict(ignore="yes", weight="w", label_smoothing=0.3),
    dict(ignore="yes", ignore_index=2, reduction="sum"),
]
# (3, 5000): rows longer than the kernels' 2048-element blocks
SHAPES = [(1, 1), (3, 2), (16, 10), (5, 257), (64, 33), (300, 7), (3, 5000)]


def _opts(o, c, rng):
    o = dict(o)
    ignore = o.pop("ignore", None)
    if o.get("weight") == "w":
        o["weight"] = rng.uniform(0.2, 2.0, c)
    return o, ignore


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("opt", range(len(OPTIONS)))
@pytest.mark.parametrize("shape", SHAPES)
def test_loss_and_grad_match_oracle(backend, shape, opt, kind, dtype):
    n, c = shape
    rng = np.random.default_rng(opt)
    o, ignore = _opts(OPTIONS[opt], c, rng)
    if kind == "probs" and "ignore_index" in o:
        return  # ignore_index has no meaning for probability targets: nothing to test
    x, t = case(n, c, kind, seed=n * 100 + c, dtype=dtype, ignore_some=bool(ignore))
    if "ignore_index" in o:
        t[t == -100] = o["ignore_index"]
    x0, t0 = x.copy(), t.copy()
    loss, grad = fs.cross_entropy(x, t, return_grad=True, backend=backend, **o)
    want = oracle(x, t, **o)
    scale = float(np.abs(x).max())
    assert np.asarray(loss).dtype == np.dtype(dtype) and grad.dtype == np.dtype(dtype)
    assert_close(loss, want, dtype, atol_scale=scale)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)
    # the gradient of the returned loss (of its sum for "none") by central differences in float64
    if n * c <= 700:
        xd = x.astype(np.float64)
        h = 1e-6
        f = (lambda z: np.sum(oracle(z, t, **o)))
        num = np.empty_like(xd)
        for idx in np.ndindex(*xd.shape):
            zp, zm = xd.copy(), xd.copy()
            zp[idx] += h
            zm[idx] -= h
            num[idx] = (f(zp) - f(zm)) / (2 * h)
        tol = max(rtol_for(dtype), 1e-7)
        np.testing.assert_allclose(grad, num, rtol=1e-5 if dtype == np.float64 else 1e-3,
                                   atol=20 * tol * max(1, np.abs(num).max()))
    # fused equals separate: the loss alone is the same
    alone = fs.cross_entropy(x, t, backend=backend, **o)
    np.testing.assert_array_equal(alone, loss)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_in_place(backend, dtype):
    x, t = case(50, 31, "index", seed=1, dtype=dtype, ignore_some=True)
    want_loss, want_grad = fs.cross_entropy(x.copy(), t, return_grad=True, label_smoothing=0.1,
                                            backend="numpy")
    buf = x.copy()
    loss, grad = fs.cross_entropy(buf, t, grad_out=buf, label_smoothing=0.1, backend=backend)
    assert grad is buf
    assert_close(loss, want_loss, dtype, atol_scale=10)
    assert_close(grad, want_grad, dtype, atol_scale=1)


def test_grad_out_buffer_and_layouts(backend):
    x, t = case(40, 12, "index", seed=2)
    want_loss, want_grad = fs.cross_entropy(x, t, return_grad=True, backend="numpy")
    out = np.full_like(x, np.nan)
    loss, g = fs.cross_entropy(x, t, grad_out=out, backend=backend)
    assert g is out
    assert_close(g, want_grad, np.float64, atol_scale=1)
    xf = np.asfortranarray(x)
    loss_f, g_f = fs.cross_entropy(xf, t, grad_out=xf, backend=backend)  # in place, F order
    assert g_f is xf
    assert_close(xf, want_grad, np.float64, atol_scale=1)
    assert_close(loss_f, want_loss, np.float64, atol_scale=10)


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_class_axis_and_extra_dims(backend, kind):
    """torch's (N, C, d1, d2) layout with axis=1 equals moving the classes last."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 3, 5))
    if kind == "index":
        t = rng.integers(0, 6, (4, 3, 5))
        t_rows = t.reshape(-1)
    else:
        t = rng.random((4, 6, 3, 5))
        t /= t.sum(axis=1, keepdims=True)
        t_rows = np.moveaxis(t, 1, -1).reshape(-1, 6)
    x_rows = np.moveaxis(x, 1, -1).reshape(-1, 6)
    w = rng.uniform(0.5, 1.5, 6)
    for red in ("mean", "sum", "none"):
        loss, grad = fs.cross_entropy(x, t, axis=1, weight=w, reduction=red,
                                      label_smoothing=0.1, return_grad=True, backend=backend)
        want = oracle(x_rows, t_rows, weight=w, reduction=red, label_smoothing=0.1)
        if red == "none":
            want = want.reshape(4, 3, 5)
        assert_close(loss, want, np.float64, atol_scale=10)
        _, g_rows = fs.cross_entropy(x_rows, t_rows, weight=w, reduction=red,
                                     label_smoothing=0.1, return_grad=True, backend="numpy")
        assert_close(grad, np.moveaxis(g_rows.reshape(4, 3, 5, 6), -1, 1), np.float64, 1)


def test_unbatched_and_empty(backend):
    x = np.array([0.5, -1.0, 2.0])
    assert_close(fs.cross_entropy(x, np.array(2), backend=backend),
                 oracle(x[None], np.array([2])), np.float64, 4)
    e = np.zeros((0, 5))
    t = np.zeros(0, np.int64)
    assert np.isnan(fs.cross_entropy(e, t, backend=backend))
    assert fs.cross_entropy(e, t, reduction="sum", backend=backend) == 0
    loss, g = fs.cross_entropy(e, t, reduction="none", return_grad=True, backend=backend)
    assert loss.shape == (0,) and g.shape == (0, 5)


def test_all_ignored_mean_is_nan_and_grad_zero(backend):
    x, _ = case(6, 4, "index", seed=4)
    t = np.full(6, -100)
    loss, g = fs.cross_entropy(x, t, return_grad=True, backend=backend)
    assert np.isnan(loss)
    np.testing.assert_array_equal(g, 0)


def test_masked_logits_with_minus_inf(backend):
    """-inf logits (masked classes) are common: the loss stays finite without smoothing."""
    x, t = case(20, 9, "index", seed=5)
    x[:, 0] = -np.inf
    t[t == 0] = 1
    loss, g = fs.cross_entropy(x, t, return_grad=True, backend=backend)
    assert_close(loss, oracle(np.where(np.isinf(x), -1e300, x), t), np.float64, 10)
    assert np.all(g[:, 0] == 0) and np.all(np.isfinite(g))


def test_float16_logits(backend):
    x, t = case(30, 11, "index", seed=6, dtype=np.float16)
    loss, g = fs.cross_entropy(x, t, return_grad=True, backend=backend)
    assert np.asarray(loss).dtype == np.float16 and g.dtype == np.float16
    assert_close(loss, oracle(x.astype(np.float64), t), np.float16, 4)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is an optional peer")
@pytest.mark.parametrize("opt", range(len(OPTIONS)))
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_matches_torch(backend, opt, kind):
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(opt)
    o, ignore = _opts(OPTIONS[opt], 13, rng)
    if kind == "probs" and "ignore_index" in o:
        return
    x, t = case(37, 13, kind, seed=opt, ignore_some=bool(ignore))
    if "ignore_index" in o:
        t[t == -100] = o["ignore_index"]
    xt = torch.tensor(x, requires_grad=True)
    tk = {"weight": torch.tensor(o["weight"])} if "weight" in o else {}
    lt = F.cross_entropy(xt, torch.tensor(t), reduction=o.get("reduction", "mean"),
                         label_smoothing=o.get("label_smoothing", 0.0),
                         ignore_index=o.get("ignore_index", -100), **tk)
    lt.sum().backward()
    loss, grad = fs.cross_entropy(x, t, return_grad=True, backend=backend, **o)
    assert_close(loss, lt.detach().numpy(), np.float64, atol_scale=10)
    assert_close(grad, xt.grad.numpy(), np.float64, atol_scale=1)
