"""fastsoftmax.dask against the in-memory functions (the oracle), on every backend, with the axis
in one chunk (map_blocks) and across chunks (the (m, s) reduction), on the threaded and process
schedulers and a distributed LocalCluster on 127.0.0.1; and a logsumexp over an array several
times a worker's memory_limit."""
import os
import resource

import numpy as np
import pytest

import fastsoftmax
from conftest import assert_close, stable_seed

if os.environ.get("FASTSOFTMAX_REQUIRE_EXTRAS"):  # CI (./dev test): the extra must be installed
    import dask.array as da
else:
    da = pytest.importorskip("dask.array", reason="needs the extra fastsoftmax[dask]")
import dask  # noqa: E402

import fastsoftmax.dask as fd  # noqa: E402

FNS = ("softmax", "log_softmax", "logsumexp")


def _logits(shape, dtype, seed, special=True):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if special:
        x[1, 3] = np.nan
        x[2] = -np.inf
        x[4, 0] = np.inf
        x[5, :3] = -np.inf
    return x


def _tol(dtype):
    # the merge of partials adds a few roundings of a logsumexp-sized value
    return 8.0 if np.dtype(dtype) == np.float32 else 1.0


def _check(actual, expected, dtype, scale=30.0):
    assert_close(actual, expected, dtype, atol_scale=scale * _tol(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("chunks", [(7, 60), (7, 13)], ids=["one-chunk", "spanning"])
@pytest.mark.parametrize("fn", FNS)
def test_matches_in_memory(backend, fn, chunks, dtype):
    x = _logits((20, 60), dtype, stable_seed(fn, chunks, dtype))
    dx = da.from_array(x, chunks=chunks)
    axes = (1, 0, None, (0, 1))
    lazy = [getattr(fd, fn)(dx, axis=axis, backend=backend) for axis in axes]
    results = dask.compute(*lazy, scheduler="threads")
    for axis, lz, res in zip(axes, lazy, results):
        assert isinstance(lz, da.Array)
        expected = getattr(fastsoftmax, fn)(x, axis=axis, backend=backend)
        assert lz.dtype == np.asarray(expected).dtype and lz.shape == np.shape(expected)
        _check(res, expected, dtype)


def test_logsumexp_b_keepdims_sign_trees(backend):
    rng = np.random.default_rng(stable_seed("b"))
    a = _logits((12, 90), "float64", 3)
    b = rng.standard_normal((12, 90))
    b[:, ::7] = 0.0   # masked entries
    b[6] = -1.0       # a negative sum: NaN without return_sign
    da_a = da.from_array(a, chunks=(5, 10))  # 9 chunks along axis 1: a tree of depth >= 2
    cases = [(da.from_array(b, chunks=(4, 30)), False, 1, 2), (b, True, (0, 1), 3),
             (b[0], True, 1, None), (-2.0, False, 0, 2)]
    for bb, keepdims, axis, split_every in cases:
        kw = dict(axis=axis, keepdims=keepdims, backend=backend)
        res, sgn = fd.logsumexp(da_a, b=bb, return_sign=True, split_every=split_every, **kw)
        plain = fd.logsumexp(da_a, b=bb, split_every=split_every, **kw)
        res, sgn, plain = dask.compute(res, sgn, plain, scheduler="sync")
        eb = bb.compute() if isinstance(bb, da.Array) else bb
        er, es = fastsoftmax.logsumexp(a, b=eb, return_sign=True, **kw)
        _check(res, er, "float64")
        np.testing.assert_array_equal(sgn, es)
        _check(plain, fastsoftmax.logsumexp(a, b=eb, **kw), "float64")


def test_softmax_deep_tree_equals_numpy_formula():
    x = _logits((3, 4000), "float64", 11, special=False)
    dx = da.from_array(x, chunks=(3, 100))  # 40 chunks, fan-in 2: depth 6
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    ref = e / e.sum(axis=1, keepdims=True)
    _check(fd.softmax(dx, axis=1, split_every=2).compute(), ref, "float64", scale=1.0)
    _check(fd.logsumexp(dx, axis=1, split_every=2).compute(),
           (m + np.log(e.sum(axis=1, keepdims=True)))[:, 0], "float64")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("class_chunks", [50, 17], ids=["one-chunk", "spanning"])
def test_cross_entropy_matches_in_memory(backend, reduction, class_chunks):
    rng = np.random.default_rng(stable_seed("ce", reduction, class_chunks))
    x = (rng.standard_normal((40, 50)) * 3).astype(np.float32)
    t = rng.integers(0, 50, 40)
    t[::9] = -1
    w = rng.random(50).astype(np.float32) + 0.5
    dx = da.from_array(x, chunks=(9, class_chunks))
    for opts in ({}, dict(weight=w, ignore_index=-1, label_smoothing=0.2)):
        tt = t if opts else np.where(t < 0, 0, t)
        loss, grad = fd.cross_entropy(dx, da.from_array(tt, chunks=13), reduction=reduction,
                                      return_grad=True, backend=backend, **opts)
        el, eg = fastsoftmax.cross_entropy(x, tt, reduction=reduction, return_grad=True,
                                           backend=backend, **opts)
        assert loss.dtype == np.float32 and grad.dtype == np.float32
        assert_close(loss.compute(), el, np.float32, atol_scale=8.0)
        assert_close(grad.compute(), eg, np.float32, atol_scale=1e-3)
        only = fd.cross_entropy(dx, tt, reduction=reduction, backend=backend, **opts)
        assert_close(only.compute(), el, np.float32, atol_scale=8.0)


def test_cross_entropy_class_axis_first():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 8, 6))
    t = rng.integers(0, 30, (8, 6))
    dx = da.from_array(x, chunks=(10, 3, 6))
    loss, grad = fd.cross_entropy(dx, t, axis=0, return_grad=True)
    el, eg = fastsoftmax.cross_entropy(x, t, axis=0, return_grad=True)
    assert_close(loss.compute(), el, np.float64, atol_scale=4.0)
    assert_close(grad.compute(), eg, np.float64, atol_scale=1e-2)


