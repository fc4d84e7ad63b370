# Part of fastsoftmax._cext, included by csrc/_cext.pyx (one module, one namespace):
# temperature and base.

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
