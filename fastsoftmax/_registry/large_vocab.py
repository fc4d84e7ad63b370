"""The large-vocabulary ops (docs/large_vocab.md; issue 11): sampled_softmax_loss and the
fused linear_cross_entropy; their rows, inputs and peers."""
from __future__ import annotations

import math

import numpy as np

from .common import Bench, Grid, Op


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


LARGE_VOCAB_OPS = (
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
