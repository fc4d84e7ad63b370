/* fsm_temperature.h -- softmax, log_softmax, logsumexp and cross-entropy with a temperature,
 * for one float type FT (included per dtype by fsm_kernels_impl.c, after fsm_ce.h).
 *
 * Design (docs/training.md, "Temperature and base"; names as in docs/DESIGN.md):
 *   Each reduced row r has a factor c = 1/T (ln(base) for a base), c = factor[r * fstride]
 *   (fstride 0: one factor for the call).  The ops are those of x * c, fused: no pass and no
 *   copy of x more than the plain kernels make.
 *     m = max x where c > 0, min x where c < 0 (then (x - m) c <= 0: the exps cannot overflow,
 *         and max(x c) = m c);  a row whose m is not finite follows the plain contract
 *         (softmax: NaN row; log_softmax: m = 0, i.e. the plain op on x c; cross-entropy:
 *         ce_shift of fsm_ce.h)
 *     softmax      e = exp((x - m) c) stored while summed, then scaled by 1/s
 *     log_softmax  y = (x - m) c stored while exp(y) is summed, then y -= log(s) (the dominant
 *                  entry's log(s) from the rest-sum, as lsm_log: y == 0 exactly where x == m)
 *     logsumexp    m + T (log1p(t / k) + log|k|), k, t as the plain kernel with a -> (a - m) c;
 *                  not finite: T log(sum b exp(a c)) in double (the plain rare path on a c)
 *     cross-entropy  the plain formulas with x - m -> (x - m) c, and the gradient times c
 *   float32: exp((x - m) c) takes the rounding error of x - m (TwoSum) into its reduced argument
 *   and, with an FMA, forms the product exactly inside the range reduction (texp64), so the exps
 *   keep the plain kernels' accuracy for one multiply more per element.
 *   These kernels are separate from the plain ones, which stay exactly as they were (a call
 *   without temperature never reaches this file).  Simpler, too: three passes per row (no online
 *   variant, no group path for small rows, no split of one long row over threads), rows or
 *   FSM_TILE column tiles over the threads; docs/training.md has the measured cost.
 */

typedef struct {
    const FT *x, *b;
    FT *y, *sign;
    const double *f;
    int64_t fstride, n, inner;
    int log;
    int stream;
} F(temp_ctx);

/* the min of x[0:n) (NaN skipped, as row_max) */
#if defined(__clang__)
/* clang: fsm_rows.h row_max's independent lanes (it does not vectorize the select reduction) */
static inline FT F(row_min)(const FT *x, int64_t n)
{
    FT acc[64 / sizeof(FT)];
    for (int j = 0; j < FSM_MAX_LANES; j++) acc[j] = INFINITY;
    int64_t i = 0;
    for (; i + FSM_MAX_LANES <= n; i += FSM_MAX_LANES)
        for (int j = 0; j < FSM_MAX_LANES; j++) acc[j] = x[i + j] < acc[j] ? x[i + j] : acc[j];
    FT m = INFINITY;
    for (int j = 0; j < FSM_MAX_LANES; j++) m = acc[j] < m ? acc[j] : m;
    for (; i < n; i++) m = x[i] < m ? x[i] : m;
    return m;
}
#else
static inline FT F(row_min)(const FT *x, int64_t n)
{
    FT m = INFINITY;
#pragma omp simd reduction(min : m)
    for (int64_t i = 0; i < n; i++) m = x[i] < m ? x[i] : m;
    return m;
}
#endif

/* the extreme of x[0:n) in the direction of c */
static inline FT F(row_extreme)(const FT *x, int64_t n, double c)
{
    return c > 0 ? F(row_max)(x, n) : F(row_min)(x, n);
}

/* exp((x - m) c) * 2^64 for (x - m) c <= 0 or NaN */
#if FT_IS_F32 && (defined(__FMA__) || defined(__AVX512F__))
/* fsm_exp64n2sum_f32 with the factor folded into its range reduction: n = rint(d c / ln2) from
   one FMA (c log2e is loop-invariant), r = d c - n ln2 with the product exact inside an FMA
   (n * the 9-bit head of ln2 is exact), then the tail of ln2 and lo c, lo the rounding error of
   d = x - m (TwoSum).  One multiply more than the plain exp per element. */
