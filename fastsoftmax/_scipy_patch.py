"""``patch_scipy()`` / ``unpatch_scipy()`` / ``with patched_scipy(): ...``: scipy.special's
softmax family replaced by fastsoftmax's, for code you cannot edit (hmmlearn, statsmodels,
scikit-learn's LDA, ...).

What is replaced: each name of ``PATCHED`` in ``scipy.special``, and -- the case of
``from scipy.special import logsumexp`` run before the patch -- every global of an imported
module (outside scipy itself) that is bound to scipy's original function.  Modules imported after
the patch bind ours through ``scipy.special``.  What cannot be reached: references held
elsewhere (a default argument, a closure, a dict, an attribute of an object); for those the rule
is to patch before importing the client.  ``unpatch_scipy()`` puts every replaced binding back.

The replacements are scipy-signature wrappers: NumPy input (arrays, lists, scalars) runs
fastsoftmax; anything else (torch / cupy / jax arrays through scipy's array-API support) goes to
the original scipy function.  Adding a function (expit, log_expit once fastsoftmax has them) is
one row of ``PATCHED``.
"""
from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np

from . import ops as _ops

# scipy.special name -> the fastsoftmax function that replaces it (same signature)
PATCHED = {
    "softmax": lambda x, axis=None: _ops.softmax(x, axis=axis),
    "log_softmax": lambda x, axis=None: _ops.log_softmax(x, axis=axis),
    "logsumexp": lambda a, axis=None, b=None, keepdims=False, return_sign=False:
        _ops.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign),
}

_lock = threading.Lock()
_state: dict | None = None   # while patched: {"originals": {name: fn}, "bindings": [...]}


def _numpy_like(v) -> bool:
    # exact ndarrays (a masked array or matrix keeps scipy's own handling), NumPy and Python
    # scalars, lists and tuples
    return v is None or type(v) is np.ndarray or isinstance(v, (np.generic, list, tuple, int,
                                                                  float, complex, bool))


def _wrapper(name, ours, original):
    def patched(*args, **kwargs):
        if all(_numpy_like(v) for v in args) and all(_numpy_like(v) for v in kwargs.values()):
            return ours(*args, **kwargs)
        return original(*args, **kwargs)
    patched.__name__ = name
    patched.__qualname__ = name
    patched.__module__ = "fastsoftmax"
    patched.__doc__ = (f"fastsoftmax's {name}, patched into scipy.special by "
                       f"fastsoftmax.patch_scipy().\n\n{original.__doc__ or ''}")
    patched.__wrapped__ = original
    patched._fastsoftmax_patch = True
    return patched


def _special():
    try:
        import scipy.special
    except ImportError as exc:
        raise ImportError(
            "fastsoftmax.patch_scipy() patches scipy.special, and scipy is not installed "
            "(pip install scipy); without scipy, call fastsoftmax.softmax / log_softmax / "
            "logsumexp directly"
        ) from exc
    return scipy.special


def _rebind(old_to_new: dict) -> list:
    """Replace, in every imported module outside scipy, globals that are a key of
    ``old_to_new`` by its value; return [(module, attribute, old)]."""
    by_id = {id(old): (old, new) for old, new in old_to_new.items()}
    done = []
    for modname, mod in list(sys.modules.items()):
        if mod is None or modname == "scipy" or modname.startswith("scipy."):
            continue
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        try:
            hits = [(k, v) for k, v in d.items() if id(v) in by_id and by_id[id(v)][0] is v]
        except RuntimeError:  # a module mutating its globals meanwhile
            continue
        for k, v in hits:
            d[k] = by_id[id(v)][1]
            done.append((d, k, v))
    return done


def patch_scipy(rebind_imported: bool = True) -> None:
    """Replace ``scipy.special.softmax``, ``log_softmax`` and ``logsumexp`` with fastsoftmax's
    (and, with ``rebind_imported``, the copies modules took with ``from scipy.special import
    ...``).  Idempotent; ``unpatch_scipy()`` undoes it.  ImportError without scipy."""
    global _state
    special = _special()
    with _lock:
        if _state is not None:
            return
        originals = {n: getattr(special, n) for n in PATCHED}
        wrappers = {n: _wrapper(n, PATCHED[n], originals[n]) for n in PATCHED}
        for n, w in wrappers.items():
            setattr(special, n, w)
        bindings = _rebind({originals[n]: wrappers[n] for n in PATCHED}) if rebind_imported \
            else []
        _state = {"originals": originals, "wrappers": wrappers, "bindings": bindings}


def unpatch_scipy() -> None:
    """Put scipy's functions back, in ``scipy.special`` and wherever the patch bound ours (modules
    imported while patched included).  Does nothing when not patched."""
    global _state
    with _lock:
        if _state is None:
            return
        special = _special()
        for n, fn in _state["originals"].items():
            setattr(special, n, fn)
        for d, k, old in _state["bindings"]:
            if getattr(d.get(k), "_fastsoftmax_patch", False):
                d[k] = old
        _rebind({_state["wrappers"][n]: _state["originals"][n] for n in PATCHED})
        _state = None


def scipy_is_patched() -> bool:
    return _state is not None


@contextlib.contextmanager
def patched_scipy(rebind_imported: bool = True):
    """``with patched_scipy(): ...`` runs the block with scipy patched (see :func:`patch_scipy`);
    a patch already in force when the block starts stays after it."""
    already = _state is not None
    patch_scipy(rebind_imported)
    try:
        yield
    finally:
        if not already:
            unpatch_scipy()
