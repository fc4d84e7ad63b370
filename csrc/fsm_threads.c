/* fsm_threads.c -- a tiny persistent pthread pool for the kernels (no OpenMP runtime).
 *
 * Why not OpenMP: a wheel linking libgomp shares the process with torch's libgomp/libiomp and
 * Numba's workqueue/omp layers; two runtimes oversubscribe and some combinations deadlock after
 * fork.  The kernels only need "split these rows (or blocks) over nt threads": the caller runs
 * tid 0, pool workers run 1..nt-1, the caller waits.  Workers spin briefly before sleeping on a
 * condition variable, so back-to-back calls do not pay a futex wake each time.
 * One parallel call at a time: a second concurrent caller (another Python thread without the
 * GIL) runs its tids serially instead of waiting.  After fork() the child starts a fresh pool.
 */
#include "fsm_kernels.h"

#if defined(_WIN32) || defined(FSM_NO_PTHREADS)

void fsm_parallel(fsm_task_fn fn, void *ctx, int nt)
{
    for (int t = 0; t < nt; t++) fn(ctx, t, nt);
}
int fsm_threads_available(void) { return 0; }

#else

#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>

#define FSM_MAX_WORKERS 255
#define FSM_SPIN 20000

static pthread_mutex_t g_owner = PTHREAD_MUTEX_INITIALIZER;   /* held by the running caller */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_cv_done = PTHREAD_COND_INITIALIZER;
static int g_nworkers = 0;
static int g_atfork = 0;
/* the current call, published seqlock-style: g_gen is odd while the caller writes it */
static _Atomic(fsm_task_fn) g_fn;
static _Atomic(void *) g_ctx;
static atomic_int g_nt;
static atomic_ulong g_gen;
static atomic_int g_pending;        /* workers still running the current call */
static unsigned long g_start_gen[FSM_MAX_WORKERS];   /* g_gen when each worker was created */

static void *fsm_worker(void *arg)
{
    int id = (int)(intptr_t)arg;    /* runs tid = id + 1 */
    unsigned long seen = g_start_gen[id];  /* gen when created: the next call is its first */
    for (;;) {
        unsigned long gen;
        int spins = 0;
        for (;;) {
            gen = atomic_load_explicit(&g_gen, memory_order_acquire);
            if (gen != seen && !(gen & 1ul)) break;
            if (++spins < FSM_SPIN) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
                continue;
            }
            pthread_mutex_lock(&g_mu);
            while ((gen = atomic_load(&g_gen)) == seen || (gen & 1ul)) pthread_cond_wait(&g_cv_work, &g_mu);
            pthread_mutex_unlock(&g_mu);
            break;
        }
        fsm_task_fn fn = atomic_load_explicit(&g_fn, memory_order_acquire);
        void *ctx = atomic_load_explicit(&g_ctx, memory_order_acquire);
        int nt = atomic_load_explicit(&g_nt, memory_order_acquire);
        if (atomic_load_explicit(&g_gen, memory_order_acquire) != gen) continue;   /* torn: retry */
        seen = gen;
        if (id + 1 < nt) {
            fn(ctx, id + 1, nt);
            if (atomic_fetch_sub_explicit(&g_pending, 1, memory_order_acq_rel) == 1) {
                pthread_mutex_lock(&g_mu);
                pthread_cond_signal(&g_cv_done);
                pthread_mutex_unlock(&g_mu);
            }
        }
    }
    return NULL;
}

static void fsm_atfork_child(void)
{
    /* the workers do not exist in the child: start over */
    pthread_mutex_init(&g_owner, NULL);
    pthread_mutex_init(&g_mu, NULL);
    pthread_cond_init(&g_cv_work, NULL);
    pthread_cond_init(&g_cv_done, NULL);
    g_nworkers = 0;
    atomic_store(&g_pending, 0);
}

void fsm_parallel(fsm_task_fn fn, void *ctx, int nt)
{
    if (nt > FSM_MAX_WORKERS + 1) nt = FSM_MAX_WORKERS + 1;
    if (nt <= 1 || pthread_mutex_trylock(&g_owner) != 0) {
        for (int t = 0; t < nt; t++) fn(ctx, t, nt);
        return;
    }
    if (!g_atfork) {
        pthread_atfork(NULL, NULL, fsm_atfork_child);
        g_atfork = 1;
    }
    while (g_nworkers < nt - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        g_start_gen[g_nworkers] = atomic_load(&g_gen);
        int rc = pthread_create(&th, &attr, fsm_worker, (void *)(intptr_t)g_nworkers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        g_nworkers++;
    }
    int ntw = nt;
    if (ntw - 1 > g_nworkers) ntw = g_nworkers + 1;     /* could not start enough: run the rest here */
    atomic_store(&g_pending, ntw - 1);
    atomic_fetch_add(&g_gen, 1);                       /* odd: writing */
    atomic_store(&g_fn, fn);
    atomic_store(&g_ctx, ctx);
    atomic_store(&g_nt, nt);
    pthread_mutex_lock(&g_mu);
    atomic_fetch_add(&g_gen, 1);                       /* even: published */
    pthread_cond_broadcast(&g_cv_work);
    pthread_mutex_unlock(&g_mu);
    fn(ctx, 0, nt);
    for (int t = ntw; t < nt; t++) fn(ctx, t, nt);
    int spins = 0;
    while (atomic_load_explicit(&g_pending, memory_order_acquire) != 0 && spins < FSM_SPIN) {
        spins++;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    if (atomic_load(&g_pending) != 0) {
        pthread_mutex_lock(&g_mu);
        while (atomic_load(&g_pending) != 0) pthread_cond_wait(&g_cv_done, &g_mu);
        pthread_mutex_unlock(&g_mu);
    }
    pthread_mutex_unlock(&g_owner);
}

int fsm_threads_available(void) { return 1; }

#endif
