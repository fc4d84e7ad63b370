"""The public functions.

Each one validates and canonicalizes its arguments once (``_canon``), picks a backend
(``_dispatch``), makes exactly one kernel call on C-contiguous float32/float64 arrays, and shapes the
result.  No loop over the data lives here.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from . import _canon, _dispatch

_METHODS = ("auto", "three_pass", "online")
_REDUCTIONS = ("mean", "sum", "none")


def _backend_for(backend, op, cdt, shape3):
    """(name, module, method): the reference for dtypes no compiled kernel takes, else the
    dispatcher's choice."""
    if cdt is None:
        _dispatch.requested(backend)  # still reject a misspelt backend name
        return "numpy", _dispatch.load("numpy"), "auto"
    return _dispatch.resolve(backend, op, cdt, shape3)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """True if ``a`` and ``b`` may share memory and are not the very same view."""
    if not np.may_share_memory(a, b):
        return False
    same = (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides and a.shape == b.shape)
    return not same


def _softmax_like(x, axis, out, backend, method, log: bool):
    name = "log_softmax" if log else "softmax"
    arr = _canon.as_array(x, "x")
    res_dtype = _canon.exp_result_dtype(arr.dtype, name)
    axes = _canon.normalize_axes(axis, arr.ndim)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}")
    if out is not None:
        _canon.check_out(out, arr.shape, res_dtype)
    lay = _canon.layout(arr, axes)
    if lay.n == 0:
        raise ValueError(
            f"{name} over an empty axis is undefined: the reduced axes {axes} of shape {arr.shape} "
            "hold no element (scipy.special raises here too)"
        )
    res = out if out is not None else np.empty_like(arr, dtype=res_dtype)
    if arr.size:
        cdt = _canon.compute_dtype(res_dtype)
        _, mod, tuned = _backend_for(backend, name, cdt, lay.shape3)
        method = tuned if method == "auto" else method
        x3 = lay.to3(arr, cdt or res_dtype)
        dst = lay.view3(res) if res.dtype == x3.dtype else None
        if dst is None or _overlaps(dst, x3):
            dst = np.empty(lay.shape3, x3.dtype)
        mod.softmax(x3, dst, log, method, _dispatch.get_num_threads())
        if not np.may_share_memory(dst, res):
            np.copyto(res, lay.from3(dst), casting="same_kind")
    if out is None and arr.ndim == 0:
        return res[()]
    return res


def softmax(x, axis=None, *, out=None, backend=None, method="auto"):
    """Softmax of ``x`` along ``axis``: a drop-in for ``scipy.special.softmax``.

    ``axis`` is None (the whole array), an int or a tuple of ints.  The result has scipy's dtype
    (float64 for int32/int64, float16 for int8/uint8 and float16, float32 for int16 and float32)
    and ``x``'s shape.  ``out=`` takes a preallocated result array (it may be ``x`` itself, for an
    in-place softmax).  ``backend`` is "auto", "numba", "cython" or "numpy"; ``method`` is "auto",
    "three_pass" (max, exp+sum, scale) or "online" (running max and sum, then scale).
    """
    return _softmax_like(x, axis, out, backend, method, log=False)


def log_softmax(x, axis=None, *, out=None, backend=None, method="auto"):
    """Log of the softmax of ``x`` along ``axis``: a drop-in for ``scipy.special.log_softmax``.

    Same arguments and result dtypes as :func:`softmax`.
    """
    return _softmax_like(x, axis, out, backend, method, log=True)


