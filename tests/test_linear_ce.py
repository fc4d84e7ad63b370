"""linear_cross_entropy (issue 11) against cross_entropy on the explicit logits (with softcap's
chain rule and the z-loss written out here), against torch autograd, and its memory
(tracemalloc).  Every test with ``backend`` runs on every backend."""
import tracemalloc

import numpy as np
import pytest
from scipy.special import logsumexp

import fastsoftmax as fs
from fastsoftmax.ops import linear_ce

OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.15},
    {"class_weight": True},
    {"class_weight": True, "label_smoothing": 0.1, "reduction": "sum"},
    {"ignore_index": 2},
    {"softcap": 2.5},
    {"z_loss": 0.01},
    {"z_loss": 0.02, "reduction": "none", "softcap": 1.5},
    {"z_loss": 0.01, "label_smoothing": 0.2, "class_weight": True, "reduction": "sum"},
    {"z_loss": 0.03, "class_weight": True, "ignore_index": 1},
    {"z_loss": 0.01, "label_smoothing": 0.1, "softcap": 4.0, "ignore_index": 0},
]


def _problem(seed, N=29, V=23, H=7, dtype=np.float64, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H)).astype(dtype)
    W = (rng.standard_normal((V, H)) * 0.7).astype(dtype)
    b = (rng.standard_normal(V) * 0.2).astype(dtype) if bias else None
    t = rng.integers(0, V, N)
    cw = rng.uniform(0.3, 2.0, V).astype(dtype)
    return x, W, b, t, cw


def _opts(opts, cw):
    o = dict(opts)
    if o.get("class_weight"):
        o["class_weight"] = cw
    return o


def _explicit(x, W, b, t, opts):
    """The loss and (dx, dW, db) from cross_entropy on explicit float64 logits, softcap's chain
    factor and the z-loss (z lse^2 per non-ignored row, its gradient 2 z lse p) written out."""
    o = dict(opts)
    cap, z = o.pop("softcap", None), o.pop("z_loss", 0.0)
    red = o.pop("reduction", "mean")
    x, W = x.astype(np.float64), W.astype(np.float64)
    raw = x @ W.T + (0.0 if b is None else b.astype(np.float64))
    lg = raw if cap is None else cap * np.tanh(raw / cap)
    cw = o.pop("class_weight", None)
    cw = None if cw is None else cw.astype(np.float64)
    ce, g = fs.cross_entropy(lg, t, weight=cw, reduction=red, return_grad=True,
                             backend="numpy", **o)
    ign = o.get("ignore_index", -100)
    valid = t != ign
    if z:
        lse = logsumexp(lg, axis=1)
        p = np.exp(lg - lse[:, None])
        zr = np.where(valid, z * lse ** 2, 0.0)
        zg = np.where(valid, 2 * z * lse, 0.0)[:, None] * p
        if red == "none":
            ce = ce + zr
        elif red == "sum":
            ce, zg = ce + zr.sum(), zg
        else:
            ce, zg = ce + zr.sum() / valid.sum(), zg / valid.sum()
        g = g + zg
    if cap is not None:
        g = g * (1 - np.tanh(raw / cap) ** 2)
    return ce, g @ W, g.T @ x, g.sum(axis=0)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}" for k in o) or "plain")
def test_matches_cross_entropy_on_explicit_logits(backend, opts):
    x, W, b, t, cw = _problem(3)
    if "ignore_index" in opts:
        t[::4] = opts["ignore_index"]
    want = _explicit(x, W, b, t, _opts(opts, cw))
    for chunk in (None, 1, 4, 29):
        got = fs.linear_cross_entropy(x, W, t, b, return_grad=True, chunk_size=chunk,
                                      backend=backend, **_opts(opts, cw))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
        loss_only = fs.linear_cross_entropy(x, W, t, b, chunk_size=chunk, backend=backend,
                                            **_opts(opts, cw))
        np.testing.assert_allclose(loss_only, want[0], rtol=1e-11, atol=1e-13)


def test_float32_and_no_bias(backend):
    x, W, _, t, cw = _problem(4, N=300, V=50, H=16, dtype=np.float32, bias=False)
    loss, dx, dW, db = fs.linear_cross_entropy(x, W, t, return_grad=True, chunk_size=64,
                                               z_loss=1e-3, backend=backend)
    assert db is None and loss.dtype == np.float32 and dx.dtype == dW.dtype == np.float32
    want = _explicit(x, W, None, t, {"z_loss": 1e-3})
    np.testing.assert_allclose(loss, want[0], rtol=2e-6)
    np.testing.assert_allclose(dx, want[1], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dW, want[2], rtol=1e-4, atol=1e-7)


def test_float32_loss_sums_in_float64(backend):
    """4096 rows of one loss each: a float32 running sum would drift by ~1e-5 relative."""
    rng = np.random.default_rng(8)
    N, V, H = 4096, 8, 4
    x = rng.standard_normal((N, H)).astype(np.float32)
    W = rng.standard_normal((V, H)).astype(np.float32)
    t = rng.integers(0, V, N)
    got = fs.linear_cross_entropy(x, W, t, reduction="sum", chunk_size=100, backend=backend)
    rows = fs.cross_entropy(x.astype(np.float64) @ W.T.astype(np.float64), t,
                            reduction="none", backend="numpy")
    np.testing.assert_allclose(got, rows.sum(), rtol=2e-6)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}" for k in o) or "plain")
