/* fsm_kernels_body.h -- the kernels for one float type FT (included by fsm_kernels_impl.c with
 * FT = float, then FT = double; F(name) appends _f32 / _f64; EXP, EXPD, EXPN, EXPDN and LOGT
 * are fsm_math.h's functions, chosen per type by fsm_kernels_impl.c).
 *
 * Design (names as in docs/DESIGN.md: m running max, s sum):
 *   Accumulators are double for both dtypes (the float32 -> double widening is vectorized).
 *   Rows (inner == 1):
 *     three-pass  m = max x;  s = sum e, e = exp(x - m) stored into out;  out *= 1/s
 *     online      per FSM_BLOCK block: bm = max(block); if bm > m: s *= exp(m - bm), m = bm;
 *                 s += sum exp(x - m) over the block (still in L1); then one output pass
 *                 out = exp(x - m) / s.  x is read twice from memory instead of out being
 *                 written twice: better once a row no longer fits the L2 cache.
 *     log_softmax out = (x - m) - log(s) after either stats pass.
 *     small rows  (n <= FSM_SMALL_N): groups of rows; per-row max, then one vector exp over the
 *                 whole group's contiguous (x - m), then per-row sums and scaling.
 *     one long row with threads: each thread computes (m, s) of its block, the pairs are merged
 *                 ((m1,s1)+(m2,s2) = (M, s1 e^(m1-M) + s2 e^(m2-M))), then the output pass is split.
 *   inner > 1: tiles of FSM_TILE contiguous columns, accumulators m[], s[] per column, the loops
 *     over the tile's columns vectorize.
 *   A non-finite row max follows the contract: m := 0 (then NaN / inf propagate by themselves).
 *   NaN is ignored by the max (comparisons are false) but reaches s through exp(NaN), which gives
 *   the contract's all-NaN row.
 */

/* ================================================================ row primitives */

static inline FT F(row_max)(const FT *x, int64_t n)
{
    FT m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* s = sum exp(x - m), out = exp(x - m); m >= max x or NaN */
static inline double F(row_expsum_store)(const FT *x, FT *out, int64_t n, FT m)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) {
        FT e = EXPDN(x[i], m);
        out[i] = e;
        s += (double)e;
    }
    return s;
}

static inline double F(row_expsum)(const FT *x, int64_t n, FT m)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += (double)EXP(x[i] - m);
    return s;
}

/* row_expsum for m >= max x or NaN */
static inline double F(row_expsumn)(const FT *x, int64_t n, FT m)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += (double)EXPN(x[i] - m);
    return s;
}

static inline void F(row_scale)(FT *y, int64_t n, FT c)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = y[i] * c;
}

/* m >= max x or NaN */
static inline void F(row_exp_scale)(const FT *x, FT *y, int64_t n, FT m, FT c)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = EXPDN(x[i], m) * c;
}

static inline void F(row_shift)(const FT *x, FT *y, int64_t n, FT m, FT ls)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) - ls;
}

/* y = x - m (y may be x), returns s = sum exp(x - m); neg: m >= max x (the cheaper exp).
   log_softmax's exp pass writes its output, so the write-allocate of a fresh y overlaps the
   exps and the last pass (row_sub) runs in cache: y = (x - m) - log(s), as row_shift. */
static inline double F(row_shiftstore)(const FT *x, FT *y, int64_t n, FT m, int neg)
{
    double s = 0.0;
    if (neg) {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) {
            FT d = x[i] - m;
            y[i] = d;
            s += (double)EXPN(d);
        }
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) {
            FT d = x[i] - m;
            y[i] = d;
            s += (double)EXP(d);
        }
    }
    return s;
}

static inline void F(row_sub)(FT *y, int64_t n, FT c)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = y[i] - c;
}

static inline int F(finite)(FT v) { return v - v == 0; }

/* online (m, s) of x[0:n); s is 0 and m is -inf for an empty or all -inf range.
   *inf is set when a +inf is met (the caller then redoes the row with m = 0). */
static void F(online_stats)(const FT *x, int64_t n, FT *pm, double *ps, int *pinf)
{
    FT m = -INFINITY;
    double s = 0.0;
    for (int64_t b0 = 0; b0 < n; b0 += FSM_BLOCK) {
        int64_t len = n - b0 < FSM_BLOCK ? n - b0 : FSM_BLOCK;
        const FT *xb = x + b0;
        FT bm = F(row_max)(xb, len);
        if (bm > m) {
            if (FSM_UNLIKELY(bm == INFINITY)) { *pinf = 1; break; }
            s *= fsm_exp_f64((double)m - (double)bm);
            m = bm;
        }
        if (m != -INFINITY) s += F(row_expsumn)(xb, len, m);   /* m >= the block's max */
    }
    *pm = m;
    *ps = s;
}

/* merge (m, s) pairs: s = sum s_i exp(m_i - M) */
static void F(merge_stats)(const FT *ms, const double *ss, int k, FT *pm, double *ps)
{
    FT M = -INFINITY;
    for (int i = 0; i < k; i++) M = ms[i] > M ? ms[i] : M;
    double s = 0.0;
    if (M != -INFINITY)
        for (int i = 0; i < k; i++)
            if (ms[i] != -INFINITY) s += ss[i] * fsm_exp_f64((double)ms[i] - (double)M);
    *pm = M;
    *ps = s;
}

