"""normlib.ref: the five norms in NumPy, forward and backward, the readable reference.

Each op is ``<op>_forward(x, gamma, beta, ..., eps) -> (y, cache)`` and
``<op>_backward(dy, cache) -> (dx, dgamma, dbeta)``, computed in float64. No torch here.
"""

from ._core import normalize_backward, normalize_forward
from .batch_norm import (
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_inference,
    update_running_stats,
)
from .group_norm import group_norm_backward, group_norm_forward
from .instance_norm import instance_norm_backward, instance_norm_forward
from .layer_norm import layer_norm_backward, layer_norm_forward
from .rms_norm import rms_norm_backward, rms_norm_forward

__all__ = [
    "batch_norm_backward",
    "batch_norm_forward",
    "batch_norm_inference",
    "group_norm_backward",
    "group_norm_forward",
    "instance_norm_backward",
    "instance_norm_forward",
    "layer_norm_backward",
    "layer_norm_forward",
    "normalize_backward",
    "normalize_forward",
    "rms_norm_backward",
    "rms_norm_forward",
    "update_running_stats",
]
