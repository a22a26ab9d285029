"""The checks of book/10_gpu_kernels.ipynb, run with Triton kernels (the interpreter on a CPU)."""

import torch
import triton
import triton.language as tl

from normlib.exercises import gpu_kernels as ex


@triton.jit
def _bn_eval_kernel(
    X,
    Y,
    MEAN,
    VAR,
    W,
    B,
    C,
    L,
    eps,
    WITH_AFFINE: tl.constexpr,
    ROW_C: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    row = tl.program_id(0)
    c = row % C if ROW_C else row // C  # the wrong variant picks the sample index's channel
    cols = tl.arange(0, BLOCK_L)
    mask = cols < L
    x = tl.load(X + row * L + cols, mask=mask, other=0.0)
    y = (x - tl.load(MEAN + c)) / tl.sqrt(tl.load(VAR + c) + eps)
    if WITH_AFFINE:
        y = y * tl.load(W + c) + tl.load(B + c)
    tl.store(Y + row * L + cols, y, mask=mask)


def _bn_eval(with_affine=True, row_c=True):
    def launch(x, mean, var, weight, bias, eps=1e-5):
        n, c, length = x.shape
        y = torch.empty_like(x)
        _bn_eval_kernel[(n * c,)](
            x,
            y,
            mean,
            var,
            weight,
            bias,
            c,
            length,
            eps,
            WITH_AFFINE=with_affine,
            ROW_C=row_c,
            BLOCK_L=triton.next_power_of_2(length),
        )
        return y

    return launch


def test_bn_eval_kernel_check():
    assert ex.check_bn_eval_kernel(_bn_eval())
    no_affine = ex.check_bn_eval_kernel(_bn_eval(with_affine=False))
    assert not no_affine and "Hint" in repr(no_affine)
    assert not ex.check_bn_eval_kernel(_bn_eval(row_c=False))


def test_fused_relu_check():
    def right(x, w, b, eps=1e-5):
        return torch.relu(torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, eps))

    def no_relu(x, w, b, eps=1e-5):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, eps)

    assert ex.check_fused_relu(right)
    assert not ex.check_fused_relu(no_relu)


def test_value_checks():
    assert ex.check_min_bytes(3 * 4096 * 4096 * 4 + 4096 * 4 + 2 * 4096 * 4)
    assert not ex.check_min_bytes(3 * 4096 * 4096 * 4)
    assert ex.check_intensity(2.0)
    assert not ex.check_intensity(1.0)
