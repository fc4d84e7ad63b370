"""Cross-entropy, loss and gradient fused: the kernels' maths and the contract function
``cross_entropy``.

Row i (docs/DESIGN.md): q_j the target weights, Q = sum q, m = max(x) (not finite: rows.ce_shift),
s = sum exp(x - m) in float64; loss = Q log(s) - sum q (x - m); grad = scale * (exp(x - m) Q / s
- q).
* rows (``_rows_loop``): max; (smoothing: sum w (x - m)); exp(x - m) stored in grad while summing s
  (float32 partial sums with the max terms counted apart, ``expstore1x``: log(s) keeps its digits
  when one class dominates); the gradient in place over the stored exps.  The logits are read 2 times (3 with smoothing), the
  gradient row written once and rescaled once in cache.  Without ``grad`` the exps go to a scratch
  block of BLOCK elements that stays in L1: the same code in the same blocks runs with and
  without grad, so the loss alone equals the fused loss bit for bit.
* class-index targets, C <= SMALL_N: groups of rows, one flat exp loop and one vectorized log
  loop per group (rows.small_rows_kernel); the same formulas.
* ``grad`` may be ``logits`` (in place: x None).
"""
import math

import numpy as np

from .explog import fexp, fexpn, log64
from .intrinsics import like, pick, radd
from .jit import JIT, cjit, hook
from .pool import SMALL_COST, split_rows
from .temperature import cross_entropy_temp
from .rows import (BLOCK, SMALL_N, ce_shift, exp_shifted, expstore1x, max1, rows_kernel,
                   scale1, small_rows_kernel, x_arg)

__all__ = ["cross_entropy"]


@cjit(**JIT)
def _wdiff_sum(v, w, m):
    """sum_j w_j * (v_j - m) in float64 (w None: all ones); an entry at the max adds 0 whatever
    its weight (an infinite weight there: no 0 * inf, the loss gets its inf from W log s)."""
    s = 0.0
    m64 = np.float64(m)
    for j in range(v.shape[0]):
        wj = 1.0 if w is None else np.float64(w[j])
        d = np.float64(v[j]) - m64
        s = radd(s, (0.0 if d == 0.0 else wj) * d)
    return s


@cjit(**JIT)
def _probs_pass(x, g, p, w, a, m, eps, eC, neg):
    """Probability targets, one block of a row starting at column a: g = exp(src - m); returns
    (s, Q, qx) with q_j = w_j ((1 - eps) p_j + eps / C), Q = sum q, qx = sum q (x - m).
    x None: src is g.  w is the whole weight vector (or None)."""
    src = pick(x, g)
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
        s = radd(s, np.float64(ev))
        wj = 1.0 if w is None else np.float64(w[a + j])
        q = wj * ((1.0 - eps) * np.float64(p[j]) + eC)
        Q = radd(Q, q)
        d = np.float64(v) - m64
        qx = radd(qx, (0.0 if d == 0.0 else q) * d)   # as _wdiff_sum
    return s, Q, qx


@cjit(**JIT)
def _target_loss(eps, eC, wt, sw, dt, ls, wd):
    """Q log(s) - sum q (x - m) of a class-index target, grouped as the reference:
    (1 - eps) w_t (log s - (x_t - m)) + eps/C (W log s - sum w (x - m)), the smoothing term only
    when eps > 0 (so an infinite weight meets no 0 * inf without smoothing)."""
    r = (1.0 - eps) * (wt * (ls - dt))
    if eps > 0.0:
        r += eC * (sw * ls - wd)
    return r


@cjit(**JIT)
def _weight_sum(w, C):
    """sum of the C class weights in float64 (w None: all ones)."""
    if w is None:
        return np.float64(C)
    sw = 0.0
    for j in range(C):
        sw += np.float64(w[j])
    return sw


