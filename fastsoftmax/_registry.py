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
              tuple(benches), tune_out="out")


OPS: dict[str, Op] = {op.name: op for op in (
    _softmax_op("softmax", log=False),
    _softmax_op("log_softmax", log=True),
    Op("logsumexp", "logsumexp", "logsumexp", ("auto",), "rows", _a,
       Grid(_SHAPE_AXES, options=({}, {"keepdims": True}, {"return_sign": True})),
       (Bench("logsumexp", "logsumexp along the last axis", _bench_inputs(_a), _traffic_reduce,
              _peers_map(_np_logsumexp, "logsumexp", lambda t: t.logsumexp, "logsumexp",
                         _ox("ReduceLogSumExp", ("a",), _reduced_shape, axes=[-1], keepdims=0),
                         arg="a")),)),
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
