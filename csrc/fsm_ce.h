/* fsm_ce.h -- the fused cross-entropy (loss and gradient) for one float type FT (included per
 * dtype by fsm_kernels_impl.c, after fsm_rows.h).  Rows are split over the threads by
 * fsm_run_rows (fsm_rows.h); a row is never split.
 *
 * Per row i (docs/DESIGN.md): m = max x (not finite: ce_shift); pass 2 computes e_j = exp(x_j - m),
 * stores it into grad (grad may be logits: x_j is read before g_j is written, and x_t and
 * anything else that needs the logits is read in or before this pass) or, loss only, into an
 * L1 scratch block, and accumulates s = sum e_j and the sums the loss needs:
 *   integer target:  Q = (1-eps) w_t + eps/C sum w;  sq = (1-eps) w_t (x_t - m) + eps/C sum w_j (x_j - m)
 *   probabilities:   q_j = w_j ((1-eps) P_j + eps/C);  Q = sum q_j;  sq = sum q_j (x_j - m)
 *   loss = Q log(s) - sq (integer target: grouped as the reference, ce_loss_target; x - m of
 *   the sums in double, a zero x - m adds 0 whatever its weight, FSM_CE_WD);
 *   pass 3 (in cache): grad_j = e_j (scale Q/s) - scale q_j.
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

/* the shift of a row of max m: m itself when finite; +-inf becomes +-FT_MAX (the largest
   finite FT), NaN 0.  With m = +inf, a finite x_j keeps e_j = exp(x_j - shift)
   finite while an infinite one gives e_j = inf and s = inf; then p_j = e_j Q / s is 0 for the
   finite entries and NaN for the infinite ones, the reference's exp(x_j - log s).  (A shift of
   0 overflowed e_j for x_j > log(FT_MAX), and inf * 0 made the row NaN.)  m = -inf is the row's
   max only when every entry is -inf, and the min of a temperature row with a negative factor
   (a base below 1: (x - m) c, fsm_temperature.h), where -FT_MAX plays the same part. */
FSM_INLINE FT F(ce_shift)(FT m)
{
#if FT_IS_F32
    const FT top = FLT_MAX;
#else
    const FT top = DBL_MAX;
#endif
    return F(finite)(m) ? m : m == (FT)INFINITY ? top : m == -(FT)INFINITY ? -top : (FT)0;
}

/* w (x - m) for the sum sq, in double as the reference (x - m of float32 logits may overflow
   float32; then 0 * -inf would be NaN where the reference has 0); the weight selected to 0 where
   x == m, so that an infinite weight there adds 0, not 0 * inf: the reference's term
   w (x - m - log s) is then -inf (or NaN when log s = 0), which W log s gives (loss, below) */
#define FSM_CE_WD(w, v, m) ((double)((v) == (m) ? (FT)0 : (w)) * ((double)(v) - (double)(m)))

/* e = exp(x - m) for one block of len <= CEL elements (e may be x itself), acc[k] += e in lane k;
   kind 1: ax[k] += x - m, kind 2: ax[k] += w (x - m) (w offset to this block).  neg: m is the row
   max (x - m <= 0 or NaN), so the cheaper exp variant of fsm_math.h (same results).  Element k of
   every block goes to lane k, so the sums do not depend on how the loop is vectorized. */
