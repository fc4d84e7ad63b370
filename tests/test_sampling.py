"""Candidate samplers and sampled softmax (issue 11) against formulas written here: TensorFlow's
distributions and expected counts (range_sampler.cc), its _compute_sampled_logits + softmax
cross-entropy, and finite differences.  Every test with ``backend`` runs on every backend."""
import math

import numpy as np
import pytest
from scipy import stats

import fastsoftmax as fs

R = 100
UNIGRAMS = np.arange(1, R + 1, dtype=np.float64) % 7 + 0.5


def _p_log_uniform(r):
    c = np.arange(r, dtype=np.float64)
    return (np.log(c + 2) - np.log(c + 1)) / np.log(r + 1)


def _p_unigram(w, d):
    v = np.asarray(w, np.float64) ** d
    return v / v.sum()


SAMPLERS = {
    "log_uniform": (lambda *a, **k: fs.log_uniform_candidate_sampler(*a, **k),
                    lambda: _p_log_uniform(R)),
    "uniform": (lambda *a, **k: fs.uniform_candidate_sampler(*a, **k),
                lambda: np.full(R, 1.0 / R)),
    "unigram": (lambda *a, **k: fs.fixed_unigram_candidate_sampler(
        *a, unigrams=UNIGRAMS, distortion=0.75, **k), lambda: _p_unigram(UNIGRAMS, 0.75)),
}
TRUE = np.array([[3], [0], [99], [42]])


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_distribution_of_a_million_draws_chi_square(backend, kind):
    sample, prob = SAMPLERS[kind]
    s, te, se = sample(TRUE, 1, 10 ** 6, False, R, rng=12345, backend=backend)
    assert s.dtype == np.int64 and s.shape == (10 ** 6,)
    assert s.min() >= 0 and s.max() < R
    p = prob()
    counts = np.bincount(s, minlength=R)
    _, pval = stats.chisquare(counts, p * 10 ** 6)
    assert pval > 1e-4, pval
    # without unique the expected counts are p * num_sampled
    np.testing.assert_allclose(te, p[TRUE] * 10 ** 6, rtol=1e-12)
    np.testing.assert_allclose(se, p[s] * 10 ** 6, rtol=1e-12)


@pytest.mark.parametrize("kind", list(SAMPLERS))
@pytest.mark.parametrize("unique", [False, True])
def test_same_seed_same_samples_on_every_backend(backend, kind, unique):
    sample, _ = SAMPLERS[kind]
    for num_sampled in (1, 7, 60, R if unique else 500):
        want = sample(TRUE, 1, num_sampled, unique, R, rng=7, backend="numpy")
        got = sample(TRUE, 1, num_sampled, unique, R, rng=np.random.default_rng(7),
                     backend=backend)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
        if unique:
            assert np.unique(got[0]).size == num_sampled


def _tf_unique_draws(seed, num_sampled, r, to_class):
    """Classes and num_tries of TF's unique loop, on the first block of uniforms (documented:
    max(2 * num_sampled, 64) draws), each class found by TF's own transform."""
    u = np.random.default_rng(seed).random(max(2 * num_sampled, 64))
    picked, tries = [], 0
    for v in u:
        tries += 1
        c = to_class(v)
        if c not in picked:
            picked.append(c)
            if len(picked) == num_sampled:
                return np.array(picked), tries
    raise AssertionError("the first block was not enough for this case")


def test_unique_expected_counts_follow_tensorflow(backend):
    """log-uniform, unique: TF samples int(exp(u * log(range_max + 1))) - 1 and reports
    -expm1(num_tries * log1p(-p)) when draws were rejected."""
    S = 20
    logr = math.log(R + 1)
    want_s, tries = _tf_unique_draws(99, S, R, lambda v: int(math.exp(v * logr)) - 1)
    assert tries > S   # collisions happened: the inclusion-probability branch
    s, te, se = fs.log_uniform_candidate_sampler(TRUE, 1, S, True, R, rng=99, backend=backend)
    np.testing.assert_array_equal(s, want_s)
    p = _p_log_uniform(R)
    np.testing.assert_allclose(se, 1 - (1 - p[s]) ** tries, rtol=1e-10)
    np.testing.assert_allclose(te, 1 - (1 - p[TRUE]) ** tries, rtol=1e-10)


