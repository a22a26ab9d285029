"""SyncBatchNorm's math across processes: batch statistics of the GLOBAL batch, from local shards.

Each of the ``W`` ranks of a process group holds a shard ``x_r`` of shape ``(N_r, C, *spatial)``
(``N_r`` may differ between ranks, and may be 0). BatchNorm on the concatenated batch needs, per
channel, the global count ``n``, mean ``mu`` and biased variance ``var``:

* forward: every rank computes its local ``(n_r, mu_r, M2_r)`` (``M2_r = sum (x - mu_r)^2``,
  corrected two-pass, fp32 accumulation for half inputs), ONE ``all_gather`` exchanges them
  (``2C + 1`` numbers a rank), and every rank merges them with the parallel formula of Chan, Golub
  & LeVeque (1979)::

      n   = sum_r n_r
      mu  = sum_r n_r mu_r / n
      M2  = sum_r [ M2_r + n_r (mu_r - mu)^2 ]          var = M2 / n   (biased)

  Never ``E[x^2] - E[x]^2``: with a large mean that difference of sums of squares cancels
  catastrophically. Ranks with ``n_r = 0`` add nothing, so uneven and empty shards are exact.

* backward: ``dx`` needs two per-channel sums over the GLOBAL batch,

      dx = gamma * rstd * (dy - sum(dy) / n - x_hat * sum(dy * x_hat) / n),

  so ONE ``all_reduce`` of ``2C`` numbers; ``dgamma = sum(dy * x_hat)`` and ``dbeta = sum(dy)`` stay
  LOCAL sums, as in ``torch.nn.SyncBatchNorm``: DistributedDataParallel reduces parameter gradients
  across ranks itself (it averages them, like every other parameter's).

Every rank must call this with the same number of channels and dtype (a collective): a rank with
another ``C`` makes the ``all_gather`` fail (gloo) or hang (NCCL);
``TORCH_DISTRIBUTED_DEBUG=DETAIL`` checks collective shapes. Works with any backend that has
``all_gather`` and ``all_reduce`` (gloo on CPU tensors, NCCL on CUDA tensors).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from ..axes import reduction_axes

__all__ = [
    "SyncBatchNormFunction",
    "chan_merge",
    "local_stats",
    "merge_stats",
    "sync_batch_norm_train",
]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics are accumulated and returned in fp32 for half inputs, else in x's dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(C,) -> (1, C, 1, ...)`` so per-channel vectors broadcast against ``(N, C, *spatial)``."""
    return t.view(1, -1, *([1] * (ndim - 2)))


def local_stats(x: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(n, mean, M2)`` of this rank's shard per channel; ``mean``/``M2`` are float64 ``(C,)``.

    The corrected two-pass algorithm: pass 1 gives a mean ``m`` (fp32 accumulation for half
    inputs); pass 2 sums the residuals ``d = x - m`` (small numbers, almost exact)::

        mean = m + sum(d) / n,      M2 = sum(d^2) - sum(d)^2 / n

    The correction matters across ranks: ``m`` rounded to fp32 is off by up to half an ulp of the
    mean (5e-4 at a mean of 1e4), and Chan's between-rank term ``n_r (mean_r - mean)^2`` would
    turn that into a relative error of 1e-4 in the variance; the float64 ``mean`` avoids it. An
    empty shard gives ``(0, zeros, zeros)``: no NaN, and it adds nothing in :func:`merge_stats`.
    """
    axes = reduction_axes("batch_norm", x.dim())  # (0, 2, 3, ...): all but the channel axis
    n = x.numel() // x.shape[1]
    if n == 0:
        zeros = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        return 0, zeros, zeros.clone()
    xf = x.to(_acc_dtype(x.dtype))
    m = xf.sum(axes) / n  # (C,) pass 1
    d = xf - _channel_view(m, x.dim())  # residuals, pass 2
    s1, s2 = d.sum(axes).double(), d.square().sum(axes).double()  # (C,) each
    return n, m.double() + s1 / n, s2 - s1 * s1 / n


def chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan et al.'s pairwise merge of two sets' ``(n, mean, M2)`` into the union's.

        n = n_a + n_b,  delta = mean_b - mean_a,
        mean = mean_a + delta * n_b / n,   M2 = M2_a + M2_b + delta^2 * n_a * n_b / n

    Works on numbers, NumPy arrays and tensors; an empty side (``n = 0``) returns the other side.
    """
    n = n_a + n_b
    if n == 0:
        return n, mean_a, m2_a
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + delta * delta * (n_a * n_b / n)
    return n, mean, m2


def merge_stats(counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor):
    """Chan's formula for ``W`` sets at once: ``counts`` ``(W,)``, ``means``/``m2s`` ``(W, C)``.

        n = sum_r n_r,   mean = sum_r n_r mean_r / n,   M2 = sum_r [M2_r + n_r (mean_r - mean)^2]

    Equal to folding :func:`chan_merge` over the ranks (each deviation ``mean_r - mean`` is a small
    difference of means, not a difference of large sums). Returns ``(n, mean, M2)`` with ``n`` a
    0-dim tensor; with ``n = 0`` the mean and M2 are zeros.
    """
    n = counts.sum()
    w = (counts / n.clamp_min(1)).unsqueeze(1)  # (W, 1) each rank's share of the global batch
    mean = (w * means).sum(0)  # (C,)
    m2 = m2s.sum(0) + (counts.unsqueeze(1) * (means - mean).square()).sum(0)  # (C,)
    return n, mean, m2


def _group_and_size(process_group):
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "sync_batch_norm_train needs torch.distributed: call "
            "torch.distributed.init_process_group first (or use BatchNorm in a single process)"
        )
    group = process_group if process_group is not None else dist.group.WORLD
    return group, dist.get_world_size(group)


