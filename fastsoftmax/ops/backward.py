"""softmax_backward and log_softmax_backward: the vector-Jacobian products of softmax and
log_softmax (torch's ``_softmax_backward_data`` / ``_log_softmax_backward_data``), one fused
pass per row: the row's sum, then the write while the row is in cache (docs/training.md)."""
from __future__ import annotations

import numpy as np

from .. import _canon, _dispatch, _registry
from . import masked as _masked
from ._common import backend_for, overlaps

_OPS = {False: _registry.OPS["softmax_backward"], True: _registry.OPS["log_softmax_backward"]}


def _result_dtype(g: np.ndarray, y: np.ndarray, name: str) -> np.dtype:
    for arr, what in ((g, "grad"), (y, "y")):
        if arr.dtype.kind == "c":
            raise TypeError(f"{name}: {what} must be real, got dtype {arr.dtype}")
    dt = np.result_type(g.dtype, y.dtype)
    return dt if dt.kind == "f" else np.dtype(np.float64)


def _backward(grad, y, axis, out, backend, log: bool):
    op = _OPS[log]
    g = _canon.as_array(grad, "grad")
    yy = _canon.as_array(y, "y")
    if g.shape != yy.shape:
        raise ValueError(f"{op.name}: grad and y must have the same shape (y is the forward "
                         f"output, grad the gradient of the loss with respect to it); got "
                         f"grad {g.shape} and y {yy.shape}")
    res_dtype = _result_dtype(g, yy, op.name)
    axes = _canon.normalize_axes(axis, g.ndim)
    if out is not None:
        _canon.check_out(out, g.shape, res_dtype)
    res = out if out is not None else np.empty(g.shape, res_dtype)
    if g.size:
        lay = _canon.Layout.joint(g, yy, axes)
        cdt = _canon.compute_dtype(res_dtype)
        kdt = cdt or res_dtype
        _, mod, _ = backend_for(backend, op, cdt, lay.shape3)
        g3, y3 = lay.to3(g, kdt), lay.to3(yy, kdt)
        dst = lay.view3(res) if res.dtype == kdt else None
        # the kernel may write over grad or y themselves (the same view), never a partial overlap
        if dst is None or overlaps(dst, g3) or overlaps(dst, y3):
            dst = np.empty(lay.shape3, kdt)
        mod.softmax_backward(g3, y3, dst, log, _dispatch.get_num_threads())
        if not np.may_share_memory(dst, res):
            np.copyto(res, lay.from3(dst), casting="same_kind")
    if out is None and g.ndim == 0:
        return res[()]
    return res


def softmax_backward(grad, y, axis=-1, *, out=None, backend=None, where=None):
    """The gradient through ``y = softmax(x, axis)``: ``y * (grad - sum(grad * y, axis))``.

    ``grad`` is the gradient of the loss with respect to ``y``, of ``y``'s shape; the result,
    the gradient with respect to ``x``, has that shape and the float dtype of ``grad`` and ``y``
    promoted together.  ``axis`` is an int, a tuple or None (as in :func:`softmax`); ``out=``
    takes a preallocated result, ``grad`` (or ``y``) itself included (in place).  ``where``:
    the forward pass's mask (broadcasting against ``grad``): the sum runs over the True
    entries, the False ones get 0 (docs/training.md).
    """
    if where is not None:   # masks: ops/masked.py
        return _masked.backward(grad, y, axis, out, backend, where, False, _backward,
                                _result_dtype)
    return _backward(grad, y, axis, out, backend, log=False)


def log_softmax_backward(grad, y, axis=-1, *, out=None, backend=None, where=None):
    """The gradient through ``y = log_softmax(x, axis)``: ``grad - exp(y) * sum(grad, axis)``.

    Same arguments and result dtype as :func:`softmax_backward`.
    """
    if where is not None:   # masks: ops/masked.py
        return _masked.backward(grad, y, axis, out, backend, where, True, _backward,
                                _result_dtype)
    return _backward(grad, y, axis, out, backend, log=True)
