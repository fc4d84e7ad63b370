"""softmax and log_softmax: the kernels' maths and the contract function ``softmax``.

``m``: the row max, ``s``: sum exp(x - m) (float64).
* three_pass (rows; ``softmax_row``): max; exp(x - m) stored in out while summing (``expstore1``,
  the hot loop); scale by 1/s.  log_softmax: max; out = x - m stored while summing exp
  (``shiftstore1``); out -= log(s) in cache.  A max that is not finite: softmax gives a NaN row,
  log_softmax uses m = 0 (docs/DESIGN.md).
* online (rows): blocks of ``BLOCK`` elements: block max ``bm`` and ``bs = sum exp(x - bm)`` (exp
  stored in out), merged into (m, s) as in Milakov & Gimelshein; second pass multiplies each block
  by exp(bm - m) / s (one exp per element in all; log_softmax: out = (x - m) - log(s)).  The same
  block statistics let threads split a single long row.
* small rows (n <= SMALL_N): groups of rows, one flat exp loop (rows.small_rows_kernel).
* inner > 1: the same three passes, vectorized along the contiguous inner axis with per-column
  m and s vectors.
"""
import math

import numpy as np

from .explog import fexp, fexpd, log64
from .intrinsics import block3, claim, fmax, like, pick, rowof
from .jit import JIT, cjit, hook
from .pool import SMALL_COST, nchunks, nthreads_for, run_claimed, split_inner, split_rows
from .rows import (BLOCK, EXACT_BELOW, SMALL_N, block_stats, exp_shifted, expstore1,
                   finite_or_zero, inner_kernel, keep, log_of_sum, log_sum_exact, logout1, max1,
                   merge_blocks, rows_kernel, scale1, shiftstore1, small_rows_kernel, sub1,
                   sumexp1, x_arg)

from .temperature import softmax_temp

__all__ = ["softmax"]

_NAN = np.nan
_LOG_EXACT_BELOW = math.log(EXACT_BELOW)


# ------------------------------------------------------------------------ rows: three passes
@cjit(**JIT)
def softmax_row(x, o, log):
    """One row, three passes.  x is None: in place, the input is o."""
    src = pick(x, o)
    m = max1(src)
    if log:
        neg = np.isfinite(m)        # m = max: every x - m <= 0
        if not neg:
            m = like(m, 0.0)
        if x is None and neg:
            # in place: the input must survive until s is known (log_of_sum may read it again)
            s = sumexp1(o, m)
            logout1(None, o, m, like(m, log_of_sum(o, np.float64(m), s)))
        elif x is None:
            s = shiftstore1(None, o, m, neg)
            sub1(o, like(m, math.log(s)))
        else:
            s = shiftstore1(x, o, m, neg)
            ls = log_of_sum(x, np.float64(m), s) if neg else math.log(s)
            sub1(o, like(m, ls))
    else:
        if not np.isfinite(m):
            o[:] = _NAN
            return
        s = expstore1(x, o, m)
        scale1(o, like(m, 1.0 / s))


@hook(inline=False)
def _rows3_loop(x, out, r0, r1, log):
    """softmax / log_softmax of rows of any length, three passes each."""
    for i in range(r0, r1):
        softmax_row(rowof(x, i), out[i], log)


_rows3 = rows_kernel("softmax_rows3", _rows3_loop)


# --------------------------------------------------------------------------- rows: online
@cjit(**JIT)
def online_pass2(x, o, j0, j1, log, bm, m, s):
    """Second pass over src[j0:j1] (j0 a multiple of BLOCK): softmax scales each block by
    exp(bm - m) / s, log_softmax writes (src - m) - s, s then log(sum) (``log_of_sum``)."""
    if log:
        mm = like(o[j0], m)
        ls = like(o[j0], s)
        if x is None:
            logout1(None, o[j0:j1], mm, ls)
        else:
            logout1(x[j0:j1], o[j0:j1], mm, ls)
    else:
        b = j0 // BLOCK
        for a in range(j0, j1, BLOCK):
            e_ = min(a + BLOCK, j1)
            scale1(o[a:e_], like(o[a], math.exp(np.float64(bm[b]) - m) / s))
            b += 1


