"""BatchNorm kernels (training and eval, NCHW and channels_last, fused and split reductions) against
torch's native op (float64) and normlib.ref."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, DTYPES, ON_GPU, as64, assert_close, grads, randn

from normlib import ref
from normlib.kernels import batch_norm_eval, batch_norm_forward, batch_norm_train
from normlib.kernels.batch_norm import _layout, _split_config

SHAPES = [  # (shape, channels_last)
    ((4, 3, 5, 7), False),
    ((4, 3, 5, 7), True),
    ((9, 5), False),  # BatchNorm1d on (N, C)
    ((3, 4, 10), False),  # BatchNorm1d on (N, C, L)
    ((2, 3, 2, 3, 3), True),  # BatchNorm3d, channels_last_3d
    ((2, 1, 3, 3), False),  # one channel
]
if ON_GPU:
    SHAPES += [((32, 64, 56, 56), False), ((32, 64, 56, 56), True), ((64, 512, 7, 7), False)]


def to_layout(x, channels_last):
    if not channels_last:
        return x
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    return x.detach().to(memory_format=fmt).requires_grad_(x.requires_grad)


def inputs(shape, dtype, channels_last, affine=(True, True), seed=0):
    C = shape[1]
    x = to_layout(randn(*shape, dtype=dtype, seed=seed), channels_last)
    w = randn(C, dtype=dtype, scale=1.0, shift=1.0, seed=seed + 1) if affine[0] else None
    b = randn(C, dtype=dtype, scale=1.0, shift=0.0, seed=seed + 2) if affine[1] else None
    dy = randn(*shape, dtype=dtype, scale=1.0, shift=0.0, seed=seed + 3, requires_grad=False)
    return x, w, b, to_layout(dy, channels_last)


def check_train(shape, dtype, channels_last, affine=(True, True)):
    x, w, b, dy = inputs(shape, dtype, channels_last, affine)
    y, mean, var = batch_norm_train(x, w, b, 1e-5)
    gx, gw, gb = grads(y, dy, x, w, b)
    x64, w64, b64 = as64(x, w, b)
    y64 = F.batch_norm(x64, None, None, w64, b64, training=True, eps=1e-5)
    rx, rw, rb = grads(y64, dy.double(), x64, w64, b64)
    assert_close(y, y64, dtype)
    assert_close(gx, rx, dtype, grad=True)
    assert_close(gw, rw, dtype, grad=True)
    assert_close(gb, rb, dtype, grad=True)
    dims = (0, *range(2, x.dim()))
    stat_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert mean.dtype == var.dtype == stat_dtype and not mean.requires_grad
    torch.testing.assert_close(mean.double(), x64.mean(dims), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var.double(), x64.var(dims, unbiased=False), atol=1e-5, rtol=1e-5)
    if channels_last:  # the output and dx keep the input's memory format
        assert y.stride() == x.stride() and gx.stride() == x.stride()


def check_eval(shape, dtype, channels_last, affine=(True, True)):
    x, w, b, dy = inputs(shape, dtype, channels_last, affine)
    C = shape[1]
    running_mean = randn(C, seed=7, requires_grad=False)
    running_var = randn(C, seed=8, scale=0.5, shift=2.0, requires_grad=False).abs()
    y = batch_norm_eval(x, running_mean, running_var, w, b, 1e-5)
    gx, gw, gb = grads(y, dy, x, w, b)
    x64, w64, b64 = as64(x, w, b)
    rm, rv = running_mean.double(), running_var.double()
    y64 = F.batch_norm(x64, rm, rv, w64, b64, training=False, eps=1e-5)
    rx, rw, rb = grads(y64, dy.double(), x64, w64, b64)
    assert_close(y, y64, dtype)
    assert_close(gx, rx, dtype, grad=True)
    assert_close(gw, rw, dtype, grad=True)
    assert_close(gb, rb, dtype, grad=True)
    if channels_last:
        assert y.stride() == x.stride()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,channels_last", SHAPES, ids=str)
def test_train_matches_torch(shape, channels_last, dtype):
    check_train(shape, dtype, channels_last)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,channels_last", SHAPES, ids=str)
def test_eval_matches_torch(shape, channels_last, dtype):
    check_eval(shape, dtype, channels_last)


def assert_path(path, shape, channels_last):
    """The launcher takes the ``path`` ("fused" or "split") the test is about."""
    N, C, HW = shape[0], shape[1], int(torch.tensor(shape[2:]).prod())
    grid, _, block_r, block_k, _ = _split_config(
        channels_last or HW == 1, N, C, HW, torch.device(DEVICE)
    )
    assert (grid[1] == 1) == (path == "fused"), grid
    if path == "fused":  # and the programs loop over several tiles
        rows = N * HW if channels_last or HW == 1 else N
        assert block_r < rows or block_k < HW


SPLIT_SHAPES = [((6, 3, 5, 7), False), ((6, 3, 5, 7), True), ((40, 5), False)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,channels_last", SPLIT_SHAPES, ids=str)
def test_train_split_reduction(split_programs, small_tiles, shape, channels_last, dtype):
    """Each channel's values split across programs, merged with Chan, then normalized."""
    assert_path("split", shape, channels_last)
    check_train(shape, dtype, channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,channels_last", SPLIT_SHAPES, ids=str)
def test_train_fused_multi_tile(fused_programs, small_tiles, shape, channels_last, dtype):
    """One program per channel (block), streaming it in several tiles, twice."""
    assert_path("fused", shape, channels_last)
    check_train(shape, dtype, channels_last)


@pytest.mark.parametrize("path", ["fused", "split"])
@pytest.mark.parametrize("affine", [(True, False), (False, True), (False, False)], ids=str)
def test_without_weight_or_bias(affine, path, request):
    request.getfixturevalue(f"{path}_programs")
    request.getfixturevalue("small_tiles")
    assert_path(path, (4, 3, 5, 7), False)
    check_train((4, 3, 5, 7), torch.float32, False, affine)
    check_eval((4, 3, 5, 7), torch.float32, True, affine)


def test_layout_choice():
    x = torch.zeros(2, 3, 4, 5)
    assert _layout(x)[1] is False
    assert _layout(x.to(memory_format=torch.channels_last))[1] is True
    assert _layout(torch.zeros(2, 3))[1] is True  # (N, C) is a channels-last matrix already


def test_non_contiguous_input():
    x = randn(4, 3, 6, 8)[:, :, ::2, 1:]  # neither NCHW- nor channels_last-contiguous
    y, _, _ = batch_norm_train(x, None, None, 1e-5)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, training=True), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_matches_reference(dtype):
    x, w, b, dy = inputs((5, 3, 4, 3), dtype, False)
    y, mean, var = batch_norm_forward(x.detach(), w.detach(), b.detach(), 1e-5)
    gx, gw, gb = grads(batch_norm_train(x, w, b, 1e-5)[0], dy, x, w, b)
    np_ = [t.detach().cpu().double().numpy() for t in (x, w, b, dy)]
    ry, cache = ref.batch_norm_forward(np_[0], np_[1], np_[2], eps=1e-5)
    rx, rw, rb = ref.batch_norm_backward(np_[3], cache)
    for got, want, grad in [(y, ry, False), (gx, rx, True), (gw, rw, True), (gb, rb, True)]:
        assert_close(got, torch.from_numpy(want), dtype, grad=grad)
    torch.testing.assert_close(mean.double().cpu(), torch.from_numpy(cache["mean"]))
    torch.testing.assert_close(var.double().cpu(), torch.from_numpy(cache["var"]))


