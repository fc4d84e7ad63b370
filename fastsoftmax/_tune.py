"""Which backend and method "auto" runs, per op, dtype and size class: the measured table.

``choose(op, dtype, shape3)`` returns ``(backend, method)`` or None; with None the dispatcher uses
its default order (``_dispatch.AUTO_ORDER``) and the backend's own "auto" method.  It is called on
every API call, so it only computes a key and looks it up in a dict loaded once.

Where the table comes from, first match wins:

1. the per-user file written by ``fastsoftmax tune`` (``$FASTSOFTMAX_TUNE_FILE``, else
   ``$XDG_CACHE_HOME/fastsoftmax/tune.json``, else ``~/.cache/fastsoftmax/tune.json``), when it was
   measured by this fastsoftmax version, on this CPU, with the same compiled backends available;
   a stale or unreadable file is ignored with one warning;
2. ``BUILTIN``, measured on the development machine (see docs/benchmarks.md).

Size classes (``size_class``): the row length ``n`` (<=32, <=1K, <=16K, <=256K, larger), the number
of rows ``outer*inner`` (1, 2-64, more) and the layout ("last" when ``inner == 1``, else
"strided").  Keys also carry the thread budget class ("t1" or "tN"): one thread and several
threads can have different winners.  A key is the string ``"op|dtype|class|threads"``, e.g.
``"softmax|float32|n<=1K,rows>64,last|t1"``.
"""
from __future__ import annotations

import json
import os
import platform
import warnings

from . import _dispatch

SCHEMA = "fastsoftmax-tune/1"
OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy")
METHOD_OPS = ("softmax", "log_softmax")  # the ops whose kernels take a method
METHODS = ("three_pass", "online")
DTYPES = ("float32", "float64")

# (upper bound inclusive, label); None = no bound
N_CLASSES = ((32, "n<=32"), (1024, "n<=1K"), (16384, "n<=16K"), (262144, "n<=256K"),
             (None, "n>256K"))
ROW_CLASSES = ((1, "rows=1"), (64, "rows<=64"), (None, "rows>64"))
LAYOUTS = ("last", "strided")
# a representative row length per n class, used by `fastsoftmax tune`
N_REPRESENTATIVE = {"n<=32": 10, "n<=1K": 500, "n<=16K": 4096, "n<=256K": 32768,
                    "n>256K": 300_000}  # x 65 rows = 19.5M elements at most

