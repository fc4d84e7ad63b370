"""The measured dispatch tables: size classes and structured keys (``_policy``), table files as data
(``_tables``: one schema and one validation for the per-user file and the built-in tables), which
tables are in force (the per-user file, then a built-in table measured on this CPU or one of its
SIMD class, else none: the default order), stale and corrupt files (one warning, then the
fallback), "auto" dispatch using them, and the ``fastsoftmax tune`` command."""
import json
import warnings

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _dispatch, _policy, _registry, _tables
from fastsoftmax.tools import cli as _cli
from fastsoftmax.tools import tune as _tune

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
COMPILED = [b for b in fastsoftmax.available_backends() if b != "numpy"]
OPS = _registry.OPS
SC = _policy.SizeClass


@pytest.fixture
def tune_file(tmp_path, monkeypatch):
    """A private tuning file path, in force for the test; the tables are re-read around it."""
    path = tmp_path / "cache" / "tune.json"
    monkeypatch.setenv("FASTSOFTMAX_TUNE_FILE", str(path))
    _dispatch.invalidate()
    yield path
    _dispatch.invalidate()


def _backends():
    return _dispatch.available_backends()


def _doc(entries, **fp_changes):
    fp = {**_tables.fingerprint(_backends()), **fp_changes}
    return {"schema": _tables.SCHEMA, "fingerprint": fp, "entries": entries}


def _ent(op="softmax", dtype="float32", n="<=32", rows="1", layout="last", threads="t1",
         backend="numpy", method="auto", **extra):
    return {"op": op, "dtype": dtype, "n": n, "rows": rows, "layout": layout,
            "threads": threads, "backend": backend, "method": method, **extra}


def _both_threads(**kw):
    return [_ent(**kw, threads="t1"), _ent(**kw, threads="tN")]


def _write(path, entries, meta=None):
    """Write a per-user table the way ``fastsoftmax tune`` does (validated, then invalidated)."""
    _tune.write(str(path), entries, meta or {})


def _choose(op, dtype, shape3, nthreads=None):
    """The policy in force, asked as the dispatcher asks it."""
    nthreads = fastsoftmax.get_num_threads() if nthreads is None else nthreads
    return _dispatch.policy().choose(op, OPS[op].scheme, dtype, shape3, nthreads)


def _builtin_choice(op, dtype, size, nthreads=None):
    """What the built-in table in force on this CPU gives (None when no table matches this CPU,
    as on an AVX2 machine with only the AVX-512 table shipped): its own thread class first."""
    _, doc, _ = _tables.builtin_for_this_cpu()
    if doc is None:
        return None
    table = _tables.parse(doc)
    nthreads = fastsoftmax.get_num_threads() if nthreads is None else nthreads
    key = _policy.Key(op, dtype, size, _policy.thread_class(nthreads))
    other = key._replace(threads="tN" if key.threads == "t1" else "t1")
    return table.get(key) or table.get(other)


def _default_order():
    """(backend, method) that "auto" runs when no table names a class."""
    first = next(b for b in _dispatch.AUTO_ORDER if b in _backends())
    return first, "auto"


def _source_without_user_file():
    name, _, _ = _tables.builtin_for_this_cpu()
    return f"builtin:{name}" if name else "default order"


def _fake_cpu(monkeypatch, cpu_id, simd):
    """Pretend to run on the CPU ``cpu_id`` ("model|arch|flags") of SIMD class ``simd``."""
    model, arch, flags = cpu_id.split("|")
    fake = {"model": model, "flags": flags.split(","), "machine": arch, "simd": simd,
            "id": cpu_id}
    monkeypatch.setattr(_tables, "cpu_summary", lambda: fake)
    _dispatch.invalidate()
    return fake


def _table_doc(cpu_id, simd, entries):
    return {"schema": _tables.SCHEMA,
            "fingerprint": {"fastsoftmax": fastsoftmax.__version__, "cpu": cpu_id,
                            "simd": simd, "backends": ["cython", "numba"]},
            "entries": entries}


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
    ((1, 1024, 1), "n<=1K,rows=1,last"),
    ((2, 16384, 1), "n<=16K,rows<=64,last"),
    ((65, 262144, 1), "n<=256K,rows>64,last"),
    ((1, 262145, 1), "n>256K,rows=1,last"),
])
def test_size_class(shape3, cls):
    got = _policy.size_class("rows", shape3)
    assert isinstance(got, _policy.SizeClass)
    assert str(got) == cls
    # the same shape under "rows_last" (cross-entropy) is always "last"
    last = _policy.size_class("rows_last", shape3)
    assert last == got._replace(layout="last")


def test_size_class_fields():
    cls = _policy.size_class("rows", (3, 5000, 100))
    assert (cls.n, cls.rows, cls.layout) == ("<=16K", ">64", "strided")
    assert _policy.size_class("rows", (1, 7, 1)) == SC("<=32", "1", "last")


