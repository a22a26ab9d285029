"""normlib: normalization layers from scratch, the library of normbook.

- :mod:`normlib.ref`: NumPy reference (forward and backward) of every norm.
- :mod:`normlib.nn`: drop-in ``torch.nn`` equivalents and :mod:`normlib.nn.functional`.
- :mod:`normlib.kernels`: Triton GPU kernels (CPU through ``TRITON_INTERPRET=1``).
- :mod:`normlib.axes`: which elements each norm reduces over, defined once.
"""

from .backend import backends, current_backend, use_backend

__version__ = "0.1.0"
__all__ = ["__version__", "backends", "current_backend", "use_backend"]
