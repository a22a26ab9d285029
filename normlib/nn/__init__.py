"""normlib.nn: drop-in replacements for torch.nn's normalization layers (torch 2.13's exact API).

Same constructor signatures and defaults, parameter and buffer names, ``state_dict`` (loadable both
ways with torch's modules), ``repr``, exceptions and running-statistics semantics; the arithmetic is
normlib's own (see :mod:`normlib.backend` for which backend computes it).

==================  ===============================  =========================================
module              torch equivalent                 functional
==================  ===============================  =========================================
BatchNorm1d/2d/3d   torch.nn.BatchNorm1d/2d/3d       :func:`functional.batch_norm`
SyncBatchNorm       torch.nn.SyncBatchNorm           (BatchNorm with global statistics)
InstanceNorm1d/2d/3d torch.nn.InstanceNorm1d/2d/3d   :func:`functional.instance_norm`
LayerNorm           torch.nn.LayerNorm               :func:`functional.layer_norm`
GroupNorm           torch.nn.GroupNorm               :func:`functional.group_norm`
RMSNorm             torch.nn.RMSNorm                 :func:`functional.rms_norm`
==================  ===============================  =========================================
"""

from . import functional
from .batch_norm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .group_norm import GroupNorm
from .instance_norm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .layer_norm import LayerNorm
from .rms_norm import RMSNorm
from .sync_batch_norm import SyncBatchNorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "RMSNorm",
    "SyncBatchNorm",
    "functional",
]
