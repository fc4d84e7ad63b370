"""The training ops (issue 10; docs/training.md): softmax_backward / log_softmax_backward,
sigmoid / log_sigmoid, binary_cross_entropy_with_logits, on every backend and ISA path, against
independent references: torch autograd and torch.nn.functional (when torch is installed),
central finite differences, NumPy formulas, scipy.special and mpmath.  The registry-driven
contract tests (test_contract.py) cover the layouts, value kinds and grids of these ops."""
import importlib.util

import mpmath
import numpy as np
import pytest
import scipy.special as sp

import fastsoftmax as fs
from conftest import assert_close, rtol_for, stable_seed

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is an optional peer")
DTYPES = (np.float32, np.float64)


def _torch():
    import torch
    return torch


# ------------------------------------------------------------------------------ backward
BWD_CASES = [((5, 13), -1), ((5, 13), 0), ((3, 4, 17), 1), ((2, 3, 40), (1, 2)), ((7,), None),
             ((64, 10), -1), ((2, 5000), -1)]


def _bwd(log):
    return fs.log_softmax_backward if log else fs.softmax_backward


def _np_bwd(grad, y, axis, log):
    g, yy = grad.astype(np.float64), y.astype(np.float64)
    if log:
        return g - np.exp(yy) * g.sum(axis=axis, keepdims=True)
    return yy * (g - (g * yy).sum(axis=axis, keepdims=True))


@needs_torch
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_torch_autograd(backend, log, dtype):
    torch = _torch()
    for shape, axis in BWD_CASES:
        if not isinstance(axis, int):
            continue
        rng = np.random.default_rng(stable_seed("bwd-torch", shape, axis, log))
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        grad = rng.standard_normal(shape).astype(dtype)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = (torch.log_softmax if log else torch.softmax)(xt, axis)
        yt.backward(torch.from_numpy(grad))
        got = _bwd(log)(grad, yt.detach().numpy(), axis, backend=backend)
        assert got.dtype == dtype
        assert_close(got, xt.grad.numpy(), dtype, atol_scale=4.0)


@pytest.mark.parametrize("log", [False, True])
def test_backward_matches_finite_differences(backend, log):
    """d/dx of sum(grad * f(x)), f = scipy's softmax / log_softmax, by central differences."""
    f = sp.log_softmax if log else sp.softmax
    for shape, axis in (((3, 6), -1), ((4, 3, 5), 1), ((2, 3, 4), (0, 2))):
        rng = np.random.default_rng(stable_seed("bwd-fd", shape, axis, log))
        x = rng.standard_normal(shape) * 2
        grad = rng.standard_normal(shape)
        h = 1e-6
        fd = np.empty(shape)
        for i in np.ndindex(*shape):
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            fd[i] = (np.sum(grad * f(xp, axis=axis)) - np.sum(grad * f(xm, axis=axis))) / (2 * h)
        got = _bwd(log)(grad, f(x, axis=axis), axis, backend=backend)
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_the_numpy_formula_in_place_and_out(backend, log, dtype):
    for shape, axis in BWD_CASES:
        rng = np.random.default_rng(stable_seed("bwd-np", shape, axis, log, dtype))
        x = rng.standard_normal(shape) * 3
        y = (sp.log_softmax if log else sp.softmax)(x, axis=axis).astype(dtype)
        grad = rng.standard_normal(shape).astype(dtype)
        want = _np_bwd(grad, y, axis, log)
        assert_close(_bwd(log)(grad, y, axis, backend=backend), want, dtype, atol_scale=4.0)
        g2 = grad.copy()
        res = _bwd(log)(g2, y, axis, out=g2, backend=backend)      # in place over grad
        assert res is g2
        assert_close(g2, want, dtype, atol_scale=4.0)
        y2 = y.copy()
        _bwd(log)(grad, y2, axis, out=y2, backend=backend)        # in place over y
        assert_close(y2, want, dtype, atol_scale=4.0)
        gf = np.asfortranarray(grad)                              # layouts differ: one copy
        o = np.empty_like(gf)
        _bwd(log)(gf, y, axis, out=o, backend=backend)
        assert_close(o, want, dtype, atol_scale=4.0)