# Choices measured on the development machine (AMD EPYC Zen 4, 2 cores, AVX-512; fastsoftmax
# 0.1.0, numba 0.68.1, 2026-11-24) with `fastsoftmax tune --threads 1,2`, then `--emit-builtin`:
# key -> "backend/method": the classes where the default (cython/auto) lost by >= MIN_GAIN, and
# the default where the same class at the other thread class departs from it.
# Used when no valid per-user file exists (and for the classes that file does not name).
BUILTIN: dict[str, str] = {
    'cross_entropy|float32|n<=16K,rows>64,last|t1': 'numba/auto',
    'cross_entropy|float32|n<=16K,rows>64,last|tN': 'cython/auto',
    'cross_entropy|float32|n<=1K,rows>64,last|t1': 'numba/auto',
    'cross_entropy|float32|n<=1K,rows>64,last|tN': 'cython/auto',
    'cross_entropy|float32|n<=256K,rows<=64,last|t1': 'numba/auto',
    'cross_entropy|float32|n<=256K,rows<=64,last|tN': 'cython/auto',
    'cross_entropy|float32|n<=256K,rows>64,last|t1': 'numba/auto',
    'cross_entropy|float32|n<=256K,rows>64,last|tN': 'cython/auto',
    'cross_entropy|float32|n>256K,rows<=64,last|t1': 'numba/auto',
    'cross_entropy|float32|n>256K,rows<=64,last|tN': 'cython/auto',
    'cross_entropy|float32|n>256K,rows=1,last|t1': 'numba/auto',
    'cross_entropy|float32|n>256K,rows=1,last|tN': 'numba/auto',
    'cross_entropy|float32|n>256K,rows>64,last|t1': 'numba/auto',
    'cross_entropy|float32|n>256K,rows>64,last|tN': 'numba/auto',
    'log_softmax|float32|n<=16K,rows>64,last|t1': 'numba/three_pass',
    'log_softmax|float32|n<=16K,rows>64,last|tN': 'cython/auto',
    'log_softmax|float32|n<=16K,rows>64,strided|t1': 'cython/online',
    'log_softmax|float32|n<=16K,rows>64,strided|tN': 'cython/auto',
    'log_softmax|float32|n<=1K,rows>64,last|t1': 'numba/auto',
    'log_softmax|float32|n<=1K,rows>64,last|tN': 'cython/auto',
    'log_softmax|float32|n<=256K,rows<=64,last|t1': 'numba/three_pass',
    'log_softmax|float32|n<=256K,rows<=64,last|tN': 'cython/auto',
    'log_softmax|float32|n<=256K,rows>64,last|t1': 'numba/three_pass',
    'log_softmax|float32|n<=256K,rows>64,last|tN': 'cython/auto',
    'log_softmax|float32|n<=256K,rows>64,strided|t1': 'cython/online',
    'log_softmax|float32|n<=256K,rows>64,strided|tN': 'cython/online',
    'log_softmax|float32|n<=32,rows=1,last|t1': 'cython/auto',
    'log_softmax|float32|n<=32,rows=1,last|tN': 'cython/online',
    'log_softmax|float32|n>256K,rows<=64,last|t1': 'numba/three_pass',
    'log_softmax|float32|n>256K,rows<=64,last|tN': 'cython/three_pass',
    'log_softmax|float32|n>256K,rows=1,last|t1': 'numba/auto',
    'log_softmax|float32|n>256K,rows=1,last|tN': 'numba/three_pass',
    'log_softmax|float32|n>256K,rows>64,last|t1': 'numba/three_pass',
    'log_softmax|float32|n>256K,rows>64,last|tN': 'numba/three_pass',
    'log_softmax|float64|n<=16K,rows<=64,last|t1': 'cython/auto',
    'log_softmax|float64|n<=16K,rows<=64,last|tN': 'numba/auto',
    'log_softmax|float64|n<=16K,rows>64,last|t1': 'numba/three_pass',
    'log_softmax|float64|n<=16K,rows>64,last|tN': 'cython/auto',
    'log_softmax|float64|n<=16K,rows>64,strided|t1': 'numba/auto',
    'log_softmax|float64|n<=16K,rows>64,strided|tN': 'cython/auto',
    'log_softmax|float64|n<=1K,rows>64,last|t1': 'numba/auto',
    'log_softmax|float64|n<=1K,rows>64,last|tN': 'cython/auto',
    'log_softmax|float64|n<=1K,rows>64,strided|t1': 'cython/auto',
    'log_softmax|float64|n<=1K,rows>64,strided|tN': 'numba/online',
    'log_softmax|float64|n<=256K,rows<=64,last|t1': 'numba/auto',
    'log_softmax|float64|n<=256K,rows<=64,last|tN': 'cython/auto',
    'log_softmax|float64|n<=256K,rows=1,last|t1': 'cython/auto',
    'log_softmax|float64|n<=256K,rows=1,last|tN': 'cython/three_pass',
    'log_softmax|float64|n<=256K,rows>64,last|t1': 'numba/auto',
    'log_softmax|float64|n<=256K,rows>64,last|tN': 'cython/three_pass',
    'log_softmax|float64|n<=256K,rows>64,strided|t1': 'numba/three_pass',
    'log_softmax|float64|n<=256K,rows>64,strided|tN': 'cython/online',
    'log_softmax|float64|n<=32,rows>64,strided|t1': 'cython/auto',
    'log_softmax|float64|n<=32,rows>64,strided|tN': 'cython/online',
    'log_softmax|float64|n>256K,rows<=64,last|t1': 'numba/three_pass',
    'log_softmax|float64|n>256K,rows<=64,last|tN': 'cython/three_pass',
    'log_softmax|float64|n>256K,rows<=64,strided|t1': 'numba/auto',
    'log_softmax|float64|n>256K,rows<=64,strided|tN': 'numba/three_pass',
    'log_softmax|float64|n>256K,rows=1,last|t1': 'numba/three_pass',
    'log_softmax|float64|n>256K,rows=1,last|tN': 'numba/auto',
    'log_softmax|float64|n>256K,rows>64,last|t1': 'numba/auto',
    'log_softmax|float64|n>256K,rows>64,last|tN': 'numba/three_pass',
    'log_softmax|float64|n>256K,rows>64,strided|t1': 'numba/auto',
    'log_softmax|float64|n>256K,rows>64,strided|tN': 'cython/auto',
    'logsumexp|float32|n<=16K,rows<=64,last|t1': 'numba/auto',
    'logsumexp|float32|n<=16K,rows<=64,last|tN': 'numba/auto',
    'logsumexp|float32|n<=16K,rows>64,last|t1': 'numba/auto',
    'logsumexp|float32|n<=16K,rows>64,last|tN': 'cython/auto',
    'logsumexp|float32|n<=1K,rows>64,last|t1': 'numba/auto',
    'logsumexp|float32|n<=1K,rows>64,last|tN': 'cython/auto',
    'logsumexp|float32|n<=256K,rows<=64,last|t1': 'numba/auto',
    'logsumexp|float32|n<=256K,rows<=64,last|tN': 'cython/auto',
    'logsumexp|float32|n<=256K,rows=1,last|t1': 'numba/auto',
    'logsumexp|float32|n<=256K,rows=1,last|tN': 'cython/auto',
    'logsumexp|float32|n<=256K,rows>64,last|t1': 'numba/auto',
    'logsumexp|float32|n<=256K,rows>64,last|tN': 'numba/auto',
    'logsumexp|float32|n<=32,rows>64,last|t1': 'cython/auto',
    'logsumexp|float32|n<=32,rows>64,last|tN': 'numba/auto',
    'logsumexp|float32|n>256K,rows<=64,last|t1': 'numba/auto',
    'logsumexp|float32|n>256K,rows<=64,last|tN': 'numba/auto',
    'logsumexp|float32|n>256K,rows<=64,strided|t1': 'numba/auto',
    'logsumexp|float32|n>256K,rows<=64,strided|tN': 'cython/auto',
    'logsumexp|float32|n>256K,rows=1,last|t1': 'numba/auto',
    'logsumexp|float32|n>256K,rows=1,last|tN': 'numba/auto',
    'logsumexp|float32|n>256K,rows>64,last|t1': 'numba/auto',
    'logsumexp|float32|n>256K,rows>64,last|tN': 'numba/auto',
    'logsumexp|float64|n<=16K,rows<=64,last|t1': 'numba/auto',
    'logsumexp|float64|n<=16K,rows<=64,last|tN': 'numba/auto',
    'logsumexp|float64|n<=16K,rows>64,last|t1': 'numba/auto',
    'logsumexp|float64|n<=16K,rows>64,last|tN': 'cython/auto',
    'logsumexp|float64|n<=16K,rows>64,strided|t1': 'cython/auto',
    'logsumexp|float64|n<=16K,rows>64,strided|tN': 'numba/auto',
    'logsumexp|float64|n<=1K,rows>64,last|t1': 'numba/auto',
    'logsumexp|float64|n<=1K,rows>64,last|tN': 'cython/auto',
    'logsumexp|float64|n<=1K,rows>64,strided|t1': 'numba/auto',
    'logsumexp|float64|n<=1K,rows>64,strided|tN': 'cython/auto',
    'logsumexp|float64|n<=256K,rows<=64,last|t1': 'numba/auto',
    'logsumexp|float64|n<=256K,rows<=64,last|tN': 'cython/auto',
    'logsumexp|float64|n<=256K,rows<=64,strided|t1': 'numba/auto',
    'logsumexp|float64|n<=256K,rows<=64,strided|tN': 'cython/auto',
    'logsumexp|float64|n<=256K,rows>64,last|t1': 'numba/auto',
    'logsumexp|float64|n<=256K,rows>64,last|tN': 'cython/auto',
    'logsumexp|float64|n<=256K,rows>64,strided|t1': 'numba/auto',
    'logsumexp|float64|n<=256K,rows>64,strided|tN': 'numba/auto',
    'logsumexp|float64|n<=32,rows>64,last|t1': 'numba/auto',
    'logsumexp|float64|n<=32,rows>64,last|tN': 'cython/auto',
    'logsumexp|float64|n>256K,rows<=64,strided|t1': 'numba/auto',
    'logsumexp|float64|n>256K,rows<=64,strided|tN': 'numba/auto',
    'logsumexp|float64|n>256K,rows=1,last|t1': 'numba/auto',
    'logsumexp|float64|n>256K,rows=1,last|tN': 'numba/auto',
    'logsumexp|float64|n>256K,rows>64,last|t1': 'numba/auto',
    'logsumexp|float64|n>256K,rows>64,last|tN': 'numba/auto',
    'logsumexp|float64|n>256K,rows>64,strided|t1': 'numba/auto',
    'logsumexp|float64|n>256K,rows>64,strided|tN': 'numba/auto',
    'softmax|float32|n<=16K,rows>64,last|t1': 'numba/three_pass',
    'softmax|float32|n<=16K,rows>64,last|tN': 'cython/auto',
    'softmax|float32|n<=16K,rows>64,strided|t1': 'cython/three_pass',
    'softmax|float32|n<=16K,rows>64,strided|tN': 'cython/online',
    'softmax|float32|n<=1K,rows>64,last|t1': 'numba/auto',
    'softmax|float32|n<=1K,rows>64,last|tN': 'cython/three_pass',
    'softmax|float32|n<=1K,rows>64,strided|t1': 'cython/three_pass',
    'softmax|float32|n<=1K,rows>64,strided|tN': 'cython/auto',
    'softmax|float32|n<=256K,rows<=64,last|t1': 'numba/auto',
    'softmax|float32|n<=256K,rows<=64,last|tN': 'cython/auto',
    'softmax|float32|n<=256K,rows>64,last|t1': 'numba/three_pass',
    'softmax|float32|n<=256K,rows>64,last|tN': 'cython/three_pass',
    'softmax|float32|n<=256K,rows>64,strided|t1': 'cython/online',
    'softmax|float32|n<=256K,rows>64,strided|tN': 'cython/online',
    'softmax|float32|n>256K,rows<=64,last|t1': 'numba/three_pass',
    'softmax|float32|n>256K,rows<=64,last|tN': 'cython/auto',
    'softmax|float32|n>256K,rows=1,last|t1': 'numba/three_pass',
    'softmax|float32|n>256K,rows=1,last|tN': 'numba/online',
    'softmax|float32|n>256K,rows>64,last|t1': 'numba/online',
    'softmax|float32|n>256K,rows>64,last|tN': 'numba/three_pass',
    'softmax|float64|n<=16K,rows>64,strided|t1': 'numba/three_pass',
    'softmax|float64|n<=16K,rows>64,strided|tN': 'cython/auto',
    'softmax|float64|n<=1K,rows>64,last|t1': 'numba/three_pass',
    'softmax|float64|n<=1K,rows>64,last|tN': 'cython/auto',
    'softmax|float64|n<=1K,rows>64,strided|t1': 'numba/online',
    'softmax|float64|n<=1K,rows>64,strided|tN': 'cython/auto',
    'softmax|float64|n<=256K,rows<=64,last|t1': 'numba/three_pass',
    'softmax|float64|n<=256K,rows<=64,last|tN': 'cython/auto',
    'softmax|float64|n<=256K,rows>64,last|t1': 'numba/auto',
    'softmax|float64|n<=256K,rows>64,last|tN': 'cython/three_pass',
    'softmax|float64|n<=256K,rows>64,strided|t1': 'numba/online',
    'softmax|float64|n<=256K,rows>64,strided|tN': 'numba/auto',
    'softmax|float64|n<=32,rows>64,strided|t1': 'numba/three_pass',
    'softmax|float64|n<=32,rows>64,strided|tN': 'cython/online',
    'softmax|float64|n>256K,rows<=64,last|t1': 'numba/three_pass',
    'softmax|float64|n>256K,rows<=64,last|tN': 'cython/auto',
    'softmax|float64|n>256K,rows=1,last|t1': 'numba/auto',
    'softmax|float64|n>256K,rows=1,last|tN': 'numba/three_pass',
    'softmax|float64|n>256K,rows>64,last|t1': 'numba/auto',
    'softmax|float64|n>256K,rows>64,last|tN': 'numba/three_pass',
    'softmax|float64|n>256K,rows>64,strided|t1': 'numba/online',
    'softmax|float64|n>256K,rows>64,strided|tN': 'cython/auto',
}

