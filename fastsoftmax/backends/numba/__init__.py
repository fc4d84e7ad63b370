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
``sampling.py``   candidate sampling (inverse CDF, unique rejection loop): ``sample_candidates``
================  ===========================================================================

Softmax's inner loop is ``rows.expstore1`` (exp(x - m) stored while summing), called by
``softmax.softmax_row``.  docs/numba_backend.md has the measurements behind each choice.

Adding an op: its maths in a module of its own, as ``hook``s handed to the factories of rows.py
(a row function, or a group finish for small rows), and its contract function here.
"""
from .ce import cross_entropy
from .explog import exp_apply as _exp_apply, log_apply as _log_apply
from .lse import logsumexp
from .rows import x_arg as _x_arg
from .softmax import softmax
from .backward import softmax_backward
from .sigmoid import binary_cross_entropy, sigmoid

__all__ = ["softmax", "logsumexp", "cross_entropy", "exp", "log",
           "softmax_backward", "sigmoid", "binary_cross_entropy"]
from .sampling import sample_candidates

__all__ += ["sample_candidates"]


def exp(x, out):
    """The elementwise exp of the kernels (``explog.fexp``); out may be x."""
    _exp_apply(_x_arg(x, out), out)


def log(x, out):
    """The elementwise log of the kernels (``explog.flog``); out may be x."""
    _log_apply(_x_arg(x, out), out)
