"""The public functions, one module per op family.  Each validates and canonicalizes its arguments
once (``_canon``), picks a backend (``_dispatch``, with the op's registry row), makes exactly one
kernel call on C-contiguous float32/float64 arrays, and shapes the result.  No loop over the data
lives here."""
from .cross_entropy import cross_entropy
from .logsumexp import logsumexp
from .softmax import log_softmax, softmax

__all__ = ["softmax", "log_softmax", "logsumexp", "cross_entropy"]
