"""Threads: 16 Python threads calling every op of the registry while another thread flips
``set_num_threads`` between 1 and 2: every result right, no deadlock (every thread must finish
within a timeout; they are daemons, so a hang fails the test instead of blocking the run).

On each backend alone, and with the threads spread over every backend at once (the C pool, the
Numba pool and the reference side by side).  Inputs of two sizes: small rows (no pool) and
2^19 elements (both pools split them when the budget is 2).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fastsoftmax as fs
from conftest import assert_close
from fastsoftmax import _registry

N_THREADS = 16
ROUNDS = 2
TIMEOUT = 300
SHAPES = ((40, 33), (64, 8192))


def _cases():
    """[(op, args, expected)] from the registry's inputs, the expectation from the reference."""
    cases = []
    for op in _registry.OPS.values():
        func = getattr(fs, op.name)
        for i, shape in enumerate(SHAPES):
            args = op.inputs(shape, -1, np.dtype(np.float32), np.random.default_rng(i), "normal")
            for opts in op.grid.options[:2]:
                with np.errstate(all="ignore"):
                    want = func(**args, **opts, backend="numpy")
                cases.append((op.name, func, args, opts, want))
    return cases


def hammer(backends):
    cases = _cases()
    errors = []
    stop = threading.Event()
    flips = [0]

    def flipper():
        n = 1
        while not stop.is_set():
            n = 3 - n
            fs.set_num_threads(n)
            flips[0] += 1
            time.sleep(0.0005)

    def worker(k):
        backend = backends[k % len(backends)]
        try:
            for r in range(ROUNDS):
                for j in range(len(cases)):
                    name, func, args, opts, want = cases[(j + k) % len(cases)]
                    with np.errstate(all="ignore"):
                        got = func(**args, **opts, backend=backend)
                    for g, w in zip(got if isinstance(got, tuple) else (got,),
                                    want if isinstance(want, tuple) else (want,)):
                        assert_close(g, w, np.float32, atol_scale=10)
        except Exception as exc:  # noqa: BLE001 -- reported by the main thread
            errors.append(f"thread {k} ({backend}) {name} {opts}: {exc!r}"[:500])

    old = fs.get_num_threads()
    flip = threading.Thread(target=flipper, daemon=True)
    workers = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(N_THREADS)]
    flip.start()
    for t in workers:
        t.start()
    deadline = time.monotonic() + TIMEOUT
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in workers if t.is_alive()]
    stop.set()
    flip.join(10)
    fs.set_num_threads(old)
    assert not hung, f"deadlock: {len(hung)} threads still running after {TIMEOUT} s"
    assert not errors, errors[:5]
    assert flips[0] > 10, "the flipper thread did not run"


def test_sixteen_threads_with_set_num_threads_flipping(backend):
    hammer([backend])


def test_sixteen_threads_over_every_backend_at_once():
    hammer(fs.available_backends())     # the C extension on its best ISA path
