"""normlib.nn.InstanceNorm1d/2d/3d against torch.nn: values, gradients, running statistics,
unbatched inputs, warnings, state_dict loading of pre-0.4 checkpoints, errors."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

import normlib.nn as nl

from ._helpers import assert_same_error, check_step, make_pair, run_pair

SHAPES = [
    ("InstanceNorm1d", (3, 4, 5)),
    ("InstanceNorm1d", (4, 7)),  # unbatched (C, L)
    ("InstanceNorm2d", (2, 3, 5, 2)),
    ("InstanceNorm2d", (3, 1, 7)),  # unbatched
    ("InstanceNorm3d", (2, 2, 3, 2, 3)),
    ("InstanceNorm1d", (1, 13, 2)),
]
CONFIGS = [
    {},
    {"affine": True},
    {"track_running_stats": True},
    {"affine": True, "track_running_stats": True, "momentum": 0.4},
    {"affine": True, "bias": False, "track_running_stats": True, "momentum": None},
]


def _x(shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 - 0.3).to(dtype)


def _channels(name, shape):
    no_batch = {"InstanceNorm1d": 2, "InstanceNorm2d": 3, "InstanceNorm3d": 4}[name]
    return shape[len(shape) - no_batch]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("name,shape", SHAPES, ids=lambda v: str(v))
def test_matches_torch(name, shape, config, train, dtype):
    c = _channels(name, shape)
    run_pair(
        lambda ns: getattr(ns, name)(c, **config),
        _x(shape, dtype),
        train=train,
        steps=3,
        dtype=dtype,
    )


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "x",
    [_x((2, 3, 4, 5)).to(memory_format=torch.channels_last), _x((2, 5, 4, 3)).transpose(1, 3)],
    ids=["channels_last", "transposed"],
)
def test_layouts_match_torch(x, train):
    """InstanceNorm returns contiguous outputs whatever the input layout, like torch."""
    config = {"affine": True, "track_running_stats": True}
    run_pair(lambda ns: ns.InstanceNorm2d(3, **config), x, train=train)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
def test_half_input(half):
    config = {"affine": True, "track_running_stats": True}
    reference, ours = run_pair(
        lambda ns: ns.InstanceNorm2d(3, **config), _x((2, 3, 4, 5), half), dtype=torch.float32
    )
    assert ours.running_mean.dtype == torch.float32


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(0, 3, 5), (2, 3, 0)])
def test_empty_batch(shape, train):
    """Including torch's quirk: N = 0 with tracking sets the running stats to NaN (an average over
    zero samples)."""
    make = lambda ns: ns.InstanceNorm1d(3, track_running_stats=True)  # noqa: E731
    run_pair(make, _x(shape), train=train)


def test_channel_mismatch_warns_like_torch():
    """affine=False: num_features is unused, a mismatch only warns (same message, as torch)."""
    x = _x((2, 3, 5))
    with pytest.warns(UserWarning) as ours:
        nl.InstanceNorm1d(4)(x)
    with pytest.warns(UserWarning) as theirs:
        torch.nn.InstanceNorm1d(4)(x)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert "input's size at dim=1 does not match num_features" in str(ours[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nl.InstanceNorm1d(3)(x)  # no warning when it matches


@pytest.mark.parametrize("version", [None, 1])
def test_old_checkpoint_with_running_stats(version):
    """A pre-0.4 checkpoint carrying running stats into track_running_stats=False: the same error
    message and the same outcome as torch (strict), and no error when the version says 1."""
    sd = torch.nn.InstanceNorm1d(3, track_running_stats=True).state_dict()
    del sd["num_batches_tracked"]
    if version is None:
        del sd._metadata[""]["version"]
    else:
        sd._metadata[""]["version"] = version

    def load(nn, F):
        return nn.InstanceNorm1d(3).load_state_dict(copy.deepcopy(sd), strict=True)

    error = assert_same_error(load)
    assert (error is not None) == (version is None) or version == 1


def test_old_checkpoint_non_strict_matches_torch():
    """The unexpected running stats are reported even with strict=False (torch's error_msgs)."""
    sd = torch.nn.InstanceNorm1d(3, track_running_stats=True).state_dict()
    del sd._metadata[""]["version"]
    assert_same_error(
        lambda nn, F: nn.InstanceNorm1d(3).load_state_dict(copy.deepcopy(sd), strict=False)
    )


@pytest.mark.parametrize(
    "config", [{}, {"affine": True}, {"track_running_stats": True, "momentum": None}]
)
def test_state_dict_repr_pickle(config):
    reference, ours = make_pair(lambda ns: ns.InstanceNorm2d(3, **config))
    assert repr(ours) == repr(reference)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert ours.state_dict()._metadata[""]["version"] == 2
    fresh = torch.nn.InstanceNorm2d(3, **config).double()
    fresh.load_state_dict(ours.state_dict(), strict=True)
    clone = pickle.loads(pickle.dumps(ours))
    x = _x((2, 3, 4, 4))
    torch.testing.assert_close(clone(x), copy.deepcopy(ours)(x))


def test_momentum_none_means_no_update():
    """torch passes momentum 0.0 for momentum=None: the running stats never move."""
    reference, ours = make_pair(
        lambda ns: ns.InstanceNorm1d(3, momentum=None, track_running_stats=True)
    )
    check_step(reference, ours, _x((2, 3, 5)))
    assert int(ours.num_batches_tracked) == 0


ERRORS = {
    "rank": lambda nn, F: nn.InstanceNorm2d(3)(torch.randn(3, 4)),
    "rank 1d": lambda nn, F: nn.InstanceNorm1d(3)(torch.randn(2, 3, 4, 5)),
    "rank 3d": lambda nn, F: nn.InstanceNorm3d(3)(torch.randn(2, 3)),
    "affine channels": lambda nn, F: nn.InstanceNorm2d(4, affine=True)(torch.randn(2, 3, 4, 5)),
    "tracked channels": lambda nn, F: nn.InstanceNorm2d(4, track_running_stats=True)(
        torch.randn(2, 3, 4, 5)
    ),
    "one spatial element": lambda nn, F: nn.InstanceNorm1d(3)(torch.randn(2, 3, 1)),
    "one spatial element eval": lambda nn, F: nn.InstanceNorm1d(3).eval()(torch.randn(2, 3, 1)),
    "one spatial element tracked eval": lambda nn, F: nn.InstanceNorm1d(
        3, track_running_stats=True
    ).eval()(torch.randn(2, 3, 1)),
    "integer": lambda nn, F: nn.InstanceNorm1d(3)(torch.ones(2, 3, 5, dtype=torch.long)),
    "fp64 input fp32 affine": lambda nn, F: nn.InstanceNorm1d(3, affine=True)(
        torch.randn(2, 3, 5).double()
    ),
    "fp32 input fp64 affine": lambda nn, F: nn.InstanceNorm1d(3, affine=True).double()(
        torch.randn(2, 3, 5)
    ),
    "fp64 input fp32 running (allowed)": lambda nn, F: nn.InstanceNorm1d(
        3, track_running_stats=True
    )(torch.randn(2, 3, 5).double()),
    "empty with affine": lambda nn, F: nn.InstanceNorm1d(3, affine=True)(torch.randn(0, 3, 5)),
    "F weight size": lambda nn, F: F.instance_norm(torch.randn(2, 3, 5), weight=torch.ones(4)),
    "F bias size": lambda nn, F: F.instance_norm(torch.randn(2, 3, 5), bias=torch.ones(4)),
    "F only running_mean": lambda nn, F: F.instance_norm(torch.randn(2, 3, 5), torch.zeros(3)),
    "F eval without running": lambda nn, F: F.instance_norm(
        torch.randn(2, 3, 5), use_input_stats=False
    ),
    "F 2d eval": lambda nn, F: F.instance_norm(
        torch.randn(2, 3), torch.zeros(3), torch.ones(3), use_input_stats=False
    ),
    "F 1d": lambda nn, F: F.instance_norm(torch.ones(3)),
    "F empty integer": lambda nn, F: F.instance_norm(torch.ones(0, 3, 4, dtype=torch.long)),
}


@pytest.mark.parametrize("call", ERRORS.values(), ids=ERRORS.keys())
def test_errors_match_torch(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same_error(call)


@pytest.mark.parametrize("running_dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("use_input_stats", [True, False])
def test_functional_running_stats_of_another_dtype(running_dtype, use_input_stats):
    """instance_norm accepts running stats of any float dtype (torch does) and updates them."""
    x = _x((3, 2, 6), torch.float32)
    runs = []
    for F in (torch.nn.functional, nl.functional):
        rm = torch.full((2,), 0.5, dtype=running_dtype)
        rv = torch.full((2,), 2.0, dtype=running_dtype)
        y = F.instance_norm(x, rm, rv, use_input_stats=use_input_stats, momentum=0.3)
        runs.append((y, rm, rv))
    for a, b in zip(*runs):
        torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3)
