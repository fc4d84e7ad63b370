"""The one list of ops.  Each row names an op once, with everything that is driven from it:

* ``name``     -- the public function ``fastsoftmax.<name>``, and the op's key in dispatch tables;
* ``family``   -- where it lives: ``ops/<family>.py`` (the public function),
  ``backends/numba/<family>.py`` and ``csrc/fsm_<family>.h`` (the kernels);
* ``kernel``   -- its entry in the kernel contract (docs/DESIGN.md), which every backend module
  exposes, ``backends/reference.py`` (the NumPy reference) included;
* ``methods``  -- the ``method=`` values its kernels take ("auto" first);
* ``scheme``   -- its size-class scheme for tuning (``_policy.SCHEMES``);
* ``inputs``   -- ``(shape, axis, dtype, rng, values) -> {parameter: array}``: arguments of the
  public function for data of ``shape`` reduced along ``axis``; ``values`` is one of ``VALUES``;
* ``tune_out`` -- the preallocated-output argument ``fastsoftmax tune`` passes (None: none);
* ``masked``   -- the kernel entry of the op's ``where=`` form (None: the op takes no mask),
  dispatched as the op itself (same row, same tables); tested by tests/test_where.py, not by
  the contract grid;
* ``grid``     -- the contract tests' grid (tests/test_contract.py): shapes and axes, dtypes,
  layouts, value kinds and option sets, run on every backend and ISA path against the reference;
* ``benches``  -- its benchmark rows (``fastsoftmax bench``, benches/): inputs, bytes moved,
  options, shapes and peers.

A peer is ``make(lib, inputs) -> fn``, where ``lib`` is the peer's library as the bench engine
imports it (``numpy``, ``scipy.special``, ``torch``, ``jax`` with float64 enabled; ``copyto`` gets
numpy; ``onnxruntime`` gets the engine's one-node model runner, ``lib.one_node(op_type, feed,
out_shape, **attributes) -> run(feed)``, its session on the case's thread budget) and ``fn()``
runs the op once.  A peer without the op (onnxruntime has no gradient) is left out of the row.
This module imports nothing from the package, so every layer may read it.  How to add an op:
docs/DESIGN.md.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

VALUES = ("normal", "wide", "special", "ties")
LAYOUTS = ("C", "F", "strided", "negstride", "readonly", "byteswapped")
BENCH_SHAPES = ("4096x1000", "256x32000", "32x50257", "1x4000000", "200000x10")


# --------------------------------------------------------------------------------- data
def values(shape, dtype, rng, kind="normal"):
    """Random logits of ``shape``: standard normal x 3, or ``kind`` "wide" (x40 in float32, x300
    in float64), "special" (NaN, +-inf and a block of -inf), "ties" (rounded: equal maxima)."""
    x = rng.standard_normal(shape) * 3
    if kind == "wide":
        x = rng.standard_normal(shape) * (40 if np.dtype(dtype) == np.float32 else 300)
    elif kind == "special":
        flat = x.reshape(-1)
        for v in (np.nan, np.inf, -np.inf, -np.inf, -np.inf):
            flat[rng.integers(flat.size)] = v
        if x.ndim >= 2:
            x[0] = -np.inf
    elif kind == "ties":
        x = np.round(x)
    return x.astype(dtype)


def _x(shape, axis, dtype, rng, kind="normal"):
    return {"x": values(shape, dtype, rng, kind)}


def _a(shape, axis, dtype, rng, kind="normal"):
    return {"a": values(shape, dtype, rng, kind)}


def _logits_target(shape, axis, dtype, rng, kind="normal"):
    x = values(shape, dtype, rng, kind)
    ax = axis % len(shape)
    batch = shape[:ax] + shape[ax + 1:]
    return {"logits": x, "target": rng.integers(0, shape[ax], batch, dtype=np.int64)}


# ---------------------------------------------------------------------------- the rows
# NamedTuples, not dataclasses: a frozen dataclass compiles six methods at import, and import
# time is measured (`import fastsoftmax` < 0.1 s)
class Grid(NamedTuple):
    """The contract tests' grid of one op: every (shape, axis) x dtype x layout x value kind x
    option set, on every backend and ISA path, against the reference backend."""
    cases: tuple              # ((shape, axis), ...)
    dtypes: tuple = ("float32", "float64")
    layouts: tuple = LAYOUTS
    values: tuple = VALUES
    options: tuple = ({},)    # keyword sets passed to the public function


class Bench(NamedTuple):
    """One benchmark row: data along the last axis of a 2-D shape."""
    name: str
    title: str
    inputs: Callable              # (shape, dtype, rng) -> {parameter: array}
    traffic: Callable             # (shape, itemsize) -> bytes read + written per call
    peers: dict                   # peer name -> make(lib, inputs) -> fn
    options: dict | None = None   # keywords of our call
    shapes: tuple = BENCH_SHAPES
    inplace: str | None = None    # the output argument an "inplace" variant points at the input
    n_outputs: int = 1
    baseline: str = "numpy"       # the peer whose result the others are checked against


class Op(NamedTuple):
    name: str
    family: str
    kernel: str
    methods: tuple
    scheme: str
    inputs: Callable
    grid: Grid
    benches: tuple
    tune_out: str | None = None
    masked: str | None = None     # the kernel entry of the op's where= form (ops/masked.py)


# ------------------------------------------------------------------------ bench helpers
def _bench_inputs(make_args):
    def inputs(shape, dtype, rng):
        return make_args(shape, -1, dtype, rng)
    return inputs


def _with_out(shape, dtype, rng):
    x = values(shape, dtype, rng)
    out = np.zeros_like(x)  # touched: first-touch page faults would land in the first call
    return {"x": x, "out": out}


def _traffic_map(shape, itemsize):        # read x, write a result of x's size
    return 2 * math.prod(shape) * itemsize


def _traffic_reduce(shape, itemsize):     # read x, write one value per row
    return (math.prod(shape) + math.prod(shape[:-1])) * itemsize


def _traffic_ce(shape, itemsize):         # read logits and int64 targets
    return math.prod(shape) * itemsize + 8 * math.prod(shape[:-1])


def _traffic_ce_grad(shape, itemsize):    # ... and write the gradient
    return 2 * math.prod(shape) * itemsize + 8 * math.prod(shape[:-1])


# numpy formulas (what a NumPy user writes), along the last axis
def _np_softmax(np_, inp):
    x = inp["x"]

    def fn():
        e = np_.exp(x - x.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        return e
    return fn


def _np_softmax_out(np_, inp):
    x, out = inp["x"], inp["out"]
    m = np_.empty(x.shape[:-1] + (1,), x.dtype)
    s = np_.empty_like(m)

    def fn():
        np_.max(x, axis=-1, keepdims=True, out=m)
        np_.subtract(x, m, out=out)
        np_.exp(out, out=out)
        np_.sum(out, axis=-1, keepdims=True, out=s)
        np_.divide(out, s, out=out)
        return out
    return fn


def _np_log_softmax(np_, inp):
    x = inp["x"]

    def fn():
        t = x - x.max(axis=-1, keepdims=True)
        t -= np_.log(np_.exp(t).sum(axis=-1, keepdims=True))
        return t
    return fn


def _np_logsumexp(np_, inp):
    x = inp["a"]

    def fn():
        m = x.max(axis=-1, keepdims=True)
        return np_.log(np_.exp(x - m).sum(axis=-1)) + m[..., 0]
    return fn


def _np_ce(np_, inp):
    x, t = inp["logits"], inp["target"]
    rows = np_.arange(x.shape[0])

    def fn():
        m = x.max(axis=-1, keepdims=True)
        lse = np_.log(np_.exp(x - m).sum(axis=-1)) + m[:, 0]
        return np_.mean(lse - x[rows, t])
    return fn


def _np_ce_grad(np_, inp):
    x, t = inp["logits"], inp["target"]
    rows = np_.arange(x.shape[0])
    scale = x.dtype.type(1.0 / x.shape[0])

    def fn():
        m = x.max(axis=-1, keepdims=True)
        e = np_.exp(x - m)
        s = e.sum(axis=-1, keepdims=True)
        loss = np_.mean(np_.log(s[:, 0]) + m[:, 0] - x[rows, t])
        e /= s
        e[rows, t] -= 1
        e *= scale
        return loss, e
    return fn


def _copyto(np_, inp):
    x, out = inp["x"], inp["out"]

    def fn():
        np_.copyto(out, x)
        return out
    return fn


# scipy.special: the drop-in targets; cross-entropy as a SciPy user writes it
def _sp_ce(special, inp):
    x, t = inp["logits"], inp["target"]
    rows = np.arange(x.shape[0])
    return lambda: -np.mean(special.log_softmax(x, axis=-1)[rows, t])


def _sp_ce_grad(special, inp):
    x, t = inp["logits"], inp["target"]
    rows = np.arange(x.shape[0])
    scale = x.dtype.type(1.0 / x.shape[0])

    def fn():
        lp = special.log_softmax(x, axis=-1)
        loss = -np.mean(lp[rows, t])
        g = np.exp(lp, out=lp)
        g[rows, t] -= 1
        g *= scale
        return loss, g
    return fn


# torch (CPU)
def _th_ce_grad(torch, inp):
    F = torch.nn.functional
    xt = torch.from_numpy(inp["logits"]).requires_grad_(True)
    tt = torch.from_numpy(inp["target"])

    def fn():
        loss = F.cross_entropy(xt, tt)
        (g,) = torch.autograd.grad(loss, xt)
        return loss, g
    return fn


# jax: jitted, the arguments on the device first
def _jx(fn_of_jax, *names):
    def make(jax, inp):
        f = jax.jit(fn_of_jax(jax))
        args = [jax.device_put(inp[n]) for n in names]
        return lambda: jax.block_until_ready(f(*args))
    return make


def _jx_ce_loss(jax):
    jnp = jax.numpy

    def loss(x, t):
        lse = jax.nn.logsumexp(x, axis=-1)
        return jnp.mean(lse - jnp.take_along_axis(x, t[:, None], axis=-1)[:, 0])
    return loss


# onnxruntime: one node of the default ONNX domain (opset 13: Softmax / LogSoftmax take one axis,
# ReduceLogSumExp its axes as an attribute, SoftmaxCrossEntropyLoss the mean of class-index rows)
def _ox(op_type, names, out_shape, **attrs):
    def make(ort, inp):
        feed = {n: inp[n] for n in names}
        run = ort.one_node(op_type, feed, out_shape(inp[names[0]].shape), **attrs)
        return lambda: run(feed)
    return make


def _th(fn_of_torch, arg):
    def make(torch, inp):
        f, t = fn_of_torch(torch), torch.from_numpy(inp[arg])
        return lambda: f(t, -1)
    return make


def _th_softmax_out(torch, inp):
    xt, ot = torch.from_numpy(inp["x"]), torch.from_numpy(inp["out"])
    return lambda: torch.softmax(xt, -1, out=ot)


def _th_ce(torch, inp):
    F = torch.nn.functional
    xt, tt = torch.from_numpy(inp["logits"]), torch.from_numpy(inp["target"])
    return lambda: F.cross_entropy(xt, tt)


def _peers_map(np_fn, sp_name, th_fn, jx_name, ox, arg="x"):
    return {
        "numpy": np_fn,
        "scipy": lambda special, inp: (lambda: getattr(special, sp_name)(inp[arg], axis=-1)),
        "torch": _th(th_fn, arg),
        "jax": _jx(lambda jax: (lambda x: getattr(jax.nn, jx_name)(x, axis=-1)), arg),
        "onnxruntime": ox,
    }


def _same_shape(shape):
    return shape


def _reduced_shape(shape):
    return shape[:-1]


def _scalar_shape(shape):
    return ()


_SHAPE_AXES = (
    ((7,), None), ((7,), 0), ((7,), -1),
    ((5, 13), None), ((5, 13), 0), ((5, 13), 1), ((5, 13), (0, 1)),
    ((3, 4, 17), 0), ((3, 4, 17), 1), ((3, 4, 17), 2), ((3, 4, 17), (0, 2)), ((3, 4, 17), (1, 2)),
    ((2, 3, 4, 33), (1, 2)), ((2, 3, 4, 33), 3), ((2, 3, 4, 33), (0, 3)), ((1, 1), 1),
    ((6, 300), 1), ((2, 3000), -1), ((700, 3), 1), ((40, 9, 70), 1),
)
_CE_AXES = (((7,), 0), ((5, 13), 1), ((5, 13), 0), ((3, 4, 17), 1), ((3, 4, 17), -1),
            ((1, 1), 1), ((6, 300), 1), ((2, 3000), -1), ((700, 3), 1), ((64, 40), 1))


def _softmax_op(name, log):
    title = ("log_softmax" if log else "softmax") + " along the last axis"
    benches = [Bench(name, title, _bench_inputs(_x), _traffic_map,
                     _peers_map(_np_log_softmax if log else _np_softmax, name,
                                (lambda t: t.nn.functional.log_softmax) if log
                                else (lambda t: t.softmax), name,
                                _ox("LogSoftmax" if log else "Softmax", ("x",), _same_shape,
                                    axis=-1)))]
    if not log:
        benches.append(Bench(
            "softmax_out", "softmax into a preallocated out= buffer (peers that take one)",
            _with_out, _traffic_map,
            {"numpy": _np_softmax_out, "copyto": _copyto,
             "torch": _th_softmax_out},
            shapes=("4096x1000", "1x4000000", "256MB"), inplace="out"))
    return Op(name, "softmax", "softmax", ("auto", "three_pass", "online"), "rows", _x,
              Grid(_SHAPE_AXES, options=({}, {"method": "three_pass"}, {"method": "online"})),
              tuple(benches), tune_out="out", masked="softmax_masked")


# ------------------------------------------------- training ops (docs/training.md; issue 10)
def _softmax_np(x, axis, log):
    """softmax / log_softmax of x along axis (None, int or tuple) in NumPy, for the inputs."""
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        t = x - m
        ls = np.log(np.sum(np.exp(t), axis=axis, keepdims=True))
        return t - ls if log else np.exp(t - ls)


def _grad_y(log):
    """softmax_backward's inputs: y the forward output of logits of ``kind``, grad N(0, 1)."""
    def inputs(shape, axis, dtype, rng, kind="normal"):
        x = values(shape, np.float64, rng, kind)
        y = _softmax_np(x, axis, log)
        grad = rng.standard_normal(shape)
        if kind == "special" and grad.size > 2:
            grad.reshape(-1)[:2] = (np.nan, np.inf)
        return {"grad": grad.astype(dtype), "y": y.astype(dtype)}
    return inputs