def _is_python_scalar(v) -> bool:
    return isinstance(v, (bool, int, float, complex)) and not isinstance(v, np.generic)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, *, backend=None):
    """``log(sum(b * exp(a)))`` along ``axis``: a drop-in for ``scipy.special.logsumexp``.

    ``b`` scales the terms (broadcast against ``a``; zeros mask entries, negative values subtract).
    With ``return_sign=True`` the result is ``(log|sum|, sign)``; otherwise a negative sum gives
    NaN.  An empty reduction gives -inf.  0-d results come back as NumPy scalars, like scipy's.
    """
    arr = _canon.as_array(a, "a")
    barr = None
    if b is not None:
        barr = _canon.as_array(b, "b")
        try:
            shape = np.broadcast_shapes(arr.shape, barr.shape)
        except ValueError:
            raise ValueError(
                f"b of shape {barr.shape} does not broadcast against a of shape {arr.shape}"
            ) from None
        arr = np.broadcast_to(arr, shape)
        barr = np.broadcast_to(barr, shape)
    if barr is not None and _is_python_scalar(b):
        res_dtype = np.result_type(_canon.lse_result_dtype(arr, None), b)
    else:
        res_dtype = _canon.lse_result_dtype(arr, barr)
    if arr.ndim == 0:  # scipy works on at least 1-d
        arr = arr.reshape(1)
        barr = None if barr is None else barr.reshape(1)
    axes = _canon.normalize_axes(axis, arr.ndim)
    lay = _canon.layout(arr, axes)
    r2 = np.empty((lay.outer, lay.inner), res_dtype)
    s2 = np.empty_like(r2) if return_sign else None
    if lay.n == 0:
        r2.fill(-np.inf)
        if return_sign:
            s2.fill(-1)  # scipy's sign(-inf) for an empty reduction
    elif r2.size:
        cdt = _canon.compute_dtype(res_dtype)
        _, mod, _ = _backend_for(backend, "logsumexp", cdt, lay.shape3)
        kdt = cdt or res_dtype
        k_out = r2 if r2.dtype == kdt else np.empty(r2.shape, kdt)
        k_sign = None if s2 is None else (s2 if s2.dtype == kdt else np.empty(s2.shape, kdt))
        mod.logsumexp(lay.to3(arr, kdt), None if barr is None else lay.to3(barr, kdt),
                      k_out, k_sign, _dispatch.get_num_threads())
        if k_out is not r2:
            r2[...] = k_out
            if s2 is not None:
                s2[...] = k_sign
    res = lay.from2(r2, keepdims)
    if not return_sign:
        return res[()] if res.ndim == 0 else res
    sgn = lay.from2(s2, keepdims)
    return (res[()], sgn[()]) if res.ndim == 0 else (res, sgn)


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


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, axis=-1, return_grad=False, grad_out=None, backend=None):
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
    """
    x = _canon.as_array(logits, "logits")
    if x.dtype.kind != "f":
        raise TypeError(
            f"logits must be a floating-point array, got dtype {x.dtype}; "
            "convert it, e.g. logits.astype(np.float32)"
        )
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; "
                         f"got {reduction!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    smoothing = float(label_smoothing)
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    try:
        ignore_index = operator.index(ignore_index)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}") from None
    if axis is None or isinstance(axis, tuple):
        raise TypeError(f"axis of cross_entropy is the class axis, one integer; got {axis!r}")
    (ax,) = _canon.normalize_axes(axis, x.ndim)
    n_cls = x.shape[ax]
    if n_cls == 0:
        raise ValueError(f"logits have no class: axis {axis} of shape {x.shape} has length 0")
    res_dtype = x.dtype
    cdt = _canon.compute_dtype(res_dtype)
    kdt = cdt or res_dtype
    batch_shape = x.shape[:ax] + x.shape[ax + 1:]

    tgt = _canon.as_array(target, "target")
    probs = None
    idx = None
    if tgt.dtype.kind in "fc" and tgt.shape == x.shape:
        if tgt.dtype.kind == "c":
            raise TypeError("probability targets must be real floating-point numbers")
        probs = tgt
    elif tgt.dtype.kind == "b":
        raise TypeError("target must hold class indices (integers) or class probabilities "
                        "(floats of the logits' shape), not booleans")
    else:
        idx = _index_targets(tgt, batch_shape, n_cls, ignore_index)

    w = None
    if weight is not None:
        w = _canon.as_array(weight, "weight")
        if w.dtype.kind not in "biuf":
            raise TypeError(f"weight must be real numbers, got dtype {w.dtype}")
        if w.shape != (n_cls,):
            raise ValueError(f"weight must have shape ({n_cls},) (one per class), got {w.shape}")
        w = np.ascontiguousarray(w, dtype=kdt)

    if grad_out is not None:
        _canon.check_out(grad_out, x.shape, res_dtype, "grad_out")
        return_grad = True

    lay = _canon.layout(x, (ax,))
    # class axis last: (rows, C)
    rows_perm = tuple(a for a in range(x.ndim) if a != ax) + (ax,)
    if lay.inner != 1:
        lay = _canon.Layout(x.shape, (ax,), rows_perm, lay.outer * lay.inner, n_cls, 1, True)
    n_rows = lay.outer

    loss_rows = np.zeros(n_rows, kdt)
    grad = None
    if return_grad:
        grad = grad_out if grad_out is not None else np.empty_like(x)

    if n_rows:
        _, mod, _ = _backend_for(backend, "cross_entropy", cdt, (n_rows, n_cls, 1))
        x2 = lay.to3(x, kdt).reshape(n_rows, n_cls)
        p2 = None if probs is None else lay.to3(probs, kdt).reshape(n_rows, n_cls)
        g2 = None
        if grad is not None:
            v = lay.view3(grad) if grad.dtype == kdt else None
            g2 = None if v is None else v.reshape(n_rows, n_cls)
            if g2 is None or _overlaps(g2, x2) or (p2 is not None and np.may_share_memory(g2, p2)):
                g2 = np.empty((n_rows, n_cls), kdt)
        if reduction == "mean":
            if idx is None:
                denom = float(n_rows)
            else:
                valid = idx != ignore_index
                denom = (float(np.sum(w[idx[valid]], dtype=np.float64)) if w is not None
                         else float(np.count_nonzero(valid)))
        else:
            denom = 1.0
        with np.errstate(divide="ignore"):
            scale = float(np.float64(1.0) / np.float64(denom))
        mod.cross_entropy(x2, idx, p2, w, ignore_index, smoothing, scale, loss_rows, g2,
                          _dispatch.get_num_threads())
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
