"""normlib.nn.fusion: the folded layer equals conv/linear → eval BatchNorm, and torch's fusion."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.utils.fusion as tfusion
from torch import nn
from torch.testing import assert_close

from normlib.nn import fusion

try:
    NNLIB = importlib.import_module("normlib.nn")
    HAVE_NORMLIB_NN = hasattr(NNLIB, "BatchNorm2d")
except ImportError:  # normlib.nn not there yet: the torch.nn half of the tests still runs
    NNLIB, HAVE_NORMLIB_NN = None, False

LIBS = [
    "torch",
    pytest.param("normlib", marks=pytest.mark.skipif(not HAVE_NORMLIB_NN, reason="no normlib.nn")),
]
TIGHT = {"rtol": 1e-12, "atol": 1e-12}  # fp64: only rounding differs between folded and unfolded


def batch_norm(lib, dims, num_features, *, affine=True, dtype=torch.float64, seed=0):
    """An eval-mode BatchNorm{dims}d with random running stats (and gamma/beta when affine)."""
    mod = nn if lib == "torch" else NNLIB
    bn = getattr(mod, f"BatchNorm{dims}d")(num_features, affine=affine, eps=1e-3, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(num_features, generator=g, dtype=dtype))
        bn.running_var.copy_(torch.rand(num_features, generator=g, dtype=dtype) * 3 + 0.1)
        if affine:
            bn.weight.copy_(torch.randn(num_features, generator=g, dtype=dtype))
            bn.bias.copy_(torch.randn(num_features, generator=g, dtype=dtype))
    return bn.eval()


def conv(dims, c_in, c_out, *, bias=True, transpose=False, groups=1, dtype=torch.float64):
    kind = f"ConvTranspose{dims}d" if transpose else f"Conv{dims}d"
    return getattr(nn, kind)(
        c_in, c_out, 3, padding=1, bias=bias, groups=groups, dtype=dtype
    ).eval()


def same_parameters(got, expected):
    """Folded weight/bias equal torch's, as Parameters with the same dtype and requires_grad."""
    for name in ("weight", "bias"):
        g, e = getattr(got, name), getattr(expected, name)
        assert isinstance(g, nn.Parameter)
        assert g.requires_grad == e.requires_grad, name
        assert_close(g, e, **TIGHT)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_conv_bn_matches_unfolded_and_torch(lib, dims, transpose, bias, affine):
    torch.manual_seed(dims)
    c = conv(dims, 3, 5, bias=bias, transpose=transpose)
    bn = batch_norm(lib, dims, 5, affine=affine, seed=dims)
    x = torch.randn(2, 3, *[6] * dims, dtype=torch.float64)
    before = {k: v.clone() for k, v in [*c.state_dict().items(), *bn.state_dict().items()]}
    fused = fusion.fuse_conv_bn_eval(c, bn, transpose=transpose)
    assert type(fused) is type(c) and fused is not c
    assert_close(fused(x), bn(c(x)), **TIGHT)
    same_parameters(fused, tfusion.fuse_conv_bn_eval(c, bn, transpose=transpose))
    after = dict([*c.state_dict().items(), *bn.state_dict().items()])
    assert all(torch.equal(before[k], after[k]) for k in before)  # fusion works on copies


def test_grouped_conv():
    torch.manual_seed(0)
    c, bn = conv(2, 4, 6, groups=2), batch_norm("torch", 2, 6)
    x = torch.randn(3, 4, 5, 7, dtype=torch.float64)
    fused = fusion.fuse_conv_bn_eval(c, bn)
    assert_close(fused(x), bn(c(x)), **TIGHT)
    same_parameters(fused, tfusion.fuse_conv_bn_eval(c, bn))


