"""The ``fastsoftmax`` command: exit codes, ``info``, ``bench`` on tiny cases and its JSON schema,
and the case table behind it.  No timing is asserted (benchmarks live in benches/)."""
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _dispatch, _registry, _tables
from fastsoftmax.tools import bench as _bench
from fastsoftmax.tools import cli as _cli

# one tiny case, only the light peers: keeps each bench run well under a second
TINY = ["bench", "--quick", "--op", "softmax", "--shape", "8x16", "--dtype", "float32",
        "--peer", "numpy,scipy", "--budget", "0.02", "--no-progress"]


@pytest.fixture(autouse=True)
def _own_tune_file(tmp_path, monkeypatch):
    """No test reads or writes the user's real tuning file."""
    monkeypatch.setenv("FASTSOFTMAX_TUNE_FILE", str(tmp_path / "tune.json"))
    _dispatch.invalidate()
    yield
    _dispatch.invalidate()


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
def _builtin_line():
    """What ``info`` says of the built-in table in force on this CPU (possibly none)."""
    name, doc, match = _tables.builtin_for_this_cpu()
    if doc is None:
        return "no built-in table for a CPU like this one: the default order", match
    return (f"built-in table {name} (measured on {doc['fingerprint']['cpu'].split('|')[0]}; "
            f"match: {match})"), match


def _fake_cpu(monkeypatch, cpu_id, simd):
    model, arch, flags = cpu_id.split("|")
    fake = {"model": model, "flags": flags.split(","), "machine": arch, "simd": simd,
            "id": cpu_id}
    monkeypatch.setattr(_tables, "cpu_summary", lambda: fake)
    _dispatch.invalidate()


def test_info_text(capsys, tmp_path):
    rc, out, _ = _run(["info"], capsys)
    assert rc == 0
    assert out.startswith(f"fastsoftmax {fastsoftmax.__version__}")
    for word in ("backends (auto order)", "threads:", "CPU:", "versions:", "numpy",
                 "dispatch table:"):
        assert word in out
    for name in _dispatch.BACKENDS:  # every backend is listed, available or with its reason
        assert f"  {name} " in out
    line, match = _builtin_line()
    assert f"dispatch table: {line}; no {tmp_path / 'tune.json'}\n" in out
    yes = "yes" if match == "this CPU" else "no"
    assert f"\n  measured on this CPU: {yes}\n" in out


def test_info_json(capsys, tmp_path):
    rc, out, _ = _run(["info", "--json"], capsys)
    assert rc == 0
    env = json.loads(out)
    assert set(env) >= {"machine", "versions", "backends", "available_backends", "simd",
                        "threads", "tune_table", "tune_file", "dispatch_table"}
    assert env["versions"]["fastsoftmax"] == fastsoftmax.__version__
    assert env["versions"]["numpy"] == np.__version__
    assert env["available_backends"] == fastsoftmax.available_backends()
    for name, b in env["backends"].items():
        assert b["available"] or b["reason"]
    assert env["threads"] == fastsoftmax.get_num_threads()
    assert env["tune_file"] == {"path": str(tmp_path / "tune.json"), "exists": False,
                                "usable": False, "problem": None, "entries": 0}
    assert env["dispatch_table"] == fastsoftmax.info()["dispatch_table"]
    assert env["tune_table"] == env["dispatch_table"]["source"]
    name, _, match = _tables.builtin_for_this_cpu()
    assert env["dispatch_table"]["builtin_match"] == match
    assert env["dispatch_table"]["source"] == (f"builtin:{name}" if name else "default order")
    assert env["dispatch_table"]["measured_on_this_cpu"] is (match == "this CPU")
    assert env["machine"]["simd_flags"] == _tables.cpu_summary()["flags"]


def test_info_says_why_a_tune_file_is_ignored(capsys, tmp_path):
    (tmp_path / "tune.json").write_text("{ not json")
    rc, out, _ = _run(["info"], capsys)
    assert rc == 0
    assert "is ignored" in out and "JSON" in out
    line, _ = _builtin_line()
    assert f"dispatch table: {line}; {tmp_path / 'tune.json'} is ignored: " in out
    rc, out, _ = _run(["info", "--json"], capsys)
    env = json.loads(out)
    tf = env["tune_file"]
    assert (tf["exists"], tf["usable"], tf["entries"]) == (True, False, 0)
    assert "JSON" in tf["problem"]
    assert "JSON" in env["dispatch_table"]["user_file_ignored"]
    assert "user_file" not in env["dispatch_table"]