def test_keys_are_structured():
    key = _policy.Key("softmax", "float32", SC("<=1K", ">64", "last"), "t1")
    assert (key.op, key.dtype, key.size.n, key.size.rows, key.size.layout, key.threads) == (
        "softmax", "float32", "<=1K", ">64", "last", "t1")
    assert str(key) == "softmax float32 n<=1K,rows>64,last t1"
    assert str(_policy.Choice("numba", "online")) == "numba/online"
    assert _policy.thread_class(1) == "t1" and _policy.thread_class(2) == "tN"
    assert _policy.thread_class(64) == "tN"


@pytest.mark.parametrize("op", list(OPS))
def test_representative_shapes_lie_in_their_class(op):
    scheme = OPS[op].scheme
    assert scheme in _policy.SCHEMES
    classes = _policy.all_classes(scheme)
    assert len(classes) == len(set(classes))
    for cls in classes:
        shape3 = _policy.representative_shape(cls)
        assert _policy.size_class(scheme, shape3) == cls
        assert np.prod(shape3) <= 20_000_000  # a tuning run stays small (80 MB float32)
        assert not (cls.layout == "strided" and cls.rows == "1")  # one row is never strided
    if scheme == "rows_last":       # the class axis is the last one: never strided
        assert not any(c.layout == "strided" for c in classes)
    else:
        assert any(c.layout == "strided" for c in classes)


def test_schemes_of_the_ops():
    assert {op: OPS[op].scheme for op in OPS} == {
        "softmax": "rows", "log_softmax": "rows", "logsumexp": "rows",
        "cross_entropy": "rows_last",
        "softmax_backward": "rows", "log_softmax_backward": "rows",
        "sigmoid": "rows_last", "log_sigmoid": "rows_last",
        "binary_cross_entropy_with_logits": "rows_last",
        "sampled_softmax_loss": "rows_last", "linear_cross_entropy": "rows_last"}
    assert len(_policy.all_classes("rows")) == 5 * (3 + 2)        # one row: "last" only
    assert len(_policy.all_classes("rows_last")) == 5 * 3


def test_tune_path_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTSOFTMAX_TUNE_FILE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _tables.tune_path() == str(tmp_path / "home" / ".cache" / "fastsoftmax" / "tune.json")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _tables.tune_path() == str(tmp_path / "xdg" / "fastsoftmax" / "tune.json")
    monkeypatch.setenv("FASTSOFTMAX_TUNE_FILE", str(tmp_path / "mine.json"))
    assert _tables.tune_path() == str(tmp_path / "mine.json")


# ------------------------------------------------------------------------------ the policy
def _key(op, dtype, n, rows, layout, threads):
    return _policy.Key(op, dtype, SC(n, rows, layout), threads)


def test_policy_first_table_naming_a_class_wins():
    k1 = _key("softmax", "float32", "<=32", "<=64", "last", "t1")
    first = {k1: _policy.Choice("numba", "online")}
    second = {k1: _policy.Choice("cython", "auto"),
              k1._replace(dtype="float64"): _policy.Choice("numpy", "auto")}
    pol = _policy.Policy([first, second], "test")
    assert pol.choose("softmax", "rows", F32, (4, 8, 1), 1) == ("numba", "online")
    assert pol.choose("softmax", "rows", F64, (4, 8, 1), 1) == ("numpy", "auto")
    assert pol.choose("softmax", "rows", F32, (4, 8, 2), 1) is None     # strided: not named
    assert pol.choose("log_softmax", "rows", F32, (4, 8, 1), 1) is None
    assert pol.source == "test"


def test_policy_thread_class_falls_back_within_a_table():
    """Within a table the caller's thread class first, then the other's; a table naming the
    class at either thread class beats a later table naming it at the caller's."""
    t1 = _key("logsumexp", "float32", "<=32", "1", "last", "t1")
    tn = t1._replace(threads="tN")
    pol = _policy.Policy([{t1: _policy.Choice("numba", "auto")},
                          {tn: _policy.Choice("numpy", "auto")}])
    assert pol.choose("logsumexp", "rows", F32, (1, 5, 1), 1) == ("numba", "auto")
    assert pol.choose("logsumexp", "rows", F32, (1, 5, 1), 2) == ("numba", "auto")
    both = _policy.Policy([{t1: _policy.Choice("numba", "auto"),
                            tn: _policy.Choice("cython", "auto")}])
    assert both.choose("logsumexp", "rows", F32, (1, 5, 1), 1) == ("numba", "auto")
    assert both.choose("logsumexp", "rows", F32, (1, 5, 1), 2) == ("cython", "auto")
    assert both.choose("logsumexp", "rows", F32, (1, 5, 1), 8) == ("cython", "auto")


def test_policy_without_tables_chooses_nothing():
    pol = _policy.Policy([{}, None])
    assert pol.tables == []
    assert pol.choose("softmax", "rows", F32, (4, 8, 1), 1) is None


