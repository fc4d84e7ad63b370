"""The measured dispatch table: size classes, the per-user tuning file (write, read, reset),
stale and corrupt files (one warning, then the built-in table), and "auto" dispatch using it."""
import json
import warnings

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _cli, _dispatch, _tune

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
COMPILED = [b for b in fastsoftmax.available_backends() if b != "numpy"]


@pytest.fixture
def tune_file(tmp_path, monkeypatch):
    """A private tuning file path, in force for the test; the table is re-read around it."""
    path = tmp_path / "cache" / "tune.json"
    monkeypatch.setenv("FASTSOFTMAX_TUNE_FILE", str(path))
    _tune.invalidate()
    yield path
    _tune.invalidate()


def _doc(entries, **fp_changes):
    fp = {**_tune.fingerprint(), **fp_changes}
    return {"schema": _tune.SCHEMA, "fingerprint": fp, "entries": entries}


def _entry(backend, method):
    return {"backend": backend, "method": method}


def _builtin_choice(op, dtype, cls):
    """What the built-in table gives at the current thread budget (its own class first)."""
    builtin = _tune.builtin_table()
    tcls = _tune.thread_class(fastsoftmax.get_num_threads())
    other = {"t1": "tN", "tN": "t1"}[tcls]
    return (builtin.get(_tune.make_key(op, dtype, cls, tcls))
            or builtin.get(_tune.make_key(op, dtype, cls, other)))


# --------------------------------------------------------------------------- size classes
@pytest.mark.parametrize("shape3, cls", [
    ((4096, 1000, 1), "n<=1K,rows>64,last"),
    ((256, 32000, 1), "n<=256K,rows>64,last"),
    ((32, 50257, 1), "n<=256K,rows<=64,last"),
    ((1, 4_000_000, 1), "n>256K,rows=1,last"),
    ((200_000, 10, 1), "n<=32,rows>64,last"),
    ((1, 10, 50), "n<=32,rows<=64,strided"),
    ((3, 5000, 100), "n<=16K,rows>64,strided"),
    ((1, 32, 1), "n<=32,rows=1,last"),
    ((64, 33, 1), "n<=1K,rows<=64,last"),
])
def test_size_class(shape3, cls):
    assert _tune.size_class(shape3) == cls


@pytest.mark.parametrize("op", _tune.OPS)
def test_representative_shapes_lie_in_their_class(op):
    classes = _tune.all_classes(op)
    assert len(classes) == len(set(classes))
    for cls in classes:
        shape3 = _tune.representative_shape(cls)
        assert _tune.size_class(shape3) == cls
        assert np.prod(shape3) <= 20_000_000  # a tuning run stays small (80 MB float32)
    if op == "cross_entropy":
        assert not any(c.endswith("strided") for c in classes)


def test_tune_path_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTSOFTMAX_TUNE_FILE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _tune.tune_path() == str(tmp_path / "home" / ".cache" / "fastsoftmax" / "tune.json")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _tune.tune_path() == str(tmp_path / "xdg" / "fastsoftmax" / "tune.json")
    monkeypatch.setenv("FASTSOFTMAX_TUNE_FILE", str(tmp_path / "mine.json"))
    assert _tune.tune_path() == str(tmp_path / "mine.json")


def test_builtin_table_is_well_formed():
    ops_classes = {op: set(_tune.all_classes(op)) for op in _tune.OPS}
    for key, val in _tune.BUILTIN.items():
        op, dt, cls, tcls = key.split("|")
        assert cls in ops_classes[op] and dt in _tune.DTYPES and tcls in ("t1", "tN")
        backend, method = val.split("/")
        assert backend in _dispatch.BACKENDS
        assert method in (("auto",) + _tune.METHODS if op in _tune.METHOD_OPS else ("auto",))


