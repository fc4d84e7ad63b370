"""Which backend and method "auto" runs, per op, dtype and size: the measured table.

``choose(op, dtype, shape3)`` returns ``(backend, method)`` or None, in which case the dispatcher
uses its default order (``_dispatch.AUTO_ORDER``) and the backend's own "auto" method.
"""
from __future__ import annotations


def choose(op: str, dtype, shape3) -> tuple[str, str] | None:
    return None
