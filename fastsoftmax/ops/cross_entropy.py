"""cross_entropy: torch.nn.functional.cross_entropy's options, loss and gradient in one pass.

The fast path first (``_dispatch.fast_path``: class-index targets without weights or gradient,
in one C call, or None), then the general path, ``_cross_entropy``.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from .. import _canon, _dispatch, _registry
from ._common import backend_for, check_choice, is_plain, kernel_scale, overlaps, row_scale

_OP = _registry.OPS["cross_entropy"]
_REDUCTIONS = ("mean", "sum", "none")


def _logits(logits):
    x = _canon.as_array(logits, "logits")
    if x.dtype.kind != "f":
        raise TypeError(
            f"logits must be a floating-point array, got dtype {x.dtype}; "
            "convert it, e.g. logits.astype(np.float32)"
        )
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    return x


def _ignore_index(ignore_index) -> int:
    try:
        return operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}") from None


def _smoothing(label_smoothing) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    smoothing = float(label_smoothing)
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return smoothing


def _class_axis(axis, ndim: int) -> int:
    if axis is None or isinstance(axis, tuple):
        raise TypeError(f"axis of cross_entropy is the class axis, one integer; got {axis!r}")
    (ax,) = _canon.normalize_axes(axis, ndim)
    return ax


def _index_targets(target, shape, n_cls, ignore_index):
    """Class-index targets as int64, after checking dtype, shape and range."""
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"class-index targets must be integers, got dtype {target.dtype}; "
            "probability targets must have the logits' shape"
        )
    if target.shape != shape:
        raise ValueError(
            f"target has shape {target.shape}; class-index targets must have the logits' shape "
            f"without the class axis, {shape}, and probability targets the logits' shape"
        )
    t = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    bad = (t != ignore_index) & ((t < 0) | (t >= n_cls))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"target values must be class indices in [0, {n_cls}) or ignore_index={ignore_index}; "
            f"found {int(t[i])} at flat position {i}"
        )
    return t


def _targets(target, x, batch_shape, n_cls, ignore_index):
    """(class indices as int64 (rows,), or None; probabilities of the logits' shape, or None)."""
    tgt = _canon.as_array(target, "target")
    if tgt.dtype.kind in "fc" and tgt.shape == x.shape:
        if tgt.dtype.kind == "c":
            raise TypeError("probability targets must be real floating-point numbers")
        return None, tgt
    if tgt.dtype.kind == "b":
        raise TypeError("target must hold class indices (integers) or class probabilities "
                        "(floats of the logits' shape), not booleans")
    return _index_targets(tgt, batch_shape, n_cls, ignore_index), None


def _class_weights(weight, n_cls, kdt):
    if weight is None:
        return None
    w = _canon.as_array(weight, "weight")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weight must be real numbers, got dtype {w.dtype}")
    if w.shape != (n_cls,):
        raise ValueError(f"weight must have shape ({n_cls},) (one per class), got {w.shape}")
    return np.ascontiguousarray(w, dtype=kdt)


def _mean_denominator(reduction, idx, w, ignore_index, n_rows) -> float:
    """torch's divisor of the summed loss: the summed weights of the non-ignored targets (their
    count without weights), N for probability targets, 1 for "sum" and "none"."""
    if reduction != "mean":
        return 1.0
    if idx is None:
        return float(n_rows)
    valid = idx != ignore_index
    if w is not None:
        return float(np.sum(w[idx[valid]], dtype=np.float64))
    return float(np.count_nonzero(valid))


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, axis=-1, return_grad=False, grad_out=None, backend=None,
                  temperature=1.0, base=None):
    """Cross-entropy of ``logits`` against ``target``, with torch.nn.functional.cross_entropy's
    options, and optionally its gradient from the same pass.

    ``axis`` is the class axis (the last by default; torch's is 1).  ``target`` holds class
    indices (integers, the logits' shape without the class axis) or class probabilities (floats,
    the logits' shape).  ``weight`` (length C) weights the classes; ``ignore_index`` marks
    class-index targets that contribute nothing; ``reduction`` is "mean" (torch's weighted mean),
    "sum" or "none"; ``label_smoothing`` in [0, 1] mixes the target with the uniform distribution.

    With ``return_grad=True`` (implied by ``grad_out``) the result is ``(loss, grad)``, ``grad``
    being d(loss)/d(logits) (of ``loss.sum()`` for reduction="none").  ``grad_out`` takes the
    buffer to write it to, ``logits`` itself included: the gradient then replaces the logits and
    no N x C memory is allocated.  Loss and gradient have the logits' float dtype.

    ``temperature`` T: the loss of ``logits / T`` (a positive finite number, or one per row: an
    array broadcasting against the batch shape, or the keepdims shape); the gradient is that of
    the returned loss with respect to ``logits`` (so it carries the 1/T).  ``base`` b (> 0,
    != 1): temperature 1/ln(b).  Not both (TypeError).
    """
    if is_plain(temperature, base):
        fast = _dispatch.fast_path(backend)
        if fast is not None:
            res = fast.cross_entropy(logits, target, weight, ignore_index, reduction,
                                     label_smoothing, axis, return_grad, grad_out)
            if res is not None:
                return res
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing,
                          axis, return_grad, grad_out, backend, temperature, base)


