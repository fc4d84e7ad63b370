"""Row primitives shared by the ops, and the factories that build every kernel's driver.

Primitives (1-D, njit): ``max1``; ``sumexp1``; ``expstore1`` (o = exp(x - m), returns the sum:
softmax's hot loop); ``expstore1x`` (the same, max terms counted apart); ``shiftstore1``
(o = x - m, returns sum exp: log_softmax's); ``sub1``, ``scale1``, ``logout1``; online block
statistics ``block_stats`` and their ``merge_blocks``.  Loops index from 0 over slices: an
index that LLVM cannot prove non-negative (``range(a, b)``) makes Numba's negative-index
wraparound a select, and the vectorizer then emits gathers (2.5x slower).  Sums are float64;
over float32 input, float32 partial sums of ``SUB`` elements (vector lanes) are added in float64.

Kernels, all from three factories, take ``(x, io, args, ...)``: ``x`` the input rows, or None
in place; ``io`` the output that a call may write its input into (or None); ``args`` the op's
own arguments, a tuple that reaches the op's pieces unpacked (``*args``: as parameters of their
own, so that ``if w is None`` branches are pruned at compile time):

* ``rows_kernel(name, rows)`` -> ``name(x, io, args, r0, r1, step, ctr)``: rows [r0, r1) of an
  (N, n) array, ``rows(x, io, a, b, *args)`` looping over a chunk of them with the op's maths;
* ``small_rows_kernel(name, shift, ex, finish, setup, count_max)`` -> ``name(x, io, args, r0,
  r1, step, ctr)``: rows of n <= ``SMALL_N`` elements, in groups of R rows (~``SMALL_BLOCK``
  elements): each row's max (``shift`` adjusts it) repeated along the row, so that one flat loop ``e = ex(x, m)``
  covers the group and vectorizes whatever n is; per-row float64 sums s of e (and counts k of the
  max terms); then ``finish`` (the op's logs, one vectorized loop per group, and its outputs);
* ``inner_kernel(name, body)`` -> ``name(x, io, args, o0, o1, k0, k1, ostep, kstep, ctr)``: an
  (outer, n, inner) array reduced along axis 1, ``body(x, io, o0, o1, k0, k1, *args)`` vectorized along the
  contiguous inner columns [k0, k1) of the outer slices [o0, o1).

Chunks: the range is cut into chunks of ``step`` rows (``ostep`` x ``kstep`` for inner), which
each thread calling the kernel claims one after the other with an atomic fetch-and-add on
``ctr[0]`` (``intrinsics.claim``), in native code, without the GIL: one Python-level call per
thread, however many chunks.  ``step >= r1 - r0``: one chunk, ``ctr`` never touched.

small_rows_kernel's ``setup(src, R, *args)`` returns the per-call workspace ``ws`` (scratch
arrays, constants) handed to ``finish``; ``no_setup`` returns None.  The pieces are ``hook``s
(jit.py says why) and take ``*args`` once per call or per group, never per row or element.
rows_kernel and inner_kernel only unpack ``args``; the scaffolding of substance is
small_rows_kernel here and the thread split of pool.py ([r0, r1) or the (o, k) ranges).
"""
import math

import numpy as np

from .explog import EXP_UNSCALE, fexp, fexpdx, fexpn, fexps, fexpsd
from .intrinsics import block, claim, fmax, like, pick, radd, top
from .jit import JIT, cjit, hook, named

__all__ = ["BLOCK", "SUB", "SMALL_N", "SMALL_BLOCK", "max1", "sumexp1", "expstore1",
           "expstore1x", "shiftstore1", "sub1", "scale1", "logout1", "block_stats",
           "merge_blocks", "EXACT_BELOW", "log_sum_exact", "log_of_sum", "no_setup", "keep",
           "finite_or_zero", "ce_shift", "exp_shifted", "rows_kernel",
           "small_rows_kernel", "inner_kernel", "x_arg"]

BLOCK = 2048          # online softmax block (elements); a block stays in L1
SUB = 512             # sums: input-dtype partial sums over SUB elements, added in float64
SMALL_N = 48          # rows up to this length use the many-rows-at-once kernels
SMALL_BLOCK = 4096    # elements per group of small rows

_NAN = np.nan
_INF = np.inf


# ------------------------------------------------------------------------------- 1-D primitives
@cjit(**JIT)
def max1(v):
    """max(v), NaN skipped (llvm.maxnum); NaN only when every element is NaN.  (Four
    accumulators side by side trip an assertion in LLVM 20's loop vectorizer: keep one.)"""
    m = v[0]
    for j in range(1, v.shape[0]):
        m = fmax(m, v[j])
    return m