def test_policy_is_memoized_and_takes_list_shapes():
    k = _key("softmax", "float32", "<=32", "<=64", "last", "t1")
    pol = _policy.Policy([{k: _policy.Choice("numpy", "auto")}])
    first = pol.choose("softmax", "rows", F32, (4, 8, 1), 1)
    assert first == ("numpy", "auto")
    assert pol.choose("softmax", "rows", F32, (4, 8, 1), 1) is first
    assert pol.choose("softmax", "rows", F32, [4, 8, 1], 1) == first
    # no compiled kernel for these dtypes: no choice
    assert pol.choose("softmax", "rows", np.dtype(np.complex128), (4, 8, 1), 1) is None
    assert pol.choose("softmax", "rows", np.dtype(np.float16), (4, 8, 1), 1) is None
    for i in range(5000):  # the memo stays bounded
        pol.choose("softmax", "rows", F32, (4, 8 + i, 1), 1)
    assert len(pol._memo) <= 4097
    assert pol.choose("softmax", "rows", F32, (4, 8, 1), 1) == first


# ------------------------------------------------------------------------- table files
def test_builtin_tables_parse_like_a_user_file():
    """Every shipped table passes the validation a per-user file gets, with every key a class of
    its op's scheme and every choice a backend and method that op takes."""
    docs = _tables.builtin_docs()
    assert docs, "no built-in table is shipped in fastsoftmax/data/tables/"
    for name, doc in docs.items():
        assert name.endswith(".json")
        table = _tables.parse(doc)
        assert len(table) == len(doc["entries"]) > 0
        fp = doc["fingerprint"]
        assert fp["simd"] in ("avx512", "avx2", "neon", "baseline")
        assert fp["cpu"].count("|") == 2
        for key, choice in table.items():
            op = OPS[key.op]
            assert key.size in _policy.all_classes(op.scheme)
            assert key.dtype in _policy.DTYPES and key.threads in ("t1", "tN")
            assert choice.backend in _dispatch.BACKENDS
            assert choice.method in op.methods
        for ent in doc["entries"]:
            assert set(_tables.ENTRY_FIELDS) <= set(ent)


def test_builtin_tables_are_written_as_dumps_writes_them():
    """One entry per line, as ``fastsoftmax tune --emit-builtin`` prints them."""
    from importlib import resources

    root = resources.files("fastsoftmax").joinpath("data", "tables")
    for name, doc in _tables.builtin_docs().items():
        assert root.joinpath(name).read_text(encoding="utf-8") == _tables.dumps(doc)


def test_parse_entry_gives_a_key_and_a_choice():
    key, choice = _tables.parse_entry(_ent("log_softmax", "float64", "<=16K", ">64", "strided",
                                           "tN", "cython", "online", gain=1.3))
    assert key == _key("log_softmax", "float64", "<=16K", ">64", "strided", "tN")
    assert choice == ("cython", "online")


def test_write_file_validates_and_writes_objects(tune_file):
    entries = [_ent(n="<=1K", rows=">64", backend="numba", method="three_pass", gain=1.2)]
    _tables.write_file(str(tune_file), entries, {"created": "now"}, _backends())
    doc = json.loads(tune_file.read_text())
    assert doc["schema"] == "fastsoftmax-tune/2" == _tables.SCHEMA
    assert doc["fingerprint"] == _tables.fingerprint(_backends())
    assert doc["created"] == "now"
    assert isinstance(doc["entries"], list)
    assert doc["entries"] == entries  # objects with fields, never string keys
    assert _tables.read_file(str(tune_file), _backends()) == (doc, None)
    # an invalid entry is refused before anything is written
    other = tune_file.parent / "other.json"
    with pytest.raises(ValueError, match="unknown op"):
        _tables.write_file(str(other), [_ent(op="softmax_out")], {}, _backends())
    assert not other.exists()
    assert not list(tune_file.parent.glob("*.tmp*"))


def test_fingerprint_names_this_machine():
    fp = _tables.fingerprint(["cython", "numba", "numpy"])
    cpu = _tables.cpu_summary()
    assert fp == {"fastsoftmax": fastsoftmax.__version__, "cpu": cpu["id"], "simd": cpu["simd"],
                  "backends": ["cython", "numba"]}  # the reference is left out
    assert cpu["id"] == f"{cpu['model']}|{cpu['machine']}|{','.join(cpu['flags'])}"


# ------------------------------------------------------------- which built-in table applies
CPU_HERE = "Test CPU 9000|x86_64|sse4_2,avx,avx2,fma"
T_EXACT = [_ent(n="<=1K", rows=">64", backend="cython", method="online")]
T_SAME = [_ent(n="<=1K", rows=">64", backend="numba", method="three_pass")]
T_OTHER = [_ent(n="<=1K", rows=">64", backend="numba", method="online")]
SHAPE_1K = (4096, 1000, 1)


def _docs(*which):
    all_docs = {
        "a-same-simd.json": _table_doc("Other AVX2 CPU|x86_64|avx2,fma", "avx2", T_SAME),
        "m-other-simd.json": _table_doc("Big CPU|x86_64|avx512f", "avx512", T_OTHER),
        "z-exact.json": _table_doc(CPU_HERE, "avx2", T_EXACT),
    }
    return {k: v for k, v in all_docs.items() if k.split("-")[0] in which}


