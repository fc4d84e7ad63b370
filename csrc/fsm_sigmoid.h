/* fsm_sigmoid.h -- sigmoid / log_sigmoid (scipy.special.expit / log_expit) and the binary
 * cross-entropy with logits (loss and gradient fused), for one float type FT (included per
 * dtype by fsm_kernels_impl.c, after fsm_rows.h).
 *
 * With e = exp(-|x|) (EXPN: the argument is <= 0, so nothing overflows) and l = log1p(e)
 * (F(log1pe): Goldberg's log(u) * e / (u - 1), u = 1 + e, in double for both dtypes):
 *   sigmoid      = (x >= 0 ? 1 : e) / (1 + e)             accurate in both tails, one division
 *   log_sigmoid  = x < 0 ? x - l : -l                      (-0.0 at +inf, as scipy)
 *   BCE, torch's formula with pos_weight p folded in without cancellation, weight w:
 *     loss = w (max(x, 0) - z x + l + (p - 1) z (l + max(-x, 0)))
 *          = w ((1 - z) max(x, 0) + p z max(-x, 0) + (1 + (p - 1) z) l)   (computed: no cancellation)
 *     grad = scale w (sigmoid(x) - z - (p - 1) z (1 - sigmoid(x)))
 *          = scale w ((1 - z) sigmoid(x) - p z (1 - sigmoid(x)))      (computed: no cancellation)
 * BCE runs over flat blocks of the (N, C) arrays (nb of them, the API's choice; the partial
 * loss sums in double, one slot per block, so the result does not depend on the thread count),
 * each block walked row segment by row segment (the class of an element indexes pos_weight and
 * a per-class weight; a per-row weight is a scalar for the segment).  The segment loop is
 * specialized at compile time on (weight: none / per class / scalar) x pos_weight x grad; the
 * elementwise loss goes to the caller's array or to an L1 scratch block.
 */

FSM_INLINE double F(log1pe)(double e)
{
    double u = 1.0 + e;
    double r = fsm_log_f64(u) * (e / (u - 1.0));
    return u == 1.0 ? e : r;
}

typedef struct {
    const FT *x;
    FT *out;
    int log;
} F(sig_ctx);

static void F(sig_range)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(sig_ctx) *c = p;
    const FT *x = c->x;
    FT *o = c->out;
    (void)k;
    if (c->log) {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            FT v = x[i];
            FT e = EXPN(-(FT)fabs(v));
            FT l = (FT)F(log1pe)((double)e);
            o[i] = v < 0 ? v - l : -l;
        }
    } else {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            FT v = x[i];
            FT e = EXPN(-(FT)fabs(v));
            o[i] = (v >= 0 ? (FT)1 : e) / ((FT)1 + e);
        }
    }
}

static void F(sigmoid)(const FT *x, FT *out, int64_t n, int log, int nthreads)
{
    F(sig_ctx) c = {x, out, log};
    int nt = fsm_pick_threads(n * (log ? 4 : 2), nthreads);
    fsm_run_ranges(F(sig_range), &c, n, fsm_chunks(n / 65536 + 1, nt), nt);
}

/* ------------------------------------------------------------- binary cross-entropy */
#ifndef FSM_BCE_PIECE
#define FSM_BCE_PIECE 4096          /* scratch loss elements per piece of a segment */
#endif

typedef struct {
    const FT *x, *z, *w, *pw;
    int64_t wr, wc;                 /* weight (wr, wc): wr in {1, N}, wc in {1, C}; or w NULL */
    double scale;
    double *partial;
    int64_t nb;
    FT *loss, *grad;
    int64_t N, C;
} F(bce_ctx);

/* one piece of a row segment: n elements; HW 0 no weight, 1 per element ws[k], 2 scalar w0;
   HP pos_weight ps[k]; HG write the gradient.  Returns sum of the loss (double). */
FSM_INLINE double F(bce_piece)(const FT *x, const FT *z, const FT *ws, FT w0, const FT *ps,
                               FT *l, FT *g, int64_t n, FT sc, int HW, int HP, int HG)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < n; k++) {
        FT v = x[k], t = z[k];
        FT e = EXPN(-(FT)fabs(v));
        FT lp = (FT)F(log1pe)((double)e);
        FT pos = v > 0 ? v : (FT)0, neg = v < 0 ? -v : (FT)0;
        /* with pos_weight p: (1 - t) max(x, 0) + p t max(-x, 0) + (1 + (p - 1) t) l, the same
           sum regrouped so that no two terms cancel (t in [0, 1], p >= 0: all are >= 0); the
           plain sum's -t x and (p - 1) t max(-x, 0) cancel for a huge negative x and p = 0, and
           with FMA contraction leave the rounding error of t|x| (8.4e17 at x = -3.9e25).  An
           infinite logit keeps the plain sum, whose inf / NaN are the reference's and torch's */
        FT lo = pos - t * v + lp;
        if (HP) {
            FT plain = lo + (ps[k] - (FT)1) * t * (lp + neg);
            FT grouped = ((FT)1 - t) * pos + ps[k] * t * neg + ((FT)1 + (ps[k] - (FT)1) * t) * lp;
            lo = v - v == 0 ? grouped : plain;
        }
        FT wk = HW == 1 ? ws[k] : w0;
        if (HW) lo *= wk;
        s += (double)lo;
        l[k] = lo;
        if (HG) {
            FT inv = (FT)1 / ((FT)1 + e);
            FT sg = (v >= 0 ? (FT)1 : e) * inv;
            /* with pos_weight: (1 - t) sg - p t (1 - sg), regrouped as the loss (no cancellation,
               which a large weight would turn into an error of any sign) */
            FT gk = HP ? ((FT)1 - t) * sg - ps[k] * t * ((v >= 0 ? e : (FT)1) * inv) : sg - t;
            if (HW) gk *= wk;
            g[k] = gk * sc;
        }
    }
    return s;
}

