/* fsm_backward.h -- softmax / log_softmax backward (vector-Jacobian products) for one float
 * type FT (included per dtype by fsm_kernels_impl.c, after fsm_rows.h).
 *
 * Per row (docs/training.md), y the forward output, g the incoming gradient:
 *   softmax:      s = sum g*y,  o = y * (g - s)
 *   log_softmax:  s = sum g,    o = g - exp(y) * s
 * where s == 0, exp(y) * s is 0 for every y below +inf, also where exp(y) overflows FT (y >
 * log(FT_MAX), outside log_softmax's range), and NaN for y NaN or +inf: o = g, or NaN there
 * (F(lbwd_zero); docs/differences.md).
 * s is a double accumulation (products formed in double), rounded once to FT for the write
 * pass, which follows while the row is in cache: one fused pass per row.  o may be g or y
 * itself (in place: each element is read before it is written; `omp simd` asserts the loops
 * carry no dependence, so GCC emits no run-time alias check).
 * The work split is fsm_reduce's (fsm_rows.h): rows over the threads; inner > 1 in tiles of
 * FSM_TILE columns with per-column sums; a few long rows split into blocks, twice (the partial
 * sums into one slot per block, added in block order, then the write).
 */
typedef struct {
    const FT *g, *y;
    FT *o;
    int64_t n, inner;
    int log;
    /* one long row split over threads: the row, one slot per block, the row's s */
    const FT *gr, *yr;
    FT *orow;
    double *ss;
    FT c;
} F(bwd_ctx);

FSM_INLINE double F(bwd_sum)(const FT *g, const FT *y, int64_t n, int log)
{
    double s = 0.0;
    if (log) {
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; j++) s += (double)g[j];
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; j++) s += (double)g[j] * (double)y[j];
    }
    return s;
}

/* log_softmax backward's o where the row's s is 0: g - exp(y) * 0, with exp(y) exact (0 for
   y = -inf, finite for finite y: not FT's inf * 0 = NaN where exp(y) overflows), NaN for y NaN
   or +inf */
FSM_INLINE FT F(lbwd_zero)(FT g, FT y) { return y < (FT)INFINITY ? g : (FT)NAN; }

FSM_INLINE void F(bwd_write)(const FT *g, const FT *y, FT *o, int64_t n, int log, FT c)
{
    if (log && c == 0) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) o[j] = F(lbwd_zero)(g[j], y[j]);
    } else if (log) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) o[j] = g[j] - EXP(y[j]) * c;
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) o[j] = y[j] * (g[j] - c);
    }
}

/* rows [lo, hi) (inner == 1) */
static void F(bwd_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(bwd_ctx) *c = p;
    const int64_t n = c->n;
    (void)k;
    for (int64_t r = lo; r < hi; r++) {
        const FT *g = c->g + r * n, *y = c->y + r * n;
        FT *o = c->o + r * n;
        if (c->log) F(bwd_write)(g, y, o, n, 1, (FT)F(bwd_sum)(g, y, n, 1));
        else F(bwd_write)(g, y, o, n, 0, (FT)F(bwd_sum)(g, y, n, 0));
    }
}

/* inner > 1: slab o (n x inner), columns [c0, c1), c1 - c0 <= FSM_TILE */
static void F(bwd_tile)(const void *p, int64_t oi, int64_t c0, int64_t c1)
{
    const F(bwd_ctx) *c = p;
    const int64_t n = c->n, inner = c->inner, w = c1 - c0, off = oi * n * inner + c0;
    const FT *g = c->g + off, *y = c->y + off;
    FT *o = c->o + off;
    double s[FSM_TILE];
    FT cs[FSM_TILE];
    for (int64_t k = 0; k < w; k++) s[k] = 0.0;
    for (int64_t j = 0; j < n; j++) {
        const FT *gj = g + j * inner, *yj = y + j * inner;
        if (c->log) {
#pragma omp simd
            for (int64_t k = 0; k < w; k++) s[k] += (double)gj[k];
        } else {
#pragma omp simd
            for (int64_t k = 0; k < w; k++) s[k] += (double)gj[k] * (double)yj[k];
        }
    }
    for (int64_t k = 0; k < w; k++) cs[k] = (FT)s[k];
    for (int64_t j = 0; j < n; j++) {
        const FT *gj = g + j * inner, *yj = y + j * inner;
        FT *oj = o + j * inner;
        if (c->log) {
#pragma omp simd
            for (int64_t k = 0; k < w; k++)
                oj[k] = cs[k] == 0 ? F(lbwd_zero)(gj[k], yj[k])          /* as bwd_write */
                                   : gj[k] - EXP(yj[k]) * cs[k];
        } else {
#pragma omp simd
            for (int64_t k = 0; k < w; k++) oj[k] = yj[k] * (gj[k] - cs[k]);
        }
    }
}

/* one long row split: the blocks [lo, hi) of the row; block k writes slot k */
static void F(bwd_block_sum)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(bwd_ctx) *c = p;
    c->ss[k] = F(bwd_sum)(c->gr + lo, c->yr + lo, hi - lo, c->log);
}

static void F(bwd_block_write)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(bwd_ctx) *c = p;
    (void)k;
    F(bwd_write)(c->gr + lo, c->yr + lo, c->orow + lo, hi - lo, c->log, c->c);
}

static void F(bwd_long_row)(void *p, int64_t r, int nc, int nt)
{
    F(bwd_ctx) *c = p;
    const int64_t n = c->n;
    double ss[FSM_MAX_CHUNKS];
    c->gr = c->g + r * n;
    c->yr = c->y + r * n;
    c->orow = c->o + r * n;
    c->ss = ss;
    fsm_run_ranges(F(bwd_block_sum), c, n, nc, nt);
    double s = 0.0;
    for (int k = 0; k < nc; k++) s += ss[k];
    c->c = (FT)s;
    fsm_run_ranges(F(bwd_block_write), c, n, nc, nt);
}

static void F(softmax_backward)(const FT *grad, const FT *y, FT *out, int64_t outer, int64_t n,
                                int64_t inner, int log, int nthreads)
{
    F(bwd_ctx) c = {grad, y, out, n, inner, log, NULL, NULL, NULL, NULL, 0};
    int nt = fsm_pick_threads(2 * outer * n * inner, nthreads);
    fsm_reduce(&c, outer, inner, nt, F(bwd_rows), F(bwd_tile), F(bwd_long_row));
}
