"""``where=`` (jax.nn.softmax's masks) for softmax, log_softmax, logsumexp and the two backward
passes: validation, the mask reduced to its distinct rows, one masked kernel call.

Semantics (docs/training.md, "Masks"): the False entries of ``where`` take no part in the max or
the sum; their result is 0 (softmax, both backward passes) or -inf (log_softmax); on the True
entries each op is the plain op of those entries alone (NaN / inf in them follow the plain op,
those of masked-out entries never reach a result).  A row with no True entry: all 0 (softmax),
all -inf (log_softmax), -inf with sign 0 (logsumexp).

The masked kernels (``_registry.Op.masked``: the kernel entry of an op's masked form) take rows:
x as (outer, n), the reduced axes last (a free view for a C-contiguous x reduced along its last
axes; any other layout is copied once, as the general path copies odd layouts).  The mask is
never materialized at x's size: ``reduce_mask`` keeps its distinct rows, a (mrows, n) uint8
array of at most the mask's own size, and an int64 row map (outer,) naming each x row's mask
row.  A causal (n, n) mask over (B, n, n) is n*n bytes and a map of B*n; a mask of shape (n,) is
one row; a row-only mask (B, 1) two rows (all False, all True) and a map of its values.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _canon, _dispatch, _registry
from ._common import backend_for, check_choice, overlaps, row_scale


def check_where(where, shape, name: str) -> np.ndarray:
    """``where`` as a boolean array that broadcasts to ``shape``: TypeError for another dtype,
    ValueError (both shapes named) for one that does not broadcast."""
    w = where if isinstance(where, np.ndarray) else np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"{name}: where must be a boolean array (True: the entry takes part); "
                        f"got dtype {w.dtype} (use where=mask.astype(bool))")
    try:
        ok = np.broadcast_shapes(w.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: where of shape {w.shape} does not broadcast against the "
                         f"input's shape {tuple(shape)}")
    return w


def reduce_mask(w: np.ndarray, shape, axes) -> tuple[np.ndarray, np.ndarray]:
    """(mask, rowmap): the distinct rows of ``w`` broadcast to ``shape`` with ``axes`` (the
    reduced ones) moved last, as a C-contiguous (mrows, n) uint8 array, and the int64 (outer,)
    map from the rows of x to them.  Built from broadcast views: nothing of x's size."""
    nd = len(shape)
    keep = [a for a in range(nd) if a not in axes]
    wt = np.broadcast_to(w, shape).transpose(keep + list(axes))
    k = len(keep)
    bshape, nshape = wt.shape[:k], wt.shape[k:]
    n = math.prod(nshape)
    if all(st == 0 or sz == 1 for st, sz in zip(wt.strides[k:], nshape)):
        # constant along the row (a row-only mask, or n == 1): two rows, the map is the mask
        mask = np.zeros((2, n), np.uint8)
        mask[1] = 1
        rowmap = np.ascontiguousarray(wt[(Ellipsis,) + (0,) * len(nshape)], np.int64)
        return mask, rowmap.reshape(-1)
    sel = tuple(slice(0, 1) if st == 0 else slice(None) for st in wt.strides[:k])
    small = wt[sel]
    mshape = small.shape[:k]
    mask = np.ascontiguousarray(small).reshape(-1, n).view(np.uint8)
    ids = np.arange(math.prod(mshape), dtype=np.int64).reshape(mshape)
    rowmap = np.ascontiguousarray(np.broadcast_to(ids, bshape)).reshape(-1)
    return mask, rowmap


def _rows_of(arr: np.ndarray, axes, kdt) -> tuple[np.ndarray, list]:
    """(rows, perm): arr with ``axes`` moved last as a C-contiguous aligned (outer, n) array of
    ``kdt`` (a view when arr already is one), and the axis order of that view."""
    keep = [a for a in range(arr.ndim) if a not in axes]
    perm = keep + list(axes)
    t = arr.transpose(perm)
    n = math.prod(t.shape[len(keep):])
    rows = np.require(t, dtype=kdt, requirements=["C", "A"])
    return rows.reshape(-1, n), perm


