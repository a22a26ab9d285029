"""RMSNorm in NumPy: LayerNorm without the mean (no centering, no beta).

rms = sqrt(mean(x^2) + eps)   y = gamma * x / rms        (Zhang & Sennrich, 2019)
"""

from __future__ import annotations

import numpy as np

from ..axes import reduction_axes
from ._core import norm_backward, norm_forward, trailing_shape
from .layer_norm import _normalized_shape


def rms_norm_forward(x, gamma=None, normalized_shape=None, eps=None):
    """``y = gamma * x / sqrt(mean(x^2) + eps)`` over the trailing dims. Returns ``(y, cache)``.

    ``eps=None`` means the machine epsilon of the dtype the op computes in, as in
    ``torch.nn.RMSNorm``: ``finfo(x.dtype).eps``, with float16 computed in float32.
    """
    x = np.asarray(x)
    if eps is None:
        # torch computes half inputs in float32 and takes that type's eps
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        eps = float(np.finfo(np.float32 if dtype == np.float16 else dtype).eps)
    shape = _normalized_shape(x, gamma, normalized_shape)
    return norm_forward(
        x,
        gamma,
        None,
        eps,
        axes=reduction_axes("rms_norm", x.ndim, normalized_ndim=len(shape)),
        view=trailing_shape(x.ndim, shape),
        param_shape=shape,
        center=False,  # the "var" in the cache is the mean square
    )


def rms_norm_backward(dy, cache):
    """``(dx, dgamma, None)``: the same triple as the other norms; RMSNorm has no beta."""
    return norm_backward(dy, cache)
