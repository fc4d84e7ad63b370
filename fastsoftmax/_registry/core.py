"""The scipy.special drop-ins and cross-entropy: softmax, log_softmax, logsumexp,
cross_entropy; their rows, inputs and peers (NumPy, scipy.special, torch, jax, onnxruntime)."""
from __future__ import annotations

import math

import numpy as np

from .common import (SHAPE_AXES, Bench, Grid, Op, bench_inputs, jx, ox, peers_map,
                     reduced_shape, same_shape, scalar_shape, th_loss_grad, traffic_map,
                     traffic_reduce, values)


def _x(shape, axis, dtype, rng, kind="normal"):
    return {"x": values(shape, dtype, rng, kind)}


def _a(shape, axis, dtype, rng, kind="normal"):
    return {"a": values(shape, dtype, rng, kind)}


def _logits_target(shape, axis, dtype, rng, kind="normal"):
    x = values(shape, dtype, rng, kind)
    ax = axis % len(shape)
    batch = shape[:ax] + shape[ax + 1:]
    return {"logits": x, "target": rng.integers(0, shape[ax], batch, dtype=np.int64)}


def _with_out(shape, dtype, rng):
    x = values(shape, dtype, rng)
    out = np.zeros_like(x)  # touched: first-touch page faults would land in the first call
    return {"x": x, "out": out}


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


def _jx_ce_loss(jax):
    jnp = jax.numpy

    def loss(x, t):
        lse = jax.nn.logsumexp(x, axis=-1)
        return jnp.mean(lse - jnp.take_along_axis(x, t[:, None], axis=-1)[:, 0])
    return loss


def _th_softmax_out(torch, inp):
    xt, ot = torch.from_numpy(inp["x"]), torch.from_numpy(inp["out"])
    return lambda: torch.softmax(xt, -1, out=ot)


def _th_ce(torch, inp):
    F = torch.nn.functional
    xt, tt = torch.from_numpy(inp["logits"]), torch.from_numpy(inp["target"])
    return lambda: F.cross_entropy(xt, tt)


_CE_AXES = (((7,), 0), ((5, 13), 1), ((5, 13), 0), ((3, 4, 17), 1), ((3, 4, 17), -1),
            ((1, 1), 1), ((6, 300), 1), ((2, 3000), -1), ((700, 3), 1), ((64, 40), 1))


def _softmax_op(name, log):
    title = ("log_softmax" if log else "softmax") + " along the last axis"
    benches = [Bench(name, title, bench_inputs(_x), traffic_map,
                     peers_map(_np_log_softmax if log else _np_softmax, name,
                                (lambda t: t.nn.functional.log_softmax) if log
                                else (lambda t: t.softmax), name,
                                ox("LogSoftmax" if log else "Softmax", ("x",), same_shape,
                                    axis=-1)))]
    if not log:
        benches.append(Bench(
            "softmax_out", "softmax into a preallocated out= buffer (peers that take one)",
            _with_out, traffic_map,
            {"numpy": _np_softmax_out, "copyto": _copyto,
             "torch": _th_softmax_out},
            shapes=("4096x1000", "1x4000000", "256MB"), inplace="out"))
    return Op(name, "softmax", "softmax", ("auto", "three_pass", "online"), "rows", _x,
              Grid(SHAPE_AXES, options=({}, {"method": "three_pass"}, {"method": "online"})),
              tuple(benches), tune_out="out", masked="softmax_masked")



CORE_OPS = (
    _softmax_op("softmax", log=False),
    _softmax_op("log_softmax", log=True),
    Op("logsumexp", "logsumexp", "logsumexp", ("auto",), "rows", _a,
       Grid(SHAPE_AXES, options=({}, {"keepdims": True}, {"return_sign": True})),
       (Bench("logsumexp", "logsumexp along the last axis", bench_inputs(_a), traffic_reduce,
              peers_map(_np_logsumexp, "logsumexp", lambda t: t.logsumexp, "logsumexp",
                         ox("ReduceLogSumExp", ("a",), reduced_shape, axes=[-1], keepdims=0),
                         arg="a")),), masked="logsumexp_masked"),
    Op("cross_entropy", "cross_entropy", "cross_entropy", ("auto",), "rows_last", _logits_target,
       Grid(_CE_AXES, layouts=("C", "F", "strided", "negstride", "readonly"),
            values=("normal", "wide", "special"),
            options=({}, {"reduction": "none"}, {"reduction": "sum", "label_smoothing": 0.2},
                     {"return_grad": True}, {"return_grad": True, "reduction": "none",
                                             "ignore_index": 0})),
       (Bench("cross_entropy", "cross-entropy forward (mean over rows, class-index targets)",
              bench_inputs(_logits_target), _traffic_ce,
              {"numpy": _np_ce, "scipy": _sp_ce,
               "torch": _th_ce,
               "jax": jx(_jx_ce_loss, "logits", "target"),
               "onnxruntime": ox("SoftmaxCrossEntropyLoss", ("logits", "target"), scalar_shape,
                                  reduction="mean")}),
        Bench("cross_entropy_grad",
              "cross-entropy forward + backward (loss and d loss / d logits)",
              bench_inputs(_logits_target), _traffic_ce_grad,
              {"numpy": _np_ce_grad, "scipy": _sp_ce_grad, "torch": th_loss_grad("cross_entropy"),
               "jax": jx(lambda jax: jax.value_and_grad(_jx_ce_loss(jax)), "logits", "target")},
              options={"return_grad": True}, inplace="grad_out", n_outputs=2)),
       tune_out="grad_out"),
)
