"""The "numpy" backend: :mod:`normlib.ref` (float64 NumPy) behind ``torch.autograd.Function`` s.

Slow and readable: tensors go to float64 NumPy arrays, the reference computes forward and backward,
results come back in the input's dtype (the batch statistics in float32 for half inputs, as in every
backend). The backward is NumPy too, so it is differentiable once: double backward raises (use the
"torch" backend for that).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import ref
from ._checks import opmath
from ._layout import grad_input_layout


def _np(t: torch.Tensor | None):
    """A float64 NumPy copy of ``t`` (None stays None); works for bfloat16 and channels_last."""
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


def _torch(a, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """NumPy array -> tensor on ``like``'s device, in ``dtype`` (default ``like``'s)."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(like.device, dtype or like.dtype)


def _grad(a, param: torch.Tensor | None, needed: bool):
    """A parameter's gradient as a tensor of the parameter's dtype, or None."""
    return _torch(a, param) if a is not None and param is not None and needed else None


def _dx(a, x: torch.Tensor, dy: torch.Tensor, needed: bool, op: str):
    """The input gradient in ``x``'s dtype and laid out as torch lays out ``op``'s, or None."""
    return grad_input_layout(op, _torch(a, x), x, dy) if needed else None


class _RefNorm(torch.autograd.Function):
    """``y = op_forward(x, gamma, beta, **kw)`` and its ``op_backward`` from :mod:`normlib.ref`;
    also returns the cache's ``mean``/``var`` (detached, float32 for half inputs)."""

    @staticmethod
    def forward(ctx, x, weight, bias, op, forward, backward, kwargs):
        y, cache = forward(_np(x), _np(weight), _np(bias), **kwargs)
        ctx.cache, ctx.backward_fn, ctx.op = cache, backward, op
        ctx.save_for_backward(x, weight, bias)
        stats = opmath(x.dtype)
        mean, var = _torch(cache["mean"], x, stats), _torch(cache["var"], x, stats)
        ctx.mark_non_differentiable(mean, var)
        return _torch(y, x), mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, bias = ctx.saved_tensors
        dx, dgamma, dbeta = ctx.backward_fn(_np(dy), ctx.cache)
        needs = ctx.needs_input_grad
        return (
            _dx(dx, x, dy, needs[0], ctx.op),
            _grad(dgamma, weight, needs[1]),
            _grad(dbeta, bias, needs[2]),
            None,
            None,
            None,
            None,
        )


def _apply(op, x, weight, bias, forward, backward, **kwargs):
    """``(y, mean, var)`` of the :mod:`normlib.ref` op ``op``."""
    return _RefNorm.apply(x, weight, bias, op, forward, backward, kwargs)


def batch_norm_train(x, weight, bias, eps):
    """``(y, mean, var)`` by ``ref.batch_norm_forward``; ``mean``, ``var`` (biased): ``(C,)``."""
    fwd, bwd = ref.batch_norm_forward, ref.batch_norm_backward
    return _apply("batch_norm", x, weight, bias, fwd, bwd, eps=eps)


class _BatchNormEval(torch.autograd.Function):
    """Eval BatchNorm with ``ref.batch_norm_inference``; its backward (an affine map) in NumPy::

    dx = dy * gamma * rstd,   dgamma = sum(dy * x_hat),   dbeta = sum(dy)
    """

    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, eps):
        y = ref.batch_norm_inference(_np(x), _np(mean), _np(var), _np(weight), _np(bias), eps)
        ctx.save_for_backward(x, mean, var, weight, bias)
        ctx.eps = eps
        return _torch(y, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, mean, var, weight, bias = ctx.saved_tensors
        view = (1, -1) + (1,) * (x.dim() - 2)
        axes = (0, *range(2, x.dim()))
        rstd = 1.0 / np.sqrt(_np(var) + ctx.eps)
        dy_np = _np(dy)
        gamma = np.ones_like(rstd) if weight is None else _np(weight)
        dx = dy_np * (gamma * rstd).reshape(view)
        x_hat = (_np(x) - _np(mean).reshape(view)) * rstd.reshape(view)
        needs = ctx.needs_input_grad
        return (
            _dx(dx, x, dy, needs[0], "batch_norm"),
            None,
            None,
            _grad((dy_np * x_hat).sum(axis=axes), weight, needs[3]),
            _grad(dy_np.sum(axis=axes), bias, needs[4]),
            None,
        )


def batch_norm_eval(x, mean, var, weight, bias, eps):
    """Eval-mode BatchNorm with the given per-channel ``mean``/``var``."""
    return _BatchNormEval.apply(x, mean, var, weight, bias, eps)


def layer_norm(x, normalized_shape, weight, bias, eps):
    """``ref.layer_norm_forward`` over the last ``len(normalized_shape)`` dims."""
    fwd, bwd = ref.layer_norm_forward, ref.layer_norm_backward
    shape = tuple(normalized_shape)
    return _apply("layer_norm", x, weight, bias, fwd, bwd, normalized_shape=shape, eps=eps)[0]


def _rms_forward(x, gamma, beta, normalized_shape, eps):
    return ref.rms_norm_forward(x, gamma, normalized_shape=normalized_shape, eps=eps)


def rms_norm(x, normalized_shape, weight, eps):
    """``ref.rms_norm_forward`` over the last ``len(normalized_shape)`` dims (no bias)."""
    fwd, bwd = _rms_forward, ref.rms_norm_backward
    shape = tuple(normalized_shape)
    return _apply("rms_norm", x, weight, None, fwd, bwd, normalized_shape=shape, eps=eps)[0]


def group_norm(x, num_groups, weight, bias, eps):
    """``ref.group_norm_forward`` with ``num_groups`` groups."""
    fwd, bwd = ref.group_norm_forward, ref.group_norm_backward
    return _apply("group_norm", x, weight, bias, fwd, bwd, num_groups=num_groups, eps=eps)[0]
