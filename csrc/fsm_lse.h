/* fsm_lse.h -- logsumexp (weights b, sign) for one float type FT (included per dtype by
 * fsm_kernels_impl.c, after fsm_rows.h).
 *
 * Design (docs/DESIGN.md has the formulas; m max over unmasked, k sum of b at the max, t the sum
 * of b exp(a - m) elsewhere, accumulators double):
 *   one row     lse_max, then lse_kt (one exp per element, EXPN: a > m only where b == 0),
 *               then lse_finish (log1p(t / k) + log|k| + m, the sign) and lse_store (the rare
 *               path S = sum b exp(a), in double, when the result is not finite).
 *   inner > 1   tiles of FSM_TILE columns (lse_tile): m[], k[], t[] per column, the loops over
 *               the columns vectorize; without weights the two logs run vectorized too.
 *   small rows  (n <= FSM_SMALL_N) a group of rows is transposed into an (n, g) buffer and
 *               reduced by lse_tile (the loops then run across rows).
 *   one long row with threads: the max of each block, merged; then (k, t) of each block, summed.
 * Which of these runs, and on which thread: fsm_reduce (fsm_rows.h).
 */

typedef struct {
    const FT *a, *b;
    FT *out, *sign;
    int64_t n, inner;
    /* one long row split over threads: the row, one slot per block, the merged max */
    const FT *ar, *br;
    FT *ms;
    double *ks, *ts;
    FT m;
} F(lse_ctx);

/* finish one reduction from m (max over unmasked), k (sum of b at the max), t (sum of
   b exp(a - m) elsewhere) -- docs/DESIGN.md; returns r and writes the sign.  rare() is done by
   the caller when the result is not finite. */
static inline double F(lse_finish)(FT m, double k, double t, int want_sign, double *psgn)
{
    if (!F(finite)(m)) { *psgn = NAN; return NAN; }
    if (t != 0) t = t / k;
    double sgn = fsm_sign(t + 1.0) * fsm_sign(k);
    if (t < -1.0) t = -t - 2.0;
    double r = fsm_log1p_f64(t) + fsm_log_f64(fabs(k)) + (double)m;
    if (!want_sign && sgn < 0) r = NAN;
    *psgn = sgn;
    return r;
}

/* S = sum b exp(a) over all j (masked too), strided, in double as the reference: a b == 0
   masks any a whose exp is finite in double (a float32 a > 88 too: no 0 * inf); the rare path */
static double F(lse_rare_sum)(const FT *a, const FT *b, int64_t n, int64_t stride)
{
    double S = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double e = fsm_exp_f64((double)a[j * stride]);
        S += b ? (double)b[j * stride] * e : e;
    }
    return S;
}

static inline void F(lse_store)(double r, double sgn, const FT *a, const FT *b, int64_t n,
                                int64_t stride, FT *out, FT *sign)
{
    FT rf = (FT)r;
    if (FSM_UNLIKELY(!F(finite)(rf))) {
        double S = F(lse_rare_sum)(a, b, n, stride);
        sgn = fsm_sign(S);
        rf = (FT)(sign ? fsm_log_f64(fabs(S)) : fsm_log_f64(S));
    }
    *out = rf;
    if (sign) *sign = (FT)sgn;
}

/* (m over unmasked) of a[0:n) */
static inline FT F(lse_max)(const FT *a, const FT *b, int64_t n)
{
    if (!b) return F(row_max)(a, n);
    FT m = -INFINITY;
#if defined(__clang__)
    /* as F(row_max) under clang (fsm_rows.h): lanes, then combined */
    FT acc[64 / sizeof(FT)];
    for (int j = 0; j < FSM_MAX_LANES; j++) acc[j] = -INFINITY;
    int64_t i = 0;
    for (; i + FSM_MAX_LANES <= n; i += FSM_MAX_LANES)
        for (int j = 0; j < FSM_MAX_LANES; j++) {
            FT v = b[i + j] != 0 ? a[i + j] : (FT)-INFINITY;
            acc[j] = v > acc[j] ? v : acc[j];
        }
    for (int j = 0; j < FSM_MAX_LANES; j++) m = acc[j] > m ? acc[j] : m;
    for (; i < n; i++) {
        FT v = b[i] != 0 ? a[i] : (FT)-INFINITY;
        m = v > m ? v : m;
    }
#else
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) {
        FT v = b[i] != 0 ? a[i] : (FT)-INFINITY;
        m = v > m ? v : m;
    }
#endif
    return m;
}