FSM_INLINE float F(texp64)(float x, float m, float c)
{
    float d = x - m;
    float bb = d - x;
    float lo = (x - (d - bb)) + (-m - bb);
    const float magic = 0x1.8p23f + 191.0f;   /* 1.5 * 2^23 + (127 + 64), as fsm_math.h */
    float t = d * (c * 0x1.715476p+0f) + magic;
    float n = t - magic;
    float r = __builtin_fmaf(d, c, -(n * 0.693359375f));
    r = __builtin_fmaf(n, 2.12194440e-4f, r);
    r = __builtin_fmaf(lo, c, r);
    float q = 0x1.693e14p-10f;
    q = q * r + 0x1.123c2cp-7f;
    q = q * r + 0x1.555a70p-5f;
    q = q * r + 0x1.55548ep-3f;
    q = q * r + 0x1.fffffap-2f;
    float p = (r * r) * q + r;
    float s = fsm_f32_from_bits(fsm_f32_bits(t) << 23);   /* 2^(n+64) */
    float y = s * p + s;
    return n < -151.0f ? 0.0f : y;            /* exp < 2^-150 (also -inf); NaN kept */
}
#elif FT_IS_F32
FSM_INLINE float F(texp64)(float x, float m, float c)
{
    float d = x - m;                      /* TwoSum: d + lo == x - m exactly */
    float bb = d - x;
    float lo = (x - (d - bb)) + (-m - bb);
    return fsm_exp64n2sum_f32(d * c, lo * c);
}
#else
FSM_INLINE double F(texp64)(double x, double m, double c) { return fsm_exp64n_f64((x - m) * c); }
#endif

FSM_INLINE FT F(texpn)(FT x, FT m, FT c) { return F(texp64)(x, m, c) * (FT)0x1p-64; }

/* out = exp((x - m) c) * 2^64, returns their sum (row_expsum_store64's blocks and lanes) */
static inline double F(trow_expsum_store64)(const FT *x, FT *out, int64_t n, FT m, FT c)
{
    double s = 0.0;
    int64_t i = 0;
    for (; i + FSM_SUMB <= n; i += FSM_SUMB) {
        const FT *xb = x + i, *xc = x + i + FSM_SUMB / 2;
        FT *ob = out + i, *oc = out + i + FSM_SUMB / 2;
        FT sb = 0, sc = 0;
#pragma omp simd reduction(+ : sb, sc)
        for (int64_t j = 0; j < FSM_SUMB / 2; j++) {
            FT e = F(texp64)(xb[j], m, c), f = F(texp64)(xc[j], m, c);
            ob[j] = e;
            oc[j] = f;
            sb += e;
            sc += f;
        }
        s += (double)sb + (double)sc;
    }
    FT sb = 0;
#pragma omp simd reduction(+ : sb)
    for (int64_t j = i; j < n; j++) {
        FT e = F(texp64)(x[j], m, c);
        out[j] = e;
        sb += e;
    }
    return s + (double)sb;
}

/* y = (x - m) c (y may be x), returns sum exp(y) in double; neg: m is the finite extreme */
static inline double F(trow_shiftstore)(const FT *x, FT *y, int64_t n, FT m, FT c, int neg)
{
    double s = 0.0;
    if (neg) {
#pragma omp simd reduction(+ : s)
        FSM_CLANG_WIDTH
        for (int64_t i = 0; i < n; i++) {
            FT d = (x[i] - m) * c;
            y[i] = d;
            s += (double)EXPN(d);
        }
    } else {
#pragma omp simd reduction(+ : s)
        FSM_CLANG_WIDTH
        for (int64_t i = 0; i < n; i++) {
            FT d = (x[i] - m) * c;
            y[i] = d;
            s += (double)EXP(d);
        }
    }
    return s;
}

/* ================================================================ softmax / log_softmax */

/* row r (inner == 1); e: a scratch row when streaming, else NULL */
static void F(tsoftmax_row)(const F(temp_ctx) *c, int64_t r, FT *e)
{
    const int64_t n = c->n;
    const FT *x = c->x + r * n;
    FT *y = c->y + r * n;
    FT *dst = e ? e : y;
    const double cd = c->f[r * c->fstride];
    const FT cf = (FT)cd;
    FT mx = F(row_extreme)(x, n, cd);
    const int fin = F(finite)(mx);
    if (!c->log) {
        FT m = fin ? mx : (FT)NAN;
        double s = F(trow_expsum_store64)(x, dst, n, m, cf);   /* 2^64 * the sum */
        if (e) F(row_stream)(e, y, n, (FT)(1.0 / s), (FT)0);
        else F(row_scale)(y, n, (FT)(1.0 / s));
    } else {
        FT m = fin ? mx : (FT)0;
        double s = F(trow_shiftstore)(x, dst, n, m, cf, fin);
        /* dst holds (x - m) c: 0 exactly where x == m, so its rest is that of the max at 0 */
        FT ls = (FT)F(lsm_log)(s, dst, n, (FT)0, fin);
        if (e) F(row_stream)(e, y, n, (FT)1, -ls);
        else F(row_sub)(y, n, ls);
    }
}

