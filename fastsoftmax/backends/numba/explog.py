"""Vectorizable exp and log for the kernels (float32 and float64).

Design
------
Numba lowers ``math.exp`` / ``np.exp`` inside a loop to a scalar libm call, which stops LLVM's loop
vectorizer.  The functions here are plain arithmetic, so a loop that calls them (they are inlined by
LLVM) vectorizes to AVX2 / AVX-512 code.

exp(x), Cody-Waite range reduction:
    n = rint(x * log2(e))          (x clamped to [lo, hi] first, NaN passes through the clamp;
                                    rounded by adding and subtracting 1.5 * 2^23 (2^52), n then
                                    sits in the low mantissa bits: no float -> int conversion)
    r = (x - n*ln2_hi) - n*ln2_lo  (ln2_hi has trailing zero bits, so n*ln2_hi is exact)
    p = 1 + r + r^2 * P(r)         (P: degree 5 (float32, Cephes expf) / degree 9 (float64,
                                    Chebyshev fit, relative error < 1.3e-17))
    exp(x) = p * 2^n1 * 2^n2       (n1 = n >> 1, n2 = n - n1, both built from exponent bits, so
                                    subnormal results and overflow to +inf come out of the last product)
  float32 works in float32 (8 lanes per AVX2 register, 16 with AVX-512), float64 in float64.
  exp(0) == 1 exactly (n = 0, r = 0), exp(-inf) == 0 (clamped to lo), exp(+inf) == +inf (clamped to
  hi, whose 2^n overflows), NaN propagates through r and p.  The hot loops' variant for
  arguments <= 0 (``fexps``, ``fexpn``, ``fexpd``: every x - max) is described below.

log(x), fdlibm / musl reduction:
    x = 2^k * (1 + f), 1 + f in [sqrt(2)/2, sqrt(2)),   s = f / (2 + f)
    log(x) = k*ln2_hi + (f - hfsq + s*(hfsq + R(s^2)) + k*ln2_lo)
  float64 only; float32 log converts to float64 and rounds back (log is called once per row, it is
  not on the hot path).  Subnormal inputs are scaled by 2^54 first.  log(0) = -inf, log(<0) = NaN,
  log(+inf) = +inf, log(NaN) = NaN.

Fast-math: only ``contract`` (fused multiply-add) is allowed here; reassociation would delete
the rounding trick and the Cody-Waite split, nnan / ninf would break the special cases.

Accuracy (the contract of docs/DESIGN.md, checked by tests/test_elementary.py: within 2 ULP of
the correctly rounded result, special values exact).  Measured: float32 exp, exhaustive over all
float32 inputs against float64 libm, max 1.01 ULP (both variants), float32 log 0.50 ULP; float64
against long double, exp 1.06 ULP, log 0.79 ULP (2M log-uniform + 3M uniform samples).
"""
import numpy as np
from numba import types
from numba.extending import overload

from .intrinsics import f64_as_i64, i64_as_f64, pick, pow2_of_kf, scale_by_kf
from .jit import JIT, cjit

__all__ = ["fexp", "fexpd", "fexpdx", "fexpn", "fexps", "fexpsd", "EXP_SCALE", "EXP_UNSCALE",
           "flog", "exp32", "exp64", "exp32d", "log32", "log64", "exp_apply", "expn_apply",
           "expd_apply", "log_apply"]

_EXP_JIT = dict(error_model="numpy", fastmath={"contract"})   # FMA allowed, nothing else


