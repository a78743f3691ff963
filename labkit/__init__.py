"""labkit: the helper package of Sparse Models Lab.

Importing labkit first switches Triton to its CPU interpreter when no GPU is present
(see :mod:`labkit.backend`), so kernels in :mod:`labkit.kernels` run everywhere.
"""
from labkit import backend as _backend

_backend.configure()

__version__ = "0.1.0"
