"""Auto-checks for the exercises of the chapter "GPU kernels" (book/10_gpu_kernels.ipynb).

The reader's launchers run on the GPU when there is one, else through Triton's interpreter on CPU
tensors; the checks build their inputs on that device.
"""

from __future__ import annotations

import numpy as np
import torch

from ..ref import batch_norm_inference, layer_norm_forward
from ._check import Case, Result, check_value, run_cases


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _bn_eval_case(name, shape, seed, hint):
    g = torch.Generator().manual_seed(seed)
    n, c, length = shape
    x = torch.randn(shape, generator=g) * 2 + 1
    mean, var = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
    weight, bias = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
    expected = batch_norm_inference(
        x.numpy(), mean.numpy(), var.numpy(), weight.numpy(), bias.numpy(), 1e-5
    )
    dev = _device()
    args = tuple(t.to(dev) for t in (x, mean, var, weight, bias))
    return Case(name, args, {"eps": 1e-5}, expected=expected, hint=hint)


def check_bn_eval_kernel(fn) -> Result:
    """``fn(x, running_mean, running_var, weight, bias, eps) -> y`` for ``x`` of shape (N, C, L)."""
    cases = [
        _bn_eval_case(
            "(2, 3, 8)",
            (2, 3, 8),
            0,
            "subtract MEAN[c], multiply by 1/sqrt(VAR[c] + eps), then W[c], add B[c].",
        ),
        _bn_eval_case(
            "(3, 5, 13): L not a power of two",
            (3, 5, 13),
            1,
            "mask the lanes past L on load AND on store.",
        ),
        _bn_eval_case(
            "(4, 7, 1): one value per row",
            (4, 7, 1),
            2,
            "the channel of row r is r % C (rows are ordered n * C + c).",
        ),
    ]
    return run_cases(fn, cases, what="eval-mode BatchNorm kernel", rtol=1e-4, atol=1e-5)


def check_fused_relu(fn) -> Result:
    """``fn(x, w, b, eps) -> relu(layer_norm(x))`` over the last dim of an (M, N) input."""
    cases = []
    for name, shape, seed in [
        ("(4, 32)", (4, 32), 0),
        ("(3, 100): N not a power of two", (3, 100), 1),
        ("(1, 7)", (1, 7), 2),
    ]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=g)
        w, b = torch.rand(shape[1], generator=g) + 0.5, torch.randn(shape[1], generator=g) * 0.5
        y, _ = layer_norm_forward(x.numpy(), w.numpy(), b.numpy(), eps=1e-5)
        dev = _device()
        cases.append(
            Case(
                name,
                (x.to(dev), w.to(dev), b.to(dev)),
                {"eps": 1e-5},
                expected=np.maximum(y, 0.0),
                hint="normalize, scale and shift, then tl.maximum(y, 0.0) before the "
                "store; masked lanes must not enter the mean or variance.",
            )
        )
    return run_cases(fn, cases, what="fused LayerNorm + ReLU", rtol=1e-4, atol=1e-5)


def check_min_bytes(answer) -> Result:
    """Minimum bytes of an RMSNorm backward, float32 (4096, 4096), weight of 4096."""
    m = n = 4096
    expected = 3 * m * n * 4 + m * 4 + 2 * n * 4
    return check_value(
        answer,
        expected,
        what="RMSNorm backward minimum bytes",
        rtol=1e-6,
        hint="x, dy and dx are M*N*4 bytes each; rstd is M*4; weight and dweight are N*4 each.",
    )


def check_intensity(answer) -> Result:
    """Arithmetic intensity of a bfloat16 LayerNorm forward at 8 flops per element."""
    return check_value(
        answer,
        2.0,
        what="bfloat16 LayerNorm intensity",
        rtol=1e-6,
        hint="bfloat16 is 2 bytes: read x and write y, 4 bytes per element.",
    )
