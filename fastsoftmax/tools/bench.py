"""The benchmark engine: cases and contenders read from the op registry (``_registry``: each op's
``benches`` rows give inputs, bytes moved, options, shapes and peers), measured round-robin
(``timing``).  It drives both ``fastsoftmax bench`` and the pytest-benchmark suite (``benches/``).

* ``SHAPES``: the named shapes (2-D, rows x classes, the op runs along the last axis);
* a *case* is (bench row, shape, dtype, thread budget); the default suite is
  ``_registry.DEFAULT_SUITE`` (float32, one thread), ``--full`` every bench row x its shapes x
  both dtypes x 1 and 2 threads;
* contenders: ours on each backend (and method, and the "inplace" variant where the row names an
  output argument), then the row's peers whose library is installed.

Every contender is called once untimed (compiles Numba, touches the output pages, fills caches)
and checked against the row's baseline peer (the NumPy formula) before timing.
"""
from __future__ import annotations

import gc
import importlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import _dispatch, _registry, _tables
from .. import ops as _public
from .timing import measure

SCHEMA = "fastsoftmax-bench/1"

# ------------------------------------------------------------------------------------ shapes


@dataclass(frozen=True)
class Shape:
    name: str
    dims: tuple[int, ...]
    dtypes: tuple[str, ...] = ("float32", "float64")
    note: str = ""


SHAPES = {s.name: s for s in (
    Shape("4096x1000", (4096, 1000), note="a batch of ImageNet-sized rows"),
    Shape("256x32000", (256, 32000), note="LLM vocabulary (Llama)"),
    Shape("32x50257", (32, 50257), note="GPT-2 vocabulary, few rows"),
    Shape("1x4000000", (1, 4_000_000), note="one long row"),
    Shape("200000x10", (200_000, 10), note="many tiny rows"),
    Shape("256MB", (16384, 4096), dtypes=("float32",),
          note="256 MB float32, out of cache; compared with np.copyto into the same buffer"),
)}
# tiny shapes for the tests and a smoke run (bench --quick)
QUICK_SHAPES = {s.name: s for s in (
    Shape("8x16", (8, 16)),
    Shape("1x3000", (1, 3000)),
    Shape("300x5", (300, 5)),
)}