/* ================================================================ softmax, rows */

/* the contract's rule for a non-finite row max: softmax gives an all-NaN row (m := NaN does it),
   log_softmax shifts by 0 */
static inline FT F(fix_max)(FT m, int log)
{
    return F(finite)(m) ? m : log ? (FT)0 : (FT)NAN;
}

static void F(softmax_row_3pass)(const FT *x, FT *y, int64_t n, int log)
{
    FT mx = F(row_max)(x, n);
    FT m = F(fix_max)(mx, log);
    if (!log) {
        double s = F(row_expsum_store)(x, y, n, m);
        F(row_scale)(y, n, (FT)(1.0 / s));
    } else {
        double s = F(row_shiftstore)(x, y, n, m, F(finite)(mx));
        F(row_sub)(y, n, (FT)fsm_log_f64(s));
    }
}

static void F(softmax_row_online)(const FT *x, FT *y, int64_t n, int log)
{
    FT m;
    double s;
    int inf = 0;
    F(online_stats)(x, n, &m, &s, &inf);
    if (FSM_UNLIKELY(inf || !F(finite)(m))) {
        m = F(fix_max)(inf ? (FT)INFINITY : m, log);
        s = F(row_expsum)(x, n, m);
    }
    if (!log)
        F(row_exp_scale)(x, y, n, m, (FT)(1.0 / s));
    else
        F(row_shift)(x, y, n, m, (FT)fsm_log_f64(s));
}

/* rows [r0, r1) of length n <= FSM_SMALL_N, several at a time */
static void F(softmax_rows_small)(const FT *x, FT *y, int64_t r0, int64_t r1, int64_t n, int log)
{
    FT t[FSM_GROUP], e[FSM_GROUP];
    double sr[FSM_GROUP];
    int64_t G = FSM_GROUP / n;
    for (int64_t g0 = r0; g0 < r1; g0 += G) {
        int64_t g = r1 - g0 < G ? r1 - g0 : G;
        const FT *xg = x + g0 * n;
        FT *yg = y + g0 * n;
        int64_t len = g * n;
        for (int64_t r = 0; r < g; r++) {
            const FT *xr = xg + r * n;
            FT m = xr[0];
            for (int64_t j = 1; j < n; j++) m = xr[j] > m ? xr[j] : m;
            m = F(fix_max)(m, log);
            for (int64_t j = 0; j < n; j++) t[r * n + j] = m;     /* the row's max, per element */
        }
        if (!log) {     /* t: the row max or NaN */
#pragma omp simd
            for (int64_t i = 0; i < len; i++) e[i] = EXPDN(xg[i], t[i]);
        } else {        /* t may be 0 for a row without a finite max */
#pragma omp simd
            for (int64_t i = 0; i < len; i++) e[i] = EXPD(xg[i], t[i]);
        }
        if (!log) {
            for (int64_t r = 0; r < g; r++) {
                double s = 0.0;
                for (int64_t j = 0; j < n; j++) s += (double)e[r * n + j];
                FT c = (FT)(1.0 / s);
                for (int64_t j = 0; j < n; j++) yg[r * n + j] = e[r * n + j] * c;
            }
        } else {
            for (int64_t r = 0; r < g; r++) {
                double s = 0.0;
                for (int64_t j = 0; j < n; j++) s += (double)e[r * n + j];
                sr[r] = s;
            }
#pragma omp simd
            for (int64_t r = 0; r < g; r++) sr[r] = fsm_log_f64(sr[r]);  /* across rows */
            for (int64_t r = 0; r < g; r++) {
                FT ls = (FT)sr[r], m = t[r * n];
                for (int64_t j = 0; j < n; j++) yg[r * n + j] = (xg[r * n + j] - m) - ls;
            }
        }
    }
}

static inline int F(use_online)(int64_t n, int log, int method)
{
    if (method == FSM_METHOD_ONLINE) return 1;
    if (method == FSM_METHOD_THREE_PASS) return 0;
    /* measured (docs/c_backend.md): softmax is compute-bound here, computing exp twice costs
       more than the extra pass: three-pass at every length.  log_softmax needs no stored exp:
       online saves one read of x once the row leaves the L2 (~3% faster). */
    return log && n * (int64_t)sizeof(FT) > 256 * 1024;
}

static void F(softmax_rows)(const FT *x, FT *y, int64_t r0, int64_t r1, int64_t n, int log,
                            int method)
{
    if (n <= FSM_SMALL_N && method == FSM_METHOD_AUTO) {
        F(softmax_rows_small)(x, y, r0, r1, n, log);
        return;
    }
    int online = F(use_online)(n, log, method);
    for (int64_t r = r0; r < r1; r++) {
        if (online)
            F(softmax_row_online)(x + r * n, y + r * n, n, log);
        else
            F(softmax_row_3pass)(x + r * n, y + r * n, n, log);
    }
}

/* ================================================================ softmax, inner > 1 */