def _sig_x(shape, axis, dtype, rng, kind="normal"):
    x = values(shape, dtype, rng, kind)
    if kind == "wide" and x.size:      # the tails, up to |x| = 100 (float64) / 80 (float32)
        lim = 100 if np.dtype(dtype) == np.float64 else 80
        x.reshape(-1)[:] = rng.uniform(-lim, lim, x.size)
    return {"x": x}


def _bce_inputs(shape, axis, dtype, rng, kind="normal"):
    """logits of ``kind``; targets in [0, 1] (some exactly 0 or 1); a weight (none, per class,
    per row or elementwise) and a pos_weight along ``axis`` (or none), chosen by ``rng``."""
    ax = -1 if axis is None else axis % len(shape)
    x = values(shape, dtype, rng, kind)
    z = rng.random(shape)
    z[rng.random(shape) < 0.3] = 0.0
    z[rng.random(shape) < 0.2] = 1.0
    args = {"logits": x, "target": z.astype(dtype)}
    wk = int(rng.integers(4))
    if wk == 1:
        args["weight"] = rng.uniform(0, 2, shape[-1:]).astype(dtype)
    elif wk == 2:
        args["weight"] = rng.uniform(0, 2, shape[:-1] + (1,)).astype(dtype)
    elif wk == 3:
        args["weight"] = rng.uniform(0, 2, shape).astype(dtype)
    if rng.random() < 0.6:
        args["pos_weight"] = rng.uniform(0.2, 5, shape[ax]).astype(dtype)
    return args