def _check_input(x: torch.Tensor, group) -> None:
    if x.dim() < 2:
        raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")
    if x.shape[1] == 0:
        raise ValueError("SyncBatchNorm number of input channels should be non-zero")
    backend = str(dist.get_backend(group))
    if backend == "nccl" and x.device.type != "cuda":
        raise ValueError(
            f"the process group uses NCCL, which needs CUDA tensors; got an input on {x.device}. "
            "Move the model and data to the GPU, or init_process_group('gloo') for CPU tensors."
        )


def _all_gather_stats(packet: torch.Tensor, group, world_size: int) -> torch.Tensor:
    """``(2C + 1,)`` from every rank -> ``(W, 2C + 1)``. The list form works on every backend and
    torch version (gloo has no single-tensor all-gather in older releases)."""
    parts = [torch.empty_like(packet) for _ in range(world_size)]
    dist.all_gather(parts, packet, group=group)
    return torch.stack(parts)


class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BatchNorm whose statistics span every rank of ``process_group``.

    ``forward(x, weight, bias, eps, process_group) -> (y, mean, var, count)``: ``y`` like ``x``;
    ``mean``/``var`` (biased) ``(C,)``, detached, fp32 for half inputs; ``count`` a Python int.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, process_group):
        group, world_size = _group_and_size(process_group)
        _check_input(x, group)
        channels, acc = x.shape[1], _acc_dtype(x.dtype)

        n_local, mean_local, m2_local = local_stats(x)
        # one packet [n_r, mean_r (C), M2_r (C)] in float64: counts stay exact integers (fp32
        # rounds counts above 2^24) and the merge adds no rounding; it is only 2C + 1 numbers
        count_local = torch.full((1,), n_local, dtype=torch.float64, device=x.device)
        packet = torch.cat([count_local, mean_local, m2_local])
        gathered = _all_gather_stats(packet, group, world_size)  # (W, 2C + 1)
        counts = gathered[:, 0]  # (W,)
        means, m2s = gathered[:, 1:].split(channels, dim=1)  # (W, C) each
        n, mean, m2 = merge_stats(counts, means, m2s)

        count = int(n.item())  # the same on every rank, so every rank raises (or none does)
        if count < 2:
            raise ValueError(
                "Expected more than 1 value per channel when training, got "
                f"{count} value(s) per channel in the global batch of {world_size} processes"
            )
        var = (m2 / count).to(acc)  # biased: what the batch is normalized with
        mean = mean.to(acc)
        rstd = torch.rsqrt(var + eps)

        view = x.dim()
        x_hat = (x.to(acc) - _channel_view(mean, view)) * _channel_view(rstd, view)
        y = x_hat
        if weight is not None:
            y = y * _channel_view(weight.to(acc), view)
        if bias is not None:
            y = y + _channel_view(bias.to(acc), view)
        y = y.to(x.dtype)

        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.count, ctx.group = count, group
        # parameter gradients come back in the parameters' dtype
        ctx.param_dtype = next((p.dtype for p in (weight, bias) if p is not None), x.dtype)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var, count

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, _dmean, _dvar, _dcount):
        x, weight, mean, rstd = ctx.saved_tensors
        view, acc = x.dim(), mean.dtype
        axes = reduction_axes("batch_norm", view)
        x_hat = (x.to(acc) - _channel_view(mean, view)) * _channel_view(rstd, view)
        dy = dy.to(acc)
        # LOCAL per-channel sums (C,): the parameter gradients, and the input gradient's ingredients
        sum_dy = dy.sum(axes)
        sum_dy_xhat = (dy * x_hat).sum(axes)

        dx = dweight = dbias = None
        if ctx.needs_input_grad[1]:
            dweight = sum_dy_xhat.to(ctx.param_dtype)
        if ctx.needs_input_grad[2]:
            dbias = sum_dy.to(ctx.param_dtype)
        if ctx.needs_input_grad[0]:
            # dx depends on sums over the GLOBAL batch: one all_reduce of 2C numbers. Every rank
            # takes part, an empty shard with zeros, or its peers would wait forever.
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=ctx.group)
            sum_dy, sum_dy_xhat = sums.split(x.shape[1])
            n = ctx.count
            scale = rstd if weight is None else rstd * weight.to(acc)  # (C,)
            dx = _channel_view(scale, view) * (
                dy - _channel_view(sum_dy / n, view) - x_hat * _channel_view(sum_dy_xhat / n, view)
            )
            dx = dx.to(x.dtype)
        return dx, dweight, dbias, None, None


def sync_batch_norm_train(x, weight=None, bias=None, eps=1e-5, process_group=None):
    """BatchNorm over the union of every rank's batch (training mode), differentiable.

    ``x``: ``(N_r, C, *spatial)`` on this rank (``N_r`` may differ across ranks, even be 0);
    ``weight``/``bias``: ``(C,)`` or None; ``process_group``: None for the whole world.
    Returns ``(y, mean, var, count)``: ``y`` like ``x``, normalized with the GLOBAL per-channel
    ``mean`` and biased ``var`` (``(C,)``, detached, fp32 for half inputs), and ``count`` (int), the
    number of values per channel in the global batch (for the unbiased running variance).
    Running statistics are not touched here: :class:`normlib.nn.SyncBatchNorm` updates them from
    ``(mean, var, count)`` exactly as BatchNorm does.
    """
    return SyncBatchNormFunction.apply(x, weight, bias, eps, process_group)
