"""Temperature and base: softmax, log_softmax, logsumexp and cross-entropy of x * c, c = 1/T
per reduced row (docs/training.md, "Temperature and base"; the C twin is csrc/fsm_temperature.h).

``f`` holds the factors, float64, ``f[r * fs]`` that of row r (``fs`` 0: one factor for the
call).  Per row: m = max x where c > 0, min x where c < 0, so (x - m) c <= 0 and
max(x c) = m c; the plain maths then run on (x - m) c, fused into the same passes as the plain
kernels (no copy of x):

* softmax      e = exp((x - m) c) stored while summed (``texps``: float32 keeps the rounding
               errors of x - m and of the product in the exp's argument), then scaled by 1/s;
               m not finite: NaN row.
* log_softmax  y = (x - m) c stored while exp(y) is summed, y -= log(s) (the rest-sum of
               rows.log_sum_exact when 1 <= s < 2: y == 0 exactly where x == m); m not finite:
               m = 0 (the plain op on x c).
* logsumexp    m + T (log1p(t / k) + log|k|), k and t as lse.py's with a -> (a - m) c; not
               finite: T log(sum b exp(a c)) in float64 (the plain rare path on a c).
* cross-entropy  ce.py's formulas with x - m -> (x - m) c, the gradient times c; m not finite:
               rows.ce_shift.

These kernels are apart from the plain ones, which a call without temperature still runs
unchanged.  They are simpler: three passes per row, no online or small-row group variant, no
long row split over threads; logsumexp with inner > 1 reduces column by column.
"""
import math

import numpy as np
from numba import types
from numba.extending import overload

from .explog import EXP_UNSCALE, _exp32s, _exp64s, _twosum_err32, fexp, fexps
from .intrinsics import block, block3, fmax, like, pick, radd, rowof
from .jit import JIT, cjit, hook
from .pool import split_inner, split_rows
from .rows import EXACT_BELOW, SUB, ce_shift, inner_kernel, log_sum_exact, max1, rows_kernel, \
    scale1, sub1, x_arg

__all__ = ["softmax_temp", "logsumexp_temp", "cross_entropy_temp"]

_NAN = np.nan
_INF = np.inf


# ------------------------------------------------------------------------------ primitives
def texps(x, m, c):
    """exp((x - m) c) * 2^64 for (x - m) c <= 0 or NaN; njit only.  float32: the rounding
    error of x - m (2Sum) times c, and that of the product (recovered where LLVM contracts
    ``d * c - p`` into an FMA, else 0), join the reduced argument."""
    raise NotImplementedError  # pragma: no cover


@overload(texps, inline="always")
def _ov_texps(x, m, c):
    if x == types.float32:
        def impl(x, m, c):
            d = x - m
            lo = _twosum_err32(x, m, d)
            p = d * c
            return _exp32s(p, (d * c - p) + lo * c)
        return impl
    if x == types.float64:
        return lambda x, m, c: _exp64s((x - m) * c, None)


@cjit(**JIT)
def extreme1(v, c):
    """max(v) for c > 0, min(v) for c < 0 (NaN skipped: the min is -max(-v))."""
    if c > 0:
        return max1(v)
    m = -v[0]
    for j in range(1, v.shape[0]):
        m = fmax(m, -v[j])
    return -m


def col(b, o, k):
    """b[o, :, k], or None when b is None (njit only)."""
    raise NotImplementedError  # pragma: no cover


@overload(col, inline="always")
def _ov_col(b, o, k):
    if isinstance(b, types.NoneType):
        return lambda b, o, k: None
    return lambda b, o, k: b[o, :, k]


@cjit(**JIT)
def texpstore1(x, o, m, c):
    """o = exp((src - m) c) * 2^64 (texps), returns their sum in float64 (partial sums of SUB
    elements in the input dtype, as rows.expstore1); x None: src is o."""
    n = o.shape[0]
    s = 0.0
    for a in range(0, n, SUB):
        b = min(a + SUB, n)
        ob = o[a:b]
        vb = block(x, ob, a, b)
        ps = like(m, 0.0)
        for j in range(ob.shape[0]):
            e = texps(vb[j], m, c)
            ob[j] = e
            ps = radd(ps, e)
        s += np.float64(ps)
    return s


