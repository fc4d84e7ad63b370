"""``summarize.py`` reads what ``fastsoftmax bench --json`` writes (not a benchmark: a check that
the two agree, run with the suite)."""
import importlib.util
import json
import os

import pytest

from fastsoftmax.tools import cli

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def summarize():
    spec = importlib.util.spec_from_file_location("summarize", os.path.join(HERE, "summarize.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(contender, median, speedup, variant=None):
    return {"contender": contender, "kind": "peer" if "[" not in contender else "ours",
            "variant": variant, "median_s": median, "speedup": speedup}


def _case(op, dtype, threads, results):
    return {"op": op, "dtype": dtype, "threads": threads, "shape_name": "8x16",
            "results": results}


def test_summarize_a_synthetic_run(summarize, tmp_path, capsys):
    cases = [
        _case("softmax", "float32", 1, [
            _result("fastsoftmax[numba]", 1.0, {"numpy": 4.0, "torch": 2.0}),
            _result("fastsoftmax[cython]", 2.0, {"numpy": 2.0, "torch": 0.5}),
            _result("fastsoftmax[cython] inplace", 0.1, {"numpy": 40.0, "torch": 20.0},
                    variant="inplace"),  # left out
            _result("numpy", 4.0, {"torch": 0.5}), _result("torch", 2.0, {"numpy": 2.0})]),
        _case("logsumexp", "float32", 1, [
            _result("fastsoftmax[numba]", 1.0, {"numpy": 9.0, "torch": 1.0}),
            _result("fastsoftmax[cython]", 1.5, {"numpy": 6.0, "torch": 2.0 / 3})]),
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"cases": cases}))
    summarize.main(str(path))
    out = capsys.readouterr().out
    # the fastest per case is numba in both: vs numpy geomean(4, 9) = 6, vs torch geomean(2, 1)
    assert "| float32 | 1 | 1.41x; 1.00x: logsumexp float32 8x16 (numba) | 6.00x (min 4.00)" in out
    assert "| numba | 1 | 1.41x | 1.00x (logsumexp float32 8x16 (numba)) | 0 of 2 | 6.00x |" in out
    assert "| cython | 1 | 0.58x | 0.50x (softmax float32 8x16 (cython)) | 2 of 2 | 3.46x |" in out
    assert "float64" not in out and "inplace" not in out and "40.00x" not in out


def test_summarize_a_real_run_without_torch(summarize, tmp_path, capsys):
    """A run of the bench engine without torch: every backend still gets its row."""
    path = tmp_path / "bench.json"
    rc = cli.main(["bench", "--quick", "--op", "softmax,logsumexp", "--shape", "8x16",
                   "--dtype", "float32", "--backend", "numpy,auto", "--peer", "numpy,scipy",
                   "--budget", "0.01", "--no-progress", "--json", str(path)])
    assert rc == 0
    capsys.readouterr()
    summarize.main(str(path))
    out = capsys.readouterr().out
    assert "Our fastest backend per case:" in out
    lines = out.splitlines()
    assert any(line.startswith("| float32 | 1 | - | ") for line in lines)  # no torch column
    for backend in ("numpy", "auto"):
        assert any(line.startswith(f"| {backend} | 1 | - | - | - | ") for line in lines), out
