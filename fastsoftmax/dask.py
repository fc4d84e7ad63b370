"""fastsoftmax on dask arrays: ``softmax``, ``log_softmax``, ``logsumexp`` and ``cross_entropy``
taking dask arrays and returning lazy dask arrays (0-d ones for scalar results).

Needs the extra ``fastsoftmax[dask]``; ``import fastsoftmax`` never imports this module.
Arguments and semantics are those of the in-memory functions (``fastsoftmax.softmax`` ...), whose
kernels do the work inside every task.  Design (docs/scaling.md):

* the reduced axes within one chunk: one ``map_blocks`` over the in-memory function;
* the reduced axes spanning chunks: a ``dask.array.reduction`` whose partials are the online
  softmax pair (m, s) of a block, ``sum(exp(x)) = s * exp(m)``, merged associatively by
  ``M = max(m_i)``, ``S = sum(s_i * exp(m_i - M))`` (so ``split_every`` trees work).  A block's
  pair comes from the compiled logsumexp (``m`` = its log|sum|, ``s`` = its sign, which carries
  ``b``'s negative terms); the merge is the compiled logsumexp again, of the ``m_i`` with
  ``b = s_i``, which also gives NaN / inf the in-memory semantics.  softmax / log_softmax then
  normalize block by block against the merged logsumexp (a second blockwise pass; no rechunk);
* cross_entropy: per-block losses; the mean is a tree reduction of (loss sum, weight sum), and
  the gradient is block-wise, scaled by the merged weight sum.  The class axis is rechunked to
  one chunk when it spans several (only that axis: a batch chunk of rows x all classes).

Threads: every task runs the kernels with a budget of ``threads`` (default 1), so that dask's
workers x kernel threads do not oversubscribe the cores; pass ``threads=`` to change it.

Input that is not a dask array is rejected with a TypeError (use the in-memory functions, or
wrap it with ``dask.array.from_array``).  Unknown chunk sizes (NaN) along a reduced axis that
spans several chunks are a ValueError that says to call ``compute_chunk_sizes()``.
"""
from __future__ import annotations

import functools
import string
import threading

import dask.array as da
import numpy as np

from . import _canon, _dispatch
from . import ops as _ops
from .ops._common import check_choice
from .ops.cross_entropy import _class_axis, _smoothing

__all__ = ["softmax", "log_softmax", "logsumexp", "cross_entropy"]


# ------------------------------------------------------------------------- thread budget
class _budget:
    """Run the kernels of concurrent tasks of one process with ``n`` threads each; the process's
    own setting comes back when the last of them ends."""
    _lock = threading.Lock()
    _active = 0
    _saved = None

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        cls = _budget
        with cls._lock:
            if cls._active == 0:
                cls._saved = _dispatch.get_num_threads()
                _dispatch.set_num_threads(self.n)
            cls._active += 1

    def __exit__(self, *exc):
        cls = _budget
        with cls._lock:
            cls._active -= 1
            if cls._active == 0:
                _dispatch.set_num_threads(cls._saved)


def _check_threads(threads):
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int (the kernels' budget per task), "
                         f"got {threads!r}")
    return threads


# ------------------------------------------------------------------------------- checks
def _dask(x, name: str, fn: str):
    if not isinstance(x, da.Array):
        raise TypeError(
            f"fastsoftmax.dask.{fn} takes a dask array as {name}, got {type(x).__name__}; for "
            f"in-memory arrays call fastsoftmax.{fn}, or wrap it: dask.array.from_array(x, chunks=...)"
        )
    return x


def _spans(x, axes, fn: str) -> bool:
    """True if a reduced axis spans several chunks; a ValueError if its chunk sizes are unknown."""
    spans = any(x.numblocks[a] > 1 for a in axes)
    if spans and any(np.isnan(c) for a in axes for c in x.chunks[a]):
        raise ValueError(
            f"fastsoftmax.dask.{fn}: the chunk sizes along the reduced axes {axes} are unknown "
            "(NaN, e.g. after boolean indexing); call x.compute_chunk_sizes() first, or rechunk "
            "those axes to one chunk"
        )
    return spans


