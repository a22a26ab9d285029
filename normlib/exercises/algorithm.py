"""Auto-checks for the exercises of the chapter "The algorithm" (book/02_algorithm.ipynb).

Every expected answer comes from :mod:`normlib.ref` and :mod:`normlib.axes`, never typed in; a wrong
answer that matches a known mistake gets that mistake's hint.
"""

from __future__ import annotations

import numpy as np

from .. import ref
from ..axes import reduction_axes
from ._check import Case, Result, check_value, run_cases

__all__ = [
    "check_batch_norm_backward",
    "check_batch_norm_forward",
    "check_bn_axes",
    "check_recovery",
    "check_stat_count",
]


def _diagnosed(fn, cases, *, what, mistakes=(), rtol=1e-7, atol=1e-9) -> Result:
    """:func:`run_cases` with this chapter's tighter tolerances and known ``mistakes``."""
    return run_cases(fn, cases, what=what, rtol=rtol, atol=atol, mistakes=mistakes)


def _axes(x):
    return reduction_axes("batch_norm", np.ndim(x))


def _view(x):
    return (1, np.shape(x)[1]) + (1,) * (np.ndim(x) - 2)


# -------------------------------------------------------------------------------------------------
# Exercise: the forward pass


def _fwd(x, gamma, beta, eps=1e-5):
    return ref.batch_norm_forward(x, gamma, beta, eps)[0]


def _fwd_with(x, gamma, beta, eps, *, axes=None, ddof=0, eps_outside=False, naive=False):
    """A forward pass with one of the usual mistakes (for the hints)."""
    x = np.asarray(x)
    axes = _axes(x) if axes is None else axes
    mean = x.mean(axis=axes, keepdims=True)
    if naive:  # E[x^2] - E[x]^2, in the input's precision
        var = (x * x).mean(axis=axes, keepdims=True) - mean * mean
    else:
        var = x.var(axis=axes, keepdims=True, ddof=ddof)
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    y = (x - mean) / std
    return np.asarray(gamma).reshape(_view(x)) * y + np.asarray(beta).reshape(_view(x))


def _forward_cases():
    rng = np.random.default_rng(21)

    def params(c):
        return rng.normal(1.0, 0.5, size=c), rng.normal(0.0, 1.0, size=c)

    x2 = rng.normal(3.0, 2.0, size=(8, 3))
    cases = [
        Case(
            "(N, C) = (8, 3), gamma = 1, beta = 0",
            (x2, np.ones(3), np.zeros(3)),
            hint=(
                "normalize each feature (column) with the mean and variance of its column over the "
                "batch axis 0."
            ),
        ),
        Case(
            "(N, C) = (8, 3), eps = 0.5",
            (x2, np.ones(3), np.zeros(3), 0.5),
            hint=("eps goes inside the square root: (x - mean) / sqrt(var + eps)."),
        ),
        Case(
            "N = 2",
            (rng.normal(size=(2, 4)), np.ones(4), np.zeros(4)),
            hint=("use the biased variance (divide by N, not N - 1)."),
        ),
        Case(
            "(N, C) = (16, 5), random gamma and beta",
            (rng.normal(size=(16, 5)), *params(5)),
            hint=("scale and shift per feature after normalizing: y = gamma * x_hat + beta."),
        ),
        Case(
            "(N, C, H, W) = (4, 3, 5, 5)",
            (rng.normal(2.0, 3.0, size=(4, 3, 5, 5)), *params(3)),
            hint="for an (N, C, H, W) input the statistics are per channel, over axes (0, 2, 3).",
        ),
        Case(
            "(N, C, L) = (3, 2, 7)",
            (rng.normal(size=(3, 2, 7)), *params(2)),
            hint=("for an (N, C, L) input the statistics are per channel, over axes (0, 2)."),
        ),
    ]
    for case in cases:
        case.expected = _fwd(*case.args)
    return cases


