"""The Numba backend: softmax, log_softmax, logsumexp and fused cross-entropy kernels.

This module exposes exactly the kernel contract of docs/DESIGN.md (``softmax``, ``logsumexp``,
``cross_entropy``, ``exp``, ``log``); arguments arrive validated.  The package, bottom up:

================  ===========================================================================
``jit.py``        how kernels compile: ``cjit`` (njit, cached on disk), the shared options,
                  ``hook`` (an op's piece for the factories)
``intrinsics.py`` LLVM intrinsics (reassoc add, nnan max, bitcasts) and compile-time helpers
``explog.py``     the vectorizable exp / log every kernel inlines (``fexp``, ``fexpd``, ...)
``rows.py``       row primitives (max, exp + sum + store, scale, online block statistics) and
                  the factories of every kernel's driver: rows, groups of small rows, inner > 1
``pool.py``       the thread pool and the work split
``softmax.py``    softmax / log_softmax maths (three-pass, online, small rows, inner > 1) and
                  the contract's ``softmax``
``lse.py``        logsumexp maths and ``logsumexp``
``ce.py``         cross-entropy (loss + gradient) maths and ``cross_entropy``
``masked.py``     softmax / log_softmax / logsumexp / backward with a mask (``where=``):
                  ``softmax_masked``, ``logsumexp_masked``, ``softmax_backward_masked``
``sampling.py``   candidate sampling (inverse CDF, unique rejection loop): ``sample_candidates``
================  ===========================================================================

``temperature.py``: softmax / logsumexp / cross-entropy of x * (1/T), reached through the
``factor`` argument of the three contract functions (temperature and base).

Softmax's inner loop is ``rows.expstore1`` (exp(x - m) stored while summing), called by
``softmax.softmax_row``.  docs/numba_backend.md has the measurements behind each choice.

Adding an op: its maths in a module of its own, as ``hook``s handed to the factories of rows.py
(a row function, or a group finish for small rows), and its contract function here, with the
shapes of its branches in ``_WARM`` (``warm``).
"""
import numpy as np

from .ce import cross_entropy
from .explog import exp_apply as _exp_apply, log_apply as _log_apply
from .lse import logsumexp
from .pool import MIN_WORK as _MIN_WORK
from .rows import BLOCK as _BLOCK, SMALL_N as _SMALL_N, x_arg as _x_arg
from .softmax import softmax
from .backward import softmax_backward
from .sigmoid import binary_cross_entropy, sigmoid

__all__ = ["softmax", "logsumexp", "cross_entropy", "exp", "log",
           "softmax_backward", "sigmoid", "binary_cross_entropy", "warm"]
from .sampling import sample_candidates
from .masked import logsumexp_masked, softmax_backward_masked, softmax_masked

__all__ += ["sample_candidates", "softmax_masked", "logsumexp_masked",
            "softmax_backward_masked"]


def exp(x, out):
    """The elementwise exp of the kernels (``explog.fexp``); out may be x."""
    _exp_apply(_x_arg(x, out), out)


def log(x, out):
    """The elementwise log of the kernels (``explog.flog``); out may be x."""
    _log_apply(_x_arg(x, out), out)


# ------------------------------------------------------------------------------ warm-up
# For each contract function: the shapes that take each of its branches (a row of
# <= SMALL_N elements, a longer one, one past BLOCK for the online kernel, a row long enough to
# be split over two threads, inner > 1), as (array shapes by argument index, nthreads).
def _softmax_shapes():
    long_row = 2 * _MIN_WORK + _BLOCK
    for shape3, nt in (((2, 3, 1), 1), ((2, _SMALL_N + 5, 1), 1), ((2, 2 * _BLOCK + 3, 1), 1),
                       ((1, long_row, 1), 2), ((2, 3, 2), 1), ((1, 3, 40), 2)):
        yield {0: shape3, 1: shape3, 5: shape3[::2]}, nt


def _lse_shapes():
    for shape3, nt in (((2, 3, 1), 1), ((2, _SMALL_N + 5, 1), 1), ((2, 3, 2), 1)):
        yield {0: shape3, 1: shape3, 2: shape3[::2], 3: shape3[::2], 5: shape3[::2]}, nt


def _ce_shapes():
    for N, C in ((2, 3), (2, _SMALL_N + 5)):
        yield {0: (N, C), 1: (N,), 2: (N, C), 3: (C,), 7: (N,), 8: (N, C), 10: (N,)}, 1


def _masked_shapes(kind):
    """The masked entries' array shapes by argument index: softmax_masked (x, mask, rowmap,
    out, log, scale), logsumexp_masked (x, mask, rowmap, out, sign, scale),
    softmax_backward_masked (grad, y, mask, rowmap, out, log)."""
    def shapes():
        for outer, n in ((2, 3), (2, _SMALL_N + 5)):
            rows, row = (outer, n), (outer,)
            if kind == "softmax":
                yield {0: rows, 1: (1, n), 2: row, 3: rows, 5: row}, 1
            elif kind == "lse":
                yield {0: rows, 1: (1, n), 2: row, 3: row, 4: row, 5: row}, 1
            else:
                yield {0: rows, 1: rows, 2: (1, n), 3: row, 4: rows}, 1
    return shapes


_WARM = {"softmax": (softmax, _softmax_shapes, {5: 0.5}),
         "softmax_masked": (softmax_masked, _masked_shapes("softmax"), {}),
         "logsumexp_masked": (logsumexp_masked, _masked_shapes("lse"), {}),
         "softmax_backward_masked": (softmax_backward_masked, _masked_shapes("backward"), {}),
         "logsumexp": (logsumexp, _lse_shapes, {5: 0.5}),
         "cross_entropy": (cross_entropy, _ce_shapes, {4: -100, 5: 0.0, 6: 1.0, 10: 0.5})}
# the thread budget's position in each contract call (a temperature factor may follow it)
_NTHREADS_AT = {"softmax": 4, "logsumexp": 4, "cross_entropy": 9, "softmax_masked": 6,
                "logsumexp_masked": 6, "softmax_backward_masked": 6}


def _array_like(spec, shape, first):
    """A zero array of ``shape`` with the dtype and flags ``spec`` names (_dispatch.signature),
    or ``first`` itself where spec says the argument is the first one's buffer."""
    _, dtype, _, writeable, aligned, alias = spec
    if alias:
        return first
    dt = np.dtype(dtype)
    if aligned:
        a = np.zeros(shape, dt)
    else:
        nbytes = int(np.prod(shape)) * dt.itemsize
        a = np.frombuffer(bytearray(nbytes + 1), dt, offset=1).reshape(shape)
    if not writeable:
        a.flags.writeable = False
    return a


def warm(entry, spec):
    """Compile (or load from Numba's cache) every kernel the contract function ``entry`` runs for
    arguments of the signature ``spec`` (``fastsoftmax._dispatch.signature``: per argument None,
    an array's dtype and flags, a bool's or str's value, another value's type), by calling it on
    small zero arrays of those types in the shapes of each of its branches.  "auto" runs this in
    a background thread before it lets Numba take calls of that signature."""
    fn, shapes, scalars = _WARM[entry]
    for arrays, nt in shapes():
        args = []
        for i, s in enumerate(spec):
            if s is None:
                args.append(None)
            elif s[0] == "a":
                args.append(_array_like(s, arrays[i], args[0] if args else None))
            elif s[0] == "v":
                args.append(s[1])
            elif i == _NTHREADS_AT[entry]:  # the thread budget
                args.append(s[1](nt))
            else:
                args.append(s[1](scalars[i]))
        fn(*args)
