"""Masks (jax.nn.softmax's ``where=``): the kernels' maths and the contract functions
``softmax_masked``, ``logsumexp_masked`` and ``softmax_backward_masked``.

Rows only: x, out (outer, n) (the API moves the reduced axes last).  The mask is stored by its
distinct rows, ``mask`` (mrows, n) uint8 (nonzero: the entry takes part), row i of x using mask
row ``rowmap[i]``; ``scale`` None or (outer,) float64: row i is ``x[i] * scale[i]`` (``v``).
Per row, as csrc/fsm_masked.h (the same names):

* softmax: m = max of v over masked-in entries; e = mk ? exp(v - m) * 2^64 : 0 stored while
  summed (partial sums of ``SUB`` elements in the row's dtype, as rows.expstore1); out = e / s;
* log_softmax: d = mk ? v - m : -inf stored while s = sum exp(d) (float64 sums of SUB-blocks);
  out = d - log(s), log(s) from the rest-sum when s is near 1 (rows.log_of_sum);
* logsumexp: k = count of masked-in v == m, t = sum of the others' exp(v - m),
  log1p(t / k) + log(k) + m;
* backward: s = sum over masked-in of g*y (softmax) or g (log_softmax), float64; out = mk ?
  y*(g - s) / g - exp(y)*s : 0.

Mask rows that are one contiguous range of ones (padding, causal, a window, all True / all
False; ``mask_ranges``, once per call) run the unmasked row functions (softmax.softmax_row,
lse.lse_row, backward._rowsum / _rowwrite) on the range and fill the rest: no select per
element, no work on the masked-out part (rows with a scale always take the select loops).

m not finite (no masked-in entry, a masked-in +-inf or NaN) or s NaN: the rare row writes the
contract's values directly (docs/DESIGN.md), and masked-out entries never reach a sum.  Rows are
sliced (one row = one call of the 1-D functions below: an NRT incref per row, nothing at the
attention-sized rows these serve) and split over the threads by ``pool.split_rows``.
"""
import math

import numpy as np

from .explog import EXP_UNSCALE, fexp, fexpn, fexps, fexpsd
from .intrinsics import block, fmax, like, pick, radd, rowof
from .jit import JIT, cjit, hook
from .backward import _rowsum, _rowwrite, lbwd_zero
from .lse import lse_row
from .pool import split_rows
from .rows import SUB, log_of_sum, rows_kernel, scale1, sub1, x_arg
from .softmax import softmax_row

__all__ = ["softmax_masked", "logsumexp_masked", "softmax_backward_masked"]

_NAN = np.nan
_INF = np.inf


# ------------------------------------------------------------------------------- 1-D pieces
@cjit(**JIT)
def mask_ranges(mask):
    """(mrows, 2) int64: [lo, hi) of each mask row whose nonzero entries are exactly that
    range (none: 0, 0), else lo = -1.  Such rows (padding, causal, a window, all True) run the
    unmasked row kernels on the range and fill the rest (csrc/fsm_masked.h does the same)."""
    mrows, n = mask.shape
    rg = np.empty((mrows, 2), np.int64)
    for r in range(mrows):
        mk = mask[r]
        lo = n
        hi = 0
        cnt = 0
        for j in range(n):      # reductions only (count, first, last): it vectorizes
            nz = mk[j] != 0
            cnt += 1 if nz else 0
            lo = min(lo, j if nz else n)
            hi = max(hi, j + 1 if nz else 0)
        if cnt == 0:
            rg[r, 0] = 0
            rg[r, 1] = 0
        else:
            rg[r, 0] = lo if cnt == hi - lo else -1
            rg[r, 1] = hi
    return rg


@cjit(**JIT)
def mmax1(v, mk, sc):
    """max of v * sc over the masked-in entries (-inf when none), as max(v) * sc, or min(v) * sc
    for sc < 0 (a base below 1; the rounding of the product is monotone: the same value).  A masked-in NaN may make it NaN or
    any value (fmax's nnan: rows.max1), and the row's result is NaN either way; a masked-out
    one never reaches fmax (the select).  Selecting before the multiply also lets LLVM 20
    vectorize the loop (with the product selected it stayed scalar)."""
    ninf = like(v[0], -_INF)
    m = ninf
    if sc < 0:              # min(v) = -max(-v)
        for j in range(v.shape[0]):
            m = fmax(m, -v[j] if mk[j] != 0 else ninf)
        return -m * sc
    for j in range(v.shape[0]):
        m = fmax(m, v[j] if mk[j] != 0 else ninf)
    return m * sc


