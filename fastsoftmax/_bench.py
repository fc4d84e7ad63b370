"""Benchmarks: the case table (ops, shapes, peers) and the measurement engine.

One table drives both the pytest-benchmark suite (``benches/``) and ``fastsoftmax bench``:

* ``SHAPES``: the named shapes of the issues (2-D, rows x classes, the op runs along the last axis);
* ``OPS``: per op, how to build its inputs, how many bytes it moves, our call, and its peers
  (``numpy`` formula, ``scipy.special``, ``torch``, ``jax``, ``copyto``), each a function
  ``make(inputs) -> fn`` whose ``fn()`` runs the op once and returns its result;
* ``DEFAULT_SUITE``: the (op, shape) pairs of the default run (float32, one thread).

Adding an op: one ``Op`` row (its peers included); adding a peer: one function in the op's row.

Measurement (``measure``): every contender is called once untimed (compiles Numba, touches the
output pages, fills caches) and checked against the NumPy formula; then each repetition times every
contender in turn, round-robin, starting one further along each time, ``loops`` calls per sample
so that a sample lasts ~``sample_s``.  We report the median time per call and, for every pair, the
median over repetitions of the paired ratio ``t_other / t_this`` (the speedup), which cancels the
slow drift of a shared machine better than a ratio of medians.
"""
from __future__ import annotations

import gc
import importlib
import importlib.metadata
import importlib.util
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

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
STANDARD = ("4096x1000", "256x32000", "32x50257", "1x4000000", "200000x10")


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
PEER_LIBS = {"numpy": "numpy", "scipy": "scipy", "torch": "torch", "jax": "jax",
             "copyto": "numpy"}


def peer_available(peer: str) -> str | None:
    """None if ``peer``'s library imports here, else the reason."""
    mod = PEER_LIBS[peer]
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


def _tensor(a):
    return _torch().from_numpy(a)


# ------------------------------------------------------------------------------- inputs
def _logits(shape, dtype, rng):
    return rng.standard_normal(shape, dtype=np.float64).astype(dtype) * dtype.type(2)


def _in_x(shape, dtype, rng):
    return {"x": _logits(shape, dtype, rng)}


def _in_out(shape, dtype, rng):
    x = _logits(shape, dtype, rng)
    out = np.empty_like(x)
    out.fill(0)  # touch the pages: first-touch faults would otherwise land in the first call
    return {"x": x, "out": out}


def _in_ce(shape, dtype, rng):
    x = _logits(shape, dtype, rng)
    rows = int(np.prod(shape[:-1]))
    x2 = x.reshape(rows, shape[-1])
    return {"x": x2, "t": rng.integers(0, shape[-1], rows, dtype=np.int64)}


# ------------------------------------------------------------------------- numpy formulas
def _np_softmax(inp):
    x = inp["x"]

    def fn():
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        return e
    return fn


def _np_softmax_out(inp):
    x, out = inp["x"], inp["out"]
    m = np.empty(x.shape[:-1] + (1,), x.dtype)
    s = np.empty_like(m)

    def fn():
        np.max(x, axis=-1, keepdims=True, out=m)
        np.subtract(x, m, out=out)
        np.exp(out, out=out)
        np.sum(out, axis=-1, keepdims=True, out=s)
        np.divide(out, s, out=out)
        return out
    return fn


def _np_log_softmax(inp):
    x = inp["x"]

    def fn():
        t = x - x.max(axis=-1, keepdims=True)
        t -= np.log(np.exp(t).sum(axis=-1, keepdims=True))
        return t
    return fn


def _np_logsumexp(inp):
    x = inp["x"]

    def fn():
        m = x.max(axis=-1, keepdims=True)
        return np.log(np.exp(x - m).sum(axis=-1)) + m[..., 0]
    return fn


def _np_ce(inp):
    x, t = inp["x"], inp["t"]
    rows = np.arange(x.shape[0])

    def fn():
        m = x.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(x - m).sum(axis=-1)) + m[:, 0]
        return np.mean(lse - x[rows, t])
    return fn


