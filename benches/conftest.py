"""pytest-benchmark suite of fastsoftmax, driven by the op registry (``fastsoftmax/_registry/``:
each op's bench rows, ``BENCHES``, and the default suite, ``DEFAULT_SUITE``) through the bench
engine (``fastsoftmax/tools/bench.py``: cases, contenders, peers).

    pytest benches                          # the default suite: float32, one thread
    pytest benches --fsm-suite full         # every bench row x shape, both dtypes, 1 and 2 threads
    pytest benches --fsm-suite quick        # tiny shapes, a smoke run
    pytest benches --fsm-suite quick --benchmark-disable   # each contender runs once, checked
    pytest benches --fsm-methods all        # softmax / log_softmax: each method, not "auto"
    pytest benches -k "softmax and 4096x1000" --benchmark-json out.json
    pytest benches --benchmark-autosave ... ; pytest benches --benchmark-compare

Each test is one (case, contender); the benchmarks of a case share a group, so pytest-benchmark's
table compares them.  As in ``fastsoftmax bench``, every contender is called once before timing
and its result checked against the bench row's baseline (the NumPy formula).  A peer whose library
is not installed (jax, torch) and a backend that is not built are skipped, with the reason.  The
``fastsoftmax bench`` command measures the same cases round-robin in one process (better ratios on
a noisy machine); this suite gives pytest-benchmark's statistics, JSON files and
--benchmark-compare between runs.
"""
import pytest

from fastsoftmax import _dispatch, _registry
from fastsoftmax.tools import bench as _bench

COMPILED = ("cython", "numba")
METHODS = {"auto": ("auto",), "all": ("three_pass", "online"),
           "three_pass": ("three_pass",), "online": ("online",)}


def pytest_addoption(parser):
    g = parser.getgroup("fastsoftmax benchmarks")
    g.addoption("--fsm-suite", choices=("default", "full", "quick"), default="default",
                help="which cases of the op registry to run (default: the default suite)")
    g.addoption("--fsm-threads", default=None,
                help="thread budgets, e.g. 1,2 (default: 1; full: 1,2)")
    g.addoption("--fsm-backends", default=None,
                help="our backends, e.g. numba,cython,auto (default: numba,cython; "
                     "full adds the numpy reference)")
    g.addoption("--fsm-methods", choices=tuple(METHODS), default="auto",
                help="method of our softmax / log_softmax contenders; 'all' measures each "
                     "(as `fastsoftmax bench --method`)")


def _cases(config):
    suite = config.getoption("--fsm-suite")
    th = config.getoption("--fsm-threads")
    threads = [int(t) for t in th.split(",")] if th else None
    return _bench.select_cases(full=suite == "full", quick=suite == "quick", threads=threads)


def _backends(config):
    b = config.getoption("--fsm-backends")
    if b:
        names = [x.strip() for x in b.split(",") if x.strip()]
        bad = [x for x in names if x not in _dispatch.BACKENDS + ("auto",)]
        if bad:
            raise pytest.UsageError(f"--fsm-backends: unknown backend {bad[0]!r}: choose from "
                                    f"{', '.join(_dispatch.BACKENDS + ('auto',))}")
        return names
    return list(COMPILED) + (["numpy"] if config.getoption("--fsm-suite") == "full" else [])


def _methods(config):
    return METHODS[config.getoption("--fsm-methods")]


def _ours(config, op_name):
    """Our contenders of a bench row, named as the engine names them."""
    cons, _ = _bench.contenders(op_name, _backends(config), methods=_methods(config), peers=())
    return cons


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames or "contender" not in metafunc.fixturenames:
        return
    params, ids = [], []
    for case in _cases(metafunc.config):
        _, bench = _registry.BENCHES[case.op]
        names = [c.name for c in _ours(metafunc.config, case.op)] + list(bench.peers)
        for name in names:
            params.append((case, name))
            ids.append(f"{case.id}-{name.replace(' ', '-')}")
    metafunc.parametrize(("case", "contender"), params, ids=ids)


@pytest.fixture
def resolve_contender(request):
    """(case, name) -> the engine's Contender for the bench row, or a skip with the reason."""
    config = request.config

    def get(case, name):
        if name.startswith("fastsoftmax["):
            cons = _ours(config, case.op)
        else:
            cons, skipped = _bench.contenders(case.op, [], peers=(name,))
            if name in skipped:
                pytest.skip(f"peer {name}: {skipped[name]}")
        for c in cons:
            if c.name == name:
                if c.kind == "ours" and c.backend != "auto":
                    try:
                        _dispatch.load(c.backend)
                    except _dispatch.BackendUnavailableError as exc:
                        pytest.skip(str(exc))
                return c
        raise LookupError(f"{name} is not a contender of {case.op}")
    return get
