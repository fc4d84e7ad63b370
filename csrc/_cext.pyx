# cython: language_level=3
"""fastsoftmax._cext: the Cython wrapper of the C kernels (csrc/, table in csrc/fsm_ops.def).

Kernel contract: docs/DESIGN.md.  Arrays arrive validated (C-contiguous float32/float64, shapes
per the contract); this module only picks the float32/float64 entry of the current ISA path's
table, releases the GIL around the C call, and never looks at the values.

ISA paths: the kernels are compiled once per path (avx512, avx2, baseline); the best one the CPU
runs is chosen at import, FASTSOFTMAX_ISA forces another (a lower one), set_isa() switches.
"""
import os

cimport numpy as cnp
from libc.stdint cimport int64_t
from cpython.ref cimport Py_INCREF
from libc.stdlib cimport getenv

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)

cdef extern from "Python.h":
    long PyLong_AsLongAndOverflow(object obj, int *overflow) except? -1


# the struct fsm_ops (the table of one ISA path), written by setup.py from csrc/fsm_ops.def
include "fsm_ops.pxi"

cdef extern from "fsm_kernels.h" nogil:
    int fsm_isa_count()
    const char *fsm_isa_name(int i)
    const fsm_ops *fsm_isa_ops(const char *name)
    int fsm_threads_available()
    enum:
        FSM_METHOD_AUTO
        FSM_METHOD_THREE_PASS
        FSM_METHOD_ONLINE


cdef const fsm_ops *_ops = NULL


def isa_paths():
    """The SIMD paths compiled in that this CPU can run, best first."""
    cdef int i
    names = []
    for i in range(fsm_isa_count()):
        name = fsm_isa_name(i)
        if fsm_isa_ops(name) != NULL:
            names.append(name.decode())
    return names


def get_isa():
    """The path the kernels use now."""
    return _ops.name.decode()


def set_isa(name):
    """Use path `name` ("avx512", "avx2", "baseline"); ValueError if unknown or unsupported."""
    global _ops
    if not isinstance(name, str):
        raise ValueError(f"unknown ISA path {name!r}")
    cdef bytes bname = name.encode()
    cdef const fsm_ops *ops = fsm_isa_ops(bname)
    if ops == NULL:
        raise ValueError(f"ISA path {name!r} is unknown or not supported by this CPU; "
                         f"available: {isa_paths()}")
    _ops = ops


def threads_available():
    """True when built with the pthread pool (False: every call runs on one thread)."""
    return bool(fsm_threads_available())


_ops = fsm_isa_ops(isa_paths()[0].encode())
_env_isa = os.environ.get("FASTSOFTMAX_ISA", "").strip().lower()
if _env_isa:
    set_isa(_env_isa)


# A call on fewer elements than this keeps the GIL: releasing it costs little alone, but where
# another Python thread waits for the GIL (a background Numba compile, the caller's own threads)
# the release hands it over and getting it back waits for that thread's switch interval
# (5 ms), a thousand times a small call's work.  numpy's ufuncs keep it below 500 elements.
cdef enum:
    NOGIL_MIN = 1 << 14


cdef inline bint _is_f32(cnp.ndarray a):
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void *_ptr(object a):
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline int _nthreads(object nthreads):
    cdef long n = nthreads
    return <int>(n if n >= 1 else 1)


cdef inline int _method(object method) except -1:
    if method == "auto":
        return FSM_METHOD_AUTO
    if method == "three_pass":
        return FSM_METHOD_THREE_PASS
    if method == "online":
        return FSM_METHOD_ONLINE
    raise ValueError(f"unknown softmax method {method!r}")


# ------------------------------------------------------------------ the kernel calls, once
# Each runs one kernel of the current ISA path's table, with the GIL released for NOGIL_MIN
# elements or more; the contract functions below and the fast entries both call these.
cdef inline void _softmax_raw(const fsm_ops *ops, bint f32, const void *px, void *po,
                              int64_t outer, int64_t n, int64_t inner, int lg, int meth,
                              int nt) noexcept nogil:
    if f32:
        ops.softmax_f32(<const float *>px, <float *>po, outer, n, inner, lg, meth, nt)
    else:
        ops.softmax_f64(<const double *>px, <double *>po, outer, n, inner, lg, meth, nt)


cdef inline void _softmax_call(bint f32, const void *px, void *po, int64_t outer, int64_t n,
                               int64_t inner, int lg, int meth, int nt) noexcept:
    cdef const fsm_ops *ops = _ops
    if outer * n * inner >= NOGIL_MIN:
        with nogil:
            _softmax_raw(ops, f32, px, po, outer, n, inner, lg, meth, nt)
    else:
        _softmax_raw(ops, f32, px, po, outer, n, inner, lg, meth, nt)


cdef inline void _lse_raw(const fsm_ops *ops, bint f32, const void *px, const void *pb,
                          void *po, void *ps, int64_t outer, int64_t n, int64_t inner,
                          int nt) noexcept nogil:
    if f32:
        ops.logsumexp_f32(<const float *>px, <const float *>pb, <float *>po, <float *>ps,
                          outer, n, inner, nt)
    else:
        ops.logsumexp_f64(<const double *>px, <const double *>pb, <double *>po, <double *>ps,
                          outer, n, inner, nt)


