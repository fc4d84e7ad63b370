/* fsm_dispatch.c -- which compiled ISA paths this CPU can run (compiled at baseline).  On other
   machines than x86 only the baseline path is compiled (setup.py) and nothing here is x86. */
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

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
/* The CPU's features from cpuid itself, and the OS's saved vector state from xgetbv, rather than
   __builtin_cpu_supports: that one reads __cpu_model, which libgcc or compiler-rt initialize, and
   zig's compiler-rt (the manylinux2014 wheel, docs/wheels.md) reports no AVX at all. */
static void fsm_x86_features(int *avx2, int *avx512)
{
    unsigned a, b, c, d, lo, hi;
    *avx2 = *avx512 = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    int ymm = (lo & 0x6) == 0x6, zmm = (lo & 0xe6) == 0xe6;   /* XMM|YMM; + opmask, ZMM hi */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    *avx2 = ymm && fma && ((b >> 5) & 1);
    *avx512 = *avx2 && zmm && ((b >> 16) & 1) && ((b >> 17) & 1) &&  /* F, DQ  */
              ((b >> 30) & 1) && ((b >> 31) & 1);                  /* BW, VL */
}
#endif

static int fsm_cpu_runs(const char *name)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    int avx2, avx512;
    fsm_x86_features(&avx2, &avx512);
    if (strcmp(name, "avx512") == 0) return avx512;
    if (strcmp(name, "avx2") == 0) return avx2;
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