def test_info_with_a_usable_tune_file(capsys, tmp_path):
    from fastsoftmax.tools import tune

    path = tmp_path / "tune.json"
    tune.write(str(path), [{"op": "logsumexp", "dtype": "float32", "n": "<=32", "rows": "1",
                            "layout": "last", "threads": "t1", "backend": "numpy",
                            "method": "auto"}], {})
    rc, out, _ = _run(["info"], capsys)
    assert rc == 0
    line, _ = _builtin_line()
    assert f"dispatch table: {path} (1 entries), then the {line}\n" in out
    assert "\n  measured on this CPU: yes\n" in out
    rc, out, _ = _run(["info", "--json"], capsys)
    env = json.loads(out)
    assert env["tune_file"] == {"path": str(path), "exists": True, "usable": True,
                                "problem": None, "entries": 1}
    assert env["dispatch_table"]["user_file"] == str(path) == env["tune_table"]
    assert env["dispatch_table"]["measured_on_this_cpu"] is True


@pytest.mark.parametrize("same_cpu", [True, False], ids=["this-cpu", "same-simd-class"])
def test_info_on_the_cpu_of_a_shipped_table(capsys, monkeypatch, same_cpu):
    name = sorted(_tables.builtin_docs())[0]
    fp = _tables.builtin_docs()[name]["fingerprint"]
    _fake_cpu(monkeypatch, fp["cpu"] if same_cpu else "Cousin CPU|x86_64|x", fp["simd"])
    rc, out, _ = _run(["info"], capsys)
    assert rc == 0
    match = "this CPU" if same_cpu else f"same SIMD class ({fp['simd']})"
    assert (f"dispatch table: built-in table {name} (measured on {fp['cpu'].split('|')[0]}; "
            f"match: {match})") in out
    assert f"\n  measured on this CPU: {'yes' if same_cpu else 'no'}\n" in out
    rc, out, _ = _run(["info", "--json"], capsys)
    dt = json.loads(out)["dispatch_table"]
    assert (dt["builtin"], dt["builtin_match"], dt["source"]) == (name, match, f"builtin:{name}")
    assert dt["measured_on_this_cpu"] is same_cpu


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
    assert {c["op"] for c in doc["cases"]} == set(_registry.BENCHES)
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
    def broken(lib, inp):
        def fn():
            raise FloatingPointError("boom")
        return fn
    op, bench = _registry.BENCHES["softmax"]
    monkeypatch.setitem(_registry.BENCHES, "softmax", (op, bench._replace(
        peers={**bench.peers, "scipy": broken})))
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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_wrong_result_into_a_shared_out_buffer_is_flagged(monkeypatch, dtype):
    """softmax_out: the baseline and our contender write into the same ``out`` buffer; the check
    must compare with the baseline's values, not with the buffer our call overwrote."""
    class Wrong:
        @staticmethod
        def softmax(x, axis=-1, out=None, **kw):
            out[...] = 0.5
            return out
    monkeypatch.setattr(_bench, "_public", Wrong)
    (case,) = _bench.select_cases(ops=["softmax_out"], dtypes=[dtype], shapes=["8x16"])
    res = _bench.run_case(case, ["numpy"], peers=("numpy",), budget_s=0.002)
    ours = next(r for r in res["results"] if r["contender"] == "fastsoftmax[numpy]")
    assert ours["check"]["ok"] is False and ours["check"]["max_rel_err"] > 0.1


