"""normlib: normalization layers from scratch, the library of normbook.

- :mod:`normlib.ref`: NumPy reference (forward and backward) of every norm; imports no torch.
- :mod:`normlib.nn`: drop-in ``torch.nn`` equivalents and :mod:`normlib.nn.functional`.
- :mod:`normlib.kernels`: Triton GPU kernels (CPU through ``TRITON_INTERPRET=1``).
- :mod:`normlib.axes`: which elements each norm reduces over, defined once.

Submodules load on first use (``normlib.nn`` after ``import normlib``), so ``normlib.ref`` stays
free of torch.
"""

from __future__ import annotations

import importlib

from .backend import backends, current_backend, use_backend

__version__ = "0.1.0"
__all__ = ["__version__", "backends", "current_backend", "use_backend"]

_SUBMODULES = {"axes", "bench", "data", "exercises", "explorer", "kernels", "nn", "ref"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