def test_backward_long_rows_on_threads(compiled_backend):
    """Few long rows split over the threads (the blocks' partial sums), against one thread."""
    rng = np.random.default_rng(1)
    for log in (False, True):
        for dtype in DTYPES:
            x = rng.standard_normal((2, 700_000)) * 3
            y = (sp.log_softmax if log else sp.softmax)(x, axis=-1).astype(dtype)
            grad = rng.standard_normal(x.shape).astype(dtype)
            want = _np_bwd(grad, y, -1, log)
            old = fs.get_num_threads()
            try:
                fs.set_num_threads(2)
                two = _bwd(log)(grad, y, backend=compiled_backend)
            finally:
                fs.set_num_threads(old)
            assert_close(two, want, dtype, atol_scale=4.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_backward_of_a_zero_sum_row(backend, dtype):
    """sum(grad) == 0: o = grad - exp(y) * 0 with exp(y) exact, so grad wherever y < +inf (exp(y)
    overflowing the dtype included: y = 100 in float32, 800 in float64) and NaN where y is NaN
    or +inf; on rows, columns (inner > 1), masked rows (one range and select loops) and one
    long row split over two threads."""
    y = np.array([np.nan, 0.0, np.inf, -np.inf, 100.0, -5.0, 800.0, -1.0], dtype)
    g = np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.25, -0.25], dtype)
    want = np.where(np.isnan(y) | (y == np.inf), np.nan, g)
    assert_close(fs.log_softmax_backward(g, y, backend=backend), want, dtype)
    cols = fs.log_softmax_backward(np.repeat(g[:, None], 3, 1), np.repeat(y[:, None], 3, 1),
                                   axis=0, backend=backend)
    assert_close(cols, np.repeat(want[:, None], 3, 1), dtype)
    for keep in ([1, 1, 0, 0, 1, 1, 0, 0],      # two ranges (select loops); kept sum 0
                 [0, 0, 1, 1, 1, 1, 1, 1]):     # one range
        keep = np.array(keep, bool)
        assert_close(fs.log_softmax_backward(g, y, where=keep, backend=backend),
                     np.where(keep, want, 0), dtype)
    n = 700_000
    gl = np.tile(np.array([1.0, -1.0], dtype), n // 2)
    yl = np.full(n, -5.0, dtype)
    yl[[10, 20, 30]] = (100.0, -np.inf, np.nan)
    old = fs.get_num_threads()
    try:
        fs.set_num_threads(2)
        got = fs.log_softmax_backward(gl[None], yl[None], backend=backend)[0]
    finally:
        fs.set_num_threads(old)
    assert_close(got, np.where(np.isnan(yl), np.nan, gl), dtype)


@pytest.mark.parametrize("log", [False, True])
def test_backward_dtypes(log):
    rng = np.random.default_rng(2)
    g = rng.standard_normal((4, 6))
    y = sp.softmax(rng.standard_normal((4, 6)), axis=-1)
    f = _bwd(log)
    assert f(g.astype(np.float32), y.astype(np.float32)).dtype == np.float32
    assert f(g.astype(np.float32), y).dtype == np.float64
    assert f(g.astype(np.float16), y.astype(np.float16)).dtype == np.float16
    assert f(g.astype(np.float16), y.astype(np.float32)).dtype == np.float32
    assert f(np.ones((4, 6), np.int64), y.astype(np.float32)).dtype == np.float64
    ld = f(g.astype(np.longdouble), y)
    assert ld.dtype == np.longdouble
    assert_close(ld, _np_bwd(g, y, -1, log), np.float64, atol_scale=4.0)
    h = f(g.astype(np.float16), y.astype(np.float16))
    assert_close(h, _np_bwd(g.astype(np.float16), y.astype(np.float16), -1, log), np.float16,
                 atol_scale=4.0)


def test_backward_bad_input():
    g, y = np.ones((3, 4)), np.full((3, 4), 0.25)
    for f in (fs.softmax_backward, fs.log_softmax_backward):
        with pytest.raises(ValueError, match="same shape"):
            f(g, np.ones((3, 5)))
        with pytest.raises(ValueError, match="same shape"):
            f(g, np.ones(4))
        with pytest.raises(TypeError, match="real"):
            f(g.astype(complex), y)
        with pytest.raises(np.exceptions.AxisError):
            f(g, y, axis=2)
        with pytest.raises(TypeError, match="dtype"):
            f(g, y, out=np.empty((3, 4), np.float32))
        with pytest.raises(ValueError, match="shape"):
            f(g, y, out=np.empty((4, 3)))
        with pytest.raises(TypeError, match="axis"):
            f(g, y, axis=1.5)
    np.testing.assert_array_equal(g, 1.0)
    np.testing.assert_array_equal(y, 0.25)


# ------------------------------------------------------------------------ sigmoid, log_sigmoid
def _sig(log):
    return fs.log_sigmoid if log else fs.sigmoid


def _mp_sig(v, log):
    x = mpmath.mpf(float(v))
    if log:     # log1p keeps the digits of log(1 - tiny), which log(s) would lose
        return float(-mpmath.log1p(mpmath.exp(-x)))
    return float(1 / (1 + mpmath.exp(-x)))


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_tails_against_mpmath(backend, log, dtype):
    """|x| up to 100 (float64) / 80 (float32), relative error a few ULP, against mpmath."""
    lim = 100 if dtype == np.float64 else 80
    rng = np.random.default_rng(stable_seed("sig-mp", log, dtype))
    x = np.concatenate([np.linspace(-lim, lim, 801), rng.uniform(-lim, lim, 400),
                        np.geomspace(1e-8, lim, 100), -np.geomspace(1e-8, lim, 100)])
    x = x.astype(dtype)
    got = _sig(log)(x, backend=backend)
    assert got.dtype == dtype
    with mpmath.workdps(40):
        want = np.array([_mp_sig(v, log) for v in x])
    eps = np.finfo(dtype).eps
    tiny = np.finfo(dtype).tiny
    ok = np.abs(got - want) <= 4 * eps * np.abs(want) + (tiny if dtype == np.float64 else 1e-44)
    assert ok.all(), (x[~ok][:5], got[~ok][:5], want[~ok][:5])


@pytest.mark.parametrize("log", [False, True])
def test_sigmoid_matches_scipy_dtypes_and_specials(backend, log):
    ref = sp.log_expit if log else sp.expit
    f = _sig(log)
    rng = np.random.default_rng(3)
    base = rng.standard_normal(300) * 20
    for dt in (np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.int32,
               np.int64, np.bool_, np.longdouble):
        x = (base > 0) if dt is np.bool_ else base.astype(dt)
        got, want = f(x, backend=backend), ref(x)
        assert got.dtype == want.dtype, dt
        assert_close(got, want, want.dtype if want.dtype != np.longdouble else np.float64)
    sx = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-300, -1e-300, 5e-324, 40.0, 800.0,
                   -800.0, 36.7, -745.2])
    for dt in DTYPES:
        v = sx.astype(dt)
        got, want = f(v, backend=backend), ref(v)
        num = ~np.isnan(want)           # the sign of a NaN means nothing
        np.testing.assert_array_equal(np.signbit(got[num]), np.signbit(want[num]))
        assert_close(got, want, dt)
    s = f(3, backend=backend)
    assert isinstance(s, np.float64) and s == pytest.approx(float(ref(3)), rel=1e-15)
    assert f([1.0, 2.0], backend=backend).shape == (2,)


