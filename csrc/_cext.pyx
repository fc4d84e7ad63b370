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


# ------------------------------------------------- temperature and base (fsm_temperature.h)
# The factor c = 1/T per reduced row: a float (stride 0) or a C-contiguous float64 array of one
# per row (stride 1), as the ops pass it.
cdef cnp.ndarray _factors(object factor, int64_t *stride):
    cdef cnp.ndarray f
    if isinstance(factor, cnp.ndarray):
        f = <cnp.ndarray>factor
        if cnp.PyArray_TYPE(f) != cnp.NPY_FLOAT64 or not cnp.PyArray_IS_C_CONTIGUOUS(f):
            raise TypeError("factor must be a C-contiguous float64 array (one per row)")
        stride[0] = 1
        return f
    f = cnp.PyArray_EMPTY(1, [1], cnp.NPY_FLOAT64, 0)
    (<double *>cnp.PyArray_DATA(f))[0] = <double>factor
    stride[0] = 0
    return f


cdef object _softmax_temp(cnp.ndarray x, cnp.ndarray out, log, nthreads, factor):
    cdef int64_t fs
    cdef cnp.ndarray f = _factors(factor, &fs)
    cdef const double *pf = <const double *>cnp.PyArray_DATA(f)
    cdef int64_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef int lg = 1 if log else 0
    cdef int nt = _nthreads(nthreads)
    cdef const void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef const fsm_ops *ops = _ops
    cdef bint f32 = _is_f32(x)
    with nogil:
        if f32:
            ops.softmax_temp_f32(<const float *>px, <float *>po, outer, n, inner, lg, pf, fs, nt)
        else:
            ops.softmax_temp_f64(<const double *>px, <double *>po, outer, n, inner, lg, pf, fs,
                                 nt)
    return out


cdef object _lse_temp(cnp.ndarray x, b, cnp.ndarray out, sign, nthreads, factor):
    cdef int64_t fs
    cdef cnp.ndarray f = _factors(factor, &fs)
    cdef const double *pf = <const double *>cnp.PyArray_DATA(f)
    cdef int64_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef int nt = _nthreads(nthreads)
    cdef const void *px = cnp.PyArray_DATA(x)
    cdef const void *pb = _ptr(b)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef void *ps = _ptr(sign)
    cdef const fsm_ops *ops = _ops
    cdef bint f32 = _is_f32(x)
    with nogil:
        if f32:
            ops.logsumexp_temp_f32(<const float *>px, <const float *>pb, <float *>po,
                                   <float *>ps, outer, n, inner, pf, fs, nt)
        else:
            ops.logsumexp_temp_f64(<const double *>px, <const double *>pb, <double *>po,
                                   <double *>ps, outer, n, inner, pf, fs, nt)
    return out


cdef object _ce_temp(cnp.ndarray logits, target, probs, weight, int64_t ign, double eps,
                     double sc, cnp.ndarray loss, grad, nthreads, factor):
    cdef int64_t fs
    cdef cnp.ndarray f = _factors(factor, &fs)
    cdef const double *pf = <const double *>cnp.PyArray_DATA(f)
    cdef int64_t N = logits.shape[0], C = logits.shape[1]
    cdef int nt = _nthreads(nthreads)
    cdef const void *px = cnp.PyArray_DATA(logits)
    cdef const int64_t *pt = <const int64_t *>_ptr(target)
    cdef const void *pp = _ptr(probs)
    cdef const void *pw = _ptr(weight)
    cdef void *pl = cnp.PyArray_DATA(loss)
    cdef void *pg = _ptr(grad)
    cdef const fsm_ops *ops = _ops
    cdef bint f32 = _is_f32(logits)
    with nogil:
        if f32:
            ops.cross_entropy_temp_f32(<const float *>px, pt, <const float *>pp,
                                       <const float *>pw, ign, eps, sc, <float *>pl,
                                       <float *>pg, N, C, pf, fs, nt)
        else:
            ops.cross_entropy_temp_f64(<const double *>px, pt, <const double *>pp,
                                       <const double *>pw, ign, eps, sc, <double *>pl,
                                       <double *>pg, N, C, pf, fs, nt)
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
# ------------------------------------------------------------------------ masks (where=)
# csrc/fsm_masked.h.  x, out (outer, n); mask (mrows, n) uint8; rowmap (outer,) int64; scale
# None or (outer,) float64.  The fast path never sees where= (the ops branch before it).
def softmax_masked(cnp.ndarray x, cnp.ndarray mask, cnp.ndarray rowmap, cnp.ndarray out, log,
                   scale, nthreads):
    """out = softmax (log False) / log_softmax (log True) of x * scale[row] over the masked-in
    entries of each row; out may be x."""
    cdef int64_t outer = out.shape[0], n = out.shape[1]
    cdef int lg = 1 if log else 0
    cdef int nt = _nthreads(nthreads)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef const char *pm = <const char *>cnp.PyArray_DATA(mask)
    cdef int64_t mr = mask.shape[0]
    cdef const int64_t *pr = <const int64_t *>cnp.PyArray_DATA(rowmap)
    cdef const double *ps = <const double *>_ptr(scale)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef const fsm_ops *ops = _ops
    if _is_f32(out):
        with nogil:
            ops.softmax_masked_f32(<const float *>px, pm, mr, pr, ps, <float *>po, outer, n, lg, nt)
    else:
        with nogil:
            ops.softmax_masked_f64(<const double *>px, pm, mr, pr, ps, <double *>po, outer, n, lg,
                                   nt)
    return out