@pytest.mark.parametrize("transpose", [False, True])
def test_conv_bn_weights_matches_torch(transpose):
    torch.manual_seed(1)
    c, bn = conv(2, 3, 4, transpose=transpose), batch_norm("torch", 2, 4)
    args = (c.weight, c.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    got = fusion.fuse_conv_bn_weights(*args, transpose=transpose)
    expected = tfusion.fuse_conv_bn_weights(*args, transpose=transpose)
    for g, e in zip(got, expected):
        assert isinstance(g, nn.Parameter) and g.requires_grad == e.requires_grad
        assert_close(g, e, **TIGHT)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_linear_bn_matches_unfolded_and_torch(lib, bias, affine):
    torch.manual_seed(2)
    lin = nn.Linear(7, 5, bias=bias, dtype=torch.float64).eval()
    bn = batch_norm(lib, 1, 5, affine=affine, seed=2)
    x = torch.randn(11, 7, dtype=torch.float64)
    fused = fusion.fuse_linear_bn_eval(lin, bn)
    assert isinstance(fused, nn.Linear) and fused is not lin
    assert_close(fused(x), bn(lin(x)), **TIGHT)
    if affine:
        same_parameters(fused, tfusion.fuse_linear_bn_eval(lin, bn))
    else:  # torch 2.13 multiplies None by a tensor here; ours treats it as gamma=1, beta=0
        with pytest.raises(TypeError):
            tfusion.fuse_linear_bn_eval(lin, bn)


def test_linear_bn_single_feature_broadcasts():
    torch.manual_seed(3)
    lin, bn = nn.Linear(4, 6, dtype=torch.float64).eval(), batch_norm("torch", 1, 1)
    x = torch.randn(5, 4, dtype=torch.float64)
    fused = fusion.fuse_linear_bn_eval(lin, bn)
    # BatchNorm1d(1) on (N, 6) would reject the shape; its map is y = scale * (z - mean) + beta
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert_close(fused(x), scale * (lin(x) - bn.running_mean) + bn.bias, **TIGHT)
    same_parameters(fused, tfusion.fuse_linear_bn_eval(lin, bn))


def test_float32_close_and_dtypes_kept():
    torch.manual_seed(4)
    c = conv(2, 3, 8, dtype=torch.float32)
    bn = batch_norm("torch", 2, 8, dtype=torch.float64)  # mixed: outputs keep the conv's dtype
    fused = fusion.fuse_conv_bn_eval(c, bn)
    expected = tfusion.fuse_conv_bn_eval(c, bn)
    assert fused.weight.dtype == fused.bias.dtype == torch.float32
    assert_close(fused.weight, expected.weight)
    assert_close(fused.bias, expected.bias)
    x = torch.randn(2, 3, 9, 9)
    assert_close(fused(x), bn(c(x).double()).float(), rtol=1e-5, atol=1e-5)


def error_of(fn, *args):
    with pytest.raises(AssertionError) as info:
        fn(*args)
    return str(info.value)


@pytest.mark.parametrize("lib", LIBS)
def test_errors_match_torch(lib):
    c, bn = conv(2, 3, 4), batch_norm(lib, 2, 4)
    for train_which in ("conv", "bn"):
        (c if train_which == "conv" else bn).train()
        ours = error_of(fusion.fuse_conv_bn_eval, c, bn)
        assert ours == error_of(tfusion.fuse_conv_bn_eval, c, bn) == "Fusion only for eval!"
        c.eval(), bn.eval()
    mod = nn if lib == "torch" else NNLIB
    no_stats = mod.BatchNorm2d(4, track_running_stats=False).double().eval()
    assert error_of(fusion.fuse_conv_bn_eval, c, no_stats) == error_of(
        tfusion.fuse_conv_bn_eval, c, no_stats
    )
    lin, bn1 = nn.Linear(3, 4).eval(), batch_norm(lib, 1, 5)
    ours = error_of(fusion.fuse_linear_bn_eval, lin, bn1)
    assert ours == error_of(tfusion.fuse_linear_bn_eval, lin, bn1)
    assert "out_features=4" in ours and "num_features=5" in ours


def small_cnn(lib):
    mod = nn if lib == "torch" else NNLIB
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        mod.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 6, 3), mod.BatchNorm2d(6), nn.ReLU()),  # nested
        nn.ConvTranspose2d(6, 3, 2, stride=2),
        mod.BatchNorm2d(3),
        nn.Flatten(),
        nn.Linear(3 * 12 * 12, 10),
        mod.BatchNorm1d(10),
        mod.BatchNorm1d(10),  # BN after BN: the second one is not after a conv/linear
    ).double()
    x = torch.randn(64, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(3):  # a few training passes, so the running statistics are not 0 and 1
            model(x * 2 + 1)
    return model.eval()


@pytest.mark.parametrize("lib", LIBS)
def test_fuse_model(lib):
    model = small_cnn(lib)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    fused = fusion.fuse_model(model)
    assert_close(fused(x), model(x), **TIGHT)
    kinds = [type(m).__name__ for m in fused.modules()]
    assert sum("BatchNorm" in k for k in kinds) == 1  # only the BN after a BN is left
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[3][1], nn.Identity)
    assert sum("BatchNorm" in type(m).__name__ for m in model.modules()) == 5  # model untouched
    assert model[0].bias is None and fused[0].bias is not None  # the folded conv gained a bias


def test_fuse_model_leaves_unfoldable_pairs():
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4, track_running_stats=False), nn.Linear(5, 5)
    ).eval()
    fused = fusion.fuse_model(model)
    assert isinstance(fused[1], nn.BatchNorm2d)  # eval with batch statistics: nothing to fold
    x = torch.randn(3, 2, 5, 5)
    assert_close(fused(x), model(x))
    with pytest.raises(AssertionError, match="Fusion only for eval!"):
        fusion.fuse_model(model.train())
