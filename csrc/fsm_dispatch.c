/* fsm_dispatch.c -- which compiled ISA paths this CPU can run (compiled at baseline). */
#include <string.h>
#include "fsm_kernels.h"

extern const fsm_ops fsm_ops_baseline;
#if defined(FSM_HAVE_AVX2)
extern const fsm_ops fsm_ops_avx2;
#endif
#if defined(FSM_HAVE_AVX512)
extern const fsm_ops fsm_ops_avx512;
#endif

typedef struct { const char *name; const fsm_ops *ops; } fsm_path;

static const fsm_path fsm_paths[] = {
#if defined(FSM_HAVE_AVX512)
    {"avx512", &fsm_ops_avx512},
#endif
#if defined(FSM_HAVE_AVX2)
    {"avx2", &fsm_ops_avx2},
#endif
    {"baseline", &fsm_ops_baseline},
};

static int fsm_cpu_runs(const char *name)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (strcmp(name, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(name, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return strcmp(name, "baseline") == 0;
}

int fsm_isa_count(void) { return (int)(sizeof(fsm_paths) / sizeof(fsm_paths[0])); }

const char *fsm_isa_name(int i)
{
    return (i >= 0 && i < fsm_isa_count()) ? fsm_paths[i].name : NULL;
}

const fsm_ops *fsm_isa_ops(const char *name)
{
    for (int i = 0; i < fsm_isa_count(); i++)
        if (strcmp(fsm_paths[i].name, name) == 0) return fsm_cpu_runs(name) ? fsm_paths[i].ops : NULL;
    return NULL;
}

int fsm_isa_supported(const char *name) { return fsm_isa_ops(name) != NULL; }
