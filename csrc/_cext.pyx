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

cnp.import_array()


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


def softmax(cnp.ndarray x, cnp.ndarray out, log, method, nthreads):
    """out = softmax (log=False) or log_softmax (log=True) of x (outer, n, inner) along axis 1."""
    cdef int64_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef int lg = 1 if log else 0
    cdef int meth = _method(method)
    cdef int nt = _nthreads(nthreads)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef const fsm_ops *ops = _ops
    if _is_f32(x):
        with nogil:
            ops.softmax_f32(<const float *>px, <float *>po, outer, n, inner, lg, meth, nt)
    else:
        with nogil:
            ops.softmax_f64(<const double *>px, <double *>po, outer, n, inner, lg, meth, nt)
    return out


def logsumexp(cnp.ndarray x, b, cnp.ndarray out, sign, nthreads):
    """out (outer, inner) = logsumexp of x (outer, n, inner) along axis 1, weights b, sign."""
    cdef int64_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef int nt = _nthreads(nthreads)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *pb = _ptr(b)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef void *ps = _ptr(sign)
    cdef const fsm_ops *ops = _ops
    if _is_f32(x):
        with nogil:
            ops.logsumexp_f32(<const float *>px, <const float *>pb, <float *>po, <float *>ps,
                              outer, n, inner, nt)
    else:
        with nogil:
            ops.logsumexp_f64(<const double *>px, <const double *>pb, <double *>po, <double *>ps,
                              outer, n, inner, nt)
    return out


def cross_entropy(cnp.ndarray logits, target, probs, weight, ignore_index, smoothing, scale,
                  cnp.ndarray loss, grad, nthreads):
    """Fused cross-entropy: loss (N,) per row and, when grad is not None, its gradient (N, C)."""
    cdef int64_t N = logits.shape[0], C = logits.shape[1]
    cdef int nt = _nthreads(nthreads)
    cdef int64_t ign = ignore_index
    cdef double eps = smoothing, sc = scale
    cdef void *px = cnp.PyArray_DATA(logits)
    cdef const int64_t *pt = <const int64_t *>_ptr(target)
    cdef void *pp = _ptr(probs)
    cdef void *pw = _ptr(weight)
    cdef void *pl = cnp.PyArray_DATA(loss)
    cdef void *pg = _ptr(grad)
    cdef const fsm_ops *ops = _ops
    if _is_f32(logits):
        with nogil:
            ops.cross_entropy_f32(<const float *>px, pt, <const float *>pp, <const float *>pw,
                                  ign, eps, sc, <float *>pl, <float *>pg, N, C, nt)
    else:
        with nogil:
            ops.cross_entropy_f64(<const double *>px, pt, <const double *>pp, <const double *>pw,
                                  ign, eps, sc, <double *>pl, <double *>pg, N, C, nt)
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


# ------------------------------------------------------------------------ training ops
def softmax_backward(cnp.ndarray grad, cnp.ndarray y, cnp.ndarray out, log, nthreads):
    """out (outer, n, inner) = softmax (log False) / log_softmax (log True) backward along axis
    1; out may be grad or y."""
    cdef int64_t outer = out.shape[0], n = out.shape[1], inner = out.shape[2]
    cdef int lg = 1 if log else 0
    cdef int nt = _nthreads(nthreads)
    cdef void *pg = cnp.PyArray_DATA(grad)
    cdef void *py = cnp.PyArray_DATA(y)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef const fsm_ops *ops = _ops
    if _is_f32(out):
        with nogil:
            ops.softmax_backward_f32(<const float *>pg, <const float *>py, <float *>po, outer,
                                     n, inner, lg, nt)
    else:
        with nogil:
            ops.softmax_backward_f64(<const double *>pg, <const double *>py, <double *>po,
                                     outer, n, inner, lg, nt)
    return out


def sigmoid(cnp.ndarray x, cnp.ndarray out, log, nthreads):
    """out = sigmoid (log False) / log_sigmoid (log True) of x (1-D); out may be x."""
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef int lg = 1 if log else 0
    cdef int nt = _nthreads(nthreads)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef const fsm_ops *ops = _ops
    if _is_f32(x):
        with nogil:
            ops.sigmoid_f32(<const float *>px, <float *>po, n, lg, nt)
    else:
        with nogil:
            ops.sigmoid_f64(<const double *>px, <double *>po, n, lg, nt)
    return out


def binary_cross_entropy(cnp.ndarray logits, cnp.ndarray target, weight, pos_weight, scale,
                         cnp.ndarray partial, loss, grad, nthreads):
    """Fused binary cross-entropy with logits over (N, C): partial sums of the loss (one per flat
    block), the elementwise loss when loss is not None, the gradient when grad is not None."""
    cdef int64_t N = logits.shape[0], C = logits.shape[1]
    cdef int64_t wr = 1, wc = 1
    cdef int64_t nb = partial.shape[0]
    cdef int nt = _nthreads(nthreads)
    cdef double sc = scale
    if weight is not None:
        wr = (<cnp.ndarray>weight).shape[0]
        wc = (<cnp.ndarray>weight).shape[1]
    cdef void *px = cnp.PyArray_DATA(logits)
    cdef void *pz = cnp.PyArray_DATA(target)
    cdef void *pw = _ptr(weight)
    cdef void *pp = _ptr(pos_weight)
    cdef double *ppart = <double *>cnp.PyArray_DATA(partial)
    cdef void *pl = _ptr(loss)
    cdef void *pg = _ptr(grad)
    cdef const fsm_ops *ops = _ops
    if _is_f32(logits):
        with nogil:
            ops.binary_cross_entropy_f32(<const float *>px, <const float *>pz, <const float *>pw,
                                         wr, wc, <const float *>pp, sc, ppart, nb, <float *>pl,
                                         <float *>pg, N, C, nt)
    else:
        with nogil:
            ops.binary_cross_entropy_f64(<const double *>px, <const double *>pz,
                                         <const double *>pw, wr, wc, <const double *>pp, sc,
                                         ppart, nb, <double *>pl, <double *>pg, N, C, nt)
    return partial
def sample_candidates(cnp.ndarray u, cdf, range_max, seen, cnp.ndarray out, cnp.ndarray state):
    """Candidate sampling by inverse CDF (csrc/fsm_sampling.h), resumable through state."""
    cdef int64_t nu = u.shape[0], R = range_max, ns = out.shape[0]
    cdef const double *pu = <const double *>cnp.PyArray_DATA(u)
    cdef const double *pc = <const double *>_ptr(cdf)
    cdef char *ps = <char *>_ptr(seen)
    cdef int64_t *po = <int64_t *>cnp.PyArray_DATA(out)
    cdef int64_t *pst = <int64_t *>cnp.PyArray_DATA(state)
    cdef const fsm_ops *ops = _ops
    with nogil:
        ops.sample_candidates(pu, nu, pc, R, ps, po, ns, pst)
    return out
