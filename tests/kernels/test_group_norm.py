"""GroupNorm (and InstanceNorm as G = C) kernels against torch's native ops and normlib.ref."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import DTYPES, ON_GPU, as64, assert_close, grads, randn

from normlib import ref
from normlib.kernels import group_norm, group_norm_forward
from normlib.kernels.group_norm import _config

SHAPES = [  # (input shape, num_groups)
    ((2, 6, 5, 3), 3),
    ((3, 4, 7, 5), 2),
    ((2, 5), 5),  # no spatial dims; one channel per group
    ((2, 4, 33), 4),  # G = C: InstanceNorm1d
    ((1, 6, 3, 3), 1),  # G = 1: LayerNorm's statistics, per-channel affine
    ((2, 6, 2, 3, 3), 3),  # 3-D spatial
]
if ON_GPU:
    SHAPES += [((8, 320, 32, 32), 32), ((2, 64, 128, 128), 32), ((4, 128, 27, 27), 32)]


def check(shape, G, dtype, affine=(True, True), seed=0):
    C = shape[1]
    x = randn(*shape, dtype=dtype, seed=seed)
    w = randn(C, dtype=dtype, scale=1.0, shift=1.0, seed=seed + 1) if affine[0] else None
    b = randn(C, dtype=dtype, scale=1.0, shift=0.0, seed=seed + 2) if affine[1] else None
    dy = randn(*shape, dtype=dtype, scale=1.0, shift=0.0, seed=seed + 3, requires_grad=False)
    y = group_norm(x, G, w, b, 1e-5)
    gx, gw, gb = grads(y, dy, x, w, b)
    x64, w64, b64 = as64(x, w, b)
    # torch's own backward fails ("tensor does not have a device") for a bias without a weight;
    # a weight of ones is the same function
    ones = torch.ones(C, dtype=torch.float64, device=x64.device)
    y64 = F.group_norm(x64, G, ones if w64 is None else w64, b64, 1e-5)
    rx, rw, rb = grads(y64, dy.double(), x64, w64, b64)
    assert_close(y, y64, dtype)
    assert_close(gx, rx, dtype, grad=True)
    assert_close(gw, rw, dtype, grad=True)
    assert_close(gb, rb, dtype, grad=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,G", SHAPES, ids=str)
def test_matches_torch(shape, G, dtype):
    check(shape, G, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "shape,G", [((2, 4, 9, 11), 2), ((2, 6, 70), 2), ((2, 130, 1), 1)], ids=str
)
def test_groups_longer_than_a_tile(small_tiles, shape, G, dtype):
    hw = shape[2] * (shape[3] if len(shape) > 3 else 1)
    assert not _config(shape[1] // G, hw)[0]  # the two-pass loop
    check(shape, G, dtype)


@pytest.mark.parametrize("long_rows", [False, True])
@pytest.mark.parametrize("affine", [(True, False), (False, True), (False, False)], ids=str)
def test_without_weight_or_bias(affine, long_rows, request):
    if long_rows:
        request.getfixturevalue("small_tiles")
    check((2, 4, 5, 9), 2, torch.float32, affine=affine)


def test_instance_norm_is_group_norm_with_one_channel_per_group():
    x = randn(3, 4, 6, 5)
    y = group_norm(x, 4)
    torch.testing.assert_close(y, F.instance_norm(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_matches_reference(dtype):
    x = randn(3, 6, 4, 5, dtype=dtype)
    w = randn(6, dtype=dtype, scale=1.0, shift=1.0, seed=1)
    b = randn(6, dtype=dtype, scale=1.0, shift=0.0, seed=2)
    dy = randn(3, 6, 4, 5, dtype=dtype, scale=1.0, shift=0.0, seed=3, requires_grad=False)
    y, mean, rstd = group_norm_forward(x.detach(), 2, w.detach(), b.detach(), 1e-5)
    gx, gw, gb = grads(group_norm(x, 2, w, b, 1e-5), dy, x, w, b)
    np_ = [t.detach().cpu().double().numpy() for t in (x, w, b, dy)]
    ry, cache = ref.group_norm_forward(np_[0], np_[1], np_[2], num_groups=2, eps=1e-5)
    rx, rw, rb = ref.group_norm_backward(np_[3], cache)
    for got, want, grad in [(y, ry, False), (gx, rx, True), (gw, rw, True), (gb, rb, True)]:
        assert_close(got, torch.from_numpy(want), dtype, grad=grad)
    assert mean.shape == (3, 2)
    torch.testing.assert_close(mean.double().cpu(), torch.from_numpy(cache["mean"]))
    torch.testing.assert_close(
        rstd.double().cpu(), torch.from_numpy(cache["rstd"].reshape(3, 2)), rtol=1e-5, atol=0
    )


@pytest.mark.parametrize("long_rows", [False, True])
def test_large_mean_keeps_the_variance(long_rows, monkeypatch):
    if long_rows:
        monkeypatch.setattr("normlib.kernels._common.LIMITS.tile", 64)
        monkeypatch.setattr("normlib.kernels._common.LIMITS.row_elems", 64)
    x = randn(2, 4, 10, 12, scale=1.0, shift=1e4, requires_grad=False)
    _, _, rstd = group_norm_forward(x, 2, eps=0.0)
    var64 = x.double().view(2, 2, -1).var(-1, unbiased=False)
    torch.testing.assert_close(rstd.double(), var64.rsqrt(), rtol=1e-5, atol=0)


def test_gradcheck():
    x = randn(2, 4, 3, dtype=torch.float64)
    w = randn(4, dtype=torch.float64, scale=1.0, shift=1.0, seed=1)
    b = randn(4, dtype=torch.float64, scale=1.0, shift=0.0, seed=2)
    fn = lambda x, w, b: group_norm(x, 2, w, b, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)
