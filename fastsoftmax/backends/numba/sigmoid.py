"""sigmoid / log_sigmoid (scipy.special.expit / log_expit) and the binary cross-entropy with
logits (loss and gradient fused): the kernels' maths and the contract functions ``sigmoid`` and
``binary_cross_entropy``.

With ``e = exp(-|x|)`` (never overflows; the cheap exp of a non-positive argument) and
``l = log1p(e)`` (``log1pe``: Goldberg's log(u) * e / (u - 1), u = 1 + e, in float64):
* sigmoid = (1 if x >= 0 else e) / (1 + e): one division, accurate in both tails;
* log_sigmoid = x - l for x < 0, -l otherwise (scipy's -0.0 at +inf);
* BCE (torch's formula, pos_weight p folded in without cancellation, weight w):
  loss = w (max(x, 0) - z x + l + (p - 1) z (l + max(-x, 0)))
       = w ((1 - z) max(x, 0) + p z max(-x, 0) + (1 + (p - 1) z) l)  (with p: no cancellation)
  grad = scale w (sigmoid(x) - z - (p - 1) z (1 - sigmoid(x)))
       = scale w ((1 - z) sigmoid(x) - p z (1 - sigmoid(x)))        (with p: no cancellation)
  over flat blocks of the (N, C) arrays (their partial sums in float64, one per block, in a
  fixed order whatever the thread count), each block walked row segment by row segment (the
  class of an element indexes pos_weight and a per-class weight).  The contract function views
  the arrays as one row when no argument depends on the class (no pos_weight, weight absent,
  scalar or elementwise): long segments whatever C is.
"""
import numpy as np

from .explog import fexpn, log64
from .intrinsics import like, pick, radd
from .jit import JIT, cjit
from .pool import MIN_CHUNK, bounds, nthreads_for, run

__all__ = ["sigmoid", "binary_cross_entropy"]


@cjit(**JIT)
def log1pe(e):
    """log1p(e) for e in [0, 1] (or NaN), float64 (vectorizable: no libm call)."""
    u = 1.0 + e
    r = log64(u) * (e / (u - 1.0))
    return e if u == 1.0 else r


@cjit(**JIT)
def _sig_range(x, out, log, lo, hi):
    """out[lo:hi] = sigmoid / log_sigmoid of src[lo:hi]; x None: src is out."""
    src = pick(x, out)
    xs = src[lo:hi]
    os = out[lo:hi]
    one = like(os[0], 1.0)
    for i in range(os.shape[0]):
        v = xs[i]
        e = fexpn(-abs(v))
        if log:
            lp = like(v, log1pe(np.float64(e)))
            os[i] = v - lp if v < 0 else -lp
        else:
            os[i] = (one if v >= 0 else e) / (one + e)


def _split(total, nthreads, work_per_element):
    nt = nthreads_for(total * work_per_element, nthreads, max(1, total // MIN_CHUNK))
    if nt == 1:
        return 1, [0, total]
    k = max(nt, min(nt * 8, total // MIN_CHUNK))
    return nt, bounds(0, total, k, align=64)


def sigmoid(x, out, log, nthreads):
    n = out.shape[0]
    src = None if x.__array_interface__["data"][0] == out.__array_interface__["data"][0] else x
    log = bool(log)
    nt, b = _split(n, nthreads, 4 if log else 2)
    if nt == 1:
        _sig_range(src, out, log, 0, n)
        return
    run([(lambda lo=b[i], hi=b[i + 1]: _sig_range(src, out, log, lo, hi))
         for i in range(len(b) - 1) if b[i] < b[i + 1]], nt)


# ----------------------------------------------------------------------------- BCE
@cjit(**JIT)
def _bce_blocks(x, grad, z, w, pw, scale, partial, loss, b0, b1):
    """Blocks [b0, b1) of the flat (N, C) arrays: partial[b] = sum of the block's loss; loss and
    grad (when not None) written.  x None: the logits live in grad (in place)."""
    src = pick(x, grad)
    N, C = src.shape
    total = N * C
    nb = partial.shape[0]
    B = (total + nb - 1) // nb
    wrows = 1 if w is None else w.shape[0]
    wcol = False if w is None else w.shape[1] > 1
    for b in range(b0, b1):
        e = b * B
        e1 = min(total, e + B)
        s = 0.0
        while e < e1:
            r = e // C
            j0 = e - r * C
            j1 = min(C, j0 + (e1 - e))
            xs = src[r, j0:j1]
            zs = z[r, j0:j1]
            L = j1 - j0
            one = like(xs[0], 1.0)
            zero = like(xs[0], 0.0)
            sc = like(xs[0], scale)
            if w is not None:
                wr = w[r if wrows > 1 else 0]
                ws = wr[j0:j1] if wcol else wr[0:1]
            if pw is not None:
                ps = pw[j0:j1]
            for k in range(L):
                v = xs[k]
                t = zs[k]
                ev = fexpn(-abs(v))
                lp = like(v, log1pe(np.float64(ev)))
                lo = max(v, zero) - t * v + lp
                if pw is not None:      # regrouped: no two terms cancel (the C kernel's form);
                    # an infinite logit keeps the plain sum (its inf / NaN: the reference's)
                    if v - v == 0:
                        lo = ((one - t) * max(v, zero) + ps[k] * t * max(-v, zero)
                              + (one + (ps[k] - one) * t) * lp)
                    else:
                        lo += (ps[k] - one) * t * (lp + max(-v, zero))
                if w is not None:
                    wk = ws[k] if wcol else ws[0]
                    lo = lo * wk
                s = radd(s, np.float64(lo))
                if loss is not None:
                    loss[r, j0 + k] = lo
                if grad is not None:
                    inv = one / (one + ev)
                    sg = (one if v >= 0 else ev) * inv
                    if pw is not None:  # (1 - z) sig - p z (1 - sig): no cancellation
                        gk = (one - t) * sg - ps[k] * t * ((ev if v >= 0 else one) * inv)
                    else:
                        gk = sg - t
                    if w is not None:
                        gk = gk * wk
                    grad[r, j0 + k] = gk * sc
            e += L
        partial[b] = s


def binary_cross_entropy(logits, target, weight, pos_weight, scale, partial, loss, grad,
                         nthreads):
    N, C = logits.shape
    src = logits
    if grad is not None and (logits.__array_interface__["data"][0]
                             == grad.__array_interface__["data"][0]):
        src = None
    if pos_weight is None and (weight is None or weight.shape[1] == C or weight.size == 1) \
            and (weight is None or weight.shape[0] == N or weight.size == 1) and N > 1:
        # nothing depends on the class: one long row
        f = (lambda a: None if a is None else a.reshape(1, N * C))
        src, grad2, target2, loss2 = f(src), f(grad), f(target), f(loss)
        weight2 = weight if weight is None or weight.size == 1 else f(weight)
    else:
        grad2, target2, loss2, weight2 = grad, target, loss, weight
    nb = partial.shape[0]
    nt = nthreads_for(N * C * (6 if grad is not None else 4), nthreads, nb)
    args = (src, grad2, target2, weight2, pos_weight, float(scale), partial, loss2)
    if nt == 1:
        _bce_blocks(*args, 0, nb)
        return
    b = bounds(0, nb, min(nb, nt * 8))
    run([(lambda b0=b[i], b1=b[i + 1]: _bce_blocks(*args, b0, b1))
         for i in range(len(b) - 1) if b[i] < b[i + 1]], nt)
