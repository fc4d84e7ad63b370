"""Which backend and method "auto" runs: size classes, structured keys and the lookup.

This module is the bottom layer of dispatch: it imports nothing from the package.  The tables it
looks up are built by ``_tables`` (the built-in data file and the per-user file written by
``fastsoftmax tune``) and handed to a :class:`Policy`; the dispatcher asks it ``choose(...)`` on
every call with backend "auto", so a choice is memoized per (op, dtype, shape, thread class).

Size-class schemes (an op's registry row names its scheme):

* ``"rows"``: reductions over one axis of a canonical ``(outer, n, inner)`` array.  A class is the
  row length ``n`` (<=32, <=1K, <=16K, <=256K, larger), the number of rows ``outer*inner`` (1,
  2-64, more) and the layout ("last" when ``inner == 1``, else "strided"; one row is never
  strided).
* ``"rows_last"``: the same, always "last" (cross-entropy brings its class axis last).

A key is ``Key(op, dtype, SizeClass(n, rows, layout), threads)``, threads being "t1" (a budget of
one thread) or "tN"; it is written to JSON as an object with those fields, never as a string.
"""
from __future__ import annotations

from typing import NamedTuple

BACKENDS = ("numba", "cython", "numpy")   # the names a table may choose
THREAD_CLASSES = ("t1", "tN")
DTYPES = ("float32", "float64")
# (upper bound inclusive, label); None = no bound
N_CLASSES = ((32, "<=32"), (1024, "<=1K"), (16384, "<=16K"), (262144, "<=256K"), (None, ">256K"))
ROW_CLASSES = ((1, "1"), (64, "<=64"), (None, ">64"))
# a representative row length per n class, used by `fastsoftmax tune`
N_REPRESENTATIVE = {"<=32": 10, "<=1K": 500, "<=16K": 4096, "<=256K": 32768, ">256K": 300_000}
SCHEMES = {"rows": ("last", "strided"), "rows_last": ("last",)}
_DTYPE_CHARS = {"f": "float32", "d": "float64"}


class SizeClass(NamedTuple):
    n: str        # row length class, e.g. "<=1K"
    rows: str     # number of rows class: "1", "<=64", ">64"
    layout: str   # "last" | "strided"

    def __str__(self) -> str:
        return f"n{self.n},rows{'=' if self.rows == '1' else ''}{self.rows},{self.layout}"


class Key(NamedTuple):
    op: str
    dtype: str         # "float32" | "float64"
    size: SizeClass
    threads: str       # "t1" | "tN"

    def __str__(self) -> str:
        return f"{self.op} {self.dtype} {self.size} {self.threads}"


class Choice(NamedTuple):
    backend: str
    method: str

    def __str__(self) -> str:
        return f"{self.backend}/{self.method}"


def _bucket(value: int, bounds) -> str:
    for bound, label in bounds:
        if bound is None or value <= bound:
            return label
    raise AssertionError("unreachable")


def size_class(scheme: str, shape3) -> SizeClass:
    """The size class of a canonical ``(outer, n, inner)`` shape under ``scheme``."""
    outer, n, inner = shape3
    layout = "last" if inner == 1 or scheme == "rows_last" else "strided"
    return SizeClass(_bucket(n, N_CLASSES), _bucket(outer * inner, ROW_CLASSES), layout)


def thread_class(nthreads: int) -> str:
    return "t1" if nthreads <= 1 else "tN"


def all_classes(scheme: str) -> list[SizeClass]:
    """Every size class of ``scheme`` (one row is never strided)."""
    return [SizeClass(nl, rl, lay) for _, nl in N_CLASSES for _, rl in ROW_CLASSES
            for lay in SCHEMES[scheme] if not (lay == "strided" and rl == "1")]


def representative_shape(cls: SizeClass, max_elements: int = 1 << 21) -> tuple[int, int, int]:
    """A canonical ``(outer, n, inner)`` shape inside ``cls``, for measuring it."""
    n = N_REPRESENTATIVE[cls.n]
    rows = {"1": 1, "<=64": 16}.get(cls.rows) or max(65, max_elements // n)
    if cls.layout == "last":
        return (rows, n, 1)
    inner = min(rows, 256)
    outer = max(1, -(-rows // inner))
    while outer * inner <= 64 and cls.rows == ">64":  # stay in the class
        outer += 1
    return (outer, n, inner)


class Policy:
    """Lookup over tables of ``Key -> Choice``, the first table naming a class winning.

    Within a table, the key of the caller's thread class is tried first, then the other thread
    class's (a table measured with one thread still says something about two).
    """

    def __init__(self, tables, source: str = "builtin"):
        self.tables = [t for t in tables if t]
        self.source = source
        self._memo: dict = {}

    def _lookup(self, key: Key) -> Choice | None:
        other = key._replace(threads="tN" if key.threads == "t1" else "t1")
        for table in self.tables:
            hit = table.get(key)
            if hit is None:
                hit = table.get(other)
            if hit is not None:
                return hit
        return None

    def choose_class(self, op: str, dtype: str, size: SizeClass, nthreads: int) -> Choice | None:
        """The measured (backend, method) for a whole size class (``dtype`` by name), or None:
        what ``choose`` answers for every shape of the class (the dispatcher's fast path
        asks it once per class)."""
        if not self.tables:
            return None
        return self._lookup(Key(op, dtype, size, thread_class(nthreads)))

    def choose(self, op: str, scheme: str, dtype, shape3, nthreads: int) -> Choice | None:
        """The measured (backend, method) for ``op`` on ``dtype`` arrays of canonical ``shape3``,
        or None when no table names its class (or the dtype has no compiled kernel)."""
        memo_key = (op, getattr(dtype, "char", None), tuple(shape3), nthreads <= 1)
        try:
            return self._memo[memo_key]
        except KeyError:
            pass
        dname = _DTYPE_CHARS.get(memo_key[1])
        hit = None
        if dname is not None and self.tables:
            key = Key(op, dname, size_class(scheme, shape3), thread_class(nthreads))
            hit = self._lookup(key)
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[memo_key] = hit
        return hit
