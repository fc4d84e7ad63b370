"""Build of the C kernels and their Cython wrapper, ``fastsoftmax._cext``.

No ``-march=native``: a wheel must run on any x86-64.  The kernel source
``csrc/fsm_kernels_impl.c`` is compiled once per ISA path, each object with its own flags and
``-DFSM_ISA=<path>``; ``csrc/fsm_dispatch.c`` picks at import the best path the CPU runs
(``__builtin_cpu_supports``).  Flags and why: docs/c_backend.md.

Environment:
  FASTSOFTMAX_DEBUG_BUILD=1  Cython bounds/wraparound checks on, -O1 -g, C asserts on.
  FASTSOFTMAX_NO_SIMD_PATHS=1  build the baseline path only.
"""
import os
import platform
import sys
import tempfile
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTSOFTMAX_DEBUG_BUILD") == "1"
NO_SIMD = os.environ.get("FASTSOFTMAX_NO_SIMD_PATHS") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": not DEBUG,
    "initializedcheck": DEBUG,
}

# Common flags for every C object (GCC/Clang).  No -ffast-math anywhere: the kernels rely on
# IEEE NaN/inf semantics and on the 1.5*2^p rounding trick, which reassociation would delete.
#   -fopenmp-simd       honour `#pragma omp simd` (vectorize reductions without fast-math),
#                       no OpenMP runtime linked
#   -fno-math-errno     libm-free code anyway; lets sqrt/fabs etc. inline
#   -fno-trapping-math  lets the vectorizer if-convert selects (values are unchanged)
#   -ffp-contract=fast  fuse a*b+c into FMA where the ISA has it (-std=c11 would turn it off)
#   -fno-semantic-interposition, -fvisibility=hidden: direct calls inside the module
UNIX_COMMON = [
    "-std=gnu11", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math",
    "-ffp-contract=fast", "-fno-semantic-interposition", "-fvisibility=hidden",
    "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-function",
]
OPT = ["-O1", "-g"] if DEBUG else ["-O3"]

# ISA paths, best first: (name, flags).  baseline = the compiler's default x86-64 (SSE2).
ISA_PATHS = [
    ("avx512", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma",
                "-mprefer-vector-width=512"]),
    ("avx2", ["-mavx2", "-mfma"]),
]

IMPL = "csrc/fsm_kernels_impl.c"
HEADERS = sorted(glob("csrc/*.h"))


def _is_x86():
    m = platform.machine().lower()
    return m in ("x86_64", "amd64", "i386", "i686", "x86")


def _compiler_accepts(compiler, flags):
    """True when the C compiler builds a small file with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int fsm_probe(int x) { return x + 1; }\n")
        try:
            compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        except Exception:
            return False
    return True


class build_ext_isa(build_ext):
    """build_ext that compiles the kernel source once per ISA path."""

    def build_extension(self, ext):
        unix = self.compiler.compiler_type == "unix"
        if unix:
            common = UNIX_COMMON + OPT
            if not _compiler_accepts(self.compiler, ["-fopenmp-simd"]):
                common = [f for f in common if f != "-fopenmp-simd"]
            ext.extra_compile_args = list(ext.extra_compile_args) + common
            ext.extra_link_args = list(ext.extra_link_args) + ["-pthread"]
        else:  # MSVC: baseline only, serial
            common = ["/O2"]
            ext.define_macros.append(("FSM_NO_PTHREADS", "1"))
        paths = []
        if unix and _is_x86() and not NO_SIMD:
            for name, flags in ISA_PATHS:
                if _compiler_accepts(self.compiler, flags):
                    paths.append((name, flags))
        paths.append(("baseline", []))
        objects = []
        for name, flags in paths:
            objects += self.compiler.compile(
                [IMPL],
                output_dir=os.path.join(self.build_temp, "isa_" + name),
                macros=ext.define_macros + [("FSM_ISA", name)],
                include_dirs=ext.include_dirs,
                extra_postargs=common + flags,
                debug=self.debug,
            )
            if name != "baseline":
                ext.define_macros.append(("FSM_HAVE_" + name.upper(), "1"))
        ext.extra_objects = list(ext.extra_objects) + objects
        super().build_extension(ext)


ext = Extension(
    "fastsoftmax._cext",
    sources=["csrc/_cext.pyx", "csrc/fsm_dispatch.c", "csrc/fsm_threads.c"],
    depends=[IMPL] + HEADERS,
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    + ([] if DEBUG else [("NDEBUG", "1")]),
)

setup(
    ext_modules=cythonize([ext], compiler_directives=directives),
    cmdclass={"build_ext": build_ext_isa},
)