def _traffic_backward(shape, itemsize):    # read grad and y, write the result
    return 3 * math.prod(shape) * itemsize


def _traffic_bce(shape, itemsize):         # read logits and targets, write the gradient
    return 3 * math.prod(shape) * itemsize


def _np_softmax_backward(log):
    def make(np_, inp):
        g, y = inp["grad"], inp["y"]
        if log:
            return lambda: g - np_.exp(y) * g.sum(axis=-1, keepdims=True)
        return lambda: y * (g - (g * y).sum(axis=-1, keepdims=True))
    return make


def _th_softmax_backward(log):
    def make(torch, inp):
        g, y = torch.from_numpy(inp["grad"]), torch.from_numpy(inp["y"])
        f = torch._log_softmax_backward_data if log else torch._softmax_backward_data
        return lambda: f(g, y, -1, y.dtype)
    return make


def _backward_op(name, log):
    benches = (
        Bench(name, f"{name} (the vector-Jacobian product of the last axis' "
              f"{'log_softmax' if log else 'softmax'}, y its output)",
              _bench_inputs(_grad_y(log)), _traffic_backward,
              {"numpy": _np_softmax_backward(log), "torch": _th_softmax_backward(log)},
              inplace="out"),
    )
    return Op(name, "backward", "softmax_backward", ("auto",), "rows", _grad_y(log),
              Grid(_SHAPE_AXES, values=("normal", "special")),
              benches, tune_out="out", masked="softmax_backward_masked")


