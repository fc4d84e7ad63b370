"""The Numba backend: softmax, log_softmax, logsumexp and fused cross-entropy kernels.

Design
------
* The contract functions at the bottom (``softmax``, ``logsumexp``, ``cross_entropy``, ``exp``,
  ``log``) are plain Python: they pick a kernel (inner == 1 or not, row length, method), split the
  rows over threads, and call njit kernels.  Arguments arrive validated (docs/DESIGN.md).
* exp / log are ``_numba_exp.fexp`` / ``log64``: plain arithmetic that LLVM vectorizes.  Where an
  exp is an output element (softmax, its stored exps) it is ``fexpd(x, m)`` = exp(x - m) with the
  rounding error of x - m recovered by 2Sum (float32: otherwise a relative error up to
  |x - m| * 2^-24, 2e-6 on a 10^7-long N(0, 4^2) row).  Sums of exps (log_softmax, logsumexp,
  cross-entropy) use the plain exp(x - m): the weights e^(x - m) damp the large-|x - m| errors.
* Sums are loop-carried ``_radd`` (an fadd carrying only the ``reassoc`` flag), so LLVM vectorizes
  the reduction while every other instruction keeps strict IEEE semantics; maxima are
  ``llvm.maxnum`` with nnan (``_fmax``): the max of a row holding a NaN is unspecified, and the
  NaN is caught through the sum instead.  No kernel is compiled with fast-math.
* Accumulators: ``s`` (sum of exp) and every other sum is float64 for float32 and float64 input.
  ``m`` (running max) has the input dtype.
* In place (``out`` is ``x``, ``grad`` is ``logits``): the kernels take ``x=None`` and read the
  input from ``out``.  Passing the same buffer under two names would make LLVM's runtime alias
  check fail and fall back to scalar code (7x slower).
* Threads: rows (or, for a single long row, blocks of the row; for inner > 1, outer slices or
  inner column ranges) are split over a small pool of Python threads calling ``nogil`` kernels.
  This is safe when many Python threads call at once and never touches Numba's threading layer
  (whose default workqueue layer aborts on concurrent parallel calls), nor starts a second OpenMP
  runtime next to torch's.  A call uses min(nthreads, work / _MIN_WORK) threads.
* Compilation: ``cache=True`` everywhere, one specialization per (dtype, None-ness of the optional
  arrays), compiled on first use.

Algorithms (``m``: max, ``s``: sum of exp(x - m)):
* three_pass (rows): max; exp(x - m) stored in out while summing; scale by 1/s.
  log_softmax: max; sum; out = (x - m) - log(s).
* online (rows): blocks of ``_BLOCK`` elements: block max ``bm`` and ``bs = sum exp(x - bm)``
  (exp stored in out), merged into (m, s) as in Milakov & Gimelshein; second pass multiplies
  each block by exp(bm - m) / s (one exp per element in all; log_softmax: out = (x - m) - log(s)).
  The same block statistics let threads split a single long row.
* small rows (n <= _SMALL_N): ``_SMALL_BLOCK`` elements of whole rows at a time; the shifted
  values of all the rows go through one flat (vectorized) exp loop.
* inner > 1: the same three passes, vectorized along the contiguous inner axis with per-column
  m and s vectors.
"""
from __future__ import annotations

import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .exp import cjit, fexp, fexpd, fexpn, flog, log64

__all__ = ["softmax", "logsumexp", "cross_entropy", "exp", "log"]

_JIT = dict(nogil=True, error_model="numpy")   # + cache=True (cjit)

_BLOCK = 2048          # online softmax block (elements); a block stays in L1
_SUB = 512             # sums: input-dtype partial sums over _SUB elements, added in float64
_SMALL_N = 48          # rows up to this length use the many-rows-at-once kernel
_SMALL_BLOCK = 4096    # elements per group of small rows
_MIN_WORK = 1 << 18    # elements per thread below which another thread does not pay: handing
                       # a chunk to a pool thread costs 15-80 us here (wake-up), ~0.5 ns/element
_SMALL_COST = 3        # rows of <= _SMALL_N elements cost ~3x more per element
_CHUNKS = 8            # chunks per thread, claimed one by one: a late worker costs one chunk
_MIN_CHUNK = 1 << 16   # elements per chunk at least: a chunk costs ~5-10 us of GIL-held dispatch


