"""Which backend "auto" runs, per op, dtype and size: the measured table.

``choose`` returns a backend name, or None to let the dispatcher use its default order
(``_dispatch.AUTO_ORDER``).
"""
from __future__ import annotations


def choose(op: str, dtype, shape3) -> str | None:
    return None