# ----------------------------------------------------------------------------- exp
_F = np.float32
_E32_LO = _F(-104.0)        # exp(-104) < 2^-150: rounds to 0
_E32_HI = _F(89.0)          # exp(89) > FLT_MAX: overflows to inf
_E32_LOG2E = _F(1.44269504088896341)
_E32_C1 = _F(0.693359375)
_E32_C2 = _F(-2.12194440e-4)
_E32_P0 = _F(1.9875691500e-4)
_E32_P1 = _F(1.3981999507e-3)
_E32_P2 = _F(8.3334519073e-3)
_E32_P3 = _F(4.1665795894e-2)
_E32_P4 = _F(1.6666665459e-1)
_E32_P5 = _F(5.0000001201e-1)
_F32_ONE = _F(1.0)
_F32_MAGIC = _F(12582912.0)     # 1.5 * 2^23: x + magic - magic rounds x to an integer
_F32_ZERO = _F(0.0)


@cjit(**_EXP_JIT)
def _exp32_poly(xc, err):
    """(p, kf) with exp(xc + err) = p * 2^n, n held in kf's low bits; xc already clamped."""
    kf = xc * _E32_LOG2E + _F32_MAGIC    # rounds to an integer n held in kf's low bits
    nf = kf - _F32_MAGIC
    r = xc - nf * _E32_C1
    r = r - nf * _E32_C2
    r = r + err
    p = _E32_P0 * r + _E32_P1
    p = p * r + _E32_P2
    p = p * r + _E32_P3
    p = p * r + _E32_P4
    p = p * r + _E32_P5
    p = p * (r * r) + r + _F32_ONE
    return p, kf


@cjit(**_EXP_JIT)
def _exp32_core(x, err):
    """exp(x + err) for float32 x and a tiny correction err (|err| <= ulp(x)), float32.
    err is dropped where x is clamped (there it may be inf - inf = NaN)."""
    xc = x
    if xc < _E32_LO:
        xc = _E32_LO
        err = _F32_ZERO
    if xc > _E32_HI:
        xc = _E32_HI
        err = _F32_ZERO
    p, kf = _exp32_poly(xc, err)
    return scale_by_kf(p, kf)


@cjit(**_EXP_JIT)
def exp32(x):
    """exp of a float32 scalar, in float32 arithmetic (vectorizable)."""
    return _exp32_core(x, _F32_ZERO)


_E64_LO = -746.0            # exp(-746) < 2^-1075: rounds to 0
_E64_HI = 710.0             # exp(710) > DBL_MAX
_E64_LOG2E = 1.4426950408889634
_E64_MAGIC = 6755399441055744.0     # 1.5 * 2^52
_E64_LN2HI = 6.93147180369123816490e-01     # 0x3fe62e42fee00000
_E64_LN2LO = 1.90821492927058770002e-10
# exp(r) = 1 + r + r^2 * (Q0 + Q1 r + ... + Q9 r^9) on [-ln2/2, ln2/2], Chebyshev fit (mpmath),
# relative error of the fit < 1.3e-17.
_E64_Q = (0.5000000000000001, 0.16666666666666669, 0.04166666666662317, 0.008333333333329989,
          0.0013888888917690603, 0.0001984126986342035, 2.480152055701783e-05,
          2.755726789174553e-06, 2.762043894863442e-07, 2.510065503606659e-08)
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8, _Q9 = _E64_Q


@cjit(**_EXP_JIT)
def _exp64_poly(xc, err):
    """(p, kf) with exp(xc + err) = p * 2^n, n held in kf's low bits; xc already clamped."""
    kf = xc * _E64_LOG2E + _E64_MAGIC
    nf = kf - _E64_MAGIC
    r = xc - nf * _E64_LN2HI
    r = r - nf * _E64_LN2LO
    r = r + err
    p = _Q9 * r + _Q8
    p = p * r + _Q7
    p = p * r + _Q6
    p = p * r + _Q5
    p = p * r + _Q4
    p = p * r + _Q3
    p = p * r + _Q2
    p = p * r + _Q1
    p = p * r + _Q0
    p = p * (r * r) + r + 1.0
    return p, kf


@cjit(**_EXP_JIT)
def _exp64_core(x, err):
    """exp(x + err) for float64 x and a tiny correction err (|err| <= ulp(x))."""
    xc = x
    if xc < _E64_LO:
        xc = _E64_LO
        err = 0.0
    if xc > _E64_HI:
        xc = _E64_HI
        err = 0.0
    p, kf = _exp64_poly(xc, err)
    return scale_by_kf(p, kf)


