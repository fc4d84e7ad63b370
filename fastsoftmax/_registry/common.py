"""The registry's row types (Grid, Bench, Op) and what several op families' rows share: the
value kinds and layouts of the contract grid, the random data, the benchmark shapes, bytes moved,
and the peers' adapters (torch, jax, onnxruntime).  Imports nothing from the package."""
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
def bench_inputs(make_args):
    def inputs(shape, dtype, rng):
        return make_args(shape, -1, dtype, rng)
    return inputs


def traffic_map(shape, itemsize):        # read x, write a result of x's size
    return 2 * math.prod(shape) * itemsize


def traffic_reduce(shape, itemsize):     # read x, write one value per row
    return (math.prod(shape) + math.prod(shape[:-1])) * itemsize


# jax: jitted, the arguments on the device first
def jx(fn_of_jax, *names):
    def make(jax, inp):
        f = jax.jit(fn_of_jax(jax))
        args = [jax.device_put(inp[n]) for n in names]
        return lambda: jax.block_until_ready(f(*args))
    return make


# onnxruntime: one node of the default ONNX domain (opset 13: Softmax / LogSoftmax take one axis,
# ReduceLogSumExp its axes as an attribute, SoftmaxCrossEntropyLoss the mean of class-index rows)
def ox(op_type, names, out_shape, **attrs):
    def make(ort, inp):
        feed = {n: inp[n] for n in names}
        run = ort.one_node(op_type, feed, out_shape(inp[names[0]].shape), **attrs)
        return lambda: run(feed)
    return make


def th(fn_of_torch, arg):
    def make(torch, inp):
        f, t = fn_of_torch(torch), torch.from_numpy(inp[arg])
        return lambda: f(t, -1)
    return make


def th_loss_grad(name):
    """torch's ``torch.nn.functional.<name>(logits, target)`` and its gradient by autograd."""
    def make(torch, inp):
        f = getattr(torch.nn.functional, name)
        xt = torch.from_numpy(inp["logits"]).requires_grad_(True)
        tt = torch.from_numpy(inp["target"])

        def fn():
            loss = f(xt, tt)
            (g,) = torch.autograd.grad(loss, xt)
            return loss, g
        return fn
    return make


def peers_map(np_fn, sp_name, th_fn, jx_name, ox, arg="x"):
    return {
        "numpy": np_fn,
        "scipy": lambda special, inp: (lambda: getattr(special, sp_name)(inp[arg], axis=-1)),
        "torch": th(th_fn, arg),
        "jax": jx(lambda jax: (lambda x: getattr(jax.nn, jx_name)(x, axis=-1)), arg),
        "onnxruntime": ox,
    }


def same_shape(shape):
    return shape


def reduced_shape(shape):
    return shape[:-1]


def scalar_shape(shape):
    return ()


SHAPE_AXES = (
    ((7,), None), ((7,), 0), ((7,), -1),
    ((5, 13), None), ((5, 13), 0), ((5, 13), 1), ((5, 13), (0, 1)),
    ((3, 4, 17), 0), ((3, 4, 17), 1), ((3, 4, 17), 2), ((3, 4, 17), (0, 2)), ((3, 4, 17), (1, 2)),
    ((2, 3, 4, 33), (1, 2)), ((2, 3, 4, 33), 3), ((2, 3, 4, 33), (0, 3)), ((1, 1), 1),
    ((6, 300), 1), ((2, 3000), -1), ((700, 3), 1), ((40, 9, 70), 1),
)
