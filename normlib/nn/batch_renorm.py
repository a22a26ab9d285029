"""Batch Renormalization (Ioffe, 2017): BatchNorm whose training output matches its inference one.

BatchNorm normalizes with the batch's statistics in training and with running averages at
inference, so a model with small or non-i.i.d. batches learns on activations it never sees at test
time. Batch Renorm writes the inference normalization in terms of the batch's::

    (x - mu) / sigma = (x - mu_B) / sigma_B * r + d,  r = sigma_B / sigma,  d = (mu_B - mu) / sigma

and trains with that right-hand side, r and d clipped and treated as constants (no gradient flows
through them). Per channel, with the batch mean ``mu_B``, ``sigma_B = sqrt(var_B + eps)`` (biased
variance) and the running mean/std ``mu``, ``sigma``:

    r = stop_gradient(clip(sigma_B / sigma, 1 / r_max, r_max))
    d = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))
    y = weight * ((x - mu_B) / sigma_B * r + d) + bias                     (training)
    mu    <- mu    + momentum * (mu_B - mu)                                 (after computing r, d)
    sigma <- sigma + momentum * (sigma_B - sigma)
    y = weight * (x - mu) / sigma + bias                                    (inference)

With ``r_max = 1, d_max = 0`` this is BatchNorm. The running statistics are the paper's: a moving
average of the *standard deviation* ``sigma_B`` (which includes eps), kept in the buffer
``running_std``; there is no ``running_var`` buffer.

Schedule: the paper trains with ``r_max = 1, d_max = 0`` for the first 5000 steps, then relaxes
the bounds "gradually" to ``r_max = 3`` at 40k steps and ``d_max = 5`` at 25k steps. Here the
relaxation is linear in the step count ``num_batches_tracked`` (a choice: the paper does not give
the curve); pass ``warmup_steps``, ``r_max_steps``, ``d_max_steps`` to scale it to a shorter run, or
zeros for fixed bounds from the first step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..axes import reduction_axes
from .batch_norm import _BatchNorm

__all__ = ["BatchRenorm1d", "BatchRenorm2d", "BatchRenorm3d"]


def _ramp(step: int, start: int, end: int, low: float, high: float) -> float:
    """``low`` until ``start``, then linear to ``high`` at ``end``, then ``high``."""
    if step >= end:
        return high
    if step <= start:
        return low
    return low + (high - low) * (step - start) / (end - start)


class _BatchRenorm(_BatchNorm):
    """Batch Renormalization over the channel axis 1 (see the module docstring)."""

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
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 5000,
        r_max_steps: int = 40000,
        d_max_steps: int = 25000,
    ) -> None:
        if r_max < 1 or d_max < 0:
            raise ValueError(f"need r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}")
        if not 0 <= warmup_steps <= min(r_max_steps, d_max_steps):
            raise ValueError(
                "need 0 <= warmup_steps <= r_max_steps and d_max_steps, got "
                f"{warmup_steps}, {r_max_steps}, {d_max_steps}"
            )
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self.r_max, self.d_max = float(r_max), float(d_max)
        self.warmup_steps = warmup_steps
        self.r_max_steps, self.d_max_steps = r_max_steps, d_max_steps
        if track_running_stats:
            # The paper averages sigma_B (with eps inside), not the variance: replace the buffer.
            std = torch.ones_like(self.running_var)
            delattr(self, "running_var")
            self.register_buffer("running_std", std)
        else:
            delattr(self, "running_var")
            self.register_buffer("running_std", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            # _NormBase.__init__ calls this before running_std exists (running_var is still there).
            std = self._buffers.get("running_std", self._buffers.get("running_var"))
            std.fill_(1)
            self.num_batches_tracked.zero_()

    def clip_limits(self, step: int | None = None) -> tuple[float, float]:
        """``(r_max, d_max)`` in force at training step ``step`` (default: the next one)."""
        if step is None:
            step = int(self.num_batches_tracked) if self.track_running_stats else 0
        r = _ramp(step, self.warmup_steps, self.r_max_steps, 1.0, self.r_max)
        d = _ramp(step, self.warmup_steps, self.d_max_steps, 0.0, self.d_max)
        return r, d

    def _view(self, t: Tensor, ndim: int) -> Tensor:
        return t.view(1, -1, *([1] * (ndim - 2)))  # (C,) -> (1, C, 1, ...)

    def _affine(self, x_hat: Tensor) -> Tensor:
        if self.weight is not None:
            x_hat = x_hat * self._view(self.weight, x_hat.ndim)
        if self.bias is not None:
            x_hat = x_hat + self._view(self.bias, x_hat.ndim)
        return x_hat

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training and self.track_running_stats:
            # Inference: (x - mu) / sigma with the running mean and std.
            mean = self._view(self.running_mean, input.ndim)
            std = self._view(self.running_std, input.ndim)
            return self._affine((input - mean.to(input.dtype)) / std.to(input.dtype))

        count = input.numel() // input.shape[1]
        if count < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size "
                f"{tuple(input.shape)}"
            )
        # Batch statistics with autograd: mu_B and sigma_B do get gradients (as in BatchNorm).
        axes = reduction_axes("batch_norm", input.ndim)  # (0, 2, 3, ...)
        x = input.to(torch.promote_types(input.dtype, torch.float32))  # fp16/bf16 -> fp32
        var_b, mean_b = torch.var_mean(x, dim=axes, correction=0)  # (C,), (C,) biased
        std_b = torch.sqrt(var_b + self.eps)  # sigma_B, eps inside as in the paper
        x_hat = (x - self._view(mean_b, x.ndim)) / self._view(std_b, x.ndim)
        if self.track_running_stats:
            r, d = self._r_d_and_step(mean_b.detach(), std_b.detach())
            x_hat = x_hat * self._view(r, x.ndim) + self._view(d, x.ndim)
        return self._affine(x_hat).to(input.dtype)

    @torch.no_grad()
    def _r_d_and_step(self, mean_b: Tensor, std_b: Tensor) -> tuple[Tensor, Tensor]:
        """This step's clipped ``(r, d)``, each ``(C,)`` and constant (no graph), computed with the
        running statistics *before* this batch's update; then the update."""
        r_max, d_max = self.clip_limits()
        mu, sigma = self.running_mean, self.running_std
        r = (std_b / sigma).clamp(1.0 / r_max, r_max)
        d = ((mean_b - mu) / sigma).clamp(-d_max, d_max)
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        mu.lerp_(mean_b.to(mu.dtype), factor)  # mu <- mu + factor * (mu_B - mu)
        sigma.lerp_(std_b.to(sigma.dtype), factor)  # sigma <- sigma + factor * (sigma_B - sigma)
        return r.to(mean_b.dtype), d.to(mean_b.dtype)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}, "
            f"r_max_steps={self.r_max_steps}, d_max_steps={self.d_max_steps}"
        )


class BatchRenorm1d(_BatchRenorm):
    """Batch Renormalization of ``(N, C)`` or ``(N, C, L)`` inputs, one statistic per channel."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchRenorm2d(_BatchRenorm):
    """Batch Renormalization of ``(N, C, H, W)`` inputs, one statistic per channel."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class BatchRenorm3d(_BatchRenorm):
    """Batch Renormalization of ``(N, C, D, H, W)`` inputs, one statistic per channel."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")