def _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, axis,
                   return_grad, grad_out, backend, temperature=1.0, base=None):
    """The general path: every input and option, every backend."""
    x = _logits(logits)
    check_choice(reduction, _REDUCTIONS, "reduction")
    smoothing = _smoothing(label_smoothing)
    ignore_index = _ignore_index(ignore_index)
    ax = _class_axis(axis, x.ndim)
    sc = row_scale(temperature, base, x.shape, (ax,))
    n_cls = x.shape[ax]
    if n_cls == 0:
        raise ValueError(f"logits have no class: axis {axis} of shape {x.shape} has length 0")
    res_dtype = x.dtype
    cdt = _canon.compute_dtype(res_dtype)
    kdt = cdt or res_dtype
    batch_shape = x.shape[:ax] + x.shape[ax + 1:]
    idx, probs = _targets(target, x, batch_shape, n_cls, ignore_index)
    w = _class_weights(weight, n_cls, kdt)
    if grad_out is not None:
        _canon.check_out(grad_out, x.shape, res_dtype, "grad_out")
        return_grad = True

    lay = _canon.Layout.rows(x, ax)
    n_rows = lay.outer
    loss_rows = np.zeros(n_rows, kdt)
    grad = None
    if return_grad:
        grad = grad_out if grad_out is not None else np.empty_like(x)
    denom = _mean_denominator(reduction, idx, w, ignore_index, n_rows)

    if n_rows:
        _, mod, _ = backend_for(backend, _OP, cdt, (n_rows, n_cls, 1))
        x2 = lay.to3(x, kdt).reshape(n_rows, n_cls)
        p2 = None if probs is None else lay.to3(probs, kdt).reshape(n_rows, n_cls)
        g2 = None
        if grad is not None:
            v = lay.view3(grad) if grad.dtype == kdt else None
            g2 = None if v is None else v.reshape(n_rows, n_cls)
            if g2 is None or overlaps(g2, x2) or (p2 is not None and np.may_share_memory(g2, p2)):
                g2 = np.empty((n_rows, n_cls), kdt)
        with np.errstate(divide="ignore"):
            scale = float(np.float64(1.0) / np.float64(denom))
        args = (x2, idx, p2, w, ignore_index, smoothing, scale, loss_rows, g2,
                _dispatch.get_num_threads())
        if sc is None:
            mod.cross_entropy(*args)
        else:   # temperature / base: the factor per row, fused in the kernel
            ks = kernel_scale(sc, lay)
            mod.cross_entropy(*args, ks if isinstance(ks, float) else ks.reshape(n_rows))
        if grad is not None and not np.may_share_memory(g2, grad):
            np.copyto(grad, lay.from3(g2.reshape(lay.shape3)), casting="same_kind")
    elif grad is not None:
        grad[...] = 0

    if reduction == "none":
        loss = loss_rows.reshape(batch_shape).astype(res_dtype, copy=False)
    else:
        total = np.sum(loss_rows, dtype=np.float64)
        if reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                total = total / denom if n_rows else np.float64(np.nan)
        loss = res_dtype.type(total)
    return (loss, grad) if return_grad else loss
