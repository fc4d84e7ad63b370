"""One benchmark per (case, contender) of the table in fastsoftmax/_bench.py (see conftest.py)."""
import math

import numpy as np

from fastsoftmax import _bench


def test_op(benchmark, case, contender, resolve_contender):
    c = resolve_contender(case, contender)
    op = _bench.OPS[case.op]
    shape = case.shape.dims
    dtype = np.dtype(case.dtype)
    inp = op.inputs(shape, dtype, np.random.default_rng(0))
    if c.kind == "peer" and c.name == "torch":
        _bench._torch()  # imported before the thread budget is set
    restore = _bench._set_threads(case.threads)
    try:
        fn = c.make(inp)
        fn()  # warm-up: Numba compiles, jax traces, output pages get touched
        benchmark.group = case.id
        elements = math.prod(shape)
        traffic = op.traffic(shape, dtype.itemsize)
        benchmark.extra_info.update(op=case.op, dtype=case.dtype, shape=list(shape),
                                    shape_name=case.shape.name, threads=case.threads,
                                    contender=c.name, kind=c.kind, elements=elements,
                                    bytes=traffic)
        benchmark(fn)
    finally:
        restore()
    if benchmark.stats is None:  # --benchmark-disable: each fn ran once, as a smoke test
        return
    med = benchmark.stats.stats.median
    benchmark.extra_info["gelem_per_s"] = elements / med / 1e9
    benchmark.extra_info["gb_per_s"] = traffic / med / 1e9
