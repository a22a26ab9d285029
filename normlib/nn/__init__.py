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

Beyond torch.nn (the remedies of the "Limitations" chapter, and inference folding):
``BatchRenorm1d/2d/3d`` (Ioffe, 2017), ``GhostBatchNorm1d/2d`` (Hoffer et al., 2017),
``MaskedBatchNorm1d`` with ``lengths_to_mask`` (padded sequences), and :mod:`normlib.nn.fusion`
(``fuse_conv_bn_eval`` and friends, as ``torch.nn.utils.fusion``, plus ``fuse_model``).
"""

from . import functional, fusion
from .batch_norm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .batch_renorm import BatchRenorm1d, BatchRenorm2d, BatchRenorm3d
from .ghost_batch_norm import GhostBatchNorm1d, GhostBatchNorm2d
from .group_norm import GroupNorm
from .instance_norm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .layer_norm import LayerNorm
from .masked_batch_norm import MaskedBatchNorm1d, lengths_to_mask
from .rms_norm import RMSNorm
from .sync_batch_norm import SyncBatchNorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "MaskedBatchNorm1d",
    "RMSNorm",
    "SyncBatchNorm",
    "functional",
    "fusion",
    "lengths_to_mask",
]
