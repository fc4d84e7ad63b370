/* fsm_math.h -- the elementary functions of the C kernels: exp and log, float32 and float64.
 *
 * Design
 *   Every function is branch-free plain arithmetic on one element, `static inline`, so that a loop
 *   calling it is vectorized by GCC at whatever ISA the including file is compiled for (zmm with
 *   -mavx512f, ymm with -mavx2, xmm at baseline).  No libm call, no -ffast-math: the results are
 *   the same in a scalar remainder and in the vector body.
 *
 *   exp(x): Cody-Waite reduction  x = n*ln2 + r, |r| <= ln2/2, with n = rint(x/ln2) computed by the
 *     "add 1.5*2^p" rounding trick (exact without fast-math; SSE2 has no round instruction), ln2
 *     split into a short head (n*head is exact) and a tail; exp(r) by a polynomial
 *     (float32: Cephes expf degree-7 form, float64: degree-13 Taylor, truncation < 5e-18);
 *     the result is p * 2^n1 * 2^n2 with n = n1 + n2, both halves normal numbers, built from the
 *     exponent bits: one rounding at the last multiply, so subnormal results are correctly
 *     scaled and overflow gives +inf.  |x| is clamped first (to 104 / 746, where exp is already
 *     0 or inf) and the sign put back: the clamped value is not a constant, so GCC cannot
 *     propagate constants through the clamp into per-case blends (that cost 11 extra vector ops
 *     per exp in the avx512 loops); a NaN fails the compare and gives a NaN through p:
 *     exp(-inf) = 0, exp(+inf) = inf, exp(NaN) = NaN, exp(0) = 1.
 *   log(x) (float64): fdlibm's e_log.c algorithm, x = 2^k * (1+f), sqrt(2)/2 <= 1+f < sqrt(2),
 *     s = f/(2+f), degree-14 polynomial in s; subnormals prescaled by 2^54; int64 -> double
 *     through the 2^52 bit trick (AVX2 has no vcvtqq2pd).  Specials by selects at the end.
 *   log(x) (float32): the float64 log of the exact widening, rounded once: <= 0.5 ULP + 2^-29.
 *   log1p(t) (float64, per-row use only): Goldberg's  log(u) * t / (u - 1),  u = 1 + t.
 *   sign(v) (float64, per-row use in logsumexp).
 */
#ifndef FSM_MATH_H
#define FSM_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define FSM_INLINE static inline __attribute__((always_inline))
#else
#define FSM_INLINE static inline
#endif

FSM_INLINE float fsm_f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
FSM_INLINE uint32_t fsm_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
FSM_INLINE double fsm_f64_from_bits(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }
FSM_INLINE uint64_t fsm_f64_bits(double f) { uint64_t u; memcpy(&u, &f, 8); return u; }

/* ---------------------------------------------------------------- exp, float32 */
/* exp(x + lo) = p * 2^n for |x| <= 104, |lo| <= ulp(x)/2: returns p (NaN for a NaN x) and
   *pt = x / ln2 + 1.5 * 2^23, n = rint(x / ln2) in its low bits */
FSM_INLINE float fsm_exp_core_f32(float x, float lo, float *pt)
{
    const float magic = 0x1.8p23f;            /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 0x1.715476p+0f + magic;     /* n = rint(x / ln2), in the low bits of t     */
    float n = t - magic;
    float r = x - n * 0.693359375f;           /* ln2 head (9 bits): n*head is exact          */
    r = r - n * -2.12194440e-4f;              /* ln2 tail                                    */
    r = r + lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r;
    *pt = t;
    return p + 1.0f;
}

/* exp(x + lo), |lo| <= ulp(x)/2: lo carries the rounding error of a subtraction done before */
FSM_INLINE float fsm_exp2sum_f32(float x, float lo)
{
    /* |x| > 104: exp(-104) < 2^-150 rounds to 0, exp(104) > FLT_MAX is inf.  Clamping |x|
       and putting the sign back keeps the clamped value non-constant, so GCC does not
       propagate constants through the clamp (3 compares + 8 blends per vector);
       a NaN x fails the compare and flows through to a NaN result. */
    float ax = fabsf(x);
    int big = ax > 104.0f;
    ax = big ? 104.0f : ax;
    lo = big ? 0.0f : lo;                     /* lo may be NaN when x is not finite          */
    float t;
    float p = fsm_exp_core_f32(copysignf(ax, x), lo, &t);
    /* 2^n = 2^n1 * 2^n2, n1 = rint(n/2): both normal for |n| <= 150.  The low bits of
       t and t1 hold n and n1 (two's complement), so n2 = bits(t) - bits(t1); only the low
       9 bits survive the shift. */
    float t1 = (t - 0x1.8p23f) * 0.5f + 0x1.8p23f;
    uint32_t bt = fsm_f32_bits(t), bt1 = fsm_f32_bits(t1);
    float s1 = fsm_f32_from_bits((bt1 + 127u) << 23);
    float s2 = fsm_f32_from_bits((bt - bt1 + 127u) << 23);
    return (p * s1) * s2;                     /* NaN x: p is NaN                             */
}