# ------------------------------------------------------------------- softmax / log_softmax
@cjit(**JIT)
def tsoftmax_row(x, o, log, cd):
    """One row of softmax / log_softmax of src * cd (x None: in place, src is o)."""
    src = pick(x, o)
    n = o.shape[0]
    c = like(src[0], cd)
    m = extreme1(src, cd)
    if not log:
        if not np.isfinite(m):
            o[:] = _NAN
            return
        s = texpstore1(x, o, m, c)
        scale1(o, like(m, 1.0 / s))         # the 2^64 of texps goes with 1/s
        return
    fin = np.isfinite(m)
    if not fin:
        m = like(m, 0.0)
    s = 0.0
    for a in range(0, n, SUB):
        b = min(a + SUB, n)
        ob = o[a:b]
        vb = block(x, ob, a, b)
        ps = like(m, 0.0)
        for j in range(ob.shape[0]):
            d = (vb[j] - m) * c
            ob[j] = d
            if fin:
                ps = radd(ps, fexps(d))
            else:
                ps = radd(ps, fexp(d))
        s += np.float64(ps)
    if fin:
        s *= EXP_UNSCALE
    ls = math.log(s)
    if fin and s >= 1.0 and s < EXACT_BELOW:    # o holds (x - m) c: the max terms are 0
        ls = log_sum_exact(o, 0.0)
    sub1(o, like(m, ls))


@hook(inline=False)
def _rows_loop(x, out, r0, r1, log, f, fs):
    """softmax / log_softmax of rows of x * c, three passes each."""
    for i in range(r0, r1):
        tsoftmax_row(rowof(x, i), out[i], log, f[i * fs])


_rows = rows_kernel("softmax_temp_rows", _rows_loop)


@hook(inline=False)
def _inner_loop(x, out, o0, o1, k0, k1, log, f, fs):
    """softmax / log_softmax of x * c along axis 1 of (outer, n, inner), vectorized along the
    inner columns [k0, k1): per-column m, s, factor and its sign."""
    src = pick(x, out)
    n = out.shape[1]
    inner = out.shape[2]
    K = k1 - k0
    m = np.empty(K, out.dtype)
    mm = np.empty(K, out.dtype)
    cf = np.empty(K, out.dtype)
    sg = np.empty(K, out.dtype)
    cc = np.empty(K, out.dtype)
    s = np.empty(K, np.float64)
    for o in range(o0, o1):
        for k in range(K):
            fv = f[(o * inner + k0 + k) * fs]
            cf[k] = fv
            sg[k] = 1.0 if fv > 0 else -1.0
            m[k] = src[o, 0, k0 + k] * sg[k]
        for j in range(1, n):
            xr = src[o, j, k0:k1]
            for k in range(K):
                m[k] = fmax(m[k], xr[k] * sg[k])
        for k in range(K):
            m[k] = m[k] * sg[k]
            if np.isfinite(m[k]):
                mm[k] = m[k]
            else:
                mm[k] = 0.0 if log else _NAN
        s[:] = 0.0
        if log:
            for j in range(n):
                xr = src[o, j, k0:k1]
                for k in range(K):
                    s[k] += np.float64(fexp((xr[k] - mm[k]) * cf[k]))
            for k in range(K):
                L = math.log(s[k])
                if np.isfinite(m[k]) and s[k] >= 1.0 and s[k] < EXACT_BELOW:
                    rest = 0.0
                    kt = 0.0
                    for j in range(n):
                        d = (src[o, j, k0 + k] - mm[k]) * cf[k]
                        if d == 0:
                            kt += 1.0
                        else:
                            rest += np.float64(fexp(d))
                    L = math.log1p(rest) if kt == 1.0 else math.log(kt + rest)
                cc[k] = L
            for j in range(n):
                orow = out[o, j, k0:k1]
                xr = block3(x, orow, o, j, k0, k1)
                for k in range(K):
                    orow[k] = (xr[k] - mm[k]) * cf[k] - cc[k]
        else:
            for j in range(n):
                orow = out[o, j, k0:k1]
                xr = block3(x, orow, o, j, k0, k1)
                for k in range(K):
                    e = texps(xr[k], mm[k], cf[k])
                    orow[k] = e
                    s[k] += np.float64(e)
            for k in range(K):
                cc[k] = 1.0 / s[k]
            for j in range(n):
                orow = out[o, j, k0:k1]
                for k in range(K):
                    orow[k] = orow[k] * cc[k]


_inner = inner_kernel("softmax_temp_inner", _inner_loop)