_DTYPE_NAMES = {"f": "float32", "d": "float64"}


def _n_class(n: int) -> str:
    for bound, label in N_CLASSES:
        if bound is None or n <= bound:
            return label
    raise AssertionError("unreachable")


def _rows_class(rows: int) -> str:
    for bound, label in ROW_CLASSES:
        if bound is None or rows <= bound:
            return label
    raise AssertionError("unreachable")


def size_class(shape3) -> str:
    """The size class of a canonical ``(outer, n, inner)`` shape, e.g. ``"n<=1K,rows>64,last"``."""
    outer, n, inner = shape3
    lay = "last" if inner == 1 else "strided"
    return f"{_n_class(n)},{_rows_class(outer * inner)},{lay}"


def thread_class(nthreads: int) -> str:
    return "t1" if nthreads <= 1 else "tN"


def make_key(op: str, dtype_name: str, cls: str, tcls: str) -> str:
    return f"{op}|{dtype_name}|{cls}|{tcls}"


def all_classes(op: str) -> list[str]:
    """The size classes that exist for ``op`` (cross_entropy is always "last"; rows=1 is never
    strided)."""
    out = []
    for _, nl in N_CLASSES:
        for _, rl in ROW_CLASSES:
            for lay in LAYOUTS:
                if lay == "strided" and (op == "cross_entropy" or rl == "rows=1"):
                    continue
                out.append(f"{nl},{rl},{lay}")
    return out


