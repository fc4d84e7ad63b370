"""Vectorizable exp and log for Numba kernels (float32 and float64).

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
    p = 1 + r + r^2 * P(r)         (P: degree 4 (float32, Cephes) / degree 9 (float64, Chebyshev fit))
    exp(x) = p * 2^n1 * 2^n2       (n1 = n >> 1, n2 = n - n1, both built from exponent bits, so
                                    subnormal results and overflow to +inf come out of the last product)
  float32 works in float32 (16 lanes per zmm register), float64 in float64.
  exp(0) == 1 exactly (n = 0, r = 0), exp(-inf) == 0 (clamped to lo), exp(+inf) == +inf (clamped to
  hi, whose 2^n overflows), NaN propagates through r and p.

log(x), fdlibm / musl reduction:
    x = 2^k * (1 + f), 1 + f in [sqrt(2)/2, sqrt(2)),   s = f / (2 + f)
    log(x) = k*ln2_hi + (f - hfsq + s*(hfsq + R(s^2)) + k*ln2_lo)
  float64 only; float32 log converts to float64 and rounds back (log is called once per row, it is
  not on the hot path).  Subnormal inputs are scaled by 2^54 first.  log(0) = -inf, log(<0) = NaN,
  log(+inf) = +inf, log(NaN) = NaN.

No fast-math flags are used in this module: reassociation would break the Cody-Waite reduction and
nnan/ninf would break the special cases.  Measured accuracy (tests/, /tmp scratch): float32 exp
exhaustive over all float32 inputs, float64 exp and log sampled against long double / mpmath; all
within 1 ULP of the correctly rounded result.
"""
import warnings

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["cjit", "exp32", "exp64", "exp32d", "exp64d", "log32", "log64", "fexp", "fexpd", "flog",
           "fexpn", "exp_array", "log_array"]


# ----------------------------------------------------------------------------- caching
_cache_warned = False


def cjit(**opts):
    """``numba.njit(cache=True, **opts)``, or without the on-disk cache where Numba has nowhere
    to write it (a read-only install, no writable NUMBA_CACHE_DIR or user cache directory):
    Numba raises RuntimeError at decoration then, which would make the backend unimportable.
    The kernels then compile in each process (one warning says so)."""
    def deco(f):
        global _cache_warned
        try:
            return njit(cache=True, **opts)(f)
        except RuntimeError as exc:
            if "cannot cache" not in str(exc):
                raise
            if not _cache_warned:
                _cache_warned = True
                warnings.warn(
                    f"fastsoftmax: Numba cannot cache its compiled kernels here ({exc}); they "
                    "will compile again in every process. Set NUMBA_CACHE_DIR to a writable "
                    "directory to keep them.", RuntimeWarning, stacklevel=2)
            return njit(**opts)(f)
    return deco


# ----------------------------------------------------------------------------- bit tricks
@intrinsic
def _ldexp2(typingctx, p, nf):
    """p * 2**nf for an integer-valued float nf (NaN -> treated as 0; p carries the NaN).

    Builds 2**(nf >> 1) and 2**(nf - (nf >> 1)) from exponent bits, so the result is right for
    nf down to -(2*bias + mantissa) (subnormals) and overflows to inf for large nf.
    """
    if not (isinstance(p, types.Float) and p == nf):
        return None
    bits = p.bitwidth
    mant = 23 if bits == 32 else 52
    bias = 127 if bits == 32 else 1023

    def codegen(context, builder, sig, args):
        pv, nv = args
        fty = pv.type
        ity = ir.IntType(bits)
        isord = builder.fcmp_ordered("ord", nv, nv)
        n0 = builder.select(isord, nv, ir.Constant(fty, 0.0))
        n = builder.fptosi(n0, ity)
        n1 = builder.ashr(n, ir.Constant(ity, 1))
        n2 = builder.sub(n, n1)
        s1 = builder.bitcast(builder.shl(builder.add(n1, ir.Constant(ity, bias)), ir.Constant(ity, mant)), fty)
        s2 = builder.bitcast(builder.shl(builder.add(n2, ir.Constant(ity, bias)), ir.Constant(ity, mant)), fty)
        return builder.fmul(builder.fmul(pv, s1), s2)

    return p(p, nf), codegen


