"""Coverage-guided fuzzing of the public API from raw bytes (atheris / libFuzzer).

    python benches/fuzz_atheris.py [libFuzzer options, e.g. -max_total_time=600 -seed=1]
    ./dev fuzz [seconds]        runs this beside tests/test_fuzz.py

Each input is decoded into one call of one op of the registry (``fastsoftmax._registry.OPS``):
the op, a backend (every available one; the C extension on each ISA path this CPU runs), a dtype
(both byte orders), a shape, an axis, the options, and the array's elements taken bit for bit
from the input (so NaN payloads, subnormals and infinities come as they come).  The call must
match the same call on the NumPy reference backend within the tolerances of tests/conftest.py,
leave its inputs unmodified, and raise only what the reference raises (TypeError / ValueError
with a message).  Anything else is an uncaught exception: libFuzzer writes the input to
``crash-*`` and stops; replay it with ``python benches/fuzz_atheris.py crash-...``.

atheris is not a dependency of fastsoftmax (pip install atheris; wheels exist for CPython
3.8-3.11 on Linux x86-64).
"""
from __future__ import annotations

import os
import sys
import warnings

import atheris
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

with atheris.instrument_imports(include=["fastsoftmax"]):
    import fastsoftmax as fs
    from fastsoftmax import _dispatch, _registry

from conftest import assert_close  # noqa: E402  -- the tolerances' one place
from test_fuzz import known_open  # noqa: E402  -- the known open differences' one place

OPS = list(_registry.OPS.values())
_BASE = ("float16", "float32", "float64", "longdouble", "complex64", "complex128", "int8",
         "uint8", "int16", "int32", "int64", "bool")
DTYPES = [np.dtype(d) for d in _BASE] + [np.dtype(d).newbyteorder("S") for d in _BASE
                                          if np.dtype(d).itemsize > 1]
BACKENDS = []
for _name in fs.available_backends():
    if _name == "cython":
        BACKENDS += [("cython", isa) for isa in _dispatch.load("cython").isa_paths()]
    else:
        BACKENDS.append((_name, None))
COUNT = {"calls": 0}


class Mismatch(AssertionError):
    pass


def _array(fdp, dtype, shape):
    n = int(np.prod(shape)) if shape else 1
    raw = fdp.ConsumeBytes(n * dtype.itemsize)
    raw = raw + bytes(n * dtype.itemsize - len(raw))
    a = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if fdp.ConsumeBool() and a.ndim:  # a reversed or strided view of the same values
        step = fdp.PickValueInList([-1, 2, -2])
        big = np.zeros(shape[:-1] + (shape[-1] * abs(step),), dtype)
        view = big[..., ::step]
        view[...] = a
        a = view
    return a


def _axis(fdp, ndim):
    k = fdp.ConsumeIntInRange(0, 3)
    if k == 0:
        return None
    if k == 3 and ndim:
        return tuple(fdp.ConsumeIntInRange(-ndim - 1, ndim) for _ in range(
            fdp.ConsumeIntInRange(1, ndim + 1)))
    return fdp.ConsumeIntInRange(-ndim - 1, ndim)


