/* fsm_masked.h -- softmax / log_softmax / logsumexp and the two backward passes with a mask
 * (jax.nn.softmax's where=), for one float type FT (included per dtype by fsm_kernels_impl.c,
 * after fsm_rows.h).  Semantics: docs/DESIGN.md ("masked entries") and docs/training.md.
 *
 * Design (names as in docs/DESIGN.md: m the max, s the sum, v = x * sc the scaled entry):
 *   x, out: (outer, n) rows.  The mask is stored by its distinct rows: mask (mrows, n) bytes,
 *   nonzero = the entry takes part; row r of x uses mask row rowmap[r] (a causal (n, n) mask over
 *   (B, n, n) is n*n bytes, not B*n*n; a row that stays in L1/L2 across the rows that share it).
 *   sc = scale[r] (scale NULL: 1; softmax(x * scale[r]) per row, for temperature).
 *   Per row, as the unmasked three-pass kernels (fsm_softmax.h) with the mask folded into each
 *   loop as a select:
 *     m = max of v over masked-in entries (NaN skipped by the comparison);
 *     softmax      e = mk ? exp(v - m) * 2^64 : 0 stored while summed; out = e * (1/s)
 *     log_softmax  d = mk ? v - m : -inf stored while s = sum exp(d); out = d - log(s), log(s)
 *                  from the rest-sum when s is near 1 (lsm_log: the dominant entry)
 *     logsumexp    k = count of masked-in v == m, t = sum of the others' exp(v - m);
 *                  log1p(t / k) + log(k) + m
 *   The common path needs m finite and s not NaN; anything else (no masked-in entry, a masked-in
 *   NaN or +-inf) takes the rare path of the row, which writes the contract's values directly
 *   (masked-out entries never reach a sum: their NaN / inf cannot leak).
 *   Mask rows that are one contiguous range of ones (padding, causal, a window, all True / all
 *   False; fsm_mask_ranges, once per call and mask row) skip the selects: the unmasked row
 *   kernels (fsm_softmax.h softmax_row_3pass / _stream, fsm_lse.h lse_row, fsm_backward.h) run
 *   on the range and the rest is filled -- the same values, since the semantics are the plain
 *   op on the masked-in entries.  Rows with a scale always take the select loops.
 *   Out of cache (output >= FSM_NT_BYTES) softmax / log_softmax go through an L1 scratch row and
 *   stream the output (row_stream), as the unmasked kernel.  Rows are split over the threads
 *   (fsm_run_rows); a few long rows are not split (the masked entries serve attention-sized
 *   rows).  inner == 1 always: the API moves the reduced axes last.
 */

typedef struct {
    const FT *x, *g;             /* x: the input (backward: y); g: backward's grad           */
    FT *out, *sign;
    const char *mask;
    const int64_t *rowmap;
    const double *scale;
    const int64_t *ranges;       /* fsm_mask_ranges, or NULL: every row takes the select loops */
    int64_t n;
    int log, stream;
} F(msk_ctx);

#ifndef FSM_MASK_RANGES
#define FSM_MASK_RANGES
/* Mask rows that are one contiguous range of ones (a padding mask, a causal row, a sliding
   window, all True, all False) run the unmasked row kernels on that range and fill the rest:
   no select per element, and no work for the masked-out part.  rg[0..1] = [lo, hi) of mask row
   mk when its nonzero entries are exactly that range (none: 0, 0), else rg[0] = -1. */
static void fsm_mask_range(const char *mk, int64_t n, int64_t *rg)
{
    int64_t lo = 0, hi = n, cnt = 0;
    uint64_t w;
    while (lo + 8 <= n) { memcpy(&w, mk + lo, 8); if (w) break; lo += 8; }
    while (lo < n && mk[lo] == 0) lo++;
    if (lo == n) { rg[0] = rg[1] = 0; return; }
    while (hi - 8 >= lo) { memcpy(&w, mk + hi - 8, 8); if (w) break; hi -= 8; }
    while (mk[hi - 1] == 0) hi--;
#pragma omp simd reduction(+ : cnt)
    for (int64_t i = lo; i < hi; i++) cnt += mk[i] != 0;
    rg[0] = cnt == hi - lo ? lo : -1;
    rg[1] = hi;
}

