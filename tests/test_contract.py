"""The kernel contract, driven by the op registry (``fastsoftmax._registry``): every op x every
available backend and ISA path x dtype x layout, over the op's grid of (shape, axis) cases, value
kinds and option sets, against the NumPy reference backend.  A newly registered op is tested here
with no other edit."""
import warnings

import numpy as np
import pytest

import fastsoftmax as fs
from conftest import apply_layout, assert_close, stable_seed
from fastsoftmax import _dispatch, _registry

OPS = _registry.OPS
CASES = [pytest.param(op.name, dt, lay, id=f"{op.name}-{dt}-{lay}")
         for op in OPS.values() for dt in op.grid.dtypes for lay in op.grid.layouts]


def test_every_backend_module_implements_every_kernel():
    for name in fs.available_backends():
        mod = _dispatch.load(name)
        for op in OPS.values():
            assert callable(getattr(mod, op.kernel, None)), f"{name} lacks {op.kernel}"


def test_every_op_is_public_and_documented():
    for op in OPS.values():
        func = getattr(fs, op.name)
        assert op.name in fs.__all__ and func.__doc__
        assert op.methods[0] == "auto" and op.benches


def _quiet(func, **kw):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return func(**kw)


def _scale(args):
    """The magnitude of the float inputs: absolute errors of differences scale with it."""
    vals = [np.abs(v[np.isfinite(v)]) for v in args.values() if v.dtype.kind == "f"]
    return float(max((v.max(initial=1.0) for v in vals), default=1.0))


@pytest.mark.parametrize("opname, dtype, layout", CASES)
def test_op_matches_the_reference(backend, opname, dtype, layout):
    op = OPS[opname]
    func = getattr(fs, op.name)
    checked = 0
    for shape, axis in op.grid.cases:
        for kind in op.grid.values:
            rng = np.random.default_rng(stable_seed(opname, shape, axis, kind, dtype))
            base = op.inputs(shape, axis, np.dtype(dtype), rng, kind)
            args = {k: apply_layout(v, layout) if v.ndim else v for k, v in base.items()}
            before = {k: v.copy() for k, v in args.items()}
            scale = _scale(base)
            for opts in op.grid.options:
                got = _quiet(func, **args, axis=axis, backend=backend, **opts)
                want = _quiet(func, **base, axis=axis, backend="numpy", **opts)
                got = got if isinstance(got, tuple) else (got,)
                want = want if isinstance(want, tuple) else (want,)
                assert len(got) == len(want)
                for g, w in zip(got, want):
                    assert np.asarray(g).dtype == np.asarray(w).dtype, (shape, axis, kind, opts)
                    try:
                        assert_close(g, w, dtype, atol_scale=scale)
                    except AssertionError as exc:
                        raise AssertionError(f"{opname} {shape} axis={axis} {kind} {opts}: "
                                             f"{exc}") from None
                checked += 1
            for k, v in args.items():
                np.testing.assert_array_equal(v, before[k], err_msg=f"{opname} modified {k}")
    assert checked == len(op.grid.cases) * len(op.grid.values) * len(op.grid.options)