static void F(tsoftmax_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(temp_ctx) *c = p;
    (void)k;
    if (c->stream) {
        FT e[FSM_NT_SCRATCH / sizeof(FT)];
        for (int64_t r = lo; r < hi; r++) F(tsoftmax_row)(c, r, e);
        fsm_stream_fence();
        return;
    }
    for (int64_t r = lo; r < hi; r++) F(tsoftmax_row)(c, r, NULL);
}

static void F(tsoftmax_long)(void *p, int64_t r, int nc, int nt)
{
    (void)nc;
    (void)nt;
    F(tsoftmax_rows)(p, 0, r, r + 1);
}

/* slab o, columns [c0, c1) (inner > 1): per column m, s and its factor */
/* a column tile [c0, c0 + w) of slab o: each column's factor cf, its sign sg and the running
   max m = -inf (the tiles of softmax and logsumexp) */
static inline void F(tile_factors)(const double *f, int64_t fstride, int64_t o, int64_t inner,
                                   int64_t c0, int64_t w, FT *cf, FT *sg, FT *m)
{
    for (int64_t c = 0; c < w; c++) {
        double fc = f[(o * inner + c0 + c) * fstride];
        cf[c] = (FT)fc;
        sg[c] = fc > 0 ? (FT)1 : (FT)-1;
        m[c] = -INFINITY;
    }
}

static void F(tsoftmax_tile)(const void *p, int64_t o, int64_t c0, int64_t c1)
{
    const F(temp_ctx) *ctx = p;
    const int64_t n = ctx->n, inner = ctx->inner, off = o * n * inner;
    const FT *x = ctx->x + off;
    FT *y = ctx->y + off;
    const int log = ctx->log;
    FT m[FSM_TILE], cf[FSM_TILE], sg[FSM_TILE], mm[FSM_TILE], k[FSM_TILE];
    double s[FSM_TILE];
    int64_t w = c1 - c0;
    F(tile_factors)(ctx->f, ctx->fstride, o, inner, c0, w, cf, sg, m);
    for (int64_t c = 0; c < w; c++) s[c] = 0.0;
    for (int64_t j = 0; j < n; j++) {       /* the max of x * sign(c) */
        const FT *xr = x + j * inner + c0;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
            FT v = xr[c] * sg[c];
            m[c] = v > m[c] ? v : m[c];
        }
    }
    const FT mfix = log ? (FT)0 : (FT)NAN;
    for (int64_t c = 0; c < w; c++) {
        m[c] = m[c] * sg[c];
        mm[c] = F(finite)(m[c]) ? m[c] : mfix;
    }
    for (int64_t j = 0; j < n; j++) {
        const FT *xr = x + j * inner + c0;
        FT *yr = y + j * inner + c0;
        if (!log) {
#pragma omp simd
            for (int64_t c = 0; c < w; c++) {
                FT e = F(texpn)(xr[c], mm[c], cf[c]);
                yr[c] = e;
                s[c] += (double)e;
            }
        } else {
#pragma omp simd
            for (int64_t c = 0; c < w; c++) s[c] += (double)EXP((xr[c] - mm[c]) * cf[c]);
        }
    }
    if (!log) {
        for (int64_t c = 0; c < w; c++) k[c] = (FT)(1.0 / s[c]);
        for (int64_t j = 0; j < n; j++) {
            FT *yr = y + j * inner + c0;
#pragma omp simd
            for (int64_t c = 0; c < w; c++) yr[c] = yr[c] * k[c];
        }
        return;
    }
    for (int64_t c = 0; c < w; c++) {
        double L = fsm_log_f64(s[c]);
        if (FSM_UNLIKELY(s[c] < FSM_LSM_RECOMPUTE) && F(finite)(m[c])) {   /* lsm_log */
            double rest = 0.0, kt = 0.0;
            for (int64_t j = 0; j < n; j++) {
                FT d = (x[j * inner + c0 + c] - mm[c]) * cf[c];
                if (d == 0) kt += 1.0;
                else rest += (double)EXPN(d);
            }
            L = F(log_rest)(rest, kt);
        }
        k[c] = (FT)L;
    }
    for (int64_t j = 0; j < n; j++) {
        const FT *xr = x + j * inner + c0;
        FT *yr = y + j * inner + c0;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) yr[c] = (xr[c] - mm[c]) * cf[c] - k[c];
    }
}

