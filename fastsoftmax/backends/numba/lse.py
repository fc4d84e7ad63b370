"""logsumexp: the kernels' maths and the contract function ``logsumexp``.

scipy.special.logsumexp's semantics step by step (docs/DESIGN.md): b == 0 masks an entry; m is
the max over the unmasked entries; the max terms are counted apart as k, so
r = log1p(t / k) + log|k| + m with t = sum b exp(a - m) over the other terms (float64; over long
rows, of input-dtype partial sums); the sign rule; and the direct sum S = sum b exp(a) on the rare path
where r is not finite.
* rows (``lse_row``): max; t and k in one pass; scipy's finish (``lse_finish``).
* small rows without b (n <= SMALL_N): groups of rows, one flat exp loop, and the finish
  log1p(t / k) + log(k) + m of a group in one vectorized loop (t >= 0, k >= 1: the sign is +1);
  a row whose max or result is not finite goes through ``lse_row``.
* inner > 1: per-column m, t and k vectors along the contiguous inner axis.
"""
import math

import numpy as np

from .explog import EXP_UNSCALE, fexpn, fexps, log64
from .intrinsics import fmax, like, radd, rowof
from .jit import JIT, cjit, hook
from .pool import SMALL_COST, split_inner, split_rows
from .temperature import logsumexp_temp
from .rows import SMALL_N, SUB, inner_kernel, keep, max1, rows_kernel, small_rows_kernel

__all__ = ["logsumexp"]

_NAN = np.nan
_INF = np.inf


@cjit(**JIT)
def lse_finish(m, t, k, want_sign):
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


@cjit(**JIT)
def lse_direct(S, want_sign):
    """The rare path: log|S|, sign(S) of S = sum b * exp(a)."""
    if want_sign:
        return math.log(abs(S)), np.sign(S)
    if S < 0:
        return _NAN, -1.0
    return math.log(S), np.sign(S)


# ------------------------------------------------------------------------------------ rows
@cjit(**JIT)
def lse_row(a, b, want_sign):
    """(r, sgn) of one row a (b: None or the row's weights), scipy's semantics."""
    n = a.shape[0]
    # pass 1: max over the unmasked entries
    if b is None:
        m = max1(a)
    else:
        m = like(a[0], -_INF)
        for j in range(n):
            v = a[j]
            if b[j] == 0:
                v = like(v, -_INF)
            m = fmax(m, v)
    r = _NAN
    sgn = _NAN
    if np.isfinite(m):
        t = 0.0
        k = 0.0
        zero = like(m, 0.0)
        one = like(m, 1.0)
        for a0 in range(0, n, SUB):
            a1 = min(a0 + SUB, n)
            ab = a[a0:a1]
            pt = zero
            pk = zero
            if b is None:
                for j in range(ab.shape[0]):
                    v = ab[j]
                    ev = fexps(v - m)       # scaled by 2^64, unscaled with t below
                    pt = radd(pt, ev if v != m else zero)
                    pk = radd(pk, one if v == m else zero)
            else:
                bb = b[a0:a1]
                for j in range(ab.shape[0]):
                    v = ab[j]
                    bj = bb[j]
                    ev = bj * fexpn(v - m)    # unscaled: b * 2^64 could overflow
                    pt = radd(pt, ev if (v != m and bj != zero) else zero)
                    pk = radd(pk, bj if v == m else zero)
            t += np.float64(pt) * EXP_UNSCALE if b is None else np.float64(pt)
            k += np.float64(pk)
        r, sgn = lse_finish(np.float64(m), t, k, want_sign)
    if not np.isfinite(r):
        S = 0.0
        if b is None:
            for j in range(n):
                S += math.exp(np.float64(a[j]))
        else:
            for j in range(n):
                S += np.float64(b[j]) * math.exp(np.float64(a[j]))
        r, sgn = lse_direct(S, want_sign)
    return r, sgn