def _np_ce_grad(inp):
    x, t = inp["x"], inp["t"]
    rows = np.arange(x.shape[0])
    scale = x.dtype.type(1.0 / x.shape[0])

    def fn():
        m = x.max(axis=-1, keepdims=True)
        e = np.exp(x - m)
        s = e.sum(axis=-1, keepdims=True)
        loss = np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, t])
        e /= s
        e[rows, t] -= 1
        e *= scale
        return loss, e
    return fn


def _copyto(inp):
    x, out = inp["x"], inp["out"]

    def fn():
        np.copyto(out, x)
        return out
    return fn


# ----------------------------------------------------------------------------------- scipy
def _sp_softmax(inp):
    from scipy import special

    x = inp["x"]
    return lambda: special.softmax(x, axis=-1)


def _sp_log_softmax(inp):
    from scipy import special

    x = inp["x"]
    return lambda: special.log_softmax(x, axis=-1)


def _sp_logsumexp(inp):
    from scipy import special

    x = inp["x"]
    return lambda: special.logsumexp(x, axis=-1)


def _sp_ce(inp):
    """What a SciPy user writes: log_softmax, pick the targets."""
    from scipy import special

    x, t = inp["x"], inp["t"]
    rows = np.arange(x.shape[0])
    return lambda: -np.mean(special.log_softmax(x, axis=-1)[rows, t])


def _sp_ce_grad(inp):
    from scipy import special

    x, t = inp["x"], inp["t"]
    rows = np.arange(x.shape[0])
    scale = x.dtype.type(1.0 / x.shape[0])

    def fn():
        lp = special.log_softmax(x, axis=-1)
        loss = -np.mean(lp[rows, t])
        g = np.exp(lp, out=lp)
        g[rows, t] -= 1
        g *= scale
        return loss, g
    return fn


# ----------------------------------------------------------------------------------- torch
def _th_softmax(inp):
    torch = _torch()
    xt = _tensor(inp["x"])
    return lambda: torch.softmax(xt, -1)


def _th_softmax_out(inp):
    torch = _torch()
    xt, ot = _tensor(inp["x"]), _tensor(inp["out"])
    return lambda: torch.softmax(xt, -1, out=ot)


def _th_log_softmax(inp):
    F = _torch().nn.functional
    xt = _tensor(inp["x"])
    return lambda: F.log_softmax(xt, -1)


def _th_logsumexp(inp):
    torch = _torch()
    xt = _tensor(inp["x"])
    return lambda: torch.logsumexp(xt, -1)


def _th_ce(inp):
    F = _torch().nn.functional
    xt, tt = _tensor(inp["x"]), _tensor(inp["t"])
    return lambda: F.cross_entropy(xt, tt)


def _th_ce_grad(inp):
    torch = _torch()
    F = torch.nn.functional
    xt = _tensor(inp["x"]).requires_grad_(True)
    tt = _tensor(inp["t"])

    def fn():
        loss = F.cross_entropy(xt, tt)
        (g,) = torch.autograd.grad(loss, xt)
        return loss, g
    return fn


# ------------------------------------------------------------------------------------- jax
def _jx(fn_of_jax, *names):
    """A jitted jax peer: ``fn_of_jax(jax, jnp)`` returns the function of the inputs ``names``."""
    def make(inp):
        jax = _jax()
        jnp = jax.numpy
        f = jax.jit(fn_of_jax(jax, jnp))
        args = [jax.device_put(inp[n]) for n in names]

        def fn():
            return jax.block_until_ready(f(*args))
        return fn
    return make


def _jx_ce_loss(jax, jnp):
    def loss(x, t):
        lse = jax.nn.logsumexp(x, axis=-1)
        return jnp.mean(lse - jnp.take_along_axis(x, t[:, None], axis=-1)[:, 0])
    return loss


_jx_softmax = _jx(lambda jax, jnp: (lambda x: jax.nn.softmax(x, axis=-1)), "x")
_jx_log_softmax = _jx(lambda jax, jnp: (lambda x: jax.nn.log_softmax(x, axis=-1)), "x")
_jx_logsumexp = _jx(lambda jax, jnp: (lambda x: jax.nn.logsumexp(x, axis=-1)), "x")
_jx_ce = _jx(_jx_ce_loss, "x", "t")
_jx_ce_grad = _jx(lambda jax, jnp: jax.value_and_grad(_jx_ce_loss(jax, jnp)), "x", "t")