@pytest.mark.parametrize("log", [False, True])
def test_sigmoid_out_layouts_and_threads(backend, log):
    ref = sp.log_expit if log else sp.expit
    f = _sig(log)
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((700, 1000)) * 10).astype(np.float32)
    old = fs.get_num_threads()
    try:
        fs.set_num_threads(2)
        assert_close(f(x, backend=backend), ref(x), np.float32)
    finally:
        fs.set_num_threads(old)
    small = x[:30, :40]
    for arr in (np.asfortranarray(small), small[:, ::3], small[::-1]):
        assert_close(f(arr, backend=backend), ref(arr), np.float32)
    y = small.copy()
    res = f(y, out=y, backend=backend)
    assert res is y
    assert_close(y, ref(small), np.float32)
    o = np.empty((40, 30), np.float32).T
    f(small, out=o, backend=backend)
    assert_close(o, ref(small), np.float32)


def test_sigmoid_bad_input():
    with pytest.raises(TypeError, match="real"):
        fs.sigmoid(np.ones(3, complex))
    with pytest.raises(TypeError, match="dtype"):
        fs.log_sigmoid(np.ones(3, np.float32), out=np.empty(3))
    with pytest.raises(ValueError, match="shape"):
        fs.sigmoid(np.ones(3), out=np.empty(4))
    with pytest.raises(TypeError, match="numbers"):
        fs.sigmoid(np.array(["a"]))