def _np_sigmoid(np_, inp):
    x = inp["x"]
    return lambda: 1 / (1 + np_.exp(-x))


def _np_log_sigmoid(np_, inp):
    x = inp["x"]
    return lambda: -np_.logaddexp(x.dtype.type(0), -x)


_SIG_CASES = (((7,), None), ((5, 13), None), ((3, 4, 17), -1), ((1, 1), 0), ((2, 3000), None),
              ((300, 1000), None))


def _sigmoid_op(name, log):
    sp = "log_expit" if log else "expit"
    peers = {"numpy": _np_log_sigmoid if log else _np_sigmoid,
             "scipy": lambda special, inp: (lambda: getattr(special, sp)(inp["x"])),
             "torch": lambda torch, inp: (lambda t=torch.from_numpy(inp["x"]): (
                 torch.nn.functional.logsigmoid(t) if log else torch.sigmoid(t))),
             "jax": _jx(lambda jax: getattr(jax.nn, "log_sigmoid" if log else "sigmoid"), "x")}
    return Op(name, "sigmoid", "sigmoid", ("auto",), "rows_last", _sig_x,
              Grid(_SIG_CASES, values=("normal", "wide", "special")),
              (Bench(name, f"{name} elementwise (scipy.special.{sp})", _bench_inputs(_sig_x),
                     _traffic_map, peers, inplace="out"),),
              tune_out="out")


