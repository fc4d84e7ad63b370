"""The ``fastsoftmax`` command: exit codes, ``info``, ``bench`` on tiny cases and its JSON schema,
and the case table behind it.  No timing is asserted (benchmarks live in benches/)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _bench, _cli, _dispatch, _tune

# one tiny case, only the light peers: keeps each bench run well under a second
TINY = ["bench", "--quick", "--op", "softmax", "--shape", "8x16", "--dtype", "float32",
        "--peer", "numpy,scipy", "--budget", "0.02", "--no-progress"]


@pytest.fixture(autouse=True)
def _own_tune_file(tmp_path, monkeypatch):
    """No test reads or writes the user's real tuning file."""
    monkeypatch.setenv("FASTSOFTMAX_TUNE_FILE", str(tmp_path / "tune.json"))
    _tune.invalidate()
    yield
    _tune.invalidate()


def _run(argv, capsys):
    rc = _cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize("argv", [
    [],                                        # no command
    ["frobnicate"],                            # unknown command
    ["bench", "--bogus"],                      # unknown option
    ["bench", "--threads", "0"],
    ["bench", "--threads", "one"],
    ["bench", "--budget", "-1"],
    ["bench", "--method", "fastest"],
    ["bench", "--op", "softmaks"],             # unknown op (checked after parsing)
    ["bench", "--dtype", "float16"],
    ["bench", "--peer", "tensorflow"],
    ["bench", "--backend", "fortran"],
    ["bench", "--shape", "12xbanana"],
    ["bench", "--op", "softmax_out", "--shape", "256MB", "--dtype", "float64"],  # no such case
    ["tune", "--show", "--reset"],             # mutually exclusive
    ["tune", "--op", "softmax_out"],           # not a tuned op
    ["info", "--verbose"],
])
def test_usage_errors_exit_2(argv, capsys):
    rc, out, err = _run(argv, capsys)
    assert rc == 2
    assert "error" in err
    assert out == ""


def test_help_exits_0(capsys):
    rc, out, _ = _run(["--help"], capsys)
    assert rc == 0 and "bench" in out and "tune" in out
    rc, out, _ = _run(["bench", "--help"], capsys)
    assert rc == 0 and "--json" in out and "--quick" not in out  # the test option is hidden