FSM_INLINE float fsm_exp_f32(float x) { return fsm_exp2sum_f32(x, 0.0f); }

/* exp(x - m) for float32 without the rounding error of x - m (up to 2^-24 |x - m|, i.e. ~2e-6
   relative for |x - m| ~ 40): Knuth's TwoSum recovers it exactly and it joins the reduced
   argument.  The error term is NaN only when x - m is not finite (then dropped by the clamp). */
FSM_INLINE float fsm_expdiff_f32(float x, float m)
{
    float d = x - m;
    float bb = d - x;
    float lo = (x - (d - bb)) + (-m - bb);
    return fsm_exp2sum_f32(d, lo);
}

/* ---------------------------------------------------------------- exp for d <= 0, float32 */
/* The kernels' exp: exp(d) for d = x - m <= 0 (or NaN), m the max of the x's or NaN.  In the
   hot loops (softmax's exp + store + sum), so each operation counts (docs/c_backend.md):
     t = d * log2e + magic      one FMA: n = rint(d / ln2) in t's low bits, magic = 1.5 * 2^23
                                + 127 + 64, so those bits are already the biased exponent of 2^(n+64)
     r = d - n * ln2            two FMAs (ln2 as float + its tail: <= 0.5 ULP more than one
                                constant would cost at n = -150); without FMA (baseline) a 9-bit
                                head, so n * head is exact
     exp(r) = 1 + r + r^2 q(r)  q of degree 4 (4 FMAs, then r*r and one FMA), minimax in ULPs
                                of exp on [-ln2/2, ln2/2] (fitted for this file: 0.06 ULP; degree
                                5, as XNNPACK, fits to 1.2-1.4 ULP and measured 2.02 ULP in all)
     s = bits(t) << 23          2^(n+64): a normal number for every n >= -190, no clamp needed
     y = s * p + s              exp(d) * 2^64, rounded once
     d < -104 ? 0 : y           one compare + blend: below -104 (also -inf, where y is NaN) the
                                result is 0; a NaN d fails the compare and gives NaN through p.
                                A clamp of d instead (d < -110 ? -110 : d) is not one vmaxps with
                                GCC 12: it propagated the constant through the whole exp and
                                blended per case (3 compares + 3 blends per vector, measured)
   The 2^64 scale keeps every intermediate normal: the caller multiplies by 2^-64 (EXPN: one
   multiply, where a subnormal result rounds once) or folds it into a later scale (softmax's
   1/s, EXP64DN).  Lanes with n < -126 are the subnormal results: exactly rounded at that last
   multiply, as the contract asks (XNNPACK flushes them to zero instead). */
#if defined(__FMA__) || defined(__AVX512F__)
#define FSM_LN2HI_F32 0x1.62e430p-1f          /* float(ln2): n * it is exact inside the FMA  */
#define FSM_LN2LO_F32 -0x1.05c610p-29f        /* ln2 - float(ln2)                           */
#else
#define FSM_LN2HI_F32 0.693359375f            /* 9-bit head: n * head exact without FMA      */
#define FSM_LN2LO_F32 -2.12194440e-4f
#endif

/* exp(d + lo) * 2^64 for d <= 0 or NaN, |lo| <= ulp(d) (lo: the rounding error of d, or 0; any
   value, NaN too, where d < -104) */
