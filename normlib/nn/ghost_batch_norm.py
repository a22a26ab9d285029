"""Ghost Batch Normalization (Hoffer et al., 2017): BatchNorm over virtual batches of a large batch.

Training with a large batch makes BatchNorm's statistics nearly noise-free, and part of
BatchNorm's regularizing noise goes away with it. Ghost BatchNorm splits the batch along dim 0 into
consecutive "ghost" batches of ``virtual_batch_size`` samples (the last one holds the remainder)
and normalizes each with its own mean and biased variance::

    x = cat(x_1, ..., x_k),   y_j = weight * (x_j - mean(x_j)) / sqrt(var(x_j) + eps) + bias

Running statistics: each ghost batch updates them in turn, exactly as if it had been a separate
call to BatchNorm: ``k`` exponential-moving-average steps per forward pass (``num_batches_tracked``
grows by ``k``; with ``momentum=None`` each ghost batch counts once in the cumulative average). The
result is the same as running one ``BatchNorm`` module over ``x_1, ..., x_k`` one after another;
the equal-sized ghost batches are computed at once (one reduction, the ``k`` updates in closed
form) rather than in a Python loop.

Evaluation is BatchNorm's: the running statistics (or, with ``track_running_stats=False``, the whole
batch's statistics). With ``virtual_batch_size >= N`` training is BatchNorm's too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .batch_norm import _BatchNorm

__all__ = ["GhostBatchNorm1d", "GhostBatchNorm2d"]


class _GhostBatchNorm(_BatchNorm):
    """BatchNorm with per-ghost-batch statistics in training (see the module docstring)."""

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        if virtual_batch_size < 1:
            raise ValueError(f"virtual_batch_size must be >= 1, got {virtual_batch_size}")
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self.virtual_batch_size = virtual_batch_size

    def forward(self, input: Tensor) -> Tensor:
        if not self.training:
            return super().forward(input)
        self._check_input_dim(input)
        k, rest = divmod(input.shape[0], self.virtual_batch_size)
        if k <= 1:  # one ghost batch (plus a remainder or not): BatchNorm's own steps
            return torch.cat(
                [
                    super(_GhostBatchNorm, self).forward(c)
                    for c in input.split(self.virtual_batch_size)
                ],
                dim=0,
            )
        out = [self._ghosts_forward(input[: k * self.virtual_batch_size], k)]
        if rest:  # the last, smaller ghost batch: one more BatchNorm step
            out.append(super().forward(input[k * self.virtual_batch_size :]))
        return torch.cat(out, dim=0) if rest else out[0]

    def _ghosts_forward(self, x: Tensor, k: int) -> Tensor:
        """``k`` equal ghost batches at once: ``(k*V, C, *s)`` viewed as ``(k, V, C, *s)``."""
        g = x.reshape(k, -1, *x.shape[1:])
        axes = (1, *range(3, g.ndim))  # per ghost batch and channel: over V and the spatial dims
        acc = torch.promote_types(x.dtype, torch.float32)  # fp16/bf16: fp32 statistics
        var, mean = torch.var_mean(g.to(acc), dim=axes, correction=0, keepdim=True)
        y = (g - mean) * torch.rsqrt(var + self.eps)  # (k, V, C, *s)
        view = (1, 1, -1) + (1,) * (g.ndim - 3)
        if self.weight is not None:
            y = y * self.weight.view(view)
        if self.bias is not None:
            y = y + self.bias.view(view)
        if self.track_running_stats:
            count = g[0].numel() // g.shape[2]  # values per channel in one ghost batch
            self._ghost_steps(mean.detach().reshape(k, -1), var.detach().reshape(k, -1), count)
        return y.reshape(x.shape).to(x.dtype)

    @torch.no_grad()
    def _ghost_steps(self, means: Tensor, vars_: Tensor, count: int) -> None:
        """``k`` running-statistics steps in closed form, one per ghost batch in order:
        ``R <- (1 - m)^k R + sum_j m (1 - m)^(k - j) s_j`` (``momentum=None``: the cumulative
        average over ``num_batches_tracked + k`` batches)."""
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got {count}")
        k = means.shape[0]
        unbiased = vars_ * count / (count - 1)  # (k, C)
        n = int(self.num_batches_tracked)
        self.num_batches_tracked.add_(k)
        if self.momentum is None:
            keep, w = n / (n + k), torch.full((k, 1), 1.0 / (n + k), dtype=means.dtype)
        else:
            m = self.momentum
            keep = (1 - m) ** k
            w = m * (1 - m) ** torch.arange(k - 1, -1, -1, dtype=means.dtype)[:, None]
        w = w.to(means.device)
        for buf, stats in ((self.running_mean, means), (self.running_var, unbiased)):
            buf.copy_(keep * buf + (w * stats).sum(0).to(buf.dtype))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"


class GhostBatchNorm1d(_GhostBatchNorm):
    """Ghost BatchNorm of ``(N, C)`` or ``(N, C, L)`` inputs."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class GhostBatchNorm2d(_GhostBatchNorm):
    """Ghost BatchNorm of ``(N, C, H, W)`` inputs."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")
