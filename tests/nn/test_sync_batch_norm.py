"""normlib.nn.SyncBatchNorm in one process (= BatchNorm, also on CPU) and convert_sync_batchnorm.
The multi-process math is tested in test_sync_batch_norm_distributed.py."""

from __future__ import annotations

import pytest
import torch

import normlib.nn as nl
import normlib.nn._distributed as distributed_mod

from ._helpers import assert_same_error, make_pair, run_pair


def _x(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 0.5


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 5), (2, 3, 2, 2, 3)], ids=str)
@pytest.mark.parametrize("config", [{}, {"momentum": None}, {"track_running_stats": False}])
def test_single_process_is_batch_norm(shape, config, train):
    """Without a process group SyncBatchNorm is BatchNorm (torch's too), for any rank >= 2."""
    run_pair(lambda ns: ns.SyncBatchNorm(3, **config), _x(shape), train=train, steps=2)


def test_runs_on_cpu_channels_last():
    run_pair(lambda ns: ns.SyncBatchNorm(3), _x((2, 3, 4, 5)).to(memory_format=torch.channels_last))


def test_constructor_repr_state_dict():
    group = object()
    ours = nl.SyncBatchNorm(4, 1e-3, 0.2, True, True, group, bias=False)
    theirs = torch.nn.SyncBatchNorm(4, 1e-3, 0.2, True, True, None, bias=False)
    assert ours.process_group is group
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True)


ERRORS = {
    "1d input": lambda nn, F: nn.SyncBatchNorm(3)(torch.randn(3)),
    "zero channels": lambda nn, F: nn.SyncBatchNorm(0)(torch.randn(2, 0)),
    "one value per channel": lambda nn, F: nn.SyncBatchNorm(3)(torch.randn(1, 3)),
    "channels": lambda nn, F: nn.SyncBatchNorm(3)(torch.randn(2, 4)),
}


@pytest.mark.parametrize("call", ERRORS.values(), ids=ERRORS.keys())
def test_errors_match_torch(call):
    assert_same_error(call)


@pytest.mark.parametrize("source_ns", [torch.nn, nl], ids=["torch", "normlib"])
def test_convert_sync_batchnorm(source_ns):
    """Converts normlib's and torch's BatchNorm*d alike, sharing parameters and buffers, keeping
    requires_grad, the training flag and qconfig, recursively; other modules are untouched."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1),
        source_ns.BatchNorm2d(4, momentum=None),
        torch.nn.Sequential(source_ns.BatchNorm1d(5, affine=False), torch.nn.ReLU()),
        source_ns.BatchNorm3d(2, track_running_stats=False, bias=False),
    )
    net[1].weight.requires_grad_(False)
    net[1].qconfig = "qconfig"
    net[2][0].eval()
    old = [net[1], net[2][0], net[3]]
    converted = nl.SyncBatchNorm.convert_sync_batchnorm(net, process_group="pg")
    new = [converted[1], converted[2][0], converted[3]]
    assert isinstance(converted[0], torch.nn.Conv2d) and isinstance(converted[2][1], torch.nn.ReLU)
    for a, b in zip(old, new):
        assert type(b) is nl.SyncBatchNorm and b.process_group == "pg"
        assert (b.num_features, b.eps, b.momentum, b.affine, b.track_running_stats) == (
            a.num_features,
            a.eps,
            a.momentum,
            a.affine,
            a.track_running_stats,
        )
        assert b.weight is a.weight and b.bias is a.bias
        assert b.running_mean is a.running_mean and b.num_batches_tracked is a.num_batches_tracked
        assert b.training == a.training
    assert new[0].weight.requires_grad is False and new[0].qconfig == "qconfig"
    assert new[2].bias is None
    single = nl.SyncBatchNorm.convert_sync_batchnorm(source_ns.BatchNorm1d(3))
    assert type(single) is nl.SyncBatchNorm


def test_converted_matches_torch_converted():
    bn = make_pair(lambda ns: ns.BatchNorm2d(3))[0]
    ours = nl.SyncBatchNorm.convert_sync_batchnorm(bn)
    theirs = torch.nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    assert repr(ours) == repr(theirs)
    x = _x((2, 3, 4, 4))
    theirs.eval(), ours.eval()
    torch.testing.assert_close(ours(x), theirs(x))


def test_distributed_path_updates_running_stats_with_global_count(monkeypatch):
    """With world size > 1 the batch statistics come from _distributed.sync_batch_norm_train and the
    running stats are updated by BatchNorm's code, unbiased with the GLOBAL count."""
    calls = []

    def fake_sync(x, weight, bias, eps, group):
        calls.append(group)
        mean = torch.tensor([1.0, 2.0], dtype=x.dtype)
        var = torch.tensor([4.0, 9.0], dtype=x.dtype)
        return x * 1.0, mean, var, 10

    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(distributed_mod, "sync_batch_norm_train", fake_sync)
    m = nl.SyncBatchNorm(2, momentum=0.5, process_group="pg").double()
    m(_x((3, 2)))
    assert calls == ["pg"]
    torch.testing.assert_close(m.running_mean, torch.tensor([0.5, 1.0], dtype=torch.float64))
    expected_var = 0.5 + 0.5 * torch.tensor([4.0, 9.0], dtype=torch.float64) * 10 / 9
    torch.testing.assert_close(m.running_var, expected_var)
    assert int(m.num_batches_tracked) == 1
    m.eval()
    m(_x((3, 2)))  # eval never synchronizes
    assert calls == ["pg"]
