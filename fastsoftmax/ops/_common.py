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
