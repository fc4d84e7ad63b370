"""The public functions, one module per op family.  Each validates and canonicalizes its arguments
once (``_canon``), picks a backend (``_dispatch``, with the op's registry row), makes exactly one
kernel call on C-contiguous float32/float64 arrays, and shapes the result.  No loop over the data
lives here."""
from .cross_entropy import cross_entropy
from .logsumexp import logsumexp
from .softmax import log_softmax, softmax
from .backward import log_softmax_backward, softmax_backward
from .sigmoid import binary_cross_entropy_with_logits, log_sigmoid, sigmoid

__all__ = ["softmax", "log_softmax", "logsumexp", "cross_entropy",
           "softmax_backward", "log_softmax_backward", "sigmoid", "log_sigmoid",
           "binary_cross_entropy_with_logits"]
from .linear_ce import linear_cross_entropy
from .sampling import (fixed_unigram_candidate_sampler, log_uniform_candidate_sampler,
                       sampled_softmax_loss, scatter_add, uniform_candidate_sampler)

__all__ += ["log_uniform_candidate_sampler", "uniform_candidate_sampler",
            "fixed_unigram_candidate_sampler", "sampled_softmax_loss", "scatter_add",
            "linear_cross_entropy"]
