/* fsm_softmax.h -- softmax and log_softmax for one float type FT (included per dtype by
 * fsm_kernels_impl.c, after fsm_rows.h).
 *
 * Design (names as in docs/DESIGN.md: m running max, s sum):
 *   Rows (inner == 1):
 *     three-pass  m = max x;  s = sum e, e = exp(x - m) stored into out;  out *= 1/s
 *     online      (m, s) by blocks (fsm_rows.h: online_stats), then one output pass
 *                 out = exp(x - m) / s.  x is read twice from memory instead of out being
 *                 written twice: better once a row no longer fits the L2 cache.
 *     log_softmax three-pass: the exp pass stores x - m, the last pass subtracts log(s) in cache;
 *                 online: out = (x - m) - log(s) after the stats pass.
 *     small rows  (n <= FSM_SMALL_N): groups of rows; per-row max, then one vector exp over the
 *                 whole group's contiguous (x - m), then per-row sums and scaling.
 *     one long row with threads: softmax three-pass splits each pass (max, exp + store, scale)
 *                 into blocks; online (and log_softmax) computes (m, s) per block, merges the
 *                 pairs (merge_stats), then splits the output pass.
 *   inner > 1: tiles of FSM_TILE contiguous columns, accumulators m[], s[] per column, the loops
 *     over the tile's columns vectorize.
 *   A non-finite row max follows the contract: softmax gives an all-NaN row (m := NaN does it),
 *   log_softmax shifts by m := 0 (then NaN / inf propagate by themselves).
 * Which of these runs, and on which thread: fsm_reduce (fsm_rows.h).
 */

typedef struct {
    const FT *x;
    FT *y;
    int64_t n, inner;
    int log, method;
    int stream;                  /* rows through a scratch row, output streamed (FSM_NT_BYTES) */
    /* one long row split over threads: the row, one slot per block, the merged (m, s) */
    const FT *xr;
    FT *yr;
    FT *ms;
    double *ss, *ks;
    int *infs;
    FT m;
    double s, ls;                /* ls: log_softmax's log(s) (lsm_log) */
} F(softmax_ctx);

/* the contract's rule for a non-finite row max */
static inline FT F(fix_max)(FT m, int log)
{
    return F(finite)(m) ? m : log ? (FT)0 : (FT)NAN;
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

/* ================================================================ rows */

static void F(softmax_row_3pass)(const F(softmax_ctx) *c, int64_t r)
{
    const int64_t n = c->n;
    const FT *x = c->x + r * n;
    FT *y = c->y + r * n;
    FT mx = F(row_max)(x, n);
    FT m = F(fix_max)(mx, c->log);
    if (!c->log) {
        double s = F(row_expsum_store64)(x, y, n, m);   /* 2^64 * the sum */
        F(row_scale)(y, n, (FT)(1.0 / s));
    } else {
        double s = F(row_shiftstore)(x, y, n, m, F(finite)(mx));
        /* y holds x - m now (y may be x): its rest is that of x with the max at 0 */
        F(row_sub)(y, n, (FT)F(lsm_log)(s, y, n, (FT)0, F(finite)(mx)));
    }
}

/* softmax_row_3pass through a scratch row (n * sizeof(FT) <= FSM_NT_SCRATCH): the exp pass
   writes the scratch (in L1), the last pass streams y (row_stream) */
static void F(softmax_row_stream)(const F(softmax_ctx) *c, int64_t r, FT *e)
{
    const int64_t n = c->n;
    const FT *x = c->x + r * n;
    FT *y = c->y + r * n;
    FT mx = F(row_max)(x, n);
    FT m = F(fix_max)(mx, c->log);
    if (!c->log) {
        double s = F(row_expsum_store64)(x, e, n, m);   /* 2^64 * the sum */
        F(row_stream)(e, y, n, (FT)(1.0 / s), (FT)0);
    } else {
        double s = F(row_shiftstore)(x, e, n, m, F(finite)(mx));
        F(row_stream)(e, y, n, (FT)1, -(FT)F(lsm_log)(s, e, n, (FT)0, F(finite)(mx)));
    }
}

static void F(softmax_row_online)(const F(softmax_ctx) *c, int64_t r)
{
    const int64_t n = c->n;
    const int log = c->log;
    const FT *x = c->x + r * n;
    FT *y = c->y + r * n;
    FT m;
    double s;
    int inf = 0;
    F(online_stats)(x, n, &m, &s, &inf);
    const int fin = !inf && F(finite)(m);
    if (FSM_UNLIKELY(!fin)) {
        m = F(fix_max)(inf ? (FT)INFINITY : m, log);
        s = F(row_expsum)(x, n, m);
    }
    if (!log)
        F(row_exp_scale)(x, y, n, m, (FT)(1.0 / s));
    else
        F(row_shift)(x, y, n, m, (FT)F(lsm_log)(s, x, n, m, fin));
}

/* rows [r0, r0 + g) of length n <= FSM_SMALL_N, g * n <= FSM_GROUP */
static void F(softmax_group)(const void *p, int64_t r0, int64_t g)
{
    const F(softmax_ctx) *c = p;
    const int64_t n = c->n;
    const int log = c->log;
    FT t[FSM_GROUP], e[FSM_GROUP];
    double sr[FSM_GROUP];
    const FT *xg = c->x + r0 * n;
    FT *yg = c->y + r0 * n;
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
            FT k = (FT)(1.0 / s);
            for (int64_t j = 0; j < n; j++) yg[r * n + j] = e[r * n + j] * k;
        }
    } else {
        for (int64_t r = 0; r < g; r++) {
            double s = 0.0;
            for (int64_t j = 0; j < n; j++) s += (double)e[r * n + j];
            sr[r] = s;
        }
#pragma omp simd
        for (int64_t r = 0; r < g; r++) sr[r] = fsm_log_f64(sr[r]);  /* across rows */
        for (int64_t r = 0; r < g; r++) {      /* log(s) near 0: the rest apart (lsm_log) */
            FT m = t[r * n];
            if (FSM_LIKELY(!(sr[r] < (sizeof(FT) == 4 ? 0x1p-10 : 1.3863))) || !F(finite)(m)) continue;   /* log(thr) */
            double rest = 0.0, k = 0.0;
            for (int64_t j = 0; j < n; j++) {
                if (xg[r * n + j] == m) k += 1.0;
                else rest += (double)e[r * n + j];
            }
            sr[r] = F(log_rest)(rest, k);
        }
        for (int64_t r = 0; r < g; r++) {
            FT ls = (FT)sr[r], m = t[r * n];
            for (int64_t j = 0; j < n; j++) yg[r * n + j] = (xg[r * n + j] - m) - ls;
        }
    }
}

