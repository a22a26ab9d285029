"""LayerNorm kernels against torch's native op (float64) and normlib.ref."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, DTYPES, ON_GPU, as64, assert_close, grads, randn

from normlib import ref
from normlib.kernels import layer_norm, layer_norm_forward
from normlib.kernels.layer_norm import _row_config

SHAPES = [  # (input shape, normalized_shape)
    ((1, 1), (1,)),
    ((7, 33), (33,)),  # prime length, padded tile
    ((37, 17), (17,)),  # several rows per program, a ragged last block
    ((2, 3, 4, 5), (4, 5)),  # two normalized dims
]
if ON_GPU:
    SHAPES += [((4096, 1024), (1024,)), ((64, 12288), (12288,)), ((8, 65536 + 3), (65536 + 3,))]


def check(shape, normalized_shape, dtype, affine=(True, True), seed=0):
    x = randn(*shape, dtype=dtype, seed=seed)
    w = (
        randn(*normalized_shape, dtype=dtype, scale=1.0, shift=1.0, seed=seed + 1)
        if affine[0]
        else None
    )
    b = (
        randn(*normalized_shape, dtype=dtype, scale=1.0, shift=0.0, seed=seed + 2)
        if affine[1]
        else None
    )
    dy = randn(*shape, dtype=dtype, scale=1.0, shift=0.0, seed=seed + 3, requires_grad=False)
    y = layer_norm(x, normalized_shape, w, b, 1e-5)
    gx, gw, gb = grads(y, dy, x, w, b)
    x64, w64, b64 = as64(x, w, b)
    y64 = F.layer_norm(x64, normalized_shape, w64, b64, 1e-5)
    rx, rw, rb = grads(y64, dy.double(), x64, w64, b64)
    assert y.shape == x.shape
    assert_close(y, y64, dtype)
    assert_close(gx, rx, dtype, grad=True)
    assert_close(gw, rw, dtype, grad=True)
    assert_close(gb, rb, dtype, grad=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,normalized_shape", SHAPES, ids=str)
def test_matches_torch(shape, normalized_shape, dtype):
    check(shape, normalized_shape, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,normalized_shape", [((5, 300), (300,)), ((3, 2, 129), (2, 129))])
def test_rows_longer_than_a_tile(small_tiles, shape, normalized_shape, dtype):
    n = int(np.prod(normalized_shape))
    M, dev = int(np.prod(shape)) // n, torch.device(DEVICE)
    assert (
        not _row_config(M, n, dev)[0] and not _row_config(M, n, dev, backward=True)[0]
    )  # the loop path
    check(shape, normalized_shape, dtype)


@pytest.mark.parametrize("long_rows", [False, True])
@pytest.mark.parametrize("affine", [(True, False), (False, True), (False, False)], ids=str)
def test_without_weight_or_bias(affine, long_rows, request):
    if long_rows:
        request.getfixturevalue("small_tiles")
    check((3, 70), (70,), torch.float32, affine=affine)


def test_mixed_precision_weight():
    """bfloat16 input with float32 parameters: output bfloat16, parameter gradients float32."""
    x = randn(6, 40, dtype=torch.bfloat16)
    w = randn(40, scale=1.0, shift=1.0, seed=1)
    b = randn(40, scale=1.0, shift=0.0, seed=2)
    y = layer_norm(x, (40,), w, b, 1e-5)
    assert y.dtype == torch.bfloat16
    dy = torch.ones_like(y)
    _, gw, gb = grads(y, dy, x, w, b)
    x64, w64, b64 = as64(x, w, b)
    _, rw, rb = grads(F.layer_norm(x64, (40,), w64, b64), dy.double(), x64, w64, b64)
    torch.testing.assert_close(gw.double(), rw, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gb.double(), rb, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_matches_reference(dtype):
    """Forward, saved statistics and backward against normlib.ref (NumPy, float64)."""
    x = randn(6, 3, 10, dtype=dtype)
    w = randn(3, 10, dtype=dtype, scale=1.0, shift=1.0, seed=1)
    b = randn(3, 10, dtype=dtype, scale=1.0, shift=0.0, seed=2)
    dy = randn(6, 3, 10, dtype=dtype, scale=1.0, shift=0.0, seed=3, requires_grad=False)
    y, mean, rstd = layer_norm_forward(x.detach(), (3, 10), w.detach(), b.detach(), 1e-5)
    gx, gw, gb = grads(layer_norm(x, (3, 10), w, b, 1e-5), dy, x, w, b)
    np_ = [t.detach().cpu().double().numpy() for t in (x, w, b, dy)]
    ry, cache = ref.layer_norm_forward(np_[0], np_[1], np_[2], eps=1e-5)
    rx, rw, rb = ref.layer_norm_backward(np_[3], cache)
    for got, want, grad in [(y, ry, False), (gx, rx, True), (gw, rw, True), (gb, rb, True)]:
        assert_close(got, torch.from_numpy(want), dtype, grad=grad)
    assert mean.dtype == rstd.dtype == dtype and mean.shape == (6,)
    torch.testing.assert_close(mean.double().cpu(), torch.from_numpy(cache["mean"].reshape(6)))
    torch.testing.assert_close(rstd.double().cpu(), torch.from_numpy(cache["rstd"].reshape(6)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_inputs_give_float32_statistics(dtype):
    _, mean, rstd = layer_norm_forward(randn(4, 8, dtype=dtype, requires_grad=False), (8,))
    assert mean.dtype == rstd.dtype == torch.float32


@pytest.mark.parametrize("long_rows", [False, True])
def test_large_mean_keeps_the_variance(long_rows, monkeypatch):
    """mean 1e4, std 1 in float32: E[x^2] - E[x]^2 would lose every digit; Welford/Chan does not."""
    if long_rows:
        monkeypatch.setattr("normlib.kernels._common.LIMITS.tile", 64)
        monkeypatch.setattr("normlib.kernels._common.LIMITS.row_elems", 64)
    x = randn(4, 500, scale=1.0, shift=1e4, requires_grad=False)
    _, mean, rstd = layer_norm_forward(x, (500,), eps=0.0)
    var64 = x.double().var(-1, unbiased=False)
    torch.testing.assert_close(rstd.double(), var64.rsqrt(), rtol=1e-5, atol=0)


def test_gradcheck():
    x = randn(2, 3, dtype=torch.float64)
    w = randn(3, dtype=torch.float64, scale=1.0, shift=1.0, seed=1)
    b = randn(3, dtype=torch.float64, scale=1.0, shift=0.0, seed=2)
    fn = lambda x, w, b: layer_norm(x, (3,), w, b, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)


def test_non_contiguous_input():
    x = randn(8, 24)[:, ::2]  # stride 2 along the normalized dim
    y = layer_norm(x, (12,))
    torch.testing.assert_close(y, F.layer_norm(x, (12,)), atol=1e-5, rtol=1e-5)