@pytest.mark.parametrize("present, want_name, want_match, want_choice", [
    (("a", "m", "z"), "z-exact.json", "this CPU", ("cython", "online")),
    (("a", "m"), "a-same-simd.json", "same SIMD class (avx2)", ("numba", "three_pass")),
    (("m",), None, "none", None),
    ((), None, "none", None),
], ids=["exact-beats-same-class", "same-class-beats-none", "other-class-is-none", "no-tables"])
def test_builtin_preference(tune_file, monkeypatch, present, want_name, want_match,
                            want_choice):
    """A table with this CPU's exact fingerprint wins over one of the same SIMD class (whatever
    the file order), which wins over none; a table of another SIMD class is never used."""
    _fake_cpu(monkeypatch, CPU_HERE, "avx2")
    docs = _docs(*present)
    monkeypatch.setattr(_tables, "builtin_docs", lambda: docs)
    name, doc, match = _tables.builtin_for_this_cpu()
    assert (name, match) == (want_name, want_match)
    assert doc is (docs[name] if name else None)
    assert _choose("softmax", F32, SHAPE_1K, 1) == want_choice
    got = _dispatch.resolve(None, OPS["softmax"], F32, SHAPE_1K)
    assert (got[0], got[2]) == (want_choice or _default_order())
    desc = fastsoftmax.info()["dispatch_table"]
    assert desc["builtin_match"] == want_match
    assert desc["measured_on_this_cpu"] is (want_match == "this CPU")
    assert desc["source"] == (f"builtin:{want_name}" if want_name else "default order")
    assert desc.get("builtin") == want_name
    if want_name:
        assert desc["builtin_cpu"] == docs[want_name]["fingerprint"]["cpu"]
    assert "user_file" not in desc and "user_file_ignored" not in desc


@pytest.mark.parametrize("name", sorted(_tables.builtin_docs()))
def test_a_shipped_table_drives_auto_on_its_own_cpu(tune_file, monkeypatch, name):
    """On the CPU a shipped table was measured on, "auto" runs its choice for every class it
    names (through the representative shape of the class, at the entry's thread class)."""
    doc = _tables.builtin_docs()[name]
    _fake_cpu(monkeypatch, doc["fingerprint"]["cpu"], doc["fingerprint"]["simd"])
    assert _tables.builtin_for_this_cpu() == (name, doc, "this CPU")
    for ent in doc["entries"]:
        key, choice = _tables.parse_entry(ent)
        shape3 = _policy.representative_shape(key.size)
        nthreads = 1 if key.threads == "t1" else 2
        assert _choose(key.op, np.dtype(key.dtype), shape3, nthreads) == choice, key
    desc = fastsoftmax.info()["dispatch_table"]
    assert desc["source"] == f"builtin:{name}" and desc["measured_on_this_cpu"] is True
    # the same table on another CPU of its SIMD class: used, but not measured here
    _fake_cpu(monkeypatch, "Sibling CPU|x86_64|whatever", doc["fingerprint"]["simd"])
    assert _tables.builtin_for_this_cpu()[::2] == (
        name, f"same SIMD class ({doc['fingerprint']['simd']})")
    desc = fastsoftmax.info()["dispatch_table"]
    assert desc["builtin"] == name and desc["measured_on_this_cpu"] is False


def test_this_cpu_uses_the_builtin_table_that_matches_it_or_none(tune_file):
    """On this machine: whatever ``builtin_for_this_cpu`` gives (on an AVX2 CPU with only the
    AVX-512 table shipped: none, and "auto" runs the default order, cython/auto)."""
    name, doc, match = _tables.builtin_for_this_cpu()
    cpu = _tables.cpu_summary()
    if doc is None:
        assert match == "none"
        assert all(d["fingerprint"].get("simd") != cpu["simd"]
                   for d in _tables.builtin_docs().values())
    else:
        assert match == "this CPU" or match == f"same SIMD class ({cpu['simd']})"
    for op in OPS.values():
        for dt in (F32, F64):
            for size in _policy.all_classes(op.scheme):
                shape3 = _policy.representative_shape(size, max_elements=1 << 12)
                want = _builtin_choice(op.name, dt.name, size)
                assert _choose(op.name, dt, shape3) == want
                if want is None or want.backend in _backends():
                    got = _dispatch.resolve(None, op, dt, shape3)
                    assert (got[0], got[2]) == (want or _default_order())
    assert _dispatch.policy().source == _source_without_user_file()


# ------------------------------------------------------------------------------ info()
def test_info_lists_the_ops():
    ops = fastsoftmax.info()["ops"]
    assert ops == {name: {"family": op.family, "methods": list(op.methods),
                          "size_classes": op.scheme} for name, op in OPS.items()}
    assert ops["softmax"]["methods"] == ["auto", "three_pass", "online"]


def test_info_dispatch_table_without_a_user_file(tune_file):
    name, doc, match = _tables.builtin_for_this_cpu()
    desc = fastsoftmax.info()["dispatch_table"]
    assert desc["source"] == _source_without_user_file()
    assert desc["builtin_match"] == match
    assert desc.get("builtin") == name
    assert desc["measured_on_this_cpu"] is (match == "this CPU")
    assert "user_file" not in desc and "user_file_ignored" not in desc


