"""Threads: a small pool of Python threads calling ``nogil`` kernels, and the work split.

Rows (or, for a single long row, blocks of the row; for inner > 1, outer slices or inner column
ranges) are cut into up to ``CHUNKS`` chunks per thread (none under ``MIN_CHUNK`` elements) that
the calling thread and the pool threads claim one by one, so a pool thread that wakes late or is
preempted costs at most a chunk and the caller never waits for a thread that has not started.
The claiming is done inside the kernels (an atomic counter, ``run_claimed``): each thread makes
one Python-level call, whatever the number of chunks (a Python call per chunk held the GIL
5-10 us each, and the threads queued for it).
This is safe when many Python threads call at once and never touches Numba's threading layer
(whose default workqueue layer aborts on concurrent parallel calls), nor starts a second OpenMP
runtime next to torch's.  A call uses min(nthreads, work / MIN_WORK) threads, work counted in
elements (weighted by the op: ``SMALL_COST`` for rows of <= SMALL_N elements, x2 with a
gradient).
"""
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["MIN_WORK", "SMALL_COST", "NO_CTR", "nthreads_for", "bounds", "nchunks", "run",
           "run_claimed", "split_rows", "split_inner"]

MIN_WORK = 1 << 18    # elements per thread below which another thread does not pay: handing
                      # a chunk to a pool thread costs 15-80 us here (wake-up), ~0.5 ns/element
SMALL_COST = 3        # rows of <= SMALL_N elements cost ~3x more per element
CHUNKS = 16           # chunks per thread, claimed one by one: a late worker costs one chunk
MIN_CHUNK = 1 << 14   # elements per chunk at least (a claim is an atomic add in native code)
NO_CTR = np.zeros(1, np.int64)   # the counter of one-chunk calls: never touched

_pool = None
_pool_size = 0
_pool_lock = threading.Lock()


def _after_fork_in_child():
    """A forked child inherits the executor object but none of its threads: calls would queue
    work that never runs (holding the call's arrays).  Start over with a new pool."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size = None, 0
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _get_pool(n):
    """A pool of at least n worker threads.  A smaller old pool is dropped, not shut down: a
    concurrent call may still be submitting to it (its idle threads exit once it is collected)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < n:
            n = max(n, os.cpu_count() or 1)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fastsoftmax-numba")
            _pool_size = n
        return _pool


def nthreads_for(work, nthreads, parts):
    """How many threads ``work`` elements split into at most ``parts`` pieces are worth."""
    nt = min(int(nthreads), int(parts), max(1, int(work // MIN_WORK)))
    return max(1, nt)


def bounds(lo, hi, nt, align=1):
    """nt + 1 split points of [lo, hi), multiples of ``align`` (except hi)."""
    step = -(-(hi - lo) // nt)
    step = -(-step // align) * align
    return [min(hi, lo + i * step) for i in range(nt)] + [hi]


def nchunks(nt, parts, work):
    """How many pieces to cut ``parts`` (rows, column groups, blocks) holding ``work`` elements
    into for nt threads: up to CHUNKS per thread, none below MIN_CHUNK elements, at least nt."""
    return max(nt, min(nt * CHUNKS, parts, work // MIN_CHUNK))


def run(tasks, nt=None):
    """Run the zero-argument callables ``tasks`` on this thread and nt - 1 pool threads (nt
    defaults to one thread per task).  Each thread claims the next unclaimed task until none is
    left, so a pool thread that wakes late (15-80 us here, more when the core is busy) finds
    less or nothing to do, and the caller waits only for tasks that have started, never for a
    thread that has not."""
    n = len(tasks)
    nt = n if nt is None else min(nt, n)
    if nt <= 1:
        return [t() for t in tasks]
    res = [None] * n
    errors = []
    claim = itertools.count()      # next() on a count is atomic under the GIL
    finished = itertools.count(1)
    done = threading.Event()

    def drain():
        while True:
            i = next(claim)
            if i >= n:
                return
            try:
                res[i] = tasks[i]()
            except BaseException as exc:  # re-raised on the calling thread
                errors.append(exc)
            if next(finished) == n:
                done.set()

    pool = _get_pool(nt - 1)
    for _ in range(nt - 1):
        pool.submit(drain)
    drain()
    done.wait()
    if errors:
        raise errors[0]
    return res


def run_claimed(call, nt):
    """``call(ctr)`` on this thread and nt - 1 pool threads, one Python-level call each, with
    one fresh counter: the kernel called claims its chunks through ``ctr`` in native code (the
    GIL is held only for the nt dispatches).  A pool thread that starts after the chunks are
    gone returns at once, and the caller does not wait for one that has not started (run)."""
    ctr = np.zeros(1, np.int64)
    run([lambda: call(ctr)] * nt, nt)


def split_rows(kern, x, io, args, rows, work, nthreads):
    """kern(x, io, args, r0, r1, step, ctr) (a rows.py kernel) over [0, rows), its chunks of
    step rows claimed by the threads."""
    nt = nthreads_for(work, nthreads, rows)
    if nt == 1:
        kern(x, io, args, 0, rows, max(rows, 1), NO_CTR)
        return
    step = -(-rows // nchunks(nt, rows, work))
    run_claimed(lambda ctr: kern(x, io, args, 0, rows, step, ctr), nt)


def split_inner(kern, x, io, args, outer, inner, work, nthreads):
    """kern(x, io, args, o0, o1, k0, k1, ostep, kstep, ctr) (an inner kernel): the threads
    claim chunks of outer slices, or of inner columns (multiples of 16) when outer is small."""
    nt = nthreads_for(work, nthreads, max(outer, inner))
    if nt == 1:
        kern(x, io, args, 0, outer, 0, inner, max(outer, 1), max(inner, 1), NO_CTR)
        return
    if outer >= nt:
        ostep, kstep = -(-outer // nchunks(nt, outer, work)), max(inner, 1)
    else:
        ostep = max(outer, 1)
        kstep = -(-inner // nchunks(nt, inner // 16, work))
        kstep = -(-kstep // 16) * 16
    run_claimed(lambda ctr: kern(x, io, args, 0, outer, 0, inner, ostep, kstep, ctr), nt)
