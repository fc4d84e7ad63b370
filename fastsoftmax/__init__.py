"""fastsoftmax: compiled softmax, log_softmax, logsumexp and fused cross-entropy for NumPy arrays.

A drop-in for ``scipy.special.softmax / log_softmax / logsumexp`` (same signatures, dtypes, shapes,
values and edge cases), and cross-entropy with PyTorch's options and its gradient in one pass.
Kernels are compiled twice, with Numba and as a C extension; a dispatcher picks one per call.
The package's layers and how to add an op: docs/DESIGN.md.
"""
from ._dispatch import (
    BackendUnavailableError,
    available_backends,
    get_num_threads,
    info,
    set_num_threads,
    use_backend,
)
from ._scipy_patch import patch_scipy, patched_scipy, unpatch_scipy
from ._version import __version__
from .ops import cross_entropy, log_softmax, logsumexp, softmax
from .ops import (binary_cross_entropy_with_logits, log_sigmoid, log_softmax_backward, sigmoid,
                  softmax_backward)
from .ops import (fixed_unigram_candidate_sampler, linear_cross_entropy,
                  log_uniform_candidate_sampler, sampled_softmax_loss, scatter_add,
                  uniform_candidate_sampler)

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "cross_entropy",
    "softmax_backward",
    "log_softmax_backward",
    "sigmoid",
    "log_sigmoid",
    "binary_cross_entropy_with_logits",
    "available_backends",
    "use_backend",
    "set_num_threads",
    "get_num_threads",
    "info",
    "BackendUnavailableError",
    "patch_scipy",
    "unpatch_scipy",
    "patched_scipy",
    "__version__",
]
__all__ += ["log_uniform_candidate_sampler", "uniform_candidate_sampler",
            "fixed_unigram_candidate_sampler", "sampled_softmax_loss", "scatter_add",
            "linear_cross_entropy"]