/* slab o (n x inner), columns [c0, c1), c1 - c0 <= FSM_TILE */
static void F(softmax_tile)(const FT *x, FT *y, int64_t n, int64_t inner, int64_t c0, int64_t c1,
                            int log)
{
    FT m[FSM_TILE];
    double s[FSM_TILE];
    int64_t w = c1 - c0;
    for (int64_t c = 0; c < w; c++) { m[c] = -INFINITY; s[c] = 0.0; }
    for (int64_t j = 0; j < n; j++) {
        const FT *xr = x + j * inner + c0;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) m[c] = xr[c] > m[c] ? xr[c] : m[c];
    }
    const FT mfix = log ? (FT)0 : (FT)NAN;
#pragma omp simd
    for (int64_t c = 0; c < w; c++) m[c] = (m[c] - m[c] == 0) ? m[c] : mfix;
    for (int64_t j = 0; j < n; j++) {
        const FT *xr = x + j * inner + c0;
        FT *yr = y + j * inner + c0;
        if (!log) {
#pragma omp simd
            for (int64_t c = 0; c < w; c++) {
                FT e = EXPDN(xr[c], m[c]);     /* m: the column max or NaN */
                yr[c] = e;
                s[c] += (double)e;
            }
        } else {
#pragma omp simd
            for (int64_t c = 0; c < w; c++) s[c] += (double)EXP(xr[c] - m[c]);
        }
    }
    FT k[FSM_TILE];
    if (!log) {
        for (int64_t c = 0; c < w; c++) k[c] = (FT)(1.0 / s[c]);
        for (int64_t j = 0; j < n; j++) {
            FT *yr = y + j * inner + c0;
#pragma omp simd
            for (int64_t c = 0; c < w; c++) yr[c] = yr[c] * k[c];
        }
    } else {
        for (int64_t c = 0; c < w; c++) k[c] = (FT)fsm_log_f64(s[c]);
        for (int64_t j = 0; j < n; j++) {
            const FT *xr = x + j * inner + c0;
            FT *yr = y + j * inner + c0;
#pragma omp simd
            for (int64_t c = 0; c < w; c++) yr[c] = (xr[c] - m[c]) - k[c];
        }
    }
}

/* ================================================================ softmax, driver */

typedef struct {
    const FT *x;
    FT *y;
    int64_t outer, n, inner;
    int log, method;
    /* one long row split over threads */
    FT *ms;
    double *ss;
    int *infs;
    FT m;
    double s;
} F(softmax_ctx);

static void F(softmax_task_rows)(void *p, int tid, int nt)
{
    F(softmax_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->outer, tid, nt, &lo, &hi);
    F(softmax_rows)(c->x, c->y, lo, hi, c->n, c->log, c->method);
}

static void F(softmax_task_tiles)(void *p, int tid, int nt)
{
    F(softmax_ctx) *c = p;
    int64_t ntiles = (c->inner + FSM_TILE - 1) / FSM_TILE;
    int64_t lo, hi;
    fsm_split(c->outer * ntiles, tid, nt, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t o = it / ntiles, c0 = (it % ntiles) * FSM_TILE;
        int64_t c1 = c0 + FSM_TILE < c->inner ? c0 + FSM_TILE : c->inner;
        const int64_t off = o * c->n * c->inner;
        F(softmax_tile)(c->x + off, c->y + off, c->n, c->inner, c0, c1, c->log);
    }
}

/* one long row: phase 1 stats per block, phase 2 output per block */
static void F(softmax_task_long1)(void *p, int tid, int nt)
{
    F(softmax_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->n, tid, nt, &lo, &hi);
    c->infs[tid] = 0;
    F(online_stats)(c->x + lo, hi - lo, &c->ms[tid], &c->ss[tid], &c->infs[tid]);
}

static void F(softmax_task_long2)(void *p, int tid, int nt)
{
    F(softmax_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->n, tid, nt, &lo, &hi);
    if (!c->log)
        F(row_exp_scale)(c->x + lo, c->y + lo, hi - lo, c->m, (FT)(1.0 / c->s));
    else
        F(row_shift)(c->x + lo, c->y + lo, hi - lo, c->m, (FT)fsm_log_f64(c->s));
}

static void F(softmax_task_long_max)(void *p, int tid, int nt)
{
    F(softmax_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->n, tid, nt, &lo, &hi);
    c->ms[tid] = F(row_max)(c->x + lo, hi - lo);
}

static void F(softmax_task_long_store)(void *p, int tid, int nt)
{
    F(softmax_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->n, tid, nt, &lo, &hi);
    c->ss[tid] = F(row_expsum_store)(c->x + lo, c->y + lo, hi - lo, c->m);
}

static void F(softmax_task_long_scale)(void *p, int tid, int nt)
{
    F(softmax_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->n, tid, nt, &lo, &hi);
    F(row_scale)(c->y + lo, hi - lo, (FT)(1.0 / c->s));
}

static void F(softmax_task_long_rare)(void *p, int tid, int nt)
{
    F(softmax_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->n, tid, nt, &lo, &hi);
    c->ss[tid] = F(row_expsum)(c->x + lo, hi - lo, 0);
}