FSM_INLINE float fsm_exp64n2sum_f32(float d, float lo)
{
    const float magic = 0x1.8p23f + 191.0f;   /* 1.5 * 2^23 + (127 + 64)                  */
    float t = d * 0x1.715476p+0f + magic;
    float n = t - magic;
    float r = d - n * FSM_LN2HI_F32;
    r = r - n * FSM_LN2LO_F32;
    r = r + lo;
    float q = 0x1.693e14p-10f;
    q = q * r + 0x1.123c2cp-7f;
    q = q * r + 0x1.555a70p-5f;
    q = q * r + 0x1.55548ep-3f;
    q = q * r + 0x1.fffffap-2f;
    float p = (r * r) * q + r;
    float s = fsm_f32_from_bits(fsm_f32_bits(t) << 23);   /* 2^(n+64); NaN d: p is NaN  */
    float y = s * p + s;
    return d < -104.0f ? 0.0f : y;
}

FSM_INLINE float fsm_exp64n_f32(float d) { return fsm_exp64n2sum_f32(d, 0.0f); }
FSM_INLINE float fsm_expn_f32(float d) { return fsm_exp64n_f32(d) * 0x1p-64f; }

/* exp(x - m) * 2^64 for x - m <= 0 or NaN, without the rounding error of x - m (up to 2^-24
   |x - m|: 2e-6 relative at |x - m| ~ 40, which a 10^7-long row's 1e-6 per element rejects).
   Fast2Sum of a = min(x, -m) and b = max(x, -m): |a| >= |b| in every case (m > 0 with
   x >= -m; m > 0 with x < -m; m <= 0 with x <= m), so lo = b - ((a + b) - a) is the exact error,
   4 operations instead of TwoSum's 6.  Lanes where lo is not exact (x - m < -104, x = -inf) are
   the ones fsm_exp64n2sum_f32 sets to 0. */
FSM_INLINE float fsm_expdiff64n_f32(float x, float m)
{
    float nm = -m;
    float d = x - m;
    float a = x < nm ? x : nm;
    float b = x < nm ? nm : x;
    float lo = b - (d - a);
    return fsm_exp64n2sum_f32(d, lo);
}

FSM_INLINE float fsm_expdiffn_f32(float x, float m) { return fsm_expdiff64n_f32(x, m) * 0x1p-64f; }

/* ---------------------------------------------------------------- exp, float64 */
/* exp(x) = p * 2^n for |x| <= 746: returns p and *pt = x / ln2 + 1.5 * 2^52 (n in its low bits) */
FSM_INLINE double fsm_exp_core_f64(double x, double *pt)
{
    const double magic = 0x1.8p52;
    double t = x * 0x1.71547652b82fep+0 + magic;
    double n = t - magic;
    double r = x - n * 6.93147180369123816490e-01;   /* ln2 head (32 bits), n*head exact     */
    r = r - n * 1.90821492927058770002e-10;          /* ln2 tail                             */
    /* exp(r) = 1 + r + r^2 * q(r), q = Taylor series to r^11/13!  (|r| <= 0.347) */
    double q = 1.0 / 6227020800.0;            /* 1/13! */
    q = q * r + 1.0 / 479001600.0;            /* 1/12! */
    q = q * r + 1.0 / 39916800.0;
    q = q * r + 1.0 / 3628800.0;
    q = q * r + 1.0 / 362880.0;
    q = q * r + 1.0 / 40320.0;
    q = q * r + 1.0 / 5040.0;
    q = q * r + 1.0 / 720.0;
    q = q * r + 1.0 / 120.0;
    q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0;
    q = q * r + 0.5;
    double p = q * (r * r) + r;
    *pt = t;
    return p + 1.0;
}

FSM_INLINE double fsm_exp_f64(double x)
{
    /* |x| > 746: exp(-746) < 2^-1075 rounds to 0, exp(746) > DBL_MAX is inf; as float32 */
    double ax = fabs(x);
    ax = ax > 746.0 ? 746.0 : ax;
    double t;
    double p = fsm_exp_core_f64(copysign(ax, x), &t);
    double t1 = (t - 0x1.8p52) * 0.5 + 0x1.8p52;  /* as float32: n1 in t1's low bits, n2 = n - n1 */
    uint64_t bt = fsm_f64_bits(t), bt1 = fsm_f64_bits(t1);
    double s1 = fsm_f64_from_bits((bt1 + 1023u) << 52);
    double s2 = fsm_f64_from_bits((bt - bt1 + 1023u) << 52);
    return (p * s1) * s2;                     /* NaN x: p is NaN                             */
}