/* rows [lo, hi) */
static void F(softmax_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(softmax_ctx) *c = p;
    (void)k;
    if (c->n <= FSM_SMALL_N && c->method == FSM_METHOD_AUTO) {
        fsm_small_rows(p, lo, hi, c->n, FSM_GROUP, F(softmax_group));
        return;
    }
    if (c->stream) {
        FT e[FSM_NT_SCRATCH / sizeof(FT)];
        for (int64_t r = lo; r < hi; r++) F(softmax_row_stream)(c, r, e);
        fsm_stream_fence();
        return;
    }
    int online = F(use_online)(c->n, c->log, c->method);
    for (int64_t r = lo; r < hi; r++) {
        if (online)
            F(softmax_row_online)(c, r);
        else
            F(softmax_row_3pass)(c, r);
    }
}

/* ================================================================ inner > 1 */

/* a slab (n x inner), columns [c0, c1), c1 - c0 <= FSM_TILE */
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
        for (int64_t c = 0; c < w; c++) {
            double L = fsm_log_f64(s[c]);
            if (FSM_UNLIKELY(s[c] < FSM_LSM_RECOMPUTE) && F(finite)(m[c])) {   /* lsm_log */
                double rest = 0.0, kt = 0.0;
                for (int64_t j = 0; j < n; j++) {
                    FT v = x[j * inner + c0 + c];
                    if (v == m[c]) kt += 1.0;
                    else rest += (double)EXPN(v - m[c]);
                }
                L = F(log_rest)(rest, kt);
            }
            k[c] = (FT)L;
        }
        for (int64_t j = 0; j < n; j++) {
            const FT *xr = x + j * inner + c0;
            FT *yr = y + j * inner + c0;
#pragma omp simd
            for (int64_t c = 0; c < w; c++) yr[c] = (xr[c] - m[c]) - k[c];
        }
    }
}

/* slab o, columns [c0, c1) */
static void F(softmax_slab_tile)(const void *p, int64_t o, int64_t c0, int64_t c1)
{
    const F(softmax_ctx) *c = p;
    const int64_t off = o * c->n * c->inner;
    F(softmax_tile)(c->x + off, c->y + off, c->n, c->inner, c0, c1, c->log);
}

/* ================================================================ one long row, split */

/* the blocks [lo, hi) of the row c->xr; block k writes slot k */
static void F(softmax_block_max)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(softmax_ctx) *c = p;
    c->ms[k] = F(row_max)(c->xr + lo, hi - lo);
}