@cjit(**JIT)
def sumexp1(v, m):
    """sum exp(v - m) in float64 (partial sums of SUB elements in v's dtype); m = max(v)."""
    n = v.shape[0]
    s = 0.0
    for a in range(0, n, SUB):
        vb = v[a:min(a + SUB, n)]
        ps = like(m, 0.0)
        for j in range(vb.shape[0]):
            ps = radd(ps, fexps(vb[j] - m))
        s += np.float64(ps)
    return s * EXP_UNSCALE


@cjit(**JIT)
def expstore1(x, o, m):
    """o = exp(src - m) * EXP_SCALE (2^64: explog.fexps), returns sum(o) in float64 (partial
    sums of SUB elements in the input dtype); x None: src is o (in place).  For softmax, whose
    1/s needs no more and divides the scale out with the sum."""
    n = o.shape[0]
    s = 0.0
    for a in range(0, n, SUB):
        b = min(a + SUB, n)
        ob = o[a:b]
        vb = block(x, ob, a, b)
        ps = like(m, 0.0)
        for j in range(ob.shape[0]):
            e = fexpsd(vb[j], m)
            ob[j] = e
            ps = radd(ps, e)
        s += np.float64(ps)
    return s


@cjit(**JIT)
def expstore1x(x, o, m, neg):
    """expstore1 with the max terms counted apart (as in sumexp1), for the log(s) of
    cross-entropy; neg: m is the finite max (every src - m <= 0: the cheaper exp)."""
    n = o.shape[0]
    s = 0.0
    zero = like(m, 0.0)
    one = like(m, 1.0)
    for a in range(0, n, SUB):
        b = min(a + SUB, n)
        ob = o[a:b]
        vb = block(x, ob, a, b)
        ps = zero
        pk = zero
        for j in range(ob.shape[0]):
            v = vb[j]
            if neg:
                e = fexpn(v - m)
            else:
                e = fexp(v - m)
            ob[j] = e
            ps = radd(ps, e if v != m else zero)
            pk = radd(pk, one if v == m else zero)
        s += np.float64(ps)
        s += np.float64(pk)
    return s


@cjit(**JIT)
def shiftstore1(x, o, m, neg):
    """o = src - m, returns sum exp(src - m) in float64; x None: src is o.  log_softmax writes
    its output in this (compute-bound) pass, so the write-allocate traffic of a fresh output
    overlaps the exps; the last pass then only subtracts log(s) in cache."""
    n = o.shape[0]
    s = 0.0
    for a in range(0, n, SUB):
        b = min(a + SUB, n)
        ob = o[a:b]
        vb = block(x, ob, a, b)
        ps = like(m, 0.0)
        for j in range(ob.shape[0]):
            d = vb[j] - m
            ob[j] = d
            if neg:
                ps = radd(ps, fexps(d))
            else:
                ps = radd(ps, fexp(d))
        s += np.float64(ps)
    return s * EXP_UNSCALE if neg else s


@cjit(**JIT)
def sub1(o, c):
    for j in range(o.shape[0]):
        o[j] = o[j] - c


@cjit(**JIT)
def scale1(o, c):
    for j in range(o.shape[0]):
        o[j] = o[j] * c


@cjit(**JIT)
def logout1(x, o, m, ls):
    """o = (src - m) - ls; x None: src is o."""
    src = pick(x, o)
    for j in range(o.shape[0]):
        o[j] = (src[j] - m) - ls


# ------------------------------------------------------------- log_softmax's dominant entry
EXACT_BELOW = 2.0     # rows whose s = sum exp(x - m) is below this get log(s) from the rest-sum


@cjit(**JIT)
def log_sum_exact(src, m):
    """log(sum exp(src - m)) to an ulp or two however close the sum is to 1: the max terms
    counted apart (k), the others summed in float64 (rest, each exp(src - m) with the rounding
    error of the subtraction recovered by 2Sum: explog.fexpdx), log(k) + log1p(rest / k).  m:
    the finite max of src, as float64.  A second pass over the row (vectorized), for the rows
    whose sum is below EXACT_BELOW: there s = 1 + rest has lost the digits of rest that
    -log(s), the dominant entry of log_softmax, is made of (log_softmax([0, -60]) would be 0,
    not -8.8e-27)."""
    mm = like(src[0], m)        # exact: m is an element of src
    rest = 0.0
    k = 0.0
    for j in range(src.shape[0]):
        v = src[j]
        e = np.float64(fexpdx(v, mm))       # -inf: 0
        rest = radd(rest, e if v != mm else 0.0)
        k = radd(k, 1.0 if v == mm else 0.0)
    return math.log(k) + math.log1p(rest / k)


