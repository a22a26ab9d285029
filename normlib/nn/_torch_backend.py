"""The "torch" backend: normlib's own composite torch ops (the CPU default).

Each op is a ``torch.autograd.Function`` with a hand-written fused backward (the compact formula)
instead of autograd through a dozen small ops. Statistics take two passes, the mean and then the
mean square of ``x - mean`` (never ``E[x^2] - E[x]^2``, which cancels when ``|mean| >> std``);
half inputs are computed in float32 and cast back once.

Speed on CPU comes from the choice of primitives, each a single vectorized pass: ``mean``/``sum``,
``linalg.vector_norm`` over a flat view (a sum of squares without a temporary), and ``mul``
followed by in-place ``add_``/``addcmul_`` (an out-of-place ``addcmul`` with broadcast operands is
several times slower). The centered input ``x - mean`` made by the forward is saved for the
backward, which then needs two per-set reductions and one elementwise pass.

Double backward: every backward is written with differentiable torch ops. Under
``create_graph=True`` (``torch.is_grad_enabled()`` inside ``backward``) it recomputes the statistics
from the saved input with differentiable ops instead of using the saved, constant ones, and uses
out-of-place ops, so autograd sees the whole dependence of the gradient on ``x`` and gradgradcheck
passes.

The contract of the five ops is in :mod:`normlib.backend`; argument checks, dtype rules and running
statistics live in :mod:`normlib.nn.functional`.
"""

from __future__ import annotations

import math

import torch

from ._checks import opmath
from ._layout import grad_input_layout, like_input, memory_format_of

# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(C,) -> (1, C, 1, ...)``: a per-channel vector broadcast over ``(N, C, *spatial)``."""
    return t.view((1, -1) + (1,) * (ndim - 2))


