"""Below the maths: scalar LLVM intrinsics, and helpers that Numba resolves while typing.

Intrinsics (hand-written LLVM IR; each one vectorizes like a plain operation):
* ``radd``: an fadd carrying the ``reassoc`` flag alone, so LLVM vectorizes a sum reduction
  while every other instruction keeps strict IEEE semantics;
* ``fmax``: ``llvm.maxnum`` with ``nnan`` and ``nsz`` (a plain vmaxps; the NaN rule at
  ``fmax``);
* ``claim``: an atomic fetch-and-add on a counter (an int64 array's first element), by which
  threads claim the next chunk of work without the GIL;
* ``f64_as_i64`` / ``i64_as_f64``: bitcasts (Numba has no scalar bitcast), for log;
* ``scale_by_kf``: p * 2^n with n read from the bits of exp's rounding
  float, for exp; ``pow2_of_kf``: the power of two whose biased exponent sits in the low bits of
  exp's rounding float (one integer shift: the magic-bias trick).

Compile-time helpers (``@overload``, inlined; the branch on None costs nothing at run time):
* ``like(a, v)``: v in a's float type;
* ``pick(x, other)``: x, or other when x is None (in place: the input is the output);
* ``rowof(x, i)``: x[i], or None when x is None;
* ``block(x, ob, a, b)`` / ``block3(...)``: the input's block, or the output's own block in
  place, so that the loop reads and writes through one array.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload
import numpy as np

__all__ = ["radd", "fmax", "claim", "f64_as_i64", "i64_as_f64", "scale_by_kf", "pow2_of_kf",
           "like", "top", "pick", "rowof", "block", "block3"]


# ----------------------------------------------------------------------------- sums and maxima
@intrinsic
def radd(typingctx, a, b):
    """a + b as an fadd with the reassoc flag only: lets LLVM vectorize a sum reduction."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=("reassoc",))

    return a(a, b), codegen


@intrinsic
def fmax(typingctx, a, b):
    """llvm.maxnum(a, b) with the nnan and nsz flags: the larger of two non-NaN numbers (a plain
    vmaxps; max(-0, +0) may be either zero).

    With a NaN operand the result is unspecified, so a max over a row holding a NaN may be any
    of its values or NaN.  Every kernel is written so that this does not matter: the NaN then
    reaches the sum (s, t) and the row's result is NaN whatever m was.  (Without nnan, maxnum's
    NaN fix-up makes the max pass 3-4x slower.)"""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        fty = args[0].type
        name = "llvm.maxnum.f32" if a.bitwidth == 32 else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty, fty]), name)
        return builder.call(fn, args, fastmath=("nnan", "nsz"))

    return a(a, b), codegen


@intrinsic
def claim(typingctx, ctr):
    """ctr[0] += 1, atomically (sequentially consistent); returns the old value: the index of
    the chunk this thread has claimed.  ctr: a 1-D int64 array (no bounds check)."""
    if not (isinstance(ctr, types.Array) and ctr.dtype == types.int64 and ctr.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, ir.Constant(ir.IntType(64), 1), "seq_cst")

    return types.int64(ctr), codegen


# ----------------------------------------------------------------------------- bit tricks
@intrinsic
def f64_as_i64(typingctx, x):
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def i64_as_f64(typingctx, i):
    if i != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(i), codegen


