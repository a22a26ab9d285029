"""normlib.nn.GroupNorm against torch.nn.GroupNorm: values, gradients, layouts, dtypes, errors."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import normlib.nn as nl

from ._helpers import assert_same_error, make_pair, run_pair


def _x(shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 - 0.7).to(dtype)


CASES = [
    (2, (3, 6, 5, 4)),
    (3, (2, 6, 7)),
    (1, (2, 5, 3, 3)),  # G = 1: LayerNorm-like sets
    (5, (2, 5, 3, 2)),  # G = C: InstanceNorm-like sets
    (2, (4, 6)),  # no spatial dims
    (7, (1, 7, 2, 1, 3)),  # 3 spatial dims, N = 1
    (1, (1, 2)),  # two values in the only group
]
CONFIGS = [{}, {"affine": False}, {"bias": False}, {"eps": 1e-3}]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("groups,shape", CASES, ids=str)
def test_matches_torch(groups, shape, config, train, dtype):
    make = lambda ns: ns.GroupNorm(groups, shape[1], **config)  # noqa: E731
    run_pair(make, _x(shape, dtype), train=train, dtype=dtype)


@pytest.mark.parametrize(
    "x",
    [
        _x((2, 6, 4, 5)).to(memory_format=torch.channels_last),
        _x((2, 6, 3, 4, 5)).to(memory_format=torch.channels_last_3d),
        _x((2, 5, 4, 6)).transpose(1, 3),
        _x((2, 6, 8, 5))[:, :, ::2],
        _x((2, 6, 4, 5)).to(memory_format=torch.channels_last)[..., 1:],
        _x((1, 5, 1, 6)).transpose(1, 3),  # ambiguous strides
    ],
    ids=["channels_last", "channels_last_3d", "transposed", "sliced", "cl-sliced", "ambiguous"],
)
def test_layouts_match_torch(x):
    run_pair(lambda ns: ns.GroupNorm(3, 6), x)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
def test_half_input(half):
    ref, ours = run_pair(lambda ns: ns.GroupNorm(2, 8), _x((4, 8, 5, 5), half), dtype=torch.float32)
    assert ours(_x((4, 8, 5, 5), half)).dtype == half


def test_empty_and_nan():
    run_pair(lambda ns: ns.GroupNorm(2, 4), _x((0, 4, 3)))
    run_pair(lambda ns: ns.GroupNorm(1, 0), _x((2, 0, 3)))
    x = _x((2, 4, 3))
    x[0, 0, 0], x[1, 3, 1] = float("nan"), float("-inf")
    run_pair(lambda ns: ns.GroupNorm(2, 4), x)


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_repr_pickle(config):
    reference, ours = make_pair(lambda ns: ns.GroupNorm(2, 6, **config))
    assert repr(ours) == repr(reference)
    assert list(ours.state_dict()) == list(reference.state_dict())
    torch.nn.GroupNorm(2, 6, **config).double().load_state_dict(ours.state_dict(), strict=True)
    x = _x((2, 6, 3))
    torch.testing.assert_close(pickle.loads(pickle.dumps(ours))(x), copy.deepcopy(ours)(x))


def test_device_dtype_kwargs():
    m = nl.GroupNorm(2, 4, dtype=torch.float64)
    assert m.weight.dtype == torch.float64
    assert nl.GroupNorm(2, 4, device="meta").bias.is_meta


ERRORS = {
    "constructor divisibility": lambda nn, F: nn.GroupNorm(2, 3),
    "constructor zero groups": lambda nn, F: nn.GroupNorm(0, 3),
    "F divisibility": lambda nn, F: F.group_norm(torch.randn(2, 6, 4), 4),
    "F divisibility before weight": lambda nn, F: F.group_norm(
        torch.randn(2, 6, 3), 4, torch.ones(3)
    ),
    "channels": lambda nn, F: nn.GroupNorm(2, 4)(torch.randn(2, 6, 4)),
    "channels no affine": lambda nn, F: nn.GroupNorm(2, 4, affine=False)(torch.randn(2, 6, 4)),
    "1d input": lambda nn, F: nn.GroupNorm(2, 4)(torch.randn(4)),
    "one value per group": lambda nn, F: nn.GroupNorm(2, 2)(torch.randn(1, 2)),
    "one value per group 3d": lambda nn, F: nn.GroupNorm(2, 2)(torch.randn(1, 2, 1)),
    "F zero groups": lambda nn, F: F.group_norm(torch.randn(2, 4, 3), 0),
    "F negative groups": lambda nn, F: F.group_norm(torch.randn(2, 4, 3), -2),
    "F float groups": lambda nn, F: F.group_norm(torch.randn(2, 4, 3), 2.0),
    "F weight size": lambda nn, F: F.group_norm(torch.randn(2, 4, 3), 2, torch.ones(3)),
    "F weight 2d": lambda nn, F: F.group_norm(torch.randn(2, 4, 3), 2, torch.ones(4, 1)),
    "F bias size (torch prints the weight's shape)": lambda nn, F: F.group_norm(
        torch.randn(2, 4, 3), 2, None, torch.ones(3)
    ),
    "F bias size with weight": lambda nn, F: F.group_norm(
        torch.randn(2, 4, 3), 2, torch.ones(4), torch.ones(3)
    ),
    "integer input": lambda nn, F: nn.GroupNorm(2, 4)(torch.ones(2, 4, 3, dtype=torch.long)),
    "integer input no params": lambda nn, F: F.group_norm(torch.ones(2, 4, 3, dtype=torch.long), 2),
    "complex input": lambda nn, F: F.group_norm(torch.ones(2, 4, 3).cfloat(), 2),
    "fp64 input fp32 params": lambda nn, F: nn.GroupNorm(2, 4)(torch.randn(2, 4, 3).double()),
    "fp32 input fp64 params": lambda nn, F: nn.GroupNorm(2, 4).double()(torch.randn(2, 4, 3)),
    "fp32 input bf16 params": lambda nn, F: nn.GroupNorm(2, 4).bfloat16()(torch.randn(2, 4, 3)),
    "fp32 weight fp64 bias": lambda nn, F: F.group_norm(
        torch.randn(2, 4, 3), 2, torch.ones(4), torch.ones(4).double()
    ),
    "half weight fp32 bias": lambda nn, F: F.group_norm(
        torch.randn(2, 4, 3).half(), 2, torch.ones(4).half(), torch.ones(4)
    ),
    "empty divisibility": lambda nn, F: F.group_norm(torch.ones(0, 3, 4), 2),
    "empty mixed": lambda nn, F: F.group_norm(torch.randn(0, 3).double(), 1, torch.ones(3)),
    "eps zero allowed": lambda nn, F: F.group_norm(torch.randn(2, 4, 3), 2, eps=0.0),
}


@pytest.mark.parametrize("call", ERRORS.values(), ids=ERRORS.keys())
def test_errors_match_torch(call):
    assert_same_error(call)
