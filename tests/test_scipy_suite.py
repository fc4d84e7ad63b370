"""scipy's own tests of logsumexp / softmax / log_softmax (``scipy/special/tests/
test_logsumexp.py`` of the installed scipy), run against fastsoftmax on every backend and ISA path.

Each backend runs the module in a child pytest (scipy's conftest supplies its ``xp`` fixture and
markers), with the environment naming the backend (FASTSOFTMAX_BACKEND, FASTSOFTMAX_ISA).  The
module is imported as scipy ships it -- its ``make_xp_test_case(logsumexp)`` decorators read
scipy's capabilities table, keyed by scipy's functions -- and then, before any test runs, its
globals ``logsumexp``, ``softmax`` and ``log_softmax`` are pointed at fastsoftmax's drop-ins (the
scipy-signature wrappers of ``fastsoftmax._scipy_patch``).  The child counts calls into
fastsoftmax, so a run that tested scipy's own functions fails.

The deliberate differences from scipy are in docs/differences.md; any that shows up as a failure
of scipy's suite is listed in ``DELIBERATE`` (none today) and must be documented there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fastsoftmax
from conftest import BACKEND_PARAMS

scipy_special = pytest.importorskip("scipy.special")
SCIPY_TESTS = os.path.join(os.path.dirname(scipy_special.__file__), "tests", "test_logsumexp.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "differences.md")

# test node ids of scipy's suite that fail by a documented design decision (docs/differences.md)
DELIBERATE: dict[str, str] = {}

_CHILD = r"""
import json, sys
import pytest
import fastsoftmax
from fastsoftmax import _scipy_patch

calls = {"n": 0}

def counted(fn):
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        return fn(*args, **kwargs)
    return wrapper

class PointAtFastsoftmax:
    def __init__(self):
        self.outcomes = {}
    def pytest_collection_modifyitems(self, items):
        for mod in {item.module for item in items}:
            for name, ours in _scipy_patch.PATCHED.items():
                if name in vars(mod):
                    setattr(mod, name, counted(ours))
    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            key = "xfailed" if hasattr(report, "wasxfail") else report.outcome
            self.outcomes.setdefault(key, []).append(report.nodeid.split("::", 1)[-1])

plugin = PointAtFastsoftmax()
rc = pytest.main([sys.argv[1], "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                  "-W", "ignore::DeprecationWarning"], plugins=[plugin])
from fastsoftmax import _dispatch
isa = _dispatch.load("cython").get_isa() if _dispatch.requested() == "cython" else None
json.dump({"rc": int(rc), "calls": calls["n"], "backend": _dispatch.requested(), "isa": isa,
           "outcomes": plugin.outcomes}, open(sys.argv[2], "w"))
"""


def _env(param):
    env = dict(os.environ)
    env.pop("FASTSOFTMAX_ISA", None)
    if param.startswith("cython-"):
        env["FASTSOFTMAX_BACKEND"] = "cython"
        env["FASTSOFTMAX_ISA"] = param.split("-", 1)[1]
    else:
        env["FASTSOFTMAX_BACKEND"] = param
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_scipy_suite(param, tmp_path):
    """{outcome: [test ids]}, calls into fastsoftmax, exit status of scipy's suite on ``param``."""
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", _CHILD, SCIPY_TESTS, str(out)], env=_env(param),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.exists(), f"scipy's suite did not report:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    res = json.loads(out.read_text())
    res["log"] = proc.stdout[-4000:]
    return res


@pytest.mark.parametrize("param", BACKEND_PARAMS)
def test_scipy_suite_passes_against_fastsoftmax(param, tmp_path):
    res = run_scipy_suite(param, tmp_path)
    outcomes = res["outcomes"]
    counts = {k: len(v) for k, v in outcomes.items()}
    print(f"scipy's test_logsumexp.py on {param}: {counts}, {res['calls']} calls into fastsoftmax")
    # pytest's 5 (nothing collected) or any other non-zero status is a failure
    failed = [t for t in outcomes.get("failed", []) if t not in DELIBERATE]
    assert not failed, f"{param}: scipy's tests fail: {failed}\n{res['log']}"
    assert res["rc"] == 0, f"{param}: scipy's suite exited {res['rc']}\n{res['log']}"
    assert counts.get("passed", 0) >= 400, counts  # 407 in scipy 1.17
    assert res["calls"] >= 300, "scipy's tests did not call fastsoftmax"
    want = param.split("-", 1)
    assert [res["backend"]] + ([res["isa"]] if res["isa"] else []) == want, res


def test_deliberate_differences_are_documented():
    text = open(DOC, encoding="utf-8").read()
    for test_id, heading in DELIBERATE.items():
        assert heading in text, f"{test_id}: document {heading!r} in docs/differences.md"


def test_the_suite_is_found_and_pointed_at_fastsoftmax(tmp_path):
    """The harness itself: with fastsoftmax's logsumexp made wrong, scipy's suite fails."""
    env = _env("numpy")
    out = tmp_path / "result.json"
    broken = _CHILD.replace("from fastsoftmax import _scipy_patch",
                            "from fastsoftmax import _scipy_patch\n"
                            "_scipy_patch.PATCHED = dict(_scipy_patch.PATCHED, logsumexp="
                            "lambda *a, **k: 1.0 + _scipy_patch._ops.logsumexp(*a, **k))")
    subprocess.run([sys.executable, "-c", broken, SCIPY_TESTS, str(out)], env=env, cwd=tmp_path,
                   capture_output=True, text=True, timeout=600)
    res = json.loads(out.read_text())
    assert len(res["outcomes"].get("failed", [])) > 20 and res["rc"] == 1
    assert fastsoftmax.__file__.startswith(ROOT)
