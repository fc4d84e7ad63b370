"""The NumPy reference backend: the oracle for the compiled backends, and the fallback.

It implements the kernel contract of docs/DESIGN.md for every dtype the API accepts (float16/32/64,
longdouble, complex) with whole-array NumPy operations, written for clarity and accuracy rather than
speed:

* float16/32/64 are computed in float64, longdouble in longdouble, complex in complex128 (or
  clongdouble), and cast to the output at the end;
* softmax / log_softmax / logsumexp follow scipy.special's algorithm step by step (scipy 1.17,
  ``_logsumexp.py``), so NaN/inf results and result signs are scipy's;
* cross_entropy follows PyTorch's formula (log_softmax, then nll and the smoothing term).

The reduced axis is axis 1 of the ``(outer, n, inner)`` arrays; ``method`` and ``nthreads`` are
accepted for the contract and ignored.

``factor`` (temperature and base, docs/training.md): c = 1/T of each row, a float or
an (outer, inner) float64 array ((N,) for cross_entropy).  The reference shifts each real row by
its extreme m (the max where c > 0, the min where c < 0; 0 where that is not finite) and runs
the plain op on (x - m) * c, plainly: softmax and cross_entropy are unchanged by the shift,
logsumexp adds m back (m + T * lse((x - m) * c)); cross_entropy's gradient is multiplied by c.
"""
from __future__ import annotations

import numpy as np

__all__ = ["softmax", "logsumexp", "cross_entropy", "exp", "log"]


def _wide(dtype: np.dtype) -> np.dtype:
    """The dtype the reference computes in for arrays of ``dtype``."""
    if dtype.kind == "c":
        return np.result_type(dtype, np.complex128)
    return np.result_type(dtype, np.float64)


def _scaled(xw, scale, axis=1):
    """((x - m) * c, m, c) of the wide array xw (scale: a float or per-row array, broadcast
    along ``axis``); complex arrays are multiplied as they are (m = 0)."""
    c = np.asarray(scale, np.float64)
    if c.ndim:
        c = np.expand_dims(c, axis)
    with np.errstate(all="ignore"):
        if xw.dtype.kind == "c":
            return xw * c, np.zeros(()), c
        hi = np.max(xw, axis=axis, keepdims=True)
        lo = np.min(xw, axis=axis, keepdims=True)
        m = np.where(c > 0, hi, lo)
        m = np.where(np.isfinite(m), m, 0)
        return (xw - m) * c, m, c


def softmax(x, out, log, method="auto", nthreads=1, factor=None):
    xw = x.astype(_wide(x.dtype))
    if factor is not None:
        xw = _scaled(xw, factor)[0]
    with np.errstate(all="ignore"):
        m = np.max(xw, axis=1, keepdims=True)
        if log:
            m = np.where(np.isfinite(m), m, 0)
            t = xw - m
            e = np.exp(t)
            s = np.sum(e, axis=1, keepdims=True)
            ls = np.log(s)
            if xw.dtype.kind == "f":
                # a dominant maximum (1 <= s < 2: one term is exp(0) = 1, the rest below 1):
                # log(s) = log1p(rest), the rest summed without the max term, keeps the digits
                # that rounding s to 1 + d loses -- eps / (2 d) relative, so a bound of
                # 1 + 2^-10 would leave up to 512 ulp in the dominant entry (scipy issue 19521)
                near = (s >= 1) & (s < 2)
                if near.any():
                    rest = np.sum(np.where(t == 0, 0, e), axis=1, keepdims=True)
                    ls = np.where(near, np.log1p(rest), ls)
            r = t - ls
        else:
            e = np.exp(xw - m)
            r = e / np.sum(e, axis=1, keepdims=True)
        out[...] = r    # a huge 1/T may overflow the dtype: -inf, as the kernels


def _max_real(a):
    """(value, mask) of one element per row with the largest real part (scipy's choice)."""
    if a.dtype.kind != "c":
        a_max = np.max(a, axis=1, keepdims=True)
        return a_max, a == a_max
    re = a.real
    hit = re == np.max(re, axis=1, keepdims=True)
    first = np.argmax(hit, axis=1)[:, None, :]
    mask = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(mask, first, True, axis=1)
    return np.take_along_axis(a, first, axis=1), mask