def _work_dtype(res_dtype):
    """The dtype the partials are kept in: the kernels' (float16 is computed in float32)."""
    return np.dtype(_canon.compute_dtype(res_dtype) or res_dtype)


def _pair_dtype(dt):
    return np.dtype([("m", dt), ("s", dt)])


# --------------------------------------------------------------------------- the (m, s) pairs
def _lse_chunk(a, b=None, *, axis, keepdims, dt, backend, threads, computing_meta=False):
    """A block's pair: m = log|sum(b * exp(a))|, s = its sign (the in-memory logsumexp)."""
    out_shape = tuple(1 if i in axis else n for i, n in enumerate(a.shape))
    pair = np.empty(out_shape, _pair_dtype(dt))
    if computing_meta or pair.size == 0:
        return pair
    with _budget(threads):
        m, s = _ops.logsumexp(a.astype(dt, copy=False), axis=axis,
                              b=None if b is None else b.astype(dt, copy=False),
                              keepdims=True, return_sign=True, backend=backend)
    pair["m"], pair["s"] = m, s
    return pair


def _lse_merge(pairs, *, axis, keepdims, backend, threads, return_sign=True, dt=None,
               computing_meta=False):
    """Merge the pairs along ``axis``: M = max(m_i), S = sum(s_i * exp(m_i - M)), stored as
    (M + log|S|, sign S) -- the in-memory logsumexp of the m_i with b = s_i.  Without
    ``return_sign`` (the root of a tree) a negative sum gives NaN, as in the in-memory function."""
    shape = tuple(1 if i in axis else n for i, n in enumerate(pairs.shape))
    if not keepdims:
        shape = tuple(n for i, n in enumerate(pairs.shape) if i not in axis)
    out = np.empty(shape, pairs.dtype)
    if computing_meta or out.size == 0:
        return out
    with _budget(threads):
        if return_sign:
            m, s = _ops.logsumexp(pairs["m"], axis=axis, b=pairs["s"], keepdims=keepdims,
                                  return_sign=True, backend=backend)
        else:
            m = _ops.logsumexp(pairs["m"], axis=axis, b=pairs["s"], keepdims=keepdims,
                               backend=backend)
            s = np.sign(m)
    out["m"], out["s"] = m, s
    return out


def _lse_pairs(a, b, axes, keepdims, return_sign, dt, backend, threads, split_every):
    """The lazy merged pairs of ``a`` (and ``b``) along ``axes``: a structured dask array."""
    kw = dict(dt=dt, backend=backend, threads=threads)
    merge = dict(backend=backend, threads=threads)
    pdt = _pair_dtype(dt)
    out_ndim = a.ndim if keepdims else a.ndim - len(axes)
    meta = np.empty((0,) * out_ndim, pdt)
    if b is None:
        chunk = functools.partial(_lse_chunk, **kw)
        return da.reduction(a, chunk, functools.partial(_lse_merge, return_sign=return_sign,
                                                        **merge),
                            combine=functools.partial(_lse_merge, **merge), axis=axes,
                            keepdims=keepdims, dtype=pdt, split_every=split_every,
                            concatenate=True, meta=meta, name="fastsoftmax-lse")
    # with b: the chunk function takes a's block and b's block
    inds = tuple(range(a.ndim))
    parts = da.blockwise(functools.partial(_lse_chunk, axis=axes, keepdims=True, **kw), inds,
                         a, inds, b, inds, dtype=pdt, meta=np.empty((0,) * a.ndim, pdt),
                         adjust_chunks={i: 1 for i in axes}, token="fastsoftmax-lse-b")
    ident = functools.partial(_identity_pairs)
    return da.reduction(parts, ident, functools.partial(_lse_merge, return_sign=return_sign,
                                                        **merge),
                        combine=functools.partial(_lse_merge, **merge), axis=axes,
                        keepdims=keepdims, dtype=pdt, split_every=split_every,
                        concatenate=True, meta=meta, name="fastsoftmax-lse")