def _np_bce_grad(np_, inp):
    x, z = inp["logits"], inp["target"]
    scale = x.dtype.type(1.0 / x.size)

    def fn():
        loss = np_.mean(np_.maximum(x, 0) - x * z + np_.log1p(np_.exp(-np_.abs(x))))
        g = 1 / (1 + np_.exp(-x))
        g -= z
        g *= scale
        return loss, g
    return fn


def _th_bce_grad(torch, inp):
    F = torch.nn.functional
    xt = torch.from_numpy(inp["logits"]).requires_grad_(True)
    zt = torch.from_numpy(inp["target"])

    def fn():
        loss = F.binary_cross_entropy_with_logits(xt, zt)
        (g,) = torch.autograd.grad(loss, xt)
        return loss, g
    return fn


def _bce_bench_inputs(shape, dtype, rng):
    return {"logits": values(shape, dtype, rng), "target": rng.random(shape).astype(dtype)}


_BCE_CASES = (((7,), 0), ((5, 13), 1), ((5, 13), 0), ((3, 4, 17), -1), ((3, 4, 17), 1),
              ((1, 1), 1), ((2, 3000), -1), ((700, 3), 1), ((200, 700), -1))

_BCE_OP = Op("binary_cross_entropy_with_logits", "sigmoid", "binary_cross_entropy", ("auto",),
             "rows_last", _bce_inputs,
             Grid(_BCE_CASES, layouts=("C", "F", "strided", "negstride", "readonly"),
                  values=("normal", "wide", "special"),
                  options=({}, {"reduction": "none"}, {"reduction": "sum", "return_grad": True},
                           {"return_grad": True, "reduction": "none"})),
             (Bench("bce_with_logits_grad",
                    "binary cross-entropy with logits, forward + backward (mean, loss and grad)",
                    _bce_bench_inputs, _traffic_bce,
                    {"numpy": _np_bce_grad, "torch": _th_bce_grad},
                    options={"return_grad": True}, inplace="grad_out", n_outputs=2),),
             tune_out="grad_out")