def _dst_rows(res: np.ndarray, perm, kdt, shape2, *inputs) -> np.ndarray:
    """The kernel's output: a view of ``res`` as rows when it is one (it may be an input's own
    buffer, never a partial overlap), else a temporary."""
    t = res.transpose(perm)
    if res.dtype == kdt and t.flags.c_contiguous and t.flags.aligned:
        dst = t.reshape(shape2)
        if not any(overlaps(dst, a) for a in inputs):
            return dst
    return np.empty(shape2, kdt)


def _store(res, dst, perm):
    """Copy the kernel's rows into ``res`` (nothing when they are res's own buffer)."""
    if not np.may_share_memory(dst, res):
        t = res.transpose(perm)
        np.copyto(t, dst.reshape(t.shape), casting="same_kind")


def _row_factors(temperature, base, shape, axes, perm, outer):
    """temperature= / base= as the masked kernels' ``scale``: None (the plain op) or a float64
    (outer,) array, one factor (1/T, or ln(base)) per row of x in the rows' order (``perm``)."""
    sc = row_scale(temperature, base, shape, axes)
    if sc is None:
        return None
    if isinstance(sc, float):
        return np.full(outer, sc)
    return np.ascontiguousarray(sc.transpose(perm)).reshape(outer)


def _scalar_input(arr, w):
    """A 0-d input and its mask as 1-element arrays (the result is reshaped back)."""
    return arr.reshape(1), w.reshape(1)


# ------------------------------------------------------------------------- softmax
def softmax(x, axis, out, backend, method, where, log: bool, plain, temperature=1.0, base=None):
    """softmax / log_softmax(x, axis, where=, temperature=, base=): see the module docstring.
    ``plain`` is the unmasked general path (ops/softmax.py's ``_softmax_like``), which serves
    the empty cases (its error for an empty axis, an empty result)."""
    op = _registry.OPS["log_softmax" if log else "softmax"]
    arr = _canon.as_array(x, "x")
    w = check_where(where, arr.shape, op.name)
    check_choice(method, op.methods, "method")
    axes = _canon.normalize_axes(axis, arr.ndim)
    res_dtype = _canon.exp_result_dtype(arr.dtype, op.name)
    if out is not None:
        _canon.check_out(out, arr.shape, res_dtype)
    n = math.prod(arr.shape[a] for a in axes)
    if n == 0 or arr.size == 0:     # the plain op's error (an empty axis) or empty result
        return plain(x, axis, out, backend, method, log, temperature, base)
    res = out if out is not None else np.empty_like(arr, dtype=res_dtype)
    a1, w1, ax1, r1 = arr, w, axes, res
    if arr.ndim == 0:
        a1, w1 = _scalar_input(arr, np.broadcast_to(w, ()))
        ax1, r1 = (0,), res.reshape(1)
    cdt = _canon.compute_dtype(res_dtype)
    kdt = cdt or res_dtype
    outer = a1.size // n
    _, mod, _ = backend_for(backend, op, cdt, (outer, n, 1))
    x2, perm = _rows_of(a1, ax1, kdt)
    mask, rowmap = reduce_mask(w1, a1.shape, ax1)
    scale = _row_factors(temperature, base, a1.shape, ax1, perm, outer)
    dst = _dst_rows(r1, perm, kdt, x2.shape, x2)
    getattr(mod, op.masked)(x2, mask, rowmap, dst, log, scale, _dispatch.get_num_threads())
    _store(r1, dst, perm)
    if out is None and arr.ndim == 0:
        return res[()]
    return res


