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

/* orders a chunk's non-temporal stores before the chunk is reported done */
static inline void fsm_stream_fence(void)
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

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

/* The sums of the exp loops below: FT lanes (float32 for float32: one vector add per vector of
   exps, no widening), folded into a double total every FSM_SUMB elements (the block's partial
   sums hold FSM_SUMB / lanes terms each: 32 on avx2, 16 on avx512, so their float32 rounding
   stays ~1e-7 relative however long the row; a 10^7-long row meets 1e-6).  The full blocks
   have a constant trip count, so the vectorized body has no remainder inside a block. */

/* out = exp(x - m) * 2^64, returns their sum; m >= max x or NaN.  Softmax's exp + store + sum:
   the 2^64 is undone by the scale pass (row_scale by 1 / the sum), where a subnormal output
   rounds once (fsm_math.h: fsm_exp64n2sum_f32) */
static inline double F(row_expsum_store64)(const FT *x, FT *out, int64_t n, FT m)
{
    double s = 0.0;
    int64_t i = 0;
    for (; i + FSM_SUMB <= n; i += FSM_SUMB) {
        /* two halves of the block in one loop: two accumulators, half the loop overhead */
        const FT *xb = x + i, *xc = x + i + FSM_SUMB / 2;
        FT *ob = out + i, *oc = out + i + FSM_SUMB / 2;
        FT sb = 0, sc = 0;
#pragma omp simd reduction(+ : sb, sc)
        for (int64_t j = 0; j < FSM_SUMB / 2; j++) {
            FT e = EXP64DN(xb[j], m), f = EXP64DN(xc[j], m);
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
        FT e = EXP64DN(x[j], m);
        out[j] = e;
        sb += e;
    }
    return s + (double)sb;
}

/* clang (14) picks half width (xmm, 4 float32 lanes on avx2) for float exps summed into a double;
   FSM_CLANG_WIDTH asks it for a full vector of FT.  GCC: nothing (its code is unchanged). */
#if defined(__clang__)
#define FSM_CLANG_WIDTH _Pragma("clang loop vectorize_width(FSM_VEC_BYTES / sizeof(FT))")
#else
#define FSM_CLANG_WIDTH
#endif

static inline double F(row_expsum)(const FT *x, int64_t n, FT m)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    FSM_CLANG_WIDTH
    for (int64_t i = 0; i < n; i++) s += (double)EXP(x[i] - m);
    return s;
}

/* row_expsum for m >= max x or NaN.  Double sums: this is also log_softmax's (online) sum,
   whose log must keep the digits of the terms beside the max (float32 lanes holding the 1 of the
   max lose them: 2e-4 relative at a gap of 10, measured) */
static inline double F(row_expsumn)(const FT *x, int64_t n, FT m)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    FSM_CLANG_WIDTH
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
    double s = 0.0;     /* double, as row_expsumn */
    if (neg) {
#pragma omp simd reduction(+ : s)
        FSM_CLANG_WIDTH
        for (int64_t i = 0; i < n; i++) {
            FT d = x[i] - m;
            y[i] = d;
            s += (double)EXPN(d);
        }
    } else {
#pragma omp simd reduction(+ : s)
        FSM_CLANG_WIDTH
        for (int64_t i = 0; i < n; i++) {
            FT d = x[i] - m;
            y[i] = d;
            s += (double)EXP(d);
        }
    }
    return s;
}

/* y = e * a + b with non-temporal stores (the output is not read back soon: it bypasses the
   caches, and its lines are not read first); scalar up to y's vector alignment and in the tail.
   The caller ends its chunk with fsm_stream_fence(). */
