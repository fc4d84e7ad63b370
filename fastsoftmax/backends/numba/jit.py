"""How the kernels are compiled: ``cjit`` (njit with the on-disk cache), ``JIT`` (the options of
every kernel) and ``hook`` (an op's piece handed to a factory of rows.py).

* ``error_model="numpy"``: no ZeroDivisionError checks (they would also stop vectorization);
  ``nogil``: the pool's threads run kernels side by side.  No fast-math: explog.py asks for
  ``contract`` (FMA) alone, and the two flags the sums and maxima need are set on single
  instructions (intrinsics.py).
* ``cache=True``: one specialization per (dtype, None-ness of the optional arrays), compiled on
  first use and kept on disk.  Numba's index checks only the source of the kernel's own file, so
  after an edit of one module of this package, kernels of the others that inlined the old code
  are still loaded: delete ``fastsoftmax/backends/numba/__pycache__/*.nb[ic]`` (an installed
  package gets new files, hence new stamps, everywhere).
* A factory (rows.py) builds a kernel around the op's pieces, which its closure holds.  Numba's
  cache key hashes the pickled closure: a plain module-level function pickles by name, the same
  in every process, while a Numba dispatcher pickles with a random per-process id (a closure over
  one would miss the cache in every process and grow it).  So the pieces are ``hook``s: plain
  functions that Numba compiles into the kernel calling them (``register_jitable``), with the
  kernels' options.
"""
import warnings

from numba import njit
from numba.extending import register_jitable

__all__ = ["JIT", "cjit", "hook"]

JIT = dict(nogil=True, error_model="numpy")   # + cache=True (cjit)

_cache_warned = False


def cjit(**opts):
    """``numba.njit(cache=True, **opts)``, or without the on-disk cache where Numba has nowhere
    to write it (a read-only install, no writable NUMBA_CACHE_DIR or user cache directory):
    Numba raises RuntimeError at decoration then, which would make the backend unimportable.
    The kernels then compile in each process (one warning says so)."""
    def deco(f):
        global _cache_warned
        try:
            return njit(cache=True, **opts)(f)
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


def hook(f):
    """``f`` for njit code only, compiled with the kernels' options (JIT) and inlined into its
    caller by LLVM (``forceinline``: the ``alwaysinline`` attribute): the form of an op's pieces
    handed to rows.py's factories (see the module docstring).  Inlined, a factory's kernel is one
    function, as if written out by hand; the hook called per row (or per group) cost 5-7% here
    on 4096x1000 / 200000x10 cross-entropy.  (Numba's own ``inline="always"`` would not do:
    it inlines before the branches on None arguments are pruned.)"""
    return register_jitable(forceinline=True, **JIT)(f)


def named(f, name, doc=None):
    """The njit kernel (cached) of the factory-made function ``f`` under ``name``: the name of
    its cache files and of its tracebacks, so that kernels made by one factory do not share
    them."""
    f.__name__ = f.__qualname__ = name
    if doc is not None:
        f.__doc__ = doc
    return cjit(**JIT)(f)
