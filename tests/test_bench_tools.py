"""The bench machinery around the peers and the new suites (tools/bench.py, firstcall.py,
report.py): the JAX and onnxruntime peers compute the same results as the NumPy formula, a
missing peer is a missing column (never an error), the thread budget pins every thread, the
small-call and first-call suites come from the registry, and the per-backend summaries are the
geometric means and minima of the ratios they are given.  No time is asserted."""
import importlib.util
import math
import os
import threading

import numpy as np
import pytest

from fastsoftmax import _registry
from fastsoftmax.tools import bench as _bench
from fastsoftmax.tools import firstcall, report

HAVE = {p: all(importlib.util.find_spec(m) is not None for m in _bench.PEER_LIBS[p])
        for p in _bench.PEER_LIBS}


def _case(op, shape, dtype, threads=1):
    return _bench.Case(op, _bench.parse_shape(shape), dtype, threads)


@pytest.mark.parametrize("peer", ["jax", "onnxruntime"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp", "cross_entropy",
                                "cross_entropy_grad"])
def test_peer_matches_numpy_formula(peer, dtype, op):
    if not HAVE[peer]:
        pytest.skip(f"{peer} is an optional peer (the extra 'peers')")
    bench = _registry.BENCHES[op][1]
    if peer not in bench.peers:
        assert peer == "onnxruntime" and op == "cross_entropy_grad"  # no gradient in ORT
        return
    for shape in ("7x13", "300x5") + (("100",) if not op.startswith("cross") else ()):
        doc = _bench.run_case(_case(op, shape, dtype), ["numpy"], peers=["numpy", peer],
                              budget_s=0.001)
        assert doc["errors"] == {} and doc["skipped"] == {}
        (r,) = [r for r in doc["results"] if r["contender"] == peer]
        assert r["check"]["ok"], (shape, r["check"])


def test_onnx_runner_thread_budget_and_model():
    if not HAVE["onnxruntime"]:
        pytest.skip("onnxruntime is an optional peer")
    run = _bench.OnnxRunner(2)
    x = np.random.default_rng(1).standard_normal((4, 6))
    got = run.one_node("ReduceLogSumExp", {"x": x}, (4,), axes=[-1], keepdims=0)({"x": x})
    ref = np.log(np.exp(x).sum(axis=-1))
    np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_missing_peer_is_a_missing_column(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(_bench.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnx", "jax") else real(name, *a))
    doc = _bench.run_case(_case("softmax", "8x16", "float32"), ["numpy"],
                          peers=["numpy", "jax", "onnxruntime"], budget_s=0.001)
    assert doc["errors"] == {}
    assert doc["skipped"] == {"jax": "jax is not installed", "onnxruntime": "onnx is not installed"}
    assert {r["contender"] for r in doc["results"]} == {"fastsoftmax[numpy]", "numpy"}
    text = report.format_backend_summary([doc])
    assert "jax" not in text and "onnxruntime" not in text


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_pin_covers_every_thread_and_restores():
    allowed = os.sched_getaffinity(0)
    ready, done = threading.Event(), threading.Event()
    seen = {}

    def worker():
        seen["tid"] = threading.get_native_id()
        ready.set()
        done.wait(10)
    t = threading.Thread(target=worker)
    t.start()
    ready.wait(10)
    try:
        restore = _bench.pin(1)
        mask = os.sched_getaffinity(seen["tid"])
        assert len(mask) == 1 and mask <= allowed
        assert os.sched_getaffinity(0) == mask
        later = []
        t2 = threading.Thread(target=lambda: later.append(os.sched_getaffinity(0)))
        t2.start()
        t2.join()
        assert later == [mask]  # a thread started while pinned inherits the mask
        restore()
        assert os.sched_getaffinity(seen["tid"]) == allowed == os.sched_getaffinity(0)
    finally:
        done.set()
        t.join()
    assert _bench.pin(len(allowed))() is None  # nothing to restrict: a no-op


def test_small_suite_from_registry():
    cases = _bench.select_small_cases()
    want = [(o, s, d) for o, names in _registry.SMALL_SUITE for s in names
            for d in ("float32", "float64")]
    assert [(c.op, c.shape.name, c.dtype) for c in cases] == want
    assert all(c.threads == 1 for c in cases)
    by = {(c.op, c.shape.name): c.shape.dims for c in cases}
    assert by[("softmax", "10")] == (10,) and by[("cross_entropy", "32x10")] == (32, 10)
    cores = {}
    doc = _bench.run_case(cases[0], ["numpy"], peers=["numpy"], budget_s=0.001, cores=cores)
    assert doc["shape"] == [10]  # 1-D stays 1-D
    (ours,) = [r for r in doc["results"] if r["kind"] == "ours"]
    assert ours["check"]["ok"]
    assert set(cores[doc["id"]]) == {"fastsoftmax[numpy]", "numpy"}
    assert all(v >= 0 for v in cores[doc["id"]].values())


def test_first_call_plan_and_one_fresh_process():
    benches, shape, budgets = _registry.FIRST_CALL_SUITE
    items = firstcall.plan()
    ours = [i for i in items if i["who"] == "fastsoftmax"]
    assert len(ours) == len(benches) * 2 * len(budgets) * 2
    assert {(i["bench"], i["dtype"], i["threads"], i["cache"]) for i in ours} == {
        (b, d, t, c) for b in benches for d in ("float32", "float64") for t in budgets
        for c in ("cold", "warm")}
    one = [i for i in items if i["bench"] == "logsumexp" and i["dtype"] == "float64"
           and i["threads"] in (0, 2)]
    rows = firstcall.run(one)
    assert [r["cache"] for r in rows] == ["cold", "warm", None]
    for r in rows:
        assert "error" not in r, r
        assert r["first_call_s"] > 0 and r["second_call_s"] > 0
    assert rows[0]["import_s"] > 0 and rows[0]["resolved"].split("/")[0] in (
        "cython", "numba", "numpy")
    text = report.format_first_calls(rows)
    assert "logsumexp" in text and "cold" in text


def _fake_case(op, threads, speedups):
    """A bench case whose backends have the given speedups (backend -> {peer: ratio})."""
    results = [{"contender": f"fastsoftmax[{b}]", "kind": "ours", "backend": b,
                "method": "auto", "variant": None, "median_s": 1e-3, "speedup": sp}
               for b, sp in speedups.items()]
    return {"op": op, "dtype": "float32", "shape_name": "4x4", "threads": threads,
            "results": results}


def test_backend_summary_is_geomean_and_min():
    cases = [_fake_case("softmax", 1, {"auto": {"torch": 2.0, "jax": 0.5}}),
             _fake_case("logsumexp", 1, {"auto": {"torch": 8.0, "jax": 2.0}}),
             _fake_case("softmax", 2, {"auto": {"torch": 3.0}})]
    s = report.backend_summary(cases)
    g, lo, where, below, n = s[("auto", 1, "torch")]
    assert math.isclose(g, 4.0) and lo == 2.0 and where.startswith("softmax") and below == 0
    g, lo, where, below, n = s[("auto", 1, "jax")]
    assert math.isclose(g, 1.0) and lo == 0.5 and below == 1 and n == 2
    assert math.isclose(s[("auto", 2, "torch")][0], 3.0) and s[("auto", 2, "torch")][1] == 3.0
    table = report.format_backend_summary(cases)
    assert "| auto | 1 | 4.00x, 2.00x" in table and "1 of 2 < 1x" in table