def logsumexp_masked(cnp.ndarray x, cnp.ndarray mask, cnp.ndarray rowmap, cnp.ndarray out, sign,
                     scale, nthreads):
    """out (outer,) = logsumexp of x * scale[row] over the masked-in entries of each row; sign
    None or (outer,) receives the sign (1, 0 for no finite term, NaN)."""
    cdef int64_t outer = x.shape[0], n = x.shape[1]
    cdef int nt = _nthreads(nthreads)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef const char *pm = <const char *>cnp.PyArray_DATA(mask)
    cdef int64_t mr = mask.shape[0]
    cdef const int64_t *pr = <const int64_t *>cnp.PyArray_DATA(rowmap)
    cdef const double *ps = <const double *>_ptr(scale)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef void *pg = _ptr(sign)
    cdef const fsm_ops *ops = _ops
    if _is_f32(x):
        with nogil:
            ops.logsumexp_masked_f32(<const float *>px, pm, mr, pr, ps, <float *>po, <float *>pg,
                                     outer, n, nt)
    else:
        with nogil:
            ops.logsumexp_masked_f64(<const double *>px, pm, mr, pr, ps, <double *>po,
                                     <double *>pg, outer, n, nt)
    return out


def softmax_backward_masked(cnp.ndarray grad, cnp.ndarray y, cnp.ndarray mask,
                            cnp.ndarray rowmap, cnp.ndarray out, log, nthreads):
    """out (outer, n) = softmax / log_softmax backward over the masked-in entries of each row,
    0 at the others; out may be grad or y."""
    cdef int64_t outer = out.shape[0], n = out.shape[1]
    cdef int lg = 1 if log else 0
    cdef int nt = _nthreads(nthreads)
    cdef void *pg = cnp.PyArray_DATA(grad)
    cdef void *py = cnp.PyArray_DATA(y)
    cdef const char *pm = <const char *>cnp.PyArray_DATA(mask)
    cdef int64_t mr = mask.shape[0]
    cdef const int64_t *pr = <const int64_t *>cnp.PyArray_DATA(rowmap)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef const fsm_ops *ops = _ops
    if _is_f32(out):
        with nogil:
            ops.softmax_backward_masked_f32(<const float *>pg, <const float *>py, pm, mr, pr,
                                            <float *>po, outer, n, lg, nt)
    else:
        with nogil:
            ops.softmax_backward_masked_f64(<const double *>pg, <const double *>py, pm, mr, pr,
                                            <double *>po, outer, n, lg, nt)
    return out


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
# the contract functions as defined here: the dispatcher's fast path stands aside for an op
# whose function on this module has been replaced (a spy, a patch), so the replacement sees
# every call
CONTRACT = {"softmax": softmax, "logsumexp": logsumexp, "cross_entropy": cross_entropy}


# ------------------------------------------------------------------------ the fast entries
# The public functions' common case, checked and run here in one C call: an exact ndarray of
# native, aligned, C-contiguous float32/float64, an int axis or None, the default options.
# A FastPath holds what the dispatcher decided for the state it was built in (backend
# requested, tables in force, thread budget): per fast entry, dtype and size class, "the
# general path" (0) or the C kernel with a method code (METHOD_CODES).  Each entry returns the
# result, or None for anything else -- an unusual input, a bad one (the general path raises
# the specific error), or a class the dispatcher sends elsewhere -- and then the caller takes
# the general path.  The fast entries allocate exactly what the general path does (a fresh
# C-ordered result) and run the same kernel with the same method, so the results are the
# general path's bit for bit.  Size classes: _policy (N_CLASSES, ROW_CLASSES), passed in.

