"""The backends: each module (or subpackage) implements the kernel contract of docs/DESIGN.md.

* ``reference`` -- plain NumPy, the oracle of the tests and the fallback for dtypes no compiled
  kernel takes;
* ``numba``     -- kernels compiled by Numba (a subpackage: exp/log, row primitives, the thread
  pool, one module per op family);
* the C kernels are the extension ``fastsoftmax._cext`` built from ``csrc/``.

Nothing here imports from the layers above (the dispatcher, the public functions, the tools).
"""