def test_info_dispatch_table_with_a_user_file(tune_file):
    _write(tune_file, _both_threads(n="<=32", rows="<=64"))
    desc = fastsoftmax.info()["dispatch_table"]
    assert desc["user_file"] == str(tune_file) == desc["source"]
    assert desc["measured_on_this_cpu"] is True
    assert desc["builtin_match"] == _tables.builtin_for_this_cpu()[2]
    assert "user_file_ignored" not in desc


def test_info_dispatch_table_with_an_ignored_user_file(tune_file):
    tune_file.parent.mkdir(parents=True)
    tune_file.write_text(json.dumps(_doc([], cpu="Intel 8088|x86|")))
    with pytest.warns(RuntimeWarning, match="another CPU"):
        desc = fastsoftmax.info()["dispatch_table"]
    assert "another CPU" in desc["user_file_ignored"]
    assert "user_file" not in desc
    assert desc["source"] == _source_without_user_file()
    assert desc["measured_on_this_cpu"] is (desc["builtin_match"] == "this CPU")


# ---------------------------------------------------------------- reading a file by hand
def test_a_valid_file_drives_auto_dispatch(tune_file):
    _write(tune_file, _both_threads(dtype="float64", n="<=32", rows="<=64"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid file gives no warning
        assert _choose("softmax", F64, (4, 8, 1)) == ("numpy", "auto")
        name, _, method = _dispatch.resolve(None, OPS["softmax"], F64, (4, 8, 1))
    assert (name, method) == ("numpy", "auto")
    assert _dispatch.policy().source == str(tune_file)
    # classes the file does not name fall back to the built-in table (or None: default order)
    assert _choose("softmax", F32, (4, 8, 1)) == _builtin_choice(
        "softmax", "float32", SC("<=32", "<=64", "last"))
    x = np.random.default_rng(1).standard_normal((4, 8))
    from scipy import special
    np.testing.assert_allclose(fastsoftmax.softmax(x, axis=1), special.softmax(x, axis=1),
                               rtol=1e-13)


def test_the_user_file_comes_before_the_builtin_table(tune_file, monkeypatch):
    fake = _fake_cpu(monkeypatch, CPU_HERE, "avx2")
    builtin = _table_doc(CPU_HERE, "avx2", [
        _ent(n="<=1K", rows=">64", backend="cython", method="online"),
        _ent(n="<=32", rows=">64", backend="numba", method="three_pass")])
    monkeypatch.setattr(_tables, "builtin_docs", lambda: {"here.json": builtin})
    assert _tables.fingerprint(_backends())["cpu"] == fake["id"]
    _write(tune_file, [_ent(n="<=1K", rows=">64", backend="numba", method="online")])
    assert _choose("softmax", F32, SHAPE_1K, 1) == ("numba", "online")         # the file
    assert _choose("softmax", F32, (5000, 10, 1), 1) == ("numba", "three_pass")  # built-in
    assert _choose("softmax", F32, (5000, 10, 7), 1) is None                    # neither
    desc = fastsoftmax.info()["dispatch_table"]
    assert desc["source"] == str(tune_file) and desc["builtin"] == "here.json"


@pytest.mark.skipif(not COMPILED, reason="needs a compiled backend to name a method of")
def test_the_tuned_method_reaches_the_kernel(tune_file, monkeypatch):
    b = COMPILED[0]
    _write(tune_file, _both_threads(op="log_softmax", n="<=1K", rows="<=64", backend=b,
                                    method="online"))
    name, _, method = _dispatch.resolve(None, OPS["log_softmax"], F32, (3, 100, 1))
    assert (name, method) == (b, "online")
    # an explicit backend ignores the table
    assert _dispatch.resolve("numpy", OPS["log_softmax"], F32, (3, 100, 1))[0] == "numpy"
    # ... and the method is what the kernel receives
    mod = _dispatch.load(b)
    seen = []
    real = mod.softmax

    def spy(x3, dst, log, method, nthreads):
        seen.append((log, method))
        return real(x3, dst, log, method, nthreads)
    monkeypatch.setattr(mod, "softmax", spy)
    x = np.random.default_rng(2).standard_normal((3, 100)).astype(np.float32)
    y = fastsoftmax.log_softmax(x, axis=1)
    fastsoftmax.log_softmax(x, axis=1, method="three_pass")  # an explicit method wins
    assert seen == [(True, "online"), (True, "three_pass")]
    from scipy import special
    np.testing.assert_allclose(y, special.log_softmax(x, axis=1), rtol=2e-5, atol=2e-5)


def test_thread_class_falls_back_to_the_other(tune_file):
    _write(tune_file, [_ent(op="logsumexp", n="<=32", rows="1", threads="tN")])
    old = fastsoftmax.get_num_threads()
    try:
        for threads in (1, 2):
            fastsoftmax.set_num_threads(threads)
            assert _choose("logsumexp", F32, (1, 5, 1)) == ("numpy", "auto")
            name, _, method = _dispatch.resolve(None, OPS["logsumexp"], F32, (1, 5, 1))
            assert (name, method) == ("numpy", "auto")
    finally:
        fastsoftmax.set_num_threads(old)


def test_choose_is_memoized_and_takes_list_shapes(tune_file):
    _write(tune_file, _both_threads(n="<=32", rows="<=64"))
    first = _choose("softmax", F32, (4, 8, 1))
    assert first == ("numpy", "auto")
    assert _choose("softmax", F32, (4, 8, 1)) is first
    assert _choose("softmax", F32, [4, 8, 1]) == first
    assert _choose("softmax", np.dtype(np.complex128), (4, 8, 1)) is None
    assert _dispatch.policy() is _dispatch.policy()  # loaded once
    _dispatch.invalidate()
    assert _choose("softmax", F32, (4, 8, 1)) == first  # read again


# ------------------------------------------------------------------ stale and corrupt files
def _json(doc):
    return lambda p: p.write_text(json.dumps(doc() if callable(doc) else doc))


def _with(entries):
    return _json(lambda: _doc(entries))


_DICT_ENTRIES = {"softmax|float32|n<=32,rows=1,last|t1": {"backend": "numpy", "method": "auto"}}
_NO_THREADS = {k: v for k, v in _ent().items() if k != "threads"}

STALE = [
    pytest.param(lambda p: p.write_text("{ this is not json"), "JSON", id="not-json"),
    pytest.param(lambda p: p.write_text("[1, 2, 3]"), "not a fastsoftmax-tune/2", id="a-list"),
    pytest.param(lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "JSON", id="binary"),
    pytest.param(_json(lambda: _doc([], fastsoftmax="0.0.1")), "fastsoftmax 0.0.1",
                 id="other-version"),
    pytest.param(_json(lambda: _doc([], cpu="Intel 8088|x86|")), "another CPU",
                 id="other-cpu"),
    pytest.param(_json(lambda: _doc([], backends=["cuda"])), "backends", id="other-backends"),
    pytest.param(_json(lambda: {**_doc([]), "schema": "fastsoftmax-tune/0"}),
                 "not a fastsoftmax-tune/2", id="schema"),
    # a file of the previous schema (string keys "op|dtype|class|threads")
    pytest.param(_json(lambda: {**_doc([]), "schema": "fastsoftmax-tune/1",
                                "entries": _DICT_ENTRIES}),
                 "not a fastsoftmax-tune/2", id="schema-1"),
    pytest.param(_json(lambda: {k: v for k, v in _doc([]).items() if k != "fingerprint"}),
                 "no fingerprint", id="no-fingerprint"),
    pytest.param(_json(lambda: _doc(None)), "no entries", id="no-entries"),
    # keys are structured: every corrupt entry is rejected (the whole file is ignored)
    pytest.param(_with(_DICT_ENTRIES), "no entries", id="string-keyed-entries"),
    pytest.param(_with([{"key": "softmax|float32|n<=32,rows=1,last|t1", "backend": "numpy",
                         "method": "auto"}]), "lacks op", id="string-key"),
    pytest.param(_with([_NO_THREADS]), "lacks threads", id="missing-field"),
    pytest.param(_with(["numba"]), "is not an object", id="bad-entry"),
    pytest.param(_with([_ent(backend="fortran")]), "backend 'fortran'", id="bad-backend"),
    pytest.param(_with([_ent(dtype="float16")]), "is not a class that exists", id="bad-dtype"),
    pytest.param(_with([_ent(threads="t2")]), "is not a class that exists", id="bad-threads"),
    pytest.param(_with([_ent(n="n<=32")]), "is not a class that exists", id="old-label"),
    pytest.param(_with([_ent(n=32)]), "is not a class that exists", id="number-label"),
    pytest.param(_with([_ent(layout="diagonal")]), "is not a class that exists",
                 id="bad-layout"),
    pytest.param(_with([_ent(op="softmax_out")]), "unknown op 'softmax_out'", id="unknown-op"),
    pytest.param(_with([_ent(op="cross_entropy", rows="<=64", layout="strided")]),
                 "is not a class that exists", id="class-not-in-scheme"),
    pytest.param(_with([_ent(rows="1", layout="strided")]), "is not a class that exists",
                 id="one-strided-row"),
    pytest.param(_with([_ent(op="logsumexp", backend="numba", method="online")]),
                 "method 'online'", id="method-not-taken"),
    pytest.param(_with([_ent(backend="numba", method="fastest")]), "method 'fastest'",
                 id="bad-method"),
    pytest.param(_with([_ent(), _ent(), _ent(n="<=1K")]), "twice", id="duplicate-key"),
    pytest.param(_with([_ent(backend="numba"), _ent(backend="cython")]), "twice",
                 id="duplicate-key-other-choice"),
    pytest.param(_with([_ent(op=["softmax"])]), "unknown op", id="unhashable-op"),
]


@pytest.mark.parametrize("make, why", STALE)
def test_stale_or_corrupt_file_warns_once_and_falls_back(tune_file, make, why):
    tune_file.parent.mkdir(parents=True)
    make(tune_file)
    doc, reason = _tables.read_file(str(tune_file), _backends())
    assert reason is not None and why in reason
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = _choose("softmax", F32, (1, 10, 1))
        _choose("softmax", F32, (1, 10, 1))
        _choose("logsumexp", F64, (7, 3000, 1))
        resolved = _dispatch.resolve(None, OPS["softmax"], F32, (1, 10, 1))
        desc = fastsoftmax.info()["dispatch_table"]
    msgs = [str(w.message) for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1, msgs
    assert str(tune_file) in msgs[0] and why in msgs[0] and "fastsoftmax tune" in msgs[0]
    want = _builtin_choice("softmax", "float32", SC("<=32", "1", "last"))
    assert got == want
    assert (resolved[0], resolved[2]) == (want or _default_order())
    assert _dispatch.policy().source == _source_without_user_file()
    assert why in desc["user_file_ignored"] and "user_file" not in desc


def test_the_api_keeps_working_with_a_corrupt_file(tune_file):
    tune_file.parent.mkdir(parents=True)
    tune_file.write_text('{"schema": "fastsoftmax-tune/2", "fingerprint": ')
    x = np.linspace(-3, 3, 40).reshape(4, 10)
    with pytest.warns(RuntimeWarning, match="ignoring the tuning file"):
        y = fastsoftmax.softmax(x, axis=-1)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        fastsoftmax.log_softmax(x, axis=-1)


def test_invalidate_warns_again(tune_file):
    tune_file.parent.mkdir(parents=True)
    tune_file.write_text("{ not json")
    for _ in range(2):
        with pytest.warns(RuntimeWarning, match="ignoring the tuning file"):
            _dispatch.policy()
        _dispatch.invalidate()


# ------------------------------------------------------------------------ the tune command
def test_tune_show_without_a_file(tune_file, capsys):
    assert _cli.main(["tune", "--show"]) == 0
    out = capsys.readouterr().out
    assert f"no tuning file at {tune_file}" in out and "built-in table" in out
    name, doc, match = _tables.builtin_for_this_cpu()
    if doc is None:
        assert "(match: none)" in out
        assert "'auto' runs the default order (%s/auto)" % _default_order()[0] in out
    else:
        assert f"'auto' uses the built-in table {name}" in out and f"match: {match}" in out


def test_tune_show_lists_the_builtin_table_in_force(tune_file, monkeypatch, capsys):
    name = sorted(_tables.builtin_docs())[0]
    doc = _tables.builtin_docs()[name]
    _fake_cpu(monkeypatch, doc["fingerprint"]["cpu"], doc["fingerprint"]["simd"])
    assert _cli.main(["tune", "--show"]) == 0
    out = capsys.readouterr().out
    assert f"'auto' uses the built-in table {name} ({len(doc['entries'])} entries" in out
    assert "match: this CPU" in out
    for ent in doc["entries"]:
        key, choice = _tables.parse_entry(ent)
        want = [key.op, key.dtype, str(key.size), key.threads, str(choice)]
        assert any(line.split()[:5] == want for line in out.splitlines()), want


def test_tune_show_an_ignored_file(tune_file, capsys):
    tune_file.parent.mkdir(parents=True)
    tune_file.write_text(json.dumps(_doc([_ent(op="nope")])))
    assert _cli.main(["tune", "--show"]) == 0
    out = capsys.readouterr().out
    assert f"{tune_file} is ignored: " in out and "unknown op 'nope'" in out


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
    assert doc["schema"] == _tables.SCHEMA
    assert doc["fingerprint"] == _tables.fingerprint(_backends())
    assert doc["quick"] is True
    assert isinstance(doc["entries"], list)
    table = _tables.parse(doc)  # the validation every table gets
    assert len(table) == len(doc["entries"])
    plan = _tune.plan(ops=["softmax", "logsumexp"], dtypes=["float32"], threads=[1], quick=True)
    assert set(table) == {it["key"] for it in plan}
    default = f"{COMPILED[0]}/auto"
    for ent in doc["entries"]:
        key, choice = _tables.parse_entry(ent)
        assert ent["backend"] in COMPILED
        want = {f"{b}/{m}" for b in COMPILED for m in OPS[key.op].methods}
        assert set(ent["times_s"]) == want
        assert ent["default"] == default
        assert min(ent["times_s"].values()) == ent["times_s"][ent["fastest"]]
        assert str(choice) == (ent["fastest"] if ent["gain"] >= _tune.MIN_GAIN else default)
        assert _policy.size_class(OPS[key.op].scheme, ent["shape"]) == key.size
    assert str(tune_file) in out and "softmax" in out
    # "auto" uses the winners from now on
    ent = next(e for e in doc["entries"]
               if e["op"] == "softmax" and e["rows"] == ">64" and e["layout"] == "last")
    key, choice = _tables.parse_entry(ent)
    old = fastsoftmax.get_num_threads()
    try:
        fastsoftmax.set_num_threads(1)
        shape3 = tuple(ent["shape"])
        assert _choose("softmax", F32, shape3) == choice
        assert _dispatch.resolve(None, OPS["softmax"], F32, shape3)[::2] == tuple(choice)
    finally:
        fastsoftmax.set_num_threads(old)
    assert fastsoftmax.info()["dispatch_table"]["source"] == str(tune_file)
    assert _cli.main(["tune", "--show"]) == 0
    shown = capsys.readouterr().out
    assert f"tuning file {tune_file}: {len(doc['entries'])} entries" in shown
    assert str(key.size) in shown and str(choice) in shown
    assert _cli.main(["tune", "--reset"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not tune_file.exists()
    assert _dispatch.policy().source == _source_without_user_file()


def test_plan_covers_every_class_of_each_op():
    plan = _tune.plan(dtypes=["float64"], threads=[1, 3])
    keys = [it["key"] for it in plan]
    assert len(keys) == len(set(keys))
    assert set(keys) == {_policy.Key(op, "float64", c, t) for op in OPS
                         for c in _policy.all_classes(OPS[op].scheme) for t in ("t1", "tN")}
    for it in plan:
        assert _policy.size_class(OPS[it["op"]].scheme, it["shape3"]) == it["class"]
        assert it["threads"] in (1, 3)


@pytest.mark.parametrize("op", list(OPS))
def test_candidates_are_every_backend_and_method(op):
    if not COMPILED:
        pytest.skip("needs a compiled backend")
    cands, default = _tune.candidates(OPS[op])
    assert cands == [(b, m) for b in COMPILED for m in OPS[op].methods]
    assert default == (COMPILED[0], "auto") == _default_order()


def _default_entry(**kw):
    return _ent(**kw, default="cython/auto")


def test_minimal_entries_keep_only_departures_from_the_default():
    entries = [
        _default_entry(n="<=32", rows="1", backend="numba", method="online", gain=1.2),
        _default_entry(n="<=1K", rows="1", backend="cython", method="auto", gain=1.0),
    ]
    assert _tables.minimal_entries(entries) == [
        _ent(n="<=32", rows="1", backend="numba", method="online")]  # the key and the choice


def test_minimal_entries_keep_the_default_where_the_other_thread_class_departs(tune_file,
                                                                             monkeypatch):
    """A class whose t1 choice departs from the default while its tN choice is the default keeps
    an explicit tN entry: the lookup must not borrow the t1 choice for two threads."""
    t1 = _default_entry(n="<=1K", rows=">64", threads="t1", backend="numba", method="online")
    tn = _default_entry(n="<=1K", rows=">64", threads="tN", backend="cython", method="auto")
    table = _tables.minimal_entries([tn, t1])
    assert table == [_ent(n="<=1K", rows=">64", threads="t1", backend="numba", method="online"),
                     _ent(n="<=1K", rows=">64", threads="tN", backend="cython", method="auto")]
    # without the tN entry, two threads would borrow the t1 choice
    only_t1 = _policy.Policy([dict([_tables.parse_entry(table[0])])])
    assert only_t1.choose("softmax", "rows", F32, SHAPE_1K, 2) == ("numba", "online")
    # shipped as a built-in table for this CPU, each thread class gets its own choice
    cpu = _tables.cpu_summary()
    doc = _table_doc(cpu["id"], cpu["simd"], table)
    monkeypatch.setattr(_tables, "builtin_docs", lambda: {"minimal.json": doc})
    _dispatch.invalidate()
    for threads, want in ((1, ("numba", "online")), (2, ("cython", "auto"))):
        monkeypatch.setattr(_dispatch, "_num_threads", threads)
        _dispatch.invalidate()
        assert _choose("softmax", F32, SHAPE_1K) == want


def test_emit_builtin(tune_file, monkeypatch, capsys):
    kept = _default_entry(op="logsumexp", dtype="float64", n="<=32", rows="1", threads="t1",
                          backend="numpy", method="auto")
    dropped = _default_entry(op="logsumexp", dtype="float64", n="<=1K", rows="1",
                             backend="cython", method="auto")
    _write(tune_file, [kept, dropped], {"created": "2026-01-01T00:00:00Z"})
    assert _cli.main(["tune", "--emit-builtin"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # a table document, ready for fastsoftmax/data/tables/
    assert doc["schema"] == _tables.SCHEMA
    assert doc["fingerprint"] == _tables.fingerprint(_backends())
    assert doc["entries"] == [{f: kept[f] for f in _tables.ENTRY_FIELDS}]
    assert _tables.parse(doc) == dict([_tables.parse_entry(kept)])
    assert out == _tables.dumps(doc)  # one entry per line, like the shipped tables
    # shipped, it is the built-in table of this very CPU
    monkeypatch.setattr(_tables, "builtin_docs", lambda: {"emitted.json": doc})
    assert _tables.builtin_for_this_cpu() == ("emitted.json", doc, "this CPU")


def test_emit_builtin_needs_a_usable_file(tune_file, capsys):
    assert _cli.main(["tune", "--emit-builtin"]) == 1
    err = capsys.readouterr().err
    assert "no usable tuning file" in err and str(tune_file) in err


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
