"""sigmoid and log_sigmoid (drop-ins for ``scipy.special.expit`` / ``log_expit``) and
binary_cross_entropy_with_logits (``torch.nn.functional.binary_cross_entropy_with_logits``'s
options, loss and gradient in one pass).  docs/training.md."""
from __future__ import annotations

import math

import numpy as np

from .. import _canon, _dispatch, _registry
from ._common import backend_for, check_choice, overlaps

_SIG = {False: _registry.OPS["sigmoid"], True: _registry.OPS["log_sigmoid"]}
_BCE = _registry.OPS["binary_cross_entropy_with_logits"]
_REDUCTIONS = ("mean", "sum", "none")
BCE_BLOCK = 8192      # elements per partial sum of the loss (fixed: results do not depend on
                      # the thread count)
_LONGDOUBLE = np.dtype(np.longdouble)


def sigmoid_result_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """scipy's: its ufunc loops are d->d, f->f, g->g, tried in that order, so float32 and
    longdouble keep their dtype and everything else (bool, integers, float16) gives float64."""
    if dtype.kind == "c":
        raise TypeError(f"{name} takes real numbers, got dtype {dtype} (scipy.special's "
                        "expit / log_expit have no complex loop either)")
    if dtype in (np.dtype(np.float32), _LONGDOUBLE):
        return dtype
    return np.dtype(np.float64)


def _sigmoid_like(x, out, backend, axis, log: bool):
    op = _SIG[log]
    arr = _canon.as_array(x, "x")
    res_dtype = sigmoid_result_dtype(arr.dtype, op.name)
    if axis is not None:
        _canon.normalize_axes(axis, arr.ndim)   # checked; elementwise, so it changes nothing
    if out is not None:
        _canon.check_out(out, arr.shape, res_dtype)
    res = out if out is not None else np.empty_like(arr, dtype=res_dtype)
    if arr.size:
        cdt = _canon.compute_dtype(res_dtype)
        kdt = cdt or res_dtype
        _, mod, _ = backend_for(backend, op, cdt, (1, arr.size, 1))
        order = "C" if res.flags.c_contiguous else "F" if res.flags.f_contiguous else None
        dst = res if order is not None and res.dtype == kdt else np.empty(arr.shape, kdt)
        order = order or "C"
        xf = np.asarray(arr, dtype=kdt, order=order).ravel(order=order)
        df = dst.ravel(order=order)
        if overlaps(df, xf):
            df = np.empty_like(xf)
        mod.sigmoid(xf, df, log, _dispatch.get_num_threads())
        if not np.may_share_memory(df, res):
            np.copyto(res, df.reshape(arr.shape, order=order), casting="same_kind")
    if out is None and arr.ndim == 0:
        return res[()]
    return res


def sigmoid(x, *, out=None, backend=None, axis=None):
    """The logistic sigmoid ``1 / (1 + exp(-x))``: a drop-in for ``scipy.special.expit``.

    Same dtypes as scipy (float32 and longdouble kept, everything else float64), values
    accurate to a few ULP over the whole range (both tails), NaN propagated.  ``out=`` takes a
    preallocated result (``x`` itself included).  Elementwise: ``axis`` (for the registry's
    uniform call) is checked against ``x`` and changes nothing.
    """
    return _sigmoid_like(x, out, backend, axis, log=False)


def log_sigmoid(x, *, out=None, backend=None, axis=None):
    """``log(sigmoid(x))`` without cancellation in either tail: a drop-in for
    ``scipy.special.log_expit`` (same arguments and dtypes as :func:`sigmoid`)."""
    return _sigmoid_like(x, out, backend, axis, log=True)


# ------------------------------------------------------------------ binary cross-entropy
def _real(arr, name):
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    return arr


def _targets(target, x):
    z = _real(_canon.as_array(target, "target"), "target")
    if z.shape != x.shape:
        raise ValueError(f"target must have the logits' shape {x.shape} (one probability per "
                         f"logit), got {z.shape}")
    if z.size:
        lo, hi = np.min(z), np.max(z)
        if not (lo >= 0 and hi <= 1):   # NaN fails too
            bad = ~((z >= 0) & (z <= 1))
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            raise ValueError(f"target values must be probabilities in [0, 1]; found "
                             f"{z.reshape(-1)[i]!r} at flat position {i}")
    return z


def _weight2(weight, x, lay, kdt):
    """weight broadcast against the logits, as the kernel's (wr, wc) array: wr in {1, N},
    wc in {1, C} (the rows and columns it varies along), without materializing a broadcast."""
    w = _real(_canon.as_array(weight, "weight"), "weight")
    try:
        ok = np.broadcast_shapes(w.shape, x.shape) == x.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"weight of shape {w.shape} does not broadcast against the logits' "
                         f"shape {x.shape}")
    wt = np.broadcast_to(w, x.shape).transpose(lay.perm)     # class axis last
    if wt.size == 0:        # no logits: no weight is read (wt[0, ...] would not exist)
        return np.ones((1, 1), dtype=kdt)
    lead = all(s == 0 or d == 1 for s, d in zip(wt.strides[:-1], wt.shape[:-1]))
    col = wt.strides[-1] != 0 and wt.shape[-1] > 1
    if lead:
        w2 = wt[(0,) * (wt.ndim - 1)].reshape(1, -1)
        w2 = w2 if col else w2[:, :1]
    else:
        w2 = (wt if col else wt[..., :1]).reshape(lay.outer, -1)
    return np.ascontiguousarray(w2, dtype=kdt)