def test_unique_without_rejection_reports_p_times_num_sampled(backend):
    big = 10 ** 6
    s, te, se = fs.uniform_candidate_sampler(np.array([[5]]), 1, 3, True, big, rng=1,
                                             backend=backend)
    u = np.random.default_rng(1).random(3)
    np.testing.assert_array_equal(s, np.floor(u * big).astype(np.int64))
    np.testing.assert_allclose(se, np.full(3, 3.0 / big), rtol=1e-12)
    np.testing.assert_allclose(te, [[3.0 / big]], rtol=1e-12)


def test_unigram_zero_counts_are_never_drawn_and_distortion_zero_is_uniform_over_the_rest(
        backend):
    w = np.array([0.0, 5.0, 0.0, 1.0, 2.0])
    s, _, se = fs.fixed_unigram_candidate_sampler(np.array([[1]]), 1, 20000, False, 5,
                                                  unigrams=w, distortion=0.0, rng=3,
                                                  backend=backend)
    assert set(np.unique(s)) == {1, 3, 4}
    np.testing.assert_allclose(se, np.full(20000, 20000 / 3), rtol=1e-12)
    s, _, _ = fs.fixed_unigram_candidate_sampler(np.array([[1]]), 1, 3, True, 5, unigrams=w,
                                                 rng=3, backend=backend)
    assert sorted(s) == [1, 3, 4]


