"""RMSNorm kernels against torch's native op (float64) and normlib.ref."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, DTYPES, ON_GPU, as64, assert_close, grads, randn

from normlib import ref
from normlib.kernels import rms_norm, rms_norm_forward
from normlib.kernels.layer_norm import _row_config

SHAPES = [  # (input shape, normalized_shape)
    ((1, 1), (1,)),
    ((7, 33), (33,)),
    ((37, 17), (17,)),
    ((2, 3, 4, 5), (4, 5)),
]
if ON_GPU:
    SHAPES += [((4096, 1024), (1024,)), ((64, 12288), (12288,)), ((8, 65536 + 3), (65536 + 3,))]


def check(shape, normalized_shape, dtype, weight=True, eps=None, seed=0):
    x = randn(*shape, dtype=dtype, seed=seed)
    w = (
        randn(*normalized_shape, dtype=dtype, scale=1.0, shift=1.0, seed=seed + 1)
        if weight
        else None
    )
    dy = randn(*shape, dtype=dtype, scale=1.0, shift=0.0, seed=seed + 3, requires_grad=False)
    y = rms_norm(x, normalized_shape, w, eps)
    gx, gw = grads(y, dy, x, w)
    x64, w64 = as64(x, w)
    # eps=None means finfo(x.dtype).eps, as in torch.nn.RMSNorm (torch would use float64's here)
    y64 = F.rms_norm(x64, normalized_shape, w64, torch.finfo(dtype).eps if eps is None else eps)
    rx, rw = grads(y64, dy.double(), x64, w64)
    assert_close(y, y64, dtype)
    assert_close(gx, rx, dtype, grad=True)
    assert_close(gw, rw, dtype, grad=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,normalized_shape", SHAPES, ids=str)
def test_matches_torch(shape, normalized_shape, dtype):
    check(shape, normalized_shape, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,normalized_shape", [((5, 300), (300,)), ((3, 2, 129), (2, 129))])
def test_rows_longer_than_a_tile(small_tiles, shape, normalized_shape, dtype):
    n = int(np.prod(normalized_shape))
    M, dev = int(np.prod(shape)) // n, torch.device(DEVICE)
    assert not _row_config(M, n, dev)[0] and not _row_config(M, n, dev, backward=True)[0]
    check(shape, normalized_shape, dtype)


@pytest.mark.parametrize("long_rows", [False, True])
def test_without_weight_and_explicit_eps(long_rows, request):
    if long_rows:
        request.getfixturevalue("small_tiles")
    check((3, 70), (70,), torch.float32, weight=False, eps=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_matches_reference(dtype):
    x = randn(6, 3, 10, dtype=dtype)
    w = randn(3, 10, dtype=dtype, scale=1.0, shift=1.0, seed=1)
    dy = randn(6, 3, 10, dtype=dtype, scale=1.0, shift=0.0, seed=3, requires_grad=False)
    y, rstd = rms_norm_forward(x.detach(), (3, 10), w.detach(), 1e-6)
    gx, gw = grads(rms_norm(x, (3, 10), w, 1e-6), dy, x, w)
    np_ = [t.detach().cpu().double().numpy() for t in (x, w, dy)]
    ry, cache = ref.rms_norm_forward(np_[0], np_[1], eps=1e-6)
    rx, rw, rb = ref.rms_norm_backward(np_[2], cache)
    assert rb is None
    for got, want, grad in [(y, ry, False), (gx, rx, True), (gw, rw, True)]:
        assert_close(got, torch.from_numpy(want), dtype, grad=grad)
    torch.testing.assert_close(rstd.double().cpu(), torch.from_numpy(cache["rstd"].reshape(6)))


def test_gradcheck():
    x = randn(2, 3, dtype=torch.float64)
    w = randn(3, dtype=torch.float64, scale=1.0, shift=1.0, seed=1)
    fn = lambda x, w: rms_norm(x, (3,), w, 1e-6)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
