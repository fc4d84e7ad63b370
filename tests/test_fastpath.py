"""The per-call fast path and the background Numba compile of "auto" (docs/DESIGN.md, "The
per-call path").

* The fast entries (``_cext.FastPath``) take the common call and give the general path's result
  bit for bit, on every ISA path, and scipy's / the NumPy reference's within the tolerances;
* they take nothing else: every other input and option goes to the general path (and a bad
  input still gets its specific error);
* they run what "auto" decides per size class (a table's backend and method), follow
  ``use_backend``, FASTSOFTMAX_BACKEND and the thread budget;
* "auto" never waits for Numba's compiler: C serves until the kernels of the call's signature
  are compiled in the background, then Numba runs (``backends.numba.warm`` compiles every
  branch, so a compiled signature never compiles again).
"""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.special as sp

import fastsoftmax as fs
from fastsoftmax import _dispatch, _policy, _registry, _tables

# the op modules (fastsoftmax.ops exports functions of the same names)
ce_mod = importlib.import_module("fastsoftmax.ops.cross_entropy")
lse_mod = importlib.import_module("fastsoftmax.ops.logsumexp")
sm_mod = importlib.import_module("fastsoftmax.ops.softmax")

from conftest import assert_close, stable_seed

pytestmark = pytest.mark.skipif("cython" not in fs.available_backends(),
                                reason="the fast path is the C extension's")

DTYPES = (np.float32, np.float64)
# (shape, axis): 1-D, rows, the first axis (inner > 1), the middle one, None
CASES = [((1,), -1), ((10,), -1), ((1000,), 0), ((32, 10), -1), ((32, 10), 1), ((7, 5), 0),
         ((3, 4, 5), 1), ((3, 4, 5), -3), ((3, 4, 5), None), ((2, 3), None), ((5000, 3), -1),
         ((1, 20000), -1), ((70, 40), 1)]
KINDS = ("normal", "special", "wide")


@pytest.fixture
def cext():
    mod = _dispatch.load("cython")
    yield mod
    mod.set_isa(mod.isa_paths()[0])


@pytest.fixture
def tune_file(tmp_path, monkeypatch):
    path = tmp_path / "tune.json"
    monkeypatch.setenv("FASTSOFTMAX_TUNE_FILE", str(path))
    _dispatch.invalidate()
    yield path
    _dispatch.invalidate()


def _data(shape, dtype, kind, *key):
    rng = np.random.default_rng(stable_seed(shape, np.dtype(dtype).name, kind, *key))
    return _registry.values(shape, dtype, rng, kind)