# ----------------------------------------------------------------------- logsumexp
def logsumexp(a, axis, b, keepdims, return_sign, backend, where, broadcast_b, plain,
              temperature=1.0, base=None):
    """logsumexp(a, axis, b, keepdims, return_sign, where=): without b, the masked kernel; with
    b (or a dtype no compiled kernel takes, or an empty array), where joins b's masking (b = 0
    and a = -inf at the False entries: scipy's result on the True entries alone) and ``plain``,
    the unmasked general path, runs.  ``broadcast_b``: ops/logsumexp.py's ``_broadcast_b``."""
    _OP = _registry.OPS["logsumexp"]
    arr = _canon.as_array(a, "a")
    ab, bb, res_dtype = broadcast_b(arr, b)
    w = check_where(where, ab.shape, "logsumexp")
    if ab.ndim == 0:
        ab, w = ab.reshape(1), np.broadcast_to(w, ()).reshape(1)
        bb = None if bb is None else bb.reshape(1)
    axes = _canon.normalize_axes(axis, ab.ndim)
    cdt = _canon.compute_dtype(res_dtype)
    if bb is not None or cdt is None or ab.size == 0:
        a_m = np.where(w, ab, np.array(-np.inf).astype(res_dtype)).astype(res_dtype, copy=False)
        b_m = w.astype(res_dtype) if bb is None else np.where(w, bb, 0).astype(res_dtype)
        return plain(a_m, axis, b_m, keepdims, return_sign, backend, temperature, base)
    n = math.prod(ab.shape[x] for x in axes)
    outer = ab.size // n
    _, mod, _ = backend_for(backend, _OP, cdt, (outer, n, 1))
    x2, perm = _rows_of(ab, axes, cdt)
    mask, rowmap = reduce_mask(w, ab.shape, axes)
    scale = _row_factors(temperature, base, ab.shape, axes, perm, outer)
    r = np.empty(outer, cdt)
    s = np.empty(outer, cdt) if return_sign else None
    getattr(mod, _OP.masked)(x2, mask, rowmap, r, s, scale, _dispatch.get_num_threads())
    if scale is not None:       # the kernel's log sum exp(a * c), times T = 1 / c
        with np.errstate(all="ignore"):
            r = r / scale.astype(cdt)
    kept = tuple(ab.shape[x] for x in range(ab.ndim) if x not in axes)

    def shaped(v):
        v = v.astype(res_dtype, copy=False).reshape(kept)
        if keepdims:
            v = np.expand_dims(v, tuple(sorted(axes)))
        return v[()] if v.ndim == 0 else v
    if not return_sign:
        return shaped(r)
    return shaped(r), shaped(s)


# ------------------------------------------------------------------------ backward
def backward(grad, y, axis, out, backend, where, log: bool, plain, result_dtype):
    """softmax_backward / log_softmax_backward(grad, y, axis, where=).  ``plain``: the unmasked
    op (ops/backward.py's ``_backward``: its error for unequal shapes, the empty result);
    ``result_dtype``: its ``_result_dtype``."""
    op = _registry.OPS["log_softmax_backward" if log else "softmax_backward"]
    g = _canon.as_array(grad, "grad")
    yy = _canon.as_array(y, "y")
    if g.shape != yy.shape:
        return plain(grad, y, axis, out, backend, log)
    w = check_where(where, g.shape, op.name)
    if g.size == 0:
        return plain(grad, y, axis, out, backend, log)
    res_dtype = result_dtype(g, yy, op.name)
    axes = _canon.normalize_axes(axis, g.ndim)
    if out is not None:
        _canon.check_out(out, g.shape, res_dtype)
    res = out if out is not None else np.empty(g.shape, res_dtype)
    g1, y1, w1, ax1, r1 = g, yy, w, axes, res
    if g.ndim == 0:
        g1, w1 = _scalar_input(g, np.broadcast_to(w, ()))
        y1, ax1, r1 = yy.reshape(1), (0,), res.reshape(1)
    cdt = _canon.compute_dtype(res_dtype)
    kdt = cdt or res_dtype
    n = math.prod(g1.shape[a] for a in ax1)
    _, mod, _ = backend_for(backend, op, cdt, (g1.size // n, n, 1))
    g2, perm = _rows_of(g1, ax1, kdt)
    y2, _ = _rows_of(y1, ax1, kdt)
    mask, rowmap = reduce_mask(w1, g1.shape, ax1)
    dst = _dst_rows(r1, perm, kdt, g2.shape, g2, y2)
    getattr(mod, op.masked)(g2, y2, mask, rowmap, dst, log, _dispatch.get_num_threads())
    _store(r1, dst, perm)
    if out is None and g.ndim == 0:
        return res[()]
    return res


__all__ = ["check_where", "reduce_mask", "softmax", "logsumexp", "backward"]
