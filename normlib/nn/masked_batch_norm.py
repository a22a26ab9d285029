"""BatchNorm for padded sequences: statistics over the valid positions only.

A batch of variable-length sequences is padded to ``(N, C, L)``. ``BatchNorm1d`` averages over
every position, padding included, so its mean is pulled toward the pad value and its variance mixes
in the gap between pad and data, by an amount that changes with how much of the batch is padding.
Masked BatchNorm takes a boolean ``mask`` (True = a real position; shape ``(N, L)``, or ``(N,)`` for
``(N, C)`` inputs) or the ``lengths`` of the sequences, and per channel c, with ``M`` the valid
positions:

    mean_c = sum_M x / |M|,   var_c = sum_M (x - mean_c)^2 / |M|                    (biased)
    y = weight * (x - mean_c) / sqrt(var_c + eps) + bias     at valid positions, 0 at padding

The running statistics follow PyTorch's rule with ``|M|`` as the count (unbiased variance
``var_c * |M| / (|M| - 1)``; ``momentum`` weighs the new batch; ``None`` is a cumulative average).
Evaluation normalizes with the running statistics and also writes 0 at padding. The pad values
never enter the result, not even as NaN or inf (they are replaced, not multiplied by 0). Without a
mask the module is ``BatchNorm1d``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .batch_norm import _BatchNorm

__all__ = ["MaskedBatchNorm1d", "lengths_to_mask"]


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """``(N,)`` lengths -> ``(N, max_len)`` bool mask, True at positions ``t < lengths[n]``."""
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


class MaskedBatchNorm1d(_BatchNorm):
    """BatchNorm1d whose statistics use only the positions where ``mask`` is True."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")

    def _mask(self, input: Tensor, mask: Tensor | None, lengths: Tensor | None) -> Tensor:
        if mask is not None and lengths is not None:
            raise ValueError("pass either mask or lengths, not both")
        if lengths is not None:
            if input.dim() != 3:
                raise ValueError("lengths needs an (N, C, L) input")
            mask = lengths_to_mask(lengths.to(input.device), input.shape[2])
        expected = (input.shape[0],) + tuple(input.shape[2:])
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"mask must have shape {expected} for input {tuple(input.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        return mask.to(torch.bool).unsqueeze(1)  # (N, 1, L) or (N, 1): broadcasts over channels

    def forward(self, input: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None):
        self._check_input_dim(input)
        if mask is None and lengths is None:
            return super().forward(input)
        m = self._mask(input, mask, lengths)
        axes = [0] + list(range(2, input.dim()))
        view = (1, -1) + (1,) * (input.dim() - 2)  # (C,) -> (1, C) or (1, C, 1)
        x = torch.where(m, input, torch.zeros((), dtype=input.dtype, device=input.device))
        use_batch = self.training or self.running_mean is None
        if use_batch:
            count = int(m.sum())  # valid positions per channel
            if count < 2 and self.training:
                raise ValueError(
                    f"Expected more than 1 valid value per channel when training, got {count}"
                )
            # accumulate in fp32 at least (fp16/bf16 inputs)
            acc = torch.promote_types(input.dtype, torch.float32)
            xf, mf = x.to(acc), m.to(acc)
            mean = xf.sum(axes) / count  # (C,)
            var = (((xf - mean.view(view)) * mf) ** 2).sum(axes) / count  # (C,) biased
            if self.training and self.track_running_stats:
                self._update_running(mean.detach(), var.detach(), count)
        else:
            mean, var = self.running_mean, self.running_var
        rstd = torch.rsqrt(var + self.eps)
        y = (x - mean.view(view)) * rstd.view(view)
        if self.weight is not None:
            y = y * self.weight.view(view)
        if self.bias is not None:
            y = y + self.bias.view(view)
        return torch.where(m, y, torch.zeros((), dtype=y.dtype, device=y.device)).to(input.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, count: int) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        unbiased = var * count / (count - 1)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