/* the ranges of the mrows mask rows (2 int64 each), or NULL (no memory: the select loops) */
static int64_t *fsm_mask_ranges(const char *mask, int64_t mrows, int64_t n)
{
    int64_t *rg = malloc((size_t)(2 * mrows) * sizeof(int64_t));
    if (rg)
        for (int64_t r = 0; r < mrows; r++) fsm_mask_range(mask + r * n, n, rg + 2 * r);
    return rg;
}
#endif

/* y[0:n) = v, with non-temporal stores when stream (the masked-out part of a streamed output,
   for the rows that the single streamed pass does not serve: regular stores there would read
   every line first), as row_stream */
static inline void F(msk_fill)(FT *y, int64_t n, FT v, int stream)
{
    int64_t i = 0;
    if (stream) {
        while (i < n && ((uintptr_t)(y + i) & (FSM_VEC_BYTES - 1)) != 0) y[i++] = v;
#if defined(__AVX512F__) && FT_IS_F32
        for (; i + 16 <= n; i += 16) _mm512_stream_ps(y + i, _mm512_set1_ps(v));
#elif defined(__AVX512F__)
        for (; i + 8 <= n; i += 8) _mm512_stream_pd(y + i, _mm512_set1_pd(v));
#elif defined(__AVX2__) && FT_IS_F32
        for (; i + 8 <= n; i += 8) _mm256_stream_ps(y + i, _mm256_set1_ps(v));
#elif defined(__AVX2__)
        for (; i + 4 <= n; i += 4) _mm256_stream_pd(y + i, _mm256_set1_pd(v));
#elif defined(__SSE2__) && FT_IS_F32
        for (; i + 4 <= n; i += 4) _mm_stream_ps(y + i, _mm_set1_ps(v));
#elif defined(__SSE2__)
        for (; i + 2 <= n; i += 2) _mm_stream_pd(y + i, _mm_set1_pd(v));
#endif
    }
    for (; i < n; i++) y[i] = v;
}

/* the max of x * sc over the masked-in entries (-inf when none; NaN skipped) */
#if defined(__clang__)
/* clang: fsm_rows.h row_max's independent lanes (it does not vectorize the select reduction) */
static inline FT F(msk_max)(const FT *x, const char *mk, int64_t n, FT sc)
{
    FT acc[64 / sizeof(FT)];
    for (int j = 0; j < FSM_MAX_LANES; j++) acc[j] = -INFINITY;
    int64_t i = 0;
    for (; i + FSM_MAX_LANES <= n; i += FSM_MAX_LANES)
        for (int j = 0; j < FSM_MAX_LANES; j++) {
            FT v = mk[i + j] != 0 ? x[i + j] * sc : (FT)-INFINITY;
            acc[j] = v > acc[j] ? v : acc[j];
        }
    FT m = -INFINITY;
    for (int j = 0; j < FSM_MAX_LANES; j++) m = acc[j] > m ? acc[j] : m;
    for (; i < n; i++) {
        FT v = mk[i] != 0 ? x[i] * sc : (FT)-INFINITY;
        m = v > m ? v : m;
    }
    return m;
}
#else
static inline FT F(msk_max)(const FT *x, const char *mk, int64_t n, FT sc)
{
    FT m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) {
        FT v = mk[i] != 0 ? x[i] * sc : (FT)-INFINITY;
        m = v > m ? v : m;
    }
    return m;
}
#endif

/* e = mk ? exp(x * sc - m) * 2^64 : 0, returns sum(e) (m finite, >= every masked-in v);
   the sums as row_expsum_store64's: FT lanes per FSM_SUMB block, folded into a double */
static inline double F(msk_expstore64)(const FT *x, const char *mk, FT *e, int64_t n, FT sc,
                                       FT m)
{
    double s = 0.0;
    int64_t i = 0;
    for (; i + FSM_SUMB <= n; i += FSM_SUMB) {
        FT sb = 0;
#pragma omp simd reduction(+ : sb)
        for (int64_t j = i; j < i + FSM_SUMB; j++) {
            FT v = EXP64DN(x[j] * sc, m);
            v = mk[j] != 0 ? v : (FT)0;
            e[j] = v;
            sb += v;
        }
        s += (double)sb;
    }
    FT sb = 0;
#pragma omp simd reduction(+ : sb)
    for (int64_t j = i; j < n; j++) {
        FT v = EXP64DN(x[j] * sc, m);
        v = mk[j] != 0 ? v : (FT)0;
        e[j] = v;
        sb += v;
    }
    return s + (double)sb;
}