def test_module_entry_point_exit_codes():
    exe = [sys.executable, "-m", "fastsoftmax"]
    ok = subprocess.run(exe + ["info"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert f"fastsoftmax {fastsoftmax.__version__}" in ok.stdout
    bad = subprocess.run(exe + ["bench", "--bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "unrecognized arguments: --bogus" in bad.stderr


def test_runtime_failure_exits_1(tmp_path, capsys):
    target = tmp_path / "no_such_dir" / "out.json"
    rc, _, err = _run(TINY + ["--json", str(target)], capsys)
    assert rc == 1
    assert err.startswith("fastsoftmax bench: error:") and "no_such_dir" in err


def test_unavailable_backend_exits_1_with_reason(monkeypatch, capsys):
    monkeypatch.setattr(_dispatch, "available_backends", lambda: ["numpy"])

    def refuse(name):
        raise _dispatch.BackendUnavailableError(f"backend {name!r} is unavailable: not built")
    monkeypatch.setattr(_dispatch, "load", refuse)
    rc, _, err = _run(TINY + ["--backend", "cython"], capsys)
    assert rc == 1
    assert "cython" in err and "not built" in err


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    png = tmp_path / "p.png"
    rc, out, err = _run(TINY + ["--plot", str(png)], capsys)
    assert rc == 1
    assert "matplotlib" in err and "pip install" in err
    assert out == ""  # it fails before measuring anything
    assert not png.exists()


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    rc, _, err = _run(TINY + ["--plot", str(png)], capsys)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- info
def test_info_text(capsys):
    rc, out, _ = _run(["info"], capsys)
    assert rc == 0
    assert out.startswith(f"fastsoftmax {fastsoftmax.__version__}")
    for word in ("backends (auto order)", "threads:", "CPU:", "versions:", "numpy",
                 "dispatch table:"):
        assert word in out
    for name in _dispatch.BACKENDS:  # every backend is listed, available or with its reason
        assert f"  {name} " in out


def test_info_json(capsys):
    rc, out, _ = _run(["info", "--json"], capsys)
    assert rc == 0
    env = json.loads(out)
    assert set(env) >= {"machine", "versions", "backends", "available_backends", "simd",
                        "threads", "tune_table", "tune_file"}
    assert env["versions"]["fastsoftmax"] == fastsoftmax.__version__
    assert env["versions"]["numpy"] == np.__version__
    assert env["available_backends"] == fastsoftmax.available_backends()
    for name, b in env["backends"].items():
        assert b["available"] or b["reason"]
    assert env["threads"] == fastsoftmax.get_num_threads()
    assert env["tune_file"]["exists"] is False


def test_info_says_why_a_tune_file_is_ignored(capsys, tmp_path):
    (tmp_path / "tune.json").write_text("{ not json")
    rc, out, _ = _run(["info"], capsys)
    assert rc == 0
    assert "is ignored" in out and "JSON" in out


# ---------------------------------------------------------------------------------- bench
RESULT_KEYS = {"contender", "kind", "backend", "method", "variant", "median_s", "min_s",
               "samples", "loops", "first_call_s", "gelem_per_s", "gb_per_s", "speedup"}
CASE_KEYS = {"id", "op", "dtype", "shape", "shape_name", "threads", "elements", "bytes",
             "baseline", "results", "skipped", "errors"}


def _check_schema(doc):
    assert doc["schema"] == _bench.SCHEMA
    assert set(doc) >= {"schema", "created", "command", "environment", "settings", "cases",
                        "elapsed_s"}
    assert doc["command"].startswith("fastsoftmax bench")
    for case in doc["cases"]:
        assert set(case) == CASE_KEYS
        assert case["elements"] == int(np.prod(case["shape"]))
        names = [r["contender"] for r in case["results"]]
        assert len(names) == len(set(names))
        for r in case["results"]:
            assert set(r) - {"check", "resolved"} == RESULT_KEYS
            assert r["kind"] in ("ours", "peer")
            assert r["median_s"] > 0 and r["min_s"] <= r["median_s"]
            assert r["samples"] >= 5 and r["loops"] >= 1
            assert np.isclose(r["gelem_per_s"], case["elements"] / r["median_s"] / 1e9)
            assert np.isclose(r["gb_per_s"], case["bytes"] / r["median_s"] / 1e9)
            peers = {x["contender"] for x in case["results"] if x["kind"] == "peer"}
            assert set(r["speedup"]) == peers - {r["contender"]}
            assert all(v > 0 for v in r["speedup"].values())
            if r["kind"] == "ours":
                assert r["contender"].startswith("fastsoftmax[")
            if r["kind"] == "ours" and not r["variant"]:
                assert r["check"]["ok"], r  # our result agrees with the NumPy formula


def test_bench_json_schema(tmp_path, capsys):
    path = tmp_path / "b.json"
    rc, out, err = _run(TINY + ["--json", str(path)], capsys)
    assert rc == 0, err
    doc = json.loads(path.read_text())
    _check_schema(doc)
    (case,) = doc["cases"]
    assert (case["op"], case["dtype"], case["shape"], case["threads"]) == (
        "softmax", "float32", [8, 16], 1)
    got = {r["contender"] for r in case["results"]}
    ours = {f"fastsoftmax[{b}]" for b in fastsoftmax.available_backends() if b != "numpy"}
    assert got == (ours or {"fastsoftmax[numpy]"}) | {"numpy", "scipy"}
    # the table: a header, the case's line, the legend
    assert "vs numpy" in out and "softmax float32 8x16 t1" in out and "Gelem/s" in out


def test_bench_every_op_quick(tmp_path, capsys):
    """Every op of the table runs (numpy reference backend, tiny shape, both dtypes)."""
    path = tmp_path / "b.json"
    rc, _, err = _run(["bench", "--quick", "--shape", "300x5", "--backend", "numpy,auto",
                       "--peer", "numpy,copyto", "--budget", "0.01", "--no-progress",
                       "--json", str(path)], capsys)
    assert rc == 0, err
    doc = json.loads(path.read_text())
    _check_schema(doc)
    assert {c["op"] for c in doc["cases"]} == set(_bench.OPS)
    assert {c["dtype"] for c in doc["cases"]} == {"float32", "float64"}
    for c in doc["cases"]:
        auto = [r for r in c["results"] if r["contender"] == "fastsoftmax[auto]"]
        assert auto[0]["resolved"].split("/")[0] in fastsoftmax.available_backends()
    ce = [c for c in doc["cases"] if c["op"] == "cross_entropy_grad"][0]
    assert "fastsoftmax[numpy] inplace" in {r["contender"] for r in ce["results"]}
    out_case = [c for c in doc["cases"] if c["op"] == "softmax_out"][0]
    assert "copyto" in {r["contender"] for r in out_case["results"]}
    assert all(not c["errors"] for c in doc["cases"])


def test_bench_threads_and_methods(tmp_path, capsys):
    path = tmp_path / "b.json"
    rc, _, err = _run(TINY + ["--threads", "1,2", "--method", "all", "--json", str(path)],
                      capsys)
    assert rc == 0, err
    doc = json.loads(path.read_text())
    assert [c["threads"] for c in doc["cases"]] == [1, 2]
    methods = {r["method"] for r in doc["cases"][0]["results"] if r["kind"] == "ours"}
    assert methods == {"three_pass", "online"}


def test_bench_progress_goes_to_stderr(capsys):
    argv = [a for a in TINY if a != "--no-progress"]
    rc, out, err = _run(argv, capsys)
    assert rc == 0
    assert "1/1 softmax-float32-8x16-t1" in err and "[" in err
    assert "1/1" not in out


def test_bench_list(capsys):
    rc, out, _ = _run(["bench", "--list", "--peer", "numpy"], capsys)
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(_bench.select_cases())
    assert lines[0].startswith("softmax-float32-4096x1000-t1")


def test_failing_contender_is_reported_not_fatal(monkeypatch, capsys):
    def broken(inp):
        def fn():
            raise FloatingPointError("boom")
        return fn
    ops = dict(_bench.OPS)
    ops["softmax"] = _bench.Op(**{**ops["softmax"].__dict__,
                                  "peers": {**ops["softmax"].peers, "scipy": broken}})
    monkeypatch.setattr(_bench, "OPS", ops)
    rc, out, _ = _run(TINY, capsys)
    assert rc == 0
    assert "WARNING" in out and "scipy failed: FloatingPointError: boom" in out


def test_check_flags_a_wrong_result():
    ref = np.array([[0.1, 0.2, 0.7]])
    assert _bench._check(ref * (1 + 1e-5), ref, "float32")[0]
    ok, err = _bench._check(ref[:, ::-1], ref, "float32")
    assert not ok and err > 0.1
    assert not _bench._check(np.full_like(ref, np.nan), ref, "float64")[0]
    assert not _bench._check(ref[:, :2], ref, "float64")[0]


# ----------------------------------------------------------------------------- the table
def test_default_suite_covers_the_issue_shapes():
    cases = _bench.select_cases()
    assert {c.dtype for c in cases} == {"float32"} and {c.threads for c in cases} == {1}
    soft = {c.shape.dims for c in cases if c.op == "softmax"}
    assert soft == {(4096, 1000), (256, 32000), (32, 50257), (1, 4_000_000), (200_000, 10)}
    big = [c for c in cases if c.shape.name == "256MB"]
    assert [c.op for c in big] == ["softmax_out"]
    assert np.prod(big[0].shape.dims) * 4 == 256 * 2**20
    assert {c.op for c in cases} == set(_bench.OPS)


def test_full_suite_and_filters():
    full = _bench.select_cases(full=True)
    assert {c.dtype for c in full} == {"float32", "float64"}
    assert {c.threads for c in full} == {1, 2}
    assert all(c.dtype == "float32" for c in full if c.shape.name == "256MB")
    assert len(full) == len({c.id for c in full})
    some = _bench.select_cases(ops=["logsumexp"], dtypes=["float64"], shapes=["1000x7"],
                               threads=[2])
    assert [(c.op, c.dtype, c.shape.dims, c.threads) for c in some] == [
        ("logsumexp", "float64", (1000, 7), 2)]


def test_every_op_has_the_numpy_baseline_and_known_peers():
    for op in _bench.OPS.values():
        assert op.baseline in op.peers
        assert set(op.peers) <= set(_bench.PEERS)
        for s in op.shapes:
            assert s in _bench.SHAPES


def test_missing_peer_is_skipped_with_reason(monkeypatch):
    real = _bench.peer_available
    monkeypatch.setattr(_bench, "peer_available",
                        lambda p: "torch is not installed" if p == "torch" else real(p))
    cons, skipped = _bench.contenders("softmax", ["numpy"], peers=("numpy", "torch"))
    assert [c.name for c in cons] == ["fastsoftmax[numpy]", "numpy"]
    assert skipped == {"torch": "torch is not installed"}


def test_bench_does_not_leak_thread_settings(capsys):
    before = fastsoftmax.get_num_threads()
    rc, _, _ = _run(TINY + ["--threads", "1"], capsys)
    assert rc == 0
    assert fastsoftmax.get_num_threads() == before


def test_console_script_is_declared():
    """The installed distribution (editable or wheel) declares the `fastsoftmax` command."""
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="console_scripts") if ep.name == "fastsoftmax"]
    assert [ep.value for ep in eps] == ["fastsoftmax._cli:main"]


def test_bench_markdown(capsys):
    rc, out, _ = _run(TINY + ["--markdown"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("| op | dtype | shape | thr | fastest of ours | GB/s |")
    assert lines[2].startswith("| softmax | float32 | 8x16 | 1 |")
