"""Fold an eval-mode BatchNorm into the convolution or linear layer before it.

In eval mode BatchNorm is a fixed per-channel affine map, and a conv/linear layer is affine too;
two affine maps in a row are one. For output channel ``c``, with
``scale = gamma / sqrt(running_var + eps)``:

    bn(conv(x))[c] = scale[c] * (W[c] * x + b[c] - running_mean[c]) + beta[c]
                   = (scale[c] * W[c]) * x + (scale[c] * (b[c] - running_mean[c]) + beta[c])
                   =        W'[c]      * x +                   b'[c]

so the folded layer has ``W' = scale * W`` (each output channel's filter scaled) and
``b' = scale * (b - running_mean) + beta``: one layer, no BatchNorm, the same outputs.

The four ``fuse_*`` functions copy :mod:`torch.nn.utils.fusion` (torch 2.13): same signatures,
results, errors (``AssertionError`` with torch's messages) and ``requires_grad`` flags. They read
only attributes every BatchNorm has (``training``, ``running_mean``, ``running_var``, ``eps``,
``weight``, ``bias``, ``num_features``), so they work with :mod:`normlib.nn` and :mod:`torch.nn`
modules alike.
One difference: :func:`fuse_linear_bn_weights` also accepts ``bn_w = bn_b = None``
(``affine=False``), where torch's raises a ``TypeError``. :func:`fuse_model` folds every
Conv/Linear → BatchNorm pair in a model's ``nn.Sequential`` containers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = [
    "fuse_conv_bn_eval",
    "fuse_conv_bn_weights",
    "fuse_linear_bn_eval",
    "fuse_linear_bn_weights",
    "fuse_model",
]


def _scale_shift(bn_rm, bn_rv, bn_eps, bn_w, bn_b):
    """``(scale, shift)``, both (C,), of the eval-mode BatchNorm ``bn(z) = scale * (z - bn_rm) +
    shift``: ``scale = gamma / sqrt(running_var + eps)``, ``shift = beta``."""
    bn_w = torch.ones_like(bn_rm) if bn_w is None else bn_w  # affine=False: gamma = 1
    bn_b = torch.zeros_like(bn_rm) if bn_b is None else bn_b  # affine=False: beta = 0
    return bn_w * torch.rsqrt(bn_rv + bn_eps), bn_b


def _fold(w, b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, shape):
    """``(W', b')`` with ``W' = W * scale.reshape(shape)`` and ``b' = scale * (b - mean) + beta``,
    as Parameters in the dtypes of ``w``/``b``. ``b = None`` counts as zeros and, as in torch, gives
    a bias Parameter with ``requires_grad=False`` (it copies the flag of the zeros it stood for)."""
    w_dtype = w.dtype
    b_dtype = b.dtype if b is not None else w_dtype
    b = torch.zeros_like(bn_rm) if b is None else b  # (C_out,)
    scale, shift = _scale_shift(bn_rm, bn_rv, bn_eps, bn_w, bn_b)  # (C_out,), (C_out,)
    fused_w = (w * scale.reshape(shape)).to(dtype=w_dtype)  # each output channel's filter scaled
    fused_b = ((b - bn_rm) * scale + shift).to(dtype=b_dtype)  # (C_out,)
    return nn.Parameter(fused_w, w.requires_grad), nn.Parameter(fused_b, b.requires_grad)


def fuse_conv_bn_weights(
    conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False
) -> tuple[nn.Parameter, nn.Parameter]:
    """Folded ``(weight, bias)`` of ``conv`` followed by an eval-mode BatchNorm.

    ``conv_w``: (C_out, C_in/groups, *k), or (C_in, C_out/groups, *k) with ``transpose=True``
    (``ConvTranspose``: output channels on axis 1); ``conv_b``, ``bn_*``: (C_out,) or None.
    Returns ``W' = W * scale`` (scale broadcast over the output-channel axis) and
    ``b' = (b - running_mean) * scale + beta``, ``scale = bn_w / sqrt(bn_rv + bn_eps)``.
    """
    # the output-channel axis is 0 for Conv, 1 for ConvTranspose: broadcast scale along it
    shape = [1, -1] if transpose else [-1, 1]
    shape += [1] * (conv_w.dim() - 2)
    return _fold(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, shape)


def fuse_linear_bn_weights(
    linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b
) -> tuple[nn.Parameter, nn.Parameter]:
    """Folded ``(weight, bias)`` of a ``Linear`` followed by an eval-mode BatchNorm.

    ``linear_w``: (out_features, in_features); ``linear_b``: (out_features,) or None; ``bn_*``:
    (out_features,) or (1,). Returns ``W' = scale[:, None] * W`` and
    ``b' = (b - running_mean) * scale + beta``.
    """
    return _fold(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, [-1, 1])


def _check_eval(layer, bn):
    if layer.training or bn.training:
        raise AssertionError("Fusion only for eval!")


def _check_running_stats(bn):
    # track_running_stats=False: eval mode normalizes with batch statistics, nothing fixed to fold
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")


def fuse_conv_bn_eval(conv, bn, transpose=False):
    """A new conv module (a deep copy of ``conv``) computing ``bn(conv(x))`` in eval mode.

    Both modules must be in eval mode and ``bn`` must track running statistics (else
    ``AssertionError``, as in torch). ``transpose=True`` for ``ConvTranspose`` modules.
    """
    _check_eval(conv, bn)
    fused = copy.deepcopy(conv)
    _check_running_stats(bn)
    fused.weight, fused.bias = fuse_conv_bn_weights(
        fused.weight,
        fused.bias,
        bn.running_mean,
        bn.running_var,
        bn.eps,
        bn.weight,
        bn.bias,
        transpose,
    )
    return fused


def fuse_linear_bn_eval(linear, bn):
    """A new ``Linear`` (a deep copy of ``linear``) computing ``bn(linear(x))`` in eval mode.

    ``bn.num_features`` must equal ``linear.out_features`` (or be 1), and the BatchNorm must
    normalize the linear layer's output features (input ``(N, features)``); both in eval mode.
    """
    _check_eval(linear, bn)
    fused = copy.deepcopy(linear)
    if linear.out_features != bn.num_features and bn.num_features != 1:
        raise AssertionError(
            "To fuse, linear.out_features == bn.num_features or bn.num_features == 1, "
            f"got linear.out_features={linear.out_features} and bn.num_features={bn.num_features}"
        )
    _check_running_stats(bn)
    fused.weight, fused.bias = fuse_linear_bn_weights(
        fused.weight, fused.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return fused


def _is_batch_norm(module) -> bool:
    """A BatchNorm whose eval mode is the plain per-channel affine map: torch's BatchNorm1d/2d/3d
    and SyncBatchNorm (all ``_BatchNorm``), or normlib.nn's (not its variants, e.g. Batch Renorm,
    which keeps other buffers)."""
    from .batch_norm import BatchNorm1d, BatchNorm2d, BatchNorm3d  # lazy: no import cycle
    from .sync_batch_norm import SyncBatchNorm

    plain = (nn.modules.batchnorm._BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm)
    return isinstance(module, plain)


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _fuse_pair(layer, bn):
    """The folded layer, or None when this pair cannot be folded (left as it is)."""
    if bn.running_mean is None:  # track_running_stats=False: eval uses batch statistics
        return None
    if isinstance(layer, _CONV):
        return fuse_conv_bn_eval(layer, bn)
    if isinstance(layer, _CONV_T) and layer.groups == 1:  # grouped: scale doesn't broadcast
        return fuse_conv_bn_eval(layer, bn, transpose=True)
    if isinstance(layer, nn.Linear) and bn.num_features == layer.out_features:
        return fuse_linear_bn_eval(layer, bn)
    return None


def fuse_model(model: nn.Module) -> nn.Module:
    """A folded copy of an eval-mode ``model``: in every ``nn.Sequential`` (at any depth), each
    Conv/ConvTranspose/Linear directly followed by a BatchNorm becomes one folded layer, and the
    BatchNorm an ``nn.Identity`` (so indices and ``state_dict`` prefixes of the rest stay valid).

    Only consecutive children of a Sequential are paired: what ``forward`` does elsewhere is not
    visible to a module walk. A Linear → BatchNorm1d pair assumes 2-D input ``(N, features)``.
    Pairs that cannot be folded (``track_running_stats=False``, grouped transposed convs) stay.
    """
    if model.training:
        raise AssertionError("Fusion only for eval!")
    fused = copy.deepcopy(model)
    for seq in list(fused.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for prev, name in zip(names, names[1:]):
            layer, bn = seq._modules[prev], seq._modules[name]
            if _is_batch_norm(bn) and not bn.training:
                folded = _fuse_pair(layer, bn)
                if folded is not None:
                    seq._modules[prev], seq._modules[name] = folded, nn.Identity()
    return fused