@cjit(**JIT)
def mexpstore1(x, o, mk, sc, m):
    """o = mk ? exp(src * sc - m) * 2^64 : 0, returns sum(o) (float64 of SUB-block partial sums
    in the row's dtype); x None: src is o."""
    n = o.shape[0]
    s = 0.0
    zero = like(m, 0.0)
    for a in range(0, n, SUB):
        b = min(a + SUB, n)
        ob = o[a:b]
        vb = block(x, ob, a, b)
        mb = mk[a:b]
        ps = zero
        for j in range(ob.shape[0]):
            e = fexpsd(vb[j] * sc, m)
            e = e if mb[j] != 0 else zero
            ob[j] = e
            ps = radd(ps, e)
        s += np.float64(ps)
    return s


@cjit(**JIT)
def mshiftstore1(x, o, mk, sc, m):
    """o = mk ? src * sc - m : -inf, returns sum exp(o) in float64 (m finite); x None: src is
    o."""
    n = o.shape[0]
    s = 0.0
    ninf = like(m, -_INF)
    for a in range(0, n, SUB):
        b = min(a + SUB, n)
        ob = o[a:b]
        vb = block(x, ob, a, b)
        mb = mk[a:b]
        ps = like(m, 0.0)
        for j in range(ob.shape[0]):
            d = vb[j] * sc - m
            d = d if mb[j] != 0 else ninf
            ob[j] = d
            ps = radd(ps, fexps(d))
        s += np.float64(ps)
    return s * EXP_UNSCALE


@cjit(**JIT)
def mrare1(x, o, mk, sc, log, nan_row):
    """The rare row: softmax mk ? NaN : 0; log_softmax mk ? v - log(sum exp v) : -inf (the
    unmasked contract on the masked-in entries: m := 0); nan_row: a masked-in NaN (all NaN).
    The sum reads src before any write (in place: x None)."""
    src = pick(x, o)
    n = o.shape[0]
    if not log or nan_row:
        off = like(o[0], -_INF if log else 0.0)
        nan = like(o[0], _NAN)
        for j in range(n):
            o[j] = nan if mk[j] != 0 else off
        return
    s = 0.0
    for j in range(n):
        if mk[j] != 0:
            s += math.exp(np.float64(src[j] * sc))
    ls = like(o[0], math.log(s) if s > 0.0 else -_INF)
    ninf = like(o[0], -_INF)
    for j in range(n):
        o[j] = src[j] * sc - ls if mk[j] != 0 else ninf


@cjit(**JIT)
def msoftmax_row(x, o, mk, sc, log):
    """One row, three passes (x None: in place)."""
    src = pick(x, o)
    m = mmax1(src, mk, sc)
    if not np.isfinite(m):
        mrare1(x, o, mk, sc, log, False)
        return
    if not log:
        s = mexpstore1(x, o, mk, sc, m)      # 2^64 * the sum
        if s != s:
            mrare1(x, o, mk, sc, log, True)
            return
        scale1(o, like(m, 1.0 / s))
    else:
        s = mshiftstore1(x, o, mk, sc, m)    # >= 1
        if s != s:
            mrare1(x, o, mk, sc, log, True)
            return
        # o holds v - m (the max at 0) or -inf: its rest-sum is the masked-in entries'
        sub1(o, like(m, log_of_sum(o, 0.0, s)))


@cjit(**JIT)
def _fill(o, lo, hi, v):
    """o[:lo] = o[hi:] = v (loops from 0 over slices: rows.py says why)"""
    a = o[:lo]
    for j in range(a.shape[0]):
        a[j] = v
    b = o[hi:]
    for j in range(b.shape[0]):
        b[j] = v


@hook
def _seg(a, i, lo, hi):
    """a[i, lo:hi], or None when a is None (in place)."""
    if a is None:
        return None
    return a[i, lo:hi]


@hook(inline=False)
def _softmax_loop(x, out, r0, r1, mask, rowmap, scale, log, ranges):
    for i in range(r0, r1):
        mr = rowmap[i]
        if ranges is not None and ranges[mr, 0] >= 0:   # one range: the unmasked row on it
            lo, hi = ranges[mr, 0], ranges[mr, 1]
            oi = out[i]
            _fill(oi, lo, hi, like(oi[0], -_INF if log else 0.0))
            if hi > lo:
                softmax_row(_seg(x, i, lo, hi), oi[lo:hi], log)
            continue
        sc = like(out[i, 0], 1.0) if scale is None else like(out[i, 0], scale[i])
        msoftmax_row(rowof(x, i), out[i], mask[mr], sc, log)


_softmax_rows = rows_kernel("softmax_masked_rows", _softmax_loop)


