/* fsm_threads.c -- a tiny persistent pthread pool for the kernels (no OpenMP runtime).
 *
 * Why not OpenMP: a wheel linking libgomp shares the process with torch's libgomp/libiomp and
 * Numba's workqueue/omp layers; two runtimes oversubscribe and some combinations deadlock after
 * fork.  The kernels only need "split these rows (or blocks) into nt chunks": the caller and
 * the pool workers claim chunks from an atomic counter; the caller never waits for a worker that
 * has not started.  Workers spin briefly before sleeping on a condition variable, so
 * back-to-back calls do not pay a futex wake each time.
 * One parallel call at a time: a second concurrent caller (another Python thread without the
 * GIL) runs its tids serially instead of waiting.  After fork() the child starts a fresh pool.
 */
#include "fsm_kernels.h"

#if defined(_WIN32) || defined(FSM_NO_PTHREADS)

void fsm_parallel(fsm_task_fn fn, void *ctx, int nt, int nthreads)
{
    (void)nthreads;
    for (int t = 0; t < nt; t++) fn(ctx, t, nt);
}
int fsm_threads_available(void) { return 0; }

#else

#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>

#define FSM_MAX_WORKERS 255
#define FSM_SPIN 100000

/* A call is published with g_gen even ("open"); the caller closes it (g_gen odd) once every
 * chunk is claimed, then waits only for the workers that joined it.  Chunks are claimed from an
 * atomic counter, so a worker that the OS does not schedule in time (2 shared cores) costs
 * nothing: the caller runs its chunk.  Results never depend on who ran a chunk (each chunk writes
 * its own slot), so they are deterministic for a given nt. */
static pthread_mutex_t g_owner = PTHREAD_MUTEX_INITIALIZER;   /* held by the running caller */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_cv_done = PTHREAD_COND_INITIALIZER;
static int g_nworkers = 0;
static int g_atfork = 0;
static _Atomic(fsm_task_fn) g_fn;
static _Atomic(void *) g_ctx;
static atomic_int g_nt;
static atomic_ulong g_gen = 1;      /* odd: closed; even: a call is open                 */
static atomic_int g_next;           /* next chunk to claim                              */
static atomic_int g_active;         /* workers inside the open call                     */

static inline void fsm_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void fsm_run_chunks(fsm_task_fn fn, void *ctx, int nt)
{
    int k;
    while ((k = atomic_fetch_add(&g_next, 1)) < nt) fn(ctx, k, nt);
}

static void *fsm_worker(void *arg)
{
    (void)arg;
    unsigned long seen = 0;
    for (;;) {
        unsigned long gen;
        int spins = 0;
        while (((gen = atomic_load(&g_gen)) & 1ul) || gen == seen) {
            if (++spins < FSM_SPIN) {
                fsm_pause();
                continue;
            }
            pthread_mutex_lock(&g_mu);
            while (((gen = atomic_load(&g_gen)) & 1ul) || gen == seen)
                pthread_cond_wait(&g_cv_work, &g_mu);
            pthread_mutex_unlock(&g_mu);
            break;
        }
        seen = gen;
        atomic_fetch_add(&g_active, 1);
        if (atomic_load(&g_gen) == gen)            /* still open: we are counted in */
            fsm_run_chunks(atomic_load(&g_fn), atomic_load(&g_ctx), atomic_load(&g_nt));
        if (atomic_fetch_sub(&g_active, 1) == 1) {
            pthread_mutex_lock(&g_mu);
            pthread_cond_signal(&g_cv_done);
            pthread_mutex_unlock(&g_mu);
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
    atomic_store(&g_active, 0);
    atomic_store(&g_gen, 1);
}

void fsm_parallel(fsm_task_fn fn, void *ctx, int nt, int nthreads)
{
    if (nt <= 1 || nthreads <= 1 || pthread_mutex_trylock(&g_owner) != 0) {
        for (int t = 0; t < nt; t++) fn(ctx, t, nt);
        return;
    }
    if (!g_atfork) {
        pthread_atfork(NULL, NULL, fsm_atfork_child);
        g_atfork = 1;
    }
    if (nthreads > nt) nthreads = nt;
    int want = nthreads - 1 < FSM_MAX_WORKERS ? nthreads - 1 : FSM_MAX_WORKERS;
    while (g_nworkers < want) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, fsm_worker, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        g_nworkers++;
    }
    /* g_gen is odd (closed) here: publish the call, then open it */
    atomic_store(&g_fn, fn);
    atomic_store(&g_ctx, ctx);
    atomic_store(&g_nt, nt);
    atomic_store(&g_next, 0);
    atomic_fetch_add(&g_gen, 1);                 /* even: open */
    /* Wake sleepers without ever blocking: if a worker holds g_mu it has not yet checked g_gen
       (it will see the new call) or is about to sleep (it misses this call only: the caller
       never waits for a worker that did not join).  A blocking lock here cost milliseconds
       when the VM descheduled a worker holding the mutex. */
    if (pthread_mutex_trylock(&g_mu) == 0) {
        pthread_cond_broadcast(&g_cv_work);
        pthread_mutex_unlock(&g_mu);
    }
    fsm_run_chunks(fn, ctx, nt);
    atomic_fetch_add(&g_gen, 1);                 /* odd: closed, late workers stay out */
    int spins = 0;
    while (atomic_load(&g_active) != 0 && ++spins < FSM_SPIN) fsm_pause();
    if (atomic_load(&g_active) != 0) {
        pthread_mutex_lock(&g_mu);
        while (atomic_load(&g_active) != 0) pthread_cond_wait(&g_cv_done, &g_mu);
        pthread_mutex_unlock(&g_mu);
    }
    pthread_mutex_unlock(&g_owner);
}

int fsm_threads_available(void) { return 1; }

#endif
