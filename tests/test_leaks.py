"""No leaks: the process's resident memory stays flat across many calls of every op of the
registry on every backend, calls that are rejected (bad axes, bad targets, bad ``out=``, bad
options) included.  This is the short version; benches/soak.py runs 10^5 calls per op and
backend and prints the RSS curve.

``calls_for(op, backend)`` is the one list of calls (benches/soak.py runs the same): each option
set of the op's grid (``op.grid.options``) on small inputs from ``op.inputs``, a call with a
preallocated output where the op takes one, ``where=`` and ``temperature=`` calls where the op
takes them, a 2-thread call big enough for the thread pools, and the rejected calls, each with
the exception it must raise.
"""
from __future__ import annotations

import gc
import inspect
import os

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _registry

CALLS = int(os.environ.get("FASTSOFTMAX_LEAK_CALLS", "72"))   # rounds over calls_for
# per ninth of the run (8 rounds of ~20 calls): ~50 KiB kept per call; the Numba path's 2-thread
# call alone swings RSS by +-4 MiB (its buffers, live or not when RSS is read)
GROWTH_MIB = 8.0


@pytest.fixture(scope="module", autouse=True)
def _quiet_heap():
    """What the earlier tests left is frozen out of the collector (gc.freeze: a collection then
    walks only the objects made since, not the hundreds of thousands a full test run holds) and
    the allocator's free memory goes back to the system once (test_huge frees gigabytes just
    before), so that later allocations show in the RSS instead of reusing freed pages."""
    trim()
    gc.freeze()
    yield
    gc.unfreeze()


