"""Backend registry and selection, thread budget, and ``info()``.

A backend is a module implementing the kernel contract of docs/DESIGN.md.  Modules load lazily
(Numba alone costs ~0.5 s to import), so ``import fastsoftmax`` stays fast; a backend whose import
fails is remembered as unavailable, with the reason, and "auto" simply passes it over.

"auto" asks the policy (``_policy``) built from the tables in force (``_tables``, loaded on the
first "auto" call) for the measured winner of the op's size class, else runs ``AUTO_ORDER``.
Where "auto" picks Numba before Numba has compiled the call's kernels, the C kernels serve the
call while a background thread compiles them (``_NumbaWhenCompiled``): "auto" never waits for
the JIT.  ``fast_path()`` hands the public functions the C extension's fast entries, with this
module's decisions for every size class compiled into a table (docs/DESIGN.md, "The per-call
path").

Adding a backend: one row in ``_MODULES`` (and ``AUTO_ORDER``, ``_policy.BACKENDS``) plus the
module itself.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
import queue
import threading

import numpy as np

from . import _policy, _registry

BACKENDS = _policy.BACKENDS
_MODULES = {
    "numba": "fastsoftmax.backends.numba",
    "cython": "fastsoftmax._cext",
    "numpy": "fastsoftmax.backends.reference",
}
# preference of "auto" when no measured table says otherwise
AUTO_ORDER = ("cython", "numba", "numpy")
_CHOICES = BACKENDS + ("auto",)

_loaded: dict = {}
_failed: dict[str, str] = {}
_found: set = set()        # backends whose modules _probe found (finding them costs ~10 us)
_lock = threading.Lock()   # the tables in force and the fast paths
_load_locks = {name: threading.Lock() for name in _MODULES}   # one per backend: a background
                                                               # import of Numba holds its own
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastsoftmax_backend", default=None
)


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot be used here; the message says why."""


def _check_name(name, origin: str) -> str:
    if not isinstance(name, str) or name not in _CHOICES:
        raise ValueError(f"{origin} must be one of {', '.join(map(repr, _CHOICES))}; got {name!r}")
    return name


def _probe(name: str) -> str | None:
    """Why ``name`` cannot load (None: it looks loadable).  Numba is not imported for this (its
    import costs ~0.5 s: finding its spec is enough); the C extension is (about a millisecond)."""
    if name in _failed:
        return _failed[name]
    if name == "numba" and "numba" not in _found:
        if importlib.util.find_spec("numba") is None:
            return "numba is not installed (pip install numba)"
        if importlib.util.find_spec(_MODULES["numba"]) is None:
            return f"{_MODULES['numba']} is missing from this installation"
        _found.add("numba")
    if name == "cython" and "cython" not in _loaded:
        try:
            load("cython")
        except BackendUnavailableError as exc:
            return str(exc)
    return None


def load(name: str):
    """The backend module ``name``, importing it on first use."""
    mod = _loaded.get(name)
    if mod is not None:
        return mod
    with _load_locks[name]:
        if name in _loaded:
            return _loaded[name]
        if name in _failed:
            raise BackendUnavailableError(f"backend {name!r} is unavailable: {_failed[name]}")
        try:
            mod = importlib.import_module(_MODULES[name])
        except Exception as exc:  # an ImportError, or a broken install failing at import time
            why = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
            if name == "cython":
                why = (f"the compiled extension fastsoftmax._cext could not be imported ({exc}); "
                       "build it with `pip install -e .` or install a wheel")
            _failed[name] = why
            raise BackendUnavailableError(f"backend {name!r} is unavailable: {why}") from exc
        _loaded[name] = mod
        return mod


def available_backends() -> list[str]:
    """Names of the backends that can run here, in "auto"'s order of preference."""
    return [b for b in AUTO_ORDER if _probe(b) is None]


def requested(backend=None) -> str:
    """The backend name in force: the argument, else ``use_backend``, else the env, else auto."""
    if backend is not None:
        return _check_name(backend, "backend")
    ctx = _current.get()
    if ctx is not None:
        return ctx
    env = os.environ.get("FASTSOFTMAX_BACKEND")
    if env:
        return _check_name(env, "the environment variable FASTSOFTMAX_BACKEND")
    return "auto"


_policy_in_force: _policy.Policy | None = None
_tables_desc: dict = {}


