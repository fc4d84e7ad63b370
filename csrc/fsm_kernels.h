/* fsm_kernels.h -- the C kernels of fastsoftmax: one table of function pointers per ISA path.
 *
 * The kernel source fsm_kernels_impl.c is compiled once per ISA path (setup.py gives each object
 * its own -m flags and -DFSM_ISA=<name>); each object exports one `fsm_ops_<name>` table.
 * fsm_dispatch.c picks the best table the CPU supports (cpuid + xgetbv).  The entries
 * of the table and their signatures are listed once, in fsm_ops.def.
 *
 * Kernel contract: docs/DESIGN.md.  All arrays C-contiguous, one float dtype per call, already
 * validated; kernels never fail and never write their inputs (out may be x itself for softmax,
 * grad may be logits itself for cross_entropy).  Sizes and indices are int64_t throughout.
 */
#ifndef FSM_KERNELS_H
#define FSM_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { FSM_METHOD_AUTO = 0, FSM_METHOD_THREE_PASS = 1, FSM_METHOD_ONLINE = 2 };

/* the table: one function pointer per line of fsm_ops.def (an X-macro list, also read by
   setup.py for Cython); name is the ISA path */
typedef struct fsm_ops {
    const char *name;
#define FSM_OP(entry, params) void (*entry) params;
#include "fsm_ops.def"
#undef FSM_OP
} fsm_ops;

/* fsm_dispatch.c */
int fsm_isa_count(void);                       /* number of compiled paths                   */
const char *fsm_isa_name(int i);               /* compiled paths, best first                 */
int fsm_isa_supported(const char *name);       /* compiled in and runnable on this CPU       */
const fsm_ops *fsm_isa_ops(const char *name);  /* NULL if unknown or not runnable            */

/* fsm_threads.c: run fn(ctx, k, nchunks) for every chunk k in [0, nchunks) on the caller and up
   to nthreads - 1 pool threads (chunks claimed dynamically).  Falls back to a serial loop when
   the pool is busy (another Python thread) or when built without pthreads; the decomposition,
   hence the result, is the same either way. */
typedef void (*fsm_task_fn)(void *ctx, int k, int nchunks);
void fsm_parallel(fsm_task_fn fn, void *ctx, int nchunks, int nthreads);
int fsm_threads_available(void);

#ifdef __cplusplus
}
#endif
#endif /* FSM_KERNELS_H */
