"""The training ops (docs/training.md; issue 10): softmax_backward, log_softmax_backward,
sigmoid, log_sigmoid, binary_cross_entropy_with_logits; their rows, inputs and peers."""
from __future__ import annotations

import math

import numpy as np

from .common import (SHAPE_AXES, Bench, Grid, Op, bench_inputs, jx, th_loss_grad,
                     traffic_map, values)


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
              bench_inputs(_grad_y(log)), _traffic_backward,
              {"numpy": _np_softmax_backward(log), "torch": _th_softmax_backward(log)},
              inplace="out"),
    )
    return Op(name, "backward", "softmax_backward", ("auto",), "rows", _grad_y(log),
              Grid(SHAPE_AXES, values=("normal", "special")),
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
             "jax": jx(lambda jax: getattr(jax.nn, "log_sigmoid" if log else "sigmoid"), "x")}
    return Op(name, "sigmoid", "sigmoid", ("auto",), "rows_last", _sig_x,
              Grid(_SIG_CASES, values=("normal", "wide", "special")),
              (Bench(name, f"{name} elementwise (scipy.special.{sp})", bench_inputs(_sig_x),
                     traffic_map, peers, inplace="out"),),
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
                    {"numpy": _np_bce_grad,
                     "torch": th_loss_grad("binary_cross_entropy_with_logits")},
                    options={"return_grad": True}, inplace="grad_out", n_outputs=2),),
             tune_out="grad_out")


TRAINING_OPS = (
    _backward_op("softmax_backward", log=False),
    _backward_op("log_softmax_backward", log=True),
    _sigmoid_op("sigmoid", log=False),
    _sigmoid_op("log_sigmoid", log=True),
    _BCE_OP,
)