def _wrap_radians(x):
    wrapped = -((-x + np.pi) % (2 * np.pi) - np.pi)
    return np.where(np.abs(x) < np.pi, x, wrapped)


def _lse_shifted(a, b, want_sign):
    """scipy's accurate path: the max terms kept out of the sum, log1p of the rest."""
    if b is not None:
        a = np.where(b == 0, -np.inf, a)
    a_max, i_max = _max_real(a)
    a = np.where(i_max, -np.inf, a)
    k = np.sum(i_max if b is None else b * i_max, axis=1, keepdims=True, dtype=a.dtype)
    e = np.exp(a - a_max) if b is None else b * np.exp(a - a_max)
    s = np.sum(e, axis=1, keepdims=True)
    s = np.where(s == 0, s, s / k)
    sgn = np.sign(s + 1) * np.sign(k)
    if a.dtype.kind != "c":
        s = np.where(s < -1, -s - 2, s)
        k = np.abs(k)
    else:
        sgn = sgn * np.exp(1j * a_max.imag)
    r = np.log1p(s) + np.log(k) + a_max
    if want_sign:
        r = r.real
    elif a.dtype.kind != "c":
        r = np.where(sgn < 0, np.nan, r)
    return r, sgn


def logsumexp(x, b, out, sign, nthreads=1, factor=None):
    wide = _wide(x.dtype if b is None else np.result_type(x, b))
    a = x.astype(wide)
    bw = None if b is None else b.astype(wide)
    want_sign = sign is not None
    if factor is not None:
        if bw is not None and wide.kind != "c":  # the extreme over the unmasked terms only
            neg = np.asarray(factor)[:, None, :] < 0 if np.ndim(factor) else factor < 0
            a = np.where(bw == 0, np.where(neg, np.inf, -np.inf), a)
        a, m, c = _scaled(a, factor)
        r = np.empty(out.shape, wide)
        logsumexp(a, bw, r, sign, nthreads)
        rows = (a.shape[0], 1, a.shape[2])
        with np.errstate(all="ignore"):   # m + T * lse((x - m) / T)
            out[...] = np.broadcast_to(m, rows)[:, 0, :] + r / np.broadcast_to(c, rows)[:, 0, :]
        return
    with np.errstate(all="ignore"):
        # the direct formula, used where the shifted one is not finite (C99 exp/log rules)
        direct = np.sum(np.exp(a) if bw is None else bw * np.exp(a), axis=1, keepdims=True)
        r, sgn = _lse_shifted(a, bw, want_sign)
        finite = np.isfinite(r)
        r = np.where(finite, r, np.log(np.abs(direct) if want_sign else direct))
        if want_sign:
            sgn = np.where(finite, sgn, np.sign(direct))
    if wide.kind == "c":
        if want_sign:
            sgn = sgn.real + 1j * _wrap_radians(sgn.imag)
        else:
            r = r.real + 1j * _wrap_radians(r.imag)
    out[...] = r[:, 0, :]
    if want_sign:
        sign[...] = sgn[:, 0, :]


def cross_entropy(logits, target, probs, weight, ignore_index, smoothing, scale, loss, grad,
                  nthreads=1, factor=None):
    wide = _wide(logits.dtype)
    x = logits.astype(wide)
    if factor is not None:   # the loss of x * c; its gradient carries c (chain rule)
        x, _, c = _scaled(x, factor)
        scale = scale * c
    n_rows, n_cls = x.shape
    w = np.ones(n_cls, wide) if weight is None else weight.astype(wide)
    e = wide.type(smoothing)
    rows = np.arange(n_rows)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        # (x - m) - log s, not x - (m + log s): the latter cancels where |m| >> log s (atheris:
        # equal logits of -6e8 gave log 4 to 3e-9 relative in float64)
        logp = (x - m) - np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))
        if target is not None:
            valid = target != ignore_index
            t = np.where(valid, target, 0)
            # torch: (1 - e) * nll_loss + e / C * smoothing term, ignored rows zero
            nll = -w[t] * logp[rows, t]
            smooth = -(logp * w).sum(axis=1) if smoothing > 0 else 0.0
            per_row = np.where(valid, (1 - e) * nll + (e / n_cls) * smooth, 0)
            q = np.broadcast_to((e / n_cls) * w, x.shape).copy()
            q[rows, t] += (1 - e) * w[t]
            q[~valid] = 0
        else:
            q = w * ((1 - e) * probs.astype(wide) + e / n_cls)
            per_row = -(logp * q).sum(axis=1)
        loss[...] = per_row
        if grad is not None:
            g = scale * (np.exp(logp) * q.sum(axis=1, keepdims=True) - q)
            if target is not None:
                g[~valid] = 0
            grad[...] = g


