"""BatchNorm in Triton: training (batch statistics) and eval (running statistics), NCHW and
channels_last, forward and backward.

For ``x`` of shape ``(N, C, *spatial)`` with ``HW = prod(spatial)``, every channel ``c`` has
``count = N * HW`` values, spread over the whole tensor:

    mean_c = 1/count sum_{n, hw} x[n, c, hw]       var_c = 1/count sum (x - mean_c)^2      (biased)
    rstd_c = 1 / sqrt(var_c + eps)
    y      = (x - mean_c) * rstd_c * w_c + b_c

Unlike LayerNorm, a channel's values are not contiguous, and a channel holds up to millions of
them, so the statistics are a *split reduction*:

1. ``_batch_norm_fwd_kernel``: program ``(c, s)`` reduces split ``s`` of channel ``c`` (a range of
   samples in NCHW, a range of (sample, position) rows for a block of channels in channels_last)
   to partial ``(n, mean, m2)``, folding one tile at a time with Chan's merge.
2. ``_batch_norm_merge_kernel``: merges the ``S`` partials of each channel (Chan's formula for
   ``S`` parts).
3. ``_batch_norm_eval_kernel``: the elementwise map ``y = (x - mean) * rstd * w + b``, the same
   kernel eval mode uses with the running statistics.

That reads ``x`` twice. When the channels alone give enough programs to fill the GPU (``S = 1``),
step 1 runs *fused*: the program owns whole channels, so it finishes the statistics itself and
normalizes right away, its second read of the channel mostly served by L2.

**Backward (training).** With ``x_hat = (x - mean) * rstd`` and per-channel sums over ``(n, hw)``:

    db_c = sum dy                       dw_c = sum dy * x_hat
    dx   = w_c * rstd_c * (dy - db_c / count - x_hat * dw_c / count)

``_batch_norm_bwd_kernel`` computes the (partial) sums, split like the forward and fused with the
``dx`` pass when ``S = 1``; otherwise ``_batch_norm_bwd_dx_kernel`` applies the formula elementwise.
Eval mode's backward is ``dx = dy * w_c * rstd_c``, with ``dw``/``db`` from the same sums.

**Layouts.** The elementwise kernels see a 2-D matrix: NCHW is ``(N * C, HW)`` with channel
``row % C``, channels_last is ``(N * HW, C)`` with channel ``col``. Both are read in memory order.
Running statistics are not touched here: :mod:`normlib.nn.functional` updates them from the
returned ``mean``/``var``.
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
    chan_reduce,
    check_device,
    num_warps_for,
    pow2,
    stats_dtype,
    target_programs,
    tile_stats,
)


@triton.jit
def _batch_norm_fwd_kernel(
    X,  # pointer to the input x: (N, C, HW) contiguous, or (N * HW, C) if CHANNELS_LAST
    Y,  # pointer to the output y, same layout and dtype as x; written only if FUSED
    W,  # pointer to the weight w, (C,); read only if FUSED and HAS_WEIGHT
    B,  # pointer to the bias b, (C,); read only if FUSED and HAS_BIAS
    MEAN,  # pointer to the batch mean, (C,) float32; written only if FUSED
    VAR,  # pointer to the biased batch variance, (C,) float32; written only if FUSED
    PART_N,  # pointer to the partial counts, (S, C); written unless FUSED
    PART_MEAN,  # pointer to the partial means, (S, C); written unless FUSED
    PART_M2,  # pointer to the partial sums of squared deviations, (S, C); written unless FUSED
    SHIFT,  # pointer to the shift K of every channel (its first value), stride SHIFT_STRIDE
    SHIFT_STRIDE,  # HW in NCHW (x[0, c, 0]), 1 in channels_last (row 0)
    N,  # samples
    C,  # channels
    HW,  # positions per channel and sample
    rows_per_split,  # NCHW: samples per split; channels_last: (sample, position) rows per split
    eps,  # added to var before the square root
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    FUSED: tl.constexpr,  # one split: finish the statistics and normalize in this program
    BLOCK_R: tl.constexpr,  # rows per tile (samples in NCHW, (n, hw) rows in channels_last)
    BLOCK_K: tl.constexpr,  # columns per tile (positions in NCHW, channels in channels_last)
    ACC: tl.constexpr,  # accumulation dtype
):
    split = tl.program_id(1)
    # per-lane partial statistics of x - K, folded tile by tile (Chan); in channels_last a lane is
    # a channel. Every split of a channel uses the same K, so the partials merge in that frame.
    n = tl.zeros([BLOCK_K], dtype=ACC)
    mean = tl.zeros([BLOCK_K], dtype=ACC)
    m2 = tl.zeros([BLOCK_K], dtype=ACC)
    if CHANNELS_LAST:
        ch = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
        ch_mask = ch < C
        shift = tl.load(SHIFT + ch * SHIFT_STRIDE, mask=ch_mask, other=0.0).to(ACC)
        lo = split * rows_per_split
        hi = tl.minimum(N * HW, lo + rows_per_split)
        for r0 in range(lo, hi, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            mask = (r < hi)[:, None] & ch_mask[None, :]
            offs = r.to(tl.int64)[:, None] * C + ch[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            x = tl.where(mask, x - shift[None, :], 0.0)
            n_t, mean_t, m2_t = tile_stats(x, mask, 0)
            n, mean, m2 = chan_merge(n, mean, m2, n_t, mean_t, m2_t)
    else:
        c = tl.program_id(0)
        shift = tl.load(SHIFT + c * SHIFT_STRIDE).to(ACC)
        lo = split * rows_per_split
        hi = tl.minimum(N, lo + rows_per_split)
        for s0 in range(lo, hi, BLOCK_R):
            s = s0 + tl.arange(0, BLOCK_R)
            base = (s.to(tl.int64) * C + c) * HW  # start of x[s, c, :]
            for hw0 in range(0, HW, BLOCK_K):
                hw = hw0 + tl.arange(0, BLOCK_K)
                mask = (s < hi)[:, None] & (hw < HW)[None, :]
                x = tl.load(X + base[:, None] + hw[None, :], mask=mask, other=0.0).to(ACC)
                x = tl.where(mask, x - shift, 0.0)
                n_t, mean_t, m2_t = tile_stats(x, mask, 0)
                n, mean, m2 = chan_merge(n, mean, m2, n_t, mean_t, m2_t)
        n, mean, m2 = chan_reduce(n, mean, m2)  # one channel: merge the lanes
        ch = c
        ch_mask = c < C
    if FUSED:
        var = m2 / tl.maximum(n, 1.0)
        mean = shift + mean  # back from the frame of x - K
        tl.store(MEAN + ch, mean, mask=ch_mask)
        tl.store(VAR + ch, var, mask=ch_mask)
        scale = 1.0 / tl.sqrt(var + eps)  # rstd * w
        if HAS_WEIGHT:
            scale = scale * tl.load(W + ch, mask=ch_mask, other=0.0).to(ACC)
        shift = tl.zeros_like(scale)
        if HAS_BIAS:
            shift = tl.load(B + ch, mask=ch_mask, other=0.0).to(ACC)
        # pass 2 over the same elements: y = (x - mean) * scale + shift
        if CHANNELS_LAST:
            for r0 in range(lo, hi, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                mask = (r < hi)[:, None] & ch_mask[None, :]
                offs = r.to(tl.int64)[:, None] * C + ch[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                y = (x - mean[None, :]) * scale[None, :] + shift[None, :]
                tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
        else:
            for s0 in range(lo, hi, BLOCK_R):
                s = s0 + tl.arange(0, BLOCK_R)
                base = (s.to(tl.int64) * C + c) * HW
                for hw0 in range(0, HW, BLOCK_K):
                    hw = hw0 + tl.arange(0, BLOCK_K)
                    mask = (s < hi)[:, None] & (hw < HW)[None, :]
                    offs = base[:, None] + hw[None, :]
                    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                    y = (x - mean) * scale + shift
                    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    else:
        tl.store(PART_N + split * C + ch, n, mask=ch_mask)
        tl.store(PART_MEAN + split * C + ch, mean, mask=ch_mask)
        tl.store(PART_M2 + split * C + ch, m2, mask=ch_mask)


@triton.jit
def _batch_norm_merge_kernel(
    PART_N,  # pointer to the partial counts, (S, C)
    PART_MEAN,  # pointer to the partial means, (S, C)
    PART_M2,  # pointer to the partial sums of squared deviations, (S, C)
    MEAN,  # pointer to the batch mean, (C,)
    VAR,  # pointer to the biased batch variance, (C,)
    SHIFT,  # pointer to the shift K the partials were taken around, stride SHIFT_STRIDE
    SHIFT_STRIDE,  # HW in NCHW, 1 in channels_last
    S,  # number of splits
    C,  # channels
    BLOCK_S: tl.constexpr,  # >= S
    BLOCK_C: tl.constexpr,  # channels per program
):
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    splits = tl.arange(0, BLOCK_S)
    mask = (splits < S)[:, None] & (ch < C)[None, :]
    offs = splits[:, None] * C + ch[None, :]
    n = tl.load(PART_N + offs, mask=mask, other=0.0)
    mean = tl.load(PART_MEAN + offs, mask=mask, other=0.0)
    m2 = tl.load(PART_M2 + offs, mask=mask, other=0.0)
    # Chan's formula for S parts: mean = sum(n_s mean_s) / n, m2 = sum(m2_s) + sum(n_s d_s^2)
    n_all = tl.sum(n, axis=0)
    mean_all = tl.sum(n * mean, axis=0) / tl.maximum(n_all, 1.0)
    d = tl.where(mask, mean - mean_all[None, :], 0.0)
    m2_all = tl.sum(m2, axis=0) + tl.sum(n * d * d, axis=0)
    shift = tl.load(SHIFT + ch * SHIFT_STRIDE, mask=ch < C, other=0.0).to(mean_all.dtype)
    tl.store(MEAN + ch, shift + mean_all, mask=ch < C)
    tl.store(VAR + ch, m2_all / tl.maximum(n_all, 1.0), mask=ch < C)


@triton.jit
def _per_channel(PTR, ch, ch_mask, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr):
    """Load a per-channel vector for the channels of a tile, shaped to broadcast against it."""
    v = tl.load(PTR + ch, mask=ch_mask, other=0.0).to(ACC)
    if CHANNELS_LAST:
        v2 = v[None, :]  # one channel per column
    else:
        v2 = v[:, None]  # one channel per row
    return v2  # one return: Triton compiles every return of a function, constexpr branch or not


@triton.jit
def _matrix_tile(
    ROWS, COLS, C, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr
):
    """Offsets and mask of this program's tile of the 2-D view, and the tile's channel indices."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows < ROWS)[:, None] & (cols < COLS)[None, :]
    offs = rows.to(tl.int64)[:, None] * COLS + cols[None, :]
    if CHANNELS_LAST:
        ch = cols
        ch_mask = cols < COLS
    else:
        ch = rows % C
        ch_mask = rows < ROWS
    return offs, mask, ch, ch_mask


