"""GroupNorm (and InstanceNorm, its ``G = C`` case) in Triton: kernels, launchers, Function.

The input ``(N, C, *spatial)`` is viewed as ``(N, G, C/G, HW)`` with ``HW = prod(spatial)``. In a
contiguous tensor the ``K = C/G * HW`` elements of one (sample, group) pair are contiguous: a row.
Each row is normalized on its own, and the affine parameters are per *channel*:

    mean  = 1/K sum x          var = 1/K sum (x - mean)^2          rstd = 1 / sqrt(var + eps)
    x_hat = (x - mean) * rstd
    y[n, c, hw] = x_hat[n, c, hw] * w[c] + b[c]

A program owns one row and walks it as ``(BLOCK_C channels, BLOCK_HW positions)`` tiles, so each
tile row has one channel and one ``w[c]``. Rows of up to 16384 values are loaded once; longer
rows are read twice, first to merge per-tile ``(n, mean, m2)`` with Chan's formula, then to
normalize (the second read mostly hits L2).

**Backward.** With ``wdy = w[c] * dy``:

    c1 = 1/K sum x_hat * wdy            c2 = 1/K sum wdy              (per row)
    dx = rstd * (wdy - (x_hat * c1 + c2))
    dw[c] = sum_{n, hw} dy * x_hat      db[c] = sum_{n, hw} dy

The row program accumulates ``sum_hw dy * x_hat`` and ``sum_hw dy`` per (sample, channel) while it
computes ``c1``/``c2``; torch sums those ``(N, C)`` partials over ``N``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ._common import (
    LIMITS,
    acc_dtype,
    block_stats,
    chan_merge,
    check_device,
    num_warps_for,
    pow2,
    stats_dtype,
)


@triton.jit
def _group_norm_fwd_kernel(
    X,  # pointer to the input x, (N, C, HW) contiguous
    Y,  # pointer to the output y, (N, C, HW), dtype of x
    W,  # pointer to the weight w, (C,); read only if HAS_WEIGHT
    B,  # pointer to the bias b, (C,); read only if HAS_BIAS
    MEAN,  # pointer to the mean per (sample, group), (N * G,), float32 (float64 for float64 x)
    RSTD,  # pointer to the rstd per (sample, group), (N * G,)
    C,  # channels
    HW,  # spatial positions per channel
    CPG,  # channels per group, C / G
    G,  # groups
    eps,  # added to var before the square root
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ONE_TILE: tl.constexpr,  # the whole row fits one (BLOCK_C, BLOCK_HW) tile: load it once
    BLOCK_C: tl.constexpr,  # channels per tile
    BLOCK_HW: tl.constexpr,  # positions per tile
    ACC: tl.constexpr,  # accumulation dtype
):
    row = tl.program_id(0)  # = n * G + g
    group = row % G
    row_start = row.to(tl.int64) * CPG * HW
    K = CPG * HW  # elements per row
    if ONE_TILE:
        ch = tl.arange(0, BLOCK_C)
        hw = tl.arange(0, BLOCK_HW)
        mask = (ch < CPG)[:, None] & (hw < HW)[None, :]
        offs = row_start + ch[:, None] * HW + hw[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
        n, mean, m2 = block_stats(x, mask)
        rstd = 1.0 / tl.sqrt(m2 / K + eps)
        x_hat = (x - mean) * rstd
        y = _channel_affine(x_hat, W, B, group * CPG + ch, ch < CPG, HAS_WEIGHT, HAS_BIAS)
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    else:
        # pass 1: merge the (n, mean, m2) of every tile of x - K (Chan), K = the row's first value
        shift = tl.load(X + row_start).to(ACC)
        n = tl.zeros([1], dtype=ACC)
        mean = tl.zeros([1], dtype=ACC)
        m2 = tl.zeros([1], dtype=ACC)
        for c0 in range(0, CPG, BLOCK_C):
            ch = c0 + tl.arange(0, BLOCK_C)
            for hw0 in range(0, HW, BLOCK_HW):
                hw = hw0 + tl.arange(0, BLOCK_HW)
                mask = (ch < CPG)[:, None] & (hw < HW)[None, :]
                offs = row_start + ch[:, None] * HW + hw[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                n_t, mean_t, m2_t = block_stats(tl.where(mask, x - shift, 0.0), mask)
                n, mean, m2 = chan_merge(n, mean, m2, n_t, mean_t, m2_t)
        mean = shift + mean
        rstd = 1.0 / tl.sqrt(m2 / K + eps)
        # pass 2: normalize (the row was just read: mostly L2 hits)
        for c0 in range(0, CPG, BLOCK_C):
            ch = c0 + tl.arange(0, BLOCK_C)
            for hw0 in range(0, HW, BLOCK_HW):
                hw = hw0 + tl.arange(0, BLOCK_HW)
                mask = (ch < CPG)[:, None] & (hw < HW)[None, :]
                offs = row_start + ch[:, None] * HW + hw[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                x_hat = (x - mean) * rstd
                y = _channel_affine(x_hat, W, B, group * CPG + ch, ch < CPG, HAS_WEIGHT, HAS_BIAS)
                tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + row + tl.zeros([1], dtype=tl.int32), mean)
    tl.store(RSTD + row + tl.zeros([1], dtype=tl.int32), rstd)


@triton.jit
def _channel_affine(x_hat, W, B, ch, ch_mask, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """``x_hat * w[c] + b[c]`` for a ``(channels, positions)`` tile."""
    y = x_hat
    if HAS_WEIGHT:
        w = tl.load(W + ch, mask=ch_mask, other=0.0).to(x_hat.dtype)
        y = y * w[:, None]
    if HAS_BIAS:
        b = tl.load(B + ch, mask=ch_mask, other=0.0).to(x_hat.dtype)
        y = y + b[:, None]
    return y


@triton.jit
def _group_norm_bwd_kernel(
    X,  # pointer to the input x, (N, C, HW)
    DY,  # pointer to the output gradient dy, (N, C, HW)
    DX,  # pointer to the input gradient dx, (N, C, HW)
    W,  # pointer to the weight w, (C,); read only if HAS_WEIGHT
    MEAN,  # pointer to the mean per (sample, group) saved by the forward, (N * G,)
    RSTD,  # pointer to the rstd per (sample, group), (N * G,)
    DW_NC,  # pointer to sum_hw dy * x_hat per (sample, channel), (N, C)
    DB_NC,  # pointer to sum_hw dy per (sample, channel), (N, C)
    C,  # channels
    HW,  # spatial positions per channel
    CPG,  # channels per group
    G,  # groups
    HAS_WEIGHT: tl.constexpr,
    BLOCK_C: tl.constexpr,  # channels per tile
    BLOCK_HW: tl.constexpr,  # positions per tile
    ACC: tl.constexpr,  # accumulation dtype
):
    row = tl.program_id(0)  # = n * G + g
    group = row % G
    row_start = row.to(tl.int64) * CPG * HW
    K = CPG * HW
    mean = tl.load(MEAN + row)
    rstd = tl.load(RSTD + row)
    # pass 1: c1, c2 for the row, and the per-channel sums for dw and db
    c1 = tl.zeros([1], dtype=ACC)
    c2 = tl.zeros([1], dtype=ACC)
    for c0 in range(0, CPG, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        ch_mask = ch < CPG
        w = _channel_weight(W, group * CPG + ch, ch_mask, HAS_WEIGHT, BLOCK_C, ACC)
        dw_c = tl.zeros([BLOCK_C], dtype=ACC)
        db_c = tl.zeros([BLOCK_C], dtype=ACC)
        for hw0 in range(0, HW, BLOCK_HW):
            hw = hw0 + tl.arange(0, BLOCK_HW)
            mask = ch_mask[:, None] & (hw < HW)[None, :]
            offs = row_start + ch[:, None] * HW + hw[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
            x_hat = tl.where(mask, (x - mean) * rstd, 0.0)
            wdy = dy * w[:, None]
            c1 += tl.sum(tl.sum(x_hat * wdy, axis=1), axis=0)
            c2 += tl.sum(tl.sum(wdy, axis=1), axis=0)
            dw_c += tl.sum(dy * x_hat, axis=1)
            db_c += tl.sum(dy, axis=1)
        # (n, c) = (row // G, group * CPG + ch) sits at row * CPG + ch in an (N, C) array
        tl.store(DW_NC + row * CPG + ch, dw_c, mask=ch_mask)
        tl.store(DB_NC + row * CPG + ch, db_c, mask=ch_mask)
    c1 = c1 / K
    c2 = c2 / K
    # pass 2: dx (the row was just read: mostly L2 hits)
    for c0 in range(0, CPG, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        ch_mask = ch < CPG
        w = _channel_weight(W, group * CPG + ch, ch_mask, HAS_WEIGHT, BLOCK_C, ACC)
        for hw0 in range(0, HW, BLOCK_HW):
            hw = hw0 + tl.arange(0, BLOCK_HW)
            mask = ch_mask[:, None] & (hw < HW)[None, :]
            offs = row_start + ch[:, None] * HW + hw[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
            x_hat = (x - mean) * rstd
            dx = (dy * w[:, None] - (x_hat * c1 + c2)) * rstd
            tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _channel_weight(W, ch, ch_mask, HAS_WEIGHT: tl.constexpr, BLOCK_C: tl.constexpr, ACC):
    """``w[c]`` for a block of channels (ones without a weight)."""
    if HAS_WEIGHT:
        w = tl.load(W + ch, mask=ch_mask, other=0.0).to(ACC)
    else:
        w = tl.full([BLOCK_C], 1.0, ACC)
    return w


def _config(cpg: int, hw: int, backward: bool = False):
    """``(one_tile, BLOCK_C, BLOCK_HW, num_warps)`` for rows of ``cpg`` x ``hw`` values: the whole
    (padded) row in one tile if it fits the forward's register budget, else tiles of
    ``LIMITS.tile``. The backward always streams tiles."""
    one_tile_c, one_tile_hw = pow2(cpg), pow2(hw)
    if not backward and one_tile_c * one_tile_hw <= LIMITS.row_elems:
        return True, one_tile_c, one_tile_hw, num_warps_for(one_tile_c * one_tile_hw, 32)
    block_hw = min(one_tile_hw, LIMITS.tile)
    block_c = max(1, min(one_tile_c, LIMITS.tile // block_hw))
    return False, block_c, block_hw, num_warps_for(block_c * block_hw)


def _as_nchw(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a contiguous ``(N, C, HW)`` tensor."""
    return x.contiguous().view(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5):
    """``(y, mean, rstd)``: ``y`` like ``x`` (contiguous); ``mean``/``rstd`` are ``(N, G)``, float32
    (float64 for float64 ``x``)."""
    check_device(x)
    x3 = _as_nchw(x)
    N, C, HW = x3.shape
    G = num_groups
    if C % G:
        raise ValueError(f"num_channels ({C}) must be divisible by num_groups ({G})")
    y = torch.empty_like(x3)
    mean = torch.empty((N, G), dtype=stats_dtype(x.dtype), device=x.device)
    rstd = torch.empty_like(mean)
    if x3.numel() > 0:
        one_tile, block_c, block_hw, warps = _config(C // G, HW)
        _group_norm_fwd_kernel[(N * G,)](
            x3, y, _or(weight, x3), _or(bias, x3), mean, rstd, C, HW, C // G, G, eps,
            HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, ONE_TILE=one_tile,
            BLOCK_C=block_c, BLOCK_HW=block_hw, ACC=acc_dtype(x.dtype), num_warps=warps,
        )  # fmt: skip
    return y.view(x.shape), mean, rstd


def group_norm_backward(dy, x, num_groups, weight, mean, rstd, *, need_dw=True, need_db=True):
    """``(dx, dw, db)`` for :func:`group_norm_forward`. ``dw``/``db`` are ``(C,)`` float32 (float64
    for float64 ``x``), None where not asked for (``dw`` also None without a weight)."""
    x3 = _as_nchw(x)
    N, C, HW = x3.shape
    G = num_groups
    dy3 = dy.contiguous().view(N, C, HW)
    dx = torch.empty_like(x3)
    dw_nc = torch.zeros((N, C), dtype=mean.dtype, device=x.device)
    db_nc = torch.zeros((N, C), dtype=mean.dtype, device=x.device)
    if x3.numel() > 0:
        _, block_c, block_hw, warps = _config(C // G, HW, backward=True)
        _group_norm_bwd_kernel[(N * G,)](
            x3, dy3, dx, _or(weight, x3), mean, rstd, dw_nc, db_nc, C, HW, C // G, G,
            HAS_WEIGHT=weight is not None, BLOCK_C=block_c, BLOCK_HW=block_hw,
            ACC=acc_dtype(x.dtype), num_warps=warps,
        )  # fmt: skip
    dw = dw_nc.sum(0) if need_dw and weight is not None else None
    db = db_nc.sum(0) if need_db else None
    return dx.view(x.shape), dw, db


def _or(t, fallback):
    """A tensor to pass for an absent optional pointer (the kernel never reads it)."""
    return fallback if t is None else t.contiguous()


class GroupNormFunction(torch.autograd.Function):
    """``y = group_norm(x)`` with the Triton kernels above for forward and backward."""

    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, eps):
        y, mean, rstd = group_norm_forward(x, num_groups, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.num_groups = num_groups
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    @once_differentiable  # the kernels' backward is not itself differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = group_norm_backward(
            dy, x, ctx.num_groups, weight, mean, rstd,
            need_dw=ctx.needs_input_grad[2],
            need_db=ctx.bias_dtype is not None and ctx.needs_input_grad[3],
        )  # fmt: skip
        dw = None if dw is None else dw.to(weight.dtype)
        db = None if db is None else db.to(ctx.bias_dtype)
        return dx, None, dw, db, None


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """GroupNorm of ``x`` ``(N, C, *spatial)`` with ``num_groups`` groups (backend contract op).
    ``num_groups = C`` is InstanceNorm."""
    return GroupNormFunction.apply(x, num_groups, weight, bias, eps)
