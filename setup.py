"""Build of the C kernels and their Cython wrapper, ``fastsoftmax._cext``.

No ``-march=native``: a wheel must run on any x86-64.  See docs/DESIGN.md.
"""
import os
import sys
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTSOFTMAX_DEBUG_BUILD") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": not DEBUG,
    "initializedcheck": DEBUG,
}

compile_args = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno", "-std=c11"]

ext = Extension(
    "fastsoftmax._cext",
    sources=["csrc/_cext.pyx"] + sorted(glob("csrc/fsm_*.c")),
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=compile_args,
)

setup(ext_modules=cythonize([ext], compiler_directives=directives))