def _sum(t: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """``t.sum(dims)``; an empty ``dims`` reduces nothing (``sum(dim=())`` would reduce all)."""
    return t.sum(dims, keepdim=keepdim) if dims else t


def _mean_square(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``mean(t * t)`` over ``dims`` (kept as size 1).

    Without autograd and for a contiguous ``t`` reduced over its trailing dims (LayerNorm,
    GroupNorm) or over all but dim 1 (BatchNorm), one ``vector_norm`` pass over a flat view, without
    the ``t * t`` temporary. Under autograd ``(t * t).mean``, whose gradient is defined at 0.
    """
    n = math.prod(t.shape[d] for d in dims)
    keep = tuple(1 if d in dims else s for d, s in enumerate(t.shape))
    if not torch.is_grad_enabled() and t.is_contiguous() and n > 0:
        k = len(dims)
        if dims == tuple(range(t.dim() - k, t.dim())):
            rows = t.view(t.shape[: t.dim() - k] + (n,))
            return torch.linalg.vector_norm(rows, dim=-1).square_().div_(n).view(keep)
        if dims == (0, *range(2, t.dim())):
            planes = t.view(t.shape[0], t.shape[1], -1)  # (N, C, spatial)
            norms = torch.linalg.vector_norm(planes, dim=-1).square_()  # (N, C)
            return norms.sum(0).div_(n).view(keep)
    return (t * t).mean(dims, keepdim=True)


def _moments(xc: torch.Tensor, dims: tuple[int, ...]):
    """``(mean, var, x - mean)`` over ``dims`` (kept as size 1), ``var`` biased: two passes.

    A set holding an infinity gets mean +-inf and var NaN, as torch's kernels give.
    """
    mean = xc.mean(dims, keepdim=True)
    xm = xc - mean
    return mean, _mean_square(xm, dims), xm


def _axpy(xm, b, c, dy, a, out):
    """``xm * b + c + dy * a`` (``b``, ``c``, ``a`` broadcast): the compact backward's last pass.

    Without a graph being built: three vectorized passes into ``out``, a spent temporary of
    ``xm``'s shape (no allocation; large fresh allocations cost page faults on CPU). Under
    ``create_graph``: out of place, so autograd can differentiate it.
    """
    if torch.is_grad_enabled():
        return xm * b + c + dy * a
    return torch.mul(xm, b, out=out).add_(c).addcmul_(dy, a)


# --------------------------------------------------------------------------------------------------
# BatchNorm, training: statistics per channel over (N, *spatial).
# --------------------------------------------------------------------------------------------------


def _bn_dims(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim))


def _needs_grad(*tensors) -> bool:
    """Whether autograd will want a backward: else the ops run straight, without a Function."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _bn_train_forward(x, weight, bias, eps):
    """``(y, mean, var, x - mean, rstd)``; ``mean``/``var`` ``(C,)``, the rest for the backward."""
    dtype = opmath(x.dtype)
    view = (1, -1) + (1,) * (x.dim() - 2)
    mean, var, xm = _moments(x.to(dtype), _bn_dims(x.dim()))  # (1, C, 1, ...), x - mean
    rstd = torch.rsqrt(var + eps)
    scale = rstd if weight is None else rstd * weight.to(dtype).view(view)
    y = xm.mul(scale)  # y = (x - mean) * rstd * gamma + beta
    if bias is not None:
        y.add_(bias.to(dtype).view(view))
    y = like_input(y.to(x.dtype), memory_format_of("batch_norm", x))
    return y, mean.view(-1), var.view(-1), xm, rstd


class BatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, var, xm, rstd = _bn_train_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, xm, rstd)
        ctx.eps = eps
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, xm, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: statistics as differentiable functions of x
            _, var, xm = _moments(x.to(xm.dtype), _bn_dims(x.dim()))
            rstd = torch.rsqrt(var + ctx.eps)
        dx, dw, db = _bn_train_backward(dy, xm, rstd, weight, ctx.needs_input_grad)
        if dx is not None:
            dx = like_input(dx.to(x.dtype), memory_format_of("batch_norm", x))
        return dx, dw, db if ctx.has_bias else None, None


def _bn_train_backward(dy, xm, rstd, weight, needs):
    """The compact formula per channel, with ``m = N * prod(spatial)`` values per channel::

        x_hat = (x - mean) * rstd,   dx_hat = dy * gamma
        dx = rstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))
           = a * dy + b * (x - mean) + c         with per-channel a, b, c

    ``sum(dy * (x - mean))`` is summed directly (never ``sum(dy * x) - mean * sum(dy)``, which
    cancels when ``|mean| >> std``).
    """
    dims = _bn_dims(xm.dim())
    m = xm.numel() // xm.shape[1]
    dyc = dy.to(xm.dtype)
    sum_dy = dyc.sum(dims, keepdim=True)  # (1, C, 1, ...)
    prod = dyc * xm
    sum_dy_xm = prod.sum(dims, keepdim=True)  # (1, C, 1, ...)
    dx = dw = db = None
    if needs[0]:
        a = rstd if weight is None else rstd * _channel_view(weight.to(xm.dtype), xm.dim())
        b = -a * rstd * rstd * sum_dy_xm / m
        c = -a * sum_dy / m
        dx = _axpy(xm, b, c, dyc, a, out=prod)
    if weight is not None and needs[1]:
        dw = (sum_dy_xm * rstd).view(-1).to(weight.dtype)
    if needs[2]:
        db = sum_dy.view(-1)
    return dx, dw, db


def batch_norm_train(x, weight, bias, eps):
    """Training-mode BatchNorm: ``(y, mean, var)``, ``mean``/``var`` ``(C,)``, biased, detached."""
    if _needs_grad(x, weight, bias):
        return BatchNormTrain.apply(x, weight, bias, eps)
    with torch.no_grad():
        return _bn_train_forward(x, weight, bias, eps)[:3]


# --------------------------------------------------------------------------------------------------
# BatchNorm, eval: one per-channel scale and shift.
# --------------------------------------------------------------------------------------------------


def _eval_scale_shift(mean, var, weight, bias, eps, dtype, ndim):
    """Per-channel ``scale = gamma * rsqrt(var + eps)`` and ``shift = beta - mean * scale``."""
    rstd = torch.rsqrt(var.to(dtype) + eps)
    scale = rstd if weight is None else rstd * weight.to(dtype)
    if bias is None:
        shift = -mean.to(dtype) * scale
    else:
        shift = torch.addcmul(bias.to(dtype), mean.to(dtype), scale, value=-1)
    return _channel_view(scale, ndim), _channel_view(shift, ndim), rstd


def _bn_eval_forward(x, mean, var, weight, bias, eps):
    """``y = x * scale + shift``: a multiply (promoting a half ``x`` to float32), then in place."""
    scale, shift, _ = _eval_scale_shift(mean, var, weight, bias, eps, opmath(x.dtype), x.dim())
    y = x.mul(scale).add_(shift)
    return like_input(y.to(x.dtype), memory_format_of("batch_norm", x))


class BatchNormEval(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, eps):
        ctx.save_for_backward(x, mean, var, weight)
        ctx.eps = eps
        ctx.has_bias = bias is not None
        return _bn_eval_forward(x, mean, var, weight, bias, eps)

    @staticmethod
    def backward(ctx, dy):
        x, mean, var, weight = ctx.saved_tensors
        dtype = opmath(x.dtype)
        ndim = x.dim()
        scale, _, rstd = _eval_scale_shift(mean, var, weight, None, ctx.eps, dtype, ndim)
        dyc = dy.to(dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = like_input((dyc * scale).to(x.dtype), memory_format_of("batch_norm", x))
        if weight is not None and ctx.needs_input_grad[3]:
            xm = x.to(dtype) - _channel_view(mean.to(dtype), ndim)
            dw = ((dyc * xm).sum(_bn_dims(ndim)) * rstd).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            db = dyc.sum(_bn_dims(ndim))
        return dx, None, None, dw, db, None


def batch_norm_eval(x, mean, var, weight, bias, eps):
    """Eval-mode BatchNorm with per-channel ``mean``/``var``: ``y = x * scale + shift``."""
    if _needs_grad(x, mean, var, weight, bias):
        return BatchNormEval.apply(x, mean, var, weight, bias, eps)
    with torch.no_grad():
        return _bn_eval_forward(x, mean, var, weight, bias, eps)


# --------------------------------------------------------------------------------------------------
# LayerNorm and RMSNorm: statistics over the trailing dims, elementwise affine.
# --------------------------------------------------------------------------------------------------


def _normalize_trailing(xc, k, eps, center):
    """``(x_hat, rstd)`` over the last ``k`` dims; ``x_hat`` is a fresh tensor (safe in place)."""
    dims = tuple(range(xc.dim() - k, xc.dim()))
    if center:
        _, var, x_hat = _moments(xc, dims)  # x_hat holds x - mean until scaled below
        rstd = torch.rsqrt(var + eps)
        x_hat = x_hat * rstd if torch.is_grad_enabled() else x_hat.mul_(rstd)
    else:
        rstd = torch.rsqrt(_mean_square(xc, dims) + eps)  # the root of the mean square
        x_hat = xc * rstd
    return x_hat, rstd


def _affine(x_hat, weight, bias, inplace):
    """``x_hat * weight + bias`` (either may be None), in place on ``x_hat`` if allowed."""
    if weight is None and bias is None:
        return x_hat
    y = x_hat if inplace else None
    if weight is not None:
        y = y.mul_(weight) if inplace else x_hat * weight
    if bias is not None:
        y = y.add_(bias) if y is not None else x_hat + bias
    return y


class _TrailingNorm(torch.autograd.Function):
    """LayerNorm (``center=True``) and RMSNorm (``center=False``) over the last ``k`` dims."""

    @staticmethod
    def forward(ctx, x, weight, bias, k, eps, center):
        dtype = opmath(x.dtype)
        x_hat, rstd = _normalize_trailing(x.to(dtype), k, eps, center)
        w = None if weight is None else weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        y = _affine(x_hat, w, b, inplace=False)
        ctx.save_for_backward(x, weight, x_hat, rstd)
        ctx.k, ctx.eps, ctx.center, ctx.has_bias = k, eps, center, bias is not None
        y = y.to(x.dtype)
        return y.clone() if y is x_hat else y  # never hand out the saved x_hat itself

    @staticmethod
    def backward(ctx, dy):
        x, weight, x_hat, rstd = ctx.saved_tensors
        dtype = x_hat.dtype
        dims = tuple(range(x.dim() - ctx.k, x.dim()))
        grad_mode = torch.is_grad_enabled()
        if grad_mode:  # create_graph: recompute x_hat and rstd from x, differentiably
            x_hat, rstd = _normalize_trailing(x.to(dtype), ctx.k, ctx.eps, ctx.center)
        dyc = dy.to(dtype)
        lead = tuple(range(x.dim() - ctx.k))
        needs = ctx.needs_input_grad
        if not grad_mode:
            n = math.prod(x.shape[d] for d in dims)
            dx, dw, db = _trailing_backward_rows(dyc, x_hat, rstd, weight, n, ctx.center, needs)
        else:
            n = math.prod(x.shape[d] for d in dims)
            dx = dw = db = None
            if needs[0]:
                # dx = rstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))
                dx_hat = dyc if weight is None else dyc * weight.to(dtype)
                proj = (dx_hat * x_hat).sum(dims, keepdim=True) / n  # through the variance
                dx = (dx_hat - x_hat * proj) * rstd
                if ctx.center:
                    dx = dx - dx_hat.mean(dims, keepdim=True) * rstd  # through the mean
            if weight is not None and needs[1]:
                dw = _sum(dyc * x_hat, lead)
            if ctx.has_bias and needs[2]:
                db = _sum(dyc, lead)
        if dx is not None:
            op = "layer_norm" if ctx.center else "rms_norm"
            dx = grad_input_layout(op, dx.reshape(x.shape).to(x.dtype), x, dy)
        if dw is not None:
            dw = dw.reshape(weight.shape).to(weight.dtype)
        if db is not None:
            db = db.reshape(x.shape[x.dim() - ctx.k :])
        if not ctx.has_bias:
            db = None
        return dx, dw, db, None, None, None


def _trailing_backward_rows(dy, x_hat, rstd, weight, n, center, needs):
    """The fast (no ``create_graph``) LayerNorm/RMSNorm backward on the ``(rows, n)`` view.

    The per-row means are matrix-vector products (BLAS, no temporaries): with ``P = dy * x_hat``,
    ``mean(dx_hat * x_hat) = P @ gamma / n`` and ``mean(dx_hat) = dy @ gamma / n``; ``dgamma`` is
    the column sum of ``P``, whose memory then takes ``dx``::

        dx = rstd * (dy * gamma - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))
    """
    rows = x_hat.numel() // n
    dy2, xh2 = dy.reshape(rows, n), x_hat.reshape(rows, n)
    rstd2 = rstd.reshape(rows, 1)
    w = None if weight is None else weight.to(dy.dtype).reshape(n)
    p = dy2 * xh2  # (rows, n)
    dw = p.sum(0) if w is not None and needs[1] else None
    db = dy2.sum(0) if needs[2] else None
    dx = None
    if needs[0]:
        proj = (p.sum(1) if w is None else p @ w).div_(n).unsqueeze(1)  # mean(dx_hat * x_hat)
        dx = torch.mul(dy2, w, out=p) if w is not None else dy2.mul(1.0)  # dx_hat
        if center:
            m1 = (dy2.sum(1) if w is None else dy2 @ w).div_(n).unsqueeze(1)  # mean(dx_hat)
            dx.sub_(m1)
        dx.addcmul_(xh2, proj, value=-1).mul_(rstd2)
    return dx, dw, db


def _trailing_norm(x, weight, bias, k, eps, center):
    """Through the Function when a gradient may be needed; otherwise straight, in place."""
    if _needs_grad(x, weight, bias):
        return _TrailingNorm.apply(x, weight, bias, k, eps, center)
    with torch.no_grad():
        dtype = opmath(x.dtype)
        x_hat, _ = _normalize_trailing(x.to(dtype), k, eps, center)
        w = None if weight is None else weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        return _affine(x_hat, w, b, inplace=True).to(x.dtype)


def layer_norm(x, normalized_shape, weight, bias, eps):
    """``y = (x - mean) * rstd * weight + bias`` over the last ``len(normalized_shape)`` dims."""
    y = _trailing_norm(x, weight, bias, len(normalized_shape), eps, True)
    return like_input(y, memory_format_of("layer_norm", x))


def rms_norm(x, normalized_shape, weight, eps):
    """``y = x * rsqrt(mean(x^2) + eps) * weight`` over the last ``len(normalized_shape)`` dims."""
    y = _trailing_norm(x, weight, None, len(normalized_shape), eps, False)
    return like_input(y, memory_format_of("rms_norm", x))


# --------------------------------------------------------------------------------------------------
# GroupNorm: statistics per (sample, group), affine per channel.
# --------------------------------------------------------------------------------------------------


def _group_view(t: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(N, C, *spatial) -> (N, G, C/G, *spatial)``: a view, whatever the strides."""
    return t.unflatten(1, (num_groups, t.shape[1] // num_groups))


def _param_view(t: torch.Tensor, num_groups: int, ndim: int) -> torch.Tensor:
    """``(C,) -> (1, G, C/G, 1, ...)``: per-channel parameters over the grouped view."""
    return t.view((1, num_groups, -1) + (1,) * (ndim - 3))


def _gn_forward(x, weight, bias, num_groups, eps):
    """``(y, x - mean, rstd)`` over the grouped view; the last two for the backward."""
    dtype = opmath(x.dtype)
    xg = _group_view(x.to(dtype), num_groups)  # (N, G, D, *spatial)
    _, var, xm = _moments(xg, tuple(range(2, xg.dim())))  # (N, G, 1, ...), x - mean
    rstd = torch.rsqrt(var + eps)
    # gamma varies inside a group, the statistics do not: scale per (n, c).
    w = None if weight is None else _param_view(weight.to(dtype), num_groups, xg.dim())
    y = xm.mul(rstd if w is None else rstd * w)
    if bias is not None:
        y.add_(_param_view(bias.to(dtype), num_groups, xg.dim()))
    y = like_input(y.flatten(1, 2).to(x.dtype), memory_format_of("group_norm", x))
    return y, xm, rstd


class GroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        y, xm, rstd = _gn_forward(x, weight, bias, num_groups, eps)
        ctx.save_for_backward(x, weight, xm, rstd)
        ctx.num_groups, ctx.eps, ctx.has_bias = num_groups, eps, bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, xm, rstd = ctx.saved_tensors
        g = ctx.num_groups
        if torch.is_grad_enabled():  # create_graph: statistics as differentiable functions of x
            xg = _group_view(x.to(xm.dtype), g)
            _, var, xm = _moments(xg, tuple(range(2, xg.dim())))
            rstd = torch.rsqrt(var + ctx.eps)
        dx, dw, db = _gn_backward(dy, xm, rstd, weight, g, ctx.needs_input_grad)
        if dx is not None:
            dx = like_input(dx.flatten(1, 2).to(x.dtype), memory_format_of("group_norm", x))
        return dx, dw, db if ctx.has_bias else None, None, None


def _gn_backward(dy, xm, rstd, weight, g, needs):
    """The compact formula per (sample, group) with per-channel gamma::

        dx = rstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)),   dx_hat = dy * gamma
           = a[n, c] * dy + b[n, g] * (x - mean) + c[n, g]

    from the per-(n, c) spatial sums ``s1 = sum(dy)`` and ``s2 = sum(dy * (x - mean))``.
    """
    dtype = xm.dtype
    spatial = tuple(range(3, xm.dim()))
    m = xm[0, 0].numel()  # values per group: (C/G) * prod(spatial)
    dyg = _group_view(dy.to(dtype), g)
    s1 = _sum(dyg, spatial, keepdim=True)  # (N, G, D, 1, ...)
    prod = dyg * xm
    s2 = _sum(prod, spatial, keepdim=True)
    if not spatial:
        prod = torch.empty_like(xm)  # s2 is prod itself: dx needs other memory
    w = None if weight is None else _param_view(weight.to(dtype), g, xm.dim())
    dx = dw = db = None
    if needs[0]:
        ws1 = s1 if w is None else s1 * w
        ws2 = s2 if w is None else s2 * w
        a = rstd if w is None else rstd * w  # (N, G, D, 1, ...) or (N, G, 1, ...)
        b = -(rstd**3) * ws2.sum(2, keepdim=True) / m  # (N, G, 1, ...)
        c = -rstd * ws1.sum(2, keepdim=True) / m
        dx = _axpy(xm, b, c, dyg, a, out=prod)
    if weight is not None and needs[1]:
        dw = (s2 * rstd).sum(0).reshape(-1).to(weight.dtype)
    if needs[2]:
        db = s1.sum(0).reshape(-1)
    return dx, dw, db


def group_norm(x, num_groups, weight, bias, eps):
    """GroupNorm of ``(N, C, *spatial)``: ``num_groups`` groups of ``C / num_groups`` channels."""
    if _needs_grad(x, weight, bias):
        return GroupNorm.apply(x, weight, bias, num_groups, eps)
    with torch.no_grad():
        return _gn_forward(x, weight, bias, num_groups, eps)[0]
