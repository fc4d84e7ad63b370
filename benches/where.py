"""What where= costs over the plain op: softmax / log_softmax / logsumexp float32, 1 thread,
the public API, plain and masked calls alternating in one process (medians of per-round ratios).
Run it under `flock /tmp/bench.lock`.

    python benches/where.py [--rounds 7] [--reps 5] [--backends cython,numba] [--no-jax]

Cases: 4096x1000 and 256x32000 with an all-True mask of shape (n,); a causal (n, n) mask over
(B, n, n), n = 1024, B = 4 (axis -1).  softmax / log_softmax write into a preallocated out=
(no first-touch page faults in either call).  jax.nn.softmax(where=) (jitted, 1 thread) as a
peer: its own masked / plain ratio and its time against ours.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402

import fastsoftmax as fs  # noqa: E402


def timed(fn, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def compare(plain, masked, rounds, reps):
    """(median plain s, median masked s, median of the per-round masked / plain ratios)"""
    plain()
    masked()
    tp, tm, ratios = [], [], []
    for _ in range(rounds):
        a = timed(plain, reps)
        b = timed(masked, reps)
        tp.append(a)
        tm.append(b)
        ratios.append(b / a)
    return statistics.median(tp), statistics.median(tm), statistics.median(ratios)


def cases():
    rng = np.random.default_rng(0)
    for name in ("4096x1000", "256x32000"):
        r, n = map(int, name.split("x"))
        yield name + ", where (n,) all True", (rng.standard_normal((r, n)) * 3).astype(
            np.float32), np.ones(n, bool)
    n, B = 1024, 4
    yield f"{B}x{n}x{n}, causal ({n},{n})", (rng.standard_normal((B, n, n)) * 3).astype(
        np.float32), np.tril(np.ones((n, n), bool))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--backends", default="cython,numba")
    ap.add_argument("--no-jax", action="store_true")
    a = ap.parse_args(argv)
    fs.set_num_threads(1)
    jax = None
    if not a.no_jax:
        try:
            import jax
        except ImportError:
            jax = None
    print("| case | op | backend | plain ms | where= ms | where= / plain |")
    print("|---|---|---|---|---|---|")
    for title, x, w in cases():
        out = np.empty_like(x)
        for op in ("softmax", "log_softmax", "logsumexp"):
            f = getattr(fs, op)
            for be in a.backends.split(","):
                if op == "logsumexp":
                    def plain(f=f, be=be):
                        return f(x, axis=-1, backend=be)

                    def masked(f=f, be=be):
                        return f(x, axis=-1, where=w, backend=be)
                else:
                    def plain(f=f, be=be):
                        return f(x, axis=-1, out=out, backend=be)

                    def masked(f=f, be=be):
                        return f(x, axis=-1, out=out, where=w, backend=be)
                tp, tm, r = compare(plain, masked, a.rounds, a.reps)
                print(f"| {title} | {op} | {be} | {tp * 1e3:.2f} | {tm * 1e3:.2f} | {r:.3f} |")
                sys.stdout.flush()
            if jax is not None and op == "softmax":
                jx = jax.device_put(x)
                jw = jax.device_put(np.broadcast_to(w, x.shape))
                fp = jax.jit(lambda v: jax.nn.softmax(v, axis=-1))
                fm = jax.jit(lambda v, m: jax.nn.softmax(v, axis=-1, where=m))
                tp, tm, r = compare(lambda: jax.block_until_ready(fp(jx)),
                                    lambda: jax.block_until_ready(fm(jx, jw)), a.rounds, a.reps)
                print(f"| {title} | {op} | jax {jax.__version__} | {tp * 1e3:.2f} | "
                      f"{tm * 1e3:.2f} | {r:.3f} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
