"""The first-call suite of ``fastsoftmax bench``: how long the first call of each op and dtype
takes in a fresh process, with an empty Numba cache and a warm one, per thread budget, and how
long ``import fastsoftmax`` takes.  Cases from the registry (``_registry.FIRST_CALL_SUITE``).

Each measurement is one fresh Python process (``python -c CHILD``) that is pinned to its thread
budget (``bench.pin``) and calls ``set_num_threads`` before the call, with ``NUMBA_CACHE_DIR``
set to a new empty directory per (op, dtype, budget): the first process there finds the cache
cold (and fills it), the second, in the same directory, finds it warm.  numpy is imported before
the clock starts (``import fastsoftmax`` is timed alone, first); the input is built before the
call.
scipy.special's first call (its import included) in a fresh process is the reference.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from .. import _registry

CHILD = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
if spec["threads"] and hasattr(os, "sched_setaffinity"):
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[:spec["threads"]])
import numpy as np
res = {}
t0 = time.perf_counter()
import fastsoftmax
res["import_s"] = time.perf_counter() - t0
res["numba_after_import"] = "numba" in sys.modules
from fastsoftmax import _registry
op, bench = _registry.BENCHES[spec["bench"]]
inp = bench.inputs(tuple(spec["shape"]), np.dtype(spec["dtype"]), np.random.default_rng(0))
if spec["who"] == "scipy":
    res.pop("import_s")
    t0 = time.perf_counter()
    from scipy import special
    fn = bench.peers["scipy"](special, inp)
    fn()
    res["first_call_s"] = time.perf_counter() - t0
    t0 = time.perf_counter(); fn(); res["second_call_s"] = time.perf_counter() - t0
else:
    fastsoftmax.set_num_threads(spec["threads"])
    f = getattr(fastsoftmax, op.name)
    kw = dict(bench.options or {}, axis=-1)
    t0 = time.perf_counter(); f(**inp, **kw); res["first_call_s"] = time.perf_counter() - t0
    t0 = time.perf_counter(); f(**inp, **kw); res["second_call_s"] = time.perf_counter() - t0
    from fastsoftmax import _dispatch
    shape = spec["shape"]
    rows = 1
    for d in shape[:-1]:
        rows *= d
    name, _, method = _dispatch.resolve(None, op, np.dtype(spec["dtype"]), (rows, shape[-1], 1))
    res["resolved"] = f"{name}/{method}"
    res["numba_loaded"] = "numba" in sys.modules
print("FIRSTCALL " + json.dumps(res))
"""


def plan(ops=None, dtypes=None, threads=None) -> list[dict]:
    """The measurements: per bench row x dtype x budget, cold then warm; scipy per row x dtype."""
    benches, shape_name, budgets = _registry.FIRST_CALL_SUITE
    from .bench import parse_shape

    shape = list(parse_shape(shape_name).dims)
    out = []
    for b in ops or benches:
        for d in dtypes or ("float32", "float64"):
            for t in threads or budgets:
                for cache in ("cold", "warm"):
                    out.append({"bench": b, "dtype": d, "shape": shape, "shape_name": shape_name,
                                "threads": int(t), "who": "fastsoftmax", "cache": cache})
            if "scipy" in _registry.BENCHES[b][1].peers:
                out.append({"bench": b, "dtype": d, "shape": shape, "shape_name": shape_name,
                            "threads": 0, "who": "scipy", "cache": None})
    return out


def _child(spec: dict, cache_dir: str | None, timeout: float) -> dict:
    env = dict(os.environ)
    env.pop("FASTSOFTMAX_NUM_THREADS", None)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in r.stdout.splitlines():
        if line.startswith("FIRSTCALL "):
            return json.loads(line[len("FIRSTCALL "):])
    tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit status {r.returncode}: {tail}"}


def run(items: list[dict], *, progress=None, timeout: float = 120.0) -> list[dict]:
    """Run the plan's measurements in fresh processes; one result row per measurement."""
    rows = []
    dirs: dict = {}
    try:
        for spec in items:
            if progress:
                progress(f"first call {spec['who']} {spec['bench']} {spec['dtype']} "
                         f"t{spec['threads']} {spec['cache'] or ''}".rstrip())
            cache_dir = None
            if spec["who"] == "fastsoftmax":
                key = (spec["bench"], spec["dtype"], spec["threads"])
                if spec["cache"] == "cold" or key not in dirs:
                    if key in dirs:
                        shutil.rmtree(dirs[key], ignore_errors=True)
                    dirs[key] = tempfile.mkdtemp(prefix="fsm-numba-cache-")
                cache_dir = dirs[key]
            rows.append({**spec, **_child(spec, cache_dir, timeout)})
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    return rows
