"""The Numba backend's kernels, measured: hot-loop instruction counts, throughput, out-of-cache
bandwidth against np.copyto, and 1 -> 2 thread speedups (alternating A/B rounds in one process,
medians).  Run under ``flock /tmp/bench.lock`` on a shared machine.

    python benches/numba_kernels.py asm              # instructions per vector of the hot loops
    python benches/numba_kernels.py speed            # 4096x1000 f32/f64, 1 thread, 3 ops
    python benches/numba_kernels.py ooc              # 256 MB float32 softmax into out= / copyto
    python benches/numba_kernels.py threads          # 1 vs 2 threads, + a trivially parallel ref
"""
import os
import re
import sys
import tempfile
import time

if sys.argv[1:2] == ["asm"]:    # a fresh cache: inspect_asm() has nothing to show for cached code
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fsm-asm-")

import numpy as np

import fastsoftmax as fs
from fastsoftmax import _dispatch


# --------------------------------------------------------------------------------- asm counts
def _loops(asm):
    """[instructions] of each innermost loop of ``asm`` (a label to the backward jump to it,
    holding no other loop)."""
    pos = {}
    body = []
    for ln in (ln.strip() for ln in asm.splitlines()):
        if re.match(r"^[.\w$]+:", ln):
            pos[ln.split(":")[0]] = len(body)
            continue
        if not ln or ln.startswith((".", "#")):
            continue
        body.append(ln.split("#")[0].strip())
    spans = []
    for i, ins in enumerate(body):
        m = re.match(r"^j\w+\s+([.\w$]+)$", ins)
        if m and m.group(1) in pos and pos[m.group(1)] <= i:
            spans.append((pos[m.group(1)], i))
    inner = [(a, b) for a, b in spans
             if not any((a <= c and d <= b) and (c, d) != (a, b) for c, d in spans)]
    return [body[a:b + 1] for a, b in inner]


def hot_loop(asm):
    """The innermost loop with the most FMAs: (instructions, vector stores, FMAs)."""
    best = None
    for ins in _loops(asm):
        nf = sum(1 for i in ins if re.match(r"^vf(n?)m(add|sub)", i) and "ymm" in i)
        if best is None or nf > best[2]:
            st = sum(1 for i in ins if re.match(r"^vmov\w*\s+%ymm\d+, .*\(", i))
            best = (ins, st, nf)
    return best


def asm_counts():
    from fastsoftmax.backends.numba import rows
    from numba import types
    out = {}
    for dt in (np.float32, np.float64):
        x = np.linspace(-5, 0, 4096).astype(dt)
        o = np.empty_like(x)
        m = dt(0.0)
        for name, fn, args in (("expstore1 (softmax)", rows.expstore1, (x, o, m)),
                               ("shiftstore1 (log_softmax)", rows.shiftstore1, (x, o, m, True)),
                               ("sumexp1 (logsumexp)", rows.sumexp1, (x, m))):
            fn(*args)
            sig = fn.signatures[-1]
            ins, st, nf = hot_loop(fn.inspect_asm(sig))
            lanes = 32 // np.dtype(dt).itemsize
            if st == 0:     # a sum-only loop: count vector loads of x instead
                st = sum(1 for i in ins if re.match(r"^v(mov|sub)\w*\s+[^%]*\(", i))
            print(f"{np.dtype(dt).name:8s} {name:28s} loop {len(ins):3d} instructions, "
                  f"{st} vectors of {lanes} -> {len(ins) / max(st, 1):5.1f} per vector "
                  f"({nf} FMAs)")
            out[(np.dtype(dt).name, name)] = (len(ins), st)
            if "-v" in sys.argv:
                print("\n".join("    " + i for i in ins))
    return out


# --------------------------------------------------------------------------------- timing
def bench(fns, budget=1.0):
    """Alternating rounds of blocks of calls; per-call medians."""
    for f in fns:
        f()
    t = []
    for f in fns:
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    k = max(1, min(20, int(0.02 / max(t))))
    rounds = max(5, min(60, int(budget / (k * sum(t)))))
    res = [[] for _ in fns]
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(k):
                f()
            res[i].append((time.perf_counter() - t0) / k)
    return [float(np.median(r)) for r in res]


def speed():
    _dispatch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        x = (rng.standard_normal((4096, 1000)) * 3).astype(dt)
        out = np.empty_like(x)
        fns = [lambda: fs.softmax(x, axis=-1, out=out, backend="numba"),
               lambda: fs.log_softmax(x, axis=-1, out=out, backend="numba"),
               lambda: fs.logsumexp(x, axis=-1, backend="numba")]
        ts = bench(fns)
        for nm, tt in zip(("softmax", "log_softmax", "logsumexp"), ts):
            print(f"{np.dtype(dt).name:8s} {nm:12s} 4096x1000  {tt * 1e3:7.3f} ms  "
                  f"{x.size / tt / 1e9:6.2f} G elem/s")