# ---------------------------------------------------------------- large vocabularies (issue 11)
# docs/large_vocab.md.  Shapes are (rows, classes); the hidden size is fixed per row kind.
_SSM_DIM, _SSM_SAMPLED, _LCE_HIDDEN = 16, 5, 16
_BENCH_SSM_DIM, _BENCH_SSM_SAMPLED, _BENCH_LCE_HIDDEN = 128, 64, 256


def _ssm_inputs(shape, axis, dtype, rng, kind="normal", dim=_SSM_DIM, sampled=_SSM_SAMPLED):
    """sampled_softmax_loss: batch x num_classes; the sampler is seeded (same on every backend)."""
    batch, n_cls = math.prod(shape[:-1]) if len(shape) > 1 else 1, shape[-1]
    s = 0.5 if kind == "normal" else 3.0
    return {"weights": (rng.standard_normal((n_cls, dim)) * s).astype(dtype),
            "biases": (rng.standard_normal(n_cls) * s).astype(dtype),
            "labels": rng.integers(0, n_cls, (batch, 1), dtype=np.int64),
            "inputs": (rng.standard_normal((batch, dim)) * s).astype(dtype),
            "num_sampled": np.int64(min(sampled, n_cls)), "num_classes": np.int64(n_cls),
            "rng": np.int64(rng.integers(1 << 30))}


def _ssm_bench_inputs(shape, dtype, rng):
    """Fixed sampled_values (log-uniform, distinct, expected counts p * num_sampled)."""
    inp = _ssm_inputs(shape, -1, dtype, rng, dim=_BENCH_SSM_DIM, sampled=_BENCH_SSM_SAMPLED)
    n_cls, k = int(inp["num_classes"]), int(inp.pop("num_sampled"))
    del inp["rng"]
    p = np.log1p(1.0 / (np.arange(n_cls) + 1.0)) / np.log1p(n_cls)
    sampled = np.sort(rng.choice(n_cls, k, replace=False, p=p)).astype(np.int64)
    inp["num_sampled"] = np.int64(k)
    inp["sampled_values"] = (sampled, p[inp["labels"]] * k, p[sampled] * k)
    return inp


def _traffic_ssm(shape, itemsize):        # the gathered weight rows and the inputs
    batch = math.prod(shape[:-1])
    return itemsize * _BENCH_SSM_DIM * (2 * batch + min(_BENCH_SSM_SAMPLED, shape[-1]))


def _np_ssm(np_, inp):
    """TensorFlow's _compute_sampled_logits + softmax cross-entropy, written out in NumPy."""
    W, b, lab, x = inp["weights"], inp["biases"], inp["labels"], inp["inputs"]
    s, te, se = inp["sampled_values"]

    def fn():
        tl = np_.einsum("bd,btd->bt", x, W[lab]) + b[lab] - np_.log(te)
        sl = x @ W[s].T + b[s] - np_.log(se)
        sl = np_.where((lab[:, :, None] == s[None, None, :]).any(1), sl - 3.4028235e38, sl)
        z = np_.concatenate([tl, sl], 1)
        m = z.max(1, keepdims=True)
        lse = np_.log(np_.exp(z - m).sum(1)) + m[:, 0]
        return (lse - tl.mean(1)).astype(x.dtype)
    return fn