def _factors(factor):
    """(f, fs): the factors as a float64 array and the stride of their row index."""
    if isinstance(factor, np.ndarray):
        return factor.reshape(-1), 1
    return np.full(1, float(factor)), 0


def softmax_temp(x, out, log, factor, nthreads):
    outer, n, inner = x.shape
    src = x_arg(x, out)
    f, fs = _factors(factor)
    work = outer * n * inner
    if inner != 1:
        split_inner(_inner, src, out, (bool(log), f, fs), outer, inner, work, nthreads)
        return
    x2 = None if src is None else src.reshape(outer, n)
    split_rows(_rows, x2, out.reshape(outer, n), (bool(log), f, fs), outer, work, nthreads)


# ------------------------------------------------------------------------------ logsumexp
@cjit(**JIT)
def tlse_row(a, b, cd, want_sign):
    """(T * logsumexp(a * cd, b), sign) of one reduction (a, b: 1-D, b None: no weights)."""
    n = a.shape[0]
    c = like(a[0], cd)
    sgv = like(a[0], 1.0 if cd > 0 else -1.0)
    ninf = like(a[0], -_INF)
    m = ninf
    if b is None:
        for j in range(n):
            m = fmax(m, a[j] * sgv)
    else:
        for j in range(n):
            m = fmax(m, a[j] * sgv if b[j] != 0 else ninf)
    m = m * sgv
    k = 0.0
    t = 0.0
    if np.isfinite(m):
        if b is None:       # lse.py's blocks: partial sums of SUB elements in the dtype
            zero = like(m, 0.0)
            one = like(m, 1.0)
            for a0 in range(0, n, SUB):
                ab = a[a0:min(a0 + SUB, n)]
                pt = zero
                pk = zero
                for j in range(ab.shape[0]):
                    v = ab[j]
                    e = fexps((v - m) * c)      # the exponent rounded: lse's error is absolute
                    pt = radd(pt, e if v != m else zero)
                    pk = radd(pk, one if v == m else zero)
                t += np.float64(pt)
                k += np.float64(pk)
            t *= EXP_UNSCALE
        else:
            for j in range(n):
                v = a[j]
                bv = np.float64(b[j])
                e = bv * (np.float64(texps(v, m, c)) * EXP_UNSCALE)
                k = radd(k, bv if v == m else 0.0)
                t = radd(t, e if (v != m and bv != 0.0) else 0.0)
    T = 1.0 / cd
    if not np.isfinite(m):
        r = _NAN
        sgn = _NAN
    else:
        if t != 0:
            t = t / k
        sgn = np.sign(t + 1.0) * np.sign(k)
        if t < -1.0:
            t = -t - 2.0
        r = np.float64(m) + T * (math.log1p(t) + np.log(abs(k)))
        if not want_sign and sgn < 0:
            r = _NAN
    rf = like(m, r)
    if not np.isfinite(rf):     # the rare path: T log(S), S = sum b exp(a c) in float64
        S = 0.0
        for j in range(n):
            e = math.exp(np.float64(a[j]) * cd)
            S += e if b is None else np.float64(b[j]) * e
        sgn = np.sign(S)
        rf = like(m, T * (np.log(abs(S)) if want_sign else np.log(S)))
    return rf, like(m, sgn)


@hook(inline=False)
def _lse_rows_loop(x, out, r0, r1, b, sign, f, fs):
    """logsumexp of rows of x * c, times T."""
    for i in range(r0, r1):
        r, sg = tlse_row(x[i], rowof(b, i), f[i * fs], sign is not None)
        out[i] = r
        if sign is not None:
            sign[i] = sg


_lse_rows = rows_kernel("logsumexp_temp_rows", _lse_rows_loop)


@hook(inline=False)
def _lse_inner_loop(x, out, o0, o1, k0, k1, b, sign, f, fs):
    """logsumexp along axis 1 of (outer, n, inner), column by column."""
    inner = out.shape[1]
    for o in range(o0, o1):
        for k in range(k0, k1):
            r, sg = tlse_row(x[o, :, k], col(b, o, k), f[(o * inner + k) * fs],
                             sign is not None)
            out[o, k] = r
            if sign is not None:
                sign[o, k] = sg


_lse_inner = inner_kernel("logsumexp_temp_inner", _lse_inner_loop)


