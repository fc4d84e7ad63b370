"""The C kernels' own speed, called directly (no Python API on the path), A against B alternating
in one process, medians of repeated rounds.  Run it under `flock /tmp/bench.lock`.

    python benches/c_kernels.py throughput   softmax / log_softmax 4096x1000 f32/f64, 1 thread
    python benches/c_kernels.py stream       256 MB float32 softmax into out= vs np.copyto,
                                             streamed (default) and not (FASTSOFTMAX_C_NO_STREAM), 1 and 2 threads
    python benches/c_kernels.py threads      1 -> 2 threads for every op on 4096x1000 f32/f64 and
                                             32x50257 f32, beside a trivially parallel reference
                                             (np.exp on two halves from two Python threads)
Options: --isa avx2|baseline, --rounds N.
"""
import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np

from fastsoftmax import _dispatch

C = _dispatch.load("cython")


def best(fn, reps):
    """median over reps of one call (seconds)"""
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def alternate(variants, rounds, reps):
    """{name: median seconds} with the variants timed in turn, round after round"""
    res = {k: [] for k in variants}
    for _ in range(rounds):
        for k, (setup, fn) in variants.items():
            setup()
            res[k].append(best(fn, reps))
    return {k: statistics.median(v) for k, v in res.items()}


def nothing():
    pass


def ops_for(shape, dt, nt):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 4).astype(dt)
    N, Cc = shape
    x3 = x.reshape(N, Cc, 1)
    y3 = np.empty_like(x3)
    out = np.empty((N, 1), dt)
    tgt = rng.integers(0, Cc, N).astype(np.int64)
    loss = np.empty(N, dt)
    grad = np.empty_like(x)
    return {
        "softmax": lambda: C.softmax(x3, y3, False, "auto", nt),
        "log_softmax": lambda: C.softmax(x3, y3, True, "auto", nt),
        "logsumexp": lambda: C.logsumexp(x3, None, out, None, nt),
        "ce": lambda: C.cross_entropy(x, tgt, None, None, -100, 0.0, 1.0, loss, None, nt),
        "ce+grad": lambda: C.cross_entropy(x, tgt, None, None, -100, 0.0, 1.0, loss, grad, nt),
    }, x.nbytes


def cmd_throughput(a):
    for dt in (np.float32, np.float64):
        ops, nb = ops_for((4096, 1000), dt, 1)
        v = {k: (nothing, ops[k]) for k in ("softmax", "log_softmax")}
        r = alternate(v, a.rounds, 5)
        for k, t in r.items():
            print(f"{k:12s} {np.dtype(dt).name} 4096x1000 1 thread: {t * 1e3:7.3f} ms  "
                  f"{2 * nb / t / 1e9:6.2f} GB/s (read + write)  {4096e3 / t / 1e9:.3f} elem/ns")


def cmd_stream(a):
    x = np.random.default_rng(0).standard_normal((16384, 4096)).astype(np.float32)
    y = np.empty_like(x)
    y.fill(0)
    x3, y3 = x.reshape(16384, 4096, 1), y.reshape(16384, 4096, 1)

    def env(on):
        def f():
            if on:
                os.environ.pop("FASTSOFTMAX_C_NO_STREAM", None)
            else:
                os.environ["FASTSOFTMAX_C_NO_STREAM"] = "1"
        return f
    for nt in (1, 2):
        v = {"copyto": (nothing, lambda: np.copyto(y, x)),
             "stream": (env(True), lambda: C.softmax(x3, y3, False, "auto", nt)),
             "regular": (env(False), lambda: C.softmax(x3, y3, False, "auto", nt)),
             "log stream": (env(True), lambda: C.softmax(x3, y3, True, "auto", nt)),
             "log regular": (env(False), lambda: C.softmax(x3, y3, True, "auto", nt))}
        r = alternate(v, a.rounds, 3)
        os.environ.pop("FASTSOFTMAX_C_NO_STREAM", None)
        for k, t in r.items():
            print(f"{nt} thread(s) {k:12s} {t * 1e3:8.2f} ms {2 * x.nbytes / t / 1e9:6.2f} GB/s"
                  f"  ratio to copyto {r['copyto'] / t:.2f}")


def cmd_threads(a):
    # the machine's ceiling now: np.exp over two halves, from 1 or 2 Python threads (GIL released)
    z = np.random.default_rng(1).standard_normal(2_000_000)
    zo = np.empty_like(z)
    halves = [(z[:1_000_000], zo[:1_000_000]), (z[1_000_000:], zo[1_000_000:])]

    def ref1():
        for h in halves:
            np.exp(h[0], out=h[1])

    def ref2():
        t = threading.Thread(target=np.exp, args=halves[1])
        t.start()
        np.exp(halves[0][0], out=halves[0][1])
        t.join()
    cases = [((4096, 1000), np.float32), ((4096, 1000), np.float64), ((32, 50257), np.float32)]
    for shape, dt in cases:
        o1, _ = ops_for(shape, dt, 1)
        o2, _ = ops_for(shape, dt, 2)
        v = {"ref 1": (nothing, ref1), "ref 2": (nothing, ref2)}
        for k in o1:
            v[k + " 1"] = (nothing, o1[k])
            v[k + " 2"] = (nothing, o2[k])
        r = alternate(v, a.rounds, 5)
        name = f"{shape[0]}x{shape[1]} {np.dtype(dt).name}"
        print(f"{name}: reference np.exp 2 threads / 1: {r['ref 1'] / r['ref 2']:.2f}x")
        for k in o1:
            print(f"  {k:12s} 1 thread {r[k + ' 1'] * 1e3:7.3f} ms  2 threads {r[k + ' 2'] * 1e3:7.3f} ms"
                  f"  speedup {r[k + ' 1'] / r[k + ' 2']:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["throughput", "stream", "threads"])
    ap.add_argument("--isa", default=None)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    if a.isa:
        C.set_isa(a.isa)
    print(f"isa {C.get_isa()}, numpy {np.__version__}, {C.__file__}")
    {"throughput": cmd_throughput, "stream": cmd_stream, "threads": cmd_threads}[a.what](a)


if __name__ == "__main__":
    sys.exit(main())