def _same_bits(a, b):
    """a and b equal bit for bit (NaN payloads included), with the same type, dtype and shape."""
    assert type(a) is type(b), (type(a), type(b))
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    u = {4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    np.testing.assert_array_equal(a.view(u), b.view(u))


def _magnitude(x):
    """The largest finite |x| (the scale of log_softmax's and logsumexp's absolute error)."""
    return float(np.max(np.abs(np.where(np.isfinite(x), x, 0)), initial=1.0))


def _general(name, x, axis, backend, **kw):
    """The general path of public function ``name`` (what runs when the fast path declines)."""
    if name in ("softmax", "log_softmax"):
        return sm_mod._softmax_like(x, axis, kw.get("out"), backend, kw.get("method", "auto"),
                                    log=name == "log_softmax")
    if name == "logsumexp":
        return lse_mod._logsumexp(x, axis, None, kw.get("keepdims", False), False, backend)
    raise AssertionError(name)


def _scipy(name, x, axis, **kw):
    if name == "logsumexp":
        return sp.logsumexp(x, axis=axis, **kw)
    return getattr(sp, name)(x, axis=axis)


# --------------------------------------------------------------------- the common call
@pytest.mark.parametrize("backend", [None, "cython"], ids=["auto", "cython"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_equals_the_general_path(cext, backend, name, dtype):
    """Every ISA path, shape, axis and value kind: the fast path's result is the general path's
    bit for bit (same backend), and scipy's within the dtype's tolerance."""
    fp = _dispatch.fast_path(backend)
    func = getattr(fs, name)
    for isa in cext.isa_paths():
        cext.set_isa(isa)
        for shape, axis in CASES:
            for kind in KINDS:
                x = _data(shape, dtype, kind, name)
                if name == "logsumexp":
                    assert fp.logsumexp(x, axis, None, False, False) is not None
                else:
                    assert fp.softmax(x, axis, None, "auto", name == "log_softmax") is not None
                got = func(x, axis=axis, backend=backend)
                _same_bits(got, _general(name, x, axis, "cython"))
                with np.errstate(invalid="ignore", over="ignore"):
                    want = _scipy(name, x, axis)
                assert_close(got, want, dtype,
                             atol_scale=0.0 if name == "softmax" else _magnitude(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_logsumexp_keepdims_and_scalars(dtype):
    x = _data((4, 6), dtype, "normal")
    for axis in (None, 0, 1, -1):
        for keepdims in (False, True):
            got = fs.logsumexp(x, axis=axis, keepdims=keepdims)
            _same_bits(got, _general("logsumexp", x, axis, "cython", keepdims=keepdims))
            want = sp.logsumexp(x, axis=axis, keepdims=keepdims)
            assert np.shape(got) == np.shape(want) and type(got) is type(want)
            assert_close(got, want, dtype, atol_scale=10.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["auto", "three_pass", "online"])
def test_fast_softmax_out_and_methods(dtype, method):
    """out= (a fresh array, x itself) and explicit methods: the general path's bits."""
    x = _data((3, 5000), dtype, "normal")
    for log in (False, True):
        func = fs.log_softmax if log else fs.softmax
        want = _general("log_softmax" if log else "softmax", x, -1, "cython", method=method)
        out = np.empty_like(x)
        assert func(x, axis=-1, out=out, method=method) is out
        _same_bits(out, want)
        y = x.copy()
        assert func(y, axis=-1, out=y, method=method) is y
        _same_bits(y, want)
        assert_close(want, (sp.log_softmax if log else sp.softmax)(x, axis=-1), dtype,
                     atol_scale=10.0 if log else 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fast_cross_entropy_equals_the_general_path(cext, dtype, reduction):
    fp = _dispatch.fast_path(None)
    for isa in cext.isa_paths():
        cext.set_isa(isa)
        for shape in ((32, 10), (1, 1), (5, 100), (4, 3, 7), (7,), (300, 50)):
            x = _data(shape, dtype, "normal", reduction)
            rng = np.random.default_rng(stable_seed(shape, reduction))
            t0 = np.asarray(rng.integers(0, shape[-1], shape[:-1], dtype=np.int64))
            for ign, eps in ((-100, 0.0), (0, 0.25), (-100, 1)):
                t = t0.copy()
                if t.size > 2:
                    t.reshape(-1)[1] = ign      # one ignored row
                kw = dict(ignore_index=ign, reduction=reduction, label_smoothing=eps)
                if reduction == "mean" and np.all(t == ign):
                    continue
                assert fp.cross_entropy(x, t, None, ign, reduction, eps, -1, False,
                                        None) is not None
                got = fs.cross_entropy(x, t, **kw)
                _same_bits(got, ce_mod._cross_entropy(x, t, None, ign, reduction, eps, -1,
                                                      False, None, "cython"))
                # an independent reference: the formula with scipy's log_softmax
                lp = sp.log_softmax(x.astype(np.float64), axis=-1).reshape(-1, shape[-1])
                tf = t.reshape(-1)
                keep = tf != ign
                q = np.zeros_like(lp)
                q[np.arange(len(tf))[keep], tf[keep]] = 1 - float(eps)
                q[keep] += float(eps) / shape[-1]
                rows = -(q * lp).sum(axis=1)
                want = {"none": lambda: rows.reshape(shape[:-1]), "sum": rows.sum,
                        "mean": lambda: rows.sum() / keep.sum()}[reduction]()
                assert_close(got, want, dtype, atol_scale=10.0)


# ---------------------------------------------------------------- everything else declines
class _Sub(np.ndarray):
    pass


def _uncommon(x):
    """Inputs holding x's values that the fast entries must leave to the general path."""
    yield "F-order", np.asfortranarray(x) if x.ndim > 1 and x.shape[0] > 1 else None
    yield "strided", np.repeat(x, 2, axis=-1)[..., ::2]
    yield "negstride", np.ascontiguousarray(x[::-1])[::-1] if x.shape[0] > 1 else None
    yield "byteswapped", x.astype(x.dtype.newbyteorder("S"))
    yield "subclass", x.view(_Sub)
    yield "list", x.tolist()
    yield "float16", x.astype(np.float16)
    yield "int", np.round(x).astype(np.int32)
    yield "misaligned", _misaligned(x)


def _misaligned(x):
    buf = np.zeros(x.nbytes + 1, np.uint8)
    y = np.frombuffer(buf.data, x.dtype, offset=1, count=x.size).reshape(x.shape)
    y[...] = x
    return y


@pytest.mark.parametrize("dtype", DTYPES)
def test_uncommon_inputs_take_the_general_path(dtype):
    fp = _dispatch.fast_path(None)
    x = _data((6, 7), dtype, "normal")
    for what, y in _uncommon(x):
        if y is None:
            continue
        for axis in (None, 0, -1):
            assert fp.softmax(y, axis, None, "auto", False) is None, what
            assert fp.logsumexp(y, axis, None, False, False) is None, what
            got = fs.softmax(y, axis=axis)
            assert_close(got, sp.softmax(np.asarray(y), axis=axis), np.asarray(got).dtype)
            got = fs.logsumexp(y, axis=axis)
            assert_close(got, sp.logsumexp(np.asarray(y), axis=axis), np.asarray(got).dtype,
                         atol_scale=10.0)
    # arguments the fast entries do not take
    for axis in ((0, 1), np.int64(1), True, 1.0, 2, -3):
        assert fp.softmax(x, axis, None, "auto", False) is None, axis
        assert fp.logsumexp(x, axis, None, False, False) is None, axis
    for method in ("fast", None, b"auto"):
        assert fp.softmax(x, -1, None, method, False) is None
    for out in (np.empty_like(x, dtype=np.float16), np.empty((7, 6), dtype), x[:, ::-1],
                np.empty_like(x).T, [0.0]):
        assert fp.softmax(x, -1, out, "auto", False) is None
    big = np.empty(2 * x.size, dtype)
    part = big[3:3 + x.size].reshape(x.shape)     # overlapping x partially
    part[...] = x
    assert fp.softmax(part, -1, big[5:5 + x.size].reshape(x.shape), "auto", False) is None
    ro = np.empty_like(x)
    ro.flags.writeable = False
    assert fp.softmax(x, -1, ro, "auto", False) is None
    assert fp.logsumexp(x, -1, np.ones_like(x), False, False) is None
    assert fp.logsumexp(x, -1, None, False, True) is None
    assert fp.logsumexp(x, -1, None, 1, False) is None
    for empty in (np.empty((0, 3), dtype), np.empty(0, dtype), np.array(1.0, dtype)):
        assert fp.softmax(empty, None, None, "auto", False) is None
        assert fp.logsumexp(empty, None, None, False, False) is None
    # a read-only input is fine: the kernels only read it
    x.flags.writeable = False
    assert fp.softmax(x, -1, None, "auto", False) is not None


def test_uncommon_cross_entropy_takes_the_general_path():
    fp = _dispatch.fast_path(None)
    x = _data((8, 5), np.float64, "normal")
    t = np.arange(8, dtype=np.int64) % 5
    args = dict(logits=x, target=t, weight=None, ignore_index=-100, reduction="mean",
                label_smoothing=0.0, axis=-1, return_grad=False, grad_out=None)
    assert fp.cross_entropy(*args.values()) is not None
    for k, v in [("target", t.astype(np.int32)), ("target", t[::-1]), ("target", t.tolist()),
                 ("target", sp.softmax(x, axis=1)), ("target", t[:7]), ("target", t + 5),
                 ("target", t - 1), ("weight", np.ones(5)), ("ignore_index", np.int64(3)),
                 ("ignore_index", True), ("reduction", "avg"), ("label_smoothing", 2.0),
                 ("label_smoothing", np.float64(0.1)), ("label_smoothing", float("nan")),
                 ("axis", 0), ("axis", 1.0), ("return_grad", True), ("return_grad", 1),
                 ("grad_out", np.empty_like(x)), ("logits", np.asfortranarray(x)),
                 ("logits", x.astype(np.float16)), ("logits", x.tolist())]:
        assert fp.cross_entropy(*{**args, k: v}.values()) is None, (k, v)
    # all rows ignored under "mean": the general path's NaN
    ign = np.full(8, -100, np.int64)
    assert fp.cross_entropy(x, ign, None, -100, "mean", 0.0, -1, False, None) is None
    assert np.isnan(fs.cross_entropy(x, ign))
    with pytest.raises(ValueError, match="found 5 at flat position 0"):
        fs.cross_entropy(x, t + 5)


def test_bad_input_gets_its_specific_error_after_the_fast_path_declines():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(np.exceptions.AxisError):
        fs.softmax(x, axis=2)
    with pytest.raises(np.exceptions.AxisError):
        fs.logsumexp(x, axis=-3)
    with pytest.raises(TypeError, match="axis"):
        fs.log_softmax(x, axis=1.0)
    with pytest.raises(ValueError, match="method"):
        fs.softmax(x, method="fast")
    with pytest.raises(ValueError, match="backend"):
        fs.softmax(x, backend="gpu")
    with pytest.raises(ValueError, match="backend"):
        fs.logsumexp(x, backend=["cython"])
    with pytest.raises(ValueError, match="empty"):
        fs.softmax(np.ones((3, 0), np.float32), axis=1)
    with pytest.raises(ValueError, match="reduction"):
        fs.cross_entropy(x, np.zeros(3, np.int64), reduction="avg")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fs.cross_entropy(x, np.zeros(3, np.int64), label_smoothing=1.5)


# ---------------------------------------------------------------- what "auto" decided
def _write_table(path, entries):
    fp = _tables.fingerprint(_dispatch.available_backends())
    path.write_text(json.dumps({"schema": _tables.SCHEMA, "fingerprint": fp,
                                "entries": entries}))
    _dispatch.invalidate()


def _ent(op, dtype, n, rows, backend, method="auto", threads="t1", layout="last"):
    return {"op": op, "dtype": dtype, "n": n, "rows": rows, "layout": layout,
            "threads": threads, "backend": backend, "method": method}


def test_the_fast_path_runs_what_auto_decides(tune_file):
    """A table's choice per class: numpy -> the general path (the reference's bits); cython with
    a method -> the fast path with that method (the general path's bits); others unchanged."""
    _write_table(tune_file, [
        _ent("softmax", "float32", "<=32", "<=64", "numpy", threads=t) for t in ("t1", "tN")] + [
        _ent("log_softmax", "float64", "<=1K", "1", "cython", "online", threads=t)
        for t in ("t1", "tN")] + [
        _ent("cross_entropy", "float32", "<=32", "<=64", "numpy", threads=t)
        for t in ("t1", "tN")])
    fp = _dispatch.fast_path(None)
    x = _data((16, 10), np.float32, "normal")
    assert fp.softmax(x, -1, None, "auto", False) is None
    _same_bits(fs.softmax(x, axis=-1), fs.softmax(x, axis=-1, backend="numpy"))
    assert fp.softmax(x, -1, None, "auto", True) is not None     # log_softmax: not named
    assert fp.softmax(x.astype(np.float64), -1, None, "auto", False) is not None
    t = np.zeros(16, np.int64)
    assert fp.cross_entropy(x, t, None, -100, "mean", 0.0, -1, False, None) is None
    _same_bits(fs.cross_entropy(x, t), fs.cross_entropy(x, t, backend="numpy"))
    y = _data((600,), np.float64, "normal")
    assert fp.softmax(y, -1, None, "auto", True) is not None
    _same_bits(fs.log_softmax(y), _general("log_softmax", y, -1, "cython", method="online"))
    # the classes are the policy's: check every cell against choose_class
    cext = _dispatch.load("cython")
    nt = fs.get_num_threads()
    pol = _dispatch.policy()
    i = 0
    for _, nl in _policy.N_CLASSES:
        for _, rl in _policy.ROW_CLASSES:
            for lay in ("last", "strided"):
                size = _policy.SizeClass(nl, rl, lay)
                if size in _policy.all_classes("rows"):
                    ch = pol.choose_class("softmax", "float32", size, nt)
                    want = 0 if ch is not None and ch.backend != "cython" else (
                        cext.METHOD_CODES[ch.method] if ch else 1)
                    assert fp.route("softmax", 0, i) == want, size
                i += 1


def test_backend_requests_and_threads_reach_the_fast_path(monkeypatch):
    x = _data((4, 9), np.float64, "normal")
    ref = fs.softmax(x, axis=1, backend="numpy")
    assert _dispatch.fast_path("numpy") is None and _dispatch.fast_path("numba") is None
    assert _dispatch.fast_path("gpu") is None and _dispatch.fast_path(3) is None
    with fs.use_backend("numpy"):
        assert _dispatch.fast_path(None) is None
        _same_bits(fs.softmax(x, axis=1), ref)
        assert _dispatch.fast_path("cython") is not None
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "numpy")
    assert _dispatch.fast_path(None).softmax(x, 1, None, "auto", False) is None
    _same_bits(fs.softmax(x, axis=1), ref)
    assert _dispatch.fast_path("auto").softmax(x, 1, None, "auto", False) is not None
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "")
    assert _dispatch.fast_path(None).softmax(x, 1, None, "auto", False) is not None
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "nope")
    with pytest.raises(ValueError, match="FASTSOFTMAX_BACKEND"):
        fs.softmax(x)
    monkeypatch.delenv("FASTSOFTMAX_BACKEND")
    old = fs.get_num_threads()
    try:
        for n in (1, 3):
            fs.set_num_threads(n)
            assert _dispatch.fast_path(None).nthreads == n
            assert _dispatch.fast_path("cython").nthreads == n
    finally:
        fs.set_num_threads(old)


def test_a_replaced_kernel_function_sees_every_call(monkeypatch):
    cext = _dispatch.load("cython")
    seen = []
    real = cext.logsumexp

    def spy(*args):
        seen.append(args[0].shape)
        return real(*args)
    monkeypatch.setattr(cext, "logsumexp", spy)
    _dispatch.invalidate()
    x = np.ones((2, 3))
    assert fs.logsumexp(x, axis=1, backend="cython")[0] == pytest.approx(1 + np.log(3))
    assert seen == [(2, 3, 1)]
    assert fs.softmax(x, axis=1)[0, 0] == pytest.approx(1 / 3)  # softmax is not replaced
    monkeypatch.undo()
    _dispatch.invalidate()


# ------------------------------------------------------- Numba compiled in the background
def _dispatchers():
    """Every Numba dispatcher of the Numba backend, with its number of compiled signatures."""
    from numba.core.registry import CPUDispatcher

    mods = [importlib.import_module(f"fastsoftmax.backends.numba.{m}")
            for m in ("softmax", "lse", "ce", "rows", "explog", "intrinsics")]
    out = {}
    for m in mods:
        for k, v in vars(m).items():
            if isinstance(v, CPUDispatcher):
                out[f"{m.__name__}.{k}"] = len(v.overloads)
    return out


def _calls(dtype, readonly):
    """Contract calls of every entry over many shapes (each branch, several sizes)."""
    rng = np.random.default_rng(5)

    def arr(shape, dt=dtype):
        a = rng.standard_normal(shape).astype(dt)
        if readonly:
            a.flags.writeable = False
        return a
    for shape3 in ((1, 1, 1), (5, 7, 1), (3, 48, 1), (3, 49, 1), (2, 2000, 1), (1, 5000, 1),
                   (4, 3, 3), (1, 600000, 1), (1, 4, 100)):
        for log in (False, True):
            for method in ("auto", "three_pass", "online"):
                for nt in (1, 2):
                    yield "softmax", (arr(shape3), np.empty(shape3, dtype), log, method, nt)
            if not readonly:
                y = arr(shape3)
                yield "softmax", (y, y, log, "auto", 1)
        if shape3[1] < 10000:
            o = np.empty((shape3[0], shape3[2]), dtype)
            yield "logsumexp", (arr(shape3), None, o, None, 1)
            yield "logsumexp", (arr(shape3), arr(shape3), o, np.empty_like(o), 2)
    for N, C in ((3, 4), (3, 48), (2, 60), (70, 10)):
        t = np.zeros(N, np.int64)
        for grad in (None, "new"):
            g = None if grad is None else np.empty((N, C), dtype)
            yield "cross_entropy", (arr((N, C)), t, None, None, -100, 0.0, 1.0,
                                    np.empty(N, dtype), g, 1)
            if not readonly:
                y = arr((N, C))
                yield "cross_entropy", (y, t, None, arr((C,)), 3, 0.2, 1.0, np.empty(N, dtype),
                                        y, 1)
            yield "cross_entropy", (arr((N, C)), None, arr((N, C)), arr((C,)), -100, 0.1, 0.5,
                                    np.empty(N, dtype), g, 2)


@pytest.mark.parametrize("readonly", [False, True], ids=["writeable", "readonly"])
def test_a_warmed_signature_never_compiles_again(readonly):
    """After ``warm(entry, signature)`` (what the background thread runs), calls of that
    signature over every branch and size compile nothing."""
    nb = _dispatch.load("numba")
    for dtype in DTYPES:
        calls = list(_calls(dtype, readonly))
        for entry, args in calls:
            nb.warm(entry, _dispatch.signature(args))
        before = _dispatchers()
        for entry, args in calls:
            getattr(nb, entry)(*args)
        assert _dispatchers() == before


def test_signature_tells_apart_what_numba_compiles_apart():
    x = np.zeros((2, 3, 1), np.float32)
    sig = _dispatch.signature
    ro = x.copy()
    ro.flags.writeable = False
    assert sig((x, x, True, "auto", 1)) != sig((x, np.empty_like(x), True, "auto", 1))
    assert sig((x, x, True, "auto", 1)) != sig((x, x, False, "auto", 1))
    assert sig((x, x, True, "auto", 1)) != sig((x, x, True, "online", 1))
    assert sig((ro, x, True, "auto", 1)) != sig((x, x, True, "auto", 1))
    assert sig((x, None, True, "auto", 1)) != sig((x, x, True, "auto", 1))
    assert sig((x, x.astype(np.float64), True, "auto", 1)) != sig((x, x, True, "auto", 1))
    assert sig((x, np.empty_like(x), True, "auto", 1)) == sig((x.copy(), np.ones_like(x), True,
                                                               "auto", 5))


_COLD_START = r"""
import os, sys, json
import numpy as np
import fastsoftmax as fs
from fastsoftmax import _dispatch, _tables
print(json.dumps("numba" in sys.modules))
# a table that sends every class of these ops to Numba at one thread
fp = _tables.fingerprint(_dispatch.available_backends())
ents = [{"op": op, "dtype": dt, "n": n, "rows": r, "layout": "last", "threads": "t1",
         "backend": "numba", "method": "auto"}
        for op in ("softmax", "logsumexp") for dt in ("float32", "float64")
        for n in ("<=32", "<=1K", "<=16K", "<=256K", ">256K") for r in ("1", "<=64", ">64")]
with open(os.environ["FASTSOFTMAX_TUNE_FILE"], "w") as f:
    json.dump({"schema": _tables.SCHEMA, "fingerprint": fp, "entries": ents}, f)
fs.set_num_threads(1)
x = np.random.default_rng(0).standard_normal((300, 100)).astype(np.float32)
first = fs.softmax(x, axis=1)
lse_first = fs.logsumexp(x, axis=1)
c = fs.softmax(x, axis=1, backend="cython")
print(json.dumps([bool(np.array_equal(first, c)),
                  bool(np.array_equal(lse_first, fs.logsumexp(x, axis=1, backend="cython"))),
                  _dispatch.fast_path(None).softmax(x, 1, None, "auto", False) is None]))
assert _dispatch.wait_compiled(timeout=600)
later = fs.softmax(x, axis=1)
n = fs.softmax(x, axis=1, backend="numba")
print(json.dumps([bool(np.array_equal(later, n)), len(_dispatch._ready),
                  fs.info()["backends"]["numba"]["compiled_for_auto"]]))
"""


def test_auto_serves_c_while_numba_compiles_in_the_background(tmp_path):
    """A fresh process whose table picks Numba: the first calls are the C kernels' (bit for bit)
    while the kernels compile in the background, the later ones Numba's; import loads no
    Numba."""
    env = dict(os.environ, FASTSOFTMAX_TUNE_FILE=str(tmp_path / "tune.json"))
    env.pop("FASTSOFTMAX_BACKEND", None)
    env.pop("FASTSOFTMAX_NUMBA_BACKGROUND", None)
    out = subprocess.run([sys.executable, "-c", _COLD_START], capture_output=True, text=True,
                         env=env, timeout=900)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(s) for s in out.stdout.split("\n") if s]
    assert lines[0] is False
    assert lines[1] == [True, True, True]
    assert lines[2][0] is True and lines[2][1] >= 2 and lines[2][1] == lines[2][2]


def test_background_compile_can_be_turned_off(monkeypatch, tune_file):
    monkeypatch.setenv("FASTSOFTMAX_NUMBA_BACKGROUND", "0")
    assert not _dispatch.background_compile()
    _write_table(tune_file, [_ent("logsumexp", "float64", "<=1K", ">64", "numba", threads=t)
                             for t in ("t1", "tN")])
    name, mod, _ = _dispatch.resolve(None, _registry.OPS["logsumexp"], np.dtype(np.float64),
                                     (100, 300, 1))
    assert name == "numba" and mod is _dispatch.load("numba")
    monkeypatch.delenv("FASTSOFTMAX_NUMBA_BACKGROUND")
    name, mod, _ = _dispatch.resolve(None, _registry.OPS["logsumexp"], np.dtype(np.float64),
                                     (100, 300, 1))
    assert name == "numba" and mod is _dispatch._NUMBA_WHEN_COMPILED
    x = _data((100, 300), np.float64, "normal")
    assert_close(fs.logsumexp(x, axis=1), sp.logsumexp(x, axis=1), np.float64, atol_scale=10)
