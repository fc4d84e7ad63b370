"""``python -m fastsoftmax``: the same command as the ``fastsoftmax`` console script."""
from .tools.cli import main

raise SystemExit(main())
