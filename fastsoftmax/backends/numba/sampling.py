"""Candidate sampling (the contract's ``sample_candidates``, docs/DESIGN.md): uniforms drawn by the
caller from a numpy Generator turned into classes by inverse CDF, with the rejection loop of
unique sampling.  Plain integer and float64 comparisons, no fast-math: the same classes as the
NumPy reference and the C kernel for the same uniforms, bit for bit."""
import math

from .jit import JIT, cjit


@cjit(**JIT)
def _sample(u, cdf, range_max, seen, out, state):
    filled = state[0]
    tries = state[1]
    total = out.shape[0]
    R = range_max
    fR = float(R)
    for i in range(u.shape[0]):
        if filled >= total:
            break
        if cdf is None:
            c = int(math.floor(u[i] * fR))
        else:
            # smallest c with u < cdf[c] (numpy's searchsorted side="right")
            lo = 0
            hi = R
            while lo < hi:
                mid = (lo + hi) >> 1
                if cdf[mid] <= u[i]:
                    lo = mid + 1
                else:
                    hi = mid
            c = lo
        if c > R - 1:
            c = R - 1
        tries += 1
        if seen is None:
            out[filled] = c
            filled += 1
        elif seen[c] == 0:
            seen[c] = 1
            out[filled] = c
            filled += 1
    state[0] = filled
    state[1] = tries


def sample_candidates(u, cdf, range_max, seen, out, state):
    _sample(u, cdf, range_max, seen, out, state)