def trim() -> None:
    """Collect, then hand the allocator's free memory back to the system (glibc's malloc_trim),
    so that what later calls allocate shows in the RSS instead of reusing pages an earlier test
    freed (test_huge frees gigabytes just before)."""
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int:
    """Resident set size, from /proc (Linux) or psutil."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil
        return psutil.Process().memory_info().rss


def calls_for(op, backend):
    """[(callable, expected exception or None)] for one op on one backend."""
    func = getattr(fs, op.name)
    rng = np.random.default_rng(0)
    shape = (32, 513)   # 128 KiB of float64: one array kept per call shows within a few calls
    args = op.inputs(shape, -1, np.dtype(np.float64), rng, "normal")
    special = op.inputs(shape, -1, np.dtype(np.float32), rng, "special")
    first = next(iter(args.values()))
    calls = []
    for opts in op.grid.options:
        calls.append((lambda o=opts: func(**args, axis=-1, backend=backend, **o), None))
        calls.append((lambda o=opts: func(**special, axis=-1, backend=backend, **o), None))
    if op.tune_out is not None:
        out = np.empty_like(first)
        calls.append((lambda: func(**args, axis=-1, backend=backend, **{op.tune_out: out}), None))
        bad_out = np.empty(first.shape, np.complex64)
        calls.append((lambda: func(**args, axis=-1, backend=backend,
                                   **{op.tune_out: bad_out}), TypeError))
    params = inspect.signature(func).parameters
    if op.masked is not None:       # where= (ops/masked.py, the masked kernels)
        w = rng.random(first.shape) < 0.7
        calls.append((lambda: func(**args, axis=-1, backend=backend, where=w), None))
        calls.append((lambda: func(**args, axis=-1, backend=backend, where=w.astype(np.int8)),
                      TypeError))
    if "temperature" in params:     # the scaled kernels
        calls.append((lambda: func(**args, axis=-1, backend=backend, temperature=0.7), None))
        calls.append((lambda: func(**args, axis=-1, backend=backend, temperature=0.0),
                      ValueError))
    if backend != "numpy":      # the compiled backends' thread pools (the reference has none)
        big = op.inputs((64, 8193), -1, np.dtype(np.float32), rng, "normal")  # 2 threads' worth

        def threaded():
            fs.set_num_threads(2)
            try:
                return func(**big, axis=-1, backend=backend)
            finally:
                fs.set_num_threads(1)
        calls.append((threaded, None))
    # rejected calls
    calls.append((lambda: func(**args, axis=5, backend=backend), np.exceptions.AxisError))
    # ops with one class axis take no tuple (TypeError); the others no duplicate axes
    one_class_axis = op.kernel in ("cross_entropy", "binary_cross_entropy", "sample_candidates")
    calls.append((lambda: func(**args, axis=(1, 1), backend=backend),
                  TypeError if one_class_axis else ValueError))
    calls.append((lambda: func(**args, axis=-1, backend=backend, bogus=1), TypeError))
    if op.kernel == "cross_entropy":       # cross_entropy, linear_cross_entropy
        bad_t = np.full_like(args["target"], 10**6)         # past every class
        wkey = "weight" if op.name == "cross_entropy" else "class_weight"
        calls.append((lambda: func(**{**args, "target": bad_t}, backend=backend), ValueError))
        calls.append((lambda: func(**{**args, "target": bad_t.astype(bool)}, backend=backend),
                      TypeError))
        calls.append((lambda: func(**{**args, wkey: np.ones(3)}, backend=backend), ValueError))
    elif op.kernel == "softmax":
        calls.append((lambda: func(**args, method="bogus", backend=backend), ValueError))
        calls.append((lambda: func(np.array(["a"]), backend=backend), TypeError))
    elif op.kernel == "logsumexp":
        calls.append((lambda: func(**args, b=np.ones(7), backend=backend), ValueError))
    return calls


def run_calls(calls, rounds):
    with np.errstate(all="ignore"):
        for _ in range(rounds):
            for fn, exc in calls:
                if exc is None:
                    fn()
                else:
                    try:
                        fn()
                    except exc:
                        pass
                    else:
                        raise AssertionError(f"{fn} did not raise {exc.__name__}")


CHUNKS = 9     # RSS is read after each of CHUNKS equal runs of the calls


def measure(calls, rounds=CALLS):
    """(start, curve): the RSS after a warm-up, then after each of CHUNKS runs of the calls.

    The warm-up builds the calls' working set (after _quiet_heap's trim, or another test's calls),
    so ``start`` holds it and only what later calls keep shows as growth."""
    run_calls(calls, max(rounds // 6, 8))         # warm-up: caches, pools, allocator arenas
    gc.collect()
    start = rss_bytes()
    curve = []
    for _ in range(CHUNKS):
        run_calls(calls, max(rounds // CHUNKS, 1))
        gc.collect()
        curve.append(rss_bytes())
    return start, curve


def leak(start, curve):
    """Why (start, curve) shows a leak, or None.

    A leak lifts every third of the curve above the one before: the lowest RSS of a third against
    the highest of the third before grows in both steps.  A one-off step (a thread's malloc arena,
    the Numba path's 2-thread call that swings RSS by +-4 MiB with the buffers live when it is
    read) lifts one step only.  A slow leak below that resolution still adds up over the run."""
    third = len(curve) // 3
    parts = [curve[i * third:(i + 1) * third] for i in range(3)]
    steps = [(min(b) - max(a)) / 2**20 for a, b in zip(parts, parts[1:])]
    total = (min(parts[2]) - start) / 2**20
    if min(steps) >= GROWTH_MIB:
        return f"each third grew: {steps[0]:.2f}, then {steps[1]:.2f} MiB"
    if total >= 4 * GROWTH_MIB:
        return f"the last third is {total:.2f} MiB above the start"
    return None


@pytest.mark.parametrize("opname", list(_registry.OPS))
def test_rss_flat_across_calls(backend, opname):
    op = _registry.OPS[opname]
    calls = calls_for(op, backend)
    start, curve = measure(calls)
    why = leak(start, curve)
    n = CALLS * len(calls)
    assert why is None, (
        f"{opname} on {backend} over {n} calls: {why} "
        f"(start {start / 2**20:.1f} MiB, then {[round(c / 2**20, 1) for c in curve]})")


def test_the_check_sees_a_leak():
    """The measure itself: holding 64 KiB per call over as many calls as a test makes shows, and
    a one-off step of 16 MiB does not."""
    held = []
    start, curve = measure([(lambda: held.append(np.ones(8192)), None)], rounds=CALLS * 20)
    assert leak(start, curve) is not None, (start, curve)
    mib = 2**20
    flat = [100 * mib] * 9
    assert leak(100 * mib, flat) is None
    assert leak(100 * mib, flat[:4] + [116 * mib] * 5) is None
    assert leak(100 * mib, [(100 + 10 * i) * mib for i in range(9)]) is not None   # each step
    assert leak(100 * mib, [(100 + 6 * i) * mib for i in range(9)]) is not None    # the total