def parse_shape(text: str) -> Shape:
    """A named shape (SHAPES or QUICK_SHAPES) or dims written like ``1000x100``."""
    if text in SHAPES:
        return SHAPES[text]
    if text in QUICK_SHAPES:
        return QUICK_SHAPES[text]
    try:
        dims = tuple(int(p.replace("_", "")) for p in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise ValueError(
            f"unknown shape {text!r}: use one of {', '.join(SHAPES)} or dims like 1000x100"
        )
    return Shape("x".join(map(str, dims)), dims)


# ---------------------------------------------------------------------------- peer libraries
# peer -> the modules it needs (all must import, else the peer's column is left out)
PEER_LIBS = {"numpy": ("numpy",), "scipy": ("scipy",), "torch": ("torch",), "jax": ("jax",),
             "onnxruntime": ("onnxruntime", "onnx"), "copyto": ("numpy",)}


def peer_available(peer: str) -> str | None:
    """None if ``peer``'s libraries import here, else the reason."""
    for mod in PEER_LIBS[peer]:
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed"
        try:
            importlib.import_module(mod)
        except Exception as exc:  # a broken install must not stop the run
            return f"{mod} failed to import: {exc}"
    return None


def _torch():
    import torch

    return torch


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 cases run in float64
    return jax


class OnnxRunner:
    """What an onnxruntime peer's ``make(lib, inputs)`` receives: ``one_node`` builds a one-node
    ONNX model (default domain, opset 13) for the feed's dtypes and shapes and returns
    ``run(feed) -> first output`` of an InferenceSession on ``threads`` intra-op threads (one
    inter-op thread, sequential execution, no spinning: an idle pool thread that spins would
    steal the core from the contender timed next)."""

    OPSET = 13

    def __init__(self, threads: int):
        import onnx
        import onnxruntime

        self.onnx, self.ort, self.threads = onnx, onnxruntime, threads

    def one_node(self, op_type: str, feed: dict, out_shape, **attrs):
        onnx, ort, h = self.onnx, self.ort, self.onnx.helper
        elem = {np.dtype(np.float32): onnx.TensorProto.FLOAT,
                np.dtype(np.float64): onnx.TensorProto.DOUBLE,
                np.dtype(np.int64): onnx.TensorProto.INT64}
        first = next(iter(feed.values()))
        ins = [h.make_tensor_value_info(n, elem[a.dtype], list(a.shape)) for n, a in feed.items()]
        out = h.make_tensor_value_info("y", elem[first.dtype], list(out_shape))
        node = h.make_node(op_type, list(feed), ["y"], **attrs)
        graph = h.make_graph([node], op_type, ins, [out])
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", self.OPSET)])
        model.ir_version = 8  # what every onnxruntime since 1.10 reads
        onnx.checker.check_model(model)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        return lambda f: sess.run(None, f)[0]


PEERS = ("numpy", "scipy", "torch", "jax", "onnxruntime", "copyto")


def peer_lib(peer: str):
    """The library object a registry peer ``make(lib, inputs)`` receives."""
    if peer in ("numpy", "copyto"):
        return np
    if peer == "scipy":
        from scipy import special

        return special
    if peer == "torch":
        return _torch()
    if peer == "onnxruntime":
        return OnnxRunner(_dispatch.get_num_threads())
    return _jax()


@dataclass(frozen=True)
class Case:
    op: str
    shape: Shape
    dtype: str
    threads: int

    @property
    def id(self) -> str:
        return f"{self.op}-{self.dtype}-{self.shape.name}-t{self.threads}"


def select_cases(*, full=False, quick=False, ops=None, dtypes=None, shapes=None,
                 threads=None) -> list[Case]:
    """The cases of a run: the default suite, ``full`` (every op x shape x dtype, 1 and 2
    threads) or ``quick`` (tiny shapes), narrowed by the filters (None = no filter)."""
    benches = _registry.BENCHES
    for o in ops or ():
        if o not in benches:
            raise ValueError(f"unknown op {o!r}: choose from {', '.join(benches)}")
    for d in dtypes or ():
        if d not in ("float32", "float64"):
            raise ValueError(f"unknown dtype {d!r}: choose float32 or float64")
    shape_objs = [parse_shape(s) for s in shapes] if shapes else None
    if threads is None:
        threads = [1, 2] if full else [1]
    if dtypes is None:
        dtypes = ["float32", "float64"] if (full or quick) else ["float32"]
    pairs: list[tuple[str, Shape]] = []
    if shape_objs is not None:  # explicit shapes: every selected op on each of them
        for o in ops or benches:
            pairs += [(o, s) for s in shape_objs]
    elif quick:
        for o in ops or benches:
            pairs += [(o, s) for s in QUICK_SHAPES.values()]
    elif full or ops:
        for o in ops or benches:
            pairs += [(o, SHAPES[s]) for s in benches[o][1].shapes]
    else:
        for o, names in _registry.DEFAULT_SUITE:
            pairs += [(o, SHAPES[s]) for s in names]
    cases = []
    for o, s in pairs:
        for d in dtypes:
            if d not in s.dtypes:
                continue
            for t in threads:
                cases.append(Case(o, s, d, int(t)))
    return cases


def select_small_cases(dtypes=("float32", "float64")) -> list[Case]:
    """The small-call suite (``_registry.SMALL_SUITE``): each (bench row, tiny shape) x dtype,
    one thread."""
    return [Case(o, parse_shape(s), d, 1) for o, names in _registry.SMALL_SUITE
            for s in names for d in dtypes]


@dataclass(frozen=True)
class Contender:
    name: str       # "fastsoftmax[numba]", "fastsoftmax[numba:online]", "numpy", "torch", ...
    kind: str       # "ours" | "peer"
    make: Callable  # inputs -> fn
    backend: str | None = None
    method: str | None = None
    variant: str = ""
    check: bool = True


def _ours(op: _registry.Op, bench: _registry.Bench, backend, method, variant):
    """make(inputs) -> fn: our public function on the row's inputs, along the last axis."""
    func = getattr(_public, op.name)
    kw = dict(bench.options or {}, axis=-1, backend=None if backend == "auto" else backend)
    if len(op.methods) > 1:
        kw["method"] = method

    def make(inp):
        if variant == "inplace":
            # the output replaces the input: each call starts from the previous result (values
            # stay finite, the work per call is the same)
            first = next(iter(inp))
            buf = inp[first].copy()
            args = {**inp, first: buf, bench.inplace: buf}
            return lambda: func(**args, **kw)
        return lambda: func(**inp, **kw)
    return make


def contenders(op_name: str, backends, *, methods=("auto",), peers=PEERS):
    """(contenders, skipped): ours on each backend (and method, variant), then the bench row's
    peers whose library is installed; ``skipped`` maps a left-out peer to the reason."""
    op, bench = _registry.BENCHES[op_name]
    variants = ("", "inplace") if bench.inplace else ("",)
    out, skipped = [], {}
    for b in backends:
        for m in (methods if len(op.methods) > 1 else ("auto",)):
            for v in variants:
                label = b if m == "auto" else f"{b}:{m}"
                name = f"fastsoftmax[{label}]" + (f" {v}" if v else "")
                out.append(Contender(name, "ours", _ours(op, bench, b, m, v), b, m, v,
                                     check=(v != "inplace")))
    for p, mk in bench.peers.items():
        if p not in peers:
            continue
        why = peer_available(p)
        if why:
            skipped[p] = why
            continue
        out.append(Contender(p, "peer", lambda inp, _p=p, _mk=mk: _mk(peer_lib(_p), inp),
                             check=(p != "copyto")))
    return out, skipped


# ------------------------------------------------------------------------------ measuring
def _as_arrays(res) -> tuple[np.ndarray, ...]:
    items = res if isinstance(res, tuple) else (res,)
    arrs = []
    for r in items:
        if hasattr(r, "detach"):
            r = r.detach().numpy()
        arrs.append(np.array(r, dtype=np.float64))  # a copy: contenders may share an out=
    return tuple(arrs)


def _check(res, ref, dtype) -> tuple[bool, float]:
    """(close enough, largest error relative to the reference's scale) of a result."""
    tol = 2e-3 if dtype == "float32" else 1e-8
    a, b = _as_arrays(res), _as_arrays(ref)
    worst = 0.0
    ok = len(a) == len(b)
    for u, v in zip(a, b):
        if u.shape != v.shape:
            return False, math.inf
        scale = float(np.max(np.abs(v))) if v.size else 1.0
        with np.errstate(all="ignore"):
            err = float(np.max(np.abs(u - v) / (np.abs(v) + scale))) if v.size else 0.0
        if not np.isfinite(err):
            err = math.inf
        worst = max(worst, err)
        ok = ok and err <= tol
    return ok, worst


def _resolved(case: Case, shape, dtype) -> str | None:
    """"backend/method" that backend="auto" runs for this case (the dispatcher's choice)."""
    restore = _set_threads(case.threads)
    try:
        rows = math.prod(shape[:-1])
        op = _registry.BENCHES[case.op][0]
        name, _, method = _dispatch.resolve(None, op, dtype, (rows, shape[-1], 1))
        return f"{name}/{method}"
    except Exception:
        return None
    finally:
        restore()


def _tids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


def pin(n: int):
    """Pin every thread of this process to ``n`` of the CPUs it may run on (Linux); threads
    started later inherit the mask of the thread that starts them.  Returns a function undoing
    it.  This is how each peer gets the thread budget whatever its own pool size: XLA sizes its
    pool from the CPUs at start and has no run-time setting; pinned, its threads share ``n``
    cores.  No-op where affinity cannot be set or ``n`` covers every allowed CPU."""
    if not hasattr(os, "sched_setaffinity"):
        return lambda: None
    allowed = sorted(os.sched_getaffinity(0))
    if n >= len(allowed):
        return lambda: None
    mask = set(allowed[:n])

    def apply(cpus):
        for tid in _tids() or [0]:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:  # a thread that just ended
                pass
    apply(mask)
    return lambda: apply(set(allowed))


def _set_threads(n: int):
    """Give every contender the same thread budget: fastsoftmax's and torch's thread counts, and
    the process pinned to ``n`` CPUs (``pin``; onnxruntime gets ``n`` in its session, see
    ``OnnxRunner``); returns a function restoring all of it."""
    old = _dispatch.get_num_threads()
    _dispatch.set_num_threads(n)
    restore = [lambda: _dispatch.set_num_threads(old), pin(n)]
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        old_t = torch.get_num_threads()
        torch.set_num_threads(n)
        restore.append(lambda: torch.set_num_threads(old_t))
    return lambda: [f() for f in restore]


def run_case(case: Case, backends, *, methods=("auto",), peers=PEERS, budget_s=0.5,
             seed=0, cores: dict | None = None) -> dict:
    """Measure one case; the result is one entry of the JSON ``cases`` list.  ``cores``, if
    given, receives ``{case id: {contender: cores kept busy}}`` (``Timing.cores``: process CPU
    time over wall time while the contender ran, the check of the thread budget)."""
    _, bench = _registry.BENCHES[case.op]
    dtype = np.dtype(case.dtype)
    shape = tuple(case.shape.dims)  # 1-D shapes stay 1-D (the small-call suite)
    cons, skipped = contenders(case.op, backends, methods=methods, peers=peers)
    if any(c.name == "torch" for c in cons):
        _torch()  # imported before the thread budget is set, so torch gets it too
    rng = np.random.default_rng(seed)
    inp = bench.inputs(shape, dtype, rng)
    restore = _set_threads(case.threads)
    errors = {}
    try:
        fns, first, checks = {}, {}, {}
        ref = None
        ref_name = bench.baseline
        for c in sorted(cons, key=lambda c: c.name != ref_name):  # the reference first
            try:
                fn = c.make(inp)
                t0 = time.perf_counter()
                res = fn()
                first[c.name] = time.perf_counter() - t0
            except Exception as exc:  # a failing contender is reported, not fatal
                errors[c.name] = f"{type(exc).__name__}: {exc}"
                continue
            if c.name == ref_name:
                ref = _as_arrays(res)
            elif c.check and ref is not None:
                checks[c.name] = _check(res, ref, case.dtype)
            del res
            fns[c.name] = fn
        tim, speed = measure(fns, budget_s=budget_s, first_calls=first) if fns else ({}, {})
    finally:
        restore()
    n_el = math.prod(shape)
    traffic = bench.traffic(shape, dtype.itemsize)
    present = [c for c in cons if c.name in tim]
    if cores is not None:
        cores[case.id] = {c.name: round(tim[c.name].cores, 3) for c in present}
    peer_names = [c.name for c in present if c.kind == "peer"]
    results = []
    for c in present:
        t = tim[c.name]
        med = t.median
        entry = {
            "contender": c.name, "kind": c.kind, "backend": c.backend,
            "method": c.method, "variant": c.variant or None,
            "median_s": med, "min_s": float(min(t.samples)),
            "samples": len(t.samples), "loops": t.loops, "first_call_s": t.first_call_s,
            "gelem_per_s": n_el / med / 1e9, "gb_per_s": traffic / med / 1e9,
            "speedup": {p: speed[(c.name, p)] for p in peer_names if p != c.name},
        }
        if c.name in checks:
            ok, err = checks[c.name]
            entry["check"] = {"ok": ok, "max_rel_err": err}
        if c.backend == "auto":
            entry["resolved"] = _resolved(case, shape, dtype)
        results.append(entry)
    del inp, fns
    gc.collect()
    return {
        "id": case.id, "op": case.op, "dtype": case.dtype, "shape": list(shape),
        "shape_name": case.shape.name, "threads": case.threads, "elements": n_el,
        "bytes": traffic, "baseline": bench.baseline, "results": results,
        "skipped": skipped, "errors": errors,
    }


# ------------------------------------------------------------------------------ environment
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The short commit of the checkout fastsoftmax runs from (None outside a git checkout)."""
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        r = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict:
    from .._version import __version__

    return {
        "fastsoftmax": __version__,
        "git": _git_commit(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "numba": _version("numba"),
        "llvmlite": _version("llvmlite"),
        "torch": _version("torch"),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "matplotlib": _version("matplotlib"),
    }


def numba_target() -> dict | None:
    """The CPU name and SIMD features LLVM targets for Numba (None without llvmlite)."""
    if importlib.util.find_spec("llvmlite") is None:
        return None
    try:
        from llvmlite import binding as ll

        feats = ll.get_host_cpu_features()
        on = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq")
              if feats.get(f)]
        return {"cpu": ll.get_host_cpu_name(), "features": on}
    except Exception as exc:
        return {"error": str(exc)}


def environment() -> dict:
    """Machine, versions, backends: the ``environment`` block of the JSON and of ``info``."""
    import os

    cpu = _tables.cpu_summary()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    inf = _dispatch.info()
    return {
        "machine": {"cpu": cpu["model"], "arch": cpu["machine"], "cores": cores,
                    "simd_flags": cpu["flags"], "platform": platform.platform()},
        "versions": versions(),
        "backends": inf["backends"],
        "available_backends": _dispatch.available_backends(),
        "simd": {"cython": inf["simd"], "numba": numba_target()},
        "threads": inf["threads"],
        "tune_table": inf["dispatch_table"]["source"],
        "dispatch_table": inf["dispatch_table"],
    }
