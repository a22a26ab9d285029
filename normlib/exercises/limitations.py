"""Auto-checks for the exercises of the chapter "Limitations" (book/06_limitations.ipynb).

Every expected answer comes from a reference function here, never typed in; a wrong answer that
matches a known mistake gets that mistake's hint.
"""

from __future__ import annotations

import numpy as np

from ._check import Case, Result
from .benefits import diagnose

__all__ = [
    "batch_var_std",
    "check_batch_var_std",
    "check_ghost_batch_norm",
    "check_masked_mean_var",
    "check_renorm_r_d",
    "ghost_batch_norm",
    "masked_mean_var",
    "renorm_r_d",
]


# -------------------------------------------------------------------------------------------------
# Exercise: how noisy is the batch variance?


def batch_var_std(var, batch_size) -> float:
    """Standard deviation of the biased batch variance of ``batch_size`` i.i.d. Gaussian values of
    variance ``var``: ``var * sqrt(2 (B - 1)) / B``."""
    b = batch_size
    return float(var * np.sqrt(2.0 * (b - 1)) / b)


def _var_std_unbiased(var, batch_size):
    return float(var * np.sqrt(2.0 / (batch_size - 1)))


def _var_std_squared(var, batch_size):
    return batch_var_std(var, batch_size) ** 2


def _var_std_of_mean(var, batch_size):
    return float(np.sqrt(var / batch_size))


def check_batch_var_std(fn) -> Result:
    """Check ``fn(var, batch_size) -> float`` (see :func:`batch_var_std`)."""
    cases = [
        Case("var 1, B = 2", (1.0, 2), hint="for B = 2: sqrt(2) / 2."),
        Case("var 1, B = 32", (1.0, 32), hint="std of the biased variance: var sqrt(2 (B-1)) / B."),
        Case(
            "var 4, B = 8", (4.0, 8), hint="the answer scales with var (not with its square root)."
        ),
        Case("var 0.5, B = 1000", (0.5, 1000), hint="for large B it is about var sqrt(2 / B)."),
    ]
    for case in cases:
        case.expected = batch_var_std(*case.args)
    mistakes = [
        (
            _var_std_unbiased,
            "that is for the unbiased variance (divide by B - 1); BatchNorm "
            "normalizes with the biased one (divide by B).",
        ),
        (_var_std_squared, "that is the variance of the batch variance; take its square root."),
        (_var_std_of_mean, "that is the standard deviation of the batch *mean*, sigma / sqrt(B)."),
    ]
    return diagnose(fn, cases, what="batch_var_std", mistakes=mistakes, rtol=1e-6)


# -------------------------------------------------------------------------------------------------
# Exercise: masked statistics of a padded batch