@intrinsic
def scale_by_kf(typingctx, p, kf):
    """p * 2**n where kf = n + 1.5 * 2**(mantissa bits) (the rounding-trick float): n is read
    from kf's low mantissa bits, so no float -> int conversion (and no NaN special case: a NaN kf
    gives some scale, and p is NaN then anyway).  Two factors, 2**(n >> 1) and 2**(n - (n >> 1)),
    so subnormal results and overflow to inf come out of the last product."""
    if not (isinstance(p, types.Float) and p == kf):
        return None
    bits = p.bitwidth
    mant = 23 if bits == 32 else 52
    bias = 127 if bits == 32 else 1023
    magic_bits = 0x4B400000 if bits == 32 else 0x4338000000000000

    def codegen(context, builder, sig, args):
        pv, kv = args
        fty = pv.type
        ity = ir.IntType(bits)
        n = builder.sub(builder.bitcast(kv, ity), ir.Constant(ity, magic_bits))
        n1 = builder.ashr(n, ir.Constant(ity, 1))
        n2 = builder.sub(n, n1)
        s1 = builder.bitcast(builder.shl(builder.add(n1, ir.Constant(ity, bias)), ir.Constant(ity, mant)), fty)
        s2 = builder.bitcast(builder.shl(builder.add(n2, ir.Constant(ity, bias)), ir.Constant(ity, mant)), fty)
        return builder.fmul(builder.fmul(pv, s1), s2)

    return p(p, kf), codegen


@intrinsic
def pow2_of_kf(typingctx, kf):
    """The float whose bits are kf's bits shifted left by the mantissa width: with kf = 1.5 *
    2^mant + bias + n (the rounding float of exp, its exponent bias folded into the magic
    constant), that is 2^n, for 1 <= bias + n < 2^exponent-bits.  One integer shift."""
    if not isinstance(kf, types.Float):
        return None
    bits = kf.bitwidth
    mant = 23 if bits == 32 else 52

    def codegen(context, builder, sig, args):
        ity = ir.IntType(bits)
        i = builder.bitcast(args[0], ity)
        return builder.bitcast(builder.shl(i, ir.Constant(ity, mant)), args[0].type)

    return kf(kf), codegen


# ----------------------------------------------------------------------------- compile-time helpers
def like(a, v):
    """v converted to the float type of the scalar a (njit only)."""
    raise NotImplementedError  # pragma: no cover


@overload(like, inline="always")
def _ov_like(a, v):
    if a == types.float32:
        return lambda a, v: np.float32(v)
    if a == types.float64:
        return lambda a, v: np.float64(v)


def top(a):
    """The largest finite value of the float type of the scalar a (njit only)."""
    raise NotImplementedError  # pragma: no cover


@overload(top, inline="always")
def _ov_top(a):
    if a == types.float32:
        big = np.float32(np.finfo(np.float32).max)
        return lambda a: big
    if a == types.float64:
        big = float(np.finfo(np.float64).max)
        return lambda a: big


def pick(x, other):
    """x, or other when x is None; resolved at compile time (njit only)."""
    raise NotImplementedError  # pragma: no cover


@overload(pick, inline="always")
def _ov_pick(x, other):
    if isinstance(x, types.NoneType):
        return lambda x, other: other
    return lambda x, other: x


def rowof(x, i):
    """x[i], or None when x is None (an absent optional array, or the input of an in-place
    call); njit only."""
    raise NotImplementedError  # pragma: no cover


@overload(rowof, inline="always")
def _ov_rowof(x, i):
    if isinstance(x, types.NoneType):
        return lambda x, i: None
    return lambda x, i: x[i]


def block(x, ob, a, b):
    """x[a:b], or ob itself (the output's block [a, b)) when x is None; njit only.  In place,
    the loop must read and write through one array: two slices of the same row are two
    pointers that overlap exactly, LLVM's runtime alias check fails and the scalar loop runs
    (7x slower)."""
    raise NotImplementedError  # pragma: no cover


@overload(block, inline="always")
def _ov_block(x, ob, a, b):
    if isinstance(x, types.NoneType):
        return lambda x, ob, a, b: ob
    return lambda x, ob, a, b: x[a:b]


def block3(x, orow, o, j, k0, k1):
    """x[o, j, k0:k1], or orow (the same block of the output) when x is None: block for the
    (outer, n, inner) kernels."""
    raise NotImplementedError  # pragma: no cover


@overload(block3, inline="always")
def _ov_block3(x, orow, o, j, k0, k1):
    if isinstance(x, types.NoneType):
        return lambda x, orow, o, j, k0, k1: orow
    return lambda x, orow, o, j, k0, k1: x[o, j, k0:k1]