@intrinsic
def _scale_by_kf(typingctx, p, kf):
    """p * 2**n where kf = n + 1.5 * 2**(mantissa bits) (the rounding-trick float): n is read
    from kf's low mantissa bits, so no float -> int conversion (and no NaN special case: a NaN kf
    gives some scale, and p is NaN then anyway).  Two factors, 2**(n >> 1) and 2**(n - (n >> 1)),
    so subnormal results and overflow to inf come out of the last product."""
    if not (isinstance(p, types.Float) and p == kf):
        return None
    bits = p.bitwidth
    mant = 23 if bits == 32 else 52
    bias = 127 if bits == 32 else 1023
    magic_bits = 0x4B400000 if bits == 32 else 0x4338000000000000

    def codegen(context, builder, sig, args):
        pv, kv = args
        fty = pv.type
        ity = ir.IntType(bits)
        n = builder.sub(builder.bitcast(kv, ity), ir.Constant(ity, magic_bits))
        n1 = builder.ashr(n, ir.Constant(ity, 1))
        n2 = builder.sub(n, n1)
        s1 = builder.bitcast(builder.shl(builder.add(n1, ir.Constant(ity, bias)), ir.Constant(ity, mant)), fty)
        s2 = builder.bitcast(builder.shl(builder.add(n2, ir.Constant(ity, bias)), ir.Constant(ity, mant)), fty)
        return builder.fmul(builder.fmul(pv, s1), s2)

    return p(p, kf), codegen


@intrinsic
def _scale_by_kf_neg(typingctx, p, kf):
    """_scale_by_kf for n <= 0 only (exp of a non-positive argument): 2**(n + B) from the
    exponent bits (B = 64 / 512 keeps it a normal number down to the underflow threshold), then
    one multiplication by the constant 2**-B, where subnormal results round once.  Half the
    integer work of the two-factor version."""
    if not (isinstance(p, types.Float) and p == kf):
        return None
    bits = p.bitwidth
    mant = 23 if bits == 32 else 52
    bias = 127 if bits == 32 else 1023
    B = 64 if bits == 32 else 512
    magic_bits = 0x4B400000 if bits == 32 else 0x4338000000000000

    def codegen(context, builder, sig, args):
        pv, kv = args
        fty = pv.type
        ity = ir.IntType(bits)
        e = builder.add(builder.bitcast(kv, ity), ir.Constant(ity, bias + B - magic_bits))
        sc = builder.bitcast(builder.shl(e, ir.Constant(ity, mant)), fty)
        return builder.fmul(builder.fmul(pv, sc), ir.Constant(fty, 2.0 ** -B))

    return p(p, kf), codegen


@intrinsic
def _f64_as_i64(typingctx, x):
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def _i64_as_f64(typingctx, i):
    if i != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(i), codegen


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


@cjit(error_model="numpy", fastmath={"contract"})
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


@cjit(error_model="numpy", fastmath={"contract"})
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
    return _scale_by_kf(p, kf)


@cjit(error_model="numpy", fastmath={"contract"})
def _exp32n_core(x, err):
    """_exp32_core for x <= 0 (or NaN): no upper clamp, cheaper scaling."""
    xc = x
    if xc < _E32_LO:
        xc = _E32_LO
        err = _F32_ZERO
    p, kf = _exp32_poly(xc, err)
    return _scale_by_kf_neg(p, kf)


@cjit(error_model="numpy", fastmath={"contract"})
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


@cjit(error_model="numpy", fastmath={"contract"})
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


@cjit(error_model="numpy", fastmath={"contract"})
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
    return _scale_by_kf(p, kf)


@cjit(error_model="numpy", fastmath={"contract"})
def _exp64n_core(x, err):
    """_exp64_core for x <= 0 (or NaN): no upper clamp, cheaper scaling."""
    xc = x
    if xc < _E64_LO:
        xc = _E64_LO
        err = 0.0
    p, kf = _exp64_poly(xc, err)
    return _scale_by_kf_neg(p, kf)


