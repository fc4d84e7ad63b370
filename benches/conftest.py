"""pytest-benchmark suite of fastsoftmax, driven by the case table in ``fastsoftmax/_bench.py``.

    pytest benches                          # the default suite: float32, one thread
    pytest benches --fsm-suite full         # every op x shape, float32+float64, 1 and 2 threads
    pytest benches --fsm-suite quick        # tiny shapes, a smoke run
    pytest benches -k "softmax and 4096x1000" --benchmark-json out.json
    pytest benches --benchmark-autosave ... ; pytest benches --benchmark-compare

Each test is one (case, contender); the benchmarks of a case share a group, so pytest-benchmark's
table compares them.  A peer whose library is not installed (jax, torch) and a backend that is not
built are skipped, with the reason.  The ``fastsoftmax bench`` command measures the same table
round-robin in one process (better ratios on a noisy machine); this suite gives pytest-benchmark's
statistics, JSON files and --benchmark-compare between runs.
"""
import pytest

from fastsoftmax import _bench, _dispatch

COMPILED = ("cython", "numba")


def pytest_addoption(parser):
    g = parser.getgroup("fastsoftmax benchmarks")
    g.addoption("--fsm-suite", choices=("default", "full", "quick"), default="default",
                help="which cases of fastsoftmax/_bench.py to run (default: the default suite)")
    g.addoption("--fsm-threads", default=None,
                help="thread budgets, e.g. 1,2 (default: 1; full: 1,2)")
    g.addoption("--fsm-backends", default=None,
                help="our backends, e.g. numba,cython,auto (default: numba,cython; "
                     "full adds the numpy reference)")


def _cases(config):
    suite = config.getoption("--fsm-suite")
    th = config.getoption("--fsm-threads")
    threads = [int(t) for t in th.split(",")] if th else None
    return _bench.select_cases(full=suite == "full", quick=suite == "quick", threads=threads)


def _backends(config):
    b = config.getoption("--fsm-backends")
    if b:
        return [x.strip() for x in b.split(",") if x.strip()]
    return list(COMPILED) + (["numpy"] if config.getoption("--fsm-suite") == "full" else [])


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames or "contender" not in metafunc.fixturenames:
        return
    params, ids = [], []
    backends = _backends(metafunc.config)
    for case in _cases(metafunc.config):
        op = _bench.OPS[case.op]
        names = [f"fastsoftmax[{b}]" + (f" {v}" if v else "")
                 for b in backends for v in op.variants]
        names += list(op.peers)
        for name in names:
            params.append((case, name))
            ids.append(f"{case.id}-{name.replace(' ', '-')}")
    metafunc.parametrize(("case", "contender"), params, ids=ids)


@pytest.fixture
def resolve_contender():
    """name -> the table's Contender for the op, or a skip with the reason."""
    def get(case, name):
        if name.startswith("fastsoftmax["):
            backend = name[len("fastsoftmax["):name.index("]")]
            if backend != "auto" and backend not in _dispatch.available_backends():
                try:
                    _dispatch.load(backend)
                except _dispatch.BackendUnavailableError as exc:
                    pytest.skip(str(exc))
            cons, _ = _bench.contenders(case.op, [backend], peers=())
        else:
            cons, skipped = _bench.contenders(case.op, [], peers=(name,))
            if name in skipped:
                pytest.skip(f"peer {name}: {skipped[name]}")
        for c in cons:
            if c.name == name:
                return c
        raise LookupError(f"{name} is not a contender of {case.op}")
    return get
