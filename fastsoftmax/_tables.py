"""Dispatch tables as data: reading, validating and writing them, and choosing which are in force.

A table is a JSON document (schema ``fastsoftmax-tune/2``, docs/DESIGN.md)::

    {"schema": "fastsoftmax-tune/2",
     "fingerprint": {"fastsoftmax": "0.1.0", "cpu": "<model>|<arch>|<flags>", "simd": "avx2",
                     "backends": ["cython", "numba"]},
     "entries": [{"op": "softmax", "dtype": "float32", "n": "<=1K", "rows": ">64",
                  "layout": "last", "threads": "t1", "backend": "numba", "method": "auto",
                  ...measurement details...}, ...]}

Two kinds exist, with one schema and one validation:

* the per-user file written by ``fastsoftmax tune`` (``$FASTSOFTMAX_TUNE_FILE``, else
  ``$XDG_CACHE_HOME/fastsoftmax/tune.json``, else ``~/.cache/fastsoftmax/tune.json``).  It is used
  only when its fingerprint is this machine's exactly (fastsoftmax version, CPU, compiled backends);
  a stale or unreadable file is ignored with one warning;
* the built-in tables shipped in ``fastsoftmax/data/tables/``, measured on the development
  machines.  One measured on this very CPU is used as is.  Failing that, one measured on a CPU of
  the same SIMD class (avx512, avx2, ...): which backend wins a size class depends mostly on the
  vector width both backends compile for, so a same-class table is the best estimate.  A CPU of
  another class gets no table at all, and "auto" runs the dispatcher's default order (the C
  kernels: compiled ahead of time with runtime ISA dispatch, so no JIT stall and no bet on how
  Numba's code compares on an unmeasured CPU).

The user file comes first, the built-in table second (for the classes the file does not name).
"""
from __future__ import annotations

import json
import os
import platform
import warnings

from . import _policy, _registry
from ._version import __version__

SCHEMA = "fastsoftmax-tune/2"
ENTRY_FIELDS = ("op", "dtype", "n", "rows", "layout", "threads", "backend", "method")


def tune_path() -> str:
    """Where ``fastsoftmax tune`` stores its table for this user."""
    env = os.environ.get("FASTSOFTMAX_TUNE_FILE")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastsoftmax", "tune.json")


# ------------------------------------------------------------------------------ this machine
_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq",
              "avx512_bf16", "avx512_fp16", "amx_tile", "neon", "asimd", "sve")
_cpu_cache: dict | None = None


def _simd_class(flags) -> str:
    f = set(flags)
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= f:
        return "avx512"
    if {"avx2", "fma"} <= f:
        return "avx2"
    if f & {"neon", "asimd"}:
        return "neon"
    return "baseline"


def cpu_summary() -> dict:
    """{"model", "flags": [SIMD flags of interest], "machine", "simd": class, "id"} of this CPU."""
    global _cpu_cache
    if _cpu_cache is not None:
        return _cpu_cache
    # /proc/cpuinfo's model name where there is one; platform.processor() runs `uname -p` in a
    # subprocess on Linux (tens of ms on the first "auto" call), so it is only the fallback
    model = ""
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
    if not model:
        model = platform.processor() or platform.machine()
    picked = [f for f in _CPU_FLAGS if f in flags]
    _cpu_cache = {"model": model, "flags": picked, "machine": platform.machine(),
                  "simd": _simd_class(picked),
                  "id": f"{model}|{platform.machine()}|{','.join(picked)}"}
    return _cpu_cache


def fingerprint(backends) -> dict:
    """What a per-user table must match to be used: fastsoftmax version, CPU, compiled backends
    (``backends``: the available ones; the reference is left out)."""
    cpu = cpu_summary()
    return {"fastsoftmax": __version__, "cpu": cpu["id"], "simd": cpu["simd"],
            "backends": sorted(b for b in backends if b != "numpy")}


# ------------------------------------------------------------------------------ validation
def parse_entry(ent) -> tuple[_policy.Key, _policy.Choice]:
    """The key and choice of one entry; ValueError saying what is wrong with it."""
    if not isinstance(ent, dict):
        raise ValueError(f"entry {ent!r} is not an object")
    missing = [f for f in ENTRY_FIELDS if f not in ent]
    if missing:
        raise ValueError(f"entry {ent!r} lacks {', '.join(missing)}")
    op = _registry.OPS.get(ent["op"]) if isinstance(ent["op"], str) else None
    if op is None:
        raise ValueError(f"entry names an unknown op {ent['op']!r}")
    size = _policy.SizeClass(ent["n"], ent["rows"], ent["layout"])
    if ent["dtype"] not in _policy.DTYPES or size not in _policy.all_classes(op.scheme) \
            or ent["threads"] not in _policy.THREAD_CLASSES:
        raise ValueError(f"entry {op.name} {ent['dtype']} {size} {ent['threads']!r} is not a "
                         "class that exists")
    if ent["backend"] not in _policy.BACKENDS or ent["method"] not in op.methods:
        raise ValueError(f"entry {op.name} {size} names backend {ent['backend']!r}, "
                         f"method {ent['method']!r}")
    key = _policy.Key(op.name, ent["dtype"], size, ent["threads"])
    return key, _policy.Choice(ent["backend"], ent["method"])