# ------------------------------------------------------------------------------------ rows
@hook(inline=False)
def _rows_loop(x, grad, r0, r1, target, probs, weight, ignore_index, eps, scale, loss):
    """Cross-entropy of rows [r0, r1): loss[i], and grad[i] when grad is not None.  x None: the
    logits live in grad."""
    src = pick(x, grad)
    C = src.shape[1]
    eC = eps / C
    sw = _weight_sum(weight, C)
    # without a gradient the exps go to a scratch block of BLOCK elements that stays in L1:
    # the same code, in the same blocks, runs with and without grad, so the loss alone equals
    # the fused loss bit for bit
    scratch = np.empty(min(C, BLOCK), src.dtype)
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
        m = max1(xi)
        neg = np.isfinite(m)
        if not neg:
            m = ce_shift(m)
        m64 = np.float64(m)
        s = 0.0
        qx = 0.0     # sum_j q_j * (x_j - m)
        Q = 0.0      # sum_j q_j
        wt = 0.0
        dt = 0.0     # x_t - m
        wd = 0.0     # sum_j w_j * (x_j - m), with smoothing
        if target is not None:
            wt = 1.0 if weight is None else np.float64(weight[t])
            dt = np.float64(xi[t]) - m64
            if eps > 0.0:   # before the exps overwrite an in-place row
                wd = _wdiff_sum(xi, weight, m)
            Q = (1.0 - eps) * wt + eC * sw
            for a in range(0, C, BLOCK):
                b = min(a + BLOCK, C)
                if grad is None:
                    s += expstore1x(xi[a:b], scratch[:b - a], m, neg)
                elif x is None:
                    s += expstore1x(None, dst[a:b], m, neg)
                else:
                    s += expstore1x(xi[a:b], dst[a:b], m, neg)
        if probs is not None:
            for a in range(0, C, BLOCK):
                b = min(a + BLOCK, C)
                pa = probs[i, a:b]
                if grad is None:
                    ds, dQ, dqx = _probs_pass(xi[a:b], scratch[:b - a], pa, weight, a, m, eps, eC,
                                              neg)
                elif x is None:
                    ds, dQ, dqx = _probs_pass(None, dst[a:b], pa, weight, a, m, eps, eC, neg)
                else:
                    ds, dQ, dqx = _probs_pass(xi[a:b], dst[a:b], pa, weight, a, m, eps, eC, neg)
                s += ds
                Q += dQ
                qx += dqx
        if target is not None:
            loss[i] = _target_loss(eps, eC, wt, sw, dt, math.log(s), wd)
        else:
            loss[i] = Q * math.log(s) - qx
        if grad is not None:
            gi = grad[i]
            c = like(m, Q / s * scale)
            if target is not None:
                et = np.float64(gi[t])
                if eps == 0.0:
                    scale1(gi, c)
                else:
                    # scale * (p_j Q - q_j), grouped as the reference: scale distributed over
                    # the difference meets inf - inf when scale is inf (mean over weight 0)
                    cq = like(m, Q / s)
                    g0 = like(m, eC)
                    sc = like(m, scale)
                    if weight is None:
                        for j in range(C):
                            gi[j] = sc * (gi[j] * cq - g0)
                    else:
                        for j in range(C):
                            gi[j] = sc * (gi[j] * cq - g0 * weight[j])
                qt = (1.0 - eps) * wt + eC * wt
                gi[t] = scale * (et * (Q / s) - qt)
            if probs is not None:
                pi = probs[i]
                e1 = like(m, 1.0 - eps)
                eCd = like(m, eC)
                sc = like(m, scale)
                for j in range(C):
                    wj = like(m, 1.0) if weight is None else weight[j]
                    gi[j] = gi[j] * c - sc * (wj * (e1 * pi[j] + eCd))


_rows = rows_kernel("ce_rows", _rows_loop)


# ---------------------------------------------------------------------- rows: many short rows
@hook
def _small_setup(src, R, target, weight, ignore_index, eps, scale, loss):
    """(sum of the weights, eps / C, log s of each row of a group)."""
    C = src.shape[1]
    return _weight_sum(weight, C), eps / C, np.empty(R, np.float64)


@hook
def _small_finish(x, grad, ws, base, rows, m, k, e, s, target, weight, ignore_index, eps,
                  scale, loss):
    """Cross-entropy of class-index targets, C <= SMALL_N: the logs of a group in one vectorized
    loop, then each row's loss and gradient, the formulas of the long rows."""
    sw, eC, lg = ws
    src = pick(x, grad)
    C = src.shape[1]
    for r in range(rows):
        lg[r] = log64(s[r])
    for r in range(rows):
        i = base + r
        t = target[i]
        if t == ignore_index:
            loss[i] = 0.0
            if grad is not None:
                grad[i, :] = 0.0
            continue
        mi = m[r]       # src[i]: still the logits in place, grad rows up to i - 1 are written
        wt = 1.0 if weight is None else np.float64(weight[t])
        dt = np.float64(src[i, t]) - np.float64(mi)
        wd = 0.0
        if eps > 0.0:
            wd = _wdiff_sum(src[i], weight, mi)
        Q = (1.0 - eps) * wt + eC * sw
        sr = s[r]
        loss[i] = _target_loss(eps, eC, wt, sw, dt, lg[r], wd)
        if grad is not None:
            c = Q / sr
            for j in range(C):      # scale * (p_j Q - q_j), grouped as the reference (_rows_loop)
                wj = 1.0 if weight is None else np.float64(weight[j])
                grad[i, j] = scale * (np.float64(e[r * C + j]) * c - eC * wj)
            qt = (1.0 - eps) * wt + eC * wt
            grad[i, t] = scale * (np.float64(e[r * C + t]) * (Q / sr) - qt)


_small = small_rows_kernel("ce_small", ce_shift, exp_shifted, _small_finish, _small_setup)


# ------------------------------------------------------------------------- the contract
def cross_entropy(logits, target, probs, weight, ignore_index, smoothing, scale, loss, grad,
                  nthreads, factor=None):
    if factor is not None:      # temperature / base: temperature.py's kernels
        cross_entropy_temp(logits, target, probs, weight, ignore_index, smoothing, scale, loss,
                           grad, factor, nthreads)
        return
    N, C = logits.shape
    src = x_arg(logits, grad)
    work = N * C * (2 if grad is not None else 1) * (SMALL_COST if C <= SMALL_N else 1)
    ii, eps, sc = int(ignore_index), float(smoothing), float(scale)
    if target is not None and C <= SMALL_N:
        split_rows(_small, src, grad, (target, weight, ii, eps, sc, loss), N, work, nthreads)
    else:
        split_rows(_rows, src, grad, (target, probs, weight, ii, eps, sc, loss), N, work,
                   nthreads)
