"""Argument canonicalization: dtypes, axes, the ``(outer, n, inner)`` view and ``out=`` checks.

Everything here runs once per call, before any kernel, and never loops over data.  The kernels
(see docs/DESIGN.md) receive C-contiguous float32/float64 arrays reduced along axis 1 of a 3-D
view; this module builds that view, without a copy where the layout allows it.
"""
from __future__ import annotations

import operator
from math import prod
from typing import NamedTuple

import numpy as np

# dtypes the compiled kernels run natively; everything else is computed in one of these or by
# the NumPy reference
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
FLOAT16 = np.dtype(np.float16)


def as_array(x, name: str) -> np.ndarray:
    """``np.asarray`` that rejects what is not a number with a TypeError naming the argument."""
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be array-like of numbers: {exc}") from None
    if not arr.dtype.isnative:  # byte-swapped data: compute (and answer) in native order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind not in "biufc":
        raise TypeError(
            f"{name} must hold numbers (bool, integer, float or complex), "
            f"got an array of dtype {arr.dtype!s}"
        )
    return arr


def exp_result_dtype(dtype: np.dtype, func: str) -> np.dtype:
    """Result dtype of scipy's softmax/log_softmax, i.e. of ``np.exp(x - x.max())``."""
    if dtype.kind == "b":
        raise TypeError(
            f"{func} does not accept a boolean array (scipy.special raises here too: "
            "numpy cannot subtract booleans); convert it first, e.g. x.astype(np.float64)"
        )
    if dtype.kind in "iu":
        # what np.exp does with integers: the smallest float that holds the integer exactly-ish
        return np.dtype({1: np.float16, 2: np.float32}.get(dtype.itemsize, np.float64))
    return dtype


def lse_result_dtype(a: np.ndarray, b) -> np.dtype:
    """Result dtype of scipy's logsumexp (``xp_promote(a, b, force_floating=True)``)."""
    if b is None:
        return a.dtype if a.dtype.kind in "fc" else np.dtype(np.float64)
    bd = b.dtype
    if a.dtype.kind in "fc" and bd.kind in "fc":
        return np.result_type(a.dtype, bd)
    if a.dtype.kind in "fc":
        return a.dtype if bd.kind == "b" else np.result_type(a.dtype, bd)
    if bd.kind in "fc":
        return bd if a.dtype.kind == "b" else np.result_type(a.dtype, bd)
    return np.dtype(np.float64)


def compute_dtype(dtype: np.dtype) -> np.dtype | None:
    """The kernel dtype a result dtype is computed in, or None for the NumPy reference only."""
    if dtype in KERNEL_DTYPES:
        return dtype
    if dtype == FLOAT16:
        return np.dtype(np.float32)
    return None  # complex, longdouble


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, an int or a tuple of ints) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in items:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(
                f"axis must be None, an integer or a tuple of integers, got {axis!r}"
            ) from None
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate value in 'axis': {axis!r}")
    return tuple(sorted(out))


