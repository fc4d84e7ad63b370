# Part of fastsoftmax._cext, included by csrc/_cext.pyx (one module, one namespace):
# the fast entries.

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