def _lce_inputs(shape, axis, dtype, rng, kind="normal", hidden=_LCE_HIDDEN):
    """linear_cross_entropy: rows x classes logits, made from (rows, H) x (classes, H)."""
    n, v = math.prod(shape[:-1]) if len(shape) > 1 else 1, shape[-1]
    s = 1.0 if kind == "normal" else 4.0
    return {"x": (rng.standard_normal((n, hidden)) * s).astype(dtype),
            "weight": (rng.standard_normal((v, hidden)) * (s / math.sqrt(hidden))).astype(dtype),
            "target": rng.integers(0, v, n, dtype=np.int64),
            "bias": (rng.standard_normal(v) * 0.1).astype(dtype)}


def _lce_bench_inputs(shape, dtype, rng):
    return _lce_inputs(shape, -1, dtype, rng, hidden=_BENCH_LCE_HIDDEN)


def _traffic_lce(shape, itemsize):        # read x, W; write dx, dW (the logits never leave)
    n, v = math.prod(shape[:-1]), shape[-1]
    return 2 * itemsize * _BENCH_LCE_HIDDEN * (n + v)


def _np_lce_grad(np_, inp):
    """Unfused: the logits, softmax, the gradient, two matmuls."""
    x, W, t, b = inp["x"], inp["weight"], inp["target"], inp["bias"]
    rows = np_.arange(x.shape[0])

    def fn():
        z = x @ W.T + b
        m = z.max(1, keepdims=True)
        e = np_.exp(z - m)
        s = e.sum(1, keepdims=True)
        loss = np_.mean(np_.log(s[:, 0]) + m[:, 0] - z[rows, t])
        e /= s
        e[rows, t] -= 1
        e /= x.shape[0]
        return loss, e @ W, e.T @ x, e.sum(0)
    return fn


def _th_lce_grad(torch, inp):
    """torch's unfused F.cross_entropy(F.linear(x, W, b), y) with backward."""
    F = torch.nn.functional
    xt, Wt, bt = (torch.from_numpy(inp[k]).requires_grad_(True) for k in ("x", "weight", "bias"))
    tt = torch.from_numpy(inp["target"])

    def fn():
        loss = F.cross_entropy(F.linear(xt, Wt, bt), tt)
        return (loss, *torch.autograd.grad(loss, (xt, Wt, bt)))
    return fn


_LARGE_VOCAB_OPS = (
    Op("sampled_softmax_loss", "sampling", "sample_candidates", ("auto",), "rows_last",
       _ssm_inputs,
       Grid((((6, 50), -1), ((1, 3), -1), ((20, 200), 1), ((9, 7), -1)),
            values=("normal", "wide"),
            options=({}, {"remove_accidental_hits": False}, {"subtract_log_q": False})),
       (Bench("sampled_softmax_loss",
              f"sampled softmax loss, dim {_BENCH_SSM_DIM}, {_BENCH_SSM_SAMPLED} sampled classes "
              "(fixed sampled_values)", _ssm_bench_inputs, _traffic_ssm, {"numpy": _np_ssm},
              shapes=("4096x1000", "256x32000")),)),
    Op("linear_cross_entropy", "linear_ce", "cross_entropy", ("auto",), "rows_last", _lce_inputs,
       Grid((((7, 13), -1), ((1, 1), -1), ((33, 40), 1), ((64, 300), -1)),
            layouts=("C", "F", "strided", "readonly"), values=("normal", "wide"),
            options=({}, {"reduction": "none", "chunk_size": 5},
                     {"return_grad": True, "chunk_size": 4},
                     {"return_grad": True, "softcap": 3.0, "reduction": "sum"},
                     {"return_grad": True, "z_loss": 1e-3, "label_smoothing": 0.1,
                      "ignore_index": 0, "chunk_size": 8})),
       (Bench("linear_cross_entropy_grad",
              f"fused linear cross-entropy forward + backward, H = {_BENCH_LCE_HIDDEN} "
              "(loss, dx, dW, db; vs the unfused logits)", _lce_bench_inputs, _traffic_lce,
              {"numpy": _np_lce_grad, "torch": _th_lce_grad}, options={"return_grad": True},
              shapes=("4096x1000", "256x32000"), n_outputs=4),)),
)