def exp(x, out):
    with np.errstate(all="ignore"):
        out[...] = np.exp(x.astype(_wide(x.dtype)))


def log(x, out):
    with np.errstate(all="ignore"):
        out[...] = np.log(x.astype(_wide(x.dtype)))


# ------------------------------------------------------------------------ training ops
# (docs/training.md: the backward passes, sigmoid / log_sigmoid, binary cross-entropy)
__all__ += ["softmax_backward", "sigmoid", "binary_cross_entropy"]


def softmax_backward(grad, y, out, log, nthreads=1):
    """softmax: y * (grad - sum(grad * y)); log_softmax: grad - exp(y) * sum(grad), over axis 1
    (torch's _softmax_backward_data / _log_softmax_backward_data)."""
    wide = _wide(np.result_type(grad, y))
    g = grad.astype(wide)
    yw = y.astype(wide)
    with np.errstate(all="ignore"):
        if log:
            s = np.sum(g, axis=1, keepdims=True)
            # exp(y) * s where s == 0: 0 for every y below +inf (exp(y) exact, not its float64
            # overflow for y > 709.78, outside log_softmax's range), NaN for y NaN or +inf
            r = g - np.where(s == 0, np.where(yw < np.inf, 0, np.nan), np.exp(yw) * s)
        else:
            r = yw * (g - np.sum(g * yw, axis=1, keepdims=True))
    out[...] = r


def _log1pexp_neg_abs(x):
    """log1p(exp(-|x|)) (NaN for NaN)."""
    return np.log1p(np.exp(-np.abs(x)))


def sigmoid(x, out, log, nthreads=1):
    """scipy.special.expit (log False) / log_expit (log True), elementwise, 1-D."""
    xw = x.astype(_wide(x.dtype))
    with np.errstate(all="ignore"):
        if log:   # x - log1p(exp(x)) below 0, -log1p(exp(-x)) above (-0.0 at +inf, as scipy)
            sp = _log1pexp_neg_abs(xw)
            r = np.where(xw < 0, xw - sp, -sp)
        else:     # 1 / (1 + exp(-x)) for x >= 0, exp(x) / (1 + exp(x)) below
            e = np.exp(-np.abs(xw))
            r = np.where(xw >= 0, 1, e) / (1 + e)
    out[...] = r