@cjit(**_EXP_JIT)
def exp64(x):
    """exp of a float64 scalar (vectorizable)."""
    return _exp64_core(x, 0.0)


# ------------------------------------------------------------- exp of x - max: the hot loops
# exp(d) * 2^64 for d <= 0 (every x - max), XNNPACK's class of loop: one rounding FMA whose
# magic constant carries the exponent bias (so 2^(n + 64) is one integer shift of its bits), a
# two-constant FMA reduction (ln2 hi / lo: <= 2 ULP needs the lo part for n down to -150), a
# polynomial 1 + t q(t) evaluated as s + (t s) q(t), and one mask for d below the underflow
# threshold (NaN passes it).  The factor 2^64 keeps every result a normal number down to
# exp(-104) (float32) without a second scaling: softmax divides it out with its 1/s (the sum is
# scaled alike), sums multiply their float64 total by 2^-64 (exact), fexpn / fexpd once.
EXP_SCALE = 2.0 ** 64
EXP_UNSCALE = 2.0 ** -64
_ES32_MAGIC = _F(12582912.0 + 127 + 64)     # 1.5 * 2^23 + bias + 64
# exp(t) ~ 1 + t (c1 + t (c2 + ... + t c6)) on [-ln2/2, ln2/2], relative error 2.0e-9 (a
# Lawson-weighted least-squares fit of the relative error, coefficients rounded to float32).
# Degree 5 (XNNPACK's) fits to 9.1e-8 only: measured 2.002 ULP on 25M samples of [-104, 0],
# over the 2 ULP bound; degree 6 costs one FMA and measures 1.05 ULP exhaustively.
_ES32_C = (_F(1.0), _F(0.4999999403953552), _F(0.16666431725025177), _F(0.04166800156235695),
           _F(0.00837415549904108), _F(0.0013843653723597527))
_S1, _S2, _S3, _S4, _S5, _S6 = _ES32_C
_ES32_LO = _F(-104.0)
_ES64_MAGIC = 6755399441055744.0 + 1023 + 64     # 1.5 * 2^52 + bias + 64
_ES64_LO = -746.0
_F32_UNSCALE = _F(EXP_UNSCALE)


@cjit(**_EXP_JIT)
def _exp32s(d, err):
    """exp(d + err) * 2^64 for float32 d <= 0 or NaN (err: None, or the tiny rounding error of
    d, |err| <= ulp(d) / 2); 0 for d < -104, where exp(d) < 2^-150."""
    kf = d * _E32_LOG2E + _ES32_MAGIC       # n + 191 in kf's low bits
    nf = kf - _ES32_MAGIC
    t = d - nf * _E32_C1                    # exact (n * C1 is, and |t| < 0.5)
    t = t - nf * _E32_C2
    if err is not None:
        t = t + err
    p = _S6 * t + _S5
    p = p * t + _S4
    p = p * t + _S3
    p = p * t + _S2
    p = p * t + _S1
    sc = pow2_of_kf(kf)                     # 2^(n + 64)
    e = (t * sc) * p + sc
    if d < _ES32_LO:                        # also -inf (t is NaN there); NaN is kept
        e = _F32_ZERO
    return e


@cjit(**_EXP_JIT)
def _exp64s(d, err):
    """exp(d + err) * 2^64 for float64 d <= 0 or NaN (err: None, or the rounding error of d);
    0 for d < -746."""
    kf = d * _E64_LOG2E + _ES64_MAGIC
    nf = kf - _ES64_MAGIC
    t = d - nf * _E64_LN2HI
    t = t - nf * _E64_LN2LO
    if err is not None:
        t = t + err
    q = _Q9 * t + _Q8
    q = q * t + _Q7
    q = q * t + _Q6
    q = q * t + _Q5
    q = q * t + _Q4
    q = q * t + _Q3
    q = q * t + _Q2
    q = q * t + _Q1
    q = q * t + _Q0
    q = q * t + 1.0                         # exp(t) = 1 + t q(t)
    sc = pow2_of_kf(kf)
    e = (t * sc) * q + sc
    if d < _ES64_LO:
        e = 0.0
    return e