# ----------------------------------------------------------------------- binary cross-entropy
def _bce_options(shape):
    """(name, weight, pos_weight) for every kind of each: none, per class, per row, elementwise,
    scalar; pos_weight per class or single."""
    rng = np.random.default_rng(stable_seed("bce-opts", shape))
    C = shape[-1]
    ws = [None, rng.uniform(0, 2, C), rng.uniform(0, 2, shape[:-1] + (1,)),
          rng.uniform(0, 2, shape), np.float64(0.7)]
    pws = [None, rng.uniform(0.2, 5, C), np.array([3.0])]
    return [(w, p) for w in ws for p in pws]


def _th_bce(torch, x, z, w, pw, reduction):
    F = torch.nn.functional
    xt = torch.from_numpy(x).requires_grad_(True)
    t = (lambda a: None if a is None else torch.as_tensor(np.asarray(a, x.dtype)))
    loss = F.binary_cross_entropy_with_logits(xt, torch.from_numpy(z), weight=t(w),
                                              pos_weight=t(pw), reduction=reduction)
    (loss.sum() if reduction == "none" else loss).backward()
    return loss.detach().numpy(), xt.grad.numpy()


def _close_scaled(got, want, dtype):
    """Within rtol relative, or 8 rtol of the largest magnitude (differences such as
    sigmoid(x) - z are formed differently by torch)."""
    want = np.asarray(want, np.float64)
    rtol = rtol_for(dtype)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol,
                               atol=8 * rtol * float(np.max(np.abs(want), initial=0.0)))


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_matches_torch_every_option(backend, dtype):
    torch = _torch()
    for shape in ((6, 5), (2, 3, 4)):
        rng = np.random.default_rng(stable_seed("bce-torch", shape, dtype))
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        x.reshape(-1)[:2] = (30.0, -30.0)
        z = rng.random(shape).astype(dtype)
        z.reshape(-1)[2:5] = (0.0, 1.0, 1.0)
        for w, pw in _bce_options(shape):
            for red in ("mean", "sum", "none"):
                kw = dict(weight=w, pos_weight=pw, reduction=red)
                lw, gw = _th_bce(torch, x, z, w, pw, red)
                loss, grad = fs.binary_cross_entropy_with_logits(x, z, return_grad=True,
                                                                 backend=backend, **kw)
                assert np.asarray(loss).dtype == dtype and grad.dtype == dtype
                _close_scaled(loss, lw, dtype)
                _close_scaled(grad, gw, dtype)
                # the loss alone, and the gradient in place: the same to rounding (the
                # vectorized sums may be ordered differently) and the same gradient
                alone = fs.binary_cross_entropy_with_logits(x, z, backend=backend, **kw)
                np.testing.assert_allclose(alone, loss, rtol=8 * np.finfo(dtype).eps)
                buf = x.copy()
                l2, g2 = fs.binary_cross_entropy_with_logits(buf, z, grad_out=buf,
                                                             backend=backend, **kw)
                assert g2 is buf
                np.testing.assert_allclose(l2, loss, rtol=8 * np.finfo(dtype).eps)
                np.testing.assert_array_equal(buf, grad)