def check_batch_norm_forward(fn) -> Result:
    """Check ``fn(x, gamma, beta, eps=1e-5) -> y`` (training mode); ``x`` is ``(N, C, *S)``."""
    mistakes = [
        (
            lambda x, g, b, eps=1e-5: _fwd_with(x, g, b, eps, ddof=1),
            "you used the unbiased variance (N - 1); BatchNorm normalizes with the biased one (N).",
        ),
        (
            lambda x, g, b, eps=1e-5: _fwd_with(x, g, b, eps, eps_outside=True),
            "eps is outside the square root; BatchNorm uses (x - mean) / sqrt(var + eps).",
        ),
        (
            lambda x, g, b, eps=1e-5: _fwd_with(x, g, b, eps, axes=(0,)),
            "your statistics are per (channel, position); BatchNorm shares them over positions: "
            "reduce over axes (0, 2, 3, ...).",
        ),
        (
            lambda x, g, b, eps=1e-5: _fwd_with(x, g, b, eps, axes=tuple(range(1, np.ndim(x)))),
            "you normalized each SAMPLE over its features (as LayerNorm does); BatchNorm "
            "normalizes each feature over the batch.",
        ),
    ]
    result = _diagnosed(fn, _forward_cases(), what="batch_norm_forward", mistakes=mistakes)
    if not result:
        return result
    # float32 with a large mean: the one-pass E[x^2] - E[x]^2 cancels catastrophically
    rng = np.random.default_rng(22)
    x = (1e4 + rng.normal(size=(256, 2))).astype(np.float32)
    case = Case(
        "float32, mean 1e4, std 1",
        (x, np.ones(2, np.float32), np.zeros(2, np.float32)),
        expected=_fwd(x, np.ones(2), np.zeros(2)),
        hint="compute the variance as mean((x - mean)^2) (two passes), not E[x^2] - E[x]^2, "
        "which cancels catastrophically in float32.",
    )
    big = run_cases(fn, [case], what="batch_norm_forward", atol=2e-2, rtol=0)
    if not big:
        return big
    return Result(True, "✅ batch_norm_forward: all 7 cases pass.")


# -------------------------------------------------------------------------------------------------
# Exercise: the backward pass


def _bwd(dy, x, gamma, eps=1e-5):
    _, cache = ref.batch_norm_forward(x, gamma, np.zeros_like(gamma), eps)
    return ref.batch_norm_backward(dy, cache)


def _bwd_with(dy, x, gamma, eps=1e-5, *, mean_term=True, var_term=True, use_gamma=True):
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    axes, view = _axes(x), _view(x)
    mean = x.mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    x_hat = (x - mean) * rstd
    dx_hat = dy * np.asarray(gamma).reshape(view) if use_gamma else dy
    dx = dx_hat
    if mean_term:
        dx = dx - dx_hat.mean(axis=axes, keepdims=True)
    if var_term:
        dx = dx - x_hat * (dx_hat * x_hat).mean(axis=axes, keepdims=True)
    sums = tuple(a for a in range(x.ndim) if a != 1)
    return rstd * dx, (dy * x_hat).sum(axis=sums), dy.sum(axis=sums)


def check_batch_norm_backward(fn) -> Result:
    """Check ``fn(dy, x, gamma, eps=1e-5) -> (dx, dgamma, dbeta)`` for training-mode BatchNorm."""
    rng = np.random.default_rng(23)

    def case(name, shape, hint, eps=1e-5):
        c = shape[1]
        x = rng.normal(1.0, 2.0, size=shape)
        args = (rng.normal(size=shape), x, rng.normal(1.0, 0.5, size=c), eps)
        return Case(name, args, expected=_bwd(*args), hint=hint)

    cases = [
        case(
            "(N, C) = (8, 3)",
            (8, 3),
            "start from dbeta = sum(dy), dgamma = sum(dy * x_hat) over "
            "the batch, and dx_hat = dy * gamma.",
        ),
        case(
            "N = 2",
            (2, 4),
            "mean and variance depend on every x_i: dx needs the terms that flow through them.",
        ),
        case(
            "(N, C) = (16, 5), eps = 0.1",
            (16, 5),
            "dx = rstd * (dx_hat - mean(dx_hat) - x_hat * "
            "mean(dx_hat * x_hat)), the means over the batch.",
            eps=0.1,
        ),
        case(
            "(N, C, H, W) = (4, 3, 5, 5)",
            (4, 3, 5, 5),
            "for (N, C, H, W) every mean and sum is per channel, over axes (0, 2, 3).",
        ),
    ]
    mistakes = [
        (
            lambda *a: _bwd_with(*a, mean_term=False, var_term=False),
            "you treated mean and variance as constants (dx = gamma * rstd * dy); in training they "
            "depend on x: subtract mean(dx_hat) and x_hat * mean(dx_hat * x_hat).",
        ),
        (
            lambda *a: _bwd_with(*a, mean_term=False),
            "the path through the mean is missing: subtract mean(dx_hat) over the batch.",
        ),
        (
            lambda *a: _bwd_with(*a, var_term=False),
            "the path through the variance is missing: subtract x_hat * mean(dx_hat * x_hat).",
        ),
        (
            lambda *a: _bwd_with(*a, use_gamma=False),
            "dx_hat = dy * gamma: the gradient reaches x_hat through the scale gamma.",
        ),
    ]
    return _diagnosed(fn, cases, what="batch_norm_backward", mistakes=mistakes)


# -------------------------------------------------------------------------------------------------
# Exercise: which axes, and how many values per statistic