@triton.jit
def _batch_norm_eval_kernel(
    X,  # pointer to the input x as a 2-D view: (N * C, HW), or (N * HW, C) if CHANNELS_LAST
    Y,  # pointer to the output y, same view and dtype
    MEAN,  # pointer to the mean used, (C,): running mean in eval, batch mean in training
    VAR,  # pointer to the variance used, (C,)
    W,  # pointer to the weight w, (C,); read only if HAS_WEIGHT
    B,  # pointer to the bias b, (C,); read only if HAS_BIAS
    ROWS,  # rows of the 2-D view
    COLS,  # columns of the 2-D view
    C,  # channels
    eps,  # added to var before the square root
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_R: tl.constexpr,  # rows per tile
    BLOCK_K: tl.constexpr,  # columns per tile
    ACC: tl.constexpr,  # accumulation dtype
):
    offs, mask, ch, ch_mask = _matrix_tile(ROWS, COLS, C, CHANNELS_LAST, BLOCK_R, BLOCK_K)
    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
    mean = _per_channel(MEAN, ch, ch_mask, CHANNELS_LAST, ACC)
    scale = 1.0 / tl.sqrt(_per_channel(VAR, ch, ch_mask, CHANNELS_LAST, ACC) + eps)
    if HAS_WEIGHT:
        scale = scale * _per_channel(W, ch, ch_mask, CHANNELS_LAST, ACC)
    y = (x - mean) * scale  # x - mean first: exact near the mean, unlike x*scale - mean*scale
    if HAS_BIAS:
        y = y + _per_channel(B, ch, ch_mask, CHANNELS_LAST, ACC)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _batch_norm_bwd_kernel(
    X,  # pointer to the input x: (N, C, HW) contiguous, or (N * HW, C) if CHANNELS_LAST
    DY,  # pointer to the output gradient dy, same layout
    DX,  # pointer to the input gradient dx, same layout; written only if FUSED
    W,  # pointer to the weight w, (C,); read only if FUSED and HAS_WEIGHT
    MEAN,  # pointer to the mean the forward used, (C,)
    VAR,  # pointer to the variance the forward used, (C,)
    SUM_DY,  # pointer to sum dy: (C,) if FUSED, else partial sums (S, C)
    SUM_DY_XHAT,  # pointer to sum dy * x_hat: (C,) if FUSED, else partial sums (S, C)
    N,  # samples
    C,  # channels
    HW,  # positions per channel and sample
    rows_per_split,  # NCHW: samples per split; channels_last: rows per split
    eps,  # added to var before the square root
    HAS_WEIGHT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    FUSED: tl.constexpr,  # one split: finish the sums and compute dx in this program
    BLOCK_R: tl.constexpr,  # rows per tile
    BLOCK_K: tl.constexpr,  # columns per tile
    ACC: tl.constexpr,  # accumulation dtype
):
    split = tl.program_id(1)
    sum_dy = tl.zeros([BLOCK_K], dtype=ACC)
    sum_dy_xhat = tl.zeros([BLOCK_K], dtype=ACC)
    if CHANNELS_LAST:
        ch = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
        ch_mask = ch < C
        mean = tl.load(MEAN + ch, mask=ch_mask, other=0.0).to(ACC)
        rstd = 1.0 / tl.sqrt(tl.load(VAR + ch, mask=ch_mask, other=0.0).to(ACC) + eps)
        lo = split * rows_per_split
        hi = tl.minimum(N * HW, lo + rows_per_split)
        for r0 in range(lo, hi, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            mask = (r < hi)[:, None] & ch_mask[None, :]
            offs = r.to(tl.int64)[:, None] * C + ch[None, :]
            x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
            x_hat = (x - mean[None, :]) * rstd[None, :]
            sum_dy += tl.sum(dy, axis=0)
            sum_dy_xhat += tl.sum(dy * x_hat, axis=0)
    else:
        c = tl.program_id(0)
        mean = tl.load(MEAN + c).to(ACC)
        rstd = 1.0 / tl.sqrt(tl.load(VAR + c).to(ACC) + eps)
        lo = split * rows_per_split
        hi = tl.minimum(N, lo + rows_per_split)
        for s0 in range(lo, hi, BLOCK_R):
            s = s0 + tl.arange(0, BLOCK_R)
            base = (s.to(tl.int64) * C + c) * HW
            for hw0 in range(0, HW, BLOCK_K):
                hw = hw0 + tl.arange(0, BLOCK_K)
                mask = (s < hi)[:, None] & (hw < HW)[None, :]
                offs = base[:, None] + hw[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
                sum_dy += tl.sum(dy, axis=0)
                sum_dy_xhat += tl.sum(dy * (x - mean) * rstd, axis=0)
        sum_dy = tl.sum(sum_dy, axis=0)  # one channel: add up the lanes
        sum_dy_xhat = tl.sum(sum_dy_xhat, axis=0)
        ch = c
        ch_mask = c < C
    if FUSED:
        tl.store(SUM_DY + ch, sum_dy, mask=ch_mask)
        tl.store(SUM_DY_XHAT + ch, sum_dy_xhat, mask=ch_mask)
        count = N * HW
        k_dy = sum_dy / count  # the mean of dy: its path through the batch mean
        k_xhat = sum_dy_xhat / count  # the mean of dy * x_hat: its path through the batch variance
        scale = rstd
        if HAS_WEIGHT:
            scale = scale * tl.load(W + ch, mask=ch_mask, other=0.0).to(ACC)
        # pass 2 over the same elements: dx = w * rstd * (dy - k_dy - x_hat * k_xhat)
        if CHANNELS_LAST:
            for r0 in range(lo, hi, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                mask = (r < hi)[:, None] & ch_mask[None, :]
                offs = r.to(tl.int64)[:, None] * C + ch[None, :]
                x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
                x_hat = (x - mean[None, :]) * rstd[None, :]
                dx = (dy - k_dy[None, :] - x_hat * k_xhat[None, :]) * scale[None, :]
                tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        else:
            for s0 in range(lo, hi, BLOCK_R):
                s = s0 + tl.arange(0, BLOCK_R)
                base = (s.to(tl.int64) * C + c) * HW
                for hw0 in range(0, HW, BLOCK_K):
                    hw = hw0 + tl.arange(0, BLOCK_K)
                    mask = (s < hi)[:, None] & (hw < HW)[None, :]
                    offs = base[:, None] + hw[None, :]
                    x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
                    dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
                    dx = (dy - k_dy - (x - mean) * rstd * k_xhat) * scale
                    tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
    else:
        tl.store(SUM_DY + split * C + ch, sum_dy, mask=ch_mask)
        tl.store(SUM_DY_XHAT + split * C + ch, sum_dy_xhat, mask=ch_mask)


@triton.jit
def _batch_norm_bwd_dx_kernel(
    X,  # pointer to the input x as a 2-D view: (N * C, HW), or (N * HW, C) if CHANNELS_LAST
    DY,  # pointer to the output gradient dy, same view
    DX,  # pointer to the input gradient dx, same view
    MEAN,  # pointer to the mean the forward used, (C,)
    VAR,  # pointer to the variance the forward used, (C,)
    W,  # pointer to the weight w, (C,); read only if HAS_WEIGHT
    SUM_DY,  # pointer to sum dy per channel, (C,); read only if TRAINING
    SUM_DY_XHAT,  # pointer to sum dy * x_hat per channel, (C,); read only if TRAINING
    ROWS,  # rows of the 2-D view
    COLS,  # columns of the 2-D view
    C,  # channels
    count,  # values per channel, N * HW
    eps,  # added to var before the square root
    HAS_WEIGHT: tl.constexpr,
    TRAINING: tl.constexpr,  # batch statistics (depend on x) or running statistics (constants)
    CHANNELS_LAST: tl.constexpr,
    BLOCK_R: tl.constexpr,  # rows per tile
    BLOCK_K: tl.constexpr,  # columns per tile
    ACC: tl.constexpr,  # accumulation dtype
):
    offs, mask, ch, ch_mask = _matrix_tile(ROWS, COLS, C, CHANNELS_LAST, BLOCK_R, BLOCK_K)
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(ACC)
    rstd = 1.0 / tl.sqrt(_per_channel(VAR, ch, ch_mask, CHANNELS_LAST, ACC) + eps)
    scale = rstd
    if HAS_WEIGHT:
        scale = scale * _per_channel(W, ch, ch_mask, CHANNELS_LAST, ACC)
    if TRAINING:
        x = tl.load(X + offs, mask=mask, other=0.0).to(ACC)
        x_hat = (x - _per_channel(MEAN, ch, ch_mask, CHANNELS_LAST, ACC)) * rstd
        k_dy = _per_channel(SUM_DY, ch, ch_mask, CHANNELS_LAST, ACC) / count
        k_xhat = _per_channel(SUM_DY_XHAT, ch, ch_mask, CHANNELS_LAST, ACC) / count
        dx = (dy - k_dy - x_hat * k_xhat) * scale
    else:
        dx = dy * scale
    tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# launchers


def _channels_last(x: torch.Tensor) -> bool:
    """Is ``x`` (N, C, *spatial) stored channels last: ``x.movedim(1, -1)`` is contiguous."""
    return x.dim() > 2 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


def _layout(x: torch.Tensor):
    """``(data, channels_last, N, C, HW)``: ``x``'s values in the layout the kernels read.

    ``data`` is ``(N, C, HW)`` contiguous (NCHW) or ``(N * HW, C)`` contiguous (channels_last).
    ``(N, C)`` inputs and ``HW = 1`` are already "channels last": a contiguous ``(N, C)`` matrix.
    """
    N, C = x.shape[:2]
    HW = math.prod(x.shape[2:])
    if HW == 1 or _channels_last(x):
        return x.movedim(1, -1).contiguous().view(N * HW, C), True, N, C, HW
    return x.contiguous().view(N, C, HW), False, N, C, HW


def _like_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` (shape of x) in the layout :func:`_layout` chose for ``x``."""
    N, C = t.shape[:2]
    HW = math.prod(t.shape[2:])
    if channels_last:
        return t.movedim(1, -1).contiguous().view(N * HW, C)
    return t.contiguous().view(N, C, HW)


def _output(data: torch.Tensor, shape, channels_last: bool) -> torch.Tensor:
    """The kernels' output ``data`` viewed back as ``shape``, keeping its memory format."""
    if channels_last:
        N, C = shape[:2]
        return data.view(N, *shape[2:], C).movedim(-1, 1)
    return data.view(shape)


def _matrix(data, channels_last, N, C, HW):
    """``(ROWS, COLS)`` of the 2-D view the elementwise kernels use."""
    return (N * HW, C) if channels_last else (N * C, HW)


def _elementwise_config(rows: int, cols: int):
    block_k = min(pow2(cols), LIMITS.tile)
    block_r = max(1, min(pow2(rows), LIMITS.tile // block_k))
    grid = (triton.cdiv(rows, block_r), triton.cdiv(cols, block_k))
    return grid, block_r, block_k, num_warps_for(block_r * block_k)


def _split_config(channels_last: bool, N: int, C: int, HW: int, device):
    """``(grid, rows_per_split, BLOCK_R, BLOCK_K, num_warps)`` of the split reduction.

    Programs are (channel block, split). Channels give ``C`` (or ``C / BLOCK_K``) of them; the
    rest of the target program count comes from splitting each channel's rows.
    """
    target = target_programs(device)
    if channels_last:
        block_k = min(pow2(C), 64)  # 64 channels: 256 contiguous bytes of a float32 row
        rows = N * HW
        channel_programs = triton.cdiv(C, block_k)
    else:
        block_k = min(pow2(HW), LIMITS.tile)
        rows = N
        channel_programs = C
    block_r = max(1, min(pow2(rows), LIMITS.tile // block_k))
    splits = max(1, min(round(target / channel_programs), triton.cdiv(rows, block_r)))
    rows_per_split = triton.cdiv(rows, splits)
    splits = triton.cdiv(rows, rows_per_split)
    grid = (channel_programs, splits)
    return grid, rows_per_split, block_r, block_k, num_warps_for(block_r * block_k)


def batch_norm_forward(x, weight=None, bias=None, eps=1e-5):
    """Training-mode BatchNorm: ``(y, mean, var)`` with the batch's per-channel ``mean`` and biased
    ``var``, ``(C,)`` float32 (float64 for float64 ``x``); ``y`` like ``x``, same memory format."""
    check_device(x)
    data, cl, N, C, HW = _layout(x)
    y = torch.empty_like(data)
    mean = torch.empty(C, dtype=stats_dtype(x.dtype), device=x.device)
    var = torch.empty_like(mean)
    if data.numel() == 0:
        mean.fill_(float("nan"))
        var.fill_(float("nan"))
        return _output(y, x.shape, cl), mean, var
    acc = acc_dtype(x.dtype)
    grid, rows_per_split, block_r, block_k, warps = _split_config(cl, N, C, HW, x.device)
    fused = grid[1] == 1
    parts = [torch.empty((grid[1], C), dtype=mean.dtype, device=x.device) for _ in range(3)]
    shift_stride = 1 if cl else HW  # K_c = x[0, c, 0]: the first value of channel c
    _batch_norm_fwd_kernel[grid](
        data, y, _or(weight, mean), _or(bias, mean), mean, var, *parts, data, shift_stride,
        N, C, HW, rows_per_split, eps,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, CHANNELS_LAST=cl, FUSED=fused,
        BLOCK_R=block_r, BLOCK_K=block_k, ACC=acc, num_warps=warps,
    )  # fmt: skip
    if not fused:
        block_c = min(pow2(C), max(1, 4096 // pow2(grid[1])))
        block_s = pow2(grid[1])
        _batch_norm_merge_kernel[(triton.cdiv(C, block_c),)](
            *parts, mean, var, data, shift_stride, grid[1], C,
            BLOCK_S=block_s, BLOCK_C=block_c, num_warps=num_warps_for(block_s * block_c),
        )  # fmt: skip
        _apply(data, y, mean, var, weight, bias, eps, cl, N, C, HW)
    return _output(y, x.shape, cl), mean, var


def _apply(data, y, mean, var, weight, bias, eps, cl, N, C, HW):
    """``y = (x - mean) / sqrt(var + eps) * w + b`` elementwise (``y`` in ``data``'s layout)."""
    rows, cols = _matrix(data, cl, N, C, HW)
    grid, block_r, block_k, warps = _elementwise_config(rows, cols)
    _batch_norm_eval_kernel[grid](
        data, y, mean, var, _or(weight, mean), _or(bias, mean), rows, cols, C, eps,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, CHANNELS_LAST=cl,
        BLOCK_R=block_r, BLOCK_K=block_k, ACC=acc_dtype(data.dtype), num_warps=warps,
    )  # fmt: skip


def batch_norm_backward(dy, x, weight, mean, var, eps=1e-5):
    """``(dx, dw, db)`` for :func:`batch_norm_forward` (training mode: gradients flow through the
    batch statistics). ``dw``/``db`` are ``(C,)`` float32 (float64 for float64 ``x``); ``dw`` is
    None without a weight."""
    data, cl, N, C, HW = _layout(x)
    dy_data = _like_layout(dy, cl)
    dx = torch.empty_like(data)
    sum_dy = torch.zeros(C, dtype=stats_dtype(x.dtype), device=x.device)
    sum_dy_xhat = torch.zeros_like(sum_dy)
    if data.numel() > 0:
        acc = acc_dtype(x.dtype)
        grid, rows_per_split, block_r, block_k, warps = _split_config(cl, N, C, HW, x.device)
        fused = grid[1] == 1
        if fused:  # sums and dx in one kernel
            _batch_norm_bwd_kernel[grid](
                data, dy_data, dx, _or(weight, mean), mean, var, sum_dy, sum_dy_xhat,
                N, C, HW, rows_per_split, eps,
                HAS_WEIGHT=weight is not None, CHANNELS_LAST=cl, FUSED=True,
                BLOCK_R=block_r, BLOCK_K=block_k, ACC=acc, num_warps=warps,
            )  # fmt: skip
        else:
            sum_dy, sum_dy_xhat = _grad_sums(data, dy_data, mean, var, eps, cl, N, C, HW)
            rows, cols = _matrix(data, cl, N, C, HW)
            egrid, eblock_r, eblock_k, ewarps = _elementwise_config(rows, cols)
            _batch_norm_bwd_dx_kernel[egrid](
                data, dy_data, dx, mean, var, _or(weight, mean), sum_dy, sum_dy_xhat,
                rows, cols, C, N * HW, eps,
                HAS_WEIGHT=weight is not None, TRAINING=True, CHANNELS_LAST=cl,
                BLOCK_R=eblock_r, BLOCK_K=eblock_k, ACC=acc, num_warps=ewarps,
            )  # fmt: skip
    dw = sum_dy_xhat if weight is not None else None
    return _output(dx, x.shape, cl), dw, sum_dy


def _grad_sums(data, dy_data, mean, var, eps, cl, N, C, HW):
    """Per-channel ``sum dy`` and ``sum dy * x_hat``: a split reduction, then a sum of partials."""
    grid, rows_per_split, block_r, block_k, warps = _split_config(cl, N, C, HW, data.device)
    part_dy = torch.empty((grid[1], C), dtype=stats_dtype(data.dtype), device=data.device)
    part_dy_xhat = torch.empty_like(part_dy)
    _batch_norm_bwd_kernel[grid](
        data, dy_data, data, mean, mean, var, part_dy, part_dy_xhat,
        N, C, HW, rows_per_split, eps,
        HAS_WEIGHT=False, CHANNELS_LAST=cl, FUSED=False,
        BLOCK_R=block_r, BLOCK_K=block_k, ACC=acc_dtype(data.dtype), num_warps=warps,
    )  # fmt: skip
    return part_dy.sum(0), part_dy_xhat.sum(0)


def batch_norm_eval_forward(x, mean, var, weight=None, bias=None, eps=1e-5):
    """Eval-mode BatchNorm with given (running) statistics: ``y = (x - mean) / sqrt(var + eps) * w
    + b``, like ``x`` and in its memory format."""
    check_device(x)
    data, cl, N, C, HW = _layout(x)
    y = torch.empty_like(data)
    if data.numel() > 0:
        _apply(data, y, mean.contiguous(), var.contiguous(), weight, bias, eps, cl, N, C, HW)
    return _output(y, x.shape, cl)


def batch_norm_eval_backward(dy, x, mean, var, weight, eps=1e-5, *, need_dw=True, need_db=True):
    """``(dx, dw, db)`` for :func:`batch_norm_eval_forward`: ``dx = dy * w / sqrt(var + eps)``;
    ``dw``/``db`` ``(C,)`` float32 (float64 for float64 ``x``) or None where not asked for."""
    data, cl, N, C, HW = _layout(x)
    dy_data = _like_layout(dy, cl)
    mean, var = mean.contiguous(), var.contiguous()
    dx = torch.empty_like(dy_data)
    need_dw = need_dw and weight is not None
    sum_dy = sum_dy_xhat = torch.zeros(C, dtype=stats_dtype(x.dtype), device=x.device)
    if data.numel() > 0:
        rows, cols = _matrix(data, cl, N, C, HW)
        grid, block_r, block_k, warps = _elementwise_config(rows, cols)
        _batch_norm_bwd_dx_kernel[grid](
            data, dy_data, dx, mean, var, _or(weight, var), var, var, rows, cols, C, N * HW, eps,
            HAS_WEIGHT=weight is not None, TRAINING=False, CHANNELS_LAST=cl,
            BLOCK_R=block_r, BLOCK_K=block_k, ACC=acc_dtype(x.dtype), num_warps=warps,
        )  # fmt: skip
        if need_dw or need_db:
            sum_dy, sum_dy_xhat = _grad_sums(data, dy_data, mean, var, eps, cl, N, C, HW)
    dw = sum_dy_xhat if need_dw else None
    db = sum_dy if need_db else None
    return _output(dx, x.shape, cl), dw, db


def _or(t, fallback):
    """A tensor to pass for an absent optional pointer (the kernel never reads it)."""
    return fallback if t is None else t.contiguous()


class BatchNormFunction(torch.autograd.Function):
    """Training-mode BatchNorm: ``(y, mean, var)``; gradients flow to ``x``, ``weight``, ``bias``
    (``mean``/``var`` are returned detached, for the running-statistics update)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, var = batch_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps = eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable  # the kernels' backward is not itself differentiable
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, mean, var = ctx.saved_tensors
        dx, dw, db = batch_norm_backward(dy, x, weight, mean, var, ctx.eps)
        dw = dw.to(weight.dtype) if dw is not None and ctx.needs_input_grad[1] else None
        keep_db = ctx.bias_dtype is not None and ctx.needs_input_grad[2]
        db = db.to(ctx.bias_dtype) if keep_db else None
        return dx, dw, db, None


class BatchNormEvalFunction(torch.autograd.Function):
    """Eval-mode BatchNorm with fixed statistics; gradients flow to ``x``, ``weight``, ``bias``."""

    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, eps):
        y = batch_norm_eval_forward(x, mean, var, weight, bias, eps)
        ctx.save_for_backward(x, mean, var, weight)
        ctx.eps = eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    @once_differentiable  # the kernels' backward is not itself differentiable
    def backward(ctx, dy):
        x, mean, var, weight = ctx.saved_tensors
        dx, dw, db = batch_norm_eval_backward(
            dy, x, mean, var, weight, ctx.eps,
            need_dw=ctx.needs_input_grad[3],
            need_db=ctx.bias_dtype is not None and ctx.needs_input_grad[4],
        )  # fmt: skip
        dw = None if dw is None else dw.to(weight.dtype)
        db = None if db is None else db.to(ctx.bias_dtype)
        return dx, None, None, dw, db, None


def batch_norm_train(x, weight=None, bias=None, eps=1e-5):
    """``(y, mean, var)``: training-mode BatchNorm with batch statistics (backend contract op)."""
    return BatchNormFunction.apply(x, weight, bias, eps)


def batch_norm_eval(x, mean, var, weight=None, bias=None, eps=1e-5):
    """``y``: eval-mode BatchNorm with the given statistics (backend contract op)."""
    return BatchNormEvalFunction.apply(x, mean, var, weight, bias, eps)