@cjit(**JIT)
def log_of_sum(src, m, s):
    """log(s) of a row's s = sum exp(src - m) (m its finite max, float64), from the rest-sum
    (log_sum_exact) when 1 <= s < EXACT_BELOW."""
    if s >= 1.0 and s < EXACT_BELOW:
        return log_sum_exact(src, m)
    return math.log(s)


# ------------------------------------------------------------------------ online statistics
@cjit(**JIT)
def block_stats(x, o, j0, j1, store, bm, bs):
    """Block statistics of src[j0:j1] (j0 a multiple of BLOCK; x None: src is o):
    bm[b] = block max, bs[b] = sum exp(src - bm[b]) (float64); exp(src - bm) is stored in o when
    ``store`` (both then scaled by EXP_SCALE, as in expstore1: softmax's second pass divides
    by the merged scaled sum).  A block of -inf has bs = 0 (and zeros in o); a block whose max
    is NaN/+inf has bs = NaN."""
    src = pick(x, o)
    b = j0 // BLOCK
    for a in range(j0, j1, BLOCK):
        e_ = min(a + BLOCK, j1)
        vb = src[a:e_]
        m = max1(vb)
        bm[b] = m
        if m == -_INF:  # all -inf, or -inf and NaN (the max of a row with a NaN is unspecified)
            bs[b] = 0.0
            for j in range(vb.shape[0]):
                if vb[j] != vb[j]:
                    bs[b] = _NAN
            if store:
                o[a:e_] = 0.0
        elif not np.isfinite(m):
            bs[b] = _NAN
        elif not store:
            bs[b] = sumexp1(vb, m)
        elif x is None:
            bs[b] = expstore1(None, o[a:e_], m)
        else:
            bs[b] = expstore1(vb, o[a:e_], m)
        b += 1


@cjit(**JIT)
def merge_blocks(bm, bs):
    """(m, s, ok) of the merged block statistics (Milakov & Gimelshein: s = sum bs e^(bm - m));
    ok is False when the row is not finite (a NaN or +inf max, a NaN sum, or all -inf)."""
    m = -_INF
    for b in range(bm.shape[0]):
        m = max(m, np.float64(bm[b]))
    if not np.isfinite(m):
        return m, _NAN, False
    s = 0.0
    for b in range(bm.shape[0]):
        if bs[b] != 0.0:
            s += bs[b] * math.exp(np.float64(bm[b]) - m)
    return m, s, s == s


# ------------------------------------------------------------------------------- factories
@hook
def no_setup(src, size, *args):
    return None


@hook
def keep(m):
    """small_rows_kernel's shift: the max itself."""
    return m


@hook
def finite_or_zero(m):
    """small_rows_kernel's shift for the log ops: a max that is not finite becomes 0 (then the
    row's NaN / inf reach its result through x - m)."""
    return m if np.isfinite(m) else like(m, 0.0)


@hook
def ce_shift(m):
    """small_rows_kernel's shift for cross-entropy, and its rows': the max when finite, +-inf
    becoming +-(the largest finite value), NaN 0 (csrc/fsm_ce.h ce_shift): with a +inf max a
    finite x_j keeps exp(x_j - shift) finite, so p_j = e_j Q / s is 0 there and NaN only at the
    infinite entries, the reference's exp(x_j - log s) (a shift of 0 overflowed e_j for
    x_j > log(max) and made the row NaN)."""
    if np.isfinite(m):
        return m
    if m == np.inf:
        return top(m)
    if m == -np.inf:
        return -top(m)
    return like(m, 0.0)


@hook
def exp_shifted(v, m):
    """small_rows_kernel's ex: exp(v - m), the rounded difference (for sums)."""
    return fexp(v - m)


def rows_kernel(name, rows):
    """The kernel ``name(x, io, args, r0, r1)``: ``rows(x, io, r0, r1, *args)``, the op's own
    loop over rows [r0, r1) with its scratch allocated in it (the kernels' local allocations are
    known not to alias anything; passed in from outside they would need LLVM's run-time checks).
    A hook called per row instead, with ``*args``, would incref and decref every array of args
    row after row: 20% at 100-element rows."""
    def kernel(x, io, args, r0, r1, step, ctr):
        if step >= r1 - r0:
            rows(x, io, r0, r1, *args)
            return
        nc = (r1 - r0 + step - 1) // step
        while True:
            c = claim(ctr)
            if c >= nc:
                return
            a = r0 + c * step
            rows(x, io, a, min(a + step, r1), *args)
    return named(kernel, name, rows.__doc__)