def check_bn_axes(fn) -> Result:
    """Check ``fn(ndim) -> axes`` that BatchNorm reduces over for an ``(N, C, *spatial)`` input
    (any order; negative axes allowed)."""

    def normalized(ndim):
        return tuple(sorted(int(a) % ndim for a in fn(ndim)))

    hint = "BatchNorm keeps one statistic per channel (axis 1): it reduces over every other axis."
    cases = [
        Case(f"ndim = {n}", (n,), expected=reduction_axes("batch_norm", n), hint=hint)
        for n in (2, 3, 4, 5)
    ]
    mistakes = [
        (
            lambda n: (0,),
            "only the batch axis: for images BatchNorm also reduces over the positions "
            "(H, W), because gamma and beta are shared by every position.",
        ),
        (
            lambda n: tuple(range(1, n)),
            "that keeps one statistic per sample (LayerNorm's axes); "
            "BatchNorm keeps one per channel.",
        ),
        (
            lambda n: tuple(range(2, n)),
            "that keeps one statistic per sample and channel "
            "(InstanceNorm's axes); BatchNorm reduces over the batch too.",
        ),
    ]
    return _diagnosed(normalized, cases, what="bn_axes", mistakes=mistakes)


def check_stat_count(value, shape=(32, 64, 28, 28)) -> Result:
    """Check the number of values that share one BatchNorm mean for an input of ``shape``."""
    axes = reduction_axes("batch_norm", len(shape))
    expected = int(np.prod([shape[a] for a in axes]))
    wrong = {
        shape[0]: "that is the batch size alone; the positions H x W share it too.",
        int(np.prod(shape)) // shape[0]: "that is per sample (C x H x W); BatchNorm is per "
        "channel, over N x H x W.",
    }
    if value in wrong and value != expected:
        return Result(False, f"❌ stat_count: {wrong[value]}")
    return check_value(
        value,
        expected,
        what="stat_count",
        hint="count the elements of one channel: every axis but the channel's.",
    )


# -------------------------------------------------------------------------------------------------
# Exercise: gamma and beta that give back the input


def _recovered(fn):
    """Wrap ``fn(x, eps) -> (gamma, beta)`` into ``x -> BN(x; gamma, beta)`` (which should be x)."""

    def run(x, eps):
        gamma, beta = fn(x, eps)
        return ref.batch_norm_forward(x, np.ravel(gamma), np.ravel(beta), eps)[0]

    return run


def _recovery_with(x, eps, *, use_eps=True, ddof=0):
    axes = _axes(x)
    var = np.var(x, axis=axes, ddof=ddof)
    return np.sqrt(var + eps) if use_eps else np.sqrt(var), np.mean(x, axis=axes)


def check_recovery(fn) -> Result:
    """Check ``fn(x, eps) -> (gamma, beta)`` such that BatchNorm with them returns ``x`` itself."""
    rng = np.random.default_rng(24)
    scales = np.array([1.0, 0.1, 10.0])
    cases = [
        Case(
            "(N, C) = (32, 3), stds 1, 0.1, 10, eps = 1e-5",
            (rng.normal(2.0, 1.0, size=(32, 3)) * scales, 1e-5),
            hint="beta is the batch mean; gamma undoes the division by sqrt(var + eps).",
        ),
        Case(
            "std 1e-3 (var below eps)",
            (rng.normal(0.5, 1e-3, size=(64, 2)), 1e-5),
            hint="gamma = sqrt(var + eps), not the standard deviation: with var < eps, gamma = "
            "std leaves most of the input's spread behind.",
        ),
        Case(
            "N = 4, eps = 0.1",
            (rng.normal(size=(4, 3)), 0.1),
            hint="the variance is the biased one (divide by N), as in the forward pass.",
        ),
        Case(
            "(N, C, H, W) = (2, 3, 4, 4)",
            (rng.normal(1.0, 2.0, size=(2, 3, 4, 4)), 1e-5),
            hint="for (N, C, H, W) gamma and beta are per channel, from statistics over (0, 2, 3).",
        ),
    ]
    for c in cases:
        c.expected = c.args[0]
    mistakes = [
        (
            _recovered(lambda x, eps: _recovery_with(x, eps, use_eps=False)),
            "gamma = std (the seed's answer) misses eps: the output is x shrunk towards the mean "
            "by std / sqrt(var + eps). Use gamma = sqrt(var + eps).",
        ),
        (
            _recovered(lambda x, eps: _recovery_with(x, eps, ddof=1)),
            "use the biased variance (divide by N), the one the forward pass normalizes with.",
        ),
    ]
    return _diagnosed(
        _recovered(fn), cases, what="recovery", mistakes=mistakes, rtol=1e-9, atol=1e-9
    )
