"""Argument checks with torch's exception types and messages, written once for every backend.

The messages are torch 2.13's (CPU), found by running torch on bad inputs; the tests compare them.
"""

from __future__ import annotations

import torch

FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCED = (torch.float16, torch.bfloat16)

# c10's ScalarType names, as they appear in "... not implemented for 'Long'".
_C10_NAMES = {
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.bool: "Bool",
    torch.complex32: "ComplexHalf",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
}


def c10_name(dtype: torch.dtype) -> str:
    """``torch.int64 -> 'Long'``: the name torch's C++ errors use."""
    return _C10_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in: float32 for half inputs (accumulate in fp32), else ``dtype``."""
    return torch.float32 if dtype in REDUCED else dtype


def check_floating(x: torch.Tensor, kernel: str) -> None:
    """``NotImplementedError: "batch_norm" not implemented for 'Long'`` for non-float inputs."""
    if x.dtype not in FLOATING:
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{c10_name(x.dtype)}'")


def check_mixed_dtype(x: torch.Tensor, *params: torch.Tensor | None) -> None:
    """torch's CPU rule for input vs parameter dtypes (``aten/src/ATen/native/mixed_data_type.h``).

    The first defined parameter decides: if its dtype differs from ``x``'s, every parameter must be
    float32 and ``x`` must be half/bfloat16 (fp32 parameters with a half input is the one mixed case
    allowed). Otherwise every parameter must share ``x``'s dtype.
    """
    defined = [p for p in params if p is not None]
    if not defined:
        return
    if defined[0].dtype != x.dtype:
        if any(p.dtype != torch.float32 for p in defined):
            raise RuntimeError("mixed dtype (CPU): expect parameter to have scalar type of Float")
        if x.dtype not in REDUCED:
            raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")
        return
    for p in defined:
        if p.dtype != x.dtype:
            raise RuntimeError(
                f"expected scalar type {c10_name(x.dtype)} but found {c10_name(p.dtype)}"
            )


def shape_str(shape) -> str:
    """``[2, 3, 4]``: how c10 prints sizes."""
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def check_normalized_shape(normalized_shape, fn: str) -> tuple[int, ...]:
    """``normalized_shape`` as a tuple, with torch's argument-parser ``TypeError`` s."""
    if isinstance(normalized_shape, torch.Size):
        return tuple(normalized_shape)
    if not isinstance(normalized_shape, (tuple, list)):
        raise TypeError(
            f"{fn}(): argument 'normalized_shape' (position 2) must be tuple of ints, "
            f"not {type(normalized_shape).__name__}"
        )
    for i, s in enumerate(normalized_shape):
        if isinstance(s, bool) or not isinstance(s, int):
            if not (isinstance(s, torch.Tensor) and s.dim() == 0 and not s.is_floating_point()):
                raise TypeError(
                    f"{fn}(): argument 'normalized_shape' (position 2) must be tuple of ints, "
                    f"but found element of type {type(s).__name__} at pos {i}"
                )
    return tuple(int(s) for s in normalized_shape)


def check_trailing_shape(x, normalized_shape, weight, bias, *, rms: bool) -> None:
    """LayerNorm's and RMSNorm's shape checks (ATen's ``_check_layer_norm_inputs`` and
    ``_check_rms_norm_inputs``)."""
    ns = shape_str(normalized_shape)
    if len(normalized_shape) < 1:
        raise RuntimeError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one "
            f"element, but got normalized_shape = {ns}"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != tuple(normalized_shape):
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{shape_str(p.shape)} and normalized_shape = {ns}"
            )
    k = len(normalized_shape)
    if rms and x.dim() < k:
        raise ValueError(f"Input tensor must have at least {k} dimensions, but got {x.dim()}")
    if x.dim() < k or tuple(x.shape[x.dim() - k :]) != tuple(normalized_shape):
        sep = "" if rms else ", "
        expected = sep + ", ".join(str(s) for s in normalized_shape)
        raise RuntimeError(
            f"Given normalized_shape={ns}, expected input with shape [*{expected}], but got input "
            f"of size{shape_str(x.shape)}"
        )


def check_num_features(name: str, expected: int, tensor: torch.Tensor | None) -> None:
    """``running_mean should contain 3 elements not 4`` (BatchNorm's per-channel tensors)."""
    if tensor is not None and tensor.numel() != expected:
        raise RuntimeError(f"{name} should contain {expected} elements not {tensor.numel()}")


def verify_batch_size(size) -> None:
    """torch.nn.functional's ``_verify_batch_size``: training needs > 1 value per channel."""
    size_prods = size[0]
    for s in size[2:]:
        size_prods *= s
    if size_prods == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {size}"
        )


def verify_spatial_size(size) -> None:
    """torch.nn.functional's ``_verify_spatial_size``: InstanceNorm needs more than one position."""
    size_prods = 1
    for s in size[2:]:
        size_prods *= s
    if size_prods == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {size}"
        )