def _pos_weight(pos_weight, n_cls, kdt):
    pw = _real(_canon.as_array(pos_weight, "pos_weight"), "pos_weight")
    if any(d != 1 for d in pw.shape[:-1]) or pw.size not in (1, n_cls):
        raise ValueError(f"pos_weight must hold one weight per class ({n_cls}, along the class "
                         f"axis) or a single one; got shape {pw.shape}")
    return np.ascontiguousarray(np.broadcast_to(pw.reshape(-1), (n_cls,)), dtype=kdt)


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean", return_grad=False, grad_out=None,
                                     axis=-1, backend=None):
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target``, with
    ``torch.nn.functional.binary_cross_entropy_with_logits``'s semantics, and optionally its
    gradient from the same pass.

    Per element, ``x`` a logit, ``z`` its target probability in [0, 1], ``w`` the weight and
    ``p`` the positive weight of its class (``l = log1p(exp(-|x|))``, no cancellation)::

        loss = w * (max(x, 0) - z x + l + (p - 1) z (l + max(-x, 0)))

    ``weight`` broadcasts against the logits; ``pos_weight`` holds one weight per class, along
    the class axis ``axis`` (the last, as torch's broadcasting has it).  ``reduction`` is
    "mean" (over every element), "sum" or "none" (the elementwise loss).  With
    ``return_grad=True`` (implied by ``grad_out``) the result is ``(loss, grad)``, ``grad``
    being d(loss)/d(logits) (of ``loss.sum()`` for "none"); ``grad_out`` takes its buffer,
    ``logits`` itself included (the gradient replaces the logits).
    """
    x = _canon.as_array(logits, "logits")
    if x.dtype.kind != "f":
        raise TypeError(f"logits must be a floating-point array, got dtype {x.dtype}; "
                        "convert it, e.g. logits.astype(np.float32)")
    check_choice(reduction, _REDUCTIONS, "reduction")
    shape0 = x.shape
    if x.ndim == 0:     # one logit: computed as (1,), answered in the input's shape
        x = x.reshape(1)
        if np.ndim(target) == 0:
            target = np.reshape(target, (1,))
    z = _targets(target, x)
    if axis is None or isinstance(axis, tuple):
        raise TypeError(f"axis is the class axis (of pos_weight), one integer; got {axis!r}")
    (ax,) = _canon.normalize_axes(axis, x.ndim)
    res_dtype = x.dtype
    cdt = _canon.compute_dtype(res_dtype)
    kdt = cdt or res_dtype
    lay = _canon.Layout.rows(x, ax)
    N, C = lay.outer, lay.n
    w2 = None if weight is None else _weight2(weight, x, lay, kdt)
    pw = None if pos_weight is None else _pos_weight(pos_weight, C, kdt)
    if grad_out is not None:
        _canon.check_out(grad_out, shape0, res_dtype, "grad_out")
        return_grad = True
    grad = None
    if return_grad:
        grad = grad_out.reshape(x.shape) if grad_out is not None else np.empty_like(x)
    loss_el = np.empty((N, C), kdt) if reduction == "none" else None
    total = 0.0
    if x.size:
        _, mod, _ = backend_for(backend, _BCE, cdt, (N, C, 1))
        x2 = lay.to3(x, kdt).reshape(N, C)
        z2 = lay.to3(z, kdt).reshape(N, C)
        g2 = None
        if grad is not None:
            v = lay.view3(grad) if grad.dtype == kdt else None
            g2 = None if v is None else v.reshape(N, C)
            if g2 is None or overlaps(g2, x2) or any(
                    a is not None and np.may_share_memory(g2, a) for a in (z2, w2, pw)):
                g2 = np.empty((N, C), kdt)
        partial = np.empty(max(1, -(-(N * C) // BCE_BLOCK)), np.float64)
        scale = 1.0 / (N * C) if reduction == "mean" else 1.0
        mod.binary_cross_entropy(x2, z2, w2, pw, scale, partial, loss_el, g2,
                                 _dispatch.get_num_threads())
        if grad is not None and not np.may_share_memory(g2, grad):
            np.copyto(grad, lay.from3(g2.reshape(lay.shape3)), casting="same_kind")
        total = math.fsum(partial) if partial.size < 64 else float(np.sum(partial))
    if reduction == "none":
        loss = (lay.from3(loss_el.reshape(lay.shape3)).astype(res_dtype, copy=False)
                .reshape(shape0))
    else:
        if reduction == "mean":
            total = total / x.size if x.size else math.nan
        loss = res_dtype.type(total)
    if not return_grad:
        return loss
    return loss, (grad_out if grad_out is not None else grad.reshape(shape0))
