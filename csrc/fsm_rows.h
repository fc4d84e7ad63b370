/* fsm_rows.h -- what the op families share: the work split (type-independent, written once)
 * and the row primitives of one float type FT.
 *
 * Included by fsm_kernels_impl.c once per dtype (FT = float, then double; F(name) appends
 * _f32 / _f64; EXP, EXPD, EXPN, EXPDN and LOGT are fsm_math.h's functions for FT), before the op
 * families fsm_softmax.h, fsm_lse.h and fsm_ce.h.  The work split is compiled once (guard).
 *
 * Design (names as in docs/DESIGN.md: m running max, s sum):
 *   The work split.  An op family writes its maths as functions of one row, one group of small
 *   rows, one tile of columns or one block of a long row; the drivers below cut the call into
 *   chunks for fsm_parallel (fsm_threads.c) and call them:
 *     fsm_reduce      an (outer, n, inner) reduction (softmax, logsumexp):
 *                       inner > 1           tiles of <= FSM_TILE columns, over the threads
 *                       outer >= nt         whole rows, over the threads
 *                       else (few long rows) long_row(r) splits row r into blocks over the threads
 *     fsm_run_rows    rows [0, outer) in chunks of consecutive rows (cross-entropy uses it alone)
 *     fsm_run_ranges  [0, items) in nchunks ranges, chunk k writing its own slot k: the rows, the
 *                     tiles, the blocks of one long row (each phase of a long row is one call)
 *     fsm_small_rows  rows of n <= FSM_SMALL_N elements, FSM_GROUP / n of them at a time
 *   The chunks are a function of the sizes and the thread count only, so the results are too.
 *   Inside a chunk the op's rows function calls its row / group functions directly (constant
 *   callbacks of the always-inlined fsm_small_rows become direct calls), so GCC inlines the hot
 *   loops there as it would in a hand-written loop; one indirect call per chunk or per tile.
 *   Row primitives: accumulators are double for both dtypes (the float32 -> double widening is
 *   vectorized); the loops are `#pragma omp simd`, with fsm_math.h's exp inlined.
 *   NaN is ignored by the max (comparisons are false) but reaches s through exp(NaN).
 */

/* ================================================================ the work split (once) */
#ifndef FSM_ROWS_SPLIT
#define FSM_ROWS_SPLIT

#define FSM_MAX_CHUNKS 256   /* chunks per call; one slot each for a split long row */

static inline int fsm_pick_threads(int64_t work, int nthreads)
{
    if (nthreads <= 1) return 1;
    int64_t t = work / FSM_WORK_PER_THREAD;
    if (t < 1) t = 1;
    if (t > nthreads) t = nthreads;
    return (int)t;
}

/* chunks of work for nt threads: 8 per thread (claimed dynamically, so a thread that the OS
   schedules late costs little), at most `items` and FSM_MAX_CHUNKS */
static inline int fsm_chunks(int64_t items, int nt)
{
    if (nt <= 1) return 1;
    int64_t c = 8 * (int64_t)nt;
    if (c > FSM_MAX_CHUNKS) c = FSM_MAX_CHUNKS;
    if (c > items) c = items;
    return c < 1 ? 1 : (int)c;
}

/* [lo, hi) of the tid-th of nt equal parts of [0, n) */
static inline void fsm_split(int64_t n, int tid, int nt, int64_t *lo, int64_t *hi)
{
    int64_t q = n / nt, r = n % nt;            /* the first r parts get one more */
    *lo = q * tid + (tid < r ? tid : r);
    *hi = *lo + q + (tid < r ? 1 : 0);
}

/* the op's callbacks; ctx is the op's context (read only inside a chunk: a chunk writes its
   outputs and its own slots, so who runs it does not matter) */
typedef void (*fsm_range_fn)(const void *ctx, int k, int64_t lo, int64_t hi); /* chunk k      */
typedef void (*fsm_group_fn)(const void *ctx, int64_t r0, int64_t g);      /* rows r0..+g   */
typedef void (*fsm_tile_fn)(const void *ctx, int64_t o, int64_t c0, int64_t c1); /* slab o   */
typedef void (*fsm_long_fn)(void *ctx, int64_t r, int nc, int nt);         /* row r, split  */

typedef struct {
    fsm_range_fn fn;
    const void *ctx;
    int64_t items;
} fsm_ranges_job;

static void fsm_ranges_task(void *p, int k, int nchunks)
{
    const fsm_ranges_job *j = p;
    int64_t lo, hi;
    fsm_split(j->items, k, nchunks, &lo, &hi);
    j->fn(j->ctx, k, lo, hi);
}

/* fn(ctx, k, lo, hi) for the nchunks ranges of [0, items), on up to nt threads (a range may be
   empty when items < nchunks) */
static void fsm_run_ranges(fsm_range_fn fn, const void *ctx, int64_t items, int nchunks, int nt)
{
    fsm_ranges_job j = {fn, ctx, items};
    fsm_parallel(fsm_ranges_task, &j, nchunks, nt);
}