/* k, t of a[0:n) given m (finite) */
static inline void F(lse_kt)(const FT *a, const FT *b, int64_t n, FT m, double *pk, double *pt)
{
    double k = 0.0, t = 0.0;
    if (!b) {
#pragma omp simd reduction(+ : k, t)
        FSM_CLANG_WIDTH   /* fsm_rows.h: full width for clang too */
        for (int64_t i = 0; i < n; i++) {
            FT e = EXPN(a[i] - m);
            k += a[i] == m ? 1.0 : 0.0;
            t += a[i] != m ? (double)e : 0.0;
        }
    } else {
#pragma omp simd reduction(+ : k, t)
        FSM_CLANG_WIDTH
        for (int64_t i = 0; i < n; i++) {
            FT e = b[i] * EXPN(a[i] - m);     /* a > m only where b == 0: not summed */
            k += a[i] == m ? (double)b[i] : 0.0;
            t += (a[i] != m && b[i] != 0) ? (double)e : 0.0;
        }
    }
    *pk = k;
    *pt = t;
}

/* ================================================================ rows */

/* one contiguous row a[0:n) */
static void F(lse_row)(const FT *a, const FT *b, int64_t n, FT *out, FT *sign)
{
    FT m = F(lse_max)(a, b, n);
    double k = 0.0, t = 0.0, sgn;
    if (F(finite)(m)) F(lse_kt)(a, b, n, m, &k, &t);
    double r = F(lse_finish)(m, k, t, sign != NULL, &sgn);
    F(lse_store)(r, sgn, a, b, n, 1, out, sign);
}

/* columns [c0, c1) of a slab (n x inner): out[c0:c1), sign[c0:c1) */
static void F(lse_tile)(const FT *a, const FT *b, FT *out, FT *sign, int64_t n, int64_t inner,
                        int64_t c0, int64_t c1)
{
    FT m[FSM_TILE];
    double k[FSM_TILE], t[FSM_TILE];
    int64_t w = c1 - c0;
    for (int64_t c = 0; c < w; c++) { m[c] = -INFINITY; k[c] = 0.0; t[c] = 0.0; }
    for (int64_t j = 0; j < n; j++) {
        const FT *ar = a + j * inner + c0;
        if (!b) {
#pragma omp simd
            for (int64_t c = 0; c < w; c++) m[c] = ar[c] > m[c] ? ar[c] : m[c];
        } else {
            const FT *br = b + j * inner + c0;
#pragma omp simd
            for (int64_t c = 0; c < w; c++) m[c] = (br[c] != 0 && ar[c] > m[c]) ? ar[c] : m[c];
        }
    }
    FT mm[FSM_TILE];
#pragma omp simd
    for (int64_t c = 0; c < w; c++) mm[c] = (m[c] - m[c] == 0) ? m[c] : (FT)0;
    for (int64_t j = 0; j < n; j++) {
        const FT *ar = a + j * inner + c0;
        if (!b) {
#pragma omp simd
            FSM_CLANG_WIDTH
            for (int64_t c = 0; c < w; c++) {
                FT e = EXP(ar[c] - mm[c]);
                k[c] += ar[c] == m[c] ? 1.0 : 0.0;
                t[c] += ar[c] != m[c] ? (double)e : 0.0;
            }
        } else {
            const FT *br = b + j * inner + c0;
#pragma omp simd
            FSM_CLANG_WIDTH
            for (int64_t c = 0; c < w; c++) {
                FT e = br[c] * EXP(ar[c] - mm[c]);
                k[c] += ar[c] == m[c] ? (double)br[c] : 0.0;
                t[c] += (ar[c] != m[c] && br[c] != 0) ? (double)e : 0.0;
            }
        }
    }
    if (!b) {
        /* no weights: k >= 1 and t >= 0 whenever m is finite, the sign is +1; the two logs of
           lse_finish run vectorized across the columns (same formulas, same results) */
        double rr[FSM_TILE];
#pragma omp simd
        for (int64_t c = 0; c < w; c++) {
            double kk = k[c] > 0 ? k[c] : 1.0;
            double tt = t[c] / kk;
            double u = 1.0 + tt;
            double l1 = u == 1.0 ? tt : fsm_log_f64(u) * (tt / (u - 1.0));
            rr[c] = l1 + fsm_log_f64(kk) + (double)m[c];
        }
        for (int64_t c = 0; c < w; c++) {
            int fin = F(finite)(m[c]);
            F(lse_store)(fin ? rr[c] : NAN, fin ? 1.0 : NAN, a + c0 + c, NULL, n, inner,
                         out + c0 + c, sign ? sign + c0 + c : NULL);
        }
        return;
    }
    for (int64_t c = 0; c < w; c++) {
        double sgn;
        double r = F(lse_finish)(m[c], k[c], t[c], sign != NULL, &sgn);
        F(lse_store)(r, sgn, a + c0 + c, b ? b + c0 + c : NULL, n, inner, out + c0 + c,
                     sign ? sign + c0 + c : NULL);
    }
}

