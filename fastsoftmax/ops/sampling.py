"""Candidate sampling and sampled softmax, with TensorFlow's semantics (docs/large_vocab.md).

The samplers draw float64 uniforms from a numpy ``Generator`` here, in blocks whose sizes depend
only on how far the sampling got, and hand them to the backend's ``sample_candidates`` kernel
(the inverse CDF and the rejection loop of ``unique``): every backend turns one seed into the
same classes.  ``sampled_softmax_loss`` gathers the rows of the true and sampled classes, builds
their logits with NumPy's matmul and runs the fused cross-entropy kernel on them (probability
targets), so the loss and the gradient of the logits come from one pass.
"""
from __future__ import annotations

import functools
import numbers
import operator

import numpy as np

from .. import _canon, _registry
from ._common import backend_for, last_class_axis
from .cross_entropy import cross_entropy

_OP = _registry.OPS["sampled_softmax_loss"]   # the family's row: its kernel is the sampler's
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_BLOCK = 1 << 22                          # uniforms drawn at once (32 MB)


# ------------------------------------------------------------------------------ arguments
def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _generator(rng) -> np.random.Generator:
    """``rng``: None (fresh entropy), an int seed or a numpy Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (numbers.Integral, np.integer)):
        raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")
    if rng < 0:
        raise ValueError(f"an rng seed must be >= 0, got {rng}")
    return np.random.default_rng(int(rng))


def _classes(x, name: str, num_true: int, n_classes: int, what: str) -> np.ndarray:
    """Class ids (batch, num_true) as C-contiguous int64, checked against [0, n_classes)."""
    a = _canon.as_array(x, name)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class ids, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, (batch, num_true); got shape {a.shape}")
    if a.shape[1] != num_true:
        raise ValueError(f"num_true={num_true} disagrees with {name} of shape {a.shape}: "
                         f"{name}.shape[1] must equal num_true")
    t = np.ascontiguousarray(a, dtype=np.int64)
    bad = (t < 0) | (t >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise ValueError(f"{name} must be in [0, {what}={n_classes}); found "
                         f"{int(t.reshape(-1)[i])} at flat position {i}")
    return t


@functools.lru_cache(maxsize=4)
def _log_uniform_cdf(range_max: int) -> np.ndarray:
    """CDF of P(c) = log((c + 2) / (c + 1)) / log(range_max + 1): log(c + 2) / log(R + 1)."""
    cdf = np.log1p(np.arange(1, range_max + 1, dtype=np.float64)) / np.log1p(range_max)
    cdf[-1] = 1.0
    cdf.flags.writeable = False
    return cdf


def _log_uniform_p(c, range_max):
    return np.log1p(1.0 / (np.asarray(c, np.float64) + 1.0)) / np.log1p(range_max)


def _expected_count(p, num_sampled: int, num_tries: int):
    """TensorFlow's expected count (range_sampler.cc): p * num_sampled when every draw was kept
    (always without ``unique``), else the inclusion probability 1 - (1 - p)^num_tries."""
    if num_tries == num_sampled:
        return p * num_sampled
    with np.errstate(divide="ignore"):
        return -np.expm1(num_tries * np.log1p(-p))


def _draw(cdf, range_max, num_sampled, unique, gen, backend, max_tries):
    """(sampled (num_sampled,) int64, num_tries): the kernel fed with uniforms from ``gen``."""
    _, mod, _ = backend_for(backend, _OP, np.dtype(np.float64), (1, range_max, 1))
    out = np.zeros(num_sampled, np.int64)
    state = np.zeros(2, np.int64)
    if not unique:
        mod.sample_candidates(gen.random(num_sampled), cdf, range_max, None, out, state)
        return out, int(state[1])
    seen = np.zeros(range_max, np.int8)
    while state[0] < num_sampled:
        if state[1] >= max_tries:
            raise ValueError(
                f"unique sampling found only {int(state[0])} distinct classes of the "
                f"{num_sampled} asked in {int(state[1])} draws: the distribution is too "
                "concentrated; lower num_sampled or use unique=False")
        # block sizes depend on the state only (the same on every backend); doubling with the
        # draws so far keeps the number of kernel calls logarithmic
        block = min(max(2 * (num_sampled - int(state[0])), 64, int(state[1])), _MAX_BLOCK)
        mod.sample_candidates(gen.random(block), cdf, range_max, seen, out, state)
    return out, int(state[1])


def _sample(true_classes, num_true, num_sampled, unique, range_max, rng, backend, dist):
    num_true = _count(num_true, "num_true", 1)
    num_sampled = _count(num_sampled, "num_sampled", 1)
    range_max = _count(range_max, "range_max", 1)
    if not isinstance(unique, (bool, np.bool_)):
        raise TypeError(f"unique must be a bool, got {unique!r}")
    unique = bool(unique)
    if unique and num_sampled > range_max:
        raise ValueError(f"unique=True needs num_sampled <= range_max: cannot draw {num_sampled} "
                         f"distinct classes of {range_max}")
    t = _classes(true_classes, "true_classes", num_true, range_max, "range_max")
    gen = _generator(rng)
    cdf, prob, support = dist(range_max)
    if unique and num_sampled > support:
        raise ValueError(f"unique=True needs num_sampled <= the {support} classes of nonzero "
                         f"probability, got num_sampled={num_sampled}")
    sampled, tries = _draw(cdf, range_max, num_sampled, unique, gen, backend,
                           max(10 ** 7, 1000 * range_max))
    return (sampled, _expected_count(prob(t), num_sampled, tries),
            _expected_count(prob(sampled), num_sampled, tries))


_SAMPLER_DOC = """

    ``true_classes`` is int (batch, num_true), each in [0, range_max); ``num_sampled`` >= 1
    classes are drawn from [0, range_max), distinct if ``unique`` (then num_sampled <= range_max).
    ``rng``: an int seed or a numpy ``Generator`` (None: fresh entropy); the same seed gives the
    same samples on every backend.  ``backend`` picks the sampling kernel.

    Returns ``(sampled_candidates, true_expected_count, sampled_expected_count)``: int64
    (num_sampled,), float64 (batch, num_true), float64 (num_sampled,).  The expected counts are
    TensorFlow's: ``p * num_sampled`` when every draw was kept (always without ``unique``), else
    ``-expm1(num_tries * log1p(-p))``, ``num_tries`` being the number of draws it took.
    """


def log_uniform_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max, *,
                                  rng=None, backend=None):
    def dist(r):
        return _log_uniform_cdf(r), lambda c: _log_uniform_p(c, r), r
    return _sample(true_classes, num_true, num_sampled, unique, range_max, rng, backend, dist)


log_uniform_candidate_sampler.__doc__ = (
    "Samples classes from the log-uniform (Zipfian) distribution "
    "``P(c) = (log(c + 2) - log(c + 1)) / log(range_max + 1)``, like "
    "tf.random.log_uniform_candidate_sampler." + _SAMPLER_DOC)


def uniform_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max, *,
                              rng=None, backend=None):
    def dist(r):
        return None, lambda c: np.full(np.shape(c), 1.0 / r), r
    return _sample(true_classes, num_true, num_sampled, unique, range_max, rng, backend, dist)


uniform_candidate_sampler.__doc__ = (
    "Samples classes uniformly from [0, range_max), like tf.random.uniform_candidate_sampler."
    + _SAMPLER_DOC)


def fixed_unigram_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max, *,
                                    unigrams, distortion=1.0, rng=None, backend=None):
    w = _canon.as_array(unigrams, "unigrams")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"unigrams must be real numbers, got dtype {w.dtype}")
    if isinstance(distortion, bool) or not isinstance(distortion, numbers.Real):
        raise TypeError(f"distortion must be a real number, got {distortion!r}")
    if not np.isfinite(distortion):
        raise ValueError(f"distortion must be finite, got {distortion!r}")

    def dist(r):
        if w.shape != (r,):
            raise ValueError(f"unigrams must have shape (range_max,) = ({r},), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("unigrams must be finite and >= 0")
        wd = np.power(w.astype(np.float64), float(distortion))
        wd[w == 0] = 0.0        # 0 ** 0 is 1: a class never seen stays out at distortion 0
        total = float(np.sum(wd))
        if not total > 0 or not np.isfinite(total):
            raise ValueError("unigrams (raised to distortion) must have a positive finite sum")
        cdf = np.cumsum(wd) / total
        cdf[-1] = 1.0
        p = wd / total
        return cdf, lambda c: p[c], int(np.count_nonzero(wd))
    return _sample(true_classes, num_true, num_sampled, unique, range_max, rng, backend, dist)


fixed_unigram_candidate_sampler.__doc__ = (
    "Samples classes with probability proportional to ``unigrams[c] ** distortion`` (a list of "
    "range_max counts or probabilities), like tf.random.fixed_unigram_candidate_sampler "
    "(without its reserved ids and shards)." + _SAMPLER_DOC)


# --------------------------------------------------------------------------- sampled softmax
def _float_array(x, name):
    a = _canon.as_array(x, name)
    if a.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}; convert "
                        f"it, e.g. {name}.astype(np.float32)")
    return a


def _sampled_values(sv, num_sampled, num_true, batch, num_classes):
    try:
        sampled, t_exp, s_exp = sv
    except (TypeError, ValueError):
        raise TypeError("sampled_values must be a tuple (sampled_candidates, "
                        "true_expected_count, sampled_expected_count)") from None
    s = _classes(np.reshape(_canon.as_array(sampled, "sampled_candidates"), (1, -1)),
                 "sampled_candidates", np.size(sampled), num_classes, "num_classes")[0]
    if s.shape[0] != num_sampled:
        raise ValueError(f"sampled_values holds {s.shape[0]} candidates, num_sampled is "
                         f"{num_sampled}")
    te = np.asarray(_canon.as_array(t_exp, "true_expected_count"), np.float64)
    se = np.asarray(_canon.as_array(s_exp, "sampled_expected_count"), np.float64)
    if te.shape != (batch, num_true) or se.shape != (num_sampled,):
        raise ValueError(f"expected counts must have shapes ({batch}, {num_true}) and "
                         f"({num_sampled},), got {te.shape} and {se.shape}")
    return s, te, se


def scatter_add(dense, sparse):
    """Adds a sparse gradient ``(ids, rows)`` -- as ``sampled_softmax_loss`` returns for the
    weights and biases -- into the dense array ``dense`` (num_classes, ...) in place:
    ``dense[ids] += rows``, ``ids`` being distinct.  Returns ``dense``."""
    ids, rows = sparse
    ids = np.asarray(ids)
    if not isinstance(dense, np.ndarray):
        raise TypeError("dense must be a numpy array (it is updated in place)")
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise TypeError(f"ids must be a 1-D integer array, got {ids.dtype} of shape {ids.shape}")
    rows = np.asarray(rows)
    if rows.shape != ids.shape + dense.shape[1:]:
        raise ValueError(f"rows must have shape {ids.shape + dense.shape[1:]}, got {rows.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= dense.shape[0]):
        raise ValueError(f"ids must be in [0, {dense.shape[0]})")
    if np.unique(ids).size != ids.size:
        raise ValueError("ids must be distinct")
    dense[ids] += rows
    return dense


def sampled_softmax_loss(weights, biases, labels, inputs, num_sampled, num_classes, *,
                         num_true=1, sampled_values=None, remove_accidental_hits=True,
                         subtract_log_q=True, rng=None, return_grad=False, axis=-1,
                         backend=None):
    """The sampled softmax loss of tf.nn.sampled_softmax_loss, per example, shape (batch,).

    ``weights`` (num_classes, dim) and ``biases`` (num_classes,) are the output layer,
    ``labels`` int (batch, num_true) the true classes, ``inputs`` (batch, dim) the activations.
    ``num_sampled`` classes are drawn by ``log_uniform_candidate_sampler(..., unique=True)``
    with ``rng``, unless ``sampled_values`` gives ``(sampled, true_expected_count,
    sampled_expected_count)`` (then the result is deterministic).  Logits are
    ``inputs @ w.T + b`` for the true and the sampled classes; a sampled class equal to a true
    label of its row (an accidental hit) has -FLT_MAX added to its logit when
    ``remove_accidental_hits``; ``subtract_log_q`` subtracts log(expected count) from every
    logit.  The loss is the softmax cross-entropy against targets 1/num_true on the true
    classes and 0 on the sampled ones.  ``axis`` is the class axis of those logits (-1 only).

    With ``return_grad=True`` the result is ``(loss, grad_inputs, grad_weights, grad_biases)``,
    the gradient of ``loss.sum()``: ``grad_inputs`` like ``inputs``; ``grad_weights = (ids,
    rows)`` with ``ids`` the sorted distinct classes touched (int64, (k,)) and ``rows`` (k, dim);
    ``grad_biases = (ids, values)``.  ``scatter_add(dense, pair)`` adds a pair into an array.
    """
    W = _float_array(weights, "weights")
    x = _float_array(inputs, "inputs")
    b = _float_array(biases, "biases")
    num_classes = _count(num_classes, "num_classes", 1)
    num_sampled = _count(num_sampled, "num_sampled", 1)
    num_true = _count(num_true, "num_true", 1)
    last_class_axis(axis, "(batch, num_true + num_sampled)")
    if W.ndim != 2 or W.shape[0] != num_classes:
        raise ValueError(f"weights must be (num_classes, dim) = ({num_classes}, dim), "
                         f"got shape {W.shape}")
    if x.ndim != 2 or x.shape[1] != W.shape[1]:
        raise ValueError(f"inputs must be (batch, dim) with the weights' dim {W.shape[1]}, "
                         f"got shape {x.shape}")
    if b.shape != (num_classes,):
        raise ValueError(f"biases must have shape ({num_classes},), got {b.shape}")
    batch = x.shape[0]
    lab = _classes(labels, "labels", num_true, num_classes, "num_classes")
    if lab.shape[0] != batch:
        raise ValueError(f"labels have {lab.shape[0]} rows, inputs {batch}")
    res = np.result_type(W, x, b)
    kdt = _canon.compute_dtype(res) or np.dtype(np.float64)
    if sampled_values is None:
        sampled_values = log_uniform_candidate_sampler(
            lab, num_true, num_sampled, True, num_classes, rng=rng, backend=backend)
    sampled, t_exp, s_exp = _sampled_values(sampled_values, num_sampled, num_true, batch,
                                            num_classes)
    W, x, b = (np.asarray(a, kdt) for a in (W, x, b))

    true_w = W[lab]                                                  # (batch, T, dim)
    samp_w = W[sampled]                                              # (S, dim)
    logits = np.empty((batch, num_true + num_sampled), kdt)
    logits[:, :num_true] = np.matmul(true_w, x[:, :, None])[..., 0] + b[lab]
    np.matmul(x, samp_w.T, out=logits[:, num_true:])
    logits[:, num_true:] += b[sampled]
    if remove_accidental_hits:
        hits = (lab[:, :, None] == sampled[None, None, :]).any(axis=1)
        logits[:, num_true:][hits] -= kdt.type(_FLOAT32_MAX)
    if subtract_log_q:
        with np.errstate(divide="ignore"):
            logits[:, :num_true] -= np.log(t_exp).astype(kdt)
            logits[:, num_true:] -= np.log(s_exp).astype(kdt)
    target = np.zeros_like(logits)
    target[:, :num_true] = kdt.type(1.0 / num_true)
    got = cross_entropy(logits, target, reduction="none", return_grad=return_grad,
                        grad_out=logits if return_grad else None, backend=backend)
    if not return_grad:
        return got.astype(res, copy=False)
    loss, g = got
    g_true, g_samp = g[:, :num_true], g[:, num_true:]
    grad_x = np.matmul(g_true[:, None, :], true_w)[:, 0, :] + g_samp @ samp_w
    ids, inv = np.unique(np.concatenate([lab.reshape(-1), sampled]), return_inverse=True)
    n_true = lab.size
    rows = np.zeros((ids.shape[0], W.shape[1]), kdt)
    np.add.at(rows, inv[:n_true], (g_true[:, :, None] * x[:, None, :]).reshape(n_true, -1))
    np.add.at(rows, inv[n_true:], g_samp.T @ x)
    bias_vals = np.bincount(inv, weights=np.concatenate(
        [g_true.reshape(-1), g_samp.sum(axis=0)]).astype(np.float64), minlength=ids.shape[0])
    ids = ids.astype(np.int64)
    return (loss.astype(res, copy=False), grad_x.astype(res, copy=False),
            (ids, rows.astype(res, copy=False)), (ids, bias_vals.astype(res)))