FAST_ENTRIES = ("softmax", "log_softmax", "logsumexp", "cross_entropy")
METHOD_CODES = {"auto": 1, "three_pass": 2, "online": 3}
N_SIZE_CLASSES = 30     # 5 row-length classes x 3 row-count classes x 2 layouts

cdef enum:
    E_SOFTMAX = 0
    E_LOG_SOFTMAX = 1
    E_LOGSUMEXP = 2
    E_CROSS_ENTROPY = 3
    N_ENTRIES = 4
    N_CELLS = 4 * 2 * 30

cdef int _FSM_METHOD[4]
_FSM_METHOD[:] = [-1, FSM_METHOD_AUTO, FSM_METHOD_THREE_PASS, FSM_METHOD_ONLINE]


cdef inline int _kernel_type(object x):
    """NPY_FLOAT32 / NPY_FLOAT64 for an exact ndarray of that dtype, native byte order, aligned
    and C-contiguous; -1 for anything else."""
    if type(x) is not cnp.ndarray:
        return -1
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(a)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        return -1
    if not (cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_IS_C_CONTIGUOUS(a)):
        return -1
    return t


cdef inline int _int_arg(object v, long *res):
    """1 and *res for an exact Python int that fits a C long, else 0."""
    cdef int overflow = 0
    if type(v) is not int:
        return 0
    res[0] = PyLong_AsLongAndOverflow(v, &overflow)
    return 0 if overflow else 1


cdef inline int _method_code(object method):
    """The METHOD_CODES value of an exact str method name, 0 for anything else."""
    if type(method) is not str:
        return 0
    if method == "auto":
        return 1
    if method == "three_pass":
        return 2
    if method == "online":
        return 3
    return 0


