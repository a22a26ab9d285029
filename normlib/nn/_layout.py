"""Memory formats: which layout an output (and an input gradient) takes, as torch decides it.

torch's norm kernels allocate their outputs with ``input.suggest_memory_format()``: a channels_last
input gives a channels_last output (BatchNorm, GroupNorm, RMSNorm), anything else a contiguous one
(LayerNorm and InstanceNorm always return contiguous outputs). BatchNorm differs in the ambiguous
cases: see :func:`batch_norm_memory_format`.
``suggest_memory_format`` is not exposed in Python, so :func:`suggest_memory_format` ports c10's
stride test (``is_channels_last_strides_2d/3d``), ambiguous cases included.
"""

from __future__ import annotations

import torch


def _is_channels_last_strides(sizes, strides, order) -> bool:
    """c10's ``is_channels_last_strides_{2,3}d_s{4,5}``: strides grow along ``order`` (C first)."""
    if strides[1] == 0:
        return False  # a broadcast channel dim: call it NCHW
    smallest = 0
    for d in order:
        if sizes[d] == 0 or strides[d] < smallest:
            return False
        # N111-like tensors (all strides equal) fall back to contiguous, as in c10.
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return True


def suggest_memory_format(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` / ``channels_last_3d`` when ``x``'s strides say so, else contiguous."""
    if x.layout != torch.strided:
        return torch.contiguous_format
    if x.dim() == 4 and _is_channels_last_strides(x.shape, x.stride(), (1, 3, 2, 0)):
        return torch.channels_last
    if x.dim() == 5 and _is_channels_last_strides(x.shape, x.stride(), (1, 4, 3, 2, 0)):
        return torch.channels_last_3d
    return torch.contiguous_format


def batch_norm_memory_format(x: torch.Tensor) -> torch.memory_format:
    """BatchNorm's choice (``suggest_memory_format_contig`` in ATen's Normalization.cpp): a
    contiguous input stays contiguous, an exactly channels_last one stays channels_last (even where
    the strides are ambiguous), anything else follows :func:`suggest_memory_format`."""
    if x.is_contiguous():
        return torch.contiguous_format
    for fmt, ndim in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
        if x.dim() == ndim and x.is_contiguous(memory_format=fmt):
            return fmt
    return suggest_memory_format(x)


def memory_format_of(op: str, x: torch.Tensor) -> torch.memory_format:
    """The layout torch gives ``op``'s output and input gradient for an input ``x``."""
    if op == "layer_norm" or x.is_contiguous():  # a contiguous input is never "channels_last"
        return torch.contiguous_format
    if op == "batch_norm":
        return batch_norm_memory_format(x)
    return suggest_memory_format(x)  # group_norm, rms_norm


def like_input(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``t`` in ``memory_format`` (no copy when it already is)."""
    return t.contiguous(memory_format=memory_format)


def grad_input_layout(op: str, dx: torch.Tensor, x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """``dx`` laid out as torch lays out ``op``'s input gradient.

    RMSNorm's is composite in torch (autograd through elementwise ops), so its ``dx`` takes ``dy``'s
    strides (``empty_like(dy)``); the others follow :func:`memory_format_of` of the input.
    """
    if op != "rms_norm":
        return like_input(dx, memory_format_of(op, x))
    if dx.stride() == dy.stride():
        return dx
    return torch.empty_like(dy, dtype=dx.dtype).copy_(dx)