/* small rows [r0, r0 + g), g <= FSM_TILE: transposed into an (n, g) buffer, whose columns are
   then reduced like inner > 1 (the loops run across rows, so they vectorize) */
static void F(lse_group)(const void *p, int64_t r0, int64_t g)
{
    const F(lse_ctx) *c = p;
    const int64_t n = c->n;
    FT ta[FSM_GROUP], tb[FSM_GROUP];
    const FT *ag = c->a + r0 * n;
    for (int64_t r = 0; r < g; r++)
        for (int64_t j = 0; j < n; j++) ta[j * g + r] = ag[r * n + j];
    if (c->b) {
        const FT *bg = c->b + r0 * n;
        for (int64_t r = 0; r < g; r++)
            for (int64_t j = 0; j < n; j++) tb[j * g + r] = bg[r * n + j];
    }
    F(lse_tile)(ta, c->b ? tb : NULL, c->out + r0, c->sign ? c->sign + r0 : NULL, n, g, 0, g);
}

/* rows [lo, hi) */
static void F(lse_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(lse_ctx) *c = p;
    const int64_t n = c->n;
    (void)k;
    if (n <= FSM_SMALL_N) {
        fsm_small_rows(p, lo, hi, n, FSM_TILE, F(lse_group));
        return;
    }
    for (int64_t r = lo; r < hi; r++)
        F(lse_row)(c->a + r * n, c->b ? c->b + r * n : NULL, n, c->out + r,
                   c->sign ? c->sign + r : NULL);
}

/* inner > 1: slab o, columns [c0, c1) */
static void F(lse_slab_tile)(const void *p, int64_t o, int64_t c0, int64_t c1)
{
    const F(lse_ctx) *c = p;
    int64_t off = o * c->n * c->inner;
    F(lse_tile)(c->a + off, c->b ? c->b + off : NULL, c->out + o * c->inner,
                c->sign ? c->sign + o * c->inner : NULL, c->n, c->inner, c0, c1);
}

/* ================================================================ one long row, split */

/* the blocks [lo, hi) of the row c->ar; block k writes slot k */
static void F(lse_block_max)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(lse_ctx) *c = p;
    c->ms[k] = F(lse_max)(c->ar + lo, c->br ? c->br + lo : NULL, hi - lo);
}

static void F(lse_block_kt)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(lse_ctx) *c = p;
    F(lse_kt)(c->ar + lo, c->br ? c->br + lo : NULL, hi - lo, c->m, &c->ks[k], &c->ts[k]);
}

/* row r in nc blocks on nt threads */
static void F(lse_long_row)(void *p, int64_t r, int nc, int nt)
{
    F(lse_ctx) *c = p;
    const int64_t n = c->n;
    FT ms[FSM_MAX_CHUNKS];
    double ks[FSM_MAX_CHUNKS], ts[FSM_MAX_CHUNKS];
    c->ar = c->a + r * n;
    c->br = c->b ? c->b + r * n : NULL;
    c->ms = ms;
    c->ks = ks;
    c->ts = ts;
    fsm_run_ranges(F(lse_block_max), c, n, nc, nt);
    FT m = F(slots_max)(ms, nc);
    double k = 0.0, t = 0.0, sgn;
    if (F(finite)(m)) {
        c->m = m;
        fsm_run_ranges(F(lse_block_kt), c, n, nc, nt);
        for (int i = 0; i < nc; i++) { k += ks[i]; t += ts[i]; }
    }
    double res = F(lse_finish)(m, k, t, c->sign != NULL, &sgn);
    F(lse_store)(res, sgn, c->ar, c->br, n, 1, c->out + r, c->sign ? c->sign + r : NULL);
}

/* ================================================================ the kernel */

static void F(logsumexp)(const FT *a, const FT *b, FT *out, FT *sign, int64_t outer, int64_t n,
                         int64_t inner, int nthreads)
{
    F(lse_ctx) c = {a, b, out, sign, n, inner, NULL, NULL, NULL, NULL, NULL, 0};
    int nt = fsm_pick_threads(outer * n * inner * (b ? 2 : 1), nthreads);
    fsm_reduce(&c, outer, inner, nt, F(lse_rows), F(lse_slab_tile), F(lse_long_row));
}
