"""Argument helpers shared by the op families (beside ``_canon``, which builds the layouts)."""
from __future__ import annotations

import numpy as np

from .. import _dispatch


def backend_for(backend, op, cdt, shape3):
    """(name, module, method): the reference for dtypes no compiled kernel takes (``cdt`` None),
    else the dispatcher's choice for ``op`` (a registry row)."""
    if cdt is None:
        _dispatch.requested(backend)  # still reject a misspelt backend name
        return "numpy", _dispatch.load("numpy"), "auto"
    return _dispatch.resolve(backend, op, cdt, shape3)


def overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """True if ``a`` and ``b`` may share memory and are not the very same view."""
    if not np.may_share_memory(a, b):
        return False
    same = (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides and a.shape == b.shape)
    return not same


def check_choice(value, choices, name: str):
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def is_python_scalar(v) -> bool:
    return isinstance(v, (bool, int, float, complex)) and not isinstance(v, np.generic)


def last_class_axis(axis, what: str) -> None:
    """The class axis of ops whose logits are always (rows, classes): -1 or 1.  The same
    exception types as cross_entropy's class axis: TypeError for anything but one integer,
    AxisError out of range, ValueError for the other (row) axis."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis is the class axis of the {what} logits, one integer (-1 or 1); "
                        f"got {axis!r}")
    if not -2 <= axis <= 1:
        raise np.exceptions.AxisError(int(axis), 2, msg_prefix=None)
    if axis not in (-1, 1):
        raise ValueError(f"axis is the class axis of the {what} logits: -1 (or 1) only, "
                         f"got {axis!r}")


# ------------------------------------------------------------------ temperature and base
def is_plain(temperature, base) -> bool:
    """Temperature 1 and no base, checked in ~50 ns: the call may go to the fast path (which
    knows neither option)."""
    return base is None and (type(temperature) is float or type(temperature) is int) \
        and temperature == 1


def _scale_values(value, name: str):
    """``value`` (temperature or base) as a float or a float64 ndarray, after the type check."""
    if is_python_scalar(value) or isinstance(value, np.generic):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                         np.floating)):
            raise TypeError(f"{name} must be a real number or an array of them, got {value!r}")
        return float(value)
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 -- whatever asarray rejects is not a number
        arr = None
    if arr is None or arr.dtype.kind not in "iuf":
        what = type(value).__name__ if arr is None else f"dtype {arr.dtype}"
        raise TypeError(f"{name} must be a real number or an array of real numbers, got {what}")
    if arr.ndim == 0:
        return float(arr)
    return arr.astype(np.float64, copy=False)


def _first_bad(arr, bad, name: str, rule: str):
    if np.ndim(arr) == 0:
        raise ValueError(f"{name} must be {rule}, got {float(arr)!r}")
    i = int(np.flatnonzero(bad)[0])
    raise ValueError(f"{name} must be {rule}; got {float(arr.reshape(-1)[i])!r} at flat "
                     f"position {i} of the {name} array")


def _expand(ashape, reduced, shape, axes):
    """``ashape`` (broadcasting against ``reduced``) with 1 inserted at the reduced ``axes``."""
    it = iter((1,) * (len(reduced) - len(ashape)) + tuple(ashape))
    return tuple(1 if a in axes else next(it) for a in range(len(shape)))


def _per_row(arr, name: str, shape, axes):
    """``arr`` broadcast to ``shape`` with 1 on ``axes`` (the kernels' rows), or ValueError."""
    keep = tuple(1 if a in axes else s for a, s in enumerate(shape))
    reduced = tuple(s for a, s in enumerate(shape) if a not in axes)
    ok = False
    if arr.ndim == len(shape):          # keepdims style: size 1 along the reduced axes
        ok, full = all(arr.shape[a] == 1 for a in axes), arr.shape
    elif arr.ndim <= len(reduced):      # the reduced shape, NumPy broadcasting
        ok, full = True, _expand(arr.shape, reduced, shape, axes)
    if ok:
        try:
            ok = np.broadcast_shapes(full, keep) == keep
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(
            f"{name} of shape {arr.shape} does not broadcast against the reduced shape "
            f"{reduced} (one {name} per row) nor the keepdims shape {keep} of x of shape "
            f"{shape} reduced over axes {tuple(axes)}")
    return np.broadcast_to(arr.reshape(full), keep)


def _finite_scale(sc, name: str):
    if not np.all(np.isfinite(sc)):
        raise ValueError(f"{name} is too close to 0 (or base too large): the factor 1/temperature "
                         "overflows float64; use a temperature above 1e-300")
    return sc


def row_scale(temperature, base, shape, axes):
    """The factor the kernels multiply each reduced row by: 1/temperature, or ln(base).

    ``shape`` is the shape of the input, ``axes`` the reduced axes (normalized, sorted).
    Returns None for the plain op (temperature 1 and no base: the kernels run unscaled), a
    float for one factor, or a float64 array of ``shape`` with 1 on ``axes`` (one factor per
    row; ``kernel_scale`` brings it to the kernels' (outer, inner) order).

    A temperature is a positive finite number, or an array of them that broadcasts against the
    reduced shape (``shape`` without ``axes``) or, with ``x.ndim`` dimensions, against the
    keepdims shape (1 along ``axes``).  A base is > 0 and != 1 (finite), the same shapes; it is
    temperature 1/ln(base), so a base below 1 gives a negative factor (b**x / sum(b**x)).
    Giving both is a TypeError.  Wrong types: TypeError; wrong values or shapes: ValueError.
    """
    if base is not None:
        if not (type(temperature) in (int, float) and temperature == 1):
            raise TypeError("give temperature or base, not both (base b is temperature "
                            "1 / ln(b))")
        b = _scale_values(base, "base")
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(b) & (np.asarray(b) > 0) & (np.asarray(b) != 1))
        if np.any(bad):
            _first_bad(np.asarray(b), bad, "base", "finite, > 0 and != 1")
        if isinstance(b, float):
            s = float(np.log(b))
            return None if s == 1.0 else s
        return _per_row(np.log(b), "base", shape, axes)
    if type(temperature) in (int, float) and temperature == 1:
        return None
    t = _scale_values(temperature, "temperature")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(t) & (np.asarray(t) > 0))
    if np.any(bad):
        _first_bad(np.asarray(t), bad, "temperature", "positive and finite")
    with np.errstate(over="ignore", divide="ignore"):
        sc = _finite_scale(np.float64(1.0) / t, "temperature")
    if isinstance(t, float):
        return float(sc)
    return _per_row(sc, "temperature", shape, axes)


def kernel_scale(sc, lay):
    """``row_scale``'s result in the kernels' form: None, a float, or a C-contiguous float64
    (outer, inner) array in the order of the layout's rows (``lay``: a ``_canon.Layout``)."""
    if sc is None or isinstance(sc, float):
        return sc
    return np.ascontiguousarray(sc.transpose(lay.perm)).reshape(lay.outer, lay.inner)
