"""``fastsoftmax bench --realworld``: real clients of scipy.special's softmax family, fitted with
and without ``fastsoftmax.patch_scipy()``, each measurement in a fresh process.

A case is a client model, a data generator and a summary of the fitted model (its parameters and
predictions); tests/test_realworld.py checks the summaries agree with and without the patch on
small data, the bench times ``fit`` on data large enough for the softmax family to matter.
In a fresh process the patch comes first, then the client's import (the patch's import-order
rule, though the patch also rebinds names bound before it).

Not here: scikit-learn's GaussianMixture / BayesianGaussianMixture and naive Bayes, which call
its internal ``sklearn.utils._array_api._logsumexp`` rather than scipy's (1.9), so a
scipy patch does not reach them.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    library: str              # the distribution the case needs
    data: Callable            # (n, rng) -> data
    fit: Callable             # data -> fitted model
    summary: Callable         # (model, data) -> {name: array}: what must agree
    n_test: int               # rows in the tests (fast)
    n_bench: int              # rows in the benchmark (the softmax family matters)


# ------------------------------------------------------------------------------ hmmlearn
def _hmm_data(n, rng, dim=3, k=4):
    means = rng.standard_normal((k, dim)) * 4
    states = np.zeros(n, int)
    for i in range(1, n):
        states[i] = states[i - 1] if rng.random() < 0.9 else rng.integers(k)
    return means[states] + rng.standard_normal((n, dim))


def _fit_gaussian_hmm(X):
    from hmmlearn.hmm import GaussianHMM
    return GaussianHMM(n_components=4, covariance_type="diag", n_iter=15, tol=0.0,
                       random_state=0).fit(X)


def _fit_gmm_hmm(X):
    from hmmlearn.hmm import GMMHMM
    return GMMHMM(n_components=4, n_mix=3, covariance_type="diag", n_iter=10, tol=0.0,
                  random_state=0).fit(X)


def _hmm_summary(m, X):
    out = {"startprob": m.startprob_, "transmat": m.transmat_, "means": m.means_,
           "covars": m.covars_, "score": np.array(m.score(X)), "predict": m.predict(X),
           "proba": m.predict_proba(X)}
    if hasattr(m, "weights_"):
        out["weights"] = m.weights_
    return out


# --------------------------------------------------------------------------- statsmodels
def _ms_data(n, rng):
    states = np.zeros(n, int)
    for i in range(1, n):
        states[i] = states[i - 1] if rng.random() < 0.95 else rng.integers(3)
    y = np.zeros(n)
    for i in range(1, n):
        y[i] = (-2.0, 0.0, 3.0)[states[i]] + 0.3 * y[i - 1] + rng.standard_normal()
    return y


def _fit_markov_regression(y):
    import statsmodels.api as sm
    return sm.tsa.MarkovRegression(y, k_regimes=3).fit(disp=False, maxiter=50)


def _fit_markov_autoregression(y):
    import statsmodels.api as sm
    return sm.tsa.MarkovAutoregression(y, k_regimes=2, order=2).fit(disp=False, maxiter=50)


def _ms_summary(res, y):
    return {"params": np.asarray(res.params), "llf": np.array(res.llf),
            "smoothed": np.asarray(res.smoothed_marginal_probabilities)}


# -------------------------------------------------------------------------- scikit-learn
def _lda_data(n, rng, vocab=300, topics=8):
    topic_words = rng.dirichlet(np.full(vocab, 0.1), topics)
    doc_topics = rng.dirichlet(np.full(topics, 0.3), n)
    counts = np.stack([rng.multinomial(60, p) for p in doc_topics @ topic_words])
    return counts.astype(np.float64)


def _fit_lda(X):
    from sklearn.decomposition import LatentDirichletAllocation
    # evaluate_every: the perplexity of the bound, where LDA calls scipy's logsumexp
    return LatentDirichletAllocation(n_components=8, max_iter=10, evaluate_every=2,
                                     learning_method="batch", random_state=0).fit(X)


def _lda_summary(m, X):
    return {"components": m.components_, "transform": m.transform(X),
            "score": np.array(m.score(X)), "perplexity": np.array(m.perplexity(X))}


CASES = {c.name: c for c in (
    Case("GaussianHMM(4 diag)", "hmmlearn", _hmm_data, _fit_gaussian_hmm, _hmm_summary,
         n_test=400, n_bench=20000),
    Case("GMMHMM(4x3 diag)", "hmmlearn", _hmm_data, _fit_gmm_hmm, _hmm_summary,
         n_test=400, n_bench=5000),
    Case("MarkovRegression(k=3)", "statsmodels", _ms_data, _fit_markov_regression, _ms_summary,
         n_test=300, n_bench=2000),
    Case("MarkovAutoregression(k=2, p=2)", "statsmodels", _ms_data,
         _fit_markov_autoregression, _ms_summary, n_test=300, n_bench=2000),
    Case("LatentDirichletAllocation(8)", "scikit-learn", _lda_data, _fit_lda, _lda_summary,
         n_test=150, n_bench=2000),
)}


# --------------------------------------------------------------------- the fresh process
def _worker(name: str, n: int, patched: bool, repeats: int) -> dict:
    """Run in a fresh process: patch (or not), import the client, fit ``repeats`` times."""
    if patched:
        import fastsoftmax
        fastsoftmax.patch_scipy()
    case = CASES[name]
    data = case.data(n, np.random.default_rng(0))
    case.fit(data)  # warm-up: imports, first-call costs
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        case.fit(data)
        times.append(time.perf_counter() - t0)
    return {"case": name, "n": n, "patched": patched, "times": times}


def measure(name: str, n: int, patched: bool, repeats: int) -> dict:
    code = ("import json, sys; from fastsoftmax.tools.realworld import _worker; "
            f"print(json.dumps(_worker({name!r}, {n}, {patched}, {repeats})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=os.environ.copy())
    if out.returncode:
        raise RuntimeError(f"{name} (patched={patched}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cases=None, rounds: int = 3, repeats: int = 3, quick: bool = False, progress=None):
    """Per case: ``rounds`` pairs of fresh processes (scipy, patched, alternating order), each
    timing ``repeats`` fits after a warm-up; the speedup is the median of the rounds' ratios of
    median fit times."""
    rows = []
    for name in cases or CASES:
        case = CASES[name]
        n = case.n_test if quick else case.n_bench
        ratios, t_s, t_p = [], [], []
        for r in range(rounds):
            if progress:
                progress(f"{name} n={n} round {r + 1}/{rounds}")
            order = (False, True) if r % 2 == 0 else (True, False)
            res = {p: statistics.median(measure(name, n, p, repeats)["times"]) for p in order}
            t_s.append(res[False])
            t_p.append(res[True])
            ratios.append(res[False] / res[True])
        rows.append({"case": name, "library": case.library, "n": n,
                     "scipy_s": statistics.median(t_s), "patched_s": statistics.median(t_p),
                     "speedup": statistics.median(ratios), "ratios": ratios})
    return rows


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for d in ("numpy", "scipy", "hmmlearn", "statsmodels", "scikit-learn", "fastsoftmax"):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = None
    return out


def format_table(rows) -> str:
    lines = ["| model (fit) | library | n | scipy s | patched s | speedup |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['library']} | {r['n']} | {r['scipy_s']:.3f} | "
                     f"{r['patched_s']:.3f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)