cdef class FastPath:
    """The fast entries under one dispatch decision (see above).  Built by ``_dispatch``."""
    cdef unsigned char routes[N_CELLS]
    cdef unsigned char rows_last[N_ENTRIES]
    cdef int64_t n_bounds[4]
    cdef int64_t row_bounds[2]
    cdef readonly int nthreads
    cdef bytes _env           # the variable that must be unset or empty (None: no check)
    cdef char *env

    def __init__(self, bytes routes, bytes rows_last, n_bounds, row_bounds, int nthreads,
                 env=None):
        """``routes``: N_ENTRIES x 2 dtypes (float32, float64) x N_SIZE_CLASSES bytes, each 0
        (the general path) or a METHOD_CODES value; the size class index is
        ``(n_class * 3 + rows_class) * 2 + (0 if last else 1)``.  ``rows_last``: per entry, 1
        when its scheme has no strided layout.  ``n_bounds`` (4) and ``row_bounds`` (2): the
        inclusive upper bounds of the classes.  ``env``: an environment variable whose being
        set (non-empty) sends every call to the general path."""
        cdef int i
        if len(routes) != N_CELLS or len(rows_last) != N_ENTRIES:
            raise ValueError(f"routes must hold {N_CELLS} bytes and rows_last {N_ENTRIES}")
        if len(n_bounds) != 4 or len(row_bounds) != 2:
            raise ValueError("FastPath takes 4 row-length bounds and 2 row-count bounds")
        for i in range(N_CELLS):
            self.routes[i] = routes[i]
        for i in range(N_ENTRIES):
            self.rows_last[i] = rows_last[i]
        for i in range(4):
            self.n_bounds[i] = n_bounds[i]
        for i in range(2):
            self.row_bounds[i] = row_bounds[i]
        self.nthreads = nthreads if nthreads >= 1 else 1
        self._env = None if env is None else env.encode()
        self.env = NULL if env is None else <char *>self._env

    def route(self, entry, dtype_index, size_index):
        """The route code of one cell (for tests and info)."""
        return self.routes[(FAST_ENTRIES.index(entry) * 2 + dtype_index) * N_SIZE_CLASSES
                           + size_index]

    cdef inline int _route(self, int entry, int t, int64_t outer, int64_t n, int64_t inner):
        """The route code for a call of entry on dtype t and canonical shape (outer, n, inner);
        0 also when the environment variable is set."""
        cdef char *v
        cdef int ni = 4, ri = 2, lay, i
        cdef int64_t rows = outer * inner
        if self.env != NULL:
            v = getenv(self.env)
            if v != NULL and v[0] != 0:
                return 0
        for i in range(4):
            if n <= self.n_bounds[i]:
                ni = i
                break
        if rows <= self.row_bounds[0]:
            ri = 0
        elif rows <= self.row_bounds[1]:
            ri = 1
        lay = 0 if (inner == 1 or self.rows_last[entry]) else 1
        return self.routes[(entry * 2 + (0 if t == cnp.NPY_FLOAT32 else 1)) * N_SIZE_CLASSES
                           + (ni * 3 + ri) * 2 + lay]

    cdef inline int _shape3(self, cnp.ndarray a, object axis, int64_t *outer, int64_t *n,
                            int64_t *inner, int *ax):
        """(outer, n, inner) of reducing a (ndim >= 1, no zero-length axis) over ``axis``
        (None or an exact int in range; *ax = -1 for None); 0 for any other axis or an
        empty array."""
        cdef int nd = cnp.PyArray_NDIM(a), i
        cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(a)
        cdef long axv = 0
        cdef int64_t size = cnp.PyArray_SIZE(a)
        if nd == 0 or size == 0:
            return 0
        if axis is None:
            outer[0] = 1
            n[0] = size
            inner[0] = 1
            ax[0] = -1
            return 1
        if not _int_arg(axis, &axv) or axv < -nd or axv >= nd:
            return 0
        if axv < 0:
            axv += nd
        outer[0] = 1
        inner[0] = 1
        for i in range(<int>axv):
            outer[0] *= dims[i]
        for i in range(<int>axv + 1, nd):
            inner[0] *= dims[i]
        n[0] = dims[axv]
        ax[0] = <int>axv
        return 1

    def softmax(self, x, axis, out, method, bint log):
        """softmax / log_softmax of the common call (``out`` None or a C-contiguous array of
        x's shape and dtype, x itself included), else None."""
        cdef int t = _kernel_type(x), code, m, ax
        cdef int64_t outer, n, inner
        cdef cnp.ndarray a, o
        cdef char *lo
        cdef char *hi
        cdef char *olo
        if t < 0:
            return None
        a = <cnp.ndarray>x
        if not self._shape3(a, axis, &outer, &n, &inner, &ax):
            return None
        m = _method_code(method)
        if m == 0:
            return None
        code = self._route(E_LOG_SOFTMAX if log else E_SOFTMAX, t, outer, n, inner)
        if code == 0:
            return None
        if m == 1:
            m = code
        if out is None:
            o = <cnp.ndarray>cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), t, 0)
        else:
            if _kernel_type(out) != t or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
                return None
            o = <cnp.ndarray>out
            if cnp.PyArray_NDIM(o) != cnp.PyArray_NDIM(a) or not cnp.PyArray_SAMESHAPE(o, a):
                return None
            lo = cnp.PyArray_BYTES(a)
            hi = lo + cnp.PyArray_NBYTES(a)
            olo = cnp.PyArray_BYTES(o)
            if olo != lo and olo < hi and lo < olo + cnp.PyArray_NBYTES(o):
                return None     # a partial overlap: the general path goes through a copy
        _softmax_call(t == cnp.NPY_FLOAT32, cnp.PyArray_DATA(a), cnp.PyArray_DATA(o), outer,
                      n, inner, 1 if log else 0, _FSM_METHOD[m], self.nthreads)
        return o

    def logsumexp(self, a, axis, b, keepdims, return_sign):
        """logsumexp of the common call (b None, return_sign False), else None; a 0-d result
        comes back as a NumPy scalar."""
        cdef int t = _kernel_type(a), ax, i, nd, k = 0
        cdef int64_t outer, n, inner
        cdef cnp.ndarray x, o
        cdef cnp.npy_intp rdims[32]
        cdef cnp.npy_intp *dims
        if t < 0 or b is not None or return_sign is not False:
            return None
        if keepdims is not False and keepdims is not True:
            return None
        x = <cnp.ndarray>a
        if not self._shape3(x, axis, &outer, &n, &inner, &ax):
            return None
        if self._route(E_LOGSUMEXP, t, outer, n, inner) == 0:
            return None
        nd = cnp.PyArray_NDIM(x)
        dims = cnp.PyArray_DIMS(x)
        if nd > 32:
            return None
        for i in range(nd):
            if ax == -1 or i == ax:
                if keepdims:
                    rdims[k] = 1
                    k += 1
            else:
                rdims[k] = dims[i]
                k += 1
        o = <cnp.ndarray>cnp.PyArray_EMPTY(k, rdims, t, 0)
        _lse_call(t == cnp.NPY_FLOAT32, cnp.PyArray_DATA(x), NULL, cnp.PyArray_DATA(o), NULL,
                  outer, n, inner, self.nthreads)
        if k == 0:
            Py_INCREF(o)    # PyArray_Return steals its argument (numpy's pxd does not say so)
            return cnp.PyArray_Return(o)
        return o

    def cross_entropy(self, logits, target, weight, ignore_index, reduction, label_smoothing,
                      axis, return_grad, grad_out):
        """cross_entropy of the common call (class-index int64 targets of the batch shape, no
        weight, no gradient, the class axis last), else None.  The sum of the row losses is
        NumPy's own (np.add.reduce in float64), as on the general path."""
        cdef int t = _kernel_type(logits), nd, i, red
        cdef long ign = 0, axv = 0
        cdef int64_t N, C, j, tj, count = 0
        cdef double eps, total
        cdef cnp.ndarray x, tg, loss
        cdef cnp.npy_intp *dims
        cdef cnp.npy_intp nrows
        cdef const int64_t *pt
        cdef float f32v
        if t < 0 or weight is not None or grad_out is not None or return_grad is not False:
            return None
        if type(reduction) is not str:
            return None
        if reduction == "mean":
            red = 0
        elif reduction == "sum":
            red = 1
        elif reduction == "none":
            red = 2
        else:
            return None
        if type(label_smoothing) is float:
            eps = label_smoothing
        elif type(label_smoothing) is int and (label_smoothing == 0 or label_smoothing == 1):
            eps = label_smoothing
        else:
            return None
        if not (0.0 <= eps <= 1.0) or not _int_arg(ignore_index, &ign):
            return None
        x = <cnp.ndarray>logits
        nd = cnp.PyArray_NDIM(x)
        if nd == 0 or cnp.PyArray_SIZE(x) == 0 or not _int_arg(axis, &axv):
            return None
        if axv != -1 and axv != nd - 1:
            return None
        dims = cnp.PyArray_DIMS(x)
        C = dims[nd - 1]
        N = cnp.PyArray_SIZE(x) // C
        if type(target) is not cnp.ndarray:
            return None
        tg = <cnp.ndarray>target
        if (cnp.PyArray_TYPE(tg) != cnp.NPY_INT64 or not cnp.PyArray_ISNOTSWAPPED(tg)
                or not cnp.PyArray_ISALIGNED(tg) or not cnp.PyArray_IS_C_CONTIGUOUS(tg)
                or cnp.PyArray_NDIM(tg) != nd - 1):
            return None
        for i in range(nd - 1):
            if cnp.PyArray_DIMS(tg)[i] != dims[i]:
                return None
        if self._route(E_CROSS_ENTROPY, t, N, C, 1) == 0:
            return None
        pt = <const int64_t *>cnp.PyArray_DATA(tg)
        for j in range(N):
            tj = pt[j]
            if tj != ign:
                if tj < 0 or tj >= C:
                    return None     # the general path says which target is out of range
                count += 1
        if red == 0 and count == 0:
            return None             # every row ignored: the general path's NaN
        if red == 2:
            loss = <cnp.ndarray>cnp.PyArray_ZEROS(nd - 1, dims, t, 0)
        else:
            nrows = N
            loss = <cnp.ndarray>cnp.PyArray_ZEROS(1, &nrows, t, 0)
        _ce_call(t == cnp.NPY_FLOAT32, cnp.PyArray_DATA(x), pt, NULL, NULL, ign, eps,
                 1.0 / <double>count if red == 0 else 1.0, cnp.PyArray_DATA(loss), NULL, N, C,
                 self.nthreads)
        if red == 2:
            return loss
        total = cnp.PyArray_Sum(loss, 0, cnp.NPY_FLOAT64, None)
        if red == 0:
            total = total / <double>count
        if t == cnp.NPY_FLOAT64:
            return PyArray_Scalar(&total, cnp.PyArray_DescrFromType(cnp.NPY_FLOAT64), None)
        f32v = <float>total
        return PyArray_Scalar(&f32v, cnp.PyArray_DescrFromType(cnp.NPY_FLOAT32), None)
