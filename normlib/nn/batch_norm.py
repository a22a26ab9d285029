"""BatchNorm1d/2d/3d: drop-ins for ``torch.nn.BatchNorm*d`` (same API, state_dict, repr).

The class structure is torch's: ``_NormBase`` (parameters, buffers, state_dict versioning) ->
``_BatchNorm`` (forward) -> ``BatchNorm1d/2d/3d``, which only override ``_check_input_dim``.
The arithmetic is :func:`normlib.nn.functional.batch_norm`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Module, Parameter, init

from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class _NormBase(Module):
    """Common base of ``_InstanceNorm`` and ``_BatchNorm``: parameters, buffers, versioning.

    ``weight``/``bias`` (``affine``) are ``(C,)`` parameters initialized to 1 and 0;
    ``running_mean``/``running_var``/``num_batches_tracked`` (``track_running_stats``) are buffers
    initialized to 0, 1 and 0, or registered as None.
    """

    _version = 2
    __constants__ = ["track_running_stats", "momentum", "eps", "num_features", "affine"]
    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if self.affine:
            self.weight = Parameter(torch.empty(num_features, **factory_kwargs))
            if bias:
                self.bias = Parameter(torch.empty(num_features, **factory_kwargs))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(num_features, **factory_kwargs))
            # A long counter on the module's device; the dtype keyword is for float buffers only.
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, input):
        raise NotImplementedError

    def extra_repr(self):
        return (
            "{num_features}, eps={eps}, momentum={momentum}, affine={affine}, "
            "bias={use_bias}, track_running_stats={track_running_stats}".format(
                **self.__dict__, use_bias=self.bias is not None
            )
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            # Checkpoints before version 2 have no num_batches_tracked: keep ours (or start at 0).
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                state_dict[key] = (
                    self.num_batches_tracked
                    if self.num_batches_tracked is not None
                    and self.num_batches_tracked.device != torch.device("meta")
                    else torch.tensor(0, dtype=torch.long)
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _BatchNorm(_NormBase):
    """BatchNorm's forward: batch statistics in training (updating the running ones when tracked),
    running statistics in eval, batch statistics in eval when there are none."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )

    def _momentum(self) -> float:
        """This step's update factor; counts the batch. ``momentum=None``: ``1/num_batches_tracked``
        (a cumulative average of every batch seen)."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        return factor

    def _use_batch_stats(self) -> bool:
        """Training always uses batch statistics; eval does when there are no running ones."""
        return self.training or (self.running_mean is None and self.running_var is None)

    def _running_stats(self):
        """The buffers to pass: none in training without tracking (so nothing is updated)."""
        if not self.training or self.track_running_stats:
            return self.running_mean, self.running_var
        return None, None

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = self._momentum()
        running_mean, running_var = self._running_stats()
        return F.batch_norm(
            input,
            running_mean,
            running_var,
            self.weight,
            self.bias,
            self._use_batch_stats(),
            factor,
            self.eps,
        )


class BatchNorm1d(_BatchNorm):
    """BatchNorm over a 2D ``(N, C)`` or 3D ``(N, C, L)`` input; statistics per channel over
    ``(N, L)``. Drop-in for ``torch.nn.BatchNorm1d``."""

    def _check_input_dim(self, input) -> None:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    """BatchNorm over a 4D ``(N, C, H, W)`` input; statistics per channel over ``(N, H, W)``.
    Drop-in for ``torch.nn.BatchNorm2d``."""

    def _check_input_dim(self, input) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class BatchNorm3d(_BatchNorm):
    """BatchNorm over a 5D ``(N, C, D, H, W)`` input; statistics per channel over ``(N, D, H, W)``.
    Drop-in for ``torch.nn.BatchNorm3d``."""

    def _check_input_dim(self, input) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")