# ------------------------------------------------------------------------------------ ours
def _fs():
    import fastsoftmax

    return fastsoftmax


def _ours_softmax(log):
    def make(inp, backend, method, variant):
        f = _fs().log_softmax if log else _fs().softmax
        x = inp["x"]
        return lambda: f(x, axis=-1, backend=backend, method=method)
    return make


def _ours_softmax_out(inp, backend, method, variant):
    f, x, out = _fs().softmax, inp["x"], inp["out"]
    if variant == "inplace":
        # out=x: each call takes the softmax of the previous result (finite, same work)
        buf = x.copy()
        return lambda: f(buf, axis=-1, out=buf, backend=backend, method=method)
    return lambda: f(x, axis=-1, out=out, backend=backend, method=method)


def _ours_logsumexp(inp, backend, method, variant):
    f, x = _fs().logsumexp, inp["x"]
    return lambda: f(x, axis=-1, backend=backend)


def _ours_ce(inp, backend, method, variant):
    f, x, t = _fs().cross_entropy, inp["x"], inp["t"]
    return lambda: f(x, t, backend=backend)


def _ours_ce_grad(inp, backend, method, variant):
    f, t = _fs().cross_entropy, inp["t"]
    if variant == "inplace":
        # the gradient replaces the logits: each call starts from the previous call's gradient
        # (values stay finite and small, the work per call is the same)
        buf = inp["x"].copy()
        return lambda: f(buf, t, grad_out=buf, backend=backend)
    x = inp["x"]
    return lambda: f(x, t, return_grad=True, backend=backend)


# ------------------------------------------------------------------------------- the table
def _traffic_map(shape, itemsize):  # read x, write a result of x's size
    return 2 * math.prod(shape) * itemsize


def _traffic_reduce(shape, itemsize):  # read x, write one value per row
    return (math.prod(shape) + math.prod(shape[:-1])) * itemsize


def _traffic_ce(shape, itemsize):  # read logits, read int64 targets
    return math.prod(shape) * itemsize + 8 * math.prod(shape[:-1])


def _traffic_ce_grad(shape, itemsize):  # read logits and targets, write the gradient
    return 2 * math.prod(shape) * itemsize + 8 * math.prod(shape[:-1])


@dataclass(frozen=True)
class Op:
    name: str
    title: str
    inputs: Callable
    traffic: Callable  # (shape, itemsize) -> bytes read + written per call
    ours: Callable     # (inputs, backend, method, variant) -> fn
    peers: dict        # peer name -> make(inputs) -> fn
    shapes: tuple[str, ...] = STANDARD
    variants: tuple[str, ...] = ("",)
    methods: bool = False   # takes method= (three_pass / online)
    baseline: str = "numpy"
    n_outputs: int = 1


OPS = {op.name: op for op in (
    Op("softmax", "softmax along the last axis", _in_x, _traffic_map, _ours_softmax(False),
       {"numpy": _np_softmax, "scipy": _sp_softmax, "torch": _th_softmax, "jax": _jx_softmax},
       methods=True),
    Op("log_softmax", "log_softmax along the last axis", _in_x, _traffic_map,
       _ours_softmax(True),
       {"numpy": _np_log_softmax, "scipy": _sp_log_softmax, "torch": _th_log_softmax,
        "jax": _jx_log_softmax},
       methods=True),
    Op("logsumexp", "logsumexp along the last axis", _in_x, _traffic_reduce, _ours_logsumexp,
       {"numpy": _np_logsumexp, "scipy": _sp_logsumexp, "torch": _th_logsumexp,
        "jax": _jx_logsumexp}),
    Op("cross_entropy", "cross-entropy forward (mean over rows, class-index targets)", _in_ce,
       _traffic_ce, _ours_ce,
       {"numpy": _np_ce, "scipy": _sp_ce, "torch": _th_ce, "jax": _jx_ce}),
    Op("cross_entropy_grad", "cross-entropy forward + backward (loss and d loss / d logits)",
       _in_ce, _traffic_ce_grad, _ours_ce_grad,
       {"numpy": _np_ce_grad, "scipy": _sp_ce_grad, "torch": _th_ce_grad, "jax": _jx_ce_grad},
       variants=("", "inplace"), n_outputs=2),
    Op("softmax_out", "softmax into a preallocated out= buffer (peers that take one)", _in_out,
       _traffic_map, _ours_softmax_out,
       {"numpy": _np_softmax_out, "torch": _th_softmax_out, "copyto": _copyto},
       shapes=("4096x1000", "1x4000000", "256MB"), variants=("", "inplace"), methods=True),
)}