static void F(softmax_temp)(const FT *x, FT *y, int64_t outer, int64_t n, int64_t inner,
                            int log, const double *factor, int64_t fstride, int nthreads)
{
    F(temp_ctx) c = {x, NULL, y, NULL, factor, fstride, n, inner, log, 0};
    c.stream = inner == 1 && outer * n * (int64_t)sizeof(FT) >= FSM_NT_BYTES
               && n * (int64_t)sizeof(FT) <= FSM_NT_SCRATCH && n > FSM_SMALL_N
               && getenv("FASTSOFTMAX_C_NO_STREAM") == NULL;
    int nt = fsm_pick_threads(outer * n * inner, nthreads);
    fsm_reduce(&c, outer, inner, nt, F(tsoftmax_rows), F(tsoftmax_tile), F(tsoftmax_long));
}

/* ================================================================ logsumexp */

/* m + T (log1p(t / k) + log|k|) and the sign, as lse_finish (NaN when m is not finite) */
static inline double F(tlse_finish)(FT m, double k, double t, double T, int want_sign,
                                    double *psgn)
{
    if (!F(finite)(m)) { *psgn = NAN; return NAN; }
    if (t != 0) t = t / k;
    double sgn = fsm_sign(t + 1.0) * fsm_sign(k);
    if (t < -1.0) t = -t - 2.0;
    double r = (double)m + T * (fsm_log1p_f64(t) + fsm_log_f64(fabs(k)));
    if (!want_sign && sgn < 0) r = NAN;
    *psgn = sgn;
    return r;
}

/* the rare path: T log(S), S = sum b exp(a c) over all j, in double (lse_store) */
static inline void F(tlse_store)(double r, double sgn, const FT *a, const FT *b, int64_t n,
                                 int64_t stride, double cd, FT *out, FT *sign)
{
    FT rf = (FT)r;
    if (FSM_UNLIKELY(!F(finite)(rf))) {
        double S = 0.0;
        for (int64_t j = 0; j < n; j++) {
            double e = fsm_exp_f64((double)a[j * stride] * cd);
            S += b ? (double)b[j * stride] * e : e;
        }
        sgn = fsm_sign(S);
        rf = (FT)((1.0 / cd) * (sign ? fsm_log_f64(fabs(S)) : fsm_log_f64(S)));
    }
    *out = rf;
    if (sign) *sign = (FT)sgn;
}

/* one reduction a[j * stride], j < n (b: weights or NULL) */
static void F(tlse_strided)(const FT *a, const FT *b, int64_t n, int64_t stride, double cd,
                            FT *out, FT *sign)
{
    const FT cf = (FT)cd, sg = cd > 0 ? (FT)1 : (FT)-1;
    FT m;
    if (!b && stride == 1) {
        m = F(row_extreme)(a, n, cd);
    } else {
        FT v = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            FT u = (b && b[j * stride] == 0) ? (FT)-INFINITY : a[j * stride] * sg;
            v = u > v ? u : v;
        }
        m = v * sg;
    }
    double k = 0.0, t = 0.0, sgn;
    if (F(finite)(m)) {
        if (!b && stride == 1) {
#pragma omp simd reduction(+ : k, t)
            FSM_CLANG_WIDTH
            for (int64_t i = 0; i < n; i++) {
                FT e = F(texpn)(a[i], m, cf);
                k += a[i] == m ? 1.0 : 0.0;
                t += a[i] != m ? (double)e : 0.0;
            }
        } else {
            for (int64_t j = 0; j < n; j++) {
                FT av = a[j * stride], bv = b ? b[j * stride] : (FT)1;
                if (bv == 0) continue;
                if (av == m) k += (double)bv;
                else t += (double)(bv * F(texpn)(av, m, cf));
            }
        }
    }
    double r = F(tlse_finish)(m, k, t, 1.0 / cd, sign != NULL, &sgn);
    F(tlse_store)(r, sgn, a, b, n, stride, cd, out, sign);
}

static void F(tlse_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(temp_ctx) *c = p;
    const int64_t n = c->n;
    (void)k;
    for (int64_t r = lo; r < hi; r++)
        F(tlse_strided)(c->x + r * n, c->b ? c->b + r * n : NULL, n, 1, c->f[r * c->fstride],
                        c->y + r, c->sign ? c->sign + r : NULL);
}