def masked_mean_var(x, mask):
    """Per-channel mean and biased variance of ``x`` ``(N, C, L)`` over the positions where
    ``mask`` ``(N, L)`` is True; returns ``(mean, var)``, each ``(C,)``."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)[:, None, :]  # (N, 1, L)
    count = m.sum()
    mean = np.where(m, x, 0.0).sum(axis=(0, 2)) / count
    var = np.where(m, (x - mean[None, :, None]) ** 2, 0.0).sum(axis=(0, 2)) / count
    return mean, var


def _mv_with_padding(x, mask):
    return x.mean(axis=(0, 2)), x.var(axis=(0, 2))


def _mv_unbiased(x, mask):
    mean, var = masked_mean_var(x, mask)
    count = np.asarray(mask).sum()
    return mean, var * count / (count - 1)


def _mv_mean_of_means(x, mask):
    m = np.asarray(mask, dtype=bool)[:, None, :]
    per_seq = np.where(m, x, 0.0).sum(axis=2) / m.sum(axis=2)  # (N, C)
    mean = per_seq.mean(axis=0)
    return mean, masked_mean_var(x, mask)[1]


def check_masked_mean_var(fn) -> Result:
    """Check ``fn(x, mask) -> (mean, var)`` (see :func:`masked_mean_var`)."""
    rng = np.random.default_rng(6)

    def padded(lengths, c, length, pad=0.0, loc=2.0):
        x = rng.normal(loc, 1.5, size=(len(lengths), c, length))
        mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
        x[~np.broadcast_to(mask[:, None, :], x.shape)] = pad
        return x, mask

    cases = [
        Case(
            "no padding", padded([5, 5, 5], 2, 5), hint="with a full mask: the mean over N and L."
        ),
        Case(
            "zero padding, lengths 6, 2, 4",
            padded([6, 2, 4], 3, 6),
            hint="average over the valid positions only (the mask's True entries).",
        ),
        Case(
            "padding value 99",
            padded([3, 1, 5, 2], 2, 5, pad=99.0),
            hint="the pad value must not enter either statistic.",
        ),
        Case(
            "one channel, lengths 7 and 3",
            padded([7, 3], 1, 7, loc=-1.0),
            hint="every valid position weighs the same, whatever its sequence's length.",
        ),
    ]
    for case in cases:
        case.expected = masked_mean_var(*case.args)
    mistakes = [
        (
            _mv_with_padding,
            "these statistics include the padding: use only positions where the mask is True.",
        ),
        (
            _mv_unbiased,
            "BatchNorm normalizes with the biased variance: divide by the number of valid "
            "positions, not that number minus one.",
        ),
        (
            _mv_mean_of_means,
            "you averaged per-sequence means: long sequences must weigh more. Sum "
            "over all valid positions, then divide by their count.",
        ),
    ]
    return diagnose(fn, cases, what="masked_mean_var", mistakes=mistakes, rtol=1e-6, atol=1e-9)


# -------------------------------------------------------------------------------------------------
# Exercise: Batch Renorm's r and d


def renorm_r_d(mean_b, std_b, running_mean, running_std, r_max, d_max):
    """Batch Renorm's correction (Ioffe, 2017), per channel:

    r = clip(std_b / running_std, 1 / r_max, r_max)
    d = clip((mean_b - running_mean) / running_std, -d_max, d_max)
    """
    mean_b, std_b, mu, sigma = (
        np.asarray(a, dtype=np.float64) for a in (mean_b, std_b, running_mean, running_std)
    )
    r = np.clip(std_b / sigma, 1.0 / r_max, r_max)
    d = np.clip((mean_b - mu) / sigma, -d_max, d_max)
    return r, d


def _rd_no_clip(mean_b, std_b, running_mean, running_std, r_max, d_max):
    return renorm_r_d(mean_b, std_b, running_mean, running_std, np.inf, np.inf)


def _rd_inverted(mean_b, std_b, running_mean, running_std, r_max, d_max):
    r, d = renorm_r_d(mean_b, std_b, running_mean, running_std, r_max, d_max)
    return np.clip(np.asarray(running_std) / np.asarray(std_b), 1 / r_max, r_max), d


def _rd_d_over_batch_std(mean_b, std_b, running_mean, running_std, r_max, d_max):
    r, _ = renorm_r_d(mean_b, std_b, running_mean, running_std, r_max, d_max)
    d = (np.asarray(mean_b) - np.asarray(running_mean)) / np.asarray(std_b)
    return r, np.clip(d, -d_max, d_max)


def _rd_sign(mean_b, std_b, running_mean, running_std, r_max, d_max):
    r, d = renorm_r_d(mean_b, std_b, running_mean, running_std, r_max, d_max)
    return r, -d


def check_renorm_r_d(fn) -> Result:
    """Check ``fn(mean_b, std_b, running_mean, running_std, r_max, d_max) -> (r, d)``."""
    rng = np.random.default_rng(7)
    mu, sigma = rng.normal(size=6), rng.uniform(0.5, 2.0, size=6)
    cases = [
        Case(
            "inside the bounds",
            (mu + 0.1, sigma * 1.2, mu, sigma, 3.0, 5.0),
            hint="r = std_b / running_std and d = (mean_b - running_mean) / running_std.",
        ),
        Case(
            "r_max = 1, d_max = 0 (BatchNorm)",
            (mu + 1.0, sigma * 2.0, mu, sigma, 1.0, 0.0),
            hint="with r_max = 1 and d_max = 0 the correction must vanish: r = 1, d = 0.",
        ),
        Case(
            "clipped on both sides",
            (
                mu + np.array([9, -9, 0, 1, -1, 0.2]) * sigma,
                sigma * np.array([10, 0.1, 1, 4, 0.25, 1.5]),
                mu,
                sigma,
                2.0,
                0.5,
            ),
            hint="clip r to [1 / r_max, r_max] and d to [-d_max, d_max].",
        ),
    ]
    for case in cases:
        case.expected = renorm_r_d(*case.args)
    mistakes = [
        (_rd_no_clip, "r and d are not clipped: r to [1 / r_max, r_max], d to [-d_max, d_max]."),
        (_rd_inverted, "r is upside down: r = std_b / running_std (the batch's std on top)."),
        (
            _rd_d_over_batch_std,
            "d divides by the *running* std: d = (mean_b - running_mean) / running_std.",
        ),
        (_rd_sign, "d has the wrong sign: d = (mean_b - running_mean) / running_std."),
    ]
    return diagnose(fn, cases, what="renorm_r_d", mistakes=mistakes, rtol=1e-6, atol=1e-9)


# -------------------------------------------------------------------------------------------------
# Exercise: Ghost BatchNorm's forward pass


def ghost_batch_norm(x, virtual_batch_size, eps=1e-5):
    """Ghost BatchNorm (training mode, no affine) of ``x`` ``(N, C, *spatial)``: consecutive
    ghost batches of ``virtual_batch_size`` samples along axis 0 (the last holds the rest), each
    normalized with its own per-channel mean and biased variance."""
    x = np.asarray(x, dtype=np.float64)
    out = []
    for start in range(0, x.shape[0], virtual_batch_size):
        g = x[start : start + virtual_batch_size]
        axes = (0, *range(2, x.ndim))
        mean, var = g.mean(axis=axes, keepdims=True), g.var(axis=axes, keepdims=True)
        out.append((g - mean) / np.sqrt(var + eps))
    return np.concatenate(out, axis=0)


def _gbn_whole_batch(x, virtual_batch_size, eps=1e-5):
    return ghost_batch_norm(x, x.shape[0], eps)


def _gbn_unbiased(x, virtual_batch_size, eps=1e-5):
    out = []
    for start in range(0, x.shape[0], virtual_batch_size):
        g = x[start : start + virtual_batch_size]
        axes = (0, *range(2, x.ndim))
        mean, var = g.mean(axis=axes, keepdims=True), g.var(axis=axes, keepdims=True, ddof=1)
        out.append((g - mean) / np.sqrt(var + eps))
    return np.concatenate(out, axis=0)


def _gbn_interleaved(x, virtual_batch_size, eps=1e-5):
    k = -(-x.shape[0] // virtual_batch_size)  # sample i goes to ghost batch i % k
    y = np.empty_like(np.asarray(x, dtype=np.float64))
    for j in range(k):
        y[j::k] = ghost_batch_norm(x[j::k], x.shape[0], eps)
    return y


def check_ghost_batch_norm(fn) -> Result:
    """Check ``fn(x, virtual_batch_size, eps=1e-5) -> y`` (see :func:`ghost_batch_norm`)."""
    rng = np.random.default_rng(8)
    cases = [
        Case(
            "(8, 3), ghost batches of 4",
            (rng.normal(1, 2, size=(8, 3)), 4),
            hint="split axis 0 into consecutive blocks of virtual_batch_size samples.",
        ),
        Case(
            "(6, 2, 5), ghost batches of 2",
            (rng.normal(size=(6, 2, 5)), 2),
            hint="per channel, over the ghost batch's samples AND its spatial positions.",
        ),
        Case(
            "(10, 3): last ghost batch of 2",
            (rng.normal(size=(10, 3)), 4),
            hint="10 samples in ghost batches of 4: sizes 4, 4 and 2; keep the remainder.",
        ),
        Case(
            "virtual batch >= N: BatchNorm",
            (rng.normal(size=(5, 4)), 16),
            hint="one ghost batch holding everything is plain BatchNorm.",
        ),
    ]
    for case in cases:
        case.expected = ghost_batch_norm(*case.args)
    mistakes = [
        (
            _gbn_whole_batch,
            "that is BatchNorm over the whole batch: each ghost batch needs its own "
            "mean and variance.",
        ),
        (_gbn_unbiased, "normalize with the biased variance (divide by the count, not count - 1)."),
        (
            _gbn_interleaved,
            "your ghost batches interleave the samples; take CONSECUTIVE blocks "
            "x[0:V], x[V:2V], ...",
        ),
    ]
    return diagnose(fn, cases, what="ghost_batch_norm", mistakes=mistakes, rtol=1e-6, atol=1e-9)
