"""The backends' own exp and log (the code inside the kernels) within 2 ULP of the correctly
rounded result over the whole range, with the IEEE special cases."""
import numpy as np
import pytest

from fastsoftmax import _dispatch

UINT = {np.float32: np.uint32, np.float64: np.uint64}


def _mod(backend):
    return _dispatch.load(backend)


def _run(backend, fname, x):
    out = np.empty_like(x)
    getattr(_mod(backend), fname)(x, out)
    return out


def _ulps(got, x, fname, dtype):
    """Error of ``got`` in units in the last place of the correctly rounded result."""
    wide = np.float64 if dtype == np.float32 else np.longdouble
    with np.errstate(all="ignore"):
        exact = getattr(np, fname)(x.astype(wide))
        rounded = exact.astype(dtype)
        finite = np.isfinite(rounded) & np.isfinite(got)
        spacing = np.spacing(np.abs(rounded[finite])).astype(wide)
        err = np.abs(got[finite].astype(wide) - exact[finite]) / spacing
    # where the rounded result is infinite or NaN the answer must be that exactly
    same = (got[~finite] == rounded[~finite]) | (np.isnan(got[~finite]) & np.isnan(rounded[~finite]))
    return err, same


def _sample(dtype, lo, hi, n, seed):
    """Floats spread over [lo, hi]: uniform in value and uniform in bit pattern (all binades)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(lo, hi, n).astype(dtype)
    ut = UINT[dtype]
    bits = rng.integers(0, np.iinfo(ut).max, n, dtype=ut, endpoint=True)
    v = bits.view(dtype)
    v = v[np.isfinite(v) & (v >= lo) & (v <= hi)]
    return np.concatenate([u, v])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_within_2_ulp(backend, dtype):
    fi = np.finfo(dtype)
    lo, hi = (-110.0, 92.0) if dtype == np.float32 else (-750.0, 712.0)
    x = _sample(dtype, lo, hi, 400_000, seed=1)
    # edges: around 0, the overflow and underflow thresholds, subnormal results
    edges = np.array([0.0, -0.0, 1e-30, -1e-30, fi.tiny, 1.0, -1.0, np.log(fi.max),
                      np.nextafter(np.log(fi.max), np.inf, dtype=dtype), np.log(fi.tiny),
                      np.log(fi.smallest_subnormal), 0.5 * np.log(fi.tiny) * 2.02], dtype)
    x = np.concatenate([x, edges])
    err, same = _ulps(_run(backend, "exp", x), x, "exp", dtype)
    assert same.all()
    assert err.max() <= 2.0, f"max error {float(err.max()):.3f} ULP at x={x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(backend, dtype):
    x = np.array([0.0, -0.0, -np.inf, np.inf, np.nan, 1000.0, -1000.0, 100.0, -200.0], dtype)
    got = _run(backend, "exp", x)
    assert got[0] == 1.0 and got[1] == 1.0
    assert got[2] == 0.0 and got[3] == np.inf and np.isnan(got[4])
    assert got[5] == np.inf and got[6] == 0.0
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got[7:], np.exp(x[7:].astype(np.float64)).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_within_2_ulp(backend, dtype):
    fi = np.finfo(dtype)
    x = _sample(dtype, 0.0, float(fi.max), 400_000, seed=2)
    x = x[x > 0]
    edges = np.array([fi.smallest_subnormal, fi.tiny, 1.0, np.nextafter(1, 2, dtype=dtype),
                      np.nextafter(1, 0, dtype=dtype), 0.5, 2.0, fi.max, 1e-3, 0.9999],
                     dtype)
    x = np.concatenate([x, edges, np.linspace(0.5, 2.0, 20_000, dtype=dtype)])
    err, same = _ulps(_run(backend, "log", x), x, "log", dtype)
    assert same.all()
    assert err.max() <= 2.0, f"max error {float(err.max()):.3f} ULP at x={x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_special_values(backend, dtype):
    x = np.array([0.0, -0.0, -1.0, np.inf, np.nan, -np.inf, 1.0], dtype)
    got = _run(backend, "log", x)
    assert got[0] == -np.inf and got[1] == -np.inf
    assert np.isnan(got[2]) and got[3] == np.inf and np.isnan(got[4]) and np.isnan(got[5])
    assert got[6] == 0.0
