/* cross_driver.c -- the C kernels checked without Python, on another architecture (aarch64
 * under qemu-aarch64: ./dev cross-test aarch64; it also runs natively).  docs/wheels.md.
 *
 * References (cross_ref.h): computed on x86-64 by gen_cross_ref.py with mpmath (120 bits), for
 * inputs that this driver regenerates with the same splitmix64 stream:
 *   exp, log (float32, float64): the ULP error of every point, bound 2 ULP (as
 *     tests/test_elementary.py), plus the special values (0, +-inf, NaN, overflow) exactly;
 *   logsumexp: every row's x86-64 reference, relative error;
 *   log_softmax = x - lse and softmax = exp(x - lse), from the x86-64 row lse, in long double;
 *   cross_entropy (integer targets): loss = lse - x_t, grad = softmax - onehot.
 * Each op runs with 1 and 2 threads (the pool), both results must be equal to the bit.
 * Exit status 0 when every check passes.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fsm_kernels.h"
#include "cross_ref.h"

static uint64_t rng_s;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double exp_in_f32(void) { return ldexp((double)(int64_t)((rng_next() >> 40) - (1 << 23)), -16); }
static double exp_in_f64(void) { return ldexp((double)((int64_t)(rng_next() >> 11) - (INT64_C(1) << 52)), -43); }
static float log_in_f32(void)
{
    for (;;) {
        uint32_t u = (uint32_t)((rng_next() >> 33) & 0x7FFFFFFFu);
        if ((u >> 23) != 0xFF && u != 0) { float f; memcpy(&f, &u, 4); return f; }
    }
}
static double log_in_f64(void)
{
    for (;;) {
        uint64_t u = (rng_next() >> 1) & 0x7FFFFFFFFFFFFFFFull;
        if ((u >> 52) != 0x7FF && u != 0) { double f; memcpy(&f, &u, 8); return f; }
    }
}
static double data_in(void) { return ldexp((double)(int64_t)((rng_next() >> 40) - (1 << 23)), -20); }

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

/* the ULP of a value of magnitude |r| in a format with p bits and minimum exponent emin */
static double ulp_of(double r, int p, int emin)
{
    int e;
    frexp(fabs(r), &e);                        /* |r| = f 2^e, f in [0.5, 1) */
    if (e - 1 < emin) e = emin + 1;
    return ldexp(1.0, e - p);
}

static void check_elementary(const fsm_ops *ops)
{
    static float xf[REF_N_ELEM], yf[REF_N_ELEM];
    static double xd[REF_N_ELEM], yd[REF_N_ELEM];
    double worst;
    /* exp float32: the reference is the exact value rounded to double (error 2^-29 ULP) */
    rng_s = 1;
    for (int i = 0; i < REF_N_ELEM; i++) xf[i] = (float)exp_in_f32();
    ops->exp_f32(xf, yf, REF_N_ELEM);
    worst = 0;
    for (int i = 0; i < REF_N_ELEM; i++) {
        double r = ref_exp_f32[i];
        if (r > (double)FLT_MAX * (1 + 0x1p-25)) { CHECK(isinf(yf[i]) && yf[i] > 0, "exp_f32(%a) = %a, want inf", xf[i], yf[i]); continue; }
        double e = fabs((double)yf[i] - r) / ulp_of(r, 24, -126);
        if (e > worst) worst = e;
    }
    printf("exp_f32: %d points, max error %.3f ULP (bound 2)\n", REF_N_ELEM, worst);
    CHECK(worst <= 2.0, "exp_f32 max error %.3f ULP", worst);
    /* exp float64: double-double reference */
    rng_s = 2;
    for (int i = 0; i < REF_N_ELEM; i++) xd[i] = exp_in_f64();
    ops->exp_f64(xd, yd, REF_N_ELEM);
    worst = 0;
    for (int i = 0; i < REF_N_ELEM; i++) {
        double r = ref_exp_f64_hi[i];
        double e = fabs((yd[i] - r) - ref_exp_f64_lo[i]) / ulp_of(r, 53, -1022);
        if (e > worst) worst = e;
    }
    printf("exp_f64: %d points, max error %.3f ULP (bound 2)\n", REF_N_ELEM, worst);
    CHECK(worst <= 2.0, "exp_f64 max error %.3f ULP", worst);
    /* log float32 over all positive finite floats (subnormals included) */
    rng_s = 3;
    for (int i = 0; i < REF_N_ELEM; i++) xf[i] = log_in_f32();
    ops->log_f32(xf, yf, REF_N_ELEM);
    worst = 0;
    for (int i = 0; i < REF_N_ELEM; i++) {
        double r = ref_log_f32[i];
        double e = fabs((double)yf[i] - r) / ulp_of(r, 24, -126);
        if (e > worst) worst = e;
    }
    printf("log_f32: %d points, max error %.3f ULP (bound 2)\n", REF_N_ELEM, worst);
    CHECK(worst <= 2.0, "log_f32 max error %.3f ULP", worst);
    rng_s = 4;
    for (int i = 0; i < REF_N_ELEM; i++) xd[i] = log_in_f64();
    ops->log_f64(xd, yd, REF_N_ELEM);
    worst = 0;
    for (int i = 0; i < REF_N_ELEM; i++) {
        double r = ref_log_f64_hi[i];
        double e = fabs((yd[i] - r) - ref_log_f64_lo[i]) / ulp_of(r, 53, -1022);
        if (e > worst) worst = e;
    }
    printf("log_f64: %d points, max error %.3f ULP (bound 2)\n", REF_N_ELEM, worst);
    CHECK(worst <= 2.0, "log_f64 max error %.3f ULP", worst);

    /* special values, exactly */
    double sx[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 1000.0, -1000.0, 1.0, 1e-310};
    double se[] = {1.0, 1.0, INFINITY, 0.0, NAN, INFINITY, 0.0, M_E, 1.0};
    double sl[] = {-INFINITY, -INFINITY, INFINITY, NAN, NAN, 6.907755278982137, NAN, 0.0, -713.8013788281542};
    int ns = (int)(sizeof(sx) / sizeof(sx[0]));
    for (int i = 0; i < ns; i++) {
        double y, yl; float fy, fx = (float)sx[i];
        ops->exp_f64(&sx[i], &y, 1);
        ops->log_f64(&sx[i], &yl, 1);
        ops->exp_f32(&fx, &fy, 1);
        int ok = isnan(se[i]) ? isnan(y) : fabs(y - se[i]) <= 2 * ulp_of(se[i], 53, -1022) || y == se[i];
        CHECK(ok, "exp_f64(%a) = %a, want %a", sx[i], y, se[i]);
        ok = isnan(sl[i]) ? isnan(yl) : yl == sl[i] || fabs(yl - sl[i]) <= 1e-15 * fabs(sl[i]);
        CHECK(ok, "log_f64(%a) = %a, want %a", sx[i], yl, sl[i]);
        double fe = (float)se[i];
        if (i == 8) fe = 1.0;
        ok = isnan(fe) ? isnan(fy) : fy == fe || fabs(fy - fe) <= 2 * ulp_of(fe, 24, -126);
        CHECK(ok, "exp_f32(%a) = %a, want %a", fx, fy, fe);
    }
    printf("specials: exp / log of 0, -0, +-inf, NaN, +-1000, 1, a subnormal: checked\n");
}

