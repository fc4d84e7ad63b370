# Part of fastsoftmax._cext, included by csrc/_cext.pyx (one module, one namespace):
# the training ops, the masks (where=) and the candidate sampler.

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
