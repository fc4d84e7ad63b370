"""Backend registry and selection, thread budget, and ``info()``.

A backend is a module implementing the kernel contract of docs/DESIGN.md.  Modules load lazily
(Numba alone costs ~0.5 s to import), so ``import fastsoftmax`` stays fast; a backend whose import
fails is remembered as unavailable, with the reason, and "auto" simply passes it over.

"auto" asks the policy (``_policy``) built from the tables in force (``_tables``, loaded on the
first "auto" call) for the measured winner of the op's size class, else runs ``AUTO_ORDER``.

Adding a backend: one row in ``_MODULES`` (and ``AUTO_ORDER``, ``_policy.BACKENDS``) plus the
module itself.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.metadata
import importlib.util
import os
import threading

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
_lock = threading.Lock()
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
    if name == "numba":
        if importlib.util.find_spec("numba") is None:
            return "numba is not installed (pip install numba)"
        if importlib.util.find_spec(_MODULES["numba"]) is None:
            return f"{_MODULES['numba']} is missing from this installation"
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
    with _lock:
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
    _tables.forget_warnings()


def resolve(backend, op: _registry.Op, dtype, shape3) -> tuple[str, object, str]:
    """(name, module, method) to run ``op`` on a canonical array of ``shape3``.

    ``method`` is "auto" unless the measured table names a winner for this op, dtype and size on
    the backend it picked.
    """
    name = requested(backend)
    if name != "auto":
        return name, load(name), "auto"
    best = policy().choose(op.name, op.scheme, dtype, shape3, get_num_threads())
    if best is not None and _probe(best.backend) is None:
        try:
            return best.backend, load(best.backend), best.method
        except BackendUnavailableError:
            pass
    for cand in AUTO_ORDER:
        if _probe(cand) is None:
            try:
                return cand, load(cand), "auto"
            except BackendUnavailableError:
                continue
    return "numpy", load("numpy"), "auto"


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
    _num_threads = n


def get_num_threads() -> int:
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


# -------------------------------------------------------------------------------------- info
def info() -> dict:
    """Version, each backend and its status, the SIMD path in use, the thread budget, the ops,
    and the dispatch table in force (and whether it was measured on this CPU)."""
    import numpy as np

    from ._version import __version__

    backends = {}
    for name in BACKENDS:
        why = _probe(name)
        entry = {"available": why is None, "loaded": name in _loaded}
        if why:
            entry["reason"] = why
        backends[name] = entry
    if backends["numba"]["available"]:
        backends["numba"]["version"] = importlib.metadata.version("numba")
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
