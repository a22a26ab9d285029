"""Benchmarks: ``python -m normlib.bench --device cpu`` (normlib vs torch's native CPU kernels)
and ``python -m normlib.bench --device cuda`` (normlib's Triton kernels vs torch eager and
``torch.compile``).

Speed goals live here, not in timed tests.
"""