/* relative error of y against the double-double reference, in units of eps */
static double relerr(long double y, long double ref) { return ref == 0 ? fabsl(y) : fabsl(y - ref) / fabsl(ref); }

static const int softmax_cases[][3] = REF_SOFTMAX_CASES;
static const int ce_cases[][2] = REF_CE_CASES;

#define DEFINE_OPS(FT, SFX, EPS)                                                                  \
static int run_##SFX(const fsm_ops *ops, int *lse_at)                                           \
{                                                                                                \
    double w_sm = 0, w_lsm = 0, w_lse = 0, w_loss = 0, w_grad = 0;                              \
    int ncase = (int)(sizeof(softmax_cases) / sizeof(softmax_cases[0]));                         \
    int at = 0;                                                                                  \
    for (int c = 0; c < ncase; c++) {                                                            \
        int64_t o = softmax_cases[c][0], n = softmax_cases[c][1], inner = softmax_cases[c][2];   \
        int64_t len = o * n * inner;                                                             \
        FT *x = malloc(len * sizeof(FT)), *y[2][2], *l[2];                                       \
        rng_s = 100 + c;                                                                         \
        for (int64_t i = 0; i < len; i++) x[i] = (FT)data_in();                                 \
        for (int t = 0; t < 2; t++) {                                                            \
            for (int lg = 0; lg < 2; lg++) {                                                     \
                y[t][lg] = malloc(len * sizeof(FT));                                             \
                ops->softmax_##SFX(x, y[t][lg], o, n, inner, lg, FSM_METHOD_AUTO, t + 1);        \
            }                                                                                    \
            l[t] = malloc(o * inner * sizeof(FT));                                               \
            ops->logsumexp_##SFX(x, NULL, l[t], NULL, o, n, inner, t + 1);                       \
        }                                                                                        \
        for (int lg = 0; lg < 2; lg++)                                                           \
            CHECK(memcmp(y[0][lg], y[1][lg], len * sizeof(FT)) == 0,                             \
                  #SFX " softmax(log=%d) case %d: 1 and 2 threads differ", lg, c);               \
        CHECK(memcmp(l[0], l[1], o * inner * sizeof(FT)) == 0, #SFX " logsumexp case %d: threads differ", c); \
        for (int64_t a = 0; a < o; a++)                                                          \
            for (int64_t b = 0; b < inner; b++) {                                                \
                long double lse = (long double)ref_lse_hi[at] + ref_lse_lo[at];                  \
                at++;                                                                            \
                double e = relerr(l[0][a * inner + b], lse) / EPS;                               \
                if (e > w_lse) w_lse = e;                                                        \
                for (int64_t j = 0; j < n; j++) {                                                \
                    int64_t k = (a * n + j) * inner + b;                                         \
                    long double ls = (long double)x[k] - lse;                                    \
                    e = relerr(y[0][0][k], expl(ls)) / EPS;                                      \
                    if (e > w_sm) w_sm = e;                                                      \
                    /* log_softmax: error relative to the row's scale (|x - lse| + |lse|) */     \
                    e = fabsl(y[0][1][k] - ls) / (fabsl(ls) + fabsl(lse) + 1) / EPS;              \
                    if (e > w_lsm) w_lsm = e;                                                    \
                }                                                                                \
            }                                                                                    \
        free(x); free(l[0]); free(l[1]);                                                         \
        for (int t = 0; t < 2; t++) for (int lg = 0; lg < 2; lg++) free(y[t][lg]);              \
    }                                                                                            \
    int nce = (int)(sizeof(ce_cases) / sizeof(ce_cases[0]));                                     \
    for (int c = 0; c < nce; c++) {                                                              \
        int64_t N = ce_cases[c][0], C = ce_cases[c][1];                                          \
        FT *x = malloc(N * C * sizeof(FT)), *g[2], *loss[2];                                     \
        int64_t *tg = malloc(N * sizeof(int64_t));                                               \
        rng_s = 100 + ncase + c;                                                                 \
        for (int64_t i = 0; i < N * C; i++) x[i] = (FT)data_in();                               \
        for (int64_t i = 0; i < N; i++) tg[i] = (int64_t)((uint64_t)(i * 7919 + c) % (uint64_t)C); \
        for (int t = 0; t < 2; t++) {                                                            \
            g[t] = malloc(N * C * sizeof(FT)); loss[t] = malloc(N * sizeof(FT));                 \
            ops->cross_entropy_##SFX(x, tg, NULL, NULL, -100, 0.0, 1.0, loss[t], g[t], N, C, t + 1); \
        }                                                                                        \
        CHECK(memcmp(g[0], g[1], N * C * sizeof(FT)) == 0 && memcmp(loss[0], loss[1], N * sizeof(FT)) == 0, \
              #SFX " cross_entropy case %d: 1 and 2 threads differ", c);                         \
        for (int64_t i = 0; i < N; i++) {                                                        \
            long double lse = (long double)ref_lse_hi[at] + ref_lse_lo[at];                      \
            at++;                                                                                \
            long double want = lse - x[i * C + tg[i]];                                           \
            double e = fabsl(loss[0][i] - want) / (fabsl(want) + fabsl(lse)) / EPS;              \
            if (e > w_loss) w_loss = e;                                                          \
            for (int64_t j = 0; j < C; j++) {                                                    \
                long double p = expl((long double)x[i * C + j] - lse) - (j == tg[i]);            \
                e = fabsl(g[0][i * C + j] - p) / EPS;  /* absolute: |grad| <= 1 */               \
                if (e > w_grad) w_grad = e;                                                      \
            }                                                                                    \
        }                                                                                        \
        free(x); free(tg); free(g[0]); free(g[1]); free(loss[0]); free(loss[1]);                \
    }                                                                                            \
    *lse_at = at;                                                                                \
    printf(#SFX ": softmax %.2f, log_softmax %.2f, logsumexp %.2f, cross_entropy loss %.2f, "    \
           "grad %.2f (max errors in eps; bound 32)\n", w_sm, w_lsm, w_lse, w_loss, w_grad);    \
    CHECK(w_sm <= 32 && w_lsm <= 32 && w_lse <= 32 && w_loss <= 32 && w_grad <= 32,              \
          #SFX " results beyond 32 eps");                                                        \
    return 0;                                                                                    \
}
DEFINE_OPS(float, f32, FLT_EPSILON)
DEFINE_OPS(double, f64, DBL_EPSILON)

int main(void)
{
    const char *isa = getenv("FSM_DRIVER_ISA");
    if (!isa) isa = fsm_isa_name(0);
    const fsm_ops *ops = fsm_isa_ops(isa);
    if (!ops) { printf("ISA path %s not runnable here\n", isa); return 2; }
    printf("cross driver: ISA path %s (%d compiled), long double %d bits of mantissa, threads: %s\n",
           ops->name, fsm_isa_count(), LDBL_MANT_DIG, fsm_threads_available() ? "pthread pool" : "serial");
    check_elementary(ops);
    int at32 = 0, at64 = 0;
    run_f32(ops, &at32);
    run_f64(ops, &at64);
    CHECK(at32 == (int)(sizeof(ref_lse_hi) / sizeof(ref_lse_hi[0])) && at32 == at64,
          "row references used %d / %d of %d", at32, at64, (int)(sizeof(ref_lse_hi) / sizeof(ref_lse_hi[0])));
    printf("%s: %d failures\n", failures ? "FAILED" : "OK", failures);
    return failures ? 1 : 0;
}