@cjit(**_EXP_JIT)
def _twosum_err32(x, m, d):
    """The rounding error of d = x - m (2Sum), float32."""
    bp = d - x
    return (x - (d - bp)) + (-m - bp)    # x = -inf: NaN, masked in _exp32s (d < -104)


# ----------------------------------------------------------------------------- log
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_LN2HI = 6.93147180369123816490e-01
_LN2LO = 1.90821492927058770002e-10
_TINY = 2.2250738585072014e-308     # smallest normal float64
_TWO54 = 18014398509481984.0
_OFF = 0x3ff0000000000000 - 0x3fe6a09e667f3bcd
_SQ2H = 0x3fe6a09e667f3bcd
_MANT = 0x000fffffffffffff
_INF = np.inf


@cjit(**_EXP_JIT)
def log64(x):
    """log of a float64 scalar (vectorizable, one division)."""
    xs = x
    kadj = 0
    if x < _TINY:
        xs = x * _TWO54
        kadj = -54
    ix = f64_as_i64(xs) + _OFF
    k = (ix >> 52) - 1023 + kadj
    ix = (ix & _MANT) + _SQ2H
    f = i64_as_f64(ix) - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    R = t2 + t1
    dk = np.float64(k)
    r = s * (hfsq + R) + dk * _LN2LO - hfsq + f + dk * _LN2HI
    if x == _INF:
        r = x
    if x == 0.0:
        r = -_INF
    if not (x >= 0.0):      # x < 0 or NaN
        r = np.nan
    return r


@cjit(**_EXP_JIT)
def log32(x):
    """log of a float32 scalar: computed in float64, rounded once to float32."""
    return np.float32(log64(np.float64(x)))


# ----------------------------------------------------------------------------- for the kernels
def fexp(x):
    """exp of a float32 / float64 scalar (the type picks exp32 / exp64 at compile time); njit
    only."""
    raise NotImplementedError  # pragma: no cover - only callable from njit code


def fexpd(x, m):
    """exp(x - m) for float32 / float64 scalars, for x <= m (m the max of a row: the result is
    at most 1; x - m > 0 gives garbage); njit only.

    float32: the rounding error of d = x - m (up to ulp(d)/2, i.e. a relative error |d| * 2^-24
    of the result) is recovered by 2Sum and added to the reduced argument, so the result keeps
    the accuracy of exp itself however far x is below m.  float64: exp of the rounded
    difference, like scipy / NumPy (the tests' oracle runs scipy in float64; the 2Sum version
    would be more exact but then differ from it by |x - m| * 2^-53).
    """
    raise NotImplementedError  # pragma: no cover


def fexpn(d):
    """exp(d) for d <= 0 or NaN (an argument x - max): no overflow handling, cheaper scaling;
    d > 0 gives garbage.  njit only."""
    raise NotImplementedError  # pragma: no cover


def flog(x):
    """log of a float32 / float64 scalar; njit only."""
    raise NotImplementedError  # pragma: no cover


@overload(fexp, inline="always")
def _ov_fexp(x):
    if x == types.float32:
        return lambda x: exp32(x)
    if x == types.float64:
        return lambda x: exp64(x)


@cjit(**_EXP_JIT)
def exp32sd(x, m):
    """exp(x - m) * 2^64, float32, the subtraction made exact by 2Sum."""
    d = x - m
    return _exp32s(d, _twosum_err32(x, m, d))


@cjit(**_EXP_JIT)
def exp32d(x, m):
    """exp(x - m), float32, the subtraction made exact by 2Sum."""
    return exp32sd(x, m) * _F32_UNSCALE