@hook(inline=False)
def _lse_loop(x, out, r0, r1, mask, rowmap, scale, sign, ranges):
    n = x.shape[1]
    for i in range(r0, r1):
        mr = rowmap[i]
        if ranges is not None and ranges[mr, 0] >= 0:   # one range: the unmasked row on it
            lo, hi = ranges[mr, 0], ranges[mr, 1]
            if hi > lo:
                r, sgn = lse_row(x[i, lo:hi], None, sign is not None)
            else:
                r, sgn = -_INF, 0.0
            out[i] = r
            if sign is not None:
                sign[i] = sgn
            continue
        sc = like(x[i, 0], 1.0) if scale is None else like(x[i, 0], scale[i])
        xi = x[i]
        mk = mask[rowmap[i]]
        m = mmax1(xi, mk, sc)
        sgn = 1.0
        nan = False
        if np.isfinite(m):
            k = 0.0
            t = 0.0
            for j in range(n):
                v = xi[j] * sc
                e = np.float64(fexpn(v - m))
                inn = mk[j] != 0
                k = radd(k, 1.0 if inn & (v == m) else 0.0)     # &, not and: it vectorizes
                t = radd(t, e if inn & (v != m) else 0.0)
            r = math.log1p(t / k) + math.log(k) + np.float64(m)
            nan = r != r
        else:       # +inf, or no finite masked-in entry: a masked-in NaN decides
            for j in range(n):
                if mk[j] != 0 and xi[j] != xi[j]:
                    nan = True
            r = np.float64(m)
            sgn = 1.0 if m > 0 else 0.0
        if nan:
            r = _NAN
            sgn = _NAN
        out[i] = r
        if sign is not None:
            sign[i] = sgn


_lse_rows = rows_kernel("logsumexp_masked_rows", _lse_loop)


@hook(inline=False)
def _bwd_loop(g, out, r0, r1, y, mask, rowmap, log, ranges):
    gs = pick(g, out)
    ys = pick(y, out)
    n = out.shape[1]
    for i in range(r0, r1):
        mr = rowmap[i]
        mk = mask[mr]
        gi = gs[i]
        yi = ys[i]
        oi = out[i]
        if ranges[mr, 0] >= 0:      # one range: the unmasked row on it, 0 elsewhere
            lo, hi = ranges[mr, 0], ranges[mr, 1]
            _fill(oi, lo, hi, like(oi[0], 0.0))
            if hi > lo:
                gr = _seg(g, i, lo, hi)
                yr = _seg(y, i, lo, hi)
                _rowwrite(gr, yr, oi[lo:hi], log, _rowsum(gr, yr, oi[lo:hi], log))
            continue
        s = 0.0
        zero = like(oi[0], 0.0)
        if log:
            for j in range(n):
                s = radd(s, np.float64(gi[j]) if mk[j] != 0 else 0.0)
            c = like(oi[0], s)
            if c == 0:          # as _rowwrite
                for j in range(n):
                    oi[j] = lbwd_zero(gi[j], yi[j]) if mk[j] != 0 else zero
            else:
                for j in range(n):
                    v = gi[j] - fexp(yi[j]) * c
                    oi[j] = v if mk[j] != 0 else zero
        else:
            for j in range(n):
                s = radd(s, np.float64(gi[j]) * np.float64(yi[j]) if mk[j] != 0 else 0.0)
            c = like(oi[0], s)
            for j in range(n):
                v = yi[j] * (gi[j] - c)
                oi[j] = v if mk[j] != 0 else zero


_bwd_rows = rows_kernel("softmax_backward_masked_rows", _bwd_loop)


# ------------------------------------------------------------------------- the contract
def softmax_masked(x, mask, rowmap, out, log, scale, nthreads):
    outer, n = out.shape
    ranges = None if scale is not None else mask_ranges(mask)
    split_rows(_softmax_rows, x_arg(x, out), out, (mask, rowmap, scale, bool(log), ranges),
               outer, outer * n, nthreads)


def logsumexp_masked(x, mask, rowmap, out, sign, scale, nthreads):
    outer, n = x.shape
    ranges = None if scale is not None else mask_ranges(mask)
    split_rows(_lse_rows, x, out, (mask, rowmap, scale, sign, ranges), outer, outer * n,
               nthreads)


def _arg(a, out):
    """None when a is out's buffer (in place), else a."""
    return None if a.__array_interface__["data"][0] == out.__array_interface__["data"][0] else a


def softmax_backward_masked(grad, y, mask, rowmap, out, log, nthreads):
    outer, n = out.shape
    split_rows(_bwd_rows, _arg(grad, out), out,
               (_arg(y, out), mask, rowmap, bool(log), mask_ranges(mask)), outer,
               2 * outer * n, nthreads)
