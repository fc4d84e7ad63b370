"""One benchmark per (case, contender) of the op registry's bench rows (see conftest.py)."""
import math

import numpy as np

from fastsoftmax import _registry
from fastsoftmax.tools import bench as _bench


def _shape(case):
    return tuple(case.shape.dims)  # as the engine runs it (1-D shapes stay 1-D)


def _baseline(bench, inp):
    """The bench row's baseline result (the NumPy formula), as float64 arrays of its own (an
    out= row's baseline writes into the buffer the contender writes into next)."""
    fn = bench.peers[bench.baseline](_bench.peer_lib(bench.baseline), inp)
    return tuple(np.array(a, dtype=np.float64, copy=True) for a in _bench._as_arrays(fn()))


def test_op(benchmark, case, contender, resolve_contender):
    c = resolve_contender(case, contender)
    _, bench = _registry.BENCHES[case.op]
    shape = _shape(case)
    dtype = np.dtype(case.dtype)
    inp = bench.inputs(shape, dtype, np.random.default_rng(0))
    if c.kind == "peer" and c.name == "torch":
        _bench._torch()  # imported before the thread budget is set
    restore = _bench._set_threads(case.threads)
    try:
        checked = c.check and c.name != bench.baseline
        ref = _baseline(bench, inp) if checked else None
        fn = c.make(inp)
        res = fn()  # warm-up: Numba compiles, jax traces, output pages get touched
        if checked:  # as the engine does: a wrong result is no benchmark
            ok, err = _bench._check(res, ref, case.dtype)
            assert ok, f"{c.name} differs from {bench.baseline} (max relative error {err:.3g})"
        del res, ref
        benchmark.group = case.id
        elements = math.prod(shape)
        traffic = bench.traffic(shape, dtype.itemsize)
        benchmark.extra_info.update(op=case.op, dtype=case.dtype, shape=list(shape),
                                    shape_name=case.shape.name, threads=case.threads,
                                    contender=c.name, kind=c.kind, backend=c.backend,
                                    method=c.method, variant=c.variant or None,
                                    elements=elements, bytes=traffic)
        if c.backend == "auto":  # what the dispatcher ran
            benchmark.extra_info["resolved"] = _bench._resolved(case, shape, dtype)
        benchmark(fn)
    finally:
        restore()
    if benchmark.stats is None:  # --benchmark-disable: each fn ran once, as a smoke test
        return
    med = benchmark.stats.stats.median
    benchmark.extra_info["gelem_per_s"] = elements / med / 1e9
    benchmark.extra_info["gb_per_s"] = traffic / med / 1e9