FSM_INLINE void F(ce_expsum_block)(const FT *xb, FT *eb, const FT *wb, int len, FT m, int neg,
                                   int kind, double *acc, double *ax)
{
#pragma omp simd
    FSM_CLANG_WIDTH   /* fsm_rows.h: full width for clang too */
    for (int k = 0; k < len; k++) {
        FT v = xb[k];
        FT ev = neg ? EXPDN(v, m) : EXPD(v, m);
        eb[k] = ev;
        acc[k] += (double)ev;
        /* x - m in double (it may overflow FT), as the reference; a zero x - m adds nothing,
           so an infinite weight at the max gives no 0 * inf (FSM_CE_WD) */
        if (kind == 1) ax[k] += (double)v - (double)m;
        if (kind == 2) ax[k] += FSM_CE_WD(wb[k], v, m);
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
    FSM_CLANG_WIDTH
    for (int k = 0; k < len; k++) {
        FT v = xb[k];
        FT q = a * Pb[k] + eCf;
        if (wb) q = wb[k] * q;
        FT ev = neg ? EXPDN(v, m) : EXPD(v, m);
        eb[k] = ev;
        acc[k] += (double)ev;
        aq[k] += (double)q;
        ax[k] += FSM_CE_WD(q, v, m);
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

/* loss = Q log s - sq of an integer target, as the reference groups it:
   (1 - eps) w_t (log s - (x_t - m)) + eps/C (W log s - sum_j w_j (x_j - m)), the smoothing term
   only when eps != 0 (so an infinite weight meets no 0 * inf without smoothing, nor a zero w_t
   an infinite x_t - m's cancellation) -- the reference's (1 - e) nll + e/C smooth */
FSM_INLINE double F(ce_loss_target)(double eps, double eC, double wt, double W, double dt,
                                    double ls, double sx)
{
    double l = (1.0 - eps) * (wt * (ls - dt));
    if (eps != 0) l += eC * (W * ls - sx);
    return l;
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
    if (FSM_UNLIKELY(!neg)) m = F(ce_shift)(m);
    double acc[CEL], ax[CEL];
    for (int k = 0; k < CEL; k++) acc[k] = ax[k] = 0.0;
    if (eps == 0) F(ce_pass)(x, g, C, m, neg, 0, NULL, acc, ax);
    else if (w) F(ce_pass)(x, g, C, m, neg, 2, w, acc, ax);
    else F(ce_pass)(x, g, C, m, neg, 1, NULL, acc, ax);
    const double s = F(ce_lanes)(acc), sx = eps == 0 ? 0.0 : F(ce_lanes)(ax);
    const double wt = w ? (double)w[ti] : 1.0;
    const double Q = (1.0 - eps) * wt + eC * c->wsum;
    c->loss[i] = (FT)F(ce_loss_target)(eps, eC, wt, c->wsum, (double)xt - (double)m,
                                       fsm_log_f64(s), sx);
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
    if (FSM_UNLIKELY(!neg)) m = F(ce_shift)(m);
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

/* integer targets, rows of C <= FSM_SMALL_N: rows [i0, i0+g), g <= FSM_TILE, transposed into a
   (C, g) buffer, the per-row sums vectorized across rows, the gradient transposed back */
static void F(ce_group_target)(const void *p, int64_t i0, int64_t g)
{
    const F(ce_ctx) *c = p;
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
    for (int64_t r = 0; r < g; r++) m[r] = F(ce_shift)(m[r]);
    for (int64_t j = 0; j < C; j++) {
        FT *tr = T + j * g;
        const FT wj = w ? w[j] : (FT)1;
        if (eps != 0) {   /* sx only with smoothing */
#pragma omp simd
            FSM_CLANG_WIDTH
            for (int64_t r = 0; r < g; r++) {
                FT e = EXPD(tr[r], m[r]);
                s[r] += (double)e;
                sx[r] += FSM_CE_WD(wj, tr[r], m[r]);
                tr[r] = e;
            }
        } else {
#pragma omp simd
            FSM_CLANG_WIDTH
            for (int64_t r = 0; r < g; r++) {
                FT e = EXPD(tr[r], m[r]);
                s[r] += (double)e;
                tr[r] = e;
            }
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
        c->loss[i] = (FT)F(ce_loss_target)(eps, eC, wt, c->wsum, (double)xt - (double)m[r],
                                           ls[r], sx[r]);
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

/* rows [lo, hi) */
static void F(ce_rows)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(ce_ctx) *c = p;
    (void)k;
    if (c->target && c->C <= FSM_SMALL_N)
        fsm_small_rows(p, lo, hi, c->C, FSM_TILE, F(ce_group_target));
    else if (c->target)
        for (int64_t i = lo; i < hi; i++) F(ce_row_target)(c, i);
    else
        for (int64_t i = lo; i < hi; i++) F(ce_row_probs)(c, i);
}

/* ================================================================ the kernel */

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
    fsm_run_rows(F(ce_rows), &c, N, nt);
}

#undef FSM_CE_WD