# the default `fastsoftmax bench` suite: float32, one thread, these (op, shape) pairs
DEFAULT_SUITE = (
    ("softmax", STANDARD),
    ("log_softmax", ("4096x1000", "256x32000")),
    ("logsumexp", ("4096x1000", "1x4000000")),
    ("cross_entropy", ("4096x1000", "32x50257")),
    ("cross_entropy_grad", ("4096x1000", "256x32000")),
    ("softmax_out", ("256MB",)),
)
PEERS = ("numpy", "scipy", "torch", "jax", "copyto")


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
    for o in ops or ():
        if o not in OPS:
            raise ValueError(f"unknown op {o!r}: choose from {', '.join(OPS)}")
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
        for o in ops or OPS:
            pairs += [(o, s) for s in shape_objs]
    elif quick:
        for o in ops or OPS:
            pairs += [(o, s) for s in QUICK_SHAPES.values()]
    elif full or ops:
        for o in ops or OPS:
            pairs += [(o, SHAPES[s]) for s in OPS[o].shapes]
    else:
        for o, names in DEFAULT_SUITE:
            pairs += [(o, SHAPES[s]) for s in names]
    cases = []
    for o, s in pairs:
        for d in dtypes:
            if d not in s.dtypes:
                continue
            for t in threads:
                cases.append(Case(o, s, d, int(t)))
    return cases


@dataclass(frozen=True)
class Contender:
    name: str       # "fastsoftmax[numba]", "fastsoftmax[numba:online]", "numpy", "torch", ...
    kind: str       # "ours" | "peer"
    make: Callable  # inputs -> fn
    backend: str | None = None
    method: str | None = None
    variant: str = ""
    check: bool = True


def contenders(op_name: str, backends, *, methods=("auto",), peers=PEERS):
    """(contenders, skipped): ours on each backend (and method, variant), then the op's peers
    whose library is installed; ``skipped`` maps a left-out peer to the reason."""
    op = OPS[op_name]
    out, skipped = [], {}
    for b in backends:
        for m in (methods if op.methods else ("auto",)):
            for v in op.variants:
                label = b if m == "auto" else f"{b}:{m}"
                name = f"fastsoftmax[{label}]" + (f" {v}" if v else "")

                def make(inp, _b=b, _m=m, _v=v):
                    return op.ours(inp, None if _b == "auto" else _b, _m, _v)
                out.append(Contender(name, "ours", make, b, m, v, check=(v != "inplace")))
    for p, mk in op.peers.items():
        if p not in peers:
            continue
        why = peer_available(p)
        if why:
            skipped[p] = why
            continue
        out.append(Contender(p, "peer", mk, check=(p != "copyto")))
    return out, skipped


# ------------------------------------------------------------------------------ measuring
def _as_arrays(res) -> tuple[np.ndarray, ...]:
    items = res if isinstance(res, tuple) else (res,)
    arrs = []
    for r in items:
        if hasattr(r, "detach"):
            r = r.detach().numpy()
        arrs.append(np.asarray(r, dtype=np.float64))
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


@dataclass
class Timing:
    name: str
    samples: list[float] = field(default_factory=list)
    loops: int = 1
    first_call_s: float = 0.0

    @property
    def median(self) -> float:
        return float(np.median(self.samples))