class Layout(NamedTuple):
    """How an nd array maps to the kernels' ``(outer, n, inner)`` view.

    ``perm`` orders the source axes so that ``x.transpose(perm)`` read in C order is the
    canonical array; ``copy`` says whether building it needs a copy.  (A NamedTuple: a frozen
    dataclass took 2-3 us per call to build, through object.__setattr__, and its methods
    compiled at import.)
    """

    shape: tuple[int, ...]
    axes: tuple[int, ...]
    perm: tuple[int, ...]
    outer: int
    n: int
    inner: int
    copy: bool

    @property
    def shape3(self) -> tuple[int, int, int]:
        return (self.outer, self.n, self.inner)

    @property
    def kept(self) -> tuple[int, ...]:
        """Axes not reduced, in the order the kernel's (outer, inner) output holds them."""
        return tuple(a for a in self.perm if a not in self.axes)

    @classmethod
    def reduce(cls, x: np.ndarray, axes: tuple[int, ...]) -> "Layout":
        """The ``(outer, n, inner)`` form of reducing ``x`` over ``axes``.

        Free (no copy) when the reduced axes are one block of consecutive axes of a C-contiguous
        array, or of an F-contiguous one (read through its transpose).  Otherwise the kept axes
        go first and the reduced axes last, and the data is copied once.
        """
        shape = x.shape
        nd = x.ndim
        n = prod(shape[a] for a in axes)
        block = not axes or axes == tuple(range(axes[0], axes[-1] + 1))
        if block and x.flags.c_contiguous:
            lo, hi = (axes[0], axes[-1] + 1) if axes else (nd, nd)
            return cls(shape, axes, tuple(range(nd)), prod(shape[:lo]), n, prod(shape[hi:]),
                       False)
        if block and axes and x.flags.f_contiguous and nd > 1:
            perm = tuple(reversed(range(nd)))
            rev = [nd - 1 - a for a in reversed(axes)]
            lo, hi = rev[0], rev[-1] + 1
            rshape = [shape[a] for a in perm]
            return cls(shape, axes, perm, prod(rshape[:lo]), n, prod(rshape[hi:]), False)
        return cls._moved_last(shape, axes)

    @classmethod
    def _moved_last(cls, shape, axes) -> "Layout":
        """The copying layout: kept axes first, reduced axes last, ``inner == 1``."""
        kept = tuple(a for a in range(len(shape)) if a not in axes)
        return cls(shape, axes, kept + axes, prod(shape[a] for a in kept),
                   prod(shape[a] for a in axes), 1, True)

    @classmethod
    def rows(cls, x: np.ndarray, axis: int) -> "Layout":
        """Rows of one class axis, the class axis last: ``(rows, C, 1)``.  Free for the last
        axis of a C-contiguous array (and the first of an F-contiguous one), else one copy."""
        lay = cls.reduce(x, (axis,))
        return lay if lay.inner == 1 else cls._moved_last(x.shape, (axis,))

    @classmethod
    def joint(cls, a: np.ndarray, b: np.ndarray, axes: tuple[int, ...]) -> "Layout":
        """One layout for two same-shaped inputs reduced together: free when both arrays
        have it, else the copying layout (each input copied once by ``to3``)."""
        if a.shape != b.shape:
            raise ValueError(f"the two inputs must have the same shape, got {a.shape} and "
                             f"{b.shape}")
        la = cls.reduce(a, axes)
        if la == cls.reduce(b, axes):
            return la
        return cls._moved_last(a.shape, axes)

    def to3(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The canonical C-contiguous 3-D array of ``x`` (a view when possible)."""
        t = x.transpose(self.perm)
        if self.copy or x.dtype != dtype or not t.flags.c_contiguous:
            t = np.ascontiguousarray(t, dtype=dtype)
        return t.reshape(self.shape3)

    def view3(self, arr: np.ndarray) -> np.ndarray | None:
        """A writable 3-D canonical view of an output array ``arr``, or None if it has none."""
        t = arr.transpose(self.perm)
        if not t.flags.c_contiguous:
            return None
        return t.reshape(self.shape3)

    def from3(self, arr3: np.ndarray) -> np.ndarray:
        """The source-shaped view of a canonical 3-D array (inverse of ``to3``)."""
        t = arr3.reshape([self.shape[a] for a in self.perm])
        return t.transpose(np.argsort(self.perm))

    def from2(self, arr2: np.ndarray, keepdims: bool) -> np.ndarray:
        """The source-ordered result of a reduction from the kernel's ``(outer, inner)`` output."""
        kept = self.kept
        t = arr2.reshape([self.shape[a] for a in kept]).transpose(np.argsort(kept))
        if keepdims:
            t = t.reshape([1 if a in self.axes else s for a, s in enumerate(self.shape)])
        return t


def check_out(out, shape: tuple[int, ...], dtype: np.dtype, name: str = "out") -> np.ndarray:
    """Validate a caller's output array: ndarray, exact shape and dtype, writeable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {out.dtype}, expected {dtype} (the result dtype for this input)"
        )
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array")
    return out