static void F(softmax)(const FT *x, FT *y, int64_t outer, int64_t n, int64_t inner, int log,
                       int method, int nthreads)
{
    F(softmax_ctx) c = {x, y, outer, n, inner, log, method, NULL, NULL, NULL, 0, 0.0};
    int nt = fsm_pick_threads(outer * n * inner, nthreads);
    if (inner > 1) {
        fsm_parallel(F(softmax_task_tiles), &c, fsm_chunks(outer * ((inner + FSM_TILE - 1) / FSM_TILE), nt), nt);
        return;
    }
    if (outer >= nt || nt == 1) {
        fsm_parallel(F(softmax_task_rows), &c, fsm_chunks(outer, nt), nt);
        return;
    }
    /* fewer rows than threads: split each row */
    FT ms[256];
    double ss[256];
    int infs[256];
    int nc = fsm_chunks(256, nt);    /* blocks of the row */
    c.ms = ms;
    c.ss = ss;
    c.infs = infs;
    int online = F(use_online)(n, log, method) || log;
    for (int64_t r = 0; r < outer; r++) {
        c.x = x + r * n;
        c.y = y + r * n;
        if (!online) {     /* softmax, three passes, each split */
            fsm_parallel(F(softmax_task_long_max), &c, nc, nt);
            FT m = -INFINITY;
            for (int t = 0; t < nc; t++) m = ms[t] > m ? ms[t] : m;
            c.m = F(fix_max)(m, 0);
            fsm_parallel(F(softmax_task_long_store), &c, nc, nt);
            c.s = 0.0;
            for (int t = 0; t < nc; t++) c.s += ss[t];
            fsm_parallel(F(softmax_task_long_scale), &c, nc, nt);
            continue;
        }
        fsm_parallel(F(softmax_task_long1), &c, nc, nt);
        int inf = 0;
        for (int t = 0; t < nc; t++) inf |= infs[t];
        F(merge_stats)(ms, ss, nc, &c.m, &c.s);
        if (FSM_UNLIKELY(inf || !F(finite)(c.m))) {
            if (!log) {
                c.m = NAN;     /* softmax: all-NaN row */
                c.s = NAN;
            } else {
                fsm_parallel(F(softmax_task_long_rare), &c, nc, nt);
                c.m = 0;
                c.s = 0.0;
                for (int t = 0; t < nc; t++) c.s += ss[t];
            }
        }
        fsm_parallel(F(softmax_task_long2), &c, nc, nt);
    }
}

/* ================================================================ logsumexp */

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

/* S = sum b exp(a) over all j (masked too), strided; the rare path */
static double F(lse_rare_sum)(const FT *a, const FT *b, int64_t n, int64_t stride)
{
    double S = 0.0;
    for (int64_t j = 0; j < n; j++) {
        FT e = EXP(a[j * stride]);
        S += b ? (double)(b[j * stride] * e) : (double)e;
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
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) {
        FT v = b[i] != 0 ? a[i] : (FT)-INFINITY;
        m = v > m ? v : m;
    }
    return m;
}

/* k, t of a[0:n) given m (finite) */
static inline void F(lse_kt)(const FT *a, const FT *b, int64_t n, FT m, double *pk, double *pt)
{
    double k = 0.0, t = 0.0;
    if (!b) {
#pragma omp simd reduction(+ : k, t)
        for (int64_t i = 0; i < n; i++) {
            FT e = EXPN(a[i] - m);
            k += a[i] == m ? 1.0 : 0.0;
            t += a[i] != m ? (double)e : 0.0;
        }
    } else {
#pragma omp simd reduction(+ : k, t)
        for (int64_t i = 0; i < n; i++) {
            FT e = b[i] * EXPN(a[i] - m);     /* a > m only where b == 0: not summed */
            k += a[i] == m ? (double)b[i] : 0.0;
            t += (a[i] != m && b[i] != 0) ? (double)e : 0.0;
        }
    }
    *pk = k;
    *pt = t;
}

/* one contiguous row */
static void F(lse_row)(const FT *a, const FT *b, int64_t n, FT *out, FT *sign)
{
    FT m = F(lse_max)(a, b, n);
    double k = 0.0, t = 0.0, sgn;
    if (F(finite)(m)) F(lse_kt)(a, b, n, m, &k, &t);
    double r = F(lse_finish)(m, k, t, sign != NULL, &sgn);
    F(lse_store)(r, sgn, a, b, n, 1, out, sign);
}

static void F(lse_tile)(const FT *a, const FT *b, FT *out, FT *sign, int64_t n, int64_t inner,
                        int64_t c0, int64_t c1);

/* small rows: a group of g rows is transposed into an (n, g) buffer, whose columns are then
   reduced like inner > 1 (the loops run across rows, so they vectorize) */
