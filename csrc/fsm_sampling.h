/* fsm_sampling.h -- candidate sampling (the contract's sample_candidates, docs/DESIGN.md).
 *
 * Included once (no float type: uniforms are float64, classes int64).  Draw i maps the uniform
 * u[i] in [0, 1) to a class: floor(u * range_max) when cdf is NULL, else the smallest c with
 * u < cdf[c] (binary search; numpy's searchsorted side="right"), clamped to range_max - 1.
 * seen NULL: every draw fills the next slot of out; else (unique) a class not yet marked is
 * taken and marked, a marked one is rejected.  state = {filled, tries} carries the loop across
 * calls (the caller draws the uniforms from a numpy Generator in blocks): so every backend
 * turns one random stream into the same classes.  Plain double comparisons and one multiply:
 * no contraction or reassociation can change a class.
 */
#ifndef FSM_SAMPLING_H
#define FSM_SAMPLING_H

static void sample_candidates(const double *u, int64_t nu, const double *cdf, int64_t range_max,
                              char *seen, int64_t *out, int64_t num_sampled, int64_t *state)
{
    int64_t filled = state[0], tries = state[1];
    const double fR = (double)range_max;
    for (int64_t i = 0; i < nu && filled < num_sampled; i++) {
        int64_t c;
        if (cdf == NULL) {
            c = (int64_t)floor(u[i] * fR);
        } else {
            int64_t lo = 0, hi = range_max;
            while (lo < hi) {
                int64_t mid = (lo + hi) >> 1;
                if (cdf[mid] <= u[i]) lo = mid + 1;
                else hi = mid;
            }
            c = lo;
        }
        if (c > range_max - 1) c = range_max - 1;
        tries++;
        if (seen == NULL) {
            out[filled++] = c;
        } else if (!seen[c]) {
            seen[c] = 1;
            out[filled++] = c;
        }
    }
    state[0] = filled;
    state[1] = tries;
}

#endif /* FSM_SAMPLING_H */