def measure(fns: dict, *, budget_s=0.5, sample_s=0.01, min_reps=5, max_reps=51,
            first_calls: dict | None = None) -> tuple[dict, dict]:
    """Time the callables ``fns`` (name -> fn) round-robin.

    Returns (timings: name -> Timing, speedup: (a, b) -> median over repetitions of
    ``t_b / t_a``, i.e. how many times faster a is than b).  Each fn must already have been
    called once (warm-up) unless ``first_calls`` is None, in which case it is called here.
    """
    names = list(fns)
    tim = {n: Timing(n) for n in names}
    for n in names:  # warm-up and the cost estimate
        if first_calls is None or n not in first_calls:
            t0 = time.perf_counter()
            fns[n]()
            tim[n].first_call_s = time.perf_counter() - t0
        else:
            tim[n].first_call_s = first_calls[n]
        t0 = time.perf_counter()
        fns[n]()
        est = max(time.perf_counter() - t0, 1e-7)
        tim[n].loops = max(1, min(100_000, int(sample_s / est)))
        tim[n].samples.append(est)  # a first, untimed-loop estimate; replaced below
    per_rep = sum(tim[n].loops * tim[n].samples[0] for n in names)
    reps = int(min(max_reps, max(min_reps, budget_s // max(per_rep, 1e-9))))
    for n in names:
        tim[n].samples.clear()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(reps):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                fn, loops = fns[n], tim[n].loops
                t0 = time.perf_counter()
                for _ in range(loops):
                    fn()
                tim[n].samples.append((time.perf_counter() - t0) / loops)
    finally:
        if gc_was:
            gc.enable()
    speed = {}
    for a in names:
        for b in names:
            if a != b:
                ra = np.asarray(tim[a].samples)
                rb = np.asarray(tim[b].samples)
                speed[(a, b)] = float(np.median(rb / ra))
    return tim, speed


_API_OP = {"softmax_out": "softmax", "cross_entropy_grad": "cross_entropy"}


def _resolved(case: Case, shape, dtype) -> str | None:
    """"backend/method" that backend="auto" runs for this case (the dispatcher's choice)."""
    from . import _dispatch

    restore = _set_threads(case.threads)
    try:
        rows = math.prod(shape[:-1])
        name, _, method = _dispatch.resolve(None, _API_OP.get(case.op, case.op), dtype,
                                            (rows, shape[-1], 1))
        return f"{name}/{method}"
    except Exception:
        return None
    finally:
        restore()


def _set_threads(n: int):
    """Give fastsoftmax and torch the same thread budget; returns a function restoring both."""
    fs = _fs()
    old = fs.get_num_threads()
    fs.set_num_threads(n)
    restore = [lambda: fs.set_num_threads(old)]
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        old_t = torch.get_num_threads()
        torch.set_num_threads(n)
        restore.append(lambda: torch.set_num_threads(old_t))
    return lambda: [f() for f in restore]


def run_case(case: Case, backends, *, methods=("auto",), peers=PEERS, budget_s=0.5,
             seed=0) -> dict:
    """Measure one case; the result is one entry of the JSON ``cases`` list."""
    op = OPS[case.op]
    dtype = np.dtype(case.dtype)
    shape = case.shape.dims
    if len(shape) < 2:
        shape = (1,) + tuple(shape)
    cons, skipped = contenders(case.op, backends, methods=methods, peers=peers)
    if any(c.name == "torch" for c in cons):
        _torch()  # imported before the thread budget is set, so torch gets it too
    rng = np.random.default_rng(seed)
    inp = op.inputs(shape, dtype, rng)
    restore = _set_threads(case.threads)
    errors = {}
    try:
        fns, first, checks = {}, {}, {}
        ref = None
        ref_name = op.baseline
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
    traffic = op.traffic(shape, dtype.itemsize)
    present = [c for c in cons if c.name in tim]
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
        "bytes": traffic, "baseline": op.baseline, "results": results,
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

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    from . import __version__

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
    from . import _dispatch, _tune

    import os

    cpu = _tune.cpu_summary()
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
        "tune_table": _tune.source(),
    }
