"""The "torch" backend: normlib's own composite torch ops (the CPU default).

Each op is a ``torch.autograd.Function`` with a hand-written fused backward (the compact formula)
instead of autograd through a dozen small ops. Statistics come from ``torch.var_mean`` (never
``E[x^2] - E[x]^2``); half inputs are computed in float32 and cast back once.

Double backward: every backward is written with differentiable torch ops. Under ``create_graph=True``
(``torch.is_grad_enabled()`` inside ``backward``) it recomputes the statistics from the saved input
with differentiable ops instead of using the saved, constant ones, so autograd sees the whole
dependence of the gradient on ``x`` and gradgradcheck passes.

The contract of the five ops is in :mod:`normlib.backend`; argument checks, dtype rules and running
statistics live in :mod:`normlib.nn.functional`.
"""

from __future__ import annotations

import torch

from ._checks import opmath
from ._layout import grad_input_layout, like_input, memory_format_of


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(C,) -> (1, C, 1, ...)``: a per-channel vector broadcast over ``(N, C, *spatial)``."""
    return t.view((1, -1) + (1,) * (ndim - 2))


def _var_mean(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False):
    """``(var, mean)`` over ``dims``, var biased: one Welford pass (``torch.var_mean``).

    Where a set holds an infinity, Welford's mean is NaN (inf - inf) but the plain mean, torch's,
    is +-inf: those means are recomputed as sums so running statistics propagate infinities alike.
    """
    var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=keepdim)
    if not bool(torch.isfinite(mean).all()):
        mean = x.mean(dims, keepdim=keepdim)
    return var, mean


def _sum(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``t.sum(dims)``, where an empty ``dims`` reduces nothing (``sum(dim=())`` would reduce all)."""
    return t.sum(dims) if dims else t


# --------------------------------------------------------------------------------------------------
# BatchNorm, training: statistics per channel over (N, *spatial).
# --------------------------------------------------------------------------------------------------


def _bn_stats(xc: torch.Tensor, eps: float):
    """Per-channel ``(mean, var, rstd)`` of ``xc`` (biased var), each ``(C,)``."""
    dims = (0, *range(2, xc.dim()))
    var, mean = _var_mean(xc, dims)
    return mean, var, torch.rsqrt(var + eps)


def _scale_shift(x, mean, rstd, weight, bias, view):
    """``y = x * scale + shift`` with ``scale = rstd * gamma`` and ``shift = beta - mean * scale``.

    One elementwise pass (addcmul), as torch's own CPU kernel does (``alpha``/``beta`` per channel).
    """
    scale = rstd if weight is None else rstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return torch.addcmul(view(shift), x, view(scale))


class BatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        dtype = opmath(x.dtype)
        xc = x.to(dtype)
        w = None if weight is None else weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        mean, var, rstd = _bn_stats(xc, eps)
        y = _scale_shift(xc, mean, rstd, w, b, lambda t: _channel_view(t, x.dim()))
        y = like_input(y.to(x.dtype), memory_format_of("batch_norm", x))
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.eps = eps
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, mean, rstd = ctx.saved_tensors
        xc = x.to(mean.dtype)
        if torch.is_grad_enabled():  # create_graph: statistics as differentiable functions of x
            mean, _, rstd = _bn_stats(xc, ctx.eps)
        dx, dw, db = _bn_train_backward(dy, xc, weight, mean, rstd, ctx.needs_input_grad)
        if dx is not None:
            dx = like_input(dx.to(x.dtype), memory_format_of("batch_norm", x))
        return dx, dw, db if ctx.has_bias else None, None


def _bn_train_backward(dy, xc, weight, mean, rstd, needs):
    """The compact formula per channel, with ``m = N * prod(spatial)`` values per channel::

        x_hat = (x - mean) * rstd,   dx_hat = dy * gamma
        dx = rstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))
           = a * dy + b * (x - mean) + c         with per-channel a, b, c

    ``sum(dy * (x - mean))`` is summed directly (never ``sum(dy * x) - mean * sum(dy)``, which cancels
    when ``|mean| >> std``).
    """
    dtype = xc.dtype
    ndim = xc.dim()
    dims = (0, *range(2, ndim))
    m = xc.numel() // xc.shape[1]

    def view(t):
        return _channel_view(t, ndim)

    dyc = dy.to(dtype)
    xm = xc - view(mean)  # x - mean
    sum_dy = dyc.sum(dims)  # (C,)
    sum_dy_xm = (dyc * xm).sum(dims)  # (C,)
    dx = dw = db = None
    if needs[0]:
        a = rstd if weight is None else rstd * weight.to(dtype)
        b = -a * rstd * rstd * sum_dy_xm / m
        c = -a * sum_dy / m
        dx = torch.addcmul(torch.addcmul(view(c), view(b), xm), view(a), dyc)
    if weight is not None and needs[1]:
        dw = (sum_dy_xm * rstd).to(weight.dtype)
    if needs[2]:
        db = sum_dy
    return dx, dw, db