def policy() -> _policy.Policy:
    """The lookup in force (loaded once; ``invalidate()`` makes the next call read the tables,
    the environment and the per-user file again -- reading them per call would cost more than
    the lookup)."""
    global _policy_in_force, _tables_desc
    pol = _policy_in_force
    if pol is None:
        from . import _tables  # JSON, the built-in data files: read on the first "auto" call only

        backends = available_backends()  # takes _lock itself (loading the C extension)
        with _lock:
            if _policy_in_force is None:
                _policy_in_force, _tables_desc = _tables.load(backends)
            pol = _policy_in_force
    return pol


def invalidate() -> None:
    """Forget the loaded tables (and the warnings given about them)."""
    global _policy_in_force
    from . import _tables

    _policy_in_force = None
    _forget_fast_paths()
    _tables.forget_warnings()


def resolve(backend, op: _registry.Op, dtype, shape3) -> tuple[str, object, str]:
    """(name, module, method) to run ``op`` on a canonical array of ``shape3``.

    ``method`` is "auto" unless the measured table names a winner for this op, dtype and size on
    the backend it picked.  Where "auto" picks Numba, the module is ``_NumbaWhenCompiled``: the
    Numba kernels once compiled for the call's argument types, the C kernels until then.
    """
    name = requested(backend)
    if name != "auto":
        return name, load(name), "auto"
    best = policy().choose(op.name, op.scheme, dtype, shape3, get_num_threads())
    if best is not None and _probe(best.backend) is None:
        got = _auto_module(best.backend, best.method)
        if got is not None:
            return got
    for cand in AUTO_ORDER:
        if _probe(cand) is None:
            got = _auto_module(cand, "auto")
            if got is not None:
                return got
    return "numpy", load("numpy"), "auto"


def _auto_pick(choice: _policy.Choice | None) -> tuple[str, str]:
    """(backend, method) that ``resolve`` runs under "auto" for a table's ``choice`` (None: no
    table names the class), loading nothing; the fast path's table is built from it."""
    if choice is not None and _probe(choice.backend) is None:
        return choice.backend, choice.method
    for cand in AUTO_ORDER:
        if _probe(cand) is None:
            return cand, "auto"
    return "numpy", "auto"


def _auto_module(name: str, method: str):
    """(name, module, method) for "auto"'s pick, or None when the backend cannot load."""
    if name == "numba" and background_compile():
        return name, _NUMBA_WHEN_COMPILED, method
    try:
        return name, load(name), method
    except BackendUnavailableError:
        return None


@contextlib.contextmanager
def use_backend(name: str):
    """``with use_backend("numba"): ...`` sets the default backend in this context (thread)."""
    _check_name(name, "use_backend's argument")
    if name != "auto":
        load(name)  # fail here, at the with statement, if it cannot run
    token = _current.set(name)
    try:
        yield name
    finally:
        _current.reset(token)


# ----------------------------------------------------------------------------------- threads
def _default_threads() -> int:
    env = os.environ.get("FASTSOFTMAX_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(
                f"FASTSOFTMAX_NUM_THREADS must be a positive integer, got {env!r}"
            )
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_num_threads: int | None = None


