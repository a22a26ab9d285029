"""RMSNorm in Triton: kernels, launchers, autograd.Function.

LayerNorm without the mean (Zhang & Sennrich, 2019). With the input viewed as ``(M, N)`` rows:

    ms    = 1/N sum_j x_j^2                (the mean square: RMSNorm's one statistic)
    rstd  = 1 / sqrt(ms + eps)
    x_hat = x * rstd
    y     = x_hat * w

``ms`` is a plain sum of squares, no difference of large numbers, so one pass is exact enough.

**Backward.** With ``wdy = w * dy`` and no path through a mean:

    c1 = 1/N sum_j x_hat_j * wdy_j
    dx = rstd * (wdy - x_hat * c1)
    dw = sum_rows dy * x_hat

The kernels are laid out like :mod:`normlib.kernels.layer_norm`: rows of up to 16384 values stay in
registers, ``dw`` is accumulated per program of a persistent grid and summed by torch, longer rows
are streamed and their ``dw`` comes from a column kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ._common import (
    LIMITS,
    acc_dtype,
    check_device,
    num_warps_for,
    pow2,
    resident_programs,
    stats_dtype,
    target_programs,
)
from .layer_norm import _as_rows, _or, _row_config, _shaped, _total


@triton.jit
def _rms_norm_fwd_kernel(
    X,  # pointer to the input x, (M, N) contiguous
    Y,  # pointer to the output y, (M, N), dtype of x
    W,  # pointer to the weight w, (N,); read only if HAS_WEIGHT
    RSTD,  # pointer to the per-row 1 / sqrt(ms + eps), (M,), float32 (float64 for float64 x)
    M,  # number of rows
    N,  # elements per row
    eps,  # added to the mean square before the square root
    HAS_WEIGHT: tl.constexpr,
    ONE_TILE: tl.constexpr,  # BLOCK_N >= N: load each row once and keep it in registers
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # columns per tile
    ACC: tl.constexpr,  # accumulation dtype
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    row_start = rows.to(tl.int64) * N
    if ONE_TILE:
        cols = tl.arange(0, BLOCK_N)
        mask = row_mask[:, None] & (cols < N)[None, :]
        offs = row_start[:, None] + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / N + eps)
        y = _scale(x * rstd[:, None], W, cols, cols < N, HAS_WEIGHT)
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    else:
        sum_sq = tl.zeros([BLOCK_M], dtype=ACC)
        for start in range(0, N, BLOCK_N):  # pass 1: the mean square
            cols = start + tl.arange(0, BLOCK_N)
            mask = row_mask[:, None] & (cols < N)[None, :]
            x = tl.load(X + row_start[:, None] + cols[None, :], mask=mask, other=0.0).to(ACC)
            sum_sq += tl.sum(x * x, axis=1)
        rstd = 1.0 / tl.sqrt(sum_sq / N + eps)
        for start in range(0, N, BLOCK_N):  # pass 2: scale (mostly L2 hits)
            cols = start + tl.arange(0, BLOCK_N)
            mask = row_mask[:, None] & (cols < N)[None, :]
            offs = row_start[:, None] + cols[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            y = _scale(x * rstd[:, None], W, cols, cols < N, HAS_WEIGHT)
            tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _scale(x_hat, W, cols, col_mask, HAS_WEIGHT: tl.constexpr):
    """``x_hat * w`` for a ``(rows, cols)`` tile (``x_hat`` itself without a weight)."""
    y = x_hat
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(x_hat.dtype)
        y = x_hat * w[None, :]
    return y


@triton.jit
def _rms_norm_bwd_kernel(
    X,  # pointer to the input x, (M, N)
    DY,  # pointer to the output gradient dy, (M, N)
    DX,  # pointer to the input gradient dx, (M, N)
    W,  # pointer to the weight w, (N,); read only if HAS_WEIGHT
    RSTD,  # pointer to the per-row rstd saved by the forward, (M,)
    DW_PART,  # pointer to the per-program partial dw rows, (P, N); written only if FUSE_DW
    M,  # number of rows
    N,  # elements per row
    HAS_WEIGHT: tl.constexpr,
    FUSE_DW: tl.constexpr,  # rows fit in one tile: accumulate dw here, in registers
    BLOCK_M: tl.constexpr,  # rows per step
    BLOCK_N: tl.constexpr,  # columns per tile (>= N when FUSE_DW)
    ACC: tl.constexpr,  # accumulation dtype
):
    pid = tl.program_id(0)
    P = tl.num_programs(0)  # persistent grid: this program takes row blocks pid, pid + P, ...
    if FUSE_DW:
        cols = tl.arange(0, BLOCK_N)
        col_mask = cols < N
        w = tl.full([BLOCK_N], 1.0, ACC)
        if HAS_WEIGHT:
            w = tl.load(W + cols, mask=col_mask, other=0.0).to(ACC)
        dw = tl.zeros([BLOCK_N], dtype=ACC)
        for row0 in range(pid * BLOCK_M, M, P * BLOCK_M):
            rows = row0 + tl.arange(0, BLOCK_M)
            row_mask = rows < M
            mask = row_mask[:, None] & col_mask[None, :]
            offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
            rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
            x_hat = x * rstd[:, None]
            wdy = dy * w[None, :]
            c1 = tl.sum(x_hat * wdy, axis=1) / N
            dx = (wdy - x_hat * c1[:, None]) * rstd[:, None]
            tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
            dw += tl.sum(dy * x_hat, axis=0)
        if HAS_WEIGHT:
            tl.store(DW_PART + pid * N + cols, dw, mask=col_mask)
    else:
        for row0 in range(pid * BLOCK_M, M, P * BLOCK_M):
            rows = row0 + tl.arange(0, BLOCK_M)
            row_mask = rows < M
            row_start = rows.to(tl.int64) * N
            rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
            c1 = tl.zeros([BLOCK_M], dtype=ACC)
            for start in range(0, N, BLOCK_N):  # pass 1: c1 over the whole row
                cols = start + tl.arange(0, BLOCK_N)
                mask = row_mask[:, None] & (cols < N)[None, :]
                offs = row_start[:, None] + cols[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
                c1 += tl.sum(x * rstd[:, None] * _scale(dy, W, cols, cols < N, HAS_WEIGHT), axis=1)
            c1 = c1 / N
            for start in range(0, N, BLOCK_N):  # pass 2: dx (mostly L2 hits)
                cols = start + tl.arange(0, BLOCK_N)
                mask = row_mask[:, None] & (cols < N)[None, :]
                offs = row_start[:, None] + cols[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
                wdy = _scale(dy, W, cols, cols < N, HAS_WEIGHT)
                dx = (wdy - x * rstd[:, None] * c1[:, None]) * rstd[:, None]
                tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd_dw_kernel(
    X,  # pointer to the input x, (M, N)
    DY,  # pointer to the output gradient dy, (M, N)
    RSTD,  # pointer to the per-row rstd, (M,)
    DW_PART,  # pointer to partial dw = sum over this program's rows of dy * x_hat, (S, N)
    M,  # number of rows
    N,  # elements per row
    rows_per_split,  # rows summed by one program
    BLOCK_M: tl.constexpr,  # rows per tile
    BLOCK_N: tl.constexpr,  # columns per program
    ACC: tl.constexpr,  # accumulation dtype
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(1)
    col_mask = cols < N
    dw = tl.zeros([BLOCK_N], dtype=ACC)
    row_end = tl.minimum(M, (split + 1) * rows_per_split)
    for row0 in range(split * rows_per_split, row_end, BLOCK_M):
        rows = row0 + tl.arange(0, BLOCK_M)
        row_mask = rows < row_end
        mask = row_mask[:, None] & col_mask[None, :]
        offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
        dw += tl.sum(dy * x * rstd[:, None], axis=0)
    tl.store(DW_PART + split * N + cols, dw, mask=col_mask)


def rms_norm_forward(x, normalized_shape, weight=None, eps=None):
    """``(y, rstd)``: ``y`` like ``x``; ``rstd`` per row, float32 (float64 for float64 ``x``).
    ``eps=None`` means ``torch.finfo(x.dtype).eps``, as in ``torch.nn.RMSNorm``."""
    check_device(x)
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    normalized_shape = tuple(normalized_shape)
    x2, M, N = _as_rows(x, normalized_shape)
    y = torch.empty_like(x2)
    rstd = torch.empty(M, dtype=stats_dtype(x.dtype), device=x.device)
    if M > 0 and N > 0:
        one_tile, block_m, block_n, warps = _row_config(M, N, x.device)
        _rms_norm_fwd_kernel[(triton.cdiv(M, block_m),)](
            x2, y, _or(weight, x2), rstd, M, N, eps,
            HAS_WEIGHT=weight is not None, ONE_TILE=one_tile,
            BLOCK_M=block_m, BLOCK_N=block_n, ACC=acc_dtype(x.dtype), num_warps=warps,
        )  # fmt: skip
    lead = x.shape[: x.dim() - len(normalized_shape)]
    return y.view(x.shape), rstd.view(lead)


def rms_norm_backward(dy, x, normalized_shape, weight, rstd, *, need_dw=True):
    """``(dx, dw)`` for :func:`rms_norm_forward`: ``dx`` like ``x``; ``dw`` ``normalized_shape``, in
    float32 (float64 for float64 ``x``), None without a weight or when not asked for."""
    normalized_shape = tuple(normalized_shape)
    x2, M, N = _as_rows(x, normalized_shape)
    dy2 = dy.contiguous().view(M, N)
    dx = torch.empty_like(x2)
    need_dw = need_dw and weight is not None
    dw_part = None
    if M > 0 and N > 0:
        one_tile, block_m, block_n, warps = _row_config(M, N, x.device, backward=True)
        acc = acc_dtype(x.dtype)
        if one_tile:  # dx and dw in one persistent pass
            P = min(triton.cdiv(M, block_m), resident_programs(x.device, warps))
            dw_part = torch.empty((P, N), dtype=rstd.dtype, device=x.device)
            _rms_norm_bwd_kernel[(P,)](
                x2, dy2, dx, _or(weight, x2), rstd, dw_part, M, N,
                HAS_WEIGHT=weight is not None, FUSE_DW=True,
                BLOCK_M=block_m, BLOCK_N=block_n, ACC=acc, num_warps=warps,
            )  # fmt: skip
        else:  # rows too long for registers: dx by rows, then dw by columns
            P = min(M, resident_programs(x.device, warps))
            _rms_norm_bwd_kernel[(P,)](
                x2, dy2, dx, _or(weight, x2), rstd, dx, M, N,
                HAS_WEIGHT=weight is not None, FUSE_DW=False,
                BLOCK_M=1, BLOCK_N=block_n, ACC=acc, num_warps=warps,
            )  # fmt: skip
            if need_dw:
                dw_part = _dw_partials(x2, dy2, rstd, acc)
    dw = _total(dw_part, need_dw, N, rstd)
    return dx.view(x.shape), _shaped(dw, normalized_shape)


def _dw_partials(x2, dy2, rstd, acc):
    """Column-wise partial sums of ``dy * x_hat`` over row splits: ``(S, N)``."""
    M, N = x2.shape
    block_n = min(pow2(N), 256)
    block_m = max(1, min(LIMITS.tile // block_n, pow2(M)))
    col_blocks = triton.cdiv(N, block_n)
    splits = max(1, min(triton.cdiv(M, block_m), target_programs(x2.device) // col_blocks))
    dw_part = torch.empty((splits, N), dtype=rstd.dtype, device=x2.device)
    _rms_norm_bwd_dw_kernel[(col_blocks, splits)](
        x2, dy2, rstd.view(-1), dw_part, M, N, triton.cdiv(M, splits),
        BLOCK_M=block_m, BLOCK_N=block_n, ACC=acc, num_warps=num_warps_for(block_m * block_n),
    )  # fmt: skip
    return dw_part


class RMSNormFunction(torch.autograd.Function):
    """``y = rms_norm(x)`` with the Triton kernels above for forward and backward."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight, eps):
        y, rstd = rms_norm_forward(x, normalized_shape, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        ctx.normalized_shape = tuple(normalized_shape)
        return y

    @staticmethod
    @once_differentiable  # the kernels' backward is not itself differentiable
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = rms_norm_backward(
            dy, x, ctx.normalized_shape, weight, rstd, need_dw=ctx.needs_input_grad[2]
        )
        return dx, None, None if dw is None else dw.to(weight.dtype), None


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """RMSNorm over the trailing ``normalized_shape`` dims of ``x`` (backend contract op)."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    return RMSNormFunction.apply(x, tuple(normalized_shape), weight, eps)