# ---------------------------------------------------------------- reading a file by hand
def test_a_valid_file_drives_auto_dispatch(tune_file):
    key = _tune.make_key("softmax", "float64", "n<=32,rows<=64,last", "t1")
    key_n = _tune.make_key("softmax", "float64", "n<=32,rows<=64,last", "tN")
    _tune.write_file(str(tune_file), {key: _entry("numpy", "auto"),
                                      key_n: _entry("numpy", "auto")}, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid file gives no warning
        assert _tune.choose("softmax", F64, (4, 8, 1)) == ("numpy", "auto")
        name, _, method = _dispatch.resolve(None, "softmax", F64, (4, 8, 1))
    assert (name, method) == ("numpy", "auto")
    assert _tune.source() == str(tune_file)
    # classes the file does not name fall back to the built-in table (or None: default order)
    assert _tune.choose("softmax", F32, (4, 8, 1)) == _builtin_choice(
        "softmax", "float32", "n<=32,rows<=64,last")
    x = np.random.default_rng(1).standard_normal((4, 8))
    from scipy import special
    np.testing.assert_allclose(fastsoftmax.softmax(x, axis=1), special.softmax(x, axis=1),
                               rtol=1e-13)


@pytest.mark.skipif(not COMPILED, reason="needs a compiled backend to name a method of")
def test_the_tuned_method_reaches_the_kernel(tune_file):
    b = COMPILED[0]
    entries = {_tune.make_key("log_softmax", "float32", "n<=1K,rows<=64,last", t):
               _entry(b, "online") for t in ("t1", "tN")}
    _tune.write_file(str(tune_file), entries, {})
    name, _, method = _dispatch.resolve(None, "log_softmax", F32, (3, 100, 1))
    assert (name, method) == (b, "online")
    # an explicit backend ignores the table
    assert _dispatch.resolve("numpy", "log_softmax", F32, (3, 100, 1))[0] == "numpy"


def test_thread_class_falls_back_to_the_other(tune_file):
    key = _tune.make_key("logsumexp", "float32", "n<=32,rows=1,last", "tN")
    _tune.write_file(str(tune_file), {key: _entry("numpy", "auto")}, {})
    old = fastsoftmax.get_num_threads()
    try:
        fastsoftmax.set_num_threads(1)
        assert _tune.choose("logsumexp", F32, (1, 5, 1)) == ("numpy", "auto")
        fastsoftmax.set_num_threads(2)
        assert _tune.choose("logsumexp", F32, (1, 5, 1)) == ("numpy", "auto")
    finally:
        fastsoftmax.set_num_threads(old)


def test_choose_is_memoized_and_takes_list_shapes(tune_file):
    key = _tune.make_key("softmax", "float32", "n<=32,rows<=64,last", "t1")
    _tune.write_file(str(tune_file), {key: _entry("numpy", "auto"),
                                      key.replace("|t1", "|tN"): _entry("numpy", "auto")}, {})
    first = _tune.choose("softmax", F32, (4, 8, 1))
    assert _tune.choose("softmax", F32, (4, 8, 1)) is first
    assert _tune.choose("softmax", F32, [4, 8, 1]) == first
    assert _tune.choose("softmax", np.dtype(np.complex128), (4, 8, 1)) is None


# ------------------------------------------------------------------ stale and corrupt files
STALE = [
    pytest.param(lambda p: p.write_text("{ this is not json"), "JSON", id="not-json"),
    pytest.param(lambda p: p.write_text("[1, 2, 3]"), "not a fastsoftmax-tune", id="a-list"),
    pytest.param(lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "JSON", id="binary"),
    pytest.param(lambda p: p.write_text(json.dumps(_doc({}, fastsoftmax="0.0.1"))),
                 "fastsoftmax 0.0.1", id="other-version"),
    pytest.param(lambda p: p.write_text(json.dumps(_doc({}, cpu="Intel 8088|x86|"))),
                 "another CPU", id="other-cpu"),
    pytest.param(lambda p: p.write_text(json.dumps(_doc({}, backends=["cuda"]))),
                 "backends", id="other-backends"),
    pytest.param(lambda p: p.write_text(json.dumps(
        {**_doc({}), "schema": "fastsoftmax-tune/0"})), "not a fastsoftmax-tune", id="schema"),
    pytest.param(lambda p: p.write_text(json.dumps(
        _doc({"softmax|float32|n<=32,rows=1,last|t1": _entry("fortran", "auto")}))),
        "corrupt", id="bad-backend"),
    pytest.param(lambda p: p.write_text(json.dumps(
        _doc({"softmax|float32|n<=32,rows=1,last|t1": "numba"}))), "corrupt", id="bad-entry"),
    pytest.param(lambda p: p.write_text(json.dumps({**_doc({}), "entries": None})),
                 "no entries", id="no-entries"),
]


@pytest.mark.parametrize("make, why", STALE)
def test_stale_or_corrupt_file_warns_once_and_falls_back(tune_file, make, why):
    tune_file.parent.mkdir(parents=True)
    make(tune_file)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = _tune.choose("softmax", F32, (1, 10, 1))
        _tune.choose("softmax", F32, (1, 10, 1))
        _tune.choose("logsumexp", F64, (7, 3000, 1))
    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1, msgs
    assert str(tune_file) in msgs[0] and why in msgs[0] and "fastsoftmax tune" in msgs[0]
    assert got == _builtin_choice("softmax", "float32", "n<=32,rows=1,last")
    assert _tune.source() == "builtin"


def test_the_api_keeps_working_with_a_corrupt_file(tune_file):
    tune_file.parent.mkdir(parents=True)
    tune_file.write_text('{"schema": "fastsoftmax-tune/1", "fingerprint": ')
    x = np.linspace(-3, 3, 40).reshape(4, 10)
    with pytest.warns(RuntimeWarning, match="ignoring the tuning file"):
        y = fastsoftmax.softmax(x, axis=-1)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        fastsoftmax.log_softmax(x, axis=-1)


# ------------------------------------------------------------------------ the tune command
def test_tune_show_without_a_file(tune_file, capsys):
    assert _cli.main(["tune", "--show"]) == 0
    out = capsys.readouterr().out
    assert f"no tuning file at {tune_file}" in out and "built-in table" in out


def test_tune_reset_without_a_file(tune_file, capsys):
    assert _cli.main(["tune", "--reset"]) == 0
    assert "nothing to remove" in capsys.readouterr().out


@pytest.mark.skipif(not COMPILED, reason="tune measures the compiled backends")
def test_tune_writes_reads_and_resets(tune_file, capsys):
    rc = _cli.main(["tune", "--quick", "--op", "softmax,logsumexp", "--dtype", "float32",
                    "--threads", "1", "--budget", "0.01", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = json.loads(tune_file.read_text())
    assert doc["schema"] == _tune.SCHEMA and doc["fingerprint"] == _tune.fingerprint()
    assert doc["quick"] is True
    keys = set(doc["entries"])
    assert keys == {it["key"] for it in _tune.plan(ops=["softmax", "logsumexp"],
                                                   dtypes=["float32"], threads=[1],
                                                   quick=True)}
    default = f"{COMPILED[0]}/auto"
    for key, ent in doc["entries"].items():
        assert ent["backend"] in COMPILED
        want = {f"{b}/{m}" for b in COMPILED for m in (
            ("auto",) + _tune.METHODS if key.startswith("softmax|") else ("auto",))}
        assert set(ent["times_s"]) == want
        assert ent["default"] == default
        assert min(ent["times_s"].values()) == ent["times_s"][ent["fastest"]]
        choice = f"{ent['backend']}/{ent['method']}"
        assert choice == (ent["fastest"] if ent["gain"] >= _tune.MIN_GAIN else default)
    assert str(tune_file) in out and "softmax" in out
    # "auto" uses the winners from now on
    key = next(k for k in keys if k.startswith("softmax|") and "rows>64,last" in k)
    ent = doc["entries"][key]
    old = fastsoftmax.get_num_threads()
    try:
        fastsoftmax.set_num_threads(1)
        shape3 = tuple(ent["shape"])
        assert _tune.choose("softmax", F32, shape3) == (ent["backend"], ent["method"])
        assert _dispatch.resolve(None, "softmax", F32, shape3)[::2] == (
            ent["backend"], ent["method"])
    finally:
        fastsoftmax.set_num_threads(old)
    assert _cli.main(["tune", "--show"]) == 0
    assert key.split("|")[2] in capsys.readouterr().out
    assert _cli.main(["tune", "--reset"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not tune_file.exists()
    assert _tune.source() == "builtin"


def test_builtin_from_entries_keeps_only_departures_from_the_default():
    entries = {
        "softmax|float32|n<=32,rows=1,last|t1": {"backend": "numba", "method": "online",
                                                 "default": "cython/auto"},
        "softmax|float32|n<=1K,rows=1,last|t1": {"backend": "cython", "method": "auto",
                                                 "default": "cython/auto"},
    }
    assert _tune.builtin_from_entries(entries) == {
        "softmax|float32|n<=32,rows=1,last|t1": "numba/online"}


def test_builtin_keeps_the_default_where_the_other_thread_class_departs(monkeypatch):
    """A class whose t1 choice departs from the default while its tN choice is the default keeps
    an explicit tN entry: the lookup must not borrow the t1 choice for two threads."""
    t1 = "softmax|float32|n<=1K,rows>64,last|t1"
    tn = "softmax|float32|n<=1K,rows>64,last|tN"
    entries = {t1: {"backend": "numba", "method": "online", "default": "cython/auto"},
               tn: {"backend": "cython", "method": "auto", "default": "cython/auto"}}
    table = _tune.builtin_from_entries(entries)
    assert table == {t1: "numba/online", tn: "cython/auto"}
    monkeypatch.setattr(_tune, "BUILTIN", table)
    monkeypatch.setenv("FASTSOFTMAX_TUNE_FILE", "/nonexistent/fastsoftmax-tune.json")
    _tune.invalidate()
    try:
        for threads, want in ((1, ("numba", "online")), (2, ("cython", "auto"))):
            monkeypatch.setattr(_dispatch, "_num_threads", threads)
            _tune.invalidate()
            assert _tune.choose("softmax", np.dtype(np.float32), (4096, 1000, 1)) == want
    finally:
        _tune.invalidate()


def test_emit_builtin(tune_file, capsys):
    key = _tune.make_key("logsumexp", "float64", "n<=32,rows=1,last", "t1")
    _tune.write_file(str(tune_file), {key: {"backend": "numpy", "method": "auto",
                                            "default": "cython/auto"}}, {})
    assert _cli.main(["tune", "--emit-builtin"]) == 0
    out = capsys.readouterr().out
    ns = {}
    exec(out.replace("BUILTIN: dict[str, str]", "BUILTIN"), ns)
    assert ns["BUILTIN"] == {key: "numpy/auto"}


def test_tune_without_a_compiled_backend_fails_clearly(tune_file, monkeypatch, capsys):
    monkeypatch.setattr(_dispatch, "available_backends", lambda: ["numpy"])
    rc = _cli.main(["tune", "--quick", "--op", "logsumexp", "--no-progress"])
    assert rc == 1
    assert "no compiled backend" in capsys.readouterr().err
    assert not tune_file.exists()


def test_tune_file_option(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FASTSOFTMAX_TUNE_FILE", raising=False)
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    assert _cli.main(["tune", "--file", str(target), "--reset"]) == 0
    assert not target.exists()
    assert f"removed {target}" in capsys.readouterr().out
