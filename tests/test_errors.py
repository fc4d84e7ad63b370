"""Bad input gets a specific exception with a message saying what to fix, on every backend, and
the input is left as it was."""
import numpy as np
import pytest

import fastsoftmax as fs

X = np.arange(12, dtype=np.float64).reshape(3, 4)


@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax, fs.logsumexp])
def test_bad_arrays_and_axes(backend, func):
    with pytest.raises(TypeError, match="numbers"):
        func(["a", "b"], backend=backend)
    with pytest.raises(TypeError, match="numbers"):
        func(np.array([object(), 1], dtype=object), backend=backend)
    with pytest.raises(TypeError, match="array-like"):
        func([[1, 2], [3]], backend=backend)
    with pytest.raises(np.exceptions.AxisError):
        func(X, axis=2, backend=backend)
    with pytest.raises(np.exceptions.AxisError):
        func(X, axis=(0, -3), backend=backend)
    with pytest.raises(ValueError, match="duplicate"):
        func(X, axis=(1, -1), backend=backend)
    with pytest.raises(TypeError, match="axis"):
        func(X, axis=1.5, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        func(X, backend="cuda")


@pytest.mark.parametrize("func", [fs.softmax, fs.log_softmax])
def test_bad_out_and_method(backend, func):
    with pytest.raises(TypeError, match="boolean"):
        func(np.ones(3, bool), backend=backend)
    with pytest.raises(ValueError, match="shape"):
        func(X, out=np.empty((4, 3)), backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        func(X, out=np.empty((3, 4), np.float32), backend=backend)
    with pytest.raises(TypeError, match="ndarray"):
        func(X, out=[[0.0] * 4] * 3, backend=backend)
    ro = np.empty((3, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        func(X, out=ro, backend=backend)
    with pytest.raises(ValueError, match="method"):
        func(X, method="fast", backend=backend)


def test_logsumexp_bad_b(backend):
    with pytest.raises(ValueError, match="broadcast"):
        fs.logsumexp(X, b=np.ones(3), backend=backend)
    with pytest.raises(TypeError, match="numbers"):
        fs.logsumexp(X, b="x", backend=backend)


def _ce(backend, **kw):
    x = np.zeros((4, 3))
    t = np.array([0, 1, 2, 0])
    args = dict(logits=x, target=t, backend=backend)
    args.update(kw)
    return fs.cross_entropy(args.pop("logits"), args.pop("target"), **args)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(target=np.array([0, 1, 3, 0])), ValueError, r"\[0, 3\)"),
    (dict(target=np.array([0, -1, 1, 0])), ValueError, "found -1"),
    (dict(target=np.array([0, 1, 2])), ValueError, "shape"),
    (dict(target=np.array([0.0, 1.0, 2.0, 0.0])), TypeError, "integers"),
    (dict(target=np.array([True, False, True, False])), TypeError, "booleans"),
    (dict(target=np.ones((4, 2))), TypeError, "integers"),
    (dict(logits=np.zeros((4, 3), np.int64)), TypeError, "floating"),
    (dict(logits=np.array(1.0)), ValueError, "dimension"),
    (dict(logits=np.zeros((4, 0)), target=np.zeros(4, int)), ValueError, "no class"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(label_smoothing=1.5), ValueError, r"\[0, 1\]"),
    (dict(label_smoothing=-0.1), ValueError, r"\[0, 1\]"),
    (dict(label_smoothing="0.1"), TypeError, "label_smoothing"),
    (dict(weight=np.ones(4)), ValueError, "weight"),
    (dict(weight=np.ones((3, 1))), ValueError, "weight"),
    (dict(ignore_index=1.5), TypeError, "ignore_index"),
    (dict(axis=2), np.exceptions.AxisError, "out of bounds"),
    (dict(axis=(0, 1)), TypeError, "class axis"),
    (dict(grad_out=np.empty((4, 3), np.float32)), TypeError, "dtype"),
    (dict(grad_out=np.empty((3, 4))), ValueError, "shape"),
    (dict(backend="torch"), ValueError, "backend"),
])
def test_cross_entropy_bad_input(backend, kw, exc, match):
    kw = dict(kw)  # the parameter dict is shared between the backends' runs
    if "backend" in kw:
        backend = kw.pop("backend")
    with pytest.raises(exc, match=match):
        _ce(backend, **kw)


def test_failed_call_leaves_input_untouched(backend):
    x = np.random.default_rng(0).standard_normal((4, 3))
    x0 = x.copy()
    with pytest.raises(ValueError):
        fs.cross_entropy(x, np.array([0, 1, 5, 0]), grad_out=x, backend=backend)
    np.testing.assert_array_equal(x, x0)