def logsumexp_temp(x, b, out, sign, factor, nthreads):
    outer, n, inner = x.shape
    f, fs = _factors(factor)
    work = outer * n * inner
    if inner != 1:
        split_inner(_lse_inner, x, out, (b, sign, f, fs), outer, inner, work, nthreads)
        return
    b2 = None if b is None else b.reshape(outer, n)
    s1 = None if sign is None else sign.reshape(outer)
    split_rows(_lse_rows, x.reshape(outer, n), out.reshape(outer), (b2, s1, f, fs), outer, work,
               nthreads)


# -------------------------------------------------------------------------- cross-entropy
@hook(inline=False)
def _ce_loop(x, g, r0, r1, target, probs, weight, ii, eps, scale, loss, f, fs):
    """Loss (and gradient) of rows of x * c: ce.py's formulas on d = (x - m) c, the gradient
    times c.  x None: in place, the logits are g (each row read before it is written)."""
    src = pick(x, g)
    C = src.shape[1]
    eC = eps / C
    one = like(src[0, 0], 1.0)
    a = like(one, 1.0 - eps)
    eCf = like(one, eC)
    wsum = np.float64(C)
    if weight is not None:
        wsum = 0.0
        for j in range(C):
            wsum += np.float64(weight[j])
    buf = np.empty(C, src.dtype)
    for i in range(r0, r1):
        xi = src[i]
        cd = f[i * fs]
        c = like(one, cd)
        ti = 0
        if target is not None:
            ti = target[i]
            if ti == ii:
                loss[i] = 0.0
                if g is not None:
                    g[i, :] = 0.0
                continue
        xt = np.float64(xi[ti])
        m = extreme1(xi, cd)
        neg = np.isfinite(m)
        if not neg:
            m = ce_shift(m)
        # the sums the loss needs besides s, read from x before the exp pass may overwrite it
        sx = 0.0
        Q = 0.0
        if probs is not None:
            for j in range(C):
                q = a * probs[i, j] + eCf
                if weight is not None:
                    q = weight[j] * q
                d = (np.float64(xi[j]) - np.float64(m)) * cd
                Q = radd(Q, np.float64(q))
                sx = radd(sx, 0.0 if d == 0 else np.float64(q) * d)
        elif eps != 0:
            for j in range(C):
                d = (np.float64(xi[j]) - np.float64(m)) * cd
                wj = 1.0 if weight is None else np.float64(weight[j])
                sx = radd(sx, 0.0 if d == 0 else wj * d)
        eb = pick(rowof(g, i), buf)
        if neg:     # scaled by 2^64 (texpstore1), the sum too: only their ratios are used
            s = texpstore1(rowof(x, i), eb, m, c)
            sl = s * EXP_UNSCALE
        else:
            s = 0.0
            for j in range(C):
                e = fexp((xi[j] - m) * c)
                eb[j] = e
                s += np.float64(e)
            sl = s
        ls = math.log(sl)
        wt = 1.0
        if probs is not None:
            loss[i] = Q * ls - sx
        else:
            wt = 1.0 if weight is None else np.float64(weight[ti])
            Q = (1.0 - eps) * wt + eC * wsum
            dt = (xt - np.float64(m)) * cd
            lv = (1.0 - eps) * (wt * (ls - dt))
            if eps != 0:
                lv += eC * (wsum * ls - sx)
            loss[i] = lv
        if g is not None:
            gi = g[i]
            sc = scale * cd
            cs = like(one, Q / s * sc)
            if probs is not None:
                fsc = like(one, sc)
                for j in range(C):
                    q = a * probs[i, j] + eCf
                    if weight is not None:
                        q = weight[j] * q
                    gi[j] = gi[j] * cs - fsc * q
            else:
                et = np.float64(gi[ti])
                q0 = like(one, eC * sc)
                for j in range(C):
                    wj = one if weight is None else weight[j]
                    gi[j] = gi[j] * cs - q0 * wj
                qt = (1.0 - eps) * wt + eC * wt
                gi[ti] = sc * (et * (Q / s) - qt)


_ce_rows = rows_kernel("cross_entropy_temp_rows", _ce_loop)


def cross_entropy_temp(logits, target, probs, weight, ignore_index, smoothing, scale, loss,
                       grad, factor, nthreads):
    N, C = logits.shape
    src = x_arg(logits, grad)
    f, fs = _factors(factor)
    work = N * C * (2 if grad is not None else 1)
    split_rows(_ce_rows, src, grad, (target, probs, weight, int(ignore_index), float(smoothing),
                                     float(scale), loss, f, fs), N, work, nthreads)