def ooc():
    n = (256 << 20) // 4
    rng = np.random.default_rng(0)
    for shape in ((65536, 1024), (2048, 32768), (1, n)):
        x = (rng.standard_normal(n) * 3).astype(np.float32).reshape(shape)
        out = np.empty_like(x)
        for nt in (1, 2):
            _dispatch.set_num_threads(nt)
            t_cp, t_sm = bench([lambda: np.copyto(out, x),
                                lambda: fs.softmax(x, axis=-1, out=out, backend="numba")], 3.0)
            print(f"softmax {str(shape):16s} t={nt}: copyto {t_cp * 1e3:7.2f} ms "
                  f"({2 * x.nbytes / t_cp / 1e9:5.1f} GB/s), softmax {t_sm * 1e3:7.2f} ms "
                  f"({2 * x.nbytes / t_sm / 1e9:5.1f} GB/s): ratio {t_cp / t_sm:.2f}")
        del x, out


def _ref_kernel():
    """A trivially parallel reference: a nogil Numba loop of independent FMAs over a block,
    split in two Python threads (no shared data): the machine's 2-thread ceiling now."""
    from numba import njit

    @njit(nogil=True, fastmath=True, cache=True)
    def spin(a, reps):
        s = 0.0
        for _ in range(reps):
            for i in range(a.shape[0]):
                s += a[i] * 1.0000001
        return s
    return spin


def threads():
    import threading
    spin = _ref_kernel()
    a = np.ones(4096, np.float32)
    spin(a, 1)

    def ref(nt, reps=2000):
        if nt == 1:
            spin(a, reps)
            return
        th = [threading.Thread(target=spin, args=(a, reps // 2)) for _ in range(nt - 1)]
        for t in th:
            t.start()
        spin(a, reps // 2)
        for t in th:
            t.join()

    rng = np.random.default_rng(0)
    cases = []
    for dt in (np.float32, np.float64):
        for shape in ((4096, 1000), (32, 50257)):
            x = (rng.standard_normal(shape) * 3).astype(dt)
            cases.append((np.dtype(dt).name, shape, x))
    ops = [("softmax", lambda x: fs.softmax(x, axis=-1, backend="numba")),
           ("log_softmax", lambda x: fs.log_softmax(x, axis=-1, backend="numba")),
           ("logsumexp", lambda x: fs.logsumexp(x, axis=-1, backend="numba"))]
    want = set(sys.argv[2:])

    def with_threads(nt, f):
        def g():
            _dispatch.set_num_threads(nt)
            f()
        return g
    t1, t2 = bench([with_threads(1, lambda: ref(1)), with_threads(2, lambda: ref(2))], 1.0)
    print(f"reference (independent nogil loops): 1 thread {t1 * 1e3:.3f} ms, 2 threads "
          f"{t2 * 1e3:.3f} ms: {t1 / t2:.2f}x")
    for dtn, shape, x in cases:
        for nm, op in ops:
            if want and nm not in want:
                continue
            f = (lambda op=op, x=x: op(x))
            t1, t2, r1, r2 = bench([with_threads(1, f), with_threads(2, f),
                                    with_threads(1, lambda: ref(1, 200)),
                                    with_threads(2, lambda: ref(2, 200))], 1.5)
            print(f"{dtn:8s} {nm:12s} {str(shape):13s} 1t {t1 * 1e3:7.3f} ms  2t {t2 * 1e3:7.3f}"
                  f" ms  {t1 / t2:5.2f}x   (reference meanwhile {r1 / r2:.2f}x)", flush=True)


def warm():
    """Compile (or load) every kernel the other modes call, outside any timing."""
    rng = np.random.default_rng(0)
    for nt in (1, 2):
        _dispatch.set_num_threads(nt)
        for dt in (np.float32, np.float64):
            for shape in ((4096, 1000), (32, 50257), (1, 1 << 21)):
                x = rng.standard_normal(shape).astype(dt)
                out = np.empty_like(x)
                fs.softmax(x, axis=-1, out=out, backend="numba")
                fs.softmax(x, axis=-1, backend="numba")
                fs.log_softmax(x, axis=-1, out=out, backend="numba")
                fs.log_softmax(x, axis=-1, backend="numba")
                fs.logsumexp(x, axis=-1, backend="numba")
    _ref_kernel()(np.ones(8, np.float32), 1)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "asm"
    {"asm": asm_counts, "speed": speed, "ooc": ooc, "threads": threads, "warm": warm}[what]()
