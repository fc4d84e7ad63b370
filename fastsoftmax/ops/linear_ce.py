"""linear_cross_entropy: cross-entropy through the output projection, the N x V logits never
built (docs/large_vocab.md).

Rows go by chunks.  For each: the logits of the chunk from NumPy's BLAS matmul into one
reusable chunk x V buffer (plus the bias, and the softcap ``c * tanh(l / c)``), then the fused
cross-entropy kernel turns the buffer into d loss / d logits in place (loss per row beside),
then two more matmuls: ``dx[chunk] = G @ W`` and ``dW += G.T @ x[chunk]`` (the latter by blocks
of classes, so its temporary stays small).  Extra memory: the chunk buffer (two with softcap
and a gradient: the chain rule needs tanh beside the gradient) and small per-row vectors.

z_loss adds ``z * lse**2`` per row.  The kernel does not return lse, so with z_loss > 0 the
kernel runs without class weights and smoothing, scale 1: its loss is ``lse - x_t`` (so lse
comes back by adding ``x_t``, gathered before the call) and its gradient ``p - onehot(t)``, from
which the gradient of the full loss -- weights, smoothing and z term -- is one row scaling, one
scatter and (smoothing only) one vector subtraction, all in place.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from .. import _canon, _dispatch, _registry
from ._common import backend_for, check_choice, last_class_axis
from .cross_entropy import (_REDUCTIONS, _class_weights, _ignore_index, _index_targets,
                            _mean_denominator, _smoothing)

_OP = _registry.OPS["linear_cross_entropy"]
MEMORY_BUDGET = 64 << 20      # bytes of chunk buffers when chunk_size is not given
_MIN_CHUNK = 16               # rows: below this the matmuls lose their efficiency


def _float(a, name, ndim_text):
    arr = _canon.as_array(a, name)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array {ndim_text}, got dtype "
                        f"{arr.dtype}; convert it, e.g. {name}.astype(np.float32)")
    return arr


def _nonneg(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (allow_none and v == 0):
        raise ValueError(f"{name} must be {'> 0' if allow_none else '>= 0'} and finite, "
                         f"got {value!r}")
    return v


def auto_chunk_size(n_rows: int, n_cls: int, hidden: int, itemsize: int, buffers: int = 1,
                    budget: int = MEMORY_BUDGET) -> int:
    """Rows per chunk: as many as fit ``budget`` bytes of ``buffers`` chunk x V buffers (plus the
    chunk's x rows and dx rows, chunk x H each), at least 16 rows (or all of them)."""
    per_row = itemsize * (buffers * n_cls + 2 * hidden)
    return max(1, min(n_rows, max(_MIN_CHUNK, budget // per_row)))


def linear_cross_entropy(x, weight, target, bias=None, *, class_weight=None, ignore_index=-100,
                         label_smoothing=0.0, reduction="mean", softcap=None, z_loss=0.0,
                         return_grad=False, chunk_size=None, axis=-1, backend=None):
    """``cross_entropy(x @ weight.T + bias, target, ...)`` without the logits in memory.

    ``x`` (..., H) activations; ``weight`` (V, H) and ``bias`` (V,) the output layer (torch's
    Linear convention); ``target`` class indices of ``x``'s shape without H.  ``class_weight``,
    ``ignore_index``, ``label_smoothing`` and ``reduction`` are cross_entropy's (torch's).
    ``softcap`` > 0 caps the logits first, ``c * tanh(logits / c)``; ``z_loss`` >= 0 adds
    ``z_loss * lse**2`` per non-ignored row (PaLM, Liger-Kernel): with reduction "mean" the CE
    part is divided by the summed class weights of the non-ignored rows (their count without
    weights) and the z part by their count, so without class weights it is the mean of
    ``ce + z_loss * lse**2`` over those rows.  ``axis`` is the logits' class axis (-1 only).

    With ``return_grad=True`` the result is ``(loss, dx, dweight, dbias)``, the gradient of the
    returned loss (of ``loss.sum()`` for "none"), computed chunk by chunk with the loss;
    ``dbias`` is None without a bias.  ``chunk_size`` rows are processed at a time (default:
    from V, H and a 64 MB budget); extra memory is one chunk x V buffer (two with softcap and
    the gradient).  float32 losses are summed in float64.
    """
    xa = _float(x, "x", "(..., H)")
    W = _float(weight, "weight", "(V, H)")
    if xa.ndim < 1:
        raise ValueError("x must have at least one dimension (H)")
    if W.ndim != 2:
        raise ValueError(f"weight must be 2-D, (V, H) as torch.nn.Linear's; got shape {W.shape}")
    V, H = W.shape
    if xa.shape[-1] != H:
        raise ValueError(f"x's last axis has {xa.shape[-1]} features, weight (V, H) = {W.shape} "
                         f"takes H = {H}")
    if V == 0:
        raise ValueError("weight has no class (V = 0)")
    b = None
    if bias is not None:
        b = _float(bias, "bias", "(V,)")
        if b.shape != (V,):
            raise ValueError(f"bias must have shape ({V},) (one per class), got {b.shape}")
    check_choice(reduction, _REDUCTIONS, "reduction")
    smoothing = _smoothing(label_smoothing)
    ignore_index = _ignore_index(ignore_index)
    cap = _nonneg(softcap, "softcap", allow_none=True)
    z = _nonneg(z_loss, "z_loss")
    last_class_axis(axis, "(N, V)")
    if chunk_size is not None:
        if isinstance(chunk_size, bool):
            raise TypeError(f"chunk_size must be an integer, got {chunk_size!r}")
        try:
            chunk_size = operator.index(chunk_size)
        except TypeError:
            raise TypeError(f"chunk_size must be an integer, got {chunk_size!r}") from None
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    res = np.result_type(xa, W, *(() if b is None else (b,)))
    cdt = _canon.compute_dtype(res)
    kdt = cdt or np.dtype(np.float64)
    batch_shape = xa.shape[:-1]
    tgt = _canon.as_array(target, "target")
    if tgt.dtype.kind == "b":
        raise TypeError("target must hold class indices (integers), not booleans")
    t = _index_targets(tgt, batch_shape, V, ignore_index)
    w = _class_weights(class_weight, V, kdt)
    N = t.shape[0]
    x2 = np.asarray(xa.reshape(N, H), kdt)
    W2 = np.asarray(W, kdt)
    b2 = None if b is None else np.asarray(b, kdt)

    valid = t != ignore_index
    n_valid = int(np.count_nonzero(valid))
    denom = _mean_denominator(reduction, t, w, ignore_index, N)
    with np.errstate(divide="ignore"):
        s_ce = float(np.float64(1.0) / np.float64(denom))
        s_z = float(np.float64(1.0) / np.float64(n_valid)) if reduction == "mean" else 1.0

    buffers = 2 if (cap is not None and return_grad) else 1
    chunk = chunk_size or auto_chunk_size(N, V, H, kdt.itemsize, buffers)
    chunk = max(1, min(chunk, N))
    loss_rows = np.zeros(N, kdt)
    lse2 = np.zeros(N, np.float64) if z > 0 else None
    dx = dW = db = None
    if return_grad:
        dx = np.zeros((N, H), kdt)
        dW = np.zeros((V, H), kdt)
        db = None if b2 is None else np.zeros(V, np.float64)

    if N:
        _, mod, _ = backend_for(backend, _OP, cdt, (chunk, V, 1))
        nthreads = _dispatch.get_num_threads()
        buf = np.empty((chunk, V), kdt)
        tbuf = np.empty((chunk, V), kdt) if buffers == 2 else None
        first = True
        for a in range(0, N, chunk):
            e_ = min(N, a + chunk)
            n = e_ - a
            lg = buf[:n]
            np.matmul(x2[a:e_], W2.T, out=lg)
            if b2 is not None:
                lg += b2
            if cap is not None:
                lg *= kdt.type(1.0 / cap)
                np.tanh(lg, out=lg)
                if tbuf is not None:
                    np.copyto(tbuf[:n], lg)
                lg *= kdt.type(cap)
            g = lg if return_grad else None
            if z > 0:
                _z_chunk(mod, lg, g, t[a:e_], valid[a:e_], w, ignore_index, smoothing, s_ce,
                         s_z, z, loss_rows[a:e_], lse2[a:e_], nthreads)
            else:
                mod.cross_entropy(lg, t[a:e_], None, w, ignore_index, smoothing, s_ce,
                                  loss_rows[a:e_], g, nthreads)
            if not return_grad:
                continue
            if tbuf is not None:                         # d capped / d logit = 1 - tanh^2
                tb = tbuf[:n]
                np.square(tb, out=tb)
                np.subtract(kdt.type(1.0), tb, out=tb)
                g *= tb
            np.matmul(g, W2, out=dx[a:e_])
            _add_gt_x(dW, g, x2[a:e_], first)
            first = False
            if db is not None:
                db += g.sum(axis=0, dtype=np.float64)

    if reduction == "none":
        per = loss_rows.astype(np.float64)
        if lse2 is not None:
            per += z * lse2
        loss = per.reshape(batch_shape).astype(res, copy=False)
    else:
        total = np.sum(loss_rows, dtype=np.float64)
        zt = z * float(np.sum(lse2)) if lse2 is not None else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            if reduction == "mean":
                total = (np.float64(total) / np.float64(denom) if N else np.float64(np.nan))
                if lse2 is not None:
                    total = total + np.float64(zt) / np.float64(n_valid)
            else:
                total = total + zt
        loss = res.type(total)
    if not return_grad:
        return loss
    return (loss, dx.reshape(xa.shape).astype(res, copy=False), dW.astype(res, copy=False),
            None if db is None else db.astype(res))


def _add_gt_x(dW, g, xc, first):
    """dW += g.T @ xc, by blocks of classes (a block's product is the only temporary)."""
    V, H = dW.shape
    if first:
        np.matmul(g.T, xc, out=dW)
        return
    step = max(1, (8 << 20) // max(1, H * dW.itemsize))
    tmp = np.empty((min(step, V), H), dW.dtype)
    for v in range(0, V, step):
        ve = min(V, v + step)
        t = tmp[:ve - v]
        np.matmul(g[:, v:ve].T, xc, out=t)
        dW[v:ve] += t


def _z_chunk(mod, lg, g, t, valid, w, ignore_index, e, s_ce, s_z, z, loss, lse2, nthreads):
    """One chunk with z_loss: the kernel unweighted, unsmoothed, scale 1 (loss lse - x_t,
    gradient p - onehot), then the full loss and gradient from those (module docstring)."""
    n, C = lg.shape
    rows = np.flatnonzero(valid)
    tv = t[rows]
    xt = lg[rows, tv].astype(np.float64)              # gathered before the kernel overwrites lg
    sx = None
    if e > 0:                                          # sum_j w_j x_j per row
        sx = (lg.sum(axis=1, dtype=np.float64) if w is None
              else (lg @ w).astype(np.float64))
    loss0 = np.zeros(n, lg.dtype)
    mod.cross_entropy(lg, t, None, None, ignore_index, 0.0, 1.0, loss0, g, nthreads)
    lse = np.zeros(n, np.float64)
    lse[rows] = loss0[rows].astype(np.float64) + xt
    wt = np.ones(rows.shape[0]) if w is None else w[tv].astype(np.float64)
    wsum = float(C) if w is None else float(np.sum(w, dtype=np.float64))
    ce = np.zeros(n, np.float64)
    ce[rows] = (1.0 - e) * wt * loss0[rows]
    Q = np.zeros(n, np.float64)
    Q[rows] = (1.0 - e) * wt
    if e > 0:
        ce[rows] += (e / C) * (wsum * lse[rows] - sx[rows])
        Q[rows] += (e / C) * wsum
    loss[...] = ce
    lse2[...] = np.where(valid, lse * lse, 0.0)
    if g is None:
        return
    # G = p (s_ce Q + 2 z s_z lse) - s_ce q, with p = g + onehot(t) on the valid rows
    amp = np.zeros(n, np.float64)
    amp[rows] = s_ce * Q[rows] + 2.0 * z * s_z * lse[rows]
    g[rows, tv] += g.dtype.type(1.0)
    g *= amp.astype(g.dtype)[:, None]
    g[rows, tv] -= (s_ce * (1.0 - e) * wt).astype(g.dtype)
    if e > 0:
        q_sm = np.full(C, s_ce * e / C) if w is None else (s_ce * e / C) * w.astype(np.float64)
        g -= q_sm.astype(g.dtype)
        g[~valid] = 0