static void F(softmax_block_store)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(softmax_ctx) *c = p;
    c->ss[k] = F(row_expsum_store64)(c->xr + lo, c->yr + lo, hi - lo, c->m);
}

static void F(softmax_block_scale)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(softmax_ctx) *c = p;
    (void)k;
    F(row_scale)(c->yr + lo, hi - lo, (FT)(1.0 / c->s));
}

static void F(softmax_block_stats)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(softmax_ctx) *c = p;
    c->infs[k] = 0;
    F(online_stats)(c->xr + lo, hi - lo, &c->ms[k], &c->ss[k], &c->infs[k]);
}

static void F(softmax_block_rare)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(softmax_ctx) *c = p;
    c->ss[k] = F(row_expsum)(c->xr + lo, hi - lo, 0);
}

static void F(softmax_block_rest)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(softmax_ctx) *c = p;
    c->ss[k] = F(row_rest)(c->xr + lo, hi - lo, c->m, &c->ks[k]);
}

static void F(softmax_block_out)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(softmax_ctx) *c = p;
    (void)k;
    if (!c->log)
        F(row_exp_scale)(c->xr + lo, c->yr + lo, hi - lo, c->m, (FT)(1.0 / c->s));
    else
        F(row_shift)(c->xr + lo, c->yr + lo, hi - lo, c->m, (FT)c->ls);
}

/* row r in nc blocks on nt threads: each pass split, merged between the passes */
static void F(softmax_long_row)(void *p, int64_t r, int nc, int nt)
{
    F(softmax_ctx) *c = p;
    const int64_t n = c->n;
    FT ms[FSM_MAX_CHUNKS];
    double ss[FSM_MAX_CHUNKS];
    int infs[FSM_MAX_CHUNKS];
    c->xr = c->x + r * n;
    c->yr = c->y + r * n;
    c->ms = ms;
    c->ss = ss;
    c->infs = infs;
    if (!(F(use_online)(n, c->log, c->method) || c->log)) {     /* softmax, three passes */
        fsm_run_ranges(F(softmax_block_max), c, n, nc, nt);
        c->m = F(fix_max)(F(slots_max)(ms, nc), 0);
        fsm_run_ranges(F(softmax_block_store), c, n, nc, nt);
        c->s = 0.0;
        for (int k = 0; k < nc; k++) c->s += ss[k];
        fsm_run_ranges(F(softmax_block_scale), c, n, nc, nt);
        return;
    }
    fsm_run_ranges(F(softmax_block_stats), c, n, nc, nt);
    int inf = 0;
    for (int k = 0; k < nc; k++) inf |= infs[k];
    F(merge_stats)(ms, ss, nc, &c->m, &c->s);
    const int fin = !inf && F(finite)(c->m);
    if (FSM_UNLIKELY(!fin)) {
        if (!c->log) {
            c->m = NAN;     /* softmax: all-NaN row */
            c->s = NAN;
        } else {
            fsm_run_ranges(F(softmax_block_rare), c, n, nc, nt);
            c->m = 0;
            c->s = 0.0;
            for (int k = 0; k < nc; k++) c->s += ss[k];
        }
    }
    if (c->log) {
        c->ls = fsm_log_f64(c->s);
        if (FSM_UNLIKELY(c->s < FSM_LSM_RECOMPUTE) && fin) {   /* lsm_log */
            double ks[FSM_MAX_CHUNKS];
            c->ks = ks;
            fsm_run_ranges(F(softmax_block_rest), c, n, nc, nt);
            double rest = 0.0, k = 0.0;
            for (int i = 0; i < nc; i++) { rest += ss[i]; k += ks[i]; }
            c->ls = F(log_rest)(rest, k);
        }
    }
    fsm_run_ranges(F(softmax_block_out), c, n, nc, nt);
}

/* ================================================================ the kernel */

static void F(softmax)(const FT *x, FT *y, int64_t outer, int64_t n, int64_t inner, int log,
                       int method, int nthreads)
{
    F(softmax_ctx) c = {x, y, n, inner, log, method, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0.0, 0.0};
    c.stream = inner == 1 && outer * n * (int64_t)sizeof(FT) >= FSM_NT_BYTES
               && n * (int64_t)sizeof(FT) <= FSM_NT_SCRATCH && n > FSM_SMALL_N
               && !F(use_online)(n, log, method) && getenv("FASTSOFTMAX_C_NO_STREAM") == NULL;   /* A/B switch of benches/c_kernels.py (read for >= 16 MB outputs only) */
    int nt = fsm_pick_threads(outer * n * inner, nthreads);
    fsm_reduce(&c, outer, inner, nt, F(softmax_rows), F(softmax_slab_tile), F(softmax_long_row));
}