#define FSM_BCE_CASE(HW, HP, HG) \
    case HW * 4 + HP * 2 + HG: \
        return F(bce_piece)(x, z, ws, w0, ps, l, g, n, sc, HW, HP, HG);

static double F(bce_piece_any)(const FT *x, const FT *z, const FT *ws, FT w0, const FT *ps,
                               FT *l, FT *g, int64_t n, FT sc, int hw)
{
    switch (hw * 4 + (ps != NULL) * 2 + (g != NULL)) {
        FSM_BCE_CASE(0, 0, 0) FSM_BCE_CASE(0, 0, 1) FSM_BCE_CASE(0, 1, 0) FSM_BCE_CASE(0, 1, 1)
        FSM_BCE_CASE(1, 0, 0) FSM_BCE_CASE(1, 0, 1) FSM_BCE_CASE(1, 1, 0) FSM_BCE_CASE(1, 1, 1)
        FSM_BCE_CASE(2, 0, 0) FSM_BCE_CASE(2, 0, 1) FSM_BCE_CASE(2, 1, 0) FSM_BCE_CASE(2, 1, 1)
    }
    return 0.0;
}
#undef FSM_BCE_CASE

/* blocks [lo, hi) */
static void F(bce_blocks)(const void *p, int k, int64_t lo, int64_t hi)
{
    const F(bce_ctx) *c = p;
    const int64_t C = c->C, total = c->N * C, B = (total + c->nb - 1) / c->nb;
    const FT sc = (FT)c->scale;
    FT scratch[FSM_BCE_PIECE];
    (void)k;
    for (int64_t b = lo; b < hi; b++) {
        int64_t e = b * B, e1 = e + B < total ? e + B : total;
        double s = 0.0;
        while (e < e1) {
            int64_t r = e / C, j0 = e - r * C;
            int64_t j1 = j0 + (e1 - e) < C ? j0 + (e1 - e) : C;
            int64_t off = r * C + j0;
            const FT *ws = NULL, *ps = c->pw ? c->pw + j0 : NULL;
            FT w0 = 1;
            int hw = 0;
            if (c->w) {
                const FT *wrow = c->w + (c->wr > 1 ? r * c->wc : 0);
                if (c->wc > 1) { ws = wrow + j0; hw = 1; }
                else { w0 = wrow[0]; hw = 2; }
            }
            for (int64_t a = 0; a < j1 - j0; a += FSM_BCE_PIECE) {
                int64_t n = j1 - j0 - a < FSM_BCE_PIECE ? j1 - j0 - a : FSM_BCE_PIECE;
                FT *l = c->loss ? c->loss + off + a : scratch;
                FT *g = c->grad ? c->grad + off + a : NULL;
                s += F(bce_piece_any)(c->x + off + a, c->z + off + a, ws ? ws + a : NULL, w0,
                                      ps ? ps + a : NULL, l, g, n, sc, hw);
            }
            e += j1 - j0;
        }
        c->partial[b] = s;
    }
}

static void F(binary_cross_entropy)(const FT *logits, const FT *target, const FT *weight,
                                    int64_t wr, int64_t wc, const FT *pos_weight, double scale,
                                    double *partial, int64_t nb, FT *loss, FT *grad, int64_t N,
                                    int64_t C, int nthreads)
{
    F(bce_ctx) c = {logits, target, weight, pos_weight, wr, wc, scale, partial, nb, loss, grad,
                    N, C};
    /* nothing depends on the class (no pos_weight; weight absent, scalar or elementwise): the
       arrays are one row, whatever C is, so the segments are whole blocks */
    if (!pos_weight && (!weight || (wr == N && wc == C) || (wr == 1 && wc == 1))) {
        c.C = N * C;
        c.N = 1;
        if (weight && wr > 1) { c.wr = 1; c.wc = N * C; }
    }
    int nt = fsm_pick_threads(N * C * (grad ? 6 : 4), nthreads);
    fsm_run_ranges(F(bce_blocks), &c, nb, fsm_chunks(nb, nt), nt);
}
