/* fsm_kernels_impl.c -- the kernels, compiled once per ISA path.
 *
 * setup.py compiles this file three times: -DFSM_ISA=avx512 with
 * -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mprefer-vector-width=512,
 * -DFSM_ISA=avx2 with -mavx2 -mfma, and -DFSM_ISA=baseline with no -m flag (x86-64: SSE2).
 * Each object exports the table fsm_ops_<FSM_ISA>; everything else here is static.
 * The loops are plain C with `#pragma omp simd` (-fopenmp-simd: no OpenMP runtime); the maths
 * (fsm_math.h) is inlined into them, so the vector width is the ISA's.
 * The per-dtype code is in fsm_kernels_body.h, included twice (float32, float64).
 * The table at the end is generated from fsm_ops.def (designated: .entry = entry).
 */
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include "fsm_kernels.h"
#include "fsm_math.h"

#ifndef FSM_ISA
#define FSM_ISA baseline
#endif
#define FSM_CAT_(a, b) a##b
#define FSM_CAT(a, b) FSM_CAT_(a, b)
#define FSM_STR_(a) #a
#define FSM_STR(a) FSM_STR_(a)

#if defined(__GNUC__)
#define FSM_LIKELY(c) __builtin_expect(!!(c), 1)
#define FSM_UNLIKELY(c) __builtin_expect(!!(c), 0)
#else
#define FSM_LIKELY(c) (c)
#define FSM_UNLIKELY(c) (c)
#endif

/* Tuning constants (measured on Zen 4, see docs/c_backend.md). */
#define FSM_BLOCK 2048            /* online softmax block (elements): the block stays in L1    */
#define FSM_TILE 256              /* inner > 1: columns per tile (accumulators on the stack)    */
#define FSM_SMALL_N 48            /* rows up to this long are processed several at a time       */
#define FSM_GROUP 2048            /* elements per group of small rows                          */
/* cross-entropy: explicit float64 partial sums in a fixed order, one vector of FT's wide
   (measured: avx512 float32 16 lanes = 32 the same, 8 lanes 1.4x slower; avx2 float32 8 lanes
   ~8% faster than 16 or 32) */
#if defined(__AVX512F__)
#define FSM_VEC_BYTES 64
#elif defined(__AVX2__)
#define FSM_VEC_BYTES 32
#else
#define FSM_VEC_BYTES 16
#endif
#define FSM_WORK_PER_THREAD (1 << 18) /* elements per thread: below, a 2nd thread lost (measured) */

static inline int fsm_pick_threads(int64_t work, int nthreads)
{
    if (nthreads <= 1) return 1;
    int64_t t = work / FSM_WORK_PER_THREAD;
    if (t < 1) t = 1;
    if (t > nthreads) t = nthreads;
    return (int)t;
}

/* chunks of work for nt threads: 8 per thread (claimed dynamically, so a thread that the OS
   schedules late costs little), at most `items` and 256 */
static inline int fsm_chunks(int64_t items, int nt)
{
    if (nt <= 1) return 1;
    int64_t c = 8 * (int64_t)nt;
    if (c > 256) c = 256;
    if (c > items) c = items;
    return c < 1 ? 1 : (int)c;
}

/* [lo, hi) of the tid-th of nt equal parts of [0, n) */
static inline void fsm_split(int64_t n, int tid, int nt, int64_t *lo, int64_t *hi)
{
    int64_t q = n / nt, r = n % nt;            /* the first r parts get one more */
    *lo = q * tid + (tid < r ? tid : r);
    *hi = *lo + q + (tid < r ? 1 : 0);
}

static inline double fsm_sign(double v)
{
    return v > 0 ? 1.0 : v < 0 ? -1.0 : v == 0 ? 0.0 : v;
}

/* EXP(d), EXPD(x, m) = exp(x - m); EXPN, EXPDN: the same for d = x - m <= 0 or NaN only, where
   m is the max of the x's or NaN (fsm_math.h: one scale factor instead of two, same results) */
#define FT float
#define F(name) name##_f32
#define EXP fsm_exp_f32
#define EXPD(x, m) fsm_expdiff_f32(x, m)
#define EXPN fsm_expn_f32
#define EXPDN(x, m) fsm_expdiffn_f32(x, m)
#define LOGT fsm_log_f32
#include "fsm_kernels_body.h"
#undef FT
#undef F
#undef EXP
#undef EXPD
#undef EXPN
#undef EXPDN
#undef LOGT

#define FT double
#define F(name) name##_f64
#define EXP fsm_exp_f64
#define EXPD(x, m) fsm_exp_f64((x) - (m))
#define EXPN fsm_expn_f64
#define EXPDN(x, m) fsm_expdiffn_f64(x, m)
#define LOGT fsm_log_f64
#include "fsm_kernels_body.h"
#undef FT
#undef F
#undef EXP
#undef EXPD
#undef EXPN
#undef EXPDN
#undef LOGT

const fsm_ops FSM_CAT(fsm_ops_, FSM_ISA) = {
    .name = FSM_STR(FSM_ISA),
#define FSM_OP(entry, params) .entry = entry,
#include "fsm_ops.def"
#undef FSM_OP
};
