"""LayerNorm in Triton: kernels, launchers, autograd.Function.

The input is viewed as an ``(M, N)`` matrix: ``N = prod(normalized_shape)`` elements per row, ``M``
rows (every leading index). Each row is normalized on its own:

    mean  = 1/N sum_j x_j
    var   = 1/N sum_j (x_j - mean)^2          (biased)
    rstd  = 1 / sqrt(var + eps)
    x_hat = (x - mean) * rstd
    y     = x_hat * w + b

**Forward.** One program normalizes ``BLOCK_M`` rows. A row of at most ``LIMITS.row_elems`` (16384)
values is loaded once and kept in registers: mean, then var of the centred values (two passes over
registers, not over memory). A longer row is streamed twice: the first loop merges per-tile
``(n, mean, m2)`` with Chan's formula, the second normalizes (its reads mostly hit L2, which still
holds the row).

**Backward.** With ``wdy = w * dy``, differentiating through ``mean`` and ``rstd`` gives

    c1 = 1/N sum_j x_hat_j * wdy_j          c2 = 1/N sum_j wdy_j
    dx = rstd * (wdy - (x_hat * c1 + c2))
    dw = sum_rows dy * x_hat                db = sum_rows dy

``dx`` is per row, like the forward. ``dw`` and ``db`` sum over *all* rows. When rows fit in
registers, a persistent grid of ``P`` programs (as many as fit on the GPU) walks the rows
``pid, pid + P, ...``, accumulates its share of ``dw``/``db`` in registers and writes one partial
row ``DW_PART[pid]``; a torch sum over the ``P`` partials finishes. That is the tutorial's two-stage
reduction without locks, and deterministic. Longer rows cannot keep ``dw`` in registers: ``dx``
comes from a row kernel and ``dw``/``db`` from a column kernel (``_layer_norm_bwd_dwdb_kernel``)
that reads ``x`` and ``dy`` again.
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
    chan_merge,
    check_device,
    num_warps_for,
    pow2,
    prev_pow2,
    resident_programs,
    stats_dtype,
    target_programs,
    tile_stats,
)


@triton.jit
def _layer_norm_fwd_kernel(
    X,  # pointer to the input x, (M, N) contiguous
    Y,  # pointer to the output y, (M, N), dtype of x
    W,  # pointer to the weight w, (N,); read only if HAS_WEIGHT
    B,  # pointer to the bias b, (N,); read only if HAS_BIAS
    MEAN,  # pointer to the per-row mean, (M,), float32 (float64 for float64 x)
    RSTD,  # pointer to the per-row 1 / sqrt(var + eps), (M,)
    M,  # number of rows
    N,  # elements per row (normalized together)
    eps,  # added to var before the square root
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ONE_TILE: tl.constexpr,  # BLOCK_N >= N: load each row once and keep it in registers
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # columns per tile
    ACC: tl.constexpr,  # accumulation dtype
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    row_start = rows.to(tl.int64) * N  # int64: M * N may exceed 2^31
    if ONE_TILE:
        cols = tl.arange(0, BLOCK_N)
        mask = row_mask[:, None] & (cols < N)[None, :]
        offs = row_start[:, None] + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
        mean = tl.sum(x, axis=1) / N
        xc = tl.where(mask, x - mean[:, None], 0.0)  # x - mean, zero in the padding
        var = tl.sum(xc * xc, axis=1) / N
        rstd = 1.0 / tl.sqrt(var + eps)
        y = _affine(xc * rstd[:, None], W, B, cols, cols < N, HAS_WEIGHT, HAS_BIAS)
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    else:
        # pass 1: merge the (n, mean, m2) of each tile of x - K (Chan), K = the row's first value
        shift = tl.load(X + row_start, mask=row_mask, other=0.0).to(ACC)
        n = tl.zeros([BLOCK_M], dtype=ACC)
        mean = tl.zeros([BLOCK_M], dtype=ACC)
        m2 = tl.zeros([BLOCK_M], dtype=ACC)
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            mask = row_mask[:, None] & (cols < N)[None, :]
            x = tl.load(X + row_start[:, None] + cols[None, :], mask=mask, other=0.0).to(ACC)
            x = tl.where(mask, x - shift[:, None], 0.0)
            n_t, mean_t, m2_t = tile_stats(x, mask, 1)
            n, mean, m2 = chan_merge(n, mean, m2, n_t, mean_t, m2_t)
        mean = shift + mean
        rstd = 1.0 / tl.sqrt(m2 / N + eps)
        # pass 2: normalize (the row was just read: mostly L2 hits)
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            mask = row_mask[:, None] & (cols < N)[None, :]
            offs = row_start[:, None] + cols[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            x_hat = (x - mean[:, None]) * rstd[:, None]
            y = _affine(x_hat, W, B, cols, cols < N, HAS_WEIGHT, HAS_BIAS)
            tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=row_mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _affine(x_hat, W, B, cols, col_mask, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """``x_hat * w + b`` for a ``(rows, cols)`` tile, ``w``/``b`` indexed by column."""
    y = x_hat
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(x_hat.dtype)
        y = y * w[None, :]
    if HAS_BIAS:
        b = tl.load(B + cols, mask=col_mask, other=0.0).to(x_hat.dtype)
        y = y + b[None, :]
    return y


@triton.jit
def _layer_norm_bwd_kernel(
    X,  # pointer to the input x, (M, N)
    DY,  # pointer to the output gradient dy, (M, N)
    DX,  # pointer to the input gradient dx, (M, N)
    W,  # pointer to the weight w, (N,); read only if HAS_WEIGHT
    MEAN,  # pointer to the per-row mean saved by the forward, (M,)
    RSTD,  # pointer to the per-row rstd saved by the forward, (M,)
    DW_PART,  # pointer to this program's partial dw rows, (P, N); written only if FUSE_DWDB
    DB_PART,  # pointer to the partial db rows, (P, N); written only if FUSE_DWDB and HAS_BIAS
    M,  # number of rows
    N,  # elements per row
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    FUSE_DWDB: tl.constexpr,  # rows fit in one tile: accumulate dw/db here, in registers
    BLOCK_M: tl.constexpr,  # rows per step
    BLOCK_N: tl.constexpr,  # columns per tile (>= N when FUSE_DWDB)
    ACC: tl.constexpr,  # accumulation dtype
):
    pid = tl.program_id(0)
    P = tl.num_programs(0)  # persistent grid: this program takes row blocks pid, pid + P, ...
    if FUSE_DWDB:
        cols = tl.arange(0, BLOCK_N)
        col_mask = cols < N
        w = tl.full([BLOCK_N], 1.0, ACC)
        if HAS_WEIGHT:
            w = tl.load(W + cols, mask=col_mask, other=0.0).to(ACC)
        dw = tl.zeros([BLOCK_N], dtype=ACC)
        db = tl.zeros([BLOCK_N], dtype=ACC)
        for row0 in range(pid * BLOCK_M, M, P * BLOCK_M):
            rows = row0 + tl.arange(0, BLOCK_M)
            row_mask = rows < M
            mask = row_mask[:, None] & col_mask[None, :]
            offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
            mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
            rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
            x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            wdy = dy * w[None, :]
            c1 = tl.sum(x_hat * wdy, axis=1) / N
            c2 = tl.sum(wdy, axis=1) / N
            dx = (wdy - (x_hat * c1[:, None] + c2[:, None])) * rstd[:, None]
            tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
            dw += tl.sum(dy * x_hat, axis=0)
            db += tl.sum(dy, axis=0)
        if HAS_WEIGHT:
            tl.store(DW_PART + pid * N + cols, dw, mask=col_mask)
        if HAS_BIAS:
            tl.store(DB_PART + pid * N + cols, db, mask=col_mask)
    else:
        for row0 in range(pid * BLOCK_M, M, P * BLOCK_M):
            rows = row0 + tl.arange(0, BLOCK_M)
            row_mask = rows < M
            row_start = rows.to(tl.int64) * N
            mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
            rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
            # pass 1: c1 and c2 over the whole row
            c1 = tl.zeros([BLOCK_M], dtype=ACC)
            c2 = tl.zeros([BLOCK_M], dtype=ACC)
            for start in range(0, N, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                mask = row_mask[:, None] & (cols < N)[None, :]
                offs = row_start[:, None] + cols[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
                wdy = _scale_by_weight(dy, W, cols, HAS_WEIGHT, N)
                x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
                c1 += tl.sum(x_hat * wdy, axis=1)
                c2 += tl.sum(wdy, axis=1)
            c1 = c1 / N
            c2 = c2 / N
            # pass 2: dx (the row was just read: mostly L2 hits)
            for start in range(0, N, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                mask = row_mask[:, None] & (cols < N)[None, :]
                offs = row_start[:, None] + cols[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
                wdy = _scale_by_weight(dy, W, cols, HAS_WEIGHT, N)
                x_hat = (x - mean[:, None]) * rstd[:, None]
                dx = (wdy - (x_hat * c1[:, None] + c2[:, None])) * rstd[:, None]
                tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _scale_by_weight(dy, W, cols, HAS_WEIGHT: tl.constexpr, N):
    """``w * dy`` for a ``(rows, cols)`` tile (``dy`` itself without a weight)."""
    wdy = dy
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=cols < N, other=0.0).to(dy.dtype)
        wdy = dy * w[None, :]
    return wdy


@triton.jit
def _layer_norm_bwd_dwdb_kernel(
    X,  # pointer to the input x, (M, N)
    DY,  # pointer to the output gradient dy, (M, N)
    MEAN,  # pointer to the per-row mean, (M,)
    RSTD,  # pointer to the per-row rstd, (M,)
    DW_PART,  # pointer to partial dw = sum over this program's rows of dy * x_hat, (S, N)
    DB_PART,  # pointer to partial db = sum over this program's rows of dy, (S, N)
    M,  # number of rows
    N,  # elements per row
    rows_per_split,  # rows summed by one program
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,  # rows per tile
    BLOCK_N: tl.constexpr,  # columns per program
    ACC: tl.constexpr,  # accumulation dtype
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(1)
    col_mask = cols < N
    dw = tl.zeros([BLOCK_N], dtype=ACC)
    db = tl.zeros([BLOCK_N], dtype=ACC)
    row_end = tl.minimum(M, (split + 1) * rows_per_split)
    for row0 in range(split * rows_per_split, row_end, BLOCK_M):
        rows = row0 + tl.arange(0, BLOCK_M)
        row_mask = rows < row_end
        mask = row_mask[:, None] & col_mask[None, :]
        offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
        db += tl.sum(dy, axis=0)
        if HAS_WEIGHT:
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
            rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
            dw += tl.sum(dy * (x - mean[:, None]) * rstd[:, None], axis=0)
    if HAS_WEIGHT:
        tl.store(DW_PART + split * N + cols, dw, mask=col_mask)
    if HAS_BIAS:
        tl.store(DB_PART + split * N + cols, db, mask=col_mask)


def _row_config(M: int, N: int, device: torch.device, backward: bool = False):
    """``(one_tile, BLOCK_M, BLOCK_N, num_warps)`` for an ``(M, N)`` row-wise kernel.

    One tile when the padded row fits the register budget (the backward's is half the forward's:
    it holds ``x``, ``dy`` and the ``dw``/``db`` partials), with several short rows per program.
    """
    block_n = pow2(N)
    if block_n <= (LIMITS.row_elems_bwd if backward else LIMITS.row_elems):
        rows_wanted = max(1, M // target_programs(device))  # keep enough programs for the GPU
        block_m = max(1, min(LIMITS.tile // block_n, prev_pow2(rows_wanted)))
        return True, block_m, block_n, num_warps_for(block_m * block_n, 16 if backward else 32)
    block_n = min(block_n, LIMITS.tile)
    return False, 1, block_n, num_warps_for(block_n)


def _as_rows(x: torch.Tensor, normalized_shape) -> tuple[torch.Tensor, int, int]:
    """``x`` as a contiguous ``(M, N)`` matrix with ``N = prod(normalized_shape)``."""
    n = math.prod(normalized_shape)
    x2 = x.contiguous().view(-1, n) if n > 0 else x.reshape(-1, 0)
    return x2, x2.shape[0], n


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``(y, mean, rstd)``: ``y`` like ``x``; ``mean``/``rstd`` per row, float32 (float64 for
    float64 ``x``), shaped like ``x``'s leading dims."""
    check_device(x)
    normalized_shape = tuple(normalized_shape)
    x2, M, N = _as_rows(x, normalized_shape)
    y = torch.empty_like(x2)
    mean = torch.empty(M, dtype=stats_dtype(x.dtype), device=x.device)
    rstd = torch.empty_like(mean)
    if M > 0 and N > 0:
        one_tile, block_m, block_n, warps = _row_config(M, N, x.device)
        _layer_norm_fwd_kernel[(triton.cdiv(M, block_m),)](
            x2, y, _or(weight, x2), _or(bias, x2), mean, rstd, M, N, eps,
            HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, ONE_TILE=one_tile,
            BLOCK_M=block_m, BLOCK_N=block_n, ACC=acc_dtype(x.dtype), num_warps=warps,
        )  # fmt: skip
    lead = x.shape[: x.dim() - len(normalized_shape)]
    return y.view(x.shape), mean.view(lead), rstd.view(lead)