def test_dtypes_follow_the_in_memory_functions():
    for dt in (np.float16, np.int32, np.int8):
        x = np.arange(24).reshape(4, 6).astype(dt)
        dx = da.from_array(x, chunks=(2, 4))
        for fn in FNS:
            r = getattr(fd, fn)(dx, axis=1)
            e = getattr(fastsoftmax, fn)(x, axis=1)
            assert r.dtype == e.dtype, (fn, dt)
            assert_close(r.compute(), e, e.dtype, atol_scale=30.0)


def test_processes_scheduler():
    x = _logits((16, 40), "float64", 8)
    dx = da.from_array(x, chunks=(8, 10))
    r1, r2 = dask.compute(fd.softmax(dx, axis=1), fd.logsumexp(dx, axis=1),
                          scheduler="processes", num_workers=2)
    _check(r1, fastsoftmax.softmax(x, axis=1), "float64")
    _check(r2, fastsoftmax.logsumexp(x, axis=1), "float64")


def test_threads_budget_comes_back():
    fastsoftmax.set_num_threads(2)
    try:
        dx = da.from_array(_logits((16, 40), "float64", 9), chunks=(4, 10))
        fd.softmax(dx, axis=1, threads=1).compute(scheduler="threads")
        assert fastsoftmax.get_num_threads() == 2
    finally:
        fastsoftmax.set_num_threads(os.cpu_count() or 1)


# ---------------------------------------------------------------------------- bad input
def test_non_dask_input_is_rejected():
    x = np.ones((3, 4))
    for fn in FNS:
        with pytest.raises(TypeError, match=f"fastsoftmax.{fn}.*from_array"):
            getattr(fd, fn)(x, axis=1)
    with pytest.raises(TypeError, match="dask array as logits"):
        fd.cross_entropy(x, np.zeros(3, int))