static void F(tlse_long)(void *p, int64_t r, int nc, int nt)
{
    (void)nc;
    (void)nt;
    F(tlse_rows)(p, 0, r, r + 1);
}

/* inner > 1: slab o, columns [c0, c1); without weights the max and the exps run vectorized
   across the columns, with weights column by column */
static void F(tlse_tile)(const void *p, int64_t o, int64_t c0, int64_t c1)
{
    const F(temp_ctx) *ctx = p;
    const int64_t n = ctx->n, inner = ctx->inner, off = o * n * inner;
    const FT *a = ctx->x + off;
    const FT *b = ctx->b ? ctx->b + off : NULL;
    FT *out = ctx->y + o * inner, *sign = ctx->sign ? ctx->sign + o * inner : NULL;
    if (b) {
        for (int64_t c = c0; c < c1; c++)
            F(tlse_strided)(a + c, b + c, n, inner, ctx->f[(o * inner + c) * ctx->fstride],
                            out + c, sign ? sign + c : NULL);
        return;
    }
    FT m[FSM_TILE], cf[FSM_TILE], sg[FSM_TILE], mm[FSM_TILE];
    double k[FSM_TILE], t[FSM_TILE];
    int64_t w = c1 - c0;
    F(tile_factors)(ctx->f, ctx->fstride, o, inner, c0, w, cf, sg, m);
    for (int64_t c = 0; c < w; c++) k[c] = t[c] = 0.0;
    for (int64_t j = 0; j < n; j++) {
        const FT *ar = a + j * inner + c0;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
            FT v = ar[c] * sg[c];
            m[c] = v > m[c] ? v : m[c];
        }
    }
    for (int64_t c = 0; c < w; c++) {
        m[c] = m[c] * sg[c];
        mm[c] = F(finite)(m[c]) ? m[c] : (FT)0;
    }
    for (int64_t j = 0; j < n; j++) {
        const FT *ar = a + j * inner + c0;
#pragma omp simd
        FSM_CLANG_WIDTH
        for (int64_t c = 0; c < w; c++) {
            FT e = F(texpn)(ar[c], mm[c], cf[c]);
            k[c] += ar[c] == m[c] ? 1.0 : 0.0;
            t[c] += ar[c] != m[c] ? (double)e : 0.0;
        }
    }
    for (int64_t c = 0; c < w; c++) {
        double sgn;
        double cd = ctx->f[(o * inner + c0 + c) * ctx->fstride];
        double r = F(tlse_finish)(m[c], k[c], t[c], 1.0 / cd, sign != NULL, &sgn);
        F(tlse_store)(r, sgn, a + c0 + c, NULL, n, inner, cd, out + c0 + c,
                      sign ? sign + c0 + c : NULL);
    }
}

static void F(logsumexp_temp)(const FT *a, const FT *b, FT *out, FT *sign, int64_t outer,
                              int64_t n, int64_t inner, const double *factor, int64_t fstride,
                              int nthreads)
{
    F(temp_ctx) c = {a, b, out, sign, factor, fstride, n, inner, 0, 0};
    int nt = fsm_pick_threads(outer * n * inner * (b ? 2 : 1), nthreads);
    fsm_reduce(&c, outer, inner, nt, F(tlse_rows), F(tlse_tile), F(tlse_long));
}

/* ================================================================ cross-entropy */

typedef struct {
    const FT *x;
    const int64_t *target;
    const FT *probs, *weight;
    int64_t ignore_index;
    double eps, scale, wsum;
    FT *loss, *grad;
    int64_t N, C;
    const double *f;
    int64_t fstride;
} F(tce_ctx);