def test_bce_gradient_matches_finite_differences(backend):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 5)) * 3
    z = rng.random((4, 5))
    w, pw = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 3, 5)
    kw = dict(weight=w, pos_weight=pw, backend=backend)
    _, g = fs.binary_cross_entropy_with_logits(x, z, return_grad=True, **kw)
    h = 1e-6
    fd = np.empty_like(x)
    for i in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd[i] = (fs.binary_cross_entropy_with_logits(xp, z, **kw)
                 - fs.binary_cross_entropy_with_logits(xm, z, **kw)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_bce_stable_in_the_tails(backend):
    """The stable form: |x| = 100 gives the exact loss (log1p(e^-100) ~ 3.7e-44, not 0 - 0)."""
    x = np.array([100.0, -100.0, 100.0, -100.0, 0.0])
    z = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
    loss = fs.binary_cross_entropy_with_logits(x, z, reduction="none", backend=backend)
    with mpmath.workdps(100):
        want = [float(mpmath.log1p(mpmath.exp(-abs(mpmath.mpf(v)))) + max(v, 0) - v * t)
                for v, t in zip(x, z)]
    np.testing.assert_allclose(loss, want, rtol=1e-15)
    pw = np.array([2.0])
    lp = fs.binary_cross_entropy_with_logits(x, z, pos_weight=pw, reduction="none",
                                             backend=backend)
    # torch's definition: (1 - z) x + (1 + (p - 1) z) (log1p(exp(-|x|)) + max(-x, 0))
    with mpmath.workdps(100):
        want = [float((1 - t) * v + (1 + t) * (mpmath.log1p(mpmath.exp(-abs(mpmath.mpf(v))))
                                               + max(-v, 0))) for v, t in zip(x, z)]
    np.testing.assert_allclose(lp, want, rtol=1e-15)


def test_bce_threads_and_layouts(compiled_backend):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((600, 1000)) * 3).astype(np.float32)
    z = rng.random(x.shape).astype(np.float32)
    pw = rng.uniform(0.5, 2, 1000).astype(np.float32)
    old = fs.get_num_threads()
    try:
        res = {}
        for nt in (1, 2):
            fs.set_num_threads(nt)
            res[nt] = fs.binary_cross_entropy_with_logits(x, z, pos_weight=pw, return_grad=True,
                                                          backend=compiled_backend)
    finally:
        fs.set_num_threads(old)
    assert res[1][0] == res[2][0]                       # fixed blocks: thread count free
    np.testing.assert_array_equal(res[1][1], res[2][1])
    want = fs.binary_cross_entropy_with_logits(x, z, pos_weight=pw, return_grad=True,
                                               backend="numpy")
    _close_scaled(res[1][0], want[0], np.float32)
    _close_scaled(res[1][1], want[1], np.float32)
    xf, zf = np.asfortranarray(x[:50]), np.asfortranarray(z[:50])
    got = fs.binary_cross_entropy_with_logits(xf, zf, pos_weight=pw, reduction="none",
                                              backend=compiled_backend)
    _close_scaled(got, fs.binary_cross_entropy_with_logits(
        x[:50], z[:50], pos_weight=pw, reduction="none", backend="numpy"), np.float32)


def test_bce_dtypes_and_edges():
    x = np.array([[0.5, -1.0]], np.float16)
    z = np.array([[1.0, 0.0]], np.float16)
    loss, g = fs.binary_cross_entropy_with_logits(x, z, return_grad=True)
    assert loss.dtype == np.float16 and g.dtype == np.float16
    assert float(loss) == pytest.approx(float(np.mean(np.logaddexp(0, -x.astype(float)) * z
                                                      + np.logaddexp(0, x.astype(float))
                                                      * (1 - z))), rel=2e-3)
    ld = fs.binary_cross_entropy_with_logits(x.astype(np.longdouble), z)
    assert ld.dtype == np.longdouble
    assert np.isnan(fs.binary_cross_entropy_with_logits(np.empty((0, 3)), np.empty((0, 3))))
    assert fs.binary_cross_entropy_with_logits(np.empty((0, 3)), np.empty((0, 3)),
                                               reduction="sum") == 0
    s = fs.binary_cross_entropy_with_logits(np.float64(2.0), 1.0, reduction="none")
    assert np.ndim(s) == 0 and float(s) == pytest.approx(np.logaddexp(0, -2.0), rel=1e-15)


def test_bce_bad_input_leaves_inputs_unmodified():
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    z = np.full((3, 4), 0.5)
    before = x.copy()
    f = fs.binary_cross_entropy_with_logits
    bad_z = z.copy()
    bad_z[1, 2] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\].*1\.5.*position 6"):
        f(x, bad_z, grad_out=x)
    bad_z[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        f(x, bad_z, grad_out=x)
    bad_z[1, 2] = -0.1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        f(x, bad_z)
    with pytest.raises(ValueError, match="pos_weight"):
        f(x, z, pos_weight=np.ones(3), grad_out=x)
    with pytest.raises(ValueError, match="pos_weight"):
        f(x, z, pos_weight=np.ones((3, 4)))
    with pytest.raises(ValueError, match="broadcast"):
        f(x, z, weight=np.ones(3), grad_out=x)
    with pytest.raises(ValueError, match="shape"):
        f(x, z[:, :3])
    with pytest.raises(TypeError, match="floating"):
        f(np.ones((3, 4), np.int64), z)
    with pytest.raises(TypeError, match="real"):
        f(x, z.astype(complex))
    with pytest.raises(ValueError, match="reduction"):
        f(x, z, reduction="avg")
    with pytest.raises(TypeError, match="grad_out"):
        f(x, z, grad_out=np.empty((3, 4), np.float32))
    with pytest.raises(TypeError, match="class axis"):
        f(x, z, axis=None)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(z, 0.5)