def test_unknown_chunk_sizes():
    x = _logits((10, 12), "float64", 2, special=False)
    dx = da.from_array(x, chunks=(5, 4))
    sel = dx[:, da.from_array(x[0] > -100, chunks=4)]  # a lazy mask: NaN chunk sizes
    assert np.isnan(sel.chunks[1][0])
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fd.logsumexp(sel, axis=1)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fd.softmax(sel, axis=1)
    # along another axis, or after computing the sizes, it runs
    _check(fd.logsumexp(sel, axis=0).compute(), fastsoftmax.logsumexp(x, axis=0), "float64")
    sel.compute_chunk_sizes()
    _check(fd.softmax(sel, axis=1).compute(), fastsoftmax.softmax(x, axis=1), "float64")


def test_bad_arguments():
    dx = da.ones((3, 4), chunks=2)
    with pytest.raises(ValueError, match="threads"):
        fd.softmax(dx, threads=0)
    with pytest.raises(ValueError, match="empty axis"):
        fd.softmax(da.ones((3, 0)), axis=1)
    with pytest.raises(ValueError, match="broadcast"):
        fd.logsumexp(dx, b=np.ones(5))
    with pytest.raises(TypeError, match="class-index"):
        fd.cross_entropy(dx, np.ones((3, 4)))
    with pytest.raises(ValueError, match="reduction"):
        fd.cross_entropy(dx, np.zeros(3, int), reduction="avg")


# ------------------------------------------------------------------- distributed cluster
MEMORY_LIMIT = 400 * 2**20


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1,
                                  processes=True, memory_limit=MEMORY_LIMIT,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def test_distributed_client_matches(client, backend):
    x = _logits((30, 80), "float32", 4)
    dx = da.from_array(x, chunks=(10, 20))
    futs = client.compute([fd.softmax(dx, axis=1, backend=backend),
                           fd.log_softmax(dx, axis=0, backend=backend),
                           fd.logsumexp(dx, axis=None, backend=backend)])
    r1, r2, r3 = client.gather(futs)
    _check(r1, fastsoftmax.softmax(x, axis=1), "float32")
    _check(r2, fastsoftmax.log_softmax(x, axis=0), "float32")
    _check(r3, fastsoftmax.logsumexp(x, axis=None), "float32")
    t = np.random.default_rng(1).integers(0, 80, 30)
    loss = client.compute(fd.cross_entropy(dx, t, backend=backend)).result()
    assert_close(loss, fastsoftmax.cross_entropy(x, t), np.float32, atol_scale=8.0)


def _peak_rss():
    """This process's own peak RSS (VmHWM: ru_maxrss would include the parent's, kept at exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_logsumexp_bigger_than_worker_memory(client):
    """4x a worker's memory_limit, created lazily chunk by chunk; the closed form of a geometric
    series is the reference: sum_k exp(-c k) = (1 - exp(-c N)) / (1 - exp(-c))."""
    n = 4 * MEMORY_LIMIT // 8
    c = 1e-8
    x = da.arange(n, chunks=4 * 2**20, dtype=np.float64) * -c   # 32 MiB chunks, 50 of them
    before = set(client.scheduler_info()["workers"])
    got = client.compute(fd.logsumexp(x)).result()
    expected = np.log(-np.expm1(-c * n)) - np.log(-np.expm1(-c))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert set(client.scheduler_info()["workers"]) == before  # no worker died or restarted
    peaks = client.run(_peak_rss)
    assert max(peaks.values()) < MEMORY_LIMIT, peaks


def test_bench_dask_suite_runs_and_agrees():
    """bench --dask's engine (it checks our result against dask's expression before timing)."""
    from fastsoftmax.tools import bench_dask
    rows = bench_dask.run(quick=True, workers=(1,), repeats=1)
    assert {r["op"] for r in rows} == {"logsumexp", "softmax"}
    assert all(r["ours_s"] > 0 and r["dask_s"] > 0 for r in rows)
    assert "| logsumexp |" in bench_dask.format_table(rows)