def batch_norm_train(x, weight, bias, eps):
    """``(y, mean, var)``: training-mode BatchNorm; ``mean``/``var`` (biased) are ``(C,)``, detached."""
    return BatchNormTrain.apply(x, weight, bias, eps)


# --------------------------------------------------------------------------------------------------
# BatchNorm, eval: one per-channel scale and shift.
# --------------------------------------------------------------------------------------------------


class BatchNormEval(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, eps):
        dtype = opmath(x.dtype)
        mean_c, var_c = mean.to(dtype), var.to(dtype)
        w = None if weight is None else weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        rstd = torch.rsqrt(var_c + eps)
        # addcmul promotes a half x to float32 on the fly; the result is cast back once.
        y = _scale_shift(x, mean_c, rstd, w, b, lambda t: _channel_view(t, x.dim()))
        y = like_input(y.to(x.dtype), memory_format_of("batch_norm", x))
        ctx.save_for_backward(x, mean, var, weight)
        ctx.eps = eps
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, mean, var, weight = ctx.saved_tensors
        dtype = opmath(x.dtype)
        ndim = x.dim()
        dims = (0, *range(2, ndim))
        rstd = torch.rsqrt(var.to(dtype) + ctx.eps)
        dyc = dy.to(dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            scale = rstd if weight is None else rstd * weight.to(dtype)
            dx = (dyc * _channel_view(scale, ndim)).to(x.dtype)
            dx = like_input(dx, memory_format_of("batch_norm", x))
        if weight is not None and ctx.needs_input_grad[3]:
            xm = x.to(dtype) - _channel_view(mean.to(dtype), ndim)
            dw = ((dyc * xm).sum(dims) * rstd).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            db = dyc.sum(dims)
        return dx, None, None, dw, db, None


def batch_norm_eval(x, mean, var, weight, bias, eps):
    """Eval-mode BatchNorm with the given per-channel ``mean``/``var``: ``y = x * scale + shift``."""
    return BatchNormEval.apply(x, mean, var, weight, bias, eps)


# --------------------------------------------------------------------------------------------------
# LayerNorm and RMSNorm: statistics over the trailing dims, elementwise affine.
# --------------------------------------------------------------------------------------------------


def _row_stats(xc, dims, eps, center):
    """``(mean, rstd)`` over ``dims`` (kept as size 1); ``mean`` is None for RMSNorm."""
    if center:
        var, mean = _var_mean(xc, dims, keepdim=True)
    else:
        mean, var = None, (xc * xc).mean(dims, keepdim=True)  # the mean square
    return mean, torch.rsqrt(var + eps)


class _TrailingNorm(torch.autograd.Function):
    """LayerNorm (``center=True``) and RMSNorm (``center=False``) over the last ``k`` dims."""

    @staticmethod
    def forward(ctx, x, weight, bias, k, eps, center):
        dtype = opmath(x.dtype)
        xc = x.to(dtype)
        dims = tuple(range(x.dim() - k, x.dim()))
        mean, rstd = _row_stats(xc, dims, eps, center)
        x_hat = (xc - mean) * rstd if center else xc * rstd
        y = x_hat
        if weight is not None:
            y = y * weight if bias is None else torch.addcmul(bias, y, weight)
        elif bias is not None:
            y = y + bias
        ctx.save_for_backward(x, weight, x_hat, rstd)
        ctx.k, ctx.eps, ctx.center, ctx.has_bias = k, eps, center, bias is not None
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, x_hat, rstd = ctx.saved_tensors
        dtype = x_hat.dtype
        dims = tuple(range(x.dim() - ctx.k, x.dim()))
        lead = tuple(range(x.dim() - ctx.k))
        if torch.is_grad_enabled():  # create_graph: recompute x_hat and rstd from x, differentiably
            xc = x.to(dtype)
            mean, rstd = _row_stats(xc, dims, ctx.eps, ctx.center)
            x_hat = (xc - mean) * rstd if ctx.center else xc * rstd
        dyc = dy.to(dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx_hat = dyc if weight is None else dyc * weight.to(dtype)
            proj = (dx_hat * x_hat).mean(dims, keepdim=True)  # mean(dx_hat * x_hat): through var
            dx = dx_hat - x_hat * proj
            if ctx.center:
                dx = dx - dx_hat.mean(dims, keepdim=True)  # through the mean
            op = "layer_norm" if ctx.center else "rms_norm"
            dx = grad_input_layout(op, (dx * rstd).to(x.dtype), x, dy)
        if weight is not None and ctx.needs_input_grad[1]:
            dw = _sum(dyc * x_hat, lead).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = _sum(dyc, lead)
        return dx, dw, db, None, None, None


def layer_norm(x, normalized_shape, weight, bias, eps):
    """``y = (x - mean) * rstd * weight + bias`` over the last ``len(normalized_shape)`` dims."""
    return _TrailingNorm.apply(x, weight, bias, len(normalized_shape), eps, True)


def rms_norm(x, normalized_shape, weight, eps):
    """``y = x * rsqrt(mean(x^2) + eps) * weight`` over the last ``len(normalized_shape)`` dims."""
    y = _TrailingNorm.apply(x, weight, None, len(normalized_shape), eps, False)
    return like_input(y, memory_format_of("rms_norm", x))


# --------------------------------------------------------------------------------------------------
# GroupNorm: statistics per (sample, group), affine per channel.
# --------------------------------------------------------------------------------------------------


def _gn_stats(xg, eps):
    """``(mean, rstd)`` of the grouped view ``(N, G, C/G, *spatial)``, each ``(N, G)``."""
    var, mean = _var_mean(xg, tuple(range(2, xg.dim())))
    return mean, torch.rsqrt(var + eps)


class GroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        dtype = opmath(x.dtype)
        n, c = x.shape[:2]
        xc = x.to(dtype)
        xg = xc.unflatten(1, (num_groups, c // num_groups))  # a view, whatever the strides
        mean, rstd = _gn_stats(xg, eps)
        # Per (n, c) scale and shift: gamma varies inside a group, the statistics do not.
        rstd_c = rstd.repeat_interleave(c // num_groups, dim=1)  # (N, C)
        mean_c = mean.repeat_interleave(c // num_groups, dim=1)
        scale = rstd_c if weight is None else rstd_c * weight.to(dtype)
        shift = -mean_c * scale if bias is None else bias.to(dtype) - mean_c * scale
        view = (n, c) + (1,) * (x.dim() - 2)
        y = torch.addcmul(shift.view(view), xc, scale.view(view))
        y = like_input(y.to(x.dtype), memory_format_of("group_norm", x))
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.num_groups, ctx.eps, ctx.has_bias = num_groups, eps, bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        g = ctx.num_groups
        n, c = x.shape[:2]
        d = c // g
        xg = x.to(mean.dtype).unflatten(1, (g, d))  # (N, G, D, *spatial)
        if torch.is_grad_enabled():  # create_graph: statistics as differentiable functions of x
            mean, rstd = _gn_stats(xg, ctx.eps)
        dx, dw, db = _gn_backward(dy, xg, weight, mean, rstd, ctx.needs_input_grad)
        if dx is not None:
            dx = like_input(dx.reshape(x.shape).to(x.dtype), memory_format_of("group_norm", x))
        return dx, dw, db if ctx.has_bias else None, None, None


def _gn_backward(dy, xg, weight, mean, rstd, needs):
    """The compact formula per (sample, group) with per-channel gamma::

        dx = rstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)),   dx_hat = dy * gamma
           = a[n, c] * dy + b[n, g] * (x - mean) + c[n, g]

    from the per-(n, c) spatial sums ``s1 = sum(dy)`` and ``s2 = sum(dy * (x - mean))``.
    """
    dtype = xg.dtype
    n, g, d = xg.shape[:3]
    spatial = tuple(range(3, xg.dim()))
    m = xg[0, 0].numel()  # values per group: (C/G) * prod(spatial)

    def view(t):  # (N, G) or (N, G, D) -> broadcast over (N, G, D, *spatial)
        return t.view(t.shape + (1,) * (xg.dim() - t.dim()))

    dyg = dy.to(dtype).unflatten(1, (g, d))
    xm = xg - view(mean)
    s1 = _sum(dyg, spatial)  # (N, G, D)
    s2 = _sum(dyg * xm, spatial)  # (N, G, D)
    w = None if weight is None else weight.to(dtype).view(g, d)
    dx = dw = db = None
    if needs[0]:
        ws1 = s1 if w is None else s1 * w
        ws2 = s2 if w is None else s2 * w
        a = rstd.unsqueeze(-1) if w is None else rstd.unsqueeze(-1) * w  # (N, G, D) or (N, G, 1)
        b = -rstd**3 * ws2.sum(-1) / m  # (N, G)
        cc = -rstd * ws1.sum(-1) / m
        dx = torch.addcmul(torch.addcmul(view(cc), view(b), xm), view(a), dyg)
    if weight is not None and needs[1]:
        dw = (s2 * rstd.unsqueeze(-1)).sum(0).reshape(-1).to(weight.dtype)
    if needs[2]:
        db = s1.sum(0).reshape(-1)
    return dx, dw, db


def group_norm(x, num_groups, weight, bias, eps):
    """GroupNorm of ``(N, C, *spatial)`` with ``num_groups`` groups of ``C / num_groups`` channels."""
    return GroupNorm.apply(x, weight, bias, num_groups, eps)
