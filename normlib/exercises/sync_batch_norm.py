"""Auto-checks for the exercises of the chapter "Batch statistics across devices"
(book/11_sync_batch_norm.ipynb)."""

from __future__ import annotations

import numpy as np

from ..ref import batch_norm_backward, batch_norm_forward
from ._check import Case, Result, check_value, run_cases


def _per_rank(shards):
    """``(counts, means, variances)`` (biased) of each rank's shard of shape ``(n_r, C)``."""
    counts = np.array([len(s) for s in shards], dtype=np.float64)
    means = np.array([s.mean(0) if len(s) else np.zeros(s.shape[1]) for s in shards])
    variances = np.array([s.var(0) if len(s) else np.zeros(s.shape[1]) for s in shards])
    return counts, means, variances


def _global_case(name, shards, hint):
    everything = np.concatenate(shards)
    return Case(
        name, _per_rank(shards), expected=(everything.mean(0), everything.var(0)), hint=hint
    )


def check_global_stats(fn) -> Result:
    """``fn(counts, means, variances) -> (mean, var)``: the global per-channel mean and biased
    variance from each rank's count ``(W,)``, mean ``(W, C)`` and biased variance ``(W, C)``."""
    rng = np.random.default_rng(11)
    shifted = [rng.normal(m, 1.0, size=(n, 3)) for m, n in [(0.0, 6), (4.0, 6)]]
    uneven = [
        rng.normal(m, s, size=(n, 2)) for m, s, n in [(1.0, 1.0, 2), (2.0, 3.0, 9), (0, 1, 5)]
    ]
    empty = [rng.normal(0.0, 1.0, size=(4, 2)), np.zeros((0, 2)), rng.normal(1.0, 2.0, size=(3, 2))]
    cases = [
        _global_case(
            "equal sizes, different means",
            shifted,
            "the global variance is NOT the average of the variances: add each rank's "
            "between-rank term n_r * (mean_r - mean)^2 before dividing by n.",
        ),
        _global_case(
            "uneven sizes",
            uneven,
            "weight each rank by its count: mean = sum(n_r * mean_r) / n, and the same weights "
            "for the within-rank part n_r * var_r.",
        ),
        _global_case(
            "a rank with no samples",
            empty,
            "a rank with count 0 has mean 0 and variance 0 by convention: it must add nothing "
            "(multiply by n_r, never divide by it).",
        ),
    ]
    return run_cases(fn, cases, what="global_stats", rtol=1e-9, atol=1e-12)


def _dx_case(name, sizes, rank, gamma, hint, seed):
    rng = np.random.default_rng(seed)
    channels = len(gamma)
    x = rng.normal(2.0, 1.5, size=(sum(sizes), channels))
    dy = rng.normal(size=x.shape)
    y, cache = batch_norm_forward(x, gamma, np.zeros(channels))
    dx, _, _ = batch_norm_backward(dy, cache)
    start = sum(sizes[:rank])
    local = slice(start, start + sizes[rank])
    x_hat = cache["x_hat"]
    args = (
        dy[local],
        x_hat[local],
        np.asarray(gamma, dtype=np.float64),
        cache["rstd"].reshape(-1),
        dy.sum(0),  # what the all_reduce returns: sums over EVERY rank's samples
        (dy * x_hat).sum(0),
        sum(sizes),
    )
    return Case(name, args, expected=dx[local], hint=hint)


def check_shard_dx(fn) -> Result:
    """``fn(dy, x_hat, gamma, rstd, sum_dy, sum_dy_xhat, count) -> dx`` for ONE rank's shard
    ``(n_r, C)``, given the all-reduced sums ``(C,)`` and the global count."""
    cases = [
        _dx_case(
            "2 ranks, rank 0",
            [4, 4],
            0,
            [1.0, 1.0, 1.0],
            "dx = gamma * rstd * (dy - sum_dy / n - x_hat * sum_dy_xhat / n), with n the GLOBAL "
            "count and the sums over all ranks (the arguments), not this shard's.",
            0,
        ),
        _dx_case(
            "uneven, rank 1, gamma != 1",
            [2, 7, 3],
            1,
            [0.5, 2.0],
            "multiply by gamma (per channel) as well as by rstd.",
            1,
        ),
        _dx_case(
            "one sample on this rank",
            [1, 6],
            0,
            [1.5, 1.0, 0.25],
            "the shard's own size does not appear in the formula: divide by the global count.",
            2,
        ),
    ]
    return run_cases(fn, cases, what="shard_dx", rtol=1e-9, atol=1e-12)


# ResNet-50's BatchNorm layers (He et al., 2016): the stem, then per stage
# blocks x (width, width, 4 * width) plus one downsample BN of 4 * width.
RESNET50_BN_CHANNELS = [64] + [
    c
    for blocks, width in [(3, 64), (4, 128), (6, 256), (3, 512)]
    for c in [width, width, 4 * width] * blocks + [4 * width]
]


def allgather_bytes_received(channels, world_size: int, bytes_per_number: int = 8) -> int:
    """Bytes one rank receives in the forward all_gathers of normlib's SyncBatchNorm: every other
    rank's packet ``[count, mean (C), M2 (C)]`` for each layer."""
    return sum((world_size - 1) * (2 * c + 1) * bytes_per_number for c in channels)


def check_resnet50_bytes(answer) -> Result:
    """Bytes one of 8 ranks receives in ONE forward pass of ResNet-50 with SyncBatchNorm."""
    return check_value(
        answer,
        allgather_bytes_received(RESNET50_BN_CHANNELS, 8),
        what="ResNet-50 all_gather bytes",
        rtol=1e-9,
        atol=0.5,
        hint="per layer each of the other 7 ranks sends 2C + 1 float64 numbers (8 bytes): "
        "8 * 7 * (2 * sum(C) + number of layers).",
    )