@cjit(**_EXP_JIT)
def _twosum_err64(x, m, d):
    """The rounding error of d = x - m (2Sum), float64."""
    bp = d - x
    return (x - (d - bp)) + (-m - bp)


@cjit(**_EXP_JIT)
def exp64dx(x, m):
    """exp(x - m), float64, the subtraction made exact by 2Sum (not scipy's rounded x - m)."""
    d = x - m
    return _exp64s(d, _twosum_err64(x, m, d)) * EXP_UNSCALE


def fexpdx(x, m):
    """exp(x - m) for x <= m with the rounding error of x - m recovered in both float types
    (fexpd keeps float64's rounded difference, like scipy); njit only."""
    raise NotImplementedError  # pragma: no cover


@overload(fexpdx, inline="always")
def _ov_fexpdx(x, m):
    if x == types.float32 and m == types.float32:
        return lambda x, m: exp32d(x, m)
    if x == types.float64 and m == types.float64:
        return lambda x, m: exp64dx(x, m)


def fexps(d):
    """exp(d) * EXP_SCALE (2^64) for d <= 0 or NaN (an argument x - max): the hot loops' exp,
    whose sums are unscaled once per block in float64 (exactly); d > 0 gives garbage.  njit
    only."""
    raise NotImplementedError  # pragma: no cover


def fexpsd(x, m):
    """fexpd(x, m) * EXP_SCALE (2^64): softmax's stored values, scaled back by the 1 / s of the
    scaled sum.  njit only."""
    raise NotImplementedError  # pragma: no cover


@overload(fexps, inline="always")
def _ov_fexps(d):
    if d == types.float32:
        return lambda d: _exp32s(d, None)
    if d == types.float64:
        return lambda d: _exp64s(d, None)


@overload(fexpsd, inline="always")
def _ov_fexpsd(x, m):
    if x == types.float32 and m == types.float32:
        return lambda x, m: exp32sd(x, m)
    if x == types.float64 and m == types.float64:
        return lambda x, m: _exp64s(x - m, None)


@overload(fexpd, inline="always")
def _ov_fexpd(x, m):
    if x == types.float32 and m == types.float32:
        return lambda x, m: exp32d(x, m)
    if x == types.float64 and m == types.float64:
        return lambda x, m: _exp64s(x - m, None) * EXP_UNSCALE


@overload(fexpn, inline="always")
def _ov_fexpn(d):
    if d == types.float32:
        return lambda d: _exp32s(d, None) * _F32_UNSCALE
    if d == types.float64:
        return lambda d: _exp64s(d, None) * EXP_UNSCALE


@overload(flog, inline="always")
def _ov_flog(x):
    if x == types.float32:
        return lambda x: log32(x)
    if x == types.float64:
        return lambda x: log64(x)


# ----------------------------------------------------------------------------- over arrays
@cjit(**JIT)
def exp_apply(x, out):
    """out[i] = fexp(src[i]), src = x, or out itself when x is None (in place): exactly the
    exp of the kernels, for the contract's exp() and its accuracy tests."""
    src = pick(x, out)
    for i in range(out.shape[0]):
        out[i] = fexp(src[i])


@cjit(**JIT)
def expn_apply(x, out):
    """out[i] = fexpn(x[i]) for x <= 0 (the kernels' exp of x - max, unscaled), for the
    accuracy tests of that path."""
    for i in range(out.shape[0]):
        out[i] = fexpn(x[i])


@cjit(**JIT)
def expd_apply(x, m, out):
    """out[i] = fexpd(x[i], m) (x <= m): the stored softmax values' exp, for the tests."""
    for i in range(out.shape[0]):
        out[i] = fexpd(x[i], m)


@cjit(**JIT)
def log_apply(x, out):
    """out[i] = flog(src[i]); x None: in place."""
    src = pick(x, out)
    for i in range(out.shape[0]):
        out[i] = flog(src[i])