def representative_shape(cls: str, max_elements: int = 1 << 21) -> tuple[int, int, int]:
    """A canonical ``(outer, n, inner)`` shape inside class ``cls`` for measuring it."""
    nl, rl, lay = cls.split(",")
    n = N_REPRESENTATIVE[nl]
    if rl == "rows=1":
        rows = 1
    elif rl == "rows<=64":
        rows = 16
    else:
        rows = max(65, max_elements // n)
    if lay == "last":
        return (rows, n, 1)
    inner = min(rows, 256)
    outer = max(1, -(-rows // inner))
    while outer * inner <= 64 and rl == "rows>64":  # stay in the class
        outer += 1
    return (outer, n, inner)


# ------------------------------------------------------------------------------ the file
def tune_path() -> str:
    """Where ``fastsoftmax tune`` stores its table for this user."""
    env = os.environ.get("FASTSOFTMAX_TUNE_FILE")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastsoftmax", "tune.json")


_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq",
              "avx512_bf16", "avx512_fp16", "amx_tile", "neon", "asimd", "sve")
_cpu_cache: dict | None = None


def cpu_summary() -> dict:
    """{"model": str, "flags": [SIMD flags of interest], "id": "model|flags"} of this CPU."""
    global _cpu_cache
    if _cpu_cache is not None:
        return _cpu_cache
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and val.strip():
                    model = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(val.split())
                if flags and key == "" and model:  # end of the first processor block
                    break
    except OSError:
        pass
    picked = [f for f in _CPU_FLAGS if f in flags]
    _cpu_cache = {"model": model, "flags": picked, "machine": platform.machine(),
                  "id": f"{model}|{platform.machine()}|{','.join(picked)}"}
    return _cpu_cache


def fingerprint() -> dict:
    """What a tuning file must match to be used: fastsoftmax version, CPU, compiled backends."""
    from . import __version__

    return {
        "fastsoftmax": __version__,
        "cpu": cpu_summary()["id"],
        "backends": sorted(b for b in _dispatch.available_backends() if b != "numpy"),
    }


def _stale_reason(doc, fp: dict) -> str | None:
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return f"it is not a {SCHEMA} file"
    got = doc.get("fingerprint")
    if not isinstance(got, dict):
        return "it has no fingerprint"
    if got.get("fastsoftmax") != fp["fastsoftmax"]:
        return (f"it was measured with fastsoftmax {got.get('fastsoftmax')} "
                f"(this is {fp['fastsoftmax']})")
    if got.get("cpu") != fp["cpu"]:
        return f"it was measured on another CPU ({got.get('cpu')!r})"
    if got.get("backends") != fp["backends"]:
        return (f"it was measured with the backends {got.get('backends')} "
                f"(available now: {fp['backends']})")
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        return "it has no entries"
    return None


def _parse_entries(entries: dict) -> dict[str, tuple[str, str]]:
    table = {}
    for key, ent in entries.items():
        if not isinstance(ent, dict):
            raise ValueError(f"entry {key!r} is not an object")
        b, m = ent.get("backend"), ent.get("method")
        if b not in _dispatch.BACKENDS or m not in ("auto",) + METHODS or key.count("|") != 3:
            raise ValueError(f"entry {key!r} names backend {b!r}, method {m!r}")
        table[key] = (b, m)
    return table


def read_file(path: str) -> tuple[dict | None, str | None]:
    """(document, None) for a usable file at ``path``, else (document or None, why not).

    A missing file gives (None, None).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"it cannot be read as JSON ({exc})"
    why = _stale_reason(doc, fingerprint())
    if why is None:
        try:
            _parse_entries(doc["entries"])
        except ValueError as exc:
            why = f"it is corrupt ({exc})"
    return doc, why


def builtin_from_entries(entries: dict) -> dict[str, str]:
    """The ``BUILTIN`` literal from a tuning file's entries: the classes whose choice differs
    from the default, and the default itself where the same class at the other thread class
    departs from it (without that entry the lookup would fall back to the other thread class's
    choice)."""
    choice = {k: f"{e['backend']}/{e['method']}" for k, e in entries.items()}
    departs = {k for k, e in entries.items() if choice[k] != e.get("default")}
    out = {}
    for key in sorted(entries):
        base, tcls = key.rsplit("|", 1)
        other = base + ("|tN" if tcls == "t1" else "|t1")
        if key in departs or other in departs:
            out[key] = choice[key]
    return out


def builtin_table() -> dict[str, tuple[str, str]]:
    return {k: tuple(v.split("/", 1)) for k, v in BUILTIN.items()}


# ----------------------------------------------------------------------- the cached table
# The table is loaded once per process, on the first ``choose``: the environment variables and the
# file are read then (``invalidate()`` makes the next call read them again; ``fastsoftmax tune``
# calls it after writing).  Reading os.environ on every call would cost more than the lookup.
_table: list[dict[str, tuple[str, str]]] | None = None
_memo: dict = {}
_source = "builtin"
_warned: set[str] = set()


def _load() -> None:
    global _table, _source
    tables = []
    source = "builtin"
    path = tune_path()
    doc, why = read_file(path)
    if why is not None:
        msg = (f"fastsoftmax: ignoring the tuning file {path}: {why}; "
               "run `fastsoftmax tune` to measure again or `fastsoftmax tune --reset` to remove it")
        if msg not in _warned:
            _warned.add(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=5)
    elif doc is not None:
        tables.append(_parse_entries(doc["entries"]))
        source = path
    tables.append(builtin_table())
    _memo.clear()
    _source = source
    _table = [t for t in tables if t]  # the file first, then the built-in table


def invalidate() -> None:
    """Forget the loaded table (and the warnings given), so the next ``choose`` reads the
    environment and the file again."""
    global _table
    _table = None
    _memo.clear()
    _warned.clear()


def source() -> str:
    """Where the table in force comes from: a file path or "builtin"."""
    if _table is None:
        _load()
    return _source


def _lookup(op: str, dname: str, shape3, tcls: str):
    """The file's entry for this class (its thread class first, then the other), else the
    built-in table's, else None."""
    base = f"{op}|{dname}|{size_class(shape3)}|"
    other = "tN" if tcls == "t1" else "t1"
    for table in _table:
        hit = table.get(base + tcls)
        if hit is None:
            hit = table.get(base + other)
        if hit is not None:
            return hit
    return None


def choose(op: str, dtype, shape3) -> tuple[str, str] | None:
    """(backend, method) measured best for ``op`` on ``dtype`` arrays of canonical ``shape3``, or
    None when the table has no entry for it."""
    if _table is None:
        _load()
    if not _table:
        return None
    tcls = "t1" if _dispatch.get_num_threads() <= 1 else "tN"
    key = (op, getattr(dtype, "char", None), shape3, tcls)
    try:
        return _memo[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable shape3 (a list)
        key = (op, key[1], tuple(shape3), tcls)
    dname = _DTYPE_NAMES.get(key[1])
    hit = None if dname is None else _lookup(op, dname, shape3, tcls)
    if len(_memo) > 4096:
        _memo.clear()
    _memo[key] = hit
    return hit


def write_file(path: str, entries: dict, meta: dict) -> None:
    """Write a tuning document atomically (``entries``: key -> {"backend", "method", ...})."""
    doc = {"schema": SCHEMA, "fingerprint": fingerprint(), **meta, "entries": entries}
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    invalidate()


def reset_file(path: str) -> bool:
    """Remove the tuning file; True if there was one."""
    try:
        os.remove(path)
    except FileNotFoundError:
        invalidate()
        return False
    invalidate()
    return True


# ------------------------------------------------------------------ measuring (fastsoftmax tune)
def plan(*, ops=None, dtypes=None, threads=None, quick=False) -> list[dict]:
    """The measurements of a tuning run: one per op x dtype x size class x thread budget.

    ``quick`` (the tests): two small classes per op and tiny arrays.
    """
    get_num_threads = _dispatch.get_num_threads
    ops = list(ops or OPS)
    dtypes = list(dtypes or DTYPES)
    threads = list(threads or [get_num_threads()])
    items = []
    for t in threads:
        for op in ops:
            classes = all_classes(op)
            if quick:
                classes = [c for c in classes if c.startswith(("n<=32,rows>64", "n<=1K,rows=1,"))]
            for dt in dtypes:
                for cls in classes:
                    shape3 = representative_shape(cls, max_elements=1 << 12 if quick else 1 << 21)
                    if quick:
                        n = shape3[1] if shape3[1] <= 64 else 200
                        shape3 = (shape3[0], n, shape3[2])
                    items.append({"op": op, "dtype": dt, "class": cls, "threads": int(t),
                                  "shape3": shape3,
                                  "key": make_key(op, dt, cls, thread_class(int(t)))})
    return items


MIN_GAIN = 1.05  # a winner must beat the default choice by this much to replace it


def _candidates(op: str) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """(every (backend, method) to measure, the default choice among them): the default is what
    "auto" runs without a table, the first available backend of AUTO_ORDER with its own method
    choice ("auto").  softmax / log_softmax: each backend with "auto", "three_pass", "online"."""
    backends = [b for b in _dispatch.available_backends() if b != "numpy"]
    if not backends:
        raise RuntimeError("no compiled backend is available here (see `fastsoftmax info`): "
                           "there is nothing to tune")
    default = (backends[0], "auto")
    if op not in METHOD_OPS:
        return [(b, "auto") for b in backends], default
    # a backend's own "auto" may run a kernel no explicit method reaches (small rows)
    return [(b, m) for b in backends for m in ("auto",) + METHODS], default


def _call(op: str, shape3, dtype, backend: str, method: str):
    """A function running ``op`` once through the public API on an array of canonical shape3."""
    import numpy as np

    import fastsoftmax as fs

    rng = np.random.default_rng(0)
    outer, n, inner = shape3
    x = (rng.standard_normal((outer, n, inner)) * 2).astype(dtype)
    if op in METHOD_OPS:
        f = fs.softmax if op == "softmax" else fs.log_softmax
        out = np.empty_like(x)
        return lambda: f(x, axis=1, out=out, backend=backend, method=method)
    if op == "logsumexp":
        return lambda: fs.logsumexp(x, axis=1, backend=backend)
    x2 = x.reshape(outer, n)  # cross_entropy: inner == 1
    t = rng.integers(0, n, outer)
    grad = np.empty_like(x2)
    return lambda: fs.cross_entropy(x2, t, grad_out=grad, backend=backend)


def measure(items: list[dict], *, budget_s: float = 0.08, progress=None) -> dict:
    """Measure every candidate (backend, method) of each planned item round-robin.

    Returns the file's ``entries``: key -> {"backend", "method": the choice; "fastest": the
    fastest candidate; "default": what "auto" runs without a table; "gain": median paired ratio
    t_default / t_fastest; "times_s": candidate -> median seconds per call; "shape", "threads"}.
    The choice is the fastest candidate when its gain is at least ``MIN_GAIN``, else the default
    (a few percent is within the noise of a shared machine).
    """
    from . import _bench

    old = _dispatch.get_num_threads()
    entries = {}
    try:
        for it in items:
            if progress is not None:
                progress(f"{it['op']} {it['dtype']} {it['class']} t{it['threads']}")
            _dispatch.set_num_threads(it["threads"])
            cands, default = _candidates(it["op"])
            fns = {f"{b}/{m}": _call(it["op"], it["shape3"], it["dtype"], b, m)
                   for b, m in cands}
            tim, speed = _bench.measure(fns, budget_s=budget_s, sample_s=0.004, min_reps=5,
                                        max_reps=25)
            order = sorted(fns, key=lambda k: tim[k].median)
            dflt = "/".join(default)
            best = order[0]
            gain = speed[(best, dflt)] if best != dflt else 1.0
            if gain < MIN_GAIN:  # within the noise of the default: keep the default
                best = dflt
            b, m = best.split("/")
            ent = {"backend": b, "method": m, "shape": list(it["shape3"]),
                   "threads": it["threads"], "default": dflt, "fastest": order[0],
                   "gain": speed[(order[0], dflt)] if order[0] != dflt else 1.0,
                   "times_s": {k: tim[k].median for k in order}}
            entries[it["key"]] = ent
    finally:
        _dispatch.set_num_threads(old)
    return entries
