"""softmax and log_softmax: drop-ins for ``scipy.special.softmax`` / ``log_softmax``.

Each public function first offers the call to the fast path (``_dispatch.fast_path``: the C
extension checks the common case and runs the kernel in one call, or returns None) and then
runs the general path, ``_softmax_like``.  An option the fast path does not know must be
checked before it is offered the call (pass the call on only with the option at its default).
"""
from __future__ import annotations

import numpy as np

from .. import _canon, _dispatch, _registry
from . import masked as _masked
from ._common import (backend_for, check_choice, is_plain, kernel_scale, overlaps,
                      row_scale)

_OPS = {False: _registry.OPS["softmax"], True: _registry.OPS["log_softmax"]}


def _softmax_like(x, axis, out, backend, method, log: bool, temperature=1.0, base=None):
    """The general path: every input and option, every backend."""
    op = _OPS[log]
    arr = _canon.as_array(x, "x")
    res_dtype = _canon.exp_result_dtype(arr.dtype, op.name)
    axes = _canon.normalize_axes(axis, arr.ndim)
    check_choice(method, op.methods, "method")
    sc = row_scale(temperature, base, arr.shape, axes)
    if out is not None:
        _canon.check_out(out, arr.shape, res_dtype)
    lay = _canon.Layout.reduce(arr, axes)
    if lay.n == 0:
        raise ValueError(
            f"{op.name} over an empty axis is undefined: the reduced axes {axes} of shape "
            f"{arr.shape} hold no element (scipy.special raises here too)"
        )
    res = out if out is not None else np.empty_like(arr, dtype=res_dtype)
    if arr.size:
        cdt = _canon.compute_dtype(res_dtype)
        _, mod, tuned = backend_for(backend, op, cdt, lay.shape3)
        method = tuned if method == "auto" else method
        x3 = lay.to3(arr, cdt or res_dtype)
        dst = lay.view3(res) if res.dtype == x3.dtype else None
        if dst is None or overlaps(dst, x3):
            dst = np.empty(lay.shape3, x3.dtype)
        if sc is None:
            mod.softmax(x3, dst, log, method, _dispatch.get_num_threads())
        else:   # temperature / base: the factor 1/T per row, fused in the kernels
            mod.softmax(x3, dst, log, method, _dispatch.get_num_threads(),
                        kernel_scale(sc, lay))
        if not np.may_share_memory(dst, res):
            np.copyto(res, lay.from3(dst), casting="same_kind")
    if out is None and arr.ndim == 0:
        return res[()]
    return res


def softmax(x, axis=None, *, out=None, backend=None, method="auto", temperature=1.0,
            base=None, where=None):
    """Softmax of ``x`` along ``axis``: a drop-in for ``scipy.special.softmax``.

    ``axis`` is None (the whole array), an int or a tuple of ints.  The result has scipy's dtype
    (float64 for int32/int64, float16 for int8/uint8 and float16, float32 for int16 and float32)
    and ``x``'s shape.  ``out=`` takes a preallocated result array (it may be ``x`` itself, for an
    in-place softmax).  ``backend`` is "auto", "numba", "cython" or "numpy"; ``method`` is "auto",
    "three_pass" (max, exp+sum, scale) or "online" (running max and sum, then scale).

    ``temperature`` T: the softmax of ``x / T`` (a positive finite number, or one per reduced
    row: an array broadcasting against the reduced shape, or the keepdims shape).  ``base`` b
    (> 0, != 1): ``b**x / sum(b**x)``, temperature 1/ln(b); give one of the two, not both
    (TypeError).  Both are fused into the kernels (docs/training.md, "Temperature and base").
    ``where`` (jax.nn.softmax's): a boolean array broadcasting against ``x``; False entries
    take no part and give 0 (a row with no True entry: all 0); docs/training.md, "Masks".
    """
    if where is not None:   # masks: ops/masked.py (never the fast path)
        return _masked.softmax(x, axis, out, backend, method, where, False, _softmax_like,
                               temperature, base)
    if is_plain(temperature, base):
        fast = _dispatch.fast_path(backend)
        if fast is not None:
            res = fast.softmax(x, axis, out, method, False)
            if res is not None:
                return res
    return _softmax_like(x, axis, out, backend, method, False, temperature, base)


def log_softmax(x, axis=None, *, out=None, backend=None, method="auto", temperature=1.0,
                base=None, where=None):
    """Log of the softmax of ``x`` along ``axis``: a drop-in for ``scipy.special.log_softmax``.

    Same arguments and result dtypes as :func:`softmax` (``temperature`` T: log_softmax of
    ``x / T``; ``base`` b: the log, natural, of ``b**x / sum(b**x)``); with ``where``, False
    entries give -inf (a row with no True entry: all -inf).
    """
    if where is not None:   # masks: ops/masked.py (never the fast path)
        return _masked.softmax(x, axis, out, backend, method, where, True, _softmax_like,
                               temperature, base)
    if is_plain(temperature, base):
        fast = _dispatch.fast_path(backend)
        if fast is not None:
            res = fast.softmax(x, axis, out, method, True)
            if res is not None:
                return res
    return _softmax_like(x, axis, out, backend, method, True, temperature, base)