/* d = mk ? x * sc - m : -inf stored, returns sum exp(d) in double (m finite) */
static inline double F(msk_shiftstore)(const FT *x, const char *mk, FT *d, int64_t n, FT sc,
                                       FT m)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    FSM_CLANG_WIDTH
    for (int64_t i = 0; i < n; i++) {
        FT v = x[i] * sc - m;
        v = mk[i] != 0 ? v : (FT)-INFINITY;
        d[i] = v;
        s += (double)EXPN(v);
    }
    return s;
}

/* the rare row (m not finite, or a masked-in NaN): softmax mk ? NaN : 0; log_softmax
   mk ? v - log(sum exp v) : -inf (the unmasked contract's values on the masked-in entries:
   m := 0, NaN / inf propagate); nan_row: the row holds a masked-in NaN (all NaN).  The sum
   reads x before any write: safe in place. */
static void F(msk_rare)(const FT *x, const char *mk, FT *y, int64_t n, FT sc, int log,
                        int nan_row)
{
    if (!log || nan_row) {
        const FT off = log ? (FT)-INFINITY : (FT)0;
        for (int64_t i = 0; i < n; i++) y[i] = mk[i] != 0 ? (FT)NAN : off;
        return;
    }
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (mk[i] != 0) s += fsm_exp_f64((double)(x[i] * sc));
    const FT ls = (FT)fsm_log_f64(s);
    for (int64_t i = 0; i < n; i++) y[i] = mk[i] != 0 ? x[i] * sc - ls : (FT)-INFINITY;
}

/* one row: e is the scratch row (stream) or NULL (the exps go to y) */
static void F(msk_softmax_row)(const F(msk_ctx) *c, int64_t r, FT *e)
{
    const int64_t n = c->n;
    const FT *x = c->x + r * n;
    FT *y = c->out + r * n;
    const char *mk = c->mask + c->rowmap[r] * n;
    const FT sc = c->scale ? (FT)c->scale[r] : (FT)1;
    const int64_t *rg = c->ranges ? c->ranges + 2 * c->rowmap[r] : NULL;
    if (rg && rg[0] >= 0) {     /* one range [lo, hi): the unmasked row kernel on it */
        const int64_t lo = rg[0], hi = rg[1];
        const FT off = c->log ? (FT)-INFINITY : (FT)0;
        if (e && hi > lo) {
            /* streamed: the whole row built in the scratch (the range's exps, the fill), then
               one streamed pass over y -- no regular stores beside the non-temporal ones
               (measured, alternating: 10-13% faster than the range streamed and the rest
               filled apart, causal 4x1024x1024 float32); a non-finite row: below */
            const FT *xs = x + lo;
            const int64_t L = hi - lo;
            FT mx = F(row_max)(xs, L);
            if (F(finite)(mx)) {
                FT ls = 0, a = 1;
                if (!c->log) {
                    double s = F(row_expsum_store64)(xs, e + lo, L, mx);
                    a = (FT)(1.0 / s);
                } else {
                    double s = F(row_shiftstore)(xs, e + lo, L, mx, 1);
                    ls = (FT)F(lsm_log)(s, e + lo, L, (FT)0, 1);
                }
                if (F(finite)(a) && F(finite)(ls)) {
                    for (int64_t i = 0; i < lo; i++) e[i] = off;
                    for (int64_t i = hi; i < n; i++) e[i] = off;
                    F(row_stream)(e, y, n, a, -ls);
                    return;
                }
            }
        }
        F(msk_fill)(y, lo, off, e != NULL);
        F(msk_fill)(y + hi, n - hi, off, e != NULL);
        if (hi > lo) {
            F(softmax_ctx) p = {.x = x + lo, .y = y + lo, .n = hi - lo, .inner = 1,
                                .log = c->log, .method = FSM_METHOD_THREE_PASS};
            if (e) F(softmax_row_stream)(&p, 0, e);
            else F(softmax_row_3pass)(&p, 0);
        }
        return;
    }
    FT *d = e ? e : y;
    FT m = F(msk_max)(x, mk, n, sc);
    if (FSM_UNLIKELY(!F(finite)(m))) {
        F(msk_rare)(x, mk, y, n, sc, c->log, 0);
        return;
    }
    if (!c->log) {
        double s = F(msk_expstore64)(x, mk, d, n, sc, m);     /* 2^64 * the sum, >= 2^64 */
        if (FSM_UNLIKELY(s != s)) { F(msk_rare)(x, mk, y, n, sc, 0, 1); return; }
        if (e) F(row_stream)(e, y, n, (FT)(1.0 / s), (FT)0);
        else F(row_scale)(y, n, (FT)(1.0 / s));
    } else {
        double s = F(msk_shiftstore)(x, mk, d, n, sc, m);     /* >= 1 */
        if (FSM_UNLIKELY(s != s)) { F(msk_rare)(x, mk, y, n, sc, 1, 1); return; }
        /* d holds v - m (the max at 0) or -inf: its rest is the masked-in entries' */
        FT ls = (FT)F(lsm_log)(s, d, n, (FT)0, 1);
        if (e) F(row_stream)(e, y, n, (FT)1, -ls);
        else F(row_sub)(y, n, ls);
    }
}