def _identity_pairs(p, axis, keepdims, computing_meta=False):
    return p  # already one pair per block along the reduced axes


# ------------------------------------------------------------------------------ logsumexp
def _sample(dtype, ndim=1):
    return np.zeros((1,) * max(ndim, 1), dtype)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, *, backend=None,
              threads=1, split_every=None):
    """``log(sum(b * exp(a)))`` along ``axis`` of the dask array ``a``, lazily: the arguments and
    results of :func:`fastsoftmax.logsumexp` (``b`` a dask array, an array or a scalar,
    broadcast against ``a``), as a dask array (0-d for a scalar result); with ``return_sign`` a
    pair of them.  ``threads`` is each task's kernel thread budget; ``split_every`` the fan-in
    of the merge tree (dask's default when None)."""
    a = _dask(a, "a", "logsumexp")
    _check_threads(threads)
    if a.ndim == 0:
        a = a.reshape(1)
    if b is None:
        res_dtype = np.asarray(_ops.logsumexp(_sample(a.dtype))).dtype
    else:
        bs = b if np.isscalar(b) else _sample(getattr(b, "dtype", np.asarray(b).dtype))
        res_dtype = np.asarray(_ops.logsumexp(_sample(a.dtype), b=bs)).dtype
        barr = b if isinstance(b, da.Array) else da.asarray(np.asarray(b))
        try:
            shape = np.broadcast_shapes(a.shape, barr.shape)
        except ValueError:
            raise ValueError(f"b of shape {barr.shape} does not broadcast against a of shape "
                             f"{a.shape}") from None
        if shape != a.shape:
            a = da.broadcast_to(a, shape)
        b = da.broadcast_to(barr, shape).rechunk(a.chunks)
    if res_dtype.kind == "c":
        raise TypeError("fastsoftmax.dask.logsumexp takes real input; complex input runs the "
                        "in-memory fastsoftmax.logsumexp")
    axes = _canon.normalize_axes(axis, a.ndim)
    _spans(a, axes, "logsumexp")
    dt = _work_dtype(res_dtype)
    # one chunk along the axes or several: the same two steps (the merge of one pair per row is
    # the identity of the in-memory semantics); the tree only grows where the axes span chunks
    pairs = _lse_pairs(a, b, axes, keepdims, return_sign, dt, backend, threads, split_every)
    res = pairs["m"].astype(res_dtype)
    if not return_sign:
        return res
    return res, pairs["s"].astype(res_dtype)


# ------------------------------------------------------------------------ softmax family
def _block_softmax(x, *, axis, log, dt, res_dtype, backend, method, threads):
    with _budget(threads):
        fn = _ops.log_softmax if log else _ops.softmax
        return fn(x.astype(dt, copy=False), axis=axis, backend=backend,
                  method=method).astype(res_dtype, copy=False)


