"""Backends: which implementation computes normlib.nn's results.

- ``"numpy"``: the :mod:`normlib.ref` reference in ``torch.autograd.Function`` s (slow, readable).
- ``"torch"``: normlib's own composite torch ops (the CPU default).
- ``"triton"``: the Triton kernels of :mod:`normlib.kernels` (the default for CUDA tensors; on a
  CPU they run through Triton's interpreter, ``TRITON_INTERPRET=1``).

A backend is a module exposing the same five differentiable ops (tensors in, tensors out, autograd
through them):

- ``batch_norm_train(x, weight, bias, eps) -> (y, mean, var)``: per-channel batch statistics,
  ``var`` biased; ``mean``/``var`` are detached, float32 for half inputs.
- ``batch_norm_eval(x, mean, var, weight, bias, eps) -> y``
- ``layer_norm(x, normalized_shape, weight, bias, eps) -> y``
- ``rms_norm(x, normalized_shape, weight, eps) -> y``
- ``group_norm(x, num_groups, weight, bias, eps) -> y``

Argument checking, running statistics and dtype promotion live in
:mod:`normlib.nn.functional`, once, for every backend.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util

_MODULES = {
    "numpy": "normlib.nn._numpy_backend",
    "torch": "normlib.nn._torch_backend",
    "triton": "normlib.kernels",
}
_selected: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "normlib_backend", default=None
)


def backends() -> list[str]:
    """Names of the backends available on this machine, e.g. ``['numpy', 'torch', 'triton']``."""
    names = ["numpy", "torch"]
    if importlib.util.find_spec("triton") is not None:
        names.append("triton")
    return names


class use_backend:  # noqa: N801 (used like a function, as in `with use_backend("numpy"):`)
    """Select a backend now; as a context manager, restore the previous choice on exit.

    ``use_backend(None)`` returns to automatic choice ("triton" for CUDA tensors, else "torch").
    """

    def __init__(self, name: str | None):
        if name is not None and name not in _MODULES:
            raise ValueError(f"unknown backend {name!r}; expected one of {sorted(_MODULES)}")
        if name is not None and name not in backends():
            raise RuntimeError(f"backend {name!r} is not available here (is triton installed?)")
        self._token = _selected.set(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _selected.reset(self._token)
        return False


def current_backend() -> str | None:
    """The selected backend name, or None for automatic choice."""
    return _selected.get()


def resolve(device) -> str:
    """The backend that computes on ``device``: the selected one, else the device's default."""
    name = _selected.get()
    if name is not None:
        return name
    if getattr(device, "type", device) == "cuda" and "triton" in backends():
        return "triton"
    return "torch"


def get(name: str):
    """The module that implements backend ``name``."""
    return importlib.import_module(_MODULES[name])