# ------------------------------------------------------------------------------- primitives
@intrinsic
def _radd(typingctx, a, b):
    """a + b as an fadd with the reassoc flag only: lets LLVM vectorize a sum reduction."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=("reassoc",))

    return a(a, b), codegen


@intrinsic
def _fmax(typingctx, a, b):
    """llvm.maxnum(a, b) with the nnan flag: the larger of two non-NaN numbers (a plain vmaxps).

    With a NaN operand the result is unspecified, so a max over a row holding a NaN may be any
    of its values or NaN.  Every kernel is written so that this does not matter: the NaN then
    reaches the sum (s, t) and the row's result is NaN whatever m was.  (Without nnan, maxnum's
    NaN fix-up makes the max pass 3-4x slower.)"""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        fty = args[0].type
        name = "llvm.maxnum.f32" if a.bitwidth == 32 else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty, fty]), name)
        return builder.call(fn, args, fastmath=("nnan", "nsz"))

    return a(a, b), codegen


def _like(a, v):
    """v converted to the float type of the scalar a (njit only)."""
    raise NotImplementedError  # pragma: no cover


@overload(_like, inline="always")
def _ov_like(a, v):
    if a == types.float32:
        return lambda a, v: np.float32(v)
    if a == types.float64:
        return lambda a, v: np.float64(v)


def _pick(x, other):
    """x, or other when x is None; resolved at compile time (njit only)."""
    raise NotImplementedError  # pragma: no cover


@overload(_pick, inline="always")
def _ov_pick(x, other):
    if isinstance(x, types.NoneType):
        return lambda x, other: other
    return lambda x, other: x


def _block(x, ob, a, b):
    """x[a:b], or ob itself (the output's block [a, b)) when x is None; njit only.  In place,
    the loop must read and write through one array: two slices of the same row are two
    pointers that overlap exactly, LLVM's runtime alias check fails and the scalar loop runs
    (7x slower)."""
    raise NotImplementedError  # pragma: no cover


@overload(_block, inline="always")
def _ov_block(x, ob, a, b):
    if isinstance(x, types.NoneType):
        return lambda x, ob, a, b: ob
    return lambda x, ob, a, b: x[a:b]


def _block3(x, orow, o, j, k0, k1):
    """x[o, j, k0:k1], or orow (the same block of the output) when x is None: _block for the
    (outer, n, inner) kernels."""
    raise NotImplementedError  # pragma: no cover


@overload(_block3, inline="always")
def _ov_block3(x, orow, o, j, k0, k1):
    if isinstance(x, types.NoneType):
        return lambda x, orow, o, j, k0, k1: orow
    return lambda x, orow, o, j, k0, k1: x[o, j, k0:k1]


_NAN = np.nan
_INF = np.inf


# ------------------------------------------------------------------ 1-D building blocks
# Loops index from 0 over slices: an index that LLVM cannot prove non-negative makes Numba's
# negative-index wraparound a select, and the vectorizer then emits gathers.
@cjit(**_JIT)
def _max1(v):
    """max(v), NaN skipped (llvm.maxnum); NaN only when every element is NaN.  (Four
    accumulators side by side trip an assertion in LLVM 20's loop vectorizer: keep one.)"""
    m = v[0]
    for j in range(1, v.shape[0]):
        m = _fmax(m, v[j])
    return m


@cjit(**_JIT)
def _sumexp1(v, m):
    """sum exp(v - m) in float64 (partial sums of _SUB elements in v's dtype); m = max(v)."""
    n = v.shape[0]
    s = 0.0
    for a in range(0, n, _SUB):
        vb = v[a:min(a + _SUB, n)]
        ps = _like(m, 0.0)
        for j in range(vb.shape[0]):
            ps = _radd(ps, fexpn(vb[j] - m))
        s += np.float64(ps)
    return s


@cjit(**_JIT)
def _expstore1(x, o, m):
    """o = exp(src - m), returns sum(o) in float64 (partial sums of _SUB elements in the
    input dtype); x None: src is o (in place).  For softmax, whose 1/s needs no more."""
    n = o.shape[0]
    s = 0.0
    for a in range(0, n, _SUB):
        b = min(a + _SUB, n)
        ob = o[a:b]
        vb = _block(x, ob, a, b)
        ps = _like(m, 0.0)
        for j in range(ob.shape[0]):
            e = fexpd(vb[j], m)
            ob[j] = e
            ps = _radd(ps, e)
        s += np.float64(ps)
    return s


@cjit(**_JIT)
def _expstore1x(x, o, m, neg):
    """_expstore1 with the max terms counted apart (as in _sumexp1), for the log(s) of
    cross-entropy."""
    n = o.shape[0]
    s = 0.0
    zero = _like(m, 0.0)
    one = _like(m, 1.0)
    for a in range(0, n, _SUB):
        b = min(a + _SUB, n)
        ob = o[a:b]
        vb = _block(x, ob, a, b)
        ps = zero
        pk = zero
        for j in range(ob.shape[0]):
            v = vb[j]
            if neg:
                e = fexpn(v - m)
            else:
                e = fexp(v - m)
            ob[j] = e
            ps = _radd(ps, e if v != m else zero)
            pk = _radd(pk, one if v == m else zero)
        s += np.float64(ps)
        s += np.float64(pk)
    return s


@cjit(**_JIT)
def _shiftstore1(x, o, m, neg):
    """o = src - m, returns sum exp(src - m) in float64; x None: src is o.  log_softmax writes
    its output in this (compute-bound) pass, so the write-allocate traffic of a fresh output
    overlaps the exps; the last pass then only subtracts log(s) in cache."""
    n = o.shape[0]
    s = 0.0
    for a in range(0, n, _SUB):
        b = min(a + _SUB, n)
        ob = o[a:b]
        vb = _block(x, ob, a, b)
        ps = _like(m, 0.0)
        for j in range(ob.shape[0]):
            d = vb[j] - m
            ob[j] = d
            if neg:
                ps = _radd(ps, fexpn(d))
            else:
                ps = _radd(ps, fexp(d))
        s += np.float64(ps)
    return s


@cjit(**_JIT)
def _sub1(o, c):
    for j in range(o.shape[0]):
        o[j] = o[j] - c


@cjit(**_JIT)
def _scale1(o, c):
    for j in range(o.shape[0]):
        o[j] = o[j] * c


@cjit(**_JIT)
def _logout1(x, o, m, ls):
    """o = (src - m) - ls; x None: src is o."""
    src = _pick(x, o)
    for j in range(o.shape[0]):
        o[j] = (src[j] - m) - ls


# ------------------------------------------------------------------------ rows: three-pass
@cjit(**_JIT)
def _softmax_row(x, o, log):
    """One row, three passes.  x is None: in place, the input is o."""
    src = _pick(x, o)
    m = _max1(src)
    if log:
        neg = np.isfinite(m)        # m = max: every x - m <= 0
        if not neg:
            m = _like(m, 0.0)
        s = _shiftstore1(x, o, m, neg)
        _sub1(o, _like(m, math.log(s)))
    else:
        if not np.isfinite(m):
            o[:] = _NAN
            return
        s = _expstore1(x, o, m)
        _scale1(o, _like(m, 1.0 / s))


@cjit(**_JIT)
def _softmax_rows3(x, out, r0, r1, log):
    for i in range(r0, r1):
        if x is None:
            _softmax_row(None, out[i], log)
        else:
            _softmax_row(x[i], out[i], log)


# --------------------------------------------------------------------------- rows: online
@cjit(**_JIT)
def _online_pass1(x, o, j0, j1, log, bm, bs):
    """Block statistics of src[j0:j1] (j0 a multiple of _BLOCK): bm[b] = block max,
    bs[b] = sum exp(src - bm[b]) (float64); exp(src - bm) is stored in o unless log.
    A block of -inf has bs = 0 (and zeros in o); a block whose max is NaN/+inf has bs = NaN."""
    src = _pick(x, o)
    b = j0 // _BLOCK
    for a in range(j0, j1, _BLOCK):
        e_ = min(a + _BLOCK, j1)
        vb = src[a:e_]
        m = _max1(vb)
        bm[b] = m
        if m == -_INF:  # all -inf, or -inf and NaN (the max of a row with a NaN is unspecified)
            bs[b] = 0.0
            for j in range(vb.shape[0]):
                if vb[j] != vb[j]:
                    bs[b] = _NAN
            if not log:
                o[a:e_] = 0.0
        elif not np.isfinite(m):
            bs[b] = _NAN
        elif log:
            bs[b] = _sumexp1(vb, m)
        elif x is None:
            bs[b] = _expstore1(None, o[a:e_], m)
        else:
            bs[b] = _expstore1(vb, o[a:e_], m)
        b += 1


@cjit(**_JIT)
def _merge_blocks(bm, bs):
    """(m, s, ok) of the merged block statistics; ok is False when the row is not finite
    (a NaN or +inf max, a NaN sum, or all -inf)."""
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


@cjit(**_JIT)
def _online_pass2(x, o, j0, j1, log, bm, m, s):
    """Second pass over src[j0:j1]: softmax scales each block by exp(bm - m) / s, log_softmax
    writes (src - m) - log(s)."""
    if log:
        mm = _like(o[j0], m)
        ls = _like(o[j0], math.log(s))
        if x is None:
            _logout1(None, o[j0:j1], mm, ls)
        else:
            _logout1(x[j0:j1], o[j0:j1], mm, ls)
    else:
        b = j0 // _BLOCK
        for a in range(j0, j1, _BLOCK):
            e_ = min(a + _BLOCK, j1)
            _scale1(o[a:e_], _like(o[a], math.exp(np.float64(bm[b]) - m) / s))
            b += 1


@cjit(**_JIT)
def _softmax_rows_online(x, out, r0, r1, log):
    n = out.shape[1]
    nb = (n + _BLOCK - 1) // _BLOCK
    bm = np.empty(nb, out.dtype)
    bs = np.empty(nb, np.float64)
    for i in range(r0, r1):
        if x is None:
            _online_pass1(None, out[i], 0, n, log, bm, bs)
        else:
            _online_pass1(x[i], out[i], 0, n, log, bm, bs)
        m, s, ok = _merge_blocks(bm, bs)
        if not ok:  # rare: a non-finite row
            if not log:     # softmax: the whole row is NaN (out may hold exps by now)
                for j in range(n):
                    out[i, j] = _NAN
            elif x is None:  # log_softmax: pass 1 stored nothing, redo it in three passes
                _softmax_row(None, out[i], log)
            else:
                _softmax_row(x[i], out[i], log)
        elif x is None:
            _online_pass2(None, out[i], 0, n, log, bm, m, s)
        else:
            _online_pass2(x[i], out[i], 0, n, log, bm, m, s)


# ---------------------------------------------------------------------- rows: many short rows
@cjit(**_JIT)
def _softmax_small(x, out, r0, r1, log):
    """Rows of length n <= _SMALL_N: a group of R rows at once, one flat exp loop per group."""
    src = _pick(x, out)
    n = out.shape[1]
    R = max(1, _SMALL_BLOCK // n)
    sf = src.reshape(src.size)
    mr = np.empty(R * n, out.dtype)     # each row's max, repeated along the row
    e = np.empty(R * n, out.dtype)
    ss = np.empty(R, np.float64)
    for base in range(r0, r1, R):
        rows = min(R, r1 - base)
        for r in range(rows):
            i = base + r
            m = src[i, 0]
            for j in range(1, n):
                m = _fmax(m, src[i, j])
            if log and not np.isfinite(m):
                m = _like(m, 0.0)
            # softmax with a non-finite m: the exps below hold a NaN or sum to NaN
            for j in range(n):
                mr[r * n + j] = m
        sb = sf[base * n:(base + rows) * n]
        if log:     # m may be 0 for a non-finite row here: the general exp
            for k in range(sb.shape[0]):
                e[k] = fexp(sb[k] - mr[k])
        else:
            for k in range(sb.shape[0]):
                e[k] = fexpd(sb[k], mr[k])
        for r in range(rows):
            s = 0.0
            for j in range(n):
                s += np.float64(e[r * n + j])
            ss[r] = s
        if log:
            for r in range(rows):       # vectorized log over the rows of the group
                ss[r] = log64(ss[r])
        for r in range(rows):
            i = base + r
            if log:
                m = mr[r * n]
                ls = _like(m, ss[r])
                for j in range(n):
                    out[i, j] = (src[i, j] - m) - ls
            else:
                inv = _like(mr[0], 1.0 / ss[r])
                for j in range(n):
                    out[i, j] = e[r * n + j] * inv


# ------------------------------------------------------------------------------ inner > 1
@cjit(**_JIT)
def _softmax_inner(x, out, o0, o1, k0, k1, log):
    """(outer, n, inner) reduced along axis 1, vectorized along the inner axis [k0, k1)."""
    src = _pick(x, out)
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
                m[k] = _fmax(m[k], xr[k])
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
            for j in range(n):
                orow = out[o, j, k0:k1]
                xr = _block3(x, orow, o, j, k0, k1)
                for k in range(K):
                    orow[k] = (xr[k] - m[k]) - c[k]
        else:
            for j in range(n):
                orow = out[o, j, k0:k1]
                xr = _block3(x, orow, o, j, k0, k1)
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


# ------------------------------------------------------------------------------- logsumexp
@cjit(**_JIT)
def _lse_finish(m, t, k, want_sign):
    """scipy's shifted formula from the max m, the sum t of the non-max terms and the sum k of
    the weights of the max terms: (r, sgn), r NaN when it cannot be used."""
    if t != 0.0:
        t = t / k
    sgn = np.sign(t + 1.0) * np.sign(k)
    if t < -1.0:
        t = -t - 2.0
    r = math.log1p(t) + math.log(abs(k)) + m
    if not want_sign and sgn < 0:
        r = _NAN
    return r, sgn


@cjit(**_JIT)
def _lse_direct(S, want_sign):
    """The rare path: log|S|, sign(S) of S = sum b * exp(a)."""
    if want_sign:
        return math.log(abs(S)), np.sign(S)
    if S < 0:
        return _NAN, -1.0
    return math.log(S), np.sign(S)


@cjit(**_JIT)
def _lse_row(a, b, want_sign):
    """(r, sgn) of one row a (b: None or the row's weights), scipy's semantics."""
    n = a.shape[0]
    # pass 1: max over the unmasked entries
    if b is None:
        m = _max1(a)
    else:
        m = _like(a[0], -_INF)
        for j in range(n):
            v = a[j]
            if b[j] == 0:
                v = _like(v, -_INF)
            m = _fmax(m, v)
    r = _NAN
    sgn = _NAN
    if np.isfinite(m):
        t = 0.0
        k = 0.0
        zero = _like(m, 0.0)
        one = _like(m, 1.0)
        for a0 in range(0, n, _SUB):
            a1 = min(a0 + _SUB, n)
            ab = a[a0:a1]
            pt = zero
            pk = zero
            if b is None:
                for j in range(ab.shape[0]):
                    v = ab[j]
                    ev = fexpn(v - m)
                    pt = _radd(pt, ev if v != m else zero)
                    pk = _radd(pk, one if v == m else zero)
            else:
                bb = b[a0:a1]
                for j in range(ab.shape[0]):
                    v = ab[j]
                    bj = bb[j]
                    ev = bj * fexpn(v - m)
                    pt = _radd(pt, ev if (v != m and bj != zero) else zero)
                    pk = _radd(pk, bj if v == m else zero)
            t += np.float64(pt)
            k += np.float64(pk)
        r, sgn = _lse_finish(np.float64(m), t, k, want_sign)
    if not np.isfinite(r):
        S = 0.0
        if b is None:
            for j in range(n):
                S += math.exp(np.float64(a[j]))
        else:
            for j in range(n):
                S += np.float64(b[j]) * math.exp(np.float64(a[j]))
        r, sgn = _lse_direct(S, want_sign)
    return r, sgn


@cjit(**_JIT)
def _lse_rows(x, b, out, sign, r0, r1):
    """inner == 1: x, b (None or same shape) (rows, n); out, sign (None or) (rows,)."""
    want_sign = sign is not None
    for i in range(r0, r1):
        if b is None:
            r, sgn = _lse_row(x[i], None, want_sign)
        else:
            r, sgn = _lse_row(x[i], b[i], want_sign)
        out[i] = r
        if sign is not None:
            sign[i] = sgn


@cjit(**_JIT)
def _lse_small(x, out, sign, r0, r1):
    """inner == 1, b None, rows of length n <= _SMALL_N: groups of rows, one flat exp loop and
    one vectorized log1p / log loop per group (libm calls per row would dominate)."""
    n = x.shape[1]
    want_sign = sign is not None
    R = max(1, _SMALL_BLOCK // n)
    xf = x.reshape(x.size)
    mr = np.empty(R * n, x.dtype)
    e = np.empty(R * n, x.dtype)
    rm = np.empty(R, np.float64)
    rt = np.empty(R, np.float64)
    rk = np.empty(R, np.float64)
    for base in range(r0, r1, R):
        rows = min(R, r1 - base)
        for r in range(rows):
            m = _max1(x[base + r])
            rm[r] = m
            for j in range(n):
                mr[r * n + j] = m
        xb = xf[base * n:(base + rows) * n]
        zero = _like(mr[0], 0.0)
        for k in range(xb.shape[0]):
            v = xb[k]
            e[k] = fexpn(v - mr[k]) if v != mr[k] else zero
        for r in range(rows):
            t = 0.0
            kk = 0.0
            for j in range(n):
                t += np.float64(e[r * n + j])
                kk += 1.0 if xb[r * n + j] == mr[r * n] else 0.0
            rt[r] = t
            rk[r] = kk
        for r in range(rows):
            # scipy's log1p(t / k) + log(k) + m; t >= 0, k >= 1 here, so the sign is +1.
            # log1p(u) = log(w) - ((w - 1) - u) / w with w = 1 + u (exact to an ulp or two)
            k = rk[r]
            u = rt[r] / k
            w = 1.0 + u
            l1p = log64(w) - ((w - 1.0) - u) / w
            rt[r] = l1p + log64(k) + rm[r]
        for r in range(rows):
            i = base + r
            rr = rt[r]
            sgn = 1.0
            if not (np.isfinite(rm[r]) and np.isfinite(rr)):
                rr, sgn = _lse_row(x[i], None, want_sign)
            out[i] = rr
            if sign is not None:
                sign[i] = sgn


@cjit(**_JIT)
def _lse_inner(x, b, out, sign, o0, o1, k0, k1):
    """inner > 1: x, b (outer, n, inner); out, sign (outer, inner); columns [k0, k1)."""
    n = x.shape[1]
    K = k1 - k0
    want_sign = sign is not None
    m = np.empty(K, x.dtype)
    t = np.empty(K, np.float64)
    kk = np.empty(K, np.float64)
    for o in range(o0, o1):
        m[:] = -_INF
        for j in range(n):
            xr = x[o, j, k0:k1]
            if b is None:
                for k in range(K):
                    m[k] = _fmax(m[k], xr[k])
            else:
                br = b[o, j, k0:k1]
                for k in range(K):
                    v = xr[k]
                    if br[k] == 0:
                        v = _like(v, -_INF)
                    m[k] = _fmax(m[k], v)
        t[:] = 0.0
        kk[:] = 0.0
        for j in range(n):
            xr = x[o, j, k0:k1]
            if b is None:
                for k in range(K):
                    v = xr[k]
                    mk = m[k]
                    ev = np.float64(fexpn(v - mk))
                    t[k] += ev if v != mk else 0.0
                    kk[k] += 1.0 if v == mk else 0.0
            else:
                br = b[o, j, k0:k1]
                for k in range(K):
                    v = xr[k]
                    mk = m[k]
                    bj = np.float64(br[k])
                    ev = bj * np.float64(fexpn(v - mk))
                    t[k] += ev if (v != mk and bj != 0.0) else 0.0
                    kk[k] += bj if v == mk else 0.0
        if b is None:
            # t >= 0, k >= 1: log1p(t / k) + log(k) + m in one vectorized loop, the sign is +1
            # (log1p(u) = log(w) - ((w - 1) - u) / w, w = 1 + u); non-finite columns below
            for k in range(K):
                u = t[k] / kk[k]
                w = 1.0 + u
                t[k] = (log64(w) - ((w - 1.0) - u) / w) + log64(kk[k]) + np.float64(m[k])
        for k in range(K):
            r = _NAN
            sgn = _NAN
            mk = m[k]
            if np.isfinite(mk):
                if b is None:
                    r = t[k]
                    sgn = 1.0
                else:
                    r, sgn = _lse_finish(np.float64(mk), t[k], kk[k], want_sign)
            if not np.isfinite(r):
                if b is None:
                    r, sgn = _lse_row(x[o, :, k0 + k].copy(), None, want_sign)
                else:
                    r, sgn = _lse_row(x[o, :, k0 + k].copy(), b[o, :, k0 + k].copy(), want_sign)
            out[o, k0 + k] = r
            if sign is not None:
                sign[o, k0 + k] = sgn


# --------------------------------------------------------------------------- cross-entropy
@cjit(**_JIT)
def _wdiff_sum(v, w, m):
    """sum_j w_j * (v_j - m) in float64 (w None: all ones)."""
    s = 0.0
    m64 = np.float64(m)
    for j in range(v.shape[0]):
        wj = 1.0 if w is None else np.float64(w[j])
        s = _radd(s, wj * (np.float64(v[j]) - m64))
    return s


@cjit(**_JIT)
def _ce_probs_pass(x, g, p, w, a, m, eps, eC, neg):
    """Probability targets, one block of a row starting at column a: g = exp(src - m); returns
    (s, Q, qx) with q_j = w_j ((1 - eps) p_j + eps / C), Q = sum q, qx = sum q (x - m).
    x None: src is g.  w is the whole weight vector (or None)."""
    src = _pick(x, g)
    m64 = np.float64(m)
    s = 0.0
    Q = 0.0
    qx = 0.0
    for j in range(g.shape[0]):
        v = src[j]
        if neg:
            ev = fexpn(v - m)
        else:
            ev = fexp(v - m)
        g[j] = ev
        s = _radd(s, np.float64(ev))
        wj = 1.0 if w is None else np.float64(w[a + j])
        q = wj * ((1.0 - eps) * np.float64(p[j]) + eC)
        Q = _radd(Q, q)
        qx = _radd(qx, q * (np.float64(v) - m64))
    return s, Q, qx


@cjit(**_JIT)
def _ce_rows(x, target, probs, weight, ignore_index, eps, scale, loss, grad, r0, r1):
    """Fused forward (+ backward when grad is not None) of cross-entropy over rows [r0, r1).

    x None: the logits live in grad (gradient written in place).  Passes over a row: max;
    (smoothing: sum w (x - m)); exp(x - m) stored in grad while summing s; the gradient.
    """
    src = _pick(x, grad)
    C = src.shape[1]
    eC = eps / C
    sw = 0.0
    if weight is None:
        sw = np.float64(C)
    else:
        for j in range(C):
            sw += np.float64(weight[j])
    # without a gradient the exps go to a scratch block of _BLOCK elements that stays in L1:
    # the same code, in the same blocks, runs with and without grad, so the loss alone equals
    # the fused loss bit for bit
    scratch = np.empty(min(C, _BLOCK), src.dtype)
    for i in range(r0, r1):
        xi = src[i]
        if grad is not None:
            dst = grad[i]
        t = 0
        if target is not None:
            t = target[i]
            if t == ignore_index:
                loss[i] = 0.0
                if grad is not None:
                    grad[i, :] = 0.0
                continue
        m = _max1(xi)
        neg = np.isfinite(m)
        if not neg:
            m = _like(m, 0.0)
        m64 = np.float64(m)
        s = 0.0
        qx = 0.0     # sum_j q_j * (x_j - m)
        Q = 0.0      # sum_j q_j
        wt = 0.0
        if target is not None:
            wt = 1.0 if weight is None else np.float64(weight[t])
            qx = (1.0 - eps) * wt * (np.float64(xi[t]) - m64)
            if eps > 0.0:   # before the exps overwrite an in-place row
                qx += eC * _wdiff_sum(xi, weight, m)
            Q = (1.0 - eps) * wt + eC * sw
            for a in range(0, C, _BLOCK):
                b = min(a + _BLOCK, C)
                if grad is None:
                    s += _expstore1x(xi[a:b], scratch[:b - a], m, neg)
                elif x is None:
                    s += _expstore1x(None, dst[a:b], m, neg)
                else:
                    s += _expstore1x(xi[a:b], dst[a:b], m, neg)
        if probs is not None:
            for a in range(0, C, _BLOCK):
                b = min(a + _BLOCK, C)
                pa = probs[i, a:b]
                if grad is None:
                    ds, dQ, dqx = _ce_probs_pass(xi[a:b], scratch[:b - a], pa, weight, a, m, eps,
                                                 eC, neg)
                elif x is None:
                    ds, dQ, dqx = _ce_probs_pass(None, dst[a:b], pa, weight, a, m, eps, eC, neg)
                else:
                    ds, dQ, dqx = _ce_probs_pass(xi[a:b], dst[a:b], pa, weight, a, m, eps, eC,
                                                 neg)
                s += ds
                Q += dQ
                qx += dqx
        loss[i] = Q * math.log(s) - qx
        if grad is not None:
            gi = grad[i]
            c = _like(m, Q / s * scale)
            if target is not None:
                et = np.float64(gi[t])
                if eps == 0.0:
                    _scale1(gi, c)
                elif weight is None:
                    g0 = _like(m, scale * eC)
                    for j in range(C):
                        gi[j] = gi[j] * c - g0
                else:
                    g0 = _like(m, scale * eC)
                    for j in range(C):
                        gi[j] = gi[j] * c - g0 * weight[j]
                qt = (1.0 - eps) * wt + eC * wt
                gi[t] = scale * (et * (Q / s) - qt)
            if probs is not None:
                pi = probs[i]
                e1 = _like(m, 1.0 - eps)
                eCd = _like(m, eC)
                sc = _like(m, scale)
                for j in range(C):
                    wj = _like(m, 1.0) if weight is None else weight[j]
                    gi[j] = gi[j] * c - sc * (wj * (e1 * pi[j] + eCd))


@cjit(**_JIT)
def _ce_small(x, target, weight, ignore_index, eps, scale, loss, grad, r0, r1):
    """Class-index targets, C <= _SMALL_N: groups of rows, one flat (vectorized) exp loop and
    one vectorized log loop per group; otherwise the same formulas as _ce_rows."""
    src = _pick(x, grad)
    C = src.shape[1]
    eC = eps / C
    sw = 0.0
    if weight is None:
        sw = np.float64(C)
    else:
        for j in range(C):
            sw += np.float64(weight[j])
    R = max(1, _SMALL_BLOCK // C)
    sf = src.reshape(src.size)
    mr = np.empty(R * C, src.dtype)
    e = np.empty(R * C, src.dtype)
    ss = np.empty(R, np.float64)
    lg = np.empty(R, np.float64)
    qx = np.empty(R, np.float64)
    for base in range(r0, r1, R):
        rows = min(R, r1 - base)
        for r in range(rows):
            xi = src[base + r]
            m = _max1(xi)
            if not np.isfinite(m):
                m = _like(m, 0.0)
            for j in range(C):
                mr[r * C + j] = m
            t = target[base + r]
            q = 0.0
            if t != ignore_index:
                wt = 1.0 if weight is None else np.float64(weight[t])
                q = (1.0 - eps) * wt * (np.float64(xi[t]) - np.float64(m))
                if eps > 0.0:
                    q += eC * _wdiff_sum(xi, weight, m)
            qx[r] = q
        xb = sf[base * C:(base + rows) * C]
        for k in range(xb.shape[0]):
            e[k] = fexp(xb[k] - mr[k])
        for r in range(rows):
            er = e[r * C:(r + 1) * C]
            sr = 0.0
            for j in range(C):
                sr += np.float64(er[j])
            ss[r] = sr
        for r in range(rows):           # vectorized log over the group
            lg[r] = log64(ss[r])
        for r in range(rows):
            i = base + r
            t = target[i]
            if t == ignore_index:
                loss[i] = 0.0
                if grad is not None:
                    grad[i, :] = 0.0
                continue
            wt = 1.0 if weight is None else np.float64(weight[t])
            Q = (1.0 - eps) * wt + eC * sw
            sr = ss[r]
            loss[i] = Q * lg[r] - qx[r]
            if grad is not None:
                gi = grad[i]
                er = e[r * C:(r + 1) * C]
                c = Q / sr * scale
                for j in range(C):
                    wj = 1.0 if weight is None else np.float64(weight[j])
                    gi[j] = np.float64(er[j]) * c - scale * eC * wj
                qt = (1.0 - eps) * wt + eC * wt
                gi[t] = scale * (np.float64(er[t]) * (Q / sr) - qt)


# ---------------------------------------------------------------------------------- threads
_pool = None
_pool_size = 0
_pool_lock = threading.Lock()


def _get_pool(n):
    """A pool of at least n worker threads.  A smaller old pool is dropped, not shut down: a
    concurrent call may still be submitting to it (its idle threads exit once it is collected)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < n:
            n = max(n, os.cpu_count() or 1)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fastsoftmax-numba")
            _pool_size = n
        return _pool


def _nthreads_for(work, nthreads, parts):
    """How many threads ``work`` elements split into at most ``parts`` pieces are worth."""
    nt = min(int(nthreads), int(parts), max(1, int(work // _MIN_WORK)))
    return max(1, nt)


def _bounds(lo, hi, nt, align=1):
    """nt + 1 split points of [lo, hi), multiples of ``align`` (except hi)."""
    step = -(-(hi - lo) // nt)
    step = -(-step // align) * align
    return [min(hi, lo + i * step) for i in range(nt)] + [hi]


def _run(tasks, nt=None):
    """Run the zero-argument callables ``tasks`` on this thread and nt - 1 pool threads (nt
    defaults to one thread per task).  Each thread claims the next unclaimed task until none is
    left, so a pool thread that wakes late (15-80 us here, more when the core is busy) finds
    less or nothing to do, and the caller waits only for tasks that have started, never for a
    thread that has not."""
    n = len(tasks)
    nt = n if nt is None else min(nt, n)
    if nt <= 1:
        return [t() for t in tasks]
    res = [None] * n
    errors = []
    claim = itertools.count()      # next() on a count is atomic under the GIL
    finished = itertools.count(1)
    done = threading.Event()

    def drain():
        while True:
            i = next(claim)
            if i >= n:
                return
            try:
                res[i] = tasks[i]()
            except BaseException as exc:  # re-raised on the calling thread
                errors.append(exc)
            if next(finished) == n:
                done.set()

    pool = _get_pool(nt - 1)
    for _ in range(nt - 1):
        pool.submit(drain)
    drain()
    done.wait()
    if errors:
        raise errors[0]
    return res


def _nchunks(nt, parts, work):
    """How many pieces to cut ``parts`` (rows, column groups, blocks) holding ``work`` elements
    into for nt threads: up to _CHUNKS per thread, none below _MIN_CHUNK elements, at least nt."""
    return max(nt, min(nt * _CHUNKS, parts, work // _MIN_CHUNK))


def _split_rows(kern, rows, work, nthreads, args_before, args_after):
    """kern(*args_before, r0, r1, *args_after) over [0, rows) split across threads."""
    nt = _nthreads_for(work, nthreads, rows)
    if nt == 1:
        kern(*args_before, 0, rows, *args_after)
        return
    k = _nchunks(nt, rows, work)
    b = _bounds(0, rows, k)
    _run([(lambda r0=b[i], r1=b[i + 1]: kern(*args_before, r0, r1, *args_after))
          for i in range(k) if b[i] < b[i + 1]], nt)


def _split_inner(kern, outer, inner, work, nthreads, head, tail):
    """kern(*head, o0, o1, k0, k1, *tail): threads split outer, or inner when outer is small."""
    nt = _nthreads_for(work, nthreads, max(outer, inner))
    if nt == 1:
        kern(*head, 0, outer, 0, inner, *tail)
        return
    if outer >= nt:
        k = _nchunks(nt, outer, work)
        b = _bounds(0, outer, k)
        tasks = [(lambda o0=b[i], o1=b[i + 1]: kern(*head, o0, o1, 0, inner, *tail))
                 for i in range(k) if b[i] < b[i + 1]]
    else:
        k = _nchunks(nt, inner // 16, work)
        b = _bounds(0, inner, k, align=16)
        tasks = [(lambda k0=b[i], k1=b[i + 1]: kern(*head, 0, outer, k0, k1, *tail))
                 for i in range(k) if b[i] < b[i + 1]]
    _run(tasks, nt)


def _same(a, b):
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


# ------------------------------------------------------------------------- the contract
def softmax(x, out, log, method, nthreads):
    outer, n, inner = x.shape
    log = bool(log)
    src = None if _same(x, out) else x
    work = outer * n * inner
    if inner != 1:
        _split_inner(_softmax_inner, outer, inner, work, nthreads, (src, out), (log,))
        return
    x2 = None if src is None else src.reshape(outer, n)
    o2 = out.reshape(outer, n)
    if n <= _SMALL_N:
        work *= _SMALL_COST
    if method == "auto":
        # measured: three_pass matches or beats online at every length here (a row that leaves
        # L2 is read twice either way); online splits single long rows over threads below
        method = "three_pass"
    if n <= _BLOCK:
        # one block: the online kernel would do exactly the three passes (block max, exp + sum,
        # scale), with more overhead per row
        method = "three_pass"
    nt = _nthreads_for(work, nthreads, max(outer, n // _BLOCK))
    if outer < nt and n >= 2 * _BLOCK:
        _softmax_long_rows_threaded(x2, o2, log, nt)
        return
    if n <= _SMALL_N and method == "three_pass":
        kern = _softmax_small
    elif method == "online":
        kern = _softmax_rows_online
    else:
        kern = _softmax_rows3
    _split_rows(kern, outer, work, nthreads, (x2, o2), (log,))


def _softmax_long_rows_threaded(x2, o2, log, nt):
    """Few long rows, several threads: each row's blocks split over the threads (online)."""
    rows, n = o2.shape
    nb = -(-n // _BLOCK)
    bm = np.empty(nb, o2.dtype)
    bs = np.empty(nb, np.float64)
    k = _nchunks(nt, nb, n)
    b = _bounds(0, n, k, align=_BLOCK)
    for i in range(rows):
        xi = None if x2 is None else x2[i]
        oi = o2[i]
        _run([(lambda j0=b[t], j1=b[t + 1]: _online_pass1(xi, oi, j0, j1, log, bm, bs))
              for t in range(k) if b[t] < b[t + 1]], nt)
        m, s, ok = _merge_blocks(bm, bs)
        if not ok:  # a non-finite row: softmax all NaN, log_softmax in three passes
            if log:
                _softmax_row(xi, oi, log)
            else:
                oi.fill(np.nan)
            continue
        _run([(lambda j0=b[t], j1=b[t + 1]: _online_pass2(xi, oi, j0, j1, log, bm, m, s))
              for t in range(k) if b[t] < b[t + 1]], nt)


def logsumexp(x, b, out, sign, nthreads):
    outer, n, inner = x.shape
    work = outer * n * inner
    if inner == 1:
        if n <= _SMALL_N:
            work *= _SMALL_COST
        x2 = x.reshape(outer, n)
        b2 = None if b is None else b.reshape(outer, n)
        s1 = None if sign is None else sign.reshape(outer)
        if b is None and n <= _SMALL_N:
            _split_rows(_lse_small, outer, work, nthreads, (x2, out.reshape(outer), s1), ())
        else:
            _split_rows(_lse_rows, outer, work, nthreads, (x2, b2, out.reshape(outer), s1), ())
        return
    _split_inner(_lse_inner, outer, inner, work, nthreads, (x, b, out, sign), ())


def cross_entropy(logits, target, probs, weight, ignore_index, smoothing, scale, loss, grad,
                  nthreads):
    N, C = logits.shape
    src = None if (grad is not None and _same(logits, grad)) else logits
    work = N * C * (2 if grad is not None else 1) * (_SMALL_COST if C <= _SMALL_N else 1)
    if target is not None and C <= _SMALL_N:
        _split_rows(_ce_small, N, work, nthreads,
                    (src, target, weight, int(ignore_index), float(smoothing), float(scale),
                     loss, grad), ())
        return
    _split_rows(_ce_rows, N, work, nthreads,
                (src, target, probs, weight, int(ignore_index), float(smoothing), float(scale),
                 loss, grad), ())


@cjit(**_JIT)
def _exp_apply(x, out):
    src = _pick(x, out)
    for i in range(out.shape[0]):
        out[i] = fexp(src[i])


@cjit(**_JIT)
def _log_apply(x, out):
    src = _pick(x, out)
    for i in range(out.shape[0]):
        out[i] = flog(src[i])


def exp(x, out):
    """The elementwise exp of the kernels (``_numba_exp.fexp``); out may be x."""
    _exp_apply(None if _same(x, out) else x, out)


def log(x, out):
    """The elementwise log of the kernels (``_numba_exp.flog``); out may be x."""
    _log_apply(None if _same(x, out) else x, out)
