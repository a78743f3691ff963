"""A stand-in that makes ``import triton`` fail, as on macOS and Windows where Triton has no wheels.

``make test-no-triton`` puts ``tests/no_triton`` first on ``PYTHONPATH`` (the notebook kernels inherit
it), so every notebook runs as on a machine without Triton: each kernel must fall back to its torch
reference, and nothing may crash.
"""
raise ImportError("triton is hidden for this test run (tests/no_triton, make test-no-triton)")