@hook(inline=False)
def _online_loop(x, out, r0, r1, log):
    """softmax / log_softmax of long rows, online: block statistics, merged, then the second
    pass."""
    n = out.shape[1]
    nb = (n + BLOCK - 1) // BLOCK
    bm = np.empty(nb, out.dtype)
    bs = np.empty(nb, np.float64)
    for i in range(r0, r1):
        xi = rowof(x, i)
        oi = out[i]
        block_stats(xi, oi, 0, n, not log, bm, bs)
        m, s, ok = merge_blocks(bm, bs)
        if not ok:  # rare: a non-finite row
            if not log:     # softmax: the whole row is NaN (out may hold exps by now)
                for j in range(n):
                    oi[j] = _NAN
            else:           # log_softmax: pass 1 stored nothing, redo it in three passes
                softmax_row(xi, oi, log)
        else:
            if log:
                s = log_of_sum(pick(xi, oi), m, s)
            online_pass2(xi, oi, 0, n, log, bm, m, s)


_rows_online = rows_kernel("softmax_rows_online", _online_loop)


@cjit(**JIT)
def _stats_claimed(x, o, n, step, ctr, store, bm, bs):
    """block_stats over the chunks [j0, j0 + step) of [0, n) this thread claims."""
    nc = (n + step - 1) // step
    while True:
        c = claim(ctr)
        if c >= nc:
            return
        block_stats(x, o, c * step, min(c * step + step, n), store, bm, bs)


@cjit(**JIT)
def _pass2_claimed(x, o, n, step, ctr, log, bm, m, s):
    """online_pass2 over the chunks of [0, n) this thread claims."""
    nc = (n + step - 1) // step
    while True:
        c = claim(ctr)
        if c >= nc:
            return
        online_pass2(x, o, c * step, min(c * step + step, n), log, bm, m, s)