static inline void F(row_stream)(const FT *e, FT *y, int64_t n, FT a, FT b)
{
    int64_t i = 0;
    while (i < n && ((uintptr_t)(y + i) & (FSM_VEC_BYTES - 1)) != 0) {
        y[i] = e[i] * a + b;
        i++;
    }
#if defined(__AVX512F__) && FT_IS_F32
    const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
    for (; i + 16 <= n; i += 16)
        _mm512_stream_ps(y + i, _mm512_fmadd_ps(_mm512_loadu_ps(e + i), va, vb));
#elif defined(__AVX512F__)
    const __m512d va = _mm512_set1_pd(a), vb = _mm512_set1_pd(b);
    for (; i + 8 <= n; i += 8)
        _mm512_stream_pd(y + i, _mm512_fmadd_pd(_mm512_loadu_pd(e + i), va, vb));
#elif defined(__AVX2__) && FT_IS_F32
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    for (; i + 8 <= n; i += 8)
        _mm256_stream_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(e + i), va, vb));
#elif defined(__AVX2__)
    const __m256d va = _mm256_set1_pd(a), vb = _mm256_set1_pd(b);
    for (; i + 4 <= n; i += 4)
        _mm256_stream_pd(y + i, _mm256_fmadd_pd(_mm256_loadu_pd(e + i), va, vb));
#elif defined(__SSE2__) && FT_IS_F32
    const __m128 va = _mm_set1_ps(a), vb = _mm_set1_ps(b);
    for (; i + 4 <= n; i += 4)
        _mm_stream_ps(y + i, _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(e + i), va), vb));
#elif defined(__SSE2__)
    const __m128d va = _mm_set1_pd(a), vb = _mm_set1_pd(b);
    for (; i + 2 <= n; i += 2)
        _mm_stream_pd(y + i, _mm_add_pd(_mm_mul_pd(_mm_loadu_pd(e + i), va), vb));
#endif
    for (; i < n; i++) y[i] = e[i] * a + b;
}

/* log_softmax's log(s), accurate for the dominant entry too.  y_max = -log(s) with
   s = k + rest (k ties of the max, rest = the sum of the other terms): when s is near 1, log(s)
   of the rounded sum keeps only the digits of rest that survived 1 + rest (log_softmax([0, -30])
   gave -9.348e-14 for -9.3576e-14; [0, -60] gave 0).  Rows whose sum is below FSM_LSM_RECOMPUTE
   recompute rest apart (one more exp pass, rare rows only) and take log1p(rest) (k = 1) or
   log(k + rest), rounded once.  The threshold: float32 rows sum in double (row_shiftstore,
   row_expsumn), which keeps rest to 2^-43 relative above 1 + 2^-10; a float64 sum holding k
   exact ones and a small rest carries the rounding of every addition at ulp(k) (1000 terms
   beside two tied maxima: 6.5 ulp of log(2), measured), so float64 rows below 4 (up to 3 ties,
   or p_max > 1/4) recompute.  Other rows: log(s) as before. */
#define FSM_LSM_RECOMPUTE (sizeof(FT) == 4 ? 1.0 + 0x1p-10 : 4.0)

/* rest = sum of exp(x - m) over x != m, *pk = the count of x == m; m >= max x, finite */
static double F(row_rest)(const FT *x, int64_t n, FT m, double *pk)
{
    double rest = 0.0, k = 0.0;
#pragma omp simd reduction(+ : rest, k)
    FSM_CLANG_WIDTH
    for (int64_t i = 0; i < n; i++) {
        FT e = EXPN(x[i] - m);
        int eq = x[i] == m;
        rest += eq ? 0.0 : (double)e;
        k += eq ? 1.0 : 0.0;
    }
    *pk = k;
    return rest;
}

/* log(k + rest), with log1p for k == 1 */
static inline double F(log_rest)(double rest, double k)
{
    return k == 1.0 ? fsm_log1p_f64(rest) : fsm_log_f64(k + rest);
}

/* log(s) for log_softmax: s = sum exp(x - m) of the row x[0:n) (m its finite max; fin = 0 when
   the row's max was not finite, then plain log(s)) */
static inline double F(lsm_log)(double s, const FT *x, int64_t n, FT m, int fin)
{
    if (FSM_LIKELY(!fin || !(s < FSM_LSM_RECOMPUTE))) return fsm_log_f64(s);
    double k;
    double rest = F(row_rest)(x, n, m, &k);
    return F(log_rest)(rest, k);
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
