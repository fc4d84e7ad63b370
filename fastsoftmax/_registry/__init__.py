"""The one list of ops.  Each row names an op once, with everything that is driven from it:

* ``name``     -- the public function ``fastsoftmax.<name>``, and the op's key in dispatch tables;
* ``family``   -- where it lives: ``ops/<family>.py`` (the public function),
  ``backends/numba/<family>.py`` and ``csrc/fsm_<family>.h`` (the kernels);
* ``kernel``   -- its entry in the kernel contract (docs/DESIGN.md), which every backend module
  exposes, ``backends/reference.py`` (the NumPy reference) included;
* ``methods``  -- the ``method=`` values its kernels take ("auto" first);
* ``scheme``   -- its size-class scheme for tuning (``_policy.SCHEMES``);
* ``inputs``   -- ``(shape, axis, dtype, rng, values) -> {parameter: array}``: arguments of the
  public function for data of ``shape`` reduced along ``axis``; ``values`` is one of ``VALUES``;
* ``tune_out`` -- the preallocated-output argument ``fastsoftmax tune`` passes (None: none);
* ``masked``   -- the kernel entry of the op's ``where=`` form (None: the op takes no mask),
  dispatched as the op itself (same row, same tables); tested by tests/test_where.py, not by
  the contract grid;
* ``grid``     -- the contract tests' grid (tests/test_contract.py): shapes and axes, dtypes,
  layouts, value kinds and option sets, run on every backend and ISA path against the reference;
* ``benches``  -- its benchmark rows (``fastsoftmax bench``, benches/): inputs, bytes moved,
  options, shapes and peers.

A peer is ``make(lib, inputs) -> fn``, where ``lib`` is the peer's library as the bench engine
imports it (``numpy``, ``scipy.special``, ``torch``, ``jax`` with float64 enabled; ``copyto`` gets
numpy; ``onnxruntime`` gets the engine's one-node model runner, ``lib.one_node(op_type, feed,
out_shape, **attributes) -> run(feed)``, its session on the case's thread budget) and ``fn()``
runs the op once.  A peer without the op (onnxruntime has no gradient) is left out of the row.
The rows are built per op family, in this package's modules: ``core`` (the scipy.special
drop-ins and cross-entropy), ``training`` (backward passes, sigmoid losses) and ``large_vocab``
(sampled softmax, fused linear cross-entropy), on ``common`` (the row types, data, shapes and peer
adapters they share).  The package imports nothing else from fastsoftmax, so every layer may read
it.  How to add an op: docs/DESIGN.md.
"""
from __future__ import annotations

from .common import BENCH_SHAPES, LAYOUTS, VALUES, Bench, Grid, Op, values
from .core import CORE_OPS
from .large_vocab import LARGE_VOCAB_OPS
from .training import TRAINING_OPS

__all__ = ["BENCH_SHAPES", "BENCHES", "DEFAULT_SUITE", "FIRST_CALL_SUITE", "LAYOUTS", "OPS",
           "SMALL_SUITE", "VALUES", "Bench", "Grid", "Op", "values"]

OPS: dict[str, Op] = {op.name: op for op in (*CORE_OPS, *TRAINING_OPS, *LARGE_VOCAB_OPS)}

BENCHES: dict[str, tuple[Op, Bench]] = {b.name: (op, b) for op in OPS.values() for b in op.benches}

# the default `fastsoftmax bench` suite: float32, one thread, these (bench, shapes) pairs
DEFAULT_SUITE = (
    ("softmax", BENCH_SHAPES),
    ("log_softmax", ("4096x1000", "256x32000")),
    ("logsumexp", ("4096x1000", "1x4000000")),
    ("cross_entropy", ("4096x1000", "32x50257")),
    ("cross_entropy_grad", ("4096x1000", "256x32000")),
    ("softmax_out", ("256MB",)),
    ("softmax_backward", ("4096x1000",)),
    ("log_softmax_backward", ("4096x1000",)),
    ("sigmoid", ("4096x1000",)),
    ("log_sigmoid", ("4096x1000",)),
    ("bce_with_logits_grad", ("4096x1000",)),
    ("sampled_softmax_loss", ("256x32000",)),
    ("linear_cross_entropy_grad", ("256x32000",)),
)

# the small-call suite (in the default run): per-call time of tiny contiguous calls, float32 and
# float64, one thread; a shape named by one number is a 1-D array of that many elements
SMALL_SUITE = (
    ("softmax", ("10", "100", "1000")),
    ("log_softmax", ("10", "100", "1000")),
    ("logsumexp", ("10", "100", "1000")),
    ("cross_entropy", ("32x10",)),
)

# the first-call suite (in the default run): these bench rows' first call, float32 and float64,
# each in a fresh process, with an empty and a warm Numba cache, on these thread budgets
FIRST_CALL_SUITE = (("softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy_grad"),
                    "4096x1000", (1, 2))