static void F(lse_rows_small)(const FT *a, const FT *b, FT *out, FT *sign, int64_t r0, int64_t r1,
                              int64_t n)
{
    FT ta[FSM_GROUP], tb[FSM_GROUP];
    int64_t G = FSM_GROUP / n;
    if (G > FSM_TILE) G = FSM_TILE;
    for (int64_t g0 = r0; g0 < r1; g0 += G) {
        int64_t g = r1 - g0 < G ? r1 - g0 : G;
        const FT *ag = a + g0 * n;
        for (int64_t r = 0; r < g; r++)
            for (int64_t j = 0; j < n; j++) ta[j * g + r] = ag[r * n + j];
        if (b) {
            const FT *bg = b + g0 * n;
            for (int64_t r = 0; r < g; r++)
                for (int64_t j = 0; j < n; j++) tb[j * g + r] = bg[r * n + j];
        }
        F(lse_tile)(ta, b ? tb : NULL, out + g0, sign ? sign + g0 : NULL, n, g, 0, g);
    }
}

/* inner > 1: slab (n x inner), columns [c0, c1) */
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
            for (int64_t c = 0; c < w; c++) {
                FT e = EXP(ar[c] - mm[c]);
                k[c] += ar[c] == m[c] ? 1.0 : 0.0;
                t[c] += ar[c] != m[c] ? (double)e : 0.0;
            }
        } else {
            const FT *br = b + j * inner + c0;
#pragma omp simd
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

typedef struct {
    const FT *a, *b;
    FT *out, *sign;
    int64_t outer, n, inner;
    FT *ms;
    double *ks, *ts;
    FT m;
} F(lse_ctx);

static void F(lse_task_rows)(void *p, int tid, int nt)
{
    F(lse_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->outer, tid, nt, &lo, &hi);
    if (c->n <= FSM_SMALL_N) {
        F(lse_rows_small)(c->a, c->b, c->out, c->sign, lo, hi, c->n);
        return;
    }
    for (int64_t r = lo; r < hi; r++)
        F(lse_row)(c->a + r * c->n, c->b ? c->b + r * c->n : NULL, c->n, c->out + r,
                   c->sign ? c->sign + r : NULL);
}

static void F(lse_task_tiles)(void *p, int tid, int nt)
{
    F(lse_ctx) *c = p;
    int64_t ntiles = (c->inner + FSM_TILE - 1) / FSM_TILE;
    int64_t lo, hi;
    fsm_split(c->outer * ntiles, tid, nt, &lo, &hi);
    for (int64_t it = lo; it < hi; it++) {
        int64_t o = it / ntiles, c0 = (it % ntiles) * FSM_TILE;
        int64_t c1 = c0 + FSM_TILE < c->inner ? c0 + FSM_TILE : c->inner;
        int64_t off = o * c->n * c->inner;
        F(lse_tile)(c->a + off, c->b ? c->b + off : NULL, c->out + o * c->inner,
                    c->sign ? c->sign + o * c->inner : NULL, c->n, c->inner, c0, c1);
    }
}

static void F(lse_task_long1)(void *p, int tid, int nt)
{
    F(lse_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->n, tid, nt, &lo, &hi);
    c->ms[tid] = F(lse_max)(c->a + lo, c->b ? c->b + lo : NULL, hi - lo);
}

static void F(lse_task_long2)(void *p, int tid, int nt)
{
    F(lse_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->n, tid, nt, &lo, &hi);
    F(lse_kt)(c->a + lo, c->b ? c->b + lo : NULL, hi - lo, c->m, &c->ks[tid], &c->ts[tid]);
}

static void F(logsumexp)(const FT *a, const FT *b, FT *out, FT *sign, int64_t outer, int64_t n,
                         int64_t inner, int nthreads)
{
    F(lse_ctx) c = {a, b, out, sign, outer, n, inner, NULL, NULL, NULL, 0};
    int nt = fsm_pick_threads(outer * n * inner * (b ? 2 : 1), nthreads);
    if (inner > 1) {
        fsm_parallel(F(lse_task_tiles), &c, fsm_chunks(outer * ((inner + FSM_TILE - 1) / FSM_TILE), nt), nt);
        return;
    }
    if (outer >= nt || nt == 1) {
        fsm_parallel(F(lse_task_rows), &c, fsm_chunks(outer, nt), nt);
        return;
    }
    FT ms[256];
    double ks[256], ts[256];
    int nc = fsm_chunks(256, nt);    /* blocks of the row */
    c.ms = ms;
    c.ks = ks;
    c.ts = ts;
    for (int64_t r = 0; r < outer; r++) {
        c.a = a + r * n;
        c.b = b ? b + r * n : NULL;
        fsm_parallel(F(lse_task_long1), &c, nc, nt);
        FT m = -INFINITY;
        for (int t = 0; t < nc; t++) m = ms[t] > m ? ms[t] : m;
        double k = 0.0, t = 0.0, sgn;
        if (F(finite)(m)) {
            c.m = m;
            fsm_parallel(F(lse_task_long2), &c, nc, nt);
            for (int i = 0; i < nc; i++) { k += ks[i]; t += ts[i]; }
        }
        double res = F(lse_finish)(m, k, t, sign != NULL, &sgn);
        F(lse_store)(res, sgn, c.a, c.b, n, 1, out + r, sign ? sign + r : NULL);
    }
}

/* ================================================================ cross-entropy */

/* Per row i (docs/DESIGN.md): m = max x (0 if not finite); pass 2 computes e_j = exp(x_j - m),
 * stores it into grad (grad may be logits: x_j is read before g_j is written, and x_t and
 * anything else that needs the logits is read in or before this pass) or, loss only, into an
 * L1 scratch block, and accumulates s = sum e_j and the sums the loss needs:
 *   integer target:  Q = (1-eps) w_t + eps/C sum w;  sq = (1-eps) w_t (x_t - m) + eps/C sum w_j (x_j - m)
 *   probabilities:   q_j = w_j ((1-eps) P_j + eps/C);  Q = sum q_j;  sq = sum q_j (x_j - m)
 *   loss = Q log(s) - sq;   pass 3 (in cache): grad_j = e_j (scale Q/s) - scale q_j.
 * Every exp is computed once.  Ignored rows: loss 0, grad 0.  Accumulators double.
 *
 * Bit-identical loss with and without the gradient: the sums are accumulated in CEL (one
 * vector of FT) explicit lanes (lane k takes the elements j = k mod CEL, in order), combined in a
 * fixed order at the end.  A `reduction(+)` loop would be peeled by the vectorizer according to
 * the store target's alignment (grad vs the scratch block), which changes the summation order.
 * The loss-only path walks the row in FSM_BLOCK blocks (a multiple of the lane count, so the
 * lanes see the same sequence) through the same call site as the fused path.
 */
typedef struct {
    const FT *x;
    const int64_t *target;
    const FT *probs, *weight;
    int64_t ignore_index;
    double eps, scale, wsum;
    FT *loss, *grad;
    int64_t N, C;
} F(ce_ctx);

#define CEL ((int)(FSM_VEC_BYTES / sizeof(FT)))

/* e = exp(x - m) for one block of len <= CEL elements (e may be x itself), acc[k] += e in lane k;
   kind 1: ax[k] += x - m, kind 2: ax[k] += w (x - m) (w offset to this block).  neg: m is the row
   max (x - m <= 0 or NaN), so the cheaper exp variant of fsm_math.h (same results).  Element k of
   every block goes to lane k, so the sums do not depend on how the loop is vectorized. */
FSM_INLINE void F(ce_expsum_block)(const FT *xb, FT *eb, const FT *wb, int len, FT m, int neg,
                                   int kind, double *acc, double *ax)
{
#pragma omp simd
    for (int k = 0; k < len; k++) {
        FT v = xb[k];
        FT ev = neg ? EXPDN(v, m) : EXPD(v, m);
        eb[k] = ev;
        acc[k] += (double)ev;
        if (kind == 1) ax[k] += (double)(v - m);
        if (kind == 2) ax[k] += (double)(wb[k] * (v - m));
    }
}

/* ce_expsum_block over x[0:n): whole blocks of CEL, then the rest */
FSM_INLINE void F(ce_expsum)(const FT *x, FT *e, int64_t n, FT m, int neg, int kind, const FT *w,
                             double *acc, double *ax)
{
    int64_t j = 0;
    for (; j + CEL <= n; j += CEL)
        F(ce_expsum_block)(x + j, e + j, w ? w + j : w, CEL, m, neg, kind, acc, ax);
    F(ce_expsum_block)(x + j, e + j, w ? w + j : w, (int)(n - j), m, neg, kind, acc, ax);
}

/* probability targets, one block of len <= CEL: e as above; acc += e, aq += q, ax += q (x - m),
   q = w (a P + eC), lane k for element k */
FSM_INLINE void F(ce_probs_block)(const FT *xb, FT *eb, const FT *Pb, const FT *wb, int len, FT m,
                                  int neg, FT a, FT eCf, double *acc, double *aq, double *ax)
{
#pragma omp simd
    for (int k = 0; k < len; k++) {
        FT v = xb[k];
        FT q = a * Pb[k] + eCf;
        if (wb) q = wb[k] * q;
        FT ev = neg ? EXPDN(v, m) : EXPD(v, m);
        eb[k] = ev;
        acc[k] += (double)ev;
        aq[k] += (double)q;
        ax[k] += (double)(q * (v - m));
    }
}

FSM_INLINE void F(ce_expsum_probs)(const FT *x, FT *e, const FT *P, const FT *w, int64_t n, FT m,
                                   int neg, FT a, FT eCf, double *acc, double *aq, double *ax)
{
    int64_t j = 0;
    for (; j + CEL <= n; j += CEL)
        F(ce_probs_block)(x + j, e + j, P + j, w ? w + j : w, CEL, m, neg, a, eCf, acc, aq, ax);
    F(ce_probs_block)(x + j, e + j, P + j, w ? w + j : w, (int)(n - j), m, neg, a, eCf, acc, aq,
                      ax);
}

/* the lanes, summed in a fixed order (pairwise) */
FSM_INLINE double F(ce_lanes)(double *acc)
{
    for (int h = CEL / 2; h >= 1; h /= 2)
        for (int k = 0; k < h; k++) acc[k] += acc[k + h];
    return acc[0];
}

/* the pass over the whole row: into g (may be x) or, g NULL, through an L1 scratch block */
FSM_INLINE void F(ce_pass)(const FT *x, FT *g, int64_t C, FT m, int neg, int kind, const FT *w,
                           double *acc, double *ax)
{
    FT buf[FSM_BLOCK];
    for (int64_t a = 0; a < C; a += FSM_BLOCK) {
        int64_t n = C - a < FSM_BLOCK ? C - a : FSM_BLOCK;
        FT *dst = g ? g + a : buf;
        const FT *wa = w ? w + a : w;
        if (neg) F(ce_expsum)(x + a, dst, n, m, 1, kind, wa, acc, ax);
        else F(ce_expsum)(x + a, dst, n, m, 0, kind, wa, acc, ax);
    }
}

static void F(ce_row_target)(const F(ce_ctx) *c, int64_t i)
{
    const int64_t C = c->C;
    const FT *x = c->x + i * C;
    FT *g = c->grad ? c->grad + i * C : NULL;
    const FT *w = c->weight;
    const double eps = c->eps, eC = c->eps / (double)C;
    int64_t ti = c->target[i];
    if (ti == c->ignore_index) {
        c->loss[i] = 0;
        if (g)
            for (int64_t j = 0; j < C; j++) g[j] = 0;
        return;
    }
    const FT xt = x[ti];
    FT m = F(row_max)(x, C);
    const int neg = F(finite)(m);
    if (FSM_UNLIKELY(!neg)) m = 0;
    double acc[CEL], ax[CEL];
    for (int k = 0; k < CEL; k++) acc[k] = ax[k] = 0.0;
    if (eps == 0) F(ce_pass)(x, g, C, m, neg, 0, NULL, acc, ax);
    else if (w) F(ce_pass)(x, g, C, m, neg, 2, w, acc, ax);
    else F(ce_pass)(x, g, C, m, neg, 1, NULL, acc, ax);
    const double s = F(ce_lanes)(acc), sx = eps == 0 ? 0.0 : F(ce_lanes)(ax);
    const double wt = w ? (double)w[ti] : 1.0;
    const double Q = (1.0 - eps) * wt + eC * c->wsum;
    const double sq = (1.0 - eps) * wt * ((double)xt - (double)m) + eC * sx;
    c->loss[i] = (FT)(Q * fsm_log_f64(s) - sq);
    if (g) {
        const double qs = Q / s;
        const FT cs = (FT)(qs * c->scale), q0 = (FT)(eC * c->scale);
        const FT et = neg ? EXPDN(xt, m) : EXPD(xt, m);
        if (eps == 0) {
#pragma omp simd
            for (int64_t j = 0; j < C; j++) g[j] = g[j] * cs;
        } else if (w) {
#pragma omp simd
            for (int64_t j = 0; j < C; j++) g[j] = g[j] * cs - q0 * w[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < C; j++) g[j] = g[j] * cs - q0;
        }
        const double qt = (1.0 - eps) * wt + eC * wt;
        g[ti] = (FT)(c->scale * ((double)et * qs - qt));
    }
}

static void F(ce_row_probs)(const F(ce_ctx) *c, int64_t i)
{
    const int64_t C = c->C;
    const FT *x = c->x + i * C;
    const FT *P = c->probs + i * C;
    FT *g = c->grad ? c->grad + i * C : NULL;
    const FT *w = c->weight;
    const FT a = (FT)(1.0 - c->eps), eCf = (FT)(c->eps / (double)C);
    FT m = F(row_max)(x, C);
    const int neg = F(finite)(m);
    if (FSM_UNLIKELY(!neg)) m = 0;
    double acc[CEL], aq[CEL], ax[CEL];
    for (int k = 0; k < CEL; k++) acc[k] = aq[k] = ax[k] = 0.0;
    FT buf[FSM_BLOCK];
    for (int64_t b = 0; b < C; b += FSM_BLOCK) {
        int64_t n = C - b < FSM_BLOCK ? C - b : FSM_BLOCK;
        FT *dst = g ? g + b : buf;
        const FT *wb = w ? w + b : w;
        if (neg) F(ce_expsum_probs)(x + b, dst, P + b, wb, n, m, 1, a, eCf, acc, aq, ax);
        else F(ce_expsum_probs)(x + b, dst, P + b, wb, n, m, 0, a, eCf, acc, aq, ax);
    }
    const double s = F(ce_lanes)(acc), Q = F(ce_lanes)(aq), sq = F(ce_lanes)(ax);
    c->loss[i] = (FT)(Q * fsm_log_f64(s) - sq);
    if (g) {
        const FT cs = (FT)(Q / s * c->scale), scale = (FT)c->scale;
        if (w) {
#pragma omp simd
            for (int64_t j = 0; j < C; j++) g[j] = g[j] * cs - scale * (w[j] * (a * P[j] + eCf));
        } else {
#pragma omp simd
            for (int64_t j = 0; j < C; j++) g[j] = g[j] * cs - scale * (a * P[j] + eCf);
        }
    }
}

#undef CEL

/* integer targets, rows of C <= FSM_SMALL_N: rows [i0, i0+g) transposed into a (C, g) buffer,
   the per-row sums vectorized across rows, the gradient transposed back */
static void F(ce_rows_small_target)(const F(ce_ctx) *c, int64_t i0, int64_t g)
{
    const int64_t C = c->C;
    const FT *w = c->weight;
    const double eps = c->eps, eC = c->eps / (double)C;
    const FT eCf = (FT)eC, scale = (FT)c->scale;
    FT T[FSM_GROUP];
    FT m[FSM_TILE], qs[FSM_TILE], et[FSM_TILE];
    double s[FSM_TILE], sx[FSM_TILE];
    const FT *xg = c->x + i0 * C;
    for (int64_t r = 0; r < g; r++)
        for (int64_t j = 0; j < C; j++) T[j * g + r] = xg[r * C + j];
    for (int64_t r = 0; r < g; r++) { m[r] = -INFINITY; s[r] = 0.0; sx[r] = 0.0; }
    for (int64_t j = 0; j < C; j++) {
        const FT *tr = T + j * g;
#pragma omp simd
        for (int64_t r = 0; r < g; r++) m[r] = tr[r] > m[r] ? tr[r] : m[r];
    }
#pragma omp simd
    for (int64_t r = 0; r < g; r++) m[r] = (m[r] - m[r] == 0) ? m[r] : (FT)0;
    for (int64_t j = 0; j < C; j++) {
        FT *tr = T + j * g;
        const FT wj = w ? w[j] : (FT)1;
#pragma omp simd
        for (int64_t r = 0; r < g; r++) {
            FT d = tr[r] - m[r];
            FT e = EXPD(tr[r], m[r]);
            s[r] += (double)e;
            sx[r] += (double)(wj * d);
            tr[r] = e;
        }
    }
    double ls[FSM_TILE];
#pragma omp simd
    for (int64_t r = 0; r < g; r++) ls[r] = fsm_log_f64(s[r]);   /* vectorized across rows */
    for (int64_t r = 0; r < g; r++) {
        int64_t i = i0 + r, ti = c->target[i];
        if (ti == c->ignore_index) {
            c->loss[i] = 0;
            qs[r] = 0;
            continue;
        }
        const double wt = w ? (double)w[ti] : 1.0;
        const double Q = (1.0 - eps) * wt + eC * c->wsum;
        const FT xt = xg[r * C + ti];   /* logits not written yet */
        const double sq = (1.0 - eps) * wt * ((double)xt - (double)m[r]) + (eps != 0 ? eC * sx[r] : 0.0);
        c->loss[i] = (FT)(Q * ls[r] - sq);
        qs[r] = (FT)(Q / s[r]);
        et[r] = T[ti * g + r];
    }
    if (!c->grad) return;
    for (int64_t j = 0; j < C; j++) {
        FT *tr = T + j * g;
        const FT q = eCf * (w ? w[j] : (FT)1);
#pragma omp simd
        for (int64_t r = 0; r < g; r++) tr[r] = scale * (tr[r] * qs[r] - q);
    }
    FT *gg = c->grad + i0 * C;
    for (int64_t r = 0; r < g; r++) {
        int64_t i = i0 + r, ti = c->target[i];
        FT *gr = gg + r * C;
        if (ti == c->ignore_index) {
            for (int64_t j = 0; j < C; j++) gr[j] = 0;
            continue;
        }
        for (int64_t j = 0; j < C; j++) gr[j] = T[j * g + r];
        const double wt = w ? (double)w[ti] : 1.0;
        const double qt = (1.0 - eps) * wt + eC * wt;
        gr[ti] = scale * (et[r] * qs[r] - (FT)qt);
    }
}

static void F(ce_task)(void *p, int tid, int nt)
{
    F(ce_ctx) *c = p;
    int64_t lo, hi;
    fsm_split(c->N, tid, nt, &lo, &hi);
    if (c->target && c->C <= FSM_SMALL_N) {
        int64_t G = FSM_GROUP / c->C;
        if (G > FSM_TILE) G = FSM_TILE;
        for (int64_t i = lo; i < hi; i += G) F(ce_rows_small_target)(c, i, hi - i < G ? hi - i : G);
    } else if (c->target)
        for (int64_t i = lo; i < hi; i++) F(ce_row_target)(c, i);
    else
        for (int64_t i = lo; i < hi; i++) F(ce_row_probs)(c, i);
}

static void F(cross_entropy)(const FT *logits, const int64_t *target, const FT *probs,
                             const FT *weight, int64_t ignore_index, double smoothing,
                             double scale, FT *loss, FT *grad, int64_t N, int64_t C, int nthreads)
{
    double wsum = (double)C;
    if (weight) {
        wsum = 0.0;
        for (int64_t j = 0; j < C; j++) wsum += (double)weight[j];
    }
    F(ce_ctx) c = {logits, target, probs, weight, ignore_index, smoothing, scale, wsum,
                   loss, grad, N, C};
    int nt = fsm_pick_threads(N * C * (grad ? 2 : 1), nthreads);
    fsm_parallel(F(ce_task), &c, fsm_chunks(N, nt), nt);
}

/* ================================================================ elementwise, for the tests */

/* the table's exp / log entries: exactly the exp and log of the kernels */

static void F(exp)(const FT *x, FT *out, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) out[i] = EXP(x[i]);
}

static void F(log)(const FT *x, FT *out, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) out[i] = LOGT(x[i]);
}