def parse(doc) -> dict:
    """``{Key: Choice}`` of a table document; ValueError saying why it is not one."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"it is not a {SCHEMA} file")
    fp = doc.get("fingerprint")
    if not isinstance(fp, dict) or not all(k in fp for k in ("fastsoftmax", "cpu", "backends")):
        raise ValueError("it has no fingerprint")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise ValueError("it has no entries")
    table = {}
    for ent in entries:
        key, choice = parse_entry(ent)
        if key in table:
            raise ValueError(f"it names {key} twice")
        table[key] = choice
    return table


def stale_reason(doc: dict, fp: dict) -> str | None:
    """Why a (valid) per-user table does not apply here, or None."""
    got = doc["fingerprint"]
    if got.get("fastsoftmax") != fp["fastsoftmax"]:
        return (f"it was measured with fastsoftmax {got.get('fastsoftmax')} "
                f"(this is {fp['fastsoftmax']})")
    if got.get("cpu") != fp["cpu"]:
        return f"it was measured on another CPU ({got.get('cpu')!r})"
    if got.get("backends") != fp["backends"]:
        return (f"it was measured with the backends {got.get('backends')} "
                f"(available now: {fp['backends']})")
    return None


def read_file(path: str, backends) -> tuple[dict | None, str | None]:
    """(document, None) for a usable per-user file at ``path``, else (document or None, why not).

    A missing file gives (None, None).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"it cannot be read as JSON ({exc})"
    try:
        parse(doc)
    except ValueError as exc:
        return (doc if isinstance(doc, dict) else None), str(exc)
    return doc, stale_reason(doc, fingerprint(backends))


def write_file(path: str, entries: list, meta: dict, backends) -> None:
    """Write a table document atomically; ``entries`` are validated first."""
    doc = {"schema": SCHEMA, "fingerprint": fingerprint(backends), **meta, "entries": entries}
    parse(doc)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(dumps(doc))
    os.replace(tmp, path)


def dumps(doc: dict) -> str:
    """A table document as JSON text, one entry per line (diffs of a re-measured table stay
    readable)."""
    head = {k: v for k, v in doc.items() if k != "entries"}
    text = json.dumps(head, indent=1, sort_keys=True)[:-2]
    lines = [json.dumps(e, sort_keys=True) for e in doc["entries"]]
    return text + ',\n "entries": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def reset_file(path: str) -> bool:
    """Remove the per-user file; True if there was one."""
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------- the built-in tables
def builtin_docs() -> dict[str, dict]:
    """The built-in tables shipped with the package: file name -> document."""
    out = {}
    # the package's own folder, not importlib.resources (several ms to import on the first
    # "auto" call); the tables are plain files inside the package in every install
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tables")
    if not os.path.isdir(folder):  # an install without the data files: no built-in table
        return out
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as fh:
                out[name] = json.load(fh)
    return out


def builtin_for_this_cpu() -> tuple[str | None, dict | None, str]:
    """(file name, document, how it matches: "this CPU" / "same SIMD class (...)" / "none")."""
    cpu = cpu_summary()
    docs = builtin_docs()
    for name, doc in docs.items():
        if doc.get("fingerprint", {}).get("cpu") == cpu["id"]:
            return name, doc, "this CPU"
    for name, doc in docs.items():
        if doc.get("fingerprint", {}).get("simd") == cpu["simd"]:
            return name, doc, f"same SIMD class ({cpu['simd']})"
    return None, None, "none"


def minimal_entries(entries: list) -> list:
    """The entries worth shipping from a tuning file: the classes whose choice differs from the
    default, and the default itself where the same class at the other thread class departs from
    it (without it, the lookup would borrow the other thread class's choice)."""
    def base(e):
        return tuple(e[f] for f in ("op", "dtype", "n", "rows", "layout"))

    departs = {(base(e), e["threads"]) for e in entries
               if f"{e['backend']}/{e['method']}" != e.get("default")}
    keep = []
    for e in entries:
        other = "tN" if e["threads"] == "t1" else "t1"
        if (base(e), e["threads"]) in departs or (base(e), other) in departs:
            keep.append({f: e[f] for f in ENTRY_FIELDS})
    return sorted(keep, key=lambda e: tuple(e[f] for f in ENTRY_FIELDS))


# ----------------------------------------------------------------------- what is in force
_warned: set[str] = set()


def load(backends) -> tuple[_policy.Policy, dict]:
    """The policy in force here and a description of its tables (for ``info()``)."""
    tables, desc = [], {}
    path = tune_path()
    doc, why = read_file(path, backends)
    if why is not None:
        msg = (f"fastsoftmax: ignoring the tuning file {path}: {why}; "
               "run `fastsoftmax tune` to measure again or `fastsoftmax tune --reset` to remove it")
        if msg not in _warned:
            _warned.add(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=6)
        desc["user_file_ignored"] = why
    elif doc is not None:
        tables.append(parse(doc))
        desc["user_file"] = path
    name, bdoc, match = builtin_for_this_cpu()
    if bdoc is not None:
        tables.append(parse(bdoc))
        desc["builtin"] = name
        desc["builtin_cpu"] = bdoc["fingerprint"]["cpu"]
    desc["builtin_match"] = match
    desc["measured_on_this_cpu"] = ("user_file" in desc) or match == "this CPU"
    source = path if "user_file" in desc else (f"builtin:{name}" if name else "default order")
    desc["source"] = source
    return _policy.Policy(tables, source), desc


def forget_warnings() -> None:
    _warned.clear()