def _normalize(x, pairs, *, axis, log, dt, res_dtype):
    """A block of softmax / log_softmax from the merged logsumexp of its rows."""
    lse = np.expand_dims(pairs["m"], axis)
    x = x.astype(dt, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        if log:
            y = x - lse
        else:  # a row holding +inf is NaN throughout, as in the in-memory softmax
            y = np.exp(x - np.where(lse == np.inf, np.nan, lse))
    return y.astype(res_dtype, copy=False)


def _softmax_like(x, axis, backend, method, threads, split_every, log):
    name = "log_softmax" if log else "softmax"
    x = _dask(x, "x", name)
    _check_threads(threads)
    fn = _ops.log_softmax if log else _ops.softmax
    res_dtype = np.asarray(fn(_sample(x.dtype))).dtype
    check_choice(method, ("auto", "three_pass", "online"), "method")
    if x.ndim == 0:
        return x.map_blocks(functools.partial(fn, backend=backend, method=method),
                            dtype=res_dtype)
    axes = _canon.normalize_axes(axis, x.ndim)
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"{name} over an empty axis is undefined: the reduced axes {axes} of "
                         f"shape {x.shape} hold no element (scipy.special raises here too)")
    dt = _work_dtype(res_dtype)
    if not _spans(x, axes, name):
        return x.map_blocks(
            functools.partial(_block_softmax, axis=axes, log=log, dt=dt, res_dtype=res_dtype,
                              backend=backend, method=method, threads=threads),
            dtype=res_dtype, meta=np.empty((0,) * x.ndim, res_dtype))
    pairs = _lse_pairs(x, None, axes, False, False, dt, backend, threads, split_every)
    letters = string.ascii_letters[:x.ndim]
    kept = "".join(c for i, c in enumerate(letters) if i not in axes)
    return da.blockwise(
        functools.partial(_normalize, axis=axes, log=log, dt=dt, res_dtype=res_dtype),
        letters, x, letters, pairs, kept, dtype=res_dtype,
        meta=np.empty((0,) * x.ndim, res_dtype), token=f"fastsoftmax-{name}-normalize")


def softmax(x, axis=None, *, backend=None, method="auto", threads=1, split_every=None):
    """Softmax of the dask array ``x`` along ``axis``, lazily: :func:`fastsoftmax.softmax`'s
    arguments, dtypes and values (no ``out=``: dask arrays are immutable)."""
    return _softmax_like(x, axis, backend, method, threads, split_every, log=False)


def log_softmax(x, axis=None, *, backend=None, method="auto", threads=1, split_every=None):
    """Log-softmax of the dask array ``x`` along ``axis``, lazily (see :func:`softmax`)."""
    return _softmax_like(x, axis, backend, method, threads, split_every, log=True)


# -------------------------------------------------------------------------- cross_entropy
_CE_PAIR = np.dtype([("l", np.float64), ("w", np.float64)])


def _ce_block(x, t, *, axis, weight, ignore_index, smoothing, reduction, grad, backend,
              threads, scale=None):
    """One block: its per-row losses ("none"), its (loss sum, weight sum) pair, or its gradient."""
    t = t.astype(np.int64, copy=False)
    with _budget(threads):
        res = _ops.cross_entropy(x, t, weight=weight, ignore_index=ignore_index,
                                 reduction="none" if grad or reduction == "none" else "sum",
                                 label_smoothing=smoothing, axis=axis, return_grad=grad,
                                 backend=backend)
    if grad:
        g = res[1]
        if scale is not None:
            g *= x.dtype.type(1.0 / scale)
        return g
    if reduction == "none":
        return res
    valid = t != ignore_index
    w = np.count_nonzero(valid) if weight is None else np.sum(weight[t[valid]], dtype=np.float64)
    pair = np.empty((1,) * t.ndim, _CE_PAIR)
    pair["l"], pair["w"] = np.float64(res), w
    return pair