/* row i: the plain ce_row_target / ce_row_probs on x c (d_j = (x_j - m) c), gradient times c */
static void F(tce_row)(const F(tce_ctx) *c, int64_t i)
{
    const int64_t C = c->C;
    const FT *x = c->x + i * C;
    FT *g = c->grad ? c->grad + i * C : NULL;
    const FT *w = c->weight;
    const FT *P = c->probs ? c->probs + i * C : NULL;
    const double eps = c->eps, eC = eps / (double)C;
    const double cd = c->f[i * c->fstride];
    const FT cf = (FT)cd;
    int64_t ti = 0;
    if (!P) {
        ti = c->target[i];
        if (ti == c->ignore_index) {
            c->loss[i] = 0;
            if (g)
                for (int64_t j = 0; j < C; j++) g[j] = 0;
            return;
        }
    }
    const double xt = P ? 0.0 : (double)x[ti];      /* read before g (may be x) is written */
    FT m = F(row_extreme)(x, C, cd);
    const int neg = F(finite)(m);
    if (FSM_UNLIKELY(!neg)) m = F(ce_shift)(m);   /* fsm_ce.h */
    const FT a = (FT)(1.0 - eps), eCf = (FT)eC;
    /* the sums the loss needs besides s, read from x before the exp pass may overwrite it */
    double sx = 0.0, Q = 0.0;
    if (P) {
#pragma omp simd reduction(+ : sx, Q)
        for (int64_t j = 0; j < C; j++) {
            FT q = a * P[j] + eCf;
            if (w) q = w[j] * q;
            double d = ((double)x[j] - (double)m) * cd;
            Q += (double)q;
            sx += d == 0 ? 0.0 : (double)q * d;
        }
    } else if (eps != 0) {
#pragma omp simd reduction(+ : sx)
        for (int64_t j = 0; j < C; j++) {
            double d = ((double)x[j] - (double)m) * cd;
            sx += d == 0 ? 0.0 : (w ? (double)w[j] : 1.0) * d;
        }
    }
    /* e = exp((x - m) c) into g (or a scratch block), as softmax's exp pass: scaled by 2^64
       where m is the finite extreme (the sum with it: only their ratios are used, and
       s * 2^-64 is exact) */
    FT buf[FSM_BLOCK];
    double s = 0.0;
    for (int64_t b0 = 0; b0 < C; b0 += FSM_BLOCK) {
        int64_t len = C - b0 < FSM_BLOCK ? C - b0 : FSM_BLOCK;
        FT *eb = g ? g + b0 : buf;
        if (FSM_LIKELY(neg)) {
            s += F(trow_expsum_store64)(x + b0, eb, len, m, cf);
        } else {
            for (int64_t j = 0; j < len; j++) {
                FT e = EXP((x[b0 + j] - m) * cf);
                eb[j] = e;
                s += (double)e;
            }
        }
    }
    const double sl = neg ? s * 0x1p-64 : s;      /* the sum itself */
    const double ls = fsm_log_f64(sl);
    double wt = 1.0;
    if (P) {
        c->loss[i] = (FT)(Q * ls - sx);
    } else {
        wt = w ? (double)w[ti] : 1.0;
        Q = (1.0 - eps) * wt + eC * c->wsum;
        c->loss[i] = (FT)F(ce_loss_target)(eps, eC, wt, c->wsum, (xt - (double)m) * cd, ls, sx);
    }
    if (!g) return;
    const double sc = c->scale * cd;
    const FT cs = (FT)(Q / s * sc);
    if (P) {
        const FT fs = (FT)sc;
#pragma omp simd
        for (int64_t j = 0; j < C; j++) {
            FT q = a * P[j] + eCf;
            if (w) q = w[j] * q;
            g[j] = g[j] * cs - fs * q;
        }
        return;
    }
    const double et = (double)g[ti];
    const FT q0 = (FT)(eC * sc);
    if (w) {
#pragma omp simd
        for (int64_t j = 0; j < C; j++) g[j] = g[j] * cs - q0 * w[j];
    } else {
#pragma omp simd
        for (int64_t j = 0; j < C; j++) g[j] = g[j] * cs - q0;
    }
    const double qt = (1.0 - eps) * wt + eC * wt;
    g[ti] = (FT)(sc * (et * (Q / s) - qt));
}

static void F(tce_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    (void)k;
    for (int64_t i = lo; i < hi; i++) F(tce_row)(p, i);
}

static void F(cross_entropy_temp)(const FT *logits, const int64_t *target, const FT *probs,
                                  const FT *weight, int64_t ignore_index, double smoothing,
                                  double scale, FT *loss, FT *grad, int64_t N, int64_t C,
                                  const double *factor, int64_t fstride, int nthreads)
{
    double wsum = (double)C;
    if (weight) {
        wsum = 0.0;
        for (int64_t j = 0; j < C; j++) wsum += (double)weight[j];
    }
    F(tce_ctx) c = {logits, target, probs, weight, ignore_index, smoothing, scale, wsum,
                    loss, grad, N, C, factor, fstride};
    int nt = fsm_pick_threads(N * C * (grad ? 2 : 1), nthreads);
    fsm_run_rows(F(tce_rows), &c, N, nt);
}
