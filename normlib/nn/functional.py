"""``normlib.nn.functional``: the five norms with ``torch.nn.functional``'s signatures and defaults.

Everything that is not arithmetic lives here, once, for every backend: argument checks (torch's
exception types and messages), dtype rules, the empty-input path, the running-statistics update, and
InstanceNorm as BatchNorm over a ``(1, N*C, *spatial)`` view. The arithmetic is done by the backend
``normlib.backend.get(normlib.backend.resolve(x.device))`` ("torch" on CPU, "triton" on CUDA, or the
one selected with ``normlib.use_backend``); none of them calls torch's own norm kernels.

Running statistics (PyTorch's convention: ``momentum`` weighs the NEW batch)::

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)   (unbiased)

where ``var`` is the biased batch variance used to normalize and ``n`` the values per channel.
"""

from __future__ import annotations

import torch

from .. import backend as _backend
from ._checks import (
    check_floating,
    check_mixed_dtype,
    check_normalized_shape,
    check_num_features,
    check_trailing_shape,
    opmath,
    shape_str,
    verify_batch_size,
    verify_spatial_size,
)
from ._layout import like_input, memory_format_of

__all__ = ["batch_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]


def _ops(x: torch.Tensor):
    """The backend module that computes on ``x``'s device."""
    return _backend.get(_backend.resolve(x.device))


def update_running_stats(running_mean, running_var, mean, var, count, momentum) -> None:
    """In place: ``running = (1 - momentum) * running + momentum * batch``; ``running_var`` gets the
    unbiased ``var * count / (count - 1)``. ``mean``/``var`` are per channel, ``var`` biased.

    Shared by BatchNorm, InstanceNorm and SyncBatchNorm (whose ``count`` is the global count).
    Runs under ``no_grad``: a train-mode BN updates its buffers under ``inference_mode`` too.
    """
    with torch.no_grad():
        # lerp_: running + momentum * (batch - running), one op per buffer
        if running_mean is not None:
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
        if running_var is not None:
            unbiased = var * (count / (count - 1))
            running_var.lerp_(unbiased.to(running_var.dtype), momentum)


def _empty_batch_norm(x, weight, bias):
    """torch's result for an input with no elements: a copy scaled by ``weight[0]``, shifted by
    ``bias[0]`` (so the parameters get zero gradients and the graph stays connected)."""
    y = x.clone()
    if weight is not None:
        y = y * weight.select(0, 0)  # select(): torch's IndexError when there are no channels
    if bias is not None:
        y = y + bias.select(0, 0)
    return y


def _empty_affine(x, weight, bias, view):
    """An empty input's result for the norms with broadcast affine (zero parameter gradients)."""
    y = x.clone()
    if weight is not None:
        y = y * weight.view(view)
    if bias is not None:
        y = y + bias.view(view)
    return y.to(x.dtype)


def _batch_norm(
    x,
    running_mean,
    running_var,
    weight,
    bias,
    training,
    momentum,
    eps,
    *,
    update=None,
    check_running_dtype=True,
):
    """BatchNorm after the Python-level checks; ``update(mean, var, count)`` replaces the default
    running-statistics update (InstanceNorm's)."""
    num_features = x.size(1)
    if x.numel() == 0:
        return _empty_batch_norm(x, weight, bias)
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is None and not training:
            raise RuntimeError(f"{name} must be defined in evaluation mode")
        check_num_features(name, num_features, t)
    check_num_features("weight", num_features, weight)
    check_num_features("bias", num_features, bias)
    if training and (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    check_floating(x, "batch_norm")
    stats = (running_mean, running_var) if check_running_dtype else ()
    check_mixed_dtype(x, weight, bias, *stats)
    # torch only checks numel: a (2, 2) weight serves 4 channels.
    weight = weight if weight is None or weight.dim() == 1 else weight.reshape(-1)
    bias = bias if bias is None or bias.dim() == 1 else bias.reshape(-1)
    ops = _ops(x)
    if training:
        y, mean, var = ops.batch_norm_train(x, weight, bias, eps)
        if update is not None:
            update(mean, var, x.numel() // num_features)
        elif running_mean is not None:
            count = x.numel() // num_features
            update_running_stats(running_mean, running_var, mean, var, count, momentum)
    else:
        dtype = opmath(x.dtype)
        mean, var = running_mean.reshape(-1), running_var.reshape(-1)
        if mean.dtype not in (x.dtype, dtype):
            mean, var = mean.to(dtype), var.to(dtype)
        y = ops.batch_norm_eval(x, mean, var, weight, bias, eps)
    return like_input(y, memory_format_of("batch_norm", x))


def batch_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """BatchNorm of ``input`` ``(N, C, *spatial)`` per channel: ``torch.nn.functional.batch_norm``.

    ``training=True`` normalizes with the batch's mean and biased variance and, when running tensors
    are given, updates them in place; ``training=False`` normalizes with ``running_mean/var``.
    """
    if training:
        verify_batch_size(input.size())
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """InstanceNorm: statistics per sample and channel, ``torch.nn.functional.instance_norm``.

    Computed as torch does: BatchNorm of the ``(1, N*C, *spatial)`` view with the per-channel
    tensors repeated N times; the running statistics get the average over the N samples of the
    update.
    """
    if use_input_stats:
        verify_spatial_size(input.size())
    if not use_input_stats and (running_mean is None or running_var is None):
        raise RuntimeError(
            "Expected running_mean and running_var to be defined when use_input_stats is false"
        )
    n, c = input.size(0), input.size(1)
    x = input.contiguous().view((1, n * c) + tuple(input.shape[2:]))

    def repeat(t):
        return None if t is None else t.repeat(n)

    def update(mean, var, count):
        # torch updates the N repeated copies, then keeps their average; the unbiasing factor is the
        # same for every sample, so averaging the biased variances first is the same update.
        mean, var = mean.view(n, c).mean(0), var.view(n, c).mean(0)  # (N*C,) -> (C,)
        update_running_stats(running_mean, running_var, mean, var, count, momentum)

    y = _batch_norm(
        x,
        repeat(running_mean),
        repeat(running_var),
        repeat(weight),
        repeat(bias),
        use_input_stats,
        momentum,
        eps,
        update=update if running_mean is not None or running_var is not None else None,
        check_running_dtype=False,
    )
    if n == 0 and use_input_stats:
        # torch averages the N updated copies back into the running stats: over no samples, NaN.
        with torch.no_grad():
            for t in (running_mean, running_var):
                if t is not None:
                    t.fill_(float("nan"))
    return y.view(input.shape)


def layer_norm(
    input: torch.Tensor,
    normalized_shape: list[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """LayerNorm over the last ``len(normalized_shape)`` dims: ``torch.nn.functional.layer_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with ``var`` biased; the output is
    contiguous (as torch's), whatever the input's layout.
    """
    normalized_shape = check_normalized_shape(normalized_shape, "layer_norm")
    check_mixed_dtype(input, weight, bias)  # torch checks dtypes before shapes here
    check_trailing_shape(input, normalized_shape, weight, bias, rms=False)
    check_floating(input, "LayerNormKernelImpl")
    if input.numel() == 0:
        return _empty_affine(input, weight, bias, normalized_shape)
    y = _ops(input).layer_norm(input, normalized_shape, weight, bias, eps)
    return like_input(y, memory_format_of("layer_norm", input))


def rms_norm(
    input: torch.Tensor,
    normalized_shape: list[int],
    weight: torch.Tensor | None = None,
    eps: float | None = None,
) -> torch.Tensor:
    """RMSNorm over the last ``len(normalized_shape)`` dims: ``torch.nn.functional.rms_norm``.

    ``y = x / sqrt(mean(x^2) + eps) * weight``; ``eps=None`` is ``torch.finfo`` of the computation
    dtype (float32 for half inputs). Unlike the other norms, a weight of another dtype is allowed
    (torch promotes); the output keeps the input's dtype and layout.
    """
    normalized_shape = check_normalized_shape(normalized_shape, "rms_norm")
    check_trailing_shape(input, normalized_shape, weight, None, rms=True)
    check_floating(input, "rms_norm")
    dtype = opmath(input.dtype)
    if eps is None:
        eps = torch.finfo(dtype).eps
    if weight is not None and weight.dtype not in (input.dtype, dtype):
        weight = weight.to(dtype)  # the promotion torch applies to the product, done up front
    if input.numel() == 0:
        return _empty_affine(input, weight, None, normalized_shape)
    y = _ops(input).rms_norm(input, normalized_shape, weight, eps)
    return like_input(y, memory_format_of("rms_norm", input))


def group_norm(
    input: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """GroupNorm: ``C`` channels in ``num_groups`` groups, statistics per (sample, group),
    affine per channel: ``torch.nn.functional.group_norm``."""
    if input.dim() < 2:
        raise RuntimeError(
            f"Expected at least 2 dimensions for input tensor but received {input.dim()}"
        )
    verify_batch_size(
        [input.size(0) * input.size(1) // num_groups, num_groups] + list(input.size()[2:])
    )
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(
            "group_norm(): argument 'num_groups' (position 2) must be int, "
            f"not {type(num_groups).__name__}"
        )
    c = input.size(1)
    if c % num_groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got input of "
            f"shape {shape_str(input.shape)} and num_groups={num_groups}"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and not (p.dim() == 1 and p.numel() == c):
            # torch prints the *weight*'s shape in the bias message too ([0] without a weight).
            weight_shape = shape_str(weight.shape) if weight is not None else "[0]"
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, "
                f"but got {name} of shape {weight_shape} and input of shape "
                f"{shape_str(input.shape)}"
            )
    if num_groups <= 0:
        raise RuntimeError(f"Expected num groups to be greater than 0, got {num_groups}")
    check_mixed_dtype(input, weight, bias)
    check_floating(input, "GroupNormKernelImpl")
    if input.numel() == 0:
        return _empty_affine(input, weight, bias, (1, c) + (1,) * (input.dim() - 2))
    y = _ops(input).group_norm(input, num_groups, weight, bias, eps)
    return like_input(y, memory_format_of("group_norm", input))
