"""softmax / log_softmax backward (vector-Jacobian products): the kernels' maths and the
contract function ``softmax_backward``.

Per row (docs/training.md): softmax ``s = sum g*y``, ``o = y * (g - s)``; log_softmax
``s = sum g``, ``o = g - exp(y) * s`` (where ``s == 0``: ``o = g``, NaN for y NaN or +inf,
``lbwd_zero``: exp(y) may overflow for y outside log_softmax's range, and inf * 0 must not give
NaN).  ``s`` is accumulated in float64 (products formed in float64), then rounded once to the
row's dtype for the write pass, which runs while the row is still in cache (one fused pass per
row: 2 reads of g and y, 1 write; out of cache the second read comes from L2 for rows up to ~40K
float32).
* rows (inner == 1): ``_rows_loop``; few long rows on several threads: each row's blocks split
  over the threads twice (partial sums, then the write);
* inner > 1: per outer slab, the columns [k0, k1) vectorized, per-column sums;
* ``out`` may be ``grad`` or ``y`` (in place: that argument arrives as None).
"""
import numpy as np

from .explog import fexp
from .intrinsics import like, pick, radd
from .jit import JIT, cjit, hook
from .pool import bounds, nchunks, nthreads_for, run, split_inner, split_rows
from .rows import BLOCK, inner_kernel, rows_kernel

__all__ = ["softmax_backward"]


@hook
def lbwd_zero(g, y):
    """log_softmax backward's o where the row's s is 0: g - exp(y) * 0 with exp(y) exact (0 for
    y = -inf, finite for finite y: not the dtype's inf * 0 = NaN where exp(y) overflows), NaN
    for y NaN or +inf (csrc/fsm_backward.h lbwd_zero)."""
    return g if y < np.inf else like(g, np.nan)


@cjit(**JIT)
def _rowsum(g, y, o, log):
    """s of one row (or block) in float64; g / y None: that operand lives in o."""
    gs = pick(g, o)
    ys = pick(y, o)
    s = 0.0
    if log:
        for j in range(o.shape[0]):
            s = radd(s, np.float64(gs[j]))
    else:
        for j in range(o.shape[0]):
            s = radd(s, np.float64(gs[j]) * np.float64(ys[j]))
    return s


@cjit(**JIT)
def _rowwrite(g, y, o, log, s):
    """The write pass of one row (or block): c = s in the row's dtype."""
    gs = pick(g, o)
    ys = pick(y, o)
    c = like(o[0], s)
    if log and c == 0:          # exp(y) * 0: lbwd_zero
        for j in range(o.shape[0]):
            o[j] = lbwd_zero(gs[j], ys[j])
    elif log:
        for j in range(o.shape[0]):
            o[j] = gs[j] - fexp(ys[j]) * c
    else:
        for j in range(o.shape[0]):
            o[j] = ys[j] * (gs[j] - c)


@hook(inline=False)
def _rows_loop(g, out, r0, r1, y, log):
    """Rows [r0, r1): the row's sum, then its write.  Rows are indexed, never sliced (a slice
    costs an NRT incref / decref pair per row: rows.py)."""
    gs = pick(g, out)
    ys = pick(y, out)
    n = out.shape[1]
    for i in range(r0, r1):
        s = 0.0
        if log:
            for j in range(n):
                s = radd(s, np.float64(gs[i, j]))
            c = like(out[i, 0], s)
            if c == 0:          # as _rowwrite
                for j in range(n):
                    out[i, j] = lbwd_zero(gs[i, j], ys[i, j])
            else:
                for j in range(n):
                    out[i, j] = gs[i, j] - fexp(ys[i, j]) * c
        else:
            for j in range(n):
                s = radd(s, np.float64(gs[i, j]) * np.float64(ys[i, j]))
            c = like(out[i, 0], s)
            for j in range(n):
                out[i, j] = ys[i, j] * (gs[i, j] - c)


_rows = rows_kernel("softmax_backward_rows", _rows_loop)


@hook(inline=False)
def _inner_loop(g, out, o0, o1, k0, k1, y, log):
    """(outer, n, inner) along axis 1, the inner columns [k0, k1) vectorized."""
    gs = pick(g, out)
    ys = pick(y, out)
    n = out.shape[1]
    K = k1 - k0
    s = np.empty(K, np.float64)
    c = np.empty(K, out.dtype)
    for o in range(o0, o1):
        s[:] = 0.0
        for j in range(n):
            gr = gs[o, j, k0:k1]
            if log:
                for k in range(K):
                    s[k] += np.float64(gr[k])
            else:
                yr = ys[o, j, k0:k1]
                for k in range(K):
                    s[k] += np.float64(gr[k]) * np.float64(yr[k])
        for k in range(K):
            c[k] = s[k]
        for j in range(n):
            orow = out[o, j, k0:k1]
            gr = gs[o, j, k0:k1]
            yr = ys[o, j, k0:k1]
            if log:
                for k in range(K):
                    orow[k] = (lbwd_zero(gr[k], yr[k]) if c[k] == 0
                               else gr[k] - fexp(yr[k]) * c[k])
            else:
                for k in range(K):
                    orow[k] = yr[k] * (gr[k] - c[k])


_inner = inner_kernel("softmax_backward_inner", _inner_loop)


def _blk(a, j0, j1):
    return None if a is None else a[j0:j1]


def _long_rows_threaded(g2, y2, o2, log, nt):
    """Few long rows, several threads: each row's blocks split over the threads, once for the
    partial sums, once for the write (the sums added in a fixed order)."""
    rows, n = o2.shape
    k = nchunks(nt, -(-n // BLOCK), n)
    b = bounds(0, n, k, align=BLOCK)
    parts = [(b[t], b[t + 1]) for t in range(k) if b[t] < b[t + 1]]
    for i in range(rows):
        gi = None if g2 is None else g2[i]
        yi = None if y2 is None else y2[i]
        oi = o2[i]
        sums = run([(lambda j0=j0, j1=j1: _rowsum(_blk(gi, j0, j1), _blk(yi, j0, j1),
                                                   oi[j0:j1], log)) for j0, j1 in parts], nt)
        s = float(sum(sums))
        run([(lambda j0=j0, j1=j1: _rowwrite(_blk(gi, j0, j1), _blk(yi, j0, j1), oi[j0:j1],
                                             log, s)) for j0, j1 in parts], nt)


def _arg(a, out):
    """None when a is out's buffer (in place), else a."""
    return None if a.__array_interface__["data"][0] == out.__array_interface__["data"][0] else a


def softmax_backward(grad, y, out, log, nthreads):
    outer, n, inner = out.shape
    log = bool(log)
    g = _arg(grad, out)
    yy = _arg(y, out)
    work = 2 * outer * n * inner
    if inner != 1:
        split_inner(_inner, g, out, (yy, log), outer, inner, work, nthreads)
        return
    g2 = None if g is None else g.reshape(outer, n)
    y2 = None if yy is None else yy.reshape(outer, n)
    o2 = out.reshape(outer, n)
    nt = nthreads_for(work, nthreads, max(outer, n // BLOCK))
    if outer < nt and n >= 2 * BLOCK:
        _long_rows_threaded(g2, y2, o2, log, nt)
        return
    split_rows(_rows, g2, o2, (y2, log), outer, work, nthreads)