# ----------------------------------------------------------------------------- the table
def test_default_suite_covers_the_issue_shapes():
    cases = _bench.select_cases()
    assert {c.dtype for c in cases} == {"float32"} and {c.threads for c in cases} == {1}
    soft = {c.shape.dims for c in cases if c.op == "softmax"}
    assert soft == {(4096, 1000), (256, 32000), (32, 50257), (1, 4_000_000), (200_000, 10)}
    big = [c for c in cases if c.shape.name == "256MB"]
    assert [c.op for c in big] == ["softmax_out"]
    assert np.prod(big[0].shape.dims) * 4 == 256 * 2**20
    assert {c.op for c in cases} == set(_registry.BENCHES)
    # exactly the registry's default suite, in its order
    want = [(o, s) for o, names in _registry.DEFAULT_SUITE for s in names]
    assert [(c.op, c.shape.name) for c in cases] == want


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
    for name, (op, bench) in _registry.BENCHES.items():
        assert bench.name == name and op is _registry.OPS[op.name] and bench in op.benches
        assert bench.baseline in bench.peers
        assert set(bench.peers) <= set(_bench.PEERS) <= set(_bench.PEER_LIBS)
        for s in bench.shapes:
            assert s in _bench.SHAPES
        params = inspect.signature(getattr(fastsoftmax, op.name)).parameters
        assert bench.inplace is None or bench.inplace in params
        assert set(bench.options or {}) <= set(params)


def test_full_suite_is_every_bench_row_and_its_shapes():
    full = _bench.select_cases(full=True)
    for name, (_, bench) in _registry.BENCHES.items():
        for s in bench.shapes:
            for d in _bench.SHAPES[s].dtypes:
                got = [c for c in full if (c.op, c.shape.name, c.dtype) == (name, s, d)]
                assert sorted(c.threads for c in got) == [1, 2], (name, s, d)


@pytest.mark.parametrize("name", list(_registry.BENCHES))
def test_contenders_of_each_bench_row(name, monkeypatch):
    """Ours per backend x method (methods only for an op that takes them), the in-place variant
    where the row names an output argument (not checked: it overwrites its input), then the
    row's installed peers (here: all but jax; nothing is imported to list them)."""
    op, bench = _registry.BENCHES[name]
    monkeypatch.setattr(_bench, "peer_available",
                        lambda p: "jax is not installed" if p == "jax" else None)
    cons, skipped = _bench.contenders(name, ["numpy", "auto"], methods=("three_pass", "online"))
    ours = [c for c in cons if c.kind == "ours"]
    methods = ("three_pass", "online") if len(op.methods) > 1 else ("auto",)
    variants = ("", "inplace") if bench.inplace else ("",)
    assert [(c.backend, c.method, c.variant) for c in ours] == [
        (b, m, v) for b in ("numpy", "auto") for m in methods for v in variants]
    for c in ours:
        label = c.backend if c.method == "auto" else f"{c.backend}:{c.method}"
        assert c.name == f"fastsoftmax[{label}]" + (" inplace" if c.variant else "")
        assert c.check is (c.variant != "inplace")
    peers = [c.name for c in cons if c.kind == "peer"]
    assert peers == [p for p in bench.peers if p != "jax"]
    assert skipped == ({"jax": "jax is not installed"} if "jax" in bench.peers else {})
    assert all(c.check is (c.name != "copyto") for c in cons if c.kind == "peer")


@pytest.mark.parametrize("name", list(_registry.BENCHES))
def test_each_bench_row_runs_and_agrees_with_its_baseline(name):
    """One tiny case per row, ours on the reference and the numpy peer: checked, no errors."""
    (case,) = _bench.select_cases(ops=[name], dtypes=["float64"], shapes=["8x16"])
    res = _bench.run_case(case, ["numpy"], peers=("numpy",), budget_s=0.002)
    assert not res["errors"], res["errors"]
    by = {r["contender"]: r for r in res["results"]}
    assert "numpy" in by and by["fastsoftmax[numpy]"]["check"]["ok"]
    _, bench = _registry.BENCHES[name]
    assert res["bytes"] == bench.traffic((8, 16), 8) and res["baseline"] == bench.baseline


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
    assert [ep.value for ep in eps] == ["fastsoftmax.tools.cli:main"]


def test_bench_markdown(capsys):
    rc, out, _ = _run(TINY + ["--markdown"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("| op | dtype | shape | thr | fastest of ours | GB/s |")
    assert lines[2].startswith("| softmax | float32 | 8x16 | 1 |")
