"""SyncBatchNorm: drop-in for ``torch.nn.SyncBatchNorm``, that also runs on CPU (gloo).

In training with an initialized process group of more than one rank, the batch statistics are those
of the GLOBAL batch (all ranks' shards), computed by :mod:`normlib.nn._distributed`; the running
statistics are then updated by the same code as BatchNorm's, unbiased with the global count.
Otherwise (eval, one process, no process group) it is BatchNorm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import functional as F
from .batch_norm import _BatchNorm

__all__ = ["SyncBatchNorm"]


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over ``(N, C, *)`` with statistics synchronized across ``process_group`` (default:
    the whole world) in training."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any | None = None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self.process_group = process_group

    def _check_input_dim(self, input) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _check_non_zero_input_channels(self, input) -> None:
        if input.size(1) == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")

    def _sync_group(self):
        """The process group to synchronize over, or None when there is nothing to synchronize."""
        dist = torch.distributed
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group else dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        group = self._sync_group()  # training implies batch statistics
        if group is None:  # eval, or one process: plain BatchNorm, as torch does
            return super().forward(input)
        factor = self._momentum()
        running_mean, running_var = self._running_stats()
        from ._distributed import sync_batch_norm_train

        y, mean, var, count = sync_batch_norm_train(input, self.weight, self.bias, self.eps, group)
        if running_mean is not None:
            F.update_running_stats(running_mean, running_var, mean, var, count, factor)
        return y

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Replace every BatchNorm*d (normlib's or torch's ``_BatchNorm``) in ``module`` by a
        :class:`SyncBatchNorm` sharing its parameters and buffers (same tensors, same
        ``requires_grad``, same training flag); returns the converted module."""
        module_output = module
        if isinstance(module, (_BatchNorm, torch.nn.modules.batchnorm._BatchNorm)):
            module_output = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
                bias=module.bias is not None,
            )
            if module.affine:
                with torch.no_grad():
                    module_output.weight = module.weight
                    module_output.bias = module.bias
            module_output.running_mean = module.running_mean
            module_output.running_var = module.running_var
            module_output.num_batches_tracked = module.num_batches_tracked
            module_output.training = module.training
            if hasattr(module, "qconfig"):
                module_output.qconfig = module.qconfig
        for name, child in module.named_children():
            module_output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return module_output
