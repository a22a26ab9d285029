"""GroupNorm in NumPy: the C channels split into G groups; statistics per sample and group.

    x: (N, C, *spatial) viewed as (N, G, C/G, *spatial)   mean, var: (N, G)   gamma, beta: (C,)

G = C is InstanceNorm; G = 1 normalizes like LayerNorm over (C, *spatial) but keeps per-channel
affine parameters.
"""

from __future__ import annotations

import numpy as np

from ..axes import group_view_shape, reduction_axes
from ._core import as_output, channel_shape, norm_backward, norm_forward


def group_norm_forward(x, gamma=None, beta=None, num_groups=1, eps=1e-5):
    """Returns ``(y, cache)``; ``cache["mean"]``/``cache["var"]`` are ``(N, G)`` (var biased)."""
    x = np.asarray(x)
    grouped = x.reshape(group_view_shape(x.shape, num_groups))  # (N, G, C/G, *spatial)
    y, cache = norm_forward(
        grouped,
        None,  # gamma and beta are per channel, not per group: applied below, on (N, C, ...)
        None,
        eps,
        axes=reduction_axes("group_norm", grouped.ndim),  # (2, 3, ...)
        view=(1,) * grouped.ndim,
        param_shape=(),
    )
    view = channel_shape(x.ndim, x.shape[1])
    x_hat = cache["x_hat"].reshape(x.shape)  # back to (N, C, *spatial)
    y = x_hat
    if gamma is not None:
        y = y * np.asarray(gamma, dtype=np.float64).reshape(view)
    if beta is not None:
        y = y + np.asarray(beta, dtype=np.float64).reshape(view)
    cache.update(
        shape=x.shape,
        affine_gamma=gamma,
        affine_has_beta=beta is not None,
        affine_view=view,
        mean=cache["mean"].reshape(x.shape[0], num_groups),  # (N, G)
        var=cache["var"].reshape(x.shape[0], num_groups),  # (N, G)
    )
    return as_output(y, x), cache


def group_norm_backward(dy, cache):
    """``(dx, dgamma, dbeta)`` for :func:`group_norm_forward`; ``dgamma``/``dbeta`` are ``(C,)``."""
    dy = np.asarray(dy, dtype=np.float64)
    view = cache["affine_view"]
    x_hat = cache["x_hat"].reshape(cache["shape"])
    sum_axes = tuple(a for a, s in enumerate(view) if s == 1)  # all but the channel axis
    gamma = cache["affine_gamma"]
    dgamma = (dy * x_hat).sum(axis=sum_axes) if gamma is not None else None
    dbeta = dy.sum(axis=sum_axes) if cache["affine_has_beta"] else None
    dx_hat = dy * np.asarray(gamma, dtype=np.float64).reshape(view) if gamma is not None else dy
    dx, _, _ = norm_backward(dx_hat.reshape(cache["x_hat"].shape), cache)
    return dx.reshape(cache["shape"]), dgamma, dbeta