def small_rows_kernel(name, shift, ex, finish, setup=no_setup, count_max=False):
    """The kernel ``name(x, io, args, r0, r1)`` for rows of n <= SMALL_N elements, in groups of
    R = SMALL_BLOCK // n rows.  Per group [base, base + rows):

        m_r = shift(max of row r)               (per row)
        e   = ex(x, m) over the whole group     (one flat loop: m repeated along each row)
        s_r = sum of e over row r               (float64)
        k_r = count of x == m_r over row r      (count_max only: scipy's k, for logsumexp)
        finish(x, io, ws, base, rows, m, k, e, s, *args)

    e is flat (rows * n); m, k and s have one entry per row (contiguous, so that the op's loops
    over the rows of a group vectorize).  finish may overwrite s (e.g. with log(s): one vectorized
    loop per group, where a libm call per row would dominate).  Rows are indexed, never sliced:
    a slice costs an NRT incref / decref pair (atomic) per row, 10-30% at 10-element rows."""
    def kernel(x, io, args, r0, r1, step, ctr):
        src = pick(x, io)
        n = src.shape[1]
        R = max(1, SMALL_BLOCK // n)
        sf = src.reshape(src.size)
        m = np.empty(R, src.dtype)          # each row's (shifted) max
        mr = np.empty(R * n, src.dtype)     # the same, repeated along the row
        e = np.empty(R * n, src.dtype)
        s = np.empty(R, np.float64)
        k = np.empty(R, np.float64)
        ws = setup(src, R, *args)
        nc = 1 if step >= r1 - r0 else (r1 - r0 + step - 1) // step
        c = 0 if nc == 1 else claim(ctr)
        while c < nc:       # the chunks [c0, c1) this thread claims (one: the whole range)
            c0 = r0 + c * step
            c1 = min(c0 + step, r1)
            c = nc if nc == 1 else claim(ctr)
            for base in range(c0, c1, R):
                rows = min(R, c1 - base)
                for r in range(rows):
                    i = base + r
                    mx = src[i, 0]
                    for j in range(1, n):
                        mx = fmax(mx, src[i, j])
                    mx = shift(mx)
                    m[r] = mx
                    for j in range(n):
                        mr[r * n + j] = mx
                xb = sf[base * n:(base + rows) * n]
                for q in range(xb.shape[0]):
                    e[q] = ex(xb[q], mr[q])
                for r in range(rows):
                    t = 0.0
                    kk = 0.0
                    for j in range(n):
                        t += np.float64(e[r * n + j])
                        if count_max:
                            kk += 1.0 if xb[r * n + j] == m[r] else 0.0
                    s[r] = t
                    k[r] = kk
                finish(x, io, ws, base, rows, m, k, e, s, *args)
    return named(kernel, name, finish.__doc__)


def inner_kernel(name, body):
    """The kernel ``name(x, io, args, o0, o1, k0, k1)`` over an (outer, n, inner) array:
    ``body(x, io, o0, o1, k0, k1, *args)``, the op's loop over the outer slices [o0, o1),
    vectorized along the inner columns [k0, k1) (per-column vectors allocated in it: with
    them passed in, float32 inner softmax / logsumexp ran 3-13% slower)."""
    def kernel(x, io, args, o0, o1, k0, k1, ostep, kstep, ctr):
        nco = (o1 - o0 + ostep - 1) // ostep
        nck = (k1 - k0 + kstep - 1) // kstep
        if nco * nck <= 1:
            body(x, io, o0, o1, k0, k1, *args)
            return
        while True:
            c = claim(ctr)
            if c >= nco * nck:
                return
            a = o0 + (c // nck) * ostep
            kk = k0 + (c % nck) * kstep
            body(x, io, a, min(a + ostep, o1), kk, min(kk + kstep, k1), *args)
    return named(kernel, name, body.__doc__)


# ------------------------------------------------------------------------------- Python side
def x_arg(x, io):
    """The kernels' ``x``: None when x is io's buffer (in place), else x.  Passing one buffer
    under two names would make LLVM's runtime alias check fail into the scalar loop (7x
    slower)."""
    if io is not None and x.__array_interface__["data"][0] == io.__array_interface__["data"][0]:
        return None
    return x