@cjit(error_model="numpy", fastmath={"contract"})
def exp64(x):
    """exp of a float64 scalar (vectorizable)."""
    return _exp64_core(x, 0.0)


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


@cjit(error_model="numpy", fastmath={"contract"})
def log64(x):
    """log of a float64 scalar (vectorizable, one division)."""
    xs = x
    kadj = 0
    if x < _TINY:
        xs = x * _TWO54
        kadj = -54
    ix = _f64_as_i64(xs) + _OFF
    k = (ix >> 52) - 1023 + kadj
    ix = (ix & _MANT) + _SQ2H
    f = _i64_as_f64(ix) - 1.0
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


@cjit(error_model="numpy", fastmath={"contract"})
def log32(x):
    """log of a float32 scalar: computed in float64, rounded once to float32."""
    return np.float32(log64(np.float64(x)))


# ----------------------------------------------------------------------------- generic + arrays
from numba.extending import overload  # noqa: E402


def fexp(x):
    """exp for float32 / float64 scalars inside njit code (dispatches on the dtype at compile time)."""
    raise NotImplementedError  # pragma: no cover - only callable from njit code


def fexpd(x, m):
    """exp(x - m) for float32 / float64 scalars inside njit code, for x <= m (m the max of a
    row: the result is at most 1; x - m > 0 gives garbage), with x - m taken exactly (float32).

    The rounding error of d = x - m (up to ulp(d)/2, i.e. a relative error |d| * 2^-24 of the
    result in float32) is recovered by 2Sum and added to the reduced argument, so the result keeps
    the accuracy of exp itself however far x is below m.
    """
    raise NotImplementedError  # pragma: no cover


def fexpn(d):
    """exp(d) for d <= 0 or NaN (an argument x - max): no overflow handling, cheaper scaling;
    d > 0 gives garbage.  njit only."""
    raise NotImplementedError  # pragma: no cover


def flog(x):
    """log for float32 / float64 scalars inside njit code."""
    raise NotImplementedError  # pragma: no cover


@overload(fexp, inline="always")
def _ov_fexp(x):
    if x == types.float32:
        return lambda x: exp32(x)
    if x == types.float64:
        return lambda x: exp64(x)


@cjit(error_model="numpy", fastmath={"contract"})
def exp32d(x, m):
    """exp(x - m), float32, the subtraction made exact by 2Sum."""
    d = x - m
    bp = d - x
    err = (x - (d - bp)) + (-m - bp)   # x = -inf: NaN, dropped by the clamp in the core
    return _exp32n_core(d, err)


@cjit(error_model="numpy", fastmath={"contract"})
def exp64d(x, m):
    """exp(x - m), float64, the subtraction made exact by 2Sum."""
    d = x - m
    bp = d - x
    err = (x - (d - bp)) + (-m - bp)
    return _exp64n_core(d, err)


@overload(fexpd, inline="always")
def _ov_fexpd(x, m):
    if x == types.float32 and m == types.float32:
        return lambda x, m: exp32d(x, m)
    if x == types.float64 and m == types.float64:
        # float64: exp of the rounded difference, like scipy / NumPy (the tests' oracle runs
        # scipy in float64; exp64d is more exact but then differs from it by |x - m| * 2^-53)
        return lambda x, m: _exp64n_core(x - m, 0.0)


@overload(fexpn, inline="always")
def _ov_fexpn(d):
    if d == types.float32:
        return lambda d: _exp32n_core(d, _F32_ZERO)
    if d == types.float64:
        return lambda d: _exp64n_core(d, 0.0)


@overload(flog, inline="always")
def _ov_flog(x):
    if x == types.float32:
        return lambda x: log32(x)
    if x == types.float64:
        return lambda x: log64(x)


@cjit(nogil=True, error_model="numpy")
def exp_array(x, out):
    """out[i] = exp(x[i]) for 1-D arrays; exactly the exp the kernels use."""
    for i in range(x.shape[0]):
        out[i] = fexp(x[i])


@cjit(nogil=True, error_model="numpy")
def log_array(x, out):
    """out[i] = log(x[i]) for 1-D arrays; exactly the log the kernels use."""
    for i in range(x.shape[0]):
        out[i] = flog(x[i])
