"""``python -m fastsoftmax``: the same command as the ``fastsoftmax`` console script."""
from ._cli import main

raise SystemExit(main())
