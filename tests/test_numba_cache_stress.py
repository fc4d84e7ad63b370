"""The Numba backend's on-disk kernel cache under stress (backends/numba/jit.py,
docs/numba_backend.md "Compilation, caching, read-only installs"):

* two processes compiling the same kernels into the same empty cache directory at once both
  succeed, and a third then runs from that cache;
* a truncated or corrupted cache file (data or index) is recompiled, with at most a warning;
* a read-only install with no writable cache location works (one RuntimeWarning naming
  NUMBA_CACHE_DIR), and with a writable NUMBA_CACHE_DIR it caches there.

Each child computes the ops of ``OPS`` on the Numba backend and checks them against the NumPy
reference.  Every kernel of the backend caches through the one decorator (``jit.cjit``), so two
families (several cache files each, one shared module of exp/log) exercise it; compiling the
whole registry in each of the eight children cost two minutes of CI.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("numba")

import fastsoftmax  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastsoftmax.__file__)))
TIMEOUT = 400
OPS = ("softmax", "logsumexp")
CHILD = r"""
import numpy as np
import fastsoftmax as fs
from fastsoftmax import _registry
assert "numba" in fs.available_backends(), fs.available_backends()
for name in %r:
    op = _registry.OPS[name]
    args = op.inputs((6, 40), -1, np.dtype(np.float32), np.random.default_rng(1), "normal")
    got = getattr(fs, op.name)(**args, backend="numba")
    want = getattr(fs, op.name)(**args, backend="numpy")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
print("CHILD OK")
""" % (OPS,)


def _env(cache_dir, pythonpath=ROOT, **extra):
    env = dict(os.environ, PYTHONPATH=pythonpath, **extra)
    env.pop("NUMBA_CACHE_DIR", None)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return env


def _start(env, cwd):
    return subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"a child compiling the kernels hung for {TIMEOUT} s")
    assert proc.returncode == 0 and "CHILD OK" in out, f"rc {proc.returncode}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    return err


def _cache_files(d):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs
                  if f.endswith((".nbi", ".nbc")))


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory):
    """Two processes compile every kernel into one empty directory at the same time."""
    d = tmp_path_factory.mktemp("numba-cache")
    procs = [_start(_env(d), str(d.parent)) for _ in range(2)]
    errs = [_finish(p) for p in procs]
    return d, errs


def test_two_processes_fill_one_empty_cache_at_once(filled_cache):
    d, errs = filled_cache
    files = _cache_files(d)
    assert any(f.endswith(".nbi") for f in files) and any(f.endswith(".nbc") for f in files)
    for err in errs:
        assert "RuntimeWarning" not in err, err[-2000:]
    before = {f: os.stat(f).st_mtime_ns for f in files}
    _finish(_start(_env(d), str(d.parent)))       # a third process, from the cache
    assert {f: os.stat(f).st_mtime_ns for f in _cache_files(d)} == before, \
        "the third process recompiled kernels the first two had cached"


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _garble(path):
    data = bytearray(open(path, "rb").read())
    for i in range(0, len(data), 7):
        data[i] ^= 0x5A
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("damage", ["truncated data", "garbled index"])
def test_damaged_cache_file_is_recompiled(filled_cache, tmp_path, damage):
    src, _ = filled_cache
    d = tmp_path / "cache"
    shutil.copytree(src, d)
    how, kind = damage.split()
    files = [f for f in _cache_files(d) if f.endswith(".nbc" if kind == "data" else ".nbi")]
    assert files
    for f in files:
        (_truncate if how == "truncated" else _garble)(f)
    _finish(_start(_env(d), str(tmp_path)))
    _finish(_start(_env(d), str(tmp_path)))       # and the cache is healed for the next one


def _read_only_install(tmp_path):
    """A copy of the package whose __pycache__ directories cannot be made (a file holds each
    name), and a HOME / XDG_CACHE_HOME that cannot be created (below a regular file): no
    writable cache location, even for root, whom permission bits do not stop."""
    site = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "fastsoftmax"), site / "fastsoftmax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, dirnames, _ in os.walk(site / "fastsoftmax"):
        open(os.path.join(dirpath, "__pycache__"), "w").close()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    home = str(blocker / "home")
    return site, dict(HOME=home, XDG_CACHE_HOME=home + "/.cache")


def test_read_only_install_without_a_writable_cache(tmp_path):
    site, extra = _read_only_install(tmp_path)
    err = _finish(_start(_env(None, str(site), **extra), str(tmp_path)))
    assert "NUMBA_CACHE_DIR" in err and "RuntimeWarning" in err, err[-2000:]
    assert err.count("RuntimeWarning") == 1, err[-2000:]      # one warning, not one per kernel
    assert not (site / "fastsoftmax" / "backends" / "numba" / "__pycache__").is_dir()


def test_read_only_install_with_numba_cache_dir(tmp_path):
    site, extra = _read_only_install(tmp_path)
    d = tmp_path / "cache"
    err = _finish(_start(_env(d, str(site), **extra), str(tmp_path)))
    assert "RuntimeWarning" not in err, err[-2000:]
    assert _cache_files(d), "nothing was cached in NUMBA_CACHE_DIR"