def _long_rows_threaded(x2, o2, log, nt):
    """Few long rows, several threads: each row's blocks split over the threads (online), the
    chunks claimed in the kernels."""
    rows, n = o2.shape
    nb = -(-n // BLOCK)
    bm = np.empty(nb, o2.dtype)
    bs = np.empty(nb, np.float64)
    k = nchunks(nt, nb, n)
    step = -(-(-(-n // k)) // BLOCK) * BLOCK
    for i in range(rows):
        xi = None if x2 is None else x2[i]
        oi = o2[i]
        run_claimed(lambda ctr: _stats_claimed(xi, oi, n, step, ctr, not log, bm, bs), nt)
        m, s, ok = merge_blocks(bm, bs)
        if not ok:  # a non-finite row: softmax all NaN, log_softmax in three passes
            if log:
                softmax_row(xi, oi, log)
            else:
                oi.fill(np.nan)
            continue
        if log:
            s = log_of_sum(oi if xi is None else xi, m, s)
        run_claimed(lambda ctr: _pass2_claimed(xi, oi, n, step, ctr, log, bm, m, s), nt)


# ---------------------------------------------------------------------- rows: many short rows
@hook
def _exp_exact(v, m):
    return fexpd(v, m)


@hook
def _softmax_finish(x, out, ws, base, rows, m, k, e, s):
    """softmax of rows of n <= SMALL_N: out = e / s (a non-finite max: the exps hold a NaN or
    sum to NaN)."""
    n = out.shape[1]
    for r in range(rows):
        i = base + r
        inv = like(m[0], 1.0 / s[r])
        for j in range(n):
            out[i, j] = e[r * n + j] * inv


@hook
def _log_softmax_finish(x, out, ws, base, rows, m, k, e, s):
    """log_softmax of rows of n <= SMALL_N: out = (x - m) - log(s), the logs of a group in one
    vectorized loop."""
    src = pick(x, out)
    n = out.shape[1]
    for r in range(rows):
        s[r] = log64(s[r])
    for r in range(rows):       # 1 <= sum < 2: the dominant entry needs the rest-sum
        if s[r] >= 0.0 and s[r] < _LOG_EXACT_BELOW:
            s[r] = log_sum_exact(src[base + r], np.float64(m[r]))
    for r in range(rows):
        i = base + r
        mi = m[r]
        ls = like(mi, s[r])
        for j in range(n):
            out[i, j] = (src[i, j] - mi) - ls


_small = small_rows_kernel("softmax_small", keep, _exp_exact, _softmax_finish)
_log_small = small_rows_kernel("log_softmax_small", finite_or_zero, exp_shifted,
                               _log_softmax_finish)


# ------------------------------------------------------------------------------ inner > 1
@hook(inline=False)
def _inner_loop(x, out, o0, o1, k0, k1, log):
    """softmax / log_softmax of (outer, n, inner) along axis 1, vectorized along the inner
    columns [k0, k1): per-column m, s and c (1/s or log s)."""
    src = pick(x, out)
    n = out.shape[1]
    K = k1 - k0
    m = np.empty(K, out.dtype)
    s = np.empty(K, np.float64)
    c = np.empty(K, out.dtype)
    for o in range(o0, o1):
        m[:] = src[o, 0, k0:k1]
        for j in range(1, n):
            xr = src[o, j, k0:k1]
            for k in range(K):
                m[k] = fmax(m[k], xr[k])
        if log:
            for k in range(K):
                if not np.isfinite(m[k]):
                    m[k] = 0.0
        s[:] = 0.0
        if log:
            for j in range(n):
                xr = src[o, j, k0:k1]
                for k in range(K):
                    s[k] += np.float64(fexp(xr[k] - m[k]))
            for k in range(K):
                c[k] = math.log(s[k])
            for k in range(K):      # 1 <= sum < 2: the dominant entry needs the rest-sum
                if s[k] >= 1.0 and s[k] < EXACT_BELOW:
                    c[k] = _log_sum_exact_col(src, o, k0 + k, np.float64(m[k]))
            for j in range(n):
                orow = out[o, j, k0:k1]
                xr = block3(x, orow, o, j, k0, k1)
                for k in range(K):
                    orow[k] = (xr[k] - m[k]) - c[k]
        else:
            for j in range(n):
                orow = out[o, j, k0:k1]
                xr = block3(x, orow, o, j, k0, k1)
                for k in range(K):
                    ev = fexpd(xr[k], m[k])
                    orow[k] = ev
                    s[k] += np.float64(ev)
            for k in range(K):
                c[k] = 1.0 / s[k] if np.isfinite(m[k]) else _NAN
            for j in range(n):
                orow = out[o, j, k0:k1]
                for k in range(K):
                    orow[k] = orow[k] * c[k]


@cjit(**JIT)
def _log_sum_exact_col(src, o, kk, m):
    """log_sum_exact of the column src[o, :, kk]."""
    return log_sum_exact(src[o, :, kk], m)


_inner = inner_kernel("softmax_inner", _inner_loop)


# ------------------------------------------------------------------------- the contract
def softmax(x, out, log, method, nthreads, factor=None):
    if factor is not None:      # temperature / base: temperature.py's kernels
        softmax_temp(x, out, log, factor, nthreads)
        return
    outer, n, inner = x.shape
    log = bool(log)
    src = x_arg(x, out)
    work = outer * n * inner
    if inner != 1:
        split_inner(_inner, src, out, (log,), outer, inner, work, nthreads)
        return
    x2 = None if src is None else src.reshape(outer, n)
    o2 = out.reshape(outer, n)
    if n <= SMALL_N:
        work *= SMALL_COST
    if method == "auto":
        # measured: three_pass matches or beats online at every length here (a row that leaves
        # L2 is read twice either way); online splits single long rows over threads below
        method = "three_pass"
    if n <= BLOCK:
        # one block: the online kernel would do exactly the three passes (block max, exp + sum,
        # scale), with more overhead per row
        method = "three_pass"
    nt = nthreads_for(work, nthreads, max(outer, n // BLOCK))
    if outer < nt and n >= 2 * BLOCK:
        _long_rows_threaded(x2, o2, log, nt)
        return
    if n <= SMALL_N and method == "three_pass":
        kern, args = (_log_small if log else _small), ()
    elif method == "online":
        kern, args = _rows_online, (log,)
    else:
        kern, args = _rows3, (log,)
    split_rows(kern, x2, o2, args, outer, work, nthreads)