def layer_norm_backward(dy, x, normalized_shape, weight, mean, rstd, *, need_dw=True, need_db=True):
    """``(dx, dw, db)`` for :func:`layer_norm_forward`. ``dx`` is like ``x``; ``dw``/``db`` are
    ``normalized_shape``, in float32 (float64 for float64 ``x``), None where not asked for
    (``dw`` also None without a weight)."""
    normalized_shape = tuple(normalized_shape)
    x2, M, N = _as_rows(x, normalized_shape)
    dy2 = dy.contiguous().view(M, N)
    dx = torch.empty_like(x2)
    need_dw = need_dw and weight is not None
    dw_part = db_part = None
    if M > 0 and N > 0:
        one_tile, block_m, block_n, warps = _row_config(M, N, x.device, backward=True)
        acc = acc_dtype(x.dtype)
        if one_tile:  # dx, dw and db in one persistent pass
            P = min(triton.cdiv(M, block_m), resident_programs(x.device, warps))
            dw_part = torch.empty((P, N), dtype=mean.dtype, device=x.device)
            db_part = torch.empty((P, N), dtype=mean.dtype, device=x.device)
            _layer_norm_bwd_kernel[(P,)](
                x2, dy2, dx, _or(weight, x2), mean, rstd, dw_part, db_part, M, N,
                HAS_WEIGHT=weight is not None, HAS_BIAS=need_db, FUSE_DWDB=True,
                BLOCK_M=block_m, BLOCK_N=block_n, ACC=acc, num_warps=warps,
            )  # fmt: skip
        else:  # rows too long for registers: dx by rows, then dw/db by columns
            P = min(M, resident_programs(x.device, warps))
            _layer_norm_bwd_kernel[(P,)](
                x2, dy2, dx, _or(weight, x2), mean, rstd, dx, dx, M, N,
                HAS_WEIGHT=weight is not None, HAS_BIAS=False, FUSE_DWDB=False,
                BLOCK_M=1, BLOCK_N=block_n, ACC=acc, num_warps=warps,
            )  # fmt: skip
            if need_dw or need_db:
                dw_part, db_part = _dwdb_partials(x2, dy2, mean, rstd, need_dw, need_db, acc)
    dw = _total(dw_part, need_dw, N, mean)
    db = _total(db_part, need_db, N, mean)
    return dx.view(x.shape), _shaped(dw, normalized_shape), _shaped(db, normalized_shape)