def set_num_threads(n) -> None:
    """Thread budget of every kernel call (the kernels use fewer when the work is small)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads takes a positive int, got {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads takes a positive int, got {n}")
    if n != _num_threads:
        _num_threads = n
        _forget_fast_paths()


def get_num_threads() -> int:
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


# -------------------------------------------------------------------------------------- info
def info() -> dict:
    """Version, each backend and its status, the SIMD path in use, the thread budget, the ops,
    and the dispatch table in force (and whether it was measured on this CPU)."""
    from ._version import __version__

    backends = {}
    for name in BACKENDS:
        why = _probe(name)
        entry = {"available": why is None, "loaded": name in _loaded}
        if why:
            entry["reason"] = why
        backends[name] = entry
    if backends["numba"]["available"]:
        import importlib.metadata  # ~10 ms at import: for info() only

        backends["numba"]["version"] = importlib.metadata.version("numba")
        backends["numba"]["compiled_for_auto"] = len(_ready)
        if _bg_failed:
            backends["numba"]["background_compile_failed"] = dict(_bg_failed)
    simd = None
    if backends["cython"]["available"]:
        cext = load("cython")
        simd = cext.get_isa()
        backends["cython"]["isa_paths"] = list(cext.isa_paths())
    policy()
    return {
        "version": __version__,
        "numpy": np.__version__,
        "backends": backends,
        "default_backend": requested(),
        "simd": simd,
        "threads": get_num_threads(),
        "ops": {op.name: {"family": op.family, "methods": list(op.methods),
                          "size_classes": op.scheme} for op in _registry.OPS.values()},
        "dispatch_table": dict(_tables_desc),
    }


# --------------------------------------------------------------------------------- fast path
# The public functions try the C extension's fast entries (a ``FastPath``) first: one C call
# that checks the common case (an exact ndarray of native, aligned, C-contiguous float32 /
# float64, an int axis or None, the default options), looks its size class up in a table of
# this module's decisions, and runs the kernel -- or returns None, and the general path runs.
# The table holds, per fast entry, dtype and size class, what ``resolve`` would run: the C
# kernel with a method, or "the general path" (another backend).  One FastPath per backend
# request (None: neither an argument nor ``use_backend``, so FASTSOFTMAX_BACKEND decides: the
# FastPath then takes no call while it is set), rebuilt after ``set_num_threads`` and
# ``invalidate``.
_fast: dict = {}
_fast_generation = 0
_UNSET = object()


def fast_path(backend=None):
    """The FastPath for a call with ``backend`` (and the ``use_backend`` context in force), or
    None where the fast entries take no call (another backend, the C extension missing)."""
    if backend is None:
        backend = _current.get()
    elif type(backend) is not str:
        return None
    fp = _fast.get(backend, _UNSET)
    if fp is _UNSET:
        fp = _build_fast_path(backend)
    return fp


def _forget_fast_paths() -> None:
    global _fast_generation
    with _lock:
        _fast_generation += 1
        _fast.clear()


def _build_fast_path(key):
    if key is not None and key not in _CHOICES:
        return None  # a misspelt name: the general path raises
    generation = _fast_generation
    fp = None
    if key in (None, "auto", "cython") and _probe("cython") is None:
        try:
            cext = load("cython")
        except BackendUnavailableError:
            cext = None
        if cext is not None and hasattr(cext, "FastPath"):
            fp = cext.FastPath(
                _fast_routes(cext, key),
                bytes(_fast_op(e) is not None and _fast_op(e).scheme == "rows_last"
                      for e in cext.FAST_ENTRIES),
                [b for b, _ in _policy.N_CLASSES if b is not None],
                [b for b, _ in _policy.ROW_CLASSES if b is not None],
                get_num_threads(),
                "FASTSOFTMAX_BACKEND" if key is None else None)
    with _lock:
        if generation == _fast_generation:
            _fast[key] = fp
    return fp


def _fast_op(entry):
    return _registry.OPS.get(entry)


def _fast_routes(cext, key) -> bytes:
    """The FastPath's table: per fast entry, dtype and size class (in the extension's order),
    0 where ``resolve`` would not run the C kernel, else the code of the method it runs."""
    nthreads = get_num_threads()
    pol = None if key == "cython" else policy()
    out = bytearray()
    for entry in cext.FAST_ENTRIES:
        op = _fast_op(entry)
        if op is not None and getattr(cext, op.kernel, None) is not cext.CONTRACT.get(op.kernel):
            op = None  # its kernel function was replaced: every call goes through it
        for dtype in _policy.DTYPES:
            for _, n_label in _policy.N_CLASSES:
                for _, rows_label in _policy.ROW_CLASSES:
                    for layout in ("last", "strided"):
                        code = 0
                        if op is not None and layout in _policy.SCHEMES[op.scheme] \
                                and not (layout == "strided" and rows_label == "1"):
                            if pol is None:
                                code = cext.METHOD_CODES["auto"]
                            else:
                                size = _policy.SizeClass(n_label, rows_label, layout)
                                name, method = _auto_pick(
                                    pol.choose_class(op.name, dtype, size, nthreads))
                                if name == "cython":
                                    code = cext.METHOD_CODES[method]
                        out.append(code)
    if len(out) != 4 * 2 * cext.N_SIZE_CLASSES:
        raise AssertionError("the size classes of _policy and of the C extension differ")
    return bytes(out)


# -------------------------------------------------------------- Numba, compiled in the background
# Numba compiles a kernel on its first call for each signature (argument types): seconds cold,
# about a second just to import Numba and load its cache.  An explicit backend="numba" waits for
# that.  "auto" never does: the first time it would run a Numba kernel for a signature, the C
# kernels (else the reference: every backend has the same contract) serve the call and a
# background thread imports Numba and compiles the kernels for that signature, over every
# branch the contract function takes by shape (``backends.numba.warm``); later calls of that
# signature run Numba.  FASTSOFTMAX_NUMBA_BACKGROUND=0 turns this off ("auto" then compiles in
# the call, as before).  A fork while a compile runs leaves Numba's locks held by a thread the
# child does not have: the child's "auto" then never runs Numba (an explicit backend="numba"
# there may hang, as with any fork during a Numba compile).
_ready: set = set()          # signatures compiled (or loaded from Numba's cache)
_pending: set = set()        # signatures queued or compiling
_bg_failed: dict = {}        # signature -> why its compile failed (C keeps serving it)
_bg_queue: queue.SimpleQueue | None = None
_bg_running = False          # a compile (or Numba's import) is in progress
_bg_poisoned = False         # forked during a compile: never run Numba under "auto" here
_bg_lock = threading.Lock()


def background_compile() -> bool:
    """Whether "auto" compiles Numba kernels in the background (FASTSOFTMAX_NUMBA_BACKGROUND)."""
    return os.environ.get("FASTSOFTMAX_NUMBA_BACKGROUND", "1").strip() != "0"


def signature(args) -> tuple:
    """What Numba compiles a contract call for: per argument, None; an array's dtype, ndim,
    flags and whether it is the first argument's buffer (in place: the kernels take None for
    it); a bool's or a str's value (they choose kernels); another value's type."""
    first = args[0]
    p0 = first.__array_interface__["data"][0] if isinstance(first, np.ndarray) else None
    spec = []
    for i, a in enumerate(args):
        if a is None:
            spec.append(None)
        elif isinstance(a, np.ndarray):
            alias = i > 0 and p0 is not None and a.__array_interface__["data"][0] == p0
            spec.append(("a", a.dtype.str, a.ndim, bool(a.flags.writeable),
                         bool(a.flags.aligned), alias))
        elif isinstance(a, (bool, str)):
            spec.append(("v", a))
        else:
            spec.append(("t", type(a)))
    return tuple(spec)


