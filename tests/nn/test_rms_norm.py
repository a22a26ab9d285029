"""normlib.nn.RMSNorm against torch.nn.RMSNorm: values, gradients, eps=None, dtype promotion,
layouts, errors."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

import normlib.nn as nl

from ._helpers import TOL, assert_same_error, make_pair, memory_format, run_pair


def _x(shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 1).to(dtype)


CASES = [((4, 7), 7), ((2, 3, 5), (3, 5)), ((13,), 13), ((3, 1), 1), ((2, 2, 3, 5), [2, 3, 5])]
CONFIGS = [{}, {"elementwise_affine": False}, {"eps": 1e-3}, {"eps": 0.0}]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("shape,normalized_shape", CASES, ids=str)
def test_matches_torch(shape, normalized_shape, config, dtype):
    make = lambda ns: ns.RMSNorm(normalized_shape, **config)  # noqa: E731
    run_pair(make, _x(shape, dtype), dtype=dtype)


@pytest.mark.parametrize(
    "x",
    [
        _x((2, 3, 4, 5)).to(memory_format=torch.channels_last),
        _x((2, 3, 4, 2, 5)).to(memory_format=torch.channels_last_3d),
        _x((5, 4, 3)).transpose(0, 2),
        _x((3, 4, 10))[..., ::2],
        _x((2, 3, 4, 5)).to(memory_format=torch.channels_last)[:, :, 1:],
    ],
    ids=["channels_last", "channels_last_3d", "transposed", "sliced", "cl-sliced"],
)
@pytest.mark.parametrize(
    "dy_layout",
    [
        None,
        lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t,
        lambda t: t.transpose(0, -1).contiguous().transpose(0, -1),
    ],
    ids=["dy-contiguous", "dy-channels-last", "dy-transposed"],
)
def test_layouts_match_torch(x, dy_layout):
    """RMSNorm keeps channels_last (torch's suggest_memory_format), unlike LayerNorm; its input
    gradient takes the output gradient's strides (torch's RMSNorm is composite)."""
    run_pair(lambda ns: ns.RMSNorm(x.shape[-1]), x, dy_layout=dy_layout)


@pytest.mark.parametrize(
    "x_dtype,w_dtype",
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float16),
        (torch.float16, torch.bfloat16),
        (torch.float32, torch.bfloat16),
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
    ],
    ids=str,
)
def test_dtype_promotion_matches_torch(x_dtype, w_dtype):
    """Unlike the other norms, RMSNorm accepts any weight dtype: the output keeps the input's dtype,
    the weight gradient the weight's."""
    reference, ours = make_pair(lambda ns: ns.RMSNorm(16), w_dtype)
    x = _x((4, 16), x_dtype)
    xa, xb = x.detach().requires_grad_(), x.detach().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that it cannot use its fused kernel
        ya = reference(xa)
    yb = ours(xb)
    assert yb.dtype == ya.dtype == x_dtype
    low = min((x_dtype, w_dtype), key=lambda d: torch.finfo(d).bits)
    tol_out, tol_grad = TOL[low]
    torch.testing.assert_close(yb, ya, **tol_out)
    dy = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, [xa, reference.weight], dy)
    gb = torch.autograd.grad(yb, [xb, ours.weight], dy)
    for a, b in zip(ga, gb):
        assert b.dtype == a.dtype
        torch.testing.assert_close(b, a, **tol_grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_eps_none_is_finfo_of_computation_dtype(dtype):
    """eps=None: finfo(float32).eps for half and float inputs, finfo(float64).eps for doubles; this
    matters for tiny inputs, where eps dominates the mean square."""
    x = torch.full((2, 8), 1e-5, dtype=torch.float64).to(dtype)
    y = nl.RMSNorm(8, elementwise_affine=False)(x)
    torch.testing.assert_close(y, torch.nn.RMSNorm(8, elementwise_affine=False)(x))


def test_empty():
    run_pair(lambda ns: ns.RMSNorm(5), _x((0, 5)))
    run_pair(lambda ns: ns.RMSNorm(0), _x((3, 0)))


def test_nan_inf():
    x = _x((3, 5))
    x[0, 0], x[1, 1] = float("nan"), float("inf")
    run_pair(lambda ns: ns.RMSNorm(5), x)


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_repr_pickle(config):
    reference, ours = make_pair(lambda ns: ns.RMSNorm([3, 4], **config))
    assert repr(ours) == repr(reference)
    assert list(ours.state_dict()) == list(reference.state_dict())
    torch.nn.RMSNorm([3, 4], **config).double().load_state_dict(ours.state_dict(), strict=True)
    x = _x((2, 3, 4))
    torch.testing.assert_close(pickle.loads(pickle.dumps(ours))(x), copy.deepcopy(ours)(x))
    assert memory_format(ours(x)) == "contiguous"


ERRORS = {
    "shape": lambda nn, F: nn.RMSNorm(4)(torch.randn(2, 3, 4, 5)),
    "shape 2d": lambda nn, F: nn.RMSNorm((3, 4))(torch.randn(2, 3, 4, 5)),
    "shape no affine": lambda nn, F: nn.RMSNorm(4, elementwise_affine=False)(torch.randn(2, 5)),
    "too many dims": lambda nn, F: F.rms_norm(torch.randn(5), (2, 5)),
    "too many dims 2d": lambda nn, F: F.rms_norm(torch.randn(3, 5), (2, 3, 5)),
    "too many dims and weight": lambda nn, F: F.rms_norm(torch.randn(5), (2, 5), torch.ones(3)),
    "empty normalized_shape": lambda nn, F: F.rms_norm(torch.randn(3, 5), []),
    "weight shape": lambda nn, F: F.rms_norm(torch.randn(2, 5), (5,), torch.ones(4)),
    "weight before input": lambda nn, F: F.rms_norm(torch.randn(2, 3, 4), (4,), torch.ones(3)),
    "int normalized_shape": lambda nn, F: F.rms_norm(torch.randn(2, 5), 5),
    "integer input": lambda nn, F: nn.RMSNorm(5)(torch.ones(2, 5, dtype=torch.long)),
    "integer input no params": lambda nn, F: F.rms_norm(torch.ones(2, 5, dtype=torch.long), (5,)),
    "1d input": lambda nn, F: F.rms_norm(torch.randn(5), (5,), torch.ones(5)),
}


@pytest.mark.parametrize("call", ERRORS.values(), ids=ERRORS.keys())
def test_errors_match_torch(call):
    assert_same_error(call)