cdef inline void _lse_call(bint f32, const void *px, const void *pb, void *po, void *ps,
                           int64_t outer, int64_t n, int64_t inner, int nt) noexcept:
    cdef const fsm_ops *ops = _ops
    if outer * n * inner >= NOGIL_MIN:
        with nogil:
            _lse_raw(ops, f32, px, pb, po, ps, outer, n, inner, nt)
    else:
        _lse_raw(ops, f32, px, pb, po, ps, outer, n, inner, nt)


cdef inline void _ce_raw(const fsm_ops *ops, bint f32, const void *px, const int64_t *pt,
                         const void *pp, const void *pw, int64_t ign, double eps, double sc,
                         void *pl, void *pg, int64_t N, int64_t C, int nt) noexcept nogil:
    if f32:
        ops.cross_entropy_f32(<const float *>px, pt, <const float *>pp, <const float *>pw,
                              ign, eps, sc, <float *>pl, <float *>pg, N, C, nt)
    else:
        ops.cross_entropy_f64(<const double *>px, pt, <const double *>pp, <const double *>pw,
                              ign, eps, sc, <double *>pl, <double *>pg, N, C, nt)


cdef inline void _ce_call(bint f32, const void *px, const int64_t *pt, const void *pp,
                          const void *pw, int64_t ign, double eps, double sc, void *pl,
                          void *pg, int64_t N, int64_t C, int nt) noexcept:
    cdef const fsm_ops *ops = _ops
    if N * C >= NOGIL_MIN:
        with nogil:
            _ce_raw(ops, f32, px, pt, pp, pw, ign, eps, sc, pl, pg, N, C, nt)
    else:
        _ce_raw(ops, f32, px, pt, pp, pw, ign, eps, sc, pl, pg, N, C, nt)


# ------------------------------------------------------------------------- the contract
def softmax(cnp.ndarray x, cnp.ndarray out, log, method, nthreads, factor=None):
    """out = softmax (log=False) or log_softmax (log=True) of x (outer, n, inner) along axis 1;
    of x * factor with a factor (a float, or (outer, inner) float64: temperature and base)."""
    if factor is not None:
        return _softmax_temp(x, out, log, nthreads, factor)
    _softmax_call(_is_f32(x), cnp.PyArray_DATA(x), cnp.PyArray_DATA(out), x.shape[0],
                  x.shape[1], x.shape[2], 1 if log else 0, _method(method), _nthreads(nthreads))
    return out


def logsumexp(cnp.ndarray x, b, cnp.ndarray out, sign, nthreads, factor=None):
    """out (outer, inner) = logsumexp of x (outer, n, inner) along axis 1, weights b, sign;
    with a factor c = 1/T (a float, or (outer, inner) float64): T * logsumexp(x * c)."""
    if factor is not None:
        return _lse_temp(x, b, out, sign, nthreads, factor)
    _lse_call(_is_f32(x), cnp.PyArray_DATA(x), _ptr(b), cnp.PyArray_DATA(out), _ptr(sign),
              x.shape[0], x.shape[1], x.shape[2], _nthreads(nthreads))
    return out


def cross_entropy(cnp.ndarray logits, target, probs, weight, ignore_index, smoothing, scale,
                  cnp.ndarray loss, grad, nthreads, factor=None):
    """Fused cross-entropy: loss (N,) per row and, when grad is not None, its gradient (N, C);
    with a factor c (a float, or (N,) float64): the loss of logits * c, its gradient."""
    cdef int64_t ign = ignore_index
    cdef double eps = smoothing, sc = scale
    if factor is not None:
        return _ce_temp(logits, target, probs, weight, ign, eps, sc, loss, grad, nthreads, factor)
    _ce_call(_is_f32(logits), cnp.PyArray_DATA(logits), <const int64_t *>_ptr(target),
             _ptr(probs), _ptr(weight), ign, eps, sc, cnp.PyArray_DATA(loss), _ptr(grad),
             logits.shape[0], logits.shape[1], _nthreads(nthreads))
    return loss


cdef object _elementwise(cnp.ndarray x, cnp.ndarray out, bint lg):
    """out = the kernels' own exp (lg False) or log (lg True) of x (1-D)."""
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef const fsm_ops *ops = _ops
    if _is_f32(x):
        with nogil:
            (ops.log_f32 if lg else ops.exp_f32)(<const float *>px, <float *>po, n)
    else:
        with nogil:
            (ops.log_f64 if lg else ops.exp_f64)(<const double *>px, <double *>po, n)
    return out


def exp(cnp.ndarray x, cnp.ndarray out):
    """out = the kernels' own exp of x (1-D)."""
    return _elementwise(x, out, False)


def log(cnp.ndarray x, cnp.ndarray out):
    """out = the kernels' own log of x (1-D)."""
    return _elementwise(x, out, True)


# the rest of the module, one include per part (textual: one module, one namespace)
include "_cext_temperature.pxi"   # temperature and base (fsm_temperature.h)
include "_cext_training.pxi"      # backward, sigmoid, BCE, masks (where=), sampling

# the contract functions as defined here: the dispatcher's fast path stands aside for an op
# whose function on this module has been replaced (a spy, a patch), so the replacement sees
# every call
CONTRACT = {"softmax": softmax, "logsumexp": logsumexp, "cross_entropy": cross_entropy}

include "_cext_fastpath.pxi"      # FastPath: the fast entries
