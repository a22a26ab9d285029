"""InstanceNorm in NumPy: statistics per sample and channel, over the spatial dims only.

x: (N, C, *spatial)   mean, var: (N, C)   gamma, beta: (C,)
"""

from __future__ import annotations

import numpy as np

from ..axes import reduction_axes
from ._core import channel_shape, norm_backward, norm_forward


def instance_norm_forward(x, gamma=None, beta=None, eps=1e-5):
    """Returns ``(y, cache)``; ``cache["mean"]``/``cache["var"]`` are ``(N, C)`` (var biased)."""
    x = np.asarray(x)
    y, cache = norm_forward(
        x,
        gamma,
        beta,
        eps,
        axes=reduction_axes("instance_norm", x.ndim),  # (2, 3, ...): the spatial dims
        view=channel_shape(x.ndim, x.shape[1]),
        param_shape=(x.shape[1],),
    )
    cache["mean"] = cache["mean"].reshape(x.shape[:2])  # (N, C)
    cache["var"] = cache["var"].reshape(x.shape[:2])  # (N, C)
    return y, cache


def instance_norm_backward(dy, cache):
    """``(dx, dgamma, dbeta)`` for :func:`instance_norm_forward`."""
    return norm_backward(dy, cache)
