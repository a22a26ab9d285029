"""BatchNorm in NumPy: statistics per channel over the batch and every spatial position.

    x: (N, C, *spatial)   mean, var: (C,)   y = gamma * (x - mean) / sqrt(var + eps) + beta

Training normalizes with the batch's biased variance; the running variance stores the unbiased one.
"""

from __future__ import annotations

import numpy as np

from ..axes import reduction_axes
from ._core import affine_forward, as_output, channel_shape, norm_backward, norm_forward


def batch_norm_forward(x, gamma=None, beta=None, eps=1e-5):
    """Training-mode BatchNorm. Returns ``(y, cache)``; ``cache["mean"]``/``cache["var"]`` are the
    batch's per-channel mean and biased variance, shape ``(C,)``; ``cache["count"]`` is N·H·W."""
    x = np.asarray(x)
    y, cache = norm_forward(
        x,
        gamma,
        beta,
        eps,
        axes=reduction_axes("batch_norm", x.ndim),  # (0, 2, 3, ...): all but the channel axis
        view=channel_shape(x.ndim, x.shape[1]),  # (1, C, 1, 1): per-channel vectors broadcast
        param_shape=(x.shape[1],),
    )
    cache["mean"] = cache["mean"].reshape(-1)  # (C,)
    cache["var"] = cache["var"].reshape(-1)  # (C,) biased
    return y, cache


def batch_norm_backward(dy, cache):
    """``(dx, dgamma, dbeta)`` for :func:`batch_norm_forward`; ``dgamma``/``dbeta`` are ``(C,)``."""
    return norm_backward(dy, cache)


def batch_norm_inference(x, running_mean, running_var, gamma=None, beta=None, eps=1e-5):
    """Eval-mode BatchNorm: an elementwise affine map with the running statistics.

    y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta
    """
    x = np.asarray(x)
    view = channel_shape(x.ndim, x.shape[1])
    mean = np.asarray(running_mean, dtype=np.float64).reshape(view)
    rstd = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64).reshape(view) + eps)
    y = affine_forward((x.astype(np.float64) - mean) * rstd, gamma, beta, view)
    return as_output(y, x)


def update_running_stats(
    running_mean, running_var, mean, var, count, momentum=0.1, num_batches_tracked=None
):
    """PyTorch's running-statistics update; returns ``(running_mean, running_var)`` as new arrays.

        running = (1 - momentum) * running + momentum * batch      (momentum weighs the NEW batch)

    ``var`` is the batch's biased variance; the running variance stores the unbiased
    ``var * count / (count - 1)``. With ``momentum=None`` the factor is ``1 / num_batches_tracked``
    (count this batch in ``num_batches_tracked`` first), a cumulative average of every batch seen.
    """
    if momentum is None:
        if not num_batches_tracked:
            raise ValueError("momentum=None (cumulative average) needs num_batches_tracked >= 1")
        factor = 1.0 / num_batches_tracked
    else:
        factor = momentum
    if count < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got {count}")
    unbiased = np.asarray(var, dtype=np.float64) * count / (count - 1)
    new_mean = (1 - factor) * np.asarray(running_mean, dtype=np.float64) + factor * mean
    new_var = (1 - factor) * np.asarray(running_var, dtype=np.float64) + factor * unbiased
    return new_mean, new_var