OPS: dict[str, Op] = {op.name: op for op in (
    _softmax_op("softmax", log=False),
    _softmax_op("log_softmax", log=True),
    Op("logsumexp", "logsumexp", "logsumexp", ("auto",), "rows", _a,
       Grid(_SHAPE_AXES, options=({}, {"keepdims": True}, {"return_sign": True})),
       (Bench("logsumexp", "logsumexp along the last axis", _bench_inputs(_a), _traffic_reduce,
              _peers_map(_np_logsumexp, "logsumexp", lambda t: t.logsumexp, "logsumexp",
                         _ox("ReduceLogSumExp", ("a",), _reduced_shape, axes=[-1], keepdims=0),
                         arg="a")),), masked="logsumexp_masked"),
    Op("cross_entropy", "cross_entropy", "cross_entropy", ("auto",), "rows_last", _logits_target,
       Grid(_CE_AXES, layouts=("C", "F", "strided", "negstride", "readonly"),
            values=("normal", "wide", "special"),
            options=({}, {"reduction": "none"}, {"reduction": "sum", "label_smoothing": 0.2},
                     {"return_grad": True}, {"return_grad": True, "reduction": "none",
                                             "ignore_index": 0})),
       (Bench("cross_entropy", "cross-entropy forward (mean over rows, class-index targets)",
              _bench_inputs(_logits_target), _traffic_ce,
              {"numpy": _np_ce, "scipy": _sp_ce,
               "torch": _th_ce,
               "jax": _jx(_jx_ce_loss, "logits", "target"),
               "onnxruntime": _ox("SoftmaxCrossEntropyLoss", ("logits", "target"), _scalar_shape,
                                  reduction="mean")}),
        Bench("cross_entropy_grad",
              "cross-entropy forward + backward (loss and d loss / d logits)",
              _bench_inputs(_logits_target), _traffic_ce_grad,
              {"numpy": _np_ce_grad, "scipy": _sp_ce_grad, "torch": _th_ce_grad,
               "jax": _jx(lambda jax: jax.value_and_grad(_jx_ce_loss(jax)), "logits", "target")},
              options={"return_grad": True}, inplace="grad_out", n_outputs=2)),
       tune_out="grad_out"),
    _backward_op("softmax_backward", log=False),       # issue 10: the training ops
    _backward_op("log_softmax_backward", log=True),
    _sigmoid_op("sigmoid", log=False),
    _sigmoid_op("log_sigmoid", log=True),
    _BCE_OP,
    *_LARGE_VOCAB_OPS,
)}

BENCHES: dict[str, tuple[Op, Bench]] = {b.name: (op, b) for op in OPS.values() for b in op.benches}

# the default `fastsoftmax bench` suite: float32, one thread, these (bench, shapes) pairs
DEFAULT_SUITE = (
    ("softmax", BENCH_SHAPES),
    ("log_softmax", ("4096x1000", "256x32000")),
    ("logsumexp", ("4096x1000", "1x4000000")),
    ("cross_entropy", ("4096x1000", "32x50257")),
    ("cross_entropy_grad", ("4096x1000", "256x32000")),
    ("softmax_out", ("256MB",)),
    ("softmax_backward", ("4096x1000",)),
    ("log_softmax_backward", ("4096x1000",)),
    ("sigmoid", ("4096x1000",)),
    ("log_sigmoid", ("4096x1000",)),
    ("bce_with_logits_grad", ("4096x1000",)),
    ("sampled_softmax_loss", ("256x32000",)),
    ("linear_cross_entropy_grad", ("256x32000",)),
)

# the small-call suite (in the default run): per-call time of tiny contiguous calls, float32 and
# float64, one thread; a shape named by one number is a 1-D array of that many elements
SMALL_SUITE = (
    ("softmax", ("10", "100", "1000")),
    ("log_softmax", ("10", "100", "1000")),
    ("logsumexp", ("10", "100", "1000")),
    ("cross_entropy", ("32x10",)),
)

# the first-call suite (in the default run): these bench rows' first call, float32 and float64,
# each in a fresh process, with an empty and a warm Numba cache, on these thread budgets
FIRST_CALL_SUITE = (("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_grad"),
                    "4096x1000", (1, 2))