@hook(inline=False)
def _rows_loop(x, out, r0, r1, b, sign):
    """logsumexp of rows; b None or (rows, n), sign None or (rows,)."""
    want_sign = sign is not None
    for i in range(r0, r1):
        r, sgn = lse_row(x[i], rowof(b, i), want_sign)
        out[i] = r
        if sign is not None:
            sign[i] = sgn


_rows = rows_kernel("lse_rows", _rows_loop)


# ---------------------------------------------------------------------- rows: many short rows
@hook
def _exp_masked(v, m):
    """exp(v - m) of the terms other than the max (the max terms are counted apart as k)."""
    return fexpn(v - m) if v != m else like(m, 0.0)


@hook
def _small_finish(x, out, ws, base, rows, m, kc, e, s, sign):
    """logsumexp of rows of n <= SMALL_N, b None: scipy's log1p(t / k) + log(k) + m (t = s: the
    exps of the non-max terms; k = kc: the count of the max terms), one vectorized loop per group
    (libm calls per row would dominate)."""
    for r in range(rows):
        # t >= 0, k >= 1 here, so the sign is +1.
        # log1p(u) = log(w) - ((w - 1) - u) / w with w = 1 + u (exact to an ulp or two)
        k = kc[r]
        u = s[r] / k
        w = 1.0 + u
        l1p = log64(w) - ((w - 1.0) - u) / w
        s[r] = l1p + log64(k) + np.float64(m[r])
    for r in range(rows):
        i = base + r
        rr = s[r]
        sgn = 1.0
        if not (np.isfinite(m[r]) and np.isfinite(rr)):
            rr, sgn = lse_row(x[i], None, sign is not None)
        out[i] = rr
        if sign is not None:
            sign[i] = sgn


_small = small_rows_kernel("lse_small", keep, _exp_masked, _small_finish, count_max=True)


# ------------------------------------------------------------------------------ inner > 1
@hook(inline=False)
def _inner_loop(x, out, o0, o1, k0, k1, b, sign):
    """logsumexp of (outer, n, inner) along axis 1 (b None or (outer, n, inner), sign None or
    (outer, inner)), vectorized along the inner columns [k0, k1): per-column m, t and k."""
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
                    m[k] = fmax(m[k], xr[k])
            else:
                br = b[o, j, k0:k1]
                for k in range(K):
                    v = xr[k]
                    if br[k] == 0:
                        v = like(v, -_INF)
                    m[k] = fmax(m[k], v)
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
                    r, sgn = lse_finish(np.float64(mk), t[k], kk[k], want_sign)
            if not np.isfinite(r):
                if b is None:
                    r, sgn = lse_row(x[o, :, k0 + k].copy(), None, want_sign)
                else:
                    r, sgn = lse_row(x[o, :, k0 + k].copy(), b[o, :, k0 + k].copy(), want_sign)
            out[o, k0 + k] = r
            if sign is not None:
                sign[o, k0 + k] = sgn


_inner = inner_kernel("lse_inner", _inner_loop)


# ------------------------------------------------------------------------- the contract
def logsumexp(x, b, out, sign, nthreads, factor=None):
    if factor is not None:      # temperature / base: temperature.py's kernels
        logsumexp_temp(x, b, out, sign, factor, nthreads)
        return
    outer, n, inner = x.shape
    work = outer * n * inner
    if inner != 1:
        split_inner(_inner, x, out, (b, sign), outer, inner, work, nthreads)
        return
    if n <= SMALL_N:
        work *= SMALL_COST
    x2 = x.reshape(outer, n)
    o1 = out.reshape(outer)
    s1 = None if sign is None else sign.reshape(outer)
    if b is None and n <= SMALL_N:
        split_rows(_small, x2, o1, (s1,), outer, work, nthreads)
    else:
        b2 = None if b is None else b.reshape(outer, n)
        split_rows(_rows, x2, o1, (b2, s1), outer, work, nthreads)