def test_matches_torch_autograd(backend, opts):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, W, b, t, cw = _problem(5, N=17, V=31, H=6)
    if "ignore_index" in opts:
        t[::3] = opts["ignore_index"]
    o = _opts(opts, cw)
    got = fs.linear_cross_entropy(x, W, t, b, return_grad=True, chunk_size=5, backend=backend,
                                  **o)
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    lg = F.linear(xt, Wt, bt)
    if o.get("softcap"):
        lg = o["softcap"] * torch.tanh(lg / o["softcap"])
    red = o.get("reduction", "mean")
    ign = o.get("ignore_index", -100)
    wt = None if o.get("class_weight") is None else torch.tensor(cw)
    tt = torch.tensor(t)
    kw = dict(weight=wt, ignore_index=ign, label_smoothing=o.get("label_smoothing", 0.0))
    loss = F.cross_entropy(lg, tt, reduction=red, **kw)
    if o.get("z_loss"):
        valid = tt != ign
        zr = torch.where(valid, o["z_loss"] * torch.logsumexp(lg, 1) ** 2, 0.0)
        loss = loss + (zr if red == "none" else zr.sum() if red == "sum"
                       else zr.sum() / valid.sum())
    grads = torch.autograd.grad(loss.sum(), (xt, Wt, bt))
    want = (loss.detach().numpy(),) + tuple(g.numpy() for g in grads)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_dweight_matches_torch_float32_at_a_large_vocabulary(backend):
    """float32 against torch's float32 autograd (V = 8192 here; V = 128256 checked by hand,
    docs/large_vocab.md)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    N, V, H = 96, 8192, 32
    x = rng.standard_normal((N, H)).astype(np.float32)
    W = (rng.standard_normal((V, H)) / np.sqrt(H)).astype(np.float32)
    b = (rng.standard_normal(V) * 0.1).astype(np.float32)
    t = rng.integers(0, V, N)
    _, dx, dW, db = fs.linear_cross_entropy(x, W, t, b, return_grad=True, chunk_size=40,
                                            backend=backend)
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    gx, gW, gb = torch.autograd.grad(F.cross_entropy(F.linear(xt, Wt, bt), torch.tensor(t)),
                                     (xt, Wt, bt))
    for g, w in ((dx, gx), (dW, gW), (db, gb)):
        w = w.numpy()
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * np.abs(w).max())


def test_inputs_unmodified_and_all_ignored(backend):
    x, W, b, t, cw = _problem(6)
    before = [a.copy() for a in (x, W, b, t, cw)]
    fs.linear_cross_entropy(x, W, t, b, class_weight=cw, softcap=2.0, z_loss=0.1,
                            return_grad=True, chunk_size=3, backend=backend)
    for a, a0 in zip((x, W, b, t, cw), before):
        np.testing.assert_array_equal(a, a0)
    t_ign = np.full_like(t, -100)
    loss, dx, dW, db = fs.linear_cross_entropy(x, W, t_ign, b, return_grad=True, z_loss=0.1,
                                               backend=backend)
    assert np.isnan(loss)    # torch: all rows ignored -> NaN mean
    assert not dx.any() and not dW.any() and not db.any()


def test_leading_batch_dims():
    x, W, b, t, _ = _problem(7, N=12)
    got = fs.linear_cross_entropy(x.reshape(3, 4, -1), W, t.reshape(3, 4), b,
                                  reduction="none", return_grad=True)
    want = fs.linear_cross_entropy(x, W, t, b, reduction="none", return_grad=True)
    np.testing.assert_allclose(got[0], want[0].reshape(3, 4))
    np.testing.assert_allclose(got[1], want[1].reshape(3, 4, -1))


def test_errors():
    x, W, b, t, _ = _problem(1)
    f = fs.linear_cross_entropy
    with pytest.raises(ValueError, match="features"):
        f(x[:, :-1], W, t)
    with pytest.raises(ValueError, match="bias must have shape"):
        f(x, W, t, b[:-1])
    with pytest.raises(ValueError, match=r"class indices in \[0, 23\)"):
        f(x, W, t + 23)
    with pytest.raises(ValueError, match="target has shape"):
        f(x, W, t[:-1])
    with pytest.raises(ValueError, match="softcap must be > 0"):
        f(x, W, t, softcap=-1.0)
    with pytest.raises(ValueError, match="z_loss must be >= 0"):
        f(x, W, t, z_loss=-0.1)
    with pytest.raises(TypeError, match="weight must be a floating-point"):
        f(x, W.astype(np.int32), t)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        f(x.astype(np.int64), W, t)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        f(x, W, t, chunk_size=0)
    with pytest.raises(ValueError, match="reduction"):
        f(x, W, t, reduction="avg")
    with pytest.raises(ValueError, match="axis"):
        f(x, W, t, axis=0)


def _peak(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_never_holds_the_logits():
    """N=4096, V=32000, H=256 float32 (the N x V logits: 524 MB).  With the gradient the peak
    (outputs dx and dW included) stays under a quarter of that; the loss alone allocates no
    N x V array (its peak is below one).  Backend "auto" (the compiled kernels)."""
    rng = np.random.default_rng(0)
    N, V, H = 4096, 32000, 256
    x = rng.standard_normal((N, H), dtype=np.float32)
    W = rng.standard_normal((V, H), dtype=np.float32) * np.float32(1 / 16)
    t = rng.integers(0, V, N)
    logits_bytes = N * V * 4
    (loss, dx, dW, db), peak = _peak(lambda: fs.linear_cross_entropy(x, W, t, return_grad=True))
    assert peak < logits_bytes / 4, peak / logits_bytes
    assert dx.shape == x.shape and dW.shape == W.shape and np.isfinite(loss)
    del dx, dW
    loss_only, peak = _peak(lambda: fs.linear_cross_entropy(x, W, t))
    assert peak < logits_bytes / 4, peak / logits_bytes
    # one chunk buffer of the 64 MB budget, and vectors
    assert peak < linear_ce.MEMORY_BUDGET + (4 << 20), peak
    np.testing.assert_allclose(loss_only, loss, rtol=1e-6)