/* rows [0, outer): rows(ctx, k, lo, hi) per chunk of consecutive rows */
static void fsm_run_rows(fsm_range_fn rows, const void *ctx, int64_t outer, int nt)
{
    fsm_run_ranges(rows, ctx, outer, fsm_chunks(outer, nt), nt);
}

typedef struct {
    fsm_tile_fn tile;
    const void *ctx;
    int64_t inner, ntiles;
} fsm_tiles_job;

/* tiles [lo, hi) of the (outer x ntiles) tiles: slab o = it / ntiles, columns [c0, c1) */
static void fsm_tiles_range(const void *p, int k, int64_t lo, int64_t hi)
{
    const fsm_tiles_job *j = p;
    (void)k;
    for (int64_t it = lo; it < hi; it++) {
        int64_t o = it / j->ntiles, c0 = (it % j->ntiles) * FSM_TILE;
        int64_t c1 = c0 + FSM_TILE < j->inner ? c0 + FSM_TILE : j->inner;
        j->tile(j->ctx, o, c0, c1);
    }
}

/* an (outer, n, inner) reduction on nt threads (see the Design above) */
static void fsm_reduce(void *ctx, int64_t outer, int64_t inner, int nt, fsm_range_fn rows,
                       fsm_tile_fn tile, fsm_long_fn long_row)
{
    if (inner > 1) {
        int64_t ntiles = (inner + FSM_TILE - 1) / FSM_TILE;
        fsm_tiles_job j = {tile, ctx, inner, ntiles};
        fsm_run_ranges(fsm_tiles_range, &j, outer * ntiles, fsm_chunks(outer * ntiles, nt), nt);
        return;
    }
    if (outer >= nt || nt == 1) {
        fsm_run_rows(rows, ctx, outer, nt);
        return;
    }
    /* fewer rows than threads: split each row into nc blocks */
    int nc = fsm_chunks(FSM_MAX_CHUNKS, nt);
    for (int64_t r = 0; r < outer; r++) long_row(ctx, r, nc, nt);
}

/* rows [lo, hi) of n <= FSM_SMALL_N elements: group(ctx, r0, g) for groups of g rows, as many as
   fill FSM_GROUP elements and at most cap (the size of the op's per-row buffers) */
FSM_INLINE void fsm_small_rows(const void *ctx, int64_t lo, int64_t hi, int64_t n, int64_t cap,
                               fsm_group_fn group)
{
    int64_t G = FSM_GROUP / n;
    if (G > cap) G = cap;
    for (int64_t r0 = lo; r0 < hi; r0 += G) group(ctx, r0, hi - r0 < G ? hi - r0 : G);
}

#endif /* FSM_ROWS_SPLIT */

/* ================================================================ row primitives (per FT) */

static inline int F(finite)(FT v) { return v - v == 0; }

#if defined(__clang__)
/* clang (14 to 20) does not vectorize a select-based max reduction without -ffast-math's no-NaN
   flag, and warns about the pragma (-Wpass-failed).  The same max (NaNs skipped, order of equal
   values aside), written as 64 bytes of independent lanes: an elementwise select that clang
   vectorizes (vmaxps/vmaxpd, NEON fcmgt+bsl), then the lanes combined.  GCC: the pragma below. */
#define FSM_MAX_LANES ((int)(64 / sizeof(FT)))
static inline FT F(row_max)(const FT *x, int64_t n)
{
    FT acc[64 / sizeof(FT)];
    for (int j = 0; j < FSM_MAX_LANES; j++) acc[j] = -INFINITY;
    int64_t i = 0;
    for (; i + FSM_MAX_LANES <= n; i += FSM_MAX_LANES)
        for (int j = 0; j < FSM_MAX_LANES; j++) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
    FT m = -INFINITY;
    for (int j = 0; j < FSM_MAX_LANES; j++) m = acc[j] > m ? acc[j] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}
#else
static inline FT F(row_max)(const FT *x, int64_t n)
{
    FT m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}
#endif

/* the max of k per-block maxima, in order */
static inline FT F(slots_max)(const FT *ms, int k)
{
    FT M = -INFINITY;
    for (int i = 0; i < k; i++) M = ms[i] > M ? ms[i] : M;
    return M;
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

/* online (m, s) of x[0:n), per FSM_BLOCK block: bm = max(block); if bm > m: s *= exp(m - bm),
   m = bm; s += sum exp(x - m) over the block (still in L1).  s is 0 and m is -inf for an empty
   or all -inf range.  *inf is set when a +inf is met (the caller then redoes the row). */
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

/* merge (m, s) pairs: (m1,s1)+(m2,s2) = (M, s1 e^(m1-M) + s2 e^(m2-M)), s = sum s_i exp(m_i - M) */
static void F(merge_stats)(const FT *ms, const double *ss, int k, FT *pm, double *ps)
{
    FT M = F(slots_max)(ms, k);
    double s = 0.0;
    if (M != -INFINITY)
        for (int i = 0; i < k; i++)
            if (ms[i] != -INFINITY) s += ss[i] * fsm_exp_f64((double)ms[i] - (double)M);
    *pm = M;
    *ps = s;
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
