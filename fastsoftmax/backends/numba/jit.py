"""How the kernels are compiled: ``cjit`` (njit with the on-disk cache), ``JIT`` (the options of
every kernel) and ``hook`` (an op's piece handed to a factory of rows.py).

* ``error_model="numpy"``: no ZeroDivisionError checks (they would also stop vectorization);
  ``nogil``: the pool's threads run kernels side by side.  No fast-math: explog.py asks for
  ``contract`` (FMA) alone, and the two flags the sums and maxima need are set on single
  instructions (intrinsics.py).
* ``cache=True``: one specialization per (dtype, None-ness of the optional arrays), compiled on
  first use and kept on disk.  Numba stamps a kernel's cache with the source of the kernel's own
  file only, but a kernel here inlines code from other modules of the package (exp and log
  everywhere; a factory's kernel lives in rows.py and its maths in the op's module): after an
  edit of one module, kernels cached from the others would load with the old code.  So the
  stamp of every kernel is the hash of all the package's modules (``_STAMP``, through Numba's
  own cache locators): any edit recompiles everything once.  Where that hook cannot be built
  (another Numba's internals), ``cjit`` falls back to Numba's per-file stamp.
* A factory (rows.py) builds a kernel around the op's pieces, which its closure holds.  Numba's
  cache key hashes the pickled closure: a plain module-level function pickles by name, the same
  in every process, while a Numba dispatcher pickles with a random per-process id (a closure over
  one would miss the cache in every process and grow it).  So the pieces are ``hook``s: plain
  functions that Numba compiles into the kernel calling them (``register_jitable``), with the
  kernels' options.
"""
import hashlib
import os
import warnings

from numba import njit
from numba.extending import register_jitable

__all__ = ["JIT", "cjit", "hook", "named"]

JIT = dict(nogil=True, error_model="numpy")   # + cache=True (cjit)


def _package_stamp():
    """sha256 of this package's modules (names and contents); None where they cannot be read."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        h = hashlib.sha256()
        for name in sorted(os.listdir(here)):
            if name.endswith(".py"):
                with open(os.path.join(here, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
        return h.hexdigest()
    except OSError:
        return None


def _stamped_cache_class(stamp):
    """numba's FunctionCache, its locators (NUMBA_CACHE_DIR, the __pycache__ next to the source,
    the user-wide cache directory, in Numba's order) stamping with ``stamp``; None when the
    stamp or those classes are not there."""
    if stamp is None:
        return None
    try:
        from numba.core import caching
        locators = []
        for name in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator"):
            base = getattr(caching, name, None) or getattr(caching, "_" + name)
            locators.append(type("Stamped" + name, (base,),
                                 {"get_source_stamp": lambda self: stamp}))
        impl = type("StampedCacheImpl", (caching.CompileResultCacheImpl,),
                    {"_locator_classes": locators})

        def load_overload(self, sig, target_context):
            # Numba catches only OSError here: a truncated or garbled .nbi / .nbc raised
            # UnpicklingError (or EOFError, ...) from every later call.  Recompile instead.
            try:
                return caching.FunctionCache.load_overload(self, sig, target_context)
            except Exception as exc:  # noqa: BLE001 -- any damage: the kernel recompiles
                _warn_damaged(exc)
                return None

        def save_overload(self, sig, data):
            try:
                caching.FunctionCache.save_overload(self, sig, data)
            except Exception:  # noqa: BLE001 -- the index itself is unreadable: start it over
                try:
                    os.unlink(self._cache_file._index_path)
                except OSError:
                    pass
                caching.FunctionCache.save_overload(self, sig, data)

        return type("StampedFunctionCache", (caching.FunctionCache,),
                    {"_impl_class": impl, "load_overload": load_overload,
                     "save_overload": save_overload})
    except (ImportError, AttributeError, TypeError):
        return None


_damaged_warned = False


def _warn_damaged(exc):
    """One warning per process for damaged cache files (each is recompiled and rewritten)."""
    global _damaged_warned
    if not _damaged_warned:
        _damaged_warned = True
        warnings.warn(f"fastsoftmax: a damaged Numba cache file ({exc!r}) is recompiled",
                      RuntimeWarning, stacklevel=3)


_STAMP = _package_stamp()
_Cache = _stamped_cache_class(_STAMP)
_cache_warned = False


def _cached(f, opts):
    """The dispatcher of f with the on-disk cache (stamped with _STAMP where possible); raises
    Numba's RuntimeError "cannot cache" where no cache location is writable."""
    if _Cache is None:
        return njit(cache=True, **opts)(f)
    disp = njit(**opts)(f)
    if not hasattr(disp, "_cache"):     # not the Dispatcher this hook was written for
        return njit(cache=True, **opts)(f)
    disp._cache = _Cache(disp.py_func)
    return disp


def cjit(**opts):
    """``numba.njit(cache=True, **opts)`` (the stamp: see the module docstring), or without the
    on-disk cache where Numba has nowhere to write it (a read-only install, no writable
    NUMBA_CACHE_DIR or user cache directory): Numba raises RuntimeError at decoration then,
    which would make the backend unimportable.  The kernels then compile in each process (one
    warning says so)."""
    def deco(f):
        global _cache_warned
        try:
            return _cached(f, opts)
        except RuntimeError as exc:
            if "cannot cache" not in str(exc):
                raise
            if not _cache_warned:
                _cache_warned = True
                warnings.warn(
                    f"fastsoftmax: Numba cannot cache its compiled kernels here ({exc}); they "
                    "will compile again in every process. Set NUMBA_CACHE_DIR to a writable "
                    "directory to keep them.", RuntimeWarning, stacklevel=2)
            return njit(**opts)(f)
    return deco


def hook(f=None, *, inline=True):
    """``f`` for njit code only, compiled with the kernels' options (JIT): the form of an op's
    pieces handed to rows.py's factories (see the module docstring).

    ``@hook``: inlined into its caller by LLVM (``forceinline``, the ``alwaysinline``
    attribute): for the pieces called per element or per group of rows (shift, ex, finish,
    setup), which must vanish into the kernel's loops.  ``@hook(inline=False)``: for a piece that
    holds the op's loop over rows or outer slices, called once per call; it then compiles as a
    function of its own, exactly as the hand-written kernels did (inlined into the factory's
    kernel, softmax_row went with it and LLVM allocated the float64 in-place softmax loop's
    registers differently: 4-7% slower).  Numba's own ``inline="always"`` would not do: it
    inlines before the branches on None arguments are pruned."""
    if f is None:
        return lambda f: hook(f, inline=inline)
    opts = dict(JIT, forceinline=True) if inline else JIT
    return register_jitable(**opts)(f)


def named(f, name, doc=None):
    """The njit kernel (cached) of the factory-made function ``f`` under ``name``: the name of
    its cache files and of its tracebacks, so that kernels made by one factory do not share
    them."""
    f.__name__ = f.__qualname__ = name
    if doc is not None:
        f.__doc__ = doc
    return cjit(**JIT)(f)