static void F(msk_softmax_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(msk_ctx) *c = p;
    (void)k;
    if (c->stream) {
        FT e[FSM_NT_SCRATCH / sizeof(FT)];
        for (int64_t r = lo; r < hi; r++) F(msk_softmax_row)(c, r, e);
        fsm_stream_fence();
        return;
    }
    for (int64_t r = lo; r < hi; r++) F(msk_softmax_row)(c, r, NULL);
}

static void F(softmax_masked)(const FT *x, const char *mask, int64_t mrows,
                              const int64_t *rowmap, const double *scale, FT *out, int64_t outer,
                              int64_t n, int log, int nthreads)
{
    int64_t *rg = scale ? NULL : fsm_mask_ranges(mask, mrows, n);
    F(msk_ctx) c = {x, NULL, out, NULL, mask, rowmap, scale, rg, n, log, 0};
    c.stream = outer * n * (int64_t)sizeof(FT) >= FSM_NT_BYTES
               && n * (int64_t)sizeof(FT) <= FSM_NT_SCRATCH
               && getenv("FASTSOFTMAX_C_NO_STREAM") == NULL;
    fsm_run_rows(F(msk_softmax_rows), &c, outer, fsm_pick_threads(outer * n, nthreads));
    free(rg);
}

/* ================================================================ logsumexp */

static void F(msk_lse_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(msk_ctx) *c = p;
    const int64_t n = c->n;
    (void)k;
    for (int64_t r = lo; r < hi; r++) {
        const FT *x = c->x + r * n;
        const char *mk = c->mask + c->rowmap[r] * n;
        const FT sc = c->scale ? (FT)c->scale[r] : (FT)1;
        const int64_t *rg = c->ranges ? c->ranges + 2 * c->rowmap[r] : NULL;
        if (rg && rg[0] >= 0) {     /* one range: the unmasked row (b none) on it */
            if (rg[1] > rg[0]) {
                F(lse_row)(x + rg[0], NULL, rg[1] - rg[0], c->out + r, c->sign ? c->sign + r : NULL);
            } else {
                c->out[r] = (FT)-INFINITY;
                if (c->sign) c->sign[r] = 0;
            }
            continue;
        }
        FT m = F(msk_max)(x, mk, n, sc);
        double res, sgn = 1.0;
        int nan = 0;
        if (FSM_LIKELY(F(finite)(m))) {
            double kk = 0.0, t = 0.0;
#pragma omp simd reduction(+ : kk, t)
            FSM_CLANG_WIDTH
            for (int64_t i = 0; i < n; i++) {
                FT v = x[i] * sc;
                FT e = EXPN(v - m);
                int in = mk[i] != 0;
                kk += (in && v == m) ? 1.0 : 0.0;
                t += (in && v != m) ? (double)e : 0.0;
            }
            res = fsm_log1p_f64(t / kk) + fsm_log_f64(kk) + (double)m;
            nan = res != res;
        } else {   /* +inf, or no finite masked-in entry: a masked-in NaN decides */
            for (int64_t i = 0; i < n; i++) nan |= mk[i] != 0 && x[i] != x[i];
            res = m;
            sgn = m > 0 ? 1.0 : 0.0;
        }
        if (FSM_UNLIKELY(nan)) res = sgn = NAN;
        c->out[r] = (FT)res;
        if (c->sign) c->sign[r] = (FT)sgn;
    }
}

