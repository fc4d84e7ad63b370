"""logsumexp: a drop-in for ``scipy.special.logsumexp``.

The fast path first (``_dispatch.fast_path``: the common call in one C call, or None), then
the general path, ``_logsumexp``.
"""
from __future__ import annotations

import numpy as np

from .. import _canon, _dispatch, _registry
from . import masked as _masked
from ._common import backend_for, is_plain, is_python_scalar, kernel_scale, row_scale

_OP = _registry.OPS["logsumexp"]


def _broadcast_b(arr, b):
    """(a, b) broadcast together, b as an array (or None), and the result dtype."""
    if b is None:
        return arr, None, _canon.lse_result_dtype(arr, None)
    barr = _canon.as_array(b, "b")
    try:
        shape = np.broadcast_shapes(arr.shape, barr.shape)
    except ValueError:
        raise ValueError(
            f"b of shape {barr.shape} does not broadcast against a of shape {arr.shape}"
        ) from None
    arr = np.broadcast_to(arr, shape)
    barr = np.broadcast_to(barr, shape)
    if is_python_scalar(b):
        res_dtype = np.result_type(_canon.lse_result_dtype(arr, None), b)
    else:
        res_dtype = _canon.lse_result_dtype(arr, barr)
    return arr, barr, res_dtype


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, *, backend=None,
              temperature=1.0, base=None, where=None):
    """``log(sum(b * exp(a)))`` along ``axis``: a drop-in for ``scipy.special.logsumexp``.

    ``b`` scales the terms (broadcast against ``a``; zeros mask entries, negative values subtract).
    With ``return_sign=True`` the result is ``(log|sum|, sign)``; otherwise a negative sum gives
    NaN.  An empty reduction gives -inf.  0-d results come back as NumPy scalars, like scipy's.

    ``temperature`` T: ``T * log(sum(b * exp(a / T)))``, the smooth maximum (it tends to the
    max as T -> 0); a positive finite number or one per reduced row (an array broadcasting
    against the reduced shape, or the keepdims shape).  ``base`` (> 0, != 1): temperature
    1/ln(base), i.e. ``log_base(sum(b * base**a))``.  Not both (TypeError).
    ``where`` (jax.nn.logsumexp's): a boolean array broadcasting against ``a``; False entries
    take no part (a row with no True entry: -inf, sign 0); see docs/training.md.
    """
    if where is not None:   # masks: ops/masked.py (never the fast path)
        return _masked.logsumexp(a, axis, b, keepdims, return_sign, backend, where,
                                 _broadcast_b, _logsumexp, temperature, base)
    if is_plain(temperature, base):
        fast = _dispatch.fast_path(backend)
        if fast is not None:
            res = fast.logsumexp(a, axis, b, keepdims, return_sign)
            if res is not None:
                return res
    return _logsumexp(a, axis, b, keepdims, return_sign, backend, temperature, base)


def _logsumexp(a, axis, b, keepdims, return_sign, backend, temperature=1.0, base=None):
    """The general path: every input and option, every backend."""
    arr, barr, res_dtype = _broadcast_b(_canon.as_array(a, "a"), b)
    if arr.ndim == 0:  # scipy works on at least 1-d
        arr = arr.reshape(1)
        barr = None if barr is None else barr.reshape(1)
    axes = _canon.normalize_axes(axis, arr.ndim)
    sc = row_scale(temperature, base, arr.shape, axes)
    lay = _canon.Layout.reduce(arr, axes)
    r2 = np.empty((lay.outer, lay.inner), res_dtype)
    s2 = np.empty_like(r2) if return_sign else None
    if lay.n == 0:
        r2.fill(-np.inf)
        if sc is not None:  # T * log(0): +inf where the factor (1/T) is negative (base < 1)
            r2[np.broadcast_to(np.asarray(kernel_scale(sc, lay)) < 0, r2.shape)] = np.inf
        if return_sign:
            s2.fill(-1)  # scipy's sign(-inf) for an empty reduction
    elif r2.size:
        cdt = _canon.compute_dtype(res_dtype)
        _, mod, _ = backend_for(backend, _OP, cdt, lay.shape3)
        kdt = cdt or res_dtype
        k_out = r2 if r2.dtype == kdt else np.empty(r2.shape, kdt)
        k_sign = None if s2 is None else (s2 if s2.dtype == kdt else np.empty(s2.shape, kdt))
        args = (lay.to3(arr, kdt), None if barr is None else lay.to3(barr, kdt), k_out, k_sign,
                _dispatch.get_num_threads())
        if sc is None:
            mod.logsumexp(*args)
        else:   # temperature / base: the factor 1/T per row, fused in the kernels
            mod.logsumexp(*args, kernel_scale(sc, lay))
        if k_out is not r2:
            r2[...] = k_out
            if s2 is not None:
                s2[...] = k_sign
    res = lay.from2(r2, keepdims)
    if not return_sign:
        return res[()] if res.ndim == 0 else res
    sgn = lay.from2(s2, keepdims)
    if res.dtype.kind == "c":  # log|sum| is real, as scipy's (complex64 -> float32)
        res = res.real.copy()
    return (res[()], sgn[()]) if res.ndim == 0 else (res, sgn)
