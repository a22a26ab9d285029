"""LayerNorm in NumPy: statistics over the last ``len(normalized_shape)`` dims of each sample.

x: (*, *normalized_shape)   mean, var: (*, 1, ..., 1)   gamma, beta: normalized_shape
"""

from __future__ import annotations

import numpy as np

from ..axes import reduction_axes
from ._core import norm_backward, norm_forward, trailing_shape


def layer_norm_forward(x, gamma=None, beta=None, normalized_shape=None, eps=1e-5):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` over the trailing dims.

    ``normalized_shape`` defaults to ``gamma``'s shape. Returns ``(y, cache)``.
    """
    x = np.asarray(x)
    shape = _normalized_shape(x, gamma, normalized_shape)
    return norm_forward(
        x,
        gamma,
        beta,
        eps,
        axes=reduction_axes("layer_norm", x.ndim, normalized_ndim=len(shape)),
        view=trailing_shape(x.ndim, shape),
        param_shape=shape,
    )


def layer_norm_backward(dy, cache):
    """``(dx, dgamma, dbeta)`` for :func:`layer_norm_forward`."""
    return norm_backward(dy, cache)


def _normalized_shape(x, gamma, normalized_shape):
    if normalized_shape is None:
        if gamma is None:
            raise ValueError("pass normalized_shape when there is no gamma")
        normalized_shape = np.shape(gamma)
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    shape = tuple(normalized_shape)
    if x.shape[x.ndim - len(shape) :] != shape:
        raise ValueError(f"input of shape {x.shape} does not end in normalized_shape {shape}")
    return shape
