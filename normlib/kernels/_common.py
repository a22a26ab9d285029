"""What every kernel file shares: Chan's merge of partial statistics, tile sizes, dtypes, grids.

Partial statistics of a set of values are the triple ``(n, mean, m2)`` with
``m2 = sum((x - mean)^2)``. Two disjoint parts merge exactly (Chan, Golub & LeVeque, 1979):

    n    = n_a + n_b
    d    = mean_b - mean_a
    mean = mean_a + d * n_b / n
    m2   = m2_a + m2_b + d^2 * n_a * n_b / n

Every kernel computes a tile's ``(n, mean, m2)`` with two passes over the tile in registers and
folds it into a running triple with this merge, so the variance never comes from
``E[x^2] - E[x]^2`` (which loses every digit in float32 when ``|mean| >> std``).

The merge itself needs the partial means to carry their digits: with ``mean = 1e4`` a float32 mean
is only known to ``1e-3``, and ``d`` above is a small difference of such numbers. So the streaming
kernels take the statistics of ``x - K``, with ``K`` the first value of the set (any value of the
set is within a few standard deviations of the mean): partial means stay ``O(std)``, and the
mean of ``x`` is ``K + mean(x - K)``; the variance is unchanged.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


class Limits:
    """Sizes the launchers choose from. Tests shrink them so tiny tensors take the multi-tile loops
    and the split reductions that big tensors take on a GPU.

    The register budgets were checked by compiling for sm_90 and reading the cubins' register and
    spill counts (``cuobjdump -res-usage``): about 8 float32 values per thread and tensor keep a
    kernel near 64-80 registers, 16 per thread near 128, and more spills to local memory."""

    row_elems = 16384  # forward: a row (or group) this long is held in registers (32 warps)
    row_elems_bwd = 8192  # backward holds x, dy and the dw/db partials: half as long (16 warps)
    tile = 4096  # elements per tile when a loop streams through a longer row or channel
    programs_per_sm = 8  # enough resident programs per SM to keep the memory system busy
    interpreter_programs = 4  # on the CPU interpreter every program costs time: use few


LIMITS = Limits()


def interpreting() -> bool:
    """True when Triton runs kernels through its NumPy interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def target_programs(device: torch.device) -> int:
    """How many programs a reduction should be split into to fill ``device``."""
    if device.type == "cuda" and not interpreting():
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return LIMITS.programs_per_sm * sms
    return LIMITS.interpreter_programs


def acc_dtype(dtype: torch.dtype):
    """Triton accumulation dtype: float64 for float64 inputs, float32 for everything else."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Torch dtype of returned mean/var/rstd: float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def num_warps_for(elements: int, max_warps: int = 16) -> int:
    """Warps for a tile of ``elements``: 8 elements per thread, 1 to ``max_warps`` warps."""
    return max(1, min(max_warps, elements // 256))


def pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (and >= 1)."""
    return triton.next_power_of_2(max(1, int(n)))


def check_device(x: torch.Tensor) -> None:
    """Kernels compiled for a GPU need GPU tensors; CPU tensors need the interpreter."""
    if x.device.type == "cpu" and not interpreting():
        raise RuntimeError(
            "normlib.kernels got a CPU tensor but Triton is not in interpreter mode: set "
            "TRITON_INTERPRET=1 before triton is first imported, or move the tensor to the GPU"
        )


@triton.jit
def chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Merge the partial statistics ``(n, mean, m2)`` of two disjoint parts (works elementwise)."""
    n = n_a + n_b
    d = mean_b - mean_a
    frac_b = n_b / tl.maximum(n, 1.0)  # an all-masked tile has n_b = 0: nothing changes
    mean = mean_a + d * frac_b
    m2 = m2_a + m2_b + d * d * n_a * frac_b
    return n, mean, m2


@triton.jit
def tile_stats(x, mask, AXIS: tl.constexpr):
    """``(n, mean, m2)`` of the unmasked entries of the tile ``x`` along ``AXIS`` (two passes, in
    registers). ``x`` must already be zero where ``mask`` is False."""
    n = tl.sum(mask.to(x.dtype), axis=AXIS)
    mean = tl.sum(x, axis=AXIS) / tl.maximum(n, 1.0)
    if AXIS == 0:
        xc = tl.where(mask, x - mean[None, :], 0.0)
    else:
        xc = tl.where(mask, x - mean[:, None], 0.0)
    m2 = tl.sum(xc * xc, axis=AXIS)
    return n, mean, m2


@triton.jit
def block_stats(x, mask):
    """``(n, mean, m2)`` of the unmasked entries of the tile ``x`` (zero where ``mask`` is off)."""
    n = tl.sum(tl.sum(mask.to(x.dtype), axis=1), axis=0)
    mean = tl.sum(tl.sum(x, axis=1), axis=0) / tl.maximum(n, 1.0)
    xc = tl.where(mask, x - mean, 0.0)
    m2 = tl.sum(tl.sum(xc * xc, axis=1), axis=0)
    return n, mean, m2


def prev_pow2(n: int) -> int:
    """The largest power of two <= ``n`` (1 for ``n < 1``)."""
    return 1 << (max(1, int(n)).bit_length() - 1)


def resident_programs(device: torch.device, num_warps: int) -> int:
    """Programs that fit on ``device`` at once (a persistent grid): ~32 warps per SM."""
    if device.type == "cuda" and not interpreting():
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return sms * max(1, 32 // num_warps)
    return LIMITS.interpreter_programs


@triton.jit
def chan_reduce(n, mean, m2):
    """Merge the partial statistics in the lanes of the vectors ``n, mean, m2`` into one triple.

    Chan's formula for k parts at once: ``mean = sum(n_i mean_i) / n`` and
    ``m2 = sum(m2_i) + sum(n_i (mean_i - mean)^2)``; no difference of large sums anywhere.
    """
    n_all = tl.sum(n, axis=0)
    mean_all = tl.sum(n * mean, axis=0) / tl.maximum(n_all, 1.0)
    d = mean - mean_all
    m2_all = tl.sum(m2, axis=0) + tl.sum(n * d * d, axis=0)
    return n_all, mean_all, m2_all