def binary_cross_entropy(logits, target, weight, pos_weight, scale, partial, loss, grad,
                         nthreads=1):
    """torch.nn.functional.binary_cross_entropy_with_logits, elementwise over (N, C):
    l = max(x, 0) - z x + log1p(exp(-|x|)) + (pw - 1) z (log1p(exp(-|x|)) + max(-x, 0)),
    times w; partial[b] sums l over the b-th of len(partial) equal flat blocks; loss gets l,
    grad gets scale * w * (sigmoid(x) - z - (pw - 1) z (1 - sigmoid(x))), with pw computed as
    scale * w * ((1 - z) sigmoid(x) - pw z (1 - sigmoid(x)))."""
    wide = _wide(logits.dtype)
    x = logits.astype(wide)
    z = target.astype(wide)
    with np.errstate(all="ignore"):
        sp = _log1pexp_neg_abs(x)
        l = np.maximum(x, 0) - z * x + sp
        e = np.exp(-np.abs(x))
        sig = np.where(x >= 0, 1, e) / (1 + e)
        g = sig - z
        if pos_weight is not None:
            pw1 = pos_weight.astype(wide) - 1
            l = l + pw1 * z * (sp + np.maximum(-x, 0))
            # regrouped, (1 - z) sigmoid(x) - pw z (1 - sigmoid(x)): no cancellation, which a
            # large weight would turn into an error of any sign (the kernels' form too)
            g = (1 - z) * sig - pos_weight.astype(wide) * z * (np.where(x >= 0, e, 1) / (1 + e))
        if weight is not None:
            w = weight.astype(wide)
            l = l * w
            g = g * w
        flat = l.reshape(-1)
        nb = partial.shape[0]
        B = -(-flat.size // nb)
        for b in range(nb):
            partial[b] = np.sum(flat[b * B:(b + 1) * B], dtype=np.float64)
        if loss is not None:
            loss[...] = l
        if grad is not None:
            grad[...] = scale * g
def sample_candidates(u, cdf, range_max, seen, out, state):
    """Candidate sampling by inverse CDF, resumable (kernel contract, docs/DESIGN.md): draw i
    maps the uniform u_i to the class ``floor(u_i * range_max)`` (cdf None) or to the smallest
    c with ``u_i < cdf[c]`` (clamped to range_max - 1).  ``seen`` None: every draw fills the next
    slot of ``out``; else a class not yet marked in ``seen`` is taken and marked, a marked one is
    rejected.  ``state`` = [filled, tries] continues across calls; stops when ``out`` is full."""
    filled, tries = int(state[0]), int(state[1])
    need = out.shape[0] - filled
    if need <= 0 or u.shape[0] == 0:
        return
    if cdf is None:
        c = np.floor(u * np.float64(range_max)).astype(np.int64)
    else:
        c = np.searchsorted(cdf, u, side="right").astype(np.int64)
    np.minimum(c, range_max - 1, out=c)
    if seen is None:
        k = min(need, c.shape[0])
        out[filled:filled + k] = c[:k]
        state[0], state[1] = filled + k, tries + k
        return
    # unique: the first occurrence of each class in this block, in draw order, unless seen before
    vals, first = np.unique(c, return_index=True)
    keep = seen[vals] == 0
    first = np.sort(first[keep])
    take = first[:need]
    out[filled:filled + take.shape[0]] = c[take]
    seen[c[take]] = 1
    used = int(take[-1]) + 1 if take.shape[0] == need else c.shape[0]
    state[0], state[1] = filled + take.shape[0], tries + used


# ------------------------------------------------------------------------ masks (where=)
# x, out (outer, n) rows; mask (mrows, n) uint8 (nonzero: the entry takes part), row i using
# mask row rowmap[i]; scale None or (outer,) float64 multipliers of the rows.  The plain
# reference on the masked-in entries: masked-out entries become -inf (no term of the max or the
# sum), then the results there are set to 0 / -inf (docs/DESIGN.md).
__all__ += ["softmax_masked", "logsumexp_masked", "softmax_backward_masked"]


def _masked_rows(x, mask, rowmap, scale):
    """(v, mk): the rows x * scale in the reference's dtype with -inf at the masked-out
    entries, and the (outer, n) boolean mask."""
    mk = mask[rowmap] != 0
    v = x.astype(_wide(x.dtype))
    if scale is not None:
        v = v * scale[:, None]
    return np.where(mk, v, -np.inf), mk


def softmax_masked(x, mask, rowmap, out, log, scale=None, nthreads=1):
    v, mk = _masked_rows(x, mask, rowmap, scale)
    r = np.empty(v.shape[:1] + (v.shape[1], 1), v.dtype)
    softmax(v[:, :, None], r, log)
    out[...] = np.where(mk, r[:, :, 0], -np.inf if log else 0)


def logsumexp_masked(x, mask, rowmap, out, sign, scale=None, nthreads=1):
    """scipy's logsumexp of the masked-in entries: b = the mask (b == 0 masks, as scipy)."""
    v, mk = _masked_rows(x, mask, rowmap, scale)
    r = np.empty((v.shape[0], 1), v.dtype)
    sg = None if sign is None else np.empty_like(r)
    logsumexp(v[:, :, None], mk.astype(v.dtype)[:, :, None], r, sg)
    out[...] = r[:, 0]
    if sign is not None:
        sign[...] = sg[:, 0]


def softmax_backward_masked(grad, y, mask, rowmap, out, log, nthreads=1):
    """softmax_backward over the masked-in entries (the others' grad and y ignored), 0 at the
    masked-out ones."""
    mk = mask[rowmap] != 0
    wide = _wide(np.result_type(grad, y))
    g = np.where(mk, grad.astype(wide), 0)
    yw = np.where(mk, y.astype(wide), -np.inf if log else 0)
    r = np.empty(g.shape + (1,), wide)
    softmax_backward(g[:, :, None], yw[:, :, None], r, log)
    out[...] = np.where(mk, r[:, :, 0], 0)
