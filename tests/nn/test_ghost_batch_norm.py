"""GhostBatchNorm1d/2d (Hoffer et al., 2017) against torch's BatchNorm run on each ghost batch."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from normlib.nn.ghost_batch_norm import GhostBatchNorm1d, GhostBatchNorm2d

F64 = dict(dtype=torch.float64)
TOL = dict(rtol=1e-10, atol=1e-10)


def pair(shape, vbs, momentum=0.1):
    """A ghost BN and a torch BN with the same (non-trivial) parameters."""
    cls, ref = (
        (GhostBatchNorm2d, torch.nn.BatchNorm2d)
        if len(shape) == 4
        else (GhostBatchNorm1d, torch.nn.BatchNorm1d)
    )
    c = shape[1]
    g = cls(c, virtual_batch_size=vbs, momentum=momentum, **F64)
    with torch.no_grad():
        g.weight.copy_(torch.linspace(0.5, 1.5, c, **F64))
        g.bias.copy_(torch.linspace(-0.2, 0.3, c, **F64))
    bn = ref(c, momentum=momentum, **F64)
    bn.load_state_dict(g.state_dict())  # same keys: a ghost BN checkpoint is a BatchNorm one
    return g, bn


@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 5), (4, 3, 3, 2)])
@pytest.mark.parametrize("vbs", [6, 100])
def test_virtual_batch_at_least_the_batch_is_batch_norm(shape, vbs):
    torch.manual_seed(0)
    g, bn = pair(shape, vbs)
    n = shape[0]
    for step in range(2):
        x = (torch.randn(shape, **F64) * (step + 1) + step).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        y, y2 = g(x), bn(x2)
        assert_close(y, y2, **TOL)
        dy = torch.randn_like(y)
        y.backward(dy)
        y2.backward(dy)
        assert_close(x.grad, x2.grad, **TOL)
        assert_close(g.weight.grad, bn.weight.grad, **TOL)
    for k, v in bn.state_dict().items():
        assert_close(g.state_dict()[k], v, rtol=1e-12, atol=1e-12)
    assert int(g.num_batches_tracked) == 2 and vbs >= n


@pytest.mark.parametrize(
    "shape, vbs", [((12, 3), 4), ((10, 3, 4), 4), ((9, 2, 3, 3), 3), ((7, 2, 2, 2), 2)]
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_splits_equal_separate_batch_norms(shape, vbs, momentum):
    """Each ghost batch is normalized by its own statistics and updates the running stats."""
    torch.manual_seed(1)
    g, bn = pair(shape, vbs, momentum)
    x = (torch.randn(shape, **F64) * 2 + 1).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y = g(x)
    y2 = torch.cat([bn(chunk) for chunk in x2.split(vbs)])
    assert_close(y, y2, **TOL)
    dy = torch.randn_like(y)
    y.backward(dy)
    y2.backward(dy)
    assert_close(x.grad, x2.grad, **TOL)
    assert_close(g.weight.grad, bn.weight.grad, **TOL)
    assert_close(g.bias.grad, bn.bias.grad, **TOL)
    assert_close(g.running_mean, bn.running_mean, rtol=1e-12, atol=1e-12)
    assert_close(g.running_var, bn.running_var, rtol=1e-12, atol=1e-12)
    k = -(-shape[0] // vbs)
    assert int(g.num_batches_tracked) == k == int(bn.num_batches_tracked)


def test_ghost_batches_differ_from_one_batch():
    """The point of the module: with vbs < N the output is not BatchNorm's."""
    torch.manual_seed(2)
    g, bn = pair((8, 3), 2)
    x = torch.randn(8, 3, **F64)
    assert not torch.allclose(g(x), bn(x))
    # and each ghost batch of 2 normalizes to exactly +-1 (n = 2, eps ~ 0)
    g2 = GhostBatchNorm1d(3, virtual_batch_size=2, eps=1e-12, affine=False, **F64)
    assert_close(g2(x).abs(), torch.ones(8, 3, **F64), rtol=1e-6, atol=1e-6)


def test_eval_is_batch_norm_eval():
    torch.manual_seed(3)
    g, bn = pair((8, 3, 2, 2), 4)
    for _ in range(3):
        g(torch.randn(8, 3, 2, 2, **F64) + 2)
    bn.load_state_dict(g.state_dict())
    g.eval()
    bn.eval()
    x = torch.randn(5, 3, 2, 2, **F64)
    assert_close(g(x), bn(x), **TOL)


def test_no_running_stats_and_errors():
    torch.manual_seed(4)
    g = GhostBatchNorm1d(3, virtual_batch_size=3, track_running_stats=False, **F64)
    ref = torch.nn.BatchNorm1d(3, track_running_stats=False, **F64)
    x = torch.randn(6, 3, **F64)
    assert_close(g(x), torch.cat([ref(c) for c in x.split(3)]), **TOL)
    g.eval()
    assert_close(g(x), ref.eval()(x), **TOL)  # eval without buffers: whole-batch statistics
    with pytest.raises(ValueError):
        GhostBatchNorm1d(3, virtual_batch_size=0)
    with pytest.raises(ValueError, match="4D"):
        GhostBatchNorm2d(3)(torch.randn(4, 3))
    assert "virtual_batch_size=32" in repr(GhostBatchNorm2d(3))