def _ce_sum(p, axis, keepdims, computing_meta=False):
    shape = tuple(1 if i in axis else n for i, n in enumerate(p.shape)) if keepdims else \
        tuple(n for i, n in enumerate(p.shape) if i not in axis)
    out = np.empty(shape, _CE_PAIR)
    if computing_meta or out.size == 0:
        return out
    out["l"] = p["l"].sum(axis=axis, keepdims=keepdims)
    out["w"] = p["w"].sum(axis=axis, keepdims=keepdims)
    return out


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, axis=-1, return_grad=False, backend=None, threads=1,
                  split_every=None):
    """Cross-entropy of the dask array ``logits`` against class-index ``target`` (a dask or
    NumPy integer array of the logits' shape without the class axis), lazily, with
    :func:`fastsoftmax.cross_entropy`'s options (no probability targets, no ``grad_out``).

    The loss is a dask array ("none") or a 0-d one ("mean", "sum": a tree reduction of the
    blocks' (loss sum, weight sum)); with ``return_grad`` the gradient comes too, block-wise."""
    x = _dask(logits, "logits", "cross_entropy")
    _check_threads(threads)
    check_choice(reduction, ("mean", "sum", "none"), "reduction")
    if x.dtype.kind != "f":
        raise TypeError(f"logits must be a floating-point array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    ax = _class_axis(axis, x.ndim)
    smoothing = _smoothing(label_smoothing)
    n_cls = x.shape[ax]
    batch = x.shape[:ax] + x.shape[ax + 1:]
    tgt = target if isinstance(target, da.Array) else da.asarray(np.asarray(target))
    if tgt.dtype.kind not in "iu":
        raise TypeError(f"fastsoftmax.dask.cross_entropy takes class-index targets (integers), "
                        f"got dtype {tgt.dtype}")
    if tgt.shape != batch:
        raise ValueError(f"target has shape {tgt.shape}; class-index targets must have the "
                         f"logits' shape without the class axis, {batch}")
    w = None
    if weight is not None:
        w = np.ascontiguousarray(np.asarray(weight), dtype=x.dtype)
        if w.shape != (n_cls,):
            raise ValueError(f"weight must have shape ({n_cls},) (one per class), got {w.shape}")
    if x.numblocks[ax] > 1:  # only the class axis: blocks of (batch rows) x (all classes)
        x = x.rechunk({ax: -1})
    tgt = tgt.rechunk(x.chunks[:ax] + x.chunks[ax + 1:])
    kw = dict(axis=ax, weight=w, ignore_index=int(ignore_index), smoothing=smoothing,
              backend=backend, threads=threads)
    letters = string.ascii_letters[:x.ndim]
    bl = letters[:ax] + letters[ax + 1:]
    if reduction == "none":
        loss = da.blockwise(functools.partial(_ce_block, reduction="none", grad=False, **kw),
                            bl, x, letters, tgt, bl, dtype=x.dtype, concatenate=True,
                            meta=np.empty((0,) * len(bl), x.dtype))
        denom = None
    else:
        parts = da.blockwise(functools.partial(_ce_block, reduction=reduction, grad=False,
                                               **kw),
                             bl, x, letters, tgt, bl, dtype=_CE_PAIR, concatenate=True,
                             adjust_chunks={c: 1 for c in bl},
                             meta=np.empty((0,) * len(bl), _CE_PAIR))
        tot = da.reduction(parts, _ce_identity, _ce_sum, combine=_ce_sum,
                           axis=tuple(range(len(bl))), keepdims=False, dtype=_CE_PAIR,
                           split_every=split_every, concatenate=True,
                           meta=np.empty((), _CE_PAIR), name="fastsoftmax-ce-sum")
        if reduction == "sum":
            loss = tot["l"].astype(x.dtype)
            denom = None
        else:
            denom = tot["w"]
            with np.errstate(invalid="ignore", divide="ignore"):
                loss = (tot["l"] / denom).astype(x.dtype)
    if not return_grad:
        return loss
    gkw = dict(reduction=reduction, grad=True, **kw)
    if denom is None:
        grad = da.blockwise(functools.partial(_ce_block, **gkw), letters, x, letters, tgt, bl,
                            dtype=x.dtype, concatenate=True,
                            meta=np.empty((0,) * x.ndim, x.dtype))
    else:
        grad = da.blockwise(_ce_grad_scaled, letters, x, letters, tgt, bl, denom, "",
                            dtype=x.dtype, concatenate=True, kw=gkw,
                            meta=np.empty((0,) * x.ndim, x.dtype))
    return loss, grad


def _ce_identity(p, axis, keepdims, computing_meta=False):
    return p


def _ce_grad_scaled(x, t, denom, kw):
    return _ce_block(x, t, scale=float(denom), **kw)