@pytest.mark.parametrize("path", ["fused", "split"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_large_mean_keeps_the_variance(path, channels_last, request):
    """mean 1e4, std 1 in float32: per-tile two-pass statistics merged with Chan keep the
    variance; E[x^2] - E[x]^2 would return noise (or a negative number)."""
    request.getfixturevalue(f"{path}_programs")
    request.getfixturevalue("small_tiles")
    x = to_layout(randn(8, 3, 6, 5, scale=1.0, shift=1e4, requires_grad=False), channels_last)
    _, _, var = batch_norm_forward(x, None, None, 1e-5)
    var64 = x.double().var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(var.double(), var64, rtol=1e-5, atol=0)


def test_gradcheck():
    x = randn(3, 2, 2, dtype=torch.float64)
    w = randn(2, dtype=torch.float64, scale=1.0, shift=1.0, seed=1)
    b = randn(2, dtype=torch.float64, scale=1.0, shift=0.0, seed=2)
    fn = lambda x, w, b: batch_norm_train(x, w, b, 1e-5)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)
    rm = torch.zeros(2, dtype=torch.float64, device=x.device)
    rv = torch.ones(2, dtype=torch.float64, device=x.device)
    fn_eval = lambda x, w, b: batch_norm_eval(x, rm, rv, w, b, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn_eval, (x, w, b), fast_mode=True)


def test_double_backward_is_refused():
    """The kernels' backward is not differentiable: create_graph must fail loudly, not be wrong."""
    x, w, b, dy = inputs((4, 3, 2, 2), torch.float64, False)
    (gx,) = torch.autograd.grad(batch_norm_train(x, w, b, 1e-5)[0], x, dy, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()