def _fallback_module():
    for cand in AUTO_ORDER:
        if cand != "numba" and _probe(cand) is None:
            try:
                return load(cand)
            except BackendUnavailableError:
                continue
    return load("numpy")


def _deferred_call(entry: str, args: tuple):
    sig = (entry, signature(args))
    if sig in _ready and not _bg_poisoned:
        return getattr(load("numba"), entry)(*args)
    if not _bg_poisoned:
        _schedule(sig)
    return getattr(_fallback_module(), entry)(*args)


def _schedule(sig) -> None:
    global _bg_queue
    with _bg_lock:
        if sig in _pending or sig in _ready or sig in _bg_failed:
            return
        _pending.add(sig)
        if _bg_queue is None:
            _bg_queue = queue.SimpleQueue()
            threading.Thread(target=_bg_worker, args=(_bg_queue,), daemon=True,
                             name="fastsoftmax-numba-compile").start()
        _bg_queue.put(sig)


def _bg_worker(q) -> None:
    global _bg_running
    while True:
        sig = q.get()
        _bg_running = True
        try:
            load("numba").warm(*sig)
        except Exception as exc:  # noqa: BLE001 -- recorded; "auto" keeps serving it by C
            _bg_failed[sig] = f"{type(exc).__name__}: {exc}"
            if "numba" in _failed:
                _forget_fast_paths()
        else:
            _ready.add(sig)
        finally:
            _bg_running = False
            with _bg_lock:
                _pending.discard(sig)


def wait_compiled(timeout: float | None = None) -> bool:
    """Wait until the background compiles queued so far are done; True if none is left."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while _pending:
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _after_fork_in_child() -> None:
    global _bg_queue, _bg_running, _bg_poisoned, _bg_lock
    _bg_lock = threading.Lock()
    if _bg_running:
        _bg_poisoned = True
    _bg_running = False
    _bg_queue = None
    _pending.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _NumbaWhenCompiled:
    """The Numba backend as "auto" runs it: each kernel entry of the contract goes to Numba for
    a signature Numba has compiled, and to the C kernels (scheduling the compile) otherwise."""

    def __getattr__(self, entry):
        if entry.startswith("_"):
            raise AttributeError(entry)

        def call(*args):
            return _deferred_call(entry, args)
        call.__name__ = entry
        return call


_NUMBA_WHEN_COMPILED = _NumbaWhenCompiled()