def _dwdb_partials(x2, dy2, mean, rstd, need_dw, need_db, acc):
    """Column-wise partial sums of ``dy * x_hat`` and ``dy`` over row splits: ``(S, N)`` each."""
    M, N = x2.shape
    block_n = min(pow2(N), 256)
    block_m = max(1, min(LIMITS.tile // block_n, pow2(M)))
    col_blocks = triton.cdiv(N, block_n)
    splits = max(1, min(triton.cdiv(M, block_m), target_programs(x2.device) // col_blocks))
    rows_per_split = triton.cdiv(M, splits)
    dw_part = torch.empty((splits, N), dtype=mean.dtype, device=x2.device)
    db_part = torch.empty((splits, N), dtype=mean.dtype, device=x2.device)
    _layer_norm_bwd_dwdb_kernel[(col_blocks, splits)](
        x2, dy2, mean.view(-1), rstd.view(-1), dw_part, db_part, M, N, rows_per_split,
        HAS_WEIGHT=need_dw, HAS_BIAS=need_db, BLOCK_M=block_m, BLOCK_N=block_n, ACC=acc,
        num_warps=num_warps_for(block_m * block_n),
    )  # fmt: skip
    return dw_part, db_part


def _total(part, needed, N, like):
    """The sum of the partial rows (zeros when there were no rows), or None if not ``needed``."""
    if not needed:
        return None
    if part is None:
        return torch.zeros(N, dtype=like.dtype, device=like.device)
    return part.sum(0)


def _shaped(t, shape):
    return None if t is None else t.view(shape)


def _or(t, fallback):
    """A tensor to pass for an absent optional pointer (the kernel never reads it)."""
    return fallback if t is None else t.contiguous()


class LayerNormFunction(torch.autograd.Function):
    """``y = layer_norm(x)`` with the Triton kernels above for forward and backward."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps):
        y, mean, rstd = layer_norm_forward(x, normalized_shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.normalized_shape = tuple(normalized_shape)
        ctx.has_bias = bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    @once_differentiable  # the kernels' backward is not itself differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = layer_norm_backward(
            dy, x, ctx.normalized_shape, weight, mean, rstd,
            need_dw=ctx.needs_input_grad[2], need_db=ctx.has_bias and ctx.needs_input_grad[3],
        )  # fmt: skip
        dw = None if dw is None else dw.to(weight.dtype)
        db = None if db is None else db.to(ctx.bias_dtype)
        return dx, None, dw, db, None


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the trailing ``normalized_shape`` dims of ``x`` (backend contract op)."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    return LayerNormFunction.apply(x, tuple(normalized_shape), weight, bias, eps)