def _decode(fdp):
    """(op, arrays, call(backend, arrays) -> result)"""
    op = fdp.PickValueInList(OPS)
    dtype = fdp.PickValueInList(DTYPES)
    shape = tuple(fdp.ConsumeIntInRange(0, 9) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    x = _array(fdp, dtype, shape)
    axis = _axis(fdp, x.ndim)
    func = getattr(fs, op.name)
    if op.kernel == "softmax":
        method = fdp.PickValueInList(list(op.methods) + ["bogus"])
        alias = fdp.ConsumeBool()

        def call(backend, arrays):
            kw = {"out": arrays["x"]} if alias else {}
            return func(arrays["x"], axis=axis, method=method, backend=backend, **kw)
        return op, {"x": x}, call, ("x",) if alias else ()
    if op.kernel == "logsumexp":
        keepdims, return_sign = fdp.ConsumeBool(), fdp.ConsumeBool()
        arrays = {"a": x}
        if fdp.ConsumeBool():
            arrays["b"] = _array(fdp, fdp.PickValueInList(DTYPES), shape)

        def call(backend, arrays):
            return func(arrays["a"], axis=axis, b=arrays.get("b"), keepdims=keepdims,
                        return_sign=return_sign, backend=backend)
        return op, arrays, call, ()
    if op.kernel == "cross_entropy":
        reduction = fdp.PickValueInList(["mean", "sum", "none"])
        smoothing = fdp.PickValueInList([0.0, 0.1, 1.0])
        ignore_index = fdp.ConsumeIntInRange(-2, 3)
        grad = fdp.ConsumeIntInRange(0, 2)  # no gradient, returned, written over the logits
        ax = axis if isinstance(axis, int) else -1
        try:
            c = shape[ax] if shape else 0
            batch = shape[:ax % len(shape)] + shape[ax % len(shape) + 1:]
        except (IndexError, ZeroDivisionError):
            c, batch = 0, ()
        t = np.array([fdp.ConsumeIntInRange(-2, max(c, 0) + 1)
                      for _ in range(int(np.prod(batch)))], np.int64).reshape(batch)
        arrays = {"logits": x, "target": t}
        if fdp.ConsumeBool():
            # finite in the logits' dtype: an infinite class weight is a known, reported
            # difference (docs/differences.md; tests/test_fuzz.py REGRESSIONS)
            w = _array(fdp, np.dtype(np.float64), (c,))
            arrays["weight"] = np.clip(np.nan_to_num(np.abs(w), posinf=0.0), 0.0, 1e30)

        def call(backend, arrays):
            kw = {"grad_out": arrays["logits"]} if grad == 2 else {"return_grad": grad == 1}
            return func(arrays["logits"], arrays["target"], axis=ax, weight=arrays.get("weight"),
                        reduction=reduction, label_smoothing=smoothing,
                        ignore_index=ignore_index, backend=backend, **kw)
        return op, arrays, call, ("logits",) if grad == 2 else ()
    if op.kernel == "softmax_backward":
        # y: the forward output of its bytes' values, or those bytes as they come
        y = _array(fdp, fdp.PickValueInList(DTYPES), shape)
        if fdp.ConsumeBool() and y.ndim and y.dtype.kind == "f" and y.size:
            with np.errstate(all="ignore"):
                v = y.astype(np.float64)
                v = v - (np.max(v, axis=-1, keepdims=True) + np.log(np.sum(
                    np.exp(v - np.max(v, axis=-1, keepdims=True)), axis=-1, keepdims=True)))
                y[...] = v if op.name.startswith("log_") else np.exp(v)
        out = fdp.ConsumeIntInRange(0, 2)  # none, written over grad, written over y

        def call(backend, arrays):
            kw = {"out": arrays[("grad", "y")[out - 1]]} if out else {}
            return func(arrays["grad"], arrays["y"], axis=axis, backend=backend, **kw)
        return op, {"grad": x, "y": y}, call, (("grad", "y")[out - 1],) if out else ()
    if op.kernel == "sigmoid":
        alias = fdp.ConsumeBool()

        def call(backend, arrays):
            kw = {"out": arrays["x"]} if alias else {}
            return func(arrays["x"], axis=axis, backend=backend, **kw)
        return op, {"x": x}, call, ("x",) if alias else ()
    if op.kernel == "binary_cross_entropy":
        reduction = fdp.PickValueInList(["mean", "sum", "none"])
        grad = fdp.ConsumeIntInRange(0, 2)  # no gradient, returned, written over the logits
        ax = axis if isinstance(axis, int) else -1
        try:
            c = shape[ax] if shape else 1
        except IndexError:
            c = 1
        # targets: probabilities from the input's bytes (a byte / 255)
        t = np.frombuffer(fdp.ConsumeBytes(x.size).ljust(x.size, b"\0"), np.uint8)
        arrays = {"logits": x, "target": (t / 255.0).reshape(shape)}
        if fdp.ConsumeBool():
            w = _array(fdp, np.dtype(np.float64), shape)
            arrays["weight"] = np.clip(np.nan_to_num(np.abs(w), posinf=0.0), 0.0, 1e30)
        if fdp.ConsumeBool():
            p = _array(fdp, np.dtype(np.float64), (c,))
            arrays["pos_weight"] = np.clip(np.nan_to_num(np.abs(p), posinf=0.0), 0.0, 1e30)

        def call(backend, arrays):
            kw = {"grad_out": arrays["logits"]} if grad == 2 else {"return_grad": grad == 1}
            return func(arrays["logits"], arrays["target"], axis=ax, weight=arrays.get("weight"),
                        pos_weight=arrays.get("pos_weight"), reduction=reduction,
                        backend=backend, **kw)
        return op, arrays, call, ("logits",) if grad == 2 else ()
    if op.kernel == "sample_candidates":
        # small sizes: (classes, dim) weights from the input's bytes, the drawn array's dtype
        n_cls, dim, batch = (fdp.ConsumeIntInRange(1, 9), fdp.ConsumeIntInRange(0, 4),
                             fdp.ConsumeIntInRange(0, 4))
        num_true, num_sampled = fdp.ConsumeIntInRange(1, 2), fdp.ConsumeIntInRange(1, n_cls)
        dt = dtype if dtype.kind == "f" else np.dtype(np.float64)
        arrays = {"weights": _array(fdp, dt, (n_cls, dim)), "biases": _array(fdp, dt, (n_cls,)),
                  "inputs": _array(fdp, dt, (batch, dim)),
                  "labels": np.array([fdp.ConsumeIntInRange(0, n_cls - 1)
                                      for _ in range(batch * num_true)],
                                     np.int64).reshape(batch, num_true)}
        hits, log_q, grad = fdp.ConsumeBool(), fdp.ConsumeBool(), fdp.ConsumeBool()
        seed = fdp.ConsumeIntInRange(0, 2**32 - 1)
        given = fdp.ConsumeBool()   # sampled_values given, or the sampler's kernel with a seed

        def call(backend, arrays):
            kw = {"rng": seed}
            if given:
                rng = np.random.default_rng(seed)
                kw = {"sampled_values": (rng.permutation(n_cls)[:num_sampled],
                                         rng.random((batch, num_true)) + 0.5,
                                         rng.random(num_sampled) + 0.5)}
            r = func(arrays["weights"], arrays["biases"], arrays["labels"], arrays["inputs"],
                     num_sampled, n_cls, num_true=num_true, remove_accidental_hits=hits,
                     subtract_log_q=log_q, return_grad=grad, backend=backend, **kw)
            if not isinstance(r, tuple):
                return r
            return tuple(e for i in r for e in (i if isinstance(i, tuple) else (i,)))
        return op, arrays, call, ()
    raise AssertionError(f"no decoder for kernel {op.kernel!r}: add one")


def _run(call, backend, arrays):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return call(backend, arrays), None
        except (TypeError, ValueError) as exc:
            if not str(exc):
                raise Mismatch(f"exception without a message: {exc!r}") from exc
            return None, exc


def _scale(arrays):
    vals = [np.abs(v[np.isfinite(v)].astype(np.float64)) for v in arrays.values()
            if v.dtype.kind in "fiu" and v.size]   # integers are converted to float too
    return float(max((v.max(initial=1.0) for v in vals), default=1.0))


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    name, isa = fdp.PickValueInList(BACKENDS)
    op, arrays, call, aliased = _decode(fdp)
    if isa is not None:
        _dispatch.load("cython").set_isa(isa)
    COUNT["calls"] += 1
    fresh = {k: v.copy() for k, v in arrays.items()}
    want, want_exc = _run(call, "numpy", {k: v.copy() for k, v in arrays.items()})
    got, got_exc = _run(call, name, arrays)
    if (want_exc is None) != (got_exc is None) or (
            want_exc is not None and type(want_exc) is not type(got_exc)):
        raise Mismatch(f"{op.name} on {name}: reference {want_exc!r}, backend {got_exc!r}")
    if want_exc is None:
        got_t = got if isinstance(got, tuple) else (got,)
        want_t = want if isinstance(want, tuple) else (want,)
        scale = _scale(fresh)
        for g, w in zip(got_t, want_t):
            g, w = np.asarray(g), np.asarray(w)
            if g.dtype != w.dtype or g.shape != w.shape:
                raise Mismatch(f"{op.name} on {name}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}")
            tdt = np.finfo(w.dtype).dtype if w.dtype.kind in "fc" else np.dtype(np.float64)
            if tdt == np.longdouble:
                tdt = np.dtype(np.float64)
            if g.size:
                try:
                    assert_close(g, w, tdt, atol_scale=scale)
                except AssertionError:
                    if known_open(op.kernel, name, fresh) is None:
                        raise
    for k, v in fresh.items():
        if k in aliased and got_exc is None:
            continue
        if not np.array_equal(arrays[k], v, equal_nan=v.dtype.kind in "fc"):
            raise Mismatch(f"{op.name} on {name} modified its input {k}")


def main():
    import atexit
    atexit.register(lambda: print(f"fuzz_atheris: {COUNT['calls']} calls", flush=True))
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