static void F(logsumexp_masked)(const FT *x, const char *mask, int64_t mrows,
                                const int64_t *rowmap, const double *scale, FT *out, FT *sign,
                                int64_t outer, int64_t n, int nthreads)
{
    int64_t *rg = scale ? NULL : fsm_mask_ranges(mask, mrows, n);
    F(msk_ctx) c = {x, NULL, out, sign, mask, rowmap, scale, rg, n, 0, 0};
    fsm_run_rows(F(msk_lse_rows), &c, outer, fsm_pick_threads(outer * n, nthreads));
    free(rg);
}

/* ================================================================ backward */

static void F(msk_bwd_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(msk_ctx) *c = p;
    const int64_t n = c->n;
    (void)k;
    for (int64_t r = lo; r < hi; r++) {
        const FT *y = c->x + r * n, *g = c->g + r * n;
        FT *o = c->out + r * n;
        const char *mk = c->mask + c->rowmap[r] * n;
        const int64_t *rg = c->ranges ? c->ranges + 2 * c->rowmap[r] : NULL;
        if (rg && rg[0] >= 0) {     /* one range: the unmasked row on it, 0 elsewhere */
            const int64_t lo = rg[0], hi = rg[1];
            for (int64_t i = 0; i < lo; i++) o[i] = 0;
            for (int64_t i = hi; i < n; i++) o[i] = 0;
            if (hi > lo) {
                if (c->log)
                    F(bwd_write)(g + lo, y + lo, o + lo, hi - lo, 1,
                                 (FT)F(bwd_sum)(g + lo, y + lo, hi - lo, 1));
                else
                    F(bwd_write)(g + lo, y + lo, o + lo, hi - lo, 0,
                                 (FT)F(bwd_sum)(g + lo, y + lo, hi - lo, 0));
            }
            continue;
        }
        double s = 0.0;
        if (c->log) {
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < n; i++) s += mk[i] != 0 ? (double)g[i] : 0.0;
            const FT cs = (FT)s;
            if (cs == 0) {                                  /* as bwd_write */
#pragma omp simd
                for (int64_t i = 0; i < n; i++)
                    o[i] = mk[i] != 0 ? F(lbwd_zero)(g[i], y[i]) : (FT)0;
            } else {
#pragma omp simd
                for (int64_t i = 0; i < n; i++) {
                    FT v = g[i] - EXP(y[i]) * cs;
                    o[i] = mk[i] != 0 ? v : (FT)0;
                }
            }
        } else {
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < n; i++) s += mk[i] != 0 ? (double)g[i] * (double)y[i] : 0.0;
            const FT cs = (FT)s;
#pragma omp simd
            for (int64_t i = 0; i < n; i++) {
                FT v = y[i] * (g[i] - cs);
                o[i] = mk[i] != 0 ? v : (FT)0;
            }
        }
    }
}

static void F(softmax_backward_masked)(const FT *grad, const FT *y, const char *mask,
                                       int64_t mrows, const int64_t *rowmap, FT *out,
                                       int64_t outer, int64_t n, int log, int nthreads)
{
    int64_t *rg = fsm_mask_ranges(mask, mrows, n);
    F(msk_ctx) c = {y, grad, out, NULL, mask, rowmap, NULL, rg, n, log, 0};
    fsm_run_rows(F(msk_bwd_rows), &c, outer, fsm_pick_threads(2 * outer * n, nthreads));
    free(rg);
}