/* exp(d) * 2^64 for d <= 0 or NaN, as fsm_exp64n2sum_f32: 0 below -746, magic 1.5 * 2^52 +
   1023 + 64, ln2 in two parts, exp(r) = 1 + r + r^2 q(r) with q of degree 9 (a Chebyshev fit
   of (e^r - 1 - r) / r^2 on [-0.357, 0.357], made for this file: 2.9e-17 relative, 0.26 ULP;
   the Taylor form of fsm_exp_core_f64 needs degree 13 for the same) */
#if defined(__FMA__) || defined(__AVX512F__)
#define FSM_LN2HI_F64 0x1.62e42fefa39efp-1
#define FSM_LN2LO_F64 0x1.abc9e3b39803fp-56
#else
#define FSM_LN2HI_F64 6.93147180369123816490e-01
#define FSM_LN2LO_F64 1.90821492927058770002e-10
#endif
FSM_INLINE double fsm_exp64n_f64(double d)
{
    const double magic = 0x1.8p52 + 1087.0;
    double t = d * 0x1.71547652b82fep+0 + magic;
    double n = t - magic;
    double r = d - n * FSM_LN2HI_F64;
    r = r - n * FSM_LN2LO_F64;
    double q = 2.510320420657239e-08;
    q = q * r + 2.7623753848423127e-07;
    q = q * r + 2.7557262361227677e-06;
    q = q * r + 2.4801513365245383e-05;
    q = q * r + 0.00019841269867094182;
    q = q * r + 0.001388888892246796;
    q = q * r + 0.008333333333329229;
    q = q * r + 0.0416666666666133;
    q = q * r + 0.16666666666666669;
    q = q * r + 0.5000000000000001;
    double s = fsm_f64_from_bits(fsm_f64_bits(t) << 52);  /* 2^(n+64) */
    double p = (r * r) * q + r;
    double y = s * p + s;
    return d < -746.0 ? 0.0 : y;
}

FSM_INLINE double fsm_expn_f64(double d) { return fsm_exp64n_f64(d) * 0x1p-64; }
FSM_INLINE double fsm_expdiff64n_f64(double x, double m) { return fsm_exp64n_f64(x - m); }
FSM_INLINE double fsm_expdiffn_f64(double x, double m) { return fsm_expn_f64(x - m); }

/* exp(x - m), float64: x - m rounded first (the float32 twin recovers that rounding error) */
FSM_INLINE double fsm_expdiff_f64(double x, double m) { return fsm_exp_f64(x - m); }

/* ---------------------------------------------------------------- log, float64 */
FSM_INLINE double fsm_log_f64(double x)
{
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                 Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                 Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    int sub = x < 0x1p-1022;                  /* subnormal (or <= 0, fixed at the end)       */
    double xs = sub ? x * 0x1p54 : x;
    double kadj = sub ? -54.0 : 0.0;
    /* move the split point to sqrt(2)/2: 1+f in [sqrt(2)/2, sqrt(2)) */
    uint64_t hx = fsm_f64_bits(xs) + (0x3ff0000000000000ull - 0x3fe6a09e667f3bcdull);
    double kb = fsm_f64_from_bits(0x4330000000000000ull | (hx >> 52)) - 0x1p52;  /* biased k */
    double k = kb - 1023.0 + kadj;
    double m = fsm_f64_from_bits((hx & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull);
    double f = m - 1.0;
    double hfsq = 0.5 * f * f;
    double s = f / (2.0 + f);
    double z = s * s;
    double w = z * z;
    double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    double R = t2 + t1;
    double r = k * ln2_hi - ((hfsq - (s * (hfsq + R) + k * ln2_lo)) - f);
    r = x == INFINITY ? x : r;
    r = x == 0.0 ? -INFINITY : r;
    r = x < 0.0 ? NAN : r;
    r = x != x ? x : r;
    return r;
}

/* ---------------------------------------------------------------- log, float32 */
FSM_INLINE float fsm_log_f32(float x) { return (float)fsm_log_f64((double)x); }

/* log1p for t >= -1 (per-row use in logsumexp), float64 */
FSM_INLINE double fsm_log1p_f64(double t)
{
    double u = 1.0 + t;
    if (u == 1.0) return t;                   /* also keeps t = -0.0, tiny t              */
    if (u == INFINITY) return u;
    return fsm_log_f64(u) * (t / (u - 1.0));
}

/* the sign of v: +1, -1, 0 (NaN for NaN) */
static inline double fsm_sign(double v)
{
    return v > 0 ? 1.0 : v < 0 ? -1.0 : v == 0 ? 0.0 : v;
}

#endif /* FSM_MATH_H */