def test_sampler_errors():
    t = np.array([[1], [2]])
    f = fs.log_uniform_candidate_sampler
    with pytest.raises(ValueError, match="num_sampled <= range_max"):
        f(t, 1, 11, True, 10)
    with pytest.raises(ValueError, match="num_sampled must be >= 1"):
        f(t, 1, 0, False, 10)
    with pytest.raises(ValueError, match="num_true=2 disagrees"):
        f(t, 2, 3, False, 10)
    with pytest.raises(ValueError, match=r"in \[0, range_max=10\)"):
        f(np.array([[10]]), 1, 3, False, 10)
    with pytest.raises(TypeError, match="integer class ids"):
        f(t.astype(float), 1, 3, False, 10)
    with pytest.raises(TypeError, match="rng must be"):
        f(t, 1, 3, False, 10, rng="seed")
    with pytest.raises(TypeError, match="unique must be a bool"):
        f(t, 1, 3, 1, 10)
    with pytest.raises(ValueError, match="shape"):
        fs.fixed_unigram_candidate_sampler(t, 1, 3, False, 10, unigrams=[1.0, 2.0])
    with pytest.raises(ValueError, match=">= 0"):
        fs.fixed_unigram_candidate_sampler(t, 1, 3, False, 3, unigrams=[1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="nonzero probability"):
        fs.fixed_unigram_candidate_sampler(t, 1, 3, True, 3, unigrams=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="backend"):
        f(t, 1, 3, False, 10, backend="nope")


# ------------------------------------------------------------------------- sampled softmax
def _tf_sampled_softmax(W, b, labels, x, sv, remove_hits, subtract_log_q):
    """tf.nn.sampled_softmax_loss in float64: _compute_sampled_logits, then
    softmax_cross_entropy_with_logits against 1/num_true on the true classes."""
    s, te, se = sv
    W, b, x = (np.asarray(a, np.float64) for a in (W, b, x))
    nt = labels.shape[1]
    true_logits = np.stack([np.sum(x * W[labels[:, k]], axis=1) + b[labels[:, k]]
                            for k in range(nt)], axis=1)
    samp_logits = x @ W[s].T + b[s]
    if remove_hits:
        for i in range(labels.shape[0]):
            for j in range(s.shape[0]):
                if s[j] in labels[i]:
                    samp_logits[i, j] += -np.finfo(np.float32).max
    if subtract_log_q:
        true_logits = true_logits - np.log(te)
        samp_logits = samp_logits - np.log(se)
    z = np.concatenate([true_logits, samp_logits], axis=1)
    tgt = np.concatenate([np.full_like(true_logits, 1.0 / nt), np.zeros_like(samp_logits)], 1)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return -(tgt * (z - lse[:, None])).sum(axis=1)


def _problem(seed, batch=6, C=30, dim=5, num_true=1, S=8, dtype=np.float64):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((C, dim)).astype(dtype)
    b = (rng.standard_normal(C) * 0.3).astype(dtype)
    x = rng.standard_normal((batch, dim)).astype(dtype)
    labels = np.stack([rng.choice(C, num_true, replace=False) for _ in range(batch)])
    s = rng.choice(C, S, replace=False).astype(np.int64)
    s[0] = labels[0, 0]                       # an accidental hit, at least one
    te = rng.uniform(0.05, 0.9, (batch, num_true))
    se = rng.uniform(0.05, 0.9, S)
    return W, b, labels, x, (s, te, se)


@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sampled_softmax_matches_tensorflows_formulas(backend, num_true, dtype):
    W, b, labels, x, sv = _problem(5 + num_true, num_true=num_true, dtype=dtype)
    before = [a.copy() for a in (W, b, labels, x)]
    for hits in (True, False):
        for logq in (True, False):
            got = fs.sampled_softmax_loss(W, b, labels, x, 8, 30, num_true=num_true,
                                          sampled_values=sv, remove_accidental_hits=hits,
                                          subtract_log_q=logq, backend=backend)
            want = _tf_sampled_softmax(W, b, labels, x, sv, hits, logq)
            assert got.dtype == dtype and got.shape == (6,)
            np.testing.assert_allclose(got, want, rtol=2e-5 if dtype == np.float32 else 1e-12)
    for a, a0 in zip((W, b, labels, x), before):
        np.testing.assert_array_equal(a, a0)


def test_sampled_softmax_gradient_against_finite_differences(backend):
    W, b, labels, x, sv = _problem(11, num_true=2)
    kw = dict(num_true=2, sampled_values=sv, backend=backend)
    loss, gx, (wid, wrows), (bid, bvals) = fs.sampled_softmax_loss(W, b, labels, x, 8, 30,
                                                                   return_grad=True, **kw)
    np.testing.assert_allclose(loss, _tf_sampled_softmax(W, b, labels, x, sv, True, True),
                               rtol=1e-12)
    touched = np.unique(np.concatenate([labels.ravel(), sv[0]]))
    np.testing.assert_array_equal(wid, touched)
    np.testing.assert_array_equal(bid, touched)
    assert wid.dtype == np.int64 and wrows.shape == (touched.size, 5)
    gW = fs.scatter_add(np.zeros_like(W), (wid, wrows))
    gb = fs.scatter_add(np.zeros_like(b), (bid, bvals))

    def f(W_, b_, x_):
        return _tf_sampled_softmax(W_, b_, labels, x_, sv, True, True).sum()

    h = 1e-6
    for arr, grad, which in ((x, gx, 2), (W, gW, 0), (b, gb, 1)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            args = [W.copy(), b.copy(), x.copy()]
            args[which][idx] += h
            up = f(*args)
            args[which][idx] -= 2 * h
            num[idx] = (up - f(*args)) / (2 * h)
        np.testing.assert_allclose(grad, num, atol=1e-7, rtol=1e-6)


def test_sampled_softmax_default_sampler_is_log_uniform_unique(backend):
    W, b, labels, x, _ = _problem(3, C=50)
    sv = fs.log_uniform_candidate_sampler(labels, 1, 10, True, 50, rng=21, backend="numpy")
    got = fs.sampled_softmax_loss(W, b, labels, x, 10, 50, rng=21, backend=backend)
    np.testing.assert_allclose(got, _tf_sampled_softmax(W, b, labels, x, sv, True, True),
                               rtol=1e-12)


def test_sampled_softmax_errors():
    W, b, labels, x, sv = _problem(1)
    f = fs.sampled_softmax_loss
    with pytest.raises(ValueError, match="weights must be"):
        f(W[:-1], b, labels, x, 8, 30, sampled_values=sv)
    with pytest.raises(ValueError, match="biases must have shape"):
        f(W, b[:-1], labels, x, 8, 30, sampled_values=sv)
    with pytest.raises(ValueError, match="inputs must be"):
        f(W, b, labels, x[:, :-1], 8, 30, sampled_values=sv)
    with pytest.raises(ValueError, match=r"labels must be in \[0, num_classes=30\)"):
        f(W, b, labels + 30, x, 8, 30, sampled_values=sv)
    with pytest.raises(ValueError, match="num_true=2 disagrees"):
        f(W, b, labels, x, 8, 30, num_true=2, sampled_values=sv)
    with pytest.raises(ValueError, match="num_sampled must be >= 1"):
        f(W, b, labels, x, 0, 30)
    with pytest.raises(TypeError, match="weights must be a floating-point"):
        f(W.astype(np.int64), b, labels, x, 8, 30, sampled_values=sv)
    with pytest.raises(ValueError, match="holds 8 candidates"):
        f(W, b, labels, x, 7, 30, sampled_values=sv)
    with pytest.raises(TypeError, match="sampled_values must be a tuple"):
        f(W, b, labels, x, 8, 30, sampled_values=sv[0])
    with pytest.raises(ValueError, match="ids must be distinct"):
        fs.scatter_add(np.zeros(3), (np.array([1, 1]), np.ones(2)))
