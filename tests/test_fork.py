"""Fork safety: after the parent has used both thread pools (the C extension's pthread pool and
the Numba backend's Python thread pool) with 2 threads -- from two Python threads at once, as a
server would -- children made by ``os.fork()`` and by ``multiprocessing`` pools started with
"fork", "spawn" and "forkserver" compute every op of the registry on every backend, with 2
threads, and agree with the NumPy reference.  Each child runs under a timeout, so a hang fails
instead of blocking the run.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest

import fastsoftmax as fs
from conftest import assert_close
from fastsoftmax import _registry

TIMEOUT = 180            # seconds per child (spawn imports and loads the cached kernels)
SHAPE = (256, 4096)      # 2^20 elements: enough work for both pools to use 2 threads
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")


def _inputs(op, seed=0):
    return op.inputs(SHAPE, -1, np.dtype(np.float32), np.random.default_rng(seed), "normal")


def _pool_threads():
    return sum(t.is_alive() and t.name.startswith("fastsoftmax-numba")
               for t in threading.enumerate())


def compute_all(tag=""):
    """In the child: every op x backend with 2 threads, against the reference.  Returns a
    JSON-able {"errors": [...], "numba_pool_threads": n}."""
    fs.set_num_threads(2)
    errors = []
    for op in _registry.OPS.values():
        func = getattr(fs, op.name)
        args = _inputs(op)
        with np.errstate(all="ignore"):
            want = func(**args, backend="numpy")
        for backend in fs.available_backends():
            try:
                with np.errstate(all="ignore"):
                    got = func(**args, backend=backend)
                assert_close(got, want, np.float32, atol_scale=10)
            except Exception as exc:  # noqa: BLE001 -- reported to the parent
                errors.append(f"{tag} {op.name} on {backend}: {exc!r}"[:400])
    return {"errors": errors, "numba_pool_threads": _pool_threads(), "pid": os.getpid()}


def _use_both_pools_concurrently():
    """The parent: every op on each compiled backend, 2 threads, from two Python threads."""
    fs.set_num_threads(2)
    errs = []

    def work():
        try:
            for op in _registry.OPS.values():
                for backend in fs.available_backends():
                    if backend != "numpy":
                        getattr(fs, op.name)(**_inputs(op, 1), backend=backend)
        except Exception as exc:  # noqa: BLE001
            errs.append(exc)

    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(TIMEOUT)
    assert not errs and not any(t.is_alive() for t in ts), errs


@pytest.fixture(scope="module")
def parent_used_pools():
    _use_both_pools_concurrently()
    yield


def _check(res, method):
    assert res["errors"] == [], res["errors"]
    assert res["pid"] != os.getpid()


def _fork_child():
    """os.fork(): the child reports on a pipe and leaves by os._exit (no pytest teardown)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.write(w, json.dumps(compute_all("os.fork")).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        pytest.fail(f"the os.fork() child hung for {TIMEOUT} s")
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the forked child failed"
    return json.loads(data)


def test_os_fork_child_computes_correctly(parent_used_pools):
    _check(_fork_child(), "os.fork")


def test_os_fork_child_numba_pool_has_threads(parent_used_pools):
    assert _fork_child()["numba_pool_threads"] >= 1


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool_computes_correctly(parent_used_pools, method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"start method {method!r} is not available on this platform")
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        try:
            results = pool.map_async(compute_all, [method, method]).get(TIMEOUT)
        except mp.TimeoutError:
            pool.terminate()
            pytest.fail(f"a multiprocessing {method!r} worker hung for {TIMEOUT} s")
    for res in results:
        _check(res, method)
