/* fsm_kernels.h -- the C kernels of fastsoftmax: one table of function pointers per ISA path.
 *
 * The kernel source fsm_kernels_impl.c is compiled once per ISA path (setup.py gives each object
 * its own -m flags and -DFSM_ISA=<name>); each object exports one `fsm_ops_<name>` table.
 * fsm_dispatch.c picks the best table the CPU supports (__builtin_cpu_supports).
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

typedef struct fsm_ops {
    const char *name;
    /* x, out: (outer, n, inner); out may equal x */
    void (*softmax_f32)(const float *x, float *out, int64_t outer, int64_t n, int64_t inner,
                        int log, int method, int nthreads);
    void (*softmax_f64)(const double *x, double *out, int64_t outer, int64_t n, int64_t inner,
                        int log, int method, int nthreads);
    /* x, b: (outer, n, inner), b may be NULL; out, sign: (outer, inner), sign may be NULL */
    void (*logsumexp_f32)(const float *x, const float *b, float *out, float *sign,
                          int64_t outer, int64_t n, int64_t inner, int nthreads);
    void (*logsumexp_f64)(const double *x, const double *b, double *out, double *sign,
                          int64_t outer, int64_t n, int64_t inner, int nthreads);
    /* logits: (N, C); exactly one of target (N,) / probs (N, C) non-NULL; weight (C,) or NULL;
       loss (N,); grad (N, C) or NULL, may equal logits */
    void (*cross_entropy_f32)(const float *logits, const int64_t *target, const float *probs,
                              const float *weight, int64_t ignore_index, double smoothing,
                              double scale, float *loss, float *grad, int64_t N, int64_t C,
                              int nthreads);
    void (*cross_entropy_f64)(const double *logits, const int64_t *target, const double *probs,
                              const double *weight, int64_t ignore_index, double smoothing,
                              double scale, double *loss, double *grad, int64_t N, int64_t C,
                              int nthreads);
    /* elementwise: exactly the exp / log the kernels use */
    void (*exp_f32)(const float *x, float *out, int64_t n);
    void (*exp_f64)(const double *x, double *out, int64_t n);
    void (*log_f32)(const float *x, float *out, int64_t n);
    void (*log_f64)(const double *x, double *out, int64_t n);
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
