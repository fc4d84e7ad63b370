"""``fastsoftmax tune``: measure every compiled backend and method per op x dtype x size class x
thread budget, through the public API, and keep the winners.

The ops, their methods and size-class schemes come from the registry; the classes and their
representative shapes from ``_policy``; the table file is written by ``_tables``.  A winner must
beat the default choice (what "auto" runs without a table) by ``MIN_GAIN``, else the default is
kept: a few percent is within the noise of a shared machine.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch, _policy, _registry, _tables
from .. import ops as _public
from .timing import measure as _time

MIN_GAIN = 1.05


def plan(*, ops=None, dtypes=None, threads=None, quick=False) -> list[dict]:
    """The measurements of a tuning run: one per op x dtype x size class x thread budget.

    ``quick`` (the tests): two small classes per op and tiny arrays.
    """
    names = list(ops or _registry.OPS)
    dtypes = list(dtypes or _policy.DTYPES)
    threads = list(threads or [_dispatch.get_num_threads()])
    items = []
    for t in threads:
        for name in names:
            op = _registry.OPS[name]
            classes = _policy.all_classes(op.scheme)
            if quick:
                classes = [c for c in classes if (c.n, c.rows) in (("<=32", ">64"), ("<=1K", "1"))]
            for dt in dtypes:
                for cls in classes:
                    shape3 = _policy.representative_shape(
                        cls, max_elements=1 << 12 if quick else 1 << 21)
                    if quick:
                        shape3 = (shape3[0], shape3[1] if shape3[1] <= 64 else 200, shape3[2])
                    key = _policy.Key(name, dt, cls, _policy.thread_class(int(t)))
                    items.append({"op": name, "dtype": dt, "class": cls, "threads": int(t),
                                  "shape3": shape3, "key": key})
    return items


def candidates(op: _registry.Op) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """(every (backend, method) to measure, the default among them): the default is what "auto"
    runs without a table, the first available compiled backend of the default order with its
    own method choice ("auto")."""
    backends = [b for b in _dispatch.available_backends() if b != "numpy"]
    if not backends:
        raise RuntimeError("no compiled backend is available here (see `fastsoftmax info`): "
                           "there is nothing to tune")
    # a backend's own "auto" may run a kernel no explicit method reaches (small rows)
    return [(b, m) for b in backends for m in op.methods], (backends[0], "auto")


def timed_call(op: _registry.Op, shape3, dtype, backend: str, method: str):
    """A function running ``op`` once through the public API on data of canonical ``shape3``
    (reduced along axis 1), into a preallocated output where the op takes one."""
    rng = np.random.default_rng(0)
    shape = shape3 if op.scheme == "rows" else shape3[:2]
    args = op.inputs(shape, 1, np.dtype(dtype), rng, "normal")
    if op.tune_out is not None:
        first = next(iter(args.values()))
        args[op.tune_out] = np.empty_like(first)
    kw = {"axis": 1, "backend": backend}
    if len(op.methods) > 1:
        kw["method"] = method
    func = getattr(_public, op.name)
    return lambda: func(**args, **kw)


def measure(items: list[dict], *, budget_s: float = 0.08, progress=None) -> list[dict]:
    """Measure every candidate (backend, method) of each planned item round-robin.

    Returns the table's entries: the key's fields, "backend" / "method" (the choice), "fastest"
    (the fastest candidate), "default" (what "auto" runs without a table), "gain" (median paired
    ratio t_default / t_fastest), "times_s" (candidate -> median seconds per call), "shape".
    """
    old = _dispatch.get_num_threads()
    entries = []
    try:
        for it in items:
            key = it["key"]
            if progress is not None:
                progress(f"{key.op} {key.dtype} {key.size} t{it['threads']}")
            _dispatch.set_num_threads(it["threads"])
            op = _registry.OPS[it["op"]]
            cands, default = candidates(op)
            fns = {f"{b}/{m}": timed_call(op, it["shape3"], it["dtype"], b, m) for b, m in cands}
            tim, speed = _time(fns, budget_s=budget_s, sample_s=0.004, min_reps=5, max_reps=25)
            order = sorted(fns, key=lambda k: tim[k].median)
            dflt = "/".join(default)
            fastest = order[0]
            gain = speed[(fastest, dflt)] if fastest != dflt else 1.0
            best = fastest if gain >= MIN_GAIN else dflt
            b, m = best.split("/")
            entries.append({"op": key.op, "dtype": key.dtype, "n": key.size.n,
                            "rows": key.size.rows, "layout": key.size.layout,
                            "threads": key.threads, "backend": b, "method": m,
                            "shape": list(it["shape3"]), "default": dflt, "fastest": fastest,
                            "gain": gain, "times_s": {k: tim[k].median for k in order}})
    finally:
        _dispatch.set_num_threads(old)
    return entries


def write(path: str, entries: list, meta: dict) -> None:
    _tables.write_file(path, entries, meta, _dispatch.available_backends())
    _dispatch.invalidate()
