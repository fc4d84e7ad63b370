/* fsm_kernels_impl.c -- the kernels, compiled once per ISA path.
 *
 * setup.py compiles this file three times: -DFSM_ISA=avx512 with
 * -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mprefer-vector-width=512,
 * -DFSM_ISA=avx2 with -mavx2 -mfma, and -DFSM_ISA=baseline with no -m flag (x86-64: SSE2).
 * Each object exports the table fsm_ops_<FSM_ISA>; everything else here is static.
 * The loops are plain C with `#pragma omp simd` (-fopenmp-simd: no OpenMP runtime); the maths
 * (fsm_math.h) is inlined into them, so the vector width is the ISA's.
 * The per-dtype code is in one header per op family, each included twice (float32, float64):
 *   fsm_rows.h     the work split (threads, rows, tiles, blocks: written once) and the row
 *                  primitives shared by the families, plus the elementwise exp / log entries
 *   fsm_softmax.h  softmax, log_softmax          fsm_lse.h  logsumexp
 *   fsm_ce.h       the fused cross-entropy
 *   fsm_masked.h   softmax / log_softmax / logsumexp / backward with a mask (where=)
 * The table at the end is generated from fsm_ops.def (designated: .entry = entry).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include "fsm_kernels.h"
#include "fsm_math.h"
#if defined(__SSE2__)
#include <immintrin.h>
#endif

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
#define FSM_SUMB 256              /* exp loops: FT-lane partial sums folded into a double per block */
/* Out of cache (issue 9 item 4): softmax / log_softmax rows whose output is at least
   FSM_NT_BYTES in all write their exps into an L1/L2 scratch row of at most FSM_NT_SCRATCH
   bytes and the last pass streams the output with non-temporal stores: no read-for-ownership
   of the output lines (3 bytes of traffic per 2 that matter, as memcpy avoids).  Measured:
   docs/c_backend.md. */
#define FSM_NT_BYTES ((int64_t)1 << 24)
#define FSM_NT_SCRATCH 32768
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

/* The elementary functions the kernels call, for the current float type (F pastes _f32 / _f64,
   fsm_math.h): EXP(d); EXPD(x, m) = exp(x - m); EXPN, EXPDN: the same for d = x - m <= 0 or NaN
   only, where m is the max of the x's or NaN (one scale factor instead of two, same results);
   LOGT(x). */
#define EXP F(fsm_exp)
#define EXPD F(fsm_expdiff)
#define EXPN F(fsm_expn)
#define EXPDN F(fsm_expdiffn)
#define EXP64DN F(fsm_expdiff64n)   /* EXPDN * 2^64 (no final multiply: softmax's scale pass undoes it) */
#define LOGT F(fsm_log)

#define FT float
#define FT_IS_F32 1
#define F(name) name##_f32
#include "fsm_rows.h"
#include "fsm_softmax.h"
#include "fsm_lse.h"
#include "fsm_ce.h"
#include "fsm_backward.h"
#include "fsm_sigmoid.h"
#include "fsm_temperature.h"
#include "fsm_masked.h"
#undef FT
#undef FT_IS_F32
#undef F

#define FT double
#define FT_IS_F32 0
#define F(name) name##_f64
#include "fsm_rows.h"
#include "fsm_softmax.h"
#include "fsm_lse.h"
#include "fsm_ce.h"
#include "fsm_backward.h"
#include "fsm_sigmoid.h"
#include "fsm_temperature.h"
#include "fsm_masked.h"
#undef FT
#undef FT_IS_F32
#undef F

#include "fsm_sampling.h"   /* no float type: included once */

const fsm_ops FSM_CAT(fsm_ops_, FSM_ISA) = {
    .name = FSM_STR(FSM_ISA),
#define FSM_OP(entry, params) .entry = entry,
#include "fsm_ops.def"
#undef FSM_OP
};
